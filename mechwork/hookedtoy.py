"""mechwork's toy transformers with TransformerLens's hook points, without importing TransformerLens.

Importing TransformerLens's bridge costs about 3 s of CPU after torch's 1.1 s (its package imports transformers,
datasets and pandas; the bridge, transformers' model code), a third of a cold ``mechwork dashboard``
before this module (``benchmarks/README.md``), and TransformerLens 4.3 has no lazy import. :class:`HookedToy` is the
same model as a plain ``torch.nn.Module``: the same parameters under the same names (so
:func:`mechwork.models.weights`, :func:`mechwork.models.load_weights` and the fast engine,
:func:`mechwork.engine.supports`, read it as they read the bridge), and the bridge's hook points, with the
bridge's names, shapes, aliases and semantics:

* every hook point of the bridge's ``hook_dict``, in its order, aliases included (``hook_embed`` is
  ``embed.hook_out``, ``blocks.{l}.hook_resid_pre`` is ``blocks.{l}.hook_in``, ``attn.hook_z`` is
  ``attn.o.hook_in``, ``hook_resid_mid`` is ``ln2.hook_in``...); a hook's ``hook.name`` is the canonical name;
* the arithmetic of TransformerLens's native model: LayerNorm written out with ``hook_scale`` and
  ``hook_normalized``, ``hook_pattern`` before the value product, a patched ``hook_resid_mid`` reaching the MLP
  only, and ``attn.hook_attn_scores`` fired after the attention output with the pattern (as the bridge
  fires it; an edit there changes nothing);
* ``run_with_cache`` (``names_filter`` as a name, a list or a callable; a name also caches its alias),
  ``run_with_hooks`` and ``hooks(...)`` (forward and backward hooks), ``add_hook`` / ``reset_hooks``, and the
  weight views ``W_E``, ``W_pos``, ``W_U``, ``b_U``, ``W_Q``... ``b_out`` (stacked over layers).

Not there: a tokenizer, ``blocks``, ``ActivationCache``'s methods (the cache is a dict), the per-head fork
(its hook points, ``attn.hook_result``, ``hook_q_input``..., are listed but refuse a hook; edge runs on these
models take the fast engine). The forward is written out here, not taken from :mod:`mechwork.engine`, whose
block fires only the patching sites: every hook point must fire where the bridge fires it. The bridge stays the
reference: :func:`mechwork.load` returns it, and the tests hold this model's logits, every cached
activation and the dashboards' analysis bundles to the bridge's. :func:`reproduces` says which configs it
builds; anything else (an attention rate below 1, a Hugging Face directory) takes the bridge.

Example::

    >>> import torch
    >>> from mechwork.hookedtoy import HookedToy
    >>> from mechwork.models import preset
    >>> model = HookedToy(preset("modadd-113").model)
    >>> logits, cache = model.run_with_cache(torch.tensor([[3, 5, 113]]), names_filter="blocks.0.attn.hook_z")
    >>> tuple(logits.shape), sorted(cache)
    ((1, 3, 113), ['blocks.0.attn.hook_z', 'blocks.0.attn.o.hook_in'])
"""

from __future__ import annotations

import math
from collections.abc import Callable, Iterator
from contextlib import contextmanager
from types import SimpleNamespace
from typing import Any

import torch
import torch.nn.functional as F
from jaxtyping import Float, Int
from torch import Tensor, nn

from mechwork.errors import ConfigError
from mechwork.fastpath import ACTIVATIONS
from mechwork.models import ToyConfig, resolve_device

__all__ = ["KITS", "HookPoint", "HookedToy", "reproduces", "toy_cfg"]

KITS = ("modadd", "induction")  # the kits whose dashboard analyses are held to the bridge's (tests/test_hookedtoy.py)

Hook = Callable[..., Any]
_FORKED = {  # hook points that fire only with TransformerLens's per-head fork on (its set_use_* flags)
    "hook_mlp_in": "use_hook_mlp_in", "attn.hook_hidden_states": "use_attn_result", "attn.hook_result":
    "use_attn_result", "attn.hook_attn_in": "use_attn_in", "attn.hook_q_input": "use_split_qkv_input",
    "attn.hook_k_input": "use_split_qkv_input", "attn.hook_v_input": "use_split_qkv_input"}


def reproduces(cfg: ToyConfig) -> bool:
    """Whether :class:`HookedToy` builds ``cfg`` (every ToyConfig but a mixed-in attention rate, which the bridge
    applies as a permanent hook)."""
    return float(cfg.attn_rate) == 1.0


def toy_cfg(cfg: ToyConfig, device: torch.device) -> SimpleNamespace:
    """The bridge config's attributes that mechwork reads, with the bridge's values for ``cfg``."""
    return SimpleNamespace(
        architecture="TransformerLensNative", model_name="native", original_architecture=None,
        n_layers=cfg.n_layers, d_model=cfg.d_model, n_heads=cfg.n_heads, d_head=cfg.d_head, head_dim=cfg.d_head,
        d_mlp=cfg.d_mlp if cfg.d_mlp is not None else 4 * cfg.d_model, attn_only=cfg.attn_only,
        d_vocab=cfg.d_vocab, d_vocab_out=cfg.d_vocab_out, n_ctx=cfg.n_ctx, act_fn=cfg.act_fn,
        normalization_type=cfg.normalization, positional_embedding_type="standard", seed=cfg.seed, eps=1e-5,
        use_attn_scale=True, attn_scale=-1.0, n_key_value_heads=None, gated_mlp=False, attn_scores_soft_cap=-1.0,
        output_logits_soft_cap=-1.0, attention_dir="causal", final_rms=False, scale_attn_by_inverse_layer_idx=False,
        parallel_attn_mlp=False, rmsnorm_uses_offset=False, use_attn_result=False, use_split_qkv_input=False,
        use_hook_mlp_in=False, use_attn_in=False, device=device.type, dtype=torch.float32, n_devices=1,
        default_prepend_bos=True, tokenizer_prepends_bos=True, tie_word_embeddings=False)


class HookPoint(nn.Module):
    """A named identity on the forward pass that runs its hooks (TransformerLens's ``HookPoint``, the part
    mechwork uses): a forward hook ``fn(activation, hook=point)`` may return a replacement; a backward hook
    ``fn(grad, hook=point)`` sees the gradient of the activation. Hooks are torch forward hooks, so
    ``register_forward_hook`` works on it as on any module."""

    def __init__(self, name: str, fork: str | None = None) -> None:
        super().__init__()
        self.name, self.fork = name, fork
        self.handles: list[tuple[Any, bool]] = []  # (torch hook handle, permanent)
        self.ctx: dict[str, Any] = {}

    def extra_repr(self) -> str:
        return f"name={self.name!r}"

    def forward(self, x: Tensor) -> Tensor:
        return x

    def layer(self) -> int:
        return int(self.name.split(".")[1])

    def add_hook(self, fn: Hook, dir: str = "fwd", is_permanent: bool = False) -> tuple[Any, bool]:
        """Add ``fn`` (kept by :meth:`remove_hooks` when ``is_permanent``); returns its entry for :meth:`remove`."""
        if self.fork is not None:
            raise ConfigError(f"hook point {self.name!r} needs TransformerLens's per-head fork ({self.fork}); "
                              "open the model with mechwork.load for the TransformerBridge")
        if dir not in ("fwd", "bwd"):
            raise ConfigError(f"'dir' must be 'fwd' or 'bwd' (got {dir!r})")

        def forward_hook(module: nn.Module, inputs: Any, out: Tensor) -> Any:
            return fn(out, hook=self)

        def backward_hook(module: nn.Module, inputs: Any, out: Tensor) -> None:
            if out.requires_grad:
                out.register_hook(lambda grad: fn(grad, hook=self))

        entry = (self.register_forward_hook(forward_hook if dir == "fwd" else backward_hook), is_permanent)
        self.handles.append(entry)
        return entry

    def remove(self, entry: tuple[Any, bool]) -> None:
        entry[0].remove()
        self.handles = [h for h in self.handles if h is not entry]

    def remove_hooks(self, including_permanent: bool = False) -> None:
        for handle, permanent in self.handles:
            if including_permanent or not permanent:
                handle.remove()
        self.handles = [h for h in self.handles if h[1] and not including_permanent]


def _hook_names(cfg: ToyConfig) -> tuple[list[str], dict[str, str]]:
    """The bridge's hook point names in its ``hook_dict`` order, and alias -> canonical name."""
    def norm(prefix: str) -> list[str]:
        return [f"{prefix}.hook_in", f"{prefix}.hook_out"] + (
            [f"{prefix}.hook_normalized", f"{prefix}.hook_scale"] if cfg.normalization == "LN" else [])

    names = ["embed.hook_in", "embed.hook_out", "pos_embed.hook_in", "pos_embed.hook_out"]
    aliases = {"hook_embed": "embed.hook_out", "hook_pos_embed": "pos_embed.hook_out"}
    tail: list[str] = []
    for la in range(cfg.n_layers):
        b = f"blocks.{la}"
        names += [f"{b}.hook_in", f"{b}.hook_out", f"{b}.hook_mlp_in", *norm(f"{b}.ln1")]
        names += [f"{b}.attn.{h}" for h in ("hook_in", "hook_out", "hook_attn_scores", "hook_pattern",
                                            "hook_hidden_states", "hook_result", "hook_attn_in", "hook_q_input",
                                            "hook_k_input", "hook_v_input")]
        names += [f"{b}.attn.{p}.hook_{io}" for p in "qkvo" for io in ("in", "out")]
        block = {f"{b}.hook_attn_in": f"{b}.attn.hook_attn_in", f"{b}.hook_attn_out": f"{b}.attn.hook_out",
                 f"{b}.hook_k_input": f"{b}.attn.hook_k_input", f"{b}.hook_q_input": f"{b}.attn.hook_q_input",
                 f"{b}.hook_resid_post": f"{b}.hook_out", f"{b}.hook_resid_pre": f"{b}.hook_in",
                 f"{b}.hook_v_input": f"{b}.attn.hook_v_input"}
        block |= {f"{b}.attn.hook_{p}": f"{b}.attn.{p}.hook_out" for p in "qkv"}
        block[f"{b}.attn.hook_z"] = f"{b}.attn.o.hook_in"
        if not cfg.attn_only:
            names += [*norm(f"{b}.ln2"), f"{b}.mlp.hook_in", f"{b}.mlp.hook_out"]
            names += [f"{b}.mlp.{p}.hook_{io}" for p in ("in", "out") for io in ("in", "out")]
            block |= {f"{b}.hook_mlp_out": f"{b}.mlp.hook_out", f"{b}.hook_resid_mid": f"{b}.ln2.hook_in",
                      f"{b}.mlp.hook_post": f"{b}.mlp.out.hook_in", f"{b}.mlp.hook_pre": f"{b}.mlp.in.hook_out"}
        tail += sorted(block, key=lambda n: (n.count("."), n))  # the bridge lists a block's own aliases first
        aliases |= block
    names += [*norm("ln_final"), "unembed.hook_in", "unembed.hook_out"]
    aliases["hook_unembed"] = "unembed.hook_out"
    return [*names, "hook_embed", "hook_pos_embed", "hook_unembed", *tail], aliases


class _Native(nn.Module):
    """The parameters, under the native model's names (``tok_embed.weight``, ``layers.0.attn.q.weight``...)."""

    def __init__(self, cfg: ToyConfig) -> None:
        super().__init__()
        ln = cfg.normalization == "LN"
        self.tok_embed = nn.Embedding(cfg.d_vocab, cfg.d_model)
        self.pos = nn.Embedding(cfg.n_ctx, cfg.d_model)
        self.layers = nn.ModuleList()
        width = cfg.n_heads * cfg.d_head
        for _ in range(cfg.n_layers):
            layer = nn.Module()
            if ln:
                layer.ln1 = nn.LayerNorm(cfg.d_model)
            layer.attn = nn.Module()
            for p in "qkv":
                setattr(layer.attn, p, nn.Linear(cfg.d_model, width))
            layer.attn.o = nn.Linear(width, cfg.d_model)
            if not cfg.attn_only:
                if ln:
                    layer.ln2 = nn.LayerNorm(cfg.d_model)
                layer.mlp = nn.Module()
                d_mlp = int(cfg.d_mlp or 0)  # set: the model has an MLP
                layer.mlp.fc_in = nn.Linear(cfg.d_model, d_mlp)
                layer.mlp.fc_out = nn.Linear(d_mlp, cfg.d_model)
            self.layers.append(layer)
        if ln:
            self.ln_out = nn.LayerNorm(cfg.d_model)
        self.head = nn.Linear(cfg.d_model, cfg.d_vocab_out, bias=False)
        del self.head.bias  # the bridge's unembedding adds a zero bias, a buffer (not a weight)
        self.head.register_buffer("bias", torch.zeros(cfg.d_vocab_out))


class HookedToy(nn.Module):
    """A :class:`~mechwork.models.ToyConfig` model with the bridge's hook points (see the module docstring), in
    eval mode, with attention and MLP biases frozen or trained as :func:`mechwork.models.build_model` sets them.
    Its weights are a fresh init until :func:`mechwork.models.load_weights` fills them."""

    def __init__(self, cfg: ToyConfig, device: torch.device | str | None = None) -> None:
        super().__init__()
        if not reproduces(cfg):
            raise ConfigError(f"'attn_rate' must be 1 for a HookedToy (got {cfg.attn_rate}); "
                              "mechwork.models.build_model builds the TransformerBridge")
        device = resolve_device(device)
        self.toy = cfg
        self.cfg = toy_cfg(cfg, device)
        self.tokenizer = None
        self.original_model = _Native(cfg).to(device)
        for name, p in self.original_model.named_parameters():
            if name.endswith(".bias"):
                p.requires_grad_(cfg.attn_bias if ".attn." in name else cfg.mlp_bias)
        names, self.aliases = _hook_names(cfg)
        points = {n: HookPoint(n, next((f for s, f in _FORKED.items() if n.endswith("." + s)), None))
                  for n in names if n not in self.aliases}
        self.hook_dict: dict[str, HookPoint] = {n: points[self.aliases.get(n, n)] for n in names}
        self.act = ACTIVATIONS[cfg.act_fn]
        self.scale = math.sqrt(cfg.d_head)
        self.eval()

    def __repr__(self) -> str:
        return f"HookedToy({self.toy!r})"

    # -- the forward ---------------------------------------------------------------------------------------
    def forward(self, input: Int[Tensor, "batch pos"], return_type: str | None = "logits",
                **kwargs: Any) -> Float[Tensor, "batch pos vocab"] | None:
        """The logits of ``input`` (token ids), every hook point firing on the way (``return_type=None``: none)."""
        if return_type not in ("logits", None) or kwargs:
            what = f"return_type {return_type!r}" if return_type not in ("logits", None) else f"{sorted(kwargs)}"
            raise ConfigError(f"a HookedToy's forward takes token ids and return_type 'logits' or None (got "
                              f"{what}); mechwork.load gives the TransformerBridge")
        w: dict[str, Tensor] = dict(self.original_model.named_parameters())
        hp = self.hook_dict
        tokens = input.to(w["tok_embed.weight"].device)
        if tokens.shape[1] > self.toy.n_ctx:
            raise ConfigError(f"input length {tokens.shape[1]} exceeds n_ctx={self.toy.n_ctx}")
        tokens = hp["embed.hook_in"](tokens)
        x = hp["embed.hook_out"](F.embedding(tokens, w["tok_embed.weight"]))
        batch, seq = tokens.shape[:2]
        positions = hp["pos_embed.hook_in"](torch.arange(seq, device=tokens.device).unsqueeze(0).expand(batch, -1))
        x = x + hp["pos_embed.hook_out"](F.embedding(positions, w["pos.weight"]))
        for layer in range(self.toy.n_layers):
            x = self._block(layer, x, w)
        x = self._norm("ln_final", "ln_out", x, w)
        x = hp["unembed.hook_in"](x)
        logits = hp["unembed.hook_out"](F.linear(x, w["head.weight"], self.original_model.head.bias))
        return logits if return_type == "logits" else None

    def _norm(self, name: str, native: str, x: Tensor, w: dict[str, Tensor]) -> Tensor:
        """The bridge's LayerNorm, written out with its hooks (the identity without LayerNorm)."""
        hp = self.hook_dict
        x = hp[f"{name}.hook_in"](x)
        if self.toy.normalization == "LN":
            x = x - x.mean(-1, keepdim=True)
            scale = hp[f"{name}.hook_scale"]((x.pow(2).mean(-1, keepdim=True) + self.cfg.eps).sqrt())
            x = hp[f"{name}.hook_normalized"](x / scale) * w[f"{native}.weight"] + w[f"{native}.bias"]
        return hp[f"{name}.hook_out"](x)

    def _linear(self, name: str, native: str, x: Tensor, w: dict[str, Tensor], shape: tuple[int, ...]) -> Tensor:
        hp = self.hook_dict
        x = hp[f"{name}.hook_in"](x)
        return hp[f"{name}.hook_out"](F.linear(x, w[f"{native}.weight"], w[f"{native}.bias"]).view(shape))

    def _block(self, layer: int, x: Tensor, w: dict[str, Tensor]) -> Tensor:
        b, nat, hp = f"blocks.{layer}", f"layers.{layer}", self.hook_dict
        batch, seq, _ = x.shape
        heads = (batch, seq, self.toy.n_heads, self.toy.d_head)
        x = hp[f"{b}.hook_in"](x)
        a = hp[f"{b}.attn.hook_in"](self._norm(f"{b}.ln1", f"{nat}.ln1", x, w))
        q, k, v = (self._linear(f"{b}.attn.{p}", f"{nat}.attn.{p}", a, w, heads).transpose(1, 2) for p in "qkv")
        mask = torch.triu(torch.ones(seq, seq, dtype=torch.bool, device=x.device), diagonal=1)
        # in place, the same numbers; softmax's masked entries are exact zeros, the bridge's copy matters to autograd
        scores = torch.matmul(q, k.transpose(-2, -1)).div_(self.scale).masked_fill_(mask, float("-inf"))
        pattern = F.softmax(scores, dim=-1)
        pattern = hp[f"{b}.attn.hook_pattern"](pattern.masked_fill(mask, 0.0) if torch.is_grad_enabled() else pattern)
        z = hp[f"{b}.attn.o.hook_in"](torch.matmul(pattern, v).transpose(1, 2))
        out = F.linear(z.reshape(batch, seq, -1), w[f"{nat}.attn.o.weight"], w[f"{nat}.attn.o.bias"])
        out = hp[f"{b}.attn.hook_out"](hp[f"{b}.attn.o.hook_out"](out))
        hp[f"{b}.attn.hook_attn_scores"](pattern)  # as the bridge fires it: after the fact, with the pattern
        x = x + out
        if not self.toy.attn_only:
            m = hp[f"{b}.mlp.hook_in"](self._norm(f"{b}.ln2", f"{nat}.ln2", x, w))
            pre = self._linear(f"{b}.mlp.in", f"{nat}.mlp.fc_in", m, w, (batch, seq, -1))
            post = hp[f"{b}.mlp.out.hook_in"](self.act(pre))
            out = hp[f"{b}.mlp.out.hook_out"](F.linear(post, w[f"{nat}.mlp.fc_out.weight"],
                                                        w[f"{nat}.mlp.fc_out.bias"]))
            x = x + hp[f"{b}.mlp.hook_out"](out)
        return hp[f"{b}.hook_out"](x)

    # -- hooks ------------------------------------------------------------------------------------------------
    def _points(self, name: str | Callable[[str], bool]) -> list[HookPoint]:
        """The hook points ``name`` picks: one by name, or each point any of whose names the filter accepts."""
        if isinstance(name, str):
            if name not in self.hook_dict:
                raise KeyError(f"Hook name {name!r} does not exist on this model.")
            return [self.hook_dict[name]]
        out: dict[int, HookPoint] = {}
        for n, point in self.hook_dict.items():
            if point.fork is None and name(n):
                out.setdefault(id(point), point)
        return list(out.values())

    def add_hook(self, name: str | Callable[[str], bool], hook: Hook, dir: str = "fwd",
                 is_permanent: bool = False) -> list[tuple[HookPoint, Any]]:
        """Add ``hook`` at hook ``name`` (or every point the filter accepts); returns what :meth:`hooks` removes."""
        return [(point, point.add_hook(hook, dir, is_permanent)) for point in self._points(name)]

    def reset_hooks(self, clear_contexts: bool = True, including_permanent: bool = False) -> None:
        for point in {id(p): p for p in self.hook_dict.values()}.values():
            point.remove_hooks(including_permanent)
            if clear_contexts:
                point.ctx.clear()

    @contextmanager
    def hooks(self, fwd_hooks: list[tuple[Any, Hook]] | None = None, bwd_hooks: list[tuple[Any, Hook]] | None = None,
              reset_hooks_end: bool = True, clear_contexts: bool = False) -> Iterator[HookedToy]:
        """The hooks on inside the block; after it, with ``reset_hooks_end``, these hooks are removed (hooks added
        before are left alone) and with ``clear_contexts`` their points' ``ctx`` cleared."""
        added: list[tuple[HookPoint, Any]] = []
        try:
            for hooks, dir in ((fwd_hooks, "fwd"), (bwd_hooks, "bwd")):
                for name, fn in hooks or []:
                    added += self.add_hook(name, fn, dir)
            yield self
        finally:
            for point, entry in added if reset_hooks_end else ():
                point.remove(entry)
                if clear_contexts:
                    point.ctx.clear()

    def run_with_hooks(self, input: Tensor, fwd_hooks: list[tuple[Any, Hook]] | None = None,
                       bwd_hooks: list[tuple[Any, Hook]] | None = None, reset_hooks_end: bool = True,
                       clear_contexts: bool = False, return_type: str | None = "logits") -> Tensor | None:
        """The forward of ``input`` with ``fwd_hooks`` and ``bwd_hooks`` (``(name or filter, fn)`` pairs) on."""
        with self.hooks(fwd_hooks, bwd_hooks, reset_hooks_end, clear_contexts):
            return self(input, return_type=return_type)

    def run_with_cache(self, input: Tensor, names_filter: str | list[str] | Callable[[str], bool] | None = None,
                       return_type: str | None = "logits") -> tuple[Tensor | None, dict[str, Tensor]]:
        """``(logits, cache)``: every activation ``names_filter`` picks, detached, by hook name (a name given
        also caches its alias, as the bridge does)."""
        if isinstance(names_filter, (str, list)):
            wanted = [names_filter] if isinstance(names_filter, str) else list(names_filter)
            wanted += [self.aliases[n] for n in wanted if n in self.aliases]
            if not any(n in self.hook_dict for n in wanted):
                raise KeyError(f"names_filter {names_filter!r} matched no hook points on this model")
            forked = [n for n in wanted if n in self.hook_dict and self.hook_dict[n].fork is not None]
            if forked:
                self.hook_dict[forked[0]].add_hook(lambda act, hook: None)  # refuses, in one line
            keep: Callable[[str], bool] = wanted.__contains__
        else:
            keep = names_filter if callable(names_filter) else (lambda n: True)
        cache: dict[str, Tensor] = {}
        hooks = [(n, lambda act, hook, n=n: cache.__setitem__(n, act.detach()))
                 for n, p in self.hook_dict.items() if p.fork is None and keep(n)]
        return self.run_with_hooks(input, fwd_hooks=hooks, return_type=return_type), cache

    # -- the weights, in TransformerLens's layout --------------------------------------------------------------
    def _w(self, name: str) -> Tensor:
        return self.original_model.get_parameter(name)

    def _stack(self, fn: Callable[[int], Tensor]) -> Tensor:
        return torch.stack([fn(la) for la in range(self.toy.n_layers)])

    def _heads(self, p: str, kind: str) -> Tensor:
        h, dh = self.toy.n_heads, self.toy.d_head
        if kind == "b":
            return self._stack(lambda la: self._w(f"layers.{la}.attn.{p}.bias").reshape(h, dh))
        return self._stack(lambda la: self._w(f"layers.{la}.attn.{p}.weight").reshape(h, dh, -1).transpose(-1, -2))

    W_E = property(lambda self: self._w("tok_embed.weight"))
    W_pos = property(lambda self: self._w("pos.weight"))
    W_U = property(lambda self: self._w("head.weight").T)
    b_U = property(lambda self: self.original_model.head.bias)
    W_Q = property(lambda self: self._heads("q", "W"))
    W_K = property(lambda self: self._heads("k", "W"))
    W_V = property(lambda self: self._heads("v", "W"))
    b_Q = property(lambda self: self._heads("q", "b"))
    b_K = property(lambda self: self._heads("k", "b"))
    b_V = property(lambda self: self._heads("v", "b"))
    W_O = property(lambda self: self._stack(lambda la: self._w(f"layers.{la}.attn.o.weight").T.reshape(
        self.toy.n_heads, self.toy.d_head, -1)))
    b_O = property(lambda self: self._stack(lambda la: self._w(f"layers.{la}.attn.o.bias")))
    W_in = property(lambda self: self._stack(lambda la: self._w(f"layers.{la}.mlp.fc_in.weight").T))
    b_in = property(lambda self: self._stack(lambda la: self._w(f"layers.{la}.mlp.fc_in.bias")))
    W_out = property(lambda self: self._stack(lambda la: self._w(f"layers.{la}.mlp.fc_out.weight").T))
    b_out = property(lambda self: self._stack(lambda la: self._w(f"layers.{la}.mlp.fc_out.bias")))
