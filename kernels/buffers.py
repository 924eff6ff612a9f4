"""Fresh large CPU buffers that cost less to touch the first time.

A (T, H) gate plan or a (B, T, G) input projection of a long stream is tens of MB, written
once per call into freshly mapped memory. numpy's allocator asks the kernel for transparent
huge pages on such arrays (``madvise``); torch's CPU allocator does so only under the
environment variable ``THP_MEM_ALLOC_ENABLE=1``, read once per process. With 4 KiB pages a
fresh 41 MB buffer costs ~10 k page faults: the rhythmic plan of H = 1,024 neurons over
10,000 steps took 31 ms in a torch buffer and 18 ms in a numpy one (AMD EPYC, 2 threads;
docs/benchmarks.md). Same values either way; only where the memory comes from differs.

Large buffers are also reused (:func:`pooled`): glibc returns a freed buffer of tens of MB
to the system, so the next call of the same size pays its page faults again (1.5-3 ms of a
45-60 ms streaming call at T = 10,000, H = 512). Each thread keeps the large buffers it
handed out, up to ``POOL_BYTES``, and hands one out again once nothing references it any
more: no tensor, view or array of it is alive (its reference count says so).
"""

from __future__ import annotations

import sys
import threading

import numpy as np
import torch

#: below this many bytes a buffer comes from torch's allocator (cached, no page faults)
LARGE = 1 << 22

_NUMPY = {torch.float32: np.float32, torch.float64: np.float64}


#: bytes of large buffers each thread keeps for reuse (0: none kept)
POOL_BYTES = 256 << 20
_pool = threading.local()
# the reuse test reads exact reference counts: CPython with its GIL (a free-threaded build
# counts references per thread, and another interpreter may not count them at all)
_EXACT_REFCOUNTS = sys.implementation.name == "cpython" and getattr(sys, "_is_gil_enabled", lambda: True)()


def pooled(shape: tuple[int, ...], dtype) -> np.ndarray:
    """``np.empty(shape, dtype)`` (contents undefined). A buffer of at least ``LARGE`` bytes
    may be one that this thread handed out before and that nothing references any more;
    the thread keeps the newest such buffers up to ``POOL_BYTES`` in all."""
    dtype = np.dtype(dtype)
    nbytes = int(np.prod(shape)) * dtype.itemsize if shape else dtype.itemsize
    if nbytes < LARGE or nbytes > POOL_BYTES or not _EXACT_REFCOUNTS:
        return np.empty(shape, dtype)
    bufs = getattr(_pool, "bufs", None)
    if bufs is None:
        bufs = _pool.bufs = []
    for k in range(len(bufs)):
        a = bufs[k]
        # references: the list, `a` and getrefcount's argument; any tensor, view or other
        # array of the buffer adds one
        if a.shape == tuple(shape) and a.dtype == dtype and sys.getrefcount(a) == 3:
            bufs.append(bufs.pop(k))  # newest last
            return a
    a = np.empty(shape, dtype)
    bufs.append(a)
    total = sum(b.nbytes for b in bufs)
    while total > POOL_BYTES:  # forget the oldest (freed once nothing else holds them)
        total -= bufs.pop(0).nbytes
    return a


def release() -> None:
    """Forget this thread's pooled buffers (each is freed once nothing else holds it)."""
    _pool.bufs = []


def empty(shape: tuple[int, ...], dtype: torch.dtype, device) -> torch.Tensor:
    """``torch.empty(shape, dtype=dtype, device=device)``; a large float CPU buffer comes
    from numpy (huge pages; :func:`pooled`, so it may be a reused one) and is shared with
    the returned tensor."""
    device = torch.device(device) if device is not None else torch.device("cpu")
    n = int(np.prod(shape)) if shape else 1
    if device.type == "cpu" and dtype in _NUMPY and n * torch.finfo(dtype).bits // 8 >= LARGE:
        return torch.from_numpy(pooled(shape, _NUMPY[dtype]))
    return torch.empty(shape, dtype=dtype, device=device)


def linear(x: torch.Tensor, weight: torch.Tensor, bias: torch.Tensor | None) -> torch.Tensor:
    """``F.linear(x, weight, bias)`` for a (B, T, F) input; without autograd, a large CPU
    result is written into a buffer from :func:`empty` (the same GEMM, the same values)."""
    needs_grad = torch.is_grad_enabled() and any(t is not None and t.requires_grad for t in (x, weight, bias))
    B, T, Fin = x.shape
    G = weight.shape[0]
    if needs_grad or x.device.type != "cpu" or B * T * G * x.element_size() < LARGE or x.dtype not in _NUMPY:
        return torch.nn.functional.linear(x, weight, bias)
    out = empty((B, T, G), x.dtype, x.device)
    flat = out.view(B * T, G)
    if bias is None:
        torch.mm(x.reshape(B * T, Fin), weight.t(), out=flat)
    else:
        torch.addmm(bias, x.reshape(B * T, Fin), weight.t(), out=flat)
    return out


#: bytes of a transparent huge page on x86-64 and arm64 Linux
HUGE_PAGE = 1 << 21
_scratch = threading.local()


def huge_copy(a: np.ndarray) -> np.ndarray:
    """A C-contiguous copy of ``a`` in memory aligned to a huge page, taken from a buffer
    that each thread keeps and reuses (so the next call of the same thread overwrites it).

    Weights that the kernels read once per step are 1-4 MiB: in 4 KiB pages their physical
    placement differs from process to process, in huge pages it is contiguous. The split
    GRU kernel ran 6-15 % faster on such a copy (H = 512, AMD EPYC; docs/benchmarks.md),
    which repays the copy (~0.2 ms for 3 MiB) on streams of a thousand steps or more."""
    nbytes = a.nbytes
    buf = getattr(_scratch, "buf", None)
    if buf is None or buf.nbytes < nbytes + HUGE_PAGE:
        # numpy asks for huge pages (madvise) on allocations of 4 MiB and more
        buf = np.empty(max(nbytes + HUGE_PAGE, LARGE + HUGE_PAGE), np.uint8)
        _scratch.buf = buf
    start = -buf.ctypes.data % HUGE_PAGE
    out = buf[start : start + nbytes].view(a.dtype).reshape(a.shape)
    np.copyto(out, a)
    return out
