r"""ListOps, the Long Range Arena task: evaluate a nested list expression, 10 classes.

The grammar (Long Range Arena, Tay et al. 2021, generator ``lra_benchmarks/data/listops.py``
of google-research/long-range-arena; after Nangia & Bowman 2018)::

    expr  := digit | [OP expr expr ... expr ]        OP in MIN, MAX, MED, SM;  digit in 0..9

* a node below ``max_depth`` (the root has depth 1) is an operator with probability
  ``p_operator`` = 0.25 (the source's ``VALUE_P``: ``r = random.random()``, a value if
  ``r > VALUE_P``), else a digit drawn uniformly from 0..9; at ``max_depth`` it is a digit;
* an operator takes ``random.randint(2, max_args)`` arguments, Python's ``randint``
  including both bounds: 2..10 with ``max_args = 10``;
* ``MIN``, ``MAX``; ``MED`` is ``int(numpy.median(args))`` (the mean of the two middle
  values for an even count, truncated: the median of 1, 2 is 1); ``SM`` is the sum mod 10;
* the length counts the operator, the digits and the closing bracket (the source starts
  an operator at 2 and adds its arguments' lengths); a tree is kept when
  ``min_length < length < max_length`` (both strict), and duplicates are dropped (the
  source collects trees in a ``set``);
* 96,000 train, 2,000 validation, 2,000 test sequences, ``max_depth = 10``, ``max_args =
  10``, lengths in (500, 2000): the source's flag defaults.

Tokens (no parentheses: the source's ``to_string`` wraps every pair in ``( ... )``, which
carries no information and is dropped here, as the issue asks)::

    0        padding
    1..10    the digits 0..9
    11..14   [MIN  [MAX  [MED  [SM
    15       ]

So a sequence's token count is exactly the length above. The label is the value of the
expression (0..9).

Generation is written for this project (not a port of the source's random stream): one
splitmix64 stream per ``seed`` feeds a preorder, stack-based generator in Numba that
abandons a tree as soon as it reaches ``max_length`` tokens (it would be rejected anyway),
and evaluates the expression while it is written. Candidates are drawn in order; a
candidate equal to an earlier kept one is skipped; the kept sequences are split in order
(train, valid, test). 100,000 full-length sequences take a few seconds.
"""

from __future__ import annotations

import hashlib

import numpy as np
import torch
from torch.utils.data import Dataset

from ._common import Task, check_int

PAD = 0
DIGIT0 = 1  # token of digit d is DIGIT0 + d
OPERATORS = ("MIN", "MAX", "MED", "SM")
OP0 = 11  # token of OPERATORS[k] is OP0 + k
END = 15
VOCAB_SIZE = 16
TOKEN_NAMES = tuple(["<pad>"] + [str(d) for d in range(10)] + [f"[{op}" for op in OPERATORS] + ["]"])
NUM_CLASSES = 10

_GENERATOR = None


def _generator():
    """The Numba generator (compiled on first use, so importing datasets loads no Numba)."""
    global _GENERATOR
    if _GENERATOR is not None:
        return _GENERATOR
    import numba as nb

    @nb.njit(cache=True)
    def _next(state):
        # splitmix64; state is a (1,) uint64 array
        state[0] += np.uint64(0x9E3779B97F4A7C15)
        z = state[0]
        z = (z ^ (z >> np.uint64(30))) * np.uint64(0xBF58476D1CE4E5B9)
        z = (z ^ (z >> np.uint64(27))) * np.uint64(0x94D049BB133111EB)
        return z ^ (z >> np.uint64(31))

    @nb.njit(cache=True)
    def _uniform(state):
        return np.float64(_next(state) >> np.uint64(11)) * (1.0 / 9007199254740992.0)

    @nb.njit(cache=True)
    def _randint(state, low, high):
        # low..high inclusive
        return low + np.int64(_uniform(state) * (high - low + 1))

    @nb.njit(cache=True)
    def generate(state, n_wanted, max_draws, min_length, max_length, max_depth, max_args, p_operator):
        """Up to ``n_wanted`` accepted trees from at most ``max_draws`` candidates: (tokens int8
        (sum of lengths,), lengths, labels, candidates drawn)."""
        out = np.empty(n_wanted * max_length, np.int8)
        lengths = np.empty(n_wanted, np.int64)
        labels = np.empty(n_wanted, np.int64)
        buf = np.empty(max_length, np.int8)
        remaining = np.empty(max_depth + 1, np.int64)  # arguments still to draw per open operator
        opcode = np.empty(max_depth + 1, np.int64)
        start = np.empty(max_depth + 1, np.int64)  # first argument of each open operator in `values`
        values = np.empty(max_length, np.int64)
        scratch = np.empty(max_args, np.int64)
        kept = 0
        pos = 0
        drawn = 0
        while kept < n_wanted and drawn < max_draws:
            drawn += 1
            n = 0
            open_ops = 0
            top = 0
            need_node = True
            ok = True
            while True:
                if need_node:
                    depth = open_ops + 1
                    if depth < max_depth and _uniform(state) <= p_operator:
                        op = _randint(state, 0, 3)
                        buf[n] = OP0 + op
                        n += 1
                        opcode[open_ops] = op
                        remaining[open_ops] = _randint(state, 2, max_args)
                        start[open_ops] = top
                        open_ops += 1
                    else:
                        d = _randint(state, 0, 9)
                        buf[n] = DIGIT0 + d
                        n += 1
                        values[top] = d
                        top += 1
                        need_node = False
                    if n >= max_length:
                        ok = False
                        break
                    continue
                # a node is complete
                if open_ops == 0:
                    break
                remaining[open_ops - 1] -= 1
                if remaining[open_ops - 1] > 0:
                    need_node = True
                    continue
                # close the innermost operator
                buf[n] = END
                n += 1
                open_ops -= 1
                s = start[open_ops]
                cnt = top - s
                op = opcode[open_ops]
                if op == 0:
                    res = values[s]
                    for i in range(s + 1, top):
                        res = min(res, values[i])
                elif op == 1:
                    res = values[s]
                    for i in range(s + 1, top):
                        res = max(res, values[i])
                elif op == 2:
                    for i in range(cnt):
                        scratch[i] = values[s + i]
                    srt = np.sort(scratch[:cnt])
                    if cnt % 2 == 1:
                        res = srt[cnt // 2]
                    else:
                        res = (srt[cnt // 2 - 1] + srt[cnt // 2]) // 2
                else:
                    res = 0
                    for i in range(s, top):
                        res += values[i]
                    res = res % 10
                top = s
                values[top] = res
                top += 1
                if n >= max_length and open_ops > 0:
                    ok = False
                    break
            if not ok or n <= min_length or n >= max_length:
                continue
            out[pos:pos + n] = buf[:n]
            pos += n
            lengths[kept] = n
            labels[kept] = values[0]
            kept += 1
        return out[:pos], lengths[:kept], labels[:kept], drawn

    _GENERATOR = generate
    return generate


DRAWS_PER_TREE = 10_000
MIN_DRAWS = 1_000_000
"""Candidates drawn at most: ``DRAWS_PER_TREE`` per tree asked for, plus ``MIN_DRAWS``."""
DRAWS_PER_CALL = 200_000
"""Candidates per call into the compiled generator (a Ctrl-C waits for at most one call)."""


def _longest_tree(max_depth: int, max_args: int) -> int:
    """Tokens of the longest tree: operators down to ``max_depth - 1`` with ``max_args``
    arguments each (an operator is ``[OP``, its arguments, ``]``), digits at ``max_depth``."""
    length = 1
    for _ in range(max_depth - 1):
        length = 2 + max_args * length
    return length


def _seed_state(seed: int) -> np.ndarray:
    digest = hashlib.sha256(f"su_neuro.listops:{seed}".encode()).digest()
    return np.array([int.from_bytes(digest[:8], "little")], dtype=np.uint64)


def generate_listops(
    n: int,
    *,
    min_length: int = 500,
    max_length: int = 2000,
    max_depth: int = 10,
    max_args: int = 10,
    p_operator: float = 0.25,
    seed: int = 0,
) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    """``n`` distinct ListOps sequences: ``(tokens int8 (sum of lengths,), offsets (n + 1,),
    labels (n,))``; sequence i is ``tokens[offsets[i]:offsets[i + 1]]``. Deterministic in
    every argument. See the module docstring for the grammar and the token ids.
    """
    check_int("n", n, 0)
    check_int("min_length", min_length, 0)
    check_int("max_length", max_length, min_length + 2)
    check_int("max_depth", max_depth, 2)
    check_int("max_args", max_args, 2)
    check_int("seed", seed, 0)
    if not 0.0 < float(p_operator) < 1.0:
        raise ValueError(f"p_operator must lie in (0, 1), got {p_operator}")
    longest = _longest_tree(max_depth, max_args)
    if longest <= min_length:
        raise ValueError(f"ListOps: no tree is longer than min_length {min_length}: the longest tree with "
                         f"max_depth {max_depth} and max_args {max_args} has {longest} tokens")
    generate = _generator()
    state = _seed_state(seed)
    seen: set[bytes] = set()
    pieces, lens, labs = [], [], []
    budget = DRAWS_PER_TREE * max(n, 1) + MIN_DRAWS
    attempts = 0
    while len(lens) < n:
        if attempts >= budget:
            raise ValueError(
                f"ListOps: {len(lens)} of {n} trees with {min_length} < length < {max_length} after {attempts} "
                f"candidates at max_depth {max_depth}, max_args {max_args}: widen the lengths or deepen the trees"
            )
        # bounded calls: a Ctrl-C lands between them, and the budget above is checked
        tokens, lengths, labels, drawn = generate(
            state, n - len(lens), min(DRAWS_PER_CALL, budget - attempts), min_length, max_length, max_depth,
            max_args, float(p_operator)
        )
        attempts += int(drawn)
        pos = 0
        for length, label in zip(lengths.tolist(), labels.tolist(), strict=True):
            seq = tokens[pos:pos + length]
            pos += length
            key = seq.tobytes()
            if key in seen:
                continue
            seen.add(key)
            pieces.append(seq)
            lens.append(length)
            labs.append(label)
    offsets = np.zeros(len(lens) + 1, dtype=np.int64)
    np.cumsum(lens, out=offsets[1:])
    flat = np.concatenate(pieces) if pieces else np.zeros(0, np.int8)
    return flat, offsets, np.asarray(labs, dtype=np.int64)


class TokenClassification(Dataset):
    """Variable-length token sequences with one class each.

    Items: ``(tokens (T_i,) long, label int)``. ``lengths`` (N,) holds every T_i (for
    length bucketing, :func:`su_neuro.train.bucket_order`).
    """

    def __init__(self, tokens: np.ndarray, offsets: np.ndarray, labels: np.ndarray):
        self.tokens = tokens
        self.offsets = offsets
        self.labels = labels
        self.lengths = np.diff(offsets)

    def __len__(self) -> int:
        return len(self.labels)

    def __getitem__(self, index):
        if not -len(self) <= index < len(self):
            raise IndexError(f"index {index} out of range for {len(self)} sequences")
        index = index % len(self)
        seq = self.tokens[self.offsets[index]:self.offsets[index + 1]]
        return torch.from_numpy(seq.astype(np.int64)), int(self.labels[index])


def listops_task(
    *,
    n_train: int = 96000,
    n_valid: int = 2000,
    n_test: int = 2000,
    min_length: int = 500,
    max_length: int = 2000,
    max_depth: int = 10,
    max_args: int = 10,
    seed: int = 0,
) -> Task:
    """LRA ListOps (defaults: the source's 96k / 2k / 2k, lengths in (500, 2000), depth 10,
    2..10 arguments). Items: ``(tokens (T,) long, label)``; ``vocab_size = 16``, padding id 0.

    Example:
        >>> task = get_task("listops_short", n_train=100, n_valid=10, n_test=10)
        >>> tokens, label = task.train[0]
    """
    return _task("listops", n_train, n_valid, n_test, min_length, max_length, max_depth, max_args, seed)


def listops_short_task(
    *,
    n_train: int = 20000,
    n_valid: int = 1000,
    n_test: int = 1000,
    min_length: int = 10,
    max_length: int = 500,
    max_depth: int = 5,
    max_args: int = 10,
    seed: int = 0,
) -> Task:
    """A short ListOps for quick runs and tests: the same grammar with depth 5 and lengths
    in (10, 500)."""
    return _task("listops_short", n_train, n_valid, n_test, min_length, max_length, max_depth, max_args, seed)


def _task(name, n_train, n_valid, n_test, min_length, max_length, max_depth, max_args, seed) -> Task:
    check_int("n_train", n_train, 0)
    check_int("n_valid", n_valid, 0)
    check_int("n_test", n_test, 0)
    tokens, offsets, labels = generate_listops(
        n_train + n_valid + n_test,
        min_length=min_length,
        max_length=max_length,
        max_depth=max_depth,
        max_args=max_args,
        seed=seed,
    )

    def split(lo, hi):
        offs = offsets[lo:hi + 1]
        return TokenClassification(tokens[offs[0]:offs[-1]], offs - offs[0], labels[lo:hi])

    a, b = n_train, n_train + n_valid
    return Task(
        name=name,
        kind="classify",
        train=split(0, a),
        test=split(b, b + n_test),
        valid=split(a, b),
        input_size=VOCAB_SIZE,
        output_size=NUM_CLASSES,
        seq_len=max_length - 1,
        vocab_size=VOCAB_SIZE,
        pad_id=PAD,
    )
