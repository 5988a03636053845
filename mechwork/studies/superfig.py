"""Figures for toy models of superposition, drawn as the paper draws them (plotly, imported inside each function).

* :func:`norms_figure` -- per instance, ``||W_i||`` as bars, coloured by ``sum_{j != i} (W^_i . W_j)^2``
  (0: the feature has its dimension to itself; 1 and above: it shares it), one panel per sparsity;
* :func:`gram_figure` -- the Gram matrices ``W^T W`` across sparsities;
* :func:`phase_figure` -- the phase of the extra feature over relative importance (x, log) and feature density
  (y, log), three colours;
* :func:`dimensionality_figure` -- each feature's dimensionality ``D_i`` against ``1 / (1 - S)``, the model's
  dimensions per feature ``m / ||W||_F^2`` as a line, and the sticky fractions as horizontal lines;
* :func:`dimensionality_histogram` -- the histogram of ``D_i`` over represented features.

Each takes the result object of :mod:`mechwork.studies.superposition` (and reads only what it holds), so this
module does not import that one.

Example::

    >>> from mechwork.studies.superposition import ToyModel, ToyModelConfig, geometry
    >>> g = geometry(ToyModel(ToyModelConfig.sweep(5, 2, [0.0, 0.9], importance=0.9)))
    >>> len(gram_figure(g).data), len(norms_figure(g).data)
    (2, 2)
"""

from __future__ import annotations

import math
from typing import Any

__all__ = ["PHASE_COLOURS", "dimensionality_figure", "dimensionality_histogram", "gram_figure", "norms_figure",
           "phase_figure"]

PHASE_COLOURS = {"not represented": "#d9d9d9", "dedicated dimension": "#4c78a8", "superposition": "#e45756",
                 "other": "#222222"}


def norms_figure(g: Any) -> Any:
    """One panel per instance: ``||W_i||`` for each feature (most important at the top), colour = superposition."""
    import plotly.graph_objects as go
    from plotly.subplots import make_subplots

    sup = g.superposition()
    n_inst, n_feat = g.W.shape[0], g.W.shape[2]
    fig = make_subplots(rows=1, cols=n_inst, shared_yaxes=True, subplot_titles=list(g.labels),
                        horizontal_spacing=0.01)
    for i in range(n_inst):
        fig.add_trace(go.Bar(
            x=g.norms[i].tolist(), y=[f"feature {f}" for f in range(n_feat)], orientation="h",
            marker={"color": sup[i].tolist(), "coloraxis": "coloraxis"},
            name=g.labels[i], showlegend=False,
            hovertemplate="%{y}: ||W_i|| %{x:.3f}, superposition %{marker.color:.3f}<extra>" + g.labels[i] + "</extra>",
        ), row=1, col=i + 1)
        fig.update_xaxes(range=[0, max(1.5, float(g.norms.max()) * 1.05)], title_text="||W_i||", row=1, col=i + 1)
    fig.update_yaxes(autorange="reversed", title_text="feature (by importance)")
    fig.update_layout(coloraxis={"colorscale": [[0, "#222222"], [0.5, "#f2c14e"], [1, "#e45756"]], "cmin": 0,
                                 "cmax": 1, "colorbar": {"title": "superposition", "len": 0.8}})
    fig.update_layout(title=f"||W_i|| per feature (n={n_feat}, m={g.W.shape[1]}), coloured by "
                            "sum_{j!=i} (W^_i . W_j)^2", height=120 + 22 * n_feat, bargap=0.15)
    return fig


def gram_figure(g: Any) -> Any:
    """``W^T W`` per instance, side by side (red positive, blue negative)."""
    import plotly.graph_objects as go
    from plotly.subplots import make_subplots

    G = g.gram()
    n_inst = G.shape[0]
    fig = make_subplots(rows=1, cols=n_inst, subplot_titles=list(g.labels), horizontal_spacing=0.01)
    lim = max(1.0, float(G.abs().max()))
    for i in range(n_inst):
        fig.add_trace(go.Heatmap(z=G[i].tolist(), zmin=-lim, zmax=lim, colorscale="RdBu", reversescale=True,
                                 showscale=i == 0, colorbar={"title": "W_i . W_j"},
                                 hovertemplate="W_%{y} . W_%{x} = %{z:.3f}<extra></extra>"),
                      row=1, col=i + 1)
    fig.update_yaxes(autorange="reversed", showticklabels=False, title_text="feature i")
    fig.update_xaxes(showticklabels=False, title_text="feature j")
    fig.update_layout(title="Gram matrices W^T W by sparsity (features in order of importance)", height=260)
    return fig


def phase_figure(p: Any) -> Any:
    """The phase diagram: relative importance of the extra feature (x) against feature density (y), both log."""
    import plotly.graph_objects as go

    fig = go.Figure()
    for phase, colour in PHASE_COLOURS.items():
        cells = p.cells(phase)
        if cells or phase != "other":
            fig.add_scatter(x=[c[0] for c in cells], y=[c[1] for c in cells], mode="markers", name=phase,
                            marker={"symbol": "square", "size": 16, "color": colour,
                                    "line": {"width": 0.5, "color": "#555"}})
    fig.update_xaxes(type="log", title="relative importance of the extra feature")
    fig.update_yaxes(type="log", title="feature density 1 - S", autorange="reversed")
    n, m = p.W.shape[-1], p.W.shape[-2]
    fig.update_layout(title=f"Phase of the extra feature, n={n}, m={m} (best of {p.restarts} restarts per cell)",
                      height=460)
    return fig


def dimensionality_figure(d: Any) -> Any:
    """``D_i`` per feature against ``1 / (1 - S)`` (log x), the ``m / ||W||_F^2`` line and the sticky fractions."""
    import plotly.graph_objects as go

    inv = [1 / p for p in d.density]
    xs, ys = [], []
    for i, x in enumerate(inv):
        for f in range(d.D.shape[1]):
            if float(d.norms[i, f]) > d.threshold:
                xs.append(x * math.exp(0.04 * (f / max(d.D.shape[1] - 1, 1) - 0.5)))  # a little jitter
                ys.append(float(d.D[i, f]))
    fig = go.Figure()
    for name, frac in d.fractions.items():
        fig.add_hline(y=frac, line={"dash": "dot", "width": 1, "color": "#999"},
                      annotation_text=f"{name} {frac:.3g}", annotation_position="right")
    fig.add_scatter(x=xs, y=ys, mode="markers", name="D_i (represented features)",
                    marker={"size": 4, "opacity": 0.5, "color": "#4c78a8"})
    fig.add_scatter(x=inv, y=d.dims_per_feature.tolist(), mode="lines+markers", name="m / ||W||_F^2",
                    line={"color": "#222"})
    fig.update_xaxes(type="log", title="1 / (1 - S)")
    fig.update_yaxes(title="dimensions per feature", range=[0, 1.1])
    fig.update_layout(title="Feature dimensionality against sparsity", height=460)
    return fig


def dimensionality_histogram(d: Any, bins: int = 100) -> Any:
    """The histogram of ``D_i`` over represented features, with the sticky fractions marked."""
    import plotly.graph_objects as go

    fig = go.Figure(go.Histogram(x=d.represented_D(), xbins={"start": 0, "end": 1.0 + 1e-9, "size": 1 / bins},
                                 marker={"color": "#4c78a8"}))
    for name, frac in d.fractions.items():
        fig.add_vline(x=frac, line={"dash": "dot", "width": 1, "color": "#e45756"}, annotation_text=name,
                      annotation_textangle=-90)
    fig.update_layout(title="Histogram of feature dimensionalities D_i (represented features)",
                      xaxis_title="D_i", yaxis_title="features", height=360)
    return fig
