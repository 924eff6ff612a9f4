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
