"""The Numba kernels' float32 exp / sigmoid / tanh (kernels/numba/_common.py) against float64."""

import numpy as np
import pytest

nb = pytest.importorskip("numba")

from su_neuro.kernels.numba._common import exp32, sigmoid32, tanh32  # noqa: E402


@nb.njit(fastmath=True)  # called from a fastmath function, as in the kernels
def _eval(x, e, s, t):
    for k in range(x.shape[0]):
        e[k] = exp32(x[k])
        s[k] = sigmoid32(x[k])
        t[k] = tanh32(x[k])


def _ulps(value, ref):
    return np.abs(value.astype(np.float64) - ref) / np.spacing(np.abs(ref).astype(np.float32)).astype(np.float64)


def test_float32_exp_sigmoid_tanh_within_a_few_ulp():
    x = np.concatenate([
        np.linspace(-100.0, 100.0, 400_001),
        np.linspace(-1.0, 1.0, 200_001),
        np.linspace(-1e-3, 1e-3, 2_001),
        [0.0, 1e-30, -1e-30, 0.25, -0.25, np.nextafter(0.25, 0), 87.0, -87.0],
    ]).astype(np.float32)
    e, s, t = (np.empty_like(x) for _ in range(3))
    _eval(x, e, s, t)
    xd = x.astype(np.float64)
    inside = np.abs(xd) <= 37.0
    assert _ulps(e[inside], np.exp(xd[inside])).max() <= 3
    assert np.all(np.isfinite(e)) and e.min() > 0  # clamped: no overflow, no zero
    ref_s = 1.0 / (1.0 + np.exp(-xd))
    normal = ref_s > 1e-30
    assert _ulps(s[normal], ref_s[normal]).max() <= 5  # worst far out, where sigmoid < 1e-20
    assert np.abs(s - ref_s).max() <= 1.5e-7 and s.min() >= 0 and s.max() <= 1
    ref_t = np.tanh(xd)
    nonzero = ref_t != 0
    assert _ulps(t[nonzero], ref_t[nonzero]).max() <= 3
    assert np.abs(t - ref_t).max() <= 1.5e-7 and np.abs(t).max() <= 1
    half = np.linspace(0.0, 30.0, 100_001).astype(np.float32)
    sym = np.concatenate([-half[::-1], half])
    e2, s2, t2 = (np.empty_like(sym) for _ in range(3))
    _eval(sym, e2, s2, t2)
    assert np.array_equal(t2, -t2[::-1])  # tanh is odd, bit for bit


_FIRST_COMPILE = """
import sys
import numba as nb
import numpy as np
from su_neuro.kernels.numba._common import exp32, sigmoid32, tanh32
from su_neuro.kernels.numba._common import gru_candidate, rnn_candidate

if sys.argv[1] == "fastmath":  # a fastmath caller compiles them first, as a kernel does
    @nb.njit(fastmath=True)
    def first(x):
        return exp32(x) + sigmoid32(x) + tanh32(x) + rnn_candidate(x, x) + gru_candidate(x, x, x, x, x, x, x)[3]
    first(np.float32(0.5))
x = np.random.default_rng(0).uniform(-9, 9, (200, 7)).astype(np.float32)
vals = [(exp32(a), sigmoid32(a), tanh32(a), rnn_candidate(a, b), gru_candidate(*r)) for r in x for a, b in [r[:2]]]
print(np.array([v for row in vals for v in (*row[:4], *row[4])], np.float32).tobytes().hex())
"""


def test_helpers_bits_do_not_depend_on_the_first_caller(tmp_path):
    """Numba compiles a callee whose decorator leaves fastmath unset with the flags of the
    caller that first needs it (and caches that): before fastmath=False was stated, exp32
    called from Python after a fastmath kernel differed in the last bit from exp32 compiled
    on its own. Each run gets an empty cache, so each compiles the helpers anew."""
    import os
    import subprocess
    import sys

    res = {}
    for mode in ("plain", "fastmath"):
        env = dict(os.environ, NUMBA_CACHE_DIR=str(tmp_path / mode))
        run = subprocess.run([sys.executable, "-c", _FIRST_COMPILE, mode], env=env, capture_output=True, text=True)
        assert run.returncode == 0, run.stderr
        res[mode] = run.stdout.strip()
    assert len(res["plain"]) == 200 * 8 * 8  # 200 rows x 8 float32 values, 8 hex digits each
    assert res["plain"] == res["fastmath"]


def test_vectorised_candidates_equal_the_scalar_ones():
    """_common.gru_candidates / rnn_candidates (one vectorised loop) give each lane the bits of
    _common.gru_candidate / rnn_candidate, at lane counts on and off the vector width."""
    from su_neuro.kernels.numba._common import gru_candidate, gru_candidates, rnn_candidate, rnn_candidates

    rng = np.random.default_rng(3)
    for n in (1, 15, 16, 37, 300):
        xb = rng.uniform(-6, 6, (2, 3 * n)).astype(np.float32)
        sc = rng.uniform(-6, 6, (8, n)).astype(np.float32)
        gru_candidates(n, xb, 1, sc)
        want = np.array([gru_candidate(*xb[1, 3 * p : 3 * p + 3], *sc[:4, p]) for p in range(n)], np.float32)
        assert np.array_equal(sc[4:].T, want[:, [3, 0, 1, 2]])  # rows f, r, z, n
        rnn_candidates(n, xb, 1, sc)
        assert np.array_equal(sc[4], np.array([rnn_candidate(xb[1, p], sc[0, p]) for p in range(n)], np.float32))


def test_cache_is_dropped_when_any_source_of_the_package_changes(tmp_path):
    """Numba's cache checks only the compiled function's own file; kernels/numba inlines
    helpers across its modules, so the package drops its cached code when any of its
    sources changes (kernels/numba/__init__.py) and keeps it otherwise."""
    from su_neuro.kernels import numba as package
    from su_neuro.kernels.numba import STAMP, drop_stale_cache

    src, cache = tmp_path / "pkg", tmp_path / "pkg" / "__pycache__"
    src.mkdir()
    (src / "cell.py").write_text("def f(): return 1\n")
    (src / "split.py").write_text("from .cell import f\n")
    cache.mkdir()

    def fill():
        for name in ("split._task-10.py311.nbi", "split._task-10.py311.1.nbc"):
            (cache / name).write_bytes(b"code")

    fill()
    (cache / "split.cpython-311.pyc").write_bytes(b"bytecode")
    assert drop_stale_cache(src, cache)  # no digest yet: whatever is cached is of unknown sources
    assert sorted(p.name for p in cache.iterdir()) == sorted([STAMP, "split.cpython-311.pyc"])
    fill()
    assert not drop_stale_cache(src, cache)  # same sources: the cache stays
    assert len(list(cache.glob("*.nb[ic]"))) == 2
    (src / "cell.py").write_text("def f(): return 2\n")  # a helper changed, split.py did not
    assert drop_stale_cache(src, cache)
    assert not list(cache.glob("*.nb[ic]"))
    assert not drop_stale_cache(src, cache)
    # the real package stamped its cache on import, so a second check finds nothing to drop
    here = package._HERE
    assert not drop_stale_cache(here, here / "__pycache__")
