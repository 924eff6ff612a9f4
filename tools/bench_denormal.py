r"""Training-step time with and without flush-to-zero (``su_neuro.flush_denormal``).

Each (mode, model) runs in a fresh process, because the FTZ / DAZ bits are per thread and
threads inherit them when they start: they must be set before the first parallel call.
A step is forward + backward + Adam on a batch of ListOps token sequences (full-length
task, cut to exactly T tokens: no padding, so the time should be proportional to T).

Models (H = 128, embedding 32, batch 32, 10 classes, readout of the last step):
``sugru``  SUGRU, rhythmic gate at 10 %, numba backend;
``gru``    SUGRU with the dense gate, numba backend (the ordinary GRU computed by the same kernels);
``torch``  torch.nn.GRU (the dense baseline of the issue).

Usage::

    python tools/bench_denormal.py                 # T = 500, 1000, 2000; 4 timed steps; both modes
    python tools/bench_denormal.py --steps 6 --lengths 250,2000

Prints a table (median step time in ms, and the ratio to the time at the shortest T scaled by
length) and writes it as JSON with ``--json``.
"""

from __future__ import annotations

import argparse
import json
import statistics
import subprocess
import sys
import time

MODELS = ("sugru", "gru", "torch")


def _one(model: str, ftz: bool, lengths: list[int], steps: int, seed: int) -> dict:
    import torch
    from torch import nn

    torch.set_flush_denormal(ftz)  # before any parallel call of this process
    from su_neuro.datasets import get_task
    from su_neuro.models import SequenceClassifier

    torch.manual_seed(seed)
    task = get_task("listops", n_train=64, n_valid=0, n_test=0, seed=seed)
    H, E, B = 128, 32, 32
    if model == "torch":

        class Net(nn.Module):
            def __init__(self):
                super().__init__()
                self.embed = nn.Embedding(16, E, padding_idx=0)
                self.rnn = nn.GRU(E, H, batch_first=True)
                self.head = nn.Linear(H, 10)

            def forward(self, x):
                return self.head(self.rnn(self.embed(x))[0][:, -1])

        net = Net()
    else:
        gate = {"kind": "rhythmic", "init_rate": 0.1} if model == "sugru" else "dense"
        net = SequenceClassifier("gru", E, H, 10, vocab_size=16, padding_idx=0, gate=gate, backend="numba")
    opt = torch.optim.Adam(net.parameters(), lr=1e-3)
    out = {}
    for T in lengths:
        seqs = [task.train[i] for i in range(64)]
        # every sequence has > 500 tokens: four copies cover T <= 2004
        x = torch.stack([s.repeat((T + len(s) - 1) // len(s))[:T] for s, _ in seqs[:B]])
        y = torch.tensor([lab for _, lab in seqs[:B]])
        times = []
        for k in range(steps + 1):
            t0 = time.perf_counter()
            loss = nn.functional.cross_entropy(net(x), y)
            opt.zero_grad()
            loss.backward()
            opt.step()
            if k:
                times.append(time.perf_counter() - t0)
        out[T] = statistics.median(times) * 1e3
    return out


def main(argv=None) -> dict:
    p = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    p.add_argument("--lengths", default="500,1000,2000")
    p.add_argument("--steps", type=int, default=4)
    p.add_argument("--models", default=",".join(MODELS))
    p.add_argument("--seed", type=int, default=0)
    p.add_argument("--json", default=None)
    p.add_argument("--child", default=None, help=argparse.SUPPRESS)
    args = p.parse_args(argv)
    lengths = [int(v) for v in args.lengths.split(",")]
    if args.child:
        model, ftz = args.child.split(":")
        print(json.dumps(_one(model, ftz == "1", lengths, args.steps, args.seed)))
        return {}
    results = {}
    for model in args.models.split(","):
        for ftz in (False, True):
            cmd = [sys.executable, __file__, "--child", f"{model}:{int(ftz)}", "--lengths", args.lengths,
                   "--steps", str(args.steps), "--seed", str(args.seed)]
            res = subprocess.run(cmd, capture_output=True, text=True)
            if res.returncode:
                raise RuntimeError(f"{' '.join(cmd)} failed:\n{res.stderr}")
            results[f"{model}:{'ftz' if ftz else 'no-ftz'}"] = json.loads(res.stdout.strip().splitlines()[-1])
    base = lengths[0]
    print(f"{'model':<8} {'mode':<7} " + " ".join(f"T={T:>5} ms (x len)" for T in lengths))
    for key, times in results.items():
        model, mode = key.split(":")
        ref = times[str(base)] if str(base) in times else times[base]
        cells = []
        for T in lengths:
            t = times[str(T)] if str(T) in times else times[T]
            cells.append(f"{t:>8.1f} ({t / (ref * T / base):4.2f})")
        print(f"{model:<8} {mode:<7} " + "  ".join(cells))
    if args.json:
        with open(args.json, "w") as fh:
            json.dump({"lengths": lengths, "steps": args.steps, "results": results}, fh, indent=2)
    return results


if __name__ == "__main__":
    main()
