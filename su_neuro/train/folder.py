"""The run folder: what :func:`su_neuro.train.train` checks before it writes, and its metrics log.

Holds :class:`RunFolderError`, the refusal to overwrite a run, the recognition of a start that
failed before its first step, the stored configuration that ``--resume`` must agree with (all
keys but :data:`~su_neuro.train.config.RESUME_MUTABLE` and the data's folders,
:data:`~su_neuro.train.config.RESUME_LOCATIONS`), and the append-only JSONL log.
"""

from __future__ import annotations

import contextlib
import json
import os
from collections.abc import Iterator
from pathlib import Path

from .. import _files
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
        if path is not None:
            _drop_torn_line(path)
        self._fh = open(path, "a", encoding="utf-8") if path is not None else None

    def write(self, record: dict) -> None:
        if self._fh is not None:
            self._fh.write(json.dumps(record, sort_keys=True) + "\n")
            self._fh.flush()

    def close(self) -> None:
        if self._fh is not None:
            self._fh.close()
            self._fh = None


def _drop_torn_line(path: Path) -> None:
    """Cut a log back to its last complete line: a write cut off (power loss, a full disk)
    would otherwise glue the next run's first record onto the fragment, and both be lost."""
    try:
        with open(path, "rb+") as fh:
            size = fh.seek(0, os.SEEK_END)
            if size == 0:
                return
            fh.seek(size - 1)
            if fh.read(1) == b"\n":
                return
            start = max(0, size - (1 << 20))  # a line of the log is far shorter
            fh.seek(start)
            cut = fh.read().rfind(b"\n")
            if cut >= 0 or start == 0:
                fh.truncate(start + cut + 1)  # cut = -1 with start 0: the file is one torn line
    except FileNotFoundError:
        return


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


def _check_resume_config(stored: dict, cfg: TrainConfig, explicit: set[str] | None,
                         source: str = "the stored run's config") -> TrainConfig:
    """The stored run's config, after checking that ``cfg`` does not contradict it.
    ``source`` names where the stored config was read (a file)."""
    unknown = sorted(set(stored) - set(CONFIG_KEYS)) if isinstance(stored, dict) else []
    if unknown:
        from .. import __version__

        raise CheckpointError(f"the configuration in {source} has keys this su_neuro ({__version__}) does not "
                              f"know: {', '.join(unknown)}; was it written by a newer su_neuro (resume it with "
                              "that one), or is it not a su_neuro configuration?")
    try:
        stored_cfg = config_from_dict(stored, source=source).validate()
    except ConfigError as err:
        raise CheckpointError(f"the run's stored configuration ({source}) is unusable: {err}") from None
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
            # an options table: only the entries given must agree with the stored ones (an
            # unset task option is its default)
            defaults = _task_defaults(old["task"]) if key == "task_options" else {}
            for sub, value in sorted(new[key].items()):
                was = old[key].get(sub, defaults.get(sub, _MISSING))
                if was == value:
                    continue
                if (key == "task_options" and sub in RESUME_LOCATIONS
                        and (sub != "mnist_root" or (was is not _MISSING and was is not None and value is not None))):
                    old[key] = {**old[key], sub: value}  # the same data in another folder
                    continue
                raise differs(f"{key}.{sub}", "<unset>" if was is _MISSING else was, value)
        elif new[key] != old[key]:
            raise differs(key, old[key], new[key])
    return TrainConfig(**old)


def _task_defaults(task: str | None) -> dict:
    from ..datasets import task_options

    try:
        return task_options(task) if task else {}
    except ValueError:
        return {}


def _failed_start(out: Path) -> bool:
    """Whether ``out`` holds exactly what a start that failed before its first step writes:
    the log with only ``start`` lines, the first carrying the configuration that
    ``config.json`` holds (no checkpoint, no result). A ``config.json`` of something else,
    or an empty log, is not one: it is kept, and the run refused."""
    present = {name for name in RUN_FILES if (out / name).exists()}
    if LOG_FILE not in present or not present <= {CONFIG_FILE, LOG_FILE}:
        return False
    try:
        lines = [json.loads(line) for line in (out / LOG_FILE).read_text(encoding="utf-8").splitlines() if line]
        stored = json.loads((out / CONFIG_FILE).read_text(encoding="utf-8")) if CONFIG_FILE in present else None
    except (OSError, ValueError):
        return False
    if not lines or not all(isinstance(line, dict) and line.get("event") == "start" for line in lines):
        return False
    return stored is None or lines[0].get("config") == stored


def _check_config_file(out: Path, stored: dict) -> None:
    """Refuse a run whose ``config.json`` disagrees with its checkpoint's configuration on a
    key that fixes the trajectory (an edit by hand would otherwise be ignored silently)."""
    path = out / CONFIG_FILE
    if not path.exists():
        return
    try:
        on_disk = json.loads(path.read_text(encoding="utf-8"))
    except (OSError, ValueError) as err:
        raise RunFolderError(f"{str(path)!r} is not valid JSON ({err}); cannot resume this run") from None
    if not isinstance(on_disk, dict):
        raise RunFolderError(f"{str(path)!r} is not a configuration (a JSON object); cannot resume this run")
    try:  # both with every key and its default filled in, as JSON holds them
        a_cfg = json.loads(json.dumps(config_from_dict(on_disk, source=str(path)).to_dict()))
        b_cfg = json.loads(json.dumps(config_from_dict(stored, source="the checkpoint").to_dict()))
    except ConfigError as err:
        raise RunFolderError(f"cannot resume: {err}") from None
    for key in sorted(a_cfg):
        if key in RESUME_MUTABLE:
            continue
        a, b = a_cfg[key], b_cfg[key]
        if key == "task_options":
            a = {k: v for k, v in a.items() if k not in RESUME_LOCATIONS}
            b = {k: v for k, v in b.items() if k not in RESUME_LOCATIONS}
        if a != b:
            raise RunFolderError(
                f"{str(path)!r} says {key}={a!r} but the run's checkpoint was trained with {key}={b!r} "
                f"(was {CONFIG_FILE} edited by hand?); a run cannot change it: restore {CONFIG_FILE}, or start a "
                "new run in another folder")


LOCK_FILE = ".su_neuro.lock"
"""The file a run holds locked in its folder (removed when the run ends)."""


@contextlib.contextmanager
def folder_lock(out: Path, hold: bool = True) -> Iterator[None]:
    """Hold an exclusive lock on the run folder ``out`` (created if missing) for the ``with``
    block: a second ``su-neuro train`` into the same folder is refused instead of mixing its
    log and checkpoints with this run's, or deleting them. The lock is ``flock`` on the file
    ``out/.su_neuro.lock`` (on NFS the kernel emulates it with record locks, which hold across
    machines), released when the process ends however it ends, and the file removed when
    the block ends. Folders this call created are removed again if the block leaves them
    empty (a refused run). ``hold=False`` (the other ranks of a multi-process run), or a
    system without ``fcntl`` (Windows): nothing is locked."""
    if not hold or _files.fcntl is None:
        yield
        return
    out = Path(os.path.normpath(os.path.abspath(out)))  # "x/../y" must not create x
    if out.exists() and not out.is_dir():
        raise RunFolderError(f"{str(out)!r} exists and is not a folder")
    created = [p for p in (out, *out.parents) if not p.exists()]
    out.mkdir(parents=True, exist_ok=True)
    lock = out / LOCK_FILE
    fd = None
    try:
        fd = _files.acquire(lock, lambda: RunFolderError(
            f"another process is training into {str(out)!r} (it holds {LOCK_FILE}); wait for it to end, or "
            "choose another output folder"), f"the run folder {out}", stacklevel=4)
        yield
    finally:
        _files.release(lock, fd)
        for folder in created:  # innermost first; only those left empty
            try:
                folder.rmdir()
            except OSError:
                break


def remove_stale_temporaries(out: Path) -> list[Path]:
    """Delete the temporary files (``.<run file>.tmp-<pid>``) that a run killed while writing
    left in ``out``; call it holding :func:`folder_lock` (no other run writes there)."""
    removed = []
    for name in RUN_FILES:
        for path in out.glob(f".{name}.tmp-*"):
            with contextlib.suppress(OSError):
                path.unlink()
                removed.append(path)
    return removed


def _prepare_folder(out: Path, resume: bool, overwrite: bool) -> None:
    existing = [name for name in RUN_FILES if (out / name).exists()]
    if out.exists() and not out.is_dir():
        raise RunFolderError(f"{str(out)!r} exists and is not a folder")
    if existing and not resume and not overwrite:
        raise RunFolderError(
            f"{str(out)!r} already holds a run ({', '.join(existing)}); pass --resume to continue it, "
            "--overwrite to replace it, or choose another output folder"
        )
