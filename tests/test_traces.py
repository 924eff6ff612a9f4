"""HDF5 traces: exact round trip, encodings, metadata, crash safety, bad files."""

from __future__ import annotations

import json
import os
import signal
import subprocess
import sys
import textwrap
from contextlib import nullcontext
from types import SimpleNamespace

import h5py
import numpy as np
import pytest
import torch

from su_neuro import traces
from su_neuro.traces import (
    CorruptTraceError,
    NotATraceError,
    NotHDF5Error,
    SchemaVersionError,
    TraceError,
    TraceNotFoundError,
    TraceReader,
    TraceWriter,
)

LIF = {"cell": "lif", "gate": "rhythmic", "input_size": 5, "hidden_size": 11,
       "recurrent": True, "input_kind": "spike"}
GRU = {"cell": "gru", "gate": "event", "input_size": 11, "hidden_size": 9,
       "recurrent": True, "input_kind": "spike"}
LAYERS = {"layers.0": LIF, "layers.1": GRU}


def make_batch(seed: int, b: int = 3, t: int = 17, p_gate: float = 0.3, p_spike: float = 0.05):
    rng = np.random.default_rng(seed)
    g0 = torch.from_numpy((rng.random((b, t, 11)) < p_gate).astype(np.float32))
    s0 = torch.from_numpy((rng.random((b, t, 11)) < p_spike).astype(np.float32)) * g0
    d0 = torch.randn(b, t, 11, generator=torch.Generator().manual_seed(seed)) * g0
    g1 = torch.from_numpy((rng.random((b, t, 9)) < p_gate).astype(np.float32))
    d1 = torch.randn(b, t, 9, generator=torch.Generator().manual_seed(seed + 1)) * g1
    rec = {"layers.0": SimpleNamespace(gate=g0, delta=d0, spike=s0),
           "layers.1": SimpleNamespace(gate=g1, delta=d1, spike=None)}
    x = torch.from_numpy((rng.random((b, t, 5)) < 0.2).astype(np.float32))
    y = torch.from_numpy(rng.integers(0, 10, b))
    return rec, y, x


@pytest.mark.parametrize("encoding", ["packbits", "events", "auto"])
@pytest.mark.parametrize("store_delta", [None, "float16", "float32"])
def test_round_trip_exact(tmp_path, encoding, store_delta):
    path = tmp_path / "t.h5"
    batches = [make_batch(i) for i in range(3)]
    with TraceWriter(path, layers=LAYERS, config={"hidden": [11, 9]}, store_delta=store_delta,
                     gate_encoding=encoding, spike_encoding=encoding,
                     run_meta={"backend": "torch", "seed": 7}) as w:
        for rec, y, x in batches:
            w.append(rec, labels=y, inputs=x)
        assert w.num_samples == 9
    with traces.read(path) as r:
        assert r.num_samples == 9 and r.num_steps == 17 and r.complete
        assert list(r.layers) == ["layers.0", "layers.1"] and r.layers["layers.1"] == GRU
        assert r.config == {"hidden": [11, 9]}
        assert r.run_meta["backend"] == "torch" and r.run_meta["seed"] == 7
        assert r.run_meta["su_neuro_version"] != "" and "created_utc" in r.run_meta
        if encoding != "auto":
            assert r.encodings["layers.0"] == {"gate": encoding, "spike": encoding}
        for name in LAYERS:
            want = np.concatenate([b[0][name].gate.numpy() for b in batches]).astype(bool)
            got = r.gates(name)
            assert got.dtype == bool and got.shape == (9, 17, LAYERS[name]["hidden_size"])
            np.testing.assert_array_equal(got, want)
            np.testing.assert_array_equal(r.gates(name, slice(2, 7)), want[2:7])
            np.testing.assert_array_equal(r.gates(name, 4), want[4])
            np.testing.assert_array_equal(r.gates(name, -1), want[-1])
            np.testing.assert_array_equal(r.gates(name, [5, 1, 5, 8]), want[[5, 1, 5, 8]])
            np.testing.assert_array_equal(r.gates(name, slice(0, 9, 4)), want[0:9:4])
            if store_delta:
                d = np.concatenate([b[0][name].delta.numpy() for b in batches])
                assert r.deltas(name).dtype == np.dtype(store_delta)
                np.testing.assert_array_equal(r.deltas(name), d.astype(store_delta))
            else:
                assert not r.has(name, "delta")
                with pytest.raises(TraceError, match="stores no delta"):
                    r.deltas(name)
        s = np.concatenate([b[0]["layers.0"].spike.numpy() for b in batches]).astype(bool)
        np.testing.assert_array_equal(r.spikes("layers.0"), s)
        np.testing.assert_array_equal(r.spikes("layers.0", [7, 0]), s[[7, 0]])
        with pytest.raises(TraceError, match="no spike"):
            r.spikes("layers.1")
        np.testing.assert_array_equal(r.labels(), np.concatenate([b[1].numpy() for b in batches]))
        nnz = np.concatenate([(b[2].numpy() != 0).sum(2) for b in batches])
        np.testing.assert_array_equal(r.input_nnz(), nnz)
        chunks = list(r.iter_chunks(batch_size=4))
        assert [(c.start, c.stop) for c in chunks] == [(0, 4), (4, 8), (8, 9)]
        with pytest.raises(IndexError):
            r.gates("layers.0", 9)
        with pytest.raises(KeyError):
            r.gates("nope")


def test_encoding_rule_and_auto_choice(tmp_path):
    n = 96 * 1000
    below = np.zeros(n, bool)
    below[:999] = True   # density < 1/96
    at = np.zeros(n, bool)
    at[:1000] = True     # density == 1/96
    assert traces.choose_encoding(below) == "events"
    assert traces.choose_encoding(at) == "packbits"
    assert traces.choose_encoding(np.zeros(8, bool)) == "events"
    # sparse gates -> events, dense gates -> packbits, decided per stream on the first batch
    rec, y, x = make_batch(0, p_gate=0.5, p_spike=0.001)
    rec["layers.1"].gate = rec["layers.1"].gate * 0
    rec["layers.1"].gate[0, 3, 2] = 1
    traces.write(tmp_path / "a.h5", rec, layers=LAYERS)
    with TraceReader(tmp_path / "a.h5") as r:
        assert r.encodings["layers.0"] == {"gate": "packbits", "spike": "events"}
        assert r.encodings["layers.1"] == {"gate": "events"}
        g = r.gates("layers.1")
        assert g.sum() == 1 and g[0, 3, 2]
        # event list is readable as (sample, t, neuron) rows with plain h5py
    with h5py.File(tmp_path / "a.h5", "r") as f:
        np.testing.assert_array_equal(f["layers/layers.1/gate_events"][:], [[0, 3, 2]])
        np.testing.assert_array_equal(f["layers/layers.1/gate_offsets"][:], [0, 1, 1, 1])


def test_plain_h5py_layout(tmp_path):
    rec, y, x = make_batch(3)
    path = traces.write(tmp_path / "p.h5", rec, layers=LAYERS, labels=y,
                        gate_encoding="packbits", config={"a": 1})
    with h5py.File(path, "r") as f:
        assert f.attrs["format"] == "su_neuro.trace" and f.attrs["schema_version"] == 1
        n = int(f["committed"][0])
        assert n == 3 and f["closed"][0] == 1
        assert json.loads(f.attrs["config"]) == {"a": 1}
        g = f["layers/layers.0"]
        assert g.attrs["gate_encoding"] == "packbits" and g.attrs["hidden_size"] == 11
        bits = np.unpackbits(g["gate"][:n], axis=-1, count=11, bitorder="little").astype(bool)
        np.testing.assert_array_equal(bits, rec["layers.0"].gate.numpy() != 0)
        assert g["gate"].compression == "gzip" and g["gate"].chunks is not None


def test_writer_validates(tmp_path):
    rec, y, x = make_batch(0)
    with TraceWriter(tmp_path / "v.h5", layers=LAYERS) as w:
        w.append(rec)
        rec2, _, _ = make_batch(1, t=18)
        with pytest.raises(ValueError, match="T=17"):
            w.append(rec2)
        bad = dict(rec)
        bad["layers.0"] = SimpleNamespace(gate=rec["layers.0"].gate * 0.5,
                                          spike=rec["layers.0"].spike, delta=None)
        with pytest.raises(ValueError, match="only 0 and 1"):
            w.append(bad)
        with pytest.raises(ValueError, match="labels"):
            w.append(rec, labels=y)  # first batch had none
    with pytest.raises(ValueError, match="lacks"):
        TraceWriter(tmp_path / "x.h5", layers={"a": {"cell": "rnn"}})
    with pytest.raises(ValueError, match="store_delta"):
        TraceWriter(tmp_path / "x.h5", layers=LAYERS, store_delta="int8")


WRITER = textwrap.dedent("""
    import sys
    import numpy as np
    from types import SimpleNamespace
    from su_neuro.traces import TraceWriter
    meta = {"cell": "lif", "gate": "rhythmic", "input_size": 4, "hidden_size": 37,
            "recurrent": True, "input_kind": "spike"}
    w = TraceWriter(sys.argv[1], layers={"l0": meta}, store_delta="float16",
                    gate_encoding=sys.argv[2], spike_encoding="events")
    w.open()
    i = 0
    while True:
        rng = np.random.default_rng(i)
        g = rng.random((4, 300, 37)) < 0.3
        s = rng.random((4, 300, 37)) < 0.01
        w.append({"l0": SimpleNamespace(gate=g, spike=s, delta=g * 1.5)}, labels=np.full(4, i))
        print(i, flush=True)
        i += 1
""")


@pytest.mark.parametrize("encoding", ["packbits", "events"])
def test_sigkill_mid_run_keeps_committed_batches(tmp_path, encoding):
    script = tmp_path / "writer.py"
    script.write_text(WRITER)
    path = tmp_path / "killed.h5"
    p = subprocess.Popen([sys.executable, str(script), str(path), encoding],
                         stdout=subprocess.PIPE, text=True)
    try:
        n_done = 6
        for _ in range(n_done):
            assert p.stdout.readline().strip() != ""
    finally:
        os.kill(p.pid, signal.SIGKILL)  # the writer is likely mid-batch now
        p.wait()
        p.stdout.close()
    with TraceReader(path) as r:
        assert not r.complete
        n = r.num_samples // 4
        assert n >= n_done and r.num_samples % 4 == 0
        gates = r.gates("l0")
        spikes = r.spikes("l0")
        deltas = r.deltas("l0")
        labels = r.labels()
    for i in range(n):
        rng = np.random.default_rng(i)
        g = rng.random((4, 300, 37)) < 0.3
        s = rng.random((4, 300, 37)) < 0.01
        np.testing.assert_array_equal(gates[4 * i:4 * i + 4], g)
        np.testing.assert_array_equal(spikes[4 * i:4 * i + 4], s)
        np.testing.assert_array_equal(deltas[4 * i:4 * i + 4], (g * 1.5).astype(np.float16))
        assert (labels[4 * i:4 * i + 4] == i).all()


# ----------------------------------------------------------------------------- bad files
def test_missing_file(tmp_path):
    with pytest.raises(TraceNotFoundError, match="no such trace"):
        traces.read(tmp_path / "nope.h5")


def test_not_hdf5(tmp_path):
    p = tmp_path / "text.h5"
    p.write_text("hello, not HDF5\n" * 100)
    with pytest.raises(NotHDF5Error, match="not an HDF5 file"):
        traces.read(p)
    e = tmp_path / "empty.h5"
    e.write_bytes(b"")
    with pytest.raises(NotHDF5Error):
        traces.read(e)


def test_truncated(tmp_path):
    rec, y, x = make_batch(0, b=8, t=200)
    p = traces.write(tmp_path / "t.h5", rec, layers=LAYERS, store_delta="float32")
    data = p.read_bytes()
    p.write_bytes(data[: len(data) // 2])
    with pytest.raises(CorruptTraceError, match="truncated or damaged"):
        traces.read(p)


def test_hdf5_but_not_a_trace(tmp_path):
    p = tmp_path / "other.h5"
    with h5py.File(p, "w") as f:
        f["x"] = np.arange(3)
    with pytest.raises(NotATraceError, match="not a su_neuro trace"):
        traces.read(p)


def test_newer_schema(tmp_path):
    rec, y, x = make_batch(0)
    p = traces.write(tmp_path / "new.h5", rec, layers=LAYERS)
    with h5py.File(p, "r+") as f:
        f.attrs["schema_version"] = np.int64(traces.SUPPORTED_SCHEMA + 1)
    with pytest.raises(SchemaVersionError, match=r"newer su_neuro: schema 2 > supported 1"):
        traces.read(p)


def test_errors_are_trace_errors():
    for cls in (TraceNotFoundError, NotHDF5Error, CorruptTraceError, NotATraceError,
                SchemaVersionError):
        assert issubclass(cls, TraceError)
    assert issubclass(TraceNotFoundError, FileNotFoundError)


def _damage_first_chunk(path, name):
    """Overwrite the stored bytes of the first chunk of dataset ``name`` with garbage."""
    with h5py.File(path, "r") as f:
        info = f[name].id.get_chunk_info(0)
    with open(path, "r+b") as fh:
        fh.seek(info.byte_offset)
        fh.write(b"\xff\x00\x13" * (info.size // 3 + 1))


@pytest.mark.parametrize("name", ["input_nnz", "labels", "input_binary"])
def test_damaged_root_datasets_raise_corrupt_trace_error(tmp_path, name):
    rec, y, x = make_batch(0, b=64, t=200)
    x = torch.rand(64, 200, 5) * (torch.rand(64, 200, 5) < 0.5)  # nonzero counts that compress
    p = traces.write(tmp_path / "t.h5", rec, layers=LAYERS, labels=y, inputs=x)
    _damage_first_chunk(p, name)
    with traces.read(p) as r:
        reader = {"input_nnz": r.input_nnz, "labels": r.labels, "input_binary": r.input_binary}[name]
        with pytest.raises(CorruptTraceError, match=f"cannot read {name}"):
            reader()
        with pytest.raises(CorruptTraceError):
            list(r.iter_chunks())


def test_analyze_of_a_damaged_input_count_is_one_line(tmp_path, cli):
    from conftest import one_line_error

    rec, y, x = make_batch(0, b=64, t=200)
    x = torch.rand(64, 200, 5) * (torch.rand(64, 200, 5) < 0.5)
    p = traces.write(tmp_path / "t.h5", rec, layers=LAYERS, labels=y, inputs=x)
    _damage_first_chunk(p, "input_nnz")
    line = one_line_error(cli("analyze", p, "--out", tmp_path / "rep", "--no-plots"), "analyze")
    assert "cannot read input_nnz" in line


def test_schema_version_missing_or_not_an_integer(tmp_path):
    rec, y, x = make_batch(0)
    for value, message in ((None, "without its root attribute schema_version"),
                           (1.5, "schema_version must be an integer, got 1.5"),
                           ("1", "schema_version must be an integer"),
                           (0, "not a valid version")):
        p = traces.write(tmp_path / "s.h5", rec, layers=LAYERS)
        with h5py.File(p, "r+") as f:
            if value is None:
                del f.attrs["schema_version"]
            else:
                f.attrs["schema_version"] = value
        with pytest.raises(CorruptTraceError, match=message):
            traces.read(p)
    with h5py.File(p, "r+") as f:  # an integer of another width is fine
        f.attrs["schema_version"] = np.int32(1)
    assert traces.read(p).schema_version == 1


def test_input_binary_follows_neurobench_rule(tmp_path):
    rec, y, _ = make_batch(0, b=3)
    x = torch.zeros(3, 17, 5)
    x[0, 2, 1] = 1.0
    x[1, 3, 0] = -1.0
    x[2, 4, 4] = 0.5  # one non-binary value makes the sample dense
    p = traces.write(tmp_path / "b.h5", rec, layers=LAYERS, inputs=x)
    with traces.read(p) as r:
        assert r.input_binary().tolist() == [True, True, False]
        assert r.input_nnz()[:, 2:5].sum() == 3


def _edited_copy(good, path, edit):
    """A copy of the trace ``good`` at ``path``, changed by ``edit(h5py.File)``."""
    path.write_bytes(good.read_bytes())
    with h5py.File(path, "r+") as f:
        edit(f)
    return path


@pytest.mark.parametrize("encoding", ["packbits", "events"])
def test_committed_counter_and_dataset_shapes_are_checked(tmp_path, encoding):
    """The reader trusts /committed: a count beyond the stored rows, a negative one or a
    wrong-shaped dataset is a CorruptTraceError naming the file and the dataset."""
    rec, y, x = make_batch(0, b=8)
    good = traces.write(tmp_path / "good.h5", rec, layers=LAYERS, labels=y, inputs=x,
                        gate_encoding=encoding, spike_encoding=encoding)

    def damaged(edit):
        return _edited_copy(good, tmp_path / "bad.h5", edit)

    def set_committed(value):
        return lambda f: f["committed"].__setitem__(0, value)

    def reshape_nnz(f):
        del f["input_nnz"]
        f.create_dataset("input_nnz", data=np.zeros((8, 7), np.int32))

    cases = ((set_committed(100), "/layers/layers.0/gate", "stores 8 samples but /committed says 100"),
             (set_committed(-1), "/committed", "negative"),
             (reshape_nnz, "/input_nnz", "has shape (8, 7), expected (8, 17)"))
    for edit, dataset, message in cases:
        p = damaged(edit)
        with pytest.raises(CorruptTraceError) as err:
            traces.read(p)
        text = str(err.value)
        assert str(p) in text and dataset in text and message in text, text
    with traces.read(good) as r:
        assert r.num_samples == 8


def test_records_that_are_not_a_dict_are_named_not_dumped(tmp_path):
    rec, _, _ = make_batch(0)
    with pytest.raises(TypeError, match="records must be a dict layer name -> StepRecord") as err:
        traces.write(tmp_path / "l.h5", list(rec.values()), layers=LAYERS)
    assert "tensor(" not in str(err.value) and "SimpleNamespace" in str(err.value)
    assert not (tmp_path / "l.h5").exists()
    with pytest.raises(ValueError, match=r"undeclared layers: \['other'\]; declared layers"):
        traces.write(tmp_path / "u.h5", {**rec, "other": rec["layers.0"]}, layers=LAYERS)


# ----------------------------------------------------------------------------- writers of one path
def test_second_writer_of_a_path_is_refused(tmp_path):
    """Two writers of one path mixed their batches in one file, which could still read as
    complete: the second writer is refused while the first holds the path's lock."""
    path = tmp_path / "one.h5"
    rec, y, _ = make_batch(0)
    other = textwrap.dedent("""
        import sys
        from su_neuro.traces import TraceError, TraceWriter
        try:
            TraceWriter(sys.argv[1], layers={"l": {"cell": "rnn", "gate": "dense", "input_size": 1,
                        "hidden_size": 1, "recurrent": True, "input_kind": "dense"}}).open()
        except TraceError as err:
            print(err)
    """)
    with TraceWriter(path, layers=LAYERS) as first:
        first.append(rec, labels=y)
        done = subprocess.run([sys.executable, "-c", other, str(path)], capture_output=True, text=True, timeout=120)
        assert "one.h5: another process is writing this trace (it holds .one.h5.lock)" in done.stdout, done
        with pytest.raises(TraceError, match="one.h5: a TraceWriter of this process is writing this trace"):
            TraceWriter(path, layers=LAYERS).open()
        with pytest.raises(TraceError, match="a TraceWriter of this process is writing this trace"):
            traces.StreamTraceWriter(path, layers=LAYERS, batch=3)  # before any chunk is computed
        (tmp_path / "alias").symlink_to(tmp_path)
        with pytest.raises(TraceError, match="a TraceWriter of this process is writing this trace"):
            TraceWriter(tmp_path / "alias" / "one.h5", layers=LAYERS).open()  # the same file by a link
        (tmp_path / "alias").unlink()
        first.append(rec, labels=y)
    assert sorted(p.name for p in tmp_path.iterdir()) == ["one.h5"]  # lock and temporary gone
    with traces.read(path) as r:
        assert r.complete and r.num_samples == 6
    traces.write(path, rec, layers=LAYERS)  # free again
    assert traces.read(path).num_samples == 3


def test_a_new_trace_replaces_the_old_one_only_with_a_committed_batch(tmp_path):
    """A trace written over an existing one kept nothing of the old one from its open on:
    the new file is renamed into place at its first committed batch (or whole, at its close)."""
    path = tmp_path / "t.h5"
    old, y, _ = make_batch(0)
    traces.write(path, old, layers=LAYERS, labels=y)
    new, _, _ = make_batch(1, b=2)

    with pytest.raises(KeyboardInterrupt), TraceWriter(path, layers=LAYERS) as w:
        assert traces.read(path).num_samples == 3  # still the old trace
        raise KeyboardInterrupt  # stopped before its first batch
    with traces.read(path) as r:
        assert r.complete and r.num_samples == 3
    assert sorted(p.name for p in tmp_path.iterdir()) == ["t.h5"]

    with TraceWriter(path, layers=LAYERS) as w:
        w.append(new)
        with traces.read(path) as r:  # the new file, readable while it is written
            assert r.num_samples == 2 and not r.complete
    for rename_at, stop in (("close", True), ("close", False)):
        with pytest.raises(KeyboardInterrupt) if stop else nullcontext():
            with TraceWriter(path, layers=LAYERS, rename_at=rename_at) as w:
                w.append(old)
                w.append(old)
                assert traces.read(path).num_samples == 2  # path never holds a partial trace
                if stop:
                    raise KeyboardInterrupt
        assert traces.read(path).num_samples == (2 if stop else 6)
        assert sorted(p.name for p in tmp_path.iterdir()) == ["t.h5"]
    with pytest.raises(ValueError, match="rename_at must be"):
        TraceWriter(path, layers=LAYERS, rename_at="never")


def test_temporaries_of_a_killed_writer_are_removed_by_the_next_writer(tmp_path):
    path = tmp_path / "t.h5"
    stale = tmp_path / ".t.h5.tmp-999999"
    stale.write_bytes(b"left by a writer killed before its first batch")
    other = tmp_path / ".u.h5.tmp-999999"
    other.write_bytes(b"another path's")
    rec, _, _ = make_batch(0)
    traces.write(path, rec, layers=LAYERS)
    assert not stale.exists() and other.exists()


# ----------------------------------------------------------------------------- more bad input
def test_store_state_without_states_in_the_records_is_refused(tmp_path):
    """store_state used to be ignored for records without a state (all of su_neuro's)."""
    rec, _, _ = make_batch(0)
    with pytest.raises(ValueError, match="store_state is set but the record has no state.*StepRecord carries none"):
        traces.write(tmp_path / "s.h5", rec, layers=LAYERS, store_state="float32")
    with_state = {k: SimpleNamespace(gate=r.gate, delta=r.delta, spike=r.spike, state=r.delta.cumsum(1))
                  for k, r in rec.items()}
    traces.write(tmp_path / "s.h5", with_state, layers=LAYERS, store_state="float32")
    with traces.read(tmp_path / "s.h5") as r:
        np.testing.assert_array_equal(r.states("layers.1"), rec["layers.1"].delta.cumsum(1).numpy())


def test_empty_batches_and_steps(tmp_path):
    rec, y, x = make_batch(0)
    empty, _, _ = make_batch(0, b=0)
    path = tmp_path / "e.h5"
    with TraceWriter(path, layers=LAYERS) as w:
        w.append(empty)  # nothing to append: no encoding chosen from it
        w.append(rec)
    with traces.read(path) as r:
        assert r.num_samples == 3 and r.encodings["layers.0"]["gate"] == "packbits"
    no_steps, _, _ = make_batch(0, t=0)
    with pytest.raises(ValueError, match="a batch of 0 steps; a trace needs at least one step"):
        traces.write(tmp_path / "z.h5", no_steps, layers=LAYERS)
    with pytest.raises(ValueError, match="labels of dtype <U3 cannot be stored"):
        traces.write(tmp_path / "u.h5", rec, layers=LAYERS, labels=np.array(["cat", "dog", "owl"]))
    with TraceWriter(tmp_path / "none.h5", layers=LAYERS):
        pass  # closed before its first batch: an empty trace
    with traces.read(tmp_path / "none.h5") as r:
        assert r.num_samples == 0 and r.gates("layers.1").shape == (0, 0, 9)
        assert r.spikes("layers.0").shape == (0, 0, 11)


def test_wrong_dtypes_and_damaged_event_lists_name_the_dataset(tmp_path):
    rec, y, _ = make_batch(0, b=4)
    good = traces.write(tmp_path / "good.h5", rec, layers=LAYERS, labels=y, gate_encoding="packbits",
                        spike_encoding="events")

    def damaged(edit):
        return _edited_copy(good, tmp_path / "bad.h5", edit)

    def replace(name, make):
        def edit(f):
            data = f[name][()]
            del f[name]
            f.create_dataset(name, data=make(data))
        return edit

    def drop_encoding(f):
        del f["layers/layers.0"].attrs["spike_encoding"]

    opening = ((replace("layers/layers.1/gate", lambda d: d.astype(np.float32)), "/layers/layers.1/gate",
                "has dtype float32, expected uint8"),
               (replace("layers/layers.0/spike_events", lambda d: d.astype(np.float64)),
                "/layers/layers.0/spike_events", "has dtype float64, expected integers"),
               (drop_encoding, "/layers/layers.0/spike", "is missing (no spike encoding recorded)"))
    for edit, dataset, message in opening:
        with pytest.raises(CorruptTraceError) as err:
            traces.read(damaged(edit))
        assert dataset in str(err.value) and message in str(err.value), str(err.value)

    with traces.read(good) as r:
        n_events = int(r._f["layers/layers.0/spike_offsets"][-1])
    assert n_events >= 2, "the batch needs spikes in more than one sample"

    def shift_sample(f):
        ev = f["layers/layers.0/spike_events"]
        first = ev[0]
        first[0] = 3 if first[0] != 3 else 0  # an event that names another sample than its offsets
        ev[0] = first

    def decrease(f):
        off = f["layers/layers.0/spike_offsets"]
        off[1] = off[2] + 1

    for edit, message in ((shift_sample, "name other samples than their offsets"),
                          (decrease, "(decrease|name other samples)")):
        with traces.read(damaged(edit)) as r:
            for samples in (None, [0, 1, 2, 3]):
                with pytest.raises(CorruptTraceError, match=f"cannot read layers.0/spike .*{message}"):
                    r.spikes("layers.0", samples)

    lengths = tmp_path / "len.h5"
    with TraceWriter(lengths, layers=LAYERS) as w:
        w.append(rec, lengths=np.array([17, 3, 1, 17]))
    with h5py.File(lengths, "r+") as f:
        f["lengths"][1] = 0
    with traces.read(lengths) as r, pytest.raises(CorruptTraceError, match=r"/lengths holds values outside \[1, 17\]"):
        r.lengths()


def test_unreadable_file_is_a_trace_error(tmp_path, monkeypatch):
    """A file the user may not read (tested by its error: the tests may run as root)."""
    path = traces.write(tmp_path / "p.h5", make_batch(0)[0], layers=LAYERS)

    def denied(name):
        raise PermissionError(13, "Permission denied", name)

    monkeypatch.setattr(h5py, "is_hdf5", denied)
    with pytest.raises(TraceError, match=r"p.h5: cannot read the file \(Permission denied\)"):
        traces.read(path)


def test_a_writer_dropped_without_close_lets_go_of_its_path(tmp_path, monkeypatch):
    """A notebook cell that failed left its writer unclosed: the path stayed locked for the
    whole process. Also: a relative path with the working directory changed meanwhile, an
    empty batch before the first one, a folder the lock file cannot be created in."""
    import gc

    rec, _, _ = make_batch(0)
    path = tmp_path / "d.h5"
    w = TraceWriter(path, layers=LAYERS)
    w.open()
    w.append(rec)
    del w
    gc.collect()
    traces.write(path, rec, layers=LAYERS)
    assert sorted(p.name for p in tmp_path.iterdir()) == ["d.h5"]

    (tmp_path / "a").mkdir()
    (tmp_path / "b").mkdir()
    monkeypatch.chdir(tmp_path / "a")
    with TraceWriter("rel.h5", layers=LAYERS) as w:
        monkeypatch.chdir(tmp_path / "b")
        w.append(rec)
    assert [p.name for p in (tmp_path / "a").iterdir()] == ["rel.h5"] and not list((tmp_path / "b").iterdir())

    with TraceWriter(tmp_path / "e.h5", layers=LAYERS) as w:
        w.append(make_batch(0, b=0, t=5)[0])  # fixes no T
        w.append(rec)
    assert traces.read(tmp_path / "e.h5").num_steps == 17

    real = os.open

    def denied(name, flags, *args):
        if str(name).endswith(".lock"):
            raise PermissionError(13, "Permission denied", name) if flags & os.O_CREAT else \
                FileNotFoundError(2, "No such file or directory", name)
        return real(name, flags, *args)

    monkeypatch.setattr(os, "open", denied)
    with pytest.raises(PermissionError) as err:
        TraceWriter(tmp_path / "ro.h5", layers=LAYERS).open()
    assert err.value.filename == str(tmp_path / "ro.h5")
