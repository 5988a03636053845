"""``Page``: one self-contained HTML file of text, tables, plotly figures and circuitsvis views.

A page is a list of blocks, each with an optional title (which also goes in the
table of contents). Nothing is rendered until :meth:`Page.render` or
:meth:`Page.save`; then

* every figure's data and every view's props go into inert
  ``<script type="application/json">`` elements, and one small script at the
  end draws them all;
* ``assets="inline"`` embeds plotly.js and the circuitsvis bundle once each
  (only the ones the page uses), gzip-compressed (:mod:`~mechwork.dashboard.assets`),
  so the file opens from disk with no network;
  ``assets="cdn"`` links their versioned CDN copies instead and stays small;
  ``assets="site"`` loads them by relative path from a shared folder
  (``asset_base``, written once by :func:`mechwork.dashboard.site.write_assets`);
* markdown's ``$...$`` and ``$$...$$`` become MathML (:mod:`~mechwork.dashboard.mathml`),
  and every heading has an id and an anchor link (:mod:`~mechwork.dashboard.pagestyle`);
* blocks are data: :meth:`Block.to_dict` is JSON, :meth:`Page.extend` takes blocks back;
  :meth:`Page.figures` lists the plotly figures for export as SVG and PNG
  (:mod:`~mechwork.dashboard.export`), and :meth:`Page.save` can write them
  beside the page, with a download link under each figure;
* plotly's layout template (7 KB a figure) is stored once per distinct template, and long
  float lists as typed arrays (:mod:`~mechwork.dashboard.typedarrays`, every number unchanged);
* ids are ``mw-1``, ``mw-2``, ... in block order, and there is no timestamp
  unless the caller passes ``stamp``: the same page renders byte-identically;
* every string the caller supplies (titles, captions, table cells, labels,
  token strings) is HTML-escaped; markdown is rendered with raw HTML disabled
  and ``javascript:`` links refused; figure text is drawn by plotly's SVG text
  renderer, which knows a few formatting tags and runs no script
  (``tests/test_injection.py`` tries them all in Chromium);
* :meth:`save` writes atomically into an existing directory, or raises
  :class:`~mechwork.errors.OutputError` having written nothing (figures included).

Example::

    >>> import pandas as pd, torch
    >>> from mechwork.dashboard.page import Block, Page
    >>> page = Page("<script>alert(1)</script>")
    >>> page = page.markdown("Attention of **head 0**.").table(pd.DataFrame({"head": [0], "score": [0.71]}))
    >>> page = page.attention(torch.eye(3)[None], ["12", "7", "="], title="An input")
    >>> html = page.render(assets="cdn")
    >>> "&lt;script&gt;alert(1)&lt;/script&gt;" in html and "<script>alert" not in html
    True
    >>> html == page.render(assets="cdn")
    True
    >>> site = page.render(assets="site", asset_base="../assets/")
    >>> '<script src="../assets/circuitsvis.js"' in site and "plotly.min.js" not in site
    True
    >>> Block.from_dict(page.blocks[2].to_dict()) == page.blocks[2]
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
from pathlib import Path, PurePosixPath
from typing import TYPE_CHECKING, Any

from mechwork.dashboard.assets import script_json
from mechwork.dashboard.mathml import markdown_html
from mechwork.dashboard.pagestyle import CSS, DRAW, HeadingIds, heading, slug
from mechwork.dashboard.site import bundle_scripts, check_page_path, href, save_with_figures, saved_assets, write_page
from mechwork.dashboard.typedarrays import pack_figure
from mechwork.dashboard.views import VIEW_CSS, CircuitsView, attention_heads, colored_tokens
from mechwork.errors import invalid
from mechwork.limits import ASSET_MODES

if TYPE_CHECKING:  # pragma: no cover
    import pandas as pd

    from mechwork.dashboard.export import FigureSpec
    from mechwork.results import Result

__all__ = ["ASSET_MODES", "Block", "Page", "saved_assets"]

esc = html.escape


BLOCK_KINDS = ("html", "plotly", "view")


@dataclass(frozen=True)
class Block:
    kind: str  # "html" (already escaped), "plotly", "view"
    title: str | None
    caption: str | None
    body: Any  # escaped HTML str, a plotly figure dict, or a CircuitsView

    def to_dict(self) -> dict[str, Any]:
        """The block as JSON-ready data (a view's body is ``{"component", "props", "height"}``)."""
        body = self.body
        if isinstance(body, CircuitsView):
            body = {"component": body.component, "props": body.props, "height": body.height}
        return {"kind": self.kind, "title": self.title, "caption": self.caption, "body": body}

    @classmethod
    def from_dict(cls, d: Mapping[str, Any]) -> Block:
        """The block :meth:`to_dict` gave (``invalid`` names what is wrong with anything else)."""
        if not isinstance(d, Mapping) or d.get("kind") not in BLOCK_KINDS:
            got = d.get("kind") if isinstance(d, Mapping) else type(d).__name__
            raise invalid("block kind", "one of " + ", ".join(BLOCK_KINDS), got)
        kind, body = d["kind"], d.get("body")
        want = {"html": str, "plotly": dict, "view": dict}[kind]
        if not isinstance(body, want):
            raise invalid(f"{kind} block body", f"a {want.__name__}", type(body).__name__)
        if kind == "view":
            body = CircuitsView(body.get("component", ""), dict(body.get("props") or {}), body.get("height"))
        title, caption = d.get("title"), d.get("caption")
        return cls(kind, None if title is None else str(title), None if caption is None else str(caption), body)


def _fmt(v: Any, float_format: str) -> str:
    if isinstance(v, float) or type(v).__name__.startswith("float"):
        return format(float(v), float_format)
    return str(v)


class Page:
    """A dashboard under construction; every adder returns the page, so calls chain."""

    def __init__(self, title: str, *, subtitle: str | None = None, stamp: str | bool = False, toc: bool = True):
        self.title = str(title)
        self.subtitle = subtitle
        self.toc = toc  # False: no contents box, whatever the number of titled blocks
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
    def extend(self, blocks: Iterable[Block]) -> Page:
        """Append ready blocks (from another page, or :meth:`Block.from_dict` of a cache)."""
        for block in blocks:
            if not isinstance(block, Block):
                raise invalid("blocks", "Block objects", type(block).__name__)
            self.blocks.append(block)
        return self

    def markdown(self, text: str, *, title: str | None = None) -> Page:
        """Markdown (CommonMark plus tables, ``$`` math as MathML); raw HTML in ``text`` is shown as text."""
        return self._add("html", f'<div class="mw-md">{markdown_html(str(text))}</div>', title, None)

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
        by default (``summary=None``) only when no ``caption`` is given. ``figure_kw`` go to ``result.figure``, or to
        ``result.figure_spec`` when the result has one (the same figure as a plotly figure dict, built faster).
        """
        if summary is None:
            summary = caption is None
        if summary:
            self.note(result.summary(), title=title or type(result).__name__)
            title = None
        spec = getattr(result, "figure_spec", None)  # the figure as a dict, when the result builds one
        try:
            fig = spec(**figure_kw) if callable(spec) else result.figure(**figure_kw)
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
    def figures(self) -> list[FigureSpec]:
        """Every plotly figure in page order, for export (:mod:`~mechwork.dashboard.export`); ids are ``mw-N``."""
        from mechwork.dashboard.export import FigureSpec

        specs: list[FigureSpec] = []
        for i, block in enumerate(self.blocks, start=1):
            if block.kind == "plotly":
                layout = dict(block.body.get("layout") or {})
                title = layout.get("title")
                text = title.get("text") if isinstance(title, dict) else title
                if not (isinstance(text, str) and text.strip()):
                    text = block.title or f"Figure {len(specs) + 1}"
                specs.append(FigureSpec(f"mw-{i}", text, {"data": block.body.get("data", []), "layout": layout}))
        return specs

    def render(self, assets: str = "inline", *, asset_base: str = "assets/",
               figure_links: Mapping[str, Sequence[str]] | None = None) -> str:
        """The whole page as one HTML string.

        ``assets="site"`` loads the bundles from ``asset_base`` (a relative URL such as ``"../assets/"``);
        ``figure_links`` maps a figure's id (``mw-N``) to the hrefs of its image files, linked under it.
        """
        if assets not in ASSET_MODES:
            raise invalid("assets", " or ".join(repr(m) for m in ASSET_MODES), assets)
        links = dict(figure_links or {})
        figure_ids = {f"mw-{i}" for i, b in enumerate(self.blocks, start=1) if b.kind == "plotly"}
        for key in links:
            if key not in figure_ids:
                raise invalid("figure_links", "keyed by the ids of the page's figures (mw-N)", key)
        figs = [b.body for b in self.blocks if b.kind == "plotly"]
        scripts = bundle_scripts(figs, any(b.kind == "view" for b in self.blocks), assets, asset_base)
        templates: list[str] = []
        toc, parts, ids = [], [], HeadingIds()
        for i, block in enumerate(self.blocks, start=1):
            bid = f"mw-{i}"
            head = ""
            if block.title is not None:
                toc.append(f'<li><a href="#{bid}">{esc(block.title)}</a></li>')
                head = heading(2, esc(block.title), ids.take(slug(block.title)))
            body = self._body(block, bid, templates)
            parts.append(f'<section id="{bid}" class="mw-block mw-{block.kind}">{head}'
                         + (ids.fix(body) if block.kind == "html" else body) + _links(links.get(bid))
                         + (f'<p class="mw-caption">{esc(block.caption)}</p>' if block.caption else "")
                         + "</section>\n")
        nav = f'<nav class="mw-toc"><ol>{"".join(toc)}</ol></nav>\n' if self.toc and len(toc) > 1 else ""
        sub = f'<p class="mw-subtitle">{esc(self.subtitle)}</p>' if self.subtitle else ""
        stamp = f" · {esc(self.stamp)}" if self.stamp else ""
        tmpl = (f'<script type="application/json" id="mw-templates">[{",".join(templates)}]</script>\n'
                if templates else "")
        return (
            "<!DOCTYPE html>\n<html lang=\"en\">\n<head>\n<meta charset=\"utf-8\">\n"
            '<meta name="viewport" content="width=device-width, initial-scale=1">\n'
            f'<meta name="generator" content="mechwork {_version()}">\n'
            f"<title>{esc(self.title)}</title>\n<style>{CSS}{VIEW_CSS}\n</style>\n{scripts}</head>\n<body>\n<main>\n"
            f"<header><h1>{esc(self.title)}</h1>{sub}</header>\n{nav}{''.join(parts)}"
            f'<footer>Made with mechwork {esc(_version())}{stamp}</footer>\n</main>\n{tmpl}'
            f"<script>\n{DRAW}</script>\n</body>\n</html>\n"
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
            data = script_json(pack_figure({"data": spec.get("data", []), "layout": layout,
                                            "frames": spec.get("frames", [])}))
            return (f'<div class="mw-fig" id="{bid}-fig"{attr}></div>'
                    f'<script type="application/json" id="{bid}-fig-data">{data}</script>')
        view: CircuitsView = block.body
        style = f' style="min-height:{esc(view.height)}"' if view.height else ""
        return (f'<div class="mw-cv" id="{bid}-cv" data-component="{esc(view.component)}"{style}></div>'
                f'<script type="application/json" id="{bid}-cv-props">{view.props_json()}</script>')

    def save(self, path: str | os.PathLike[str], assets: str = "inline", *, asset_base: str = "assets/",
             figures: str | Sequence[str] | None = None, figures_dir: str | os.PathLike[str] | None = None,
             exporter: Any = None) -> Path:
        """Write the page atomically to ``path`` (its directory must exist); returns the path.

        ``figures="svg,png"`` also exports every plotly figure into ``figures_dir`` (default
        ``<page stem>-figures/`` beside the page) and links the files under each figure. The images go to
        a temporary folder renamed into place, then the page is written; on any error nothing is left.
        ``exporter``: an open :class:`~mechwork.dashboard.export.Exporter` to draw with (a site's pages share one).
        """
        from mechwork.dashboard.export import export_figures, parse_formats

        path = Path(path)
        formats = parse_formats(figures)
        specs = self.figures() if formats else []
        if not specs:  # render first: a bad page leaves nothing on disk (asset_base matters to site pages only)
            text = self.render(assets, asset_base=asset_base) if assets == "site" else self.render(assets)
            check_page_path(path)
            write_page(path, text)
            return path
        fig_dir = Path(figures_dir) if figures_dir is not None else path.parent / f"{path.stem}-figures"
        links = {s.id: [href(fig_dir / f"{s.stem}.{fmt}", path.parent) for fmt in formats] for s in specs}
        text = self.render(assets, asset_base=asset_base, figure_links=links)
        check_page_path(path)
        draw = exporter.export if exporter is not None else export_figures
        save_with_figures(path, text, fig_dir, lambda tmp: draw(specs, tmp, formats))
        return path

    def _repr_html_(self) -> str:
        """In a notebook: the page in a sandboxed iframe (inline assets, works offline).

        ``sandbox="allow-scripts"`` without ``allow-same-origin``: the page's scripts run in an opaque
        origin and cannot reach the notebook, its cookies or its kernel.
        """
        doc = esc(self.render("inline"), quote=True)
        return (f'<iframe sandbox="allow-scripts" srcdoc="{doc}" '
                'style="width:100%;height:900px;border:1px solid #ddd;resize:vertical"></iframe>')


def _links(hrefs: Sequence[str] | None) -> str:
    """The download links under a figure: ``Download: SVG · PNG``."""
    if not hrefs:
        return ""
    tags = [f'<a href="{esc(h, quote=True)}">{esc(PurePosixPath(h).suffix.lstrip(".").upper() or "file")}</a>'
            for h in hrefs]
    return f'<p class="mw-figlinks">Download: {" · ".join(tags)}</p>'


@cache
def _version() -> str:
    from importlib.metadata import PackageNotFoundError, version

    try:
        return version("mechwork")
    except PackageNotFoundError:  # pragma: no cover
        return "unknown"
