"""circuitsvis views as plain data: a component name and its props.

circuitsvis renders each view to HTML at once, with a random element id, and
decides between its CDN and its inlined 1.3 MB bundle by probing the internet
when a notebook displays it. A :class:`CircuitsView` instead keeps the
component name and its JSON-ready props. A :class:`~mechwork.dashboard.Page`
places many of them beside one copy of the bundle; in a notebook,
``_repr_html_`` inlines the bundle from the installed package (no probe, no
network) and defines ``CircuitsVis`` only if the page has not already got it.

Token labels are strings; integer token ids are turned into their decimal
strings, so a modular-arithmetic input shows as ``["12", "7", "="]``.

Several circuitsvis components put token strings into the page as raw HTML
(``dangerouslySetInnerHTML``: ColoredTokens, ColoredTokensMulti,
AttentionPatterns, TextNeuronActivations, TokenLogProbs, TopkTokens,
TopkSamples); :data:`HTML_PROPS` names those props, and
:meth:`CircuitsView.props_json` HTML-escapes their strings, so a label such as
``<img src=x onerror=...>`` shows as text. AttentionHeads and AttentionPattern
draw tokens on a canvas or as React text, so their strings go unescaped (no
``&lt;`` on screen). ``props`` itself always keeps the labels as given. One
seam remains: ColoredTokens' hover tooltip prints the same (escaped) string as
text, so a label holding ``<``, ``>`` or ``&`` shows as ``&lt;`` there.

Example::

    >>> import torch
    >>> from mechwork.dashboard.views import attention_heads, colored_tokens
    >>> view = attention_heads(torch.eye(3)[None], [12, 7, "="], head_names=["L0H0"])
    >>> view.component, view.props["tokens"]
    ('AttentionHeads', ['12', '7', '='])
    >>> print(colored_tokens(["<b>"], [1.0]).props_json())  # circuitsvis renders these tokens as HTML
    {"tokens":["\\u0026lt;b\\u0026gt;"],"values":[1.0]}
"""

from __future__ import annotations

import hashlib
import itertools
import math
from collections.abc import Iterable, Sequence
from dataclasses import dataclass, field
from typing import Any

from mechwork.dashboard.assets import CIRCUITSVIS, script_json
from mechwork.errors import invalid
from mechwork.hooks import token_labels

__all__ = ["COMPONENTS", "HTML_PROPS", "CircuitsView", "attention_heads", "attention_pattern", "colored_tokens",
           "jsonable"]

# The circuitsvis components mechwork builds views of (all exist in circuitsvis's bundle).
COMPONENTS = ("AttentionHeads", "AttentionPattern", "AttentionPatterns", "ColoredTokens", "ColoredTokensMulti",
              "TextNeuronActivations", "TokenLogProbs", "TopkTokens", "TopkSamples")

# Props whose strings circuitsvis inserts as HTML (dangerouslySetInnerHTML), per component; read from
# circuitsvis's sources (src/tokens/utils/Token.tsx, TokenCustomTooltip.tsx, attention/components/
# AttentionTokens.tsx, logits/TokenLogProbs.tsx, topk/TopkTokens.tsx and the components built on them).
HTML_PROPS: dict[str, tuple[str, ...]] = {
    "ColoredTokens": ("tokens",),
    "ColoredTokensMulti": ("tokens",),
    "AttentionPatterns": ("tokens",),
    "TextNeuronActivations": ("tokens",),
    "TokenLogProbs": ("prompt", "topKTokens"),
    "TopkTokens": ("tokens",),
    "TopkSamples": ("tokens",),
}
# Default notebook iframe heights (CSS) per component; a view's own ``height`` wins.
_NOTEBOOK_HEIGHT = {"AttentionHeads": "760px", "AttentionPattern": "560px", "AttentionPatterns": "640px"}

_displayed = itertools.count()
_DIGITS = 5  # significant digits kept for floats in props: plenty for a colour scale, and small


def jsonable(x: Any, digits: int = _DIGITS) -> Any:
    """Tensors and arrays to nested lists; floats rounded to ``digits`` significant digits; NaN to None."""
    if hasattr(x, "detach"):  # torch.Tensor, without importing torch here
        x = x.detach().cpu().tolist()
    elif hasattr(x, "tolist"):  # numpy arrays and scalars
        x = x.tolist()
    if isinstance(x, bool) or x is None or isinstance(x, (int, str)):
        return x
    if isinstance(x, float):
        return None if not math.isfinite(x) else float(f"{x:.{digits}g}")
    if isinstance(x, dict):
        return {str(k): jsonable(v, digits) for k, v in x.items()}
    if isinstance(x, (list, tuple)):  # plain floats inline: a pattern's rows hold thousands
        return [(float(f"{v:.{digits}g}") if math.isfinite(v) else None) if type(v) is float else jsonable(v, digits)
                for v in x]
    raise TypeError(f"cannot turn {type(x).__name__} into JSON")


def _escape_text(x: Any) -> Any:
    """Every string in ``x`` (nested lists) with ``&``, ``<`` and ``>`` escaped: safe as HTML element content."""
    if isinstance(x, str):
        return x.replace("&", "&amp;").replace("<", "&lt;").replace(">", "&gt;")
    if isinstance(x, list):
        return [_escape_text(v) for v in x]
    return x


@dataclass(frozen=True)
class CircuitsView:
    """One circuitsvis component with its props (JSON-ready)."""

    component: str
    props: dict[str, Any] = field(default_factory=dict)
    height: str | None = None  # CSS min-height of the mount, e.g. "420px"

    def __post_init__(self) -> None:
        if self.component not in COMPONENTS:
            raise invalid("component", f"one of {', '.join(COMPONENTS)}", self.component)

    def props_json(self) -> str:
        """The props as script-safe JSON, with the strings circuitsvis renders as HTML escaped."""
        html_props = HTML_PROPS.get(self.component, ())
        props = {k: _escape_text(v) if k in html_props else v for k, v in self.props.items()}
        return script_json(props)

    def _repr_html_(self) -> str:
        """Notebook HTML: a sandboxed iframe (scripts, but not the notebook's origin) holding the view and
        the bundle from the installed package; no internet probe."""
        import html

        digest = hashlib.sha1(f"{self.component}{self.props_json()}".encode()).hexdigest()[:10]
        mount = f"mw-cv-{digest}-{next(_displayed)}"  # unique even when one view is shown twice
        g = CIRCUITSVIS.global_name
        doc = (
            f'<!DOCTYPE html><html><head><meta charset="utf-8"><style>{VIEW_CSS}</style></head><body>'
            f'<div id="{mount}" class="mw-cv"></div>'
            f"<script>\n{CIRCUITSVIS.source()}\n</script>"
            f"<script>{g}.render({script_json(mount)},{g}[{script_json(self.component)}],{self.props_json()});"
            "</script></body></html>"
        )
        height = self.height or _NOTEBOOK_HEIGHT.get(self.component, "320px")
        return (f'<iframe sandbox="allow-scripts" srcdoc="{html.escape(doc, quote=True)}" '
                f'style="width:100%;height:{html.escape(height, quote=True)};border:0;resize:vertical"></iframe>')


# circuitsvis gives a zoomed attention head's box width "initial" (its content's width, capped at 8em a
# token) while chart.js sizes the canvas to the box: once laid out narrow (a notebook output or iframe
# drawn before it is shown) a 3-token head stays collapsed at a few pixels. The box fills its row up to
# circuitsvis's cap instead, and never goes below 300 px (the mount scrolls sideways when narrower).
VIEW_CSS = ".mw-cv div[style*='aspect-ratio'][style*='max-width: min('] { width: 100% !important; min-width: 300px; }"


def _check_square(attention: list[Any], n: int, what: str) -> None:
    for mat in attention:
        if len(mat) != n or any(len(row) != n for row in mat):
            raise invalid(what, f"[{n} x {n}] matrices for {n} tokens", f"a matrix of {len(mat)} rows")


def attention_heads(
    attention: Any,
    tokens: Iterable[Any],
    *,
    head_names: Sequence[str] | None = None,
    mask_upper_tri: bool | None = None,
) -> CircuitsView:
    """Every head's pattern ``[heads, dest, src]`` over ``tokens`` (circuitsvis AttentionHeads)."""
    att = jsonable(attention)
    labels = token_labels(tokens)
    if not (isinstance(att, list) and att and isinstance(att[0], list) and isinstance(att[0][0], list)):
        raise invalid("attention", "a [heads, dest, src] tensor", f"{type(attention).__name__} of lower rank")
    _check_square(att, len(labels), "attention")
    if head_names is not None and len(head_names) != len(att):
        raise invalid("head_names", f"{len(att)} names, one per head", f"{len(head_names)} names")
    props: dict[str, Any] = {"attention": att, "tokens": labels}
    if head_names is not None:
        props["attentionHeadNames"] = [str(h) for h in head_names]
    if mask_upper_tri is not None:
        props["maskUpperTri"] = mask_upper_tri
    return CircuitsView("AttentionHeads", props)


def attention_pattern(attention: Any, tokens: Iterable[Any], *, show_axis_labels: bool = True) -> CircuitsView:
    """One head's pattern ``[dest, src]`` as a single heatmap (circuitsvis AttentionPattern)."""
    att = jsonable(attention)
    labels = token_labels(tokens)
    if not (isinstance(att, list) and att and isinstance(att[0], list)):
        raise invalid("attention", "a [dest, src] tensor", type(attention).__name__)
    _check_square([att], len(labels), "attention")
    return CircuitsView("AttentionPattern", {"attention": att, "tokens": labels, "showAxisLabels": show_axis_labels})


def colored_tokens(tokens: Iterable[Any], values: Any, *, labels: Sequence[str] | None = None) -> CircuitsView:
    """Tokens coloured by one value each (``[pos]``), or by K values (``[pos, K]``, with a picker)."""
    vals = jsonable(values)
    toks = token_labels(tokens)
    if not isinstance(vals, list) or len(vals) != len(toks):
        got = f"{len(vals)} values" if isinstance(vals, list) else type(values).__name__
        raise invalid("values", f"one value (or row) per token ({len(toks)})", got)
    if vals and isinstance(vals[0], list):
        props: dict[str, Any] = {"tokens": toks, "values": vals}
        if labels is not None:
            props["labels"] = [str(x) for x in labels]
        return CircuitsView("ColoredTokensMulti", props)
    return CircuitsView("ColoredTokens", {"tokens": toks, "values": vals})
