"""``su-neuro demo``: a suGRU with the rhythmic gate against a dense GRU on a long-delay copy task.

Both models have the same size and are trained with the same data, optimiser and steps
(:func:`su_neuro.train.train`); each writes a trace of test samples that
:func:`su_neuro.analysis.analyze` turns into a report with figures. The comparison
(accuracy, loss, update rate, dense vs effective operations) is printed and written to
``comparison.md`` / ``comparison.json`` in the output folder, with ``curves.png``.
"""

from __future__ import annotations

import argparse
import json
import shutil
import time
from pathlib import Path

HELP = "train a suGRU and a dense GRU on a long-delay copy task and compare them"

# Measured on the shared 2-core AMD EPYC this was written on (docs/training.md, one row per
# run): the full demo takes 20 s to 8 minutes (both models, traces, reports; quiet or loaded
# cores, kernels cached or compiled during the run), --quick about 20 seconds (about 40 s
# when the Numba kernels compile during it). With a delay of 400 steps the dense GRU is at
# or near chance (1/8) after 400 steps, while the rhythmic suGRU, whose neurons stay closed
# (state and gradient passed through unchanged) through most of the delay, is well above it
# (0.26-0.40 at seeds 0-2 on 2026-12-07).
SETTINGS = {
    "full": dict(delay=400, n_memorize=3, n_train=4096, n_test=256, hidden_size=64, batch_size=32,
                 lr=0.01, max_steps=400, init_rate=0.1, period=400.0, trace_samples=32),
    "quick": dict(delay=30, n_memorize=2, n_train=512, n_test=64, hidden_size=24, batch_size=16,
                  lr=0.01, max_steps=40, init_rate=0.2, period=30.0, trace_samples=16),
}
MODELS = (("su_gru", "suGRU (rhythmic)"), ("dense_gru", "GRU (dense)"))
DEMO_FILES = ("comparison.md", "comparison.json", "curves.png")


def add_arguments(parser: argparse.ArgumentParser) -> None:
    parser.add_argument("--out", default="su_neuro_demo", metavar="DIR",
                        help="output folder (default ./su_neuro_demo)")
    parser.add_argument("--quick", action="store_true",
                        help="a small version for tests (about 20 s once the kernels are compiled)")
    parser.add_argument("--seed", type=int, default=0, help="seed of both models (default 0)")
    parser.add_argument("--steps", type=int, default=None, metavar="N",
                        help="training steps per model (default 400; --quick: 40)")
    parser.add_argument("--overwrite", action="store_true", help="replace an earlier demo in --out")
    parser.add_argument("--no-progress", action="store_true", help="no progress bars")


def _configs(settings: dict, seed: int, steps: int):
    from ..train import config_from_dict

    common = dict(
        task="copy",
        task_options={"delay": settings["delay"], "n_memorize": settings["n_memorize"],
                      "n_train": settings["n_train"], "n_test": settings["n_test"], "seed": 0},
        cell="gru", hidden_size=settings["hidden_size"], batch_size=settings["batch_size"],
        lr=settings["lr"], max_steps=steps, grad_clip=1.0, seed=seed, checkpoint_every=0,
        log_every=1, trace=True, trace_samples=settings["trace_samples"], eval_batch_size=128,
    )
    su = config_from_dict({**common, "gate": "rhythmic", "init_rate": settings["init_rate"],
                           "period": settings["period"]})
    dense = config_from_dict({**common, "gate": "dense"})
    return {"su_gru": su, "dense_gru": dense}


def _check_out(out: Path, overwrite: bool) -> None:
    if out.exists() and not out.is_dir():
        raise ValueError(f"--out {str(out)!r} exists and is not a folder")
    ours = [n for n in (*DEMO_FILES, *(m for m, _ in MODELS)) if (out / n).exists()]
    if ours and not overwrite:
        raise ValueError(
            f"{str(out)!r} already holds a demo ({', '.join(ours)}); pass --overwrite to replace it "
            "or choose another --out"
        )
    if overwrite:
        for name in ours:
            path = out / name
            shutil.rmtree(path) if path.is_dir() else path.unlink()


def run(args) -> int:
    from ..analysis import analyze
    from ..train import train

    settings = SETTINGS["quick" if args.quick else "full"]
    steps = args.steps if args.steps is not None else settings["max_steps"]
    if steps < 1:
        raise ValueError(f"--steps must be a positive integer, got {steps}")
    out = Path(args.out)
    _check_out(out, args.overwrite)
    configs = _configs(settings, args.seed, steps)
    seq_len = 2 * settings["n_memorize"] + settings["delay"] + 1
    print(
        f"su-neuro demo: copying memory, remember {settings['n_memorize']} of 8 symbols across "
        f"{settings['delay']} blank steps ({seq_len} steps per sequence; chance accuracy 0.125).\n"
        f"Training two GRUs with {settings['hidden_size']} neurons for {steps} steps each "
        f"(batch {settings['batch_size']}, Adam lr {settings['lr']}); output folder: {out}",
        flush=True,
    )
    t_all = time.perf_counter()
    rows = []
    for key, label in MODELS:
        t0 = time.perf_counter()
        result = train(configs[key], out / key, progress=not args.no_progress, desc=label)
        train_s = time.perf_counter() - t0
        report = analyze(result["trace"], out / key / "report")
        ops = report.ops.per_sample()
        rows.append({
            "model": label,
            "folder": str(out / key),
            "gate": configs[key].gate,
            "test_acc": result["test_acc"],
            "test_loss": result["test_loss"],
            "update_rate": report.update_rate,
            "dense_ops": ops["dense"],
            "effective_ops": ops["effective"],
            "energy_ratio": report.energy.ratio,
            "train_s": train_s,
            "report": str(out / key / "report" / "report.md"),
        })
    curves = _plot_curves(out, [(label, out / key / "metrics.jsonl") for key, label in MODELS])
    table = _table(rows)
    (out / "comparison.md").write_text(
        "# su-neuro demo\n\n" + _markdown(rows, settings, steps) + "\n![training curves](curves.png)\n"
    )
    (out / "comparison.json").write_text(json.dumps(
        {"settings": {**settings, "max_steps": steps, "seed": args.seed}, "models": rows}, indent=2))
    total = time.perf_counter() - t_all
    print()
    print(table)
    su, dense = rows
    verdict = "beats" if su["test_acc"] > dense["test_acc"] else "does not beat"
    print(
        f"\nThe suGRU {verdict} the dense GRU ({su['test_acc']:.3f} vs {dense['test_acc']:.3f} accuracy) "
        f"while updating {su['update_rate']:.1%} of its neurons per step: "
        f"{su['effective_ops'] / max(su['dense_ops'], 1):.1%} of the dense operations."
    )
    print(f"\nTotal time {total:.0f} s. Results, traces, reports and plots in {out.resolve()}")
    print(f"  comparison: {out / 'comparison.md'}   curves: {curves}")
    for row in rows:
        print(f"  {row['model']:<17} report: {row['report']}")
    return 0


def _table(rows: list[dict]) -> str:
    head = (f"{'model':<18}{'test acc':>9}{'test loss':>10}{'update rate':>12}"
            f"{'dense ops/seq':>15}{'effective ops/seq':>19}{'train s':>9}")
    lines = [head, "-" * len(head)]
    for r in rows:
        lines.append(
            f"{r['model']:<18}{r['test_acc']:>9.3f}{r['test_loss']:>10.3f}{r['update_rate']:>12.3f}"
            f"{r['dense_ops']:>15.4g}{r['effective_ops']:>19.4g}{r['train_s']:>9.0f}"
        )
    return "\n".join(lines)


def _markdown(rows: list[dict], settings: dict, steps: int) -> str:
    lines = [
        f"Copying memory: {settings['n_memorize']} symbols, delay {settings['delay']}, "
        f"{settings['hidden_size']} neurons, {steps} steps of batch {settings['batch_size']}. "
        "Chance accuracy 0.125. Operations are synaptic operations per test sequence "
        "(su_neuro.analysis).",
        "",
        "| model | test acc | test loss | update rate | dense ops/seq | effective ops/seq | train s | report |",
        "|---|---|---|---|---|---|---|---|",
    ]
    for r in rows:
        rel = Path(r["report"]).relative_to(Path(r["folder"]).parent)
        lines.append(
            f"| {r['model']} | {r['test_acc']:.3f} | {r['test_loss']:.3f} | {r['update_rate']:.3f} | "
            f"{r['dense_ops']:.4g} | {r['effective_ops']:.4g} | {r['train_s']:.0f} | [{rel}]({rel}) |"
        )
    return "\n".join(lines) + "\n"


def _plot_curves(out: Path, logs: list[tuple[str, Path]]) -> Path:
    """Training loss and accuracy of both models (moving average over 10 steps)."""
    from ..analysis.plots import plot_training_curves

    return plot_training_curves(dict(logs), out / "curves.png", chance=0.125,
                                acc_label="training accuracy (scored steps)")
