"""Training loop, configuration, checkpoints and multi-process training.

One entry point, :func:`train`, drives every task of :mod:`su_neuro.datasets` with a
:class:`~su_neuro.models.SequenceClassifier` (``classify``, ``regress``) or a
:class:`~su_neuro.models.Seq2Seq` (``seq2seq``). The command line ``su-neuro train``
(``su_neuro.commands.train``) only builds a :class:`TrainConfig` and calls it.

Run folder (``out_dir``)::

    config.json      the resolved configuration of the run
    metrics.jsonl    one JSON object per line: "train" steps, "eval" results, "resume" markers
    checkpoint.pt    the latest checkpoint (replaced atomically, see :func:`save_checkpoint`)
    result.json      final metrics, written when the run ends
    trace.h5         gate / spike trace of test samples (``trace = true``)

Loss. With a global batch of B samples split over W processes, every process computes
the *sum* of its per-sample (per-token) losses and divides it by the global count N
(summed over processes) times 1/W; DistributedDataParallel averages gradients over the
W processes, so the gradient is exactly that of ``sum / N`` over the global batch, the
same as one process with batch B. Sequence targets equal to -100 are not scored.

Update-rate regulariser: ``rate_weight * (mean gate - rate_target)^2`` over all layers
(:func:`su_neuro.gates.rate_penalty`); under several processes the mean is the global
one (an all-reduce of the detached local means, with a first-order term that carries the
local gradient), so the penalty and its gradient match one process.

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

import dataclasses
import difflib
import hashlib
import io
import json
import math
import os
import random
import time
from collections.abc import Callable
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import numpy as np
import torch
from torch import nn
from torch.nn import functional as F

__all__ = [
    "RUN_FILES",
    "CheckpointError",
    "ConfigError",
    "RunFolderError",
    "TrainConfig",
    "build_model",
    "load_task",
    "config_from_dict",
    "distributed_env",
    "load_checkpoint",
    "load_config_file",
    "save_checkpoint",
    "train",
]

CHECKPOINT_FORMAT = "su_neuro.checkpoint"
CHECKPOINT_VERSION = 1
IGNORE_INDEX = -100

OPTIMIZERS = ("adam", "adamw", "sgd")
DEFAULT_EMBED_DIM = 32
SCHEDULES = ("constant", "cosine")
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
     "backend", "device", "flush_denormal"}
)


class ConfigError(ValueError):
    """A configuration key or value is invalid (the message names it)."""


class CheckpointError(RuntimeError):
    """A checkpoint is missing, corrupt, truncated or belongs to another model."""


class RunFolderError(RuntimeError):
    """The run folder holds a run that this command would overwrite."""


# ----------------------------------------------------------------------------- config
@dataclass
class TrainConfig:
    """Everything a training run depends on; every field is a config-file key.

    Task: ``task`` (a name of :func:`su_neuro.datasets.list_tasks`), ``task_options``
    (keyword options of that task, e.g. ``{"delay": 100}``).
    Model: ``cell`` (rnn / gru / lif), ``gate`` (rhythmic / event / dense), ``init_rate``
    and ``period`` (rhythmic gate), ``gate_options`` (other gate keywords),
    ``backend``, ``hidden_size``, ``num_layers``, ``readout`` (classify / regress tasks),
    ``layer_options`` (other layer keywords, e.g. ``{"beta": 0.9}`` for LIF), ``embed_dim``
    (token tasks: the width of the embedding in front of the stack; default 32).
    Optimisation: ``optimizer`` (adam / adamw / sgd), ``lr``, ``weight_decay``,
    ``momentum`` (sgd), ``schedule`` (constant / cosine), ``warmup_steps``, ``epochs``,
    ``max_steps`` (number of steps, overriding ``epochs``; None: ``epochs`` full passes), ``batch_size`` (the
    global batch), ``grad_clip`` (max gradient norm, None: off), ``rate_target`` and
    ``rate_weight`` (update-rate regulariser), ``bucket_pool`` (0: batches in random order;
    N > 0: length bucketing, see :func:`bucket_order`).
    Run: ``seed``, ``device`` (auto / cpu / cuda), ``deterministic``, ``checkpoint_every``
    (steps; 0: only at the end), ``log_every`` (steps), ``eval_every`` (steps; 0: only
    at the end), ``eval_batch_size``, ``trace`` (write ``trace.h5`` at the end),
    ``trace_samples`` (test samples in the trace), ``flush_denormal`` (flush denormal
    floats to zero on the CPU during the run, default on; see :func:`flush_denormal`).
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
    rate_target: float | None = None
    rate_weight: float = 0.0
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
        if self.task is None:
            raise ConfigError("no task given; set 'task' (e.g. --task copy)")
        from .backends import BACKENDS
        from .gates import GATES
        from .models import CELL_TYPES, READOUTS

        _check_choice("cell", self.cell, tuple(CELL_TYPES))
        _check_choice("gate", self.gate, tuple(GATES))
        _check_choice("backend", self.backend, BACKENDS)
        _check_choice("readout", self.readout, READOUTS)
        _check_choice("optimizer", self.optimizer, OPTIMIZERS)
        _check_choice("schedule", self.schedule, SCHEDULES)
        _check_choice("device", self.device, DEVICES)
        for key in ("hidden_size", "num_layers", "epochs", "batch_size", "eval_batch_size", "trace_samples"):
            if getattr(self, key) < 1:
                raise ConfigError(f"{key} must be a positive integer, got {getattr(self, key)}")
        if self.embed_dim is not None and self.embed_dim < 1:
            raise ConfigError(f"embed_dim must be a positive integer or null, got {self.embed_dim}")
        for key in ("warmup_steps", "seed", "checkpoint_every", "eval_every", "bucket_pool"):
            if getattr(self, key) < 0:
                raise ConfigError(f"{key} must be >= 0, got {getattr(self, key)}")
        if self.log_every < 1:
            raise ConfigError(f"log_every must be a positive integer, got {self.log_every}")
        if self.max_steps is not None and self.max_steps < 1:
            raise ConfigError(f"max_steps must be a positive integer or null, got {self.max_steps}")
        for key in ("lr", "weight_decay", "momentum", "rate_weight"):
            value = getattr(self, key)
            if not math.isfinite(value) or value < 0:
                raise ConfigError(f"{key} must be a finite number >= 0, got {value}")
        if self.lr == 0:
            raise ConfigError("lr must be > 0")
        if self.grad_clip is not None and (not math.isfinite(self.grad_clip) or self.grad_clip <= 0):
            raise ConfigError(f"grad_clip must be a positive number or null, got {self.grad_clip}")
        if self.rate_target is not None and not 0.0 <= self.rate_target <= 1.0:
            raise ConfigError(f"rate_target must lie in [0, 1], got {self.rate_target}")
        if self.rate_weight > 0 and self.rate_target is None:
            raise ConfigError("rate_weight > 0 needs a rate_target (the update rate to aim for)")
        if self.gate != "rhythmic":
            for key in ("init_rate", "period"):
                if getattr(self, key) is not None:
                    raise ConfigError(f"{key} applies to the rhythmic gate only, but gate is {self.gate!r}")
        return self


_OPTIONAL = {"task", "init_rate", "period", "max_steps", "grad_clip", "rate_target", "embed_dim"}


def _field_types() -> dict[str, type]:
    types = {}
    for f in dataclasses.fields(TrainConfig):
        default = f.default_factory() if f.default is dataclasses.MISSING else f.default
        if f.name in ("task",):
            types[f.name] = str
        elif f.name in ("init_rate", "period", "grad_clip", "rate_target"):
            types[f.name] = float
        elif f.name in ("max_steps", "embed_dim"):
            types[f.name] = int
        else:
            types[f.name] = type(default)
    return types


_TYPES = _field_types()
CONFIG_KEYS = tuple(_TYPES)


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
    for key in ("init_rate", "period", "grad_clip", "rate_target", "lr", "weight_decay", "momentum", "rate_weight"):
        value = getattr(cfg, key)
        if isinstance(value, int):
            setattr(cfg, key, float(value))
    return cfg


def load_config_file(path: str | os.PathLike) -> dict:
    """The key/value table of a JSON (``.json``) or TOML (``.toml``) config file."""
    path = Path(path)
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


# ------------------------------------------------------------------------- model/task
def load_task(cfg: TrainConfig):
    """The :class:`su_neuro.datasets.Task` of ``cfg``."""
    from .datasets import get_task

    return get_task(cfg.task, **cfg.task_options)


def gate_spec(cfg: TrainConfig):
    """The ``gate`` argument of the layer that ``cfg`` describes."""
    from .gates import GATES

    if cfg.gate not in GATES:
        raise ConfigError(f"unknown gate {cfg.gate!r}; valid gates: {', '.join(GATES)}")
    spec = {"kind": cfg.gate, **cfg.gate_options}
    if cfg.init_rate is not None:
        spec["init_rate"] = cfg.init_rate
    if cfg.period is not None:
        spec["period"] = cfg.period
    return spec


def build_model(cfg: TrainConfig, task) -> nn.Module:
    """The model of ``cfg`` for ``task`` (parameters drawn from torch's global RNG)."""
    from .models import CELL_TYPES, Seq2Seq, SequenceClassifier

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
            return Seq2Seq(cfg.cell, input_size, cfg.hidden_size, task.output_size, **kwargs)
        return SequenceClassifier(
            cfg.cell, input_size, cfg.hidden_size, task.output_size, readout=cfg.readout, **kwargs
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


def model_signature(model: nn.Module) -> dict[str, list[int]]:
    """``{name: shape}`` of every entry of the state dict (what a checkpoint must match)."""
    return {k: list(v.shape) for k, v in model.state_dict().items()}


def params_digest(model: nn.Module) -> str:
    """SHA-256 of the model's state dict (names and raw bytes): equal iff bit-identical."""
    h = hashlib.sha256()
    for name, value in sorted(model.state_dict().items()):
        h.update(name.encode())
        h.update(value.detach().cpu().contiguous().numpy().tobytes())
    return h.hexdigest()


# -------------------------------------------------------------------------- files
def _fsync_dir(path: Path) -> None:
    try:
        fd = os.open(path, os.O_RDONLY)
    except OSError:
        return
    try:
        os.fsync(fd)
    except OSError:
        pass
    finally:
        os.close(fd)


def atomic_write_bytes(path: str | os.PathLike, data: bytes) -> None:
    """Write ``data`` to ``path`` atomically: temp file in the same folder, fsync, rename.

    A reader (or a crash) sees either the old file or the new one, never a partial one.
    """
    path = Path(path)
    tmp = path.with_name(f".{path.name}.tmp-{os.getpid()}")
    try:
        with open(tmp, "wb") as fh:
            fh.write(data)
            fh.flush()
            os.fsync(fh.fileno())
        os.replace(tmp, path)
    finally:
        if tmp.exists():
            tmp.unlink()
    _fsync_dir(path.parent)


def _atomic_write_json(path: Path, obj) -> None:
    atomic_write_bytes(path, (json.dumps(obj, indent=2, sort_keys=True) + "\n").encode())


def save_checkpoint(path: str | os.PathLike, state: dict) -> None:
    """Write a checkpoint atomically, with a SHA-256 of its payload.

    The file is a ``torch.save`` of ``{"format", "version", "sha256", "payload"}`` where
    ``payload`` is a uint8 tensor holding the ``torch.save`` bytes of ``state``; this
    makes a flipped byte detectable (torch's own reader does not check) while the file
    stays readable with ``torch.load``. Read it back with :func:`load_checkpoint`.
    """
    buf = io.BytesIO()
    torch.save(state, buf)
    payload = buf.getvalue()
    outer = {
        "format": CHECKPOINT_FORMAT,
        "version": CHECKPOINT_VERSION,
        "sha256": hashlib.sha256(payload).hexdigest(),
        "payload": torch.frombuffer(bytearray(payload), dtype=torch.uint8),
    }
    out = io.BytesIO()
    torch.save(outer, out)
    atomic_write_bytes(path, out.getvalue())


def load_checkpoint(path: str | os.PathLike, map_location="cpu") -> dict:
    """Read a checkpoint written by :func:`save_checkpoint`, verifying its checksum.

    Raises :class:`CheckpointError` for a missing, truncated, corrupt or foreign file.
    """
    path = Path(path)
    if not path.is_file():
        raise CheckpointError(f"checkpoint {str(path)!r} does not exist")
    try:
        outer = torch.load(path, map_location="cpu", weights_only=True)
    except Exception as err:  # torch raises many types for damaged zip archives
        raise CheckpointError(
            f"checkpoint {str(path)!r} is corrupt or truncated and cannot be read "
            f"({type(err).__name__}: {str(err).splitlines()[0] if str(err) else ''})"
        ) from None
    if not isinstance(outer, dict) or outer.get("format") != CHECKPOINT_FORMAT:
        raise CheckpointError(f"{str(path)!r} is not a su_neuro training checkpoint")
    if outer.get("version") != CHECKPOINT_VERSION:
        raise CheckpointError(
            f"checkpoint {str(path)!r} has version {outer.get('version')!r}; this su_neuro reads {CHECKPOINT_VERSION}"
        )
    payload = outer.get("payload")
    if not isinstance(payload, torch.Tensor) or payload.dtype != torch.uint8:
        raise CheckpointError(f"checkpoint {str(path)!r} is corrupt: no payload")
    data = payload.numpy().tobytes()
    if hashlib.sha256(data).hexdigest() != outer.get("sha256"):
        raise CheckpointError(f"checkpoint {str(path)!r} is corrupt: its checksum does not match its contents")
    try:
        return torch.load(io.BytesIO(data), map_location=map_location, weights_only=True)
    except Exception as err:
        raise CheckpointError(f"checkpoint {str(path)!r} is corrupt ({type(err).__name__}: {err})") from None


def _rng_state() -> dict:
    kind, keys, pos, has_gauss, cached = np.random.get_state()
    state = {
        "torch": torch.get_rng_state(),
        "numpy": {
            "kind": kind,
            "keys": torch.from_numpy(keys.astype(np.int64)),
            "pos": int(pos),
            "has_gauss": int(has_gauss),
            "cached_gaussian": float(cached),
        },
        "python": _py_state_to_list(random.getstate()),
    }
    if torch.cuda.is_available() and torch.cuda.is_initialized():
        state["cuda"] = torch.cuda.get_rng_state_all()
    return state


def _py_state_to_list(state):
    version, internal, gauss = state
    return [version, list(internal), gauss]


def _set_rng_state(state: dict) -> None:
    torch.set_rng_state(state["torch"])
    npst = state["numpy"]
    np.random.set_state(
        (npst["kind"], npst["keys"].numpy().astype(np.uint32), npst["pos"], npst["has_gauss"], npst["cached_gaussian"])
    )
    version, internal, gauss = state["python"]
    random.setstate((version, tuple(internal), gauss))
    if "cuda" in state and torch.cuda.is_available():
        torch.cuda.set_rng_state_all(state["cuda"])


class _Log:
    """Append-only JSONL metrics log (rank 0 only); every line is flushed at once."""

    def __init__(self, path: Path | None):
        self._fh = open(path, "a", encoding="utf-8") if path is not None else None

    def write(self, record: dict) -> None:
        if self._fh is not None:
            self._fh.write(json.dumps(record, sort_keys=True) + "\n")
            self._fh.flush()

    def close(self) -> None:
        if self._fh is not None:
            self._fh.close()
            self._fh = None


# -------------------------------------------------------------------- distribution
@dataclass
class DistInfo:
    rank: int = 0
    world_size: int = 1
    local_rank: int = 0

    @property
    def active(self) -> bool:
        return self.world_size > 1

    @property
    def is_main(self) -> bool:
        return self.rank == 0


def distributed_env() -> DistInfo:
    """Rank and world size from the variables torchrun sets (RANK, WORLD_SIZE, LOCAL_RANK)."""
    try:
        world = int(os.environ.get("WORLD_SIZE", "1"))
        rank = int(os.environ.get("RANK", "0"))
        local = int(os.environ.get("LOCAL_RANK", str(rank)))
    except ValueError as err:
        raise RuntimeError(f"bad torch.distributed environment variable: {err}") from None
    if world < 1 or not 0 <= rank < world:
        raise RuntimeError(f"bad torch.distributed environment: RANK={rank}, WORLD_SIZE={world}")
    return DistInfo(rank, world, local)


def _pick_device(cfg: TrainConfig, dist: DistInfo) -> torch.device:
    if cfg.device == "cuda" or (cfg.device == "auto" and torch.cuda.is_available()):
        if not torch.cuda.is_available():
            raise RuntimeError("device 'cuda' asked for, but no CUDA device is available")
        return torch.device("cuda", dist.local_rank % torch.cuda.device_count())
    return torch.device("cpu")


def _all_reduce(t: torch.Tensor, dist: DistInfo) -> torch.Tensor:
    if dist.active:
        torch.distributed.all_reduce(t)
    return t


# ------------------------------------------------------------------------- batches
def epoch_order(sampler_seed: int, epoch: int, n: int) -> np.ndarray:
    """The sample order of ``epoch``: a permutation of ``range(n)`` fixed by the seed."""
    return np.random.default_rng([sampler_seed, epoch]).permutation(n)


def bucket_order(sampler_seed: int, epoch: int, lengths: np.ndarray, batch_size: int, pool: int) -> np.ndarray:
    """The sample order of ``epoch`` with length bucketing: a permutation of ``range(n)``
    whose consecutive ``batch_size`` slices hold sequences of similar length.

    The epoch's random permutation (:func:`epoch_order`) is cut into pools of ``pool``
    batches; each pool is sorted by length (stable) and cut into batches; the batches of
    the epoch are then shuffled (same generator). Padding, and with it the work and the
    segments of a padded batch, shrinks; every sample is still seen once per epoch, and the
    order is a function of (seed, epoch), so a resumed run sees the same batches.
    """
    n = len(lengths)
    rng = np.random.default_rng([sampler_seed, epoch])
    perm = rng.permutation(n)
    span = batch_size * pool
    for start in range(0, n, span):
        block = perm[start:start + span]
        perm[start:start + span] = block[np.argsort(lengths[block], kind="stable")]
    full = n // batch_size
    batches = perm[: full * batch_size].reshape(full, batch_size)
    batches = batches[rng.permutation(full)]
    return np.concatenate([batches.reshape(-1), perm[full * batch_size:]])


def _dataset_lengths(dataset) -> np.ndarray:
    lengths = getattr(dataset, "lengths", None)
    if lengths is None:
        lengths = [dataset[i][0].shape[0] for i in range(len(dataset))]
    return np.asarray(lengths, dtype=np.int64)


def _collate(items, pad_id: int = 0):
    """(x, y, lengths): lengths (B,) long when the items differ in length (right padded),
    else None."""
    xs = [it[0] for it in items]
    ys = [it[1] for it in items]
    if len({x.shape[0] for x in xs}) > 1:
        from .datasets import pad_collate

        return pad_collate(items, pad_id=pad_id)
    x = torch.stack(xs)
    if isinstance(ys[0], torch.Tensor):
        y = torch.stack(ys)
    else:
        y = torch.tensor(ys)
    return x, y, None


def _valid_count(record) -> float:
    """Neuron-steps of a record that belong to a sequence (padded steps excluded)."""
    B, T, H = record.gate.shape
    lengths = getattr(record, "lengths", None)
    return float(B * T * H) if lengths is None else float(lengths.sum()) * H


def _batch_stats(out: torch.Tensor, y: torch.Tensor, kind: str):
    """(loss sum, count, correct) of a batch; count is what the loss is averaged over."""
    if kind == "regress":
        y = y.to(out.dtype).reshape(out.shape)
        loss = F.mse_loss(out, y, reduction="sum")
        return loss, float(y.numel()), float("nan")
    if kind == "seq2seq":
        logits = out.reshape(-1, out.shape[-1])
        target = y.reshape(-1).long()
    else:
        logits, target = out, y.reshape(-1).long()
    loss = F.cross_entropy(logits, target, ignore_index=IGNORE_INDEX, reduction="sum")
    mask = target != IGNORE_INDEX
    correct = (logits.detach().argmax(-1)[mask] == target[mask]).sum().item()
    return loss, float(mask.sum().item()), float(correct)


def _gate_tensors(records) -> list[torch.Tensor]:
    return [r.gate for r in records.values()]


# ------------------------------------------------------------------------ evaluation
@torch.no_grad()
def evaluate(model: nn.Module, dataset, kind: str, batch_size: int, device, *, pad_id: int = 0) -> dict:
    """Loss, accuracy (classify / seq2seq) and update rate (over the valid steps) of
    ``model`` on ``dataset``; variable-length items are right padded with ``pad_id``."""
    was_training = model.training
    model.eval()
    loss_sum = count = correct = gates = gate_n = 0.0
    try:
        for start in range(0, len(dataset), batch_size):
            items = [dataset[i] for i in range(start, min(len(dataset), start + batch_size))]
            x, y, lengths = _collate(items, pad_id)
            x, y = x.to(device), y.to(device)
            out, records = model(x, record=True, lengths=lengths)
            loss, n, c = _batch_stats(out, y, kind)
            loss_sum += float(loss)
            count += n
            correct += c
            for r in records.values():
                gates += float(r.gate.sum())
                gate_n += _valid_count(r)
    finally:
        model.train(was_training)
    result = {"loss": loss_sum / max(count, 1.0), "rate": gates / max(gate_n, 1.0)}
    result["acc"] = None if kind == "regress" else correct / max(count, 1.0)
    return result


# ----------------------------------------------------------------------------- runs
_MISSING = object()


def _stored_config(out: Path) -> dict | None:
    ckpt = out / CHECKPOINT_FILE
    if ckpt.exists():
        return None  # read with the checkpoint
    cfg = out / CONFIG_FILE
    if cfg.exists():
        try:
            return json.loads(cfg.read_text(encoding="utf-8"))
        except ValueError as err:
            raise RunFolderError(f"{str(cfg)!r} is not valid JSON ({err}); cannot resume this run") from None
    return None


def _check_resume_config(stored: dict, cfg: TrainConfig, explicit: set[str] | None) -> TrainConfig:
    """The stored run's config, after checking that ``cfg`` does not contradict it."""
    try:
        stored_cfg = config_from_dict(stored, source="the stored run's config").validate()
    except ConfigError as err:
        raise CheckpointError(f"the run's stored configuration is unusable: {err}") from None
    keys = explicit if explicit is not None else set(CONFIG_KEYS)
    new = cfg.to_dict()
    old = stored_cfg.to_dict()

    def differs(name, was, now):
        return CheckpointError(
            f"cannot resume: the run was started with {name}={was!r} but this command asks "
            f"for {name}={now!r}; use the same configuration or start a new run in another folder"
        )

    for key in sorted(keys):
        if key in RESUME_MUTABLE:
            old[key] = new[key]
        elif isinstance(new[key], dict):
            # an options table: only the entries given must agree with the stored ones
            for sub, value in sorted(new[key].items()):
                if old[key].get(sub, _MISSING) != value:
                    raise differs(f"{key}.{sub}", old[key].get(sub, "<unset>"), value)
        elif new[key] != old[key]:
            raise differs(key, old[key], new[key])
    return TrainConfig(**old)


def _check_backend_runs(cfg: TrainConfig, device: torch.device) -> None:
    """Raise before anything is written if the configured backend cannot run here."""
    if cfg.backend == "auto":
        return
    from .backends import resolve

    dtype = torch.get_default_dtype()
    resolve(cfg.backend, device, cfg.cell, cfg.gate, dtype, batch=cfg.batch_size, hidden=cfg.hidden_size)


def _first_step_notice(cfg: TrainConfig, device: torch.device, batch: int, bar, main: bool):
    """:class:`su_neuro.warmup.FirstStepNotice` of this run (prints on rank 0 only)."""
    from .warmup import FirstStepNotice, uses_numba

    numba = main and uses_numba(cfg.backend, device, cfg.cell, cfg.gate, batch=batch, hidden=cfg.hidden_size)
    write = bar.write if bar is not None else (lambda text: print(text, flush=True))
    return FirstStepNotice(numba, bar=bar, write=write)


def _failed_start(out: Path) -> bool:
    """Whether ``out`` holds only what a start that failed before its first step writes:
    ``config.json`` and a log without a single training step (no checkpoint, no result)."""
    present = {name for name in RUN_FILES if (out / name).exists()}
    if not present or not present <= {CONFIG_FILE, LOG_FILE}:
        return False
    log = out / LOG_FILE
    if not log.exists():
        return True
    try:
        events = [json.loads(line).get("event") for line in log.read_text(encoding="utf-8").splitlines() if line]
    except (ValueError, AttributeError):
        return False
    return all(event == "start" for event in events)


def _prepare_folder(out: Path, resume: bool, overwrite: bool) -> None:
    existing = [name for name in RUN_FILES if (out / name).exists()]
    if out.exists() and not out.is_dir():
        raise RunFolderError(f"{str(out)!r} exists and is not a folder")
    if existing and not resume and not overwrite:
        raise RunFolderError(
            f"{str(out)!r} already holds a run ({', '.join(existing)}); pass --resume to continue it, "
            "--overwrite to replace it, or choose another output folder"
        )


def train(
    config: TrainConfig | dict,
    out_dir: str | os.PathLike,
    *,
    resume: bool = False,
    overwrite: bool = False,
    progress: bool = True,
    explicit_keys: set[str] | None = None,
    desc: str | None = None,
    on_step: Callable[[int, dict], None] | None = None,
) -> dict:
    """Train (or resume) one run into ``out_dir``; returns the final metrics.

    Args:
        config: a :class:`TrainConfig` or a dict of its keys.
        out_dir: the run folder (created). A folder that already holds a run is refused
            unless ``resume`` (continue from its checkpoint) or ``overwrite`` (delete
            the run's files first).
        resume: continue from ``out_dir/checkpoint.pt``; the stored configuration is
            used, and keys of ``config`` named in ``explicit_keys`` must agree with it
            (except the logging / checkpoint cadence keys). Without a checkpoint the
            run starts at step 0.
        progress: show a tqdm bar (rank 0 only).
        explicit_keys: the keys the user set (default: all, i.e. ``config`` must agree
            with the stored run).
        desc: label of the progress bar.
        on_step: called as ``on_step(step, metrics)`` after every step (rank 0).

    Returns:
        ``{"step", "epoch", "train_loss", "test_loss", "test_acc", "test_rate",
        "params_sha256", "time_s", ...}`` (rank 0; other ranks get the same keys
        without test metrics).

    Under torchrun (``WORLD_SIZE`` > 1) the run uses DistributedDataParallel (gloo on
    CPU, nccl on CUDA), ``batch_size`` is the global batch and must divide by the
    number of processes; only rank 0 writes files or progress.
    """
    t_start = time.perf_counter()
    cfg = config if isinstance(config, TrainConfig) else config_from_dict(config)
    out = Path(out_dir)
    dist = distributed_env()
    if not resume and not overwrite and _failed_start(out):
        overwrite = True  # a start that failed before its first step leaves nothing worth keeping
    _prepare_folder(out, resume, overwrite)

    # Configuration of a run being resumed: the stored one, which the keys given must match.
    ckpt_path = out / CHECKPOINT_FILE
    checkpoint = None
    if resume:
        if ckpt_path.exists():
            checkpoint = load_checkpoint(ckpt_path)
            cfg = _check_resume_config(checkpoint["config"], cfg, explicit_keys)
        else:
            stored = _stored_config(out)
            if stored is not None:
                cfg = _check_resume_config(stored, cfg, explicit_keys)
            elif cfg.task is None:
                raise RunFolderError(
                    f"--resume: {str(out)!r} holds no run to continue (no {CONFIG_FILE} or "
                    f"{CHECKPOINT_FILE}); check --out, or give the run's configuration (--task ...) to start it there"
                )
    cfg.validate()
    if cfg.batch_size % dist.world_size:
        raise ConfigError(
            f"batch_size {cfg.batch_size} (the global batch) does not divide by the "
            f"{dist.world_size} processes"
        )

    device = _pick_device(cfg, dist)
    _check_backend_runs(cfg, device)
    pg_started = False
    if dist.active and not torch.distributed.is_initialized():
        backend = "nccl" if device.type == "cuda" else "gloo"
        if device.type == "cuda":
            torch.cuda.set_device(device)
        torch.distributed.init_process_group(backend=backend)
        pg_started = True
    try:
        from .denormal import flush_denormal

        with flush_denormal(cfg.flush_denormal):
            return _run(cfg, out, dist, device, checkpoint, resume, overwrite, progress, desc, on_step, t_start)
    finally:
        if pg_started:
            torch.distributed.destroy_process_group()


def _run(cfg, out, dist, device, checkpoint, resume, overwrite, progress, desc, on_step, t_start) -> dict:
    if dist.active:
        torch.distributed.barrier()  # every rank has checked the folder before rank 0 writes
    if cfg.deterministic:
        torch.use_deterministic_algorithms(True, warn_only=True)
        if device.type == "cuda":
            torch.backends.cudnn.benchmark = False
    random.seed(cfg.seed)
    np.random.seed(cfg.seed % 2**32)
    torch.manual_seed(cfg.seed)

    task = load_task(cfg)
    pad_id = getattr(task, "pad_id", 0)
    n_train = len(task.train)
    train_lengths = _dataset_lengths(task.train) if cfg.bucket_pool else None
    local_batch = cfg.batch_size // dist.world_size
    steps_per_epoch = n_train // cfg.batch_size
    if steps_per_epoch == 0:
        raise ConfigError(
            f"batch_size {cfg.batch_size} is larger than the {n_train} training samples of task {cfg.task!r}"
        )
    total_steps = cfg.epochs * steps_per_epoch
    if cfg.max_steps is not None:
        total_steps = cfg.max_steps

    model = build_model(cfg, task).to(device)
    optimizer = build_optimizer(cfg, model.parameters())
    scheduler = build_scheduler(cfg, optimizer, total_steps)
    step, epoch, position = 0, 0, 0
    sampler_seed = cfg.seed
    history: list[dict] = []
    last_train: dict = {}
    window = {"loss": 0.0, "count": 0.0, "correct": 0.0, "gates": 0.0, "gate_n": 0.0}

    if checkpoint is not None:
        sig = model_signature(model)
        if checkpoint.get("signature") != sig:
            raise CheckpointError(_signature_mismatch(checkpoint.get("signature") or {}, sig))
        model.load_state_dict(checkpoint["model"])
        optimizer.load_state_dict(checkpoint["optimizer"])
        scheduler.load_state_dict(checkpoint["scheduler"])
        _set_rng_state(checkpoint["rng"])
        data = checkpoint["data"]
        step, epoch, position, sampler_seed = data["step"], data["epoch"], data["position"], data["sampler_seed"]
        history = list(checkpoint.get("metrics", []))
        last_train = dict(checkpoint.get("last_train", {}))
        window = dict(checkpoint.get("window", window))

    main = dist.is_main
    if main:
        out.mkdir(parents=True, exist_ok=True)
        if overwrite and not resume:
            for name in RUN_FILES:
                (out / name).unlink(missing_ok=True)
        if not (out / CONFIG_FILE).exists() or not resume:
            _atomic_write_json(out / CONFIG_FILE, cfg.to_dict())
    log = _Log(out / LOG_FILE if main else None)
    if resume and main and (checkpoint is not None or (out / LOG_FILE).stat().st_size > 0):
        log.write({"event": "resume", "step": step, "epoch": epoch})
    elif main:
        log.write({"event": "start", "step": 0, "world_size": dist.world_size, "config": cfg.to_dict()})

    net: nn.Module = model
    if dist.active:
        net = nn.parallel.DistributedDataParallel(
            model, device_ids=[device.index] if device.type == "cuda" else None
        )

    def checkpoint_state() -> dict:
        return {
            "config": cfg.to_dict(),
            "signature": model_signature(model),
            "model": model.state_dict(),
            "optimizer": optimizer.state_dict(),
            "scheduler": scheduler.state_dict(),
            "rng": _rng_state(),
            "data": {"step": step, "epoch": epoch, "position": position, "sampler_seed": sampler_seed},
            "metrics": history,
            "last_train": last_train,
            "window": window,
            "world_size": dist.world_size,
            "torch_version": str(torch.__version__),
        }

    bar = None
    if main and progress:
        from tqdm.auto import tqdm

        bar = tqdm(total=total_steps, initial=step, desc=desc or cfg.task, unit="step", dynamic_ncols=True)
    first_step = _first_step_notice(cfg, device, local_batch, bar, main)
    net.train()
    try:
        while step < total_steps:
            order_epoch = epoch
            if train_lengths is not None:
                order = bucket_order(sampler_seed, epoch, train_lengths, cfg.batch_size, cfg.bucket_pool)
            else:
                order = epoch_order(sampler_seed, epoch, n_train)
            while epoch == order_epoch and step < total_steps:
                idx = order[position * cfg.batch_size:(position + 1) * cfg.batch_size]
                mine = idx[dist.rank * local_batch:(dist.rank + 1) * local_batch]
                x, y, lengths = _collate([task.train[int(i)] for i in mine], pad_id)
                x, y = x.to(device), y.to(device)
                with first_step:  # a slow first step (compilation) is announced; the ETA restarts after it
                    stats = _train_step(net, model, optimizer, scheduler, cfg, task.kind, x, y, dist, lengths)
                step += 1
                position += 1
                if position == steps_per_epoch:
                    epoch, position = epoch + 1, 0
                for key in window:
                    window[key] += stats[key]
                if bar is not None:
                    bar.update(1)
                    bar.set_postfix(_postfix(stats, task.kind), refresh=False)
                if step % cfg.log_every == 0 or step == total_steps:
                    last_train = _summarise(window, task.kind)
                    last_train.update(step=step, epoch=epoch, lr=scheduler.get_last_lr()[0])
                    log.write({"event": "train", **last_train})
                    window = dict.fromkeys(window, 0.0)
                if cfg.eval_every and step % cfg.eval_every == 0 and step < total_steps and main:
                    ev = evaluate(model, task.test, task.kind, cfg.eval_batch_size, device, pad_id=pad_id)
                    rec = {"step": step, "epoch": epoch, **{f"test_{k}": v for k, v in ev.items()}}
                    history.append(rec)
                    log.write({"event": "eval", **rec})
                    if bar is not None:
                        bar.write(f"step {step}: test loss {ev['loss']:.4f}" + _acc_text(ev))
                if cfg.checkpoint_every and step % cfg.checkpoint_every == 0 and step < total_steps and main:
                    save_checkpoint(out / CHECKPOINT_FILE, checkpoint_state())
                    msg = f"checkpoint: step {step} -> {out / CHECKPOINT_FILE}"
                    (bar.write(msg) if bar is not None else print(msg, flush=True))
                if on_step is not None and main:
                    on_step(step, stats)
    finally:
        if bar is not None:
            bar.close()

    result: dict[str, Any] = {"step": step, "epoch": epoch}
    result.update({f"train_{k}": v for k, v in last_train.items() if k in ("loss", "acc", "rate")})
    if main:
        ev = evaluate(model, task.test, task.kind, cfg.eval_batch_size, device, pad_id=pad_id)
        rec = {"step": step, "epoch": epoch, **{f"test_{k}": v for k, v in ev.items()}}
        if not history or history[-1].get("step") != step:
            history.append(rec)
        log.write({"event": "eval", **rec})
        result.update({f"test_{k}": v for k, v in ev.items()})
        result["params_sha256"] = params_digest(model)
        save_checkpoint(out / CHECKPOINT_FILE, checkpoint_state())
        if cfg.trace:
            result["trace"] = str(export_trace(model, task, cfg, out / TRACE_FILE, device))
        result["time_s"] = round(time.perf_counter() - t_start, 3)
        _atomic_write_json(out / RESULT_FILE, result)
        log.write({"event": "end", **{k: v for k, v in result.items() if k != "time_s"}})
    log.close()
    if dist.active:
        torch.distributed.barrier()
    return result


def _train_step(net, model, optimizer, scheduler, cfg, kind, x, y, dist, lengths=None) -> dict:
    out, records = net(x, record=True, lengths=lengths)
    loss_sum, count, correct = _batch_stats(out, y, kind)
    gates = _gate_tensors(records)
    # padded steps are not part of any sequence: means over the valid steps only
    valid = [_valid_count(r) for r in records.values()]
    local_means = torch.stack([g.detach().float().sum() / n for g, n in zip(gates, valid, strict=True)])
    gate_sum = float(sum(float(g.detach().sum()) for g in gates))
    gate_n = float(sum(valid))
    totals = torch.tensor(
        [float(loss_sum.detach()), count, correct, gate_sum, gate_n], dtype=torch.float64, device=x.device
    )
    means = local_means.double().clone()
    if dist.active:
        packed = torch.cat([totals, means])
        torch.distributed.all_reduce(packed)
        totals, means = packed[:5], packed[5:] / dist.world_size
    n_global = float(totals[1])
    loss = loss_sum * (dist.world_size / max(n_global, 1.0))
    if cfg.rate_weight > 0:
        if dist.active:
            # (mean_global - r)^2 with the local first-order term: after DDP's averaging the
            # gradient is 2 (mean_global - r) d mean_global, as for one process.
            penalty = sum(
                (float(m) - cfg.rate_target) ** 2
                + 2.0 * (float(m) - cfg.rate_target) * (g.float().sum() - g.detach().float().sum()) / n
                for m, g, n in zip(means, gates, valid, strict=True)
            )
            loss = loss + cfg.rate_weight * penalty
        else:
            loss = loss + cfg.rate_weight * sum(
                (g.float().sum() / n - cfg.rate_target) ** 2 for g, n in zip(gates, valid, strict=True)
            )
    optimizer.zero_grad(set_to_none=True)
    loss.backward()
    if cfg.grad_clip is not None:
        nn.utils.clip_grad_norm_(model.parameters(), cfg.grad_clip)
    optimizer.step()
    scheduler.step()
    if not math.isfinite(float(totals[0])):
        raise RuntimeError("the training loss is NaN or inf; lower lr or set grad_clip")
    return {
        "loss": float(totals[0]),
        "count": float(totals[1]),
        "correct": float(totals[2]),
        "gates": float(totals[3]),
        "gate_n": float(totals[4]),
    }


def _summarise(window: dict, kind: str) -> dict:
    res = {"loss": window["loss"] / max(window["count"], 1.0), "rate": window["gates"] / max(window["gate_n"], 1.0)}
    res["acc"] = None if kind == "regress" else window["correct"] / max(window["count"], 1.0)
    return res


def _postfix(stats: dict, kind: str) -> dict:
    s = _summarise(stats, kind)
    post = {"loss": f"{s['loss']:.4f}"}
    if s["acc"] is not None:
        post["acc"] = f"{s['acc']:.3f}"
    post["rate"] = f"{s['rate']:.3f}"
    return post


def _acc_text(ev: dict) -> str:
    return f", accuracy {ev['acc']:.4f}" if ev.get("acc") is not None else ""


def _signature_mismatch(stored: dict, here: dict) -> str:
    for name in sorted(set(stored) | set(here)):
        if name not in here:
            return f"the checkpoint belongs to another model: it holds {name!r}, which this model lacks"
        if name not in stored:
            return f"the checkpoint belongs to another model: it lacks {name!r}"
        if stored[name] != here[name]:
            return (
                f"the checkpoint belongs to another model: {name} has shape {tuple(stored[name])} "
                f"there but {tuple(here[name])} here"
            )
    return "the checkpoint belongs to another model"


# ---------------------------------------------------------------------------- traces
def export_trace(model: nn.Module, task, cfg: TrainConfig, path: Path, device=None, samples: int | None = None) -> Path:
    """Record the model on the first ``trace_samples`` test samples into an HDF5 trace.

    Uses :class:`su_neuro.traces.TraceWriter`; raises RuntimeError naming the problem when
    the trace writer cannot be imported (h5py missing).
    """
    try:
        from .traces import TraceWriter
    except ImportError as err:
        raise RuntimeError(f"trace export needs su_neuro.traces, which cannot be imported: {err}") from None
    device = device or next(model.parameters()).device
    n = min(samples or cfg.trace_samples, len(task.test))
    if n == 0:
        raise RuntimeError("trace export: the test split is empty")
    meta = {"task": cfg.task, "seed": cfg.seed, "backend": cfg.backend}
    tmp = path.with_name(f".{path.name}.tmp-{os.getpid()}")
    model_was_training = model.training
    model.eval()
    pad_id = getattr(task, "pad_id", 0)
    items = [task.test[i] for i in range(n)]
    longest = max(it[0].shape[0] for it in items)
    ragged = any(it[0].shape[0] != longest for it in items)
    try:
        with torch.no_grad(), TraceWriter(
            tmp, layers=model.layer_meta(), config=cfg.to_dict(), run_meta=meta
        ) as writer:
            for start in range(0, n, cfg.eval_batch_size):
                batch = items[start:start + cfg.eval_batch_size]
                if ragged:
                    # every batch padded to the longest exported sample: one T for the trace
                    from .datasets import pad_collate

                    x, y, lengths = pad_collate(batch + [_pad_item(items, longest)], pad_id=pad_id)
                    x, y, lengths = x[:-1], y[:-1], lengths[:-1]
                else:
                    x, y, lengths = _collate(batch, pad_id)
                x = x.to(device)
                _, records = model(x, record=True, lengths=lengths)
                # the inputs the stack sees (token models: the embedding; zero on padded steps)
                inputs = model.embed(x) if getattr(model, "embed", None) is not None else x
                if lengths is not None:
                    from .layers import valid_mask

                    inputs = inputs * valid_mask(lengths, inputs.shape[1], inputs.device).unsqueeze(-1)
                writer.append(records, labels=y.cpu(), inputs=inputs.cpu(), lengths=lengths)
        os.replace(tmp, path)
    finally:
        model.train(model_was_training)
        if tmp.exists():
            tmp.unlink()
    return path


def _pad_item(items, longest: int):
    """A throw-away item of ``longest`` steps that makes pad_collate pad to that length."""
    x, y = next(it for it in items if it[0].shape[0] == longest)
    return x, y


def load_model(path: str | os.PathLike, map_location="cpu") -> tuple[nn.Module, TrainConfig]:
    """The trained model of a checkpoint (or a run folder holding ``checkpoint.pt``) and its config.

    Example:
        >>> model, cfg = load_model("runs/copy/checkpoint.pt")
        >>> logits = model(x)
    """
    path = Path(path)
    if path.is_dir():
        path = path / "checkpoint.pt"
    checkpoint = load_checkpoint(path, map_location=map_location)
    cfg = config_from_dict(checkpoint["config"], source=str(path))
    model = build_model(cfg, load_task(cfg))
    if checkpoint.get("signature") != model_signature(model):
        raise CheckpointError(_signature_mismatch(checkpoint.get("signature") or {}, model_signature(model)))
    model.load_state_dict(checkpoint["model"])
    return model.eval(), cfg
