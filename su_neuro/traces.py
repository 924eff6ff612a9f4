"""HDF5 traces of gate events, spikes and state changes.

A trace holds what a recording forward pass returns (one ``StepRecord`` per recurrent
sub-layer: ``gate``, ``delta``, ``spike``, each ``(B, T, H)``) for many batches, plus
the layer metadata, the model configuration and run metadata. The file layout is
documented in ``docs/trace-format.md`` so that it can be read with plain h5py.

Writing streams batch by batch into chunked, compressed, resizable datasets, so memory
stays bounded by one batch; reading is lazy (only the requested samples are read).

Crash safety: the file is written in HDF5's single-writer/multiple-reader (SWMR) mode,
which orders metadata writes so that the file is readable at any instant; after every
batch the data is flushed and only then the ``/committed`` sample counter is advanced
and flushed. A reader trusts ``committed`` samples only, so a writer killed at any point
leaves a file holding every batch completed before the kill. The file is written under a
temporary name and renamed onto its path at its first committed batch (or at its close), and
the writer holds a lock beside it: an existing trace is replaced only by one that holds a
batch, and two writers of one path cannot mix their batches.

Example::

    from su_neuro import traces
    with traces.TraceWriter("run.h5", layers={"layers.0": meta}, config=cfg) as w:
        for x, y in loader:
            _, records = model(x, record=True)
            w.append(records, labels=y)
    r = traces.read("run.h5")
    g = r.gates("layers.0", samples=slice(0, 8))      # bool (8, T, H)
"""

from __future__ import annotations

import contextlib
import datetime as _dt
import errno
import glob
import json
import math
import os
import platform
import weakref
from collections.abc import Iterator, Mapping
from pathlib import Path
from typing import TYPE_CHECKING, Any, NamedTuple

import h5py
import numpy as np

from . import _files

if TYPE_CHECKING:
    from typing_extensions import Self

__all__ = [
    "FORMAT",
    "SCHEMA_VERSION",
    "CorruptTraceError",
    "NotATraceError",
    "NotHDF5Error",
    "SchemaVersionError",
    "TraceChunk",
    "TraceError",
    "TraceNotFoundError",
    "TraceReader",
    "TraceWriter",
    "choose_encoding",
    "read",
    "write",
]

FORMAT = "su_neuro.trace"
SCHEMA_VERSION = 1
SUPPORTED_SCHEMA = 1

#: bytes one event costs in the event-list encoding: (sample, t, neuron) as uint32
EVENT_BYTES = 12
#: below this density (fraction of ones) an event list is smaller than packed bits:
#: 12 bytes * density < 1/8 byte  <=>  density < 1/96
EVENT_DENSITY_THRESHOLD = 1.0 / (8 * EVENT_BYTES)

_LAYER_KEYS = ("cell", "gate", "input_size", "hidden_size", "recurrent", "input_kind")
_CHUNK_BYTES = 256 * 1024
_KIND_NAMES = {"iu": "integers", "biu": "integers or booleans", "f": "floats"}
_EVENT_CHUNK = 16384


# ----------------------------------------------------------------------------- errors
class TraceError(Exception):
    """Base class of every error raised for an unreadable or invalid trace."""


class TraceNotFoundError(TraceError, FileNotFoundError):
    """The trace path does not exist."""


class NotHDF5Error(TraceError):
    """The file exists but is not an HDF5 file."""


class CorruptTraceError(TraceError):
    """An HDF5 file that cannot be opened or read (truncated or damaged)."""


class NotATraceError(TraceError):
    """A valid HDF5 file that is not a su_neuro trace."""


class SchemaVersionError(TraceError):
    """The trace was written with a newer schema than this su_neuro can read."""


# ----------------------------------------------------------------------------- helpers
def _np(x: Any) -> np.ndarray | None:
    """Tensor (any device) or array-like -> numpy array; None stays None."""
    if x is None:
        return None
    if hasattr(x, "detach"):
        x = x.detach()
        if hasattr(x, "cpu"):
            x = x.cpu()
        return x.numpy()
    return np.asarray(x)


def _binary(x: Any, what: str) -> np.ndarray:
    """A 0/1 array -> bool, refusing anything else (storage is bit-exact)."""
    a = _np(x)
    if a.ndim != 3:
        raise ValueError(f"{what} must be (B, T, H), got shape {a.shape}")
    if a.dtype == np.bool_:
        return a
    b = a != 0
    if np.any(b & (a != 1)):
        raise ValueError(f"{what} must hold only 0 and 1")
    return b


def choose_encoding(bits: np.ndarray) -> str:
    """``"events"`` if an event list is smaller than packed bits for ``bits``, else
    ``"packbits"``. Packed bits cost 1/8 byte per entry, an event 12 bytes, so events
    win when the density of ones is below 1/96 (about 1.04 %)."""
    density = float(np.count_nonzero(bits)) / max(bits.size, 1)
    return "events" if density < EVENT_DENSITY_THRESHOLD else "packbits"


def _chunks(shape_tail: tuple[int, ...], itemsize: int, batch: int) -> tuple[int, ...]:
    """Chunk shape ``(samples, *tail)`` of about ``_CHUNK_BYTES``: split the leading tail
    axis (time) when one sample is too large, group samples when it is small."""
    tail = list(shape_tail)
    per_sample = itemsize * math.prod(tail)
    if per_sample > _CHUNK_BYTES:
        while tail[0] > 1 and itemsize * math.prod(tail) > _CHUNK_BYTES:
            tail[0] = (tail[0] + 1) // 2
        return (1, *tail)
    cs = max(1, min(batch, _CHUNK_BYTES // max(per_sample, 1)))
    return (cs, *tail)


def _version() -> str:
    try:
        import su_neuro

        return str(getattr(su_neuro, "__version__", "unknown"))
    except ImportError:  # pragma: no cover - su_neuro half-imported
        return "unknown"


def _json_default(o: Any) -> Any:
    if isinstance(o, (np.integer,)):
        return int(o)
    if isinstance(o, (np.floating,)):
        return float(o)
    if isinstance(o, np.ndarray):
        return o.tolist()
    return str(o)


def _dumps(d: Mapping[str, Any]) -> str:
    return json.dumps(dict(d), default=_json_default, sort_keys=True)


def _check_layer_meta(name: str, meta: Mapping[str, Any]) -> dict[str, Any]:
    if "/" in name or not name:
        raise ValueError(f"layer name {name!r} must be non-empty and contain no '/'")
    missing = [k for k in _LAYER_KEYS if k not in meta]
    if missing:
        raise ValueError(f"layer {name!r}: metadata lacks {missing}")
    if meta["cell"] not in ("rnn", "gru", "lif"):
        raise ValueError(f"layer {name!r}: cell must be rnn, gru or lif, got {meta['cell']!r}")
    if meta["input_kind"] not in ("dense", "spike"):
        raise ValueError(f"layer {name!r}: input_kind must be dense or spike")
    return dict(meta)


# ----------------------------------------------------------------------------- writer
class _Stream:
    """One bit stream (gate or spike) of one layer, packed or as an event list."""

    def __init__(self, grp: h5py.Group, key: str, first: np.ndarray, encoding: str,
                 comp: dict[str, Any]) -> None:
        self.key = key
        if encoding == "auto":
            encoding = choose_encoding(first)
        if encoding not in ("packbits", "events"):
            raise ValueError(f"encoding must be auto, packbits or events, got {encoding!r}")
        self.encoding = encoding
        grp.attrs[f"{key}_encoding"] = encoding
        b, t, h = first.shape
        if encoding == "packbits":
            hb = (h + 7) // 8
            self.ds = grp.create_dataset(
                key, shape=(0, t, hb), maxshape=(None, t, hb), dtype=np.uint8,
                chunks=_chunks((t, hb), 1, b), **comp)
        else:
            self.ev = grp.create_dataset(
                f"{key}_events", shape=(0, 3), maxshape=(None, 3), dtype=np.uint32,
                chunks=(_EVENT_CHUNK, 3), **comp)
            self.off = grp.create_dataset(
                f"{key}_offsets", shape=(1,), maxshape=(None,), dtype=np.int64,
                chunks=(4096,), data=np.zeros(1, np.int64), **comp)

    def append(self, bits: np.ndarray, start: int) -> None:
        b = bits.shape[0]
        if self.encoding == "packbits":
            packed = np.packbits(bits, axis=-1, bitorder="little")
            self.ds.resize(start + b, axis=0)
            self.ds[start:start + b] = packed
            return
        s, t, n = np.nonzero(bits)  # C order: sorted by sample, then t, then neuron
        ev = np.stack([s + start, t, n], axis=1).astype(np.uint32)
        e0 = int(self.off[start])
        counts = np.bincount(s, minlength=b)
        self.ev.resize(e0 + len(ev), axis=0)
        if len(ev):
            self.ev[e0:e0 + len(ev)] = ev
        self.off.resize(start + b + 1, axis=0)
        self.off[start + 1:start + b + 1] = e0 + np.cumsum(counts)


_WRITING: set[Path] = set()
"""The traces the TraceWriters of this process hold open (their folders' real paths)."""


def _let_go(key: Path, lock: Path, fd: int | None) -> None:
    _WRITING.discard(key)
    _files.release(lock, fd)


class TraceWriter:
    """Stream recorded batches into an HDF5 trace.

    Args:
        path: file to create (overwritten if it exists).
        layers: ``{name: metadata}`` for every recorded sub-layer, in model order; metadata
            holds ``cell, gate, input_size, hidden_size, recurrent, input_kind``.
        config: model configuration (stored as a JSON string attribute).
        store_delta / store_state: ``None`` (not stored), ``"float16"`` or ``"float32"``.
            The state is taken from a record's ``state`` attribute; records without one
            (su_neuro's ``StepRecord``) are refused with ``store_state`` set.
        run_meta: extra run metadata (``backend``, ``seed``, ...); version and UTC time
            are added.
        gate_encoding / spike_encoding: ``"auto"`` (decided on the first batch, see
            :func:`choose_encoding`), ``"packbits"`` or ``"events"``.
        compression: ``"gzip"`` (default, level 4) or ``"lzf"`` or ``None``.
        swmr: write in SWMR mode (crash safe, default). Without it a killed writer may
            leave an unreadable file.
        rename_at: the file is written under a temporary name beside ``path``
            (``.<name>.tmp-<pid>``) and renamed onto ``path`` when its first batch is
            committed (``"first_batch"``, the default: a long run can be read while it is
            written) or when it is closed whole (``"close"``: ``path`` never holds a partial
            trace). Until then a file already at ``path`` stays as it was; a writer closed
            by an error before that point removes its temporary file and leaves ``path`` alone.

    While open, the writer holds ``.<name>.lock`` beside the file (``flock``, removed at the
    end): a second writer of the same path is refused with a :class:`TraceError` instead
    of writing into the same file.

    ``append(records, labels=None, inputs=None)`` adds one batch: ``records`` maps layer
    name to an object with ``gate``, ``delta``, ``spike`` (``(B, T, H)``), ``labels`` is
    ``(B, ...)``, ``inputs`` the model input ``(B, T, F)`` of which only the number of
    nonzero entries per step is stored (for operation counts). Every batch must have the
    same T and supply the same optional fields as the first one.
    ``lengths`` (B,) (or the records' ``lengths``): valid steps of each sample of a padded
    batch, stored as the root dataset ``lengths`` (absent: every sample has T steps); a
    batch without lengths in a trace that has them stores T.
    """

    def __init__(self, path: str | os.PathLike, *, layers: Mapping[str, Mapping[str, Any]],
                 config: Mapping[str, Any] | None = None, store_delta: str | None = None,
                 store_state: str | None = None, run_meta: Mapping[str, Any] | None = None,
                 gate_encoding: str = "auto", spike_encoding: str = "auto",
                 compression: str | None = "gzip", swmr: bool = True, rename_at: str = "first_batch") -> None:
        if rename_at not in ("first_batch", "close"):
            raise ValueError(f"rename_at must be 'first_batch' or 'close', got {rename_at!r}")
        for nm, v in (("store_delta", store_delta), ("store_state", store_state)):
            if v not in (None, "float16", "float32"):
                raise ValueError(f"{nm} must be None, 'float16' or 'float32', got {v!r}")
        if not layers:
            raise ValueError("layers must name at least one layer")
        self.path = Path(path)
        self.layers = {k: _check_layer_meta(k, v) for k, v in layers.items()}
        self.config = dict(config or {})
        self.store_delta = store_delta
        self.store_state = store_state
        self._encodings = {"gate": gate_encoding, "spike": spike_encoding}
        if compression == "gzip":
            self._comp: dict[str, Any] = {"compression": "gzip", "compression_opts": 4}
        elif compression == "lzf":
            self._comp = {"compression": "lzf"}
        elif compression is None:
            self._comp = {}
        else:
            raise ValueError(f"compression must be gzip, lzf or None, got {compression!r}")
        self._swmr = swmr
        meta = dict(run_meta or {})
        meta.setdefault("backend", "unknown")
        meta.setdefault("seed", None)
        meta["su_neuro_version"] = _version()
        meta["created_utc"] = _dt.datetime.now(_dt.timezone.utc).isoformat(timespec="seconds")
        meta["h5py_version"] = h5py.version.version
        meta["hdf5_version"] = h5py.version.hdf5_version
        meta["python_version"] = platform.python_version()
        self.run_meta = meta
        self._rename_at = rename_at
        # absolute: a change of the working directory while the file is written moves nothing
        self._target = Path(os.path.abspath(self.path))
        self._tmp = self._target.with_name(f".{self._target.name}.tmp-{os.getpid()}")
        self._lock = self._target.with_name(f".{self._target.name}.lock")
        self._lock_fd: int | None = None
        self._locked = False
        self._renamed = False
        if os.name == "nt":  # an open file cannot be renamed there: written in place, as before
            self._tmp, self._renamed = self._target, True
        self._f: h5py.File | None = None
        self._n = 0
        self._t: int | None = None
        self._streams: dict[tuple[str, str], _Stream] = {}

    # -- context manager
    def __enter__(self) -> Self:
        self.open()
        return self

    def __exit__(self, exc_type, *exc: object) -> None:
        self.close(interrupted=exc_type is not None)

    def _take_lock(self) -> None:
        """Hold this path's lock (see the class docstring) and remove the temporary files of
        writers of it that were killed before their file was renamed into place."""
        if self._locked:
            return
        if self._target.is_dir():
            raise IsADirectoryError(errno.EISDIR, "a folder, where the trace file should be written", str(self.path))
        with _files.errors_named(self.path):
            self._target.parent.mkdir(parents=True, exist_ok=True)
            # the key of this file whatever the path that reaches it (a folder by a link)
            self._key = Path(os.path.realpath(self._target.parent)) / self._target.name
            if self._key in _WRITING:
                raise TraceError(f"{self.path}: a TraceWriter of this process is writing this trace; close it "
                                 "first (with TraceWriter(...) as w: closes it however the block ends)")
            self._lock_fd = _files.acquire(self._lock, lambda: TraceError(
                f"{self.path}: another process is writing this trace (it holds {self._lock.name}); wait for it "
                "to end, or choose another file name"), f"the trace {self.path}")
        self._locked = True
        _WRITING.add(self._key)
        # a writer dropped without close() (a notebook cell that failed) lets go of the path
        self._finalizer = weakref.finalize(self, _let_go, self._key, self._lock, self._lock_fd)
        if self._lock_fd is not None:  # no other writer of this path is alive
            for stale in self._target.parent.glob(f".{glob.escape(self._target.name)}.tmp-*"):
                with contextlib.suppress(OSError):
                    stale.unlink()

    def _release(self) -> None:
        if self._locked:
            self._finalizer()  # _let_go, once
            self._lock_fd, self._locked = None, False

    def _rename(self) -> None:
        """Put the file written so far at ``path`` (it replaces what was there: a symbolic link
        at ``path`` is replaced, not written through), its bytes on the disk first."""
        with _files.errors_named(self.path):
            fd = os.open(self._tmp, os.O_RDONLY)
            try:
                os.fsync(fd)
            finally:
                os.close(fd)
            os.replace(self._tmp, self._target)
        _files.fsync_dir(self._target.parent)
        self._renamed = True

    def open(self) -> None:
        self._take_lock()
        try:
            f = h5py.File(self._tmp, "w", libver="latest")
        except BaseException:
            self._release()
            raise
        f.attrs["format"] = FORMAT
        f.attrs["schema_version"] = np.int64(SCHEMA_VERSION)
        f.attrs["config"] = _dumps(self.config)
        f.attrs["run_meta"] = _dumps(self.run_meta)
        f.attrs["su_neuro_version"] = self.run_meta["su_neuro_version"]
        f.attrs["created_utc"] = self.run_meta["created_utc"]
        f.attrs["layer_order"] = json.dumps(list(self.layers))
        f.create_dataset("committed", data=np.zeros(1, np.int64), maxshape=(1,))
        f.create_dataset("closed", data=np.zeros(1, np.uint8), maxshape=(1,))
        f.create_dataset("interrupted", data=np.zeros(1, np.uint8), maxshape=(1,))
        lg = f.create_group("layers")
        for name, meta in self.layers.items():
            g = lg.create_group(name)
            for k in _LAYER_KEYS:
                v = meta[k]
                g.attrs[k] = np.bool_(v) if isinstance(v, bool) else v
            g.attrs["meta"] = _dumps(meta)
        self._f = f

    @property
    def num_samples(self) -> int:
        """Samples committed so far."""
        return self._n

    def _create(self, recs: dict[str, dict[str, np.ndarray | None]], labels: np.ndarray | None,
                nnz: np.ndarray | None, batch: int, lengths: np.ndarray | None = None) -> None:
        f = self._f
        t = self._t
        f.attrs["num_steps"] = np.int64(t)
        for name, r in recs.items():
            g = f["layers"][name]
            h = r["gate"].shape[2]
            g.attrs["stored"] = json.dumps(
                [k for k in ("gate", "spike", "delta", "state") if r.get(k) is not None])
            self._streams[(name, "gate")] = _Stream(g, "gate", r["gate"],
                                                    self._encodings["gate"], self._comp)
            if r["spike"] is not None:
                self._streams[(name, "spike")] = _Stream(g, "spike", r["spike"],
                                                         self._encodings["spike"], self._comp)
            for key, dt in (("delta", self.store_delta), ("state", self.store_state)):
                if r.get(key) is not None:
                    g.create_dataset(key, shape=(0, t, h), maxshape=(None, t, h), dtype=dt,
                                     chunks=_chunks((t, h), np.dtype(dt).itemsize, batch),
                                     shuffle=bool(self._comp), **self._comp)
        if labels is not None:
            f.create_dataset("labels", shape=(0, *labels.shape[1:]),
                             maxshape=(None, *labels.shape[1:]), dtype=labels.dtype,
                             chunks=_chunks(labels.shape[1:], labels.dtype.itemsize,
                                            max(batch, 1024)), **self._comp)
        if lengths is not None:
            f.create_dataset("lengths", shape=(0,), maxshape=(None,), dtype=np.int64,
                             chunks=(max(batch, 1024),))
        if nnz is not None:
            f.create_dataset("input_nnz", shape=(0, t), maxshape=(None, t), dtype=np.int32,
                             chunks=_chunks((t,), 4, max(batch, 64)), **self._comp)
            f.create_dataset("input_binary", shape=(0,), maxshape=(None,), dtype=np.uint8,
                             chunks=(4096,), **self._comp)
        if self._swmr:
            f.swmr_mode = True

    def append(self, records: Mapping[str, Any], labels: Any = None, inputs: Any = None,
               lengths: Any = None) -> None:
        """Append one batch (see the class docstring)."""
        if self._f is None:
            raise RuntimeError("TraceWriter is not open (use it as a context manager)")
        _check_records(records, self.layers)
        recs: dict[str, dict[str, np.ndarray | None]] = {}
        batch = None
        steps_before = self._t
        for name, meta in self.layers.items():
            if name not in records:
                raise ValueError(f"records lack layer {name!r}")
            rec = records[name]
            gate = _binary(rec.gate, f"{name}.gate")
            b, t, h = gate.shape
            if h != int(meta["hidden_size"]):
                raise ValueError(f"{name}: gate has {h} neurons, metadata says "
                                 f"hidden_size={meta['hidden_size']}")
            if batch is None:
                batch = b
            if b != batch:
                raise ValueError("all layers of a batch must have the same batch size")
            if t < 1:
                raise ValueError(f"{name}: a batch of {t} steps; a trace needs at least one step")
            if self._t is None:
                self._t = t
            if t != self._t:
                raise ValueError(f"every batch must have T={self._t} steps, got {t}")
            spike = getattr(rec, "spike", None)
            r = {"gate": gate, "spike": None if spike is None else _binary(spike, f"{name}.spike")}
            if (r["spike"] is None) != (meta["cell"] != "lif"):
                raise ValueError(f"{name}: spikes are required for LIF layers and only there")
            for key, dt in (("delta", self.store_delta), ("state", self.store_state)):
                v = getattr(rec, key, None) if dt is not None else None
                if dt is not None and v is None:
                    hint = (" (su_neuro's StepRecord carries none: store_delta, and h_t is h_0 plus the "
                            "sum of the deltas up to t)") if key == "state" else ""
                    raise ValueError(f"{name}: store_{key} is set but the record has no {key}{hint}")
                r[key] = None if v is None else _np(v).astype(dt, copy=False)
                if r[key] is not None and r[key].shape != gate.shape:
                    raise ValueError(f"{name}.{key} shape {r[key].shape} != gate {gate.shape}")
            recs[name] = r
        if batch == 0:
            self._t = steps_before  # nothing appended: no T fixed, no encoding chosen from it
            return
        lab = _np(labels)
        if lab is not None and (lab.ndim == 0 or lab.shape[0] != batch):
            raise ValueError(f"labels must be (B, ...) with B={batch}")
        if lab is not None and lab.dtype.kind in "UOMm":
            raise ValueError(f"labels of dtype {lab.dtype} cannot be stored: give numbers (or bytes)")
        nnz = None
        if inputs is not None:
            x = _np(inputs)
            if x.ndim != 3 or x.shape[:2] != (batch, self._t):
                raise ValueError(f"inputs must be (B, T, F) = ({batch}, {self._t}, F)")
            nnz = np.count_nonzero(x, axis=2).astype(np.int32)
            # NeuroBench's rule: inputs that take only the values 0 and +-1 are spikes (ACs)
            binary = ((x == 0) | (x == 1) | (x == -1)).reshape(batch, -1).all(axis=1).astype(np.uint8)
        if lengths is None:
            lengths = next((getattr(records[n], "lengths", None) for n in self.layers), None)
        lens = None if lengths is None else _np(lengths).astype(np.int64).reshape(-1)
        if lens is not None and (lens.shape[0] != batch or lens.min() < 1 or lens.max() > self._t):
            raise ValueError(f"lengths must be (B,) = ({batch},) values in [1, {self._t}]")
        f = self._f
        if not self._streams:
            self._create(recs, lab, nnz, batch, lens)
        elif lens is not None and "lengths" not in f:
            raise ValueError("lengths given after the first batch; give them with the first batch")
        else:
            if ("labels" in f) != (lab is not None) or ("input_nnz" in f) != (nnz is not None):
                raise ValueError("every batch must supply labels / inputs like the first batch")
            for name, r in recs.items():
                g = f["layers"][name]
                for key in ("delta", "state"):
                    if (key in g) != (r[key] is not None):
                        raise ValueError(f"{name}: {key} given in some batches only")
        start = self._n
        end = start + batch
        for name, r in recs.items():
            self._streams[(name, "gate")].append(r["gate"], start)
            if r["spike"] is not None:
                self._streams[(name, "spike")].append(r["spike"], start)
            g = f["layers"][name]
            for key in ("delta", "state"):
                if r[key] is not None:
                    g[key].resize(end, axis=0)
                    g[key][start:end] = r[key]
        if lab is not None:
            f["labels"].resize(end, axis=0)
            f["labels"][start:end] = lab
        if nnz is not None:
            f["input_nnz"].resize(end, axis=0)
            f["input_nnz"][start:end] = nnz
            f["input_binary"].resize(end, axis=0)
            f["input_binary"][start:end] = binary
        if "lengths" in f:
            f["lengths"].resize(end, axis=0)
            f["lengths"][start:end] = lens if lens is not None else self._t
        # commit: data first, then the counter readers trust
        f.flush()
        f["committed"][0] = end
        f.flush()
        self._n = end
        if self._rename_at == "first_batch" and not self._renamed:
            self._rename()

    def close(self, interrupted: bool = False) -> None:
        """Marks the file closed and closes it; ``interrupted``: the run ended early (an
        exception, Ctrl-C, inside the ``with`` block), so the trace is whole but short."""
        if self._f is None:
            self._release()
            return
        try:
            if interrupted:
                self._f["interrupted"][0] = 1
            self._f["closed"][0] = 1
            self._f.flush()
        finally:
            self._f.close()
            self._f = None
            try:
                if not self._renamed:
                    if interrupted:  # nothing of this run is at path: leave what is there alone
                        with contextlib.suppress(OSError):
                            self._tmp.unlink()
                    else:
                        self._rename()
            finally:
                self._release()


def write(path: str | os.PathLike, records: Mapping[str, Any], *,
          layers: Mapping[str, Mapping[str, Any]], labels: Any = None, inputs: Any = None,
          **kwargs: Any) -> Path:
    """One-shot: write one batch of ``records`` to a new trace at ``path``.
    Keyword arguments are those of :class:`TraceWriter`."""
    _check_records(records, layers)  # before the file is created: a refused call leaves no file behind
    with TraceWriter(path, layers=layers, **kwargs) as w:
        w.append(records, labels=labels, inputs=inputs)
    return Path(path)


def _check_records(records: Any, layers: Mapping[str, Any]) -> None:
    """Refuse records that are not a dict layer name -> StepRecord naming declared layers.

    The message names types and layer names only: a record's tensors printed in an error
    message would bury the one line that says what is wrong.
    """
    if not isinstance(records, Mapping):
        kinds = sorted({type(r).__name__ for r in records}) if isinstance(records, (list, tuple)) else []
        held = f" of {', '.join(kinds)}" if kinds else ""
        raise TypeError(f"records must be a dict layer name -> StepRecord (as a model's record=True returns), "
                        f"got a {type(records).__name__}{held}; declared layers: {list(layers)}")
    unknown = [k if isinstance(k, str) else f"<{type(k).__name__}>" for k in records if k not in layers]
    if unknown:
        raise ValueError(f"records for undeclared layers: {unknown}; declared layers: {list(layers)}")


# ----------------------------------------------------------------------------- reader
class TraceChunk(NamedTuple):
    """Samples ``start:stop`` of a trace, all layers (arrays are numpy)."""

    start: int
    stop: int
    gates: dict[str, np.ndarray]            # bool (n, T, H)
    spikes: dict[str, np.ndarray | None]    # bool (n, T, H) for LIF, else None
    input_nnz: np.ndarray | None            # int (n, T) or None
    input_binary: np.ndarray | None = None  # bool (n,): inputs only 0 / +-1, or None
    lengths: np.ndarray | None = None       # int (n,) valid steps per sample, or None (all T)


def _open_h5(path: Path) -> h5py.File:
    if not path.exists():
        raise TraceNotFoundError(f"{path}: no such trace file")
    if path.is_dir():
        raise TraceError(f"{path}: is a directory, not a trace file")
    try:
        if path.stat().st_size == 0 or not h5py.is_hdf5(str(path)):
            raise NotHDF5Error(f"{path}: not an HDF5 file (no HDF5 signature)")
    except OSError as e:  # e.g. no permission to read it
        raise TraceError(f"{path}: cannot read the file ({e.strerror or e})") from None
    try:
        return h5py.File(path, "r")
    except OSError as e:
        first = e
    if "unable to lock file" in str(first):
        raise TraceError(f"{path}: another process holds the file open for writing, not in SWMR mode (a writer "
                         "with swmr=False, or an older su_neuro's before its first batch); read it once that "
                         "writer has closed it") from None
    if "already open for write" in str(first):
        # A writer that did not close the file (killed, or still running) leaves the
        # superblock's "open for writing" flag set. In SWMR mode the file is consistent
        # at every instant, and a SWMR reader ignores the flag.
        try:
            return h5py.File(path, "r", libver="latest", swmr=True)
        except OSError:
            pass
        raise CorruptTraceError(
            f"{path}: HDF5 file left open by a writer that did not close it, either killed before "
            "its first sample (before the file switches to SWMR mode) or writing with swmr=False; "
            "it cannot be opened safely. `h5clear -s FILE` clears the flag but the content may be "
            f"inconsistent ({first})") from None
    raise CorruptTraceError(
        f"{path}: HDF5 file cannot be opened, it is truncated or damaged ({first})") from None


class TraceReader:
    """Lazy reader of a trace written by :class:`TraceWriter`.

    Only the ``committed`` samples (batches whose write completed) are visible.
    ``samples`` arguments accept ``None`` (all), an int, a slice, or a sequence of indices.

    Attributes: ``num_samples``, ``num_steps``, ``layers`` (name -> metadata dict, in
    model order), ``config``, ``run_meta``, ``schema_version``, ``complete`` (False when
    the writer did not close the file, e.g. it was killed), ``encodings``.
    """

    def __init__(self, path: str | os.PathLike) -> None:
        self.path = Path(path)
        f = _open_h5(self.path)
        try:
            self._init(f)
        except TraceError:
            f.close()
            raise
        except (OSError, KeyError, ValueError, TypeError) as e:
            f.close()
            raise CorruptTraceError(f"{self.path}: damaged trace ({e})") from None
        self._f = f

    def _init(self, f: h5py.File) -> None:
        fmt = f.attrs.get("format")
        if isinstance(fmt, bytes):
            fmt = fmt.decode()
        if fmt != FORMAT:
            raise NotATraceError(f"{self.path}: HDF5 file but not a su_neuro trace "
                                 f"(root attribute format={fmt!r}, expected {FORMAT!r})")
        if "schema_version" not in f.attrs:
            raise CorruptTraceError(f"{self.path}: a su_neuro trace without its root attribute "
                                    "schema_version (the file is damaged or was not written by su_neuro)")
        raw = f.attrs["schema_version"]
        if isinstance(raw, np.ndarray) and raw.shape == ():
            raw = raw[()]
        if isinstance(raw, (bool, np.bool_)) or not isinstance(raw, (int, np.integer)):
            shown = raw.item() if isinstance(raw, np.generic) else raw
            raise CorruptTraceError(f"{self.path}: schema_version must be an integer, got {shown!r} "
                                    "(the file is damaged or was not written by su_neuro)")
        self.schema_version = int(raw)
        if self.schema_version < 1:
            raise CorruptTraceError(f"{self.path}: schema_version {self.schema_version} is not a "
                                    "valid version (versions start at 1)")
        if self.schema_version > SUPPORTED_SCHEMA:
            raise SchemaVersionError(
                f"{self.path}: written by a newer su_neuro: schema {self.schema_version} > "
                f"supported {SUPPORTED_SCHEMA}; upgrade su_neuro to read it")
        self.config = json.loads(f.attrs.get("config", "{}"))
        self.run_meta = json.loads(f.attrs.get("run_meta", "{}"))
        order = json.loads(f.attrs["layer_order"])
        self.layers: dict[str, dict[str, Any]] = {
            n: json.loads(f["layers"][n].attrs["meta"]) for n in order}
        self.num_samples = int(f["committed"][0])
        #: the run ended early (the writer closed the file after an exception or Ctrl-C); absent
        #: in traces written before 2026-12-07
        self.interrupted = "interrupted" in f and bool(f["interrupted"][0])
        self.complete = bool(f["closed"][0]) and not self.interrupted
        self.encodings: dict[str, dict[str, str]] = {}
        for n in order:
            g = f["layers"][n]
            self.encodings[n] = {k: str(g.attrs[f"{k}_encoding"]) for k in ("gate", "spike")
                                 if f"{k}_encoding" in g.attrs}
        self.num_steps = int(f.attrs.get("num_steps", 0))
        self._check_shapes(f)
        self.layout = str(self.run_meta.get("layout", "samples"))
        if self.layout == "segments":
            self._init_stream(f)

    def _check_shapes(self, f: h5py.File) -> None:
        """Check ``/committed`` against what the file stores, and every dataset's shape.

        The reader trusts ``committed`` samples: a counter beyond the stored rows, a negative
        one or a dataset of the wrong shape would otherwise surface as a sample count that
        is not true or as a numpy broadcast error deep inside an analysis. Only shapes are
        read here (and one offset per event list), so opening stays cheap.
        """
        n, t = self.num_samples, self.num_steps

        def bad(name: str, problem: str) -> CorruptTraceError:
            return CorruptTraceError(f"{self.path}: dataset {name} {problem}; the trace is damaged "
                                     "(write it again from its run)")

        if f["committed"].shape != (1,):
            raise bad("/committed", f"has shape {f['committed'].shape}, expected (1,)")
        if n < 0:
            raise bad("/committed", f"holds {n} committed samples, a negative count")
        if n and t < 1:
            raise bad("/committed", f"holds {n} samples but the root attribute num_steps is {t}")

        def rows(name: str, ds: h5py.Dataset, tail: tuple[int, ...] | None, extra: int = 0,
                 kinds: str = "") -> None:
            """``ds`` must be (at least n + extra, *tail) (any tail where ``tail`` is None), of a
            dtype of one of the numpy ``kinds`` (any where empty)."""
            if kinds and ds.dtype.kind not in kinds:
                raise bad(name, f"has dtype {ds.dtype}, expected {_KIND_NAMES[kinds]}")
            if ds.ndim == 0 or (tail is not None and tuple(ds.shape[1:]) != tail):
                expected = str((n + extra, *tail)) if tail is not None else f"({n + extra}, ...)"
                raise bad(name, f"has shape {ds.shape}, expected {expected}")
            if ds.shape[0] < n + extra:
                raise bad(name, f"stores {ds.shape[0] - extra} samples but /committed says {n}")

        for name in self.layers:
            g = f["layers"][name]
            h = int(self.layers[name]["hidden_size"])
            for key in ("gate", "spike"):
                enc = self.encodings[name].get(key)
                path = f"/layers/{name}/{key}"
                if enc is None:
                    if n and (key == "gate" or self.layers[name].get("cell") == "lif"):
                        raise bad(path, f"is missing (no {key} encoding recorded)")
                    continue
                if enc == "packbits":
                    if g[key].dtype != np.uint8:
                        raise bad(path, f"has dtype {g[key].dtype}, expected uint8 (packed bits)")
                    rows(path, g[key], (t, (h + 7) // 8))
                elif enc == "events":
                    off, ev = g[f"{key}_offsets"], g[f"{key}_events"]
                    rows(f"{path}_offsets", off, (), extra=1, kinds="iu")
                    if ev.ndim != 2 or ev.shape[1] != 3:
                        raise bad(f"{path}_events", f"has shape {ev.shape}, expected (events, 3)")
                    if ev.dtype.kind not in "iu":
                        raise bad(f"{path}_events", f"has dtype {ev.dtype}, expected integers")
                    end = int(off[n])
                    if not 0 <= end <= ev.shape[0]:
                        raise bad(f"{path}_offsets", f"points to event {end} of {ev.shape[0]}")
                else:
                    raise bad(path, f"has an unknown encoding {enc!r} (packbits or events)")
            for key in ("delta", "state"):
                if key in g:
                    rows(f"/layers/{name}/{key}", g[key], (t, h), kinds="f")
        for key, tail, kinds in (("input_nnz", (t,), "iu"), ("input_binary", (), "biu"), ("lengths", (), "iu"),
                                 ("labels", None, "")):
            if key in f:
                rows(f"/{key}", f[key], tail, kinds=kinds)

    def _init_stream(self, f: h5py.File) -> None:
        """A streamed simulation (:class:`StreamTraceWriter`): B stream rows cut into segments."""
        b = self.run_meta.get("stream_batch")
        c = self.run_meta.get("segment_steps", self.num_steps)
        if not isinstance(b, int) or b < 1 or not isinstance(c, int) or c != self.num_steps:
            raise CorruptTraceError(f"{self.path}: stream trace with bad stream_batch {b!r} / "
                                    f"segment_steps {c!r} (num_steps {self.num_steps})")
        self.stream_batch = b
        segments = self.num_samples // b
        steps = segments * c
        if "stream_steps" in f:  # absent in traces written before streams could end mid-segment
            written = int(f["stream_steps"][0])
            if written < 0:
                raise CorruptTraceError(f"{self.path}: dataset /stream_steps holds {written}, a negative "
                                        "step count; the trace is damaged")
            steps = min(steps, written)
            segments = -(-steps // c) if c else 0
        self.stream_segments = segments
        self.stream_steps = steps

    # -- context manager / lifetime
    def __enter__(self) -> Self:
        return self

    def __exit__(self, *exc: object) -> None:
        self.close()

    def close(self) -> None:
        if getattr(self, "_f", None) is not None:
            self._f.close()
            self._f = None

    def __repr__(self) -> str:
        return (f"TraceReader({str(self.path)!r}, samples={self.num_samples}, "
                f"steps={self.num_steps}, layers={list(self.layers)})")

    # -- sample selection
    def _index(self, samples: Any) -> tuple[np.ndarray | slice, bool]:
        """-> (sorted unique index array or slice, squeeze)."""
        n = self.num_samples
        if samples is None:
            return slice(0, n), False
        if isinstance(samples, slice):
            start, stop, step = samples.indices(n)
            if step == 1:
                return slice(start, max(start, stop)), False
            return np.arange(start, stop, step), False
        if np.isscalar(samples):
            i = int(samples)
            if i < 0:
                i += n
            if not 0 <= i < n:
                raise IndexError(f"sample {samples} out of range (0..{n - 1})")
            return np.array([i]), True
        idx = np.asarray(samples, dtype=np.int64).ravel()
        idx = np.where(idx < 0, idx + n, idx)
        if idx.size and (idx.min() < 0 or idx.max() >= n):
            raise IndexError(f"sample indices out of range (0..{n - 1})")
        return idx, False

    def _read_rows(self, ds: h5py.Dataset, sel: np.ndarray | slice) -> np.ndarray:
        if isinstance(sel, slice):
            return ds[sel]
        if sel.size == 0:
            return np.zeros((0, *ds.shape[1:]), ds.dtype)
        uniq, inv = np.unique(sel, return_inverse=True)
        return ds[uniq][inv]

    def _bits(self, layer: str, key: str, samples: Any) -> np.ndarray:
        g = self._group(layer)
        enc = self.encodings[layer].get(key)
        h = int(self.layers[layer]["hidden_size"])
        t = self.num_steps
        if enc is None:
            if self.num_samples == 0 and (key == "gate" or self.layers[layer].get("cell") == "lif"):
                self._index(samples)  # out of range unless empty
                return np.zeros((0, t, h), dtype=bool)  # a trace closed before its first batch
            raise TraceError(f"layer {layer!r} has no {key} stream in {self.path}")
        sel, squeeze = self._index(samples)
        try:
            if enc == "packbits":
                packed = self._read_rows(g[key], sel)
                out = np.unpackbits(packed, axis=-1, count=h, bitorder="little").astype(bool)
            else:
                idx = np.arange(sel.start, sel.stop) if isinstance(sel, slice) else sel
                out = np.zeros((len(idx), t, h), dtype=bool)
                off = g[f"{key}_offsets"]
                ev = g[f"{key}_events"]
                if isinstance(sel, slice) and len(idx):
                    e = self._events(off, ev, sel.start, sel.stop, t, h)
                    out[e[:, 0] - sel.start, e[:, 1], e[:, 2]] = True
                else:
                    for j, i in enumerate(idx):
                        e = self._events(off, ev, int(i), int(i) + 1, t, h)
                        out[j, e[:, 1], e[:, 2]] = True
        except (OSError, KeyError, ValueError, IndexError, TypeError) as e:
            raise CorruptTraceError(f"{self.path}: cannot read {layer}/{key} ({e})") from None
        return out[0] if squeeze else out

    @staticmethod
    def _events(off: h5py.Dataset, ev: h5py.Dataset, start: int, stop: int, t: int, h: int) -> np.ndarray:
        """The events ``(sample, t, neuron)`` of samples ``start:stop``, checked against the
        offsets and the trace's sizes (a damaged list would set bits of other samples)."""
        bounds = off[start:stop + 1].astype(np.int64)
        if np.any(np.diff(bounds) < 0):
            raise ValueError(f"the event offsets of samples {start}:{stop} decrease")
        e = ev[int(bounds[0]):int(bounds[-1])].astype(np.int64)
        if len(e):
            rows = e[:, 0]
            expected = np.repeat(np.arange(start, stop), np.diff(bounds))
            if not np.array_equal(rows, expected):
                raise ValueError(f"events of samples {start}:{stop} name other samples than their offsets")
            if e[:, 1:].min() < 0 or e[:, 1].max() >= t or e[:, 2].max() >= h:
                raise ValueError(f"events of samples {start}:{stop} lie outside the {t} steps x {h} neurons")
        return e

    def _group(self, layer: str) -> h5py.Group:
        if self._f is None:
            raise TraceError("trace is closed")
        if layer not in self.layers:
            raise KeyError(f"no layer {layer!r}; layers: {list(self.layers)}")
        return self._f["layers"][layer]

    # -- public accessors
    def gates(self, layer: str, samples: Any = None) -> np.ndarray:
        """Gate events, bool ``(n, T, H)`` (``(T, H)`` for an int ``samples``)."""
        return self._bits(layer, "gate", samples)

    def spikes(self, layer: str, samples: Any = None) -> np.ndarray:
        """Spikes of a LIF layer, bool ``(n, T, H)``; TraceError for other cells."""
        return self._bits(layer, "spike", samples)

    def has(self, layer: str, key: str) -> bool:
        """Whether ``layer`` stores ``key`` (gate, spike, delta or state)."""
        g = self._group(layer)
        return key in self.encodings[layer] or key in g

    def _floats(self, layer: str, key: str, samples: Any) -> np.ndarray:
        g = self._group(layer)
        if key not in g:
            raise TraceError(f"layer {layer!r} stores no {key} (store_{key} was None)")
        sel, squeeze = self._index(samples)
        try:
            out = self._read_rows(g[key], sel)
        except (OSError, KeyError, ValueError, TypeError) as e:
            raise CorruptTraceError(f"{self.path}: cannot read {layer}/{key} ({e})") from None
        return out[0] if squeeze else out

    def deltas(self, layer: str, samples: Any = None) -> np.ndarray:
        """Stored Δh (float16 or float32) ``(n, T, H)``."""
        return self._floats(layer, "delta", samples)

    def states(self, layer: str, samples: Any = None) -> np.ndarray:
        """Stored state h ``(n, T, H)``."""
        return self._floats(layer, "state", samples)

    def _root(self, key: str, samples: Any) -> np.ndarray | None:
        if self._f is None:
            raise TraceError("trace is closed")
        if key not in self._f:
            return None
        sel, squeeze = self._index(samples)
        try:
            out = self._read_rows(self._f[key], sel)
        except (OSError, KeyError, ValueError, TypeError) as e:
            raise CorruptTraceError(f"{self.path}: cannot read {key} ({e})") from None
        return out[0] if squeeze else out

    def labels(self, samples: Any = None) -> np.ndarray | None:
        """Labels ``(n, ...)`` or None when none were written."""
        return self._root("labels", samples)

    def lengths(self, samples: Any = None) -> np.ndarray | None:
        """Valid steps per sample ``(n,)`` of a trace of padded batches, else None (all T)."""
        out = self._root("lengths", samples)
        if out is not None and out.size and (out.min() < 1 or out.max() > self.num_steps):
            raise CorruptTraceError(f"{self.path}: dataset /lengths holds values outside [1, {self.num_steps}]; "
                                    "the trace is damaged (write it again from its run)")
        return out

    def input_nnz(self, samples: Any = None) -> np.ndarray | None:
        """Nonzero model inputs per step ``(n, T)`` or None when not written."""
        return self._root("input_nnz", samples)

    def input_binary(self, samples: Any = None) -> np.ndarray | None:
        """Per sample, bool ``(n,)``: whether every model input was 0 or +-1 (spikes, priced
        as ACs); None when not written (traces written without ``inputs=`` or before it)."""
        out = self._root("input_binary", samples)
        return None if out is None else out.astype(bool)

    def chunk(self, start: int, stop: int) -> TraceChunk:
        """All layers' gates and spikes for samples ``start:stop``."""
        sl = slice(start, stop)
        gates = {n: self.gates(n, sl) for n in self.layers}
        spikes = {n: (self.spikes(n, sl) if "spike" in self.encodings[n] else None)
                  for n in self.layers}
        return TraceChunk(start, min(stop, self.num_samples), gates, spikes, self.input_nnz(sl),
                          self.input_binary(sl), self.lengths(sl))

    def iter_chunks(self, batch_size: int | None = None,
                    max_elements: int = 1 << 24) -> Iterator[TraceChunk]:
        """Iterate the committed samples in chunks; ``batch_size`` defaults to as many
        samples as keep ``samples * T * sum(H)`` below ``max_elements``."""
        if batch_size is None:
            per = max(1, self.num_steps * sum(int(m["hidden_size"]) for m in self.layers.values()))
            batch_size = max(1, max_elements // per)
        for s in range(0, self.num_samples, batch_size):
            yield self.chunk(s, min(s + batch_size, self.num_samples))


    def iter_stream(self) -> Iterator[tuple[int, TraceChunk]]:
        """A streamed trace (``layout == "segments"``) in time order: ``(t0, chunk)`` per
        segment, where ``chunk`` holds the ``stream_batch`` rows over steps ``t0 .. t0 + t - 1``
        of the stream (the padding after the last step is cut off)."""
        if self.layout != "segments":
            raise TraceError(f"{self.path}: not a streamed trace (layout {self.layout!r})")
        b, c = self.stream_batch, self.num_steps
        for j in range(self.stream_segments):
            t0 = j * c
            n = min(c, self.stream_steps - t0)
            ch = self.chunk(j * b, (j + 1) * b)
            nnz = None if ch.input_nnz is None else ch.input_nnz[:, :n]
            yield t0, TraceChunk(ch.start, ch.stop, {k: v[:, :n] for k, v in ch.gates.items()},
                                 {k: None if v is None else v[:, :n] for k, v in ch.spikes.items()},
                                 nnz, ch.input_binary)


def read(path: str | os.PathLike) -> TraceReader:
    """Open a trace for lazy reading (same as ``TraceReader(path)``)."""
    return TraceReader(path)


class StreamTraceWriter:
    """Trace of a streamed simulation (``su_neuro.simulate``), written chunk by chunk.

    A stream of B rows and T steps is run in chunks of C steps; each chunk is appended as B
    trace samples of C steps ("segments" layout): trace sample ``i`` holds steps
    ``(i // B) * C .. (i // B + 1) * C - 1`` of stream row ``i % B``. ``run_meta`` records
    ``layout="segments"``, ``stream_batch=B`` and ``segment_steps=C``; the root dataset
    ``stream_steps`` (int64, 1) counts the steps written. The last chunk may be shorter than
    C: it is padded with zeros (no update, no spike, no input) and ``stream_steps`` tells
    where the stream ends. :meth:`TraceReader.iter_stream` reads it back in time order and
    ``su_neuro.analysis.analyze`` analyses each row as one sequence. Memory stays bounded by
    one chunk. The model inputs of each chunk (``Chunk.input``) are stored as nonzero
    counts per step, so that operations are counted from the real input.

    Use ``append_chunk`` as the ``callback`` of :func:`su_neuro.simulate.simulate`.
    """

    def __init__(self, path: str | os.PathLike, *, layers: Mapping[str, Mapping[str, Any]], batch: int,
                 config: Mapping[str, Any] | None = None, run_meta: Mapping[str, Any] | None = None,
                 **writer_kwargs: Any) -> None:
        self._meta = dict(run_meta or {}, layout="segments", stream_batch=int(batch))
        self._names = list(layers)
        self._writer = TraceWriter(path, layers=layers, config=config, run_meta=self._meta, **writer_kwargs)
        self._writer._take_lock()  # a second writer of the path is refused before any chunk is computed
        self._opened = False
        self._steps: int | None = None
        self._total = 0
        self._ended = False
        self._closed = False

    def __enter__(self) -> StreamTraceWriter:
        return self

    def __exit__(self, exc_type, *exc: object) -> None:
        self.close(interrupted=exc_type is not None)

    def append_chunk(self, chunk: Any) -> None:
        """Append one :class:`su_neuro.simulate.Chunk` (its ``records``, one per layer, and its
        ``input`` when present)."""
        if self._closed:
            raise ValueError("the stream trace is closed: no chunk can be appended")
        if chunk.records is None:
            raise ValueError("the chunk carries no records: run the stream with record=True")
        rows = int(chunk.output.shape[0])
        if rows != self._meta["stream_batch"]:
            # the segments layout places trace sample i at stream row i % B: another B scrambles it
            raise ValueError(f"a chunk of {rows} stream rows, but the trace was opened with batch="
                             f"{self._meta['stream_batch']}")
        steps = int(chunk.output.shape[1])
        if not self._opened:
            self._steps = steps
            self._writer.run_meta["segment_steps"] = steps
            self._writer.open()
            self._opened = True
            # created before the first append switches the file to SWMR mode
            self._writer._f.create_dataset("stream_steps", data=np.zeros(1, np.int64), maxshape=(1,))
        elif self._ended:
            raise ValueError("a chunk after a shorter chunk: only the last chunk of a stream may be shorter")
        if steps > self._steps:
            raise ValueError(f"chunk of {steps} steps after chunks of {self._steps}: a streamed trace "
                             "needs chunks of equal length (the last one may be shorter)")
        pad = self._steps - steps
        self._ended = pad > 0
        records = {n: _Padded(r, pad) for n, r in zip(self._names, chunk.records, strict=True)}
        x = getattr(chunk, "input", None)
        if x is not None:
            x = _np(x)
            if pad:
                x = np.concatenate([x, np.zeros((x.shape[0], pad, *x.shape[2:]), x.dtype)], axis=1)
        # the step count first: a reader takes the smaller of it and the committed chunks, so a
        # writer killed between the two writes loses nothing
        f = self._writer._f
        f["stream_steps"][0] = self._total + steps
        f.flush()
        self._writer.append(records, inputs=x)
        self._total += steps

    def close(self, interrupted: bool = False) -> None:
        """Closes the trace; ``interrupted``: the stream stopped early (``TraceWriter.close``)."""
        self._closed = True
        self._writer.close(interrupted=interrupted)


class _Padded:
    """A step record with ``pad`` zero steps appended (gate closed, no spike, no change)."""

    def __init__(self, record: Any, pad: int) -> None:
        for key in ("gate", "delta", "spike", "state"):
            v = getattr(record, key, None)
            if v is not None and pad:
                v = _np(v)
                v = np.concatenate([v, np.zeros((v.shape[0], pad, *v.shape[2:]), v.dtype)], axis=1)
            setattr(self, key, v)
