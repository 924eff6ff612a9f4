r"""Copying memory, gate vs no gate (paper Fig. 2b), at CPU scale.

Trains four models — SURNN and SUGRU, each with the rhythmic gate and with the dense
(always open) gate — on the copying-memory task for several seeds, and plots the loss
curves (mean ± std over seeds) beside the memoryless baseline.

Task (``su_neuro.datasets.get_task("copy")``): ``n_memorize`` symbols from 8, ``delay``
blanks, a delimiter, ``n_memorize`` blanks; ``T = delay + 2 n_memorize + 1`` steps. The loss
is the cross-entropy of the recall steps (the task's default scoring; the other steps are
``IGNORE_INDEX``). A model without memory can at best guess the recalled symbols uniformly:
the memoryless loss is ``log 8 = 2.079`` per recall step. In the classic fully scored
variant (blank targets everywhere else, averaged over all T steps) the same model sits at
``L_0 = n_memorize log 8 / T``; ``classic_equivalent`` in the JSON rescales every loss that
way (assuming perfect blanks), so the two conventions can be compared. Every training batch
is fresh (never seen before), so the training loss is a held-out loss too; the final
numbers are on the task's separate test split.

Gate: ``RhythmicGate(init_rate=--rate, period=--period)`` and the rate regulariser towards
``--rate``. The default period is the sequence length T: each neuron opens once per
sequence, for rate·T consecutive steps, at its own phase, so the neurons that are open
while the symbols arrive are closed (holding state and gradient) through most of the delay.

Usage::

    python tools/repro_copy.py --quick       # about a minute: delay 30, 10 symbols, 2 seeds, 50 steps
    python tools/repro_copy.py               # full mode: delay 1000 (T = 1007), 3 symbols, rate 0.1,
                                             # 4 models x 3 seeds, 1000 steps (~25 min on 2 cores)
    python tools/repro_copy.py --delay 200 --n-memorize 10 --rate 0.05 --steps 150 --name copy_delay200_10sym

Writes ``copy.json`` (every curve and final number) and ``copy_loss.png`` into ``--out``
(``--name`` changes the stem).
"""

from __future__ import annotations

import argparse
import json
import math
import sys
import time
from pathlib import Path

import torch

sys.path.insert(0, str(Path(__file__).resolve().parent))
from _repro_common import apply_mode, save_figure  # noqa: E402
from torch.nn import functional as F

import su_neuro
from su_neuro import backends
from su_neuro.datasets import get_task

N_SYMBOLS = 8

QUICK = {"delay": 30, "n_memorize": 10, "rate": 0.05, "steps": 50, "seeds": [0, 1], "batch": 16, "hidden": 32}
FULL = {"delay": 1000, "n_memorize": 3, "rate": 0.1, "steps": 1000, "seeds": [0, 1, 2], "batch": 32, "hidden": 64}


def baseline_loss() -> float:
    """Memoryless cross-entropy per recall step: log(8)."""
    return math.log(N_SYMBOLS)


def classic_equivalent(recall_loss: float, delay: int, n_memorize: int) -> float:
    """A recall-step loss in the fully scored convention (perfect blanks): loss·n/T."""
    return recall_loss * n_memorize / (2 * n_memorize + delay + 1)


def gate_spec(kind: str, rate: float, period: float) -> str | dict:
    if kind == "dense":
        return "dense"
    return {"kind": "rhythmic", "init_rate": rate, "period": period}


def resolve_backend(name: str, cell: str, gate: str, batch: int, hidden: int) -> str:
    """The backend a layer built with ``backend=name`` runs on this machine (raises if unavailable)."""
    backends.check_backend(name)
    kind = "dense" if gate == "dense" else "rhythmic"
    return backends.resolve(name, torch.device("cpu"), cell, kind, torch.float32, batch=batch, hidden=hidden).name


def batch_of(split, idx: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
    """One-hot inputs (B, T, 10) and targets (B, T) of the given rows of a copy split."""
    x = F.one_hot(split.tokens[idx], split.vocab).to(torch.float32)
    return x, split.targets[idx]


def losses(logits: torch.Tensor, y: torch.Tensor, n_memorize: int) -> tuple[torch.Tensor, float]:
    """(cross-entropy of the ``n_memorize`` recall steps, recall accuracy)."""
    rl, ry = logits[:, -n_memorize:], y[:, -n_memorize:]
    loss = F.cross_entropy(rl.reshape(-1, rl.shape[-1]), ry.reshape(-1))
    acc = (rl.argmax(-1) == ry).float().mean().item()
    return loss, acc


def train_one(cell: str, gate: str, seed: int, task, args) -> dict:
    torch.manual_seed(seed)
    spec = gate_spec(gate, args.rate, args.period or task.seq_len)
    model = su_neuro.Seq2Seq(cell, task.input_size, args.hidden, task.output_size, gate=spec, backend=args.backend)
    opt = torch.optim.Adam(model.parameters(), lr=args.lr)
    gates = [g for g in model.rnn.gates if g.kind == "rhythmic"]
    T = task.seq_len
    curve = []
    gen = torch.Generator().manual_seed(seed)
    order = torch.randperm(len(task.train), generator=gen)
    t0 = time.perf_counter()
    for step in range(args.steps):
        idx = order[(step * args.batch) % len(order):][: args.batch]
        x, y = batch_of(task.train, idx)
        logits = model(x)
        loss, _ = losses(logits, y, args.n_memorize)
        total = loss
        if gates and args.rate_weight > 0:
            total = total + args.rate_weight * su_neuro.rate_penalty([g.plan(0, T).values for g in gates], args.rate)
        opt.zero_grad()
        total.backward()
        torch.nn.utils.clip_grad_norm_(model.parameters(), 1.0)
        opt.step()
        curve.append(loss.item())
    train_s = time.perf_counter() - t0
    model.eval()
    with torch.no_grad():
        x, y = batch_of(task.test, torch.arange(min(len(task.test), 256)))
        logits, records = model(x, record=True)
        test_loss, test_acc = losses(logits, y, args.n_memorize)
    return {
        "cell": cell,
        "gate": gate,
        "seed": seed,
        "loss": curve,
        "test_loss": test_loss.item(),
        "test_recall_accuracy": test_acc,
        "update_rate": su_neuro.update_rate(records),
        "train_seconds": train_s,
    }


def summarize(runs: list[dict], baseline: float, delay: int, n_memorize: int) -> dict:
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
            "test_loss_classic_equivalent": classic_equivalent(test.mean().item(), delay, n_memorize),
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

    cells = result["config"]["cells"]
    fig, axes = plt.subplots(1, len(cells), figsize=(5.5 * len(cells), 4), sharey=True, squeeze=False)
    axes = axes[0]
    colors = {"rhythmic": "tab:blue", "dense": "tab:red"}
    for ax, cell in zip(axes, cells, strict=True):
        for gate in ("rhythmic", "dense"):
            rs = [r for r in result["runs"] if r["cell"] == cell and r["gate"] == gate]
            if not rs:
                continue
            c = torch.tensor([r["loss"] for r in rs])
            m, s = c.mean(0).numpy(), c.std(0, unbiased=False).numpy()
            steps = torch.arange(1, c.shape[1] + 1).numpy()
            label = f"su{cell.upper()} rhythmic" if gate == "rhythmic" else f"{cell.upper()} dense"
            ax.plot(steps, m, color=colors[gate], label=label)
            ax.fill_between(steps, m - s, m + s, color=colors[gate], alpha=0.25)
        ax.axhline(result["baseline_loss"], color="k", ls="--", lw=1, label="memoryless baseline log 8")
        ax.set_ylim(0.0, 1.4 * result["baseline_loss"])  # early loss spikes of dense RNNs are clipped
        ax.set_xlabel("training step")
        ax.set_title(f"{cell.upper()}, delay {result['config']['delay']} (T = {result['seq_len']})")
        ax.legend(fontsize=8)
    axes[0].set_ylabel(f"recall-step cross-entropy (mean ± std, {len(result['config']['seeds'])} seeds)")
    save_figure(fig, path)


def parse_args(argv):
    p = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    p.add_argument("--quick", action="store_true", help=f"small run for tests: {QUICK}")
    p.add_argument("--delay", type=int, help=f"blanks between the symbols and the delimiter (full: {FULL['delay']})")
    p.add_argument("--steps", type=int, help=f"training steps per run (full: {FULL['steps']})")
    p.add_argument("--seeds", type=int, nargs="+", help=f"seeds (full: {FULL['seeds']})")
    p.add_argument("--batch", type=int, help=f"batch size (full: {FULL['batch']})")
    p.add_argument("--hidden", type=int, help=f"hidden size (full: {FULL['hidden']})")
    p.add_argument("--cells", nargs="+", default=["rnn", "gru"], choices=["rnn", "gru"])
    p.add_argument("--gates", nargs="+", default=["rhythmic", "dense"], choices=["rhythmic", "dense"])
    p.add_argument("--n-memorize", type=int, help=f"symbols to remember (full: {FULL['n_memorize']})")
    p.add_argument("--rate", type=float, help=f"rhythmic gate's initial and target update rate (full: {FULL['rate']})")
    p.add_argument("--period", type=float, default=None, help="rhythmic gate's base period in steps (default: T)")
    p.add_argument("--rate-weight", type=float, default=1.0, help="weight of the rate regulariser")
    p.add_argument("--lr", type=float, default=1e-2)
    p.add_argument("--backend", default="auto", help="auto | torch | numba | triton")
    p.add_argument("--threads", type=int, default=0, help="torch.set_num_threads (0: leave as is)")
    p.add_argument("--out", default="docs/figures", help="folder for <name>.json and <name>_loss.png")
    p.add_argument("--name", default="copy", help="file name stem (default: copy)")
    args = p.parse_args(argv)
    return apply_mode(args, QUICK, FULL)


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
        "copy", delay=args.delay, n_symbols=N_SYMBOLS, n_memorize=args.n_memorize,
        n_train=args.batch * args.steps, n_test=256, seed=1234,
    )
    runs = []
    for cell in args.cells:
        for gate in args.gates:
            for seed in args.seeds:
                r = train_one(cell, gate, seed, task, args)
                print(
                    f"{cell}-{gate} seed {seed}: test loss {r['test_loss']:.4f} "
                    f"(baseline {baseline_loss():.4f}), recall acc {r['test_recall_accuracy']:.3f}, "
                    f"rate {r['update_rate']:.3f}, {r['train_seconds']:.0f}s",
                    flush=True,
                )
                runs.append(r)
    result = {
        "experiment": "copy",
        "config": {k: v for k, v in vars(args).items() if k not in ("out", "name")},
        "seq_len": task.seq_len,
        "baseline_loss": baseline_loss(),
        "baseline_loss_classic": classic_equivalent(baseline_loss(), args.delay, args.n_memorize),
        "backend_requested": args.backend,
        "backend_used": used,
        "torch_threads": torch.get_num_threads(),
        "summary": summarize(runs, baseline_loss(), args.delay, args.n_memorize),
        "runs": runs,
    }
    out = Path(args.out)
    out.mkdir(parents=True, exist_ok=True)
    files = [out / f"{args.name}.json", out / f"{args.name}_loss.png"]
    files[0].write_text(json.dumps(result, indent=1))
    plot(result, files[1])
    result["files"] = [str(f) for f in files]
    for name, s in result["summary"].items():
        print(f"{name:14s} test loss {s['test_loss_mean']:.4f} ± {s['test_loss_std']:.4f} "
              f"({s['test_loss_over_baseline']:.2f}x baseline), rate {s['update_rate_mean']:.2f}")
    return result


if __name__ == "__main__":
    main(sys.argv[1:])
