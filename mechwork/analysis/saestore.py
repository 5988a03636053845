"""Where the SAEs of a model live: shipped beside a preset, or in a run directory.

An SAE is a directory in SAELens's layout, ``cfg.json`` + ``sae_weights.safetensors``
(:mod:`mechwork.analysis.saeio` reads and writes it), named after the hook it reads:

* a preset's shipped SAEs: ``mechwork/data/saes/<preset>/<hook_name>/`` (package data, installed with
  mechwork; ``experiments/train_saes.py`` writes them);
* a run's SAEs: ``<run>/saes/<hook_name>/`` (``mechwork sae train RUN --hook HOOK`` writes there by default).

:func:`saes_for` lists them (hook name -> directory), :func:`load_shipped` loads one of a preset's,
:func:`is_sae_dir` tells an SAE directory from anything else.

Example::

    >>> sorted(saes_for("modadd-113"))
    ['blocks.0.mlp.hook_post']
    >>> sae = load_shipped("modadd-113", "blocks.0.mlp.hook_post")
    >>> sae.cfg.d_in, sae.cfg.architecture, sae.cfg.model_name
    (512, 'topk', 'modadd-113')
    >>> run_sae_dir("runs/mine", "blocks.0.hook_resid_pre").as_posix()
    'runs/mine/saes/blocks.0.hook_resid_pre'
    >>> load_shipped("modadd-113", "blocks.0.mlp.hook_pre")  # doctest: +ELLIPSIS
    Traceback (most recent call last):
    mechwork.errors.ConfigError: 'hook' must be a hook point of modadd-113's shipped SAEs; the nearest is ...
"""

from __future__ import annotations

import os
from pathlib import Path
from typing import TYPE_CHECKING

from mechwork.errors import ConfigError
from mechwork.hooks import check_hook_name

if TYPE_CHECKING:  # pragma: no cover
    from mechwork.analysis.sae import SAE

__all__ = ["SAE_FILES", "SHIPPED_ROOT", "is_sae_dir", "load_shipped", "run_sae_dir", "saes_for", "shipped_dir"]

SHIPPED_ROOT = Path(__file__).resolve().parents[1] / "data" / "saes"
SAE_FILES = ("cfg.json", "sae_weights.safetensors")  # SAELens's names (sparsity.safetensors is optional there)


def is_sae_dir(path: str | os.PathLike[str]) -> bool:
    """Whether ``path`` is a directory holding an SAE (``cfg.json`` and ``sae_weights.safetensors``)."""
    p = Path(path)
    return p.is_dir() and all((p / f).is_file() for f in SAE_FILES)


def shipped_dir(preset: str, hook: str) -> Path:
    """Where a preset's shipped SAE at ``hook`` lives (whether or not it exists)."""
    return SHIPPED_ROOT / preset / hook


def run_sae_dir(run_dir: str | os.PathLike[str], hook: str) -> Path:
    """Where a run's SAE at ``hook`` lives (``<run>/saes/<hook>``; what ``mechwork sae train RUN`` writes)."""
    return Path(run_dir) / "saes" / hook


def _root(name: str | os.PathLike[str]) -> Path | None:
    """The directory of ``name``'s SAEs: a run (or any directory) has them under ``saes/``, a preset under
    :data:`SHIPPED_ROOT`. An existing directory wins over a preset's name, as :func:`mechwork.limits.resolve`."""
    key = os.fspath(name)
    if key.startswith("~"):
        key = os.path.expanduser(key)
    if Path(key).is_dir():
        return Path(key) / "saes"
    if key and "/" not in key and os.sep not in key and not key.startswith("."):
        return SHIPPED_ROOT / key
    return None


def saes_for(name: str | os.PathLike[str]) -> dict[str, Path]:
    """Hook name -> SAE directory, for a preset (its shipped SAEs) or a run directory (``<run>/saes/*``);
    ``{}`` when it has none (or is neither)."""
    root = _root(name)
    if root is None or not root.is_dir():
        return {}
    return {d.name: d for d in sorted(root.iterdir()) if is_sae_dir(d)}


def load_shipped(name: str, hook: str, *, device: str = "cpu") -> SAE:
    """The SAE shipped with preset ``name`` at ``hook``; an unknown hook is one line naming the nearest."""
    found = saes_for(name) if not Path(name).is_dir() else {}
    if not found:
        have = sorted(p.name for p in SHIPPED_ROOT.iterdir() if p.is_dir() and saes_for(p.name)) \
            if SHIPPED_ROOT.is_dir() else []
        raise ConfigError(f"'name' must be a preset with shipped SAEs: {', '.join(have) or 'none'} (got {name!r})")
    check_hook_name(hook, found, what=f"{name}'s shipped SAEs")
    from mechwork.analysis.saeio import load_sae

    return load_sae(found[hook], device=device)
