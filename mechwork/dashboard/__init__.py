"""Self-contained HTML dashboards: one file that opens anywhere, offline, with every figure live.

* :class:`Page` builds a page from markdown, text, tables, key-value summaries,
  plotly figures and circuitsvis views, and saves it with the bundles inlined
  once (``assets="inline"``) or linked from a CDN (``assets="cdn"``).
* :mod:`~mechwork.dashboard.views` holds circuitsvis views as data.
* :func:`grokking_dashboard` and :func:`induction_dashboard` build the standard
  pages for a run directory or a preset; :func:`dashboard` picks by task.

Example::

    >>> import torch
    >>> from mechwork.dashboard import Page
    >>> page = Page("Two heads").attention(torch.eye(3).expand(2, 3, 3), ["12", "7", "="])
    >>> page.render().count("var CircuitsVis=")
    1
"""

from __future__ import annotations

from importlib import import_module
from typing import Any

from mechwork.dashboard.page import ASSET_MODES, Page
from mechwork.dashboard.views import CircuitsView, attention_heads, attention_pattern, colored_tokens

__all__ = [
    "ASSET_MODES",
    "CircuitsView",
    "Page",
    "attention_heads",
    "attention_pattern",
    "colored_tokens",
    "dashboard",
    "grokking_dashboard",
    "induction_dashboard",
]

_LAZY = {
    "grokking_dashboard": "mechwork.dashboard.grokking",
    "induction_dashboard": "mechwork.dashboard.induction",
    "dashboard": "mechwork.dashboard.standard",
}


def __getattr__(name: str) -> Any:
    if name in _LAZY:
        return getattr(import_module(_LAZY[name]), name)
    raise AttributeError(f"module 'mechwork.dashboard' has no attribute {name!r}")
