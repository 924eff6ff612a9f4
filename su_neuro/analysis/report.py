"""Analysis driver: trace (or in-memory records) -> :class:`Report` -> report.md / .json / PNGs."""

from __future__ import annotations

import json
import math
import os
from collections.abc import Iterable, Iterator, Mapping
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import numpy as np

from .energy import DEFAULT_TABLE, EnergyEstimate, EnergyTable, estimate_energy
from .ops import LayerCarry, OpCounts, count_layer_ops
from .stats import ActivityAccumulator, LayerActivity, ever_updated

__all__ = ["LayerReport", "Report", "analyze", "analyze_records", "summarize"]


@dataclass
class LayerReport:
    """Everything measured for one layer."""

    name: str
    meta: dict[str, Any]
    activity: LayerActivity
    ops: OpCounts
    energy: EnergyEstimate
    notes: list[str] = field(default_factory=list)


#: the ``source`` of a report of records analysed in memory (no trace file)
IN_MEMORY = "<records>"


@dataclass
class Report:
    """Result of :func:`analyze` / :func:`summarize`."""

    source: str
    num_samples: int
    num_steps: int
    layers: dict[str, LayerReport]
    ops: OpCounts
    energy: EnergyEstimate
    table: EnergyTable
    update_rate: float
    activation_sparsity: float
    meta: dict[str, Any] = field(default_factory=dict)
    files: dict[str, str] = field(default_factory=dict)
    notes: list[str] = field(default_factory=list)

    # -- serialisation
    def to_dict(self) -> dict[str, Any]:
        def arr(a: np.ndarray | None) -> list | None:
            if a is None:
                return None
            return [None if not math.isfinite(v) else round(float(v), 6)
                    for v in np.asarray(a, float).ravel()]

        layers = {}
        for n, lr in self.layers.items():
            a = lr.activity
            hist = a.interval_hist
            nz = np.nonzero(hist)[0]
            layers[n] = {
                "meta": lr.meta,
                "update_rate": a.update_rate,
                "gate_sparsity": 1.0 - a.update_rate,
                "activation_sparsity": a.activation_sparsity,
                "firing_rate": a.firing_rate,
                "mean_timescale": _num(a.mean_timescale),
                "neuron_update_rate": arr(a.neuron_update_rate),
                "neuron_firing_rate": arr(a.neuron_firing_rate),
                "neuron_mean_interval": arr(a.mean_interval),
                "step_update_rate": arr(a.step_update_rate),
                "interval_hist": hist[: nz[-1] + 1 if nz.size else 0].tolist(),
                "ops": lr.ops.to_dict(),
                "ops_per_sample": lr.ops.per_sample(),
                "energy": {k: _num(v) for k, v in lr.energy.to_dict().items()},
                "energy_per_sample": {k: _num(v) for k, v in lr.energy.per_sample(self.num_samples).items()},
                "notes": lr.notes,
            }
        return {
            "source": self.source,
            # the trace's resolved path: the same trace from another working directory or link
            "source_path": os.path.realpath(self.source) if self.source and self.source != IN_MEMORY else None,
            "num_samples": self.num_samples,
            "num_steps": self.num_steps,
            "update_rate": self.update_rate,
            "activation_sparsity": self.activation_sparsity,
            "ops": self.ops.to_dict(),
            "ops_per_sample": self.ops.per_sample(),
            "energy": {k: _num(v) for k, v in self.energy.to_dict().items()},
            "energy_per_sample": {k: _num(v) for k, v in self.energy.per_sample(self.num_samples).items()},
            "energy_table": self.table.to_dict(),
            "layers": layers,
            "meta": self.meta,
            "files": self.files,
            "notes": self.notes,
        }

    def summary_table(self) -> str:
        """Plain-text table, one row per layer plus the model total."""
        head = (f"{'layer':<14}{'cell':<5}{'gate':<9}{'H':>6}{'update':>8}{'firing':>8}"
                f"{'interval':>9}{'dense ops':>13}{'eff MACs':>12}{'eff ACs':>12}"
                f"{'E ratio':>9}")
        rows = [head, "-" * len(head)]

        def row(name: str, cell: str, gate: str, h: str, upd: float, fire: float | None,
                ivl: float, ops: OpCounts, en: EnergyEstimate) -> str:
            ps = ops.per_sample()
            fr = "-" if fire is None else f"{fire:.4f}"
            iv = "-" if not math.isfinite(ivl) else f"{ivl:.1f}"
            return (f"{name:<14}{cell:<5}{gate:<9}{h:>6}{upd:>8.4f}{fr:>8}{iv:>9}"
                    f"{ps['dense']:>13.4g}{ps['effective_macs']:>12.4g}"
                    f"{ps['effective_acs']:>12.4g}{en.ratio:>9.4f}")

        for n, lr in self.layers.items():
            a = lr.activity
            rows.append(row(n[:13], lr.meta["cell"], lr.meta["gate"], str(a.hidden_size),
                            a.update_rate, a.firing_rate, a.mean_timescale, lr.ops, lr.energy))
        h = sum(lr.activity.hidden_size for lr in self.layers.values())
        rows.append(row("total", "", "", str(h), self.update_rate, None, float("nan"),
                        self.ops, self.energy))
        rows.append("")
        rows.append(f"samples {self.num_samples}, steps {self.num_steps}; ops per sample; "
                    f"energy ratio = effective / dense compute energy "
                    f"({self.table.name}: MAC {self.table.mac_pj} pJ, AC {self.table.ac_pj} pJ)")
        rows.append(f"compute energy per sample: dense {_pj(self.energy.dense_pj / _n(self))}, "
                    f"effective {_pj(self.energy.effective_pj / _n(self))}; with memory "
                    f"traffic the ratio is {self.energy.ratio_with_memory:.4f}")
        return "\n".join(rows)

    def to_markdown(self) -> str:
        lines = [f"# su_neuro analysis: `{self.source}`", ""]
        lines += ["## Summary", "", "```", self.summary_table(), "```", ""]
        lines += ["## Per layer", "",
                  ("| layer | cell | gate | F | H | update rate | activation sparsity | "
                  "firing rate | mean interval | dense ops/sample | eff. MACs/sample | "
                  "eff. ACs/sample | energy ratio | ratio incl. memory |"),
                  "|---|---|---|---|---|---|---|---|---|---|---|---|---|---|"]
        for n, lr in self.layers.items():
            a, ps, m = lr.activity, lr.ops.per_sample(), lr.meta
            fr = "-" if a.firing_rate is None else f"{a.firing_rate:.4f}"
            iv = "-" if not math.isfinite(a.mean_timescale) else f"{a.mean_timescale:.2f}"
            lines.append(
                f"| {n} | {m['cell']} | {m['gate']} | {m['input_size']} | {m['hidden_size']} | "
                f"{a.update_rate:.4f} | {a.activation_sparsity:.4f} | {fr} | "
                f"{iv} | {ps['dense']:.4g} | {ps['effective_macs']:.4g} | "
                f"{ps['effective_acs']:.4g} | {lr.energy.ratio:.4f} | "
                f"{lr.energy.ratio_with_memory:.4f} |")
        e, n = self.energy, _n(self)
        lines += ["", "## Model totals (per sample)", "",
                  "| quantity | dense | effective | ratio |", "|---|---|---|---|",
                  (f"| synaptic ops | {self.ops.dense / n:.4g} | {self.ops.effective / n:.4g} | "
                  f"{self.ops.effective / max(self.ops.dense, 1):.4f} |"),
                  (f"| compute energy | {_pj(e.dense_pj / n)} | {_pj(e.effective_pj / n)} | "
                  f"{e.ratio:.4f} |"),
                  (f"| memory traffic | {e.dense_memory_bytes / n:.4g} B | "
                  f"{e.effective_memory_bytes / n:.4g} B | "
                  f"{e.effective_memory_bytes / max(e.dense_memory_bytes, 1):.4f} |"),
                  (f"| energy incl. memory | {_pj((e.dense_pj + e.dense_memory_pj) / n)} | "
                  f"{_pj((e.effective_pj + e.effective_memory_pj) / n)} | "
                  f"{e.ratio_with_memory:.4f} |"), "",
                  (f"Update rate {self.update_rate:.4f}, activation sparsity (NeuroBench) "
                  f"{self.activation_sparsity:.4f}."), "",
                  (f"Energy table `{self.table.name}`: MAC {self.table.mac_pj} pJ, "
                  f"AC {self.table.ac_pj} pJ, memory {self.table.mem_pj_per_byte} pJ/byte "
                  f"(source: {self.table.source}). Formulas: docs/analysis.md."), ""]
        notes = self.notes + [f"{n}: {x}" for n, lr in self.layers.items() for x in lr.notes]
        if notes:
            lines += ["## Notes", ""] + [f"- {x}" for x in notes] + [""]
        if self.files:
            lines += ["## Figures", ""]
            lines += [f"![{k}]({Path(v).name})" for k, v in self.files.items()
                      if v.endswith(".png")]
            lines.append("")
        return "\n".join(lines)


def _n(r: Report) -> int:
    return max(r.num_samples, 1)


def _num(v: float) -> float | None:
    return float(v) if math.isfinite(v) else None


def _pj(v: float) -> str:
    for unit, s in (("J", 1e12), ("mJ", 1e9), ("uJ", 1e6), ("nJ", 1e3)):
        if v >= s:
            return f"{v / s:.4g} {unit}"
    return f"{v:.4g} pJ"


# ----------------------------------------------------------------------------- driver
def _input_source(name: str, idx: int, layers: Mapping[str, Mapping[str, Any]]) -> str | None:
    """Name of the layer feeding ``name`` (None: the model input)."""
    src = layers[name].get("input_from")
    if src is not None:
        return None if src == "input" else str(src)
    return None if idx == 0 else list(layers)[idx - 1]


def summarize(chunks: Iterable[Any], layers: Mapping[str, Mapping[str, Any]], num_steps: int,
              *, table: EnergyTable = DEFAULT_TABLE, source: str = IN_MEMORY,
              meta: Mapping[str, Any] | None = None, time_bins: int = 256,
              stream: bool = False, inputs_hint: str = "trace written without inputs=") -> Report:
    """Build a :class:`Report` from chunks with ``gates``, ``spikes`` (dicts of bool
    ``(n, T, H)``), ``input_nnz`` (``(n, T)`` or None) and optionally ``input_binary``
    (``(n,)`` or None), e.g. ``reader.iter_chunks()``.

    ``inputs_hint`` says, in the note on unknown nonzero model inputs, what to pass next time.

    ``stream=True``: the items are ``(t0, chunk)`` pieces of the same n stream rows in time
    order (``reader.iter_stream()``), and each row is analysed as one sequence of
    ``num_steps`` steps: intervals, nonzero states and last spikes carry across the pieces.
    """
    layers = {k: dict(v) for k, v in layers.items()}
    accs = {n: ActivityAccumulator(num_steps, int(m["hidden_size"]), lif=m["cell"] == "lif",
                                   time_bins=time_bins) for n, m in layers.items()}
    ops = {n: OpCounts() for n in layers}
    notes: dict[str, set[str]] = {n: set() for n in layers}
    carries = {n: LayerCarry() for n in layers} if stream else None
    total = 0
    steps = 0  # valid sample-steps (padded steps of variable-length samples excluded)
    for item in chunks:
        t0, ch = item if stream else (None, item)
        rows = next(iter(ch.gates.values())).shape[0]
        total = rows if stream else total + rows
        lengths = None if stream else getattr(ch, "lengths", None)
        if stream:
            steps = rows * num_steps
        else:
            steps += rows * num_steps if lengths is None else int(np.minimum(lengths, num_steps).sum())
        # states of the layers below as they were entering this piece
        ever_in = {n: c.ever for n, c in carries.items()} if stream else {}
        for i, (name, m) in enumerate(layers.items()):
            g = ch.gates[name]
            s = ch.spikes.get(name)
            accs[name].update(g, s, lengths, t0=t0)
            src = _input_source(name, i, layers)
            nnz = binary = None
            if src is None:
                nnz = ch.input_nnz
                binary = getattr(ch, "input_binary", None)
                if nnz is None:
                    notes[name].add(
                        f"nonzero model inputs unknown ({inputs_hint}): all "
                        f"F={m['input_size']} inputs counted every step"
                        + (" (upper bound for spike input)" if m["input_kind"] == "spike" else ""))
                if binary is not None and m["input_kind"] != "spike" and np.any(binary):
                    notes[name].add("model inputs are only 0 / +-1 (spikes): their synaptic "
                                    "operations are counted as ACs, as NeuroBench does")
            elif src not in layers:
                notes[name].add(f"input_from {src!r} is not a recorded layer: all F inputs counted")
            elif int(layers[src]["hidden_size"]) != int(m["input_size"]):
                notes[name].add(f"input size {m['input_size']} != hidden size of {src}: "
                                "all F inputs counted")
            elif layers[src]["cell"] == "lif":
                # spikes: ACs, whatever this layer's metadata says its input is
                nnz = ch.spikes[src].sum(axis=2, dtype=np.int64)
                binary = np.ones(rows, bool)
            else:
                nnz = ever_updated(ch.gates[src], before=False, initial=ever_in.get(src))
                binary = np.zeros(rows, bool)
            ops[name] = ops[name] + count_layer_ops(m, g, input_nnz=nnz, spikes=s, input_binary=binary,
                                                    carry=carries[name] if stream else None, lengths=lengths)
    layer_reports = {}
    for name, m in layers.items():
        ops[name].samples = total
        if m["gate"] == "event":
            notes[name].add("event gate: every candidate is computed (the gate needs it); the "
                            "recurrent product is counted as delta accumulation over the "
                            "neurons that changed at t-1")
        layer_reports[name] = LayerReport(name, m, accs[name].result(), ops[name],
                                          estimate_energy(ops[name], table), sorted(notes[name]))
    tot = OpCounts(samples=total)
    for o in ops.values():
        tot = tot + o
    cells = sum(steps * int(m["hidden_size"]) for m in layers.values())
    upd = sum(lr.ops.neuron_updates for lr in layer_reports.values())
    zeros = sum(lr.activity.activation_sparsity * steps * lr.activity.hidden_size
                 for lr in layer_reports.values())
    return Report(
        source=source, num_samples=total, num_steps=num_steps, layers=layer_reports, ops=tot,
        energy=estimate_energy(tot, table), table=table,
        update_rate=upd / cells if cells else 0.0,
        activation_sparsity=zeros / cells if cells else 1.0,  # as a layer's: nothing was emitted
        meta=dict(meta or {}),
    )


class _Chunk:
    def __init__(self, gates: dict, spikes: dict, input_nnz: np.ndarray | None,
                 input_binary: np.ndarray | None = None, lengths: np.ndarray | None = None):
        self.gates, self.spikes, self.input_nnz = gates, spikes, input_nnz
        self.input_binary = input_binary
        self.lengths = lengths


def _numpy(x: Any) -> np.ndarray:
    """A tensor (any device) or array-like as a numpy array."""
    return x.detach().cpu().numpy() if hasattr(x, "detach") else np.asarray(x)


def _as_bool(x: Any) -> np.ndarray:
    return _numpy(x) != 0


def analyze_records(records: Mapping[str, Any], layers: Mapping[str, Mapping[str, Any]], *,
                    inputs: Any = None, table: EnergyTable = DEFAULT_TABLE) -> Report:
    """Analyse in-memory records (``{name: StepRecord}`` of one batch) without a trace.

    ``inputs`` (``(B, T, F)``, optional) gives the nonzero-input counts of the first layer and
    whether its synaptic operations are ACs (inputs only 0 / ±1) or MACs.

    The records' ``lengths`` (a padded batch) are honoured as a trace's ``lengths`` are:
    padded steps never ran, so they count in no rate and cost no operation, and the report
    equals the one :func:`analyze` gives for the same records written with ``traces.write``.
    """
    if not isinstance(records, Mapping):
        raise TypeError(f"records must be a dict layer name -> StepRecord (as a model's record=True "
                        f"returns), got {type(records).__name__}")
    if not layers:
        raise ValueError("analyze_records: no layers to analyse (layers is empty)")
    missing = [n for n in layers if n not in records]
    if missing:
        raise ValueError(f"records lack the layers {missing}; they have {sorted(records)}")
    gates = {n: _as_bool(records[n].gate) for n in layers}
    spikes = {n: (None if getattr(records[n], "spike", None) is None
                  else _as_bool(records[n].spike)) for n in layers}
    first = next(iter(layers))
    if gates[first].ndim != 3:
        raise ValueError(f"records[{first!r}].gate must be (B, T, H), got {gates[first].shape}")
    nnz = binary = None
    if inputs is not None:
        x = _numpy(inputs)
        want = (*gates[first].shape[:2], int(layers[first]["input_size"]))
        if x.shape != want:
            # more features than the layer takes would count more operations than its dense baseline
            raise ValueError(f"inputs must be (B, T, F) = {want} (the records' B and T, layer {first!r}'s "
                             f"input_size), got {x.shape}")
        nnz = np.count_nonzero(x, axis=2)
        binary = ((x == 0) | (x == 1) | (x == -1)).all(axis=(1, 2))
    t = gates[first].shape[1]
    lengths = next((getattr(records[n], "lengths", None) for n in layers
                    if getattr(records[n], "lengths", None) is not None), None)
    if lengths is not None:
        lengths = np.minimum(_numpy(lengths).astype(np.int64).reshape(-1), t)
    return summarize([_Chunk(gates, spikes, nnz, binary, lengths)], layers, t, table=table,
                     inputs_hint="analyze_records called without inputs=")


def _parse_reshape(reshape: str | tuple[int, int] | None) -> tuple[int, int] | None:
    if reshape is None or isinstance(reshape, tuple):
        return reshape
    try:
        a, b = (int(v) for v in reshape.lower().split("x"))
    except ValueError:
        raise ValueError(f"reshape must look like 28x28, got {reshape!r}") from None
    if a < 1 or b < 1:
        raise ValueError(f"reshape {reshape!r}: both sizes must be positive")
    return a, b


def _head(a: np.ndarray | None, n: int) -> np.ndarray | None:
    return None if a is None else a[:n]


def _limited(it: Iterator[Any], max_samples: int | None) -> Iterator[Any]:
    """The chunks of ``it`` cut after ``max_samples`` samples (None: all)."""
    seen = 0
    for ch in it:
        if max_samples is not None and seen >= max_samples:
            return
        n = next(iter(ch.gates.values())).shape[0]
        if max_samples is not None and seen + n > max_samples:
            r = max_samples - seen
            ch = ch._replace(stop=ch.start + r, gates={k: v[:r] for k, v in ch.gates.items()},
                             spikes={k: _head(v, r) for k, v in ch.spikes.items()},
                             input_nnz=_head(ch.input_nnz, r), input_binary=_head(ch.input_binary, r),
                             lengths=_head(ch.lengths, r))
        yield ch
        seen += n


#: the figures :func:`analyze` writes into its report folder
FIGURES = ("raster.png", "update_heatmap.png", "timescales.png", "ops.png")


def analyze(trace_path: str | os.PathLike, out_dir: str | os.PathLike | None = None, *,
            reshape: str | tuple[int, int] | None = None,
            energy_table: EnergyTable | str | os.PathLike | None = None,
            plots: bool = True, batch_size: int | None = None,
            max_samples: int | None = None, raster_sample: int = 0) -> Report:
    """Analyse a trace; with ``out_dir`` write ``report.md``, ``report.json`` and PNGs
    (:data:`FIGURES`; those of an earlier report in ``out_dir`` are removed first).

    Args:
        trace_path: a file written by :class:`su_neuro.traces.TraceWriter`.
        out_dir: folder for the report (created); None writes nothing.
        reshape: ``"28x28"`` / ``(28, 28)``: per-step update-rate heatmap as an image.
        energy_table: an :class:`EnergyTable` or the path of a JSON table.
        plots: write the figures.
        batch_size: samples per read chunk (default: bounded memory, see
            :meth:`TraceReader.iter_chunks`); a streamed simulation is read one segment (all
            its stream rows) at a time instead.
        max_samples: analyse only the first ``max_samples`` samples; refused for a streamed
            simulation, whose samples are segments of its streams.
        raster_sample: sample drawn in the raster.
    Returns:
        :class:`Report`.

    Example::

        rep = analyze("run.h5", "report/", reshape="28x28")
        print(rep.summary_table())
    """
    from ..traces import TraceReader
    from .energy import load_table

    for name, value in (("batch_size", batch_size), ("max_samples", max_samples)):
        if value is not None and (isinstance(value, bool) or not isinstance(value, int) or value < 1):
            raise ValueError(f"{name} must be a positive integer or None, got {value!r}")
    shape = _parse_reshape(reshape)
    if energy_table is None:
        table = DEFAULT_TABLE
    elif isinstance(energy_table, EnergyTable):
        table = energy_table
    else:
        table = load_table(energy_table)
    with TraceReader(trace_path) as r:
        steps = r.stream_steps if r.layout == "segments" else r.num_steps
        if shape is not None and shape[0] * shape[1] != steps:
            raise ValueError(f"reshape (--reshape) {shape[0]}x{shape[1]} needs {shape[0] * shape[1]} "
                             f"steps, the trace has {steps}")
        meta = {"config": r.config, "run_meta": r.run_meta, "schema_version": r.schema_version,
                "complete": r.complete, "layout": r.layout}
        if r.layout == "segments":
            if max_samples is not None:
                # its samples are segments of the stream rows: the first few would be the start of
                # every row, a result that is not the analysis of fewer samples
                raise ValueError(f"max_samples (--max-samples) applies to traces of samples; {trace_path} is a "
                                 f"streamed simulation ({r.stream_batch} stream(s) of {r.stream_steps} steps), "
                                 "which is analysed whole: leave max_samples out (simulate fewer --steps "
                                 "to analyse less)")
            # a streamed simulation: each stream row is one sequence of stream_steps steps
            rep = summarize(r.iter_stream(), r.layers, r.stream_steps, table=table,
                            source=str(trace_path), meta=meta, stream=True)
            rep.notes.append(f"streamed simulation: {r.stream_batch} stream(s) of {r.stream_steps} steps, "
                             f"each analysed as one sequence (stored in segments of {r.num_steps} steps)")
        else:
            rep = summarize(_limited(r.iter_chunks(batch_size), max_samples), r.layers,
                            r.num_steps, table=table, source=str(trace_path), meta=meta)
        if r.interrupted:
            what = (f"{r.stream_steps} steps of each stream" if r.layout == "segments"
                    else f"{r.num_samples} samples")
            rep.notes.append(f"the run was interrupted: the trace holds the {what} written before it stopped")
        elif not r.complete:
            rep.notes.append("the writer did not close the trace (killed?): only the "
                             f"{r.num_samples} committed samples were analysed")
        if out_dir is not None:
            out = Path(out_dir)
            out.mkdir(parents=True, exist_ok=True)
            for name in FIGURES:  # an earlier report's figures would sit beside this report
                (out / name).unlink(missing_ok=True)
            if plots and r.num_samples:
                rep.files.update(_plots(rep, r, out, shape, raster_sample))
            (out / "report.json").write_text(json.dumps(rep.to_dict(), indent=1))
            (out / "report.md").write_text(rep.to_markdown())
            rep.files["report.md"] = str(out / "report.md")
            rep.files["report.json"] = str(out / "report.json")
    return rep


def _plots(rep: Report, reader: Any, out: Path, shape: tuple[int, int] | None,
           sample: int) -> dict[str, str]:
    from . import plots

    names = list(rep.layers)
    stream = reader.layout == "segments"
    # a stream's sample i < stream_batch is the first segment of stream row i
    i = min(max(sample, 0), (reader.stream_batch if stream else reader.num_samples) - 1)
    files = {}
    # a padded sample's steps after its length never ran: whatever was recorded there is not drawn
    lengths = None if stream else reader.lengths()
    valid = None if lengths is None else int(lengths[i])

    def steps(a):
        if a is not None and valid is not None:
            a = a.copy()
            a[valid:] = 0
        return a

    files["raster"] = plots.plot_raster(
        {n: steps(reader.gates(n, i)) for n in names}, out / "raster.png",
        spikes={n: steps(reader.spikes(n, i)) if "spike" in reader.encodings[n] else None
                for n in names},
        title=f"gate events (black) and spikes (red), {'stream row' if stream else 'sample'} {i}")
    if shape is not None:
        rates = {n: rep.layers[n].activity.step_update_rate for n in names}
    else:
        rates = {n: rep.layers[n].activity.time_neuron_rate for n in names}
    files["update_heatmap"] = plots.plot_update_heatmap(
        rates, out / "update_heatmap.png", reshape=shape,
        title="update rate per step" if shape else "update rate per neuron and time bin")
    files["timescales"] = plots.plot_timescales(
        {n: rep.layers[n].activity.mean_interval for n in names}, out / "timescales.png")
    lab = names + ["total"]
    ops = [rep.layers[n].ops for n in names] + [rep.ops]
    en = [rep.layers[n].energy for n in names] + [rep.energy]
    k = _n(rep)
    files["ops"] = plots.plot_ops(
        lab, [o.dense / k for o in ops], [o.effective / k for o in ops], out / "ops.png",
        dense_energy=[e.dense_pj / k for e in en], effective_energy=[e.effective_pj / k for e in en],
        title=f"per {'stream' if stream else 'sample'}: effective as a fraction of dense")
    return {k: str(v) for k, v in files.items()}
