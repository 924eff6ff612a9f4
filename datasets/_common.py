"""Shared pieces of ``su_neuro.datasets``: the :class:`Task` record, errors, argument checks."""

from __future__ import annotations

import numbers
import os
from dataclasses import dataclass
from pathlib import Path

import numpy as np
import torch
from torch.utils.data import Dataset

IGNORE_INDEX = -100
"""Target value of the steps that a seq2seq task does not score (``torch.nn.CrossEntropyLoss``'s
default ``ignore_index``)."""

KINDS = ("classify", "seq2seq", "regress")


class DatasetNotFoundError(FileNotFoundError):
    """A dataset's files are not on disk; the message says which files to place where."""


@dataclass
class Task:
    """One learning task: a train and a test split plus what a model needs to know about them.

    Every split is a ``torch.utils.data.Dataset`` whose items are ``(x, y)`` with ``x`` a
    ``float32`` tensor of shape ``(seq_len, input_size)`` and ``y``

    - ``kind == "classify"``: an ``int`` class index in ``[0, output_size)``;
    - ``kind == "seq2seq"``: a ``long`` tensor ``(seq_len,)`` of per-step classes, with
      :data:`IGNORE_INDEX` (-100) on the steps that are not scored;
    - ``kind == "regress"``: a ``float32`` tensor ``(output_size,)``.

    ``valid`` is set only where the source ships a validation split (SSC, ListOps).

    Token tasks (``vocab_size`` set, e.g. ListOps): ``x`` is a ``long`` tensor ``(seq_len,)`` of
    token ids in ``[0, vocab_size)`` instead of features, ``pad_id`` is the id a batch is padded
    with, and ``seq_len`` is the longest possible sequence.
    """

    name: str
    kind: str
    train: Dataset
    test: Dataset
    input_size: int
    output_size: int
    seq_len: int
    valid: Dataset | None = None
    vocab_size: int | None = None
    pad_id: int = 0

    def __post_init__(self):
        if self.kind not in KINDS:
            raise ValueError(f"Task.kind must be one of {KINDS}, got {self.kind!r}")
        if self.vocab_size is not None and not 0 <= self.pad_id < self.vocab_size:
            raise ValueError(f"Task.pad_id {self.pad_id} lies outside the vocabulary [0, {self.vocab_size})")

    @property
    def tokens(self) -> bool:
        """True for a token task (items hold token ids, not features)."""
        return self.vocab_size is not None


def default_root() -> Path:
    """Where neuromorphic data is looked for: ``$SU_NEURO_DATA``, else ``~/.cache/su_neuro/data``."""
    env = os.environ.get("SU_NEURO_DATA")
    return Path(env).expanduser() if env else Path("~/.cache/su_neuro/data").expanduser()


def check_int(name: str, value, low: int, high: int | None = None) -> int:
    """Return ``value`` as an int, or raise ``ValueError`` naming the argument if it is out of range."""
    if isinstance(value, bool | np.bool_) or not isinstance(value, numbers.Integral):
        raise TypeError(f"{name} must be an int, got {type(value).__name__}")
    value = int(value)  # numpy integers too
    if value < low or (high is not None and value > high):
        bound = f">= {low}" if high is None else f"in [{low}, {high}]"
        raise ValueError(f"{name} must be {bound}, got {value}")
    return value


def pad_collate(batch, pad_id: int = 0):
    """Collate ``(x (T_i, F), y)`` items of possibly different lengths into a padded batch.

    Padding goes on the right (step t of every sequence stays step t: the rhythmic gate of a
    step depends on its absolute index). Token items ``(T_i,)`` are padded with ``pad_id``.

    Returns ``(x (B, T_max, F) float32 zero-padded (tokens: (B, T_max) long), y, lengths (B,) long)``;
    ``y`` is stacked into a tensor (class indices become a ``long`` tensor ``(B,)``). Sequence
    targets ``(T_i,)`` are padded with :data:`IGNORE_INDEX`. With a fixed ``n_time_bins`` all
    neuromorphic samples have the same length and the default collate works as well.

    Example:
        >>> loader = torch.utils.data.DataLoader(task.train, batch_size=32, collate_fn=pad_collate)
    """
    if len(batch) == 0:
        raise ValueError("pad_collate: the batch is empty")
    xs, ys = zip(*batch, strict=True)
    lengths = torch.tensor([x.shape[0] for x in xs], dtype=torch.long)
    if bool((lengths == 0).any()):
        raise ValueError("pad_collate: a sequence of length 0 cannot be run")
    padding = pad_id if not xs[0].is_floating_point() else 0.0
    x = torch.nn.utils.rnn.pad_sequence(list(xs), batch_first=True, padding_value=padding)
    if isinstance(ys[0], torch.Tensor) and ys[0].dim() == 1 and ys[0].dtype == torch.long:
        y = torch.nn.utils.rnn.pad_sequence(list(ys), batch_first=True, padding_value=IGNORE_INDEX)
    elif isinstance(ys[0], torch.Tensor):
        y = torch.stack(ys)
    else:
        y = torch.tensor(ys, dtype=torch.long)
    return x, y, lengths
