r"""Cost of padded ListOps batches: a training step (forward + backward) with and without lengths.

For batches of 32 full-length ListOps sequences (500-2000 tokens), H = 128, embedding 32,
on the numba backend: a GRU (default; ``--cell rnn`` or ``lif``, a recurrent LIF) with the
rhythmic gate at 10 % (default), the dense gate or the event gate (``--gate``):

* ``no lengths``  the padded batch run to its longest sequence (the padded steps computed:
  what a model without lengths does, and wrong for the ``last`` readout);
* ``segments``    each sequence run for its own length, the layer running the segments between
  the distinct lengths (one kernel call each; what every backend without a ``ragged`` hook does);
* ``one call``    each sequence run for its own length inside the numba kernels (``ops.ragged``:
  one call per sub-layer each way; the GEMM path runs at step t the samples still running,
  the event and LIF kernels each sample for its own length);

each for batches in random order and from the length-bucketing order
(``su_neuro.train.bucket_order``, pools of 50 batches). The three run batch by batch in a
rotated order. Prints the median step time over ``--batches`` batches, the ratios to
``no lengths``, the valid fraction of the padded steps and the mean number of distinct lengths
per batch.

``--readout last`` (default) or ``mean``: with ``last`` and no lengths the loss sees only the
padded last step, so the backward's gradient vanishes (to exact zeros with flush-to-zero) within
a few hundred steps and the kernels skip the zero rows: the dense GRU's backward is then cheap
in ``no lengths`` mode, and lengths (a gradient at each sequence's own end) look like a small
gain. ``mean`` gives every valid step a gradient, as training with that readout does.

Usage::

    python tools/bench_lengths.py --batches 5 --threads 1 [--gate dense] [--readout mean]
    python tools/bench_lengths.py --batches 5 --threads 1 --cell lif --readout spike_count
"""

from __future__ import annotations

import argparse
import statistics
import time

MODES = ("no lengths", "segments", "one call")


def main(argv=None) -> dict:
    p = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    p.add_argument("--batches", type=int, default=5)
    p.add_argument("--cell", default="gru", choices=("gru", "rnn", "lif"))
    p.add_argument("--gate", default="rhythmic", choices=("rhythmic", "dense", "event"))
    p.add_argument("--n", type=int, default=3200, help="sequences generated to draw batches from")
    p.add_argument("--task", default="listops", choices=("listops", "listops_short"))
    p.add_argument("--threads", type=int, default=None, help="torch and numba threads (default: as set)")
    p.add_argument("--readout", default="last", choices=("last", "mean", "spike_count"),
                   help="the classifier's readout: with 'last' and no lengths the loss reaches one step only")
    args = p.parse_args(argv)

    import numba
    import numpy as np
    import torch

    torch.set_flush_denormal(True)
    from su_neuro.datasets import get_task, pad_collate
    from su_neuro.kernels.numba import _common, ops
    from su_neuro.models import SequenceClassifier
    from su_neuro.train import bucket_order, epoch_order

    _common.start_threads()  # Numba's pool, started here, would reset torch's thread count
    threads = (torch.get_num_threads(), numba.get_num_threads())
    if args.threads:
        torch.set_num_threads(args.threads)
        numba.set_num_threads(args.threads)
    ragged = ops.ragged
    task = get_task(args.task, n_train=args.n, n_valid=0, n_test=0)
    lengths = task.train.lengths
    torch.manual_seed(0)
    gate = {"rhythmic": {"kind": "rhythmic", "init_rate": 0.1}, "dense": "dense", "event": {"kind": "event"}}
    lif = {"recurrent": True, "beta": 0.9, "threshold": 0.5} if args.cell == "lif" else {}
    model = SequenceClassifier(args.cell, 32, 128, 10, vocab_size=16, padding_idx=0, gate=gate[args.gate],
                               backend="numba", readout=args.readout, **lif)
    results = {}
    try:
        for order_name, order in (("random", epoch_order(0, 0, args.n)),
                                  ("bucketed", bucket_order(0, 0, lengths, 32, 50))):
            times = {m: [] for m in MODES}
            distinct, valid = [], []
            for k in range(args.batches + 1):  # batch 0 warms up (compiles)
                idx = order[k * 32:(k + 1) * 32]
                x, y, lens = pad_collate([task.train[int(i)] for i in idx], pad_id=0)
                for j in range(len(MODES)):
                    mode = MODES[(j + k) % len(MODES)]
                    ops.ragged = ragged if mode == "one call" else (lambda *a: False)
                    t0 = time.perf_counter()
                    out = model(x, lengths=None if mode == "no lengths" else lens)
                    torch.nn.functional.cross_entropy(out, y).backward()
                    if k:
                        times[mode].append(time.perf_counter() - t0)
                if k:
                    distinct.append(len(np.unique(lens.numpy())))
                    valid.append(float(lens.sum()) / (lens.numel() * x.shape[1]))
            base = statistics.median(times["no lengths"])
            for mode in MODES:
                ms = statistics.median(times[mode]) * 1e3
                key = f"{order_name}, {mode}"
                results[key] = {"ms": ms, "ratio": base * 1e3 / ms, "valid": float(np.mean(valid)),
                                "distinct": float(np.mean(distinct))}
                print(f"{key:<22} {ms:8.1f} ms/step   x{results[key]['ratio']:.2f} vs no lengths   "
                      f"valid steps {100 * results[key]['valid']:5.1f} %   "
                      f"distinct lengths per batch {results[key]['distinct']:.1f}", flush=True)
    finally:
        ops.ragged = ragged
        torch.set_num_threads(threads[0])
        numba.set_num_threads(threads[1])
    return results


if __name__ == "__main__":
    main()
