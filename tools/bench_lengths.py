r"""Cost of padded ListOps batches: a training step (forward + backward) with and without lengths.

For batches of 32 full-length ListOps sequences (500-2000 tokens), H = 128, embedding 32,
suGRU (rhythmic, 10 %) or a dense GRU on the numba backend:

* ``no lengths``  the padded batch run to its longest sequence (the padded steps computed:
  what a model without lengths does, and wrong for the ``last`` readout);
* ``lengths``     each sequence run for its own length (segments between the distinct lengths);

each for batches in random order and from the length-bucketing order
(``su_neuro.train.bucket_order``, pools of 50 batches). Prints the median step time over
``--batches`` batches, the valid fraction of the padded steps and the mean number of distinct
lengths per batch.

Usage::

    python tools/bench_lengths.py --batches 5
"""

from __future__ import annotations

import argparse
import statistics
import time


def main(argv=None) -> dict:
    p = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    p.add_argument("--batches", type=int, default=5)
    p.add_argument("--gate", default="rhythmic", choices=("rhythmic", "dense"))
    p.add_argument("--n", type=int, default=3200, help="sequences generated to draw batches from")
    args = p.parse_args(argv)

    import numpy as np
    import torch

    torch.set_flush_denormal(True)
    from su_neuro.datasets import get_task, pad_collate
    from su_neuro.models import SequenceClassifier
    from su_neuro.train import bucket_order, epoch_order

    task = get_task("listops", n_train=args.n, n_valid=0, n_test=0)
    lengths = task.train.lengths
    torch.manual_seed(0)
    gate = {"kind": "rhythmic", "init_rate": 0.1} if args.gate == "rhythmic" else "dense"
    model = SequenceClassifier("gru", 32, 128, 10, vocab_size=16, padding_idx=0, gate=gate, backend="numba")
    results = {}
    for order_name, order in (("random", epoch_order(0, 0, args.n)),
                              ("bucketed", bucket_order(0, 0, lengths, 32, 50))):
        batches = [order[i * 32:(i + 1) * 32] for i in range(args.batches + 1)]
        for use_lengths in (False, True):
            times, distinct, valid = [], [], []
            for k, idx in enumerate(batches):
                x, y, lens = pad_collate([task.train[int(i)] for i in idx], pad_id=0)
                t0 = time.perf_counter()
                out = model(x, lengths=lens if use_lengths else None)
                torch.nn.functional.cross_entropy(out, y).backward()
                if k:
                    times.append(time.perf_counter() - t0)
                    distinct.append(len(np.unique(lens.numpy())))
                    valid.append(float(lens.sum()) / (lens.numel() * x.shape[1]))
            key = f"{order_name}, {'lengths' if use_lengths else 'no lengths'}"
            results[key] = {"ms": statistics.median(times) * 1e3, "valid": float(np.mean(valid)),
                            "distinct": float(np.mean(distinct))}
            print(f"{key:<24} {results[key]['ms']:8.1f} ms/step   valid steps {100 * results[key]['valid']:5.1f} %"
                  f"   distinct lengths per batch {results[key]['distinct']:.1f}", flush=True)
    return results


if __name__ == "__main__":
    main()
