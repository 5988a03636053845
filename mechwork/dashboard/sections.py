"""Sections every page shares: each a small function from an analysis bundle to page blocks.

A section takes the :class:`~mechwork.dashboard.page.Page` and an :class:`~mechwork.results.Analysis`
(or the parts of it it needs) and adds blocks; it never sees a model. A kit's page composes
these with its own sections; :func:`generic_page` composes only these, for a kit without a page.

Example::

    >>> import pandas as pd
    >>> from mechwork.dashboard.page import Page
    >>> from mechwork.results import Analysis
    >>> from mechwork.source import SourceInfo
    >>> info = SourceInfo("demo", "preset", None, None, None, None, {}, pd.DataFrame({"step": [1, 10]}))
    >>> page = training_curves(Page("demo"), Analysis(info, {}))
    >>> [b.title for b in page.blocks]
    ['Training curves']
"""

from __future__ import annotations

from collections.abc import Sequence
from typing import TYPE_CHECKING, Any

if TYPE_CHECKING:  # pragma: no cover
    from mechwork.dashboard.page import Page
    from mechwork.results import Analysis
    from mechwork.source import SourceInfo

__all__ = ["generic_page", "model_and_training", "summary", "training_curves"]


def summary(page: Page, lines: list[str]) -> Page:
    """The page's opening paragraphs (markdown), one claim each."""
    return page.markdown("\n\n".join(lines), title="Summary")


def model_and_training(page: Page, info: SourceInfo, extra: Sequence[tuple[str, Any]] = ()) -> Page:
    """Source, task, model and recipe (when known), then ``extra`` rows."""
    rows: list[tuple[str, Any]] = [("source", info.name)]
    if info.task is not None:
        rows.append(("task", info.task.describe()))
    rows.append(("model", info.model_line))
    if info.recipe is not None:
        rows.append(("training", info.recipe))
    return page.kv([*rows, *extra], title="Model and training")


def training_curves(page: Page, bundle: Analysis, spans: Sequence[tuple[str, int, int]] = (),
                    *, caption: str | None = None, missing: str = "No training history for this model.") -> Page:
    """Loss and accuracy against step (phases in ``spans`` shaded), or a note without a history."""
    from mechwork.dashboard.figures import TrainingCurves

    if bundle.info.metrics is None:
        return page.note(missing, title="Training curves")
    return page.result(TrainingCurves(bundle.info.metrics, list(spans)), title="Training curves", caption=caption,
                       summary=False)


def generic_page(bundle: Analysis) -> Page:
    """The page of a kit without its own: a summary from the numbers, the model and recipe, the training
    curves, then every result of the bundle with its figure and table (a result without a figure or a
    table shows what it has; a plain value, e.g. a float, shows as text)."""
    from mechwork.dashboard.page import Page
    from mechwork.errors import ConfigError
    from mechwork.results import Analysis

    if not isinstance(bundle, Analysis):
        raise ConfigError(f"a kit's analyse(source) must return a mechwork.results.Analysis (got "
                          f"{type(bundle).__name__})")
    info = bundle.info
    page = Page(f"{info.task.kind} dashboard: {info.name}", subtitle=f"{info.task.describe()}; {info.where}")
    lines = [f"**{name}**: {_summary(bundle[name])}" for name in bundle] or ["The kit's analysis has no results."]
    summary(page, lines)
    model_and_training(page, info)
    training_curves(page, bundle)
    for name in bundle:
        value = bundle[name]
        if callable(getattr(value, "summary", None)):
            page.result(value, title=name, summary=True, table=True)
        else:
            page.note(str(value), title=name)
    return page


def _summary(value: Any) -> str:
    return str(value.summary()) if callable(getattr(value, "summary", None)) else str(value)
