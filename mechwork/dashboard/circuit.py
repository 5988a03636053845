"""The circuit section of a page: a circuit report drawn as a layered graph, its faithfulness curve, its check
against exact patching, and sentences each chosen by a condition on the numbers.

:func:`circuit_section` adds the section to a page from a bundle's ``circuit`` result (a
:class:`~mechwork.analysis.circuitreport.CircuitReport`, or a :class:`~mechwork.analysis.prompt.NotApplicable`
saying why there is none); :func:`circuit_lines` are its sentences; :func:`circuit_page` is the one-section
page ``mechwork circuit --out`` writes. Like every page, it renders results and never sees a model.

Example::

    >>> from mechwork.dashboard.circuit import circuit_lines
    >>> from mechwork.graph import Edge, Graph
    >>> from types import SimpleNamespace as NS
    >>> g = Graph(2, 4, mlp=False)
    >>> circuit = NS(graph=g, edges=frozenset({Edge("L0H0", "L1H2.k")}), scores=((Edge("L0H0", "L1H2.k"), 1.0),),
    ...              faithfulness=NS(recovered=0.85, clean_value=3.0, corrupted_value=0.0), threshold=None)
    >>> report = NS(method="eap", circuit=circuit, check=None, target=0.8, rule="smallest", graph=g, exact=None,
    ...             scores=None, exact_curve=None, noising_curve=None)
    >>> circuit_lines(report)[0]
    'The top **1** edges by EAP score (1.2% of the 81) recover **85.0%** of the metric: the smallest top-n circuit \
on the faithfulness curve that reaches 80%.'
"""

from __future__ import annotations

from typing import TYPE_CHECKING, Any

from mechwork.analysis.circuitreport import percent
from mechwork.dashboard.page import Page

if TYPE_CHECKING:  # pragma: no cover
    from mechwork.results import Analysis

__all__ = ["AGREE", "circuit_lines", "circuit_page", "circuit_section", "negligible"]

AGREE = 0.9  # a Spearman rho at or above this: the approximation ranks edges as exact patching does
NEGLIGIBLE_GAP = 1e-3  # as patching: a gap under this share of the metric's scale is no gap
NAMES = {"eap": "EAP", "eap-ig": "EAP-IG", "exact": "exact patching", "acdc": "ACDC"}
SCORE_NAMES = {"eap": "EAP", "eap-ig": "EAP-IG", "exact": "exact"}  # "by ... score"


def negligible(clean: float, corrupted: float) -> bool:
    """True when the clean and corrupted metric differ by under 1e-3 of their scale (at least 1)."""
    return not abs(clean - corrupted) >= NEGLIGIBLE_GAP * max(1.0, abs(clean), abs(corrupted))


def size_line(report: Any) -> str:
    """How big the circuit is, how it was chosen, and how much of the metric it recovers."""
    c = report.circuit
    n, total, rec = len(c.edges), report.graph.n_edges, c.faithfulness.recovered
    share = f"{n / total:.1%} of the {total:,}"
    if report.rule == "threshold":
        return (f"ACDC (threshold {c.threshold:g} of the clean-to-corrupted gap) keeps **{n:,}** edges ({share}), "
                f"which recover **{percent(rec)}** of the metric.")
    noising = "noising " if getattr(report.scores, "direction", None) == "noising" else ""
    by = noising + SCORE_NAMES.get(report.method, report.method)
    body = f"top **{n:,}** edges by {by} score ({share}) recover **{percent(rec)}** of the metric"
    if report.rule == "smallest":
        return f"The {body}: the smallest top-n circuit on the faithfulness curve that reaches {report.target:.0%}."
    if report.rule == "fallback":
        return f"No top-n circuit on the faithfulness curve recovers {report.target:.0%} of the metric; the {body}."
    reach = "at least" if rec >= report.target else "short of"
    return f"The {body}, {reach} the {report.target:.0%} asked of a circuit."


def check_line(report: Any) -> str | None:
    """Whether the scores rank the edges as exact patching does (None when they are exact, or unchecked)."""
    if report.method == "exact":
        alone = "ablated alone in the clean run" if getattr(report.scores, "direction", None) == "noising" else \
            "patched alone"
        return f"The scores are exact: each edge {alone}, every other edge left as it is."
    v = report.check
    if v is None:
        return None
    name, total = NAMES.get(report.method, report.method), report.graph.n_edges
    over = f"every one of the {total:,} edges" if v.n_checked >= total else \
        f"its top {v.k} and a random sample ({v.n_checked:,} of {total:,} edges)"
    if v.spearman >= AGREE:
        return (f"{name} ranks the edges as exact patching does: Spearman ρ = {v.spearman:.3f} over {over}; its top "
                f"{v.k} holds {v.topk_overlap:.0%} of exact patching's top {v.k}.")
    edge, approx, exact = v.largest_miss
    return (f"{name}'s ranking departs from exact patching: Spearman ρ = {v.spearman:.3f} over {over} (under "
            f"{AGREE}); the largest miss is {edge} ({name} {approx:+.3g}, exact {exact:+.3g}).")


def exact_curve_line(report: Any) -> str | None:
    """How the top-n by exact scores fares on the same curve (None when it was not computed)."""
    e = report.exact_curve
    if e is None:
        return None
    n, total = e.smallest(report.target), report.graph.n_edges
    if n is None:
        return f"Ranked by exact scores instead, no top-n circuit on the curve reaches {report.target:.0%}."
    return (f"Ranked by exact scores instead, the smallest top-n circuit that reaches {report.target:.0%} has "
            f"**{n:,}** edges ({n / total:.1%}).")


def noising_line(report: Any) -> str | None:
    """How the top-n by noising exact scores fares on the curve (None when it was not computed)."""
    e = getattr(report, "noising_curve", None)
    if e is None:
        return None
    n, total = e.smallest(report.target), report.graph.n_edges
    head = ("Ranked by noising exact scores (each edge ablated alone in the clean run, as faithfulness ablates the "
            "edges outside a circuit),")
    if n is None:
        return f"{head} no top-n circuit on the curve reaches {report.target:.0%}."
    return f"{head} the smallest top-n circuit that reaches {report.target:.0%} has **{n:,}** edges ({n / total:.1%})."


def negative_line(report: Any) -> str | None:
    """How many kept edges score against the clean-minus-corrupted gap, i.e. move the metric away from clean
    (None when none does, and for ACDC, whose scores are drops)."""
    f = report.circuit.faithfulness
    gap = f.clean_value - f.corrupted_value
    noising = getattr(report.scores, "direction", None) == "noising"
    toward = -gap if noising else gap  # the sign of a score that moves the metric toward clean
    scores = dict(report.circuit.scores)
    neg = sorted(e for e in report.circuit.edges if scores.get(e, 0.0) * toward < 0)
    if not neg or report.method == "acdc":
        return None
    sign = "negative" if toward > 0 else "positive"
    below = "" if gap > 0 else ", and the clean metric is below the corrupted one"
    shown = ", ".join(str(e) for e in neg[:4]) + (", ..." if len(neg) > 4 else "")
    how = f"{'ablated' if noising else 'patched'} alone" if report.method == "exact" else \
        f"by its {'noising ' if noising else ''}{SCORE_NAMES.get(report.method)} score"
    return (f"{len(neg)} of the circuit's edges have a {sign} {'noising ' if noising else ''}score ({shown}){below}: "
            f"{how}, each moves the metric away from clean on its own.")


def _noising(report: Any) -> bool:
    return getattr(report.scores, "direction", None) == "noising"


def curve_caption(report: Any) -> str:
    """What a point of the faithfulness curve is: the top n by the report's (noising or denoising) score."""
    by = ("noising " if _noising(report) else "") + SCORE_NAMES.get(report.method, report.method)
    return (f"Each point keeps the top n edges by {by} score and ablates every other edge "
            f"({report.circuit.faithfulness.ablation}); 1 is the clean metric, 0 the corrupted one.")


def table_caption(report: Any, n: int) -> str:
    """The kept-edge table's caption; what its exact column measures, in the scores' direction."""
    out = f"The {n:,} kept edges, largest |score| first"
    if report.exact is None:
        return out
    how = "ablating that edge alone in the clean run" if _noising(report) else \
        "patching that edge alone into the corrupted run"
    return out + f"; exact: the metric change of {how}"


def circuit_lines(report: Any) -> list[str]:
    """The section's sentences, each chosen by a condition on the report's numbers."""
    lines = (size_line(report), check_line(report), exact_curve_line(report), noising_line(report),
             negative_line(report))
    return [s for s in lines if s is not None]


def circuit_section(page: Page, bundle: Analysis, *, key: str = "circuit", title: str = "Circuit",
                    lines: list[str] | None = None) -> Page:
    """The circuit of ``bundle[key]``: sentences, the layered graph, the curve, the check, the kept edges.

    ``lines``: sentences of the caller's to add after the section's own (e.g. the induction page's).
    """
    report = bundle.get(key)
    if report is None:
        return page.note("This analysis has no circuit.", title=title)
    if not hasattr(report, "circuit"):  # a NotApplicable: why there is none
        return page.note(report.summary(), title=title)
    page.markdown("\n\n".join(circuit_lines(report) + list(lines or [])), title=title)
    page.plotly(report.figure(), title=f"{title}: the layered graph",
                caption="Hover an edge for its score and rank, a node for the sum of its drawn out-edges.")
    curve = report.curve_figure()
    if curve is not None:
        page.plotly(curve, title=f"{title}: faithfulness against size", caption=curve_caption(report))
    if report.check is not None:
        page.result(report.check, title=f"{title}: {NAMES.get(report.method, report.method)} against exact patching",
                    caption=report.check.summary())
    frame = report.to_frame()
    frame = frame[frame["kept"]].drop(columns=["kept"]).sort_values("score", key=abs, ascending=False)
    return page.table(frame, title=f"{title}: its edges", max_rows=50,
                      caption=table_caption(report, len(frame)))


def circuit_page(report: Any, name: str, probe: str) -> Page:
    """The one-section page of ``mechwork circuit --out``: the circuit of ``name`` on ``probe`` (words)."""
    from mechwork.results import Analysis
    from mechwork.source import SourceInfo

    page = Page(f"Circuit: {name}", subtitle=f"{NAMES.get(report.method, report.method)}; {probe}")
    info = SourceInfo(name, "bridge", None, None, None, None, {}, None)  # type: ignore[arg-type]
    return circuit_section(page, Analysis(info, {"circuit": report}))
