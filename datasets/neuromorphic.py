"""Neuromorphic data sets through tonic: SHD, SSC, N-MNIST, DVS Gesture and tonic's spiking sMNIST.

tonic's own loaders read the files; this module only

1. checks that the files are on disk *before* a loader is built and raises
   :class:`DatasetNotFoundError` naming the exact paths otherwise (tonic would try to download);
2. builds the loader from a same-named subclass whose ``download`` raises, so it never touches the
   network (tonic's ``_check_exists`` also wants the downloaded archive, e.g. ``shd_train.h5.zip``,
   which an offline copy need not have; our own check replaces it);
3. bins each sample's events into ``n_time_bins`` frames with ``tonic.transforms.ToFrame`` and
   flattens the sensor: ``x (n_time_bins, P * H * W)`` float32 event counts, ``y`` int.

Binning. tonic's ``ToFrame(n_time_bins=n)`` floors the bin width and never counts the last event(s)
of a recording, so :class:`EventFrames` uses ``ToFrame(time_window=w, start_time, end_time)`` with an
integer width ``w`` chosen per sample such that exactly ``n`` bins cover every event:

- ``duration=None`` (default): the bins span the sample's own events, first to last,
  ``w = (t_last - t_first) // n + 1``;
- ``duration=D`` (microseconds): a fixed axis from t = 0, ``w = ceil(D / n)``; events at or after
  ``n * w`` are dropped.
"""

from __future__ import annotations

import functools
import math
from dataclasses import dataclass
from pathlib import Path

import numpy as np
import torch
from torch.utils.data import Dataset

from ._common import DatasetNotFoundError, Task, check_int, default_root


class EventFrames:
    """Events (tonic structured array) -> frames ``(n_time_bins, prod(sensor_size))`` float32.

    Args:
        sensor_size: ``(W, H, P)`` as in tonic (``(700, 1, 1)`` for SHD).
        n_time_bins: number of frames ``T``.
        duration: ``None`` to span each recording's events, or a fixed length in microseconds
            starting at t = 0 (see the module docstring).
    """

    def __init__(self, sensor_size, n_time_bins: int, duration: int | None = None):
        self.sensor_size = tuple(int(s) for s in sensor_size)
        self.n_time_bins = n_time_bins
        self.duration = duration

    def __call__(self, events) -> np.ndarray:
        from tonic.transforms import ToFrame

        n = self.n_time_bins
        features = math.prod(self.sensor_size)
        if len(events) == 0:
            return np.zeros((n, features), dtype=np.float32)
        if self.duration is None:
            start = int(events["t"][0])
            width = (int(events["t"][-1]) - start) // n + 1
        else:
            start = 0
            width = -(-self.duration // n)
        to_frame = ToFrame(
            sensor_size=self.sensor_size,
            time_window=width,
            start_time=start,
            end_time=start + n * width,
        )
        frames = to_frame(events)
        return frames.reshape(n, features).astype(np.float32)

    def __repr__(self) -> str:
        return (
            f"EventFrames(sensor_size={self.sensor_size}, n_time_bins={self.n_time_bins}, "
            f"duration={self.duration})"
        )


class FrameDataset(Dataset):
    """Torch view of a tonic data set whose transform yields ``(T, F)`` float32 frames.

    ``tonic_dataset`` is the underlying tonic loader (``classes``, ``targets``, ... live there).
    Items: ``(x (T, F) float32 tensor, y int)``.
    """

    def __init__(self, source, tonic_dataset):
        self.source = source
        self.tonic_dataset = tonic_dataset

    def __len__(self) -> int:
        return len(self.source)

    def __getitem__(self, index):
        frames, target = self.source[index]
        return torch.from_numpy(np.asarray(frames, dtype=np.float32)), int(target)


@dataclass(frozen=True)
class _Spec:
    """How one tonic data set lies on disk: ``<root>/<folder>/<split file or folder>``."""

    tonic_class: str
    folder: str
    splits: dict  # split -> (kwargs for the tonic constructor, required paths relative to folder)
    kind: str  # "files": each required path is a file; "tree": a folder holding >= 1 `suffix` file
    suffix: str
    n_classes: int
    layout: str  # what to place where, for the error message
    source: str


_SPECS = {
    "shd": _Spec(
        "SHD",
        "SHD",
        {
            "train": ({"train": True}, ("shd_train.h5",)),
            "test": ({"train": False}, ("shd_test.h5",)),
        },
        "files",
        ".h5",
        20,
        "the unzipped HDF5 files shd_train.h5 and shd_test.h5",
        "https://zenkelab.org/datasets/ (shd_train.h5.zip, shd_test.h5.zip)",
    ),
    "ssc": _Spec(
        "SSC",
        "SSC",
        {
            "train": ({"split": "train"}, ("ssc_train.h5",)),
            "valid": ({"split": "valid"}, ("ssc_valid.h5",)),
            "test": ({"split": "test"}, ("ssc_test.h5",)),
        },
        "files",
        ".h5",
        35,
        "the unzipped HDF5 files ssc_train.h5, ssc_valid.h5 and ssc_test.h5",
        "https://zenkelab.org/datasets/ (ssc_*.h5.zip)",
    ),
    "nmnist": _Spec(
        "NMNIST",
        "NMNIST",
        {"train": ({"train": True}, ("Train",)), "test": ({"train": False}, ("Test",))},
        "tree",
        ".bin",
        10,
        "the extracted folders Train/<digit>/*.bin and Test/<digit>/*.bin (digit folders 0..9)",
        "https://www.garrickorchard.com/datasets/n-mnist (train.zip, test.zip)",
    ),
    "dvsgesture": _Spec(
        "DVSGesture",
        "DVSGesture",
        {
            "train": ({"train": True}, ("ibmGestureTrain",)),
            "test": ({"train": False}, ("ibmGestureTest",)),
        },
        "tree",
        ".npy",
        11,
        "tonic's preprocessed folders ibmGestureTrain/userXX_<lighting>/<label>.npy and "
        "ibmGestureTest/... (extracted from ibmGestureTrain.tar.gz and ibmGestureTest.tar.gz)",
        "https://figshare.com/ndownloader/files/38022171 (train), .../38020584 (test)",
    ),
    "tonic_smnist": _Spec(
        "SMNIST",
        "smnist",
        {
            "train": ({"train": True}, ("train-images-idx3-ubyte", "train-labels-idx1-ubyte")),
            "test": ({"train": False}, ("t10k-images-idx3-ubyte", "t10k-labels-idx1-ubyte")),
        },
        "files",
        "",
        10,
        "the four uncompressed MNIST idx files train-images-idx3-ubyte, "
        "train-labels-idx1-ubyte, t10k-images-idx3-ubyte, t10k-labels-idx1-ubyte",
        "any MNIST mirror (gunzip the .gz files)",
    ),
}

NEUROMORPHIC_TASKS = tuple(_SPECS)


def _missing(spec: _Spec, base: Path, required) -> list[Path]:
    missing = []
    for rel in required:
        path = base / rel
        if spec.kind == "files":
            if not path.is_file():
                missing.append(path)
        elif not path.is_dir() or next(path.rglob(f"*{spec.suffix}"), None) is None:
            missing.append(path)
    return missing


def check_files(name: str, root: str | Path | None = None, splits=None) -> Path:
    """Raise :class:`DatasetNotFoundError` unless data set ``name``'s files are under ``root``.

    Returns the folder tonic reads (``<root>/<folder>``).
    """
    spec = _SPECS[name]
    root = default_root() if root is None else Path(root).expanduser()
    base = root / spec.folder
    splits = spec.splits if splits is None else splits
    missing = [p for s in splits for p in _missing(spec, base, spec.splits[s][1])]
    if missing:
        what = "file(s)" if spec.kind == "files" else f"folder(s) holding {spec.suffix} files"
        raise DatasetNotFoundError(
            f"{name}: missing {what}: {', '.join(str(p) for p in missing)}. "
            f"su_neuro never downloads; place {spec.layout} in {base} "
            f"(download from {spec.source}). root is the `root=` argument, else $SU_NEURO_DATA, "
            f"else ~/.cache/su_neuro/data."
        )
    return base


@functools.cache
def _offline_class(class_name: str):
    """tonic's loader class with the download disabled, under the same name (tonic derives the
    data folder from the class name)."""
    import tonic.datasets

    base = getattr(tonic.datasets, class_name)

    def _check_exists(self):
        return True  # check_files ran before construction

    def download(self):
        raise DatasetNotFoundError(
            f"{class_name}: files not found under {self.location_on_system}; su_neuro never downloads"
        )

    def __reduce__(self):  # picklable for DataLoader workers started by spawn / forkserver
        return _restore, (class_name, self.__dict__)

    namespace = {"_check_exists": _check_exists, "download": download, "__reduce__": __reduce__}
    return type(class_name, (base,), namespace)


def _restore(class_name: str, state: dict):
    cls = _offline_class(class_name)
    obj = cls.__new__(cls)
    obj.__dict__.update(state)
    return obj


def _downsampled_size(sensor_size, spatial_factor: float):
    """Sensor size after ``tonic.transforms.Downsample(spatial_factor)`` (coordinates are floored)."""
    w, h, p = sensor_size
    w = math.floor((w - 1) * spatial_factor) + 1
    h = math.floor((h - 1) * spatial_factor) + 1 if h > 1 else h
    return (w, h, p)


def neuromorphic_task(
    name: str,
    *,
    root: str | Path | None = None,
    n_time_bins: int = 100,
    spatial_factor: float = 1.0,
    duration: int | None = None,
    cache_dir: str | Path | None = None,
    tonic_kwargs: dict | None = None,
) -> Task:
    """Build a neuromorphic :class:`Task` (see :func:`su_neuro.datasets.get_task` for options)."""
    if name not in _SPECS:
        raise ValueError(f"unknown neuromorphic data set {name!r}; valid: {NEUROMORPHIC_TASKS}")
    check_int("n_time_bins", n_time_bins, 1)
    if duration is not None:
        check_int("duration", duration, 1)
    if not isinstance(spatial_factor, int | float) or not 0 < spatial_factor <= 1:
        raise ValueError(f"spatial_factor must be in (0, 1], got {spatial_factor!r}")
    spec = _SPECS[name]
    base = check_files(name, root)

    import tonic
    import tonic.transforms as T

    cls = _offline_class(spec.tonic_class)
    kwargs = dict(tonic_kwargs or {})
    if spec.tonic_class == "SMNIST":
        neurons = kwargs.get("num_neurons", 99)
        # tonic's SMNIST emits unit indices 0..num_neurons inclusive: one channel more.
        sensor_size = (neurons + 1, 1, 1)
        if duration is None:  # one fixed axis: pixel k is at k * dt (2k * dt when duplicated)
            steps = 784 * (2 if kwargs.get("duplicate", True) else 1)
            duration = math.ceil(steps * kwargs.get("dt", 1000.0))
    else:
        sensor_size = getattr(tonic.datasets, spec.tonic_class).sensor_size
    transforms = []
    if spatial_factor != 1:
        transforms.append(T.Downsample(spatial_factor=spatial_factor))
        sensor_size = _downsampled_size(sensor_size, spatial_factor)
    transforms.append(EventFrames(sensor_size, n_time_bins, duration))
    transform = T.Compose(transforms)

    splits = {}
    for split, (split_kwargs, _) in spec.splits.items():
        tonic_dataset = cls(str(base.parent), transform=transform, **split_kwargs, **kwargs)
        source = tonic_dataset
        if cache_dir is not None:
            key = f"T{n_time_bins}_s{spatial_factor:g}_d{duration}"
            key += "".join(f"_{k}{v}" for k, v in sorted(kwargs.items()))
            path = Path(cache_dir).expanduser() / name / split / key
            source = tonic.DiskCachedDataset(tonic_dataset, cache_path=str(path))
        splits[split] = FrameDataset(source, tonic_dataset)
    return Task(
        name=name,
        kind="classify",
        train=splits["train"],
        test=splits["test"],
        valid=splits.get("valid"),
        input_size=math.prod(sensor_size),
        output_size=spec.n_classes,
        seq_len=n_time_bins,
    )
