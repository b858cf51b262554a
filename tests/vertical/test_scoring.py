"""Joint scoring in one process: equal to the trained model applied to pooled rows, and what crosses."""
from __future__ import annotations

import argparse

import numpy as np
import pyarrow.parquet as pq
import pytest

from fedray.data.vertical import PartyTable, VerticalDataError, read_party
from fedray.vertical.config import VerticalConfig
from fedray.vertical.protocol import BusinessCore, LocalTransport, ProviderCore, Settings, run_local
from fedray.vertical.scoring import PartyModel, Scorer, ScoringBusiness, ScoringProvider

SETTINGS = Settings.from_config(VerticalConfig())


def _write_csv(t: PartyTable, rows, path, holes=None) -> str:
    """CSV of the given rows without labels; cells where ``holes`` is True are left empty."""
    cells = t.features[rows].astype(str).astype(object)
    if holes is not None:
        cells[holes] = ""
    lines = [",".join(["id", *t.feature_names])] + [",".join([i, *c]) for i, c in zip(t.ids[rows], cells)]
    path.write_text("\n".join(lines) + "\n")
    return str(path)


@pytest.fixture(scope="module")
def trained(data_dir, tmp_path_factory):
    """A model trained on breast with two providers (host columns split), its model files."""
    g = read_party(data_dir / "breast_hetero_guest.csv", label_column="y")
    h = read_party(data_dir / "breast_hetero_host.csv")
    h1 = PartyTable(h.path, h.ids, h.features[:, :8], h.feature_names[:8])
    h2 = PartyTable(h.path, h.ids, h.features[:, 8:], h.feature_names[8:])
    trainer, _, _ = run_local(BusinessCore(g, SETTINGS), [ProviderCore("a", h1, SETTINGS),
                                                          ProviderCore("b", h2, SETTINGS)], SETTINGS, 5)
    return g, h1, h2, trainer.save(tmp_path_factory.mktemp("run") / "parties")


def _new_files(g, h1, h2, tmp_path):
    """New customers: each party holds a different, shuffled subset, some cells empty."""
    rng = np.random.default_rng(4)
    rows_g, rows_a, rows_b = rng.permutation(569)[:400], rng.permutation(569)[:450], rng.permutation(569)[:500]
    return {"business": _write_csv(g, rows_g, tmp_path / "g.csv", rng.random((400, 10)) < 0.05),
            "a": _write_csv(h1, rows_a, tmp_path / "a.csv", rng.random((450, 8)) < 0.05),
            "b": _write_csv(h2, rows_b, tmp_path / "b.csv")}


def _score(trained, files, settings, out):
    _, _, _, paths = trained
    b = ScoringBusiness(paths["business"], files["business"], settings, str(out))
    parties = {"business": b, **{p: ScoringProvider(p, paths[p], files[p], settings) for p in ("a", "b")}}
    transport = LocalTransport(parties, record=True)
    return Scorer(transport, ["a", "b"]).run(), transport.messages


def test_scores_equal_the_model_on_pooled_rows_for_the_intersection(trained, tmp_path, pooled_predictions):
    """Catches a provider using raw instead of its stored scaling, a dropped intercept, a wrong fill value,
    rows misaligned by PSI, or scores written in another order than the business file's."""
    g, h1, h2, paths = trained
    files = _new_files(g, h1, h2, tmp_path)
    summary, _ = _score(trained, files, SETTINGS, tmp_path / "scores.parquet")
    out = pq.read_table(tmp_path / "scores.parquet")
    assert out.column_names == ["id", "score"]
    want = pooled_predictions(paths, files, SETTINGS.missing)
    got = dict(zip(out["id"].to_pylist(), out["score"].to_pylist()))
    assert summary["scored"] == summary["intersection"] == len(want) == len(got) > 100
    assert max(abs(got[i] - want[i]) for i in want) < 1e-6
    order = {i: k for k, i in enumerate(read_party(files["business"], missing="mean").ids)}
    assert [order[i] for i in out["id"].to_pylist()] == sorted(order[i] for i in got)


def test_scoring_messages_hold_no_score_feature_or_weight(trained, tmp_path, auditor):
    g, h1, h2, _ = trained
    files = _new_files(g, h1, h2, tmp_path)
    _, msgs = _score(trained, files, SETTINGS, tmp_path / "s.parquet")
    pub = next(m.payload for m in msgs if m.method == "public_context" and m.src == "business")
    tables = [read_party(f, missing="mean") for f in files.values()]
    cols = [c for t in tables for c in np.nan_to_num(t.features).T]
    kinds = auditor(msgs, cols, pub, 1)  # n_rows=1: any float array at all is a leak
    assert "float_array" not in kinds and kinds["ciphertext"] >= 3 and kinds["psi_point"] >= 2 * 400
    finish = [m for m in msgs if m.method == "finish" and m.src == "business"]
    assert len(finish) == 1 and isinstance(finish[0].payload, int)  # only a count leaves the business party


def test_model_and_file_errors_name_the_party_and_file(trained, tmp_path):
    g, h1, h2, paths = trained
    with pytest.raises(VerticalDataError, match=r"a: no model file .*nothing\.parquet"):
        PartyModel(tmp_path / "nothing.parquet", "a")
    narrow = PartyTable(h1.path, h1.ids, h1.features[:, :3], h1.feature_names[:3])
    path = _write_csv(narrow, np.arange(20), tmp_path / "narrow.csv")
    p = ScoringProvider("a", paths["a"], path, SETTINGS)
    p._aligned = np.arange(5)
    with pytest.raises(VerticalDataError, match=r"narrow\.csv: a's model needs columns \['x3'"):
        p.model.partial_scores(p.data, np.arange(5))


def test_cmd_predict_exits_2_on_bad_input(tmp_path):
    from rich.console import Console

    from fedray.vertical.predict import add_predict_parser

    parser = argparse.ArgumentParser()
    add_predict_parser(parser.add_subparsers(dest="command"))
    console = Console(width=200, record=True)
    args = parser.parse_args(["predict", str(tmp_path), "--business", "g.csv", "--provider", "h.csv"])
    assert args.func(args, console) == 2
    assert "not a fedray run directory" in console.export_text()
    (tmp_path / "config.yaml").write_text("job: vertical\nvertical:\n  provider_paths: [a.csv, b.csv]\n")
    assert args.func(args, console) == 2
    assert "the run has 2 provider(s) ['provider0', 'provider1']: give --provider once for each" in console.export_text()
