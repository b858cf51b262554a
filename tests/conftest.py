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


def start_local_ray():
    """The embedded Ray the tests share, declaring the tier resources they use."""
    import ray

    from fedray.runtime import TIER_UNITS, tier_resource

    if not ray.is_initialized():
        ray.init(num_cpus=2, resources={tier_resource(t): TIER_UNITS for t in TEST_TIERS},
                 include_dashboard=False, log_to_driver=False, logging_level="ERROR")
    return ray


@pytest.fixture(scope="session")
def _ray_session():
    """Shut the shared cluster down once, at the end of the session."""
    yield
    import ray

    ray.shutdown()


@pytest.fixture(scope="module")
def ray_module(_ray_session):
    """The shared local Ray for a module-scoped fixture (e.g. a reference run several tests compare with)."""
    return start_local_ray()


@pytest.fixture
def ray_local(_ray_session):
    """The session's shared local Ray (started on first use, or again after a test that needed its own cluster)."""
    return start_local_ray()


def pytest_collection_modifyitems(items):
    """Every test that builds its own cluster is a `cluster` test: `pytest -m cluster` runs them alone, and
    `pytest -m "not cluster"` is the quick loop (`make test` runs both)."""
    for item in items:
        if "own_cluster" in getattr(item, "fixturenames", ()):
            item.add_marker(pytest.mark.cluster)


@pytest.fixture
def own_cluster():
    """For tests that build their own cluster (multi-node, `ray start`): the shared one is shut down first."""
    import ray

    ray.shutdown()
    yield
    ray.shutdown()
