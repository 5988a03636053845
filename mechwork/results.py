"""The common face of analysis results: a summary line, a table, a figure.

Every analysis returns a frozen dataclass that subclasses :class:`Result`. It
renders in a notebook (``_repr_html_``: an escaped summary and the table),
turns into a pandas DataFrame (``to_frame()``) and, where a picture helps, a
plotly figure (``figure()``). pandas and plotly load only when asked for.

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

import html
from typing import TYPE_CHECKING, Any

if TYPE_CHECKING:  # pragma: no cover
    import pandas as pd

__all__ = ["Result"]


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
