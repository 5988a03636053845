"""Edge-level forward passes: every receiver reads its own residual stream, batched over copies.

Circuit discovery patches *edges* (:mod:`mechwork.graph`): one sender's write
as one receiver reads it. A hooked forward can only patch what a hook sees, so
TransformerLens forks the residual stream per head (``use_split_qkv_input``)
and patches every edge in its own forward pass. :class:`EngineRunner` is the
functional forward of :mod:`mechwork.engine` (the same weights, norms,
attention scale, causal mask and activations) written over the graph instead:

* every sender's write is kept apart (``input`` = token + position embedding,
  a head's ``z @ W_O[h]`` without ``b_O``, an MLP's ``mlp_out``); ``b_O`` is a
  constant of the residual stream;
* every receiver (each head's q, k and v input, each MLP, the logits) builds
  its own input from those writes,
  ``normal + sum_u (1 - keep[c, u->v, p]) * (replacement_u - live_u) + probe[c, v]``,
  with LayerNorm applied per receiver; a pinned sender's write is its pinned
  value with the gradient of its live one;
* copies (the leading dim of ``keep``/``pin``/``probe``) run as one batch of
  ``copies * batch`` rows; only the receivers a copy ablates or probes get
  their own input, and a copy that changes nothing below layer ``l`` and
  before position ``p`` starts there, from the plain run's residual stream
  (and its earlier keys and values), as :func:`mechwork.reruns.rerun` does.

It implements the ``EdgeRunner`` protocol of :mod:`mechwork.analysis.edgerun`
for the models :func:`mechwork.engine.supports` accepts; gradients flow to
``probe``, ``pin`` and ``keep`` (EAP, EAP-IG).

Example::

    >>> import mechwork, torch
    >>> from mechwork.edgeforward import EngineRunner
    >>> model = mechwork.load("induction-2l")
    >>> runner = EngineRunner(model)
    >>> toks = torch.randint(0, 64, (2, 10))
    >>> keep = torch.ones(3, len(runner.graph.pairs), 10)
    >>> keep[1, runner.graph.pair_index("L0H0->L1H2.k")] = 0.0  # copy 1 zero-ablates one edge
    >>> logits = runner.run(toks, keep=keep)
    >>> tuple(logits.shape), bool((logits[0] - model(toks)).abs().max() < 1e-4)
    ((3, 2, 10, 64), True)
"""

from __future__ import annotations

import math
from collections import Counter
from collections.abc import Sequence
from dataclasses import dataclass, field
from itertools import accumulate
from typing import TYPE_CHECKING

import torch
import torch.nn.functional as F
from jaxtyping import Float, Int
from torch import Tensor

from mechwork.engine import layout, supports
from mechwork.errors import ConfigError
from mechwork.fastpath import ACTIVATIONS
from mechwork.graph import Graph

if TYPE_CHECKING:  # pragma: no cover
    from transformer_lens.model_bridge import TransformerBridge

__all__ = ["EngineRunner"]


@dataclass(frozen=True)
class _Call:
    """One run()'s arguments, checked: ``ablate = 1 - keep`` (None when nothing is ablated)."""

    copies: int
    ablate: Tensor | None  # [copy, pair, pos]
    replacement: Tensor | None  # [sender, rep, pos, d_model]
    pin: Tensor | None  # [copy, sender, batch, pos, d_model]
    pinned: tuple[int, ...]
    probe: Tensor | None  # [copy, receiver, batch, pos, d_model]


_PLAIN = _Call(1, None, None, None, (), None)  # the plain run


@dataclass
class _Stream:
    """The residual stream of every copy so far: the running sum, and (when something is ablated, or recording)
    each sender group's writes."""

    resid: Tensor  # [copy, batch, pos, d_model]
    parts: list[tuple[int, Tensor]] = field(default_factory=list)  # (first sender, [copy, sender, B, P, D])


@dataclass(frozen=True)
class _Read:
    """What receivers ``r0:r1`` of one layer read: the shared residual stream, and the inputs of those that
    read their own (``own`` None: none; ``items`` None: ``own`` is [copy, receiver, ...] for every receiver;
    else ``own`` is [item, ...] for the (copy, receiver) pairs of ``items``)."""

    shared: Tensor  # [copy, batch, pos, d_model]
    own: Tensor | None
    items: tuple[Tensor, Tensor] | None = None


def _replacement(call: _Call, s0: int, writes: Tensor) -> Tensor | int:
    """The replacement of the senders ``writes`` holds (from ``s0``): zero when there is none."""
    return 0 if call.replacement is None else call.replacement[s0:s0 + writes.shape[1]]


def _rows(x: Tensor, idx: Tensor) -> Tensor:
    """Rows ``idx`` of ``x``'s copy dim (every row is row 0 when ``x`` has one copy)."""
    return x[idx] if x.shape[0] > 1 else x.expand(len(idx), *x.shape[1:])


class EngineRunner:
    """The fast edge runner of ``model`` (see the module docstring)."""

    engine = "fast"

    def __init__(self, model: TransformerBridge):
        if not supports(model):
            raise ConfigError("the fast edge runner reads mechwork's own models and Hugging Face GPT-2 bridges "
                              "only (see mechwork.engine.supports); use mechwork.analysis.edgerun.runner")
        c = model.cfg
        self.graph = Graph.of_model(model)
        if self.graph.parallel:
            raise ConfigError("the fast edge runner does not run parallel attention and MLP blocks")
        self.w = layout(model) or {}  # (supports() checked it is there)
        self.n_layers, self.n_heads, self.d_head = int(c.n_layers), int(c.n_heads), int(c.d_head)
        self.d_model, self.d_mlp = int(c.d_model), int(getattr(c, "d_mlp", 0) or 0)
        self.ln = getattr(c, "normalization_type", None) == "LN"
        self.eps = float(getattr(c, "eps", 1e-5))
        scale = float(getattr(c, "attn_scale", -1.0) or -1.0)
        self.scale = scale if getattr(c, "use_attn_scale", False) and scale > 0 else math.sqrt(self.d_head)
        self.act = ACTIVATIONS[c.act_fn or "gelu"] if self.graph.mlp else F.relu
        self._index_receivers()

    def _index_receivers(self) -> None:
        """Each receiver's pairs are one block of ``keep`` (graph.pairs), reading senders 0..n-1 in order."""
        g = self.graph
        counts = Counter(r for _, r in g.pairs)
        self.n_read = [counts[v] for v in range(len(g.receivers))]
        self.start = [0, *accumulate(self.n_read)][:-1]
        self.per_layer = 3 * self.n_heads + int(g.mlp)  # receivers per layer
        self.pair_layer = torch.tensor([g.layer_of(g.receivers[r]) for _, r in g.pairs])
        self.head_pair = torch.tensor([g.layer_of(g.senders[s]) if g.senders[s][0] == "L" else -1 for s, _ in g.pairs])

    # -- the protocol ----------------------------------------------------------------
    def senders(self, tokens: Int[Tensor, "batch pos"]) -> Float[Tensor, "sender batch pos d_model"]:
        """Each sender's write into the residual stream in the plain run of ``tokens`` (no grad)."""
        with torch.no_grad():
            stream = _Stream(torch.zeros(()))
            self._forward(tokens, _PLAIN, stream, record=True)
            return torch.cat([w[0] for _, w in stream.parts])

    def run(self, tokens: Int[Tensor, "batch pos"], *,
            keep: Float[Tensor, "#copy pair pos"] | None = None,
            replacement: Float[Tensor, "sender rep pos d_model"] | None = None,
            pin: Float[Tensor, "#copy sender batch pos d_model"] | None = None, pinned: Sequence[int] = (),
            probe: Float[Tensor, "#copy receiver batch pos d_model"] | None = None,
            ) -> Float[Tensor, "copy batch pos vocab"]:
        """Logits of every copy, each receiver reading the edges of ``keep`` (see the module docstring).

        A missing ``replacement`` ablates to zero.
        """
        call = self._check(tokens, keep, replacement, pin, pinned, probe)
        first = self._first(call, tokens.shape[1])
        if first is None:
            logits = self._forward(tokens, call, _Stream(torch.zeros(())), record=False)
            return logits.expand(call.copies, *logits.shape[1:])
        base, snaps, kv = _Stream(torch.zeros(())), list[Tensor](), list[tuple[Tensor, Tensor]]()
        with torch.no_grad():  # copies that change nothing below layer f and before position p0 start there
            plain = self._forward(tokens, _PLAIN, base, record=True, snaps=snaps, kv=kv)
        outs, order = [], []
        for f, p0 in first.unique(dim=0).tolist():
            idx = (first == torch.tensor([f, p0])).all(-1).nonzero()[:, 0]
            at = slice(p0, None)
            sub = _Call(len(idx), None if call.ablate is None else _rows(call.ablate, idx)[..., at],
                        None if call.replacement is None else call.replacement[:, :, at],
                        None if call.pin is None else _rows(call.pin, idx)[:, :, :, at], call.pinned, None)
            stream = _Stream(snaps[f][:, :, at])
            if sub.ablate is not None and f > 0:  # (from layer 0, the forward writes every sender itself)
                stream.parts = [(s0, w[:, :, :, at]) for s0, w in base.parts if s0 < self._first_sender(f)]
            out = self._forward(tokens, sub, stream, record=False, start=f, p0=p0, kv=kv if p0 else None)
            out = torch.cat([plain[:, :, :p0].expand(out.shape[0], -1, -1, -1), out], 2)
            outs.append(out.expand(len(idx), *out.shape[1:]))
            order.append(idx)
        return torch.cat(outs)[torch.cat(order).argsort()]

    def _first_sender(self, layer: int) -> int:
        return 1 + layer * (self.n_heads + int(self.graph.mlp))

    def _first(self, call: _Call, n_pos: int) -> Tensor | None:
        """[copy, 2]: the first layer (n_layers: the logits only) and position each copy changes; None when
        nothing is shared (one copy; a probe or a keep with gradients: they reach every receiver)."""
        if call.copies == 1 or call.probe is not None or (call.ablate is None and not call.pinned) or (
                call.ablate is not None and call.ablate.requires_grad):
            return None
        layer = torch.full((call.copies,), self.n_layers, dtype=torch.long)
        pos = torch.full((call.copies,), 0 if call.pinned else n_pos - 1, dtype=torch.long)  # a pin: everywhere
        if call.ablate is not None:
            hit = call.ablate.ne(0).cpu()  # [copy, pair, pos]
            layer = torch.minimum(layer, torch.where(hit.any(-1), self.pair_layer, self.n_layers).min(-1).values)
            pos = torch.minimum(pos, torch.where(hit.any(1), torch.arange(n_pos), n_pos - 1).min(-1).values)
        for s in call.pinned:
            layer.clamp_(max=max(self.graph.layer_of(self.graph.senders[s]), 0))
        return None if bool((layer == 0).all() & (pos == 0).all()) else torch.stack([layer, pos], 1)

    def copy_bytes(self, batch: int, n_pos: int) -> int:
        """Rough peak bytes one copy costs in :meth:`run` with its autograd graph, besides the caller's own
        keep/pin/probe tensors (for chunking; an upper bound: a one-edge copy without gradients needs ~1/8)."""
        h, d, n = self.n_heads, self.d_model, self.n_layers  # per row: writes, every layer's receiver inputs kept
        per_row = d * (len(self.graph.senders) + 6 * h * n + 4 * n + 8) + n * (3 * h * n_pos + 2 * self.d_mlp)
        return 4 * batch * n_pos * (per_row + 2 * len(self.w["head.weight"]))  # (float32) for the backward

    # -- arguments ---------------------------------------------------------------------
    def _check(self, tokens: Tensor, keep: Tensor | None, replacement: Tensor | None, pin: Tensor | None,
               pinned: Sequence[int], probe: Tensor | None) -> _Call:
        g = self.graph
        if tokens.ndim != 2:
            raise ConfigError(f"'tokens' must be [batch, pos] (got shape {tuple(tokens.shape)})")
        b, p = tokens.shape
        d, n_s = self.d_model, len(g.senders)
        copies = {1}
        for name, x, shape in (("keep", keep, (len(g.pairs), p)), ("pin", pin, (n_s, b, p, d)),
                               ("probe", probe, (len(g.receivers), b, p, d))):
            if x is not None:
                if tuple(x.shape[1:]) != shape:
                    raise ConfigError(f"'{name}' must be [copy, {', '.join(map(str, shape))}] "
                                      f"(got shape {tuple(x.shape)})")
                copies.add(int(x.shape[0]))
        if len(copies) > 2:
            raise ConfigError(f"keep, pin and probe must have the same number of copies, or 1 (got {sorted(copies)})")
        rep = None if replacement is None else tuple(replacement.shape)
        if rep is not None and (len(rep) != 4 or rep[0] != n_s or rep[1] not in (1, b) or rep[2:] != (p, d)):
            raise ConfigError(f"'replacement' must be [{n_s}, {b} or 1, {p}, {d}] (got shape {rep})")
        bad = [i for i in pinned if not 0 <= int(i) < n_s]
        if bad or (pinned and pin is None):
            raise ConfigError(f"'pinned' must be sender indices in [0, {n_s}) with a pin tensor (got {list(pinned)})")
        dtype = self.w["tok_embed.weight"].dtype  # arguments in another float type are cast to the model's
        ablate = None if keep is None or not (keep.requires_grad or bool((keep != 1).any())) else 1.0 - keep.to(dtype)
        replacement, pin, probe = (None if x is None else x.to(dtype) for x in (replacement, pin, probe))
        return _Call(max(copies), ablate, replacement, pin, tuple(int(i) for i in pinned), probe)

    # -- the forward -------------------------------------------------------------------
    def _forward(self, tokens: Tensor, call: _Call, stream: _Stream, *, record: bool, start: int = 0, p0: int = 0,
                 snaps: list[Tensor] | None = None, kv: list[tuple[Tensor, Tensor]] | None = None) -> Tensor:
        """Logits at positions ``p0:``, from layer ``start`` on when ``stream`` holds the residual stream there
        (``snaps`` collects it at each layer's start; ``kv`` the keys and values, or holds the earlier ones)."""
        w, p = self.w, tokens.shape[1]
        if start == 0:
            embed = (w["tok_embed.weight"][tokens[:, p0:]] + w["pos.weight"][p0:p])[None, None]  # [1, 1, B, P, D]
            stream.resid = torch.zeros_like(embed[:, 0])
            self._add(stream, call, 0, embed, embed[:, 0], record)
        mask = torch.full((p - p0, p), float("-inf"), dtype=stream.resid.dtype, device=tokens.device)
        mask = torch.triu(mask, diagonal=1 + p0)  # added to the scores: -inf above the diagonal
        h = self.n_heads
        for layer in range(start, self.n_layers):
            r0, s0 = layer * self.per_layer, self._first_sender(layer)
            if snaps is not None:
                snaps.append(stream.resid)
            reads = tuple(self._input(stream, call, r0 + i * h, r0 + (i + 1) * h) for i in range(3))
            past = None if kv is None or not p0 else tuple(x[:, :, :, :p0] for x in kv[layer])
            z = self._heads(layer, reads, mask, call.copies, past, None if p0 else kv)  # type: ignore[arg-type]
            attn_out = F.linear(z.flatten(-2), w[f"layers.{layer}.attn.o.weight"], w.get(f"layers.{layer}.attn.o.bias"))
            need = record or any(s0 <= s < s0 + h for s in call.pinned) or self._reads_ablated(call, layer)
            self._add(stream, call, s0, self._head_writes(layer, z) if need else None, attn_out, record)
            if self.graph.mlp:
                out = self._mlp(layer, self._single(self._input(stream, call, r0 + 3 * h, r0 + 3 * h + 1)))
                self._add(stream, call, s0 + h, out[:, None], out, record)
        if snaps is not None:
            snaps.append(stream.resid)
        n_r = len(self.graph.receivers)
        final = self._single(self._input(stream, call, n_r - 1, n_r))
        return F.linear(self._norm("ln_out", final), w["head.weight"], w.get("head.bias"))

    def _reads_ablated(self, call: _Call, layer: int) -> bool:
        """Whether an edge from a head of ``layer`` is ablated (or has gradients) in some copy."""
        a = call.ablate
        return a is not None and (a.requires_grad or bool(a[:, self.head_pair.eq(layer).to(a.device)].ne(0).any()))

    def _add(self, stream: _Stream, call: _Call, s0: int,
             writes: Float[Tensor, "#copy sender batch pos d_model"] | None,
             total: Float[Tensor, "#copy batch pos d_model"], record: bool) -> None:
        """Senders ``s0, s0+1, ...`` write ``writes`` (pinned ones their pin, with the live gradient).

        ``total`` is their sum as the model computes it (with ``b_O`` for heads), so the plain run's residual
        stream is the model's to the last bit. ``writes`` None: nothing needs them apart.
        """
        if writes is None:
            stream.resid = stream.resid + total
            return
        n = writes.shape[1]
        pins = [s for s in call.pinned if s0 <= s < s0 + n]
        if pins:
            assert call.pin is not None
            cols = [writes[:, j] for j in range(n)]
            for s in pins:
                shift = (call.pin[:, s] - cols[s - s0]).detach()
                cols[s - s0] = cols[s - s0] + shift
                total = total + shift
            writes = torch.stack(torch.broadcast_tensors(*cols), dim=1)
        if record or call.ablate is not None:
            stream.parts.append((s0, writes))
        stream.resid = stream.resid + total

    def _input(self, stream: _Stream, call: _Call, r0: int, r1: int) -> _Read:
        """The inputs of receivers ``r0:r1`` (all reading the same senders), each computed only where it
        differs from the shared stream: a receiver with an ablated edge or a probe in that copy."""
        shared, n, r = stream.resid, self.n_read[r0], r1 - r0
        a, hit = None, None
        if call.ablate is not None:
            a = call.ablate[:, self.start[r0]:self.start[r0] + r * n]
            a = a.reshape(a.shape[0], r, n, a.shape[-1])
            hit = a.ne(0).any(-1).any(-1)  # [copy, receiver]
        if call.probe is not None or (a is not None and a.requires_grad):  # gradients reach every receiver
            hit = torch.ones(call.copies, r, dtype=torch.bool, device=shared.device)
        if hit is None or not bool(hit.any()):
            return _Read(shared, None)
        if 2 * int(hit.sum()) >= hit.numel() or r == 1:  # most receivers read their own: all of them do
            x = shared[:, None].expand(shared.shape[0], r, *shared.shape[1:])
            for s0, wr in stream.parts if a is not None else ():
                ag = a[:, :, s0:s0 + wr.shape[1]]  # type: ignore[index]
                if s0 < n and (ag.requires_grad or bool(ag.any())):
                    x = x + torch.einsum("crsp,csbpd->crbpd", ag, _replacement(call, s0, wr) - wr)
            return _Read(shared, x if call.probe is None else x + call.probe[:, r0:r1])
        cidx, ridx = hit.expand(call.copies, r).nonzero(as_tuple=True)
        x = _rows(shared, cidx)
        if a is not None:
            a = a[cidx if a.shape[0] > 1 else torch.zeros_like(cidx), ridx]  # [item, sender, pos]
            for s0, wr in stream.parts:
                ak = a[:, s0:s0 + wr.shape[1]]
                sel = ak.ne(0).flatten(1).any(-1).nonzero()[:, 0]  # the items that ablate this group
                if s0 < n and len(sel):
                    diff = _replacement(call, s0, wr) - (wr if wr.shape[0] == 1 else wr[cidx[sel]])
                    term = (torch.einsum("ksp,sbpd->kbpd", ak[sel], diff[0]) if diff.shape[0] == 1
                            else torch.einsum("ksp,ksbpd->kbpd", ak[sel], diff))
                    x = x.index_add(0, sel, term)
        if call.probe is not None:
            x = x + call.probe[cidx if call.probe.shape[0] > 1 else torch.zeros_like(cidx), r0 + ridx]
        return _Read(shared, x, (cidx, ridx))

    @staticmethod
    def _single(read: _Read) -> Float[Tensor, "copy batch pos d_model"]:
        """The input of a layer's one MLP receiver, or of the logits (always read whole: ``items`` is None)."""
        return read.shared if read.own is None else read.own[:, 0]

    # -- the arithmetic (mechwork.engine's, per receiver) ------------------------------
    def _norm(self, name: str, x: Tensor) -> Tensor:
        if not self.ln:
            return x
        return F.layer_norm(x, x.shape[-1:], self.w[f"{name}.weight"], self.w[f"{name}.bias"], self.eps)

    def _project(self, layer: int, which: str, read: _Read, copies: int) -> Float[Tensor, "copy batch head pos d_head"]:
        """Every head's q, k or v, each from the input its receiver reads."""
        pre = f"layers.{layer}"
        h, dh = self.n_heads, self.d_head
        weight, bias = self.w[f"{pre}.attn.{which}.weight"], self.w.get(f"{pre}.attn.{which}.bias")
        per_head = weight.view(h, dh, -1).transpose(1, 2)  # [H, D, dh]
        if read.own is not None and read.items is None:  # every receiver its own input
            c, _, b, p, d = read.own.shape
            out = torch.matmul(self._norm(f"{pre}.ln1", read.own).reshape(c, h, b * p, d), per_head)
            out = out if bias is None else out + bias.view(h, 1, dh)
            return out.view(c, h, b, p, dh).transpose(1, 2)
        c, b, p, _ = read.shared.shape  # the model's own projection of the shared stream
        out = F.linear(self._norm(f"{pre}.ln1", read.shared), weight, bias).view(c, b, p, h, dh).transpose(2, 3)
        if read.own is None or read.items is None:
            return out
        cidx, hidx = read.items  # ... and the receivers that read their own input
        own = torch.bmm(self._norm(f"{pre}.ln1", read.own).flatten(1, 2), per_head[hidx])
        own = own if bias is None else own + bias.view(h, 1, dh)[hidx]
        out = out.expand(copies, *out.shape[1:]).clone()
        out[cidx, :, hidx] = own.view(len(cidx), b, p, dh)
        return out

    def _heads(self, layer: int, reads: tuple[_Read, _Read, _Read], mask: Tensor, copies: int,
               past: tuple[Tensor, Tensor] | None, kv: list[tuple[Tensor, Tensor]] | None
               ) -> Float[Tensor, "copy batch pos head d_head"]:
        """Every head's z, each head reading its own (or the shared) q, k and v inputs; ``past``: the keys and
        values of the earlier positions; ``kv`` collects this layer's."""
        q, k, v = (self._project(layer, which, read, copies) for which, read in zip("qkv", reads, strict=True))
        q, k, v = torch.broadcast_tensors(q, k, v)
        if kv is not None:
            kv.append((k, v))
        if past is not None:
            k, v = (torch.cat([x.expand(q.shape[0], *x.shape[1:]), y], 3) for x, y in zip(past, (k, v), strict=True))
        c, b, h, p, dh = q.shape
        q, k, v = (t.reshape(c * b * h, -1, dh) for t in (q, k, v))
        pattern = F.softmax(torch.baddbmm(mask, q, k.transpose(-2, -1), alpha=1 / self.scale), dim=-1)
        return torch.bmm(pattern, v).view(c, b, h, p, dh).transpose(2, 3)

    def _head_writes(self, layer: int, z: Float[Tensor, "copy batch pos head d_head"]
                     ) -> Float[Tensor, "copy head batch pos d_model"]:
        """Each head's write ``z_h @ W_O[h]`` (no ``b_O``)."""
        c, b, p, h, dh = z.shape
        w_o = self.w[f"layers.{layer}.attn.o.weight"].view(self.d_model, h, dh).permute(1, 2, 0)  # [H, dh, D]
        return torch.matmul(z.permute(0, 3, 1, 2, 4).reshape(c, h, b * p, dh), w_o).view(c, h, b, p, self.d_model)

    def _mlp(self, layer: int, x: Float[Tensor, "copy batch pos d_model"]) -> Float[Tensor, "copy batch pos d_model"]:
        pre = f"layers.{layer}"
        a = self._norm(f"{pre}.ln2", x)
        hidden = self.act(F.linear(a, self.w[f"{pre}.mlp.fc_in.weight"], self.w.get(f"{pre}.mlp.fc_in.bias")))
        return F.linear(hidden, self.w[f"{pre}.mlp.fc_out.weight"], self.w.get(f"{pre}.mlp.fc_out.bias"))
