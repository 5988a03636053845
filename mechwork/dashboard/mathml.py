"""Markdown with math: ``$...$`` and ``$$...$$`` become MathML, sanitised, and headings get anchors.

Chromium, Firefox and Safari draw MathML Core natively, so the math needs no
script and no font bundle: it renders offline, from ``file://`` and in print.
:func:`to_mathml` converts LaTeX with ``latex2mathml`` and then rebuilds its
output from an allowlist of MathML elements and attributes, escaping every
text node and attribute value: ``latex2mathml`` copies ``\\text{...}`` through
unescaped, so ``$\\text{<script>...}$`` would otherwise be live HTML. LaTeX
that cannot be converted (or an unknown command) is shown as its source,
escaped, in ``<code class="mw-math-error">``.

:func:`markdown_html` is the page's markdown: CommonMark plus tables with raw
HTML off, ``$`` math via ``mdit_py_plugins``' dollarmath (``$5 and $10`` stays
text: a ``$`` next to a digit does not delimit math), and an id and anchor on
every heading (:mod:`~mechwork.dashboard.pagestyle`).

Example::

    >>> from mechwork.dashboard.mathml import markdown_html, to_mathml
    >>> to_mathml("x^2", display=False)
    '<math display="inline"><msup><mi>x</mi><mn>2</mn></msup></math>'
    >>> to_mathml(r"\\text{<script>alert(1)</script>}", display=False)
    '<math display="inline"><mtext>&lt;script&gt;alert(1)&lt;/script&gt;</mtext></math>'
    >>> to_mathml("a_", display=True)
    '<code class="mw-math-error">a_</code>'
    >>> print(markdown_html("## Costs\\n\\n$5 and $10, but $p^2$."))
    <h2 id="costs">Costs<a class="mw-anchor" href="#costs" aria-label="Link to this section"></a></h2>
    <p>$5 and $10, but <math display="inline"><msup><mi>p</mi><mn>2</mn></msup></math>.</p>
    <BLANKLINE>
"""

from __future__ import annotations

import html
import re
from collections.abc import Sequence
from functools import cache, lru_cache
from html.parser import HTMLParser
from typing import Any

from mechwork.dashboard.pagestyle import anchor, slug

__all__ = ["markdown_html", "to_mathml"]

# MathML Core's elements (plus mfenced/menclose, which latex2mathml emits), and their presentation attributes
ELEMENTS = frozenset({
    "math", "mrow", "mi", "mn", "mo", "ms", "mtext", "mspace", "msub", "msup", "msubsup", "munder", "mover",
    "munderover", "mmultiscripts", "mprescripts", "none", "mfrac", "msqrt", "mroot", "mstyle", "merror",
    "mpadded", "mphantom", "mtable", "mtr", "mtd", "mlabeledtr", "menclose", "mfenced", "semantics",
})
ATTRIBUTES = frozenset({
    "display", "mathvariant", "displaystyle", "scriptlevel", "stretchy", "symmetric", "largeop", "movablelimits",
    "accent", "accentunder", "fence", "separator", "separators", "form", "lspace", "rspace", "minsize", "maxsize",
    "linethickness", "columnalign", "rowalign", "columnspacing", "rowspacing", "columnlines", "rowlines", "frame",
    "framespacing", "width", "height", "depth", "voffset", "notation", "open", "close", "mathsize", "mathcolor",
    "mathbackground", "columnspan", "rowspan", "align", "denomalign", "numalign", "bevelled", "equalrows",
    "equalcolumns",
})
_UNKNOWN_COMMAND = re.compile(r"\\[A-Za-z]+")


class _Rebuild(HTMLParser):
    """Re-emits allowlisted MathML elements and attributes; anything else becomes escaped text."""

    def __init__(self) -> None:
        super().__init__(convert_charrefs=True)
        self.out: list[str] = []
        self.open: list[str] = []
        self.unknown = False

    def handle_starttag(self, tag: str, attrs: list[tuple[str, str | None]]) -> None:
        if tag not in ELEMENTS:  # text such as \\text{<b>} that latex2mathml copied through: shown as written
            self.out.append(html.escape(html.unescape(self.get_starttag_text() or ""), quote=False))
            return
        kept = "".join(f' {k}="{html.escape(v or "", quote=True)}"' for k, v in attrs if k in ATTRIBUTES)
        self.out.append(f"<{tag}{kept}>")
        self.open.append(tag)

    def handle_endtag(self, tag: str) -> None:
        if tag not in ELEMENTS:
            self.out.append(html.escape(f"</{tag}>", quote=False))
        elif tag in self.open:
            while self.open:  # close whatever the input left open inside it
                top = self.open.pop()
                self.out.append(f"</{top}>")
                if top == tag:
                    break

    def handle_data(self, data: str) -> None:
        if self.open and self.open[-1] in ("mi", "mo") and _UNKNOWN_COMMAND.fullmatch(data):
            self.unknown = True  # latex2mathml passes an unknown \command through as a name
        self.out.append(html.escape(data, quote=False))

    def result(self) -> str:
        self.close()
        return "".join(self.out) + "".join(f"</{t}>" for t in reversed(self.open))


def _unwrap(markup: str) -> str:
    """latex2mathml wraps everything in one ``<mrow>``; a single child does not need it."""
    m = re.fullmatch(r'(<math display="\w+">)<mrow>(.*)</mrow>(</math>)', markup, re.S)
    if m and _single_element(m.group(2)):
        return m.group(1) + m.group(2) + m.group(3)
    return markup


def _single_element(inner: str) -> bool:
    depth, tops = 0, 0
    for close, _ in re.findall(r"<(/?)(\w+)[^>]*>", inner):
        if close:
            depth -= 1
        else:
            tops += depth == 0
            depth += 1
    return tops == 1


@lru_cache(maxsize=4096)
def to_mathml(latex: str, display: bool) -> str:
    """``latex`` as sanitised MathML (``display``: a block equation), or its escaped source on an error."""
    from latex2mathml.converter import convert

    error = f'<code class="mw-math-error">{html.escape(latex)}</code>'
    try:
        raw = convert(latex, display="block" if display else "inline")
    except Exception:  # latex2mathml raises many kinds; all mean "not convertible"
        return error
    rebuilt = _Rebuild()
    rebuilt.feed(raw)
    out = rebuilt.result()
    if rebuilt.unknown or not out.startswith("<math"):
        return error
    return _unwrap(out)


def _math_rule(display: bool) -> Any:
    def render(self: Any, tokens: Sequence[Any], idx: int, options: Any, env: Any) -> str:
        math = to_mathml(str(tokens[idx].content).strip(), display)
        return f'<div class="mw-math">{math}</div>\n' if display else math
    return render


def _heading_open(self: Any, tokens: Sequence[Any], idx: int, options: Any, env: Any) -> str:
    return f'<{tokens[idx].tag} id="{slug(tokens[idx + 1].content)}">'


def _heading_close(self: Any, tokens: Sequence[Any], idx: int, options: Any, env: Any) -> str:
    return f"{anchor(slug(tokens[idx - 1].content))}</{tokens[idx].tag}>\n"


@cache
def _markdown() -> Any:
    from markdown_it import MarkdownIt
    from mdit_py_plugins.dollarmath import dollarmath_plugin

    # commonmark with raw HTML off: "<b>" in the text shows as text; javascript: links are refused
    md = MarkdownIt("commonmark", {"html": False, "typographer": False}).enable("table")
    dollarmath_plugin(md, allow_labels=False, allow_space=False, allow_digits=False, double_inline=True)
    md.add_render_rule("math_inline", _math_rule(False))
    md.add_render_rule("math_inline_double", _math_rule(True))
    md.add_render_rule("math_block", _math_rule(True))
    md.add_render_rule("heading_open", _heading_open)
    md.add_render_rule("heading_close", _heading_close)
    return md


def markdown_html(text: str) -> str:
    """``text`` as HTML: headings carry ids (unique per page once the page fixes them) and anchors."""
    out: str = _markdown().render(str(text))
    return out
