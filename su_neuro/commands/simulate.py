"""``su-neuro simulate``: run a population over a long input and record what it did.

The population is a trained checkpoint's recurrent stack (``--checkpoint``) or a freshly
initialised layer of a given cell, gate, size and update rate. The input is a generated
Poisson spike stream of length ``--steps`` or a dataset split (``--task``). It runs chunk by
chunk with the state carried on (memory bounded by the chunk), shows progress and
throughput, and with ``--trace`` writes every step's gates / spikes to an HDF5 trace.
"""

from __future__ import annotations

import argparse
import sys

HELP = "run a population over a long input and record what it did"


def add_arguments(parser) -> None:
    src = parser.add_argument_group("population")
    src.add_argument("--checkpoint", default=None, help="a checkpoint written by su-neuro train")
    src.add_argument("--cell", default="lif", help="rnn, gru or lif (default lif)")
    src.add_argument("--gate", default="rhythmic", help="rhythmic, event or dense (default rhythmic)")
    src.add_argument("--rate", type=float, default=0.1, help="rhythmic gate's update rate (default 0.1)")
    src.add_argument("--hidden", type=int, default=1024, help="neurons (default 1024)")
    src.add_argument("--layers", type=int, default=1)
    src.add_argument("--recurrent", action="store_true", help="LIF: recurrent weights on spikes")
    inp = parser.add_argument_group("input")
    inp.add_argument("--task", default=None, help="run over a dataset split instead of a Poisson stream")
    inp.add_argument("--split", default="test", choices=("train", "test"))
    inp.add_argument("--samples", type=int, default=16, help="with --task: samples to run")
    inp.add_argument("--steps", type=int, default=10_000, help="Poisson stream length T (default 10,000)")
    inp.add_argument("--input-size", type=int, default=16, help="Poisson stream inputs F (default 16)")
    inp.add_argument("--poisson-rate", type=float, default=0.05, help="per-step firing probability (default 0.05)")
    inp.add_argument("--batch", type=int, default=1)
    run_ = parser.add_argument_group("run")
    run_.add_argument("--backend", default="auto")
    run_.add_argument("--chunk", type=int, default=1000, help="steps per chunk (default 1000)")
    run_.add_argument("--flush-denormal", action=argparse.BooleanOptionalAction, default=True,
                      help="flush denormal floats to zero on the CPU (default on)")
    run_.add_argument("--seed", type=int, default=0)
    run_.add_argument("--trace", default=None, help="write gates/spikes to this HDF5 file")
    run_.add_argument("--no-progress", action="store_true")


def _population(args):
    import torch

    from ..models import build_layer

    if args.checkpoint:
        from ..train import load_model

        model, cfg = load_model(args.checkpoint)
        layer = model.rnn
        layer.backend = args.backend
        if args.task == cfg.task:  # the checkpoint's own task: use its options (delay, sizes, ...)
            args.task_options = dict(cfg.task_options)
        return layer
    gate = {"kind": args.gate}
    if args.gate == "rhythmic":
        gate["init_rate"] = args.rate
    torch.manual_seed(args.seed)
    kwargs = {"num_layers": args.layers, "gate": gate, "backend": args.backend}
    if args.cell == "lif":
        kwargs["recurrent"] = args.recurrent
    return build_layer(args.cell, args.input_size, args.hidden, **kwargs)


def _source(args, layer):
    import torch

    from ..simulate import poisson_chunks, split_chunks

    if args.task:
        from ..datasets import get_task

        task = get_task(args.task, **getattr(args, "task_options", {}))
        data = task.train if args.split == "train" else task.test
        n = min(args.samples, len(data))
        if n < 1:
            raise ValueError(f"--samples must be at least 1, got {args.samples}")
        xs = torch.stack([data[i][0] for i in range(n)]).to(layer.weight_ih_l0.dtype)
        if xs.shape[-1] != layer.input_size:
            raise ValueError(
                f"task {args.task!r} has {xs.shape[-1]} inputs but the population takes {layer.input_size}"
            )
        # a dataset sample is one chunk: the trace holds whole samples
        return split_chunks(xs, xs.shape[1]), xs.shape[0], xs.shape[1]
    if args.checkpoint is None and args.input_size != layer.input_size:
        raise ValueError("--input-size does not match the population")
    src = poisson_chunks(args.batch, args.steps, layer.input_size, args.poisson_rate, args.chunk, seed=args.seed)
    return src, args.batch, args.steps


def run(args) -> int:
    from tqdm import tqdm

    from ..backends import check_backend
    from ..simulate import simulate

    check_backend(args.backend)
    layer = _population(args).eval()
    source, batch, steps = _source(args, layer)
    recorder = None
    if args.trace and not args.task and args.steps % args.chunk:
        raise ValueError(f"with --trace, --steps ({args.steps}) must be a multiple of --chunk ({args.chunk})")
    if args.trace:
        from ..traces import StreamTraceWriter

        metas = {f"layers.{k}": layer.layer_meta(k) for k in range(layer.num_layers)}
        recorder = StreamTraceWriter(
            args.trace,
            layers=metas,
            batch=batch,
            config={"cell": layer.cell, "hidden_size": layer.hidden_size, "num_layers": layer.num_layers},
            run_meta={"backend": args.backend, "seed": args.seed, "command": "simulate"},
        )
    bar = tqdm(total=steps, unit="step", disable=args.no_progress, file=sys.stderr, desc="simulate")
    try:
        if recorder is not None:
            with recorder:
                result = simulate(layer, source, chunk=args.chunk, callback=recorder.append_chunk, progress=bar,
                                  flush_denormal=args.flush_denormal)
        else:
            result = simulate(layer, source, chunk=args.chunk, progress=bar, flush_denormal=args.flush_denormal)
    finally:
        bar.close()
    print(f"steps            {result.steps:,} x batch {result.batch} x {result.neurons:,} neurons")
    print(f"time             {result.seconds:.2f} s")
    print(f"throughput       {result.neuron_steps_per_second:,.0f} neuron-steps/s")
    print(f"update rate      {result.update_rate:.4f}")
    if args.trace:
        print(f"trace            {args.trace}")
    return 0
