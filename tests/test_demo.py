"""``su-neuro demo --quick``: both models train, the table prints, every output is written."""

from __future__ import annotations

import json

from su_neuro.cli import main


def test_demo_quick(tmp_path, capsys):
    out = tmp_path / "demo"
    # its time is the docs' figure, not an assertion (a cold Numba cache on a loaded host took 146 s)
    assert main(["demo", "--quick", "--out", str(out), "--no-progress", "--seed", "1"]) == 0
    text = capsys.readouterr().out
    assert "suGRU (rhythmic)" in text and "GRU (dense)" in text and "effective ops/seq" in text
    assert str(out.resolve()) in text
    for name in ("comparison.md", "comparison.json", "curves.png"):
        assert (out / name).is_file(), name
    for model in ("su_gru", "dense_gru"):
        for name in ("trace.h5", "checkpoint.pt", "metrics.jsonl", "result.json",
                     "report/report.md", "report/report.json", "report/ops.png", "report/raster.png"):
            assert (out / model / name).is_file(), f"{model}/{name}"
    summary = json.loads((out / "comparison.json").read_text())
    su, dense = summary["models"]
    assert summary["settings"]["seed"] == 1
    assert dense["update_rate"] == 1.0 and 0.0 < su["update_rate"] < 0.5
    assert su["effective_ops"] < 0.5 * su["dense_ops"]
    assert su["dense_ops"] == dense["dense_ops"]

    # a second run refuses to replace the first without --overwrite
    before = (out / "comparison.json").read_bytes()
    assert main(["demo", "--quick", "--out", str(out), "--no-progress"]) == 2
    assert "already holds a demo" in capsys.readouterr().err
    assert (out / "comparison.json").read_bytes() == before
