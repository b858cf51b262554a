"""Ray Jobs entrypoint for joint scoring with a finished vertical run:
`ray job submit --working-dir . -- python jobs/vertical_predict.py RUN_DIR --business /abs/new_guest.csv --provider /abs/new_host.csv [--out /abs/scores.parquet]`.

Paths must be absolute and exist on the nodes running the parties (the job's cwd is the uploaded
working directory). It joins the cluster the job runs on (``--address auto``).
"""
import argparse
import sys

from rich.console import Console

from fedray.vertical.predict import add_predict_parser

if __name__ == "__main__":
    parser = argparse.ArgumentParser(prog="vertical_predict")
    add_predict_parser(parser.add_subparsers(dest="command", required=True))
    args = parser.parse_args(["predict", *sys.argv[1:], *([] if "--address" in sys.argv else ["--address", "auto"])])
    sys.exit(args.func(args, Console(width=140)))
