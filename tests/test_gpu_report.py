"""tools/gpu_report.py: a device run's bench_gpu.json as markdown and as choose.MEASURED."""

from __future__ import annotations

import ast
import importlib.util
import json

import pytest

# the picks are read back into grid_tiles.Tiles, which needs triton; find_spec does not import
# it (an import at collection, before the Triton tests set TRITON_INTERPRET, would compile
# their kernels for a GPU)
pytestmark = pytest.mark.skipif(importlib.util.find_spec("triton") is None, reason="triton not installed")


def _run(load_tool, *argv):
    return load_tool("gpu_report").main([str(a) for a in argv])


RUN = {
    "device": "NVIDIA H200", "sms": 132, "torch": "2.11.0", "triton": "3.6.0", "budget_s": 280.0,
    "copy_GBs": 4275.0, "barrier_us": {"132x1": 0.89}, "seconds": 271.0,
    "part_seconds": {"sweep_gru_b64": 61.0, "targets": 70.5},
    "targets": [
        {"target": "gru dense auto fwd (A/B x5)", "su_ms": 17.7, "ref_ms": 17.3, "ratio": 0.977, "need": 0.95,
         "met": True, "extra": "max|d| out 0.0e+00"},
        {"target": "gru B=1 H=8192 open-weight bandwidth", "of_copy": 0.5, "met": False},
    ],
    "sweep_gru_b64": {"rows": [
        {"config": "bb16 bh16 bk64 w4 s2 dot-ieee", "fwd_ms": 69.5, "fwd_bwd_ms": 99.5, "max_diff": 0.0,
         "grad_diff": 0.0, "fwd_kernel": {"programs": "33x4", "regs": 72, "spills": 0}, "bwd_kernel": {}},
        {"config": "bb16 bh16 bk32 w4 s3 dot-tf32x3 split dw bwd32x32w4", "error": "OutOfResources: shared | 2"},
        {"config": "bb16 bh16 bk32 w4 s3 dot-tf32x3", "skipped": "time budget"},
    ], "open_neuron_steps": 104857.0},
    "best": {"gru_b64": "bb16 bh16 bk64 w4 s2 dot-ieee", "gru_b1": None},
    "sweep_event": [{"cell": "rnn", "B": 64, "H": 1024, "T": 1024, "skipped": "time budget"}],
}


def test_markdown_names_every_row_and_reads_the_picks_back(load_tool, tmp_path, capsys):
    from su_neuro.kernels.triton.grid_tiles import Tiles

    path = tmp_path / "bench_gpu.json"
    path.write_text(json.dumps(RUN))
    assert _run(load_tool, path) == 0
    text = capsys.readouterr().out
    assert "| gru dense auto fwd (A/B x5) (max\\|d\\| out 0.0e+00) | 17.70 | 17.30 | 0.98x | 0.95x | met |" in text
    assert "| gru B=1 H=8192 open-weight bandwidth |  | | 50% of copy | 60 % | **missed** |" in text
    assert "| bb16 bh16 bk64 w4 s2 dot-ieee | 69.50 | 99.50 | 0.0e+00 | 0.0e+00 | 33x4 programs, 72 regs |  |" in text
    assert "| failed: OutOfResources: shared \\| 2 |" in text  # a '|' in a message stays in its cell
    assert "| bb16 bh16 bk32 w4 s3 dot-tf32x3 | skipped (time budget) |" in text
    assert f"`{(Tiles(16, 16, 64, 4, 2, False), 'ieee')}`" in text and "`gru_b1`: none" in text
    assert "B = 64, H = 1024, T = 1024**: skipped (time budget)" in text
    assert "sweep_gru_b64 61, targets 70" in text and "budget 280 s, run 271 s" in text


def test_measured_is_choose_table_from_the_gru_rows(load_tool, tmp_path, capsys):
    rows = [
        {"cell": "gru", "B": 1, "H": 256, "T": 256, "rate": 1.0, "torch": [56.094, 199.16], "rows": [7.5, 22.79],
         "grid": [1.81, 3.32]},
        {"cell": "gru", "B": 1, "H": 256, "T": 256, "rate": 0.1, "rows": [1.25, None], "grid": "RuntimeError: x"},
        {"cell": "gru", "B": 16, "H": 4096, "T": 256, "skipped": "time budget"},
        {"cell": "rnn", "B": 1, "H": 256, "T": 256, "rate": 1.0, "torch": [5.0, 6.0], "rows": [1.0, 2.0],
         "grid": [3.0, 4.0]},
    ]
    path = tmp_path / "table.json"
    path.write_text(json.dumps({"device": "NVIDIA H200", "auto_table": rows}))
    assert _run(load_tool, "--measured", path) == 0
    text = capsys.readouterr().out
    assert text.startswith("MEASURED = {")
    table = ast.literal_eval(text.split("=", 1)[1].strip())
    assert table == {(1, 256, 1.0): ((56.09, 199.16), (7.5, 22.79), (1.81, 3.32)),
                     (1, 256, 0.1): ((56.09, 199.16), (1.25, None), None)}


@pytest.mark.parametrize("content, argv, why", [
    (None, [], "no such file"),
    ("{not json", [], "not a bench_gpu.py JSON file"),
    ("[1, 2]", [], "no 'device' entry"),
    (json.dumps(RUN), ["--measured"], "no auto table in this file"),
    (json.dumps({"device": "x", "auto_table": [{"cell": "gru", "B": 1, "H": 8, "skipped": "time budget"}]}),
     ["--measured"], "no GRU point that was measured"),
])
def test_unreadable_input_is_one_line_and_status_2(load_tool, tmp_path, capsys, content, argv, why):
    path = tmp_path / "bench_gpu.json"
    if content is not None:
        path.write_text(content)
    assert _run(load_tool, *argv, path) == 2
    err = capsys.readouterr().err.strip()
    assert err.startswith("gpu_report: ") and why in err and "\n" not in err, err
