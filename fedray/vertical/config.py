"""Structured config for vertical (CKKS) training.

Only primitives, Optional, lists and nested dataclasses, every field with a default, so the
lead's omegaconf root config can embed it as ``vertical:``.
"""
from __future__ import annotations

from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Optional

# Largest total coefficient-modulus size SEAL allows at 128-bit security, per ring degree.
MAX_COEFF_BITS = {4096: 109, 8192: 218, 16384: 438, 32768: 881}
MODELS = ("logistic", "linear", "secureboost")
DUPLICATES = ("error", "keep_first")
OPTIMIZERS = ("sgd", "nesterov", "adam")
MISSING = ("error", "zero", "mean", "median")


@dataclass
class CKKSConfig:
    poly_modulus_degree: int = 8192  # ring degree N; N/2 slots per ciphertext
    # Data primes then the special prime. The protocol needs one plaintext x ciphertext
    # product and no rescale, so sum(data primes) must hold scale^2 * mask (see validate).
    coeff_mod_bit_sizes: list[int] = field(default_factory=lambda: [60, 40, 40, 60])
    global_scale_bits: int = 40  # encoding scale 2^bits
    mask_bits: int = 30  # provider masks are uniform in [-2^mask_bits, 2^mask_bits)


@dataclass
class EarlyStoppingConfig:
    patience: int = 0  # iterations without a validation-loss improvement before stopping; 0: off
    tolerance: float = 1e-4  # an improvement must lower the validation loss by more than this


@dataclass
class BoostConfig:
    trees: int = 20  # boosting rounds (one tree each)
    depth: int = 4  # levels of splits per tree
    learning_rate: float = 0.3  # shrinkage of each tree's leaf values
    bins: int = 32  # quantile bins per feature, fitted by the party owning it (plus one for missing cells)
    min_child_weight: float = 1.0  # least sum of hessians in a child
    l2: float = 1.0  # lambda: L2 on leaf values
    subsample: float = 1.0  # fraction of training rows each tree sees (drawn by the business party)


@dataclass
class VerticalConfig:
    business_path: Optional[str] = None  # CSV (FATE guest layout id,y,x0..) or Parquet
    provider_paths: list[str] = field(default_factory=list)  # CSV (FATE host layout id,x0..) or Parquet
    provider_names: list[str] = field(default_factory=list)  # default provider0, provider1, ...
    id_column: str = "id"
    label_column: str = "y"
    model: str = "logistic"  # logistic (sigmoid + BCE) | linear (MSE) | secureboost (trees, binary labels)
    iterations: int = 30  # M: passes over the aligned training rows (epochs)
    optimizer: str = "nesterov"  # sgd (heavy-ball momentum) | nesterov | adam; each party steps its own weights
    lr: float = 1.0
    batch_size: int = 0  # 0: full batch (one step per iteration)
    l2: float = 1e-3  # L2 penalty on the (standardized) weights, not on the intercept
    momentum: float = 0.9  # sgd and nesterov momentum (Adam uses beta1 0.9, beta2 0.999)
    standardize: bool = True  # each party centres and scales its own columns (training-row statistics)
    missing: str = "mean"  # missing cells: error | zero | mean | median (filled by the owning party)
    validation_fraction: float = 0.2  # aligned ids held out by a seeded hash of the id; 0: none
    validation_seed: int = 0  # seed of that hash
    early_stopping: EarlyStoppingConfig = field(default_factory=EarlyStoppingConfig)
    boost: BoostConfig = field(default_factory=BoostConfig)  # used by model=secureboost
    fit_intercept: bool = True  # the business party holds the intercept
    duplicates: str = "error"  # duplicate ids in a party's file: error | keep_first (warns with counts)
    min_intersection: int = 10  # fewer aligned ids than this is an error
    checkpoint_every: int = 0  # iterations between weight snapshots; 0: use checkpoint.every
    provider_workers: int = 1  # processes (Ray actors) each provider splits its features over
    # memory (MB, per provider worker) for the encoded full-batch feature plaintexts kept across epochs;
    # 0: encode them again every epoch (each product then costs ~4x more)
    plaintext_cache_mb: int = 2048
    ckks: CKKSConfig = field(default_factory=CKKSConfig)


def _get(cfg: Any, key: str, default: Any = None) -> Any:
    if isinstance(cfg, dict):
        return cfg.get(key, default)
    return getattr(cfg, key, default)


def validate_vertical(cfg: Any) -> list[str]:
    """Human-readable problems with a ``vertical`` section (VerticalConfig, DictConfig or dict).

    Also accepts the root config (uses its ``vertical`` key). Returns [] when it is valid.
    """
    if _get(cfg, "vertical") is not None:
        cfg = _get(cfg, "vertical")
    errors: list[str] = []

    def err(key: str, value: Any, what: str) -> None:
        errors.append(f"vertical.{key}={value!r}: {what}")

    model = _get(cfg, "model")
    if model not in MODELS:
        err("model", model, f"allowed values are {', '.join(MODELS)}")
    for key, allowed in (("optimizer", OPTIMIZERS), ("missing", MISSING)):
        value = _get(cfg, key)
        if value not in allowed:
            err(key, value, f"allowed values are {', '.join(allowed)}")
    fraction = _get(cfg, "validation_fraction")
    if not isinstance(fraction, (int, float)) or isinstance(fraction, bool) or not 0 <= fraction <= 0.9:
        err("validation_fraction", fraction, "must be a number in [0, 0.9]")
    seed = _get(cfg, "validation_seed")
    if not isinstance(seed, int) or isinstance(seed, bool):
        err("validation_seed", seed, "must be an integer")
    stopping = _get(cfg, "early_stopping")
    patience = _get(stopping, "patience") if stopping is not None else None
    tolerance = _get(stopping, "tolerance") if stopping is not None else None
    if not isinstance(patience, int) or isinstance(patience, bool) or patience < 0:
        err("early_stopping.patience", patience, "must be an integer >= 0 (0: off)")
    elif patience > 0 and isinstance(fraction, (int, float)) and fraction == 0:
        err("early_stopping.patience", patience, "needs validation rows (vertical.validation_fraction > 0)")
    if not isinstance(tolerance, (int, float)) or isinstance(tolerance, bool) or tolerance < 0:
        err("early_stopping.tolerance", tolerance, "must be >= 0")
    boost = _get(cfg, "boost")
    if boost is None:
        err("boost", None, "missing section")
    else:
        for key, lo, hi in (("trees", 1, 10_000), ("depth", 1, 16), ("bins", 2, 255)):
            value = _get(boost, key)
            if not isinstance(value, int) or isinstance(value, bool) or not lo <= value <= hi:
                err(f"boost.{key}", value, f"must be an integer in {lo}..{hi}")
        for key, lo, hi, what in (("learning_rate", 0.0, None, "> 0"), ("subsample", 0.0, 1.0, "in (0, 1]")):
            value = _get(boost, key)
            if not isinstance(value, (int, float)) or isinstance(value, bool) or not value > lo \
                    or (hi is not None and value > hi):
                err(f"boost.{key}", value, f"must be {what}")
        for key in ("min_child_weight", "l2"):
            value = _get(boost, key)
            if not isinstance(value, (int, float)) or isinstance(value, bool) or value < 0:
                err(f"boost.{key}", value, "must be >= 0")
    dup = _get(cfg, "duplicates")
    if dup not in DUPLICATES:
        err("duplicates", dup, f"allowed values are {', '.join(DUPLICATES)}")
    for key, lo in (("iterations", 1), ("batch_size", 0), ("min_intersection", 1),
                    ("checkpoint_every", 0), ("provider_workers", 1), ("plaintext_cache_mb", 0)):
        v = _get(cfg, key)
        if not isinstance(v, int) or isinstance(v, bool) or v < lo:
            err(key, v, f"must be an integer >= {lo}")
    lr = _get(cfg, "lr")
    if not isinstance(lr, (int, float)) or not lr > 0:
        err("lr", lr, "must be > 0")
    l2 = _get(cfg, "l2")
    if not isinstance(l2, (int, float)) or l2 < 0:
        err("l2", l2, "must be >= 0")
    mom = _get(cfg, "momentum")
    if not isinstance(mom, (int, float)) or not 0 <= mom < 1:
        err("momentum", mom, "must be >= 0 and < 1")

    bpath = _get(cfg, "business_path")
    if not bpath:
        err("business_path", bpath, "required: the business party's file (id, label, features)")
    elif not Path(str(bpath)).is_file():
        err("business_path", bpath, "no such file")
    ppaths = list(_get(cfg, "provider_paths") or [])
    if not ppaths:
        err("provider_paths", ppaths, "at least one data provider file is required")
    for i, p in enumerate(ppaths):
        if not Path(str(p)).is_file():
            err(f"provider_paths[{i}]", p, "no such file")
    names = list(_get(cfg, "provider_names") or [])
    if names:
        if len(names) != len(ppaths):
            err("provider_names", names, f"needs one name per provider path ({len(ppaths)})")
        if len(set(names)) != len(names) or "business" in names:
            err("provider_names", names, "names must be unique and not 'business'")
        for n in names:
            if not str(n).replace("_", "").replace("-", "").isalnum():
                err("provider_names", names, f"{n!r}: letters, digits, - and _ only (it names a file)")
    for key in ("id_column", "label_column"):
        if not _get(cfg, key):
            err(key, _get(cfg, key), "must be a non-empty column name")
    if _get(cfg, "id_column") == _get(cfg, "label_column"):
        err("label_column", _get(cfg, "label_column"), "must differ from id_column")

    ck = _get(cfg, "ckks")
    if ck is None:
        err("ckks", None, "missing section")
        return errors
    n = _get(ck, "poly_modulus_degree")
    if n not in MAX_COEFF_BITS:
        err("ckks.poly_modulus_degree", n, f"allowed values are {', '.join(map(str, MAX_COEFF_BITS))}")
    bits = list(_get(ck, "coeff_mod_bit_sizes") or [])
    scale = _get(ck, "global_scale_bits")
    mask = _get(ck, "mask_bits")
    if len(bits) < 3 or any((not isinstance(b, int)) or b < 20 or b > 60 for b in bits):
        err("ckks.coeff_mod_bit_sizes", bits, "needs >= 3 primes, each 20..60 bits")
    elif n in MAX_COEFF_BITS and sum(bits) > MAX_COEFF_BITS[n]:
        err("ckks.coeff_mod_bit_sizes", bits,
            f"total {sum(bits)} bits exceeds {MAX_COEFF_BITS[n]} allowed at N={n} (128-bit security)")
    if not isinstance(scale, int) or not 20 <= scale <= 60:
        err("ckks.global_scale_bits", scale, "must be an integer in 20..60")
    if not isinstance(mask, int) or not 8 <= mask <= 40:
        err("ckks.mask_bits", mask, "must be an integer in 8..40")
    if len(bits) >= 3 and isinstance(scale, int) and isinstance(mask, int):
        # Masked gradient ciphertexts sit at scale 2^(2*scale) with all data primes; values up to
        # 2^(mask+1) plus ~16 bits of sign/headroom must fit below the data modulus.
        data_bits = sum(bits[:-1])
        need = 2 * scale + mask + 16
        if data_bits < need:
            err("ckks.coeff_mod_bit_sizes", bits,
                f"data primes hold {data_bits} bits; 2*global_scale_bits + mask_bits + 16 = {need} needed")
    return errors
