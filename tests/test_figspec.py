"""Figures built as plain dicts (mechwork.analysis.figspec) are the figures plotly's own API builds: the SAE
feature pages' parts and the training curves against make_subplots / add_trace / update_* written out here, and
every dict left unchanged when plotly validates it (go.Figure(spec))."""

from __future__ import annotations

import json
import math
from typing import Any

import pandas as pd
import plotly.graph_objects as go
import plotly.io as pio
import pytest
from plotly.subplots import make_subplots

from mechwork.analysis.figspec import on, subplots, typed
from mechwork.dashboard import Page
from mechwork.dashboard.figures import TrainingCurves
from mechwork.source import open_source


def as_json(fig: Any) -> Any:
    """What a page stores of a figure (Page.plotly's conversion)."""
    return json.loads(pio.to_json(fig, validate=False, remove_uids=True))


@pytest.fixture(scope="module")
def reports():
    from mechwork.tasks import induction, modadd

    return {"modadd-113": modadd.sae(open_source("modadd-113")).features,
            "induction-2l": induction.sae(open_source("induction-2l")).features}


def by_plotly_grid(r: Any, i: int) -> Any:
    """A latent's (a, b) grid figure through make_subplots and add_trace."""
    g, e = r.grid, r.grid.energy[i]
    fig = make_subplots(rows=1, cols=2, subplot_titles=("activation over (a, b)", "energy per frequency"),
                        horizontal_spacing=0.2)
    fig.add_trace(go.Heatmap(z=g.acts[i].numpy().astype("float32"), colorscale="Blues",
                             colorbar={"x": 0.41, "thickness": 14, "title": {"text": "activation"}}, name="activation",
                             hovertemplate="a=%{y}, b=%{x}: %{z:.3g}<extra></extra>"), row=1, col=1)
    k = list(range(1, len(e) + 1))
    fig.add_trace(go.Bar(x=k, y=e.tolist(), name="energy", marker_color=[
        "#d62728" if j == int(e.argmax()) + 1 else "#1f77b4" for j in k]), row=1, col=2)
    fig.update_yaxes(title_text="a", autorange="reversed", row=1, col=1)
    fig.update_xaxes(title_text="b", row=1, col=1)
    fig.update_xaxes(title_text="frequency k", row=1, col=2)
    fig.update_yaxes(title_text="share of non-constant energy", range=[0, 1], row=1, col=2)
    return fig.update_layout(title=f"Latent {r.latents[i]} over the (a, b) grid: frequency {int(e.argmax()) + 1} "
                                   f"holds {float(e.max()):.1%} of the non-constant energy", height=420)


def by_plotly_histogram(r: Any, i: int) -> Any:
    edges, counts = r.hist_edges[i], r.hist_counts[i]
    lat = r.latents[i]
    fig = go.Figure(go.Bar(x=((edges[1:] + edges[:-1]) / 2).tolist(), y=counts.tolist(),
                           width=float(edges[1] - edges[0]), marker_color="#2b6cb0", name="activations"))
    return fig.update_layout(title=f"Latent {lat}: nonzero activations ({r.firing(i):,} of {r.n_acts:,}, density "
                                   f"{float(r.density_all[lat]):.3%})", xaxis_title="activation", yaxis_title="count",
                             bargap=0.02)


def by_plotly_logits(r: Any, i: int) -> Any:
    up, down = r.tokens(i, 10), r.tokens(i, 10, bottom=True)[::-1]
    pairs = sorted(up + [t for t in down if t not in up], key=lambda tv: tv[1])
    fig = go.Figure(go.Bar(x=[v for _, v in pairs], y=[f"'{t}'" for t, _ in pairs], orientation="h",
                           marker_color=["#d62728" if v < 0 else "#2ca02c" for _, v in pairs], name="logit"))
    return fig.update_layout(title=f"Latent {r.latents[i]}: logit effect (10 top and bottom tokens)",
                             xaxis_title=r.logit_path.split(":")[0], yaxis_title="token",
                             height=max(380, 18 * len(pairs)))


@pytest.mark.parametrize("name", ["modadd-113", "induction-2l"])
def test_feature_page_parts_are_plotlys_figures(reports, name):
    r = reports[name]
    parts = {"histogram": by_plotly_histogram, "logits": by_plotly_logits}
    if r.grid is not None:
        parts["grid"] = by_plotly_grid
    assert ("grid" in parts) == (name == "modadd-113")
    for i in range(len(r.latents)):
        for part, build in parts.items():
            spec = r.figure_spec(i, part)
            assert as_json(spec) == as_json(build(r, i)), (part, i)  # what a page stores, to the last digit
            assert as_json(go.Figure(spec)) == as_json(spec)  # plotly's validation changes nothing
            assert as_json(r.figure(i, part)) == as_json(spec)
    assert as_json(r.figure_spec(0)) == as_json(r.figure(0))  # "all": through figure()


@pytest.mark.parametrize("spans", [[], [("memorisation", 0, 10), ("cleanup", 10, 100)]])
def test_training_curves_are_plotlys_figure(spans):
    from mechwork.analysis.progress import PHASE_COLOURS

    df = pd.DataFrame({"step": [0, 10, 100, 1000], "train_loss": [4.0, 1.0, 0.01, 0.001],
                       "test_loss": [4.0, 2.0, 0.5, 0.01], "train_acc": [0.1, 0.5, 1.0, 1.0],
                       "test_acc": [0.0, 0.2, 0.6, 0.99]})
    fig = make_subplots(rows=1, cols=2, subplot_titles=("loss", "accuracy"))
    for col, (y0, y1, legend) in enumerate(((0.0005, 4.0, True), (0.0, 1.02, False)), start=1):
        for name, lo, hi in spans:
            x0, x1 = max(lo, 1), max(hi, lo, 1)
            fig.add_scatter(x=[x0, x1, x1, x0, x0], y=[y0, y0, y1, y1, y0], fill="toself",
                            fillcolor=PHASE_COLOURS[name], mode="none", name=name, legendgroup=name,
                            showlegend=legend, hoverinfo="name", row=1, col=col)
    x = [10, 100, 1000]
    for run, colour in (("train", "#1f77b4"), ("test", "#d62728")):
        fig.add_scatter(x=x, y=df[f"{run}_loss"][1:].tolist(), name=f"{run} loss", line_color=colour, row=1, col=1)
        fig.add_scatter(x=x, y=df[f"{run}_acc"][1:].tolist(), name=f"{run} accuracy", line_color=colour,
                        line_dash="dot", row=1, col=2)
    fig.update_xaxes(type="log", title_text="step", range=[1.0, math.log10(1000)])
    fig.update_yaxes(type="log", title_text="cross-entropy loss (log scale)", row=1, col=1)
    fig.update_yaxes(range=[0, 1.02], title_text="accuracy", row=1, col=2)
    fig.update_layout(title="Training curves (log scale; phases shaded)" if spans else "Training curves (log scale)",
                      height=420)
    curves = TrainingCurves(df, spans)
    assert as_json(curves.figure_spec()) == as_json(fig)
    assert as_json(go.Figure(curves.figure_spec())) == as_json(curves.figure_spec())
    # a page draws the dict: what it stores is what the figure would give
    assert Page("a").result(curves, summary=False).blocks[-1].body == Page("a").plotly(fig).blocks[-1].body


@pytest.mark.parametrize("rows,cols,titles,options", [(1, 2, ("l", "r"), {"horizontal_spacing": 0.2}),
                                                      (2, 3, None, {}), (1, 4, tuple("abcd"), {})])
def test_subplots_is_make_subplots(rows, cols, titles, options):
    fig = make_subplots(rows=rows, cols=cols, subplot_titles=titles, **options)
    for r in range(1, rows + 1):
        for c in range(1, cols + 1):
            fig.add_bar(x=[1], y=[r * c], row=r, col=c)
    spec = {"data": [on(r, c, cols, {"x": [1], "y": [r * c], "type": "bar"}) for r in range(1, rows + 1)
                     for c in range(1, cols + 1)], "layout": subplots(rows, cols, titles, **options)}
    assert as_json(spec) == as_json(fig)
    spec["layout"]["xaxis"]["title"] = {"text": "changed"}  # a copy: the next figure starts from the grid again
    assert "title" not in subplots(rows, cols, titles, **options)["xaxis"]


def test_typed_is_plotlys_typed_array():
    import numpy as np

    z = np.linspace(-1, 1, 12, dtype="float32").reshape(3, 4)
    assert as_json({"data": [{"type": "heatmap", "z": typed(z)}]})["data"][0]["z"] == \
        as_json(go.Figure(go.Heatmap(z=z)))["data"][0]["z"]


def test_head_detector_and_composition_figures_are_plotlys():
    import mechwork
    from mechwork.analysis.attention import composition_scores, head_detectors

    model = mechwork.load("induction-2l")
    scores, comp = head_detectors(model), composition_scores(model)
    names = list(scores.scores)
    fig = make_subplots(rows=1, cols=3, subplot_titles=[n.replace("_", "-") for n in names])
    for j, name in enumerate(names):
        s = scores.scores[name]
        fig.add_heatmap(z=s.tolist(), x=[f"H{h}" for h in range(4)], y=["L0", "L1"], zmin=0, zmax=1,
                        coloraxis="coloraxis", text=[[f"{float(v):.2f}" for v in row] for row in s],
                        texttemplate="%{text}", row=1, col=j + 1)
    fig.update_yaxes(autorange="reversed", title_text="layer")
    fig.update_xaxes(title_text="head")
    fig.update_layout(title=f"Head detector scores (repeated random halves of {scores.half} tokens)", height=320,
                      coloraxis={"colorscale": "Viridis", "cmin": 0, "cmax": 1,
                                 "colorbar": {"title": {"text": "score"}}})
    assert as_json(scores.figure_spec()) == as_json(fig) == as_json(scores.figure())

    kinds = list(comp.scores)
    senders, readers = [(0, h) for h in range(4)], [(1, h) for h in range(4)]
    top = max([float(v) for k in kinds for *_, v in comp.pairs(k)] + [comp.baseline, 1e-6])
    fig = make_subplots(rows=1, cols=3, subplot_titles=[f"{k.upper()}-composition" for k in kinds])
    for j, kind in enumerate(kinds):
        z = [[float(comp.scores[kind][0, h1, 1, h2]) for _, h2 in readers] for _, h1 in senders]
        fig.add_heatmap(z=z, x=[f"L1H{h}" for h in range(4)], y=[f"L0H{h}" for h in range(4)], zmin=0, zmax=top,
                        coloraxis="coloraxis", text=[[f"{v:.2f}" for v in row] for row in z], texttemplate="%{text}",
                        row=1, col=j + 1)
    fig.update_yaxes(autorange="reversed", title_text="writing head")
    fig.update_xaxes(title_text="reading head")
    fig.update_layout(title=f"Composition scores (rows: earlier head writing, columns: later head reading); random "
                            f"baseline {comp.baseline:.3f}", height=280,
                      coloraxis={"colorscale": "Viridis", "cmin": 0, "cmax": top,
                                 "colorbar": {"title": {"text": "score"}}})
    assert as_json(comp.figure_spec()) == as_json(fig) == as_json(comp.figure())


def test_grokking_heatmap_grids_are_plotlys():
    """The attention from '=' and the neuron grids (113 x 113 heatmaps, 4 to a row) against make_subplots."""
    from mechwork.analysis.grokking import analyse

    bundle = analyse(open_source("modadd-113"), progress=False)
    att, grids = bundle["attention"], bundle["neuron_grids"]
    p, n_heads = att.p, att.grid.shape[1]
    fig = make_subplots(rows=1, cols=4, horizontal_spacing=0.04, subplot_titles=[f"head {h}" for h in range(4)])
    for h in range(n_heads):
        fig.add_heatmap(z=att.grid[:, h, 0].reshape(p, p).numpy().astype("float32"), zmin=0, zmax=1,
                        coloraxis="coloraxis", row=1, col=h + 1,
                        hovertemplate="a=%{y}, b=%{x}: to a %{z:.2f}<extra></extra>")
    fig.update_xaxes(title_text="b", showticklabels=False)
    fig.update_yaxes(title_text="a", showticklabels=False, autorange="reversed")
    fig.update_layout(title="Attention from '=' to 'a' over (a, b)", height=380,
                      coloraxis={"colorscale": "Viridis", "colorbar": {"title": {"text": "attention to a"}}})
    assert as_json(att.figure_spec()) == as_json(fig) == as_json(att.figure())

    import torch

    from mechwork.analysis.grokking import NeuronGrids

    five = NeuronGrids(p, grids.neurons + grids.neurons[:1], torch.cat([grids.acts, grids.acts[:, :1]], 1))
    for g in (grids, five):  # the real one (a row of 4) and one of 5 (a second row, with 3 empty cells)
        n = len(g.neurons)
        cols, rows = min(n, 4), -(-n // 4)
        fig = make_subplots(rows=rows, cols=cols, horizontal_spacing=0.04, vertical_spacing=0.12,
                            subplot_titles=[f"k={k}: neuron {m} (FVE {f:.0%})" for k, m, f in g.neurons])
        for j in range(n):
            fig.add_heatmap(z=g.acts[:, j].reshape(p, p).numpy().astype("float32"), colorscale="RdBu", zmid=0,
                            showscale=False, row=j // cols + 1, col=j % cols + 1,
                            hovertemplate="a=%{y}, b=%{x}: %{z:.3g}<extra></extra>")
        fig.update_xaxes(title_text="b", showticklabels=False)
        fig.update_yaxes(title_text="a", showticklabels=False, autorange="reversed")
        fig.update_layout(title="One neuron per key frequency: activation over (a, b)", height=300 * rows + 80)
        assert as_json(g.figure_spec()) == as_json(fig) == as_json(g.figure())


def test_progress_figure_is_plotlys():
    """Two subplots, the second with a secondary y axis, and each phase shaded on both (add_vrect)."""
    from mechwork.analysis.grokking import stored_progress
    from mechwork.analysis.progress import PHASE_COLOURS, phase_spans

    pm = stored_progress(open_source("modadd-113"))
    fig = make_subplots(rows=1, cols=2, subplot_titles=("losses (log)", "Gini and weight norm"),
                        specs=[[{}, {"secondary_y": True}]])
    x = pm.steps.tolist()
    for name in ("train_loss", "test_loss", "restricted_loss", "excluded_loss"):
        fig.add_scatter(x=x, y=pm.values[name].tolist(), name=name, row=1, col=1)
    fig.add_scatter(x=x, y=pm.values["gini"].tolist(), name="W_E Gini", row=1, col=2)
    fig.add_scatter(x=x, y=pm.values["weight_norm"].tolist(), name="sum of squared weights", row=1, col=2,
                    secondary_y=True)
    fig.update_yaxes(type="log", title_text="loss (log scale)", row=1, col=1)
    fig.update_yaxes(title_text="Gini coefficient of W_E's Fourier norms", row=1, col=2, secondary_y=False)
    fig.update_yaxes(title_text="sum of squared weights", row=1, col=2, secondary_y=True, showgrid=False)
    fig.update_xaxes(title_text="step")
    spans = [s for s in phase_spans(pm) if s.end > s.start]
    assert len(spans) >= 2
    for span in spans:
        fig.add_vrect(x0=span.start, x1=span.end, fillcolor=PHASE_COLOURS[span.name], line_width=0, layer="below",
                      name=span.name, row=1, col="all")
    fig.update_layout(title="Progress measures (phases shaded)")
    assert as_json(pm.figure_spec()) == as_json(fig) == as_json(pm.figure())
