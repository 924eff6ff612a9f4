"""Neuromorphic tasks read through tonic's real loaders from tiny files in tonic's on-disk layout.

Every test runs with the network blocked: a loader that tried to download would fail loudly.
"""

import pickle
import socket

import h5py
import numpy as np
import pytest
import torch

from su_neuro.datasets import DatasetNotFoundError, get_task

pytest.importorskip("tonic")


@pytest.fixture(autouse=True)
def no_network(monkeypatch):
    def refuse(*args, **kwargs):
        raise AssertionError("network access attempted")

    monkeypatch.setattr(socket.socket, "connect", refuse)
    monkeypatch.setattr(socket, "create_connection", refuse)
    monkeypatch.setattr(socket, "getaddrinfo", refuse)


def _events_1d(rng, n, units):
    """Sorted spike times (seconds) and unit ids for one SHD-style sample."""
    times = np.sort(rng.uniform(0.0, 0.8, n)).astype(np.float32)
    return times, rng.integers(0, units, n).astype(np.uint16)


def _ragged(arrays):
    out = np.empty(len(arrays), dtype=object)
    for i, a in enumerate(arrays):
        out[i] = a
    return out


def write_hsd(path, samples, labels):
    """An SHD/SSC HDF5 file: spikes/times, spikes/units (ragged), labels, extra/{keys,speaker}."""
    with h5py.File(path, "w") as f:
        f.create_dataset(
            "spikes/times", data=_ragged([t for t, _ in samples]), dtype=h5py.vlen_dtype(np.float32)
        )
        f.create_dataset(
            "spikes/units", data=_ragged([u for _, u in samples]), dtype=h5py.vlen_dtype(np.uint16)
        )
        f.create_dataset("labels", data=np.asarray(labels, dtype=np.uint16))
        f.create_dataset("extra/keys", data=np.array([b"k%d" % i for i in range(35)]))
        f.create_dataset("extra/speaker", data=np.zeros(len(labels), dtype=np.uint16))


def _write_hsd_set(root, folder, splits, n_events, labels, seed=0):
    rng = np.random.default_rng(seed)
    (root / folder).mkdir(parents=True)
    written = {}
    for split in splits:
        samples = [_events_1d(rng, n, 700) for n in n_events]
        write_hsd(root / folder / f"{folder.lower()}_{split}.h5", samples, labels)
        written[split] = samples
    return written


def _check_frames(task, split, samples, labels, n_bins, features):
    ds = getattr(task, split)
    assert len(ds) == len(samples)
    for i, (events, label) in enumerate(zip(samples, labels, strict=True)):
        x, y = ds[i]
        assert x.shape == (n_bins, features) and x.dtype == torch.float32
        assert x.sum().item() == len(events[0])
        assert y == label and isinstance(y, int)


def test_shd(tmp_path):
    labels = [3, 19, 0]
    written = _write_hsd_set(tmp_path, "SHD", ["train", "test"], [50, 1, 200], labels)
    task = get_task("shd", root=tmp_path, n_time_bins=7)
    assert (task.kind, task.input_size, task.output_size, task.seq_len) == ("classify", 700, 20, 7)
    for split in ("train", "test"):
        _check_frames(task, split, written[split], labels, 7, 700)
    # Each spike lands on its unit's channel.
    _, units = written["train"][0]
    x, _ = task.train[0]
    assert torch.equal(
        x.sum(0), torch.bincount(torch.from_numpy(units.astype(np.int64)), minlength=700).float()
    )
    # The first spike is in bin 0 and the last one in the last bin.
    assert x[0, units[0]] >= 1 and x[-1, units[-1]] >= 1


def test_shd_fixed_duration_and_downsample(tmp_path):
    labels = [1, 2]
    written = _write_hsd_set(tmp_path, "SHD", ["train", "test"], [40, 60], labels)
    # 0.8 s of spikes on a 1 s axis: the last 2 of 10 bins hold nothing.
    task = get_task("shd", root=tmp_path, n_time_bins=10, duration=1_000_000, spatial_factor=0.1)
    assert task.input_size == 70
    x, _ = task.test[1]
    assert x.shape == (10, 70) and x.sum().item() == 60
    assert x[8:].sum() == 0
    times, _ = written["test"][1]
    expected_bins = np.bincount(
        (times.astype(np.float64) * 1e6).astype(int) // 100_000, minlength=10
    )
    assert x.sum(1).tolist() == expected_bins.tolist()


def test_ssc_has_valid_split(tmp_path):
    labels = [34, 0]
    written = _write_hsd_set(tmp_path, "SSC", ["train", "valid", "test"], [5, 9], labels)
    task = get_task("ssc", root=tmp_path, n_time_bins=3)
    assert task.output_size == 35 and task.valid is not None
    for split in ("train", "valid", "test"):
        _check_frames(task, split, written[split], labels, 3, 700)


def write_nmnist_bin(path, x, y, p, t):
    """N-MNIST's 40-bit events: x, y, p << 7 | t[22:16], t[15:8], t[7:0]."""
    raw = np.zeros((len(x), 5), dtype=np.uint8)
    raw[:, 0], raw[:, 1] = x, y
    raw[:, 2] = (p << 7) | ((t >> 16) & 0x7F)
    raw[:, 3], raw[:, 4] = (t >> 8) & 0xFF, t & 0xFF
    path.parent.mkdir(parents=True, exist_ok=True)
    path.write_bytes(raw.tobytes())


def test_nmnist(tmp_path):
    rng = np.random.default_rng(1)
    written = {}
    for folder in ("Train", "Test"):
        for digit, n in ((2, 30), (7, 45)):
            x, y = rng.integers(0, 34, n), rng.integers(0, 34, n)
            p, t = rng.integers(0, 2, n), np.sort(rng.integers(0, 300_000, n))
            write_nmnist_bin(tmp_path / "NMNIST" / folder / str(digit) / "00001.bin", x, y, p, t)
            written[folder, digit] = (x, y, p)
    task = get_task("nmnist", root=tmp_path, n_time_bins=5)
    assert (task.input_size, task.output_size) == (34 * 34 * 2, 10)
    for split, folder in (("train", "Train"), ("test", "Test")):
        ds = getattr(task, split)
        assert len(ds) == 2
        for i, digit in enumerate((2, 7)):
            frames, label = ds[i]
            x, y, p = written[folder, digit]
            assert frames.shape == (5, 2 * 34 * 34) and label == digit
            dense = frames.reshape(5, 2, 34, 34).sum(0)  # tonic's frame layout (P, H, W)
            expected = np.zeros((2, 34, 34))
            np.add.at(expected, (p, y, x), 1)
            assert np.array_equal(dense.numpy(), expected)
    small = get_task("nmnist", root=tmp_path, n_time_bins=4, spatial_factor=0.5)
    frames, _ = small.train[1]
    assert small.input_size == 17 * 17 * 2 and frames.shape == (4, 578) and frames.sum() == 45


def test_dvsgesture_and_cache(tmp_path):
    rng = np.random.default_rng(2)
    counts = {}
    for folder, user in (
        ("ibmGestureTrain", "user01_fluorescent"),
        ("ibmGestureTest", "user24_led"),
    ):
        for label, n in ((4, 80), (10, 25)):
            events = np.stack(
                [
                    rng.integers(0, 128, n),
                    rng.integers(0, 128, n),
                    rng.integers(0, 2, n),
                    np.sort(rng.integers(0, 6000, n)),
                ],
                1,
            )
            path = tmp_path / "DVSGesture" / folder / user / f"{label}.npy"
            path.parent.mkdir(parents=True, exist_ok=True)
            np.save(path, events)
            counts[folder, label] = n
    cache = tmp_path / "cache"
    task = get_task(
        "dvsgesture", root=tmp_path, n_time_bins=6, spatial_factor=0.25, cache_dir=cache
    )
    assert (task.input_size, task.output_size) == (32 * 32 * 2, 11)
    for split, folder in (("train", "ibmGestureTrain"), ("test", "ibmGestureTest")):
        ds = getattr(task, split)
        got = {}
        for i in range(len(ds)):
            frames, label = ds[i]
            assert frames.shape == (6, 2048)
            got[label] = frames.sum().item()
        assert got == {4: counts[folder, 4], 10: counts[folder, 10]}
    assert any(cache.rglob("*.hdf5"))
    restored = pickle.loads(pickle.dumps(task.test))  # DataLoader workers under spawn
    assert torch.equal(restored[1][0], task.test[1][0])
    first = task.train[0][0]
    again = get_task(
        "dvsgesture", root=tmp_path, n_time_bins=6, spatial_factor=0.25, cache_dir=cache
    ).train[0][0]
    assert torch.equal(first, again)


def _write_idx(path, array):
    header = bytes([0, 0, 0x08, array.ndim]) + np.array(array.shape, ">u4").tobytes()
    path.write_bytes(header + array.astype(np.uint8).tobytes())


def test_tonic_smnist(tmp_path):
    import tonic.datasets

    rng = np.random.default_rng(3)
    folder = tmp_path / "smnist"
    folder.mkdir()
    for prefix, n in (("train", 3), ("t10k", 2)):
        images = rng.integers(0, 256, (n, 28, 28)) * (rng.random((n, 28, 28)) < 0.3)
        images[:, 5, 5] = 255  # the "touch" channel fires too
        _write_idx(folder / f"{prefix}-images-idx3-ubyte", images)
        _write_idx(folder / f"{prefix}-labels-idx1-ubyte", np.arange(n) + 4)
    task = get_task("tonic_smnist", root=tmp_path, n_time_bins=8)
    assert (task.input_size, task.output_size, task.seq_len) == (100, 10, 8)
    raw = tonic.datasets.SMNIST(str(tmp_path), train=False)  # all files exist: no download
    for i in range(2):
        frames, label = task.test[i]
        events, _ = raw[i]
        assert frames.shape == (8, 100) and label == 4 + i
        assert frames.sum().item() == len(events)
        assert torch.equal(
            frames.sum(0), torch.bincount(torch.from_numpy(events["x"]), minlength=100).float()
        )


@pytest.mark.parametrize(
    ("name", "expected"),
    [
        ("shd", "SHD/shd_train.h5"),
        ("ssc", "SSC/ssc_valid.h5"),
        ("nmnist", "NMNIST/Train"),
        ("dvsgesture", "DVSGesture/ibmGestureTest"),
        ("tonic_smnist", "smnist/t10k-labels-idx1-ubyte"),
    ],
)
def test_missing_dataset_names_the_path(tmp_path, name, expected):
    with pytest.raises(DatasetNotFoundError) as err:
        get_task(name, root=tmp_path)
    assert str(tmp_path / expected) in str(err.value)
    assert isinstance(err.value, FileNotFoundError)


def test_partial_download_is_reported(tmp_path):
    _write_hsd_set(tmp_path, "SHD", ["train"], [3], [1])
    with pytest.raises(DatasetNotFoundError, match="shd_test.h5") as err:
        get_task("shd", root=tmp_path)
    assert "shd_train.h5" not in str(err.value).split("place")[0]


def test_root_from_environment(tmp_path, monkeypatch):
    monkeypatch.setenv("SU_NEURO_DATA", str(tmp_path / "env"))
    with pytest.raises(DatasetNotFoundError, match=str(tmp_path / "env" / "NMNIST")):
        get_task("nmnist")


@pytest.mark.parametrize(
    ("options", "argument"),
    [
        ({"n_time_bins": 0}, "n_time_bins"),
        ({"spatial_factor": 0.0}, "spatial_factor"),
        ({"spatial_factor": 2}, "spatial_factor"),
        ({"duration": 0}, "duration"),
    ],
)
def test_bad_neuromorphic_options(tmp_path, options, argument):
    with pytest.raises(ValueError, match=argument):
        get_task("shd", root=tmp_path, **options)
