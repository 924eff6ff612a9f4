"""``su-neuro analyze``: sparsity, operations and energy of a trace; writes a report folder."""

from __future__ import annotations

import argparse
import os
import sys
from pathlib import Path

HELP = "sparsity, operation counts and energy estimate of a trace (report + figures)"


def add_arguments(parser: argparse.ArgumentParser) -> None:
    parser.add_argument("trace", help="HDF5 trace written by su_neuro.traces")
    parser.add_argument("--out", default=None,
                        help="report folder (default: su_neuro_out/analyze/<trace name>)")
    parser.add_argument("--reshape", default=None, metavar="RxC",
                        help="draw the per-step update rate as an R x C image, e.g. 28x28")
    parser.add_argument("--energy-table", default=None, metavar="FILE.json",
                        help="per-operation energy costs (default: 45 nm fp32, Horowitz 2014)")
    parser.add_argument("--overwrite", action="store_true",
                        help="replace a report of another trace in the report folder")
    parser.add_argument("--no-plots", action="store_true", help="write no figures")
    parser.add_argument("--max-samples", type=int, default=None,
                        help="analyse only the first N samples "
                             "(not for a streamed simulation's trace)")
    parser.add_argument("--batch-size", type=int, default=None,
                        help="samples read per chunk (default: bounded memory; a streamed "
                             "simulation's trace is read one segment at a time)")


def run(args: argparse.Namespace) -> int:
    from ..analysis import analyze
    from ..traces import TraceError

    out = Path(args.out) if args.out else Path("su_neuro_out") / "analyze" / Path(args.trace).stem
    for flag in ("max_samples", "batch_size"):
        value = getattr(args, flag, None)
        if value is not None and value < 1:
            print(f"su-neuro analyze: error: --{flag.replace('_', '-')} must be a positive integer, got {value}",
                  file=sys.stderr)
            return 2
    if out.exists() and not out.is_dir():
        print(f"su-neuro analyze: error: the report folder {out} is a file; choose a folder with --out",
              file=sys.stderr)
        return 2
    # (a trace that is not there is named by the analysis first)
    other = _report_of_another_trace(out, args.trace) if Path(args.trace).is_file() else None
    if other is not None and not getattr(args, "overwrite", False):
        print(f"su-neuro analyze: error: {out} holds the report of {other}; pass --overwrite to replace it "
              "or choose another folder with --out", file=sys.stderr)
        return 2
    try:
        rep = analyze(args.trace, out, reshape=args.reshape,
                      energy_table=getattr(args, "energy_table", None),
                      plots=not getattr(args, "no_plots", False),
                      batch_size=getattr(args, "batch_size", None),
                      max_samples=getattr(args, "max_samples", None))
    except (TraceError, ValueError, TypeError, FileNotFoundError) as e:
        print(f"su-neuro analyze: error: {e}", file=sys.stderr)
        return 2
    print(rep.summary_table())
    for x in rep.notes:
        print(f"note: {x}")
    print(f"\nreport written to {out}/ (report.md, report.json"
          + (", figures" if len(rep.files) > 2 else "") + ")")
    return 0


def _report_of_another_trace(out: Path, trace: str) -> str | None:
    """The trace whose report ``out`` holds, where that is not ``trace`` (the same trace
    analysed again replaces its report); None for a folder without a report."""
    import json

    report = out / "report.json"
    if not report.is_file():
        return None
    try:
        stored = json.loads(report.read_text())
        source, resolved = stored.get("source"), stored.get("source_path")
    except (OSError, ValueError, AttributeError):
        return f"an unreadable {report.name}"
    if not isinstance(source, str):
        return "an unknown trace"
    # reports before 2026-12-07 hold the path as typed only
    known = resolved if isinstance(resolved, str) else os.path.realpath(source)
    return None if known == os.path.realpath(trace) else (resolved if isinstance(resolved, str) else source)
