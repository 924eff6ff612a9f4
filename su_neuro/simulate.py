"""Streaming simulation: run a population over a long or endless input, chunk by chunk.

The state (membrane or hidden state, last spikes, absolute step index) is carried from
one chunk to the next, so the result is the result of one call over the whole input,
while memory stays bounded by the chunk. A callback sees every chunk's output and
per-step records (gates, Δh, spikes): the hook that trace recorders attach to.

Example:
    >>> from su_neuro import SULIF
    >>> from su_neuro.simulate import poisson_chunks, simulate
    >>> layer = SULIF(16, 256, gate={"kind": "rhythmic", "init_rate": 0.1}, recurrent=True)
    >>> source = poisson_chunks(batch=1, steps=100_000, features=16, rate=0.05, chunk=1000)
    >>> result = simulate(layer, source, callback=lambda step: None)
    >>> result.steps, round(result.update_rate, 2)
    (100000, 0.1)
"""

from __future__ import annotations

import time
from collections.abc import Callable, Iterable, Iterator
from dataclasses import dataclass

import torch

from .kernels.contract import StepRecord
from .layers import SULayer, SUState

__all__ = ["Chunk", "SimulationResult", "poisson_chunks", "simulate", "split_chunks", "stream"]


@dataclass
class Chunk:
    """One chunk of a stream, as the callback sees it.

    t0: absolute index of the chunk's first step; output: (B, t, H); records: one
    :class:`StepRecord` per sub-layer (None unless recording); state: after the chunk;
    input: the chunk's input (B, t, F), which trace writers count nonzero entries of.
    """

    t0: int
    output: torch.Tensor
    records: list[StepRecord] | None
    state: SUState
    input: torch.Tensor | None = None


@dataclass
class SimulationResult:
    state: SUState
    steps: int
    batch: int
    neurons: int
    seconds: float
    updates: float  # neuron-steps that updated, summed over the batch (NaN if not recorded)
    first_steps: int = 0  # steps of the first chunk
    first_seconds: float = 0.0  # its time, with the first call's costs (loading kernels, allocating)

    @property
    def neuron_steps_per_second(self) -> float:
        """Over the whole run, the first chunk included."""
        return self.batch * self.steps * self.neurons / max(self.seconds, 1e-12)

    @property
    def steady_neuron_steps_per_second(self) -> float:
        """After the first chunk (NaN for a run of one chunk): the rate a long run keeps up."""
        rest = self.steps - self.first_steps
        if rest <= 0:
            return float("nan")
        return self.batch * rest * self.neurons / max(self.seconds - self.first_seconds, 1e-12)

    @property
    def update_rate(self) -> float:
        return self.updates / max(self.batch * self.steps * self.neurons, 1)


def split_chunks(x: torch.Tensor, chunk: int) -> Iterator[torch.Tensor]:
    """Views of ``x`` (B, T, F) along time, ``chunk`` steps each (the last may be shorter)."""
    if chunk < 1:
        raise ValueError(f"chunk must be a positive number of steps, got {chunk}")
    for a in range(0, x.shape[1], chunk):
        yield x[:, a : a + chunk]


def poisson_chunks(
    batch: int,
    steps: int,
    features: int,
    rate: float,
    chunk: int = 1000,
    *,
    seed: int = 0,
    dtype: torch.dtype = torch.float32,
    device=None,
) -> Iterator[torch.Tensor]:
    """A Poisson spike stream (B, steps, F) generated chunk by chunk (bounded memory).

    Each input fires at each step with probability ``rate``. The draws run step by step
    (time-major), so the stream is the same whatever ``chunk`` cuts it into.
    """
    if not 0.0 <= rate <= 1.0:
        raise ValueError(f"rate must lie in [0, 1], got {rate}")
    for name, v in (("batch", batch), ("steps", steps), ("features", features), ("chunk", chunk)):
        if v < 1:
            raise ValueError(f"{name} must be positive, got {v}")
    gen = torch.Generator().manual_seed(seed)
    for a in range(0, steps, chunk):
        n = min(chunk, steps - a)
        draws = torch.rand(n, batch, features, generator=gen).transpose(0, 1)
        yield (draws < rate).to(dtype=dtype, device=device)


def _check_layer(layer) -> None:
    if not isinstance(getattr(layer, "_orig_mod", layer), SULayer):  # torch.compile wraps the layer
        hint = (" (a model: pass its recurrent stack, model.rnn)" if isinstance(getattr(layer, "rnn", None), SULayer)
                else "")
        raise TypeError(f"simulate / stream run a population (SURNN, SUGRU or SULIF), got "
                        f"{type(layer).__name__}{hint}")


def stream(
    layer: SULayer,
    source: Iterable[torch.Tensor] | torch.Tensor,
    state: SUState | None = None,
    *,
    chunk: int = 1000,
    record: bool = False,
    callback: Callable[[Chunk], None] | None = None,
) -> Iterator[Chunk]:
    """Yield one :class:`Chunk` per input chunk, carrying the state along (the layer runs
    without gradients and in eval mode, so no dropout between its layers; the caller's code
    between chunks keeps its own grad mode, and the layer its own mode).

    ``source`` is a (B, T, F) tensor (split into ``chunk`` steps) or any iterable of
    (B, t, F) tensors (a generator for endless input).
    """
    _check_layer(layer)  # here, not at the first chunk: stream is no generator itself
    if isinstance(source, torch.Tensor):
        source = split_chunks(source, chunk)
    return _stream(layer, source, state, record or callback is not None, callback)


def _stream(layer, source, state, record, callback) -> Iterator[Chunk]:
    for x in source:
        t0 = 0 if state is None else state.t
        # no_grad around the call only: a generator suspended inside the block would hand
        # the loop body (and, if abandoned, the rest of the process) a grad-disabled mode
        modes = [(m, m.training) for m in layer.modules()]  # each submodule's own, restored after
        with torch.no_grad():
            layer.eval()
            try:
                if record:
                    out, state, recs = layer(x, state, record=True)
                else:
                    (out, state), recs = layer(x, state), None
            finally:
                for m, training in modes:
                    m.training = training
            item = Chunk(t0, out, recs, state, x)
            if callback is not None:
                callback(item)
        yield item


def simulate(
    layer: SULayer,
    source: Iterable[torch.Tensor] | torch.Tensor,
    state: SUState | None = None,
    *,
    chunk: int = 1000,
    callback: Callable[[Chunk], None] | None = None,
    count_updates: bool = True,
    progress=None,
    flush_denormal: bool = True,
) -> SimulationResult:
    """Run ``layer`` over the whole source; returns the final state and throughput.

    ``progress`` (e.g. a tqdm bar) is advanced by the steps of each chunk.
    ``flush_denormal``: denormal floats flushed to zero during the run (default on; see
    :mod:`su_neuro.denormal`).
    """
    from .denormal import flush_denormal as _ftz

    with _ftz(flush_denormal):  # stream() checks the layer when it is called
        return _simulate(layer, source, state, chunk, callback, count_updates, progress)


def _simulate(layer, source, state, chunk, callback, count_updates, progress) -> SimulationResult:
    steps, batch, updates = 0, 0, 0.0
    first_steps, first_seconds = 0, 0.0
    start = time.perf_counter()
    for item in stream(layer, source, state, chunk=chunk, record=count_updates, callback=callback):
        n = item.output.shape[1]
        if steps == 0:
            first_steps, first_seconds = n, time.perf_counter() - start
        steps += n
        batch = item.output.shape[0]
        state = item.state
        if item.records is not None:
            updates += float(sum(r.gate.sum() for r in item.records))
        if progress is not None:
            progress.update(n)
    if steps == 0:  # with or without a state given
        raise ValueError("the source yielded no chunk: nothing to simulate")
    seconds = time.perf_counter() - start
    neurons = layer.hidden_size * layer.num_layers
    return SimulationResult(state, steps, batch, neurons, seconds, updates if count_updates else float("nan"),
                            first_steps, first_seconds)
