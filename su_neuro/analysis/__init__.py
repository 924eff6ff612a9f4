"""Sparsity, operation counts, energy estimates and figures from gate / spike traces.

Formulas: ``docs/analysis.md``. Matplotlib is imported only when a figure is drawn.

Example::

    from su_neuro.analysis import analyze
    report = analyze("run.h5", "report/", reshape="28x28")
    print(report.summary_table())
"""

from .energy import DEFAULT_TABLE, EnergyEstimate, EnergyTable, estimate_energy, load_table
from .ops import CELL_ROWS, OpCounts, count_layer_ops, memory_bytes
from .report import LayerReport, Report, analyze, analyze_records, summarize
from .stats import ActivityAccumulator, LayerActivity, ever_updated, inter_update_intervals

__all__ = [
    "CELL_ROWS",
    "DEFAULT_TABLE",
    "ActivityAccumulator",
    "EnergyEstimate",
    "EnergyTable",
    "LayerActivity",
    "LayerReport",
    "OpCounts",
    "Report",
    "analyze",
    "analyze_records",
    "count_layer_ops",
    "estimate_energy",
    "ever_updated",
    "inter_update_intervals",
    "load_table",
    "memory_bytes",
    "summarize",
]
