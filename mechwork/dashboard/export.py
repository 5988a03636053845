"""Every plotly figure of a page as an SVG and a PNG file, drawn by plotly.js itself in headless Chromium.

A :class:`FigureSpec` is one figure as plotly JSON plus the title its image
must carry and the size it is drawn at. :func:`export_figures` opens one
headless Chromium (Debian's ``/usr/bin/chromium`` or ``$MECHWORK_CHROMIUM``,
driven by playwright; never a downloaded browser, every network request
refused), loads the plotly.js bundle that pages carry (mechwork's partial
bundle, :data:`mechwork.dashboard.assets.PLOTLY`) into a blank page, and asks
``Plotly.toImage`` for each figure in each format. The images are what the
interactive page draws, because the same library draws them (a figure with a
trace type the partial bundle lacks loads plotly's full bundle first, as its
page does). Each file is written atomically as ``<out_dir>/<stem>.<fmt>``.
:class:`Exporter` keeps that one browser open across many calls (every page
of a site); :func:`export_figures` is one export with its own browser.

Example::

    >>> from mechwork.dashboard.export import FigureSpec, parse_formats
    >>> parse_formats("svg, png"), parse_formats(None)
    (('svg', 'png'), ())
    >>> parse_formats("jpg")
    Traceback (most recent call last):
    mechwork.errors.ConfigError: 'figures' must be a comma-separated list of svg, png (got 'jpg')
    >>> spec = FigureSpec("mw-3", "Embedding spectrum: k ≥ 1", {"data": [], "layout": {"height": 300}})
    >>> spec.stem, spec.width, spec.height
    ('03-embedding-spectrum-k-1', 900, 300)
"""

from __future__ import annotations

import asyncio
import base64
import hashlib
import os
import re
import shutil
import tempfile
from collections.abc import Sequence
from concurrent.futures import ThreadPoolExecutor
from contextlib import suppress
from dataclasses import dataclass
from pathlib import Path
from types import TracebackType
from typing import Any
from urllib.parse import unquote

from mechwork.dashboard.pagestyle import ascii_words
from mechwork.errors import ConfigError, ExportError, OutputError, invalid

__all__ = [
    "DEFAULT_HEIGHT", "DEFAULT_WIDTH", "FIGURE_FORMATS", "Exporter", "FigureSpec", "check_can_export",
    "chromium_executable", "export_figures", "export_layout", "parse_formats", "slug", "stable_svg_ids",
]

FIGURE_FORMATS = ("svg", "png")
DEFAULT_WIDTH, DEFAULT_HEIGHT = 900, 450
DEFAULT_CHROMIUM = "/usr/bin/chromium"
_STEM_CHARS = 60  # the slug part of a file name stays short
# the flags tests/chromium_check.py uses: headless, no sandbox (containers), nothing phoning home
CHROMIUM_FLAGS = (
    "--headless", "--no-sandbox", "--disable-gpu", "--no-first-run", "--disable-background-networking",
    "--disable-component-update", "--disable-sync", "--disable-quic",
)
LOAD_BOUND_S = 600.0  # how long a loaded machine may take to start Chromium or draw a figure (a bound, not a timing)


def parse_formats(value: object) -> tuple[str, ...]:
    """The image formats asked for, in order and without repeats: ``"svg,png"`` -> ``("svg", "png")``; None or an
    empty list: none. An empty item (``""``, ``","``, ``"svg,,png"``) or a value neither a string nor a list of them
    is one line naming it and the valid formats."""
    valid = f"a comma-separated list of {', '.join(FIGURE_FORMATS)}"
    if value is None:
        return ()
    if not isinstance(value, str) and not (isinstance(value, Sequence) and not isinstance(value, (bytes, bytearray))):
        raise invalid("figures", f"{valid} (a string or a list of strings), or None for none", value)
    items = value.split(",") if isinstance(value, str) else list(value)  # an empty list: none, as None
    out: list[str] = []
    for item in items:
        fmt = item.strip().lower() if isinstance(item, str) else item
        if fmt == "":
            raise invalid("figures", f"{valid}, with no empty item", value)
        if fmt not in FIGURE_FORMATS:
            raise invalid("figures", f"a comma-separated list of {', '.join(FIGURE_FORMATS)}",
                          item.strip() if isinstance(item, str) else item)
        if fmt not in out:
            out.append(fmt)
    return tuple(out)


def slug(text: str) -> str:
    """Lower-case ASCII letters and digits joined by ``-``: safe in any file name or URL.

    >>> slug("Attention: head 1.4 — <b>&</b> Ünïcode")
    'attention-head-1-4-b-b-unicode'
    """
    return ascii_words(text, _STEM_CHARS)


def _size(layout: dict[str, Any], key: str, default: int) -> int:
    v = layout.get(key)
    if isinstance(v, bool) or not isinstance(v, int | float) or v < 10:
        return default
    return round(v)


@dataclass(frozen=True)
class FigureSpec:
    """One figure to export: its page id (``mw-3``), the title its image names, and its plotly JSON."""

    id: str
    title: str
    figure: dict[str, Any]  # {"data": [...], "layout": {...}} with any template resolved in

    @property
    def layout(self) -> dict[str, Any]:
        layout = self.figure.get("layout")
        return layout if isinstance(layout, dict) else {}

    @property
    def width(self) -> int:
        """``layout.width`` when the figure fixes one, else :data:`DEFAULT_WIDTH`."""
        return _size(self.layout, "width", DEFAULT_WIDTH)

    @property
    def height(self) -> int:
        """``layout.height`` when the figure fixes one, else :data:`DEFAULT_HEIGHT`."""
        return _size(self.layout, "height", DEFAULT_HEIGHT)

    @property
    def stem(self) -> str:
        """File name without extension: the block number (2 digits) and the title's slug."""
        m = re.fullmatch(r"mw-(\d+)", self.id)
        head = f"{int(m.group(1)):02d}" if m else (slug(self.id) or "figure")
        tail = slug(self.title)
        return f"{head}-{tail}" if tail else head


# -- drawing ---------------------------------------------------------------------------------------------------

_PLOTLY_TAG = re.compile(r"<(br|b|i|em|sup|sub|span|a|s|u)\b[^<>]*/?>", re.IGNORECASE)
_PLOTLY_ESCAPES = {"&": "&amp;", "<": "&lt;", ">": "&gt;"}


def _plotly_text(text: str) -> str:
    """Plain text as plotly's pseudo-HTML, so that ``<``, ``>`` and ``&`` are drawn as themselves."""
    return re.sub("[&<>]", lambda m: _PLOTLY_ESCAPES[m.group(0)], text)


def export_layout(spec: FigureSpec) -> dict[str, Any]:
    """The figure's layout as exported: its title reads ``spec.title`` (other title attributes kept), at the
    export size.

    A title equal to the figure's own ``title.text`` that uses plotly's markup (``<br>``, ``<sup>``, ...) is
    kept as the interactive page draws it; any other title is drawn literally.

    >>> spec = FigureSpec("mw-1", "a < b & c", {"layout": {"title": {"text": "x", "x": 0.5}}})
    >>> export_layout(spec)["title"], export_layout(spec)["width"]
    ({'text': 'a &lt; b &amp; c', 'x': 0.5}, 900)
    """
    layout = dict(spec.layout)
    old = layout.get("title")
    title = dict(old) if isinstance(old, dict) else {}
    existing = old if isinstance(old, str) else title.get("text")
    keep = spec.title == existing and _PLOTLY_TAG.search(spec.title) is not None
    title["text"] = spec.title if keep else _plotly_text(spec.title)
    if not existing:  # a title the figure did not have needs room above the plot
        margin = dict(layout.get("margin") or {})
        if isinstance(margin.get("t"), int | float) and margin["t"] < 60:
            margin["t"] = 60
            layout["margin"] = margin
    layout["title"] = title
    layout["width"], layout["height"] = spec.width, spec.height
    return layout


def chromium_executable() -> str | None:
    """The Chromium binary that draws the images (``$MECHWORK_CHROMIUM``, else ``/usr/bin/chromium``), or None."""
    exe = os.environ.get("MECHWORK_CHROMIUM") or DEFAULT_CHROMIUM
    found = shutil.which(exe)
    if found is not None:
        return found
    return exe if os.path.isfile(exe) and os.access(exe, os.X_OK) else None


def _require_chromium() -> str:
    exe = chromium_executable()
    if exe is None:
        env = os.environ.get("MECHWORK_CHROMIUM")
        where = f"{env} ($MECHWORK_CHROMIUM)" if env else DEFAULT_CHROMIUM
        raise ExportError(f"figure export needs Chromium at {where}: apt-get install chromium, "
                          "or set $MECHWORK_CHROMIUM to a Chromium binary")
    return exe


_NO_PLAYWRIGHT = "figure export needs playwright: pip install 'mechwork[figures]'"


def _sync_playwright() -> Any:
    try:
        from playwright.sync_api import sync_playwright
    except ImportError:
        raise ExportError(_NO_PLAYWRIGHT) from None
    return sync_playwright


def check_can_export() -> None:
    """Raise the :class:`~mechwork.errors.ExportError` an :class:`Exporter` would (no Chromium, no playwright),
    without starting a browser or importing playwright: a command checks this before any work."""
    import importlib.util

    _require_chromium()
    if importlib.util.find_spec("playwright") is None:
        raise ExportError(_NO_PLAYWRIGHT)


def _first_line(e: BaseException) -> str:
    lines = [ln.strip() for ln in str(e).splitlines() if ln.strip()]
    return lines[0] if lines else type(e).__name__


def _block_network(route: Any) -> None:
    if route.request.url.startswith(("file:", "data:")):
        route.continue_()
    else:
        route.abort()


# every format of one figure, in order, as data URLs
_TO_IMAGES_JS = """async ([fig, formats, width, height]) => {
  const out = [];
  for (const format of formats) {
    out.push(await Plotly.toImage(fig, {format, width, height, scale: 1}));
  }
  return out;
}"""


def _decode(url: str, fmt: str) -> bytes:
    head, sep, body = url.partition(",")
    if not sep or not head.startswith(f"data:image/{'svg+xml' if fmt == 'svg' else fmt}"):
        raise ExportError(f"plotly.js returned no {fmt} image (got {url[:40]!r})")
    if head.endswith(";base64"):
        return base64.b64decode(body)
    return unquote(body).encode("utf-8")


class Exporter:
    """One headless Chromium holding plotly.js, reused for every figure of every page until closed.

    Use it as a context manager (``with Exporter() as ex: ex.export(specs, out_dir, "svg,png")``); a site of
    many pages starts the browser once.
    """

    def __init__(self, *, timeout_s: float = LOAD_BOUND_S):
        self.timeout_s = timeout_s
        self._pw: Any = None
        self._ctx: Any = None
        self._page: Any = None
        self._full = False  # plotly's full bundle loaded over the partial one
        self._tmp: tempfile.TemporaryDirectory[str] | None = None

    def __enter__(self) -> Exporter:
        self.open()
        return self

    def __exit__(self, et: type[BaseException] | None, ev: BaseException | None, tb: TracebackType | None) -> None:
        self.close()

    def open(self) -> None:
        """Start Chromium with network access refused and load the plotly.js bundle that pages carry."""
        if self._page is not None:
            return
        from mechwork.dashboard.assets import PLOTLY

        exe = _require_chromium()
        sync_playwright = _sync_playwright()
        plotly_js = PLOTLY.path
        self._tmp = tempfile.TemporaryDirectory(prefix="mw-export-")
        tmp = Path(self._tmp.name)
        shell = tmp / "export.html"
        shell.write_text(f'<!doctype html><html><head><meta charset="utf-8">'
                         f'<script src="{plotly_js.as_uri()}"></script></head><body></body></html>\n',
                         encoding="utf-8")
        try:
            self._pw = sync_playwright().start()
            self._ctx = self._pw.chromium.launch_persistent_context(
                str(tmp / "profile"), executable_path=exe, headless=True, args=list(CHROMIUM_FLAGS))
            self._ctx.set_default_timeout(self.timeout_s * 1000)
            self._ctx.route("**/*", _block_network)
            page = self._ctx.new_page()
            page.goto(shell.as_uri(), wait_until="load")
            page.wait_for_function("() => typeof Plotly === 'object' && typeof Plotly.toImage === 'function'")
            self._page = page
        except Exception as e:
            self.close()
            raise ExportError(f"Chromium at {exe} could not start for figure export: {_first_line(e)}") from e

    def close(self) -> None:
        """Stop Chromium and remove its temporary profile."""
        self._page, self._full = None, False
        with suppress(Exception):  # shutting down: nothing left to save
            if self._ctx is not None:
                self._ctx.close()
        with suppress(Exception):
            if self._pw is not None:
                self._pw.stop()
        self._ctx = self._pw = None
        if self._tmp is not None:
            self._tmp.cleanup()
            self._tmp = None

    def images(self, spec: FigureSpec, formats: Sequence[str]) -> list[bytes]:
        """The figure drawn in each format, as file bytes (``formats`` already parsed)."""
        from mechwork.dashboard.assets import PLOTLY_FULL, partial_traces, trace_types

        if self._page is None:
            self.open()
        if not self._full and not trace_types(spec.figure) <= partial_traces():  # as its page would
            self._page.add_script_tag(path=str(PLOTLY_FULL.path))
            self._full = True
        data = spec.figure.get("data", [])
        traces = [{**t, "uid": f"t{i}"} if isinstance(t, dict) else t for i, t in enumerate(data)]  # not random
        fig = {"data": traces, "layout": export_layout(spec)}
        try:
            urls = self._page.evaluate(_TO_IMAGES_JS, [fig, list(formats), spec.width, spec.height])
        except Exception as e:
            raise ExportError(f"figure {spec.id} ({spec.title!r}) could not be drawn: {_first_line(e)}") from e
        out = [_decode(url, fmt) for url, fmt in zip(urls, formats, strict=True)]
        return [stable_svg_ids(b, spec) if fmt == "svg" else b for b, fmt in zip(out, formats, strict=True)]

    def export(self, specs: Sequence[FigureSpec], out_dir: str | os.PathLike[str],
               formats: str | Sequence[str] | None = FIGURE_FORMATS) -> dict[str, list[Path]]:
        """Write ``<out_dir>/<stem>.<fmt>`` for every figure and format; return figure id -> paths."""
        from mechwork.atomic import atomic_open

        fmts = parse_formats(formats)
        _check_specs(specs)
        out = Path(out_dir)
        try:
            out.mkdir(parents=True, exist_ok=True)
        except OSError as e:
            raise OutputError(f"cannot write figures into {out}: {e.strerror or e}") from None
        written: dict[str, list[Path]] = {}
        for spec in specs:
            paths = [out / f"{spec.stem}.{fmt}" for fmt in fmts]
            for path, data in zip(paths, self.images(spec, fmts) if fmts else [], strict=True):
                try:
                    with atomic_open(path, "wb") as f:
                        f.write(data)
                except OSError as e:
                    raise OutputError(f"cannot write {path}: {e.strerror or e}") from None
            written[spec.id] = paths
        return written


_SVG_REF = re.compile(r'(\bid="|url\((?:\'|&quot;)?#|href="#)([^"\'&)]*)')


def stable_svg_ids(svg: bytes, spec: FigureSpec) -> bytes:
    """``svg`` with plotly's random figure uid (the hex after ``defs-``) replaced in every id and reference
    (``id="..."``, ``url(#...)`` quoted or not, ``href="#..."``) by one derived from the figure: the same figure
    draws the same bytes.

    >>> spec = FigureSpec("mw-1", "T", {})
    >>> svg = b'<svg><defs id="defs-0bd63a"/><g clip-path="url(#clip0bd63axyplot)" d="M0bd63a"/></svg>'
    >>> stable_svg_ids(svg, spec).decode()  # the path data is not an id: left as it is
    '<svg><defs id="defs-1206fd"/><g clip-path="url(#clip1206fdxyplot)" d="M0bd63a"/></svg>'
    """
    text = svg.decode("utf-8")
    m = re.search(r'\bid="defs-([0-9a-f]+)"', text)
    if m is None:
        return svg
    uid = m.group(1)
    new = hashlib.sha256(f"{spec.id}\n{spec.stem}".encode()).hexdigest()[:6]
    return _SVG_REF.sub(lambda r: r.group(1) + r.group(2).replace(uid, new), text).encode("utf-8")


def _check_specs(specs: Sequence[FigureSpec]) -> None:
    stems = [s.stem for s in specs]
    dup = sorted({s for s in stems if stems.count(s) > 1})
    if dup:
        raise ConfigError(f"figures must have distinct ids; two would both be written as {dup[0]!r}")


def export_figures(specs: Sequence[FigureSpec], out_dir: str | os.PathLike[str],
                   formats: str | Sequence[str] | None = FIGURE_FORMATS) -> dict[str, list[Path]]:
    """Every figure in every format, drawn by one headless Chromium; returns figure id -> written paths.

    Raises :class:`~mechwork.errors.ExportError` (one line naming what to install) without playwright or
    Chromium. Inside a running event loop (a notebook) the browser runs in a worker thread.
    """
    fmts = parse_formats(formats)
    _check_specs(specs)
    if not specs or not fmts:
        return {s.id: [] for s in specs}

    def run() -> dict[str, list[Path]]:
        with Exporter() as ex:
            return ex.export(specs, out_dir, fmts)

    try:
        asyncio.get_running_loop()
    except RuntimeError:
        return run()
    with ThreadPoolExecutor(max_workers=1) as pool:  # playwright's sync API refuses a thread with a running loop
        return pool.submit(run).result()
