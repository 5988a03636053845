"""The residual-stream graph of a transformer: who writes into the stream, who reads from it, and the edges.

Circuit discovery (Conmy et al. 2023; Syed et al. 2023) treats the residual
stream as a running sum. Every component *writes* into it (a **sender**) and
reads the sum of every earlier write (a **receiver**). An **edge** is one
sender's write as one receiver reads it, so one edge can be patched while every
other edge keeps its value.

* Senders: ``input`` (the token and position embeddings), each head's output
  ``L{l}H{h}``, each MLP ``MLP{l}``.
* Receivers: each head's query, key and value inputs as three separate
  receivers ``L{l}H{h}.q`` / ``.k`` / ``.v``, each MLP's input ``MLP{l}``, and
  the ``logits`` (the final residual stream, before the last norm).
* Edges: a head receiver in layer ``l`` reads ``input`` and every head and MLP
  of the layers below; ``MLP{l}`` also reads layer ``l``'s heads (unless the
  block runs attention and MLP in parallel); ``logits`` reads every sender.
  This is TransformerLens's ``enumerate_edges`` graph at one position.

Positions are optional: ``Graph.of_model(model)`` has one edge per
(sender, receiver) pair, covering every position; ``Graph.of_model(model,
n_pos=P)`` has one edge per pair and position, as TransformerLens's
attribution patching counts them. An :class:`Edge` prints and parses as
``L0H0->L1H2.k`` (or ``L0H0->L1H2.k@5`` at position 5).

This module is plain Python over a model's config: the arithmetic on edges
lives in :mod:`mechwork.edgeforward` and :mod:`mechwork.analysis.edgerun`.

Example::

    >>> from mechwork.graph import Edge, Graph
    >>> g = Graph(n_layers=2, n_heads=4, mlp=False)
    >>> g.describe()
    '2 layers x 4 heads, attention only, 81 edges'
    >>> g.index("L0H0->L1H2.k") == g.edges.index(Edge("L0H0", "L1H2.k"))
    True
    >>> str(Graph(n_layers=2, n_heads=4, mlp=False, n_pos=3).edges[4])
    'input->L0H1.q@1'
"""

from __future__ import annotations

import re
from collections.abc import Iterable
from dataclasses import dataclass
from functools import cached_property
from typing import TYPE_CHECKING, Any

from mechwork.errors import ConfigError, invalid

if TYPE_CHECKING:  # pragma: no cover
    from jaxtyping import Float
    from torch import Tensor

__all__ = ["Edge", "Graph"]

_SENDER = re.compile(r"input|L(\d+)H(\d+)|MLP(\d+)")
_RECEIVER = re.compile(r"L(\d+)H(\d+)\.[qkv]|MLP(\d+)|logits")
_EDGE = re.compile(r"\s*(\S+?)\s*->\s*([^\s@]+)\s*(?:@\s*(-?\d+))?\s*")


@dataclass(frozen=True, order=True)
class Edge:
    """One sender's write into the residual stream as one receiver reads it (at ``pos``, or everywhere)."""

    sender: str
    receiver: str
    pos: int | None = None

    def __str__(self) -> str:
        at = "" if self.pos is None else f"@{self.pos}"
        return f"{self.sender}->{self.receiver}{at}"

    @classmethod
    def parse(cls, text: Any) -> Edge:
        """``"L0H0->L1H2.k"`` or ``"L0H0->L1H2.k@5"`` as an :class:`Edge` (an Edge is returned as it is).

        >>> Edge.parse("input -> L0H1.v @ 3")
        Edge(sender='input', receiver='L0H1.v', pos=3)
        >>> Edge.parse("L0H0 to L1H2.k")
        Traceback (most recent call last):
        mechwork.errors.ConfigError: 'edge' must be SENDER->RECEIVER[@POS], e.g. L0H0->L1H2.k or input->logits@5 \
(got 'L0H0 to L1H2.k')
        """
        if isinstance(text, Edge):
            return text
        m = _EDGE.fullmatch(text) if isinstance(text, str) else None
        if m is None or not _SENDER.fullmatch(m[1]) or not _RECEIVER.fullmatch(m[2]):
            raise invalid("edge", "SENDER->RECEIVER[@POS], e.g. L0H0->L1H2.k or input->logits@5", text)
        return cls(m[1], m[2], None if m[3] is None else int(m[3]))


@dataclass(frozen=True)
class Graph:
    """The sender -> receiver edges of a model with ``n_layers`` layers of ``n_heads`` heads (see the module)."""

    n_layers: int
    n_heads: int
    mlp: bool
    parallel: bool = False
    n_pos: int | None = None

    @classmethod
    def of_model(cls, model: Any, n_pos: int | None = None) -> Graph:
        """The graph of a TransformerBridge (its ``cfg``); ``n_pos`` gives one edge per position."""
        c = model.cfg
        kv = getattr(c, "n_key_value_heads", None)
        if kv not in (None, c.n_heads):
            raise ConfigError(f"edge graphs need one key/value head per query head; this model has "
                              f"n_key_value_heads={kv} for {c.n_heads} heads (grouped-query attention)")
        if n_pos is not None and (not isinstance(n_pos, int) or isinstance(n_pos, bool) or n_pos < 1):
            raise invalid("n_pos", "a positive number of positions, or None for edges over every position", n_pos)
        return cls(int(c.n_layers), int(c.n_heads), not bool(getattr(c, "attn_only", False)),
                   bool(getattr(c, "parallel_attn_mlp", False)), n_pos)

    # -- nodes ------------------------------------------------------------------------
    @cached_property
    def senders(self) -> tuple[str, ...]:
        out = ["input"]
        for layer in range(self.n_layers):
            out += [f"L{layer}H{h}" for h in range(self.n_heads)] + ([f"MLP{layer}"] if self.mlp else [])
        return tuple(out)

    @cached_property
    def receivers(self) -> tuple[str, ...]:
        out = []
        for layer in range(self.n_layers):
            out += [f"L{layer}H{h}.{c}" for c in "qkv" for h in range(self.n_heads)]
            out += [f"MLP{layer}"] if self.mlp else []
        return (*out, "logits")

    def layer_of(self, node: str) -> int:
        """The layer a node sits in: ``input`` -1, ``L2H0`` / ``L2H0.k`` / ``MLP2`` 2, ``logits`` n_layers."""
        if node == "input":
            return -1
        if node == "logits":
            return self.n_layers
        m = re.match(r"L(\d+)H\d+|MLP(\d+)", node)
        if m is None:
            raise invalid("node", "input, logits, L{layer}H{head}[.q|.k|.v] or MLP{layer}", node)
        return int(m[1] if m[1] is not None else m[2])

    # -- edges ------------------------------------------------------------------------
    @cached_property
    def pairs(self) -> tuple[tuple[int, int], ...]:
        """Position-free edges as (sender index, receiver index), grouped by receiver in receiver order."""
        sidx = {s: i for i, s in enumerate(self.senders)}
        out: list[tuple[int, int]] = []
        for r, name in enumerate(self.receivers):
            if name == "logits":
                reads = list(self.senders)
            else:
                layer = self.layer_of(name)
                own_heads = name.startswith("MLP") and not self.parallel
                reads = [s for s in self.senders
                         if self.layer_of(s) < layer or (own_heads and s.startswith("L") and self.layer_of(s) == layer)]
            out += [(sidx[s], r) for s in reads]
        return tuple(out)

    @cached_property
    def edges(self) -> tuple[Edge, ...]:
        """Every edge: one per pair, or one per pair and position (pair-major: ``pair * n_pos + pos``)."""
        base = [Edge(self.senders[s], self.receivers[r]) for s, r in self.pairs]
        if self.n_pos is None:
            return tuple(base)
        return tuple(Edge(e.sender, e.receiver, p) for e in base for p in range(self.n_pos))

    @property
    def n_edges(self) -> int:
        return len(self.edges)

    @cached_property
    def _pair_of(self) -> dict[tuple[str, str], int]:
        return {(self.senders[s], self.receivers[r]): i for i, (s, r) in enumerate(self.pairs)}

    def pair_index(self, edge: Edge | str) -> int:
        """The index into :attr:`pairs` of ``edge`` (its position ignored); one line if it is not in the graph."""
        e = Edge.parse(edge)
        i = self._pair_of.get((e.sender, e.receiver))
        if i is None:
            raise ConfigError(f"edge {str(e)!r} is not in this graph ({self.describe()}; e.g. "
                              f"{self.edges[0]!s}, {self.edges[-1]!s})")
        return i

    def index(self, edge: Edge | str) -> int:
        """The flat index into :attr:`edges`; a position is required exactly when the graph has positions."""
        e = Edge.parse(edge)
        i = self.pair_index(e)
        if self.n_pos is None:
            if e.pos is not None:
                raise ConfigError(f"edge {str(e)!r} names a position, but this graph's edges cover every "
                                  "position (build it with n_pos for edges per position)")
            return i
        if e.pos is None or not 0 <= e.pos < self.n_pos:
            raise ConfigError(f"edge {str(e)!r} needs a position in [0, {self.n_pos}) in this graph "
                              f"(e.g. {e.sender}->{e.receiver}@0)")
        return i * self.n_pos + e.pos

    def keep(self, edges: Iterable[Edge | str], n_pos: int) -> Float[Tensor, "pair pos"]:
        """1.0 where an edge of ``edges`` is kept, 0.0 elsewhere, as ``[pair, pos]`` (what the runners take).

        A position-free edge keeps every position; an edge at ``pos`` keeps that position only.

        >>> Graph(1, 1, mlp=False).keep(["input->logits", "L0H0->logits@1"], 2).tolist()
        [[0.0, 0.0], [0.0, 0.0], [0.0, 0.0], [1.0, 1.0], [0.0, 1.0]]
        """
        import torch

        out = torch.zeros(len(self.pairs), n_pos)
        for edge in edges:
            e = Edge.parse(edge)
            i = self.pair_index(e)
            if e.pos is None:
                out[i] = 1.0
            elif 0 <= e.pos < n_pos:
                out[i, e.pos] = 1.0
            else:
                raise ConfigError(f"edge {str(e)!r} is at position {e.pos}, outside the {n_pos} positions")
        return out

    def describe(self) -> str:
        kind = "attention only" if not self.mlp else "parallel attention and MLP" if self.parallel else "with MLPs"
        per = "" if self.n_pos is None else f" at {self.n_pos} positions"
        return f"{self.n_layers} layers x {self.n_heads} heads, {kind}, {self.n_edges:,} edges{per}"
