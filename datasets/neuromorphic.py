"""Neuromorphic data sets through tonic: SHD, SSC, N-MNIST, DVS Gesture and tonic's spiking sMNIST.

tonic's own loaders read the files; this module only

1. checks that the files are on disk *before* a loader is built and raises
   :class:`DatasetNotFoundError` naming the exact paths otherwise (tonic would try to download);
2. builds the loader from a same-named subclass whose ``download`` raises, so it never touches the
   network (tonic's ``_check_exists`` also wants the downloaded archive, e.g. ``shd_train.h5.zip``,
   which an offline copy need not have; our own check replaces it);
3. bins each sample's events into ``n_time_bins`` frames (:class:`EventFrames`) and flattens the
   sensor: ``x (n_time_bins, P * H * W)`` float32 event counts, ``y`` int;
4. puts DVS Gesture's recordings in path order (tonic lists them in the file system's order, so
   the same seed would otherwise give another data order on another machine or copy);
5. with ``cache_dir``, keeps the frames on disk (:class:`FrameDataset`): one file per sample,
   written to a temporary name and renamed, so runs that share the cache, or one killed while
   writing, never read a half-written sample.

Binning. tonic's ``ToFrame(n_time_bins=n)`` floors the bin width and never counts the last event(s)
of a recording, and its frames are int16 (a pixel with more than 32,767 events in one bin wraps
around to negative counts), so :class:`EventFrames` bins itself, into ``n`` bins of an integer
width ``w`` starting at ``t0`` (bin ``(t - t0) // w``):

- ``duration=None`` (default): the bins span the sample's own events, first to last,
  ``t0 = t_first``, ``w = (t_last - t_first) // n + 1``: every event is counted;
- ``duration=D`` (microseconds): a fixed axis from ``t0 = 0``, ``w = ceil(D / n)``; events at or
  after ``n * w`` (which is ``D`` when ``n`` divides ``D``, else up to ``n - 1`` µs later) are
  dropped.
"""

from __future__ import annotations

import functools
import hashlib
import math
import numbers
import operator
import os
import threading
import warnings
import zipfile
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
        n = self.n_time_bins
        w, h, p = self.sensor_size
        features = w * h * p
        if len(events) == 0:
            return np.zeros((n, features), dtype=np.float32)
        t = events["t"]
        if self.duration is None:  # min / max: the timestamps need not be sorted
            start = int(t.min())
            width = (int(t.max()) - start) // n + 1
        else:
            start = 0
            width = -(-self.duration // n)
        b = np.floor_divide(t - start, width).astype(np.int64)
        keep = (t >= start) & (b < n)
        names = events.dtype.names
        x = events["x"][keep].astype(np.int64)
        y = events["y"][keep].astype(np.int64) if "y" in names else np.zeros_like(x)
        pol = events["p"][keep].astype(np.int64) if "p" in names else np.zeros_like(x)
        if p == 1:
            if np.unique(pol).size > 1:
                raise ValueError(f"the sensor {self.sensor_size} has one polarity, the events have "
                                 f"{np.unique(pol).size}")
            pol = np.zeros_like(x)
        for axis, v, size in (("x", x, w), ("y", y, h), ("polarity", pol, p)):
            if v.size and (v.min() < 0 or v.max() >= size):
                raise ValueError(f"event {axis} coordinates {v.min()}..{v.max()} lie outside the "
                                 f"sensor's [0, {size})")
        # frames (n, P, H, W), flattened; counted in float32 (exact up to 2^24 events per bin)
        index = b[keep] * features + (pol * h + y) * w + x
        counts = np.bincount(index, minlength=n * features)
        return counts.astype(np.float32).reshape(n, features)

    def __repr__(self) -> str:
        return (
            f"EventFrames(sensor_size={self.sensor_size}, n_time_bins={self.n_time_bins}, "
            f"duration={self.duration})"
        )


class _Chain:
    """Transforms applied one after the other (``tonic.transforms.Compose`` stops at a
    recording without events and returns the raw events instead of frames)."""

    def __init__(self, transforms):
        self.transforms = list(transforms)

    def __call__(self, events):
        for transform in self.transforms:
            events = transform(events)
        return events

    def __repr__(self) -> str:
        return f"_Chain({self.transforms})"


class FrameDataset(Dataset):
    """Torch view of a tonic data set whose transform yields ``(T, F)`` float32 frames.

    ``tonic_dataset`` is the underlying tonic loader (``classes``, ``targets``, ... live there).
    Items: ``(x (T, F) float32 tensor, y int)``. A sample that cannot be read, or whose label
    lies outside ``[0, n_classes)``, raises ``ValueError`` naming the data set, split, index and
    file. All samples have ``seq_len`` steps (``lengths``).

    ``cache``: a folder for the frames, one ``<index>.npz`` per sample, written under a
    temporary name and renamed into place; a cached file that cannot be read is recomputed.
    If the folder cannot be written, the data set warns once and goes on without the cache.
    """

    def __init__(self, tonic_dataset, *, name: str, split: str, n_classes: int, seq_len: int,
                 files: str, cache: Path | None = None):
        self.tonic_dataset = tonic_dataset
        self.name, self.split, self.n_classes, self.seq_len = name, split, n_classes, seq_len
        self.files = files
        self.cache = cache

    def __len__(self) -> int:
        return len(self.tonic_dataset)

    @property
    def lengths(self) -> np.ndarray:
        """Steps of every sample (all ``seq_len``), read without binning any sample."""
        return np.full(len(self), self.seq_len, dtype=np.int64)

    def _where(self, index: int) -> str:
        data = getattr(self.tonic_dataset, "data", None)
        if isinstance(data, list) and index < len(data) and isinstance(data[index], str):
            return data[index]
        return self.files

    def __getitem__(self, index):
        index = operator.index(index)
        n = len(self)
        if not -n <= index < n:
            raise IndexError(f"{self.name} {self.split}: index {index} out of range for {n} samples")
        index %= n
        if self.cache is not None:
            hit = self._load(index)
            if hit is not None:
                return hit
        try:
            frames, target = self.tonic_dataset[index]
        except Exception as err:
            raise ValueError(f"{self.name} {self.split} sample {index} ({self._where(index)}): cannot read "
                             f"it: {type(err).__name__}: {err}") from err
        target = int(target)
        if not 0 <= target < self.n_classes:
            raise ValueError(f"{self.name} {self.split} sample {index} ({self._where(index)}): label "
                             f"{target} outside the {self.n_classes} classes [0, {self.n_classes})")
        x = torch.from_numpy(np.asarray(frames, dtype=np.float32))
        if self.cache is not None:
            self._store(index, x, target)
        return x, target

    def _load(self, index: int):
        try:
            with np.load(self.cache / f"{index}.npz") as z:
                x, target = z["x"], int(z["y"])
        except FileNotFoundError:
            return None
        except (OSError, ValueError, KeyError, EOFError, zipfile.BadZipFile):
            return None  # damaged (e.g. a disk that filled up): computed again and replaced
        if x.dtype != np.float32 or x.shape[0] != self.seq_len:
            return None
        return torch.from_numpy(x), target

    def _store(self, index: int, x: torch.Tensor, target: int) -> None:
        path = self.cache / f"{index}.npz"
        tmp = self.cache / f".{index}.npz.tmp-{os.getpid()}-{threading.get_ident()}"
        try:
            self.cache.mkdir(parents=True, exist_ok=True)
            with open(tmp, "wb") as f:
                np.savez_compressed(f, x=x.numpy(), y=np.int64(target))
            os.replace(tmp, path)
        except OSError as err:
            tmp.unlink(missing_ok=True)
            warnings.warn(f"{self.name}: cannot write the frame cache {self.cache} ({err}); "
                          "going on without it", RuntimeWarning, stacklevel=3)
            self.cache = None


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


def _sort_by_path(dataset, fields) -> None:
    """Put a tonic loader's recordings in path order (its lists ``fields``, in step)."""
    order = sorted(range(len(dataset.data)), key=lambda i: str(dataset.data[i]))
    for field in fields:
        values = getattr(dataset, field, None)
        if values is None:  # a list another tonic version may lack
            continue
        if len(values) != len(order):
            raise RuntimeError(f"tonic's {type(dataset).__name__} lists {len(values)} {field} for {len(order)} "
                               "recordings: cannot put them in order")
        setattr(dataset, field, [values[i] for i in order])


def _labels(dataset, base: Path, required) -> np.ndarray | None:
    """All labels of a split without reading its events (None where tonic keeps none)."""
    for field in ("targets", "label_data"):  # N-MNIST, DVS Gesture; tonic's sMNIST
        values = getattr(dataset, field, None)
        if values is not None and len(values):
            return np.asarray(values, dtype=np.int64)
    path = base / required[0]
    if path.suffix == ".h5":  # SHD, SSC
        import h5py

        try:
            with h5py.File(path, "r") as f:
                return np.asarray(f["labels"][()], dtype=np.int64)
        except (OSError, KeyError) as err:
            raise ValueError(f"cannot read the labels of {path}: {err}") from err
    return None


def _check_labels(name: str, split: str, files: str, labels: np.ndarray | None, n_classes: int) -> None:
    if labels is None or labels.size == 0:
        return
    bad = (labels < 0) | (labels >= n_classes)
    if bad.any():
        i = int(np.flatnonzero(bad)[0])
        raise ValueError(f"{name} {split} ({files}): {int(bad.sum())} label(s) outside the {n_classes} "
                         f"classes [0, {n_classes}), the first at sample {i}: {int(labels[i])}")


CACHE_VERSION = 1
"""Version of the cached frames (raised when :class:`EventFrames` changes what it computes)."""


def _identity(base: Path, required, dataset, options: str) -> str:
    """A short digest of what a cache was filled from: the options, the folder, the size and
    time of each split file, and a tree's list of recordings (a cache never serves another
    copy's frames, or frames binned otherwise)."""
    digest = hashlib.sha256(options.encode())
    digest.update(str(base.resolve()).encode())
    for rel in required:
        path = base / rel
        if path.is_file():
            st = path.stat()
            digest.update(f"{rel}:{st.st_size}:{st.st_mtime_ns}".encode())
    data = getattr(dataset, "data", None)
    if isinstance(data, list) and data and isinstance(data[0], str):
        digest.update("\n".join(data).encode())
    return digest.hexdigest()[:16]


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
    if isinstance(spatial_factor, bool) or not isinstance(spatial_factor, numbers.Real):
        raise TypeError(f"spatial_factor must be a number in (0, 1], got {type(spatial_factor).__name__} "
                        f"{spatial_factor!r}")
    spatial_factor = float(spatial_factor)
    if not 0 < spatial_factor <= 1:
        raise ValueError(f"spatial_factor must be in (0, 1], got {spatial_factor!r}")
    if tonic_kwargs is not None and not isinstance(tonic_kwargs, dict):
        raise TypeError(f"tonic_kwargs must be a dict of keyword arguments for tonic's "
                        f"{_SPECS[name].tonic_class}, got {type(tonic_kwargs).__name__} {tonic_kwargs!r}")
    if cache_dir is not None:
        called = sorted(key for key, value in (tonic_kwargs or {}).items() if callable(value))
        if called:
            # a function's repr names its address, not what it computes: no cache key can name it
            raise ValueError(f"cache_dir cannot key frames on the callable tonic_kwargs {called}: "
                             "leave cache_dir out, or the callables")
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
    transform = _Chain(transforms)

    splits = {}
    for split, (split_kwargs, required) in spec.splits.items():
        files = ", ".join(str(base / rel) for rel in required)
        try:
            tonic_dataset = cls(str(base.parent), transform=transform, **split_kwargs, **kwargs)
        except DatasetNotFoundError:
            raise
        except TypeError as err:
            if not kwargs:
                raise
            raise TypeError(f"{name}: tonic's {spec.tonic_class} refused tonic_kwargs {kwargs}: {err}") from err
        except Exception as err:  # tonic's own format checks are bare asserts and Exceptions
            what = str(err) or "its format check failed"
            raise ValueError(f"{name}: cannot read the {split} split ({files}): "
                             f"{type(err).__name__}: {what}") from err
        if spec.tonic_class in ("DVSGesture", "NMNIST"):
            _sort_by_path(tonic_dataset, ("data", "targets", "users", "lighting"))
        _check_labels(name, split, files, _labels(tonic_dataset, base, required), spec.n_classes)
        cache = None
        if cache_dir is not None:
            # readable part, then a digest of everything the frames depend on (the options'
            # exact values, tonic_kwargs, the binning's version, the data itself)
            options = (CACHE_VERSION, n_time_bins, float(spatial_factor), duration, sorted(kwargs.items()))
            key = f"T{n_time_bins}_s{float(spatial_factor):g}_d{duration}_" + _identity(base, required, tonic_dataset,
                                                                                        repr(options))
            cache = Path(cache_dir).expanduser() / name / split / key
        splits[split] = FrameDataset(tonic_dataset, name=name, split=split, n_classes=spec.n_classes,
                                     seq_len=n_time_bins, files=files, cache=cache)
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
