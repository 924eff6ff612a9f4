"""Training: configuration, checkpoints, multi-process training and the loop.

One entry point, :func:`train`, drives every task of :mod:`su_neuro.datasets` with a
:class:`~su_neuro.models.SequenceClassifier` (``classify``, ``regress``) or a
:class:`~su_neuro.models.Seq2Seq` (``seq2seq``). The command line ``su-neuro train``
(``su_neuro.commands.train``) only builds a :class:`TrainConfig` and calls it.

Modules::

    config.py      TrainConfig, ConfigError, the constants and choices, config files
    build.py       the task, model, optimiser and schedule a config describes
    checkpoint.py  save / load checkpoints, atomic writes, RNG state, load_model
    dist.py        rank, world size and device under torchrun
    data.py        batch order (bucketing), collation, batch loss, evaluate, export_trace
    folder.py      run-folder checks and lock, the stored config a resume must match, the metrics log
    loop.py        train(), one training step, the stop on SIGINT / SIGTERM

Run folder (``out_dir``)::

    config.json      the resolved configuration of the run
    metrics.jsonl    one JSON object per line: "train" steps, "eval" results, "resume" / "stopped" markers
    checkpoint.pt    the latest checkpoint (replaced atomically, see :func:`save_checkpoint`)
    result.json      final metrics, written when the run ends
    trace.h5         gate / spike trace of test samples (``trace = true``)

Resume: a checkpoint holds the model, optimiser and scheduler state, the torch / numpy /
python RNG states, the data order (epoch, batches consumed in the epoch, the sampler
seed), the step, the configuration and the metric history. The batch order of epoch e
is a permutation drawn from ``numpy.random.default_rng([sampler_seed, e])``, so it is
rebuilt exactly on resume; a run killed at any point and resumed from its last
checkpoint ends bit-identical (on CPU) to a run that was never interrupted.

Example:
    >>> from su_neuro.train import TrainConfig, train
    >>> cfg = TrainConfig(task="copy", task_options={"delay": 20, "n_train": 256, "n_test": 64},
    ...                   hidden_size=32, max_steps=50, batch_size=32)
    >>> result = train(cfg, "runs/copy-demo", progress=False)
    >>> result["test_acc"]
"""

from __future__ import annotations

from .build import build_model, build_optimizer, build_scheduler, gate_spec, load_task
from .checkpoint import (
    CheckpointError,
    atomic_write_bytes,
    load_checkpoint,
    load_model,
    model_signature,
    params_digest,
    save_checkpoint,
)
from .config import RUN_FILES, ConfigError, TrainConfig, config_from_dict, load_config_file
from .data import _batch_stats as _batch_stats  # tests/test_token_training.py imports it from here
from .data import bucket_order, epoch_order, evaluate, export_trace
from .dist import DistInfo, distributed_env
from .folder import RunFolderError
from .loop import TrainingStopped, rate_target_at, step_loss, train

__all__ = [
    "RUN_FILES",
    "CheckpointError",
    "ConfigError",
    "DistInfo",
    "RunFolderError",
    "TrainConfig",
    "TrainingStopped",
    "atomic_write_bytes",
    "bucket_order",
    "build_model",
    "build_optimizer",
    "build_scheduler",
    "config_from_dict",
    "distributed_env",
    "epoch_order",
    "evaluate",
    "export_trace",
    "gate_spec",
    "load_checkpoint",
    "load_config_file",
    "load_model",
    "load_task",
    "model_signature",
    "params_digest",
    "rate_target_at",
    "save_checkpoint",
    "step_loss",
    "train",
]
