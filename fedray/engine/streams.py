"""The one registry of random-stream tags: every random draw comes from a generator keyed by
(run seed, tag, ...), so a run depends neither on which actor hosts a device nor on arrival order."""
from __future__ import annotations

from enum import IntEnum

import numpy as np


class Stream(IntEnum):
    """Purpose tags mixed into the seed; values are part of the reproducibility contract: never renumber."""

    TRAIN = 0  # (round, device): a device's local training draws
    QUANT = 1  # (round, device): its ternary quantizer
    EVAL = 2  # (round, device): sampling during its evaluation
    PRIVATE = 3  # (device): its private parameters' initial values
    HARDWARE = 4  # (host): the hardware profiles a host's devices report
    FAULT = 5  # (round, device): injected crashes and corrupted payloads
    SELECT = 10  # the driver's participant selection (state checkpointed)
    TIERS = 11  # devices' tier assignment
    INIT = 12  # (group): a group's initial global model
    GROUP = 13  # k-means grouping
    EVAL_DEVICES = 14  # the devices sampled for an evaluation (train.eval_users)
    BROADCAST = 15  # (round, group): ternary broadcast
    TORCH = 16  # (round, device): the seed of torch's generator during a device's training or evaluation
    BYZANTINE = 17  # (device): whether a device is adversarial (faults.byzantine)
    SECAGG_GRAPH = 18  # (round, group): the public neighbour graph of secure aggregation (never keys or masks)
    PARTITION = 100  # built-in table tasks: which rows go to which device
    HOLDOUT = 101  # built-in table tasks: each device's held-out rows
    SYNTHETIC = 7001  # the recommender's synthetic catalogue and interaction counts
    SYNTHETIC_USER = 7002  # (user): one synthetic user's items
    EVAL_NEGATIVES = 9173  # (user): the recommender's sampled evaluation negatives


def stream(seed: int, tag: Stream, *keys: int) -> np.random.Generator:
    """A generator determined only by the run seed, the purpose tag and the given integer keys."""
    return np.random.default_rng([int(seed), int(tag), *[int(k) for k in keys]])


def torch_seed(seed: int, tag: Stream, *keys: int) -> int:
    """A seed for torch's global generator, from the run seed, a purpose tag and the given keys."""
    return int(stream(seed, tag, *keys).integers(0, 2**63 - 1))
