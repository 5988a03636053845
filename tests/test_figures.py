"""Every figure mechwork draws is labelled: each axis (secondary ones too) and each colour bar has a title.

The walk covers every plotly figure of both standard dashboards and the
``figure()`` of every Result type (each patching layout, neuron patching
included, and the circuit results: edge scores, their check against exact
patching, the circuit's layered graph and the faithfulness curve). Phase
bands use one palette in every figure, and neuron patching is drawn over the
neuron index, not as a one-row strip.
"""

from __future__ import annotations

import re
from typing import Any

import numpy as np
import plotly.graph_objects as go
import pytest
import torch

import mechwork
from mechwork.results import Result

AXIS = re.compile(r"^[xy]axis\d*$")
CARTESIAN = {"scatter", "scattergl", "bar", "heatmap", "histogram", "box", "violin", "contour", "histogram2d"}


def _title(obj: Any) -> str:
    t = (obj or {}).get("title")
    if isinstance(t, dict):
        t = t.get("text")
    return str(t or "").strip()


def untitled(fig: Any) -> list[str]:
    """Names of the axes and colour bars of ``fig`` (a go.Figure or its dict) that have no title."""
    spec = fig.to_plotly_json() if hasattr(fig, "to_plotly_json") else fig
    layout, data = spec.get("layout", {}), spec.get("data", [])
    used = set()
    for t in data:
        if t.get("type", "scatter") in CARTESIAN:
            used |= {"xaxis" + (t.get("xaxis") or "x")[1:], "yaxis" + (t.get("yaxis") or "y")[1:]}
    axes = used | {k for k in layout if AXIS.match(k) and layout[k].get("visible", True) is not False}
    bad = [a for a in sorted(axes) if not _title(layout.get(a))]
    for i, t in enumerate(data):
        kind = t.get("type", "scatter")
        if kind in ("heatmap", "contour", "histogram2d", "surface") or (t.get("marker") or {}).get("showscale"):
            holder = t if kind != "scatter" else t["marker"]
            ca = holder.get("coloraxis")
            if ca:
                axis = layout.get(ca, {})
                if axis.get("showscale", True) and not _title(axis.get("colorbar")):
                    bad.append(f"{ca}.colorbar")
            elif holder.get("showscale", True) and not _title(holder.get("colorbar")):
                bad.append(f"trace {i} ({kind}) colorbar")
    return bad


def test_the_walk_finds_missing_titles():
    """The instrument can fail: an untitled axis, secondary axis and colour bar are each found."""
    from plotly.subplots import make_subplots

    fig = make_subplots(specs=[[{"secondary_y": True}]])
    fig.add_scatter(x=[1, 2], y=[1, 2]).add_scatter(x=[1, 2], y=[3, 4], secondary_y=True)
    fig.add_heatmap(z=[[1, 2]])
    assert set(untitled(fig)) == {"xaxis", "yaxis", "yaxis2", "trace 2 (heatmap) colorbar"}
    fig.update_xaxes(title_text="x").update_yaxes(title_text="y").update_yaxes(title_text="y2", secondary_y=True)
    fig.update_traces(colorbar_title_text="z", selector={"type": "heatmap"})
    assert untitled(fig) == []
    shared = go.Figure(go.Heatmap(z=[[1]], coloraxis="coloraxis")).update_layout(xaxis_title="a", yaxis_title="b")
    assert untitled(shared) == ["coloraxis.colorbar"]


@pytest.fixture(scope="module")
def bundles():
    """Both standard analysis bundles, computed once for the pages and the result walk."""
    from mechwork.dashboard.standard import analyse
    from mechwork.source import open_source

    return {name: analyse(open_source(name)) for name in ("modadd-113", "induction-2l")}


@pytest.fixture(scope="module")
def dashboards(bundles):
    from mechwork.dashboard import page_for

    return {name: page_for(b.info.task.kind)(b) for name, b in bundles.items()}


@pytest.mark.parametrize("name", ["modadd-113", "induction-2l"])
def test_every_axis_and_colour_bar_of_the_standard_dashboards_has_a_title(dashboards, name):
    figs = [(b.title, b.body) for b in dashboards[name].blocks if b.kind == "plotly"]
    assert len(figs) >= 5
    missing = {str(title or _title(f.get("layout"))): untitled(f) for title, f in figs if untitled(f)}
    assert missing == {}


def patch_result(by: str, sizes: dict[str, int]) -> Any:
    from mechwork.analysis.patching import DIMS, PatchResult

    dims = DIMS[by]
    g = torch.Generator().manual_seed(0)
    values = torch.rand(*[sizes[d] for d in dims], generator=g)
    site = {"neuron": "mlp_post", "head_dest_src": "pattern", "latent": "sae", "latent_pos": "sae"}.get(by, "z")
    return PatchResult(values, dims, {d: list(range(sizes[d])) for d in dims}, site, by, "noising", 1.0, 0.0)


def every_result(embedded_model, bundles) -> list[Result]:
    from mechwork.analysis.ablation import fourier_ablation
    from mechwork.analysis.attention import attention_patterns, composition_scores, head_detectors
    from mechwork.analysis.attribution import DirectPathSweep, PathPatchResult
    from mechwork.analysis.fourier import embedding_spectrum, key_frequencies, neuron_frequencies
    from mechwork.analysis.grokking import stored_progress
    from mechwork.analysis.lens import logit_lens
    from mechwork.analysis.logit import direct_logit_attribution, residual_decomposition
    from mechwork.analysis.sae import SAEConfig
    from mechwork.analysis.saehook import LatentAblation
    from mechwork.analysis.saetrain import SAETrainConfig, train_sae
    from mechwork.analysis.symmetry import distance_irrelevance, gradient_symmetricity
    from mechwork.analysis.trig import logit_trig_fit, restricted_excluded
    from mechwork.dashboard.figures import TrainingCurves
    from mechwork.models import preset
    from mechwork.source import open_source
    from mechwork.studies.scaling import FitConfig, fit_scaling
    from mechwork.studies.superposition import (
        PhaseDiagram,
        ToyModel,
        ToyModelConfig,
        dimensionalities,
        geometry,
    )

    task = preset("modadd-113").task
    induction = mechwork.load("induction-2l", device="cpu")
    sizes = {"layer": 2, "pos": 5, "head": 4, "neuron": 512, "dest": 5, "src": 5, "latent": 12}
    rep = torch.arange(8).repeat(2)[None]  # a repeated sequence: the induction heads' input
    n = np.array([1e3, 3e3, 1e4, 3e4, 1e5, 3e5])
    d = np.array([1e4, 1e5, 1e4, 1e5, 1e4, 1e5])
    few = FitConfig(n_starts=8)  # a few starts: the figure is what is checked, not the fit
    results = [
        embedding_spectrum(embedded_model), neuron_frequencies(embedded_model, task),
        key_frequencies(embedded_model, task), logit_trig_fit(embedded_model, task),
        restricted_excluded(embedded_model, task), attention_patterns(embedded_model, task.tokens[:2]),
        head_detectors(induction), composition_scores(induction, n_samples=20),
        fourier_ablation(embedded_model, task), stored_progress(open_source("modadd-113")),
        gradient_symmetricity(embedded_model, task, n=16), distance_irrelevance(embedded_model, task),
        PathPatchResult([(0, 1)], [(1, 2)], "k", "noising", 0.4, 1.0, 0.2),
        DirectPathSweep(torch.tensor([[float("nan")] * 4, [0.1, 0.5, 0.2, 0.3]]), (0, 1), "q"),
        fit_scaling(2.0 + 50 / n**0.3, n, config=few), fit_scaling(2.0 + 50 / n**0.3 + 30 / d**0.2, n, d, config=few),
        direct_logit_attribution(induction, rep, 5, unit="head"), direct_logit_attribution(induction, rep, 5, 6),
        residual_decomposition(induction, rep), logit_lens(induction, rep),
        LatentAblation([1, 5, 9], torch.tensor([0.1, 0.4, 0.2]), 0.3, 0.9, "zero", "blocks.0.mlp.hook_post", True,
                       "metric"),
        geometry(ToyModel(ToyModelConfig.sweep(5, 2, [0.0, 0.9], importance=0.9))),
        dimensionalities(ToyModel(ToyModelConfig(6, 2, 2, [[1.0], [0.3]])), threshold=0.0),
        PhaseDiagram((0.5, 2.0), (1.0, 0.1), (("not represented", "dedicated dimension"), ("superposition", "other")),
                     torch.tensor([[[[1.0, 0.0]], [[0.0, 1.0]]], [[[1.0, -1.0]], [[1.0, 1.0]]]]), 1),
        train_sae(torch.randn(64, 8, generator=torch.Generator().manual_seed(0)),
                  SAEConfig(d_in=8, d_sae=16, architecture="topk", k=2), SAETrainConfig(steps=4, batch_size=16,
                                                                                       log_every=2)),
    ] + [patch_result(by, sizes) for by in ("layer", "layer_pos", "head", "head_pos", "neuron", "head_dest_src",
                                            "latent", "latent_pos")]
    # every result of both bundles that draws a figure, and the circuit report's parts (scores, exact scores,
    # their check, the circuit, its curve)
    results += [r for b in bundles.values() for r in b.results.values() if type(r).figure is not Result.figure]
    results += [b["sae"].features for b in bundles.values() if "sae" in b.results]  # inside the SAE bundle
    rep = bundles["induction-2l"]["circuit"]
    results += [rep.scores, rep.exact, rep.check, rep.circuit, rep.curve]
    results.append(TrainingCurves(bundles["modadd-113"].info.metrics, [("memorisation", 0, 800)]))
    return [r for r in results if r is not None]


def test_every_result_type_figure_is_fully_titled(embedded_model, bundles):
    results = every_result(embedded_model, bundles)
    # mechwork's own Result types (a user kit another test loaded into this process brings its own)
    with_figure = {c for c in _subclasses(Result)
                   if c.figure is not Result.figure and c.__module__.startswith("mechwork.")}
    assert with_figure <= {type(r) for r in results}, "a Result type with a figure is not walked"
    missing = {}
    for r in results:
        bad = untitled(r.figure())
        if bad:
            missing[f"{type(r).__name__} {getattr(r, 'by', '')}".strip()] = bad
    assert missing == {}


def test_the_circuit_reports_curve_is_titled_and_marks_the_circuit(bundles):
    rep = bundles["induction-2l"]["circuit"]
    fig = rep.curve_figure()
    assert untitled(fig) == [] and untitled(rep.figure()) == []
    assert any(t.name == f"the circuit drawn ({len(rep.circuit.edges)} edges)" for t in fig.data)


def _subclasses(cls: type) -> set[type]:
    import importlib
    import pkgutil

    for m in pkgutil.iter_modules(mechwork.__path__):
        if m.name not in ("cli", "raysweep", "study", "width_study"):
            importlib.import_module(f"mechwork.{m.name}")
    out, todo = set(), [cls]
    while todo:
        for s in todo.pop().__subclasses__():
            if s.__module__.startswith("mechwork.") and s not in out:
                out.add(s)
                todo.append(s)
    return out


def test_neuron_patching_is_drawn_over_the_neuron_index_not_as_a_strip():
    fig = patch_result("neuron", {"layer": 1, "neuron": 512}).figure()
    heat = [t for t in fig.data if t.type == "heatmap"]
    assert not any(len(t.z) == 1 for t in heat), "a 1 x 512 strip"
    assert sum(len(t.x) for t in fig.data if t.type in ("bar", "scatter")) == 512
    assert "neuron" in fig.layout.xaxis.title.text
    two = patch_result("neuron", {"layer": 2, "neuron": 64}).figure()
    assert sum(len(t.x) for t in two.data) == 128 and len({t.name for t in two.data}) == 2  # one trace per layer


def test_phase_bands_share_one_palette(dashboards):
    from mechwork.analysis.progress import PHASE_COLOURS

    seen: dict[str, set[str]] = {}
    for b in dashboards["modadd-113"].blocks:
        if b.kind != "plotly":
            continue
        layout = b.body.get("layout", {})
        for t in b.body.get("data", []):
            if t.get("fill") == "toself" and t.get("name") in PHASE_COLOURS:
                seen.setdefault(t["name"], set()).add(t["fillcolor"])
        for s in layout.get("shapes", []):
            if s.get("name") in PHASE_COLOURS:
                seen.setdefault(s["name"], set()).add(s["fillcolor"])
    assert seen, "no phase bands found"
    assert {k: {PHASE_COLOURS[k]} for k in seen} == seen
    # both figures that shade phases draw them
    figs = [b for b in dashboards["modadd-113"].blocks if b.kind == "plotly"]
    shaded = [b.title for b in figs if any(t.get("name") in PHASE_COLOURS for t in b.body.get("data", []))
              or any(s.get("name") in PHASE_COLOURS for s in b.body.get("layout", {}).get("shapes", []))]
    assert len(shaded) >= 2, shaded


def test_progress_figure_labels_its_twin_axis(embedded_model):
    from mechwork.analysis.grokking import stored_progress
    from mechwork.source import open_source

    fig = stored_progress(open_source("modadd-113")).figure()
    layout = fig.to_plotly_json()["layout"]
    twins = [k for k, v in layout.items() if AXIS.match(k) and v.get("overlaying")]
    assert twins and all(_title(layout[k]) for k in twins)
    assert _title(layout[twins[0]]) == "sum of squared weights"
