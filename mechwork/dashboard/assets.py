"""The two JavaScript bundles a dashboard needs, and JSON that is safe inside ``<script>``.

Both bundles come from the installed Python packages, never from the network:
circuitsvis ships its whole React bundle as ``circuitsvis/dist/cdn/iife.js``
(it defines the global ``CircuitsVis``), and plotly ships ``plotly.min.js``
(the global ``Plotly``). Neither package is imported to find them, so this
module is cheap. ``Asset.url`` is the versioned CDN address used by
``assets="cdn"``: plotly.py's own CDN scheme, and the one circuitsvis uses for
its CDN rendering.

Example::

    >>> from mechwork.dashboard.assets import CIRCUITSVIS, PLOTLY, script_json
    >>> CIRCUITSVIS.global_name, PLOTLY.global_name
    ('CircuitsVis', 'Plotly')
    >>> PLOTLY.url.startswith("https://cdn.plot.ly/plotly-")
    True
    >>> script_json({"title": "</script><b>"})
    '{"title":"\\\\u003c/script\\\\u003e\\\\u003cb\\\\u003e"}'
"""

from __future__ import annotations

import importlib.util
import json
import re
from dataclasses import dataclass
from functools import cache
from importlib.metadata import PackageNotFoundError, version
from pathlib import Path
from typing import Any

from mechwork.errors import AssetError

__all__ = ["CIRCUITSVIS", "PLOTLY", "Asset", "script_json", "script_safe_js"]


def _package_dir(package: str) -> Path:
    spec = importlib.util.find_spec(package)
    if spec is None or not spec.submodule_search_locations:
        raise AssetError(f"package {package!r} is not installed; `pip install {package}` provides its bundle")
    return Path(next(iter(spec.submodule_search_locations)))


@dataclass(frozen=True)
class Asset:
    """One JavaScript bundle: where it lies in its package, and its CDN address."""

    package: str  # the Python distribution that ships it
    relpath: str  # path inside the package directory
    global_name: str  # the global the bundle defines

    @property
    def path(self) -> Path:
        p = _package_dir(self.package.replace("-", "_")) / self.relpath
        if not p.is_file():
            raise AssetError(f"{self.package} {self.package_version} does not ship {self.relpath} (looked at {p})")
        return p

    @property
    def package_version(self) -> str:
        try:
            return version(self.package)
        except PackageNotFoundError:  # pragma: no cover - not installed as a distribution
            return "unknown"

    @property
    def js_version(self) -> str:
        """The version of the JavaScript library itself (plotly.js differs from plotly.py)."""
        if self.package == "plotly":
            head = self.path.open(encoding="utf-8").read(200)
            m = re.search(r"plotly\.js v(\d[\w.\-]*)", head)
            if m is None:  # pragma: no cover - a bundle without its banner
                raise AssetError(f"cannot read the plotly.js version from {self.path}")
            return m.group(1)
        return self.package_version

    @property
    def url(self) -> str:
        if self.package == "plotly":
            return f"https://cdn.plot.ly/plotly-{self.js_version}.min.js"
        return f"https://unpkg.com/{self.package}@{self.js_version}/{self.relpath}"

    def source(self) -> str:
        """The bundle, made safe to inline in a classic ``<script>`` element."""
        return _inline_source(self.path)


@cache
def _inline_source(path: Path) -> str:
    text = path.read_text(encoding="utf-8")
    # the source map would resolve beside the HTML file, where it does not exist
    text = re.sub(r"\n//# sourceMappingURL=\S+\s*$", "\n", text)
    return script_safe_js(text)


def script_safe_js(text: str) -> str:
    """JavaScript that cannot end its ``<script>`` element early.

    ``</script`` may appear inside string or regex literals; ``<\\/script`` means
    the same there. ``<!--`` would switch the HTML parser into a comment mode.
    """
    return re.sub(r"</(script)", r"<\\/\1", text, flags=re.IGNORECASE).replace("<!--", "<\\!--")


_JSON_ESCAPES = {"<": "\\u003c", ">": "\\u003e", "&": "\\u0026", "\u2028": "\\u2028", "\u2029": "\\u2029"}
_JSON_UNSAFE = re.compile("[<>&\u2028\u2029]")


def script_json(obj: Any) -> str:
    """Compact JSON with ``<``, ``>`` and ``&`` escaped, safe inside any ``<script>``.

    ``allow_nan=False``: NaN and Infinity are not JSON; callers turn them into ``null``.
    """
    text = json.dumps(obj, separators=(",", ":"), ensure_ascii=False, allow_nan=False)
    return _JSON_UNSAFE.sub(lambda m: _JSON_ESCAPES[m.group(0)], text)


CIRCUITSVIS = Asset("circuitsvis", "dist/cdn/iife.js", "CircuitsVis")
PLOTLY = Asset("plotly", "package_data/plotly.min.js", "Plotly")
