from pathlib import Path

import pytest
from omegaconf import OmegaConf

from fedray.vertical.config import VerticalConfig, validate_vertical

ROOT = Path(__file__).resolve().parents[2]


@pytest.mark.parametrize("name", ["vertical_breast.yaml", "vertical_credit.yaml"])
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
