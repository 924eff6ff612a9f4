"""The Numba backend's kernel choice (kernels/numba/choose.py): every branch of the rule,
at the boundary sizes of its constants. Pure functions: no kernel runs here."""

from __future__ import annotations

import functools

import pytest
import torch
from conftest import gemm_forced

pytest.importorskip("numba")

from su_neuro.kernels.numba import choose  # noqa: E402
from su_neuro.kernels.numba.choose import Variant, choose_kernel  # noqa: E402


def _never():
    raise AssertionError("the open count was read where the split rule does not apply")


def test_nchunks():
    assert [choose.nchunks(b, 2) for b in (0, 1, 2, 3, 33)] == [1, 1, 2, 2, 2]
    assert choose.nchunks(5, 1) == 1 and choose.nchunks(5, 8) == 5


def test_use_gemm_boundary():
    n, wide, H = choose.GEMM_MIN_BATCH, choose.GEMM_MIN_BATCH_DENSE_GRU, choose.GEMM_WIDE
    few = choose.GEMM_MIN_BATCH_DENSE_RNN
    for cell, gate, hidden in (("rnn", "rhythmic", H - 1), ("gru", "rhythmic", H - 1), ("gru", "dense", H - 1),
                               ("gru", "rhythmic", 4 * H), ("rnn", "rhythmic", 4 * H), ("rnn", "dense", H)):
        kw = dict(cell=cell, hidden=hidden)
        assert choose.use_gemm(gate, 2 * n, 2, **kw)  # chunks of n samples
        assert not choose.use_gemm(gate, 2 * n - 1, 2, **kw)  # the smaller chunk has n - 1
        assert choose.use_gemm(gate, n, 1, **kw) and not choose.use_gemm(gate, n - 1, 1, **kw)
        assert not choose.use_gemm("event", 10 * n, 2, **kw)  # the event gate has no GEMM path
        assert not choose.use_gemm(gate, 10 * n, 2, blas=False, **kw)  # no BLAS in the threads: no GEMM path
    assert wide > n > few > 1
    # a dense GRU of H >= GEMM_WIDE runs chunks of fewer than GEMM_MIN_BATCH_DENSE_GRU on rows
    assert not choose.use_gemm("dense", 2 * wide - 1, 2, cell="gru", hidden=H)
    assert choose.use_gemm("dense", 2 * wide, 2, cell="gru", hidden=H)
    # a dense RNN of H < GEMM_WIDE runs GEMMs from chunks of GEMM_MIN_BATCH_DENSE_RNN
    assert choose.use_gemm("dense", 2 * few, 2, cell="rnn", hidden=H - 1)
    assert not choose.use_gemm("dense", 2 * few - 1, 2, cell="rnn", hidden=H - 1)
    assert not choose.use_gemm("rhythmic", 2 * few, 2, cell="rnn", hidden=H - 1)
    v = choose_kernel("gru", "dense", 2 * n, H, 50, True, threads=2, opened=_never)
    assert v.kernel == "rows" and choose_kernel("gru", "dense", 2 * n, H - 1, 50, True, threads=2).kernel == "gemm"
    assert not choose.fuses_input("gru", "dense", 2 * n, 16, True, hidden=H, threads=2)  # training fuses on GEMMs only
    assert choose.fuses_input("gru", "dense", 2 * n, 16, True, hidden=H - 1, threads=2)


@pytest.mark.parametrize("gate", ["dense", "rhythmic", "event"])
def test_lif_always_its_kernel(gate):
    for batch, save in ((1, False), (64, True)):
        v = choose_kernel("lif", gate, batch, 512, 100, save, threads=2, opened=_never)
        assert v == Variant("lif", min(batch, 2), compact=gate == "rhythmic")


@pytest.mark.parametrize("cell", ["rnn", "gru"])
def test_event_gate(cell):
    for batch, save in ((1, False), (1, True), (64, True)):  # neither split, GEMM nor scan
        v = choose_kernel(cell, "event", batch, 512, 100, save, threads=2, opened=_never)
        assert v == Variant("event", min(batch, 2))


def test_gemm_and_rows_boundary():
    n = choose.GEMM_MIN_BATCH
    v = choose_kernel("gru", "rhythmic", 2 * n, 64, 50, True, threads=2, opened=_never)
    assert v == Variant("gemm", 2, compact=True)
    v = choose_kernel("gru", "rhythmic", 2 * n - 1, 64, 50, True, threads=2, opened=_never)
    assert v == Variant("rows", 2, compact=True)
    v = choose_kernel("rnn", "dense", 2 * n, 64, 50, True, threads=2, opened=_never)
    assert v == Variant("gemm", 2)  # dense: no compaction
    v = choose_kernel("rnn", "dense", 64, 64, 50, True, threads=2, blas=False, opened=_never)
    assert v == Variant("rows", 2)
    # a batch of 2 in inference: neither split (B > 1) nor scan (B > 1)
    v = choose_kernel("gru", "rhythmic", 2, 512, 50, False, threads=2, opened=_never)
    assert v == Variant("rows", 2, compact=True)


def test_gemm_even_for_one_sample_when_forced(monkeypatch):
    gemm_forced(monkeypatch)
    v = choose_kernel("gru", "dense", 1, 16, 5, False, threads=2)  # too little work to split
    assert v == Variant("gemm", 1)  # no scan on the GEMM path
    v = choose_kernel("gru", "rhythmic", 1, 16, 5, False, threads=2, opened=lambda: 5)
    assert v == Variant("gemm", 1, compact=True)


def test_split_dense_stream():
    # GRU H = 512, dense: 512 * (3 * 512 + 64) units per step, blocks of 15 * 512: split
    v = choose_kernel("gru", "dense", 1, 512, 100, False, threads=2, opened=_never)
    assert v == Variant("split", 1, tasks=2, stream=True)
    # one thread: no second block
    v = choose_kernel("gru", "dense", 1, 512, 100, False, threads=1, opened=_never)
    assert v == Variant("rows", 1, stream=True)


def test_split_needs_no_saves_and_steps():
    v = choose_kernel("gru", "dense", 1, 512, 100, True, threads=2, opened=_never)
    assert v == Variant("rows", 1)  # saves for backward: no split, no scan
    v = choose_kernel("gru", "rhythmic", 1, 512, 100, True, threads=2, opened=_never)
    assert v == Variant("rows", 1, compact=True)
    v = choose_kernel("gru", "rhythmic", 1, 512, 0, False, threads=2, opened=_never)
    assert v == Variant("rows", 1, stream=True)  # no step: nothing to split


def test_split_rhythmic_reads_the_open_count_once():
    calls = []

    def opened():
        calls.append(1)
        return 100 * 51  # GRU H = 512, 10 % open over 100 steps

    v = choose_kernel("gru", "rhythmic", 1, 512, 100, False, threads=4, opened=opened)
    assert v == Variant("split", 1, tasks=4, stream=True) and calls == [1]
    # 0.4 % open: too little work; the one-thread kernel scans the rows (no compaction)
    v = choose_kernel("gru", "rhythmic", 1, 512, 100, False, threads=4, opened=lambda: 200)
    assert v == Variant("rows", 1, stream=True)


def test_split_tasks_boundaries():
    s = choose.split_tasks
    # block size: H // SPLIT_MIN_BLOCK blocks at most
    m = choose.SPLIT_MIN_BLOCK
    assert s("dense", False, 1, 2 * m, 1, 100 * 2 * m, 100, threads=8) == 2
    assert s("dense", False, 1, 2 * m - 1, 1, 100 * (2 * m - 1), 100, threads=8) == 0
    # work: RNN H = 256, blocks of max(1024, 3.75 * 2 * 256 = 1920) units; a neuron is 320 units
    assert s("rhythmic", False, 1, 256, 1, 120, 10, threads=8) == 2  # 12 * 320 = 2 * 1920
    assert s("rhythmic", False, 1, 256, 1, 119, 10, threads=8) == 0  # 11.9 * 320 < 2 * 1920
    assert s("rhythmic", False, 1, 256, 1, 180, 10, threads=8) == 3  # 18 * 320 = 3 * 1920
    # threads bound the blocks
    assert s("rhythmic", False, 1, 256, 1, 2560, 10, threads=3) == 3
    # never with saves, an event gate, a batch or no steps
    assert s("rhythmic", True, 1, 256, 1, 2560, 10, threads=8) == 0
    assert s("event", False, 1, 256, 1, 2560, 10, threads=8) == 0
    assert s("dense", False, 2, 256, 1, 2560, 10, threads=8) == 0
    assert s("rhythmic", False, 1, 256, 1, 0, 0, threads=8) == 0


def test_huge_weights_boundaries():
    n, most = choose.SPLIT_HUGE_STEPS, choose.SPLIT_HUGE_MAX_BYTES
    assert choose.huge_weights(n, 4) and not choose.huge_weights(n - 1, 4)
    assert choose.huge_weights(n, most) and not choose.huge_weights(n, most + 1)
    assert not choose.huge_weights(n, 0)  # H = 0: nothing to copy


def test_fuses_input():
    f = functools.partial(choose.fuses_input, hidden=64)  # H < GEMM_WIDE
    wide, few, rhythmic = choose.FUSED_MAX_INPUT, choose.FUSED_TRAIN_MAX_INPUT_DENSE, choose.FUSED_TRAIN_MAX_INPUT
    n = choose.GEMM_MIN_BATCH
    # inference on the GEMM path: a rhythmic gate at any width, a dense one up to FUSED_MAX_INPUT
    assert f("gru", "rhythmic", 2 * n, 10 * wide, False, threads=2)
    assert f("rnn", "dense", 2 * n, wide, False, threads=2) and not f("rnn", "dense", 2 * n, wide + 1, False, threads=2)
    # inference on the row-block and split kernels: a rhythmic gate at any width (a stream fed
    # in chunks keeps one call's bits), a dense one up to FUSED_STREAM_MAX_INPUT
    narrow = choose.FUSED_STREAM_MAX_INPUT
    assert f("gru", "rhythmic", 1, 10 * wide, False, threads=2)
    assert f("rnn", "rhythmic", n - 1, 10 * wide, False, threads=1)
    assert f("rnn", "dense", 1, narrow, False, threads=2) and not f("rnn", "dense", 1, narrow + 1, False, threads=2)
    assert not f("gru", "dense", n - 1, narrow + 1, False, threads=1)
    # training: on the GEMM path with at most FUSED_TRAIN_MAX_INPUT(_DENSE) features
    assert f("gru", "dense", 2 * n, few, True, threads=2)
    assert not f("gru", "dense", 2 * n, few + 1, True, threads=2)
    assert rhythmic >= 64  # an embedding of 64 features trains fused (issue 23)
    assert f("rnn", "rhythmic", 2 * n, rhythmic, True, threads=2)
    assert not f("rnn", "rhythmic", 2 * n, rhythmic + 1, True, threads=2)
    assert not f("gru", "dense", 2 * n - 1, 1, True, threads=2)
    assert not f("gru", "dense", 2 * n, 1, True, threads=2, blas=False)
    # how: per-step GEMMs from FUSED_DOT_MIN_INPUT(_DENSE) features, short dot products below
    dots, dots_dense = choose.FUSED_DOT_MIN_INPUT, choose.FUSED_DOT_MIN_INPUT_DENSE
    assert choose.train_projection("rhythmic", dots) == "gemm" and choose.fused_dots("rhythmic", dots)
    assert choose.train_projection("rhythmic", dots - 1) == "loops" and not choose.fused_dots("rhythmic", dots - 1)
    assert choose.train_projection("dense", dots_dense) == "gemm"
    assert dots_dense == 1 or choose.train_projection("dense", dots_dense - 1) == "loops"
    assert choose.train_projection("rhythmic", rhythmic + 1) == "unfused"
    assert choose.train_projection("dense", few + 1) == "unfused"
    # LIF and the event gate: never
    assert not f("lif", "dense", 1, 1, False, threads=2)
    assert not f("gru", "event", 1, 1, False, threads=2)


def test_unsupported_and_auto_pays_are_the_backend_hooks():
    from su_neuro.kernels.numba import ops

    assert ops.unsupported is choose.unsupported and ops.auto_pays is choose.auto_pays
    assert choose.unsupported("gru", "event", torch.float32) is None
    assert "cell" in choose.unsupported("lstm", "dense", torch.float32)
    assert "gate" in choose.unsupported("gru", "sometimes", torch.float32)
    assert "float32" in choose.unsupported("lif", "dense", torch.float64)
    assert choose.auto_pays("lif", 64, 4096)
    # dense: B*H <= 4096, B <= 8 at any width, an RNN up to H = 128, a GRU 256
    dense = [("rnn", 64, 128), ("rnn", 16, 256), ("rnn", 8, 4096), ("gru", 256, 256)]
    to_nn = [("rnn", 32, 129), ("rnn", 17, 256), ("rnn", 9, 512), ("gru", 32, 257)]
    assert all(choose.auto_pays(*size, gate_kind="dense") for size in dense)
    assert not any(choose.auto_pays(*size, gate_kind="dense") for size in to_nn)
    # rhythmic, and stacks of mixed gates (nn cannot run them): every size
    assert choose.auto_pays("gru", 256, 16384, gate_kind="rhythmic", training=True)
    assert choose.auto_pays("rnn", 256, 16384, gate_kind="mixed", training=True)
    # event: inference at every size, training up to B*H = 8192 (a GRU up to H = 512)
    assert choose.auto_pays("rnn", 256, 4096, gate_kind="event", training=False)
    assert choose.auto_pays("gru", 32, 256, gate_kind="event", training=True)
    assert not choose.auto_pays("gru", 32, 257, gate_kind="event", training=True)
    assert choose.auto_pays("rnn", 8, 1024, gate_kind="event")
    assert not choose.auto_pays("gru", 8, 1024, gate_kind="event")
    cpu = torch.device("cpu")
    from su_neuro.backends import resolve

    def pick(kind, B, H, training):
        return resolve("auto", cpu, "gru", kind, torch.float32, batch=B, hidden=H, training=training).name

    assert [pick("rhythmic", 64, 512, True), pick("dense", 64, 512, True), pick("event", 64, 512, True),
            pick("event", 64, 512, False), pick(("event", "rhythmic"), 64, 512, True)] == [
        "numba", "nn", "torch", "numba", "numba"]
