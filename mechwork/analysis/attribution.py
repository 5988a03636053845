"""Attribution patching and path patching: the two patching variants that are not one cell per copy.

* :func:`attribute` -- the linear approximation of :func:`mechwork.analysis.patching.patch`
  for every cell of a site at once, from one forward and one backward pass
  (Nanda 2023; Syed et al. 2023): the metric changes by about
  ``(source - base) . d metric / d activation``, summed over the cell. It
  returns the same labelled :class:`~mechwork.analysis.patching.PatchResult`, so it can
  be compared cell for cell with exact patching.
* :func:`path_patch` and :func:`path_patches` -- path patching, in
  :mod:`mechwork.analysis.pathpatch` (importable from here too).

Example::

    >>> import mechwork
    >>> from mechwork.analysis.attention import repeated_tokens
    >>> from mechwork.analysis.attribution import attribute
    >>> model = mechwork.load("induction-2l")
    >>> clean = repeated_tokens(64, 20, batch=4)
    >>> corrupted = repeated_tokens(64, 20, batch=4, seed=1)
    >>> def metric(logits):
    ...     return logits[:, 20:-1].log_softmax(-1).gather(-1, clean[:, 21:, None]).mean()
    >>> res = attribute(model, clean, corrupted, metric, site="z", by="head")
    >>> tuple(res.values.shape)
    (2, 4)
"""

from __future__ import annotations

from collections.abc import Callable, Sequence
from typing import TYPE_CHECKING, Any, no_type_check

import torch
from torch import Tensor

from mechwork.analysis.checks import evaluate_metric, prepare
from mechwork.analysis.patching import PatchResult
from mechwork.analysis.pathpatch import (
    DirectPathSweep,
    PathPatchResult,
    base_hooks,
    direct_path_sweep,
    path_patch,
    path_patches,
)
from mechwork.errors import ConfigError
from mechwork.hooks import SITES, Hooks, hook_name

if TYPE_CHECKING:  # pragma: no cover
    from transformer_lens.model_bridge import TransformerBridge

__all__ = ["DirectPathSweep", "PathPatchResult", "attribute", "base_hooks", "direct_path_sweep", "path_patch",
           "path_patches"]


def _reduce(contrib: Tensor, kind: str, by: str) -> Tensor:
    """Sum a ``(source - base) * grad`` tensor down to one number per cell, in :data:`DIMS` order (minus layer)."""
    if kind == "pos":  # [b, pos, d]
        return contrib.sum() if by == "layer" else contrib.sum(dim=(0, 2))
    if kind == "head":  # [b, pos, head, d_head]
        return contrib.sum(dim=(0, 1, 3)) if by == "head" else contrib.sum(dim=(0, 3))
    if kind == "pattern":  # [b, head, dest, src]
        return contrib.sum(dim=(0, 2, 3)) if by == "head" else contrib.sum(dim=(0, 3)).T
    # neuron: [b, pos, neuron]
    if by == "neuron":
        return contrib.sum(dim=(0, 1))
    return contrib.sum() if by == "layer" else contrib.sum(dim=(0, 2))


@no_type_check  # validates its own arguments, with one-line messages
def attribute(
    model: TransformerBridge,
    clean: Tensor,
    corrupted: Tensor,
    metric: Callable[[Tensor], Any],
    *,
    site: str = "resid_pre",
    by: str = "layer_pos",
    direction: str = "denoising",
    layers: Sequence[int] | None = None,
    positions: Sequence[int] | None = None,
    heads: Sequence[int] | None = None,
    neurons: Sequence[int] | None = None,
    sae: Any = None,
    latents: Sequence[int] | None = None,
) -> PatchResult:
    """Attribution patching: the first-order estimate of :func:`~mechwork.analysis.patching.patch` for every cell.

    ``values`` are the estimated patched metric (the base run's value plus the
    estimated change), directly comparable with ``patch(...).values``. Site ``sae`` estimates patching
    ``sae``'s latents (:func:`mechwork.analysis.saepatch.patch_latents` with ``method="attribution"``).
    """
    if site == "sae" or sae is not None or latents is not None:
        from mechwork.analysis.saepatch import patch_latents, sae_site_args

        by = "latent" if by == "layer_pos" and site == "sae" else by
        kw = sae_site_args(site, by, sae, latents, {**locals(), "memory_mb": 512.0})
        return patch_latents(model, clean, corrupted, metric, method="attribution", **kw)
    if by == "head_dest_src" and site == "pattern":  # other sites: prepare() names the valid by
        raise ConfigError("attribution patching has no by='head_dest_src' (one cell per attention-pattern entry): "
                          "use exact patching (patch / --method exact), or by head or head_pos")
    dims, coords = prepare(model, clean, corrupted, site, by, direction, "attribution patching",
                           layers=layers, positions=positions, heads=heads, neurons=neurons)
    device = next(model.parameters()).device
    clean, corrupted = clean.to(device), corrupted.to(device)
    base, source = (corrupted, clean) if direction == "denoising" else (clean, corrupted)
    names = {layer: hook_name(site, layer) for layer in coords["layer"]}
    with torch.no_grad():
        src_logits, cache = model.run_with_cache(source, names_filter=lambda n: n in names.values())
    acts: dict[int, Tensor] = {}
    grads: dict[int, Tensor] = {}

    def keep(layer: int) -> Callable[..., Tensor]:
        def hook(act: Tensor, hook: Any = None) -> Tensor:
            acts[layer] = act.detach()
            if act.requires_grad:
                act.register_hook(lambda g: grads.__setitem__(layer, g.detach()))
            return act

        return hook

    b = clean.shape[0]
    with torch.enable_grad():
        hooks: Hooks = [(names[layer], keep(layer)) for layer in coords["layer"]]
        logits = model.run_with_hooks(base, fwd_hooks=hooks)
        out = metric(logits)
        value = evaluate_metric(lambda _: out.detach() if isinstance(out, Tensor) else out, logits, b)
        out_t = out if isinstance(out, Tensor) else torch.as_tensor(out)
        if not out_t.requires_grad:
            raise ConfigError("'metric' must be differentiable for attribution patching (its result has no grad)")
        out_t.float().mean().backward()
    base_v = float(value.mean())
    src_v = float(evaluate_metric(metric, src_logits, b).mean())
    kind = SITES[site][1]
    rows = []
    for layer in coords["layer"]:
        if layer not in grads:  # pragma: no cover - every hooked site is on the gradient path
            raise ConfigError(f"no gradient reached {names[layer]}")
        red = _reduce((cache[names[layer]] - acts[layer]) * grads[layer], kind, by).float().cpu()
        for d in dims[1:]:
            red = red.index_select(dims[1:].index(d), torch.tensor(coords[d])) if red.ndim else red
        rows.append(red)
    delta = torch.stack(rows).reshape([len(coords[d]) for d in dims])
    clean_v, corrupt_v = (src_v, base_v) if direction == "denoising" else (base_v, src_v)
    return PatchResult(base_v + delta, dims, coords, site, by, direction, clean_v, corrupt_v,
                       method="attribution patching")
