"""The circuit drawn and said: the layered graph (every kept edge a trace, width monotone in |score|, colour by
sign, q/k/v ports, opens offline in Chromium), the circuit section's sentences each both ways on constructed
reports, and the real sections of the induction and prompt dashboards."""

from __future__ import annotations

import html
import math
import os
import re
import time
from dataclasses import dataclass, replace
from pathlib import Path
from types import SimpleNamespace as NS
from typing import Any

import pytest
import torch
from chromium_check import check_page, require_chromium
from test_figures import untitled

from mechwork.analysis.circuitfig import (
    MAX_WIDTH,
    MIN_WIDTH,
    NEGATIVE,
    NO_SCORE,
    POSITIVE,
    curve_figure,
    layered_graph,
    node_xy,
)
from mechwork.analysis.circuitreport import CircuitReport
from mechwork.dashboard.circuit import (
    AGREE,
    circuit_lines,
    circuit_section,
    curve_caption,
    negative_line,
    size_line,
    table_caption,
)
from mechwork.dashboard.induction import key_edges_line
from mechwork.dashboard.page import Page
from mechwork.errors import ConfigError
from mechwork.graph import Edge, Graph
from mechwork.results import Analysis, Result

ARTIFACTS = Path(os.environ.get("MECHWORK_ARTIFACTS", Path(__file__).parent / "artifacts"))


def random_scores(graph: Graph, seed: int = 0) -> dict[Edge, float]:
    g = torch.Generator().manual_seed(seed)
    return {e: float(v) for e, v in zip(graph.edges, torch.randn(graph.n_edges, generator=g), strict=True)}


def edge_traces(fig: Any) -> dict[str, Any]:
    return {t.meta["edge"]: t for t in fig.data if isinstance(t.meta, dict) and "edge" in t.meta}


# -- the layered graph -------------------------------------------------------------------------------------------
@pytest.mark.parametrize("graph", [Graph(2, 4, mlp=False), Graph(3, 4, mlp=True)], ids=["attn-only", "mlp"])
def test_layered_graph_draws_every_kept_edge_width_by_size_colour_by_sign(graph):
    scores = random_scores(graph)
    kept = [e for e, v in scores.items() if abs(v) > 0.8]
    nan_edge = kept[0]
    scores[nan_edge] = math.nan
    fig = layered_graph(graph, scores, kept=kept, title="t")
    traces = edge_traces(fig)
    assert set(traces) == {str(e) for e in kept}  # every kept edge, nothing else
    finite = sorted((abs(scores[e]), traces[str(e)].line.width) for e in kept if e != nan_edge)
    widths = [w for _, w in finite]
    assert widths == sorted(widths) and widths[-1] == MAX_WIDTH and widths[0] > MIN_WIDTH
    for e in kept:
        t, v = traces[str(e)], scores[e]
        want = NO_SCORE if e == nan_edge else POSITIVE if v >= 0 else NEGATIVE
        assert t.line.color == want, (e, v)
        assert str(e) in t.hovertext and (e == nan_edge or f"{v:+.4g}" in t.hovertext)
        # the edge runs from its sender to its receiver (a head's q/k/v port)
        assert (t.x[0], t.y[0]) == node_xy(graph, e.sender) and (t.x[-1], t.y[-1]) == node_xy(graph, e.receiver)
    assert traces[str(nan_edge)].line.width == MIN_WIDTH
    assert "blue positive, red negative" in fig.layout.title.text and "grey unscored" in fig.layout.title.text
    assert {t.name for t in fig.data if t.showlegend is not False} >= {"positive score", "negative score"}
    assert untitled(fig) == []


def test_the_ports_sit_left_of_their_head_q_above_k_level_v_below():
    g = Graph(2, 4, mlp=True)
    hx, hy = node_xy(g, "L1H2")
    (qx, qy), (kx, ky), (vx, vy) = (node_xy(g, f"L1H2.{c}") for c in "qkv")
    assert qx == kx == vx < hx and qy > ky == hy > vy
    assert node_xy(g, "input")[0] == -1 and node_xy(g, "logits")[0] == 2 and node_xy(g, "MLP1")[0] > hx


def test_without_kept_the_largest_are_drawn_and_per_position_scores_are_summed():
    g = Graph(2, 4, mlp=False)
    scores = random_scores(g)
    fig = layered_graph(g, scores, max_edges=10)
    largest = sorted(scores, key=lambda e: -abs(scores[e]))[:10]
    assert set(edge_traces(fig)) == {str(e) for e in largest}
    gp = Graph(2, 4, mlp=False, n_pos=3)
    per = {e: 1.0 if e.pos == 0 else -0.25 for e in gp.edges}  # each pair: 1 - 0.25 - 0.25 = 0.5
    summed = edge_traces(layered_graph(gp, per, max_edges=len(gp.pairs)))["L0H0->L1H2.k"]
    assert summed.meta["score"] == pytest.approx(0.5) and "positions 0, 1, 2" in summed.hovertext
    # a circuit that keeps the edge at position 1 only is drawn with that position's score only
    traces = edge_traces(layered_graph(gp, per, kept=["L0H0->L1H2.k@1"]))
    assert list(traces) == ["L0H0->L1H2.k"] and traces["L0H0->L1H2.k"].meta["score"] == pytest.approx(-0.25)
    assert "positions 1" in traces["L0H0->L1H2.k"].hovertext and "0, 1" not in traces["L0H0->L1H2.k"].hovertext
    whole = edge_traces(layered_graph(gp, per, kept=["L0H0->L1H2.k"]))["L0H0->L1H2.k"]  # every position
    assert whole.meta["score"] == pytest.approx(0.5)


def test_an_edge_outside_the_graph_is_one_line():
    g = Graph(2, 4, mlp=False)
    for bad in ("L1H0->L0H1.k", "MLP0->logits"):
        with pytest.raises(ConfigError) as e:
            layered_graph(g, {bad: 1.0})
        assert bad in str(e.value) and "\n" not in str(e.value)


def test_the_curve_marks_the_target_and_the_chosen_circuit():
    fig = curve_figure([1, 4, 9, 81], [0.1, 0.6, 0.85, 1.0], total=81, chosen=9, method="eap")
    marked = [t for t in fig.data if t.name and t.name.startswith("the circuit drawn")]
    assert len(marked) == 1 and list(marked[0].x) == [9] and list(marked[0].y) == [0.85]
    assert any(s.y0 == 0.8 for s in fig.layout.shapes) and untitled(fig) == []
    assert not [t for t in curve_figure([1, 4], [0.1, 0.6], total=81, chosen=9).data if t.name.startswith("the c")]
    two = curve_figure([1, 4], [0.1, 0.6], total=81, others={"top-n by exact score": ([1, 4], [0.3, 0.9])})
    assert [t.name for t in two.data] == ["top-n circuit", "top-n by exact score"]
    assert list(two.data[1].y) == [0.3, 0.9] and two.data[1].line.dash == "dash"


def test_the_layered_graph_opens_offline_in_one_file(tmp_path):
    require_chromium()
    g = Graph(3, 4, mlp=True)
    scores = random_scores(g, seed=1)
    page = Page("circuit").plotly(layered_graph(g, scores, kept=list(scores)[:40], title="drawn"), title="graph")
    page.plotly(curve_figure([1, 10, 100, g.n_edges], [0.2, 0.5, 0.9, 1.0], total=g.n_edges, chosen=100))
    out = page.save(tmp_path / "circuit.html")
    r = check_page(out, screenshot=ARTIFACTS / "circuit-graph.png", timeout_s=60)
    assert r.plotly_mounts == r.plotly_drawn == 2, r
    assert r.console_errors == [] and r.page_errors == [] and r.requests == [], r


# -- the sentences, both ways, on constructed reports ------------------------------------------------------------
@dataclass(frozen=True)
class FakeCheck(Result):
    spearman: float
    largest_miss: tuple[Edge, float, float]
    topk_overlap: float
    k: int
    n_checked: int

    def summary(self) -> str:
        return f"rho {self.spearman}"

    def figure(self) -> Any:
        import plotly.graph_objects as go

        return go.Figure(go.Scatter(x=[1], y=[1])).update_layout(xaxis_title="eap", yaxis_title="exact")


G = Graph(2, 4, mlp=False)
K = Edge("L0H0", "L1H2.k")


def report(rule: str = "smallest", recovered: float = 0.85, method: str = "eap", check: Any = None,
           scores: dict[Edge, float] | None = None, kept: tuple[Edge, ...] = (K,), threshold: float | None = None,
           curve: Any = None) -> CircuitReport:
    scores = {K: 2.0, Edge("L0H3", "L1H2.k"): 1.0, Edge("L1H2", "logits"): 0.5} if scores is None else scores
    faith = NS(recovered=recovered, clean_value=3.0, corrupted_value=0.0, ablation="corrupted")
    circuit = NS(graph=G, edges=frozenset(kept), faithfulness=faith, scores=tuple(scores.items()),
                 threshold=threshold)
    return CircuitReport(method, circuit, None, curve, None, check, 0.8, rule)


def test_size_line_says_how_the_size_was_chosen_and_whether_it_reaches_the_target():
    assert "the smallest top-n circuit on the faithfulness curve that reaches 80%" in size_line(report("smallest"))
    fb = size_line(report("fallback", recovered=0.5))
    assert fb.startswith("No top-n circuit on the faithfulness curve recovers 80%") and "**50.0%**" in fb
    assert "smallest" not in fb
    assert "at least the 80%" in size_line(report("requested", 0.9))
    assert "recover **0.0%** of the metric" in size_line(report("requested", -2.7e-9))  # float noise, not -0.0%
    assert "by EAP score" in size_line(report()) and "noising" not in size_line(report())
    assert "by noising EAP score" in size_line(replace(report(), scores=NS(direction="noising")))
    assert "short of the 80%" in size_line(report("requested", 0.7))
    acdc = size_line(report("threshold", method="acdc", threshold=0.02))
    assert acdc.startswith("ACDC (threshold 0.02") and "keeps **1** edges (1.2% of the 81)" in acdc


def test_check_line_agrees_or_names_the_largest_miss():
    agree = FakeCheck(0.95, (K, 1.0, 2.0), 0.9, 10, G.n_edges)
    lines = circuit_lines(report(check=agree))
    assert any("EAP ranks the edges as exact patching does: Spearman ρ = 0.950 over every one of the 81" in s
               and "holds 90% of exact patching's top 10" in s for s in lines)
    assert not any("departs" in s for s in lines)
    miss = replace(agree, spearman=AGREE - 0.01, n_checked=50)
    lines = circuit_lines(report(check=miss))
    assert any("EAP's ranking departs from exact patching" in s and "L0H0->L1H2.k (EAP +1, exact +2)" in s
               and "its top 10 and a random sample (50 of 81 edges)" in s for s in lines)
    assert not any("ranks the edges as exact" in s for s in lines)
    assert any("The scores are exact: each edge patched alone" in s for s in circuit_lines(report(method="exact")))
    noising = replace(report(method="exact"), scores=NS(direction="noising"))
    assert any("each edge ablated alone in the clean run" in s for s in circuit_lines(noising))
    assert not any("exact" in s.lower() for s in circuit_lines(report(check=None)))


def test_exact_curve_line_says_how_many_edges_exact_ranking_needs_or_that_none_reach():
    from mechwork.dashboard.circuit import exact_curve_line

    assert exact_curve_line(report()) is None
    reach = NS(smallest=lambda target: 12 if target == 0.8 else None)
    assert exact_curve_line(replace(report(), exact_curve=reach)) == (
        "Ranked by exact scores instead, the smallest top-n circuit that reaches 80% has **12** edges (14.8%).")
    never = NS(smallest=lambda target: None)
    assert exact_curve_line(replace(report(), exact_curve=never)) == (
        "Ranked by exact scores instead, no top-n circuit on the curve reaches 80%.")


def test_noising_line_says_how_many_edges_noising_ranking_needs_or_that_none_reach():
    from mechwork.dashboard.circuit import noising_line

    assert noising_line(report()) is None
    reach = replace(report(), noising_curve=NS(smallest=lambda target: 25 if target == 0.8 else None))
    line = noising_line(reach)
    assert line is not None and line.startswith("Ranked by noising exact scores (each edge ablated alone")
    assert line.endswith("the smallest top-n circuit that reaches 80% has **25** edges (30.9%).")
    never = noising_line(replace(report(), noising_curve=NS(smallest=lambda target: None)))
    assert never is not None and never.endswith("no top-n circuit on the curve reaches 80%.")


def test_negative_line_only_when_a_kept_edge_is_negative():
    neg = Edge("L1H2", "logits")
    assert negative_line(report(kept=(K,))) is None
    line = negative_line(report(scores={K: 2.0, neg: -0.5}, kept=(K, neg)))
    assert line is not None and line.startswith("1 of the circuit's edges have a negative score (L1H2->logits)")
    assert "by its EAP score, each moves" in line
    exact = negative_line(report(scores={K: 2.0, neg: -0.5}, kept=(K, neg), method="exact"))
    assert exact is not None and "patched alone, each moves" in exact
    assert negative_line(report("threshold", scores={K: 2.0, neg: -0.5}, kept=(K, neg), method="acdc")) is None
    noising = replace(report(scores={K: -2.0, neg: 0.5}, kept=(K, neg)), scores=NS(direction="noising"))
    line = negative_line(noising)  # a noising score is the change when the edge is ablated: positive opposes
    assert line is not None and line.startswith("1 of the circuit's edges have a positive noising score "
                                                "(L1H2->logits): by its noising EAP score")
    assert negative_line(replace(noising, circuit=report(scores={K: -2.0}).circuit)) is None
    below = report(scores={K: 2.0, neg: -0.5}, kept=(K, neg))  # clean below corrupted: a positive score opposes
    below.circuit.faithfulness.clean_value = -1.0
    line = negative_line(below)
    assert line is not None and line.startswith("1 of the circuit's edges have a positive score (L0H0->L1H2.k), and "
                                                "the clean metric is below the corrupted one: by its EAP score")


def test_negative_line_for_exact_noising_scores_says_ablated():
    neg = Edge("L1H2", "logits")
    noising = replace(report(scores={K: -2.0, neg: 0.5}, kept=(K, neg), method="exact"), scores=NS(direction="noising"))
    line = negative_line(noising)
    assert line is not None and "ablated alone, each moves" in line and "patched" not in line


def test_curve_and_table_captions_name_the_direction_both_ways():
    den, noi = report(), replace(report(), scores=NS(direction="noising"))
    assert "top n edges by EAP score" in curve_caption(den)
    assert "top n edges by noising EAP score" in curve_caption(noi)
    assert table_caption(den, 3) == "The 3 kept edges, largest |score| first"  # no exact column to explain
    with_exact = replace(den, exact=object())
    assert table_caption(with_exact, 3).endswith("patching that edge alone into the corrupted run")
    assert table_caption(replace(with_exact, scores=NS(direction="noising")), 3).endswith(
        "ablating that edge alone in the clean run")


def test_key_edges_line_holds_lacks_or_says_nothing():
    prev, ind = [(0, 0, 0.9), (0, 3, 0.8)], [(1, 2, 0.7)]
    both = {"L0H0->L1H2.k", "L0H3->L1H2.k"}
    assert "holds every edge" in key_edges_line(both, prev, ind)
    lacks = key_edges_line({"L0H0->L1H2.k"}, prev, ind)
    assert lacks is not None and "lacks 1 of the 2" in lacks and "L0H3->L1H2.k" in lacks and "holds" not in lacks
    assert key_edges_line(both, [], ind) is None and key_edges_line(both, [(1, 0, 0.9)], ind) is None


def test_the_section_draws_the_report_or_says_why_there_is_none():
    from mechwork.analysis.prompt import NotApplicable
    from mechwork.source import SourceInfo

    info = SourceInfo("demo", "preset", None, None, None, None, {}, None)
    curve = NS(sizes=(1, 2, 3), recovered=(0.85, 0.9, 1.0), total=81)
    full = report(check=FakeCheck(0.95, (K, 1.0, 2.0), 0.9, 10, 81), curve=curve)
    page = circuit_section(Page("x"), Analysis(info, {"circuit": full}))
    titles = [b.title for b in page.blocks]
    assert titles == ["Circuit", "Circuit: the layered graph", "Circuit: faithfulness against size",
                      "Circuit: EAP against exact patching", "Circuit: its edges"]
    no_curve = circuit_section(Page("x"), Analysis(info, {"circuit": report()}))
    assert [b.title for b in no_curve.blocks] == ["Circuit", "Circuit: the layered graph", "Circuit: its edges"]
    why = NotApplicable("circuit discovery", "the corruption barely moves the metric")
    page = circuit_section(Page("x"), Analysis(info, {"circuit": why}))
    assert len(page.blocks) == 1 and "barely moves" in page.blocks[0].body
    assert "has no circuit" in circuit_section(Page("x"), Analysis(info, {})).blocks[0].body


# -- the real sections ---------------------------------------------------------------------------------------------
def test_the_induction_bundle_holds_the_standard_probes_circuit_and_the_page_draws_it(tmp_path):
    require_chromium()
    from mechwork.dashboard.induction import induction_page
    from mechwork.dashboard.standard import analyse
    from mechwork.source import open_source

    start = time.perf_counter()
    bundle = analyse(open_source("induction-2l"))
    built = time.perf_counter() - start
    rep = bundle["circuit"]
    assert isinstance(rep, CircuitReport) and rep.method == "eap" and rep.graph.n_pos is None
    assert rep.exact is not None and rep.check is not None and rep.check.n_checked == rep.graph.n_edges == 81
    assert rep.curve is not None and rep.exact_curve is not None and rep.exact_curve.sizes == rep.curve.sizes
    assert rep.noising_curve is not None and rep.noising_curve.sizes == rep.curve.sizes
    assert rep.noising_curve.smallest(0.8) < rep.exact_curve.smallest(0.8)  # noising ranks for faithfulness better
    n = rep.curve.smallest(0.8)  # the circuit drawn: the smallest top-n on the curve that recovers 80%
    assert rep.rule == "smallest" and n == len(rep.circuit.edges) and rep.circuit.faithfulness.recovered >= 0.8
    print(f"induction-2l: {rep.summary()}; by exact scores: {rep.exact_curve.smallest(0.8)} edges, by noising "
          f"exact scores {rep.noising_curve.smallest(0.8)}")
    page = induction_page(bundle)
    out = page.save(tmp_path / "induction.html")
    r = check_page(out, screenshot=ARTIFACTS / "induction-circuit.png", timeout_s=120)
    print(f"induction-2l: analysed in {built:.1f} s, page {out.stat().st_size:,} bytes")
    assert r.plotly_drawn == r.plotly_mounts == sum(b.kind == "plotly" for b in page.blocks), r
    assert r.console_errors == [] and r.page_errors == [] and r.requests == [], r
    text = html.unescape(re.sub(r"<[^>]+>", "", out.read_text()))
    assert "Circuit of the standard probe: the layered graph" in text
    det = bundle["detectors"]
    line = key_edges_line(rep.circuit, det.top("previous_token", 0.5), det.top("induction", 0.5))
    assert line is not None and line in text  # the detectors name both kinds of head
    for sentence in circuit_lines(rep):
        assert sentence.replace("**", "") in text


@pytest.mark.parametrize("name", ["gpt2", "llama"])
def test_the_prompt_page_of_a_pair_draws_the_pairs_circuit(four_models, name):
    import mechwork
    from mechwork.analysis.prompt import NotApplicable, analyse_prompts
    from mechwork.dashboard.prompt import prompt_page

    model = mechwork.load(four_models[name], device="cpu")
    clean = "when mary and john went to the store john gave a drink to"
    pair = (clean, "when mary and john went to the store mary gave a drink to")
    start = time.perf_counter()
    bundle = analyse_prompts(model, None, pair)
    print(f"{name}: prompt analysis with its circuit in {time.perf_counter() - start:.1f} s")
    rep = bundle["circuit"]
    assert isinstance(rep, CircuitReport) and rep.graph == Graph.of_model(model), rep
    assert rep.check.n_checked == rep.graph.n_edges and rep.exact is not None
    f = rep.circuit.faithfulness
    assert (f.clean_value, f.corrupted_value) == pytest.approx((bundle["metric"].clean_value,
                                                                bundle["metric"].corrupted_value), abs=1e-4)
    titles = [b.title for b in prompt_page(bundle).blocks]
    assert "Circuit of the pair: the layered graph" in titles and "Circuit of the pair: faithfulness against size" \
        in titles
    same = analyse_prompts(model, None, (clean, clean))  # no gap: no circuit, and the page says why
    assert isinstance(same["circuit"], NotApplicable) and "barely moves" in same["circuit"].reason
    notes = [b.body for b in prompt_page(same).blocks if b.title == "Circuit of the pair"]
    assert len(notes) == 1 and "barely moves" in notes[0]
