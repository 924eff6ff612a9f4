"""PNG figures of gate activity (matplotlib, Agg backend, imported on first use).

Every function writes one PNG and returns its path. Figures are drawn on their own Agg
canvas, so pyplot's global state and the backend of an interactive session are untouched.
"""

from __future__ import annotations

import os
from collections.abc import Mapping, Sequence
from pathlib import Path
from typing import Any

import numpy as np

__all__ = ["plot_ops", "plot_raster", "plot_timescales", "plot_update_heatmap"]

_MAX_PIXELS = (2000, 1000)  # (time, neurons) drawn at most; larger rasters are max-pooled


def _figure(rows: int, cols: int, figsize: tuple[float, float]) -> tuple[Any, np.ndarray]:
    """A figure on its own Agg canvas (pyplot's global state and backend stay untouched)."""
    from matplotlib.backends.backend_agg import FigureCanvasAgg
    from matplotlib.figure import Figure

    fig = Figure(figsize=figsize)
    FigureCanvasAgg(fig)
    return fig, fig.subplots(rows, cols, squeeze=False)


def _pool(img: np.ndarray, shape: tuple[int, int]) -> np.ndarray:
    """Max-pool a 2-D array down to at most ``shape`` so that no event disappears."""
    a, b = img.shape
    fa, fb = -(-a // shape[0]), -(-b // shape[1])
    if fa == 1 and fb == 1:
        return img
    pa, pb = -a % fa, -b % fb
    img = np.pad(img, ((0, pa), (0, pb)))
    return img.reshape(img.shape[0] // fa, fa, img.shape[1] // fb, fb).max(axis=(1, 3))


def _save(fig: Any, path: str | os.PathLike) -> Path:
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    fig.savefig(path, dpi=110)
    return path


def plot_raster(gates: Mapping[str, np.ndarray], path: str | os.PathLike, *,
                spikes: Mapping[str, np.ndarray | None] | None = None,
                title: str = "gate events") -> Path:
    """Raster of one sample's gate events (black) and spikes (red), one panel per layer.

    Args:
        gates: layer name -> bool ``(T, H)``.
        spikes: layer name -> bool ``(T, H)`` or None.
    """
    names = list(gates)
    fig, axes = _figure(len(names), 1, (9, 2.6 * len(names)))
    for ax, name in zip(axes[:, 0], names, strict=True):
        g = np.asarray(gates[name], bool)
        img = _pool(g.T.astype(np.uint8), _MAX_PIXELS[::-1])
        ax.imshow(img, aspect="auto", interpolation="nearest", cmap="Greys", vmin=0, vmax=1,
                  origin="lower", extent=(0, g.shape[0], 0, g.shape[1]))
        s = None if spikes is None else spikes.get(name)
        if s is not None:
            tt, nn = np.nonzero(np.asarray(s, bool))
            ax.scatter(tt + 0.5, nn + 0.5, s=2, c="tab:red", marker="|", linewidths=0.8)
        ax.set_ylabel(f"{name}\nneuron")
    axes[-1, 0].set_xlabel("step t")
    axes[0, 0].set_title(title)
    fig.tight_layout()
    return _save(fig, path)


def plot_update_heatmap(rates: Mapping[str, np.ndarray], path: str | os.PathLike, *,
                        reshape: tuple[int, int] | None = None,
                        title: str = "update rate") -> Path:
    """Update-rate heatmap per layer.

    Args:
        rates: layer name -> per-step rate ``(T,)`` (used with ``reshape``) or a
            ``(time bins, H)`` array (drawn neurons x time).
        reshape: ``(rows, cols)`` with ``rows * cols == T``: draw the per-step rate as an
            image, e.g. ``(28, 28)`` for sequential MNIST (one value per pixel).
    """
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
            im = ax.imshow(r.T, aspect="auto", origin="lower", cmap="viridis",
                           interpolation="nearest")
            ax.set_ylabel(f"{name}\nneuron")
            ax.set_xlabel("time bin")
        fig.colorbar(im, ax=ax, fraction=0.046)
    fig.suptitle(title)
    fig.tight_layout()
    return _save(fig, path)


def plot_timescales(mean_intervals: Mapping[str, np.ndarray], path: str | os.PathLike, *,
                    bins: int = 40, title: str = "per-neuron timescale") -> Path:
    """Histogram of each neuron's mean inter-update interval (its effective timescale)."""
    fig, axes = _figure(1, 1, (6.5, 3.8))
    ax = axes[0, 0]
    vals = {k: np.asarray(v, float) for k, v in mean_intervals.items()}
    finite = [v[np.isfinite(v)] for v in vals.values()]
    allv = np.concatenate(finite) if finite else np.zeros(0)
    if allv.size:
        lo, hi = max(allv.min(), 1.0), max(allv.max(), 1.0) * 1.001
        edges = np.geomspace(lo, hi, bins + 1) if hi / lo > 20 else np.linspace(lo, hi, bins + 1)
        for name, v in vals.items():
            v = v[np.isfinite(v)]
            ax.hist(v, bins=edges, alpha=0.6, label=f"{name} ({v.size} neurons)")
        if hi / lo > 20:
            ax.set_xscale("log")
        ax.legend(fontsize=8)
    else:
        ax.text(0.5, 0.5, "no neuron updated twice in a sample", ha="center",
                transform=ax.transAxes)
    ax.set_xlabel("mean interval between updates (steps)")
    ax.set_ylabel("neurons")
    ax.set_title(title)
    fig.tight_layout()
    return _save(fig, path)


def plot_ops(names: Sequence[str], dense: Sequence[float], effective: Sequence[float],
             path: str | os.PathLike, *, dense_energy: Sequence[float] | None = None,
             effective_energy: Sequence[float] | None = None,
             title: str = "dense vs effective") -> Path:
    """Bars of dense vs effective operations (and energy, if given) per layer / total."""
    panels = 2 if dense_energy is not None else 1
    fig, axes = _figure(1, panels, (5.2 * panels, 3.8))
    x = np.arange(len(names))
    series = [(dense, effective, "synaptic operations")]
    if dense_energy is not None:
        series.append((dense_energy, effective_energy, "energy (pJ)"))
    for ax, (d, e, lab) in zip(axes[0], series, strict=True):
        ax.bar(x - 0.2, d, 0.4, label="dense", color="tab:gray")
        ax.bar(x + 0.2, e, 0.4, label="effective", color="tab:blue")
        ax.set_xticks(x, names, rotation=30, ha="right", fontsize=8)
        ax.set_ylabel(lab)
        if max(list(d) + list(e) + [0]) > 0:
            ax.set_yscale("log")
        ax.legend(fontsize=8)
    fig.suptitle(title)
    fig.tight_layout()
    return _save(fig, path)
