"""Models built from a selective-update stack and a linear readout.

:class:`SequenceClassifier`  one label per sequence (readout: last step, mean over
                             steps, both side by side, or spike count for LIF).
:class:`Seq2Seq`             one prediction per step (copy task, language modelling).

Both return ``output`` or, with ``record=True``, ``(output, records)`` where
``records`` maps ``"layers.<k>"`` to the :class:`StepRecord` of sub-layer k; this is
what :mod:`su_neuro.traces` writes.

Token inputs: with ``vocab_size`` the model takes token ids (B, T) and looks them up in an
``nn.Embedding(vocab_size, embed_dim, padding_idx)`` before the stack.

Padded batches: ``forward(x, lengths=...)`` runs each sequence for its own length (see
:meth:`su_neuro.layers.SULayer.forward`); the readouts use the valid steps only.
"""

from __future__ import annotations

import warnings

import torch
from torch import nn

from ._checks import whole
from .layers import SUGRU, SULIF, SURNN, SULayer, _check_input, check_lengths, valid_mask

__all__ = ["CELL_TYPES", "READOUTS", "Seq2Seq", "SequenceClassifier", "build_layer"]

CELL_TYPES = {"rnn": SURNN, "gru": SUGRU, "lif": SULIF}
READOUTS = ("last", "mean", "last_mean", "spike_count")


def build_layer(cell: str, input_size: int, hidden_size: int, **kwargs) -> SULayer:
    """``SURNN`` / ``SUGRU`` / ``SULIF`` by name; ValueError lists the valid names."""
    if cell not in CELL_TYPES:
        raise ValueError(f"unknown cell {cell!r}; valid cells: {', '.join(CELL_TYPES)}")
    return CELL_TYPES[cell](input_size, hidden_size, **kwargs)


class _StackModel(nn.Module):
    def __init__(
        self,
        cell: str,
        input_size: int,
        hidden_size: int,
        output_size: int,
        vocab_size: int | None = None,
        embed_dim: int | None = None,
        padding_idx: int | None = None,
        head_inputs: int | None = None,
        **layer_kwargs,
    ):
        super().__init__()
        output_size = whole("output_size", output_size)
        self.cell = cell
        self.embed = None
        if vocab_size is not None:
            vocab_size = whole("vocab_size", vocab_size)
            embed_dim = input_size if embed_dim is None else whole("embed_dim", embed_dim)
            if embed_dim != input_size:
                # the stack's input is the embedding: input_size goes unused (deprecated, to
                # become an error)
                warnings.warn(f"a token model's input_size is its embedding width: embed_dim = {embed_dim} is "
                              f"used and input_size = {input_size} ignored; give equal values (this will be an "
                              "error)", FutureWarning, stacklevel=3)
            if padding_idx is not None:
                padding_idx = whole("padding_idx", padding_idx, 0)
                if padding_idx >= vocab_size:
                    raise ValueError(f"padding_idx must be an id in [0, vocab_size = {vocab_size}), got {padding_idx}")
            self.embed = nn.Embedding(vocab_size, embed_dim, padding_idx=padding_idx)
            input_size = embed_dim
        elif embed_dim is not None or padding_idx is not None:
            raise ValueError("embed_dim and padding_idx need vocab_size (token inputs)")
        self.rnn = build_layer(cell, input_size, hidden_size, **layer_kwargs)
        self.head = nn.Linear(hidden_size if head_inputs is None else head_inputs, output_size)

    def _embed(self, x):
        if self.embed is None:
            return x
        if not isinstance(x, torch.Tensor) or x.dim() != 2:
            shape = tuple(x.shape) if isinstance(x, torch.Tensor) else type(x).__name__
            raise ValueError(f"a token model takes token ids of shape (batch, time), got {shape}")
        if x.dtype.is_floating_point or x.dtype == torch.bool:
            raise TypeError(f"token ids must be an integer tensor, got dtype {x.dtype}")
        V = self.embed.num_embeddings
        if x.numel() and (int(x.min()) < 0 or int(x.max()) >= V):
            raise ValueError(f"token ids must lie in [0, vocab_size = {V}), got [{int(x.min())}, {int(x.max())}]")
        return self.embed(x.long())

    def stack_inputs(self, x: torch.Tensor, lengths=None):
        """The float inputs (B, T', F) the recurrent stack sees for ``x``, and their lengths.

        Token ids go through the embedding, padded steps (with ``lengths``) are zero, and a
        :class:`SequenceClassifier` with ``settle_steps`` S appends its S zero steps (T' = T + S,
        lengths + S). Traces store these inputs beside the records they drive.
        """
        x = self._embed(x)
        if lengths is not None:
            lengths = check_lengths(lengths, x.shape[0], x.shape[1]).to(x.device)
            x = x * valid_mask(lengths, x.shape[1], x.device).unsqueeze(-1).to(x.dtype)
        return self._extend(x, lengths)

    def _extend(self, x, lengths):
        return x, lengths

    def _run(self, x, state, record, lengths=None):
        return self._stack(self._embed(x), state, record, lengths)

    def _stack(self, x, state, record, lengths=None):
        if record:
            out, state, recs = self.rnn(x, state, record=True, lengths=lengths)
            return out, state, {f"layers.{k}": r for k, r in enumerate(recs)}
        out, state = self.rnn(x, state, lengths=lengths)
        return out, state, None

    def layer_meta(self) -> dict:
        """Per recorded layer: cell, gate, sizes (the trace writer's metadata)."""
        return {f"layers.{k}": self.rnn.layer_meta(k) for k in range(self.rnn.num_layers)}


class SequenceClassifier(_StackModel):
    """A selective-update stack with a linear readout of one label per sequence.

    Args:
        cell: "rnn", "gru" or "lif".
        input_size, hidden_size, num_classes: sizes.
        readout: "last" (state at the last step), "mean" (mean over steps),
            "last_mean" (both, concatenated: the head sees 2 * hidden_size features) or
            "spike_count" (LIF: spikes summed over steps); with ``lengths``, over each
            sequence's own valid steps.
        vocab_size, embed_dim, padding_idx: token inputs (B, T) through an embedding of
            ``embed_dim`` (default ``input_size``) features; None: float features (B, T, F).
        settle_steps: S >= 0 steps of zero input run after each sequence's own last step
            before the readout (default 0). Under a rhythmic gate only the neurons open at
            the last step see the last input, and which ones they are depends on the
            sequence's length; S = the rhythm's period gives every neuron one update after
            it, so that the state the readout sees no longer depends on where in its
            rhythm the sequence ended. The records then have T + S steps.
        **layer_kwargs: passed to the layer (num_layers, gate, backend, beta, ...).

    Example:
        >>> model = SequenceClassifier("gru", 1, 64, 10, gate={"kind": "rhythmic", "init_rate": 0.2})
        >>> logits = model(torch.randn(4, 784, 1))                 # (4, 10)
        >>> logits, records = model(torch.randn(4, 784, 1), record=True)
        >>> tok = SequenceClassifier("gru", 32, 64, 10, vocab_size=16, padding_idx=0)
        >>> logits = tok(torch.randint(1, 16, (2, 50)), lengths=torch.tensor([50, 31]))
    """

    def __init__(
        self,
        cell: str,
        input_size: int,
        hidden_size: int,
        num_classes: int,
        readout: str = "last",
        settle_steps: int = 0,
        **layer_kwargs,
    ):
        num_classes = whole("num_classes", num_classes)
        settle_steps = whole("settle_steps", settle_steps, 0)
        if readout not in READOUTS:
            raise ValueError(f"unknown readout {readout!r}; valid readouts: {', '.join(READOUTS)}")
        if readout == "spike_count" and cell != "lif":
            raise ValueError("readout 'spike_count' needs cell='lif'")
        width = 2 * hidden_size if readout == "last_mean" else hidden_size
        super().__init__(cell, input_size, hidden_size, num_classes, head_inputs=width, **layer_kwargs)
        self.readout = readout
        self.settle_steps = settle_steps

    def _extend(self, x, lengths):
        S = self.settle_steps
        if not S:
            return x, lengths
        # checked before the settle steps hide an empty or misshapen input (the layer checks
        # the values of the extended input)
        w = self.rnn.weight_ih_l0
        _check_input(x, self.rnn.input_size, w.dtype, False, w.device)
        B, _, F = x.shape
        return torch.cat([x, x.new_zeros(B, S, F)], dim=1), None if lengths is None else lengths + S

    def forward(self, x: torch.Tensor, state=None, record: bool = False, lengths=None):
        # settle steps need the padding zeroed and the lengths moved; otherwise the stack
        # skips padded steps by itself and the input is passed as it is
        x, lengths = self.stack_inputs(x, lengths) if self.settle_steps else (self._embed(x), lengths)
        out, _, recs = self._stack(x, state, record, lengths)
        B, T = out.shape[:2]
        lens = None if lengths is None else check_lengths(lengths, B, T).to(out.device)
        parts = []  # only what the readout uses: "last" sums nothing, "mean" gathers nothing
        if self.readout in ("last", "last_mean"):
            parts.append(out[:, -1] if lens is None else out[torch.arange(B, device=out.device), lens - 1])
        if self.readout != "last":
            if lens is None:
                summed, count = out.sum(1), T
            else:
                summed = (out * valid_mask(lens, T, out.device).unsqueeze(-1).to(out.dtype)).sum(1)
                count = lens.to(out.dtype).unsqueeze(-1)
            parts.append(summed if self.readout == "spike_count" else summed / count)
        feat = parts[0] if len(parts) == 1 else torch.cat(parts, dim=-1)
        logits = self.head(feat)
        return (logits, recs) if record else logits


class Seq2Seq(_StackModel):
    """A selective-update stack with a per-step linear readout: (B, T, F) -> (B, T, C).

    With ``lengths`` the logits of padded steps are the head's bias (score them with
    ``IGNORE_INDEX`` targets, as :func:`su_neuro.datasets.pad_collate` pads them).

    Example:
        >>> model = Seq2Seq("gru", 10, 128, 10, gate="rhythmic")
        >>> logits = model(torch.randn(2, 120, 10))                # (2, 120, 10)
    """

    def forward(self, x: torch.Tensor, state=None, record: bool = False, lengths=None):
        out, _, recs = self._run(x, state, record, lengths)
        logits = self.head(out)
        return (logits, recs) if record else logits
