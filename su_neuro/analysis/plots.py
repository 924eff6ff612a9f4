"""PNG figures of gate activity and training (matplotlib, Agg backend, imported on first use).

Every ``plot_*`` function writes one PNG and returns its path; the matching ``figure_*``
function returns the matplotlib ``Figure`` instead (to inspect or restyle it). Figures are
drawn on their own Agg canvas, so pyplot's global state and the backend of an interactive
session are untouched.

What a figure leaves out is said on it: rasters of more than ``MAX_RASTER_NEURONS`` neurons
or ``MAX_RASTER_STEPS`` steps show an evenly spaced subset of the neurons and the first
steps; heatmaps of more than ``MAX_HEATMAP_ROWS`` neurons sort the neurons by update rate
and average them in groups; the timescale histogram counts the neurons without an interval.
"""

from __future__ import annotations

import os
from collections.abc import Mapping, Sequence
from pathlib import Path
from typing import Any

import numpy as np

__all__ = [
    "MAX_HEATMAP_ROWS",
    "MAX_RASTER_NEURONS",
    "MAX_RASTER_STEPS",
    "figure_ops",
    "figure_raster",
    "figure_timescales",
    "figure_training_curves",
    "figure_update_heatmap",
    "plot_ops",
    "plot_raster",
    "plot_timescales",
    "plot_training_curves",
    "plot_update_heatmap",
]

#: a raster shows at most this many neurons (evenly spaced) and this many (first) steps:
#: more dots than pixels turn rhythms into speckle
MAX_RASTER_NEURONS = 64
MAX_RASTER_STEPS = 500
#: a neurons x time heatmap shows at most this many rows (neurons sorted by rate, averaged in groups)
MAX_HEATMAP_ROWS = 128


def _figure(rows: int, cols: int, figsize: tuple[float, float]) -> tuple[Any, np.ndarray]:
    """A figure on its own Agg canvas (pyplot's global state and backend stay untouched)."""
    from matplotlib.backends.backend_agg import FigureCanvasAgg
    from matplotlib.figure import Figure

    fig = Figure(figsize=figsize)
    FigureCanvasAgg(fig)
    return fig, fig.subplots(rows, cols, squeeze=False)


def _save(fig: Any, path: str | os.PathLike) -> Path:
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    fig.savefig(path, dpi=110)
    return path


def _ordinal(k: int) -> str:
    """2 -> "2nd", 11 -> "11th", 23 -> "23rd"."""
    suffix = "th" if 10 <= k % 100 <= 20 else {1: "st", 2: "nd", 3: "rd"}.get(k % 10, "th")
    return f"{k}{suffix}"


def _raster_view(t: int, h: int) -> tuple[int, np.ndarray, str]:
    """(steps shown, neurons shown, what was left out) for a (t, h) raster."""
    steps = min(t, MAX_RASTER_STEPS)
    every = -(-h // MAX_RASTER_NEURONS)
    neurons = np.arange(0, h, every)
    said = []
    if every > 1:
        said.append(f"every {_ordinal(every)} neuron ({len(neurons)} of {h})")
    if steps < t:
        said.append(f"steps 0-{steps - 1} of {t}")
    return steps, neurons, ", ".join(said)


def figure_raster(gates: Mapping[str, np.ndarray], *,
                  spikes: Mapping[str, np.ndarray | None] | None = None,
                  title: str = "gate events") -> Any:
    """The figure of :func:`plot_raster`."""
    names = list(gates)
    fig, axes = _figure(len(names), 1, (9, 3.0 * len(names)))
    for ax, name in zip(axes[:, 0], names, strict=True):
        g = np.asarray(gates[name], bool)
        steps, neurons, said = _raster_view(*g.shape)
        shown = g[:steps][:, neurons]
        ax.imshow(shown.T.astype(np.uint8), aspect="auto", interpolation="nearest", cmap="Greys",
                  vmin=0, vmax=1, origin="lower", extent=(0, steps, -0.5, len(neurons) - 0.5))
        s = None if spikes is None else spikes.get(name)
        if s is not None:
            tt, nn = np.nonzero(np.asarray(s, bool)[:steps][:, neurons])
            ax.scatter(tt + 0.5, nn, s=4, c="tab:red", marker="|", linewidths=0.8)
        if len(neurons) < g.shape[1]:
            ticks = np.linspace(0, len(neurons) - 1, 5).round().astype(int)
            ax.set_yticks(ticks, [str(neurons[i]) for i in ticks])
        ax.set_xlim(0, steps)
        ax.set_ylabel(f"{name}\nneuron")
        if said:
            ax.set_title(f"{name}: {said}", fontsize=8, loc="right")
    axes[-1, 0].set_xlabel("step t")
    fig.suptitle(title)
    fig.tight_layout()
    return fig


def plot_raster(gates: Mapping[str, np.ndarray], path: str | os.PathLike, *,
                spikes: Mapping[str, np.ndarray | None] | None = None,
                title: str = "gate events") -> Path:
    """Raster of one sample's gate events (black) and spikes (red), one panel per layer.

    Args:
        gates: layer name -> bool ``(T, H)``.
        spikes: layer name -> bool ``(T, H)`` or None.
    Beyond ``MAX_RASTER_NEURONS`` neurons an evenly spaced subset is drawn, beyond
    ``MAX_RASTER_STEPS`` steps the first steps; the panel says which.
    """
    return _save(figure_raster(gates, spikes=spikes, title=title), path)


def _heatmap_rows(r: np.ndarray) -> tuple[np.ndarray, str]:
    """(bins, H) rates -> (bins, rows) drawn and the y-axis label."""
    h = r.shape[1]
    if h <= MAX_HEATMAP_ROWS:
        return r, "neuron"
    group = -(-h // MAX_HEATMAP_ROWS)
    ordered = r[:, np.argsort(r.mean(axis=0), kind="stable")]
    starts = np.arange(0, h, group)
    sizes = np.diff(np.append(starts, h))  # the last group may be smaller
    return np.add.reduceat(ordered, starts, axis=1) / sizes, f"neurons sorted by rate,\nmean of {group} per row"


def figure_update_heatmap(rates: Mapping[str, np.ndarray], *, reshape: tuple[int, int] | None = None,
                          title: str = "update rate") -> Any:
    """The figure of :func:`plot_update_heatmap`."""
    names = list(rates)
    if reshape is not None:
        fig, axes = _figure(1, len(names), (3.4 * len(names), 3.2))
        axes = axes[0]
    else:
        fig, axes = _figure(len(names), 1, (9, 2.6 * len(names)))
        axes = axes[:, 0]
    for ax, name in zip(axes, names, strict=True):
        r = np.asarray(rates[name], float)
        if reshape is not None:
            r = r.ravel()
            if r.size != reshape[0] * reshape[1]:
                raise ValueError(f"cannot reshape {r.size} steps to {reshape[0]}x{reshape[1]}")
            im = ax.imshow(r.reshape(reshape), cmap="viridis", vmin=0, vmax=max(r.max(), 1e-9))
            ax.set_xticks([])
            ax.set_yticks([])
            ax.set_title(name)
        else:
            if r.ndim == 1:
                r = r[:, None]
            shown, label = _heatmap_rows(r)
            im = ax.imshow(shown.T, aspect="auto", origin="lower", cmap="viridis",
                           interpolation="nearest", vmin=0, vmax=max(float(shown.max()), 1e-9))
            ax.set_ylabel(f"{name}\n{label}")
            ax.set_xlabel("time bin")
        fig.colorbar(im, ax=ax, fraction=0.046)
    fig.suptitle(title)
    fig.tight_layout()
    return fig


def plot_update_heatmap(rates: Mapping[str, np.ndarray], path: str | os.PathLike, *,
                        reshape: tuple[int, int] | None = None,
                        title: str = "update rate") -> Path:
    """Update-rate heatmap per layer (colour scale from 0).

    Args:
        rates: layer name -> per-step rate ``(T,)`` (used with ``reshape``) or a
            ``(time bins, H)`` array (drawn neurons x time; beyond ``MAX_HEATMAP_ROWS``
            neurons they are sorted by rate and averaged in groups, as the axis says).
        reshape: ``(rows, cols)`` with ``rows * cols == T``: draw the per-step rate as an
            image, e.g. ``(28, 28)`` for sequential MNIST (one value per pixel).
    """
    return _save(figure_update_heatmap(rates, reshape=reshape, title=title), path)


def figure_timescales(mean_intervals: Mapping[str, np.ndarray], *, bins: int = 40,
                      title: str = "per-neuron timescale") -> Any:
    """The figure of :func:`plot_timescales`."""
    fig, axes = _figure(1, 1, (6.5, 3.8))
    ax = axes[0, 0]
    vals = {k: np.asarray(v, float).ravel() for k, v in mean_intervals.items()}
    finite = [v[np.isfinite(v)] for v in vals.values()]
    allv = np.concatenate(finite) if finite else np.zeros(0)

    def label(name: str, v: np.ndarray) -> str:
        k = int(np.isfinite(v).sum())
        text = f"{name}: {k} of {v.size} neurons"
        if k < v.size:
            text += f" ({v.size - k} never updated twice in a sample: no interval)"
        return text

    if allv.size and allv.max() - allv.min() < 0.5:
        # (nearly) one value, e.g. a dense gate (every neuron updates every step) or one shared
        # period: one bar on an axis from 0, and the value said in words
        lo, hi, value = float(allv.min()), float(allv.max()), float(allv.mean())
        for name, v in vals.items():
            ax.bar([value], [np.isfinite(v).sum()], width=max(value, 1.0) * 0.1, alpha=0.6, label=label(name, v))
        ax.set_xlim(0, 2 * max(value, 1.0))
        said = f"{lo:.3g}" if hi - lo < 5e-4 * max(hi, 1.0) else f"{lo:.3g}-{hi:.3g}"
        ax.text(0.02, 0.95, f"every neuron with an interval: mean interval {said} steps",
                transform=ax.transAxes, va="top", fontsize=8)
        ax.legend(fontsize=7, loc="lower right")
    elif allv.size:
        lo, hi = max(allv.min(), 1.0), max(allv.max(), 1.0) * 1.001
        log = hi / lo > 20
        edges = np.geomspace(lo, hi, bins + 1) if log else np.linspace(lo, hi, bins + 1)
        for name, v in vals.items():
            ax.hist(v[np.isfinite(v)], bins=edges, alpha=0.6, label=label(name, v))
        if log:
            ax.set_xscale("log")
        else:
            margin = 0.05 * (hi - lo)
            ax.set_xlim(lo - margin, hi + margin)
        ax.legend(fontsize=7)
    else:
        ax.text(0.5, 0.5, "no neuron updated twice in a sample", ha="center",
                transform=ax.transAxes)
    formatter = ax.xaxis.get_major_formatter()
    if hasattr(formatter, "set_useOffset"):
        formatter.set_useOffset(False)  # ticks say the interval itself, not an offset from it
    ax.set_xlabel("mean interval between updates (steps)")
    ax.set_ylabel("neurons")
    ax.set_title(title)
    fig.tight_layout()
    return fig


def plot_timescales(mean_intervals: Mapping[str, np.ndarray], path: str | os.PathLike, *,
                    bins: int = 40, title: str = "per-neuron timescale") -> Path:
    """Histogram of each neuron's mean inter-update interval (its effective timescale).

    ``mean_intervals``: layer name -> ``(H,)``, NaN for a neuron without an interval; the
    legend says how many of the H neurons have one.
    """
    return _save(figure_timescales(mean_intervals, bins=bins, title=title), path)


def figure_ops(names: Sequence[str], dense: Sequence[float], effective: Sequence[float], *,
               dense_energy: Sequence[float] | None = None,
               effective_energy: Sequence[float] | None = None,
               title: str = "effective as a fraction of dense") -> Any:
    """The figure of :func:`plot_ops`."""
    panels = 2 if dense_energy is not None else 1
    fig, axes = _figure(1, panels, (5.2 * panels, 3.8))
    x = np.arange(len(names))
    series = [(dense, effective, "synaptic operations", "")]
    if dense_energy is not None:
        series.append((dense_energy, effective_energy, "compute energy", " pJ"))
    for ax, (d, e, lab, unit) in zip(axes[0], series, strict=True):
        d, e = np.asarray(d, float), np.asarray(e, float)
        with np.errstate(invalid="ignore", divide="ignore"):
            ratio = np.where(d > 0, e / np.where(d > 0, d, 1), np.nan)
        ax.bar(x, np.nan_to_num(ratio), 0.6, color="tab:blue", label="effective")
        ax.axhline(1.0, color="tab:gray", ls="--", lw=1, label="dense (= 1)")
        for i in range(len(x)):
            text = "n/a" if not np.isfinite(ratio[i]) else f"{ratio[i]:.3g}\n{e[i]:.3g} / {d[i]:.3g}{unit}"
            value = float(np.nan_to_num(ratio[i]))
            if value > 0.4:  # inside the bar, clear of the dense line at 1
                ax.text(x[i], value - 0.03, text, ha="center", va="top", fontsize=7, color="white")
            else:
                ax.text(x[i], value + 0.03, text, ha="center", va="bottom", fontsize=7)
        ax.set_xticks(x, names, rotation=30, ha="right", fontsize=8)
        ax.set_ylim(0, max(1.4, float(np.nanmax(ratio, initial=0)) * 1.25))
        ax.set_ylabel(f"{lab}: effective / dense")
        ax.legend(fontsize=7, loc="upper center", ncol=2)
    fig.suptitle(title)
    fig.tight_layout()
    return fig


def plot_ops(names: Sequence[str], dense: Sequence[float], effective: Sequence[float],
             path: str | os.PathLike, *, dense_energy: Sequence[float] | None = None,
             effective_energy: Sequence[float] | None = None,
             title: str = "effective as a fraction of dense") -> Path:
    """Effective operations (and energy, if given) per layer / total as a fraction of the
    dense ones, on a linear axis from 0 (dense = 1), each bar labelled with the ratio and
    the two absolute numbers: equal ratios look equal, whatever the absolute size."""
    return _save(figure_ops(names, dense, effective, dense_energy=dense_energy,
                            effective_energy=effective_energy, title=title), path)


def _train_records(log: str | os.PathLike) -> list[dict]:
    """The "train" records of a run's metrics.jsonl, or an error naming the file. A resumed
    run logs the steps after its last checkpoint again: the records that a "resume" line
    supersedes are dropped, so each step is drawn once."""
    import json

    path = Path(log)
    if not path.is_file():
        raise FileNotFoundError(f"no training log at {path}")
    recs = []
    for n, line in enumerate(path.read_text().splitlines(), 1):
        try:
            rec = json.loads(line) if line.strip() else {}
        except json.JSONDecodeError as err:
            raise ValueError(f"{path}, line {n}: not JSON ({err.msg})") from None
        if rec.get("event") == "train":
            recs.append(rec)
        elif rec.get("event") == "resume":
            recs = [r for r in recs if r["step"] <= rec["step"]]
    if not recs:
        raise ValueError(f"{path} holds no training steps")
    return recs


def figure_training_curves(logs: Mapping[str, str | os.PathLike], *, smooth: int = 10,
                           chance: float | None = None, chance_label: str = "chance",
                           acc_label: str = "training accuracy") -> Any:
    """The figure of :func:`plot_training_curves`."""
    fig, axes = _figure(1, 2, (10, 3.6))
    for label, log in logs.items():
        recs = _train_records(log)
        steps = np.array([r["step"] for r in recs])
        for ax, key in zip(axes[0], ("loss", "acc"), strict=True):
            y = np.array([r[key] for r in recs], dtype=float)
            k = max(1, min(smooth, len(y)))
            ax.plot(steps[k - 1:], np.convolve(y, np.ones(k) / k, mode="valid"), label=label)
    axes[0, 0].set_ylabel("training loss")
    axes[0, 1].set_ylabel(acc_label)
    if chance is not None:
        axes[0, 1].axhline(chance, color="tab:gray", ls=":", lw=1, label=chance_label)
    for ax in axes[0]:
        ax.set_xlabel("step")
        ax.legend(fontsize=8)
    fig.suptitle(f"moving average over {smooth} logged steps", fontsize=9)
    fig.tight_layout()
    return fig


def plot_training_curves(logs: Mapping[str, str | os.PathLike], path: str | os.PathLike, *,
                         smooth: int = 10, chance: float | None = None, chance_label: str = "chance",
                         acc_label: str = "training accuracy") -> Path:
    """Training loss and accuracy against the step for each run (label -> its
    ``metrics.jsonl``, as ``su-neuro train`` writes it), each a moving average over
    ``smooth`` logged steps; ``chance``: a level drawn on the accuracy panel."""
    fig = figure_training_curves(logs, smooth=smooth, chance=chance, chance_label=chance_label, acc_label=acc_label)
    return _save(fig, path)
