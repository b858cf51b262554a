from pathlib import Path

import pytest
from omegaconf import OmegaConf

from fedray.vertical.config import VerticalConfig, validate_vertical

ROOT = Path(__file__).resolve().parents[2]


@pytest.mark.parametrize("name", ["vertical_breast.yaml", "vertical_credit.yaml", "vertical_credit_boost.yaml"])
def test_shipped_yaml_is_valid(name, monkeypatch, data_dir):
    monkeypatch.chdir(ROOT)
    raw = OmegaConf.load(ROOT / "conf" / name)
    assert raw.job == "vertical" and raw.name
    cfg = OmegaConf.merge(OmegaConf.structured(VerticalConfig), raw.vertical)
    assert validate_vertical(cfg) == []
    assert validate_vertical({"vertical": cfg}) == []


def test_errors_are_named(tmp_path):
    f = tmp_path / "a.csv"
    f.write_text("id,y,x0\n1,0,1\n")
    good = VerticalConfig(business_path=str(f), provider_paths=[str(f)])
    assert validate_vertical(good) == []
    bad = OmegaConf.structured(good)
    bad.iterations = 0
    bad.model = "svm"
    bad.lr = 0.0
    bad.provider_paths = [str(tmp_path / "missing.csv")]
    bad.ckks.coeff_mod_bit_sizes = [60, 40, 60]
    bad.ckks.poly_modulus_degree = 1000
    errs = validate_vertical(bad)
    text = "\n".join(errs)
    assert "vertical.iterations=0: must be an integer >= 1" in text
    assert "vertical.model='svm': allowed values are logistic, linear" in text
    assert "vertical.lr=0.0: must be > 0" in text
    assert "vertical.provider_paths[0]=" in text and "no such file" in text
    assert "vertical.ckks.coeff_mod_bit_sizes=[60, 40, 60]" in text
    assert "vertical.ckks.poly_modulus_degree=1000" in text
    assert "required" in "\n".join(validate_vertical(VerticalConfig()))


def test_too_many_modulus_bits_for_the_ring():
    v = VerticalConfig()
    v.ckks.poly_modulus_degree = 4096
    assert any("exceeds 109" in e for e in validate_vertical(v))


def test_training_keys_are_validated(tmp_path):
    f = tmp_path / "a.csv"
    f.write_text("id,y,x0\n1,0,1\n")
    bad = OmegaConf.structured(VerticalConfig(business_path=str(f), provider_paths=[str(f)]))
    bad.optimizer = "rmsprop"
    bad.missing = "drop"
    bad.validation_fraction = 0.0
    bad.early_stopping.patience = 3
    bad.early_stopping.tolerance = -1.0
    text = "\n".join(validate_vertical(bad))
    assert "vertical.optimizer='rmsprop': allowed values are sgd, nesterov, adam" in text
    assert "vertical.missing='drop': allowed values are error, zero, mean, median" in text
    assert "vertical.early_stopping.patience=3: needs validation rows" in text
    assert "vertical.early_stopping.tolerance=-1.0: must be >= 0" in text
    bad = OmegaConf.structured(VerticalConfig(business_path=str(f), provider_paths=[str(f)]))
    bad.validation_fraction = 0.95
    assert any("vertical.validation_fraction=0.95: must be a number in [0, 0.9]" in e for e in validate_vertical(bad))
