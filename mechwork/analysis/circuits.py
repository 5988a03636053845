"""Circuits: sets of residual-stream edges, how much of a behaviour they keep, and two ways to find them.

A :class:`Circuit` is a frozen set of edges of :class:`mechwork.graph.Graph`. Its **faithfulness** is
TransformerLens's ``faithfulness``: run the clean input with every edge *outside* the circuit ablated (the
receiver reads the sender's corrupted write, its mean over ``mean_tokens``, or zero, in place of its live one)
and report ``recovered = (m_circuit - m_corrupted) / (m_clean - m_corrupted)``: 1 is the clean metric, 0 the
corrupted one (under mean or zero ablation without corrupted prompts, the bottom is the run with every edge
ablated). Everything is the edge runner's one primitive (:func:`mechwork.analysis.edgerun.runner`): a keep mask
per copy, many copies per forward pass.

* :func:`faithfulness` -- one circuit (a :class:`Circuit`, or edges such as ``"L0H0->L1H2.k"``).
* :func:`faithfulness_curve` -- the top-n edges by |score| for a grid of n, all in one batched run.
* :func:`top_n` -- the circuit of the n best-scored edges (n an int, or a fraction of the edges).
* :func:`acdc` -- Conmy et al. (2023)'s greedy pass: receivers from the logits backwards; each incoming edge
  is tentatively removed and stays removed when the metric drops by less than ``threshold`` (a fraction of the
  clean-to-corrupted gap); a node that feeds nothing any more loses its incoming edges untried. Trials run in
  speculative chains (copy j removes the next j + 1 edges): one forward pass decides many edges, with exactly
  the sequential decisions.

Example::

    >>> import mechwork
    >>> from mechwork.analysis.circuits import acdc, faithfulness
    >>> from mechwork.tasks import standard_probe
    >>> model = mechwork.load("modadd-113", device="cpu")
    >>> pr = standard_probe(mechwork.preset("modadd-113").task, n=4)
    >>> abs(faithfulness(model, pr.clean, pr.corrupted, pr.metric, []).recovered) < 1e-5  # the empty circuit
    True
    >>> circuit = acdc(model, pr.clean, pr.corrupted, pr.metric, threshold=0.02)
    >>> circuit.faithfulness.recovered > 0.5, "MLP0->logits" in circuit
    (True, True)
"""

from __future__ import annotations

import dataclasses
import math
from collections.abc import Callable, Iterable, Sequence
from dataclasses import dataclass
from typing import TYPE_CHECKING, Any

import torch
from jaxtyping import Float
from torch import Tensor

from mechwork.analysis.edgerun import EdgeRunner
from mechwork.analysis.edgesetup import ABLATIONS, metric_value, setup
from mechwork.errors import ConfigError, invalid
from mechwork.graph import Edge, Graph
from mechwork.results import Result

if TYPE_CHECKING:  # pragma: no cover
    import pandas as pd

__all__ = ["ABLATIONS", "Circuit", "Faithfulness", "FaithfulnessCurve", "acdc", "faithfulness",
           "faithfulness_curve", "top_n"]


@dataclass(frozen=True)
class Faithfulness(Result):
    """The metric a circuit keeps with every other edge ablated, as a fraction of the clean-to-corrupted gap."""

    recovered: float  # (metric - corrupted_value) / (clean_value - corrupted_value)
    metric: float  # the metric of the circuit's run
    clean_value: float
    corrupted_value: float  # the corrupted run's metric, or the all-ablated run's (mean / zero, no corrupted)
    kept: int
    total: int
    ablation: str

    def summary(self) -> str:
        return (f"{self.kept:,} of {self.total:,} edges recover {self.recovered:.1%} of the metric ({self.ablation} "
                f"ablation): {self.metric:.4g} between corrupted {self.corrupted_value:.4g} and clean "
                f"{self.clean_value:.4g}")

    def to_frame(self) -> pd.DataFrame:
        import pandas as pd

        return pd.DataFrame([dataclasses.asdict(self)])


@dataclass(frozen=True)
class FaithfulnessCurve(Result):
    """Faithfulness of the top-n edges by |score|, for each size n."""

    sizes: tuple[int, ...]
    recovered: tuple[float, ...]
    method: str  # the scores' method ("eap", "exact", ...)
    total: int  # edges in the graph
    ablation: str = "corrupted"

    def smallest(self, target: float = 0.8) -> int | None:
        """The fewest edges that recover at least ``target`` of the metric (None if no size does)."""
        return next((n for n, r in zip(self.sizes, self.recovered, strict=True) if r >= target), None)

    def summary(self) -> str:
        n = self.smallest()
        at = "no size reaches 80%" if n is None else f"{n:,} edges ({n / self.total:.1%}) recover 80%"
        return f"faithfulness of the top {self.method} edges ({self.ablation} ablation): {at}"

    def to_frame(self) -> pd.DataFrame:
        import pandas as pd

        return pd.DataFrame({"edges": list(self.sizes), "fraction": [n / self.total for n in self.sizes],
                             "recovered": list(self.recovered)})

    def figure(self) -> Any:
        from mechwork.analysis.circuitfig import curve_figure

        return curve_figure(self.sizes, self.recovered, total=self.total, method=self.method,
                            title=f"Faithfulness against circuit size (top-n {self.method} edges, {self.ablation} "
                                  "ablation)")


@dataclass(frozen=True)
class Circuit(Result):
    """A set of edges of ``graph`` that a method found, with its faithfulness and the scores that ranked it."""

    graph: Graph
    edges: frozenset[Edge]
    faithfulness: Faithfulness
    method: str  # "acdc", "top-n eap", ...
    scores: tuple[tuple[Edge, float], ...] = ()  # every edge the method scored, in graph order
    threshold: float | None = None  # acdc's threshold (fraction of the gap)

    def __contains__(self, edge: object) -> bool:
        """``"L0H0->L1H2.k" in circuit``; on a per-position circuit an edge without a position asks for any."""
        e = Edge.parse(edge)
        if e.pos is None and self.graph.n_pos is not None:
            return any(k.sender == e.sender and k.receiver == e.receiver for k in self.edges)
        return e in self.edges

    def summary(self) -> str:
        scored = dict(self.scores)
        top = ", ".join(str(e) for e in sorted(self.edges, key=lambda e: -abs(scored.get(e, 0.0)))[:5])
        at = "" if self.threshold is None else f" (threshold {self.threshold:g} of the gap)"
        return (f"{self.method} circuit{at}: {len(self.edges):,} of {self.graph.n_edges:,} edges recover "
                f"{self.faithfulness.recovered:.1%} of the metric ({self.faithfulness.ablation} ablation)"
                + (f"; strongest: {top}" if top else ""))

    def to_frame(self) -> pd.DataFrame:
        import pandas as pd

        scored = dict(self.scores)
        rows = sorted(set(scored) | set(self.edges))
        return pd.DataFrame({"edge": [str(e) for e in rows], "sender": [e.sender for e in rows],
                             "receiver": [e.receiver for e in rows], "pos": [e.pos for e in rows],
                             "score": [scored.get(e, math.nan) for e in rows],
                             "kept": [e in self.edges for e in rows]})

    def figure(self) -> Any:
        from mechwork.analysis.circuitfig import layered_graph

        scores = dict(self.scores) or dict.fromkeys(self.edges, 1.0)
        return layered_graph(self.graph, scores, kept=self.edges,
                             title=f"{self.method}: {len(self.edges):,} of {self.graph.n_edges:,} edges, "
                                   f"{self.faithfulness.recovered:.1%} recovered")


# -- the shared setup: the runner, the replacement writes, the two ends of the gap ---------------------------------
@dataclass(frozen=True)
class _Setup:
    runner: EdgeRunner
    clean: Tensor
    replacement: Tensor  # [sender, rep, pos, d_model]
    metric: Callable[[Tensor], Any]
    clean_value: float
    corrupted_value: float
    ablation: str
    cap: int  # copies per forward pass

    @property
    def gap(self) -> float:
        return self.clean_value - self.corrupted_value

    def values(self, keeps: Float[Tensor, "copy pair pos"]) -> list[float]:
        """The metric of the clean run under each copy's keep mask (chunked)."""
        out: list[float] = []
        b = self.clean.shape[0]
        with torch.no_grad():
            for i in range(0, keeps.shape[0], self.cap):
                logits = self.runner.run(self.clean, keep=keeps[i:i + self.cap], replacement=self.replacement)
                out += [metric_value(self.metric, lg, b) for lg in logits]
        return out

    def result(self, value: float, kept: int, total: int) -> Faithfulness:
        return Faithfulness((value - self.corrupted_value) / self.gap, value, self.clean_value,
                            self.corrupted_value, kept, total, self.ablation)


def _setup(model: Any, clean: Any, corrupted: Any, metric: Callable[[Tensor], Any], ablation: str,
           mean_tokens: Any, memory_mb: float) -> _Setup:
    """Check the inputs; the runner, the replacement writes and the metric's clean and corrupted values
    (:func:`mechwork.analysis.edgesetup.setup`, noising: the clean run with edges ablated)."""
    e = setup(model, clean, corrupted, metric, "noising", ablation, False, mean_tokens, memory_mb, "circuit search")
    if e.corrupted_value == e.clean_value:
        raise ConfigError(f"the clean and corrupted runs give the same metric ({e.clean_value:.6g}), so the "
                          "fraction recovered is undefined; choose prompts the metric separates")
    return _Setup(e.runner, e.tokens, e.replacement, metric, e.clean_value, e.corrupted_value, ablation, e.cap)


def _check_graph(graph: Graph, run_graph: Graph, n_pos: int) -> None:
    if dataclasses.replace(graph, n_pos=None) != run_graph:
        raise ConfigError(f"the edges are of another model's graph ({graph.describe()}; this model: "
                          f"{run_graph.describe()})")
    if graph.n_pos not in (None, n_pos):
        raise ConfigError(f"the edges are per position over {graph.n_pos} positions; the prompts have {n_pos}")


# -- faithfulness ----------------------------------------------------------------------------------------------
def faithfulness(model: Any, clean: Any, corrupted: Any, metric: Callable[[Tensor], Any],
                 circuit: Circuit | Iterable[Edge | str], *, ablation: str = "corrupted", mean_tokens: Any = None,
                 memory_mb: float = 512.0) -> Faithfulness:
    """The fraction of the clean-to-corrupted metric gap ``circuit`` recovers with every other edge ablated.

    ``ablation``: the ablated receiver reads the sender's write on ``corrupted`` ("corrupted"), its mean over
    ``mean_tokens`` (default: the clean prompts) per position ("mean"), or zero ("zero"). ``corrupted`` may be
    None under mean or zero ablation: the bottom of the gap is then the run with every edge ablated.
    """
    s = _setup(model, clean, corrupted, metric, ablation, mean_tokens, memory_mb)
    graph = s.runner.graph
    if isinstance(circuit, Circuit):
        _check_graph(circuit.graph, graph, s.clean.shape[1])
        edges, total = list(circuit.edges), circuit.graph.n_edges
    else:
        edges = list(dict.fromkeys(Edge.parse(e) for e in ([circuit] if isinstance(circuit, (str, Edge)) else circuit)))
        per_pos = any(e.pos is not None for e in edges)
        total = graph.n_edges * (s.clean.shape[1] if per_pos else 1)
    keep = graph.keep(edges, s.clean.shape[1]).to(s.clean.device)
    return s.result(s.values(keep[None])[0], len(edges), total)


def _ranking(scores: Any) -> list[int]:
    """Flat edge indices by |score|, largest first (stable: graph order among ties); NaN left out."""
    v = scores.values.detach().float().cpu()
    ok = torch.nonzero(~torch.isnan(v))[:, 0]
    order = torch.sort(v[ok].abs(), descending=True, stable=True).indices
    return ok[order].tolist()


def faithfulness_curve(model: Any, clean: Any, corrupted: Any, metric: Callable[[Tensor], Any], scores: Any, *,
                       sizes: Sequence[int] | None = None, ablation: str = "corrupted", mean_tokens: Any = None,
                       memory_mb: float = 512.0) -> FaithfulnessCurve:
    """Faithfulness of the top-n edges of ``scores`` (an EdgeScores) by |score| for each n of ``sizes``.

    Default sizes: about 20 sizes from 1 to every scored edge, log-spaced. All sizes run as copies of one batched
    forward pass (chunked by ``memory_mb``).
    """
    s = _setup(model, clean, corrupted, metric, ablation, mean_tokens, memory_mb)
    graph, n_pos = scores.graph, s.clean.shape[1]
    _check_graph(graph, s.runner.graph, n_pos)
    ranked = _ranking(scores)
    n = len(ranked)
    if sizes is None:
        sizes = sorted({round(10 ** (i * math.log10(max(n, 1)) / 19)) for i in range(20)} | {n}) if n else [0]
    bad = [k for k in sizes if isinstance(k, bool) or not isinstance(k, int) or not 0 <= k <= n]
    if bad or not sizes:
        raise invalid("sizes", f"edge counts in [0, {n}] (the scored edges)", bad[0] if bad else list(sizes))
    rank = torch.full((graph.n_edges,), n, dtype=torch.long)
    rank[torch.as_tensor(ranked, dtype=torch.long)] = torch.arange(n)
    keeps = (rank[None] < torch.tensor(list(sizes))[:, None]).float().view(len(sizes), len(graph.pairs), -1)
    values = s.values(keeps.expand(-1, -1, n_pos).contiguous().to(s.clean.device))
    recovered = tuple((v - s.corrupted_value) / s.gap for v in values)
    return FaithfulnessCurve(tuple(int(k) for k in sizes), recovered, str(scores.method), graph.n_edges, ablation)


def top_n(model: Any, clean: Any, corrupted: Any, metric: Callable[[Tensor], Any], scores: Any, n: int | float, *,
          ablation: str = "corrupted", mean_tokens: Any = None, memory_mb: float = 512.0) -> Circuit:
    """The circuit of the ``n`` edges of ``scores`` with the largest |score| (a float in (0, 1]: that fraction)."""
    graph = scores.graph
    fraction = isinstance(n, float) and 0 < n <= 1
    if not fraction and (isinstance(n, bool) or not isinstance(n, int) or not 0 <= n <= graph.n_edges):
        raise invalid("n", f"a number of edges in [0, {graph.n_edges}] or a fraction in (0, 1]", n)
    count = max(1, round(n * graph.n_edges)) if fraction else int(n)
    ranked = _ranking(scores)[:count]
    edges = frozenset(graph.edges[i] for i in ranked)
    faith = faithfulness(model, clean, corrupted, metric, edges, ablation=ablation, mean_tokens=mean_tokens,
                         memory_mb=memory_mb)
    faith = dataclasses.replace(faith, total=graph.n_edges)
    v = scores.values.detach().float().cpu().tolist()
    scored = tuple((e, float(x)) for e, x in zip(graph.edges, v, strict=True) if not math.isnan(x))
    return Circuit(graph, edges, faith, f"top-n {scores.method}", scored)


# -- ACDC --------------------------------------------------------------------------------------------------------
def _at(graph: Graph, flat: int) -> tuple[int, int | slice]:
    """(pair, position) of an edge of ``graph`` in a ``[pair, pos]`` keep mask (a position-free edge: every one)."""
    return (flat, slice(None)) if graph.n_pos is None else divmod(flat, graph.n_pos)


def _feeds(graph: Graph, keep: Tensor, flat: int) -> bool:
    """Whether the node that edge ``flat``'s receiver belongs to still has an out-edge its input reaches."""
    pair, pos = _at(graph, flat)
    name = graph.receivers[graph.pairs[pair][1]]
    if name == "logits":
        return True
    owner = graph.senders.index(name.split(".")[0])
    out = [i for i, (u, _) in enumerate(graph.pairs) if u == owner]
    if isinstance(pos, int) and name[-2:] in (".k", ".v"):  # a head's key and value at pos reach its output >= pos
        pos = slice(pos, None)
    return bool(keep[out, pos].any())


def _greedy(s: _Setup, graph: Graph, keep: Tensor, units: list[int], cur: float, threshold: float,
            tried: dict[int, float]) -> float:
    """Try removing each edge in order: it stays removed when the metric drops by < threshold of the gap.

    Speculative chains: copy j removes the next j + 1 edges; the scan stops at the first edge kept, and the next
    chain starts after it, so every decision is made on the state of the sequential pass. Returns the metric.
    """
    i, size = 0, min(s.cap, 32)
    while i < len(units):
        chain = units[i:i + size]
        keeps = keep[None].repeat(len(chain), 1, 1)
        for j, flat in enumerate(chain):
            keeps[(slice(j, None), *_at(graph, flat))] = 0.0
        values = s.values(keeps)
        for j, flat in enumerate(chain):
            tried[flat] = cur - values[j]
            if tried[flat] / s.gap < threshold:
                keep[_at(graph, flat)] = 0.0
                cur = values[j]
            else:
                i, size = i + j + 1, max(1, size // 2)
                break
        else:
            i, size = i + len(chain), min(s.cap, 2 * size)
    return cur


def acdc(model: Any, clean: Any, corrupted: Any, metric: Callable[[Tensor], Any], *, threshold: float = 0.01,
         per_position: bool = False, ablation: str = "corrupted", mean_tokens: Any = None,
         memory_mb: float = 512.0) -> Circuit:
    """ACDC (Conmy et al. 2023): from the logits backwards, remove each edge whose removal costs the metric less
    than ``threshold`` (a fraction of the clean-to-corrupted gap). The circuit's scores are the metric drops
    measured when each edge was tried (edges into a node that feeds nothing any more are removed untried).

    Receivers run in reverse topological order (per position, one receiver node per position, positions in order);
    the edges into one node with senders latest first."""
    if isinstance(threshold, bool) or not isinstance(threshold, (int, float)) or not 0 <= threshold < math.inf:
        raise invalid("threshold", "a finite fraction of the clean-to-corrupted gap >= 0", threshold)
    if not isinstance(per_position, bool):
        raise invalid("per_position", "True or False", per_position)
    s = _setup(model, clean, corrupted, metric, ablation, mean_tokens, memory_mb)
    n_pos = s.clean.shape[1]
    graph = Graph.of_model(model, n_pos=n_pos if per_position else None)
    per = n_pos if per_position else 1
    keep = torch.ones(len(graph.pairs), n_pos, device=s.clean.device)
    cur, tried = s.clean_value, dict[int, float]()
    for r in reversed(range(len(graph.receivers))):
        into = [i for i, (_, v) in enumerate(graph.pairs) if v == r][::-1]
        units = [i * per + p for p in range(per) for i in into]
        live = [f for f in units if _feeds(graph, keep, f)]
        for f in set(units) - set(live):
            keep[_at(graph, f)] = 0.0
        cur = _greedy(s, graph, keep, live, cur, float(threshold), tried)
    kept = [f for f in range(graph.n_edges) if bool(keep[_at(graph, f)].all())]
    faith = s.result(s.values(keep[None])[0], len(kept), graph.n_edges)
    return Circuit(graph, frozenset(graph.edges[f] for f in kept), faith, "acdc",
                   tuple((graph.edges[f], tried[f]) for f in sorted(tried)), float(threshold))
