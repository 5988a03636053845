"""Weight masks kept through training: the core half of pruning (the lottery-ticket study prunes, training keeps).

A mask is a dict from parameter name to a boolean tensor of the same shape
(True = kept). :func:`check_masks` checks masks against the parameters,
:func:`apply_masks` zeroes the pruned weights in place, and
:class:`MaskedOptimizerHook` keeps them at zero through training: gradients
masked before the optimiser step, weights re-zeroed after it, so weight decay
and Adam's moments cannot revive them. :func:`mechwork.training.train` takes
``masks=`` and uses the hook; :mod:`mechwork.studies.prune` makes the masks.

Example::

    >>> import torch
    >>> from mechwork.masks import MaskedOptimizerHook
    >>> w = torch.nn.Parameter(torch.ones(4))
    >>> hook = MaskedOptimizerHook({"w": w}, {"w": torch.tensor([True, False, True, False])})
    >>> hook.after_step()
    >>> w.tolist()
    [1.0, 0.0, 1.0, 0.0]
"""

from __future__ import annotations

from collections.abc import Mapping

import torch
from torch import Tensor

from mechwork.errors import ConfigError

__all__ = ["MaskedOptimizerHook", "Masks", "apply_masks", "check_masks"]

Masks = dict[str, Tensor]  # parameter name -> bool tensor of its shape (True = kept)


def check_masks(params: Mapping[str, Tensor], masks: Mapping[str, Tensor]) -> None:
    """Every mask names a parameter and matches its shape; a clear error otherwise."""
    for name, m in masks.items():
        if name not in params:
            raise ConfigError(f"mask for unknown parameter {name!r}; the parameters are {', '.join(params)}")
        if tuple(m.shape) != tuple(params[name].shape):
            raise ConfigError(f"mask for {name!r} has shape {tuple(m.shape)}, but the parameter has shape "
                              f"{tuple(params[name].shape)}")
        if m.dtype != torch.bool:
            raise ConfigError(f"mask for {name!r} must be a bool tensor (got {m.dtype})")


def apply_masks(params: Mapping[str, Tensor], masks: Mapping[str, Tensor]) -> None:
    """Zero the pruned entries of ``params`` in place."""
    check_masks(params, masks)
    with torch.no_grad():
        for k, m in masks.items():
            params[k].mul_(m.to(params[k].device, params[k].dtype))


class MaskedOptimizerHook:
    """Keeps pruned weights at zero through training: call ``before_step()`` and ``after_step()``.

    The masks are checked and converted to each parameter's device and dtype once, here, not every step."""

    def __init__(self, params: Mapping[str, Tensor], masks: Mapping[str, Tensor]):
        check_masks(params, masks)
        self.params = params
        self.masks = {k: m.to(params[k].device, params[k].dtype) for k, m in masks.items()}

    def before_step(self) -> None:
        for k, m in self.masks.items():
            g = self.params[k].grad
            if g is not None:
                g.mul_(m)

    @torch.no_grad()
    def after_step(self) -> None:
        for k, m in self.masks.items():
            self.params[k].mul_(m)
