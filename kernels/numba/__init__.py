"""The Numba CPU backend (``ops`` is its entry point; see its docstring).

One module per kernel variant (``event``, ``rows``, ``gemm``, ``split``, ``lif``), their
shared device helpers and argument bundles (``_common``), the compaction of gate rows
(``compact``) and the pure kernel choice (``choose``).

Numba's on-disk cache (``cache=True``) checks only the source file of the function it
compiled. The kernels here inline helpers from ``_common`` (``split`` inlines
``_common.dots1``, ``_common.step_input``, ...), so after an edit of ``_common.py`` a
cached ``split`` kernel would go on running the old helper: seen here, a changed
``_dots_packed`` left the split kernel's output bits as they were until its cache was
dropped. On import, :func:`drop_stale_cache` therefore compares one digest of every
source file of the package with the digest stored beside the cache and, where they differ,
deletes the package's cached machine code, so that everything recompiles from the
current sources once. An installed (unchanged) package pays one hash of ~100 KB. With
``NUMBA_CACHE_DIR`` set, Numba caches elsewhere and this check does not reach that cache.
"""

from __future__ import annotations

import hashlib
from pathlib import Path

__all__ = ["drop_stale_cache"]

#: the stored digest of the package's sources, beside Numba's index (.nbi) and code (.nbc) files
STAMP = "su_neuro_sources.sha256"


def drop_stale_cache(package: Path, cache: Path) -> bool:
    """Delete Numba's cache files in ``cache`` when the ``*.py`` sources of ``package``
    changed since the digest stored there was written; returns whether it deleted them.
    Unwritable locations are left alone (Numba then caches elsewhere or not at all)."""
    digest = hashlib.sha256()
    for path in sorted(package.glob("*.py")):
        digest.update(path.name.encode() + b"\0" + path.read_bytes() + b"\0")
    want = digest.hexdigest()
    stamp = cache / STAMP
    try:
        if stamp.read_text() == want:
            return False
    except OSError:
        pass
    try:
        for f in cache.glob("*.nb[ic]"):
            f.unlink(missing_ok=True)
        cache.mkdir(exist_ok=True)
        stamp.write_text(want)
    except OSError:
        return False
    return True


_HERE = Path(__file__).resolve().parent
drop_stale_cache(_HERE, _HERE / "__pycache__")
