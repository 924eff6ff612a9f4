"""``su-neuro train``: train a model on a sequence or neuromorphic task.

Every key of :class:`su_neuro.train.TrainConfig` is a flag (``hidden_size`` ->
``--hidden-size``) and a config-file key; values come from the defaults, then the
config file (``--config run.toml`` or ``.json``), then the flags. The same command runs
under ``torchrun --nproc_per_node=N`` for multi-process training. See docs/training.md.
"""

from __future__ import annotations

import argparse
import json

HELP = "train a model on a sequence or neuromorphic task"

# config key -> (type for argparse, metavar, help); booleans are handled separately
_FLAGS = {
    "task": (str, "NAME", "task name (su_neuro.datasets.list_tasks(): copy, adding, smnist, shd, ...)"),
    "cell": (str, "CELL", "rnn, gru or lif (default gru)"),
    "gate": (str, "GATE", "rhythmic, event or dense (default rhythmic)"),
    "init_rate": (float, "R", "rhythmic gate: initial update rate in [0, 1]"),
    "period": (float, "P", "rhythmic gate: base period in steps (default 1/init_rate)"),
    "backend": (str, "NAME", "auto, torch, numba, triton or nn (default auto)"),
    "hidden_size": (int, "H", "neurons per layer (default 64)"),
    "num_layers": (int, "L", "stacked layers (default 1)"),
    "readout": (str, "KIND", "classify/regress tasks: last, mean, last_mean or spike_count (default last)"),
    "settle_steps": (int, "S", "classify/regress tasks: zero-input steps after each sequence before the readout"),
    "optimizer": (str, "NAME", "adam, adamw or sgd (default adam)"),
    "lr": (float, "LR", "learning rate (default 1e-3)"),
    "weight_decay": (float, "WD", "weight decay (default 0)"),
    "momentum": (float, "M", "sgd momentum (default 0.9)"),
    "schedule": (str, "NAME", "learning-rate schedule: constant or cosine (default constant)"),
    "warmup_steps": (int, "N", "linear warm-up steps (default 0)"),
    "epochs": (int, "N", "passes over the training split (default 1)"),
    "max_steps": (int, "N", "stop after N optimiser steps (overrides --epochs)"),
    "batch_size": (int, "B", "global batch size, split over processes (default 32)"),
    "eval_batch_size": (int, "B", "evaluation batch size (default 256)"),
    "grad_clip": (float, "NORM", "clip the gradient norm to NORM (default off)"),
    "nonfinite_grads": (str, "WHAT", "a step whose gradient holds NaN or inf: raise (default) or skip"),
    "rate_target": (float, "R", "update rate the regulariser aims for"),
    "rate_weight": (float, "W", "weight of the update-rate regulariser (default 0)"),
    "rate_target_start": (float, "R", "anneal the rate target from R to --rate-target over --rate-anneal-steps"),
    "rate_anneal_steps": (int, "N", "steps over which the rate target moves from its start (default 0: off)"),
    "rate_floor": (float, "R", "lowest update rate a neuron should keep (per-neuron regulariser)"),
    "rate_floor_weight": (float, "W", "weight of the per-neuron rate floor (default 0)"),
    "embed_dim": (int, "E", "token tasks (listops): embedding width in front of the stack (default 32)"),
    "bucket_pool": (int, "N", "length bucketing: sort pools of N batches by length (default 0: off)"),
    "seed": (int, "S", "random seed of initialisation and data order (default 0)"),
    "device": (str, "DEV", "auto, cpu or cuda (default auto)"),
    "checkpoint_every": (int, "N", "checkpoint every N steps, 0: only at the end (default 100)"),
    "log_every": (int, "N", "log training metrics every N steps (default 1)"),
    "eval_every": (int, "N", "evaluate on the test split every N steps, 0: only at the end"),
    "trace_samples": (int, "N", "test samples in the trace (default 64)"),
}
_OPTION_FLAGS = {"task_options": "task-option", "gate_options": "gate-option", "layer_options": "layer-option"}
# config key -> help of its --KEY / --no-KEY pair
_BOOL_FLAGS = {
    "deterministic": "deterministic algorithms (default on)",
    "flush_denormal": "flush denormal floats to zero on the CPU (default on)",
    "trace": "write trace.h5 of test samples at the end (--no-trace: not, e.g. on a resume)",
}


def add_arguments(parser: argparse.ArgumentParser) -> None:
    run = parser.add_argument_group("run")
    run.add_argument("--config", metavar="FILE", help="JSON or TOML file of config keys (flags override it)")
    run.add_argument("--out", metavar="DIR", help="run folder (default runs/<task>-<cell>-<gate>-seed<seed>)")
    run.add_argument("--resume", action="store_true", help="continue the run in --out from its checkpoint")
    run.add_argument("--overwrite", action="store_true", help="replace a run already in --out")
    run.add_argument("--no-progress", action="store_true", help="no progress bar")
    cfg = parser.add_argument_group("configuration (each flag is a config key, e.g. --hidden-size = hidden_size)")
    for key, (kind, metavar, text) in _FLAGS.items():
        cfg.add_argument(f"--{key.replace('_', '-')}", dest=key, type=kind, metavar=metavar, help=text,
                         default=argparse.SUPPRESS)
    for key, flag in _OPTION_FLAGS.items():
        cfg.add_argument(f"--{flag}", dest=key, action="append", metavar="KEY=VALUE", default=argparse.SUPPRESS,
                         help=f"one entry of {key} (repeatable; VALUE is read as JSON, else as a string)")
    for key, text in _BOOL_FLAGS.items():
        cfg.add_argument(f"--{key.replace('_', '-')}", dest=key, action=argparse.BooleanOptionalAction,
                         default=argparse.SUPPRESS, help=text)


def _parse_option(flag: str, text: str) -> tuple[str, object]:
    key, sep, raw = text.partition("=")
    if not sep or not key:
        raise ValueError(f"--{flag} takes KEY=VALUE, got {text!r}")
    try:
        value = json.loads(raw)
    except ValueError:
        value = raw
    return key.strip(), value


def config_from_args(args) -> tuple[object, set[str]]:
    """The :class:`TrainConfig` of the parsed arguments and the keys the user set."""
    from ..train import config_from_dict, load_config_file

    values: dict = {}
    explicit: set[str] = set()
    if getattr(args, "config", None):
        values = load_config_file(args.config)
        explicit |= set(values)
    cfg = config_from_dict(values, source=f"config file {args.config!r}" if args.config else "config")
    flags: dict = {}
    for key in (*_FLAGS, *_BOOL_FLAGS):  # a flag left out here was parsed and then ignored
        if hasattr(args, key):
            flags[key] = getattr(args, key)
    for key, flag in _OPTION_FLAGS.items():
        if hasattr(args, key):
            flags[key] = dict(_parse_option(flag, text) for text in getattr(args, key))
    explicit |= set(flags)
    cfg = config_from_dict(flags, base=cfg, source="the command line")
    return cfg, explicit


def run(args) -> int:
    from ..train import distributed_env, train

    if args.resume and args.overwrite:
        raise ValueError("--resume and --overwrite exclude each other")
    cfg, explicit = config_from_args(args)
    out = args.out
    if out is None:
        if args.resume:
            raise ValueError("--resume needs --out, the folder of the run to continue")
        out = f"runs/{cfg.task}-{cfg.cell}-{cfg.gate}-seed{cfg.seed}"
    main = distributed_env().is_main
    if main:
        print(f"run folder: {out}", flush=True)
    result = train(cfg, out, resume=args.resume, overwrite=args.overwrite,
                   progress=not args.no_progress, explicit_keys=explicit)
    if main:
        print(_summary(result), flush=True)
    return 0


def _summary(result: dict) -> str:
    lines = [f"finished at step {result['step']} (epoch {result['epoch']})"]
    for key in ("train_loss", "test_loss", "test_acc", "test_rate"):
        value = result.get(key)
        if value is not None:
            lines.append(f"  {key:<11} {value:.4f}")
    if "trace" in result:
        lines.append(f"  trace       {result['trace']}")
    return "\n".join(lines)
