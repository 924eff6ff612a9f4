"""Which Numba kernel variant runs a call: pure functions of the sizes, and the size rules.

:func:`choose_kernel` names the variant (module ``event``, ``rows``, ``gemm``, ``split`` or
``lif``) with its batch chunks or neuron blocks and how the launcher prepares the gate and
the weights. The rules' constants live here (``GEMM_MIN_BATCH``, ``SPLIT_*``, ``FUSED_*``),
with the measurements behind them; :func:`unsupported` and :func:`auto_pays` are the
backend's hooks of the same kind (``ops`` re-exports them). Nothing here runs a kernel or
reads data: the caller passes the Numba thread count, whether BLAS can run the GEMM path,
and (for the split rule) a function that counts a rhythmic gate's open entries.

Example:
    >>> choose_kernel("gru", "rhythmic", 32, 128, 784, True, threads=2)
    Variant(kernel='gemm', chunks=2, tasks=0, compact=True, stream=False)
"""

from __future__ import annotations

from typing import NamedTuple

import torch

from ..contract import CELLS, GATE_CODES, GATE_ROWS

__all__ = [
    "Variant", "choose_kernel", "nchunks", "use_gemm", "split_tasks", "huge_weights", "fuses_input",
    "fused_dots", "train_projection", "unsupported", "auto_pays", "AUTO_DENSE_MAX_WORK", "AUTO_DENSE_MAX_BATCH",
    "AUTO_DENSE_MAX_HIDDEN", "AUTO_EVENT_TRAIN_MAX_WORK", "AUTO_EVENT_GRU_TRAIN_MAX_HIDDEN",
    "GEMM_MIN_BATCH", "GEMM_MIN_BATCH_DENSE_GRU", "GEMM_MIN_BATCH_DENSE_RNN", "GEMM_WIDE", "FUSED_MAX_INPUT",
    "FUSED_STREAM_MAX_INPUT", "FUSED_TRAIN_MAX_INPUT", "FUSED_TRAIN_MAX_INPUT_DENSE",
    "FUSED_DOT_MIN_INPUT", "FUSED_DOT_MIN_INPUT_DENSE", "SPLIT_MIN_BLOCK", "SPLIT_MIN_WORK",
    "SPLIT_WORK_PER_NEURON", "SPLIT_SAMPLE", "SPLIT_HUGE_STEPS", "SPLIT_HUGE_MAX_BYTES",
]  # fmt: skip

#: RNN/GRU rhythmic and dense gates: a thread's chunk of at least this many samples runs
#: each step as BLAS GEMMs (``gemm``); smaller chunks (streaming, B = 1) take the
#: 4-sample-block dot products (``rows``)
GEMM_MIN_BATCH = 8
#: ... except with a dense gate: a GRU of at least GEMM_WIDE neurons runs GEMMs from chunks
#: of GEMM_MIN_BATCH_DENSE_GRU samples (at H = 512 the rows were 1.2-3x faster at chunks of
#: 2-8), an RNN of fewer from GEMM_MIN_BATCH_DENSE_RNN (the GEMMs were faster at chunks of
#: 2 and 4: 1.05-1.35x with a backward, 1.6-3x in inference). A rhythmic GRU keeps 8: its
#: rows won only in inference, and its padded batches run in one call on the GEMM path
#: alone (on rows: segment by segment). tools/bench_numba.py group 7; docs/benchmarks.md,
#: "Rows or GEMMs"
GEMM_MIN_BATCH_DENSE_GRU = 16
GEMM_MIN_BATCH_DENSE_RNN = 2
GEMM_WIDE = 512
#: B = 1 streaming forward of RNN/GRU, rhythmic / dense gate, split over neuron blocks
#: (``split``): blocks of at least SPLIT_MIN_BLOCK neurons, each with at least
#: max(SPLIT_MIN_WORK, SPLIT_WORK_PER_NEURON * (rows + 1) * H) work units per step on average
#: (rows = 3 GRU, 1 RNN; see :func:`split_tasks`)
SPLIT_MIN_BLOCK = 32
SPLIT_MIN_WORK = 1024
SPLIT_WORK_PER_NEURON = 3.75
SPLIT_SAMPLE = 1024  # steps whose open counts estimate a rhythmic gate's work for the rule
#: the B = 1 inference kernels (split and one-thread) read W_hh from a copy in huge pages
#: (``kernels.buffers.huge_copy``, ``ops._stream_weights``) on streams of at least this many
#: steps, where the copy costs under ~5 % of the run, and for weights of at most
#: SPLIT_HUGE_MAX_BYTES (the copy's buffer stays with the thread). A GRU's copy is packed per
#: neuron (``_common.packed_gru``: the r, z, n rows of a neuron in one 12·H-byte run;
#: x0.92-0.95 at H = 512, 10 %, same bits)
SPLIT_HUGE_STEPS = 1024
SPLIT_HUGE_MAX_BYTES = 16 << 20
#: inference: the kernels project the input themselves (``recurrence_input``) with a
#: rhythmic gate, and with a dense one up to FUSED_MAX_INPUT features on the GEMM path
#: (:func:`use_gemm`), up to FUSED_STREAM_MAX_INPUT on the row-block and
#: split kernels (small batches, B = 1 streams). There one GEMM beforehand is faster from a
#: few features on (tools/bench_fused_input.py --inference; docs/benchmarks.md, "Fused input
#: projection in inference"), but its bits depend on the chunk's length: fused, a stream fed
#: in chunks keeps the bits of one call. Training (GEMM path): a rhythmic gate up to
#: FUSED_TRAIN_MAX_INPUT, a dense gate up to FUSED_TRAIN_MAX_INPUT_DENSE (where every row
#: computes, one GEMM over the whole sequence wins beyond; tools/bench_fused_input.py)
FUSED_MAX_INPUT = 128
FUSED_STREAM_MAX_INPUT = 64
FUSED_TRAIN_MAX_INPUT = 256
FUSED_TRAIN_MAX_INPUT_DENSE = 32
#: on the GEMM path a fused projection of at least this many features (rhythmic gate) or
#: FUSED_DOT_MIN_INPUT_DENSE (dense gate, whose W_ih rows are gathered once) runs as per-step
#: GEMMs against the step's gathered W_ih rows (forward, dW_ih and dx); narrower ones as
#: short dot products per row and sample (``_common.Source.fused``; tools/bench_fused_input.py)
FUSED_DOT_MIN_INPUT = 4
FUSED_DOT_MIN_INPUT_DENSE = 1

_NEVER = 1 << 62  # a chunk size no batch reaches


class Variant(NamedTuple):
    """The kernel variant of one call.

    kernel:  the module that runs it: "event", "rows", "gemm", "split" or "lif".
    chunks:  batch chunks, one prange iteration each (and one slot of the per-chunk
             gradient buffers).
    tasks:   "split": neuron blocks, one per worker; else 0.
    compact: the rhythmic gate's rows are compacted into per-step index lists (else the
             kernel scans them, or "split" evaluates the gate's table).
    stream:  a B = 1 inference kernel ("split", or "rows" on one sample): a GRU's W_ih is
             packed per neuron and W_hh read from a huge-page copy on long streams
             (:func:`huge_weights`).
    """

    kernel: str
    chunks: int
    tasks: int = 0
    compact: bool = False
    stream: bool = False


def nchunks(batch: int, threads: int) -> int:
    """Batch chunks: one per Numba thread, at most one per sample."""
    return max(1, min(batch, threads))


def use_gemm(gate_kind: str, batch: int, chunks: int, blas: bool = True, *, cell: str, hidden: int) -> bool:
    """Rhythmic/dense RNN/GRU whose smallest thread chunk has >= GEMM_MIN_BATCH samples;
    with a dense gate GEMM_MIN_BATCH_DENSE_GRU for a GRU of H >= GEMM_WIDE and
    GEMM_MIN_BATCH_DENSE_RNN for an RNN of H < GEMM_WIDE (``blas``: whether BLAS can run
    inside the Numba threads; see ``ops._blas_ready``)."""
    if not blas or gate_kind == "event":
        return False
    least = GEMM_MIN_BATCH
    if gate_kind == "dense" and cell == "gru" and hidden >= GEMM_WIDE:
        least = GEMM_MIN_BATCH_DENSE_GRU
    elif gate_kind == "dense" and cell == "rnn" and hidden < GEMM_WIDE:
        least = GEMM_MIN_BATCH_DENSE_RNN
    return batch // chunks >= least


def split_tasks(
    gate_kind: str, save: bool, batch: int, hidden: int, rows: int, computed: int, steps: int, *, threads: int
) -> int:
    """Neuron blocks for the split B = 1 forward (``split.forward``), or 0: batch-chunk kernel.

    Only where nothing is saved (no gradient needed), for the rhythmic and dense gates (the
    caller is RNN/GRU) and B == 1. Work per step: the mean number of computed neurons
    (``computed`` over ``steps``: the rhythmic gate's open entries, counted on the first
    ``SPLIT_SAMPLE`` steps and scaled to T, or H) times
    rows·H + 64 (rows = 3 GRU, 1 RNN: the multiply-adds; 64: the nonlinearities and blend,
    fitted). Blocks: one per Numba thread, at most H // SPLIT_MIN_BLOCK, and at most
    work // max(SPLIT_MIN_WORK, SPLIT_WORK_PER_NEURON * (rows + 1) * H); split only if that
    gives >= 2. The per-block minimum grows with H because each task scans its block's gate
    row, copies the block's state forward and writes its outputs every step, and the state
    it reads was written by the other cores: that cost follows H, not the open count; and a
    GRU needs more work per block than an RNN (15·H against 7.5·H units) before the split
    pays, as measured.

    Measured with tools/bench_numba_split.py (A/B of the two kernels on the same inputs, both
    scanning the gate rows and reading W_hh as ops passes it (huge pages, a GRU's packed per
    neuron), input projected inside the kernels, 2 Numba threads on 2 otherwise idle cores,
    AMD EPYC with 1 MiB L2 per core, T = 5,000, periodic open sets of 1-100 %, H = 128-1024,
    medians of 5; the table is in docs/cpu/bench_numba_split.txt). Re-measured after both
    kernels changed (vectorised candidates in the split kernel, no compaction and packed
    weights in the one-thread kernel): the rule picks the faster kernel in 45 of the 48
    configurations; the three it gets wrong lose x0.95-0.96 (GRU H = 128 10 %, GRU H = 512
    2 %, RNN H = 256 5 %). With another process busy on one of the 2 cores the split ran at
    x0.93-1.05 (the running thread does the other's tasks; an earlier session's measurement).
    """
    if save or gate_kind == "event" or batch != 1 or steps == 0:
        return 0
    work = computed / steps * (rows * hidden + 64)
    tasks = min(threads, hidden // max(SPLIT_MIN_BLOCK, 1))
    per_block = max(SPLIT_MIN_WORK, SPLIT_WORK_PER_NEURON * (rows + 1) * hidden)
    if per_block > 0:
        tasks = min(tasks, int(work // per_block))
    return tasks if tasks >= 2 else 0


def huge_weights(steps: int, nbytes: int) -> bool:
    """Whether a B = 1 stream reads W_hh (``nbytes`` bytes) from a copy in huge pages."""
    return steps >= SPLIT_HUGE_STEPS and 0 < nbytes <= SPLIT_HUGE_MAX_BYTES


def choose_kernel(
    cell: str, gate_kind: str, batch: int, hidden: int, steps: int, save: bool, *, threads: int, blas=True, opened=None
) -> Variant:
    """The variant that runs ``cell`` with ``gate_kind`` on (batch, steps, hidden).

    ``save``: the forward saves state for a backward (or for an event / LIF record);
    ``threads``: Numba's thread count; ``blas`` (bool): whether the GEMM path can run;
    ``opened`` (``() -> int``): the rhythmic gate's open entries over the ``steps`` (an
    estimate will do), called only where the split rule needs it (B = 1 RNN/GRU inference).

    * LIF: ``lif`` (a rhythmic gate compacted);
    * RNN/GRU, event gate: ``event``;
    * RNN/GRU, rhythmic / dense, B = 1, nothing saved, enough work per step for >= 2 neuron
      blocks (:func:`split_tasks`): ``split``;
    * thread chunks of >= GEMM_MIN_BATCH samples (another least for a dense gate on a wide
      GRU or a narrow RNN: :func:`use_gemm`): ``gemm``;
    * else ``rows`` (B = 1 inference: it scans the gate rows, no compaction).
    """
    chunks = nchunks(batch, threads)
    if cell == "lif":
        return Variant("lif", chunks, compact=gate_kind == "rhythmic")
    if gate_kind == "event":
        return Variant("event", chunks)
    gemm = use_gemm(gate_kind, batch, chunks, blas, cell=cell, hidden=hidden)
    if not save and batch == 1 and steps > 0:
        computed = steps * hidden if gate_kind == "dense" else opened()
        tasks = split_tasks(gate_kind, save, batch, hidden, GATE_ROWS[cell], computed, steps, threads=threads)
        if tasks:
            return Variant("split", chunks, tasks, stream=True)
    scans = not save and batch == 1 and not gemm
    return Variant("gemm" if gemm else "rows", chunks, compact=gate_kind == "rhythmic" and not scans, stream=scans)


def fuses_input(
    cell: str, gate_kind: str, batch: int, features: int, grad: bool, *, hidden: int, threads: int, blas: bool = True
) -> bool:
    """Whether the kernels project the input themselves (``ops.recurrence_input``): RNN/GRU
    with a rhythmic or dense gate. In inference with a rhythmic gate, or a dense one of at
    most FUSED_MAX_INPUT features on the GEMM path, FUSED_STREAM_MAX_INPUT elsewhere. In
    training on the GEMM path with at most FUSED_TRAIN_MAX_INPUT (rhythmic) or
    FUSED_TRAIN_MAX_INPUT_DENSE (dense) features."""
    if cell not in ("rnn", "gru") or gate_kind not in ("rhythmic", "dense"):
        return False
    gemm = use_gemm(gate_kind, batch, nchunks(batch, threads), blas, cell=cell, hidden=hidden)
    if grad:
        return gemm and train_projection(gate_kind, features) != "unfused"
    return gate_kind == "rhythmic" or features <= (FUSED_MAX_INPUT if gemm else FUSED_STREAM_MAX_INPUT)


def fused_dots(gate_kind: str, features: int) -> bool:
    """Whether a projection inside the GEMM-path kernels runs as per-step GEMMs (else as
    short dot products)."""
    return features >= (FUSED_DOT_MIN_INPUT_DENSE if gate_kind == "dense" else FUSED_DOT_MIN_INPUT)


def train_projection(gate_kind: str, features: int) -> str:
    """How a training call on the GEMM path (RNN/GRU, rhythmic or dense gate) projects its
    input: "unfused" (torch, beforehand, every row), or inside the kernels for the computed
    rows only, by "loops" (short dot products) or "gemm" (per-step GEMMs)."""
    limit = FUSED_TRAIN_MAX_INPUT_DENSE if gate_kind == "dense" else FUSED_TRAIN_MAX_INPUT
    if features > limit:
        return "unfused"
    return "gemm" if fused_dots(gate_kind, features) else "loops"


def unsupported(cell: str, gate_kind: str, dtype) -> str | None:
    """Why the numba backend cannot run this combination, or None."""
    if cell not in CELLS:
        return f"backend 'numba' has no kernel for cell {cell!r}"
    if gate_kind not in GATE_CODES:
        return f"backend 'numba' has no kernel for gate {gate_kind!r}"
    if dtype != torch.float32:
        return f"backend 'numba' runs float32 only, got {dtype} (use backend='torch')"
    return None


#: backend="auto" on CPU, RNN/GRU with a dense gate: numba up to
#: this B·H, for batches of at most AUTO_DENSE_MAX_BATCH samples at any width, and up to
#: AUTO_DENSE_MAX_HIDDEN[cell] neurons at any batch; ``nn`` past them
AUTO_DENSE_MAX_WORK = 4096
AUTO_DENSE_MAX_BATCH = 8
AUTO_DENSE_MAX_HIDDEN = {"rnn": 128, "gru": 256}
#: ... an event gate: numba in inference at every size; in training up to this B·H (a GRU up
#: to AUTO_EVENT_GRU_TRAIN_MAX_HIDDEN neurons), the reference past it
AUTO_EVENT_TRAIN_MAX_WORK = 8192
AUTO_EVENT_GRU_TRAIN_MAX_HIDDEN = 512


def auto_pays(cell: str, batch: int, hidden: int, *, gate_kind: str | None = None, training: bool = True,
              **_) -> bool:
    """Rule of backend="auto" on CPU: numba where tools/bench_numba.py measured it faster
    than what auto runs otherwise (the reference; torch's RNN op, ``nn``, for a dense stack).
    docs/benchmarks.md, "backend="auto" rule" (group 6: two runs, 2 threads, calls alternated;
    numba's speed-up over the other side below).

    * LIF: numba at every measured size (B 1-32, H 8-1024; group 5).
    * RNN/GRU, rhythmic gate: every size (B·H 8192-16384: 1.28-16x at 10 % and 50 % open;
      0.77-2.9x at 100 %, a rate where a dense gate is the one to use). Stacks of mixed gates
      (``gate_kind="mixed"``; ``nn`` cannot run them): every size (1.17-4.6x).
    * event gate: inference at every size (1.12-5.6x). Training up to B·H =
      AUTO_EVENT_TRAIN_MAX_WORK (0.87-1.70x at H <= 256), except a GRU wider than
      AUTO_EVENT_GRU_TRAIN_MAX_HIDDEN (0.73-0.84x at B = 8, H = 1024); the reference past it
      (0.84-1.05x at B = 32, H = 512).
    * dense gate: numba up to B·H = AUTO_DENSE_MAX_WORK (2.1-7x over the reference at B·H <=
      256, 6.3x at B = 32, H = 128; groups 3 and 5), at B <= AUTO_DENSE_MAX_BATCH (1.17-2.5x
      over ``nn`` at B = 8, H = 1024), and up to AUTO_DENSE_MAX_HIDDEN[cell] neurons (an RNN
      1.00-1.66x at B = 64, H = 128, a GRU 0.90-1.65x at B = 32-64, H = 128-256); ``nn`` past
      them (a GRU at B = 32, H = 512: 0.69-1.13x; an RNN at B = 32, H = 256: 0.77-1.53x, T
      deciding, and H = 512: 0.81-1.21x).
    """
    if cell == "lif" or gate_kind in ("rhythmic", "mixed"):
        return True
    if gate_kind == "event":
        if not training:
            return True
        narrow = cell != "gru" or hidden <= AUTO_EVENT_GRU_TRAIN_MAX_HIDDEN
        return narrow and batch * hidden <= AUTO_EVENT_TRAIN_MAX_WORK
    return (batch * hidden <= AUTO_DENSE_MAX_WORK or batch <= AUTO_DENSE_MAX_BATCH
            or hidden <= AUTO_DENSE_MAX_HIDDEN.get(cell, 0))
