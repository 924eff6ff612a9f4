"""One registry of tasks: :func:`get_task` and :func:`list_tasks`."""

from __future__ import annotations

import functools
import inspect

from . import listops, mnist, neuromorphic, synthetic
from ._common import Task

_GENERATED = {
    "copy": synthetic.copy_task,
    "selective_copy": synthetic.selective_copy_task,
    "adding": synthetic.adding_task,
    "smnist": mnist.smnist_task,
    "psmnist": mnist.psmnist_task,
    "listops": listops.listops_task,
    "listops_short": listops.listops_short_task,
}


def _builders() -> dict:
    builders = dict(_GENERATED)
    for name in neuromorphic.NEUROMORPHIC_TASKS:
        builders[name] = functools.partial(neuromorphic.neuromorphic_task, name)
    return builders


_BUILDERS = _builders()


def list_tasks() -> list[str]:
    """Names accepted by :func:`get_task`."""
    return list(_BUILDERS)


def task_options(name: str) -> dict:
    """``{option: default}`` accepted by task ``name``."""
    builder = _builder(name)
    params = inspect.signature(builder).parameters
    return {k: p.default for k, p in params.items() if p.kind is inspect.Parameter.KEYWORD_ONLY}


def _builder(name: str):
    try:
        return _BUILDERS[name]
    except (KeyError, TypeError):
        raise ValueError(f"unknown task {name!r}; valid tasks: {', '.join(_BUILDERS)}") from None


def get_task(name: str, **options) -> Task:
    """Build task ``name`` with keyword ``options``.

    Generated: ``copy``, ``selective_copy``, ``adding``, ``smnist``, ``psmnist``, ``listops``,
    ``listops_short`` (token tasks).
    Neuromorphic (tonic, offline files under ``root``): ``shd``, ``ssc``, ``nmnist``,
    ``dvsgesture``, ``tonic_smnist``. See ``docs/datasets.md`` for every option.

    Raises:
        ValueError: unknown ``name`` (lists the valid ones) or an impossible size (names it).
        TypeError: an option the task does not take (names it).
        DatasetNotFoundError: a neuromorphic / MNIST source is not on disk (names the paths).

    Example:
        >>> task = get_task("copy", delay=20, n_train=64, n_test=16)
        >>> x, y = task.train[0]
        >>> x.shape, y.shape, task.kind
        (torch.Size([41, 10]), torch.Size([41]), 'seq2seq')
    """
    builder = _builder(name)
    valid = task_options(name)
    unknown = sorted(set(options) - set(valid))
    if unknown:
        raise TypeError(
            f"task {name!r} got unknown option(s) {', '.join(map(repr, unknown))}; "
            f"valid options: {', '.join(valid)}"
        )
    return builder(**options)
