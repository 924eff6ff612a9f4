"""How a launch of the multi-program kernels (``grid.py``) cuts the work: the tiles, the
grid shape, the precision of its dot products and a split step's scratch, chosen from the
call's sizes and the GPU (the measured defaults of docs/triton.md, "Tiles"); the module's
globals override them (the benchmark's sweeps and the tests set them).
"""

from __future__ import annotations

from typing import NamedTuple

import torch
import triton

from ._common import next_pow2

__all__ = ["BWD", "DW", "DW_MAX_BYTES", "MAX_BB", "MAX_NH", "PARTIAL_TILES", "PRECISION", "SPLIT", "SPLIT_MAX_BYTES",
           "TILES", "Tiles", "check_bwd", "dot_precision", "dw_bytes", "partial_tiles", "shape", "sm_count",
           "split_bytes", "tiles"]

MAX_BB = 64  # batch rows per program
MAX_NH = None  # cap on the programs per batch block (None: one per chunk, SM count on a GPU)
SPLIT_MAX_BYTES = 1 << 30  # largest scratch of a split forward (else it runs whole chunks)
DW_MAX_BYTES = 1 << 30  # largest set of per-block dU sums of the backward (else one GEMM after it)


class Tiles(NamedTuple):
    """How a launch cuts the work (docs/triton.md, "Cost model").

    bb: batch rows per program (a batch block); 1-64, powers of two; below 16 needs ``fma``.
    bh: rows of U per forward chunk (columns per backward slice); the chunks of a step are
        shared round robin by the NH programs of a batch block.
    bk: reduction tile (columns of U per forward iteration, rows per backward iteration).
    warps, stages: Triton's num_warps and num_stages.
    fma: products on the FMA units as broadcasts summed over the reduction axis (exact fp32,
        any bb / bh) instead of ``tl.dot`` (bb, bh >= 16; tensor cores at TF32 precision).
    split: the forward's step in two phases (docs/triton.md, "Split steps"): the step's
        (chunk, column tile) units cut into equal runs over the NH programs, whose partial
        products a chunk's owner sums after a second barrier; time per step follows the
        open rows' weight bytes over all NH programs instead of whole chunks per program.
        Not a default anywhere until a GPU has timed it; the backward ignores it.
    per_sm: programs per SM the grid may hold (NH <= per_sm * SMs // NB). A spin barrier
        needs every program resident: 2 needs two programs' registers and shared memory on
        one SM, else the cooperative launch refuses the grid (an error, not a hang).
    dw: the backward accumulates dL/dU in the kernel over the open rows of each step
        (docs/triton.md, "The backward's own tiles and dU"), one fp32 copy of U's size per
        batch block, instead of one dense GEMM over every row and step after the kernel.
        Not a default anywhere until a GPU has timed it; the forward ignores it.
    bwd: the backward's (bh, bk, warps) where they differ from the forward's: columns per
        slice, rows of U per iteration, num_warps (None: the forward's; :func:`check_bwd`).
        A program owns its slices in both phases of a backward step, so a wider slice means
        fewer slices per program, and a longer row tile fewer iterations over the open rows.
        The grid is the forward's: with ``per_sm = 2`` two backward programs must fit on an
        SM as well, else the cooperative launch refuses it.
    """

    bb: int
    bh: int
    bk: int
    warps: int
    stages: int
    fma: bool
    split: bool = False
    per_sm: int = 1
    dw: bool = False
    bwd: tuple[int, int, int] | None = None


#: tiles to use instead of :func:`tiles`' choice (the benchmark's sweep sets it)
TILES: Tiles | None = None
#: tl.dot precision instead of the one torch's flags give ("ieee", "tf32", "tf32x3")
PRECISION: str | None = None
#: split steps (``Tiles.split``) on or off instead of the tiles' own choice
SPLIT: bool | None = None
#: dU in the backward kernel (``Tiles.dw``) on or off instead of the tiles' own choice
DW: bool | None = None
#: the backward's own (bh, bk, warps) (``Tiles.bwd``) instead of the tiles' own choice
BWD: tuple[int, int, int] | None = None


def sm_count(device) -> int | None:
    """The GPU's SM count; None off a GPU (the interpreter: no residency limit).
    tools/triton_aot.py stands in a card's count to compile the GPU's grid shapes."""
    if device.type != "cuda":
        return None
    return torch.cuda.get_device_properties(device).multi_processor_count


def _clamp_block(rows: int) -> int:
    return max(16, min(MAX_BB, next_pow2(rows)))


def tiles(B: int, H: int, device, precision: str = "ieee") -> Tiles:
    """The tiles of a call: :data:`TILES` where set, else the measured defaults (one H200,
    docs/triton.md, "Tiles"):

    * B <= 8: one block of ``next_pow2(B)`` rows on the FMA units (a tensor-core tile would
      pad it to 16 rows), chunks of 8 rows, a long reduction tile (2048 / BB columns, at most
      the layer's width), 8 warps, 3 stages: many weight bytes in flight per SM, which is what
      a B = 1 step streams (B=1, H=8192, 10 %: 37 ms, against 111 ms at 16 rows x 256);
    * larger batches: blocks of 16 rows while every block keeps 16 programs (B = 64: four
      blocks of 33 programs; two blocks of 32 rows took twice as long), tl.dot on chunks of
      16 rows; reduction tile 64 at exact fp32 (IEEE dot), 32 at 3xTF32 (no spills), 128 and
      3 stages at TF32.

    :data:`SPLIT`, :data:`DW` and :data:`BWD`, where set, replace the tiles' ``split``,
    ``dw`` and ``bwd``."""
    t = TILES if TILES is not None else _measured_tiles(B, H, device, precision)
    over = {k: v for k, v in (("split", SPLIT), ("dw", DW), ("bwd", BWD)) if v is not None}
    return t._replace(**over) if over else t


def _measured_tiles(B: int, H: int, device, precision: str) -> Tiles:
    if B <= 8:
        bb = next_pow2(B)
        return Tiles(bb, 8, max(64, min(2048 // bb, next_pow2(H))), 8, 3, True)
    sms = sm_count(device)
    bb = 16
    if sms is not None and triton.cdiv(B, 16) * 16 > sms:
        bb = _clamp_block(triton.cdiv(B * 16, sms))
    elif sms is None:
        bb = _clamp_block(B)
    if precision == "tf32":
        return Tiles(bb, 16, 128, 4, 3, False)
    if precision == "tf32x3":
        return Tiles(bb, 16, 32, 4, 3, False)
    return Tiles(bb, 16, max(32, 1024 // bb), 4, 2, False)


def shape(B: int, H: int, device, precision: str = "ieee") -> tuple[int, int, int]:
    """(BB, NH, NB): batch rows per program, programs per batch block, batch blocks.

    NH is one program per chunk of ``bh`` rows (at most ``MAX_NH``). On a GPU the programs
    must all be resident (a spin barrier): NH ≤ per_sm · SMs // NB (``Tiles.per_sm``, 1 by
    default), so NH is 0 (not eligible) when the batch needs more blocks than that. The
    interpreter has no residency limit."""
    t = tiles(B, H, device, precision)
    nh = triton.cdiv(H, t.bh)
    if MAX_NH is not None:
        nh = max(1, min(nh, MAX_NH))
    nb = triton.cdiv(B, t.bb)
    sms = sm_count(device)
    if sms is not None:
        nh = min(nh, t.per_sm * sms // nb)
    return t.bb, nh, nb


#: phase 2 of a split step loads the partials of this many column tiles at once (powers of
#: two), per dot precision. From the sm_90 compiles on Triton 3.6 when split steps were built
#: (the GRU forward at BB = 16, H = 1024): 8 tiles spilled in the exact and TF32 kernels
#: (24 / 16 B of stack at 255 registers) and 4 did not (202 / 190); 3xTF32 took 8 without
#: spilling (218) and spilled 8 B at 4. Today's tables: docs/gpu/aot_sm90_triton36.txt.
PARTIAL_TILES = {"ieee": 4, "tf32": 4, "tf32x3": 8}


def partial_tiles(H: int, bk: int, precision: str) -> int:
    """Column tiles whose partials phase 2 of a split step loads at once (``PK``)."""
    return min(PARTIAL_TILES[precision], next_pow2(triton.cdiv(H, bk)))


def split_bytes(B: int, H: int, cell: str, bk: int) -> int:
    """Bytes of the split forward's scratch of partial products: (cdiv(H, bk), B, G) fp32."""
    return triton.cdiv(H, bk) * B * _width(cell, H) * 4


def check_bwd(t: Tiles) -> None:
    """Raises ValueError unless the backward's own tiles ``t.bwd`` are three powers of two,
    with slices and row tiles of at least 16 where the products run on ``tl.dot``."""
    if len(t.bwd) != 3 or not all(isinstance(v, int) and v > 0 and v & (v - 1) == 0 for v in t.bwd):
        raise ValueError(f"Tiles.bwd must be (bh, bk, warps), three powers of two; got {t.bwd!r}")
    if not t.fma and min(t.bwd[:2]) < 16:
        raise ValueError(f"Tiles.bwd {t.bwd!r}: tl.dot needs slices and row tiles of at least 16 (or fma=True)")


def dw_bytes(nb: int, H: int, cell: str) -> int:
    """Bytes of the backward's per-block dU sums (``Tiles.dw``): (nb, G, H) fp32."""
    return nb * _width(cell, H) * H * 4


def _width(cell: str, H: int) -> int:
    """G, the width of a pre-activation row: 3 H for a GRU, H for an RNN."""
    return 3 * H if cell == "gru" else H


def dot_precision(dtype) -> str:
    """The ``tl.dot`` precision for operands from ``dtype`` inputs: :data:`PRECISION` where
    set, else "tf32" or "ieee". The dot operands are fp32 (16-bit inputs are widened after
    the load). fp16 and bf16 values are exact in TF32, so for them TF32 tensor cores compute
    the fp32 products exactly; fp32 inputs use TF32 only where torch allows it for matmuls."""
    if PRECISION is not None:
        return PRECISION
    if dtype in (torch.float16, torch.bfloat16) or _tf32_matmuls():
        return "tf32"
    return "ieee"


def _tf32_matmuls() -> bool:
    """torch's switch for TF32 fp32 matmuls: ``fp32_precision`` where it is set (newer
    torch raises on the legacy flag once it is), else ``allow_tf32``."""
    m = torch.backends.cuda.matmul
    prec = getattr(m, "fp32_precision", None)
    if prec not in (None, "none"):
        return prec == "tf32"
    try:
        return bool(m.allow_tf32)
    except RuntimeError:
        return False

