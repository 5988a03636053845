"""Results drawn from a run's stored data alone: the training curves.

A page builds these from the bundle's ``info`` (the metrics table) and the
phase spans of its progress measures; no model is involved.

Example::

    >>> import pandas as pd
    >>> curves = TrainingCurves(pd.DataFrame({"step": [0, 10, 100], "train_loss": [4.0, 1.0, 0.01]}))
    >>> curves.summary(), curves.figure().layout.title.text
    ('3 evaluations, steps 0-100', 'Training curves (log scale)')
"""

from __future__ import annotations

import copy
from dataclasses import dataclass, field
from typing import TYPE_CHECKING, Any

from mechwork.analysis.figspec import on, subplots
from mechwork.results import Result

if TYPE_CHECKING:  # pragma: no cover
    import pandas as pd

__all__ = ["TrainingCurves"]


def _bands(spans: list[tuple[str, int, int]], col: int, y0: float, y1: float, legend: bool) -> list[dict[str, Any]]:
    """Phase bands as filled traces (shapes misplace on log axes), drawn before the curves so they sit below."""
    from mechwork.analysis.progress import PHASE_COLOURS  # the palette every phase-shaded figure uses

    out = []
    for name, lo, hi in spans:
        x0, x1 = max(lo, 1), max(hi, lo, 1)
        out.append(on(1, col, 2, {"fill": "toself", "fillcolor": PHASE_COLOURS[name], "hoverinfo": "name",
                                  "legendgroup": name, "mode": "none", "name": name, "showlegend": legend,
                                  "x": [x0, x1, x1, x0, x0], "y": [y0, y0, y1, y1, y0], "type": "scatter"}))
    return out


@dataclass(frozen=True)
class TrainingCurves(Result):
    """Loss (log-log) and accuracy (log x) against step, with the phases the run reached shaded."""

    metrics: pd.DataFrame  # one row per evaluation: step, and any of train/test loss/acc
    spans: list[tuple[str, int, int]] = field(default_factory=list)  # (phase, start, end)

    def summary(self) -> str:
        steps = self.metrics["step"]
        return f"{len(steps)} evaluations, steps {int(steps.min())}-{int(steps.max())}"

    def to_frame(self) -> pd.DataFrame:
        return self.metrics

    def figure(self) -> Any:
        import plotly.graph_objects as go

        return go.Figure(self.figure_spec())

    def figure_spec(self) -> dict[str, Any]:
        """:meth:`figure` as a plotly figure dict (:mod:`mechwork.analysis.figspec`), what a page draws."""
        import math

        df = self.metrics[self.metrics["step"] >= 1]
        spans = self.spans
        layout = subplots(1, 2, ("loss", "accuracy"))
        x = df["step"].tolist()
        losses = [v for c in ("train_loss", "test_loss") if c in df for v in df[c].tolist() if v > 0]
        data = []
        if spans and losses:
            data += _bands(spans, 1, min(losses) / 2, max(losses) * 2, legend=True)
            data += _bands(spans, 2, 0.0, 1.02, legend=False)
        for col, colour in (("train", "#1f77b4"), ("test", "#d62728")):
            if f"{col}_loss" in df:
                data.append(on(1, 1, 2, {"line": {"color": colour}, "name": f"{col} loss", "x": x,
                                         "y": df[f"{col}_loss"].tolist(), "type": "scatter"}))
            if f"{col}_acc" in df:
                data.append(on(1, 2, 2, {"line": {"color": colour, "dash": "dot"}, "name": f"{col} accuracy", "x": x,
                                         "y": df[f"{col}_acc"].tolist(), "type": "scatter"}))
        steps = {"title": {"text": "step"}, "type": "log", "range": [math.log10(max(1, min(x))), math.log10(max(x))]}
        layout["xaxis"] |= steps
        layout["xaxis2"] |= copy.deepcopy(steps)
        layout["yaxis"] |= {"title": {"text": "cross-entropy loss (log scale)"}, "type": "log"}
        layout["yaxis2"] |= {"title": {"text": "accuracy"}, "range": [0, 1.02]}
        title = "Training curves (log scale; phases shaded)" if spans else "Training curves (log scale)"
        return {"data": data, "layout": layout | {"title": {"text": title}, "height": 420}}
