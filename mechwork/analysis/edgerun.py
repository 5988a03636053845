"""Edge runs: a forward pass in which every receiver reads each sender's write as the caller chooses.

Everything circuit discovery computes (exact edge patching, EAP, EAP-IG, faithfulness, ACDC) is one primitive:
run the model while each receiver (a head's q, k or v input, an MLP's input, the logits) reads, edge by edge, the
sender's live write, a replacement, or a pinned value, with an optional probe added for gradients. :func:`runner`
returns the :class:`EdgeRunner` of a model: :class:`mechwork.edgeforward.EngineRunner` (mechwork's functional
engine) when :func:`mechwork.engine.supports` the model, else :class:`HookRunner`, which does the same through
TransformerLens's per-head fork on Hugging Face bridges (``set_use_split_qkv_input``, ``set_use_attn_result``,
``set_use_hook_mlp_in``, on inside each call only). In copy ``c`` every receiver ``v`` reads

    input_v = normal_v + sum_{u -> v} [keep * eff_u + (1 - keep) * replacement_u - live_u] + probe[c, v]

with ``eff_u`` the live write, or for a pinned sender its pin with the gradient passed straight through:
TransformerLens's ``_ablate_edges``, batched over copies and differentiable. :func:`to_tl` names an
:class:`~mechwork.graph.Edge` as TransformerLens's ``(Node, Node)`` pairs, for comparisons with its
``attribution_patching``.

Example::

    >>> import mechwork, torch
    >>> from mechwork.analysis.edgerun import runner
    >>> model = mechwork.load("induction-2l")
    >>> r = runner(model)
    >>> toks = torch.randint(0, 64, (2, 8))
    >>> r.engine, r.graph.describe()
    ('fast', '2 layers x 4 heads, attention only, 81 edges')
    >>> keep = torch.ones(1, len(r.graph.pairs), 8)
    >>> keep[0, r.graph.pair_index("L0H0->L1H2.k")] = 0.0   # L1H2's key reads L0H0's corrupted write
    >>> out = r.run(toks, keep=keep, replacement=r.senders(torch.randint(0, 64, (2, 8))))
    >>> out.shape
    torch.Size([1, 2, 8, 64])
"""

from __future__ import annotations

from collections.abc import Callable, Iterator, Sequence
from contextlib import contextmanager
from dataclasses import dataclass
from typing import TYPE_CHECKING, Any, Protocol, cast, no_type_check, runtime_checkable

import torch
from jaxtyping import Float, Int
from torch import Tensor

from mechwork.engine import supports
from mechwork.errors import ConfigError, invalid
from mechwork.graph import Edge, Graph
from mechwork.hooks import check_eval

if TYPE_CHECKING:  # pragma: no cover
    from transformer_lens.model_bridge import TransformerBridge

__all__ = ["ENGINES", "EdgeRunner", "HookRunner", "runner", "to_tl"]

ENGINES = ("auto", "fast", "hooks")
_FLAGS = ("use_attn_result", "use_split_qkv_input", "use_hook_mlp_in")


def _arch(model: Any) -> str:
    return str(getattr(model.cfg, "architecture", None) or type(model).__name__)


@runtime_checkable
class EdgeRunner(Protocol):
    """What both runners implement; :meth:`run`'s semantics are the module docstring's formula (C copies)."""

    graph: Graph  # Graph.of_model(model), position-free
    engine: str  # "fast" | "hooks"

    def senders(self, tokens: Int[Tensor, "batch pos"]) -> Float[Tensor, "sender batch pos d_model"]: ...

    def run(self, tokens: Int[Tensor, "batch pos"], *, keep: Tensor | None = None, replacement: Tensor | None = None,
            pin: Tensor | None = None, pinned: Sequence[int] = (), probe: Tensor | None = None,
            ) -> Float[Tensor, "copy batch pos vocab"]: ...

    def copy_bytes(self, batch: int, n_pos: int) -> int: ...


def runner(model: TransformerBridge, engine: str = "auto") -> EdgeRunner:
    """The edge runner of ``model``: the fast engine when it supports the model, else the hook runner.

    ``engine="hooks"`` forces the hook runner (cross-checks), ``"fast"`` the engine. One-line
    :class:`~mechwork.errors.ConfigError` when neither applies.
    """
    if engine not in ENGINES:
        raise invalid("engine", " | ".join(ENGINES), engine)
    check_eval(model, "edge runs")
    if engine != "hooks" and supports(model):
        from mechwork.edgeforward import EngineRunner

        return EngineRunner(model)
    if engine == "fast":
        raise ConfigError(f"the fast engine does not run {_arch(model)} (see mechwork.engine.supports); "
                          "use engine='hooks' or 'auto'")
    return HookRunner(model)


# -- TransformerLens names ------------------------------------------------------------------
def _tl_node(name: str, n_layers: int, pos: int, receiver: bool) -> Any:
    from transformer_lens.tools.analysis.attribution_patching import Node

    if name == "input":
        return Node("embed", pos)
    if name == "logits":
        return Node("logits", pos, n_layers - 1)
    if name.startswith("MLP"):
        return Node("mlp_in" if receiver else "mlp_out", pos, int(name[3:]))
    head, _, comp = name.partition(".")
    layer, h = (int(x) for x in head[1:].split("H"))
    return Node(cast(Any, f"{comp}_input" if receiver else "attn_head_out"), pos, layer, h)


def to_tl(edge: Edge | str, n_layers: int, n_pos: int | None = None) -> list[tuple[Any, Any]]:
    """``edge`` as TransformerLens's ``(writer Node, reader Node)`` pairs: one, or one per position.

    input <-> embed, LxHy <-> attn_head_out, MLPx <-> mlp_out (sender) / mlp_in (receiver),
    .q/.k/.v <-> q_input/k_input/v_input, logits <-> logits. A position-free edge needs ``n_pos``.

    >>> [(w.kind, r.kind, r.head, r.position) for w, r in to_tl("L0H0->L1H2.k@5", 2)]
    [('attn_head_out', 'k_input', 2, 5)]
    """
    e = Edge.parse(edge)
    if e.pos is None and n_pos is None:
        raise ConfigError(f"edge {str(e)!r} covers every position: pass n_pos to name it per position")
    positions = [e.pos] if e.pos is not None else range(n_pos or 0)
    return [(_tl_node(e.sender, n_layers, p, False), _tl_node(e.receiver, n_layers, p, True)) for p in positions]


# -- the hook runner ----------------------------------------------------------------------------
@dataclass(frozen=True)
class _Group:
    """The receivers one reader hook feeds: their graph indices, the senders they read, pair ids [recv, send]."""

    hook: str
    receivers: tuple[int, ...]
    senders: tuple[int, ...]
    pairs: Tensor  # [receiver, sender] indices into graph.pairs
    per_head: bool


def _groups(graph: Graph) -> list[_Group]:
    reads: dict[int, list[tuple[int, int]]] = {}
    for i, (s, r) in enumerate(graph.pairs):
        reads.setdefault(r, []).append((s, i))
    out: list[_Group] = []
    n_h = graph.n_heads
    for layer in range(graph.n_layers):
        base = layer * (3 * n_h + int(graph.mlp))
        for j, comp in enumerate("qkv"):
            out.append(_group(f"blocks.{layer}.attn.hook_{comp}_input", range(base + j * n_h, base + (j + 1) * n_h),
                              reads, True))
        if graph.mlp:
            out.append(_group(f"blocks.{layer}.hook_mlp_in", [base + 3 * n_h], reads, False))
    out.append(_group(f"blocks.{graph.n_layers - 1}.hook_resid_post", [len(graph.receivers) - 1], reads, False))
    return out


def _group(hook: str, receivers: Sequence[int], reads: dict[int, list[tuple[int, int]]], per_head: bool) -> _Group:
    senders = tuple(s for s, _ in reads[receivers[0]])  # the receivers of one hook read the same senders
    pairs = torch.tensor([[i for _, i in reads[r]] for r in receivers], dtype=torch.long)
    return _Group(hook, tuple(receivers), senders, pairs, per_head)


def _writer_hooks(graph: Graph, sink: Callable[[int, Tensor], None]) -> list[tuple[str, Callable[..., None]]]:
    """Hooks that hand each sender's live write (sender index, [rows, pos, d_model]) to ``sink``."""
    idx = {s: i for i, s in enumerate(graph.senders)}

    def one(i: int) -> Callable[..., None]:
        return lambda t, hook=None: sink(i, t)

    def heads(layer: int) -> Callable[..., None]:
        def hook(t: Tensor, hook: Any = None) -> None:
            for h in range(graph.n_heads):
                sink(idx[f"L{layer}H{h}"], t[:, :, h])

        return hook

    out = [("blocks.0.hook_resid_pre", one(0))]
    for layer in range(graph.n_layers):
        out.append((f"blocks.{layer}.attn.hook_result", heads(layer)))
        if graph.mlp:
            out.append((f"blocks.{layer}.hook_mlp_out", one(idx[f"MLP{layer}"])))
    return out


@contextmanager
def _fork(model: Any) -> Iterator[None]:
    """TransformerLens's per-head fork on for the body; the caller's flags (and ``use_attn_in``) restored after."""
    cfg = model.cfg
    saved = {f: bool(getattr(cfg, f, False)) for f in (*_FLAGS, "use_attn_in")}
    try:
        if saved["use_attn_in"]:
            model.set_use_attn_in(False)
        for flag in _FLAGS:
            if not getattr(cfg, flag, False):
                getattr(model, f"set_{flag}")(True)
        yield
    finally:
        for flag in _FLAGS:  # (use_split_qkv_input off before use_attn_in goes back on: they exclude each other)
            getattr(model, f"set_{flag}")(saved[flag])
        if saved["use_attn_in"]:
            model.set_use_attn_in(True)


def _refuse(model: Any, why: str) -> ConfigError:
    return ConfigError(f"edge runs need mechwork's fast engine or TransformerLens's per-head fork; "
                       f"{_arch(model)} has neither: {why}")


def _check_additive(model: Any, graph: Graph) -> None:
    """Refuse a model whose residual stream is not the plain sum the edge formula rebuilds (post-norm, scaled...):
    one short forward with the fork on checks that each layer's attention write is its heads' ``hook_result`` sum
    plus a constant (b_O), resid_post = resid_pre + attention + MLP, and each reader reads the stream unchanged."""
    n, mlp = min(4, int(model.cfg.n_ctx)), int(graph.mlp)
    toks = (torch.arange(n) % int(model.cfg.d_vocab))[None].to(next(model.parameters()).device)
    try:
        with torch.no_grad(), _fork(model):
            _, cache = model.run_with_cache(toks)
    except NotImplementedError as e:  # a fork some attention bridges refuse only when they run (gated q_proj)
        raise _refuse(model, str(e).split(". ")[0]) from None
    need = [f"blocks.{la}.{c}" for la in range(graph.n_layers) for c in (
        "hook_resid_pre", "hook_resid_post", "hook_attn_out", "attn.hook_result", "attn.hook_q_input",
        "attn.hook_k_input", "attn.hook_v_input", *("hook_mlp_out", "hook_mlp_in") * mlp)]
    missing = [name for name in need if name not in cache]  # Phi's MLP reads ln1; Bloom adds inside its block
    if missing:
        raise _refuse(model, f"it has no {missing[0]} hook point (TransformerLens's edge graph needs one)")
    def close(a: Tensor, b: Tensor, what: str, scale: Tensor | None = None) -> None:
        err = float((a - b).abs().max()) / max(float((b if scale is None else scale).abs().max()), 1e-6)
        if err > 1e-4:
            raise _refuse(model, f"{what} (relative difference {err:.2g})")

    for layer in range(graph.n_layers):
        pre, post = cache[f"blocks.{layer}.hook_resid_pre"], cache[f"blocks.{layer}.hook_resid_post"]
        attn = cache[f"blocks.{layer}.hook_attn_out"]
        rest = attn - cache[f"blocks.{layer}.attn.hook_result"].sum(2)
        close(rest, rest[:, :1].expand_as(rest), f"blocks.{layer}.hook_attn_out is not its heads' sum", attn)
        mlp_out = cache[f"blocks.{layer}.hook_mlp_out"] if graph.mlp else torch.zeros_like(pre)
        close(pre + attn + mlp_out, post, f"blocks.{layer} does not add its attention and MLP writes to the stream")
        for comp in "qkv":
            read = cache[f"blocks.{layer}.attn.hook_{comp}_input"]
            close(read, pre[:, :, None].expand_as(read), f"blocks.{layer}.attn.hook_{comp}_input is not resid_pre")
        if graph.mlp:
            close(cache[f"blocks.{layer}.hook_mlp_in"], pre if graph.parallel else pre + attn,
                  f"blocks.{layer}.hook_mlp_in is not the residual stream")


def _copies(tokens: Tensor, keep: Tensor | None, pin: Tensor | None, probe: Tensor | None) -> int:
    if not isinstance(tokens, Tensor) or tokens.ndim != 2 or tokens.dtype.is_floating_point:
        raise invalid("tokens", "an integer tensor [batch, pos]", getattr(tokens, "shape", tokens))
    sizes = {int(x.shape[0]) for x in (keep, pin, probe) if isinstance(x, Tensor) and x.ndim > 0}
    if len(sizes - {1}) > 1:
        raise invalid("keep/pin/probe", "tensors with the same copy count (or 1)", sorted(sizes))
    return max(sizes, default=1)


def _check_shape(name: str, x: Tensor | None, want: tuple[int, ...], copies: int) -> None:
    if x is None:
        return
    if not isinstance(x, Tensor) or tuple(x.shape[1:]) != want or x.shape[0] not in (1, copies):
        dims = ", ".join(str(d) for d in want)
        raise invalid(name, f"a tensor [copy, {dims}] with copy {' or '.join(dict.fromkeys(['1', str(copies)]))}",
                      tuple(getattr(x, "shape", ())) or x)


class HookRunner:
    """The edge runner over TransformerLens's per-head fork (see the module): any bridge that has the fork."""

    engine = "hooks"

    def __init__(self, model: TransformerBridge):
        check_eval(model, "edge runs")
        try:
            self.graph = Graph.of_model(model)
            with _fork(model):
                pass
        except (NotImplementedError, ValueError, AttributeError) as e:  # ConfigError (GQA) is a ValueError
            raise _refuse(model, str(e).split(". ")[0].split("\n")[0]) from None
        _check_additive(model, self.graph)
        self.model = model
        self._groups = _groups(self.graph)
        self._device = next(model.parameters()).device

    def senders(self, tokens: Int[Tensor, "batch pos"]) -> Float[Tensor, "sender batch pos d_model"]:
        """Each sender's write into the residual stream in the plain run of ``tokens`` (no grad)."""
        _copies(tokens, None, None, None)
        out: dict[int, Tensor] = {}
        hooks = _writer_hooks(self.graph, lambda i, t: out.__setitem__(i, t.detach().clone()))
        with torch.no_grad(), _fork(self.model), self.model.hooks(fwd_hooks=hooks):
            self.model(tokens.to(self._device))
        return torch.stack([out[i] for i in range(len(self.graph.senders))])

    def copy_bytes(self, batch: int, n_pos: int) -> int:
        """Rough peak bytes one copy costs in :meth:`run` (activations with the per-head fork, the senders' writes)."""
        c, mlp = self.model.cfg, 3 * int(getattr(self.model.cfg, "d_mlp", 0) or 0) * self.graph.mlp
        per_layer = 5 * c.n_heads * c.d_model + 8 * c.d_model + 3 * c.n_heads * c.d_head + 2 * c.n_heads * n_pos + mlp
        per_tok = c.n_layers * per_layer + 3 * len(self.graph.senders) * c.d_model + 2 * c.d_vocab
        return int(4 * 2 * per_tok * batch * n_pos)

    @no_type_check  # checks its own arguments, with one-line messages (a copy count of 1 broadcasts)
    def run(self, tokens: Int[Tensor, "batch pos"], *,
            keep: Float[Tensor, "copy pair pos"] | None = None,
            replacement: Float[Tensor, "sender rep pos d_model"] | None = None,
            pin: Float[Tensor, "copy sender batch pos d_model"] | None = None, pinned: Sequence[int] = (),
            probe: Float[Tensor, "copy receiver batch pos d_model"] | None = None,
            ) -> Float[Tensor, "copy batch pos vocab"]:
        """Logits of every copy, each receiver reading its edges as ``keep``/``replacement``/``pin``/``probe`` say."""
        call = _Call.build(self, tokens, keep, replacement, pin, pinned, probe)
        rows = tokens.to(self._device).repeat(call.copies, 1)
        hooks: list[tuple[str, Callable[..., Any]]] = []
        if call.active:
            hooks += _writer_hooks(self.graph, call.capture)
            hooks += [(g.hook, call.reader(g)) for g in self._groups]
        with _fork(self.model), self.model.hooks(fwd_hooks=hooks):
            logits = self.model(rows)
        return logits.reshape(call.copies, *tokens.shape, -1)


@dataclass(frozen=True)
class _Call:
    """One :meth:`HookRunner.run`: its checked arguments, and the senders' writes as the forward makes them."""

    copies: int
    batch: int
    n_pos: int
    keep: Tensor | None
    replacement: Tensor | None
    pin: Tensor | None
    pinned: frozenset[int]
    probe: Tensor | None
    shift: dict[int, Tensor]  # pinned sender -> (pin - live).detach()
    diff: dict[int, Tensor]  # sender -> replacement - eff

    @classmethod
    def build(cls, r: HookRunner, tokens: Tensor, keep: Tensor | None, replacement: Tensor | None,
              pin: Tensor | None, pinned: Sequence[int], probe: Tensor | None) -> _Call:
        g, d = r.graph, int(r.model.cfg.d_model)
        c = _copies(tokens, keep, pin, probe)
        b, p = (int(n) for n in tokens.shape)
        n_s = len(g.senders)
        _check_shape("keep", keep, (len(g.pairs), p), c)
        _check_shape("pin", pin, (n_s, b, p, d), c)
        _check_shape("probe", probe, (len(g.receivers), b, p, d), c)
        if replacement is not None and (not isinstance(replacement, Tensor) or replacement.ndim != 4
                                        or tuple(replacement.shape) not in {(n_s, b, p, d), (n_s, 1, p, d)}):
            raise invalid("replacement", f"a tensor [{n_s}, {b} or 1, {p}, {d}]",
                          tuple(getattr(replacement, "shape", ())) or replacement)
        pins = frozenset(int(i) for i in pinned)
        if any(not 0 <= i < n_s for i in pins) or (pins and pin is None):
            raise invalid("pinned", f"sender indices in [0, {n_s}) with a pin tensor", list(pinned))
        dt = next(r.model.parameters()).dtype

        def to(x: Tensor | None) -> Tensor | None:  # on the model's device, in its dtype
            return None if x is None else x.to(r._device, dt)

        return cls(c, b, p, to(keep), to(replacement), to(pin), pins, to(probe), {}, {})

    @property
    def active(self) -> bool:
        return self.keep is not None or bool(self.pinned) or self.probe is not None

    def capture(self, i: int, t: Tensor) -> None:
        live = t.reshape(self.copies, self.batch, self.n_pos, -1)
        eff = live
        if i in self.pinned and self.pin is not None:
            self.shift[i] = (self.pin[:, i] - live).detach()
            eff = live + self.shift[i]
        if self.keep is not None:
            self.diff[i] = (0.0 if self.replacement is None else self.replacement[i]) - eff

    def reader(self, g: _Group) -> Callable[..., Tensor]:
        def hook(t: Tensor, hook: Any = None) -> Tensor:
            delta = self._delta(g)
            if delta is None:
                return t
            c, b, p, nr = self.copies, self.batch, self.n_pos, len(g.receivers)
            delta = delta.expand(c, b, p, nr, t.shape[-1]).reshape(c * b, p, nr, -1)
            return t + (delta if g.per_head else delta[:, :, 0])

        return hook

    def _delta(self, g: _Group) -> Tensor | None:
        """What the receivers of ``g`` read on top of their normal input, as [copy, batch, pos, receiver, d_model]."""
        parts: list[Tensor] = []
        shifts = [self.shift[s] for s in g.senders if s in self.shift]
        if shifts:
            parts.append(torch.stack(shifts).sum(0)[:, :, :, None])
        if self.keep is not None:
            k = self.keep[:, g.pairs.to(self.keep.device)]  # [copy, receiver, sender, pos]
            drop = (1 - k).expand(self.copies, *k.shape[1:])
            if bool(drop.any()):
                d = torch.stack([self.diff[s] for s in g.senders], 1)  # [copy, sender, batch, pos, d_model]
                parts.append(torch.einsum("crsp,csbpd->cbprd", drop.to(d.dtype), d))
        if self.probe is not None:
            parts.append(self.probe[:, list(g.receivers)].permute(0, 2, 3, 1, 4))
        if not parts:
            return None
        out = parts[0]
        for x in parts[1:]:
            out = out + x
        return out
