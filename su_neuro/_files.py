"""Files that several processes may touch: the folder ``fsync`` after a rename, and the
exclusive ``flock`` locks that keep two writers of one thing apart (a run folder, a trace).

The lock is held on a small file beside what is written, released by the kernel when the
process ends however it ends, and the file removed by its holder at the end. On NFS the
kernel emulates ``flock`` with record locks, which hold across machines; a file system
without locks gives a warning and no lock; Windows (no ``fcntl``) locks nothing.
"""

from __future__ import annotations

import contextlib
import os
import warnings
from collections.abc import Callable, Iterator
from pathlib import Path

try:
    import fcntl
except ImportError:  # Windows
    fcntl = None


@contextlib.contextmanager
def errors_named(path: Path) -> Iterator[None]:
    """Re-raise an ``OSError`` of the block as one naming ``path``: the file the caller asked
    for, not the temporary file it was being written to."""
    try:
        yield
    except OSError as err:
        raise OSError(err.errno, err.strerror, str(path)) from None


def fsync_dir(path: Path) -> None:
    """Make a rename in the folder ``path`` durable (where the system allows it)."""
    try:
        fd = os.open(path, os.O_RDONLY)
    except OSError:
        return
    try:
        os.fsync(fd)
    except OSError:
        pass
    finally:
        os.close(fd)


def _open_lock(path: Path) -> int:
    """An fd of the lock file (created if missing): read-write where allowed (NFS needs it
    for an exclusive lock), read-only where another user left the file (flock needs no more)."""
    try:
        return os.open(path, os.O_RDWR | os.O_CREAT, 0o666)
    except PermissionError as denied:
        try:
            return os.open(path, os.O_RDONLY)
        except FileNotFoundError:  # not there, and the folder may not be written to
            raise denied from None


def acquire(path: Path, busy: Callable[[], Exception], what: str, stacklevel: int = 3) -> int | None:
    """An fd of ``path`` holding an exclusive ``flock``, taken without waiting: ``busy()`` is
    raised where another process holds it. None where there is nothing to lock with (Windows)
    or the file system has no locks (warned, naming ``what``, and a lock file this call
    created removed). An fd of a lock file that its previous holder removed meanwhile is
    dropped and the file opened again."""
    if fcntl is None:
        return None
    for _ in range(8):
        existed = path.exists()
        try:
            fd = _open_lock(path)
        except FileNotFoundError:  # a refused writer removed the empty folder meanwhile
            path.parent.mkdir(parents=True, exist_ok=True)
            continue
        try:
            fcntl.flock(fd, fcntl.LOCK_EX | fcntl.LOCK_NB)
        except BlockingIOError:
            os.close(fd)
            raise busy() from None
        except OSError as err:  # e.g. Lustre without -o flock
            os.close(fd)
            if not existed:
                with contextlib.suppress(OSError):
                    path.unlink()
            warnings.warn(f"cannot lock {what} ({err}); two writers of it would not be kept apart",
                          RuntimeWarning, stacklevel=stacklevel + 1)
            return None
        try:
            if os.stat(path).st_ino == os.fstat(fd).st_ino:
                return fd
        except FileNotFoundError:
            pass
        os.close(fd)  # locked the file of a writer that has just ended and removed it
    raise RuntimeError(f"cannot take the lock {path}: it keeps being replaced")


def release(path: Path, fd: int | None) -> None:
    """Remove the lock file while still holding it (a writer waiting for it then finds it gone
    and opens a new one), then let go of it."""
    if fd is None:
        return
    with contextlib.suppress(OSError):
        path.unlink()
    os.close(fd)
