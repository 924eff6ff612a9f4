"""The paper's generated sequence tasks: copying memory, selective copying, adding problem.

All generation is deterministic given ``seed``; train and test use independent streams
(``numpy.random.SeedSequence(seed).spawn(2)``), so the test split does not depend on ``n_train``.

Token layout shared by both copy tasks (vocabulary of ``n_symbols + 2`` one-hot inputs)::

    0                 blank
    1 .. n_symbols    symbols to remember
    n_symbols + 1     delimiter ("recall now")
"""

from __future__ import annotations

import numpy as np
import torch
from torch.utils.data import Dataset

from ._common import IGNORE_INDEX, Task, check_int

BLANK = 0


def _check_split_sizes(n_train, n_test) -> None:
    """Refuse an empty split: a task without test samples would report zero loss and
    accuracy that look like measurements, and one without training samples cannot train."""
    for name, value in (("n_train", n_train), ("n_test", n_test)):
        if not isinstance(value, bool) and isinstance(value, int) and value == 0:
            raise ValueError(f"{name} must be >= 1, got 0: a split without samples can be neither trained "
                             "nor scored")
        check_int(name, value, 1)


def _rngs(seed: int) -> tuple[np.random.Generator, np.random.Generator]:
    train, test = np.random.SeedSequence(seed).spawn(2)
    return np.random.default_rng(train), np.random.default_rng(test)


class TokenSequences(Dataset):
    """Integer token sequences served one-hot.

    Args:
        tokens: ``(N, T)`` integer inputs in ``[0, vocab)``.
        targets: ``(N, T)`` integer per-step targets (``IGNORE_INDEX`` where not scored).
        vocab: one-hot width.

    Items: ``(x (T, vocab) float32, y (T,) long)``.
    """

    def __init__(self, tokens: torch.Tensor, targets: torch.Tensor, vocab: int):
        self.tokens = tokens
        self.targets = targets
        self.vocab = vocab

    def __len__(self) -> int:
        return self.tokens.shape[0]

    def __getitem__(self, index):
        x = torch.nn.functional.one_hot(self.tokens[index], self.vocab).to(torch.float32)
        return x, self.targets[index]


class TensorPairs(Dataset):
    """Pre-built ``(x (N, T, F), y (N, ...))`` tensors; item ``i`` is ``(x[i], y[i])``."""

    def __init__(self, x: torch.Tensor, y: torch.Tensor):
        self.x = x
        self.y = y

    def __len__(self) -> int:
        return self.x.shape[0]

    def __getitem__(self, index):
        return self.x[index], self.y[index]


def _copy_split(rng, n, delay, n_symbols, n_memorize, blank_targets):
    delimiter = n_symbols + 1
    seq_len = n_memorize + delay + 1 + n_memorize
    symbols = rng.integers(1, n_symbols + 1, size=(n, n_memorize))
    tokens = np.full((n, seq_len), BLANK, dtype=np.int64)
    tokens[:, :n_memorize] = symbols
    tokens[:, n_memorize + delay] = delimiter
    targets = np.full((n, seq_len), BLANK if blank_targets else IGNORE_INDEX, dtype=np.int64)
    targets[:, -n_memorize:] = symbols
    return TokenSequences(torch.from_numpy(tokens), torch.from_numpy(targets), n_symbols + 2)


def copy_task(
    *,
    delay: int = 100,
    n_symbols: int = 8,
    n_memorize: int = 10,
    n_train: int = 10000,
    n_test: int = 1000,
    blank_targets: bool = False,
    seed: int = 0,
) -> Task:
    """Copying memory: remember ``n_memorize`` symbols across ``delay`` blanks, recall on a delimiter.

    Input steps: ``n_memorize`` symbols, ``delay`` blanks, one delimiter, ``n_memorize`` blanks;
    ``seq_len = 2 * n_memorize + delay + 1``. Targets are the remembered symbols (token ids
    ``1..n_symbols``) on the last ``n_memorize`` steps and ``IGNORE_INDEX`` elsewhere
    (``blank_targets=True``: the blank token 0 elsewhere, the classic fully scored variant).

    Items: ``x (seq_len, n_symbols + 2)`` one-hot, ``y (seq_len,)`` long; ``output_size = n_symbols + 2``.
    """
    check_int("delay", delay, 0)
    check_int("n_symbols", n_symbols, 1)
    check_int("n_memorize", n_memorize, 1)
    _check_split_sizes(n_train, n_test)
    check_int("seed", seed, 0)
    rng_train, rng_test = _rngs(seed)
    if not isinstance(blank_targets, bool | np.bool_):
        raise TypeError(f"blank_targets must be True or False, got {blank_targets!r}")
    args = (delay, n_symbols, n_memorize, bool(blank_targets))
    return Task(
        name="copy",
        kind="seq2seq",
        train=_copy_split(rng_train, n_train, *args),
        test=_copy_split(rng_test, n_test, *args),
        input_size=n_symbols + 2,
        output_size=n_symbols + 2,
        seq_len=2 * n_memorize + delay + 1,
    )


def _selective_split(rng, n, length, n_symbols, n_memorize):
    delimiter = n_symbols + 1
    seq_len = length + 1 + n_memorize
    tokens = np.full((n, seq_len), BLANK, dtype=np.int64)
    targets = np.full((n, seq_len), IGNORE_INDEX, dtype=np.int64)
    symbols = rng.integers(1, n_symbols + 1, size=(n, n_memorize))
    # n_memorize distinct positions per row, in increasing order: argsort of uniform noise.
    positions = np.sort(np.argsort(rng.random((n, length)), axis=1)[:, :n_memorize], axis=1)
    np.put_along_axis(tokens, positions, symbols, axis=1)
    tokens[:, length] = delimiter
    targets[:, -n_memorize:] = symbols
    return TokenSequences(torch.from_numpy(tokens), torch.from_numpy(targets), n_symbols + 2)


def selective_copy_task(
    *,
    length: int = 200,
    n_symbols: int = 8,
    n_memorize: int = 10,
    n_train: int = 10000,
    n_test: int = 1000,
    seed: int = 0,
) -> Task:
    """Selective copying: ``n_memorize`` symbols at random positions of a ``length``-step context of
    blanks; after a delimiter, recall them in order of appearance.

    Input steps: context (``length``), delimiter, ``n_memorize`` blanks; ``seq_len = length + 1 +
    n_memorize``. Targets: the symbols in order on the last ``n_memorize`` steps, ``IGNORE_INDEX``
    elsewhere. Items: ``x (seq_len, n_symbols + 2)`` one-hot, ``y (seq_len,)`` long.
    """
    check_int("n_memorize", n_memorize, 1)
    check_int("length", length, n_memorize)
    check_int("n_symbols", n_symbols, 1)
    _check_split_sizes(n_train, n_test)
    check_int("seed", seed, 0)
    rng_train, rng_test = _rngs(seed)
    args = (length, n_symbols, n_memorize)
    return Task(
        name="selective_copy",
        kind="seq2seq",
        train=_selective_split(rng_train, n_train, *args),
        test=_selective_split(rng_test, n_test, *args),
        input_size=n_symbols + 2,
        output_size=n_symbols + 2,
        seq_len=length + 1 + n_memorize,
    )


def _adding_split(rng, n, length):
    values = rng.random((n, length))
    half = length // 2
    first = rng.integers(0, half, size=n)
    second = rng.integers(half, length, size=n)
    markers = np.zeros((n, length))
    rows = np.arange(n)
    markers[rows, first] = 1.0
    markers[rows, second] = 1.0
    x = np.stack([values, markers], axis=-1).astype(np.float32)
    y = (values[rows, first] + values[rows, second]).astype(np.float32)[:, None]
    return TensorPairs(torch.from_numpy(x), torch.from_numpy(y))


def adding_task(
    *, length: int = 200, n_train: int = 10000, n_test: int = 1000, seed: int = 0
) -> Task:
    """Adding problem: sum the two values whose marker is set.

    Channel 0 holds values ~ U[0, 1); channel 1 marks one step in the first half and one in the
    second half. Items: ``x (length, 2)`` float32, ``y (1,)`` float32 (the sum, in [0, 2)).
    """
    check_int("length", length, 2)
    _check_split_sizes(n_train, n_test)
    check_int("seed", seed, 0)
    rng_train, rng_test = _rngs(seed)
    return Task(
        name="adding",
        kind="regress",
        train=_adding_split(rng_train, n_train, length),
        test=_adding_split(rng_test, n_test, length),
        input_size=2,
        output_size=1,
        seq_len=length,
    )
