"""Turns a device run's ``bench_gpu.json`` into what the repository records from it (issue 20).

    python tools/gpu_report.py docs/gpu/<run>/bench_gpu.json             # markdown for docs/triton.md
    python tools/gpu_report.py --measured docs/gpu/<run>/bench_gpu.json  # choose.MEASURED, from --table

The markdown holds the card and its ceilings, the targets (met or missed), each sweep's rows
(skipped and failed rows named as such), the sweeps' fastest fp32-accurate picks as the
``grid_tiles.Tiles`` they stand for (the rows to make defaults in ``_measured_tiles``), the
event sweep, and the seconds each part took (to size ``--budget`` / ``--reserve`` from).
``--measured`` prints the ``MEASURED`` table of ``kernels/triton/choose.py`` from the auto
table of a ``bench_gpu.py --table`` run: the GRU's (B, H, rate) points, the torch reference's
times of the 100 % point serving both rates; a point skipped for time or failed is left out.

Reads only the JSON: it runs on any machine. A missing or damaged file, or one without the
part asked for, ends with one line naming the problem and exit status 2.
"""

from __future__ import annotations

import argparse
import json
import sys
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parent))


class ReportError(Exception):
    """An input this tool cannot read, with the message to print."""


def load(path: str) -> dict:
    try:
        data = json.loads(Path(path).read_text())
    except FileNotFoundError:
        raise ReportError(f"{path}: no such file (bench_gpu.py --json writes it)") from None
    except (OSError, UnicodeDecodeError, json.JSONDecodeError) as err:
        raise ReportError(f"{path}: not a bench_gpu.py JSON file ({err})") from None
    if not isinstance(data, dict) or "device" not in data:
        raise ReportError(f"{path}: not a bench_gpu.py JSON file (no 'device' entry)")
    return data


def _cell(text) -> str:
    """Text for a markdown table cell (a '|' would end the cell)."""
    return str(text).replace("|", "\\|")


def _ms(v) -> str:
    return "" if v is None else f"{v:.2f}"


def _kernel(k: dict) -> str:
    if not k:
        return ""
    spills = f" ({k['spills']} B spilled)" if k.get("spills") else ""
    return f"{k.get('programs', '?')} programs, {k.get('regs', '?')} regs{spills}"


def _target_rows(targets: list[dict]) -> list[str]:
    out = ["| target | su_neuro ms | reference ms | ratio | need | |", "|---|---|---|---|---|---|"]
    for t in targets:
        mark = "met" if t["met"] else "**missed**"
        if "ratio" in t:
            extra = f" ({t['extra']})" if t.get("extra") else ""
            out.append(f"| {_cell(t['target'] + extra)} | {_ms(t['su_ms'])} | {_ms(t['ref_ms'])} | {t['ratio']:.2f}x "
                       f"| {t['need']}x | {mark} |")
        else:
            out.append(f"| {_cell(t['target'])} | {_ms(t.get('ms'))} | | {t['of_copy']:.0%} of copy | 60 % | {mark} |")
    return out


def _sweep_rows(rows: list[dict]) -> list[str]:
    out = ["| config | fwd ms | fwd+bwd ms | max \\|d\\| | grad diff | fwd kernel | bwd kernel |",
           "|---|---|---|---|---|---|---|"]
    for r in rows:
        if "skipped" in r:
            out.append(f"| {r['config']} | skipped ({r['skipped']}) | | | | | |")
        elif "error" in r:
            out.append(f"| {r['config']} | failed: {_cell(r['error'])} | | | | | |")
        else:
            diff = "" if r.get("max_diff") is None else f"{r['max_diff']:.1e}"
            gd = "" if r.get("grad_diff") is None else f"{r['grad_diff']:.1e}"
            out.append(f"| {r['config']} | {_ms(r.get('fwd_ms'))} | {_ms(r.get('fwd_bwd_ms'))} | {diff} | {gd} "
                       f"| {_kernel(r.get('fwd_kernel', {}))} | {_kernel(r.get('bwd_kernel', {}))} |")
    return out


def _lif_rows(rows: list[dict]) -> list[str]:
    out = ["| tiles (neurons, steps, warps) | ms | GB/s | of copy |", "|---|---|---|---|"]
    for r in rows:
        if "skipped" in r or "error" in r:
            out.append(f"| {r['config']} | {_cell(r.get('skipped') or 'failed: ' + r['error'])} | | |")
        else:
            out.append(f"| {r['config']} | {_ms(r['ms'])} | {r['GB/s']:.0f} | {r['of_copy']:.0%} |")
    return out


def picks(best: dict) -> list[str]:
    """The sweeps' picks as ``Tiles(...), precision`` (what ``_measured_tiles`` would return)."""
    from bench_gpu import _parse

    out = []
    for key, label in sorted(best.items()):
        out.append(f"- `{key}`: none (every row skipped, failed or not fp32-accurate)" if label is None
                   else f"- `{key}`: `{label}` = `{_parse(label)}`")
    return out


def markdown(data: dict) -> str:
    barrier = ", ".join(f"{k} programs {v:.2f}" for k, v in (data.get("barrier_us") or {}).items()) or "not measured"
    budget = "none" if data.get("budget_s") is None else f"{data['budget_s']:.0f} s"
    lines = [f"**{data['device']}** ({data.get('sms', '?')} SMs), torch {data.get('torch')}, "
             f"triton {data.get('triton')}; copy {data.get('copy_GBs', 0):.0f} GB/s; barrier µs per step: "
             f"{barrier}; budget {budget}, run {data.get('seconds', 0):.0f} s.", ""]
    if data.get("targets"):
        lines += ["**Targets**", "", *_target_rows(data["targets"]), ""]
    for key, title in (("sweep_gru_b64", "GRU, B = 64, H = 1024, T = 1024, 10 %, frozen"),
                       ("sweep_gru_b1", "GRU, B = 1, H = 8192, T = 1000, 10 %, inference"),
                       ("sweep_rnn_b64", "RNN, B = 64, H = 1024, T = 1024, 10 %, frozen")):
        if key in data:
            lines += [f"**Sweep: {title}**", "", *_sweep_rows(data[key]["rows"]), ""]
    if "sweep_lif" in data:
        lines += ["**Sweep: feed-forward LIF**", "", *_lif_rows(data["sweep_lif"]), ""]
    if data.get("best"):
        lines += ["**Picks** (fastest fp32-accurate; `_b64` forward+backward, `_fwd` forward)", "",
                  *picks(data["best"]), ""]
    for case in data.get("sweep_event", []):
        head = f"**Event gate: {case['cell']}, B = {case['B']}, H = {case['H']}, T = {case['T']}**"
        if "skipped" in case:
            lines += [f"{head}: skipped ({case['skipped']})", ""]
        else:
            lines += [f"{head}, {case['open']:.1%} open", "", *_sweep_rows(case["rows"]), ""]
    if data.get("part_seconds"):
        lines += ["Seconds per part: " + ", ".join(f"{k} {v:.0f}" for k, v in data["part_seconds"].items()), ""]
    return "\n".join(lines)


def measured(data: dict) -> str:
    """``MEASURED = {...}`` of choose.py from a --table run's GRU rows."""
    rows = data.get("auto_table")
    if not rows:
        raise ReportError("no auto table in this file: it comes from `bench_gpu.py --table`")
    torch_ms = {(r["B"], r["H"]): tuple(r["torch"]) for r in rows if "torch" in r and r.get("cell") == "gru"}

    def pair(v):
        return "None" if not isinstance(v, (list, tuple)) else "(" + ", ".join(
            "None" if x is None else f"{x:.2f}" for x in v) + ")"

    out = ["MEASURED = {"]
    for r in rows:
        if r.get("cell") != "gru" or "skipped" in r or (r["B"], r["H"]) not in torch_ms:
            continue
        out.append(f"    ({r['B']}, {r['H']}, {r['rate']}): ({pair(torch_ms[(r['B'], r['H'])])}, "
                   f"{pair(r.get('rows'))}, {pair(r.get('grid'))}),")
    if len(out) == 1:
        raise ReportError("the auto table holds no GRU point that was measured (all skipped?)")
    return "\n".join([*out, "}"])


def main(argv=None) -> int:
    ap = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    ap.add_argument("json", help="bench_gpu.json of a device run")
    ap.add_argument("--measured", action="store_true", help="print choose.MEASURED from a --table run")
    args = ap.parse_args(argv)
    try:
        data = load(args.json)
        print(measured(data) if args.measured else markdown(data))
    except ReportError as err:
        print(f"gpu_report: {err}", file=sys.stderr)
        return 2
    return 0


if __name__ == "__main__":
    sys.exit(main())
