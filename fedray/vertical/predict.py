"""``fedray predict RUN_DIR --business new_guest.csv --provider new_host.csv [--out scores.parquet]``.

Joint scoring of new customers with a finished vertical run's model (linear or SecureBoost), on
Ray: one actor per party reads that party's own model file (``RUN_DIR/parties/<party>.parquet``) and new file; the
calling process drives ``fedray.vertical.scoring.Scorer`` (PSI, ciphertext sums) and never holds
a key or a score. The business party writes ``id, score`` (Parquet) to ``--out`` (default
``RUN_DIR/scores.parquet``). ``--provider`` is given once per provider of the run, in the run's
provider order. Before any actor starts, the files are checked here (as ``fedray run`` checks its
data), so that bad input exits with code 2 and a message naming the file.
"""
from __future__ import annotations

import argparse
from pathlib import Path
from typing import Any, Callable, Optional

from fedray.data.vertical import VerticalDataError, read_party
from fedray.vertical.config import VerticalConfig

EXIT_USAGE = 2


class PredictError(ValueError):
    """Bad input to ``fedray predict``: not a vertical run directory, wrong number of files."""


def run_settings(run_dir: Path) -> tuple[Any, Any]:
    """(the run's root config, its vertical section merged over the defaults) from RUN_DIR/config.yaml."""
    from omegaconf import OmegaConf

    saved = run_dir / "config.yaml"
    if not saved.is_file():
        raise PredictError(f"{run_dir}: not a fedray run directory (no config.yaml)")
    cfg = OmegaConf.load(saved)
    if cfg.get("job") != "vertical":
        raise PredictError(f"{saved}: job={cfg.get('job')!r}; fedray predict scores vertical runs only")
    return cfg, OmegaConf.merge(OmegaConf.structured(VerticalConfig), cfg.vertical)


def check_inputs(run_dir: Path, v: Any, business: str, providers: list[str]) -> dict[str, tuple[str, str]]:
    """{party: (model path, new data path)}, after reading every file once; errors name the file."""
    from fedray.vertical.job import provider_names
    from fedray.vertical.scoring import PartyModel

    names = provider_names(v)
    if len(providers) != len(names):
        raise PredictError(f"the run has {len(names)} provider(s) {names}: give --provider once for each, "
                           f"in that order (got {len(providers)})")
    files = {"business": business, **dict(zip(names, providers))}
    out = {}
    for party, data in files.items():
        model = run_dir / "parties" / f"{party}.parquet"
        if v.model != "secureboost":
            PartyModel(model, party)
        elif not model.exists():
            raise VerticalDataError(f"{party}: no model file {model} (was the run trained to the end?)")
        read_party(data, v.id_column, None, missing="zero" if v.model == "secureboost" and v.missing != "error"
                   else v.missing)
        out[party] = (str(model), str(Path(data).resolve()))
    return out


def predict(run_dir: str | Path, business: str, providers: list[str], out: Optional[str] = None,
            address: Optional[str] = None, log: Callable[[str], None] = print, record: bool = False) -> dict:
    """Score the new customers on Ray (joining ``address`` or starting a local Ray); a summary dict.

    ``record=True`` (tests) adds every message the driver saw under "messages".
    """
    import ray

    from fedray import runtime
    from fedray.vertical import actors
    from fedray.vertical.job import _actor_cpus, _cause
    from fedray.vertical.protocol import BUSINESS, Settings
    from fedray.vertical.scoring import BoostScorer, Scorer

    run_dir = Path(run_dir)
    cfg, v = run_settings(run_dir)
    parties = check_inputs(run_dir, v, business, providers)
    settings = Settings.from_config(v)
    out_path = str(Path(out).resolve() if out else run_dir / "scores.parquet")
    runtime_cfg = cfg.get("runtime") or {}
    started = runtime.start(address or runtime_cfg.get("address"), [], runtime_cfg.get("num_cpus"))
    try:
        cpus = _actor_cpus(cfg)
        boost = settings.model == "secureboost"
        business_cls = actors.BoostScoringBusinessParty if boost else actors.ScoringBusinessParty
        provider_cls = actors.BoostScoringProviderParty if boost else actors.ScoringProviderParty
        handles = {}
        for party, (model, data) in parties.items():
            if party == BUSINESS:
                handles[party] = business_cls.options(num_cpus=cpus).remote(model, data, settings, out_path)
            else:
                handles[party] = provider_cls.options(num_cpus=cpus).remote(party, model, data, settings)
        transport = actors.RayTransport(handles, record)
        try:
            summary = (BoostScorer if boost else Scorer)(transport, [p for p in parties if p != BUSINESS]).run()
        except ray.exceptions.RayTaskError as exc:
            cause = _cause(exc)
            if isinstance(cause, ValueError):  # VerticalDataError, PSIError, CKKSError: bad input
                raise cause from None
            raise
        finally:
            for handle in handles.values():
                ray.kill(handle)
        for w in summary["warnings"]:
            log(f"warning: {w}")
        log(f"scored {summary['scored']} customers (the intersection of the new files) -> {out_path} "
            f"({summary['seconds']:.1f} s)")
        summary["out"] = out_path
        if record:
            summary["messages"] = transport.messages
        return summary
    finally:
        if started:
            ray.shutdown()


def add_predict_parser(subparsers: Any) -> argparse.ArgumentParser:
    """Add ``predict`` to the fedray command line's subparsers."""
    parser = subparsers.add_parser("predict", help="score new customers jointly with a vertical run's model")
    parser.add_argument("run_dir", help="a finished vertical run directory")
    parser.add_argument("--business", required=True, help="the business party's file of new customers")
    parser.add_argument("--provider", action="append", default=[], required=True,
                        help="a provider's file of new customers; once per provider, in the run's order")
    parser.add_argument("--out", default=None, help="Parquet output id, score (default RUN_DIR/scores.parquet)")
    parser.add_argument("--address", default=None, help="Ray address to join (default: the run's runtime.address)")
    parser.set_defaults(func=cmd_predict)
    return parser


def cmd_predict(args: argparse.Namespace, console: Any) -> int:
    """Score new customers; exit code 2 with a message naming the file for bad input."""
    from rich.markup import escape

    try:
        predict(args.run_dir, args.business, list(args.provider), args.out, args.address, log=console.print)
    except (PredictError, VerticalDataError) as exc:
        console.print(f"[red]error:[/] {escape(str(exc))}", highlight=False)
        return EXIT_USAGE
    return 0
