"""Ray Jobs entrypoint: `ray job submit --working-dir . -- python jobs/horizontal.py conf/default.yaml key=value ...`."""
import sys

from fedray.cli import main

if __name__ == "__main__":
    sys.exit(main(["run", *sys.argv[1:], "runtime.address=auto"]))
