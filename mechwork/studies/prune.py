"""Pruning masks for lottery-ticket experiments (Frankle & Carbin 2019).

A mask is a dict from parameter name to a boolean tensor of the same shape
(True = kept). :func:`magnitude_masks` keeps the largest-magnitude weights,
ranked globally across the given tensors (or per tensor with
``scope="layer"``), among those an earlier mask kept -- so iterative magnitude
pruning is a loop of ``magnitude_masks(trained, sparsity_round(r), prev=mask)``.
:func:`random_masks` prunes the same fraction at random (the control).
:func:`apply_masks` zeroes pruned weights in place, and :class:`MaskedOptimizerHook`
keeps them at zero through training (both live in the core module :mod:`mechwork.masks`,
which training uses; they are re-exported here).

Sparsity is the fraction *removed*, in ``[0, 1)``.

Example::

    >>> import torch
    >>> from mechwork.studies.prune import magnitude_masks, sparsity_of
    >>> w = {"a": torch.tensor([0.1, -3.0, 0.5, 2.0])}
    >>> m = magnitude_masks(w, 0.5)
    >>> m["a"].tolist(), sparsity_of(m)
    ([False, True, False, True], 0.5)
"""

from __future__ import annotations

from collections.abc import Callable, Mapping

import torch
from torch import Tensor

from mechwork.errors import ConfigError, invalid
from mechwork.masks import MaskedOptimizerHook, Masks, apply_masks, check_masks

__all__ = ["MaskedOptimizerHook", "Masks", "apply_masks", "check_masks", "imp_sparsity",
           "iterative_magnitude_pruning", "magnitude_masks", "random_masks", "sparsity_of"]


def _check_sparsity(sparsity: float) -> float:
    if isinstance(sparsity, bool) or not isinstance(sparsity, (int, float)) or not 0.0 <= sparsity < 1.0:
        raise invalid("sparsity", "a fraction in [0, 1)", sparsity)
    return float(sparsity)


def imp_sparsity(round_: int, rate: float = 0.2) -> float:
    """Sparsity after ``round_`` rounds that each prune ``rate`` of the remaining weights: 1 - (1 - rate)^r."""
    if not isinstance(round_, int) or round_ < 0:
        raise invalid("round_", "a round number >= 0", round_)
    _check_sparsity(rate)
    return 1.0 - (1.0 - rate) ** round_


def sparsity_of(masks: Mapping[str, Tensor]) -> float:
    """Fraction of the masked entries that are pruned."""
    total = sum(m.numel() for m in masks.values())
    kept = sum(int(m.sum()) for m in masks.values())
    return 1.0 - kept / total if total else 0.0


def magnitude_masks(
    params: Mapping[str, Tensor], sparsity: float, *, prev: Mapping[str, Tensor] | None = None,
    scope: str = "global",
) -> Masks:
    """Keep the largest ``1 - sparsity`` of the weights by magnitude (among those ``prev`` kept)."""
    s = _check_sparsity(sparsity)
    if scope not in ("global", "layer"):
        raise invalid("scope", "global or layer", scope)
    if prev is not None:
        check_masks(params, prev)
        missing = set(params) - set(prev)
        if missing:
            raise ConfigError(f"'prev' has no mask for {sorted(missing)}")
        if s < sparsity_of({k: prev[k] for k in params}) - 1e-9:
            raise invalid("sparsity", f"at least the previous mask's {sparsity_of(prev):.4f} (pruning never "
                          "restores weights)", sparsity)
    scores = {k: v.detach().abs().float() for k, v in params.items()}
    if prev is not None:  # weights pruned before rank below every kept one
        scores = {k: v.masked_fill(~prev[k], -1.0) for k, v in scores.items()}

    def keep_top(flat: Tensor, n_keep: int) -> Tensor:
        mask = torch.zeros_like(flat, dtype=torch.bool)
        if n_keep > 0:
            mask[flat.topk(n_keep).indices] = True
        return mask

    if scope == "global":
        flat = torch.cat([v.flatten() for v in scores.values()])
        keep = keep_top(flat, round((1 - s) * flat.numel()))
        out, i = {}, 0
        for k, v in scores.items():
            out[k] = keep[i:i + v.numel()].view_as(v)
            i += v.numel()
        return out
    return {k: keep_top(v.flatten(), round((1 - s) * v.numel())).view_as(v) for k, v in scores.items()}


def random_masks(params: Mapping[str, Tensor], sparsity: float, *, seed: int = 0, scope: str = "layer") -> Masks:
    """Prune ``sparsity`` of each tensor's entries (or of all of them, ``scope="global"``) uniformly at random."""
    s = _check_sparsity(sparsity)
    g = torch.Generator().manual_seed(seed)
    rand = {k: torch.rand(v.shape, generator=g) for k, v in params.items()}
    return magnitude_masks(rand, s, scope=scope)


def iterative_magnitude_pruning(
    train_from: Callable[[Masks | None], Mapping[str, Tensor]],
    rounds: int,
    rate: float | Mapping[str, float] = 0.2,
) -> list[tuple[float, Masks | None, dict[str, Tensor]]]:
    """Frankle & Carbin's loop: train, prune ``rate`` of the remaining weights by magnitude, rewind, retrain.

    ``train_from(masks)`` trains from the (rewound) starting weights under
    ``masks`` (None: dense) and returns the trained values of the prunable
    tensors. A float ``rate`` ranks all of them together; a mapping gives each
    tensor its own rate (e.g. 0.2 for hidden layers, 0.1 for the output layer),
    ranked within the tensor. Returns ``(sparsity, masks, trained)`` per round,
    round 0 being the dense network.
    """
    if not isinstance(rounds, int) or rounds < 0:
        raise invalid("rounds", "a number of pruning rounds >= 0", rounds)
    trained = dict(train_from(None))
    history: list[tuple[float, Masks | None, dict[str, Tensor]]] = [(0.0, None, trained)]
    masks: Masks | None = None
    for r in range(1, rounds + 1):
        if isinstance(rate, Mapping):
            missing = set(trained) - set(rate)
            if missing:
                raise ConfigError(f"'rate' has no entry for {sorted(missing)}")
            masks = {k: magnitude_masks({k: v}, imp_sparsity(r, rate[k]),
                                        prev=None if masks is None else {k: masks[k]}, scope="layer")[k]
                     for k, v in trained.items()}
        else:
            masks = magnitude_masks(trained, imp_sparsity(r, rate), prev=masks)
        trained = dict(train_from(masks))
        history.append((sparsity_of(masks), masks, trained))
    return history
