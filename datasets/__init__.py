"""Tasks for su_neuro: generated sequence tasks, sequential MNIST and tonic-backed neuromorphic sets.

``get_task(name, **options) -> Task``; every split yields ``(x (T, F) float32, y)``.
Importing this package loads neither tonic nor mlxtend; they load when a task needs them.
"""

from ._common import IGNORE_INDEX, DatasetNotFoundError, Task, default_root, pad_collate
from .registry import get_task, list_tasks, task_options

__all__ = [
    "IGNORE_INDEX",
    "DatasetNotFoundError",
    "Task",
    "default_root",
    "get_task",
    "list_tasks",
    "pad_collate",
    "task_options",
]
