"""The argument checks every analysis entry point shares: token batches, (layer, head) pairs, clean/corrupted
pairs, patching sites and groupings, cell coordinates, and metric values.

Each check refuses a bad value in one line naming it and what is valid, before
anything runs. :mod:`mechwork.analysis.patching` re-exports them (their first home).

Example::

    >>> import mechwork, torch
    >>> from mechwork.analysis.checks import check_tokens
    >>> check_tokens(mechwork.load("induction-2l"), torch.tensor([[1, 2, 99]]))  # doctest: +ELLIPSIS
    Traceback (most recent call last):
    mechwork.errors.ConfigError: 'tokens' has token id 99 at [0, 2] (batch 0, position 2); token ids must be in ...
"""

from __future__ import annotations

import operator
from collections.abc import Callable, Sequence
from typing import TYPE_CHECKING, Any, no_type_check

import torch
from torch import Tensor

from mechwork.errors import ConfigError, invalid
from mechwork.hooks import BY, DIMS, DIRECTIONS, SITES, check_eval, hook_name

if TYPE_CHECKING:  # pragma: no cover
    from transformer_lens.model_bridge import TransformerBridge

__all__ = ["check_head_pairs", "check_inputs", "check_pairs", "check_site", "check_tokens", "evaluate_metric",
           "pick_coords", "prepare"]


def check_tokens(model: TransformerBridge, tokens: Tensor, name: str = "tokens") -> None:
    """Refuse a token batch that is not ``[batch, pos]`` integers, is empty, or holds an id outside the vocabulary.

    The one check every analysis entry point that takes tokens calls: a bad id is
    named with its position and the valid range, in one line (an id of -1 would
    otherwise index the last embedding row silently).
    """
    if not isinstance(tokens, Tensor) or tokens.ndim != 2 or tokens.dtype not in (torch.int64, torch.int32):
        got = f"shape {tuple(tokens.shape)}, {tokens.dtype}" if isinstance(tokens, Tensor) else type(tokens).__name__
        raise invalid(name, "a [batch, pos] integer token tensor", got)
    if tokens.shape[0] == 0 or tokens.shape[1] == 0:
        raise invalid(name, "a non-empty [batch, pos] token batch", f"shape {tuple(tokens.shape)}")
    if tokens.device.type == "meta":
        raise invalid(name, "a token tensor with data (on cpu or the model's device)", "a tensor on device 'meta'")
    n_ctx = int(model.cfg.n_ctx)
    if tokens.shape[1] > n_ctx:
        raise invalid(name, f"at most n_ctx = {n_ctx} positions", f"shape {tuple(tokens.shape)}")
    d_vocab = int(model.cfg.d_vocab)
    bad = (tokens < 0) | (tokens >= d_vocab)
    if bool(bad.any()):
        row, pos = (int(i) for i in bad.nonzero()[0])
        raise ConfigError(f"'{name}' has token id {int(tokens[row, pos])} at [{row}, {pos}] (batch {row}, "
                          f"position {pos}); token ids must be in [0, {d_vocab - 1}] (d_vocab {d_vocab})")


def _index(name: str, value: Any, valid: str, shown: Any = None) -> int:
    """An integer (Python, numpy or 0-d tensor), not a bool; else one line."""
    if isinstance(value, bool):
        raise invalid(name, valid, value if shown is None else shown)
    try:
        return operator.index(value)
    except TypeError:
        raise invalid(name, valid, value if shown is None else shown) from None


def check_pairs(name: str, value: Any, first: tuple[str, int], second: tuple[str, int]) -> list[tuple[int, int]]:
    """``value`` as a list of integer pairs inside ``[0, size)`` each (``first``, ``second`` = (label, size)).

    >>> check_pairs("heads", [(0,)], ("layer", 1), ("head", 4))
    Traceback (most recent call last):
    mechwork.errors.ConfigError: 'heads' must be (layer, head) pairs with layer in [0, 1) and head in [0, 4) (got (0,))
    """
    (a, na), (b, nb) = first, second
    valid = f"({a}, {b}) pairs with {a} in [0, {na}) and {b} in [0, {nb})"
    if isinstance(value, (str, bytes, Tensor)) or not isinstance(value, Sequence):
        raise invalid(name, f"a list of {valid}", value)
    out = []
    for pair in value:
        if isinstance(pair, (str, bytes)) or not isinstance(pair, Sequence) or len(pair) != 2:
            raise invalid(name, valid, pair)
        i, j = (_index(name, v, valid, pair) for v in pair)
        if not (0 <= i < na and 0 <= j < nb):
            raise invalid(name, valid, (i, j))
        out.append((i, j))
    return out


def check_head_pairs(model: TransformerBridge, heads: Any, name: str = "heads") -> list[tuple[int, int]]:
    """``heads`` as a list of ``(layer, head)`` integer pairs of this model; anything else is one line."""
    return check_pairs(name, heads, ("layer", int(model.cfg.n_layers)), ("head", int(model.cfg.n_heads)))


def check_inputs(model: TransformerBridge, clean: Tensor, corrupted: Tensor, operation: str = "patching") -> None:
    """Eval mode, non-empty integer token batches of one shape, ids in the vocabulary, that fit the context."""
    check_eval(model, operation)
    for name, t in (("clean", clean), ("corrupted", corrupted)):
        check_tokens(model, t, name)
    if clean.shape != corrupted.shape:
        raise ConfigError(f"'clean' and 'corrupted' must have the same shape (got {tuple(clean.shape)} and "
                          f"{tuple(corrupted.shape)})")
    if clean.shape[1] > model.cfg.n_ctx:
        raise invalid("clean", f"at most n_ctx = {model.cfg.n_ctx} positions", clean.shape[1])


def evaluate_metric(metric: Callable[[Tensor], Any], logits: Tensor, batch: int) -> Tensor:
    """The metric as a 0-d tensor or a ``[batch]`` vector; anything else is a clear error."""
    out = metric(logits)
    if not isinstance(out, Tensor):
        try:
            out = torch.as_tensor(out)
        except (TypeError, ValueError, RuntimeError) as e:
            raise ConfigError(f"'metric' must return a scalar or a [batch] tensor (got {type(out).__name__})") from e
    if out.ndim == 0 or (out.ndim == 1 and out.shape[0] == batch):
        out = out.detach().float().cpu()
        if not bool(torch.isfinite(out).all()):
            bad = float(out.flatten()[~torch.isfinite(out.flatten())][0])
            raise ConfigError(f"'metric' must return finite values (got {bad}); a NaN or inf metric would make every "
                              "patching effect meaningless")
        return out
    raise ConfigError(f"'metric' must return a scalar or a [batch] tensor of length {batch} "
                      f"(got shape {tuple(out.shape)})")


def _sizes(model: TransformerBridge, site: str, n_pos: int) -> dict[str, int]:
    cfg = model.cfg
    kv = getattr(cfg, "n_key_value_heads", None)  # grouped-query attention: hook_k/hook_v hold the kv heads only
    heads = int(kv) if site in ("k", "v") and kv else int(cfg.n_heads)
    return {"layer": int(cfg.n_layers), "pos": n_pos, "head": heads,
            "neuron": int(cfg.d_mlp or 0) if site == "mlp_post" else 0}


def _pick(name: str, chosen: Any, size: int) -> list[int]:  # checked here: any value gets one line
    if chosen is None:
        return list(range(size))
    if isinstance(chosen, (str, bytes)) or not isinstance(chosen, (Sequence, Tensor, range)):
        raise invalid(name, f"a list of indices in [0, {size})", chosen)
    items = [_index(name, i, f"integer indices in [0, {size})")
             for i in (chosen.tolist() if isinstance(chosen, Tensor) else chosen)]
    bad = [i for i in items if not 0 <= i < size]
    if bad or not items:
        raise invalid(name, f"indices in [0, {size})", bad[0] if bad else "an empty list")
    return items


def check_site(model: TransformerBridge, site: str, by: str) -> None:
    if site not in SITES:
        raise invalid("site", f"one of {', '.join(SITES)}", site)
    if hook_name(site, 0) not in model.hook_dict:
        have = [s for s in SITES if hook_name(s, 0) in model.hook_dict]
        raise invalid("site", f"one of the sites this model has: {', '.join(have)}", site)
    kind = SITES[site][1]
    if by not in BY[kind]:
        raise invalid("by", f"one of {', '.join(BY[kind])} for site {site!r}", by)


@no_type_check  # validates its own arguments, with one-line messages
def pick_coords(
    model: TransformerBridge, site: str, by: str, n_pos: int, *, layers: Sequence[int] | None = None,
    positions: Sequence[int] | None = None, heads: Sequence[int] | None = None,
    neurons: Sequence[int] | None = None,
) -> dict[str, list[int]]:
    """The indices along each dimension of ``by`` (all, or the chosen ones, checked against the model)."""
    dims = DIMS[by]
    sizes = _sizes(model, site, n_pos)
    chosen = {"layer": layers, "pos": positions, "head": heads, "neuron": neurons}
    params = {"layer": "layers", "pos": "positions", "head": "heads", "neuron": "neurons"}
    for d, sel in chosen.items():
        if sel is not None and d not in dims:
            raise ConfigError(f"'{params[d]}' does not apply to by={by!r} (its dimensions are {', '.join(dims)})")
    return {d: _pick(params[d], chosen[d], sizes[d]) for d in dims}


@no_type_check  # validates its own arguments, with one-line messages
def prepare(
    model: TransformerBridge, clean: Tensor, corrupted: Tensor, site: str, by: str, direction: str, operation: str,
    **chosen: Sequence[int] | None,
) -> tuple[tuple[str, ...], dict[str, list[int]]]:
    """Check every argument of a patching call; return the result's dims and coordinates."""
    check_inputs(model, clean, corrupted, operation)
    check_site(model, site, by)
    if direction not in DIRECTIONS:
        raise invalid("direction", " or ".join(DIRECTIONS), direction)
    return DIMS[by], pick_coords(model, site, by, clean.shape[1], **chosen)
