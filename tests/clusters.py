"""A real two-node Ray cluster for tests: `ray start --head` plus one `ray start --address` worker on this machine.

Each node runs on its own ports with Ray token authentication on (RAY_AUTH_MODE=token and a test token, as Ray
documents for multi-node clusters), and its own short --temp-dir: two nodes sharing one would share their
runtime_resources directory, and the worker's runtime-env agent re-extracting a job's working_dir there
deletes the running job driver's cwd (torch then fails to load). Everything it starts is stopped by process,
scoped to its temp dirs and GCS port, never with a machine-wide `ray stop`; one node can be stopped alone.
"""
from __future__ import annotations

import os
import random
import secrets
import shutil
import signal
import socket
import subprocess
import sys
import tempfile
import time
from contextlib import contextmanager
from pathlib import Path
from typing import Iterator

ROOT = Path(__file__).resolve().parents[1]
BIN = Path(sys.executable).parent


def _free(port: int) -> bool:
    with socket.socket(socket.AF_INET, socket.SOCK_STREAM) as s:
        try:
            s.bind(("", port))
        except OSError:
            return False
    return True


def _base_port() -> int:
    """A base port with the cluster's fixed ports free (below the kernel's ephemeral range)."""
    for _ in range(200):
        base = random.randrange(20000, 30000, 10)
        if all(_free(base + i) for i in (*range(9), 100, 199, 200, 299)):
            return base
    raise RuntimeError("no free port range for the test cluster")


class TwoNodeCluster:
    """A head and one worker started with `ray start`, stopped by process (see the module docstring)."""

    def __init__(self):
        self.dir = Path(tempfile.mkdtemp(prefix="frj-", dir="/tmp"))  # short: Ray's socket paths must fit 107 bytes
        self.base = _base_port()
        self.token = secrets.token_hex(16)
        self.address = f"http://127.0.0.1:{self.base + 1}"
        env = {k: v for k, v in os.environ.items() if not k.startswith(("RAY_AUTH", "RAY_ADDRESS"))}
        env["PATH"] = f"{BIN}{os.pathsep}{env.get('PATH', '')}"  # the job's `python` is this venv's
        self.plain_env = dict(env)  # a client with no token settings at all
        env.update(RAY_AUTH_MODE="token", RAY_AUTH_TOKEN=self.token, RAY_USAGE_STATS_ENABLED="0")
        self.env = env

    def start(self) -> None:
        """Both nodes: the head (tier `default`, 1 CPU) and the worker (tier `edge`, 1 CPU)."""
        self.start_head()
        self.start_worker()

    def start_head(self) -> None:
        """The head alone (`ray start --head` returns once its GCS answers; the worker's start waits for both)."""
        b = self.base
        self._ray([str(BIN / "ray"), "start", "--head", f"--port={b}", f"--dashboard-port={b + 1}",
                   f"--ray-client-server-port={b + 2}", f"--dashboard-agent-listen-port={b + 3}",
                   f"--node-manager-port={b + 5}", f"--object-manager-port={b + 6}", f"--min-worker-port={b + 100}",
                   f"--max-worker-port={b + 199}", f"--temp-dir={self.dir / 'h'}", "--num-cpus=1",
                   '--resources={"fedray_tier_default": 10000}', "--include-dashboard=true",
                   "--dashboard-host=127.0.0.1", "--disable-usage-stats"])

    def start_worker(self) -> None:
        b = self.base
        self._ray([str(BIN / "ray"), "start", f"--address=127.0.0.1:{b}", f"--dashboard-agent-listen-port={b + 4}",
                   f"--node-manager-port={b + 7}", f"--object-manager-port={b + 8}", f"--min-worker-port={b + 200}",
                   f"--max-worker-port={b + 299}", f"--temp-dir={self.dir / 'w'}", "--num-cpus=1",
                   '--resources={"fedray_tier_edge": 10000}', "--disable-usage-stats"])
        self._wait_nodes(2)

    def restore(self) -> None:
        """Start whichever node is down (the worker needs the head, so a missing head means both again). The tests
        that stop nodes run last, so a node found down here died on its own: say so in the warnings summary."""
        import warnings

        if not self.processes("head"):
            warnings.warn("the two-node test cluster's head was down: both nodes started again", stacklevel=2)
            self.stop("worker", kill=True)
            self.start()
        elif not self.processes("worker"):
            warnings.warn("the two-node test cluster's worker was down: started again", stacklevel=2)
            self.start_worker()

    def _ray(self, cmd: list[str]) -> None:
        r = subprocess.run(cmd, env=self.env, capture_output=True, text=True, timeout=90)
        if r.returncode != 0:
            logs = self.dir / "h" / "session_latest" / "logs"
            tail = "".join(f"\n--- {f.name}\n{f.read_text()[-1500:]}" for f in sorted(logs.glob("dashboard*.err"))
                           if f.stat().st_size) if logs.is_dir() else ""
            raise RuntimeError(f"{' '.join(cmd[:3])} failed ({r.returncode}):\n{r.stdout[-2000:]}\n{r.stderr[-3000:]}{tail}")

    def _wait_nodes(self, n: int, timeout: float = 60.0) -> None:
        code = ("import ray, sys; ray.init(address=sys.argv[1], logging_level='ERROR'); "
                "print(sum(1 for x in ray.nodes() if x['Alive']))")
        deadline = time.time() + timeout
        while True:
            r = subprocess.run([sys.executable, "-c", code, f"127.0.0.1:{self.base}"], env=self.env,
                               capture_output=True, text=True, timeout=60)
            if r.returncode == 0 and r.stdout.strip().splitlines()[-1:] == [str(n)]:
                return
            if time.time() > deadline:
                raise RuntimeError(f"{n} nodes did not come up: {r.stdout[-500:]} {r.stderr[-1500:]}")
            time.sleep(1)

    def processes(self, node: str | None = None) -> list:
        """This cluster's processes (or one node's: "head" or "worker"): those naming its temp dir or GCS port,
        and all their descendants."""
        import ray  # noqa: F401  (puts Ray's vendored psutil on the path)
        import psutil

        marks = ((str(self.dir), f"127.0.0.1:{self.base} ", f":{self.base} ") if node is None
                 else (str(self.dir / {"head": "h", "worker": "w"}[node]),))
        me = os.getpid()
        roots = []
        for p in psutil.process_iter(["pid", "cmdline"]):
            cmd = " ".join(p.info["cmdline"] or []) + " "
            if p.pid != me and any(m in cmd for m in marks) and ("ray" in cmd or "gcs_server" in cmd):
                roots.append(p)
        found = {p.pid: p for p in roots}
        for p in roots:
            try:
                found.update({c.pid: c for c in p.children(recursive=True)})
            except psutil.NoSuchProcess:
                pass
        return list(found.values())

    def stop(self, node: str | None = None, kill: bool = False) -> None:
        """Stop the cluster's processes (or one node's, its temp dir kept): SIGTERM, then SIGKILL for what is left
        after 5 s; or SIGKILL at once (`kill`, a node that crashes)."""
        import ray  # noqa: F401
        import psutil

        procs = self.processes(node)
        if not kill:
            for p in procs:
                try:
                    p.send_signal(signal.SIGTERM)
                except psutil.NoSuchProcess:
                    pass
            _, procs = psutil.wait_procs(procs, timeout=5)  # those still alive
        for p in procs + self.processes(node):
            try:
                p.kill()
            except psutil.NoSuchProcess:
                pass
        if node is None:
            shutil.rmtree(self.dir, ignore_errors=True)

    def run(self, args: list[str], env: dict | None = None, timeout: float = 150) -> subprocess.CompletedProcess:
        return subprocess.run(args, cwd=ROOT, env=env or self.env, capture_output=True, text=True, timeout=timeout)

    def fedray(self, *args: str, env: dict | None = None, timeout: float = 150) -> subprocess.CompletedProcess:
        return self.run([str(BIN / "fedray"), *args], env=env, timeout=timeout)


@contextmanager
def two_node_cluster() -> Iterator[TwoNodeCluster]:
    """A started two-node cluster, every process of it stopped on exit."""
    c = TwoNodeCluster()
    try:
        c.start()
        yield c
    finally:
        c.stop(kill=True)
    assert not c.processes(), "the test cluster left processes behind"
