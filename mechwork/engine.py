"""A functional forward of mechwork's toy transformers that reuses an unpatched run.

Patching one cell changes nothing *before* it: not the layers below the
patched site, and (attention being causal) not the positions before the
patched position. TransformerLens still reruns the whole model for every cell.
This engine runs the base input once and keeps each layer's residual stream,
queries, keys and values; :mod:`mechwork.reruns` then recomputes, for a group
of patched copies, only

* the layers from the patched one up, and
* the positions from ``p0`` (the earliest patched position) on, with the
  earlier positions' keys and values taken from the base run;

and within those, only the rows the patch can change: a residual-stream patch
at position ``p`` gets new queries, keys and values for row ``p`` alone (the
later rows' attention is recomputed against them, not their projections); a
site whose patch at one position changes nothing else in its layer (``z``,
``attn_out``, ``resid_mid``, ``mlp_post``, ``mlp_out``, ``q``) reruns that
layer for the patched position alone; and a metric that declares the
positions it reads (:class:`mechwork.analysis.metrics.Reads`) gets the last
layer and the logits at those positions only (the earlier positions give
their keys and values). Inside the patched layer, everything before the
patched site is computed once for the base batch and only then copied out.
Attention adds the causal mask as a bias inside one ``baddbmm``; the query,
key and value projections are one matmul.

It is the native model's arithmetic written out (``x @ W.T + b``, scores
scaled by ``sqrt(d_head)``, causal mask, softmax, ``pattern @ v``), on the
live parameters of :func:`mechwork.models.weights`, with TransformerLens's hook
semantics for the sites (``resid_pre``, ``q``/``k``/``v``, ``pattern``, ``z``,
``attn_out``, ``resid_mid``, ``mlp_post``, ``mlp_out``). The tests hold its
patching results to ``transformer_lens.patching``'s to 1e-5.
:func:`supports` says whether a model fits: mechwork's own toy models, and
a bridge over Hugging Face's GPT-2 (:func:`layout` renames its weights to the
native names and transposes its ``Conv1D`` ones), with standard positions, no
rotary, no gated MLP, no grouped keys, no soft caps, LayerNorm or none. Any
other bridge (Llama: rotary, RMSNorm, gated MLP) takes the hook path.

:func:`correct` reads any forward's logits against labels: 1.0 where the top
logit is the label. It is mechwork's one accuracy helper (training, summaries,
studies and :func:`mechwork.analysis.metrics.accuracy` build on it).

Example::

    >>> import mechwork, torch
    >>> from mechwork.engine import BaseRun, supports
    >>> model = mechwork.load("induction-2l")
    >>> toks = torch.randint(0, 64, (2, 10))
    >>> run = BaseRun(model, toks)
    >>> bool(supports(model)), bool((run.logits - model(toks)).abs().max() < 1e-4)
    (True, True)
"""

from __future__ import annotations

import math
from collections.abc import Callable
from typing import TYPE_CHECKING

import torch
import torch.nn.functional as F
from jaxtyping import Float, Int
from torch import Tensor

from mechwork.errors import ConfigError
from mechwork.fastpath import ACTIVATIONS
from mechwork.models import ACT_FNS, weights

if TYPE_CHECKING:  # pragma: no cover
    from transformer_lens.model_bridge import TransformerBridge

__all__ = ["ROW_LOCAL", "BaseRun", "Site", "correct", "layout", "loss_accuracy", "supports"]

# a site hook: (site name, activation) -> activation (possibly with a larger, copied-out batch)
Site = Callable[[str, Tensor], Tensor]


def correct(logits: Float[Tensor, "*batch vocab"], labels: Int[Tensor, "*batch"]) -> Float[Tensor, "*batch"]:
    """1.0 where the top logit is the label, else 0.0; its mean is the accuracy.

    >>> float(correct(torch.tensor([[0.1, 2.0], [3.0, 0.0]]), torch.tensor([1, 1])).mean())
    0.5
    """
    return (logits.argmax(-1) == labels).float()


def loss_accuracy(logits: Float[Tensor, "n vocab"], labels: Int[Tensor, " n"]) -> tuple[Tensor, Tensor]:
    """(mean cross-entropy, accuracy) of ``logits`` against ``labels``, as 0-d tensors: how a split is scored
    (training's evaluations, and the train/test/all scores of :func:`mechwork.analysis.metrics.split_scores`).

    >>> [round(float(x), 4) for x in loss_accuracy(torch.tensor([[0.0, 2.0], [3.0, 0.0]]), torch.tensor([1, 1]))]
    [1.5878, 0.5]
    """
    return F.cross_entropy(logits, labels), correct(logits, labels).mean()


NATIVE = frozenset({"tok_embed.weight", "pos.weight", "head.weight"})  # weights the engine reads by name
GPT2 = frozenset({"transformer.wte.weight", "transformer.wpe.weight", "transformer.h.0.attn.q.weight",
                  "transformer.h.0.mlp.c_fc.weight"})  # a bridge over Hugging Face's GPT2LMHeadModel


def layout(model: TransformerBridge) -> dict[str, Tensor] | None:
    """The engine's weights (detached, under mechwork's native names, ``nn.Linear`` layout), or None.

    mechwork's own models are read as they are. A bridge over Hugging Face's
    GPT-2 is renamed: its split ``q``/``k``/``v`` (the bridge's ``nn.Linear``
    slices of ``c_attn``, the ones its forward runs) as they are, its
    ``Conv1D`` weights (``x @ W``) transposed, the unembedding tied to ``wte``
    unless an ``lm_head`` of its own is there. Any other layout: None.
    """
    w = {k: v.detach() for k, v in weights(model).items()}
    if set(w) >= NATIVE:
        return w
    if getattr(model.cfg, "architecture", None) != "GPT2LMHeadModel" or not set(w) >= GPT2:
        return None
    out = {"tok_embed.weight": w["transformer.wte.weight"], "pos.weight": w["transformer.wpe.weight"],
           "head.weight": w.get("lm_head.weight", w["transformer.wte.weight"]),
           "ln_out.weight": w["transformer.ln_f.weight"], "ln_out.bias": w["transformer.ln_f.bias"]}
    for layer in range(int(model.cfg.n_layers)):
        hf, pre = f"transformer.h.{layer}.", f"layers.{layer}."

        def conv(*names: str, hf: str = hf) -> Tensor:  # a Conv1D weight, under either of its names
            return next(w[hf + n] for n in names if hf + n in w)

        for ours, theirs in (("ln1", "ln_1"), ("ln2", "ln_2"), ("attn.q", "attn.q"), ("attn.k", "attn.k"),
                             ("attn.v", "attn.v")):
            out[f"{pre}{ours}.weight"], out[f"{pre}{ours}.bias"] = w[f"{hf}{theirs}.weight"], w[f"{hf}{theirs}.bias"]
        for ours, names in (("attn.o", ("attn.o", "attn.c_proj")), ("mlp.fc_in", ("mlp.c_fc",)),
                            ("mlp.fc_out", ("mlp.c_proj",))):
            out[f"{pre}{ours}.weight"] = conv(*(n + ".weight" for n in names)).T
            out[f"{pre}{ours}.bias"] = conv(*(n + ".bias" for n in names))
    return out


def supports(model: TransformerBridge) -> bool:
    """True when the engine reproduces ``model``'s forward (see the module docstring)."""
    c = model.cfg
    norm = getattr(c, "normalization_type", None)
    return (
        getattr(c, "positional_embedding_type", "standard") == "standard"
        and not getattr(c, "gated_mlp", False)
        and getattr(c, "n_key_value_heads", None) in (None, c.n_heads)
        and float(getattr(c, "attn_scores_soft_cap", -1.0) or -1.0) <= 0
        and float(getattr(c, "output_logits_soft_cap", -1.0) or -1.0) <= 0
        and norm in (None, "LN")
        and (bool(getattr(c, "attn_only", False)) or (c.act_fn or "gelu") in ACT_FNS)
        and getattr(c, "attention_dir", "causal") == "causal"
        and not getattr(c, "final_rms", False)
        and not getattr(c, "scale_attn_by_inverse_layer_idx", False)
        and float(getattr(model, "attn_rate", 1.0)) == 1.0  # a mixed-in constant pattern lives in a hook
        and not getattr(model, "spliced_hooks", ())  # an SAE spliced in at a hook (analysis.saehook) lives in a hook
        and layout(model) is not None  # mechwork's own weights, or a Hugging Face GPT-2's (last: it builds a dict)
    )


def _fused(w: dict[str, Tensor], pre: str) -> tuple[Tensor, Tensor | None]:
    """The query, key and value weights of ``pre`` stacked (and their biases, zeros for a missing one)."""
    ws = [w[f"{pre}.{c}.weight"] for c in "qkv"]
    bs = [w.get(f"{pre}.{c}.bias") for c in "qkv"]
    if all(b is None for b in bs):
        return torch.cat(ws), None
    return torch.cat(ws), torch.cat([b if b is not None else ws[0].new_zeros(ws[0].shape[0]) for b in bs])


def _tile(x: Tensor, n: int) -> Tensor:
    """``x`` (batch B) tiled to batch ``n`` (a multiple of B): copy c is rows [c*B, (c+1)*B)."""
    return x if x.shape[0] == n else x.repeat(n // x.shape[0], *([1] * (x.ndim - 1)))


def _align(*xs: Tensor) -> list[Tensor]:
    n = max(x.shape[0] for x in xs)
    return [_tile(x, n) for x in xs]


class BaseRun:
    """The unpatched forward of ``tokens``, kept per layer for patched reruns."""

    def __init__(self, model: TransformerBridge, tokens: Tensor, record: set[str] | None = None):
        c = model.cfg
        w = layout(model)
        if w is None:
            raise ConfigError("the fast engine reads mechwork's own models and Hugging Face GPT-2 bridges only "
                              f"(got {getattr(model.cfg, 'architecture', None) or type(model).__name__}); "
                              "see mechwork.engine.supports")
        self.w = w
        self.fused = [_fused(w, f"layers.{layer}.attn") for layer in range(int(c.n_layers))]
        self.n_layers, self.n_heads, self.d_head = int(c.n_layers), int(c.n_heads), int(c.d_head)
        self.attn_only = bool(getattr(c, "attn_only", False))
        self.ln = getattr(c, "normalization_type", None) == "LN"
        self.eps = float(getattr(c, "eps", 1e-5))
        scale = float(getattr(c, "attn_scale", -1.0) or -1.0)
        self.scale = scale if getattr(c, "use_attn_scale", False) and scale > 0 else math.sqrt(self.d_head)
        self.act = ACTIVATIONS[c.act_fn or "gelu"] if not self.attn_only else F.relu
        self.tokens = tokens
        n = tokens.shape[1]
        self.mask = torch.triu(torch.ones(n, n, dtype=torch.bool, device=tokens.device), diagonal=1)
        self.bias = torch.zeros(n, n, device=tokens.device).masked_fill_(self.mask, float("-inf"))  # added to scores
        self.resid: list[Tensor] = []  # resid_pre of every layer, [B, P, D]
        self.kv: list[tuple[Tensor, Tensor]] = []  # keys, values of every layer, [B, H, P, d_head]
        self.q: list[Tensor] = []  # queries of every layer, [B, H, P, d_head]
        self.recorded: dict[tuple[str, int], Tensor] = {}
        record = record or set()
        with torch.no_grad():
            x = self.w["tok_embed.weight"][tokens] + self.w["pos.weight"][: tokens.shape[1]]
            for layer in range(self.n_layers):
                self.resid.append(x)

                def rec(name: str, act: Tensor, layer: int = layer) -> Tensor:
                    if name in record:
                        self.recorded[(name, layer)] = act
                    return act

                x, (q, *kv) = self.block(layer, x, 0, rec)
                self.q.append(q)
                self.kv.append((kv[0], kv[1]))
            self.logits = self.unembed(x)

    # -- the arithmetic -------------------------------------------------------------
    def _norm(self, name: str, x: Tensor) -> Tensor:
        if not self.ln:
            return x
        return F.layer_norm(x, x.shape[-1:], self.w[f"{name}.weight"], self.w[f"{name}.bias"], self.eps)

    def _linear(self, name: str, x: Tensor) -> Tensor:
        return F.linear(x, self.w[f"{name}.weight"], self.w.get(f"{name}.bias"))

    def block(self, layer: int, x: Tensor, p0: int, site: Site) -> tuple[Tensor, tuple[Tensor, Tensor, Tensor]]:
        """Layer ``layer`` for positions ``p0:`` of ``x`` (earlier keys/values from the base run); its output and
        its queries, keys and values (``[batch, head, pos, d_head]``; keys and values from position 0)."""
        pre = f"layers.{layer}"
        s = x.shape[1]
        h, dh = self.n_heads, self.d_head
        x = site("resid_pre", x)
        a = self._norm(f"{pre}.ln1", x)
        q, k, v = self.qkv(layer, a)
        q, k, v = site("q", q), site("k", k), site("v", v)
        q, k, v = q.transpose(1, 2), k.transpose(1, 2), v.transpose(1, 2)
        if p0 > 0:
            pk, pv = self.kv[layer]
            k = torch.cat(_align(pk[:, :, :p0], k), dim=2)
            v = torch.cat(_align(pv[:, :, :p0], v), dim=2)
        q, k = _align(q, k)
        pattern = site("pattern", self.pattern(q, k, slice(p0, p0 + s)))
        pattern, v = _align(pattern, v)
        z = site("z", torch.matmul(pattern, v).transpose(1, 2))
        attn_out = site("attn_out", self._linear(f"{pre}.attn.o", z.reshape(z.shape[0], s, h * dh)))
        x, attn_out = _align(x, attn_out)
        x = x + attn_out
        if not self.attn_only:
            # TransformerLens 4.3's bridge feeds a patched hook_resid_mid to the MLP only: the residual
            # sum keeps the unpatched value. Its patching functions give those numbers with gradients
            # enabled (under torch.no_grad() their patch also reaches the residual stream); so does this.
            mid = site("resid_mid", x)
            post = site("mlp_post", self.act(self._linear(f"{pre}.mlp.fc_in", self._norm(f"{pre}.ln2", mid))))
            out = site("mlp_out", self._linear(f"{pre}.mlp.fc_out", post))
            x, out = _align(x, out)
            x = x + out
        return x, (q, k, v)

    def qkv(self, layer: int, a: Tensor, which: str = "qkv") -> list[Tensor]:
        """The queries, keys and values named in ``which`` (``"qkv"``, ``"kv"`` or ``"q"``) of the normalised
        input ``a`` (``[N, s, d_model]``), ``[N, s, head, d_head]`` each, from one matmul."""
        i, j, hd = "qkv".index(which[0]), "qkv".index(which[-1]) + 1, self.n_heads * self.d_head
        w, b = self.fused[layer]
        out = F.linear(a, w[i * hd:j * hd], None if b is None else b[i * hd:j * hd])
        return list(out.view(*a.shape[:-1], j - i, self.n_heads, self.d_head).unbind(-3))

    def pattern(self, q: Tensor, k: Tensor, at: Tensor | slice) -> Tensor:
        """Attention pattern ``[N, head, r, k]`` of queries ``q`` (``[N, head, r, d_head]``) at positions ``at``
        against keys ``k`` from position 0: one ``baddbmm`` adds the causal mask (0 or -inf) to the scaled
        scores, and the softmax's masked entries are exact zeros."""
        n, h, r, dh = q.shape
        scores = torch.baddbmm(self.bias[at, : k.shape[2]], q.reshape(n * h, r, dh),
                               k.reshape(n * h, -1, dh).transpose(1, 2), alpha=1 / self.scale)
        return F.softmax(scores, dim=-1).view(n, h, r, -1)

    def unembed(self, x: Tensor) -> Tensor:
        return F.linear(self._norm("ln_out", x), self.w["head.weight"])


# sites whose patch at one position changes only that position of its own layer (see mechwork.reruns.rerun_rows); a
# pattern row is one too, but rerun alone it sums its shorter row in another order (off by 1e-5 on sharp patterns)
ROW_LOCAL = frozenset({"q", "z", "attn_out", "resid_mid", "mlp_post", "mlp_out"})


def _identity(name: str, act: Tensor) -> Tensor:
    return act


def expand(act: Tensor, copies: int) -> Tensor:
    """``act`` with its batch tiled out to ``copies`` copies (a fresh tensor, safe to write into)."""
    return act.repeat(copies, *([1] * (act.ndim - 1)))
