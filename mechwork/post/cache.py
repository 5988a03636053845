"""Rendered result blocks kept on disk by their inputs: the model's weights, the block's arguments, mechwork's version.

A post's prose changes far more often than its results. :class:`ResultCache` stores the page blocks a result
block rendered into as one JSON file (never a pickle) under a key that is the sha256 of everything the result
depends on:

* the block's kind and its arguments, canonical (:meth:`mechwork.post.parse.ResultBlock.key`);
* :func:`weights_digest` of its model: the bytes of the files the weights are read from (a preset: its shipped
  ``.safetensors`` and ``.json``; a run directory: ``config.json``, ``metrics.jsonl`` and the checkpoint used;
  a model directory: ``config.json`` and every ``*.safetensors`` / ``*.bin``);
* for an ``sae-features`` block, the bytes of every SAE it may read (the model's SAEs, and any SAE directory
  an argument names), so retraining an SAE misses;
* the mechwork version, :data:`CACHE_FORMAT` (raised whenever what a block renders to changes shape) and
  :func:`code_digest`, the bytes of mechwork's own source, so a result is never served from other code (an
  editable install changes without a new version).

A file's hash is memoised by its path, size, inode and modification time, so a rebuild reads each weights
file once per process. Entries live at ``<root>/<key[:2]>/<key>.json`` and are written atomically; an entry
that cannot be read or does not parse is a miss (and is overwritten), and a cache directory that cannot be
written warns once and the build goes on without it. Nothing here imports torch: a build whose every block
hits never loads a model.

Example::

    >>> import tempfile
    >>> from mechwork.dashboard.page import Block
    >>> cache = ResultCache(tempfile.mkdtemp())
    >>> key = "ab" + "0" * 62
    >>> cache.get(key) is None
    True
    >>> cache.put(key, [Block("html", "Heads", None, "<p>two heads</p>")])
    >>> [(b.kind, b.title, b.body) for b in cache.get(key)]
    [('html', 'Heads', '<p>two heads</p>')]
    >>> ResultCache(None).get(key) is None     # no root: no caching
    True
    >>> len(weights_digest("modadd-113")), weights_digest("modadd-113") == weights_digest("induction-2l")
    (64, False)
"""

from __future__ import annotations

import hashlib
import json
import os
import warnings
from collections.abc import Mapping, Sequence
from functools import cache
from pathlib import Path
from typing import TYPE_CHECKING

from mechwork.errors import CheckpointError, ConfigError

if TYPE_CHECKING:  # pragma: no cover
    from mechwork.dashboard.page import Block
    from mechwork.post.parse import ResultBlock

__all__ = ["CACHE_ENV", "CACHE_FORMAT", "CacheWarning", "ResultCache", "code_digest", "default_root", "model_path",
           "roundtrip", "sae_digest", "weights_digest"]


class CacheWarning(RuntimeWarning):
    """The result cache cannot be written; the build goes on without it."""


CACHE_FORMAT = 1  # raise when the JSON of an entry, or what a block renders to, changes shape
CACHE_ENV = "MECHWORK_CACHE"
_FILE_SHA: dict[tuple[str, int, int, int], str] = {}  # (path, size, inode, mtime_ns) -> sha256 of the bytes


def default_root() -> Path:
    """``$MECHWORK_CACHE``, else ``$XDG_CACHE_HOME/mechwork/results``, else ``~/.cache/mechwork/results``."""
    if os.environ.get(CACHE_ENV):
        return Path(os.environ[CACHE_ENV]).expanduser()
    base = os.environ.get("XDG_CACHE_HOME") or str(Path.home() / ".cache")
    return Path(base).expanduser() / "mechwork" / "results"


def file_sha256(path: Path) -> str:
    """sha256 of a file's bytes, memoised by (path, size, inode, mtime_ns)."""
    st = path.stat()
    memo = (str(path.resolve()), st.st_size, st.st_ino, st.st_mtime_ns)
    if memo not in _FILE_SHA:
        h = hashlib.sha256()
        with open(path, "rb") as f:
            for chunk in iter(lambda: f.read(1 << 20), b""):
                h.update(chunk)
        _FILE_SHA[memo] = h.hexdigest()
    return _FILE_SHA[memo]


def _digest(files: Mapping[str, Path]) -> str:
    """sha256 over (name, file hash) pairs in name order: the same bytes under the same names give the same digest."""
    h = hashlib.sha256()
    for name in sorted(files):
        h.update(f"{name}\0{file_sha256(files[name])}\n".encode())
    return h.hexdigest()


def model_path(model: str, base: Path | None = None) -> str:
    """The model a block names, as one string: a path (relative to ``base``, the post's folder) made absolute if
    it exists, else the name as written (a preset)."""
    p = Path(model).expanduser()
    for cand in ([p] if p.is_absolute() else [*([Path(base) / p] if base is not None else []), p]):
        if cand.exists():
            return str(cand.resolve())
    return model


def _weight_files(kind: str, key: str, step: int | None) -> dict[str, Path]:
    from mechwork.limits import embedded_file, run_steps

    if kind == "preset":
        return {"weights": embedded_file(key), "info": embedded_file(key, ".json")}
    root = Path(key)
    files = {"config.json": root / "config.json"}
    if kind == "model":
        files |= {f.name: f for f in root.iterdir() if f.is_file() and f.suffix in (".safetensors", ".bin")}
        return files
    steps = run_steps(root)
    chosen = step if step is not None else (steps[-1] if steps else None)
    if chosen is not None:  # the name mechwork.runs.ckpt_name gives it
        files["checkpoint"] = root / "checkpoints" / f"step_{chosen:07d}.safetensors"
    if (root / "metrics.jsonl").is_file():
        files["metrics.jsonl"] = root / "metrics.jsonl"
    return files


def weights_digest(model: str, base: Path | None = None, step: int | None = None) -> str:
    """sha256 over the files ``model``'s weights come from (see the module docstring); a run's ``step`` picks
    its checkpoint (default: the last). A model that does not resolve is one :class:`ConfigError` line."""
    from mechwork.limits import resolve

    kind, key = resolve(model_path(model, base))
    files = _weight_files(kind, key, step)
    missing = [str(f) for f in files.values() if not f.is_file()]
    if missing:
        raise CheckpointError(f"model {model!r} cannot be read: {missing[0]} is missing")
    return hashlib.sha256(f"{kind}\0{_digest(files)}".encode()).hexdigest()


def sae_digest(block: ResultBlock) -> str:
    """sha256 over every SAE an ``sae-features`` block may read: the SAEs of its model (a preset's shipped ones or
    a run's ``saes/``) and any SAE directory one of its arguments names (relative to the post's folder)."""
    from mechwork.analysis.saestore import SAE_FILES, is_sae_dir, saes_for

    base = Path(block.path).parent
    dirs = {f"model:{hook}": d for hook, d in saes_for(model_path(block.model, base)).items()}
    for name, value in sorted(block.args.items()):
        if isinstance(value, str) and value:
            p = Path(model_path(value, base))
            if is_sae_dir(p):
                dirs[f"arg:{name}"] = p
    return _digest({f"{tag}/{f}": d / f for tag, d in dirs.items() for f in SAE_FILES})


@cache
def code_digest() -> str:
    """sha256 over every ``.py`` file of the mechwork package (by relative path), once per process."""
    root = Path(__file__).resolve().parents[1]
    return _digest({p.relative_to(root).as_posix(): p for p in sorted(root.rglob("*.py"))})


@cache
def _version() -> str:
    from importlib.metadata import PackageNotFoundError, version

    try:
        return version("mechwork")
    except PackageNotFoundError:  # pragma: no cover - running from a source tree
        from mechwork import __version__

        return __version__


class ResultCache:
    """Page blocks by key, as JSON files under ``root`` (None: nothing is cached; :meth:`default`: the user's)."""

    def __init__(self, root: str | os.PathLike[str] | None):
        self.root = None if root is None else Path(root)
        self._broken = False  # the root could not be written: warned once, no more writes tried

    @classmethod
    def default(cls) -> ResultCache:
        """The cache at :func:`default_root`."""
        return cls(default_root())

    def __repr__(self) -> str:
        return f"ResultCache({None if self.root is None else str(self.root)!r})"

    def key(self, block: ResultBlock, digest: str) -> str:
        """sha256 of the block's kind and arguments, its model's ``digest``, its SAEs (``sae-features``), the
        mechwork version, :data:`CACHE_FORMAT` and :func:`code_digest`."""
        payload = {"block": block.key(), "weights": digest, "mechwork": _version(), "format": CACHE_FORMAT,
                   "code": code_digest(), "saes": sae_digest(block) if block.kind == "sae-features" else None}
        text = json.dumps(payload, sort_keys=True, separators=(",", ":"), default=str)
        return hashlib.sha256(text.encode()).hexdigest()

    def path(self, key: str) -> Path | None:
        """Where the entry of ``key`` lives (None without a root)."""
        if self.root is None:
            return None
        if len(key) < 3 or not all(c in "0123456789abcdef" for c in key):
            raise ConfigError(f"'key' must be a lowercase hex digest (got {key!r})")
        return self.root / key[:2] / f"{key}.json"

    def get(self, key: str) -> list[Block] | None:
        """The blocks stored under ``key``; None when there are none or the entry cannot be read."""
        from mechwork.dashboard.page import Block

        path = self.path(key)
        if path is None:
            return None
        try:
            entry = json.loads(path.read_text(encoding="utf-8"))
            if entry.get("format") != CACHE_FORMAT or entry.get("key") != key:
                return None
            return [Block.from_dict(d) for d in entry["blocks"]]
        except Exception:  # missing, unreadable, torn or foreign: a miss, and the next put replaces it
            return None

    def put(self, key: str, blocks: Sequence[Block]) -> None:
        """Store ``blocks`` under ``key`` atomically; a cache that cannot be written warns once and is skipped."""
        from mechwork.atomic import atomic_open

        path = self.path(key)
        if path is None or self._broken:
            return
        text = json.dumps({"format": CACHE_FORMAT, "key": key, "blocks": [b.to_dict() for b in blocks]},
                          sort_keys=True, separators=(",", ":"))
        try:
            with atomic_open(path, "w") as f:
                f.write(text)
        except OSError as e:
            self._broken = True
            why = e.strerror or type(e).__name__
            warnings.warn(f"result cache {str(self.root)!r} cannot be written ({why}); going on without it",
                          CacheWarning, stacklevel=2)


def roundtrip(blocks: Sequence[Block]) -> list[Block]:
    """``blocks`` as the cache stores and returns them (``to_dict``, JSON, ``from_dict``), so that a page built
    from freshly rendered blocks is byte-identical to one built from cached blocks."""
    from mechwork.dashboard.page import Block

    text = json.dumps([b.to_dict() for b in blocks], sort_keys=True, separators=(",", ":"))
    return [Block.from_dict(d) for d in json.loads(text)]
