"""A circuit search in one result: one method's edge scores, the circuit they pick, its faithfulness curve, and the
scores checked against exact edge patching, ready for a page to draw.

:func:`circuit_report` scores every edge of the model's graph (:mod:`mechwork.analysis.edges`: EAP, EAP-IG or exact
patching), keeps the top-n edges (:func:`mechwork.analysis.circuits.top_n`; by default the smallest n whose
circuit recovers 80% of the metric on the faithfulness curve) or runs ACDC, and, for an approximate method, checks
its scores against exact patching of every edge (up to :data:`EXACT_ALL` edges; a sample beyond), and ranks the
edges by exact scores both ways (denoising, and noising: each edge ablated alone in the clean run) on the same
curve. The
:class:`CircuitReport` draws the circuit as a layered graph and the curve
(:mod:`mechwork.analysis.circuitfig`); the induction and prompt dashboards and ``mechwork circuit`` show it.

Example::

    >>> import mechwork
    >>> from mechwork.analysis.circuitreport import circuit_report
    >>> from mechwork.tasks import standard_probe
    >>> model = mechwork.load("induction-2l", device="cpu")
    >>> pr = standard_probe(mechwork.preset("induction-2l").task, n=4)
    >>> report = circuit_report(model, pr.clean, pr.corrupted, pr.metric)
    >>> report.rule, report.circuit.faithfulness.recovered >= 0.8
    ('smallest', True)
"""

from __future__ import annotations

import math
from collections.abc import Callable
from dataclasses import dataclass
from typing import TYPE_CHECKING, Any

from mechwork.analysis.circuitfig import curve_figure, layered_graph
from mechwork.errors import ConfigError, invalid
from mechwork.graph import Graph
from mechwork.prompts import Prompts
from mechwork.results import Result

if TYPE_CHECKING:  # pragma: no cover
    import pandas as pd

__all__ = ["EXACT_ALL", "METHODS", "RULES", "TARGET", "CircuitReport", "circuit_report", "percent"]

METHODS = ("eap", "eap-ig", "exact", "acdc")
LABELS = {"eap": "EAP", "eap-ig": "EAP-IG", "exact": "exact", "acdc": "ACDC"}  # a method as figures name it
TARGET = 0.8  # the share of the metric a circuit is asked to recover
EXACT_ALL = 2_000  # exact patching runs over every edge up to this many; beyond, verify() samples
FALLBACK = 0.1  # without --top, and when no top-n circuit reaches TARGET: the top 10% of the edges
RULES = {"smallest": "the smallest top-n that recovers the target", "fallback": "no top-n recovers the target: the "
         f"top {FALLBACK:.0%} of the edges", "requested": "the requested size", "threshold": "ACDC's threshold"}


def percent(value: float, digits: int = 1) -> str:
    """``value`` as a percentage, float noise around zero printed as 0 (never ``-0.0%``).

    >>> percent(-2.7e-9), percent(0.919), percent(-0.25, 0)
    ('0.0%', '91.9%', '-25%')
    """
    return f"{0.0 if abs(value) < 0.5 * 10 ** -(digits + 2) else value:.{digits}%}"


@dataclass(frozen=True)
class CircuitReport(Result):
    """A circuit search, ready to draw: ``circuit`` (a :class:`~mechwork.analysis.circuits.Circuit`), the scores
    that ranked it, the faithfulness ``curve`` of the top-n edges by those scores (None for ACDC), the exact
    scores of every edge (``exact``, None beyond :data:`EXACT_ALL` edges) and the scores checked against exact
    patching (``check``, a :class:`~mechwork.analysis.edges.Verification`; None when the method is exact)."""

    method: str
    circuit: Any
    scores: Any = None  # EdgeScores (None for acdc: the circuit carries its own)
    curve: Any = None  # FaithfulnessCurve
    exact: Any = None  # EdgeScores, method "exact", over every edge
    check: Any = None  # Verification of `scores` against exact patching
    target: float = TARGET
    rule: str = "requested"  # how the size was chosen: one of RULES
    exact_curve: Any = None  # FaithfulnessCurve of the top-n by exact scores, at the same sizes (approximate methods)
    noising_curve: Any = None  # ... by noising exact scores (each edge ablated alone), when the scores are denoising

    @property
    def graph(self) -> Graph:
        graph: Graph = self.circuit.graph
        return graph

    def summary(self) -> str:
        f = self.circuit.faithfulness
        n, total = len(self.circuit.edges), self.graph.n_edges
        out = f"{self.method}: {n:,} of {total:,} edges ({n / total:.1%}) recover {percent(f.recovered)} of the metric"
        if self.check is not None:
            out += f"; Spearman rho against exact patching {self.check.spearman:.3f}"
        return out + f" ({RULES[self.rule]})"

    def to_frame(self) -> pd.DataFrame:
        """One row per edge: its score, its exact score (when computed) and whether the circuit keeps it."""
        import pandas as pd

        scores = dict(self.circuit.scores)
        exact = dict(zip(self.graph.edges, self.exact.values.tolist(), strict=True)) if self.exact is not None \
            else {}
        rows = self.graph.edges
        return pd.DataFrame({"edge": [str(e) for e in rows], "score": [scores.get(e, math.nan) for e in rows],
                             "exact": [exact.get(e, math.nan) for e in rows],
                             "kept": [e in self.circuit.edges for e in rows]})

    def figure(self) -> Any:
        """The circuit as a layered graph (:func:`layered_graph`)."""
        f = self.circuit.faithfulness
        return layered_graph(self.graph, dict(self.circuit.scores) or dict.fromkeys(self.circuit.edges, 1.0),
                             kept=self.circuit.edges,
                             title=f"{LABELS[self.method]} circuit, {percent(f.recovered)} of the metric recovered")

    def curve_figure(self) -> Any:
        """The faithfulness curve with the drawn circuit marked (None for ACDC)."""
        if self.curve is None:
            return None
        c, named = self.curve, (("top-n by exact score", self.exact_curve),
                                ("top-n by noising exact score", self.noising_curve))
        others = {name: (e.sizes, e.recovered) for name, e in named if e is not None}
        return curve_figure(c.sizes, c.recovered, total=c.total, target=self.target, chosen=len(self.circuit.edges),
                            others=others,
                            method=LABELS[self.method])


def _scores(model: Any, clean: Any, corrupted: Any, metric: Callable[..., Any], method: str, steps: int, on: str,
            kw: dict[str, Any]) -> Any:
    import mechwork.analysis.edges as edges

    if method == "exact":
        return edges.edge_patch(model, clean, corrupted, metric, **kw)
    if method == "eap":
        return edges.eap(model, clean, corrupted, metric, **kw)
    if kw["ablation"] != "corrupted":
        raise ConfigError(f"eap-ig interpolates between the corrupted and the clean input: it takes no "
                          f"ablation={kw['ablation']!r} (use eap or exact for mean or zero ablation)")
    return edges.eap_ig(model, clean, corrupted, metric, steps=steps, on=on, per_position=kw["per_position"],
                        direction=kw["direction"])


def _check_top(model: Any, clean: Any, top: Any, per_position: bool) -> None:
    """``top`` against the graph's edge count, before any edge is scored (one line)."""
    if top is None:
        return
    tokens = clean.batch() if isinstance(clean, Prompts) else clean
    n_pos = getattr(tokens, "shape", (0, 0))[-1] if per_position else None
    total = Graph.of_model(model, n_pos=n_pos or None).n_edges
    if isinstance(top, bool) or not ((isinstance(top, int) and 1 <= top <= total)
                                     or (isinstance(top, float) and 0 < top <= 1)):
        raise invalid("top", f"a number of edges in [1, {total:,}] or a fraction of them in (0, 1]", top)


def circuit_report(model: Any, clean: Any, corrupted: Any, metric: Callable[..., Any], *, method: str = "eap",
                   steps: int = 5, on: str = "inputs", threshold: float = 0.01, top: int | float | None = None,
                   per_position: bool = False, ablation: str = "corrupted", direction: str | None = None,
                   target: float = TARGET, exact_all: int = EXACT_ALL) -> CircuitReport:
    """Score every edge by ``method``, keep a circuit, measure its faithfulness, check the scores against exact.

    ``top``: the circuit's size (an int, or a fraction of the edges in (0, 1]); None: the smallest top-n on the
    faithfulness curve that recovers ``target`` of the metric, else the top :data:`FALLBACK` of the edges.
    ACDC keeps what its ``threshold`` keeps (``top`` and ``direction`` do not apply). ``direction``: the scores'
    (None: :mod:`mechwork.analysis.edges`'s default, denoising under corrupted ablation); the exact scores that
    check them go the same way.
    """
    import mechwork.analysis.circuits as circuits
    import mechwork.analysis.edges as edges

    if method not in METHODS:
        raise invalid("method", ", ".join(METHODS), method)
    _check_top(model, clean, top, per_position)
    if method == "acdc":
        if top is not None or direction is not None:
            raise ConfigError("acdc keeps the edges its threshold keeps: 'top' and 'direction' apply to eap, eap-ig "
                              "and exact")
        circuit = circuits.acdc(model, clean, corrupted, metric, threshold=threshold, per_position=per_position,
                                ablation=ablation)
        return CircuitReport(method, circuit, rule="threshold")
    kw = {"ablation": ablation, "per_position": per_position, "direction": direction}
    scores = _scores(model, clean, corrupted, metric, method, steps, on, kw)
    graph = scores.graph
    exact = scores if method == "exact" else edges.edge_patch(model, clean, corrupted, metric, **kw) \
        if graph.n_edges <= exact_all else None
    check = None if method == "exact" else edges.verify(scores, exact, sample=None) if exact is not None else \
        edges.verify(scores, edges.exact_patcher(model, clean, corrupted, metric, **kw))
    curve = circuits.faithfulness_curve(model, clean, corrupted, metric, scores, ablation=ablation)
    if top is None:
        best = curve.smallest(target)
        size: int | float = best if best is not None else FALLBACK
        rule = "smallest" if best is not None else "fallback"
    else:
        size, rule = top, "requested"
    circuit = circuits.top_n(model, clean, corrupted, metric, scores, size, ablation=ablation)
    exact_curve = None if exact is None or exact is scores else circuits.faithfulness_curve(
        model, clean, corrupted, metric, exact, sizes=curve.sizes, ablation=ablation)
    noising = None if exact is None or scores.direction != "denoising" else circuits.faithfulness_curve(
        model, clean, corrupted, metric, edges.edge_patch(model, clean, corrupted, metric, **kw | {
            "direction": "noising"}), sizes=curve.sizes, ablation=ablation)
    return CircuitReport(method, circuit, scores, curve, exact, check, target, rule, exact_curve, noising)
