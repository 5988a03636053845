"""Every plotly figure of a page as an SVG and a PNG file, drawn by plotly.js itself in headless Chromium.

A :class:`FigureSpec` is one figure as plotly JSON plus the title its image
must carry and the size it is drawn at. :func:`export_figures` opens one
headless Chromium (Debian's ``/usr/bin/chromium`` or ``$MECHWORK_CHROMIUM``,
driven by playwright; never a downloaded browser, every network request
refused), loads the plotly.js that the installed plotly package ships into a
blank page, and asks ``Plotly.toImage`` for each figure in each format. The
images are what the interactive page draws, because the same library draws
them. Each file is written atomically as ``<out_dir>/<stem>.<fmt>``.

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

import re
import unicodedata
from collections.abc import Sequence
from dataclasses import dataclass
from typing import Any

from mechwork.errors import invalid

__all__ = ["DEFAULT_HEIGHT", "DEFAULT_WIDTH", "FIGURE_FORMATS", "FigureSpec", "parse_formats"]

FIGURE_FORMATS = ("svg", "png")
DEFAULT_WIDTH, DEFAULT_HEIGHT = 900, 450
_STEM_CHARS = 60  # the slug part of a file name stays short


def parse_formats(value: str | Sequence[str] | None) -> tuple[str, ...]:
    """The image formats asked for, in order and without repeats: ``"svg,png"`` -> ``("svg", "png")``."""
    if value is None:
        return ()
    items = value.split(",") if isinstance(value, str) else list(value)
    out: list[str] = []
    for item in items:
        fmt = item.strip().lower() if isinstance(item, str) else item
        if fmt == "" and isinstance(value, str):
            continue
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
    ascii_text = unicodedata.normalize("NFKD", text).encode("ascii", "ignore").decode("ascii")
    words = re.findall(r"[a-z0-9]+", ascii_text.lower())
    out = "-".join(words)[:_STEM_CHARS].strip("-")
    return out


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
