"""The run folder: what :func:`su_neuro.train.train` checks before it writes, and its metrics log.

Holds :class:`RunFolderError`, the refusal to overwrite a run, the recognition of a start that
failed before its first step, the stored configuration that ``--resume`` must agree with (all
keys but :data:`~su_neuro.train.config.RESUME_MUTABLE` and the data's folders,
:data:`~su_neuro.train.config.RESUME_LOCATIONS`), and the append-only JSONL log.
"""

from __future__ import annotations

import json
from pathlib import Path

from .checkpoint import CheckpointError
from .config import (
    CHECKPOINT_FILE,
    CONFIG_FILE,
    CONFIG_KEYS,
    LOG_FILE,
    RESUME_LOCATIONS,
    RESUME_MUTABLE,
    RUN_FILES,
    ConfigError,
    TrainConfig,
    config_from_dict,
)


class RunFolderError(RuntimeError):
    """The run folder holds a run that this command would overwrite."""


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
                was = old[key].get(sub, _MISSING)
                if was == value:
                    continue
                if (key == "task_options" and sub in RESUME_LOCATIONS
                        and (sub != "mnist_root" or (was is not _MISSING and was is not None and value is not None))):
                    old[key] = {**old[key], sub: value}  # the same data in another folder
                    continue
                raise differs(f"{key}.{sub}", old[key].get(sub, "<unset>"), value)
        elif new[key] != old[key]:
            raise differs(key, old[key], new[key])
    return TrainConfig(**old)


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
