"""Helpers for tests that kill a horizontal run mid-way: wait for one of its checkpoints, SIGKILL it there."""
from __future__ import annotations

import os
import signal
import subprocess
import sys
import time
from pathlib import Path


def wait_for_checkpoint(run: Path, round_: int, proc: subprocess.Popen | None = None, timeout_s: float = 180) -> None:
    """Block until the run's checkpoint of `round_` is on disk; fail if `proc` ends first or the time runs out."""
    deadline = time.time() + timeout_s
    while not (run / "checkpoints" / f"ckpt-{round_:08d}").is_dir():
        if proc is not None and proc.poll() is not None:
            out = proc.stdout.read()[-3000:] if proc.stdout else ""
            raise AssertionError(f"the run ended before its checkpoint of round {round_}:\n{out}")
        assert time.time() < deadline, f"no checkpoint of round {round_} after {timeout_s} s"
        time.sleep(0.05)


def sigkill_after_checkpoint(args: list[str], run: Path, round_: int) -> None:
    """`fedray run ARGS run_dir=RUN` as a process, SIGKILLed just after its checkpoint of `round_` (so inside a
    later round)."""
    proc = subprocess.Popen([sys.executable, "-m", "fedray.cli", "run", *args, f"run_dir={run}"],
                            stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
    try:
        wait_for_checkpoint(run, round_, proc)
        time.sleep(0.3)
    finally:
        os.kill(proc.pid, signal.SIGKILL)
        proc.wait()
