"""Neuromorphic tasks read through tonic's real loaders from tiny files in tonic's on-disk layout.

Every test runs with the network blocked: a loader that tried to download would fail loudly.
"""

import os
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
    assert len(list(cache.rglob("*.npz"))) == 4 and not list(cache.rglob(".*tmp*"))
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
        ({"cache_dir": "c", "tonic_kwargs": {"target_transform": abs}}, r"callable tonic_kwargs \['target_trans"),
    ],
)
def test_bad_neuromorphic_options(tmp_path, options, argument):
    with pytest.raises(ValueError, match=argument):
        get_task("shd", root=tmp_path, **options)


@pytest.mark.parametrize("factor", [True, "0.5", None])
def test_spatial_factor_of_another_type_is_named(tmp_path, factor):
    with pytest.raises(TypeError, match=f"spatial_factor must be a number in \\(0, 1\\], got {type(factor).__name__}"):
        get_task("shd", root=tmp_path, spatial_factor=factor)


def test_nmnist_order_is_the_path_order(tmp_path, monkeypatch):
    """tonic before 1.5 walked N-MNIST's digit folders in the file system's order."""
    for folder in ("Train", "Test"):
        for digit in (3, 0, 7):
            path = tmp_path / "NMNIST" / folder / str(digit) / "00001.bin"
            write_nmnist_bin(path, *np.array([[digit], [1], [0], [5]]))
    real_walk = os.walk

    def walk_backwards(top, *args, **kwargs):  # the folders in reverse order, whatever tonic sorts
        yield from reversed([(path, list(dirs), list(files)) for path, dirs, files in real_walk(top, *args, **kwargs)])

    monkeypatch.setattr(os, "walk", walk_backwards)
    task = get_task("nmnist", root=tmp_path, n_time_bins=2, spatial_factor=np.float32(0.5))
    for ds in (task.train, task.test):
        assert ds.tonic_dataset.data == sorted(ds.tonic_dataset.data)
        assert [ds[i][1] for i in range(3)] == [0, 3, 7]
        assert [int(ds[i][0].reshape(2, 2, 17, 17).sum((0, 1)).nonzero()[0][1]) for i in range(3)] == [0, 1, 3]


def _dvs_recording(path, events):
    path.parent.mkdir(parents=True, exist_ok=True)
    np.save(path, np.asarray(events, dtype=np.int64))


def test_dvsgesture_order_is_the_path_order(tmp_path):
    """tonic lists DVS Gesture's recordings in the file system's order: the same seed gave
    another data order on another copy of the data."""
    folder = tmp_path / "DVSGesture"
    names = ["user02_led/3.npy", "user01_led/10.npy", "user01_fluorescent/2.npy", "user01_led/0.npy"]
    for k, rel in enumerate(names):  # written in this (unsorted) order; k + 1 events each
        _dvs_recording(folder / "ibmGestureTrain" / rel, [[1, 2, 0, 10 * t] for t in range(k + 1)])
    _dvs_recording(folder / "ibmGestureTest/user24_led/1.npy", [[0, 0, 1, 5]])
    task = get_task("dvsgesture", root=tmp_path, n_time_bins=2)
    ds = task.train.tonic_dataset
    assert ds.data == sorted(ds.data)
    order = sorted(range(4), key=lambda k: str(folder / "ibmGestureTrain" / names[k]))
    assert [task.train[i][1] for i in range(4)] == [int(names[k].split("/")[1][:-4]) for k in order]
    assert [task.train[i][0].sum().item() for i in range(4)] == [k + 1.0 for k in order]
    assert ds.users == [int(names[k][4:6]) for k in order]
    assert ds.lighting == [names[k].split("_")[1].split("/")[0] for k in order]


def test_event_counts_do_not_wrap_and_need_no_order(tmp_path):
    """tonic's ToFrame counts in int16: 40,000 events on one pixel in one bin read -25,536."""
    from su_neuro.datasets.neuromorphic import EventFrames

    dtype = np.dtype([("x", np.int16), ("y", np.int16), ("p", bool), ("t", np.int64)])
    ev = np.zeros(40_000, dtype)
    ev["x"], ev["y"], ev["p"], ev["t"] = 3, 1, 1, np.arange(40_000)
    frames = EventFrames((34, 34, 2), 1)(ev)
    assert frames.sum() == 40_000 and frames[0, (1 * 34 + 1) * 34 + 3] == 40_000
    # timestamps out of order bin as sorted ones do
    rng = np.random.default_rng(0)
    ev = np.zeros(500, dtype)
    ev["x"], ev["y"], ev["p"] = rng.integers(0, 34, 500), rng.integers(0, 34, 500), rng.integers(0, 2, 500)
    ev["t"] = rng.integers(100, 90_000, 500)
    sorted_ev = np.sort(ev, order="t")
    for duration in (None, 60_000):
        binning = EventFrames((34, 34, 2), 7, duration)
        np.testing.assert_array_equal(binning(ev), binning(sorted_ev))
    # the fixed axis keeps the events before n * ceil(D / n) and drops the later ones
    ev = np.zeros(3, dtype)
    ev["t"] = [999, 1001, 1002]
    assert EventFrames((34, 34, 2), 3, 1000)(ev).sum(1).tolist() == [0, 0, 2]
    with pytest.raises(ValueError, match=r"event x coordinates 0\.\.40 lie outside the sensor's \[0, 34\)"):
        ev["x"] = [0, 40, 1]
        EventFrames((34, 34, 2), 3)(ev)


@pytest.mark.parametrize("sensor", [(34, 34, 2), (700, 1, 1), (5, 3, 2)])
def test_event_frames_equal_tonics_to_frame_where_both_hold(sensor):
    """The reference beside the binning: tonic's ToFrame over the same bins (sorted events,
    fewer than 32,768 per pixel and bin, where its int16 frames hold the counts)."""
    import tonic.transforms as T

    from su_neuro.datasets.neuromorphic import EventFrames

    rng = np.random.default_rng(sum(sensor))
    w, h, p = sensor
    names = [("x", np.int16), ("y", np.int16), ("p", bool), ("t", np.int64)] if h > 1 else \
        [("t", np.int64), ("x", np.int16), ("p", bool)]
    for trial in range(40):
        n = int(rng.integers(1, 400))
        ev = np.zeros(n, np.dtype(names))
        ev["x"] = rng.integers(0, w, n)
        if h > 1:
            ev["y"] = rng.integers(0, h, n)
        ev["p"] = rng.integers(0, p, n)
        ev["t"] = np.sort(rng.integers(0, 50_000, n))
        bins = int(rng.integers(1, 12))
        duration = None if trial % 2 else int(rng.integers(1, 60_000))
        ours = EventFrames(sensor, bins, duration)(ev.copy())
        start = int(ev["t"][0]) if duration is None else 0
        width = (int(ev["t"][-1]) - start) // bins + 1 if duration is None else -(-duration // bins)
        theirs = T.ToFrame(sensor_size=sensor, time_window=width, start_time=start,
                           end_time=start + bins * width)(ev.copy())
        np.testing.assert_array_equal(ours, theirs.reshape(bins, -1).astype(np.float32))


def test_recording_without_events_gives_zero_frames(tmp_path):
    """tonic's Compose stops at an empty recording and handed its raw events on."""
    (tmp_path / "SHD").mkdir()
    empty = (np.zeros(0, np.float32), np.zeros(0, np.uint16))
    some = (np.array([0.1, 0.2], np.float32), np.array([5, 6], np.uint16))
    for split in ("train", "test"):
        write_hsd(tmp_path / "SHD" / f"shd_{split}.h5", [some, empty], [1, 2])
    for factor in (1.0, 0.5):
        task = get_task("shd", root=tmp_path, n_time_bins=4, spatial_factor=factor)
        x, y = task.train[1]
        assert y == 2 and x.shape == (4, task.input_size) and x.sum() == 0
        assert task.train[0][0].sum() == 2


def test_cache_is_keyed_by_the_data_and_survives_damage(tmp_path):
    """A cache shared by two copies of a data set served the first copy's frames to the
    second; a damaged cache file is computed again; a stale temporary file is ignored."""
    roots = {}
    for name, label, n in (("a", 1, 10), ("b", 7, 50)):
        roots[name] = tmp_path / name
        _write_hsd_set(roots[name], "SHD", ["train", "test"], [n], [label], seed=n)
    cache = tmp_path / "cache"
    a = get_task("shd", root=roots["a"], n_time_bins=5, cache_dir=cache).train
    b = get_task("shd", root=roots["b"], n_time_bins=5, cache_dir=cache).train
    assert (a[0][1], a[0][0].sum().item()) == (1, 10.0)
    assert (b[0][1], b[0][0].sum().item()) == (7, 50.0)
    assert a.cache != b.cache and (a.cache / "0.npz").is_file()
    # a spatial factor that prints the same with %g bins otherwise
    c = get_task("shd", root=roots["a"], n_time_bins=5, spatial_factor=0.30000001, cache_dir=cache).train
    d = get_task("shd", root=roots["a"], n_time_bins=5, spatial_factor=0.3, cache_dir=cache).train
    assert c.cache != d.cache
    # a damaged file (a full disk, a killed writer) is recomputed and replaced
    fresh = a[0][0]
    (a.cache / "0.npz").write_bytes(b"PK\x03\x04 truncated")
    (a.cache / ".0.npz.tmp-1-2").write_bytes(b"half")
    assert torch.equal(a[0][0], fresh)
    with np.load(a.cache / "0.npz") as z:
        assert np.array_equal(z["x"], fresh.numpy()) and int(z["y"]) == 1
    # a changed split file is another identity: its cache is another folder
    _write_hsd_set(tmp_path / "a2", "SHD", ["train", "test"], [12], [3], seed=3)
    (roots["a"] / "SHD" / "shd_train.h5").write_bytes((tmp_path / "a2/SHD/shd_train.h5").read_bytes())
    again = get_task("shd", root=roots["a"], n_time_bins=5, cache_dir=cache).train
    assert again.cache != a.cache and (again[0][1], again[0][0].sum().item()) == (3, 12.0)


def test_cache_shared_by_two_processes(tmp_path):
    """Two runs filling one cache at once: tonic's cache wrote HDF5 files in place (lock
    errors, damaged files, once a wrong label); each sample is now renamed into place whole.
    The processes build their tasks, then start reading together (a file as the barrier)."""
    import subprocess
    import sys
    import time

    labels = [i % 19 + 1 for i in range(64)]
    _write_hsd_set(tmp_path, "SHD", ["train", "test"], [40] * 64, labels)
    go = tmp_path / "go"
    script = (
        "import os, sys, time\n"
        "from su_neuro.datasets import get_task\n"
        f"t = get_task('shd', root={str(tmp_path)!r}, n_time_bins=50, cache_dir={str(tmp_path / 'cache')!r})\n"
        "ref = get_task('shd', root=" + repr(str(tmp_path)) + ", n_time_bins=50)\n"
        "print('ready', flush=True)\n"
        f"while not os.path.exists({str(go)!r}):\n"
        "    time.sleep(0.001)\n"
        "for i in range(len(t.train)):\n"
        "    x, y = t.train[i]\n"
        "    assert y == ref.train[i][1] and x.equal(ref.train[i][0]), i\n"
        "print('ok')\n"
    )
    procs = [subprocess.Popen([sys.executable, "-c", script], stdout=subprocess.PIPE, stderr=subprocess.PIPE,
                              text=True) for _ in range(2)]
    for proc in procs:
        assert proc.stdout.readline().strip() == "ready", proc.stderr.read()
    go.touch()
    deadline = time.monotonic() + 300
    for proc in procs:
        out, err = proc.communicate(timeout=max(1.0, deadline - time.monotonic()))
        assert proc.returncode == 0 and out.strip() == "ok", err
    assert len(list((tmp_path / "cache").rglob("*.npz"))) == 64


def _write_smnist(folder, n_train=3, n_test=2, labels_short=False):
    rng = np.random.default_rng(3)
    folder.mkdir(parents=True, exist_ok=True)
    for prefix, n in (("train", n_train), ("t10k", n_test)):
        _write_idx(folder / f"{prefix}-images-idx3-ubyte", rng.integers(0, 256, (n, 28, 28)))
        _write_idx(folder / f"{prefix}-labels-idx1-ubyte", np.arange(n - (1 if labels_short else 0)) % 10)


def test_damaged_files_name_the_file(tmp_path):
    # tonic's sMNIST checks its idx headers with bare asserts
    _write_smnist(tmp_path / "smnist", labels_short=True)
    with pytest.raises(ValueError, match=r"tonic_smnist: cannot read the train split \(.*train-images-idx3-ubyte, "
                                         r".*train-labels-idx1-ubyte\): AssertionError: its format check failed"):
        get_task("tonic_smnist", root=tmp_path)
    # an HDF5 label outside the classes is found when the task is built, not mid-training
    _write_hsd_set(tmp_path, "SHD", ["train", "test"], [3, 4], [1, 25])
    with pytest.raises(ValueError, match=r"shd train \(.*shd_train.h5\): 1 label\(s\) outside the 20 classes "
                                         r"\[0, 20\), the first at sample 1: 25"):
        get_task("shd", root=tmp_path)
    # a truncated recording names its file when it is read
    rng = np.random.default_rng(0)
    for folder in ("Train", "Test"):
        t = np.sort(rng.integers(0, 300_000, 50))
        write_nmnist_bin(tmp_path / "NMNIST" / folder / "3" / "00001.bin", t % 34, t % 33, t % 2, t)
    bad = tmp_path / "NMNIST" / "Train" / "3" / "00001.bin"
    bad.write_bytes(bad.read_bytes()[:-2])
    task = get_task("nmnist", root=tmp_path, n_time_bins=3)
    with pytest.raises(ValueError, match=r"nmnist train sample 0 \(.*NMNIST/Train/3/00001.bin\): cannot read it"):
        task.train[0]
    assert task.test[0][0].sum() == 50


def test_tonic_kwargs_checked(tmp_path):
    _write_smnist(tmp_path / "smnist")
    with pytest.raises(TypeError, match="tonic_kwargs must be a dict"):
        get_task("tonic_smnist", root=tmp_path, tonic_kwargs="foo")
    with pytest.raises(TypeError, match=r"tonic's SMNIST refused tonic_kwargs \{'foo': 1\}"):
        get_task("tonic_smnist", root=tmp_path, tonic_kwargs={"foo": 1})
    with pytest.raises(ValueError, match="Number of neurons must be odd"):
        get_task("tonic_smnist", root=tmp_path, tonic_kwargs={"num_neurons": 100})


def test_lengths_without_reading_samples(tmp_path, monkeypatch):
    """Length bucketing asks every sample's length: all n_time_bins, known without binning."""
    from su_neuro.datasets.neuromorphic import EventFrames

    _write_hsd_set(tmp_path, "SHD", ["train", "test"], [3, 4, 5], [1, 2, 3])
    task = get_task("shd", root=tmp_path, n_time_bins=6)
    monkeypatch.setattr(EventFrames, "__call__", lambda self, ev: pytest.fail("a sample was binned"))
    assert task.train.lengths.tolist() == [6, 6, 6]


def test_dvs_lists_out_of_step_are_refused():
    from types import SimpleNamespace

    from su_neuro.datasets.neuromorphic import _sort_by_path

    ds = SimpleNamespace(data=["b", "a"], targets=[1, 0], users=[2])
    with pytest.raises(RuntimeError, match="lists 1 users for 2 recordings"):
        _sort_by_path(ds, ("data", "targets", "users", "lighting"))
    ds = SimpleNamespace(data=["b", "a"], targets=[1, 0])  # a list this tonic lacks is left alone
    _sort_by_path(ds, ("data", "targets", "users"))
    assert (ds.data, ds.targets) == (["a", "b"], [0, 1])
