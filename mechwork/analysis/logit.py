"""Direct logit attribution: how much each component writes, straight through the unembedding, to one logit.

The final residual stream is a sum of what every component wrote into it
(:func:`residual_decomposition`: the embeddings, each attention layer or head,
each MLP). The final norm is linear once its scale is fixed, so with the scale
the model actually used (cached at ``ln_final.hook_scale``) each piece's share of
the logit of ``answer`` (or of ``answer - wrong``) is a dot product:
``center(x) / scale . (w_norm * W_U[:, answer])``, the norm's weight folded
into the unembedding direction exactly as TransformerLens's ``fold_ln`` would
fold it into ``W_U``. So :func:`direct_logit_attribution` works on a raw bridge
(mechwork's own models, a ``save_pretrained`` directory) and gives what
TransformerLens's ``direct_logit_attribution`` gives on a folded
(``enable_compatibility_mode``) copy of the same model, without changing the
model. A last row, ``bias``, holds what no component writes (the final norm's
bias through ``W_U``, and ``b_U``), so the rows sum to the model's own logit
(or logit difference).

Units (the row labels are TransformerLens's):

* ``component``: ``embed``, ``pos_embed`` (models with a learned positional
  embedding), ``{l}_attn_out`` and ``{l}_mlp_out`` per layer, then ``bias``;
* ``head``: ``embed``, ``pos_embed``, per layer each head ``L{l}H{h}``, the
  attention layer's constant ``{l}_attn_bias`` and ``{l}_mlp_out``, then
  ``bias``. As TransformerLens folds them (``fold_ln``, ``fold_value_biases``),
  a head's value bias (with the norm's bias read through ``W_V``) times ``W_O``
  is no part of the head, whose attention weights sum to one, but of the
  layer's constant, with ``b_O``;
* ``neuron`` (one MLP ``layer``): each neuron ``L{l}N{n}`` (its activation
  times its ``W_out`` row), ``{l}_mlp_bias``, ``rest`` (everything else in the
  residual stream), then ``bias``.

The logit lens (:func:`~mechwork.analysis.lens.logit_lens`) lives in
:mod:`mechwork.analysis.lens`.

Example::

    >>> import mechwork, torch
    >>> from mechwork.analysis.logit import direct_logit_attribution
    >>> model = mechwork.load("induction-2l", device="cpu")
    >>> tokens = torch.tensor([[5, 9, 3, 5]])
    >>> dla = direct_logit_attribution(model, tokens, answer=9, unit="head")
    >>> dla.labels[:3], len(dla.labels)
    (('embed', 'pos_embed', 'L0H0'), 13)
    >>> bool(torch.allclose(dla.values.sum(0), dla.logit, atol=1e-4))
    True
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass
from typing import TYPE_CHECKING, Any, SupportsIndex

import torch
from jaxtyping import Float, Int
from torch import Tensor

from mechwork.analysis.lens import as_tokens, check_exact, check_readout, position, token_ids
from mechwork.errors import ConfigError, invalid
from mechwork.hooks import check_eval
from mechwork.prompts import check_model, has_tokenizer
from mechwork.results import Result

if TYPE_CHECKING:  # pragma: no cover
    import pandas as pd
    from transformer_lens.ActivationCache import ActivationCache
    from transformer_lens.model_bridge import TransformerBridge

__all__ = ["UNITS", "LogitAttribution", "ResidualDecomposition", "direct_logit_attribution", "residual_decomposition"]

UNITS = ("component", "head", "neuron")
_NORMS = (None, "LN", "LNPre", "RMS", "RMSPre")


# -- the folded unembedding direction --------------------------------------------------------------------------
def _final_norm(model: TransformerBridge) -> tuple[str | None, Tensor | None, Tensor | None]:
    """The final norm's type, weight (None: identity) and bias (None: zero); an unknown type is refused."""
    norm = getattr(model.cfg, "normalization_type", None)
    if norm not in _NORMS:
        raise ConfigError(f"direct logit attribution does not know the normalization {norm!r} of this model "
                          f"(known: {', '.join(str(n) for n in _NORMS)})")
    ln = getattr(model, "ln_final", None)
    weight = getattr(ln, "weight", None) if norm in ("LN", "RMS") else None
    bias = getattr(ln, "bias", None) if norm == "LN" else None
    if isinstance(weight, Tensor) and getattr(model.cfg, "rmsnorm_uses_offset", False):
        weight = weight + 1.0
    return norm, weight if isinstance(weight, Tensor) else None, bias if isinstance(bias, Tensor) else None


def _scale(model: TransformerBridge) -> float:
    """The plain scale of the model's post-unembedding step (Granite's ``1 / logits_scaling``, Cohere's
    ``logit_scale``; 1.0 for most models): every row, and the bias, is multiplied by it."""
    from mechwork.models import logit_scale

    scale = logit_scale(model)
    assert scale is not None  # check_readout refused a step that is not a scale
    return scale


def _centres(model: TransformerBridge) -> bool:
    """Whether the final norm subtracts the mean (as TransformerLens's ``apply_ln_to_stack`` decides)."""
    norm = getattr(model.cfg, "normalization_type", None)
    return norm in ("LN", "LNPre") and not getattr(model.cfg, "final_rms", False)


@torch.no_grad()
def _directions(
    model: TransformerBridge, cache: ActivationCache, pos: int, answer: Tensor, wrong: Tensor | None
) -> tuple[Float[Tensor, "batch d_model"], Float[Tensor, " batch"]]:
    """Per prompt, the residual direction whose dot product with a component is its share of the logit
    (norm weight folded in, centred where the norm centres, over the cached scale), and the bias row."""
    norm, weight, bias = _final_norm(model)
    W_U = model.W_U.detach()
    b_U = getattr(model, "b_U", None)
    cols = W_U[:, answer.to(W_U.device)].T  # batch d_model
    b = b_U[answer.to(W_U.device)] if isinstance(b_U, Tensor) else torch.zeros(len(answer), device=W_U.device)
    if wrong is not None:
        cols = cols - W_U[:, wrong.to(W_U.device)].T
        if isinstance(b_U, Tensor):
            b = b - b_U[wrong.to(W_U.device)]
    const = b.detach().clone()
    if bias is not None:
        const = const + cols @ bias.detach()
    if weight is not None:
        cols = cols * weight.detach()
    if _centres(model):
        cols = cols - cols.mean(-1, keepdim=True)
    if norm is not None:
        cols = cols / cache["ln_final.hook_scale"][:, pos]  # batch 1
    return cols, const


# -- the residual stream, split ---------------------------------------------------------------------------------
def _embeds(cache: ActivationCache, pos: int) -> tuple[list[Tensor], list[str]]:
    vecs, labels = [], []
    for name, label in (("hook_embed", "embed"), ("hook_pos_embed", "pos_embed")):
        if name in cache.cache_dict:
            vecs.append(cache[name][:, pos])
            labels.append(label)
    return vecs, labels


def _stack(
    model: TransformerBridge, cache: ActivationCache, pos: int, unit: str, layer: int | None
) -> tuple[Float[Tensor, "component batch d_model"], list[str]]:
    """The final residual stream at ``pos`` split into ``unit`` rows (they sum to it)."""
    n_layers, n_heads = int(model.cfg.n_layers), int(model.cfg.n_heads)
    final = cache[f"blocks.{n_layers - 1}.hook_resid_post"][:, pos]
    if unit == "component":
        stack, labels = cache.decompose_resid(pos_slice=pos, return_labels=True)
        return stack, list(labels)
    if unit == "neuron":
        assert layer is not None
        neurons = cache.get_neuron_results(layer, pos_slice=pos)  # batch d_mlp d_model
        mlp = cache[f"blocks.{layer}.hook_mlp_out"][:, pos]
        rows = [*neurons.unbind(1), mlp - neurons.sum(1), final - mlp]
        labels = [f"L{layer}N{n}" for n in range(neurons.shape[1])] + [f"{layer}_mlp_bias", "rest"]
        return torch.stack(rows), labels
    vecs, labels = _embeds(cache, pos)
    heads: Tensor = cache.stack_head_results(pos_slice=pos)  # type: ignore[assignment]  # layer*head batch d_model
    for la in range(n_layers):
        mine = heads[la * n_heads:(la + 1) * n_heads] - _value_bias(model, la)[:, None]
        vecs += [*mine.unbind(0), cache[f"blocks.{la}.hook_attn_out"][:, pos] - mine.sum(0)]
        labels += [f"L{la}H{h}" for h in range(n_heads)] + [f"{la}_attn_bias"]
        if not model.cfg.attn_only:
            vecs.append(cache[f"blocks.{la}.hook_mlp_out"][:, pos])
            labels.append(f"{la}_mlp_out")
    return torch.stack(vecs), labels


@torch.no_grad()
def _value_bias(model: TransformerBridge, layer: int) -> Float[Tensor, "head d_model"]:
    """What each head of ``layer`` writes whatever it attends to: its value bias (with the norm's bias read
    through ``W_V``) times ``W_O``, since attention weights sum to one. Folding the norm and the value biases
    (TransformerLens's ``fold_ln`` and ``fold_value_biases``) moves it into the layer's output bias; so do we."""
    attn, n_heads = model.blocks[layer].attn, int(model.cfg.n_heads)
    W_V, W_O, b_V = attn.W_V.detach(), attn.W_O.detach(), getattr(attn, "b_V", None)
    const = torch.zeros(W_V.shape[0], W_V.shape[-1], dtype=W_V.dtype, device=W_V.device)  # head d_head
    if isinstance(b_V, Tensor):
        const = const + b_V.detach()
    ln_bias = getattr(getattr(model.blocks[layer], "ln1", None), "bias", None)
    if model.cfg.normalization_type == "LN" and isinstance(ln_bias, Tensor):
        const = const + torch.einsum("m,hmd->hd", ln_bias.detach(), W_V)
    const = const.repeat_interleave(n_heads // const.shape[0], dim=0)
    return torch.einsum("hd,hdm->hm", const, W_O)


def _names(model: TransformerBridge, unit: str, layer: int | None) -> set[str]:
    """The hook names a unit needs (the cache keeps only these)."""
    n_layers = int(model.cfg.n_layers)
    names = {"hook_embed", "hook_pos_embed", "ln_final.hook_scale", f"blocks.{n_layers - 1}.hook_resid_post"}
    for la in range(n_layers):
        names |= {f"blocks.{la}.hook_attn_out", f"blocks.{la}.hook_mlp_out"}
        if unit == "head":
            names.add(f"blocks.{la}.attn.hook_z")
    if unit == "neuron":
        names.add(f"blocks.{layer}.mlp.hook_post")
    return names


def _run(model: TransformerBridge, tokens: Tensor, names: set[str]) -> tuple[Tensor, ActivationCache]:
    with torch.no_grad():
        logits, cache = model.run_with_cache(tokens, names_filter=lambda n: n in names)
    return logits, cache


def _check_unit(model: TransformerBridge, unit: Any, layer: Any) -> int | None:
    n_layers = int(model.cfg.n_layers)
    if unit not in UNITS:
        raise invalid("unit", f"one of {', '.join(UNITS)}", unit)
    if unit != "neuron":
        if layer is not None:
            raise invalid("layer", "None unless unit='neuron'", layer)
        return None
    if model.cfg.attn_only:
        raise ConfigError("unit='neuron' needs MLP layers, and this model is attention-only")
    if layer is None:
        layer = n_layers - 1
    if isinstance(layer, bool) or not isinstance(layer, int) or not -n_layers <= layer < n_layers:
        raise invalid("layer", f"an MLP layer in [0, {n_layers - 1}]", layer)
    mlp = model.blocks[layer % n_layers].mlp
    try:
        mlp.W_out  # noqa: B018 - a dense MLP has one; a mixture of experts has one per expert
    except (AttributeError, RuntimeError, NotImplementedError):
        raise ConfigError(f"unit='neuron' needs a dense MLP (one W_out), and layer {layer % n_layers} of this "
                          f"model has a {type(mlp).__name__} (a mixture of experts?): use unit='component' or "
                          "'head'") from None
    return layer % n_layers


# -- results --------------------------------------------------------------------------------------------------
def _bars(labels: Sequence[str], values: Float[Tensor, "component batch"], title: str, axis: str) -> Any:
    import plotly.graph_objects as go

    mean = values.float().mean(1)
    err = values.float().std(1) if values.shape[1] > 1 else None
    bar = go.Bar(x=list(labels), y=mean.tolist(),
                 error_y=None if err is None else {"type": "data", "array": err.tolist()})
    return go.Figure(bar).update_layout(title=title, xaxis_title="component", yaxis_title=axis, height=420)


@dataclass(frozen=True)
class LogitAttribution(Result):
    """Each row's direct contribution to the logit of ``answer`` (minus ``wrong``'s) at ``pos``, per prompt."""

    values: Float[Tensor, "component batch"]
    labels: tuple[str, ...]
    unit: str  # component | head | neuron
    pos: int  # the position read (counted from the start)
    answer: Int[Tensor, " batch"]
    wrong: Int[Tensor, " batch"] | None
    logit: Float[Tensor, " batch"]  # the model's own logit (or logit difference) there: the rows sum to it
    target: str  # what is attributed, in words ("the logit of 'cat' minus that of 'dog'")

    def mean(self) -> Float[Tensor, " component"]:
        """Each row's contribution averaged over the prompts."""
        return self.values.float().mean(1)

    def top(self, k: int = 5) -> list[tuple[str, float]]:
        """The ``k`` rows with the largest mean contribution, ``(label, value)``, largest first."""
        m = self.mean()
        order = torch.argsort(m, descending=True)[:k]
        return [(self.labels[i], float(m[i])) for i in order.tolist()]

    def row(self, label: str) -> Float[Tensor, " batch"]:
        """One row's contributions (one per prompt); an unknown label names a few that exist."""
        if label not in self.labels:
            raise invalid("label", f"a row label such as {', '.join(self.labels[:4])}", label)
        return self.values[self.labels.index(label)]

    def summary(self) -> str:
        m = self.mean()
        hi, lo = self.top(3), (self.labels[int(m.argmin())], float(m.min()))
        tops = ", ".join(f"{name} {v:+.3g}" for name, v in hi)
        return (f"direct logit attribution to {self.target} at position {self.pos} over {self.values.shape[1]} "
                f"prompt(s), by {self.unit}: largest {tops}; smallest {lo[0]} {lo[1]:+.3g}; the {len(self.labels)} "
                f"rows sum to {float(self.values.float().sum(0).mean()):.4g} (the model's own: "
                f"{float(self.logit.float().mean()):.4g})")

    def to_frame(self) -> pd.DataFrame:
        import pandas as pd

        v = self.values.float()
        return pd.DataFrame({"component": list(self.labels), "mean": v.mean(1).tolist(),
                             "min": v.min(1).values.tolist(), "max": v.max(1).values.tolist()})

    def figure(self) -> Any:
        title = f"Direct logit attribution to {self.target} at position {self.pos}"
        return _bars(self.labels, self.values, title, "contribution (mean over prompts)")


@dataclass(frozen=True)
class ResidualDecomposition(Result):
    """The final residual stream at ``pos`` as the sum of what each component wrote (``vectors`` sum to ``resid``)."""

    vectors: Float[Tensor, "component batch d_model"]
    labels: tuple[str, ...]
    resid: Float[Tensor, "batch d_model"]  # the final residual stream (last block's hook_resid_post) at pos
    pos: int

    @property
    def norms(self) -> Float[Tensor, "component batch"]:
        return self.vectors.float().norm(dim=-1)

    @property
    def shares(self) -> Float[Tensor, "component batch"]:
        """Each component's projection on the final stream over its squared norm (the rows sum to 1)."""
        r = self.resid.float()
        return (self.vectors.float() * r).sum(-1) / (r * r).sum(-1).clamp_min(1e-30)

    def summary(self) -> str:
        n, s = self.norms.mean(1), self.shares.mean(1)
        big = torch.argsort(n, descending=True)[:3].tolist()
        parts = ", ".join(f"{self.labels[i]} (norm {float(n[i]):.3g})" for i in big)
        j = int(s.argmax())
        err = float((self.vectors.sum(0) - self.resid).abs().max())
        size = float(self.resid.float().norm(dim=-1).mean())
        return (f"the final residual stream at position {self.pos} (mean norm {size:.3g}) "
                f"is the sum of {len(self.labels)} components (to {err:.1e}); largest: {parts}; "
                f"{self.labels[j]} carries the largest share along it ({float(s[j]):.0%})")

    def to_frame(self) -> pd.DataFrame:
        import pandas as pd

        return pd.DataFrame({"component": list(self.labels), "norm": self.norms.mean(1).tolist(),
                             "share": self.shares.mean(1).tolist()})

    def figure(self) -> Any:
        return _bars(self.labels, self.norms, f"Norms of the residual stream's components at position {self.pos}",
                     "norm (mean over prompts)")


def _describe(model: TransformerBridge, answer: Tensor, wrong: Tensor | None) -> str:
    def name(ids: Tensor, role: str) -> str:
        if bool((ids == ids[0]).all()):
            tok = model.to_string(ids[:1]) if has_tokenizer(model) else str(int(ids[0]))
            return repr(tok)
        return f"each prompt's {role}"

    what = f"the logit of {name(answer, 'answer')}"
    return what if wrong is None else f"{what} minus that of {name(wrong, 'wrong token')}"


# -- the analyses ---------------------------------------------------------------------------------------------
def residual_decomposition(
    model: TransformerBridge, tokens: Any, *, pos: SupportsIndex = -1, unit: str = "component", layer: int | None = None
) -> ResidualDecomposition:
    """The final residual stream at ``pos`` split into components (``unit`` and ``layer`` as for
    :func:`direct_logit_attribution`); built on ``ActivationCache.decompose_resid`` / ``stack_head_results``."""
    check_model(model, "residual_decomposition")
    check_eval(model, "residual_decomposition")
    check_readout(model, "residual_decomposition", readout=False)
    batch, _ = as_tokens(model, tokens)
    p = position(pos, batch.shape[1])
    layer = _check_unit(model, unit, layer)
    _, cache = _run(model, batch, _names(model, unit, layer))
    stack, labels = _stack(model, cache, p, unit, layer)
    final = cache[f"blocks.{int(model.cfg.n_layers) - 1}.hook_resid_post"][:, p]
    check_exact("residual_decomposition", stack.sum(0), final, stack.abs().sum(0), "the final residual stream",
                model)
    return ResidualDecomposition(stack.detach().cpu(), tuple(labels), final.detach().cpu(), p)


def direct_logit_attribution(
    model: TransformerBridge,
    tokens: Any,
    answer: Any,
    wrong: Any = None,
    *,
    pos: SupportsIndex = -1,
    unit: str = "component",
    layer: int | None = None,
) -> LogitAttribution:
    """Each ``unit`` row's direct share of the logit of ``answer`` (or ``answer - wrong``) at ``pos``.

    ``tokens``: a ``[batch, pos]`` id tensor, a string or strings (with a tokenizer), or lists of ids.
    ``answer`` / ``wrong``: a token id, a one-token string, or a ``[batch]`` tensor (one per prompt).
    ``layer``: the MLP layer of ``unit="neuron"`` (default: the last). Works on a raw bridge; the model
    is not changed. See the module docstring for the rows.
    """
    check_model(model, "direct_logit_attribution")
    check_eval(model, "direct_logit_attribution")
    check_readout(model, "direct logit attribution")
    batch, _ = as_tokens(model, tokens)
    p = position(pos, batch.shape[1])
    layer = _check_unit(model, unit, layer)
    a = token_ids(model, answer, batch.shape[0], "answer")
    w = None if wrong is None else token_ids(model, wrong, batch.shape[0], "wrong")
    logits, cache = _run(model, batch, _names(model, unit, layer))
    stack, labels = _stack(model, cache, p, unit, layer)
    direction, const = _directions(model, cache, p, a, w)
    values = torch.cat([(stack * direction).sum(-1), const[None]]).detach().float().cpu() * _scale(model)
    rows = torch.arange(batch.shape[0], device=logits.device)
    own = logits[rows, p, a.to(logits.device)]
    if w is not None:
        own = own - logits[rows, p, w.to(logits.device)]
    check_exact("direct logit attribution", values.sum(0), own.detach().float().cpu(), values.abs().sum(0),
                "the model's own logit" + (" difference" if w is not None else ""), model)
    return LogitAttribution(values, (*labels, "bias"), unit, p, a, w, own.detach().float().cpu(),
                            _describe(model, a, w))
