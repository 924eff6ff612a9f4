"""Checkpoints and the files a run writes atomically.

Holds the checkpoint format (:func:`save_checkpoint` / :func:`load_checkpoint`, with a
SHA-256 over the payload), :class:`CheckpointError`, atomic file writes, the torch / numpy /
python RNG state a checkpoint carries, the model signature and parameter digest, and
:func:`load_model`, which rebuilds the trained model of a checkpoint.
"""

from __future__ import annotations

import hashlib
import io
import json
import os
import pickle
import random
from pathlib import Path
from types import SimpleNamespace

import numpy as np
import torch
from torch import nn

from .._files import errors_named, fsync_dir
from .build import build_model, load_task
from .config import TrainConfig, config_from_dict

CHECKPOINT_FORMAT = "su_neuro.checkpoint"
CHECKPOINT_VERSION = 1


class CheckpointError(RuntimeError):
    """A checkpoint is missing, corrupt, truncated or belongs to another model."""


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


def atomic_write_bytes(path: str | os.PathLike, data: bytes) -> None:
    """Write ``data`` to ``path`` atomically: temp file in the same folder, fsync, rename.

    A reader (or a crash) sees either the old file or the new one, never a partial one.
    """
    path = Path(path)
    tmp = path.with_name(f".{path.name}.tmp-{os.getpid()}")
    try:
        with errors_named(path):
            with open(tmp, "wb") as fh:
                fh.write(data)
                fh.flush()
                os.fsync(fh.fileno())
            os.replace(tmp, path)
    finally:
        if tmp.exists():
            tmp.unlink()
    fsync_dir(path.parent)


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
    if path.is_dir():
        raise CheckpointError(f"checkpoint {str(path)!r} is a folder, not a checkpoint file")
    if not path.is_file():
        raise CheckpointError(f"checkpoint {str(path)!r} does not exist")
    with open(path, "rb") as fh:
        magic = fh.read(4)
    if magic != b"PK\x03\x04":  # torch.save writes a zip archive
        what = "is empty" if not magic else "is not a torch file (no zip archive)"
        raise CheckpointError(f"checkpoint {str(path)!r} {what}: not a su_neuro training checkpoint")
    try:
        outer = torch.load(path, map_location="cpu", weights_only=True)
    except pickle.UnpicklingError:  # a torch file of other objects than tensors and plain data
        raise CheckpointError(f"{str(path)!r} is not a su_neuro training checkpoint (it holds Python objects "
                              "that a checkpoint never holds)") from None
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


def seed_torch(seed: int, device: torch.device) -> None:
    """Seed torch's CPU stream, and the CUDA streams for a run on CUDA only
    (``torch.manual_seed`` would also seed a CPU run's CUDA streams, or queue the seed for
    when CUDA starts, which the caller's later CUDA work would then draw from)."""
    torch.default_generator.manual_seed(seed)
    if device.type == "cuda":
        torch.cuda.manual_seed_all(seed)


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


def require(checkpoint: dict, keys, path: Path) -> None:
    """Refuse a checkpoint that lacks any of ``keys``, naming the file and the keys."""
    missing = [key for key in keys if key not in checkpoint]
    if missing:
        raise CheckpointError(f"checkpoint {str(path)!r} lacks {', '.join(missing)}: it is not the checkpoint of "
                              "a training run")


TASK_SHAPE_KEYS = ("kind", "input_size", "output_size", "vocab_size", "pad_id")


def task_shape(task) -> dict:
    """What building a task's model needs of it (stored in checkpoints: a model loads without
    the task's data)."""
    return {key: getattr(task, key, None) for key in TASK_SHAPE_KEYS}


def restore_model(model: nn.Module, checkpoint: dict, path: Path) -> None:
    """Load a checkpoint's parameters into ``model``, refusing one of another model with a
    message that names the checkpoint and the first difference."""
    sig = model_signature(model)
    if checkpoint.get("signature") != sig:
        raise CheckpointError(f"{path}: " + _signature_mismatch(checkpoint.get("signature") or {}, sig))
    try:
        model.load_state_dict(checkpoint["model"])
    except (RuntimeError, KeyError, TypeError) as err:
        first = str(err).strip().splitlines()
        raise CheckpointError(f"{path}: its parameters do not fit the model "
                              f"({first[0] if first else type(err).__name__})") from None


def load_model(path: str | os.PathLike, map_location="cpu", *, backend: str | None = None
               ) -> tuple[nn.Module, TrainConfig]:
    """The trained model of a checkpoint (or a run folder holding ``checkpoint.pt``) and its config.

    ``backend`` replaces the run's backend (``"auto"`` to run a model trained with
    ``"triton"`` on a CPU); the model's parameters go to ``map_location``. Checkpoints
    written since 2026-12-07 carry their task's sizes, so the model loads without the
    task's data; older ones build the task to learn them.

    Example:
        >>> model, cfg = load_model("runs/copy/checkpoint.pt", backend="auto")
        >>> logits = model(x)
    """
    path = Path(path)
    if path.is_dir():
        path = path / "checkpoint.pt"
    checkpoint = load_checkpoint(path, map_location=map_location)
    require(checkpoint, ("config", "model"), path)
    stored = dict(checkpoint["config"])
    if backend is not None:
        stored["backend"] = backend
    cfg = config_from_dict(stored, source=str(path))
    shape = checkpoint.get("task")
    task = SimpleNamespace(**shape) if isinstance(shape, dict) else load_task(cfg)
    model = build_model(cfg, task)
    restore_model(model, checkpoint, path)
    if not isinstance(map_location, dict | type(None)) and not callable(map_location):
        model.to(map_location)
    return model.eval(), cfg
