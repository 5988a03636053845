"""A circuit drawn: the residual-stream graph as layers left to right, its edges sized by score and coloured by sign.

:func:`layered_graph` draws the edges of a :class:`~mechwork.graph.Graph` with their scores: the input on
the left (x = -1), each layer's heads in a column at x = layer (head 0 on top) with its MLP below and a
little to the right, the logits on the right (x = n_layers). A head's query, key and value inputs are
three small ports on its left (q above, k level, v below), so an edge into ``L1H2.k`` ends at L1H2's middle
port. An edge's width grows with ``|score|`` (the widest is the largest score drawn), its colour gives the
sign (blue positive, red negative, grey no score); hovering anywhere along it shows the edge, its score and
its rank. Per-position edges are drawn once per (sender, receiver), their scores summed, the positions
listed in the hover. Every edge is one trace whose ``meta`` holds ``{"edge", "score", "width"}``.

:func:`curve_figure` draws a faithfulness curve (the fraction of the metric a circuit of the top n edges
recovers, against n) with the target line and the chosen circuit marked.

Both are plain plotly figures: a page inlines plotly.js once, so they open offline in one file.

Example::

    >>> from mechwork.graph import Graph
    >>> g = Graph(n_layers=2, n_heads=4, mlp=False)
    >>> fig = layered_graph(g, {"L0H0->L1H2.k": 1.5, "L0H3->L1H2.k": 0.9, "L1H2->logits": -0.4},
    ...                     kept=["L0H0->L1H2.k", "L1H2->logits"], title="Induction")
    >>> sorted(t.meta["edge"] for t in fig.data if t.meta)
    ['L0H0->L1H2.k', 'L1H2->logits']
    >>> curve_figure([1, 5, 10], [0.2, 0.7, 0.9], total=81, chosen=10).layout.xaxis.title.text
    'edges kept (of 81)'
"""

from __future__ import annotations

import math
from collections.abc import Iterable, Mapping, Sequence
from typing import TYPE_CHECKING, Any

from mechwork.errors import invalid
from mechwork.graph import Edge, Graph

if TYPE_CHECKING:  # pragma: no cover
    import plotly.graph_objects as go

__all__ = ["NEGATIVE", "NO_SCORE", "POSITIVE", "curve_figure", "edge_width", "layered_graph", "node_xy"]

POSITIVE, NEGATIVE, NO_SCORE = "#2166ac", "#b2182b", "#9aa5b1"
MIN_WIDTH, MAX_WIDTH = 1.0, 10.0
PORT_DX, PORT_DY = 0.2, 0.24  # a head's q/k/v ports: left of the head, above / level / below
MAX_EDGES = 300  # without `kept`, the figure draws at most this many edges (the largest |score| first)
_PORT = {"q": 1, "k": 0, "v": -1}
_PORT_NAME = {"q": "query", "k": "key", "v": "value"}


def node_xy(graph: Graph, node: str) -> tuple[float, float]:
    """Where ``node`` (a sender or a receiver) sits: x = its layer (MLPs a little right), y = its row.

    >>> g = Graph(n_layers=2, n_heads=4, mlp=True)
    >>> node_xy(g, "L1H0"), node_xy(g, "L1H0.k"), node_xy(g, "MLP0"), node_xy(g, "logits")
    ((1.0, 3.0), (0.8, 3.0), (0.5, -1.0), (2.0, 1.5))
    """
    mid = (graph.n_heads - 1) / 2
    if node in ("input", "logits"):
        return float(graph.layer_of(node)), mid
    layer = float(graph.layer_of(node))
    if node.startswith("MLP"):
        return layer + (0.0 if graph.parallel else 0.5), -1.0
    head, _, port = node.partition(".")
    y = float(graph.n_heads - 1 - int(head.split("H")[1]))
    if not port:
        return layer, y
    return layer - PORT_DX, y + PORT_DY * _PORT[port]


def edge_width(value: float, largest: float) -> float:
    """The line width of an edge of score ``value`` when the largest ``|score|`` drawn is ``largest``.

    >>> edge_width(2.0, 4.0), edge_width(-4.0, 4.0), edge_width(float("nan"), 4.0)
    (5.5, 10.0, 1.0)
    """
    if not math.isfinite(value) or not largest > 0:
        return MIN_WIDTH
    return MIN_WIDTH + (MAX_WIDTH - MIN_WIDTH) * min(abs(value) / largest, 1.0)


def _colour(value: float) -> str:
    return NO_SCORE if not math.isfinite(value) else POSITIVE if value >= 0 else NEGATIVE


def _collapse(graph: Graph, scores: Mapping[Any, float]) -> dict[Edge, tuple[float, list[int]]]:
    """Scores by position-free edge (per-position scores summed), with the positions that had a score."""
    out: dict[Edge, tuple[float, list[int]]] = {}
    for key, value in scores.items():
        e = Edge.parse(key)
        graph.pair_index(e)  # one line for an edge outside the graph
        base, v, at = Edge(e.sender, e.receiver), float(value), [] if e.pos is None else [e.pos]
        if base not in out:
            out[base] = (v, at)
            continue
        total, pos = out[base]
        out[base] = (v if not math.isfinite(total) else total + v if math.isfinite(v) else total, pos + at)
    return out


def _chosen(graph: Graph, scores: dict[Edge, tuple[float, list[int]]], kept: Iterable[Any] | None,
            max_edges: int) -> list[Edge]:
    if kept is None:
        ranked = sorted(scores, key=lambda e: -abs(scores[e][0]) if math.isfinite(scores[e][0]) else math.inf)
        return ranked[:max_edges]
    out: dict[Edge, None] = {}
    for key in kept:
        e = Edge.parse(key)
        graph.pair_index(e)
        out[Edge(e.sender, e.receiver)] = None
    return list(out)


def _path(a: tuple[float, float], b: tuple[float, float], n: int = 14) -> tuple[list[float], list[float]]:
    """A quadratic curve from ``a`` to ``b``, bowed upwards when it skips layers (so it clears the nodes)."""
    (x0, y0), (x1, y1) = a, b
    bow = 0.3 * max(0.0, (x1 - x0) - 1.0) + (0.25 if abs(y1 - y0) < 1e-9 and x1 - x0 > 1 else 0.0)
    cx, cy = (x0 + x1) / 2, (y0 + y1) / 2 + bow
    ts = [i / (n - 1) for i in range(n)]
    xs = [(1 - t) ** 2 * x0 + 2 * (1 - t) * t * cx + t**2 * x1 for t in ts]
    ys = [(1 - t) ** 2 * y0 + 2 * (1 - t) * t * cy + t**2 * y1 for t in ts]
    return xs, ys


def _edge_trace(graph: Graph, e: Edge, value: float, positions: list[int], largest: float, rank: int | None,
                n_scored: int) -> Any:
    import plotly.graph_objects as go

    xs, ys = _path(node_xy(graph, e.sender), node_xy(graph, e.receiver))
    width = edge_width(value, largest)
    score = "no score" if not math.isfinite(value) else f"score {value:+.4g}"
    where = f"<br>summed over positions {_positions(positions)}" if positions else ""
    ranked = f"<br>rank {rank} of {n_scored} by |score|" if rank is not None else ""
    return go.Scatter(x=xs, y=ys, mode="lines", line={"width": width, "color": _colour(value)}, opacity=0.75,
                      name=str(e), showlegend=False, hoverinfo="text", hovertext=f"{e}<br>{score}{where}{ranked}",
                      meta={"edge": str(e), "score": value if math.isfinite(value) else None, "width": width})


def _positions(pos: list[int]) -> str:
    shown = ", ".join(map(str, sorted(set(pos))[:12]))
    return shown + (", ..." if len(set(pos)) > 12 else "")


def _nodes(graph: Graph, drawn: dict[Edge, float]) -> list[Any]:
    """The senders (heads circles, MLPs squares, input and logits diamonds) and the q/k/v ports."""
    import plotly.graph_objects as go

    out_sum: dict[str, float] = {}
    touched = set()
    for e, v in drawn.items():
        out_sum[e.sender] = out_sum.get(e.sender, 0.0) + (v if math.isfinite(v) else 0.0)
        touched |= {e.sender, e.receiver.split(".")[0]}
    names = [*graph.senders, "logits"]
    xy = [node_xy(graph, n) for n in names]
    symbol = ["diamond" if n in ("input", "logits") else "square" if n.startswith("MLP") else "circle" for n in names]
    colour = ["#1d2228" if n in touched else "#d0d6dc" for n in names]
    hover = [f"{n}<br>{'in the drawing' if n in touched else 'no edge drawn'}"
             + (f"<br>sum of its drawn out-edges {out_sum[n]:+.4g}" if n in out_sum else "") for n in names]
    nodes = go.Scatter(x=[p[0] for p in xy], y=[p[1] for p in xy], mode="markers+text", text=names,
                       textposition="top center", marker={"size": 16, "symbol": symbol, "color": colour},
                       hoverinfo="text", hovertext=hover, name="heads, MLPs, input, logits", showlegend=False)
    ports = [r for r in graph.receivers if "." in r]
    pxy = [node_xy(graph, r) for r in ports]
    port_trace = go.Scatter(x=[p[0] for p in pxy], y=[p[1] for p in pxy], mode="markers+text",
                            text=[r[-1] for r in ports] if graph.n_heads <= 8 else None, textposition="middle left",
                            textfont={"size": 9, "color": "#5f6b76"},
                            marker={"size": 6, "symbol": "square", "color": "#5f6b76"}, hoverinfo="text",
                            hovertext=[f"{r} ({_PORT_NAME[r[-1]]} input)" for r in ports], name="q, k, v inputs",
                            showlegend=False)
    return [port_trace, nodes]


def layered_graph(graph: Graph, scores: Mapping[Any, float], kept: Iterable[Any] | None = None, title: str = "",
                  *, max_edges: int = MAX_EDGES) -> go.Figure:
    """The edges ``kept`` (default: the ``max_edges`` largest ``|score|``) drawn over ``graph`` (see the module).

    ``scores`` maps edges (:class:`~mechwork.graph.Edge` or their text) to scores; a kept edge without one is
    drawn thin and grey. An edge outside the graph is refused in one line.
    """
    import plotly.graph_objects as go

    if not isinstance(graph, Graph):
        raise invalid("graph", "a mechwork.graph.Graph", type(graph).__name__)
    if kept is not None:  # a kept edge at some positions is drawn with the scores of those positions only
        kept = [Edge.parse(k) for k in kept]
        keys, whole = set(kept), {e for e in kept if e.pos is None}
        scores = {k: v for k, v in scores.items()
                  if (e := Edge.parse(k)) in keys or Edge(e.sender, e.receiver) in whole}
    collapsed = _collapse(graph, scores)
    chosen = _chosen(graph, collapsed, kept, max_edges)
    values = {e: collapsed.get(e, (math.nan, []))[0] for e in chosen}
    finite = sorted((abs(v) for v in values.values() if math.isfinite(v)), reverse=True)
    largest = finite[0] if finite else 0.0
    ranking = sorted((e for e in collapsed if math.isfinite(collapsed[e][0])), key=lambda e: -abs(collapsed[e][0]))
    rank = {e: i + 1 for i, e in enumerate(ranking)}
    order = sorted(chosen, key=lambda e: abs(values[e]) if math.isfinite(values[e]) else -1.0)  # widest on top
    fig = go.Figure([_edge_trace(graph, e, values[e], collapsed.get(e, (0, []))[1], largest, rank.get(e),
                                 len(ranking)) for e in order])
    fig.add_traces(_nodes(graph, values))
    for colour, words in ((POSITIVE, "positive score"), (NEGATIVE, "negative score")):
        fig.add_trace(go.Scatter(x=[None], y=[None], mode="lines", line={"color": colour, "width": 6}, name=words))
    n_all = graph.n_edges if graph.n_pos is None else len(graph.pairs)
    what = (f"{len(chosen)} edges kept of {n_all}" if kept is not None else
            f"the {len(chosen)} edges of largest |score| (of {n_all})" if len(chosen) < len(collapsed) else
            f"all {len(chosen)} scored edges")
    key = (f"Width grows with |score| (widest: {largest:.3g}); colour is the sign: blue positive, red negative"
           f"{', grey unscored' if any(not math.isfinite(v) for v in values.values()) else ''}. "
           "q, k, v: a head's query, key and value inputs.")
    return _layout(fig, graph, f"{title}: {what}" if title else what.capitalize(), key)


def _layout(fig: Any, graph: Graph, title: str, key: str) -> Any:
    ticks = list(range(-1, graph.n_layers + 1))
    text = ["input", *[f"layer {la}" for la in range(graph.n_layers)], "logits"]
    low = -1.6 if graph.mlp else -0.6
    fig.update_xaxes(title_text="layer (the residual stream flows left to right)", tickvals=ticks, ticktext=text,
                     range=[-1.5, graph.n_layers + 0.5], showgrid=False, zeroline=False)
    fig.update_yaxes(title_text="head (0 on top)" + (", MLP below" if graph.mlp else ""), showticklabels=False,
                     showgrid=False, zeroline=False, range=[low, graph.n_heads - 0.2 + 0.3 * graph.n_layers])
    legend = {"orientation": "h", "y": 1.02, "x": 1, "xanchor": "right", "yanchor": "bottom"}
    return fig.update_layout(title={"text": f"{title}<br><sup>{key}</sup>"}, height=max(440, 46 * graph.n_heads + 260),
                             plot_bgcolor="white", hovermode="closest", legend=legend)


def curve_figure(sizes: Sequence[int], recovered: Sequence[float], *, total: int, target: float | None = 0.8,
                 chosen: int | None = None, method: str = "", title: str = "",
                 others: Mapping[str, tuple[Sequence[int], Sequence[float]]] | None = None) -> go.Figure:
    """The faithfulness curve: the fraction of the metric recovered by the top-n circuit, against n.

    A dashed line marks ``target``; a ring marks the circuit of ``chosen`` edges (when it is on the curve);
    ``others`` adds curves by name (e.g. the top-n by exact scores), dashed.
    """
    import plotly.graph_objects as go

    if len(sizes) != len(recovered):
        raise invalid("recovered", f"one value per size ({len(sizes)})", f"{len(recovered)} values")
    label = f"top-n by {method} score" if method else "top-n circuit"
    hover = [f"{n} edges ({n / total:.1%} of {total})<br>recovers {r:.1%}" for n, r in zip(sizes, recovered,
                                                                                             strict=True)]
    fig = go.Figure(go.Scatter(x=list(sizes), y=list(recovered), mode="lines+markers", name=label,
                               hoverinfo="text", hovertext=hover, line={"color": POSITIVE}))
    for i, (name, (xs, ys)) in enumerate((others or {}).items()):
        hover = [f"{name}: {n} edges, recovers {r:.1%}" for n, r in zip(xs, ys, strict=True)]
        fig.add_trace(go.Scatter(x=list(xs), y=list(ys), mode="lines+markers", name=name, hoverinfo="text",
                                 hovertext=hover,
                                 line={"dash": "dash", "color": ("#c77c02", "#6b7a89", "#2ca02c")[i % 3]}))
    if target is not None:
        fig.add_hline(y=target, line_dash="dash", line_color="#5f6b76",
                      annotation_text=f"{target:.0%} of the metric", annotation_position="bottom right")
    if chosen is not None and chosen in sizes:
        r = recovered[list(sizes).index(chosen)]
        fig.add_trace(go.Scatter(x=[chosen], y=[r], mode="markers", name=f"the circuit drawn ({chosen} edges)",
                                 marker={"size": 14, "symbol": "circle-open", "color": NEGATIVE, "line": {"width": 2}},
                                 hoverinfo="text", hovertext=f"the circuit drawn: {chosen} edges, recovers {r:.1%}"))
    fig.update_xaxes(title_text=f"edges kept (of {total})", type="log" if max(sizes, default=1) > 50 else "linear")
    fig.update_yaxes(title_text="fraction of the metric recovered (1 = clean, 0 = corrupted)")
    return fig.update_layout(title=title or "Faithfulness against circuit size", height=420, hovermode="closest")
