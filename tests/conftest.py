"""Shared fixtures: paths to ../shared/data and one real local Ray cluster for the whole session."""
from __future__ import annotations

from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parents[1]
SHARED_DATA = ROOT.parent / "shared" / "data"
TEST_TIERS = ("default", "high", "mid", "low")


@pytest.fixture(scope="session")
def movielens_dir() -> Path:
    path = SHARED_DATA / "movielens-small"
    if not (path / "ratings.csv").is_file():
        pytest.skip(f"MovieLens data not found at {path}")
    return path


@pytest.fixture(scope="session")
def ray_local():
    """One embedded Ray for the session, declaring the tier resources the tests use."""
    import ray

    from fedray.runtime import TIER_UNITS, tier_resource

    started = False
    if not ray.is_initialized():
        ray.init(num_cpus=2, resources={tier_resource(t): TIER_UNITS for t in TEST_TIERS},
                 include_dashboard=False, log_to_driver=False, logging_level="ERROR")
        started = True
    yield ray
    if started:
        ray.shutdown()
