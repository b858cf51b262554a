"""Ray Jobs entrypoint for vertical (CKKS) training:
`ray job submit --working-dir . -- python jobs/vertical.py conf/vertical_breast.yaml vertical.business_path=/abs/guest.csv ...`.

The job's cwd is the uploaded copy of the working directory, so data paths outside it (the configs'
`../shared/data/...`) must be given as absolute paths that exist on the nodes running the parties.
"""
import sys

from fedray.cli import main

if __name__ == "__main__":
    sys.exit(main(["run", *sys.argv[1:], "job=vertical", "runtime.address=auto"]))
