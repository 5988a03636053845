"""Ablations: zero, mean and resample ablation of heads, neurons and residual directions;
Fourier-direction ablation of the modular-addition embedding.

:func:`ablation_hooks` turns a description of what to ablate into forward
hooks for ``model.run_with_hooks``; :func:`ablate` runs them and returns an
:class:`Ablation` (the logits, and what was ablated how). What replaces an
ablated activation:

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

from collections.abc import Mapping, Sequence
from dataclasses import dataclass
from typing import TYPE_CHECKING, Any, no_type_check

import torch
from jaxtyping import Float
from torch import Tensor

from mechwork.analysis.checks import check_pairs, check_tokens
from mechwork.engine import loss_accuracy
from mechwork.errors import ConfigError, invalid
from mechwork.hooks import Hooks, check_eval, hook_name
from mechwork.results import Result

if TYPE_CHECKING:  # pragma: no cover
    import pandas as pd
    from transformer_lens.model_bridge import TransformerBridge

__all__ = ["HOW", "Ablation", "FourierAblation", "ablate", "ablation_hooks", "fourier_ablation", "keep_frequencies",
           "remove_frequencies"]

HOW = ("zero", "mean", "resample")


def _replacement(act: Tensor, ref: Tensor, how: str, perm: Tensor | None) -> Tensor:
    """What an ablated activation (batch-first) becomes."""
    if how == "zero":
        return torch.zeros_like(act)
    if how == "mean":
        return ref.mean(0, keepdim=True).expand_as(act)
    assert perm is not None
    return ref[perm]


def _reference_acts(model: TransformerBridge, ref: Tensor, wanted: set[str], given: Any) -> Mapping[str, Tensor]:
    """The reference batch's activations at the ``wanted`` hooks: ``given`` (checked; any mapping of hook name to
    activation, such as an ``ActivationCache``), else one cached run."""
    if given is not None:
        missing = sorted(wanted - set(given))
        if missing:
            raise invalid("reference_cache", "the reference batch's activations at every hook ablated", missing[0])
        return {name: given[name] for name in wanted}
    with torch.no_grad():
        _, cache = model.run_with_cache(ref, names_filter=lambda n: n in wanted)
    return {name: cache[name] for name in wanted}


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
    reference_cache: Mapping[str, Tensor] | None = None,
) -> Hooks:
    """Forward hooks that ablate the given heads, neurons and residual directions.

    ``reference_cache``: the activations of the reference batch (``reference``, else ``tokens``) at the hooks
    ablated, when the caller has them from its own run (a mapping from hook name to activation, such as
    ``run_with_cache``'s cache); else they are computed here with one more forward pass.
    """
    check_eval(model, "ablation")
    if how not in HOW:
        raise invalid("how", f"one of {', '.join(HOW)}", how)
    n_layers, n_heads = int(model.cfg.n_layers), int(model.cfg.n_heads)
    d_mlp = int(model.cfg.d_mlp or 0) if hook_name("mlp_post", 0) in model.hook_dict else 0
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
        names.setdefault(hook_name("z", la), []).append(h)
    for la, n in neurons:
        names.setdefault(hook_name("mlp_post", la), []).append(n)
    wanted = set(names) | set(directions)
    device = next(model.parameters()).device
    cache = _reference_acts(model, ref.to(device), wanted, reference_cache)
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


@dataclass(frozen=True)
class Ablation(Result):
    """The logits of an ablated run, and what was ablated how.

    ``acc(ablate(model, tokens, heads=[(0, 0)]).logits)`` scores it with any metric
    of :mod:`mechwork.analysis.metrics`.
    """

    logits: Float[Tensor, "batch pos d_vocab_out"]
    how: str  # zero, mean or resample
    heads: list[tuple[int, int]]  # (layer, head)
    neurons: list[tuple[int, int]]  # (layer, neuron)
    directions: list[str]  # hook names whose given directions were ablated

    def _parts(self) -> list[tuple[str, str]]:
        return ([("head", f"L{la}H{h}") for la, h in self.heads] + [("neuron", f"L{la}N{n}") for la, n in self.neurons]
                + [("direction", name) for name in self.directions])

    def summary(self) -> str:
        parts = ", ".join(label for _, label in self._parts()) or "nothing"
        b, n_pos = self.logits.shape[:2]
        return f"{self.how}-ablated {parts}, on {b} input(s) of {n_pos} tokens"

    def to_frame(self) -> pd.DataFrame:
        """One row per ablated head, neuron or residual direction."""
        import pandas as pd

        parts = self._parts()
        return pd.DataFrame({"kind": [k for k, _ in parts], "what": [w for _, w in parts],
                             "how": [self.how] * len(parts)})


@no_type_check  # validates its own arguments, with one-line messages
@torch.no_grad()
def ablate(model: TransformerBridge, tokens: Tensor, **kw: Any) -> Ablation:
    """``tokens`` run with the ablations of :func:`ablation_hooks` (same keyword arguments)."""
    hooks = ablation_hooks(model, tokens, **kw)
    logits = model.run_with_hooks(tokens.to(next(model.parameters()).device), fwd_hooks=hooks)
    pairs = {k: [(int(a), int(b)) for a, b in kw.get(k, ())] for k in ("heads", "neurons")}
    return Ablation(logits, kw.get("how", "mean"), pairs["heads"], pairs["neurons"], list(kw.get("directions") or {}))


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
def fourier_ablation(model: TransformerBridge, task: object, freqs: Sequence[int] | None = None, *,
                     keep: bool = True, base_logits: Tensor | None = None) -> FourierAblation:
    """Embed the number tokens through the key-frequency directions only (``keep``) or without them.

    ``base_logits``: the unablated last-position logits of every pair (``task.tokens`` order), when the caller
    has them from its own pass over the grid (:func:`mechwork.analysis.fourier.grid_pass`); else that pass is run.
    """
    from mechwork.analysis.fourier import check_task, fourier_basis, key_frequencies

    check_eval(model, "Fourier ablation")
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

    base = model(toks)[:, -1] if base_logits is None else base_logits.to(device)
    if base.shape != (len(toks), mt.d_vocab_out):
        raise invalid("base_logits", f"the last-position logits of every pair, [{len(toks)}, {mt.d_vocab_out}]",
                      f"shape {tuple(base.shape)}")
    logits = model.run_with_hooks(toks, fwd_hooks=[("hook_embed", hook)])[:, -1]

    def acc_loss(lg: Tensor) -> tuple[float, float]:
        loss, acc = loss_accuracy(lg.float(), labels)
        return float(acc), float(loss)

    a, lo = acc_loss(logits)
    ba, bl = acc_loss(base)
    return FourierAblation(list(freqs), keep, a, lo, ba, bl, energy)


def keep_frequencies(
    model: TransformerBridge, task: object, freqs: Sequence[int] | None = None, *, base_logits: Tensor | None = None
) -> FourierAblation:
    """Keep only the key frequencies (and the constant) of the embedding."""
    return fourier_ablation(model, task, freqs, keep=True, base_logits=base_logits)


def remove_frequencies(
    model: TransformerBridge, task: object, freqs: Sequence[int] | None = None, *, base_logits: Tensor | None = None
) -> FourierAblation:
    """Remove the key frequencies from the embedding."""
    return fourier_ablation(model, task, freqs, keep=False, base_logits=base_logits)
