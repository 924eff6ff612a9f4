r"""Copying memory, gate vs no gate (paper Fig. 2b), at CPU scale.

Trains four models — SURNN and SUGRU, each with the rhythmic gate and with the dense
(always open) gate — on the copying-memory task for several seeds, and plots the loss
curves (mean ± std over seeds) beside the memoryless baseline.

Task (``su_neuro.datasets.get_task("copy", blank_targets=True)``): 10 symbols from 8,
``delay`` blanks, a delimiter, 10 blanks; every step is scored (blank where nothing is
to be recalled), so ``T = delay + 21`` steps are scored. A model that outputs blanks
correctly and guesses the 10 recalled symbols uniformly has the memoryless loss

.. math:: L_0 = \frac{10 \log 8}{T},

the plateau that a network without memory reaches. Every training batch is fresh (never
seen before), so the training loss is also a held-out loss; the final numbers are on the
task's separate test split.

Usage::

    python tools/repro_copy.py --quick                  # about a minute
    python tools/repro_copy.py                          # full mode (delay 1000, see --help)
    python tools/repro_copy.py --delay 1000 --steps 400 --seeds 0 1 2

Writes ``copy.json`` (every curve and final number) and ``copy_loss.png`` into ``--out``.
"""

from __future__ import annotations

import argparse
import json
import math
import sys
import time
from pathlib import Path

import torch
from torch.nn import functional as F

import su_neuro
from su_neuro import backends
from su_neuro.datasets import get_task

N_SYMBOLS = 8
N_MEMORIZE = 10

QUICK = {"delay": 50, "steps": 60, "seeds": [0, 1], "batch": 16, "hidden": 32}
FULL = {"delay": 1000, "steps": 150, "seeds": [0, 1, 2], "batch": 32, "hidden": 64}


def baseline_loss(delay: int) -> float:
    """Memoryless cross-entropy per scored step: 10·log(8) / (delay + 21)."""
    seq_len = 2 * N_MEMORIZE + delay + 1
    return N_MEMORIZE * math.log(N_SYMBOLS) / seq_len


def gate_spec(kind: str, rate: float, period: float | None) -> str | dict:
    if kind == "dense":
        return "dense"
    spec = {"kind": "rhythmic", "init_rate": rate}
    if period is not None:
        spec["period"] = period
    return spec


def resolve_backend(name: str, cell: str, gate: str, batch: int, hidden: int) -> str:
    """The backend a layer built with ``backend=name`` runs on this machine (raises if unavailable)."""
    backends.check_backend(name)
    kind = "dense" if gate == "dense" else "rhythmic"
    return backends.resolve(name, torch.device("cpu"), cell, kind, torch.float32, batch=batch, hidden=hidden)


def batch_of(split, idx: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
    """One-hot inputs (B, T, 10) and targets (B, T) of the given rows of a copy split."""
    x = F.one_hot(split.tokens[idx], split.vocab).to(torch.float32)
    return x, split.targets[idx]


def losses(logits: torch.Tensor, y: torch.Tensor) -> tuple[torch.Tensor, float, float]:
    """(loss over all steps, loss over the 10 recall steps, recall accuracy)."""
    C = logits.shape[-1]
    loss = F.cross_entropy(logits.reshape(-1, C), y.reshape(-1))
    rl, ry = logits[:, -N_MEMORIZE:], y[:, -N_MEMORIZE:]
    recall = F.cross_entropy(rl.reshape(-1, C), ry.reshape(-1)).item()
    acc = (rl.argmax(-1) == ry).float().mean().item()
    return loss, recall, acc


def train_one(cell: str, gate: str, seed: int, task, args) -> dict:
    torch.manual_seed(seed)
    spec = gate_spec(gate, args.rate, args.period)
    model = su_neuro.Seq2Seq(cell, task.input_size, args.hidden, task.output_size, gate=spec, backend=args.backend)
    opt = torch.optim.Adam(model.parameters(), lr=args.lr)
    gates = [g for g in model.rnn.gates if g.kind == "rhythmic"]
    T = task.seq_len
    curve, recall_curve = [], []
    gen = torch.Generator().manual_seed(seed)
    order = torch.randperm(len(task.train), generator=gen)
    t0 = time.perf_counter()
    for step in range(args.steps):
        idx = order[(step * args.batch) % len(order):][: args.batch]
        x, y = batch_of(task.train, idx)
        logits = model(x)
        loss, recall, _ = losses(logits, y)
        total = loss
        if gates and args.rate_weight > 0:
            total = total + args.rate_weight * su_neuro.rate_penalty([g.plan(0, T).values for g in gates], args.rate)
        opt.zero_grad()
        total.backward()
        torch.nn.utils.clip_grad_norm_(model.parameters(), 1.0)
        opt.step()
        curve.append(loss.item())
        recall_curve.append(recall)
    train_s = time.perf_counter() - t0
    model.eval()
    with torch.no_grad():
        x, y = batch_of(task.test, torch.arange(min(len(task.test), 256)))
        logits, records = model(x, record=True)
        test_loss, test_recall, test_acc = losses(logits, y)
    return {
        "cell": cell,
        "gate": gate,
        "seed": seed,
        "loss": curve,
        "recall_loss": recall_curve,
        "test_loss": test_loss.item(),
        "test_recall_loss": test_recall,
        "test_recall_accuracy": test_acc,
        "update_rate": su_neuro.update_rate(records),
        "train_seconds": train_s,
    }


def summarize(runs: list[dict], baseline: float) -> dict:
    """Per model: final loss (mean of the last 10% of steps) mean ± std over seeds."""
    out = {}
    for key in sorted({(r["cell"], r["gate"]) for r in runs}):
        rs = [r for r in runs if (r["cell"], r["gate"]) == key]
        curves = torch.tensor([r["loss"] for r in rs])
        tail = max(1, curves.shape[1] // 10)
        final = curves[:, -tail:].mean(1)
        test = torch.tensor([r["test_loss"] for r in rs])
        out[f"{key[0]}-{key[1]}"] = {
            "final_loss_mean": final.mean().item(),
            "final_loss_std": final.std(unbiased=False).item(),
            "test_loss_mean": test.mean().item(),
            "test_loss_std": test.std(unbiased=False).item(),
            "test_loss_over_baseline": test.mean().item() / baseline,
            "test_recall_accuracy_mean": sum(r["test_recall_accuracy"] for r in rs) / len(rs),
            "update_rate_mean": sum(r["update_rate"] for r in rs) / len(rs),
            "train_seconds_mean": sum(r["train_seconds"] for r in rs) / len(rs),
            "below_baseline_fraction_of_seeds": float((test < baseline).float().mean()),
        }
    return out


def plot(result: dict, path: Path) -> None:
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    fig, axes = plt.subplots(1, 2, figsize=(11, 4), sharey=True)
    colors = {"rhythmic": "tab:blue", "dense": "tab:red"}
    for ax, cell in zip(axes, ("rnn", "gru"), strict=True):
        for gate in ("rhythmic", "dense"):
            rs = [r for r in result["runs"] if r["cell"] == cell and r["gate"] == gate]
            if not rs:
                continue
            c = torch.tensor([r["loss"] for r in rs])
            m, s = c.mean(0), c.std(0, unbiased=False)
            steps = torch.arange(1, c.shape[1] + 1)
            label = f"su{cell.upper()} rhythmic" if gate == "rhythmic" else f"{cell.upper()} dense"
            ax.plot(steps, m, color=colors[gate], label=label)
            ax.fill_between(steps, m - s, m + s, color=colors[gate], alpha=0.25)
        ax.axhline(result["baseline_loss"], color="k", ls="--", lw=1, label="memoryless baseline")
        ax.set_yscale("log")
        ax.set_xlabel("training step")
        ax.set_title(f"{cell.upper()}, delay {result['config']['delay']} (T = {result['seq_len']})")
        ax.legend(fontsize=8)
    axes[0].set_ylabel(f"cross-entropy per step (mean ± std, {len(result['config']['seeds'])} seeds)")
    fig.tight_layout()
    fig.savefig(path, dpi=110)
    plt.close(fig)


def parse_args(argv):
    p = argparse.ArgumentParser(description=__doc__.split("\n\n")[0], formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--quick", action="store_true", help=f"small run for tests: {QUICK}")
    p.add_argument("--delay", type=int, help=f"blanks between the symbols and the delimiter (full: {FULL['delay']})")
    p.add_argument("--steps", type=int, help=f"training steps per run (full: {FULL['steps']})")
    p.add_argument("--seeds", type=int, nargs="+", help=f"seeds (full: {FULL['seeds']})")
    p.add_argument("--batch", type=int, help=f"batch size (full: {FULL['batch']})")
    p.add_argument("--hidden", type=int, help=f"hidden size (full: {FULL['hidden']})")
    p.add_argument("--cells", nargs="+", default=["rnn", "gru"], choices=["rnn", "gru"])
    p.add_argument("--gates", nargs="+", default=["rhythmic", "dense"], choices=["rhythmic", "dense"])
    p.add_argument("--rate", type=float, default=0.1, help="rhythmic gate's initial (and target) update rate")
    p.add_argument("--period", type=float, default=None, help="rhythmic gate's base period in steps (default 1/rate)")
    p.add_argument("--rate-weight", type=float, default=1.0, help="weight of the rate regulariser")
    p.add_argument("--lr", type=float, default=3e-3)
    p.add_argument("--backend", default="auto", help="auto | torch | numba | triton")
    p.add_argument("--threads", type=int, default=0, help="torch.set_num_threads (0: leave as is)")
    p.add_argument("--out", default="docs/figures", help="folder for copy.json and copy_loss.png")
    args = p.parse_args(argv)
    base = QUICK if args.quick else FULL
    for k, v in base.items():
        if getattr(args, k) is None:
            setattr(args, k, v)
    return args


def main(argv=None) -> dict:
    args = parse_args(argv)
    if args.threads:
        torch.set_num_threads(args.threads)
    try:
        used = {
            f"{c}-{g}": resolve_backend(args.backend, c, g, args.batch, args.hidden)
            for c in args.cells
            for g in args.gates
        }
    except (su_neuro.BackendUnavailableError, ValueError) as err:
        raise SystemExit(f"repro_copy: backend {args.backend!r} cannot run here: {err}") from None
    task = get_task(
        "copy", delay=args.delay, n_symbols=N_SYMBOLS, n_memorize=N_MEMORIZE,
        n_train=args.batch * args.steps, n_test=256, blank_targets=True, seed=1234,
    )
    runs = []
    for cell in args.cells:
        for gate in args.gates:
            for seed in args.seeds:
                r = train_one(cell, gate, seed, task, args)
                print(
                    f"{cell}-{gate} seed {seed}: test loss {r['test_loss']:.4f} "
                    f"(baseline {baseline_loss(args.delay):.4f}), recall acc {r['test_recall_accuracy']:.3f}, "
                    f"rate {r['update_rate']:.3f}, {r['train_seconds']:.0f}s",
                    flush=True,
                )
                runs.append(r)
    result = {
        "experiment": "copy",
        "config": {k: v for k, v in vars(args).items() if k != "out"},
        "seq_len": task.seq_len,
        "baseline_loss": baseline_loss(args.delay),
        "backend_requested": args.backend,
        "backend_used": used,
        "torch_threads": torch.get_num_threads(),
        "summary": summarize(runs, baseline_loss(args.delay)),
        "runs": runs,
    }
    out = Path(args.out)
    out.mkdir(parents=True, exist_ok=True)
    (out / "copy.json").write_text(json.dumps(result, indent=1))
    plot(result, out / "copy_loss.png")
    result["files"] = [str(out / "copy.json"), str(out / "copy_loss.png")]
    for name, s in result["summary"].items():
        print(f"{name:14s} test loss {s['test_loss_mean']:.4f} ± {s['test_loss_std']:.4f} "
              f"({s['test_loss_over_baseline']:.2f}x baseline), rate {s['update_rate_mean']:.2f}")
    return result


if __name__ == "__main__":
    main(sys.argv[1:])
