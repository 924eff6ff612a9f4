"""What a :class:`~su_neuro.train.config.TrainConfig` builds: the task, the model, the
optimiser and the learning-rate schedule.

The model's parameters are drawn from torch's global RNG, so the caller seeds it first.
The learning rate rises linearly over ``warmup_steps`` and then stays constant or follows
half a cosine that reaches zero after the last step (the last step trains at a small rate).
"""

from __future__ import annotations

import math

import torch
from torch import nn

from .config import DEFAULT_EMBED_DIM, OPTIMIZERS, ConfigError, TrainConfig


def load_task(cfg: TrainConfig):
    """The :class:`su_neuro.datasets.Task` of ``cfg``."""
    from ..datasets import get_task

    return get_task(cfg.task, **cfg.task_options)


def gate_spec(cfg: TrainConfig):
    """The ``gate`` argument of the layer that ``cfg`` describes.

    ``gate_options`` may not hold ``kind``: it would replace the configured gate while
    config.json records ``gate``, so the stored run would describe another model.
    ``surrogate_params`` must be a JSON object; anything else would reach the gate as a
    Python error about dict updates that names neither the option nor the fix.
    """
    from ..gates import GATES

    if cfg.gate not in GATES:
        raise ConfigError(f"unknown gate {cfg.gate!r}; valid gates: {', '.join(GATES)}")
    if "kind" in cfg.gate_options:
        raise ConfigError(f"gate_options may not set 'kind' (got {cfg.gate_options['kind']!r}); choose the gate "
                          "with the config key 'gate' (--gate)")
    params = cfg.gate_options.get("surrogate_params")
    if params is not None and not isinstance(params, dict):
        raise ConfigError(f"gate_options surrogate_params must be a JSON object of parameters, got {params!r}; "
                          """e.g. --gate-option 'surrogate_params={"gain": 0.3}' (keys in double quotes)""")
    spec = {"kind": cfg.gate, **cfg.gate_options}
    if cfg.init_rate is not None:
        spec["init_rate"] = cfg.init_rate
    if cfg.period is not None:
        spec["period"] = cfg.period
    return spec


def build_model(cfg: TrainConfig, task) -> nn.Module:
    """The model of ``cfg`` for ``task`` (parameters drawn from torch's global RNG)."""
    from ..models import CELL_TYPES, Seq2Seq, SequenceClassifier

    if cfg.cell not in CELL_TYPES:
        raise ConfigError(f"unknown cell {cfg.cell!r}; valid cells: {', '.join(CELL_TYPES)}")
    kwargs = dict(cfg.layer_options)
    for key in ("num_layers", "gate", "backend"):
        if key in kwargs:
            raise ConfigError(f"layer_options may not set {key!r}; use the config key {key!r}")
    kwargs.update(num_layers=cfg.num_layers, gate=gate_spec(cfg), backend=cfg.backend)
    input_size = task.input_size
    if getattr(task, "vocab_size", None) is not None:
        input_size = cfg.embed_dim or DEFAULT_EMBED_DIM
        kwargs.update(vocab_size=task.vocab_size, embed_dim=input_size, padding_idx=task.pad_id)
    elif cfg.embed_dim is not None:
        raise ConfigError(f"embed_dim applies to token tasks only; task {cfg.task!r} has float features")
    try:
        if task.kind == "seq2seq":
            if cfg.settle_steps:
                raise ConfigError(f"settle_steps applies to classify / regress tasks; task {cfg.task!r} is seq2seq")
            if cfg.readout != "last":
                raise ConfigError(f"readout applies to classify / regress tasks; task {cfg.task!r} is seq2seq "
                                  f"(its output is read at every step), so readout {cfg.readout!r} would be ignored")
            return Seq2Seq(cfg.cell, input_size, cfg.hidden_size, task.output_size, **kwargs)
        return SequenceClassifier(
            cfg.cell, input_size, cfg.hidden_size, task.output_size, readout=cfg.readout,
            settle_steps=cfg.settle_steps, **kwargs
        )
    except TypeError as err:
        raise ConfigError(f"layer_options / gate_options: {err}") from None


def build_optimizer(cfg: TrainConfig, params) -> torch.optim.Optimizer:
    params = list(params)
    if cfg.optimizer == "adam":
        return torch.optim.Adam(params, lr=cfg.lr, weight_decay=cfg.weight_decay)
    if cfg.optimizer == "adamw":
        return torch.optim.AdamW(params, lr=cfg.lr, weight_decay=cfg.weight_decay)
    if cfg.optimizer == "sgd":
        return torch.optim.SGD(params, lr=cfg.lr, momentum=cfg.momentum, weight_decay=cfg.weight_decay)
    raise ConfigError(f"unknown optimizer {cfg.optimizer!r}; valid: {', '.join(OPTIMIZERS)}")


def build_scheduler(cfg: TrainConfig, optimizer, total_steps: int):
    warmup = cfg.warmup_steps

    def factor(step: int) -> float:
        if warmup and step < warmup:
            return (step + 1) / warmup
        if cfg.schedule == "constant":
            return 1.0
        progress = min(1.0, (step - warmup) / max(1, total_steps - warmup))
        return 0.5 * (1.0 + math.cos(math.pi * progress))

    return torch.optim.lr_scheduler.LambdaLR(optimizer, factor)
