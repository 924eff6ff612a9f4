"""First-run compilation: said once when a first step is slow, an honest ETA, and
``su-neuro info --compile`` leaves nothing for a later run to compile."""

from __future__ import annotations

import io
import os
import subprocess
import sys
import textwrap
import time

from tqdm import tqdm

from su_neuro.warmup import COMPILE_NOTICE, FirstStepNotice, restart_eta


def test_notice_only_while_numba_compiles(monkeypatch):
    import su_neuro.warmup as warmup

    misses = [0]
    monkeypatch.setattr(warmup, "_compiled_so_far", lambda: (lambda: misses[0]))
    said = []
    with FirstStepNotice(True, after=0.05, poll=0.02, write=said.append):
        misses[0] += 1  # Numba starts compiling a kernel
        time.sleep(0.4)
    assert len(said) == 1 and COMPILE_NOTICE in said[0]
    assert "first run" in said[0] and "su-neuro info --compile" in said[0]
    # a slow first step that compiles nothing (kernels loaded from the cache) says nothing
    with FirstStepNotice(True, after=0.05, poll=0.02, write=said.append):
        time.sleep(0.3)
    assert len(said) == 1
    # only the first step counts, and a fast one says nothing
    notice = FirstStepNotice(True, after=0.05, poll=0.02, write=said.append)
    for _ in range(3):
        with notice:
            misses[0] += 1
    time.sleep(0.2)
    assert len(said) == 1
    with FirstStepNotice(False, after=0.0, write=said.append):  # no numba: never said
        misses[0] += 1
        time.sleep(0.1)
    assert len(said) == 1


def test_eta_restarts_after_a_slow_first_step():
    def eta_after(restart: bool) -> float:
        bar = tqdm(total=1000, file=io.StringIO(), mininterval=0)
        with FirstStepNotice(False, bar=bar if restart else None):
            time.sleep(0.5)  # the compiling first step
            bar.update(1)
        for _ in range(2):  # the ETA a user reads a moment after the first step
            time.sleep(0.01)
            bar.update(1)
        d = bar.format_dict
        rate = d["rate"] or (d["n"] - d["initial"]) / d["elapsed"]
        bar.close()
        return (d["total"] - d["n"]) / rate

    assert eta_after(restart=False) > 80  # what tqdm showed: the 0.5 s step dominates (~120 s)
    assert eta_after(restart=True) < 40   # the later 10 ms steps decide it (~10 s)
    restart_eta(None)  # no bar: nothing to do


def test_compile_selection():
    import pytest

    from su_neuro.warmup import parse_selection

    assert parse_selection("gru/rhythmic") == (("gru",), ("rhythmic",))
    assert parse_selection("lif,gru/event") == (("lif", "gru"), ("rhythmic", "event", "dense"))
    assert parse_selection("all")[0] == ("rnn", "gru", "lif")
    with pytest.raises(ValueError, match="CELL"):
        parse_selection("lstm")


def test_info_compile_leaves_nothing_to_compile(tmp_path, cli):
    """After `su-neuro info --compile`, a fresh process's training steps and stream load every
    kernel from Numba's cache (a cache folder of its own, so the test starts cold)."""
    env = {"NUMBA_CACHE_DIR": str(tmp_path / "numba-cache")}
    first = cli("info", "--compile", "lif/rhythmic", env=env, timeout=1200)
    assert first.returncode == 0, first.stderr
    assert "lif/rhythmic training" in first.stdout and "lif/rhythmic streaming" in first.stdout
    done = first.stdout.strip().splitlines()[-1]
    assert done.startswith("done: ") and int(done.split()[1]) > 0, done  # a cold cache: it compiled
    check = textwrap.dedent("""
        from su_neuro.models import build_layer
        from su_neuro.simulate import poisson_chunks, simulate
        from su_neuro.train import TrainConfig, train
        from su_neuro.warmup import numba_dispatchers
        cfg = TrainConfig(task="copy", task_options={"delay": 6, "n_train": 64, "n_test": 16}, cell="lif",
                          hidden_size=16, batch_size=8, max_steps=2, backend="numba", checkpoint_every=0,
                          layer_options={"recurrent": True})
        train(cfg, "run", progress=False)
        layer = build_layer("lif", 4, 256, gate={"kind": "rhythmic", "init_rate": 0.2}, backend="numba",
                            recurrent=True)
        simulate(layer, poisson_chunks(1, 2000, 4, 0.1, 1000))
        print("compiled", sum(sum(d.stats.cache_misses.values()) for d in numba_dispatchers()))
    """)
    second = subprocess.run([sys.executable, "-c", check], env=dict(os.environ, **env), capture_output=True,
                            text=True, timeout=900, cwd=tmp_path)
    assert second.returncode == 0, second.stderr
    assert second.stdout.split()[-2:] == ["compiled", "0"], second.stdout
    assert "compiling the Numba" not in second.stdout + second.stderr  # nothing compiled: nothing said
