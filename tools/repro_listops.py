r"""ListOps (Long Range Arena): a suGRU against a dense GRU of the same size, same epochs.

Both models are trained with :func:`su_neuro.train.train` on the same task, the same data
order (length bucketing), the same optimiser and epochs; they differ only in the gate:
``rhythmic`` (the paper's suGRU, rate ``--rate``, rate regulariser towards it), ``event``
(data-dependent: a neuron opens where its candidate moves by more than its learned threshold;
the same regulariser) or ``dense`` (an ordinary GRU, computed by the same code). Inputs are
token ids through an embedding of ``--embed`` features
(``su_neuro.models.SequenceClassifier(vocab_size=16)``); padded batches run each sequence for
its own length.

Reported per model: test accuracy (and validation accuracy), the update rate, the silent
neurons (never open) and the spread of the per-neuron rates, and the effective / dense
operations from a trace of test samples (``su_neuro.analysis``), the training time.
Reference lines: the majority class of the test split, LRA's Transformer 36.37 %, the
paper's suGRU 44.93 % (both on the full-length task, lengths 500-2000).

Usage::

    python tools/repro_listops.py --quick                     # seconds: tiny short task, 1 epoch
    python tools/repro_listops.py --task listops_short --epochs 5
    python tools/repro_listops.py --task listops --epochs 5   # full length: hours on 2 CPU cores

Writes ``<name>.json`` (settings, per-model results, references) and ``<name>.md`` (a table)
into ``--out``.
"""

from __future__ import annotations

import argparse
import json
import sys
import time
from pathlib import Path

import numpy as np

sys.path.insert(0, str(Path(__file__).resolve().parent))
from _repro_common import apply_mode  # noqa: E402

LRA_TRANSFORMER = 0.3637
PAPER_SUGRU = 0.4493

QUICK = {
    "task": "listops_short", "n_train": 256, "n_valid": 32, "n_test": 64, "epochs": 1, "hidden": 16,
    "embed": 8, "batch": 32, "lr": 3e-3, "rate": 0.25, "bucket_pool": 4, "trace_samples": 32,
}
FULL = {
    "task": "listops", "n_train": None, "n_valid": None, "n_test": None, "epochs": 5, "hidden": 128,
    "embed": 32, "batch": 32, "lr": 2e-3, "rate": 0.1, "bucket_pool": 50, "trace_samples": 256,
}


def _parser() -> argparse.ArgumentParser:
    from su_neuro.train.config import NONFINITE_GRADS

    p = argparse.ArgumentParser(description=__doc__.split("\n\n")[0], formatter_class=argparse.RawTextHelpFormatter)
    p.add_argument("--quick", action="store_true", help="tiny settings for a test run")
    p.add_argument("--task", choices=("listops", "listops_short"))
    p.add_argument("--n-train", dest="n_train", type=int)
    p.add_argument("--n-valid", dest="n_valid", type=int)
    p.add_argument("--n-test", dest="n_test", type=int)
    p.add_argument("--epochs", type=int)
    p.add_argument("--hidden", type=int)
    p.add_argument("--layers", type=int, default=1, help="stacked recurrent layers (default 1)")
    p.add_argument("--embed", type=int)
    p.add_argument("--batch", type=int)
    p.add_argument("--lr", type=float)
    p.add_argument("--rate", type=float,
                   help="gated models: the rate regulariser's target (rhythmic: also the initial rate)")
    p.add_argument("--period", type=float, default=None,
                   help="suGRU: the rhythm's period in steps (default 1 / rate: each neuron opens one "
                        "step per period; a longer period opens it for rate x period consecutive steps)")
    p.add_argument("--harmonics", type=int, default=1,
                   help="suGRU: sinusoids per neuron in the rhythm (default 1; the higher ones start silent "
                        "and training can use them to shape each neuron's rhythm)")
    p.add_argument("--rate-start", dest="rate_start", type=float, default=None,
                   help="gated models: dense-to-sparse; the regulariser's target moves from this rate to --rate "
                        "over --rate-anneal steps (rhythmic gate: it also starts at this rate and --period "
                        "defaults to 1/--rate; event gate: start it open with --threshold 0)")
    p.add_argument("--rate-anneal", dest="rate_anneal", type=int, default=0,
                   help="optimiser steps of the --rate-start path (needed with --rate-start)")
    p.add_argument("--nonfinite-grads", dest="nonfinite_grads", choices=NONFINITE_GRADS, default="raise",
                   help="a step whose gradient holds NaN or inf: raise (default; the run stops, --resume "
                        "continues it) or skip it (may be changed on --resume)")
    p.add_argument("--rate-weight", dest="rate_weight", type=float, default=1.0,
                   help="weight of the rate regulariser towards --rate (default 1)")
    p.add_argument("--threshold", type=float, default=0.1,
                   help="event gate: the initial per-neuron threshold on |candidate - state| (default 0.1)")
    p.add_argument("--surrogate-gain", dest="surrogate_gain", type=float, default=None,
                   help="gated models: a factor < 1 on the gate's surrogate derivative (a dampening factor; "
                        "default 1), against gradients that explode through many steps")
    p.add_argument("--rate-floor", dest="rate_floor", type=float, default=None,
                   help="suGRU: a lower bound on each neuron's own update rate (su_neuro.rate_floor_penalty)")
    p.add_argument("--rate-floor-weight", dest="rate_floor_weight", type=float, default=100.0,
                   help="weight of the --rate-floor term (default 100)")
    p.add_argument("--bucket-pool", dest="bucket_pool", type=int)
    p.add_argument("--trace-samples", dest="trace_samples", type=int)
    p.add_argument("--models", default="gru-rhythmic,gru-dense", help="comma list of <cell>-<gate>")
    p.add_argument("--readout", default="last", choices=("last", "mean", "last_mean"),
                   help="each sequence's last valid state, the mean over its valid steps, or both")
    p.add_argument("--settle", type=int, default=0,
                   help="zero-input steps after each sequence before the readout (SequenceClassifier settle_steps)")
    p.add_argument("--checkpoint-every", dest="checkpoint_every", type=int, default=0,
                   help="save a checkpoint every N optimiser steps, for --resume (default 0: none)")
    p.add_argument("--resume", action="store_true",
                   help="continue each model's run folder from its checkpoint (an interrupted run)")
    p.add_argument("--backend", default="numba")
    p.add_argument("--seed", type=int, default=0)
    p.add_argument("--threads", type=int, default=None, help="torch / numba threads (default: as set)")
    p.add_argument("--out", default="docs/figures")
    p.add_argument("--name", default=None, help="output stem (default: the task name; --quick: listops_quick)")
    p.add_argument("--curves", nargs="+", metavar="LABEL=RUN_DIR",
                   help="only plot the training curves of finished runs (e.g. runs made in separate "
                        "processes) into <out>/<name>_curves.png; trains nothing")
    return p


def majority_baseline(labels) -> tuple[int, float]:
    """(class, accuracy) of always answering the most frequent class of ``labels``."""
    counts = np.bincount(np.asarray(labels, dtype=np.int64), minlength=10)
    return int(counts.argmax()), float(counts.max() / max(counts.sum(), 1))


def neuron_rates(rep) -> dict:
    """How the update rate spreads over the neurons of every layer of a trace report: the
    fraction of silent neurons (never open on a traced valid step: their state stays the
    initial one, so they compute nothing and carry nothing) and the 10 / 50 / 90 % quantiles
    of the per-neuron rates. A learned rhythm under a population-rate regulariser can trade
    silent neurons for busier ones; the mean rate alone does not show it."""
    rates = np.concatenate([np.asarray(lr.activity.neuron_update_rate, np.float64) for lr in rep.layers.values()])
    q10, q50, q90 = np.quantile(rates, [0.1, 0.5, 0.9])
    return {"silent_neurons": float(np.mean(rates == 0)),
            "neuron_rate_q10_q50_q90": [float(q10), float(q50), float(q90)]}


def event_thresholds(model) -> dict:
    """The learned thresholds of a model's event gates (all layers together): their 10 / 50 /
    90 % quantiles and the fraction at or below zero (such a neuron opens wherever its
    candidate moves at all; su_neuro.train keeps thresholds >= 0 since commit 13af88a, older
    runs could go negative). Empty for models without an event gate."""
    from su_neuro import EventGate

    gates = [m for m in model.modules() if isinstance(m, EventGate)]
    if not gates:
        return {}
    theta = np.concatenate([g.threshold.detach().cpu().double().numpy() for g in gates])
    return {"threshold_q10_q50_q90": [float(q) for q in np.quantile(theta, [0.1, 0.5, 0.9])],
            "nonpositive_thresholds": float(np.mean(theta <= 0))}


def _task_options(args) -> dict:
    opts = {}
    for key in ("n_train", "n_valid", "n_test"):
        if getattr(args, key) is not None:
            opts[key] = getattr(args, key)
    return opts


def _run_dir(out: Path, name: str, model: str) -> Path:
    """The run folder of ``model`` ("<cell>-<gate>") under ``out``."""
    return out / f"{name}_runs" / model


def _run_model(args, cell: str, gate: str, out: Path) -> dict:
    from su_neuro.analysis.report import summarize
    from su_neuro.traces import TraceReader
    from su_neuro.train import TrainConfig, evaluate, load_model, load_task, train

    cfg = TrainConfig(
        task=args.task, task_options=_task_options(args), cell=cell, gate=gate, backend=args.backend,
        readout=args.readout, settle_steps=args.settle, hidden_size=args.hidden, num_layers=args.layers,
        embed_dim=args.embed, batch_size=args.batch, epochs=args.epochs,
        lr=args.lr, schedule="cosine", warmup_steps=50 if not args.quick else 0, grad_clip=1.0,
        bucket_pool=args.bucket_pool, seed=args.seed, checkpoint_every=args.checkpoint_every, log_every=50,
        eval_batch_size=64, trace=True, trace_samples=args.trace_samples, nonfinite_grads=args.nonfinite_grads,
    )
    if gate != "dense":  # both gates: the rate regulariser (and its dense-to-sparse path)
        cfg.rate_target = args.rate
        cfg.rate_weight = args.rate_weight
        if args.rate_floor is not None:
            cfg.rate_floor = args.rate_floor
            cfg.rate_floor_weight = args.rate_floor_weight
        if args.rate_start is not None:
            cfg.rate_target_start = args.rate_start
            cfg.rate_anneal_steps = args.rate_anneal
    if gate == "rhythmic":
        cfg.init_rate = args.rate if args.rate_start is None else args.rate_start
        cfg.period = args.period
        cfg.gate_options = {"harmonics": args.harmonics}
        if args.rate_start is not None:
            cfg.period = args.period or 1.0 / args.rate  # the rhythm of the final rate from the start
    elif gate == "event":
        cfg.gate_options = {"init_threshold": args.threshold}
    if gate != "dense" and args.surrogate_gain is not None:
        cfg.gate_options["surrogate_params"] = {"gain": args.surrogate_gain}
    run_dir = _run_dir(out, args.name, f"{cell}-{gate}")
    t0 = time.perf_counter()
    # --resume continues the run folder from its last checkpoint (same settings); the
    # train time reported is then this process's part only
    res = train(cfg, run_dir, resume=args.resume, overwrite=not args.resume, progress=False)
    seconds = time.perf_counter() - t0
    model, _ = load_model(run_dir)
    task = load_task(cfg)
    valid = evaluate(model, task.valid, task.kind, 64, "cpu", pad_id=task.pad_id)
    with TraceReader(run_dir / "trace.h5") as reader:
        rep = summarize(reader.iter_chunks(), reader.layers, reader.num_steps)
    return {
        "model": f"{cell}-{gate}",
        "cell": cell,
        "gate": gate,
        "config": cfg.to_dict(),
        "steps": res["step"],
        "epochs": res["epoch"],
        "test_acc": res["test_acc"],
        "test_loss": res["test_loss"],
        "valid_acc": valid["acc"],
        "train_loss_last": res.get("train_loss"),
        "update_rate": rep.update_rate,
        "effective_macs_per_sample": rep.ops.effective_macs / max(rep.num_samples, 1),
        "dense_macs_per_sample": rep.ops.dense_macs / max(rep.num_samples, 1),
        "ops_ratio": rep.ops.effective_macs / max(rep.ops.dense_macs, 1),
        **neuron_rates(rep),
        **event_thresholds(model),
        "trace_samples": rep.num_samples,
        "train_seconds": round(seconds, 1),
        "resumed": bool(args.resume),
    }


def plot_curves(runs: dict[str, Path], path: Path, majority: float | None = None) -> Path:
    """Training loss and accuracy of each run folder (label -> folder) in one PNG."""
    from su_neuro.analysis.plots import plot_training_curves
    from su_neuro.train.config import LOG_FILE

    return plot_training_curves({k: Path(v) / LOG_FILE for k, v in runs.items()}, path, smooth=20,
                                chance=majority, chance_label="majority class (test)")


def main(argv=None) -> dict:
    args = apply_mode(_parser().parse_args(argv), QUICK, FULL)
    args.name = args.name or ("listops_quick" if args.quick else args.task)
    if (args.rate_start is None) != (args.rate_anneal == 0):
        raise SystemExit("--rate-start and --rate-anneal N > 0 go together")
    out = Path(args.out)
    out.mkdir(parents=True, exist_ok=True)
    if args.curves:
        pairs = [c.split("=", 1) for c in args.curves]
        if any(len(pair) != 2 or not all(pair) for pair in pairs):
            raise SystemExit(f"--curves takes LABEL=RUN_DIR pairs, got {args.curves}")
        path = plot_curves(dict(pairs), out / f"{args.name}_curves.png")
        print(f"curves: {path}")
        return {"curves": str(path)}
    import numba
    import torch

    before = (torch.get_num_threads(), numba.get_num_threads())
    if args.threads:
        torch.set_num_threads(args.threads)
        numba.set_num_threads(min(args.threads, numba.config.NUMBA_NUM_THREADS))
    try:
        return _main(args, out)
    finally:  # the caller's thread counts (a test runs main in its own process)
        torch.set_num_threads(before[0])
        numba.set_num_threads(before[1])


def _main(args, out: Path) -> dict:
    from su_neuro.datasets import get_task

    task = get_task(args.task, **_task_options(args))
    test_labels = [task.test[i][1] for i in range(len(task.test))]
    majority_class, majority_acc = majority_baseline(test_labels)
    lengths = task.train.lengths
    runs = []
    run_dirs = {}
    for spec in args.models.split(","):
        cell, gate = spec.strip().split("-")
        runs.append(_run_model(args, cell, gate, out))
        run_dirs[runs[-1]["model"]] = _run_dir(out, args.name, runs[-1]["model"])
        print(f"{spec}: test acc {runs[-1]['test_acc']:.4f}, rate {runs[-1]['update_rate']:.3f}, "
              f"{runs[-1]['train_seconds']:.0f} s", flush=True)
    result = {
        "task": args.task,
        "task_options": _task_options(args),
        "train_lengths": {"min": int(lengths.min()), "median": float(np.median(lengths)), "max": int(lengths.max())},
        "sizes": {"train": len(task.train), "valid": len(task.valid), "test": len(task.test)},
        "majority": {"class": majority_class, "test_acc": majority_acc},
        "references": {"lra_transformer": LRA_TRANSFORMER, "paper_sugru": PAPER_SUGRU},
        "quick": bool(args.quick),
        "runs": runs,
    }
    result["curves"] = str(plot_curves(run_dirs, out / f"{args.name}_curves.png", majority_acc))
    (out / f"{args.name}.json").write_text(json.dumps(result, indent=2) + "\n")
    rows = [
        "| model | epochs | steps | test acc | valid acc | update rate | silent neurons | effective / dense MACs "
        "| train time |",
        "|---|---|---|---|---|---|---|---|---|",
    ]
    for r in runs:
        rows.append(
            f"| {r['model']} | {r['epochs']} | {r['steps']} | {100 * r['test_acc']:.2f} % | "
            f"{100 * r['valid_acc']:.2f} % | {r['update_rate']:.3f} | {100 * r['silent_neurons']:.1f} % | "
            f"{r['ops_ratio']:.3f} | "
            f"{r['train_seconds'] / 60:.1f} min |"
        )
    rows.append(f"| majority class ({majority_class}) | | | {100 * majority_acc:.2f} % | | | | | |")
    (out / f"{args.name}.md").write_text("\n".join(rows) + "\n")
    print("\n".join(rows))
    return result


if __name__ == "__main__":
    main()
