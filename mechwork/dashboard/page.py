"""``Page``: one self-contained HTML file of text, tables, plotly figures and circuitsvis views.

A page is a list of blocks, each with an optional title (which also goes in the
table of contents). Nothing is rendered until :meth:`Page.render` or
:meth:`Page.save`; then

* every figure's data and every view's props go into inert
  ``<script type="application/json">`` elements, and one small script at the
  end draws them all;
* ``assets="inline"`` embeds plotly.js and the circuitsvis bundle once each
  (only the ones the page uses), so the file opens from disk with no network;
  ``assets="cdn"`` links their versioned CDN copies instead and stays small;
* plotly's layout template (7 KB a figure) is stored once per distinct template;
* ids are ``mw-1``, ``mw-2``, ... in block order, and there is no timestamp
  unless the caller passes ``stamp``: the same page renders byte-identically;
* every string the caller supplies (titles, captions, table cells, labels,
  token strings) is HTML-escaped; markdown is rendered with raw HTML disabled
  and ``javascript:`` links refused; figure text is drawn by plotly's SVG text
  renderer, which knows a few formatting tags and runs no script
  (``tests/test_injection.py`` tries them all in Chromium);
* :meth:`save` writes atomically into an existing directory, or raises
  :class:`~mechwork.errors.OutputError` having written nothing.

Example::

    >>> import pandas as pd, torch
    >>> from mechwork.dashboard import Page
    >>> page = Page("<script>alert(1)</script>")
    >>> page = page.markdown("Attention of **head 0**.").table(pd.DataFrame({"head": [0], "score": [0.71]}))
    >>> page = page.attention(torch.eye(3)[None], ["12", "7", "="], title="An input")
    >>> html = page.render(assets="cdn")
    >>> "&lt;script&gt;alert(1)&lt;/script&gt;" in html and "<script>alert" not in html
    True
    >>> html == page.render(assets="cdn")
    True
"""

from __future__ import annotations

import html
import json
import os
from collections.abc import Iterable, Mapping, Sequence
from contextlib import suppress
from dataclasses import dataclass
from datetime import UTC, datetime
from functools import cache
from pathlib import Path
from typing import TYPE_CHECKING, Any

from mechwork.dashboard.assets import CIRCUITSVIS, PLOTLY, script_json
from mechwork.dashboard.views import VIEW_CSS, CircuitsView, attention_heads, colored_tokens
from mechwork.errors import OutputError, invalid
from mechwork.limits import ASSET_MODES

if TYPE_CHECKING:  # pragma: no cover
    import pandas as pd

    from mechwork.results import Result

__all__ = ["ASSET_MODES", "Page", "saved_assets"]

esc = html.escape


@dataclass(frozen=True)
class Block:
    kind: str  # "html" (already escaped), "plotly", "view"
    title: str | None
    caption: str | None
    body: Any  # escaped HTML str, a plotly figure dict, or a CircuitsView


@cache
def _markdown() -> Any:
    from markdown_it import MarkdownIt

    # commonmark with raw HTML off: "<b>" in the text shows as text; javascript: links are refused
    return MarkdownIt("commonmark", {"html": False, "typographer": False}).enable("table")


def _fmt(v: Any, float_format: str) -> str:
    if isinstance(v, float) or type(v).__name__.startswith("float"):
        return format(float(v), float_format)
    return str(v)


class Page:
    """A dashboard under construction; every adder returns the page, so calls chain."""

    def __init__(self, title: str, *, subtitle: str | None = None, stamp: str | bool = False):
        self.title = str(title)
        self.subtitle = subtitle
        if stamp is True:
            stamp = datetime.now(UTC).strftime("%Y-%m-%d %H:%M UTC")
        self.stamp = stamp or None
        self.blocks: list[Block] = []

    def __repr__(self) -> str:
        kinds = [b.kind for b in self.blocks]
        n_fig, n_view = kinds.count("plotly"), kinds.count("view")
        return f"Page({self.title!r}, {len(kinds)} blocks: {n_fig} figures, {n_view} views)"

    def _add(self, kind: str, body: Any, title: str | None, caption: str | None) -> Page:
        self.blocks.append(Block(kind, None if title is None else str(title), caption, body))
        return self

    # -- adders ------------------------------------------------------------------
    def markdown(self, text: str, *, title: str | None = None) -> Page:
        """Markdown (CommonMark plus tables); raw HTML in ``text`` is shown as text."""
        return self._add("html", f'<div class="mw-md">{_markdown().render(str(text))}</div>', title, None)

    def text(self, text: str, *, title: str | None = None) -> Page:
        """Plain text; blank lines separate paragraphs."""
        paras = [p for p in str(text).split("\n\n") if p.strip()]
        body = "".join(f"<p>{esc(p).replace(chr(10), '<br>')}</p>" for p in paras)
        return self._add("html", body, title, None)

    def note(self, text: str, *, title: str | None = None) -> Page:
        """A highlighted remark, e.g. why a section is empty."""
        return self._add("html", f'<p class="mw-note">{esc(str(text))}</p>', title, None)

    def plotly(self, fig: Any, *, title: str | None = None, caption: str | None = None) -> Page:
        """A plotly figure (``go.Figure`` or its dict), drawn interactively."""
        import plotly.io as pio

        try:
            spec = json.loads(pio.to_json(fig, validate=False, remove_uids=True))
        except (ValueError, TypeError) as e:
            raise invalid("fig", "a plotly Figure or figure dict", type(fig).__name__) from e
        return self._add("plotly", spec, title, caption)

    def view(self, view: CircuitsView, *, title: str | None = None, caption: str | None = None) -> Page:
        """Any circuitsvis view (see :mod:`mechwork.dashboard.views`)."""
        if not isinstance(view, CircuitsView):
            raise invalid("view", "a CircuitsView", type(view).__name__)
        return self._add("view", view, title, caption)

    def attention(
        self,
        attention: Any,
        tokens: Iterable[Any],
        *,
        head_names: Sequence[str] | None = None,
        title: str | None = None,
        caption: str | None = None,
    ) -> Page:
        """Attention patterns ``[heads, dest, src]`` over ``tokens`` (circuitsvis AttentionHeads)."""
        return self.view(attention_heads(attention, tokens, head_names=head_names), title=title, caption=caption)

    def tokens(
        self, tokens: Iterable[Any], values: Any, *, labels: Sequence[str] | None = None,
        title: str | None = None, caption: str | None = None,
    ) -> Page:
        """Tokens coloured by activation (``[pos]`` or ``[pos, K]`` values)."""
        return self.view(colored_tokens(tokens, values, labels=labels), title=title, caption=caption)

    def table(
        self, frame: pd.DataFrame, *, title: str | None = None, caption: str | None = None,
        float_format: str = ".4g", max_rows: int = 200,
    ) -> Page:
        """A DataFrame as an HTML table (every cell escaped; at most ``max_rows`` rows shown)."""
        if not hasattr(frame, "columns") or not hasattr(frame, "itertuples"):
            raise invalid("frame", "a pandas DataFrame", type(frame).__name__)
        head = "".join(f"<th>{esc(str(c))}</th>" for c in frame.columns)
        rows = []
        for row in frame.head(max_rows).itertuples(index=False, name=None):
            cells = "".join(
                f'<td class="{"num" if isinstance(v, (int, float)) and not isinstance(v, bool) else "txt"}">'
                f"{esc(_fmt(v, float_format))}</td>"
                for v in row
            )
            rows.append(f"<tr>{cells}</tr>")
        more = f'<p class="mw-more">{len(frame) - max_rows} more rows not shown</p>' if len(frame) > max_rows else ""
        table = f'<table><thead><tr>{head}</tr></thead><tbody>{"".join(rows)}</tbody></table>'
        body = f'<div class="mw-table">{table}</div>'
        return self._add("html", body + more, title, caption)

    def kv(self, items: Mapping[str, Any] | Iterable[tuple[str, Any]], *, title: str | None = None,
           float_format: str = ".4g") -> Page:
        """A key-value summary."""
        pairs = items.items() if isinstance(items, Mapping) else items
        rows = "".join(f"<dt>{esc(str(k))}</dt><dd>{esc(_fmt(v, float_format))}</dd>" for k, v in pairs)
        return self._add("html", f'<dl class="mw-kv">{rows}</dl>', title, None)

    def result(
        self, result: Result, *, title: str | None = None, caption: str | None = None, summary: bool | None = None,
        table: bool = False, **figure_kw: Any,
    ) -> Page:
        """An analysis result: its figure (if it has one), and optionally its summary line and its table.

        The summary line goes above the figure as a note (which takes the title) when ``summary`` is true;
        by default (``summary=None``) only when no ``caption`` is given. ``figure_kw`` go to ``result.figure``.
        """
        if summary is None:
            summary = caption is None
        if summary:
            self.note(result.summary(), title=title or type(result).__name__)
            title = None
        try:
            fig = result.figure(**figure_kw)
        except NotImplementedError:
            fig = None
        if fig is not None:
            self.plotly(fig, title=title, caption=caption)
        elif not summary:
            self.note(result.summary(), title=title or type(result).__name__)
        if table:
            with suppress(NotImplementedError):  # a result without a table
                self.table(result.to_frame())
        return self

    # -- output --------------------------------------------------------------------
    def render(self, assets: str = "inline") -> str:
        """The whole page as one HTML string."""
        if assets not in ASSET_MODES:
            raise invalid("assets", " or ".join(repr(m) for m in ASSET_MODES), assets)
        kinds = {b.kind for b in self.blocks}
        used = [a for a, k in ((PLOTLY, "plotly"), (CIRCUITSVIS, "view")) if k in kinds]
        if assets == "inline":
            scripts = "".join(f"<script>\n{a.source()}\n</script>\n" for a in used)
        else:
            scripts = "".join(f'<script src="{esc(a.url)}" charset="utf-8"></script>\n' for a in used)
        templates: list[str] = []
        toc, parts = [], []
        for i, block in enumerate(self.blocks, start=1):
            bid = f"mw-{i}"
            head = ""
            if block.title is not None:
                toc.append(f'<li><a href="#{bid}">{esc(block.title)}</a></li>')
                head = f"<h2>{esc(block.title)}</h2>"
            parts.append(f'<section id="{bid}" class="mw-block mw-{block.kind}">{head}'
                         f"{self._body(block, bid, templates)}"
                         + (f'<p class="mw-caption">{esc(block.caption)}</p>' if block.caption else "")
                         + "</section>\n")
        nav = f'<nav class="mw-toc"><ol>{"".join(toc)}</ol></nav>\n' if len(toc) > 1 else ""
        sub = f'<p class="mw-subtitle">{esc(self.subtitle)}</p>' if self.subtitle else ""
        stamp = f" · {esc(self.stamp)}" if self.stamp else ""
        tmpl = (f'<script type="application/json" id="mw-templates">[{",".join(templates)}]</script>\n'
                if templates else "")
        return (
            "<!DOCTYPE html>\n<html lang=\"en\">\n<head>\n<meta charset=\"utf-8\">\n"
            '<meta name="viewport" content="width=device-width, initial-scale=1">\n'
            f'<meta name="generator" content="mechwork {_version()}">\n'
            f"<title>{esc(self.title)}</title>\n<style>{_CSS}{VIEW_CSS}\n</style>\n{scripts}</head>\n<body>\n<main>\n"
            f"<header><h1>{esc(self.title)}</h1>{sub}</header>\n{nav}{''.join(parts)}"
            f'<footer>Made with mechwork {esc(_version())}{stamp}</footer>\n</main>\n{tmpl}'
            f"<script>\n{_DRAW}</script>\n</body>\n</html>\n"
        )

    @staticmethod
    def _body(block: Block, bid: str, templates: list[str]) -> str:
        if block.kind == "html":
            return str(block.body)
        if block.kind == "plotly":
            spec = dict(block.body)
            layout = dict(spec.get("layout", {}))
            attr = ""
            if "template" in layout:
                t = script_json(layout.pop("template"))
                if t not in templates:
                    templates.append(t)
                attr = f' data-template="{templates.index(t)}"'
            data = script_json({"data": spec.get("data", []), "layout": layout, "frames": spec.get("frames", [])})
            return (f'<div class="mw-fig" id="{bid}-fig"{attr}></div>'
                    f'<script type="application/json" id="{bid}-fig-data">{data}</script>')
        view: CircuitsView = block.body
        style = f' style="min-height:{esc(view.height)}"' if view.height else ""
        return (f'<div class="mw-cv" id="{bid}-cv" data-component="{esc(view.component)}"{style}></div>'
                f'<script type="application/json" id="{bid}-cv-props">{view.props_json()}</script>')

    def save(self, path: str | os.PathLike[str], assets: str = "inline") -> Path:
        """Write the page atomically to ``path`` (its directory must exist); returns the path."""
        from mechwork.io import atomic_open

        path = Path(path)
        text = self.render(assets)  # render first: a bad page leaves nothing on disk
        parent = path.parent
        if path.is_dir():
            raise OutputError(f"dashboard path must be a file, not a directory (got {str(path)!r})")
        if not parent.is_dir():
            what = "is not a directory" if parent.exists() else "does not exist"
            raise OutputError(f"cannot write {str(path)!r}: directory {str(parent)!r} {what}")
        try:
            with atomic_open(path, "w", make_parents=False) as f:
                f.write(text)
        except OSError as e:
            raise OutputError(f"cannot write {str(path)!r}: {e.strerror or e}") from e
        return path

    def _repr_html_(self) -> str:
        """In a notebook: the page in a sandboxed iframe (inline assets, works offline).

        ``sandbox="allow-scripts"`` without ``allow-same-origin``: the page's scripts run in an opaque
        origin and cannot reach the notebook, its cookies or its kernel.
        """
        doc = esc(self.render("inline"), quote=True)
        return (f'<iframe sandbox="allow-scripts" srcdoc="{doc}" '
                'style="width:100%;height:900px;border:1px solid #ddd;resize:vertical"></iframe>')


def saved_assets(path: str | os.PathLike[str]) -> str | None:
    """``"inline"`` or ``"cdn"`` for a page mechwork saved at ``path``; None for anything else (or nothing).

    Read from the page's head: a CDN page links its bundles (``<script src=...>``), an inline page
    embeds them. A page without figures or views carries no bundle either way and gives None.
    """
    try:
        with open(path, encoding="utf-8", errors="replace") as f:
            head = f.read(65536)
    except OSError:
        return None
    head = head.split("</head>", 1)[0]
    if '<meta name="generator" content="mechwork' not in head:
        return None
    if '<script src="' in head:
        return "cdn"
    return "inline" if "<script>" in head else None


@cache
def _version() -> str:
    from importlib.metadata import PackageNotFoundError, version

    try:
        return version("mechwork")
    except PackageNotFoundError:  # pragma: no cover
        return "unknown"


# Draws every figure and view; one failure is reported in place (and on the console), the rest still draw.
_DRAW = """(function () {
  function json(id) { return JSON.parse(document.getElementById(id).textContent); }
  function fail(el, e) {
    el.textContent = "This figure could not be drawn: " + e;
    el.className += " mw-error";
    console.error(e);
  }
  var tEl = document.getElementById("mw-templates");
  var templates = tEl ? JSON.parse(tEl.textContent) : [];
  document.querySelectorAll(".mw-fig").forEach(function (el) {
    try {
      var f = json(el.id + "-data");
      if (el.dataset.template !== undefined) { f.layout.template = templates[+el.dataset.template]; }
      Plotly.newPlot(el, f.data, f.layout, {responsive: true, displaylogo: false}).then(function () {
        if (f.frames.length) { Plotly.addFrames(el, f.frames); }
      });
    } catch (e) { fail(el, e); }
  });
  document.querySelectorAll(".mw-cv").forEach(function (el) {
    try {
      CircuitsVis.render(el.id, CircuitsVis[el.dataset.component], json(el.id + "-props"));
    } catch (e) { fail(el, e); }
  });
})();
"""

_CSS = """
:root { --fg: #1d2228; --muted: #5f6b76; --line: #e3e7eb; --accent: #2b6cb0; --bg: #fbfcfd; }
* { box-sizing: border-box; }
body { margin: 0; background: var(--bg); color: var(--fg);
  font: 15px/1.55 system-ui, -apple-system, "Segoe UI", Roboto, "Helvetica Neue", Arial, sans-serif; }
main { max-width: 1120px; margin: 0 auto; padding: 24px 28px 48px; }
header h1 { margin: 8px 0 4px; font-size: 1.9em; }
.mw-subtitle { color: var(--muted); margin: 0 0 12px; }
.mw-toc { border: 1px solid var(--line); border-radius: 6px; background: #fff; padding: 8px 16px; margin: 12px 0 20px; }
.mw-toc ol { margin: 0; padding-left: 1.3em; columns: 2; }
.mw-toc a { color: var(--accent); text-decoration: none; }
.mw-block { background: #fff; border: 1px solid var(--line); border-radius: 6px; padding: 14px 18px; margin: 14px 0; }
.mw-block h2 { font-size: 1.2em; margin: 0 0 8px; }
.mw-caption, .mw-more { color: var(--muted); font-size: 0.92em; margin: 6px 0 0; }
.mw-note { background: #f4f7fb; border-left: 3px solid var(--accent); padding: 8px 12px; margin: 4px 0;
  white-space: pre-wrap; }
.mw-fig { width: 100%; min-height: 420px; }
.mw-cv { min-height: 200px; overflow-x: auto; }
.mw-error { color: #b42318; min-height: 0; }
.mw-table { overflow-x: auto; }
table { border-collapse: collapse; font-size: 0.92em; }
th, td { border-bottom: 1px solid var(--line); padding: 4px 10px; }
th { text-align: left; background: #f6f8fa; }
td.num { text-align: right; font-variant-numeric: tabular-nums; }
dl.mw-kv { display: grid; grid-template-columns: max-content 1fr; gap: 4px 18px; margin: 0; }
dl.mw-kv dt { color: var(--muted); }
dl.mw-kv dd { margin: 0; font-variant-numeric: tabular-nums; }
.mw-md p:first-child { margin-top: 0; }
code { background: #f1f3f5; padding: 1px 4px; border-radius: 3px; }
footer { color: var(--muted); font-size: 0.85em; margin-top: 28px; }
"""
