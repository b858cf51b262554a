"""`fedray submit | status | logs | stop`: fedray jobs on a Ray cluster through the Ray Jobs API.

A submitted job is `python jobs/<horizontal|vertical>.py CONF key=value ...` run by the cluster's job
server with the local working directory uploaded (`runtime_env.working_dir`), exactly what
`ray job submit --working-dir . -- python jobs/horizontal.py CONF ...` does; the job's driver joins the
cluster with `runtime.address=auto`.

Token authentication (Ray >= 2.52; on by default for local clusters since 2.59). Ray documents that the
job server wants `Authorization: Bearer <token>` and that a client finds the token in, by precedence,
RAY_AUTH_TOKEN, the file named by RAY_AUTH_TOKEN_PATH, then ~/.ray/auth_token, when RAY_AUTH_MODE=token.
fedray follows that order, after its own `--token` / `--token-file`, and sends the header itself:
- with RAY_AUTH_MODE=token, or RAY_AUTH_TOKEN / RAY_AUTH_TOKEN_PATH set, it uses them as Ray does;
- with RAY_AUTH_MODE unset it also uses ~/.ray/auth_token for a job server on this machine, the way
  `ray start --head` and `ray.init(address="auto")` enable auth for a local cluster when that file exists;
  a remote server never gets the default file's token unless RAY_AUTH_MODE=token says so;
- RAY_AUTH_MODE=disabled sends no token unless one is passed with --token / --token-file.
"""
from __future__ import annotations

import asyncio
import ipaddress
import os
import shlex
import socket
import sys
import time
from pathlib import Path
from typing import Callable, Optional
from urllib.parse import urlparse

DEFAULT_ADDRESS = "http://127.0.0.1:8265"
DEFAULT_TOKEN_PATH = Path("~/.ray/auth_token")
JOB_SCRIPTS = {"horizontal": "jobs/horizontal.py", "centralized": "jobs/horizontal.py", "vertical": "jobs/vertical.py"}
# Never uploaded with the working directory (Ray also skips what .gitignore lists).
EXCLUDES = [".git", ".venv", "runs", "bench/out", ".pytest_cache", ".hypothesis", "__pycache__", "*.egg-info"]
TERMINAL = ("SUCCEEDED", "FAILED", "STOPPED")


class JobError(RuntimeError):
    """A job-server problem the user must fix (unreachable address, missing or wrong token, unknown job)."""


# ---- address and token ----------------------------------------------------------------------------------------
def normalize_address(address: Optional[str]) -> str:
    """The job server's http(s) URL: the argument, else RAY_API_SERVER_ADDRESS / RAY_ADDRESS, else localhost."""
    address = address or os.environ.get("RAY_API_SERVER_ADDRESS") or os.environ.get("RAY_ADDRESS") or DEFAULT_ADDRESS
    address = address.rstrip("/")
    if "://" not in address:
        address = f"http://{address}"
    if urlparse(address).scheme not in ("http", "https"):
        raise JobError(f"--address {address}: the job server is the dashboard's http(s) URL, e.g. {DEFAULT_ADDRESS}")
    return address


def is_local(address: str) -> bool:
    """Whether the job server's host is this machine (a loopback address or this host's name or address)."""
    host = urlparse(address).hostname or ""
    if host == "localhost":
        return True
    try:
        if ipaddress.ip_address(host).is_loopback:
            return True
    except ValueError:
        pass
    names = {socket.gethostname(), socket.getfqdn()}
    try:
        names.add(socket.gethostbyname(socket.gethostname()))
    except OSError:
        pass
    return host in names


def _read_token(path: Path, what: str) -> str:
    try:
        token = path.expanduser().read_text().strip()
    except OSError as e:
        raise JobError(f"{what} {path}: cannot read the token: {e.strerror}") from None
    if not token:
        raise JobError(f"{what} {path}: the token file is empty")
    return token


def resolve_token(address: str, token: Optional[str] = None, token_file: Optional[str] = None,
                  env: Optional[dict] = None) -> tuple[Optional[str], str]:
    """The bearer token to send and where it came from (see the module docstring for the order)."""
    env = os.environ if env is None else env
    if token:
        return token.strip(), "--token"
    if token_file:
        return _read_token(Path(token_file), "--token-file"), f"--token-file {token_file}"
    mode = env.get("RAY_AUTH_MODE", "").strip().lower()
    if mode == "disabled":
        return None, "RAY_AUTH_MODE=disabled"
    if env.get("RAY_AUTH_TOKEN", "").strip():
        return env["RAY_AUTH_TOKEN"].strip(), "RAY_AUTH_TOKEN"
    if env.get("RAY_AUTH_TOKEN_PATH"):
        return _read_token(Path(env["RAY_AUTH_TOKEN_PATH"]), "RAY_AUTH_TOKEN_PATH"), "RAY_AUTH_TOKEN_PATH"
    default = DEFAULT_TOKEN_PATH.expanduser()
    if default.is_file() and (mode == "token" or is_local(address)):
        return _read_token(default, "token file"), str(DEFAULT_TOKEN_PATH)
    return None, "none"


def _errors() -> tuple:
    """What the job client raises for a refused or failed request."""
    from ray.exceptions import AuthenticationError

    return ConnectionError, RuntimeError, AuthenticationError


def client(address: Optional[str] = None, token: Optional[str] = None, token_file: Optional[str] = None):
    """A JobSubmissionClient for the address, sending the resolved token as `Authorization: Bearer`."""
    from ray.job_submission import JobSubmissionClient

    address = normalize_address(address)
    tok, source = resolve_token(address, token, token_file)
    headers = {"Authorization": f"Bearer {tok}"} if tok else None
    try:
        c = JobSubmissionClient(address, headers=headers)
    except _errors() as e:
        raise JobError(_explain(address, e, source)) from None
    c._fedray_token_source = source
    return c


def _explain(address: str, err: Exception, source: str) -> str:
    """A message for a failed job-server request, with the fix for authentication failures."""
    text = str(err).strip()
    first = text.splitlines()[0] if text else type(err).__name__
    if "401" in text or "403" in text or "Authentication" in text or "Unauthorized" in text or "Forbidden" in text:
        sent = "no token was sent" if source == "none" else f"the token from {source} was sent"
        return (f"{address}: the job server refused the request ({first}); {sent}. The cluster uses Ray token "
                "authentication: pass --token or --token-file, or set RAY_AUTH_TOKEN (or RAY_AUTH_TOKEN_PATH); "
                "`ray get-auth-token` on the head node prints the cluster's token")
    if isinstance(err, ConnectionError) or "Failed to connect" in text or "Connection refused" in text:
        return (f"{address}: no Ray job server answers there ({first}); start the head with "
                "`ray start --head --dashboard-host 0.0.0.0` (with the ray default extra installed) and pass its dashboard URL")
    return f"{address}: {first}"


def _call(c, fn: Callable, *args, **kwargs):
    """Call a client method, turning its RuntimeErrors into JobErrors with a hint."""
    try:
        return fn(*args, **kwargs)
    except _errors() as e:
        raise JobError(_explain(c.get_address(), e, getattr(c, "_fedray_token_source", "none"))) from None


# ---- submission -------------------------------------------------------------------------------------------------
def job_kind(config: str, overrides: list[str], validate: bool = True) -> str:
    """The config's job (horizontal | vertical | centralized), validating config and overrides when asked."""
    if validate:
        from fedray.config import load_config

        return str(load_config(config, overrides).job)
    import yaml

    kind = "horizontal"
    try:
        kind = (yaml.safe_load(Path(config).read_text()) or {}).get("job", kind)
    except (OSError, yaml.YAMLError, AttributeError):
        pass
    for o in overrides:
        if o.startswith("job="):
            kind = o.split("=", 1)[1]
    return kind


def entrypoint(config: str, overrides: list[str], working_dir: str = ".", python: str = "python",
               validate: bool = True) -> str:
    """The shell command the job server runs in the uploaded working directory."""
    wd = Path(working_dir).resolve()
    conf = Path(config).resolve()
    if not conf.is_file():
        raise JobError(f"config file not found: {config}")
    try:
        rel = conf.relative_to(wd)
    except ValueError:
        raise JobError(f"{config}: the config must lie inside --working-dir {working_dir} (it is uploaded with it)") from None
    kind = job_kind(config, overrides, validate)
    script = JOB_SCRIPTS.get(kind, JOB_SCRIPTS["horizontal"])
    if not (wd / script).is_file():
        raise JobError(f"--working-dir {working_dir} has no {script}: submit from the fedray repository root")
    return " ".join([python, script, shlex.quote(rel.as_posix()), *(shlex.quote(o) for o in overrides)])


def submit(c, config: str, overrides: list[str], working_dir: str = ".", python: str = "python",
           validate: bool = True, submission_id: Optional[str] = None, env_vars: Optional[dict] = None,
           cmd: Optional[str] = None) -> str:
    """Submit the job (validated here first unless validate=False); returns its submission id."""
    cmd = cmd or entrypoint(config, overrides, working_dir, python, validate)
    runtime_env = {"working_dir": str(Path(working_dir).resolve()), "excludes": list(EXCLUDES)}
    if env_vars:
        runtime_env["env_vars"] = dict(env_vars)
    return _call(c, c.submit_job, entrypoint=cmd, runtime_env=runtime_env, submission_id=submission_id,
                 metadata={"fedray_config": Path(config).name})


def status(c, job_id: str):
    """The job's JobDetails (status, message, start and end times)."""
    return _call(c, c.get_job_info, job_id)


def follow(c, job_id: str, write: Callable[[str], None] = sys.stdout.write, poll_s: float = 0.5) -> str:
    """Stream the job's logs until it ends; returns its final status (SUCCEEDED, FAILED or STOPPED)."""

    async def tail() -> None:
        async for chunk in c.tail_job_logs(job_id):
            write(chunk)
            if hasattr(sys.stdout, "flush"):
                sys.stdout.flush()

    try:
        asyncio.run(tail())
    except (ConnectionError, RuntimeError) as e:  # the log stream broke: fall back to polling the status
        write(f"[fedray] log stream ended early ({str(e).splitlines()[0] if str(e) else type(e).__name__}); "
              "polling the job's status\n")
    while True:
        st = str(_call(c, c.get_job_status, job_id))
        if st in TERMINAL:
            return st
        time.sleep(poll_s)


# ---- command line -----------------------------------------------------------------------------------------------
EXIT_JOB_FAILED = 1


def _connection_args(p) -> None:
    p.add_argument("--address", default=None,
                   help=f"the job server (dashboard) URL; default $RAY_API_SERVER_ADDRESS, $RAY_ADDRESS or {DEFAULT_ADDRESS}")
    p.add_argument("--token", default=None, help="Ray auth token to send (default: RAY_AUTH_TOKEN, RAY_AUTH_TOKEN_PATH, "
                                                 "~/.ray/auth_token; see README 'Running on a cluster')")
    p.add_argument("--token-file", default=None, help="file holding the Ray auth token")


def _client(args):
    return client(args.address, args.token, args.token_file)


def _finish(c, job_id: str, out) -> int:
    final = follow(c, job_id, out.write)
    info = status(c, job_id)
    msg = f" ({info.message})" if info.message and final != "SUCCEEDED" else ""
    print(f"job {job_id}: {final}{msg}", file=sys.stderr)
    return 0 if final == "SUCCEEDED" else EXIT_JOB_FAILED


def cmd_submit(args, console) -> int:
    """Submit a config as a Ray job; print its id; with --follow stream its logs and exit non-zero if it fails."""
    bad = [kv for kv in args.env if "=" not in kv or kv.startswith("=")]
    if bad:
        raise JobError(f"--env {bad[0]}: expected KEY=VALUE")
    env = dict(kv.split("=", 1) for kv in args.env) or None
    cmd = entrypoint(args.config, list(args.overrides), args.working_dir, args.python, not args.no_validate)
    if not any(o.startswith(("output_dir=", "run_dir=")) and o.split("=", 1)[1].startswith(("/", "s3:", "gs:"))
               for o in args.overrides):
        print("note: a relative output_dir or run_dir lands in the job's copy of the working directory on the node "
              "running the job; pass run_dir=/shared/path (or output_dir=) to keep the results", file=sys.stderr)
    c = _client(args)
    job_id = submit(c, args.config, list(args.overrides), args.working_dir, args.python, not args.no_validate,
                    args.submission_id, env, cmd=cmd)
    print(job_id, flush=True)
    if not args.follow:
        return 0
    try:
        return _finish(c, job_id, sys.stdout)
    except KeyboardInterrupt:
        print(f"\nstopped following; the job keeps running (fedray stop {job_id})", file=sys.stderr)
        return 130


def cmd_status(args, console) -> int:
    """Print a job's status, and its message when it has one."""
    info = status(_client(args), args.job_id)
    print(f"{args.job_id}: {info.status}" + (f" ({info.message})" if info.message else ""))
    return 0


def cmd_logs(args, console) -> int:
    """Print a job's logs so far, or stream them until it ends with --follow."""
    c = _client(args)
    if args.follow:
        return _finish(c, args.job_id, sys.stdout)
    sys.stdout.write(_call(c, c.get_job_logs, args.job_id))
    return 0


def cmd_stop(args, console) -> int:
    """Ask the job server to stop a job; with --wait, until it has stopped."""
    c = _client(args)
    stopped = _call(c, c.stop_job, args.job_id)
    print(f"{args.job_id}: " + ("stop requested" if stopped else "not running"))
    if args.wait:
        while str(status(c, args.job_id).status) not in TERMINAL:
            time.sleep(0.5)
        print(f"{args.job_id}: {status(c, args.job_id).status}")
    return 0


def add_commands(sub) -> None:
    """Add submit, status, logs and stop to the fedray argument parser's subcommands."""
    s = sub.add_parser("submit", help="run a config as a Ray job on a cluster (Ray Jobs API)")
    s.add_argument("config")
    s.add_argument("overrides", nargs="*")
    _connection_args(s)
    s.add_argument("--follow", action="store_true", help="stream the job's logs; exit non-zero if it fails")
    s.add_argument("--working-dir", default=".", help="uploaded as the job's working directory (the repository root)")
    s.add_argument("--python", default="python", help="the cluster's Python that has fedray's dependencies")
    s.add_argument("--submission-id", default=None, help="the job's id (default: one the job server picks)")
    s.add_argument("--env", action="append", default=[], metavar="KEY=VALUE", help="environment variable for the job")
    s.add_argument("--no-validate", action="store_true",
                   help="skip validating the config here (e.g. data paths that exist only on the cluster)")
    s.set_defaults(func=cmd_submit)
    st = sub.add_parser("status", help="status of a submitted job")
    st.add_argument("job_id")
    _connection_args(st)
    st.set_defaults(func=cmd_status)
    lg = sub.add_parser("logs", help="logs of a submitted job")
    lg.add_argument("job_id")
    _connection_args(lg)
    lg.add_argument("--follow", action="store_true", help="stream until the job ends; exit non-zero if it failed")
    lg.set_defaults(func=cmd_logs)
    sp = sub.add_parser("stop", help="stop a submitted job")
    sp.add_argument("job_id")
    _connection_args(sp)
    sp.add_argument("--wait", action="store_true", help="wait until it has stopped")
    sp.set_defaults(func=cmd_stop)
