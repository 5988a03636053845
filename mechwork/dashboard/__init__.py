"""Self-contained HTML dashboards: one file that opens anywhere, offline, with every figure live.

* :class:`Page` builds a page from markdown (with ``$`` math as MathML), text, tables,
  key-value summaries, plotly figures and circuitsvis views, and saves it with the
  bundles inlined once (``assets="inline"``), linked from a CDN (``assets="cdn"``) or
  loaded from a site's shared folder (``assets="site"``, :mod:`~mechwork.dashboard.site`);
  ``Page.save(..., figures="svg,png")`` also writes every figure as an image
  (:mod:`~mechwork.dashboard.export`). Its :class:`Block` s are JSON data.
* :mod:`~mechwork.dashboard.views` holds circuitsvis views as data.
* :data:`PAGES` maps a kit's kind to its page, a function from an analysis bundle
  (:class:`~mechwork.results.Analysis`) to a :class:`Page`; :func:`page_for` gives the page
  of any kind, the generic one (:func:`~mechwork.dashboard.sections.generic_page`: a summary,
  the model and recipe, then every result) for a kind without its own.
* :func:`dashboard` opens a run directory or a preset, has its kit analyse it once, renders
  the page and saves it; :func:`grokking_dashboard` and :func:`induction_dashboard` are the
  two built-in pages for a run directory or a preset.
* :func:`prompt_dashboard` is the page of any model on prompts of your own (attention, direct logit
  attribution, logit lens, head detectors, patching of a clean/corrupted pair); :func:`prompt_page`
  renders it from :func:`mechwork.analysis.prompt.analyse_prompts`'s bundle. A model directory gets it
  from :func:`dashboard` too.

Example::

    >>> import torch
    >>> from mechwork.dashboard import Page
    >>> page = Page("Two heads").attention(torch.eye(3).expand(2, 3, 3), ["12", "7", "="])
    >>> page.render().count('data-mw-bundle="circuitsvis"')  # the bundle, once, compressed
    1
"""

from __future__ import annotations

from collections.abc import Callable
from importlib import import_module
from typing import TYPE_CHECKING, Any

from mechwork.dashboard.page import ASSET_MODES, Block, Page
from mechwork.dashboard.views import CircuitsView, attention_heads, attention_pattern, colored_tokens

if TYPE_CHECKING:  # pragma: no cover
    from mechwork.results import Analysis

__all__ = [
    "ASSET_MODES",
    "Block",
    "CircuitsView",
    "Page",
    "attention_heads",
    "attention_pattern",
    "colored_tokens",
    "dashboard",
    "grokking_dashboard",
    "induction_dashboard",
    "page_for",
    "prompt_dashboard",
    "prompt_page",
]

# kind -> its page, as "module:function" (imported on first use) or the function itself (a user kit may add
# one); any other kind gets the generic page
PAGES: dict[str, str | Callable[[Analysis], Page]] = {
    "modadd": "mechwork.dashboard.grokking:grokking_page",
    "induction": "mechwork.dashboard.induction:induction_page",
}
GENERIC = "mechwork.dashboard.sections:generic_page"


def page_for(kind: str) -> Callable[[Analysis], Page]:
    """The page of a kit's ``kind``: its own if :data:`PAGES` names one, else the generic page."""
    where = PAGES.get(kind, GENERIC)
    if callable(where):
        return where
    module, name = where.split(":")
    page: Callable[[Analysis], Page] = getattr(import_module(module), name)
    return page


_LAZY = {
    "grokking_dashboard": "mechwork.dashboard.grokking",
    "induction_dashboard": "mechwork.dashboard.induction",
    "dashboard": "mechwork.dashboard.standard",
    "prompt_dashboard": "mechwork.dashboard.standard",
    "prompt_page": "mechwork.dashboard.prompt",
}


def __getattr__(name: str) -> Any:
    if name in _LAZY:
        return getattr(import_module(_LAZY[name]), name)
    raise AttributeError(f"module 'mechwork.dashboard' has no attribute {name!r}")
