"""The ``su-neuro`` command line.

Subcommands live in ``su_neuro.commands.<name>``; only the one that runs is imported (with
its heavier packages). A user's mistake ends with one line and exit status 2; a bug keeps
its traceback, and ``SU_NEURO_TRACEBACK=1`` shows the traceback of every error.
"""

from __future__ import annotations

import argparse
import contextlib
import importlib
import os
import sys

__all__ = ["COMMANDS", "main"]

# name -> one-line help (kept here so --help does not import every command)
COMMANDS = {
    "demo": "train a suGRU and a dense GRU on a long-delay copy task and compare them",
    "train": "train a model on a sequence or neuromorphic task",
    "simulate": "run a population over a long input and record what it did",
    "analyze": "sparsity, operation and energy report of a trace file",
    "bench": "time the backends against each other",
    "info": "versions and the backends available here",
}


def _parser(argv: list[str]) -> tuple[argparse.ArgumentParser, object]:
    parser = argparse.ArgumentParser(prog="su-neuro", description="Selective-update recurrent networks.")
    parser.add_argument("--version", action="store_true", help="print the version and exit")
    sub = parser.add_subparsers(dest="command", metavar="COMMAND")
    chosen = next((a for a in argv if not a.startswith("-")), None)
    module = None
    for name, help_text in COMMANDS.items():
        p = sub.add_parser(name, help=help_text, description=help_text)
        if name == chosen:
            module = importlib.import_module(f"su_neuro.commands.{name}")
            module.add_arguments(p)
    return parser, module


def main(argv: list[str] | None = None) -> int:
    argv = list(sys.argv[1:] if argv is None else argv)
    parser, module = _parser(argv)
    args = parser.parse_args(argv)
    if args.version:
        from . import __version__

        print(f"su-neuro {__version__}")
        return 0
    if module is None:
        parser.print_help()
        return 2
    try:
        return int(module.run(args) or 0)
    except KeyboardInterrupt as err:
        from .train.loop import TrainingStopped

        if isinstance(err, TrainingStopped):
            if _rank() in ("", "[rank 0] "):  # the other processes of a multi-process run stop quietly
                # the demo cannot resume: its runs start over
                then = "continue with --resume" if args.command == "train" else "start over with --overwrite"
                print(f"{err}; {then}", file=sys.stderr)
            return 128 + err.signum
        print("interrupted", file=sys.stderr)
        return 130
    except BrokenPipeError:  # `su-neuro info | head -1`: the reader has gone, as with any command
        with contextlib.suppress(OSError):
            os.dup2(os.open(os.devnull, os.O_WRONLY), sys.stdout.fileno())  # no second error at exit
        return 128 + 13  # SIGPIPE
    except Exception as err:
        line = expected_error(err)
        if line is None or os.environ.get("SU_NEURO_TRACEBACK", "") not in ("", "0"):
            raise  # a bug (or SU_NEURO_TRACEBACK=1): keep the traceback
        # Bad input, missing packages and unavailable backends end with one line, not a traceback.
        print(f"su-neuro {args.command}: {_rank()}error: {line}", file=sys.stderr)
        return 2


def _rank() -> str:
    """``"[rank N] "`` in a process of a multi-process run (torchrun's RANK / WORLD_SIZE), else ``""``:
    each process prints its own error line, and the reader must tell whose is whose."""
    from .train.dist import distributed_env

    try:
        dist = distributed_env()
    except RuntimeError:  # a malformed environment: its own error line says so
        return ""
    return f"[rank {dist.rank}] " if dist.active else ""


def expected_error(err: BaseException) -> str | None:
    """The one-line message of an error a user can cause and fix, or None for a bug.

    Expected: bad values and files (ValueError, TypeError, OSError and the errors derived from
    them), unavailable backends and devices (RuntimeError), a missing optional package
    (ImportError), and every error of a damaged or foreign trace (``TraceError``).
    """
    if isinstance(err, ImportError):
        text = str(err)
        if isinstance(err, ModuleNotFoundError) and err.name and text.startswith("No module named"):
            root = err.name.split(".")[0]
            text = f"the package {root!r} is needed here but is not installed (pip install {root})"
        return text.splitlines()[0] if text else type(err).__name__
    expected = (ValueError, TypeError, OSError, RuntimeError)
    if not isinstance(err, expected) and type(err).__module__ != "su_neuro.traces":
        return None
    text = str(err).strip()
    if type(err).__name__ in ("DistBackendError", "DistNetworkError") or "gloo/transport" in text:
        # a collective broken by another process's failure: that process's line names the problem
        return "another process of this run stopped (its error line names the problem): " + \
            " ".join(text.split())[:200]
    if isinstance(err, OSError) and err.filename is not None and err.strerror:
        text = f"{err.filename}: {err.strerror}"
    return " ".join(text.split()) or type(err).__name__

if __name__ == "__main__":  # pragma: no cover
    sys.exit(main())
