"""Atomic, pickle-free file I/O: nothing mechwork writes is ever half-written.

Every write goes to a temporary file in the destination's directory, is
flushed and fsynced, then renamed over the destination (``os.replace`` is
atomic on POSIX). A crash leaves either the old file or the new one, plus at
worst a stray ``.tmp-*`` file that readers ignore.

Weights live in safetensors and metadata in JSON; nothing is unpickled.

Example::

    >>> import tempfile, torch
    >>> from pathlib import Path
    >>> d = Path(tempfile.mkdtemp())
    >>> save_tensors_atomic({"w": torch.ones(2)}, d / "w.safetensors", {"step": "3"})
    >>> t, meta = load_tensors(d / "w.safetensors")
    >>> t["w"].tolist(), meta["step"]
    ([1.0, 1.0], '3')
"""

from __future__ import annotations

import json
import os
import tempfile
from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path
from typing import IO, Any

from torch import Tensor

from mechwork.errors import CheckpointError

__all__ = ["atomic_open", "load_json", "load_tensors", "save_tensors_atomic", "write_json_atomic"]


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


def save_tensors_atomic(
    tensors: dict[str, Tensor], path: str | os.PathLike[str], metadata: dict[str, str] | None = None
) -> None:
    from safetensors.torch import save

    data = save({k: v.contiguous() for k, v in tensors.items()}, metadata=metadata)
    with atomic_open(path, "wb") as f:
        f.write(data)


def load_tensors(
    path: str | os.PathLike[str], device: str = "cpu"
) -> tuple[dict[str, Tensor], dict[str, str]]:
    """Tensors and metadata of a safetensors file; a bad file names itself."""
    from safetensors import safe_open

    path = Path(path)
    if not path.is_file():
        raise CheckpointError(f"missing checkpoint: {path}")
    try:
        with safe_open(str(path), framework="pt", device=device) as f:
            meta = f.metadata() or {}
            return {k: f.get_tensor(k) for k in f.keys()}, dict(meta)  # noqa: SIM118
    except Exception as e:  # safetensors raises several types for a bad header/body
        raise CheckpointError(f"corrupt checkpoint {path}: {type(e).__name__}: {e}") from None
