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


# The keys of the S3 server tests/test_checkpoint_s3.py starts on loopback (moto accepts any; these are no secret).
S3_CREDENTIALS = {"AWS_ACCESS_KEY_ID": "fedray-test", "AWS_SECRET_ACCESS_KEY": "fedray-test-secret",
                  "AWS_DEFAULT_REGION": "us-east-1", "AWS_EC2_METADATA_DISABLED": "true"}


def start_local_ray():
    """The embedded Ray the tests share, declaring the tier resources they use. Its nodes hold the test bucket's
    keys in their environment, as a real cluster's nodes hold their own, so that a job's actors reach the bucket;
    this process's environment is left as it was."""
    import os

    import ray

    from fedray.runtime import TIER_UNITS, tier_resource

    if not ray.is_initialized():
        saved = {k: os.environ.get(k) for k in S3_CREDENTIALS}
        os.environ.update(S3_CREDENTIALS)  # inherited by the raylet, and so by every worker it starts
        try:
            ray.init(num_cpus=2, resources={tier_resource(t): TIER_UNITS for t in TEST_TIERS},
                     include_dashboard=False, log_to_driver=False, logging_level="ERROR")
        finally:
            for key, value in saved.items():
                if value is None:
                    os.environ.pop(key, None)
                else:
                    os.environ[key] = value
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


# Fixtures that take this process off the shared local Ray: their tests run after the others, in this order,
# so the shared cluster starts once and the two-node cluster (started once) lives only at the end.
OWN_RAY_RANK = {"own_cluster": 1, "tier_cluster": 1, "two_nodes": 2, "two_nodes_to_break": 3}
# Fixtures that start or use a Ray cluster: a test with any of them is a `ray` test.
RAY_FIXTURES = {"_ray_session", "ray_local", "ray_module", "resume_reference", *OWN_RAY_RANK}
# `make test` runs two pytest-xdist workers: every `ray` and `cluster` test goes to one of them, in this file's
# order (one Ray cluster at a time on the machine), and the other runs the tests without Ray alongside.
RAY_GROUP = "ray"


def _rank(item) -> int:
    return max((OWN_RAY_RANK.get(name, 0) for name in getattr(item, "fixturenames", ())), default=0)


def uses_ray(item) -> bool:
    """A test of the Ray group: marked `ray` or `cluster`, or using a fixture that starts a cluster."""
    return (item.get_closest_marker("ray") is not None or item.get_closest_marker("cluster") is not None
            or bool(RAY_FIXTURES & set(getattr(item, "fixturenames", ()))))


@pytest.hookimpl(tryfirst=True)  # before pytest-xdist reads the xdist_group marks
def pytest_collection_modifyitems(items):
    """Tests that build their own cluster are `cluster` tests (`pytest -m cluster` runs them alone, `-m "not
    cluster"` is the quick loop; `make test` runs both), and run last: a module with any of them moves after
    the modules without, its own tests on the shared cluster first, so the shared cluster is not restarted.
    Every test that uses Ray joins one xdist group, so that under `-n 2` a single worker runs them in order."""
    module_rank, first = {}, {}
    for index, item in enumerate(items):
        if _rank(item):
            item.add_marker(pytest.mark.cluster)
        if uses_ray(item):
            item.add_marker(pytest.mark.ray)
            item.add_marker(pytest.mark.xdist_group(RAY_GROUP))
        module = getattr(item, "module", None)
        module_rank[module] = max(module_rank.get(module, 0), _rank(item))
        first.setdefault(module, index)
    order = {id(item): index for index, item in enumerate(items)}

    def key(item) -> tuple[int, int, int, int]:
        module = getattr(item, "module", None)
        return module_rank[module], first[module], _rank(item), order[id(item)]

    items.sort(key=key)


@pytest.fixture(autouse=True)
def _one_ray_cluster_at_a_time(request, monkeypatch):
    """Under pytest-xdist, a Ray test must be in the Ray group (xdist marks its node id with the group; with a pytest
    it cannot group under, pytest-dev/pytest-xdist#1386, it silently would not), and a test not marked `ray` may run
    beside the Ray tests, so starting Ray there fails at `ray.init`, naming the mark it lacks."""
    if uses_ray(request.node):
        if getattr(request.config.option, "loadgroup", False) and not request.node.nodeid.endswith(f"@{RAY_GROUP}"):
            pytest.fail(f"pytest-xdist did not put this Ray test in the '{RAY_GROUP}' group, so it could run beside "
                        "another Ray cluster: this pytest and pytest-xdist do not group (see the pin in "
                        "pyproject.toml), or run without -n", pytrace=False)
        return
    import ray

    def refuse(*args, **kwargs):
        raise RuntimeError(f"{request.node.nodeid} starts Ray but is not marked: add @pytest.mark.ray (or use "
                           "the ray_local fixture) so that it runs in the Ray group, one cluster at a time")

    monkeypatch.setattr(ray, "init", refuse)


@pytest.fixture
def own_cluster():
    """For tests that build their own cluster (multi-node, `ray start`): the shared one is shut down first."""
    import ray

    ray.shutdown()
    yield
    ray.shutdown()


@pytest.fixture(scope="session")
def _two_node_session():
    """One real two-node `ray start` cluster (tests/clusters.py) for the session's job and node-fault tests."""
    import ray
    from clusters import two_node_cluster

    ray.shutdown()
    with two_node_cluster() as cluster:
        yield cluster


@pytest.fixture
def two_nodes(_two_node_session):
    """The session's two-node cluster with both nodes up (a test before may have stopped one), this process
    connected to no cluster before and after."""
    import ray

    ray.shutdown()
    _two_node_session.restore()
    yield _two_node_session
    ray.shutdown()


@pytest.fixture
def two_nodes_to_break(two_nodes):
    """The two-node cluster for tests that stop its nodes: they run after every other test, so none has to wait
    for a stopped node to come back."""
    return two_nodes


# The uninterrupted horizontal run that kill-and-resume tests compare with (tests/horizontal/test_resume.py,
# tests/test_checkpoint_s3.py): small, 9 rounds, a checkpoint every 2, one device host (a host more costs a process
# importing torch in every run of it; multi-host restore is checked by the secure and node-fault runs).
RESUME_JOB = [str(ROOT / "conf/default.yaml"), "data.synthetic.n_users=60", "data.synthetic.n_items=200",
              "train.participants=12", "train.over_select=1.5", "train.eval_every=3", "train.rounds=9",
              "runtime.devices_per_actor=60", "checkpoint.every=2", "checkpoint.keep=3"]


@pytest.fixture(scope="session")
def resume_reference(_ray_session, tmp_path_factory) -> Path:
    """RESUME_JOB run once, uninterrupted, on the shared cluster: its run directory (treat it as read-only)."""
    from fedray.cli import main

    start_local_ray()
    run = tmp_path_factory.mktemp("resume-reference") / "run"
    assert main(["run", *RESUME_JOB, f"run_dir={run}"]) == 0
    return run
