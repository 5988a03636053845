"""Ablations: zero, mean and resample ablation of heads, neurons and residual directions;
Fourier-direction ablation of the modular-addition embedding.

:func:`ablation_hooks` turns a description of what to ablate into forward
hooks for ``model.run_with_hooks``; :func:`ablate` runs them and returns the
logits. What replaces an ablated activation:

* ``zero`` -- zeros;
* ``mean`` -- its mean over a reference batch (default: the input batch), at
  each position;
* ``resample`` -- its value on another input of the reference batch (a seeded
  permutation), the causal-scrubbing style of ablation.

Heads are ablated at ``hook_z`` (their output before W_O), neurons at
``mlp.hook_post``; a residual direction ``u`` at a hook point has its
component ``x . u`` replaced (directions are orthonormalised first).

For modular arithmetic, :func:`fourier_ablation` projects the embedding of the
number tokens onto the key-frequency directions of Z_p (plus the constant) --
"keep only the key frequencies" -- or removes those directions; the ``=``
token is left alone. :func:`keep_frequencies` and :func:`remove_frequencies`
are one call each.

Example::

    >>> import mechwork
    >>> from mechwork.analysis.ablation import keep_frequencies
    >>> model = mechwork.load("modadd-113")
    >>> res = keep_frequencies(model, mechwork.preset("modadd-113").task)
    >>> res.accuracy > 0.98
    True
"""

from __future__ import annotations

from collections.abc import Callable, Mapping, Sequence
from dataclasses import dataclass
from typing import TYPE_CHECKING, Any, no_type_check

import torch
from torch import Tensor

from mechwork.analysis.patching import check_model, check_pairs, check_tokens
from mechwork.errors import ConfigError, invalid
from mechwork.results import Result

if TYPE_CHECKING:  # pragma: no cover
    import pandas as pd
    from transformer_lens.model_bridge import TransformerBridge

    from mechwork.tasks import Task

__all__ = ["HOW", "FourierAblation", "ablate", "ablation_hooks", "fourier_ablation", "keep_frequencies",
           "remove_frequencies"]

HOW = ("zero", "mean", "resample")
Hooks = list[tuple[str | Callable[..., Any], Callable[..., Any]]]


def _replacement(act: Tensor, ref: Tensor, how: str, perm: Tensor | None) -> Tensor:
    """What an ablated activation (batch-first) becomes."""
    if how == "zero":
        return torch.zeros_like(act)
    if how == "mean":
        return ref.mean(0, keepdim=True).expand_as(act)
    assert perm is not None
    return ref[perm]


@no_type_check  # validates its own arguments, with one-line messages
def ablation_hooks(
    model: TransformerBridge,
    tokens: Tensor,
    *,
    heads: Sequence[tuple[int, int]] = (),
    neurons: Sequence[tuple[int, int]] = (),
    directions: Mapping[str, Tensor] | None = None,
    how: str = "mean",
    reference: Tensor | None = None,
    seed: int = 0,
) -> Hooks:
    """Forward hooks that ablate the given heads, neurons and residual directions."""
    check_model(model, "ablation")
    if how not in HOW:
        raise invalid("how", f"one of {', '.join(HOW)}", how)
    n_layers, n_heads = int(model.cfg.n_layers), int(model.cfg.n_heads)
    d_mlp = int(model.cfg.d_mlp or 0) if "blocks.0.mlp.hook_post" in model.hook_dict else 0
    check_tokens(model, tokens, "tokens")
    if reference is not None:
        check_tokens(model, reference, "reference")
    heads = check_pairs("heads", heads, ("layer", n_layers), ("head", n_heads))
    neurons = check_pairs("neurons", neurons, ("layer", n_layers), ("neuron", d_mlp))
    directions = dict(directions or {})
    for name in directions:
        if name not in model.hook_dict:
            raise invalid("directions", "keys that are hook names of this model", name)
    ref = tokens if reference is None else reference
    if how == "resample" and ref.shape != tokens.shape:
        raise ConfigError(f"resample ablation needs a reference batch shaped like the input "
                          f"(got {tuple(ref.shape)} and {tuple(tokens.shape)})")
    perm = torch.randperm(ref.shape[0], generator=torch.Generator().manual_seed(seed)) if how == "resample" else None
    names: dict[str, list[int]] = {}
    for la, h in heads:
        names.setdefault(f"blocks.{la}.attn.hook_z", []).append(h)
    for la, n in neurons:
        names.setdefault(f"blocks.{la}.mlp.hook_post", []).append(n)
    wanted = set(names) | set(directions)
    device = next(model.parameters()).device
    with torch.no_grad():
        _, cache = model.run_with_cache(ref.to(device), names_filter=lambda n: n in wanted)
    hooks: Hooks = []
    for name, idx in names.items():
        def hook(act: Tensor, hook: Any = None, name: str = name, idx: list[int] = idx) -> Tensor:
            act = act.clone()
            new = _replacement(act, cache[name], how, perm)
            act[:, :, idx] = new[:, :, idx]
            return act

        hooks.append((name, hook))
    for name, dirs in directions.items():
        width = cache[name].shape[-1]
        try:
            d = torch.as_tensor(dirs, dtype=torch.float32)
        except (TypeError, ValueError, RuntimeError):
            raise invalid("directions", f"for {name!r}, numbers shaped [{width}] or [k, {width}]",
                          type(dirs).__name__) from None
        if d.ndim not in (1, 2) or d.shape[-1] != width or d.numel() == 0:
            raise invalid("directions", f"for {name!r}, a tensor shaped [{width}] or [k, {width}]",
                          f"shape {tuple(d.shape)}")
        if not bool(torch.isfinite(d).all()):
            raise invalid("directions", f"for {name!r}, finite numbers", "a non-finite value")
        u = torch.linalg.qr(d.reshape(-1, width).T)[0].T
        u = u.to(device)

        def dhook(act: Tensor, hook: Any = None, name: str = name, u: Tensor = u) -> Tensor:
            coef = act @ u.T  # [..., k]
            new = _replacement(coef, cache[name] @ u.T, how, perm)
            return act + (new - coef) @ u

        hooks.append((name, dhook))
    return hooks


@no_type_check  # validates its own arguments, with one-line messages
@torch.no_grad()
def ablate(model: TransformerBridge, tokens: Tensor, **kw: Any) -> Tensor:
    """Logits of ``tokens`` with the ablations of :func:`ablation_hooks` (same keyword arguments)."""
    hooks = ablation_hooks(model, tokens, **kw)
    return model.run_with_hooks(tokens.to(next(model.parameters()).device), fwd_hooks=hooks)


# -- Fourier directions of the embedding ----------------------------------------------------
@dataclass(frozen=True)
class FourierAblation(Result):
    """Accuracy and loss on all p^2 pairs with the embedding's key frequencies kept only, or removed."""

    freqs: list[int]
    keep: bool
    accuracy: float
    loss: float
    base_accuracy: float
    base_loss: float
    energy_kept: float  # fraction of W_E's squared norm (number tokens) left after the projection

    def summary(self) -> str:
        what = "kept only" if self.keep else "removed"
        return (f"key frequencies {self.freqs} {what}: accuracy {self.accuracy:.2%} (loss {self.loss:.3g}), "
                f"against {self.base_accuracy:.2%} (loss {self.base_loss:.3g}) unablated; "
                f"{self.energy_kept:.1%} of W_E's squared norm remains")

    def to_frame(self) -> pd.DataFrame:
        import pandas as pd

        return pd.DataFrame({"run": ["unablated", "kept only" if self.keep else "removed"],
                             "accuracy": [self.base_accuracy, self.accuracy], "loss": [self.base_loss, self.loss]})

    def figure(self) -> Any:
        import plotly.graph_objects as go

        df = self.to_frame()
        fig = go.Figure(go.Bar(x=df["run"].tolist(), y=df["accuracy"].tolist()))
        return fig.update_layout(title=self.summary(), xaxis_title="embedding", yaxis_title="accuracy on all pairs",
                                 yaxis_range=[0, 1],
                                 height=360)


@torch.no_grad()
def fourier_ablation(model: TransformerBridge, task: Task, freqs: Sequence[int] | None = None, *,
                     keep: bool = True) -> FourierAblation:
    """Embed the number tokens through the key-frequency directions only (``keep``) or without them."""
    from mechwork.analysis.fourier import check_task, fourier_basis, key_frequencies

    check_model(model, "Fourier ablation")
    mt = check_task(model, task, "fourier_ablation")
    p = mt.p
    freqs = key_frequencies(model, mt).freqs if freqs is None else [int(k) for k in freqs]
    bad = [k for k in freqs if not 1 <= k <= (p - 1) // 2]
    if bad or not freqs:
        raise invalid("freqs", f"frequencies in [1, {(p - 1) // 2}]", bad[0] if bad else "an empty list")
    basis = fourier_basis(p).matrix  # rows: const, cos 1, sin 1, ...
    rows = [0] + [r for k in freqs for r in (2 * k - 1, 2 * k)]
    sel = basis[rows]
    proj = sel.T @ sel  # projection onto const + key frequencies, over Z_p
    if not keep:
        proj = torch.eye(p) - sel[1:].T @ sel[1:]  # remove the key frequencies, keep the constant
    device = next(model.parameters()).device
    _, cache = model.run_with_cache(torch.arange(mt.d_vocab, device=device)[:, None],
                                    names_filter=lambda n: n == "hook_embed")
    table = cache["hook_embed"][:, 0].clone()
    kept = proj.to(table) @ table[:p]
    energy = float(kept.pow(2).sum() / table[:p].pow(2).sum())
    table[:p] = kept

    toks, labels = mt.tokens.to(device), mt.labels.to(device)

    def hook(act: Tensor, hook: Any = None) -> Tensor:
        return table[toks].to(act.dtype)

    base = model(toks)[:, -1]
    logits = model.run_with_hooks(toks, fwd_hooks=[("hook_embed", hook)])[:, -1]

    def acc_loss(lg: Tensor) -> tuple[float, float]:
        return (float((lg.argmax(-1) == labels).float().mean()),
                float(torch.nn.functional.cross_entropy(lg.float(), labels)))

    a, lo = acc_loss(logits)
    ba, bl = acc_loss(base)
    return FourierAblation(list(freqs), keep, a, lo, ba, bl, energy)


def keep_frequencies(model: TransformerBridge, task: Task, freqs: Sequence[int] | None = None) -> FourierAblation:
    """Keep only the key frequencies (and the constant) of the embedding."""
    return fourier_ablation(model, task, freqs, keep=True)


def remove_frequencies(model: TransformerBridge, task: Task, freqs: Sequence[int] | None = None) -> FourierAblation:
    """Remove the key frequencies from the embedding."""
    return fourier_ablation(model, task, freqs, keep=False)
