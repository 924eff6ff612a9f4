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
