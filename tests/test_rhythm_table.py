"""The rhythmic gate as a table of points on the shared phase (kernels/rhythm.py): its
rows equal the plan's bit for bit, wherever a stream goes; it is refused where its bound
does not hold; the numba split kernel that evaluates it equals the kernels reading rows."""

from __future__ import annotations

import math

import pytest
import torch

from su_neuro import SUGRU, SURNN, SUState
from su_neuro.gates import GateInput, RhythmicGate
from su_neuro.kernels import rhythm as _rhythm


def _gate(H, rate, seed, shift=0.0, flip=0.0, zeros=0, period=None):
    torch.manual_seed(seed)
    g = RhythmicGate(H, init_rate=rate, period=period)
    with torch.no_grad():
        g.phi.add_(torch.randn(H, 1) * shift)
        g.alpha.mul_(torch.where(torch.rand(H, 1) < flip, -1.0, 1.0))
        g.alpha[:zeros] = 0.0
    return g


CASES = [  # H, rate, shift of phi, share of negative alpha, alpha = 0 neurons, period
    (257, 0.1, 0.0, 0.0, 0, None),
    (200, 0.02, 30.0, 0.3, 3, None),
    (150, 0.3, 5.0, 0.5, 0, 7.3),
    (100, 0.9, 1000.0, 0.0, 2, None),
    (64, 0.1, 0.0, 0.0, 0, 1000.0),  # long period: one step moves the phase by 6e-3
]


@pytest.mark.parametrize("H,rate,shift,flip,zeros,period", CASES)
@pytest.mark.parametrize("t0", [0, 99_991])
def test_table_rows_equal_plan(H, rate, shift, flip, zeros, period, t0):
    g = _gate(H, rate, seed=H, shift=shift, flip=flip, zeros=zeros, period=period)
    with torch.no_grad():
        tab = g.plan(t0, 3000, table=True)
        ref = g.plan(t0, 3000).values
    assert tab.values is None and tab.rhythm is not None
    assert tab.rhythm.points.dtype == torch.float32 and tab.rhythm.points.shape[1] == H
    rows = tab.rhythm.values(0, 3000)  # from the points (values() alone asks the gate's plan)
    assert rows.shape == ref.shape
    assert torch.equal(rows, ref), f"{int((rows != ref).sum())} entries differ"
    assert torch.equal(tab.materialized().values, ref)
    assert 0 < ref.mean() < 1


def test_table_exact_at_every_phase():
    """Every float32 shared phase in a band around each crossing, not only those a stream
    reaches: the rows equal the plan's operations applied to those phases."""
    g = _gate(96, 0.1, seed=3, shift=2.0, flip=0.3)
    with torch.no_grad():
        pts = g._table()
        phi, alpha, bias = g.phi[:, 0], g.alpha[:, 0], g.bias
        # phases near the points (where rounding decides) and a uniform sweep
        near = pts[pts < _rhythm.PAD].unique()
        offs = torch.arange(-40, 41, dtype=torch.int32)
        bits = (near.view(torch.int32)[:, None] + offs[None]).reshape(-1).view(torch.float32)
        phase = torch.cat([bits, torch.linspace(0, _rhythm.TWO_PI_32, 4001)])
        phase = phase[(phase >= 0) & (phase <= _rhythm.TWO_PI_32)]
        want = (phase[:, None] + phi[None]).sin_().mul_(alpha[None]).add_(bias[None]).gt_(0).float()
        got = _rhythm.RhythmTable(phase, pts).values(0, len(phase))
    assert torch.equal(got, want), f"{int((got != want).sum())} entries differ"


@pytest.mark.parametrize(
    "edit,why",
    [
        (lambda g: g.phi.__setitem__((0, 0), math.nan), "non-finite phase"),
        (lambda g: g.alpha.__setitem__((0, 0), 1e-30), "amplitude too small to bound"),
        (lambda g: g.phi.__setitem__((0, 0), 2.0**21), "phase too large"),
        # b = 0 and a range over x = 0: the band around sin x = 0 holds ~2^31 floats
        (lambda g: (g.bias.zero_(), g.phi.__setitem__((0, 0), -1.0)), "crossing at x = 0"),
    ],
)
def test_no_table_where_the_bound_fails(edit, why):
    g = _gate(32, 0.1, seed=1)
    with torch.no_grad():
        edit(g)
        gi = g.plan(0, 50, table=True)
        ref = g.plan(0, 50).values
    assert gi.rhythm is None, why
    assert torch.equal(gi.values, ref)


def test_table_follows_parameter_edits():
    g = _gate(64, 0.2, seed=2)
    with torch.no_grad():
        first = g.plan(0, 500, table=True).rhythm.points
        g.phi.add_(0.5)  # an optimiser step edits in place: the version changes
        second = g.plan(0, 500, table=True)
        ref = g.plan(0, 500).values
    assert not torch.equal(first, second.rhythm.points)
    assert torch.equal(second.rhythm.values(0, 500), ref)


def test_no_table_when_the_gate_trains_or_has_harmonics():
    g = _gate(16, 0.2, seed=4)
    gi = g.plan(0, 20, table=True)  # gradient enabled, trainable parameters
    assert gi.rhythm is None and gi.values.requires_grad
    g2 = RhythmicGate(16, harmonics=2, init_rate=0.2)
    with torch.no_grad():
        assert g2.plan(0, 20, table=True).rhythm is None


def test_reference_backend_reads_a_table():
    """A table given to any backend's recurrence is turned into its rows."""
    from su_neuro.kernels import reference

    g = _gate(12, 0.3, seed=5)
    torch.manual_seed(0)
    xp, h0, w = torch.randn(2, 40, 12), torch.zeros(2, 12), torch.randn(12, 12) * 0.3
    with torch.no_grad():
        a = reference.recurrence("rnn", xp, h0, None, w, None, g.plan(0, 40, table=True))
        b = reference.recurrence("rnn", xp, h0, None, w, None, GateInput("rhythmic", g.plan(0, 40).values))
    assert torch.equal(a[0], b[0])


@pytest.mark.parametrize("cls", [SUGRU, SURNN])
def test_split_kernel_evaluates_the_table(monkeypatch, cls):
    """B = 1 inference with the numba backend: the split kernel gets the table (no rows),
    and its outputs equal those of the rows' path bit for bit, also chunk by chunk."""
    pytest.importorskip("numba")
    from su_neuro.kernels.numba import choose, ops, split

    torch.manual_seed(0)
    layer = cls(5, 300, gate={"kind": "rhythmic", "init_rate": 0.1}, backend="numba")
    x = torch.randn(1, 2500, 5)
    monkeypatch.setattr(choose, "SPLIT_MIN_WORK", 1)
    monkeypatch.setattr(choose, "SPLIT_WORK_PER_NEURON", 0.0)
    tabled = []
    kernel = split.forward

    def spy(*args):
        tabled.append(bool(args[5][0]))  # rh = (tabled, ...)
        return kernel(*args)

    monkeypatch.setattr(split, "forward", spy)
    with torch.no_grad():
        out, st = layer(x)
        o1, s1 = layer(x[:, :1234])
        o2, s2 = layer(x[:, 1234:], s1)
        monkeypatch.setattr(ops, "rhythm_table", lambda *a: False)
        rows_out, rows_st = layer(x)
    assert tabled == [True, True, True, False]
    assert torch.equal(out, rows_out) and torch.equal(st.h, rows_st.h)
    assert torch.equal(torch.cat([o1, o2], 1), out) and torch.equal(s2.h, st.h)
    assert s2.t == 2500


def test_table_falls_back_to_rows_off_the_split_path(monkeypatch):
    """Where the split kernel does not run (one block), ops makes the rows from the table."""
    pytest.importorskip("numba")
    from su_neuro.kernels.numba import ops

    torch.manual_seed(0)
    layer = SUGRU(3, 40, gate={"kind": "rhythmic", "init_rate": 0.3}, backend="numba")
    x = torch.randn(1, 300, 3)
    with torch.no_grad():
        a = layer(x, SUState(torch.zeros(1, 1, 40), 17, None))[0]
        monkeypatch.setattr(ops, "rhythm_table", lambda *a: False)
        b = layer(x, SUState(torch.zeros(1, 1, 40), 17, None))[0]
    assert torch.equal(a, b)


@pytest.mark.parametrize("M", [2, 3, 5])
def test_split_kernel_table_any_point_count(M):
    """The split kernel's scan of 2, 3 and more points a neuron equals its scan of the rows
    that the same points give (random points, not from a gate)."""
    np = pytest.importorskip("numpy")
    pytest.importorskip("numba")

    H, T, F = 70, 200, 3
    g = torch.Generator().manual_seed(M)
    base = torch.rand(T, generator=g) * _rhythm.TWO_PI_32
    points = torch.sort(torch.rand(M, H, generator=g) * 7.0, 0).values  # some never reached
    tab = _rhythm.RhythmTable(base, points)
    rows = tab.values(0, T).numpy()
    assert 0 < rows.mean() < 1
    out, h0 = _split_table_equals_rows(tab, rows, F, M, 2, 2)
    closed = rows == 0
    prev = np.concatenate([h0, out[0, :-1]], 0)
    assert np.array_equal(out[0][closed], prev[closed])  # closed neurons keep their state


def _split_table_equals_rows(tab, rows, F, seed, ntasks, nworkers):
    """A random GRU stream through the split kernel with the gate from ``tab`` and with
    the (T, H) ``rows`` the same points give: asserts both are equal bit for bit and
    returns the output (1, T, H) and h0 (1, H)."""
    import numpy as np

    from su_neuro.kernels.contract import RHYTHMIC
    from su_neuro.kernels.numba import split
    from su_neuro.kernels.numba._common import Gate, Source, Weights

    T, H = rows.shape
    f32 = np.float32
    rng = np.random.default_rng(seed)
    W = (rng.standard_normal((3 * H, H)) / np.sqrt(H)).astype(f32)
    b = rng.standard_normal(3 * H).astype(f32) * 0.1
    d = np.zeros((1, 1, 1), f32)
    src = Source(1, d, rng.standard_normal((1, T, F)).astype(f32), rng.standard_normal((3 * H, F)).astype(f32), b)
    h0 = rng.standard_normal((1, H)).astype(f32) * 0.3
    outs = []
    no_lists = (np.zeros(1, np.int64), np.zeros(1, np.int32), np.zeros(1, f32), 0, 0.0, 1)
    for rh, gv in ((split.rhythm_args(tab), np.zeros((1, 1), f32)), (split.rhythm_args(), rows)):
        out, hT = np.full((1, T, H), np.nan, f32), np.full((1, H), np.nan, f32)
        gate = Gate(RHYTHMIC, gv, *no_lists)
        split.forward(True, src, h0, Weights(W, d[0], b), gate, rh, (ntasks, nworkers, 10), out, hT)
        outs.append((out, hT))
    assert np.array_equal(outs[0][0], outs[1][0]) and np.array_equal(outs[0][1], outs[1][1])
    return outs[0][0], h0


@pytest.mark.parametrize("ntasks,nworkers", [(1, 1), (2, 2), (3, 2), (2, 1)])
def test_split_kernel_open_lists_follow_the_phase(ntasks, nworkers):
    """The split kernel keeps each task's open list from step to step, toggling the neurons
    whose points the phase passed (split._open_from_events): phases that rise, repeat,
    fall (a new period), jump, land exactly on points, and a NaN phase (every neuron
    closed, as the comparisons say), with tasks taken over by another worker; equal bit for
    bit to the kernel reading the rows the same points give."""
    np = pytest.importorskip("numpy")
    pytest.importorskip("numba")
    from su_neuro.kernels.numba import split

    H, T, F = 45, 160, 2
    g = torch.Generator().manual_seed(ntasks * 10 + nworkers)
    rise = torch.cumsum(torch.rand(T, generator=g) * 0.9, 0) % 6.0  # rises, falls at each wrap
    rise[40:44] = rise[39]  # repeated phases
    rise[70] = float("nan")
    rise[100:110] = torch.rand(10, generator=g) * 6.0  # jumps either way
    points = torch.sort(torch.rand(3, H, generator=g) * 6.5, 0).values
    points[0, :10] = rise[5:15]  # points exactly on phases the stream takes
    points[1, 10:15] = points[0, 10:15]  # two equal points: the neuron never opens there
    tab = _rhythm.RhythmTable(rise, torch.sort(points, 0).values)
    rows = tab.values(0, T).numpy()
    assert 0 < rows.mean() < 1 and not rows[70].any()
    _split_table_equals_rows(tab, rows, F, ntasks, ntasks, nworkers)
    ev = split.events(split.rhythm_args(tab), ntasks, H)
    assert int(ev[2].sum()) == 3 * H and all(np.all(np.diff(ev[0][k, : ev[2][k]]) >= 0) for k in range(ntasks))


@pytest.mark.parametrize(
    "edit",
    [
        lambda g: torch.optim.Adam(g.parameters(), lr=0.1, fused=True).step(),
        lambda g: g.phi.data.add_(0.3),
        lambda g: g.bias.detach().numpy().__setitem__(slice(None), -0.5),
    ],
    ids=["fused-adam", "data-edit", "numpy-write"],
)
def test_table_follows_edits_that_keep_the_version(edit):
    """Edits that leave the parameters' version counters as they were still rebuild it."""
    g = _gate(64, 0.2, seed=6)
    with torch.no_grad():
        before = g.plan(0, 400, table=True).rhythm.points.clone()
    for p in g.parameters():  # for the optimiser; the other edits ignore it
        p.grad = torch.randn_like(p)
    edit(g)
    with torch.no_grad():
        after = g.plan(0, 400, table=True).rhythm
        ref = g.plan(0, 400).values
    assert not torch.equal(before, after.points)
    assert torch.equal(after.values(0, 400), ref)


def test_table_under_inference_mode():
    with torch.inference_mode():
        g = _gate(48, 0.1, seed=7)
        gi = g.plan(0, 300, table=True)
        assert torch.equal(gi.rhythm.values(0, 300), g.plan(0, 300).values)
        layer = SUGRU(3, 48, gate={"kind": "rhythmic", "init_rate": 0.1}, backend="numba")
        out, _ = layer(torch.randn(1, 50, 3))
    assert out.shape == (1, 50, 48)
