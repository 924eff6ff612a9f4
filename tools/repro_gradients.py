r"""Gradient profiles ‖∂L/∂h_t‖ over t, with and without the gate (paper Fig. 2a).

For an untrained copy-task model (``Seq2Seq``: one SURNN or SUGRU layer and a linear
readout) the loss L is the cross-entropy of the 10 recall steps at the end of the
sequence. The script runs the reference recurrence step by step
(``su_neuro.kernels.reference.candidate`` and the gate blend ``h + g ⊙ (f - h)``,
exactly the torch backend's loop), keeps every state h_t with ``retain_grad``, and
records the total gradient ‖∂L/∂h_t‖ (L2 norm over neurons, averaged over the batch)
for every t. With the dense gate the gradient decays geometrically away from the
recall steps; with the rhythmic gate a closed neuron passes its gradient unchanged, so
the profile stays flat far longer.

Usage::

    python tools/repro_gradients.py --quick          # seconds
    python tools/repro_gradients.py                  # delays 100, 300, 1000

Writes ``gradients.json`` and ``gradients.png`` into ``--out``.
"""

from __future__ import annotations

import argparse
import json
import math
import sys
from pathlib import Path

import torch

sys.path.insert(0, str(Path(__file__).resolve().parent))
from _repro_common import apply_mode, save_figure  # noqa: E402
from torch.nn import functional as F

import su_neuro
from su_neuro.datasets import get_task
from su_neuro.kernels.reference import candidate

N_MEMORIZE = 10
QUICK = {"delays": [20, 60], "batch": 8, "hidden": 32}
FULL = {"delays": [100, 300, 1000], "batch": 16, "hidden": 64}


def state_gradients(model: su_neuro.Seq2Seq, x: torch.Tensor, y: torch.Tensor) -> torch.Tensor:
    """‖∂L/∂h_t‖ for t = 0..T-1 (mean over the batch), L = recall-step cross-entropy.

    Runs the reference loop of a one-layer RNN/GRU model and keeps each h_t.
    """
    layer = model.rnn
    w_ih, w_hh, b_ih, b_hh = layer._layer_weights(0)
    T = x.shape[1]
    gate = layer.gates[0].plan(0, T, dtype=x.dtype)
    xp = F.linear(x, w_ih, b_ih)
    h = torch.zeros(x.shape[0], layer.hidden_size, dtype=x.dtype)
    states = []
    for t, p in enumerate(xp.unbind(1)):
        f = candidate(layer.cell, p, h, None, w_hh, b_hh, None)
        h = f if gate.kind == "dense" else h + gate.values[t] * (f - h)
        h.retain_grad()
        states.append(h)
    out = torch.stack(states[-N_MEMORIZE:], 1)
    logits = model.head(out)
    loss = F.cross_entropy(logits.reshape(-1, logits.shape[-1]), y[:, -N_MEMORIZE:].reshape(-1))
    loss.backward()
    return torch.stack([s.grad.norm(dim=1).mean() for s in states])


def profile(cell: str, gate: str, delay: int, args) -> list[float]:
    torch.manual_seed(args.seed)
    period = args.period or (2 * N_MEMORIZE + delay + 1)
    spec = "dense" if gate == "dense" else {"kind": "rhythmic", "init_rate": args.rate, "period": period}
    task = get_task("copy", delay=delay, n_train=args.batch, n_test=1, seed=args.seed)
    x = F.one_hot(task.train.tokens, task.train.vocab).to(torch.float64)
    model = su_neuro.Seq2Seq(cell, task.input_size, args.hidden, task.output_size, gate=spec, backend="torch")
    model = model.double()
    return state_gradients(model, x, task.train.targets).tolist()


def plot(result: dict, path: Path) -> None:
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    cells = result["config"]["cells"]
    fig, axes = plt.subplots(1, len(cells), figsize=(5.5 * len(cells), 4), squeeze=False)
    delays = result["config"]["delays"]
    shades = plt.cm.viridis([0.15 + 0.7 * i / max(1, len(delays) - 1) for i in range(len(delays))])
    for ax, cell in zip(axes[0], cells, strict=True):
        for color, delay in zip(shades, delays, strict=True):
            for gate, ls in (("rhythmic", "-"), ("dense", ":")):
                g = result["profiles"][f"{cell}-{gate}-{delay}"]
                T = len(g)
                # x: steps before the end of the sequence, so every delay ends at 0
                ax.plot([T - 1 - t for t in range(T)], g, ls=ls, color=color,
                        label=f"delay {delay}, {'rhythmic' if gate == 'rhythmic' else 'dense'}")
        ax.set_yscale("log")
        ax.set_ylim(1e-40, 1e-1)
        ax.set_xlim(max(2 * 10 + d + 1 for d in delays), 0)
        ax.set_xlabel("steps before the end (T - 1 - t); symbols at each curve's left end")
        ax.set_ylabel(r"$\|\partial L / \partial h_t\|$")
        ax.set_title(f"{cell.upper()} at initialisation (rate {result['config']['rate']})")
        ax.legend(fontsize=7)
    save_figure(fig, path)


def parse_args(argv):
    p = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    p.add_argument("--quick", action="store_true", help=f"small run for tests: {QUICK}")
    p.add_argument("--delays", type=int, nargs="+", help=f"copy-task delays (full: {FULL['delays']})")
    p.add_argument("--batch", type=int)
    p.add_argument("--hidden", type=int)
    p.add_argument("--cells", nargs="+", default=["rnn", "gru"], choices=["rnn", "gru"])
    p.add_argument("--rate", type=float, default=0.05, help="rhythmic gate's update rate")
    p.add_argument("--period", type=float, default=None, help="rhythmic gate's period (default: T, as repro_copy)")
    p.add_argument("--seed", type=int, default=0)
    p.add_argument("--out", default="docs/figures")
    args = p.parse_args(argv)
    return apply_mode(args, QUICK, FULL)


def main(argv=None) -> dict:
    args = parse_args(argv)
    profiles, summary = {}, {}
    for cell in args.cells:
        for delay in args.delays:
            for gate in ("rhythmic", "dense"):
                g = profile(cell, gate, delay, args)
                key = f"{cell}-{gate}-{delay}"
                profiles[key] = g
                # first step (input symbols) vs the last recall step: how much survives
                ratio = g[0] / g[-1] if g[-1] > 0 else float("nan")
                summary[key] = {
                    "grad_first_step": g[0],
                    "grad_last_step": g[-1],
                    "first_over_last": ratio,
                    "log10_first_over_last": math.log10(ratio) if ratio > 0 else float("-inf"),
                }
                print(f"{key:22s} |dL/dh_0| = {g[0]:.3e}  |dL/dh_T-1| = {g[-1]:.3e}  ratio {ratio:.3e}", flush=True)
    result = {
        "experiment": "gradients",
        "config": {k: v for k, v in vars(args).items() if k != "out"},
        "backend_used": "torch (reference loop, states kept with retain_grad)",
        "summary": summary,
        "profiles": profiles,
    }
    out = Path(args.out)
    out.mkdir(parents=True, exist_ok=True)
    (out / "gradients.json").write_text(json.dumps(result, indent=1))
    plot(result, out / "gradients.png")
    result["files"] = [str(out / "gradients.json"), str(out / "gradients.png")]
    return result


if __name__ == "__main__":
    main(sys.argv[1:])
