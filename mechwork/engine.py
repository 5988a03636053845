"""A functional forward of mechwork's toy transformers that reuses an unpatched run.

Patching one cell changes nothing *before* it: not the layers below the
patched site, and (attention being causal) not the positions before the
patched position. TransformerLens still reruns the whole model for every cell.
This engine runs the base input once, keeps each layer's residual stream and
keys/values, and for a group of patched copies recomputes only

* the layers from the patched one up, and
* the positions from ``p0`` (the earliest patched position) on, with the
  earlier positions' keys and values taken from the base run;

inside the patched layer, everything before the patched site is computed once
for the base batch and only then copied out to the patched copies. A site
whose patch at one position changes nothing else in its layer (``z``,
``attn_out``, ``resid_mid``, ``mlp_post``, ``mlp_out``, ``q``: keys and values
come from the unpatched stream, and everything after attention is per
position) reruns that layer for the patched position alone
(:meth:`BaseRun.rerun_rows`); in the last layer only that position's logits
are recomputed.

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
        self.resid: list[Tensor] = []  # resid_pre of every layer, [B, P, D]
        self.kv: list[tuple[Tensor, Tensor]] = []  # keys, values of every layer, [B, H, P, d_head]
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

                x, kv = self.block(layer, x, 0, rec)
                self.kv.append(kv)
            self.logits = self.unembed(x)

    # -- the arithmetic -------------------------------------------------------------
    def _norm(self, name: str, x: Tensor) -> Tensor:
        if not self.ln:
            return x
        return F.layer_norm(x, x.shape[-1:], self.w[f"{name}.weight"], self.w[f"{name}.bias"], self.eps)

    def _linear(self, name: str, x: Tensor) -> Tensor:
        return F.linear(x, self.w[f"{name}.weight"], self.w.get(f"{name}.bias"))

    def block(self, layer: int, x: Tensor, p0: int, site: Site) -> tuple[Tensor, tuple[Tensor, Tensor]]:
        """Layer ``layer`` for positions ``p0:`` of ``x`` (earlier keys/values from the base run)."""
        pre = f"layers.{layer}"
        s = x.shape[1]
        h, dh = self.n_heads, self.d_head
        x = site("resid_pre", x)
        a = self._norm(f"{pre}.ln1", x)
        q = site("q", self._linear(f"{pre}.attn.q", a).view(a.shape[0], s, h, dh))
        k = site("k", self._linear(f"{pre}.attn.k", a).view(a.shape[0], s, h, dh))
        v = site("v", self._linear(f"{pre}.attn.v", a).view(a.shape[0], s, h, dh))
        q, k, v = q.transpose(1, 2), k.transpose(1, 2), v.transpose(1, 2)
        if p0 > 0:
            pk, pv = self.kv[layer]
            k = torch.cat(_align(pk[:, :, :p0], k), dim=2)
            v = torch.cat(_align(pv[:, :, :p0], v), dim=2)
        q, k = _align(q, k)
        scores = torch.matmul(q, k.transpose(-2, -1)) / self.scale
        mask = self.mask[p0:p0 + s, : p0 + s]
        pattern = F.softmax(scores.masked_fill_(mask, float("-inf")), dim=-1)  # exp(-inf): exactly 0
        pattern = site("pattern", pattern)
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
        return x, (k, v)

    def unembed(self, x: Tensor) -> Tensor:
        return F.linear(self._norm("ln_out", x), self.w["head.weight"])

    # -- patched reruns ---------------------------------------------------------------
    def rerun(self, layer: int, p0: int, site: Site) -> Tensor:
        """Logits ``[C*B, P, vocab]`` with ``site`` applied in ``layer``, recomputing positions ``p0:`` only.

        ``site`` tiles the batch out to the C copies where it patches; the
        positions before ``p0`` keep the base run's logits.
        """
        with torch.no_grad():
            x = self.resid[layer][:, p0:]
            x, _ = self.block(layer, x, p0, site)
            for later in range(layer + 1, self.n_layers):
                x, _ = self.block(later, x, p0, _identity)
            tail = self.unembed(x)
            head = _tile(self.logits[:, :p0], tail.shape[0])
            return torch.cat([head, tail], dim=1)


    def rerun_rows(self, layer: int, groups: list[tuple[int, int, Site]]) -> Tensor:
        """Logits ``[C*B, P, vocab]`` for a site whose patch changes one position only in ``layer``.

        ``groups`` are ``(position, copies, site)``, in copy order. A patch of
        ``z``, ``attn_out``, ``resid_mid``, ``mlp_post``, ``mlp_out`` or ``q``
        at one position leaves that layer's other positions as they
        were (its keys and values come from the unpatched stream, everything after
        attention is per position), so ``layer`` is rerun for that position alone
        and the copies diverge from the base run from the next layer on. In the
        last layer only that position's logits are new.
        """
        b = self.tokens.shape[0]
        with torch.no_grad():
            rows = [self.block(layer, self.resid[layer][:, p:p + 1], p, site)[0] for p, _, site in groups]
            starts = [p for p, n, _ in groups for _ in range(n)]
            if layer + 1 == self.n_layers:  # the last layer: only the patched positions' logits change
                logits, c = expand(self.logits, len(starts)), 0
                for (p, n, _), row in zip(groups, rows, strict=True):
                    logits[c * b:(c + n) * b, p] = self.unembed(_tile(row[:, 0], n * b))
                    c += n
                return logits
            p0 = min(starts)
            x, c = expand(self.resid[layer + 1][:, p0:], len(starts)), 0
            for (p, n, _), row in zip(groups, rows, strict=True):
                x[c * b:(c + n) * b, p - p0] = _tile(row[:, 0], n * b)
                c += n
            for later in range(layer + 1, self.n_layers):
                x, _ = self.block(later, x, p0, _identity)
            tail = self.unembed(x)
            return torch.cat([_tile(self.logits[:, :p0], tail.shape[0]), tail], dim=1)


# sites whose patch at one position changes only that position of its own layer (see BaseRun.rerun_rows); a
# pattern row is one too, but rerun alone it sums its shorter row in another order (off by 1e-5 on sharp patterns)
ROW_LOCAL = frozenset({"q", "z", "attn_out", "resid_mid", "mlp_post", "mlp_out"})


def _identity(name: str, act: Tensor) -> Tensor:
    return act


def expand(act: Tensor, copies: int) -> Tensor:
    """``act`` with its batch tiled out to ``copies`` copies (a fresh tensor, safe to write into)."""
    return act.repeat(copies, *([1] * (act.ndim - 1)))
