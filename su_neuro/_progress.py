"""The progress bars of the command line (tqdm, on stderr)."""

from __future__ import annotations

import sys

#: seconds between a bar's updates where stderr is not a terminal (a log file, a pipe, a batch
#: job's output): every update is a line there, which would be one a tenth of a second
QUIET_INTERVAL = 30.0


def progress_bar(**kwargs):
    """A ``tqdm`` bar on stderr that updates rarely where stderr is not a terminal."""
    from tqdm.auto import tqdm

    # a notebook's bar (a widget, which tqdm.auto picks in Jupyter) is not a stream of lines
    widget = any(c.__module__ == "tqdm.notebook" for c in tqdm.__mro__)
    try:
        tty = sys.stderr.isatty()
    except (AttributeError, ValueError):  # replaced or closed
        tty = False
    kwargs.setdefault("mininterval", 0.1 if tty or widget else QUIET_INTERVAL)
    return tqdm(file=sys.stderr, **kwargs)
