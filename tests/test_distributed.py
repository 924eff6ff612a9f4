"""Two CPU processes (gloo) train to the same parameters as one process with the same global batch."""

from __future__ import annotations

import json
import os
import signal
import socket
import subprocess
import sys
from pathlib import Path

import pytest
import torch

from su_neuro.train import ConfigError, config_from_dict, distributed_env, load_checkpoint, train

REPO = Path(__file__).resolve().parents[1]

ARGS = [
    "train", "--task", "copy", "--task-option", "delay=5", "--task-option", "n_memorize=2",
    "--task-option", "n_train=96", "--task-option", "n_test=16",
    "--hidden-size", "10", "--batch-size", "12", "--max-steps", "10", "--backend", "torch",
    "--lr", "0.02", "--init-rate", "0.4", "--grad-clip", "0.5", "--rate-target", "0.2",
    "--rate-weight", "0.5", "--rate-floor", "0.45", "--rate-floor-weight", "3", "--schedule", "cosine",
    "--checkpoint-every", "4", "--no-progress",
]


def _free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def _env(**extra) -> dict:
    env = {k: v for k, v in os.environ.items() if k not in ("RANK", "WORLD_SIZE", "LOCAL_RANK")}
    env.update(PYTHONPATH=str(REPO), OMP_NUM_THREADS="1", **extra)
    return env


def test_two_processes_match_one(tmp_path):
    single = tmp_path / "single"
    one = subprocess.run([sys.executable, "-m", "su_neuro.cli", *ARGS, "--out", str(single)],
                         capture_output=True, text=True, env=_env(), cwd=REPO, timeout=300)
    assert one.returncode == 0, one.stderr

    multi = tmp_path / "ddp"
    port = str(_free_port())
    procs = [
        subprocess.Popen(
            [sys.executable, "-m", "su_neuro.cli", *ARGS, "--out", str(multi)],
            stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True, cwd=REPO,
            env=_env(RANK=str(r), LOCAL_RANK=str(r), WORLD_SIZE="2",
                     MASTER_ADDR="127.0.0.1", MASTER_PORT=port),
        )
        for r in range(2)
    ]
    outs = [p.communicate(timeout=300) for p in procs]
    for p, (_so, se) in zip(procs, outs, strict=True):
        assert p.returncode == 0, se
    # only rank 0 printed and wrote
    assert "finished at step 10" in outs[0][0] and outs[1][0] == ""

    a = load_checkpoint(single / "checkpoint.pt")
    b = load_checkpoint(multi / "checkpoint.pt")
    assert b["world_size"] == 2 and b["data"]["step"] == 10
    for name, ref in a["model"].items():
        torch.testing.assert_close(b["model"][name], ref, atol=2e-5, rtol=1e-4, msg=name)
    ra = json.loads((single / "result.json").read_text())
    rb = json.loads((multi / "result.json").read_text())
    assert abs(ra["test_loss"] - rb["test_loss"]) < 1e-4
    assert abs(ra["train_loss"] - rb["train_loss"]) < 1e-4
    # one log: a start line, 10 train lines, eval and end
    events = [json.loads(x)["event"] for x in (multi / "metrics.jsonl").read_text().splitlines()]
    assert events == ["start"] + ["train"] * 10 + ["eval", "end"]


def _two_ranks(args: list[str], out: Path, at: str | None = None, sig: int = signal.SIGKILL,
               ranks: tuple[int, ...] = (0, 1)) -> list[tuple[int, str]]:
    """``(exit status, stderr)`` of two gloo processes running ``su-neuro train *args --out out``;
    with ``at``, ``sig`` goes to the processes ``ranks`` when rank 0 prints a line starting with it."""
    port = str(_free_port())
    procs = [
        subprocess.Popen(
            [sys.executable, "-m", "su_neuro.cli", *args, "--out", str(out)],
            stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True, cwd=REPO,
            env=_env(RANK=str(r), LOCAL_RANK=str(r), WORLD_SIZE="2", MASTER_ADDR="127.0.0.1", MASTER_PORT=port),
        )
        for r in range(2)
    ]
    if at is not None:
        for line in procs[0].stdout:
            if line.startswith(at):
                for r in ranks:
                    procs[r].send_signal(sig)
                break
    errs = [p.communicate(timeout=300)[1] for p in procs]
    ends = [(p.returncode, err) for p, err in zip(procs, errs, strict=True)]
    if at is None:
        assert [status for status, _ in ends] == [0, 0], ends
    return ends


def test_dropout_masks_differ_between_ranks_stop_and_resume_bit_exact(tmp_path):
    """Every process draws its dropout masks from its own stream (they were one stream, so local
    sample i had one mask on every process), and rank 0's checkpoints hold every stream. A SIGTERM
    that reaches one process stops both at the same step's end with a checkpoint; that run, then
    killed (SIGKILL) and resumed again, ends bit-exact where an uninterrupted one does."""
    args = [*ARGS[:ARGS.index("--max-steps")], "--max-steps", "48", "--epochs", "6",
            "--num-layers", "2", "--layer-option", "dropout=0.5", "--checkpoint-every", "8",
            "--lr", "0.02", "--backend", "torch", "--no-progress"]
    _two_ranks(args, tmp_path / "ref")
    ref = load_checkpoint(tmp_path / "ref" / "checkpoint.pt")
    streams = [s["torch"] for s in ref["rng_ranks"]]
    assert len(streams) == 2 and not torch.equal(streams[0], streams[1])

    out = tmp_path / "run"
    (s0, err0), (s1, err1) = _two_ranks(args, out, at="checkpoint: step 8", sig=signal.SIGTERM, ranks=(1,))
    assert (s0, s1) == (128 + signal.SIGTERM, 128 + signal.SIGTERM), (err0, err1)
    stopped = json.loads((out / "metrics.jsonl").read_text().splitlines()[-1])
    assert stopped["event"] == "stopped" and 8 <= stopped["step"] < 48
    assert f"stopped by SIGTERM after step {stopped['step']}" in err0 and "stopped by" not in err1
    assert load_checkpoint(out / "checkpoint.pt")["data"]["step"] == stopped["step"]

    (s0, _), _ = _two_ranks([*args, "--resume"], out, at="checkpoint: step 32")
    assert s0 == -signal.SIGKILL, "the run finished before it could be killed"
    assert not (out / "result.json").exists()
    _two_ranks([*args, "--resume"], out)
    resumed = load_checkpoint(out / "checkpoint.pt")
    assert resumed["data"]["step"] == 48
    for name, value in ref["model"].items():
        assert torch.equal(resumed["model"][name], value), name


def test_global_batch_must_divide(tmp_path, monkeypatch):
    """Checked before any process group starts, so a bad batch cannot hang the ranks."""
    monkeypatch.setenv("WORLD_SIZE", "2")
    monkeypatch.setenv("RANK", "0")
    cfg = config_from_dict({"task": "copy", "batch_size": 7, "task_options": {"n_train": 32, "n_test": 8}})
    with pytest.raises(ConfigError, match="does not divide by the 2 processes"):
        train(cfg, tmp_path / "ddp", progress=False)
    assert not (tmp_path / "ddp").exists()


def test_distributed_env_is_checked(monkeypatch):
    monkeypatch.setenv("WORLD_SIZE", "2")
    monkeypatch.setenv("RANK", "2")
    with pytest.raises(RuntimeError, match="bad torch.distributed environment"):
        distributed_env()


HANGING_RANK = """
import os, sys, time
from su_neuro.train import loop
loop.STOP_GRACE_S = 2.0
real = loop._train_step
def step(*args, **kwargs):
    if os.environ["RANK"] == "1" and kwargs.get("step", 0) >= 5:
        time.sleep(600)  # a peer that hangs: rank 0 waits in the step's all-reduce
    return real(*args, **kwargs)
loop._train_step = step
from su_neuro.cli import main
sys.exit(main(sys.argv[1:]))
"""


def test_a_signalled_process_stuck_waiting_for_a_hung_peer_exits_after_the_grace(tmp_path):
    """Waiting in a collective runs no Python: SIGTERM used to end such a process at once,
    and with the stop at a step's end it would never end; a timer ends it STOP_GRACE_S later."""
    import time

    args = [*ARGS, "--out", str(tmp_path / "run")]
    args[args.index("--checkpoint-every") + 1] = "1"
    port = str(_free_port())
    procs = [
        subprocess.Popen([sys.executable, "-c", HANGING_RANK, *args], stdout=subprocess.PIPE,
                         stderr=subprocess.PIPE, text=True, cwd=REPO,
                         env=_env(RANK=str(r), LOCAL_RANK=str(r), WORLD_SIZE="2", MASTER_ADDR="127.0.0.1",
                                  MASTER_PORT=port))
        for r in range(2)
    ]
    try:
        for line in procs[0].stdout:
            if line.startswith("checkpoint: step 5"):
                break
        time.sleep(0.5)  # rank 0 is in step 6's all-reduce now
        sent = time.monotonic()
        procs[0].send_signal(signal.SIGTERM)
        _, err = procs[0].communicate(timeout=60)
        assert procs[0].returncode == 128 + signal.SIGTERM, err
        assert time.monotonic() - sent < 30 and "no agreed stop within 2 s of the signal" in err, err
    finally:
        for p in procs:
            p.kill()
            p.communicate()


THREADS_AFTER_TRAIN = """
import json, os, signal, sys
from su_neuro.train import TrainingStopped, train

def threads():
    return sorted(open(f"/proc/self/task/{t}/comm").read().strip() for t in os.listdir("/proc/self/task"))

def on_step(step, stats):
    if sys.argv[2] == "stop" and step == 2:
        os.kill(os.getpid(), signal.SIGTERM)

def parse():
    marker = "the caller's own local"
    raise KeyError(marker)

cfg = {"task": "copy", "task_options": {"delay": 5, "n_memorize": 2, "n_train": 96, "n_test": 16},
       "hidden_size": 10, "batch_size": 12, "max_steps": 4, "backend": "torch"}
try:
    parse()
except KeyError as own:  # train() called while the caller handles an error of its own
    try:
        train(cfg, sys.argv[1], progress=False, on_step=on_step)
        ended, names = "finished", threads()
    except TrainingStopped:
        ended, names = "stopped", threads()  # the caller holds the error, its traceback and frames, here
    tb = own.__traceback__
    while tb.tb_next is not None:
        tb = tb.tb_next
    kept = "marker" in tb.tb_frame.f_locals  # the caller's own error keeps its frames' locals
print(json.dumps([ended, names, kept]), flush=True)
"""


@pytest.mark.skipif(not Path("/proc/self/task").is_dir(), reason="thread names are read from /proc")
@pytest.mark.parametrize("end", ["finish", "stop"])
def test_a_run_ends_its_process_group_and_threads(tmp_path, end):
    """train() destroys the process group it started, and with it gloo's worker threads,
    before it returns or raises. A worker thread alive at the interpreter's exit, still
    letting go of a finished collective, used to abort one process in ~1 of 10-30 runs
    ("terminate called without an active exception", exit status -6) after a run that
    had saved everything: the DDP model, torch._dynamo's import and the traceback of
    TrainingStopped kept the group alive."""
    port = str(_free_port())
    procs = [
        subprocess.Popen([sys.executable, "-c", THREADS_AFTER_TRAIN, str(tmp_path / "run"), end],
                         stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True, cwd=REPO,
                         env=_env(RANK=str(r), LOCAL_RANK=str(r), WORLD_SIZE="2", MASTER_ADDR="127.0.0.1",
                                  MASTER_PORT=port))
        for r in range(2)
    ]
    outs = [p.communicate(timeout=300) for p in procs]
    for p, (so, se) in zip(procs, outs, strict=True):
        assert p.returncode == 0, se
        ended, names, kept = json.loads(so.strip().splitlines()[-1])
        assert ended == ("stopped" if end == "stop" else "finished") and kept
        assert not [n for n in names if n.startswith(("gloo", "pt_"))], names
