"""Atomic, pickle-free file I/O: nothing mechwork writes is ever half-written.

Every write goes to a temporary file in the destination's directory, is
flushed and fsynced, then renamed over the destination (``os.replace`` is
atomic on POSIX). A crash leaves either the old file or the new one, plus at
worst a stray ``.tmp-*`` file that readers ignore.

Weights live in safetensors and metadata in JSON; nothing is unpickled.
Every safetensors file mechwork writes carries a content hash in its
metadata (``sha256``: over each tensor's name, dtype, shape and bytes), and
:func:`load_tensors` refuses a file whose hash is missing or does not match,
or that holds a non-finite (NaN or inf) value: flipped bytes and diverged
weights never load silently.

Example::

    >>> import tempfile, torch
    >>> from pathlib import Path
    >>> d = Path(tempfile.mkdtemp())
    >>> save_tensors_atomic({"w": torch.ones(2)}, d / "w.safetensors", {"step": "3"})
    >>> t, meta = load_tensors(d / "w.safetensors")
    >>> t["w"].tolist(), meta["step"], len(meta["sha256"])
    ([1.0, 1.0], '3', 64)
"""

from __future__ import annotations

import hashlib
import json
import os
from pathlib import Path

from torch import Tensor

from mechwork.atomic import atomic_open, load_json, write_json_atomic
from mechwork.errors import CheckpointError

__all__ = [
    "HASH_KEY",
    "atomic_open",
    "first_non_finite",
    "load_json",
    "load_tensors",
    "read_safetensors",
    "save_tensors_atomic",
    "tensors_digest",
    "write_json_atomic",
]

HASH_KEY = "sha256"  # safetensors metadata key of the content hash


def tensors_digest(tensors: dict[str, Tensor]) -> str:
    """sha256 over every tensor's name, dtype, shape and bytes, in name order.

    >>> import torch
    >>> a = tensors_digest({"w": torch.zeros(2)})
    >>> a == tensors_digest({"w": torch.zeros(2)}), a == tensors_digest({"w": torch.zeros(1, 2)})
    (True, False)
    """
    import torch

    h = hashlib.sha256()
    for name in sorted(tensors):
        t = tensors[name].detach().to("cpu").contiguous()
        head = json.dumps([name, str(t.dtype).removeprefix("torch."), list(t.shape), t.numel() * t.element_size()])
        h.update(head.encode() + b"\n")
        if t.numel():
            h.update(t.reshape(-1).view(torch.uint8).numpy().data)
    return h.hexdigest()


def first_non_finite(tensors: dict[str, Tensor]) -> str | None:
    """The name (in name order) of the first floating tensor holding a NaN or inf, else None.

    >>> import torch
    >>> first_non_finite({"a": torch.ones(2), "b": torch.tensor([1.0, float("nan")])})
    'b'
    """
    for name in sorted(tensors):
        t = tensors[name]
        if (t.is_floating_point() or t.is_complex()) and t.numel() and not bool(t.isfinite().all()):
            return name
    return None


def save_tensors_atomic(
    tensors: dict[str, Tensor], path: str | os.PathLike[str], metadata: dict[str, str] | None = None
) -> None:
    """Write ``tensors`` as safetensors, atomically, with their content hash in the metadata."""
    from safetensors.torch import save

    tensors = {k: v.contiguous() for k, v in tensors.items()}
    data = save(tensors, metadata=dict(metadata or {}) | {HASH_KEY: tensors_digest(tensors)})
    with atomic_open(path, "wb") as f:
        f.write(data)


def read_safetensors(
    path: str | os.PathLike[str], what: str = "checkpoint"
) -> tuple[dict[str, Tensor], dict[str, str]]:
    """Every tensor and the metadata of a safetensors file, on the CPU, unchecked; a missing or unreadable file
    is one :class:`CheckpointError` line naming it (``what`` it is: ``checkpoint``, ``SAE weights``)."""
    from safetensors import safe_open

    path = Path(path)
    if not path.is_file():
        raise CheckpointError(f"missing {what}: {path}")
    try:
        with safe_open(str(path), framework="pt", device="cpu") as f:
            meta = dict(f.metadata() or {})
            tensors = {k: f.get_tensor(k) for k in f.keys()}  # noqa: SIM118
    except Exception as e:  # safetensors raises several types for a bad header/body
        msg = f"{type(e).__name__}: {e}".replace("\n", " ")
        raise CheckpointError(f"corrupt {what} {path}: {msg}") from None
    return tensors, meta


def load_tensors(
    path: str | os.PathLike[str], device: str = "cpu"
) -> tuple[dict[str, Tensor], dict[str, str]]:
    """Tensors and metadata of a safetensors file mechwork wrote; a bad file names itself.

    Refused, each with one :class:`CheckpointError` line naming the file: a
    missing or unreadable file, a missing or wrong content hash, and a
    floating tensor holding NaN or inf (named too).
    """
    path = Path(path)
    tensors, meta = read_safetensors(path)
    stored = meta.get(HASH_KEY)
    if stored is None:
        raise CheckpointError(f"corrupt checkpoint {path}: no content hash in its metadata ('{HASH_KEY}')")
    if stored != tensors_digest(tensors):
        raise CheckpointError(f"corrupt checkpoint {path}: its tensors do not match their content hash")
    bad = first_non_finite(tensors)
    if bad is not None:
        raise CheckpointError(f"non-finite checkpoint {path}: tensor {bad!r} holds NaN or inf")
    if device != "cpu":
        tensors = {k: v.to(device) for k, v in tensors.items()}
    return tensors, meta
