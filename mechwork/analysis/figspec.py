"""Plotly figures as plain dicts: the JSON a ``go.Figure`` gives, without validating every property as it is set.

``plotly.graph_objects`` checks each property on assignment: a 1 x 2 ``make_subplots`` figure holding a heatmap
and a bar takes about 25 ms to build, and a dashboard draws dozens of figures. A result whose figure a page draws
often can build it as a dict (its ``figure_spec``) from these parts, and its ``figure()`` is then
``go.Figure(figure_spec())``, which validates the dict (tests check that validation gives the dict back unchanged):

* :func:`subplots`: the layout ``make_subplots`` gives a grid (axis domains and anchors, subplot titles), made
  once per grid shape and copied, with plotly's default template;
* :func:`on`: a trace dict placed on a subplot, as ``add_trace(..., row=, col=)`` places it;
* :func:`typed`: a float32 array as the typed-array dict plotly writes for a numpy array;
* :func:`colorscale`: a named colorscale as the (position, colour) pairs plotly expands it to.

Example::

    >>> spec = {"data": [on(1, 2, 2, {"type": "bar", "x": ["a"], "y": [1.0]})], "layout": subplots(1, 2, ("l", "r"))}
    >>> spec["data"][0]["xaxis"], spec["layout"]["xaxis2"]["domain"], spec["layout"]["annotations"][1]["text"]
    ('x2', [0.55, 1.0], 'r')
    >>> typed(__import__("numpy").ones((2, 3), dtype="float32"))["shape"]
    '2, 3'
"""

from __future__ import annotations

import base64
import copy
import functools
import json
from typing import Any

__all__ = ["colorscale", "on", "subplots", "template", "typed"]


def template() -> Any:
    """plotly's default layout template (``plotly.io.templates.default``), which a ``go.Figure`` carries."""
    import plotly.io as pio

    return pio.templates[pio.templates.default]


@functools.cache
def _colorscale(name: str) -> tuple[tuple[float, str], ...]:
    import plotly.graph_objects as go

    return tuple((float(pos), str(colour)) for pos, colour in go.Heatmap(colorscale=name).colorscale)


def colorscale(name: str) -> list[list[Any]]:
    """A named colorscale (``"Viridis"``) as the list of ``[position, colour]`` pairs a figure carries."""
    return [list(pair) for pair in _colorscale(name)]


@functools.cache
def _grid_layout(rows: int, cols: int, titles: tuple[str, ...] | None, options: str) -> dict[str, Any]:
    from plotly.subplots import make_subplots

    kw = json.loads(options)
    layout = make_subplots(rows=rows, cols=cols, subplot_titles=titles, **kw).to_dict()["layout"]
    layout.pop("template", None)
    return layout


def subplots(rows: int, cols: int, titles: tuple[str, ...] | None = None, **options: Any) -> dict[str, Any]:
    """``make_subplots(rows=, cols=, subplot_titles=, **options)``'s layout as a new dict (the grid computed once),
    with the default template."""
    grid = _grid_layout(rows, cols, titles, json.dumps(options, sort_keys=True))
    return {"template": template(), **copy.deepcopy(grid)}


def on(row: int, col: int, cols: int, trace: dict[str, Any]) -> dict[str, Any]:
    """``trace`` on the subplot at ``row``, ``col`` of a grid ``cols`` wide (row-major, as ``make_subplots``
    numbers its axes): its ``xaxis`` and ``yaxis`` set."""
    n = (row - 1) * cols + col
    return {**trace, "xaxis": f"x{n if n > 1 else ''}", "yaxis": f"y{n if n > 1 else ''}"}


def typed(array: Any) -> dict[str, str]:
    """A float32 array (numpy) as plotly's typed-array dict: little-endian bytes in base64, and the shape."""
    import numpy as np

    a = np.ascontiguousarray(array, dtype="<f4")
    return {"dtype": "f4", "bdata": base64.b64encode(a.tobytes()).decode("ascii"),
            "shape": ", ".join(str(n) for n in a.shape)}
