"""What the training loop feeds a model and what it measures on it.

Holds the batch order of an epoch (:func:`epoch_order`, and :func:`bucket_order` for length
bucketing), the collation of items into a (right padded) batch, the loss, sample count and
correct count of a batch, :func:`evaluate` on a split and :func:`export_trace`, which records
the model on test samples into an HDF5 trace.

The order of epoch e is drawn from ``numpy.random.default_rng([sampler_seed, e])`` alone, so a
resumed run rebuilds it exactly. Sequence targets equal to :data:`IGNORE_INDEX` (-100) are not
scored.
"""

from __future__ import annotations

from pathlib import Path

import numpy as np
import torch
from torch import nn
from torch.nn import functional as F

from ..gates import valid_entries
from .config import TrainConfig

IGNORE_INDEX = -100


def epoch_order(sampler_seed: int, epoch: int, n: int) -> np.ndarray:
    """The sample order of ``epoch``: a permutation of ``range(n)`` fixed by the seed."""
    return np.random.default_rng([sampler_seed, epoch]).permutation(n)


def bucket_order(sampler_seed: int, epoch: int, lengths: np.ndarray, batch_size: int, pool: int) -> np.ndarray:
    """The sample order of ``epoch`` with length bucketing: a permutation of ``range(n)``
    whose consecutive ``batch_size`` slices hold sequences of similar length.

    The epoch's random permutation (:func:`epoch_order`) is split into the ``n % batch_size``
    samples that fill no whole batch (the last ones of the permutation: a random choice,
    which the training loop leaves out of this epoch, as it does without bucketing) and the
    rest; the rest is cut into pools of ``pool`` batches, each pool is sorted by length
    (stable) and cut into batches, and the batches of the epoch are shuffled (same
    generator). Padding, and with it the work and the segments of a padded batch, shrinks;
    the samples left out differ from epoch to epoch (were they the tail of a length-sorted
    pool, the longest sequences would never be trained on); the order is a function of
    (seed, epoch), so a resumed run sees the same batches.
    """
    n = len(lengths)
    rng = np.random.default_rng([sampler_seed, epoch])
    perm = rng.permutation(n)
    full = n // batch_size
    span = batch_size * pool
    for start in range(0, full * batch_size, span):
        stop = min(start + span, full * batch_size)
        block = perm[start:stop]
        perm[start:stop] = block[np.argsort(lengths[block], kind="stable")]
    batches = perm[: full * batch_size].reshape(full, batch_size)
    batches = batches[rng.permutation(full)]
    return np.concatenate([batches.reshape(-1), perm[full * batch_size:]])


def _dataset_lengths(dataset) -> np.ndarray:
    lengths = getattr(dataset, "lengths", None)
    if lengths is None:
        lengths = [dataset[i][0].shape[0] for i in range(len(dataset))]
    return np.asarray(lengths, dtype=np.int64)


def _collate(items, pad_id: int = 0):
    """(x, y, lengths): lengths (B,) long when the items differ in length (right padded),
    else None."""
    xs = [it[0] for it in items]
    ys = [it[1] for it in items]
    if len({x.shape[0] for x in xs}) > 1:
        from ..datasets import pad_collate

        return pad_collate(items, pad_id=pad_id)
    x = torch.stack(xs)
    if isinstance(ys[0], torch.Tensor):
        y = torch.stack(ys)
    else:
        y = torch.tensor(ys)
    return x, y, None


def _valid_count(record) -> float:
    """Neuron-steps of a record that belong to a sequence (padded steps excluded)."""
    return valid_entries(record.gate, getattr(record, "lengths", None))


def _batch_stats(out: torch.Tensor, y: torch.Tensor, kind: str):
    """(loss sum, count, correct) of a batch; count is what the loss is averaged over."""
    if kind == "regress":
        y = y.to(out.dtype).reshape(out.shape)
        loss = F.mse_loss(out, y, reduction="sum")
        return loss, float(y.numel()), float("nan")
    if kind == "seq2seq":
        logits = out.reshape(-1, out.shape[-1])
        target = y.reshape(-1).long()
    else:
        logits, target = out, y.reshape(-1).long()
    loss = F.cross_entropy(logits, target, ignore_index=IGNORE_INDEX, reduction="sum")
    mask = target != IGNORE_INDEX
    correct = (logits.detach().argmax(-1)[mask] == target[mask]).sum().item()
    return loss, float(mask.sum().item()), float(correct)


def _gate_tensors(records) -> list[torch.Tensor]:
    return [r.gate for r in records.values()]


@torch.no_grad()
def evaluate(model: nn.Module, dataset, kind: str, batch_size: int, device, *, pad_id: int = 0) -> dict:
    """Loss, accuracy (classify / seq2seq) and update rate (over the valid steps) of
    ``model`` on ``dataset``; variable-length items are right padded with ``pad_id``."""
    was_training = model.training
    model.eval()
    loss_sum = count = correct = gates = gate_n = 0.0
    try:
        for start in range(0, len(dataset), batch_size):
            items = [dataset[i] for i in range(start, min(len(dataset), start + batch_size))]
            x, y, lengths = _collate(items, pad_id)
            x, y = x.to(device), y.to(device)
            out, records = model(x, record=True, lengths=lengths)
            loss, n, c = _batch_stats(out, y, kind)
            loss_sum += float(loss)
            count += n
            correct += c
            for r in records.values():
                gates += float(r.gate.sum())
                gate_n += _valid_count(r)
    finally:
        model.train(was_training)
    result = {"loss": loss_sum / max(count, 1.0), "rate": gates / max(gate_n, 1.0)}
    result["acc"] = None if kind == "regress" else correct / max(count, 1.0)
    return result


TRACE_STREAM = 0x7ACE
"""Second seed word of the generator that draws a trace's test samples (apart from the run's
other streams)."""


def export_trace(model: nn.Module, task, cfg: TrainConfig, path: Path, device=None, samples: int | None = None) -> Path:
    """Record the model on ``trace_samples`` test samples into an HDF5 trace.

    The samples are drawn from the whole test split by the run's seed, without replacement,
    and written in index order (the first ones of a split sorted by class would be one class);
    their indices are the trace's ``run_meta["test_indices"]``. Uses
    :class:`su_neuro.traces.TraceWriter`; raises RuntimeError naming the problem when the trace
    writer cannot be imported (h5py missing).
    """
    try:
        from ..traces import TraceWriter
    except ImportError as err:
        raise RuntimeError(f"trace export needs su_neuro.traces, which cannot be imported: {err}") from None
    device = device or next(model.parameters()).device
    n = min(samples or cfg.trace_samples, len(task.test))
    if n == 0:
        raise RuntimeError("trace export: the test split is empty")
    if n < len(task.test):
        chosen = np.sort(np.random.default_rng([cfg.seed, TRACE_STREAM]).choice(len(task.test), n, replace=False))
    else:
        chosen = np.arange(n)
    meta = {"task": cfg.task, "seed": cfg.seed, "backend": cfg.backend, "test_indices": chosen.tolist()}
    model_was_training = model.training
    model.eval()
    pad_id = getattr(task, "pad_id", 0)
    items = [task.test[int(i)] for i in chosen]
    longest = max(it[0].shape[0] for it in items)
    ragged = any(it[0].shape[0] != longest for it in items)
    try:
        # renamed onto path when whole: an earlier trace there is never replaced by a partial one
        with torch.no_grad(), TraceWriter(
            path, layers=model.layer_meta(), config=cfg.to_dict(), run_meta=meta, rename_at="close"
        ) as writer:
            for start in range(0, n, cfg.eval_batch_size):
                batch = items[start:start + cfg.eval_batch_size]
                if ragged:
                    # every batch padded to the longest exported sample: one T for the trace
                    from ..datasets import pad_collate

                    x, y, lengths = pad_collate(batch + [_pad_item(items, longest)], pad_id=pad_id)
                    x, y, lengths = x[:-1], y[:-1], lengths[:-1]
                else:
                    x, y, lengths = _collate(batch, pad_id)
                x = x.to(device)
                _, records = model(x, record=True, lengths=lengths)
                # the inputs the stack sees: the embedding of token models, zero on padded
                # steps, settle steps appended (their lengths are then those of the records)
                inputs, lengths = model.stack_inputs(x, lengths)
                writer.append(
                    records, labels=y.cpu(), inputs=inputs.cpu(), lengths=None if lengths is None else lengths.cpu()
                )
    finally:
        model.train(model_was_training)
    return path


def _pad_item(items, longest: int):
    """A throw-away item of ``longest`` steps that makes pad_collate pad to that length."""
    x, y = next(it for it in items if it[0].shape[0] == longest)
    return x, y
