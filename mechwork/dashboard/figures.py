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

from dataclasses import dataclass, field
from typing import TYPE_CHECKING, Any

from mechwork.results import Result

if TYPE_CHECKING:  # pragma: no cover
    import pandas as pd

__all__ = ["TrainingCurves"]


def _bands(fig: Any, spans: list[tuple[str, int, int]], col: int, y0: float, y1: float, legend: bool) -> None:
    """Phase bands as filled traces (shapes misplace on log axes), drawn before the curves so they sit below."""
    from mechwork.analysis.progress import PHASE_COLOURS  # the palette every phase-shaded figure uses

    for name, lo, hi in spans:
        x0, x1 = max(lo, 1), max(hi, lo, 1)
        fig.add_scatter(x=[x0, x1, x1, x0, x0], y=[y0, y0, y1, y1, y0], fill="toself", fillcolor=PHASE_COLOURS[name],
                        mode="none", name=name, legendgroup=name, showlegend=legend,
                        hoverinfo="name", row=1, col=col)


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
        import math

        from plotly.subplots import make_subplots

        df = self.metrics[self.metrics["step"] >= 1]
        spans = self.spans
        fig = make_subplots(rows=1, cols=2, subplot_titles=("loss", "accuracy"))
        x = df["step"].tolist()
        losses = [v for c in ("train_loss", "test_loss") if c in df for v in df[c].tolist() if v > 0]
        if spans and losses:
            _bands(fig, spans, 1, min(losses) / 2, max(losses) * 2, legend=True)
            _bands(fig, spans, 2, 0.0, 1.02, legend=False)
        for col, colour in (("train", "#1f77b4"), ("test", "#d62728")):
            if f"{col}_loss" in df:
                fig.add_scatter(x=x, y=df[f"{col}_loss"].tolist(), name=f"{col} loss", line_color=colour,
                                row=1, col=1)
            if f"{col}_acc" in df:
                fig.add_scatter(x=x, y=df[f"{col}_acc"].tolist(), name=f"{col} accuracy", line_color=colour,
                                line_dash="dot", row=1, col=2)
        fig.update_xaxes(type="log", title_text="step", range=[math.log10(max(1, min(x))), math.log10(max(x))])
        fig.update_yaxes(type="log", title_text="cross-entropy loss (log scale)", row=1, col=1)
        fig.update_yaxes(range=[0, 1.02], title_text="accuracy", row=1, col=2)
        title = "Training curves (log scale; phases shaded)" if spans else "Training curves (log scale)"
        return fig.update_layout(title=title, height=420)
