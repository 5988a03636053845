"""Atomic file writes and JSON reads, with no heavy imports: a file mechwork writes is never half-written.

Every write goes to a temporary file in the destination's directory, is flushed and fsynced, then renamed over
the destination (``os.replace`` is atomic on POSIX). A crash leaves either the old file or the new one, plus at
worst a stray ``.tmp-*`` file that readers ignore. :mod:`mechwork.io` re-exports these beside its safetensors
functions; pages, sites and the post cache import them from here, so writing a page never imports torch.

Example::

    >>> import tempfile
    >>> from pathlib import Path
    >>> d = Path(tempfile.mkdtemp())
    >>> write_json_atomic({"step": 3}, d / "a.json")
    >>> load_json(d / "a.json"), sorted(p.name for p in d.iterdir())
    ({'step': 3}, ['a.json'])
"""

from __future__ import annotations

import json
import os
import tempfile
from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path
from typing import IO, Any

from mechwork.errors import CheckpointError

__all__ = ["atomic_open", "load_json", "write_json_atomic"]


def _umask() -> int:
    mask = os.umask(0)
    os.umask(mask)
    return mask


@contextmanager
def atomic_open(path: str | os.PathLike[str], mode: str = "w", *, make_parents: bool = True) -> Iterator[IO[Any]]:
    """Open a temp file beside ``path``; on success rename it over ``path``."""
    path = Path(path)
    if make_parents:
        path.parent.mkdir(parents=True, exist_ok=True)
    fd, tmp = tempfile.mkstemp(prefix=f".tmp-{path.name}.", dir=path.parent)
    os.fchmod(fd, 0o666 & ~_umask())  # mkstemp makes 0600; give the usual file mode
    try:
        with os.fdopen(fd, mode) as f:
            yield f
            f.flush()
            os.fsync(f.fileno())
        os.replace(tmp, path)
    except BaseException:
        Path(tmp).unlink(missing_ok=True)
        raise


def write_json_atomic(obj: Any, path: str | os.PathLike[str]) -> None:
    with atomic_open(path, "w") as f:
        json.dump(obj, f, indent=2, sort_keys=True)
        f.write("\n")


def load_json(path: str | os.PathLike[str]) -> Any:
    path = Path(path)
    try:
        return json.loads(path.read_text())
    except FileNotFoundError:
        raise CheckpointError(f"missing file: {path}") from None
    except (json.JSONDecodeError, UnicodeDecodeError) as e:
        raise CheckpointError(f"corrupt JSON in {path}: {e}") from None
