"""A kit's dashboard kept in the result cache: rebuilding an unchanged model's page loads no model and no torch.

``mechwork dashboard MODEL --cache`` (a preset or a run directory, on its kit's page) looks its page up in the
same :class:`~mechwork.post.cache.ResultCache` that ``mechwork post`` uses, under a key made of the page's name
(``dashboard``), the model as given, the checkpoint shown (``--step``, else a run's last),
:func:`~mechwork.post.cache.weights_digest` of the files the model is read from, and
:func:`~mechwork.post.cache.code_digest` of mechwork's own source (so a page is never served from other code or
other weights). A hit is the page's blocks, which are saved as they are; a miss runs
the analysis, renders the page and stores its blocks. Either way the page written is built from the blocks as
the cache holds them (:func:`~mechwork.post.cache.roundtrip`), so a rebuilt page is byte-identical to the first.

An entry holds the page's blocks after one header block: an ``html`` block whose title and caption are the
page's title and subtitle and whose body is the JSON of its other settings (``toc``, ``stamp``).

Example::

    >>> import tempfile
    >>> from mechwork.dashboard.page import Page
    >>> from mechwork.post.cache import ResultCache
    >>> cache = ResultCache(tempfile.mkdtemp())
    >>> key = page_key(cache, "induction-2l", None)
    >>> cached_page(cache, key) is None
    True
    >>> page = store_page(cache, key, Page("Induction dashboard", subtitle="a test").text("two heads"))
    >>> again = cached_page(cache, key)
    >>> again.title, again.subtitle, again.render("cdn") == page.render("cdn")
    ('Induction dashboard', 'a test', True)
"""

from __future__ import annotations

import json
from typing import TYPE_CHECKING

if TYPE_CHECKING:  # pragma: no cover
    from mechwork.dashboard.page import Page
    from mechwork.post.cache import ResultCache

__all__ = ["cached_page", "page_key", "store_page"]

KIND = "dashboard"


def page_key(cache: ResultCache, model: str, step: int | None) -> str:
    """The cache key of ``model``'s kit dashboard at ``step`` (read from files alone: no torch)."""
    from mechwork.limits import resolve, run_steps
    from mechwork.post.cache import weights_digest
    from mechwork.post.parse import ResultBlock

    kind, path = resolve(model)
    steps = run_steps(path) if kind == "run" else []
    shown = step if step is not None else (steps[-1] if steps else None)  # the page names the checkpoint it shows
    block = ResultBlock(KIND, model, {"model": model, "step": shown}, "", 0)
    return cache.key(block, weights_digest(model, step=step))


def cached_page(cache: ResultCache, key: str) -> Page | None:
    """The page stored under ``key``, or None (no entry, or one that is not a page's)."""
    from mechwork.dashboard.page import Page

    blocks = cache.get(key)
    head = blocks[0] if blocks else None
    if head is None or head.kind != "html" or head.title is None:
        return None
    try:
        settings = json.loads(head.body)
    except ValueError:
        return None
    if not isinstance(settings, dict):
        return None
    page = Page(head.title, subtitle=head.caption, stamp=settings.get("stamp") or False,
                toc=bool(settings.get("toc", True)))
    return page.extend(blocks[1:]) if blocks else page


def store_page(cache: ResultCache, key: str, page: Page) -> Page:
    """Store ``page`` under ``key``; returns the page as the cache will give it back (what to save)."""
    from mechwork.dashboard.page import Block, Page
    from mechwork.post.cache import roundtrip

    head = Block("html", page.title, page.subtitle, json.dumps({"toc": page.toc, "stamp": page.stamp}))
    blocks = roundtrip([head, *page.blocks])
    cache.put(key, blocks)
    return Page(page.title, subtitle=page.subtitle, stamp=page.stamp or False, toc=page.toc).extend(blocks[1:])
