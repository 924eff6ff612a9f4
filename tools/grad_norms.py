"""Gradient norms of a saved run at its checkpoint, for several surrogate gains.

    python tools/grad_norms.py runs/listops/ev_runs/gru-event --gains 1,0.3 --batches 32
    python tools/grad_norms.py RUN --gains 1,0.5,0.3 --json norms.json

Loads a run's checkpoint (a run folder or ``checkpoint.pt``): the model, its config and its
place in the data. Takes the next ``--batches`` training batches the run would have seen
(its own sample order, length buckets included) and, for each gain, sets that gain on every
gate's surrogate and every LIF spike's, forms the run's objective at each batch's step (the
task loss and the rate terms towards that step's target: ``su_neuro.train.step_loss``), and
measures the norm of its gradient before clipping. Printed per gain: the median, the 90th
percentile and the largest norm, and how many batches gave a NaN or inf gradient (or a norm
beyond float32, which the training loop treats alike). Every gain sees the same batches and
the same parameters, so the rows differ only by the gain. It runs on the run's device, with
its flush-to-zero setting. Nothing is written to the run folder.

A run of several processes is measured as one process over the global batch: the same
batches, but its rate terms average the gates over the whole batch, where each process
averaged its own share (equal unless the lengths vary).

Use it to decide whether a run needs a damped surrogate (docs/core.md, "Surrogate gain"):
a gain of 1 whose largest norms are orders of magnitude above its median is a gradient that
explodes on some sequences.
"""

from __future__ import annotations

import argparse
import json
import math
import sys
from pathlib import Path

import numpy as np
import torch


def parse_args(argv=None):
    p = argparse.ArgumentParser(description=__doc__.split("\n\n")[0],
                                formatter_class=argparse.RawDescriptionHelpFormatter, epilog=__doc__)
    p.add_argument("run", help="a run folder (holding checkpoint.pt) or a checkpoint file")
    p.add_argument("--gains", default="1,0.3", help="comma list of surrogate gains (default 1,0.3)")
    p.add_argument("--batches", type=int, default=32, help="training batches to measure (default 32)")
    p.add_argument("--threads", type=int, default=None, help="torch / numba threads (default: as set)")
    p.add_argument("--json", default=None, help="also write the table (and each batch's norm) here")
    return p.parse_args(argv)


def gains_of(text: str) -> list[float]:
    try:
        gains = [float(g) for g in text.split(",") if g.strip()]
    except ValueError:
        raise SystemExit(f"--gains takes a comma list of numbers, got {text!r}") from None
    if not gains or not all(math.isfinite(g) and g > 0 for g in gains):
        raise SystemExit(f"--gains must be positive numbers, got {text!r}")
    return gains


def set_gain(model: torch.nn.Module, gain: float) -> int:
    """Sets ``gain`` on every surrogate of ``model`` (gates and LIF spikes); returns how many."""
    from su_neuro.surrogate import get_surrogate

    count = 0
    for module in model.modules():
        for attr in ("surrogate", "spike_grad"):
            sur = getattr(module, attr, None)
            if sur is not None and hasattr(sur, "gain"):
                params = {k: v for k, v in sur.params.items() if k != "gain"}
                setattr(module, attr, get_surrogate(sur.name, **params, gain=gain))
                count += 1
    return count


def next_batches(cfg, task, data: dict, n: int) -> list[np.ndarray]:
    """The index sets of the ``n`` training batches after the checkpoint (one process)."""
    from su_neuro.train import bucket_order, epoch_order
    from su_neuro.train.data import _dataset_lengths

    n_train = len(task.train)
    steps_per_epoch = n_train // cfg.batch_size
    if steps_per_epoch == 0:
        raise SystemExit(f"the training split has {n_train} samples, fewer than one batch of {cfg.batch_size}")
    lengths = _dataset_lengths(task.train) if cfg.bucket_pool else None
    epoch, position, seed = data["epoch"], data["position"], data["sampler_seed"]
    out = []
    while len(out) < n:
        if lengths is not None:
            order = bucket_order(seed, epoch, lengths, cfg.batch_size, cfg.bucket_pool)
        else:
            order = epoch_order(seed, epoch, n_train)
        while position < steps_per_epoch and len(out) < n:
            out.append(order[position * cfg.batch_size:(position + 1) * cfg.batch_size])
            position += 1
        epoch, position = epoch + 1, 0
    return out


def measure(run: str, gains: list[float], batches: int) -> dict:
    from su_neuro.denormal import flush_denormal
    from su_neuro.train import DistInfo, load_checkpoint, load_model, load_task, rate_target_at, step_loss
    from su_neuro.train.data import _collate
    from su_neuro.train.dist import _pick_device
    from su_neuro.train.loop import _grad_norm  # the loop's own norm: float64 sum, None if NaN / inf

    path = Path(run)
    ckpt_path = path / "checkpoint.pt" if path.is_dir() else path
    ckpt = load_checkpoint(ckpt_path)
    model, cfg = load_model(ckpt_path)
    task = load_task(cfg)
    data = ckpt["data"]
    device = _pick_device(cfg, DistInfo())
    model.to(device)
    pad_id = getattr(task, "pad_id", 0)
    sets = next_batches(cfg, task, data, batches)
    if set_gain(model, 1.0) == 0 and gains != [1.0]:
        raise SystemExit(f"{ckpt_path}: the model has no surrogate (a dense gate without spikes); "
                         "a gain changes nothing")
    model.train()
    rows = []
    for gain in gains:
        set_gain(model, gain)
        norms = []
        for k, idx in enumerate(sets):
            x, y, lengths = _collate([task.train[int(i)] for i in idx], pad_id)
            x, y = x.to(device), y.to(device)
            model.zero_grad(set_to_none=True)
            with flush_denormal(cfg.flush_denormal):
                loss, _ = step_loss(model, cfg, task.kind, x, y, lengths, rate_target_at(cfg, data["step"] + k))
                loss.backward()
            norm = _grad_norm([p for p in model.parameters() if p.grad is not None])
            norms.append(math.nan if norm is None else float(norm))
        finite = np.array([v for v in norms if math.isfinite(v)])
        q = np.quantile(finite, [0.5, 0.9]) if finite.size else [math.nan, math.nan]
        rows.append({"gain": gain, "median": float(q[0]), "p90": float(q[1]),
                     "max": float(finite.max()) if finite.size else math.nan,
                     "nonfinite": len(norms) - int(finite.size), "norms": norms})
    return {"checkpoint": str(ckpt_path), "step": data["step"], "device": str(device), "batches": batches,
            "rows": rows}


def main(argv=None) -> dict:
    args = parse_args(argv)
    gains = gains_of(args.gains)
    if args.batches < 1:
        raise SystemExit(f"--batches must be at least 1, got {args.batches}")
    if args.threads:
        torch.set_num_threads(args.threads)
        import numba

        numba.set_num_threads(min(args.threads, numba.config.NUMBA_NUM_THREADS))
    res = measure(args.run, gains, args.batches)
    print(f"{res['checkpoint']}: step {res['step']}, {args.batches} training batches, "
          f"gradient norm before clipping")
    print("| gain | median | 90th pct | max | NaN / inf |")
    print("|---|---|---|---|---|")
    for r in res["rows"]:
        print(f"| {r['gain']:g} | {r['median']:.3g} | {r['p90']:.3g} | {r['max']:.3g} | {r['nonfinite']} |")
    if args.json:  # strict JSON: NaN and inf as strings
        clean = lambda v: v if not isinstance(v, float) or math.isfinite(v) else str(v)  # noqa: E731
        rows = [{k: ([clean(n) for n in v] if k == "norms" else clean(v)) for k, v in r.items()} for r in res["rows"]]
        Path(args.json).write_text(json.dumps({**res, "rows": rows}, indent=2, allow_nan=False))
    return res


if __name__ == "__main__":
    try:
        main()
    except Exception as err:  # noqa: BLE001 (one clear line for a bad checkpoint or folder)
        from su_neuro.train import CheckpointError

        if isinstance(err, CheckpointError | FileNotFoundError | RuntimeError):
            sys.exit(f"grad_norms: {err}")
        raise
