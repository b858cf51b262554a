"""Structured run configuration: load YAML, merge CLI overrides, validate before anything starts."""
from __future__ import annotations

from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Dict, Optional

import yaml
from omegaconf import DictConfig, OmegaConf
from omegaconf.errors import ConfigKeyError, OmegaConfBaseException, ValidationError

from fedray.checkpoint import config_hash
from fedray.vertical.config import VerticalConfig, validate_vertical


class ConfigError(ValueError):
    """A config problem the user must fix; the message names the file, the key and what is allowed."""


@dataclass
class RuntimeConfig:
    address: Optional[str] = None  # unset: start an embedded local Ray; else connect ("auto", "ray://...", "HOST:PORT")
    num_cpus: Optional[int] = None  # CPUs the embedded cluster declares (None: all cores)
    actor_cpus: float = 0.25  # CPUs each device-host actor asks for: fractional so many fit on 2 cores
    driver_cpus: float = 0.25
    devices_per_actor: Optional[int] = None  # devices one host actor holds; unset: one host per CPU of the cluster
    round_timeout_s: float = 300.0  # wall-clock deadline for one round's updates (ray.wait)
    max_restarts: int = 3  # times Ray restarts a crashed device host; it then rejoins from the last checkpoint
    placement: str = "default"  # default (Ray's scheduler) | spread | pack: one placement group per tier
    placement_timeout_s: float = 60.0  # how long a tier's placement group may take to be reserved


@dataclass
class TierConfig:
    name: str = "default"
    share: float = 1.0  # fraction of devices in this tier
    cores: float = 4.0
    memory_gb: float = 8.0
    gflops: float = 50.0
    up_mbps: float = 20.0
    down_mbps: float = 50.0
    latency_ms: float = 50.0
    availability: float = 1.0
    width: float = 1.0  # model width multiplier for groups of this tier


@dataclass
class SyntheticConfig:
    n_users: int = 300
    n_items: int = 1000
    mean_interactions: int = 40
    latent_dim: int = 8
    popularity_skew: float = 1.0  # Zipf-like exponent of item popularity


@dataclass
class DataConfig:
    path: Optional[str] = None  # MovieLens file or directory; unset: seeded synthetic data
    format: str = "auto"  # auto | latest | 100k | 1m
    min_interactions: int = 3  # users with fewer are dropped (one is held out for evaluation)
    max_users: Optional[int] = None
    eval_negatives: int = 99
    synthetic: SyntheticConfig = field(default_factory=SyntheticConfig)


@dataclass
class ModelConfig:
    kind: str = "mf"  # mf (matrix factorisation with item bias) | neumf
    dim: int = 32  # embedding width at width multiplier 1.0
    hidden: list[int] = field(default_factory=lambda: [32, 16])  # neumf MLP widths at multiplier 1.0
    init_std: float = 0.1


@dataclass
class TrainConfig:
    rounds: int = 100
    local_steps: int = 10  # t: local SGD steps per round
    local_epochs: Optional[int] = None  # E: local epochs per round instead of local_steps (when set)
    batch_size: int = 32  # positives per local step
    lr: float = 1.0  # device-side learning rate (the loss is a per-batch mean)
    negatives: int = 4  # recommender: sampled negatives per positive
    l2: float = 0.0  # recommender: L2 on the user vector and the item rows it touches
    participants: float = 64.0  # per round and group: a count if >= 1, a fraction of the group if < 1
    over_select: float = 1.0  # select ceil(K * factor), accept the first K arrivals
    deadline_s: Optional[float] = None  # simulated seconds a device may take; later arrivals are stragglers
    min_updates: int = 1  # fewer valid updates than this: the round is retried with fresh participants
    clip_update_norm: Optional[float] = None  # scale updates with a larger L2 norm down to it (outliers)
    max_round_retries: int = 3
    eval_every: int = 10
    eval_users: int = 0  # evaluate this many devices per evaluation (0: all)
    personalize_steps: int = 10  # recommender: steps a device refits its user vector before evaluating or recommending


@dataclass
class CompressionConfig:
    method: str = "ternary"  # none | ternary
    clip_sigma: Optional[float] = 2.5  # scaler c*sigma after clipping (TernGrad); null: s = max|g|
    error_feedback: bool = True
    mode: str = "rows"  # rows (row and column scales for the task's sparse row tables; dense for other layers) | auto | dense | sparse
    broadcast: str = "float32"  # float32 | ternary


@dataclass
class GroupingConfig:
    method: str = "none"  # none | thresholds | kmeans
    by: str = "gflops"  # reported hardware field the thresholds apply to
    thresholds: list[float] = field(default_factory=lambda: [20.0, 100.0])  # ascending
    k: int = 3
    min_size: int = 3
    share_across: bool = False  # HeteroFL-style averaging of the overlapping parameter slice


@dataclass
class CentralizedConfig:
    epochs: int = 20
    batch_size: int = 256  # (user, positive) pairs per step, from all users pooled
    lr: float = 20.0  # per-batch-mean loss over many users: a larger step than a device's


@dataclass
class CheckpointConfig:
    every: int = 0  # rounds (horizontal) or iterations (vertical) between checkpoints; 0: off
    keep: int = 3
    uri: Optional[str] = None  # pyarrow.fs URI; unset: RUN_DIR/checkpoints


@dataclass
class FaultConfig:
    """Simulated misbehaviour, per participating device and round (chaos tests and benchmarks)."""

    crash: float = 0.0  # probability its host process dies mid-training (os._exit)
    corrupt: float = 0.0  # probability one byte of its payload is flipped in transit
    byzantine: float = 0.0  # fraction of devices (fixed per seed) that send adversarial updates
    byzantine_mode: str = "sign_flip"  # sign_flip (-scale * update) | scale (scale * update)
    byzantine_scale: float = 4.0


RECOMMENDER = "fedray.tasks.recommender:RecommenderTask"
# The default task is the built-in recommender; its kwargs point at the data and model sections, so
# `data.*`, `model.*` and the recommender's `train.*` keys keep working. A config whose task names another
# target replaces this section whole (see _merge).
DEFAULT_TASK = {"target": RECOMMENDER, "data": "${data}", "model": "${model}", "negatives": "${train.negatives}",
                "l2": "${train.l2}", "personalize_steps": "${train.personalize_steps}",
                "personalize_lr": "${train.lr}", "personalize_batch": "${train.batch_size}"}


@dataclass
class StrategyConfig:
    """Server-side strategy: a built-in by name or a user's class by import path, and its parameters."""

    name: Optional[str] = None  # fedavg (unset) | fedavgm | fedprox | fedadam | fedyogi | fedadagrad | median | trimmed_mean | krum
    target: Optional[str] = None  # "pkg.module:Class", a user's Strategy subclass (instead of name)
    server_lr: Optional[float] = None  # unset: the task's own default (1.0; the recommender's is 40)
    momentum: float = 0.9  # fedavgm
    proximal_mu: float = 0.01  # fedprox
    beta1: float = 0.9  # fedadam, fedyogi, fedadagrad
    beta2: float = 0.99  # fedadam, fedyogi
    tau: float = 1e-3  # fedadam, fedyogi, fedadagrad
    trim_fraction: float = 0.2  # trimmed_mean: dropped at each end per coordinate
    byzantine: int = 1  # krum: f, the adversarial updates it tolerates
    keep: Optional[int] = None  # krum: m, updates averaged (unset: n - f)


@dataclass
class PrivacyConfig:
    """Private horizontal rounds: secure aggregation (SecAgg+: the driver learns only the sum of the participants'
    ternarized updates) and device-level differential privacy (privacy.dp*)."""

    secure_aggregation: bool = False
    threshold: float = 0.6  # fraction of a round's participants whose masked inputs (and shares) must arrive; (0.5, 1]
    neighbours: Optional[int] = None  # neighbour-graph degree; unset: all under 17 participants, else ~3 log2 n
    coordinate_clip: float = 3.0  # secure aggregation: tensor scale = min(clip, coordinate_clip * clip / sqrt(tensor size))
    weight_levels: int = 1  # secure aggregation: FedAvg weights as integers 1..levels from sample counts (1: the plain mean)
    clip: float = 1.0  # L2 bound of each device's update: the sensitivity DP noise is scaled to; secure aggregation scales from it
    dp: str = "none"  # none | central (the driver adds Gaussian noise to the sum) | distributed (devices add integer noise before masking)
    noise_multiplier: Optional[float] = None  # z: noise std = z * clip on the sum; or set privacy.epsilon to calibrate it
    epsilon: Optional[float] = None  # the budget at privacy.delta over train.rounds: calibrates z (instead of noise_multiplier)
    delta: float = 1e-5  # epsilon is reported at this delta
    target_epsilon: Optional[float] = None  # stop (or warn) before a round that would spend more; unset: privacy.epsilon
    on_budget: str = "stop"  # stop | warn: what a round that would exceed the budget does
    noise: str = "discrete_gaussian"  # distributed mode: discrete_gaussian | skellam


@dataclass
class RootConfig:
    job: str = "horizontal"  # horizontal | vertical | centralized
    name: str = "default"
    seed: int = 0
    output_dir: str = "runs"
    run_dir: Optional[str] = None  # unset: OUTPUT_DIR/NAME-<timestamp>
    tiers_file: Optional[str] = None  # YAML with a `tiers:` list; replaces `tiers` when set
    task: Dict[str, Any] = field(default_factory=lambda: dict(DEFAULT_TASK))  # target + the task's kwargs
    strategy: StrategyConfig = field(default_factory=StrategyConfig)
    runtime: RuntimeConfig = field(default_factory=RuntimeConfig)
    data: DataConfig = field(default_factory=DataConfig)
    model: ModelConfig = field(default_factory=ModelConfig)
    train: TrainConfig = field(default_factory=TrainConfig)
    compression: CompressionConfig = field(default_factory=CompressionConfig)
    grouping: GroupingConfig = field(default_factory=GroupingConfig)
    tiers: list[TierConfig] = field(default_factory=lambda: [TierConfig()])
    checkpoint: CheckpointConfig = field(default_factory=CheckpointConfig)
    faults: FaultConfig = field(default_factory=FaultConfig)
    centralized: CentralizedConfig = field(default_factory=CentralizedConfig)
    privacy: PrivacyConfig = field(default_factory=PrivacyConfig)
    resume: bool = False  # continue RUN_DIR from its newest valid checkpoint
    vertical: VerticalConfig = field(default_factory=VerticalConfig)


CHOICES = {
    "job": ("horizontal", "vertical", "centralized"),
    "data.format": ("auto", "latest", "100k", "1m"),
    "model.kind": ("mf", "neumf"),
    "compression.method": ("none", "ternary"),
    "faults.byzantine_mode": ("sign_flip", "scale"),
    "compression.mode": ("auto", "dense", "sparse", "rows"),
    "compression.broadcast": ("float32", "ternary"),
    "grouping.method": ("none", "thresholds", "kmeans"),
    "runtime.placement": ("default", "spread", "pack"),
    "grouping.by": ("cores", "memory_gb", "gflops", "up_mbps", "down_mbps", "availability"),
    "privacy.dp": ("none", "central", "distributed"),
    "privacy.on_budget": ("stop", "warn"),
    "privacy.noise": ("discrete_gaussian", "skellam"),
}

# key -> (lower bound, inclusive?, upper bound or None)
RANGES = {
    "runtime.actor_cpus": (0.0, False, None),
    "runtime.driver_cpus": (0.0, False, None),
    "runtime.devices_per_actor": (1, True, None),
    "runtime.round_timeout_s": (0.0, False, None),
    "runtime.max_restarts": (-1, True, None),
    "runtime.placement_timeout_s": (0.0, False, None),
    "train.clip_update_norm": (0.0, False, None),
    "faults.crash": (0.0, True, 1.0),
    "faults.corrupt": (0.0, True, 1.0),
    "data.min_interactions": (2, True, None),
    "data.eval_negatives": (1, True, None),
    "data.synthetic.n_users": (3, True, None),
    "data.synthetic.n_items": (2, True, None),
    "data.synthetic.mean_interactions": (2, True, None),
    "data.synthetic.latent_dim": (1, True, None),
    "model.dim": (1, True, None),
    "model.init_std": (0.0, False, None),
    "train.rounds": (1, True, None),
    "train.local_steps": (1, True, None),
    "train.batch_size": (1, True, None),
    "train.lr": (0.0, False, None),
    "train.negatives": (1, True, None),
    "train.l2": (0.0, True, None),
    "train.participants": (0.0, False, None),
    "train.over_select": (1.0, True, None),
    "train.min_updates": (1, True, None),
    "train.max_round_retries": (0, True, None),
    "train.local_epochs": (1, True, None),
    "strategy.server_lr": (0.0, False, None),
    "strategy.momentum": (0.0, True, 1.0),
    "strategy.proximal_mu": (0.0, True, None),
    "strategy.beta1": (0.0, True, 1.0),
    "strategy.beta2": (0.0, True, 1.0),
    "strategy.tau": (0.0, False, None),
    "strategy.trim_fraction": (0.0, True, 0.5),
    "strategy.byzantine": (0, True, None),
    "strategy.keep": (1, True, None),
    "faults.byzantine": (0.0, True, 1.0),
    "faults.byzantine_scale": (0.0, False, None),
    "train.eval_every": (1, True, None),
    "train.eval_users": (0, True, None),
    "train.personalize_steps": (0, True, None),
    "compression.clip_sigma": (0.0, False, None),
    "train.deadline_s": (0.0, False, None),
    "grouping.k": (1, True, None),
    "grouping.min_size": (1, True, None),
    "checkpoint.every": (0, True, None),
    "checkpoint.keep": (1, True, None),
    "centralized.epochs": (1, True, None),
    "centralized.batch_size": (1, True, None),
    "centralized.lr": (0.0, False, None),
    "privacy.clip": (0.0, False, None),
    "privacy.noise_multiplier": (0.0, False, None),
    "privacy.epsilon": (0.0, False, None),
    "privacy.target_epsilon": (0.0, False, None),

    "privacy.threshold": (0.5, False, 1.0),
    "privacy.neighbours": (1, True, None),
    "privacy.coordinate_clip": (0.0, False, None),
    "privacy.weight_levels": (1, True, None),
}

# Strategies that need each device's own update: secure aggregation reveals only the sum, DP only the noised mean.
NEEDS_INDIVIDUAL_UPDATES = ("median", "trimmed_mean", "krum")

TIER_RANGES = {
    "share": (0.0, True, 1.0),
    "cores": (0.0, False, None),
    "memory_gb": (0.0, False, None),
    "gflops": (0.0, False, None),
    "up_mbps": (0.0, False, None),
    "down_mbps": (0.0, False, None),
    "latency_ms": (0.0, True, None),
    "availability": (0.0, False, 1.0),
    "width": (0.0, False, 1.0),
}


def _allowed_keys(schema: Any, full_key: str) -> list[str]:
    """Keys allowed at the level where an unknown key was found."""
    node: Any = schema
    parts = [p for p in str(full_key).replace("]", "").replace("[", ".").split(".") if p][:-1]
    for p in parts:
        try:
            node = node[int(p)] if p.isdigit() else node[p]
        except (KeyError, IndexError, ValueError, TypeError, OmegaConfBaseException):
            return []
    return sorted(node.keys()) if isinstance(node, DictConfig) else []


def _names_other_task(base: DictConfig, other: Any) -> bool:
    """Whether a layer's task section names a different target (then it replaces the section, not merges)."""
    task = other.get("task") if isinstance(other, (dict, DictConfig)) else None
    target = task.get("target") if isinstance(task, (dict, DictConfig)) else None
    return target is not None and target != base.task.get("target")


def _merge(base: DictConfig, other: Any, source: str) -> DictConfig:
    """Merge a user layer into the typed config; a bad key or type becomes a ConfigError naming the source."""
    if _names_other_task(base, other):
        base = base.copy()
        base.task = {}
    try:
        return OmegaConf.merge(base, other)
    except ConfigKeyError as e:
        allowed = _allowed_keys(base, e.full_key)
        hint = f"; allowed keys there: {', '.join(allowed)}" if allowed else ""
        raise ConfigError(f"{source}: unknown key '{e.full_key}'{hint}") from None
    except ValidationError as e:
        raise ConfigError(f"{source}: key '{e.full_key}': {e.msg.splitlines()[0]}") from None
    except OmegaConfBaseException as e:
        raise ConfigError(f"{source}: {e.msg.splitlines()[0] if e.msg else e}") from None


def _read_yaml(path: Path, what: str) -> Any:
    """Parse one YAML file, turning a missing file or a syntax error into a ConfigError with the position."""
    if not path.is_file():
        raise ConfigError(f"{what} not found: {path}")
    try:
        data = yaml.safe_load(path.read_text())
    except yaml.YAMLError as e:
        mark = getattr(e, "problem_mark", None)
        where = f" line {mark.line + 1}, column {mark.column + 1}" if mark else ""
        problem = getattr(e, "problem", None) or str(e).splitlines()[0]
        raise ConfigError(f"{path}:{where}: malformed YAML: {problem}") from None
    if data is None:
        return {}
    if not isinstance(data, dict):
        raise ConfigError(f"{path}: the top level must be a mapping of keys, got {type(data).__name__}")
    return data


def load_config(path: str | Path | None = None, overrides: list[str] | tuple[str, ...] = ()) -> DictConfig:
    """Build the typed config from defaults, an optional YAML file and `key=value` overrides, then validate it."""
    cfg = OmegaConf.structured(RootConfig)
    source = str(path) if path else "defaults"
    if path is not None:
        cfg = _merge(cfg, _read_yaml(Path(path), "config file"), str(path))
    bad = [o for o in overrides if "=" not in o]
    if bad:
        raise ConfigError(f"command line: override '{bad[0]}' is not of the form key=value")
    if overrides:
        try:
            layer = OmegaConf.from_dotlist(list(overrides))
        except OmegaConfBaseException as e:
            raise ConfigError(f"command line: cannot parse overrides: {e.msg}") from None
        cfg = _merge(cfg, layer, "command line")
        source = f"{source} + command line"
    if cfg.tiers_file:
        tiers = _read_yaml(Path(cfg.tiers_file), "tiers_file").get("tiers")
        if not isinstance(tiers, list) or not tiers:
            raise ConfigError(f"{cfg.tiers_file}: expected a non-empty list under 'tiers:'")
        cfg.tiers = OmegaConf.create([])  # the file replaces the list, it does not merge element-wise
        cfg = _merge(cfg, {"tiers": tiers}, str(cfg.tiers_file))
    errors = validate(cfg)
    if errors:
        raise ConfigError(f"{source}: invalid config:\n  " + "\n  ".join(errors))
    return cfg


def _check_range(key: str, value: Any, bounds: tuple) -> str | None:
    lo, inclusive, hi = bounds
    if value is None:
        return None
    ok = (value >= lo if inclusive else value > lo) and (hi is None or value <= hi)
    if ok:
        return None
    lower = f">= {lo}" if inclusive else f"> {lo}"
    upper = f" and <= {hi}" if hi is not None else ""
    return f"{key}={value}: must be {lower}{upper}"


def validate(cfg: DictConfig) -> list[str]:
    """Every out-of-range or unknown-choice value, as 'key=value: what is allowed' lines."""
    errors = []
    for key, allowed in CHOICES.items():
        value = OmegaConf.select(cfg, key)
        if value not in allowed:
            errors.append(f"{key}={value!r}: allowed values are {', '.join(allowed)}")
    for key, bounds in RANGES.items():
        msg = _check_range(key, OmegaConf.select(cfg, key), bounds)
        if msg:
            errors.append(msg)
    names = [t.name for t in cfg.tiers]
    if len(set(names)) != len(names):
        errors.append(f"tiers: names must be unique, got {names}")
    for i, tier in enumerate(cfg.tiers):
        if not str(tier.name).replace("_", "").isalnum():
            errors.append(f"tiers[{i}].name={tier.name!r}: letters, digits and _ only (it names a Ray resource)")
        for key, bounds in TIER_RANGES.items():
            msg = _check_range(f"tiers[{i}].{key}", tier[key], bounds)
            if msg:
                errors.append(msg)
    total = sum(t.share for t in cfg.tiers)
    if cfg.tiers and abs(total - 1.0) > 1e-6:
        errors.append(f"tiers: shares must sum to 1, got {total:g}")
    thresholds = list(cfg.grouping.thresholds)
    if cfg.grouping.method == "thresholds" and (not thresholds or any(b <= a for a, b in zip(thresholds, thresholds[1:]))):
        errors.append(f"grouping.thresholds={thresholds}: must be a non-empty, strictly ascending list")
    if any(h < 1 for h in cfg.model.hidden):
        errors.append(f"model.hidden={list(cfg.model.hidden)}: every width must be >= 1")
    if cfg.data.path is not None and not Path(cfg.data.path).exists():
        errors.append(f"data.path={cfg.data.path!r}: no such file or directory")
    if cfg.job == "vertical":
        errors.extend(validate_vertical(cfg.vertical))
    if cfg.privacy.dp != "none":
        errors.extend(validate_dp(cfg))
    elif cfg.privacy.noise_multiplier is not None or cfg.privacy.epsilon is not None:
        errors.append("privacy.noise_multiplier / privacy.epsilon are set but privacy.dp=none: set privacy.dp=central "
                      "(or distributed) for them to take effect")
    if cfg.privacy.secure_aggregation:
        errors.extend(validate_secure_aggregation(cfg))
    return errors


def validate_dp(cfg: DictConfig) -> list[str]:
    """What differential privacy needs, and what it cannot be combined with."""
    p, errors = cfg.privacy, []
    if cfg.job != "horizontal":
        errors.append(f"privacy.dp={p.dp}: only horizontal jobs release noised sums, this is job={cfg.job}")
    if (p.noise_multiplier is None) == (p.epsilon is None):
        errors.append(f"privacy.dp={p.dp}: set exactly one of privacy.noise_multiplier (the noise) and privacy.epsilon "
                      "(a budget the noise is calibrated to)")
    if not 0.0 < p.delta < 1.0:
        errors.append(f"privacy.delta={p.delta}: must be > 0 and < 1 (typically below 1 / number of devices)")
    if p.dp == "distributed" and not OmegaConf.select(cfg, "privacy.secure_aggregation", default=False):
        errors.append("privacy.dp=distributed: devices add noise before masking, which needs "
                      "privacy.secure_aggregation=true; without it use privacy.dp=central")
    elif OmegaConf.select(cfg, "privacy.secure_aggregation", default=False) and p.weight_levels != 1:
        errors.append(f"privacy.weight_levels={p.weight_levels} under privacy.dp: weights enter the sensitivity; "
                      "DP sums every device's update with weight 1 (set privacy.weight_levels=1)")
    if cfg.strategy.name in NEEDS_INDIVIDUAL_UPDATES:
        errors.append(f"strategy.name={cfg.strategy.name!r} under privacy.dp: it needs each device's update, and DP "
                      "releases only the noised mean; use fedavg, fedavgm, fedprox, fedadam, fedyogi or fedadagrad")
    return errors


def validate_secure_aggregation(cfg: DictConfig) -> list[str]:
    """What secure aggregation cannot be combined with, and why."""
    errors = []
    if cfg.job != "horizontal":
        errors.append(f"privacy.secure_aggregation=true: only horizontal jobs aggregate updates, this is job={cfg.job}")
    if cfg.compression.mode != "dense":
        errors.append(f"compression.mode={cfg.compression.mode!r} under privacy.secure_aggregation: rows and sparse "
                      "payloads (and auto, which picks them) reveal which rows or elements a device touched; "
                      "set compression.mode=dense")
    if cfg.compression.method != "ternary":
        errors.append(f"compression.method={cfg.compression.method!r} under privacy.secure_aggregation: devices send "
                      "ternarized updates summed exactly in Z_M; set compression.method=ternary")
    if cfg.strategy.name in NEEDS_INDIVIDUAL_UPDATES:
        errors.append(f"strategy.name={cfg.strategy.name!r} under privacy.secure_aggregation: it needs each device's "
                      "update, and the driver only learns their sum; use a mean-based strategy (fedavg, fedavgm, "
                      "fedprox, fedadam, fedyogi, fedadagrad)")
    if cfg.faults.corrupt:
        errors.append(f"faults.corrupt={cfg.faults.corrupt} under privacy.secure_aggregation: a masked vector "
                      "damaged in transit cannot be detected and would corrupt the sum")
    return errors


RESULT_KEYS = ("job", "seed", "tiers_file", "task", "strategy", "data", "model", "train", "compression", "grouping",
               "tiers", "faults", "centralized", "vertical", "privacy")


def result_config(cfg: DictConfig) -> dict:
    """The part of the config that changes results (not paths of outputs, addresses or checkpoint cadence)."""
    full = OmegaConf.to_container(cfg, resolve=True)
    return {k: full[k] for k in RESULT_KEYS}


def config_digest(cfg: DictConfig) -> str:
    """sha256 of the result-affecting config, to refuse resuming a run under a different config."""
    return config_hash(result_config(cfg))


def diff_keys(a: Any, b: Any, prefix: str = "") -> list[str]:
    """Dotted keys whose values differ between two plain configs."""
    if isinstance(a, dict) and isinstance(b, dict):
        out = []
        for k in sorted(set(a) | set(b)):
            out += diff_keys(a.get(k), b.get(k), f"{prefix}{k}.")
        return out
    return [] if a == b else [prefix.rstrip(".")]


def save_config(cfg: DictConfig, run_dir: Path) -> Path:
    """Write the fully resolved config into the run directory."""
    out = Path(run_dir) / "config.yaml"
    out.write_text(OmegaConf.to_yaml(cfg, resolve=True))
    return out


def to_plain(cfg: DictConfig) -> dict:
    """Plain dict for shipping to actors (omegaconf objects pickle slowly and tie actors to the schema)."""
    return OmegaConf.to_container(cfg, resolve=True)


def from_plain(data: dict) -> DictConfig:
    """Typed config back from a plain dict (inside actors)."""
    return _merge(OmegaConf.structured(RootConfig), data, "run config")
