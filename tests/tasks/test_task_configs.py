"""conf/credit_mlp.yaml and conf/digits_cnn.yaml: their task sections build working tasks with the issue's shape."""
from __future__ import annotations

import importlib

import pytest
from omegaconf import OmegaConf

from tests.conftest import ROOT, SHARED_DATA


def build(name: str):
    """The task a config names, built from its `task` section as the engine does (target + kwargs)."""
    cfg = OmegaConf.to_container(OmegaConf.load(ROOT / "conf" / name))
    kwargs = dict(cfg["task"])
    module, _, attribute = kwargs.pop("target").partition(":")
    return cfg, getattr(importlib.import_module(module), attribute)(**kwargs)


def test_credit_config(monkeypatch):
    if not (SHARED_DATA / "vertical" / "default_credit_hetero_guest.csv").is_file():
        pytest.skip("credit data not found")
    monkeypatch.chdir(ROOT)  # the config's paths are relative to the repository root
    cfg, task = build("credit_mlp.yaml")
    assert (cfg["task"]["devices"], cfg["task"]["partition"], cfg["task"]["alpha"]) == (100, "dirichlet", 0.5)
    data = task.load(cfg["seed"])
    assert len(data) == 100 and data[0].x_train.shape[1] == 23
    assert cfg["compression"]["mode"] == "dense"


def test_digits_config():
    pytest.importorskip("sklearn")
    cfg, task = build("digits_cnn.yaml")
    assert (cfg["task"]["devices"], cfg["task"]["partition"], cfg["task"]["alpha"]) == (50, "dirichlet", 0.5)
    assert len(task.load(cfg["seed"])) == 50
