"""Activation patching of SAE latents: site ``sae``, by latent or by latent and position.

``patch(model, clean, corrupted, metric, site="sae", by="latent", sae=sae)`` (or :func:`patch_latents` directly)
splices ``sae`` in at its hook (:func:`mechwork.analysis.saehook.spliced`, with the error term by default, so
the unpatched runs are the model's own), and patches one *cell* at a time: a latent at every position
(``by="latent"``), or a latent at one position (``by="latent_pos"``), from the source run into the base run.
As in :func:`mechwork.analysis.patching.patch`, each cell gets its own copy of the base batch, the copies are
stacked along the batch axis, and one forward pass evaluates a chunk of cells (sized by ``memory_mb``);
``denoising`` runs the corrupted input with clean latents, ``noising`` the clean input with corrupted ones.
With ``error=True`` a patched latent changes the hook's output by its decoder row times the change; with
``error=False`` both runs are the reconstruction's, and so are ``clean_value`` and ``corrupted_value``.

``method="attribution"`` is the gradient approximation (one forward and one backward pass of the base run):
the metric moves by about ``(source - base) . d metric / d latent``, summed over the cell, as
:func:`mechwork.analysis.attribution.attribute` does for the other sites.

Example::

    >>> import mechwork, torch
    >>> from mechwork.analysis.metrics import logit_diff
    >>> from mechwork.analysis.patching import patch
    >>> from mechwork.analysis.sae import SAE, SAEConfig
    >>> model = mechwork.load("modadd-113")
    >>> toks = mechwork.preset("modadd-113").task.tokens
    >>> clean, corrupted = toks[[5, 300]], toks[[6, 301]]
    >>> metric = logit_diff((clean[:, 0] + clean[:, 1]) % 113, (corrupted[:, 0] + corrupted[:, 1]) % 113)
    >>> sae = SAE(SAEConfig(d_in=512, d_sae=64, hook_name="blocks.0.mlp.hook_post"))
    >>> res = patch(model, clean, corrupted, metric, site="sae", by="latent_pos", sae=sae, latents=[0, 1, 2])
    >>> tuple(res.values.shape), res.dims, res.label((2, 1))
    ((3, 3), ('latent', 'pos'), 'latent 2 pos 1')
"""

from __future__ import annotations

from collections.abc import Callable, Sequence
from typing import Any, no_type_check

import torch
from torch import Tensor

from mechwork.analysis.checks import check_inputs, evaluate_metric
from mechwork.analysis.patchresult import PatchResult
from mechwork.analysis.sae import SAE
from mechwork.analysis.saehook import _check_latents, copies_per_pass, latents_hook, set_latents, spliced
from mechwork.errors import ConfigError, invalid
from mechwork.hooks import BY, DIMS, DIRECTIONS, METHODS

__all__ = ["patch_latents", "sae_site_args"]


def sae_site_args(site: str, by: str, sae: Any, latents: Any, args: dict[str, Any]) -> dict[str, Any]:
    """:func:`patch_latents`'s keywords from ``patch(...)``'s arguments (``args``: the others, by name), checked."""
    if site != "sae":
        raise ConfigError(f"'sae' and 'latents' apply to site='sae' only (got site={site!r})")
    if sae is None:
        raise invalid("sae", "the SAE whose latents site 'sae' patches (patch(..., site='sae', sae=sae))", None)
    for other in ("layers", "heads", "neurons"):
        if args.get(other) is not None:
            raise ConfigError(f"'{other}' does not apply to site 'sae' (its dimensions are latent and pos)")
    return {"sae": sae, "by": by, "direction": args["direction"], "latents": latents, "positions": args["positions"],
            "memory_mb": args["memory_mb"]}


def _positions(positions: Any, by: str, n_pos: int) -> list[int]:
    if by == "latent":
        if positions is not None:
            raise ConfigError("'positions' does not apply to by='latent' (its dimension is latent)")
        return []
    if positions is None:
        return list(range(n_pos))
    if isinstance(positions, Tensor):
        positions = positions.tolist()
    if isinstance(positions, (str, bytes)) or not isinstance(positions, Sequence) or not positions:
        raise invalid("positions", f"a non-empty list of positions in [0, {n_pos})", positions)
    for p in positions:
        if isinstance(p, bool) or not isinstance(p, int) or not 0 <= p < n_pos:
            raise invalid("positions", f"positions in [0, {n_pos})", p)
    return list(positions)


@no_type_check  # validates its own arguments, with one-line messages
@torch.no_grad()
def patch_latents(
    model: Any,
    clean: Tensor,
    corrupted: Tensor,
    metric: Callable[[Tensor], Any],
    *,
    sae: SAE,
    by: str = "latent",
    direction: str = "denoising",
    latents: int | Sequence[int] | None = None,
    positions: Sequence[int] | None = None,
    method: str = "exact",
    error: bool = True,
    memory_mb: float = 512.0,
) -> PatchResult:
    """Patch every latent (or ``latents``) of ``sae``, at all positions or at each of ``positions``; see the module."""
    check_inputs(model, clean, corrupted, "patching SAE latents")
    if not isinstance(sae, SAE):
        raise invalid("sae", "an SAE (mechwork.analysis.sae.SAE) for site 'sae'", type(sae).__name__)
    if by not in BY["latent"]:
        raise invalid("by", f"one of {', '.join(BY['latent'])} for site 'sae'", by)
    if direction not in DIRECTIONS:
        raise invalid("direction", " or ".join(DIRECTIONS), direction)
    if method not in METHODS:
        raise invalid("method", " or ".join(METHODS), method)
    lat = _check_latents(latents, sae.d_sae)
    pos = _positions(positions, by, clean.shape[1])
    coords = {"latent": lat, "pos": pos} if by == "latent_pos" else {"latent": lat}
    name, b = latents_hook(sae), clean.shape[0]
    with spliced(model, sae, error=error):
        device = next(model.parameters()).device
        clean, corrupted = clean.to(device), corrupted.to(device)
        base, source = (corrupted, clean) if direction == "denoising" else (clean, corrupted)
        src_logits, cache = model.run_with_cache(source, names_filter=[name])
        src = cache[name]
        if method == "exact":
            base_logits = model(base)
            values = _exact(model, base, name, src, metric, lat, pos, b, sae.d_sae, memory_mb)
        else:
            base_logits, values = _attribution(model, base, name, src, metric, lat, pos, b)
    src_v, base_v = evaluate_metric(metric, src_logits, b), evaluate_metric(metric, base_logits, b)
    clean_v, corrupt_v = (src_v, base_v) if direction == "denoising" else (base_v, src_v)
    shape = [len(v) for v in coords.values()]
    per = values.reshape(*shape, b) if values.ndim == 2 else None
    vals = per.mean(-1) if per is not None else values.reshape(shape)
    return PatchResult(vals, DIMS[by], coords, "sae", by, direction, float(clean_v.mean()), float(corrupt_v.mean()),
                       per, method="activation patching" if method == "exact" else "attribution patching",
                       engine="hooks")


def _exact(model: Any, base: Tensor, name: str, src: Tensor, metric: Callable[[Tensor], Any], lat: list[int],
           pos: list[int], b: int, d_sae: int, memory_mb: float) -> Tensor:
    """One copy of ``base`` per cell, a chunk of copies per forward pass; the metric per cell (``[cells(, b)]``)."""
    cells = [(j, p) for j in lat for p in pos] if pos else [(j, -1) for j in lat]
    n_pos = base.shape[1]
    cap = copies_per_pass(model, b * n_pos, d_sae, memory_mb)
    out: list[Tensor] = []
    for start in range(0, len(cells), cap):
        part = cells[start:start + cap]
        masks = torch.zeros(len(part), n_pos if pos else 1, d_sae, dtype=torch.bool, device=base.device)
        for c, (j, p) in enumerate(part):
            masks[c, p if pos else 0, j] = True

        def hook(acts: Tensor, hook: Any = None, masks: Tensor = masks) -> Tensor:
            return set_latents(acts, masks, src)

        logits = model.run_with_hooks(base.repeat(len(part), 1), fwd_hooks=[(name, hook)])
        out += [evaluate_metric(metric, logits[c * b:(c + 1) * b], b) for c in range(len(part))]
    return torch.stack(out)


def _attribution(model: Any, base: Tensor, name: str, src: Tensor, metric: Callable[[Tensor], Any],
                 lat: list[int], pos: list[int], b: int) -> tuple[Tensor, Tensor]:
    """The base run's logits and, per cell, its metric plus ``(src - base) . grad`` (one forward + one backward)."""
    kept: list[Tensor] = []

    def keep(acts: Tensor, hook: Any = None) -> Tensor:
        kept.append(acts)
        return acts

    with torch.enable_grad():
        logits = model.run_with_hooks(base, fwd_hooks=[(name, keep)])
        out = metric(logits)
        value = evaluate_metric(lambda _: out.detach() if isinstance(out, Tensor) else out, logits, b)
        out_t = out if isinstance(out, Tensor) else torch.as_tensor(out)
        if not out_t.requires_grad or not kept or not kept[0].requires_grad:
            raise ConfigError("'metric' must be differentiable for attribution patching (its result has no grad)")
        (grad,) = torch.autograd.grad(out_t.float().mean(), kept[0])
    contrib = ((src - kept[0].detach()) * grad).float().cpu()  # [b, pos, ..., d_sae]
    contrib = contrib.reshape(contrib.shape[0], contrib.shape[1], -1, contrib.shape[-1]).sum(dim=(0, 2))  # [pos, d]
    delta = contrib[:, lat].sum(0) if not pos else contrib[pos][:, lat].T.reshape(-1)
    return logits.detach(), float(value.mean()) + delta
