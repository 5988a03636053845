"""The common face of analysis results: a summary line, a table, a figure; and the bundle of them.

Every analysis returns a frozen dataclass that subclasses :class:`Result`. It
renders in a notebook (``_repr_html_``: an escaped summary and the table),
turns into a pandas DataFrame (``to_frame()``) and, where a picture helps, a
plotly figure (``figure()``). pandas and plotly load only when asked for.

A kit's ``analyse(source)`` returns an :class:`Analysis`: the model-free
description of the run or preset (``info``, a :class:`~mechwork.source.SourceInfo`)
and every result its pages show, by name. Dashboards, reports and summaries
render a bundle; they never see the model.

Example::

    >>> from dataclasses import dataclass
    >>> @dataclass(frozen=True)
    ... class Demo(Result):
    ...     x: int = 3
    ...     def summary(self) -> str:
    ...         return f"x is {self.x} <b>"
    ...     def to_frame(self):
    ...         import pandas as pd
    ...         return pd.DataFrame({"x": [self.x]})
    >>> "x is 3 &lt;b&gt;" in Demo()._repr_html_()
    True
"""

from __future__ import annotations

import dataclasses
import html
from collections.abc import Iterator, Mapping
from dataclasses import dataclass, field
from typing import TYPE_CHECKING, Any

if TYPE_CHECKING:  # pragma: no cover
    import pandas as pd

__all__ = ["Analysis", "Result"]


class Result:
    """Base class for analysis results (subclasses are frozen dataclasses)."""

    max_rows = 20  # rows shown by _repr_html_

    def summary(self) -> str:
        raise NotImplementedError

    def to_frame(self) -> pd.DataFrame:
        raise NotImplementedError

    def figure(self) -> Any:
        raise NotImplementedError(f"{type(self).__name__} has no figure")

    def __str__(self) -> str:
        return self.summary()

    def _repr_html_(self) -> str:
        frame = self.to_frame()
        table = frame.head(self.max_rows).to_html(index=False, float_format=lambda v: f"{v:.4g}", escape=True)
        more = f"<p>... {len(frame) - self.max_rows} more rows</p>" if len(frame) > self.max_rows else ""
        title = html.escape(type(self).__name__)
        return f"<div><b>{title}</b><pre>{html.escape(self.summary())}</pre>{table}{more}</div>"


@dataclass(frozen=True)
class Analysis:
    """Every result a kit computes for one run or preset, and what is known of the source without its model.

    ``bundle["key_frequencies"]`` is one result (a missing name is a one-line ``KeyError`` naming the ones
    there are); ``bundle.get(name)`` is None for a result the kit left out (e.g. one that does not apply).

    >>> from mechwork.source import SourceInfo
    >>> info = SourceInfo("demo", "preset", None, None, None, None, {}, None)
    >>> bundle = Analysis(info, {"x": Result()})
    >>> list(bundle), "x" in bundle, bundle.get("y") is None
    (['x'], True, True)
    >>> list(bundle.replace(x=None, step=3)), bundle.replace(step=3).info.step
    ([], 3)
    """

    # a mechwork.source.SourceInfo (not imported: results sits below source): name, kind, task, model config,
    # step, training config, stored summary, metrics, hook names
    info: Any
    results: Mapping[str, Result] = field(default_factory=dict)

    def __post_init__(self) -> None:
        object.__setattr__(self, "results", dict(self.results))  # a copy: the caller's mapping may change

    def __getitem__(self, name: str) -> Any:
        try:
            return self.results[name]
        except KeyError:
            have = ", ".join(self.results) or "none"
            raise KeyError(f"no result {name!r} in this analysis (results: {have})") from None

    def __contains__(self, name: object) -> bool:
        return name in self.results

    def __iter__(self) -> Iterator[str]:
        return iter(self.results)

    def get(self, name: str, default: Any = None) -> Any:
        return self.results.get(name, default)

    def replace(self, **changes: Any) -> Analysis:
        """A copy with fields of ``info`` or results changed; a result set to None is left out.

        Names of :class:`~mechwork.source.SourceInfo` fields change the info; any other name a result.
        """
        names = {f.name for f in dataclasses.fields(self.info)}
        info = dataclasses.replace(self.info, **{k: v for k, v in changes.items() if k in names})
        results = dict(self.results) | {k: v for k, v in changes.items() if k not in names}
        return Analysis(info, {k: v for k, v in results.items() if v is not None})
