"""The two JavaScript bundles a dashboard needs, how a page embeds them, and JSON safe inside ``<script>``.

Both bundles are files on disk, never fetched:

* **plotly.js** is mechwork's own partial bundle, ``mechwork/data/js/plotly-mechwork.min.js``
  (the global ``Plotly``): plotly.js's core (which holds the scatter trace, so lines and filled
  areas too) plus the bar, heatmap and histogram traces, the only trace types mechwork draws. It is
  built from plotly.js's npm sources by ``mechwork/dashboard/plotlyjs/build.mjs``, which writes
  ``plotly-mechwork.json`` beside it (plotly.js version, trace types, sha256). At plotly.js 4.1.1 it
  is 1.19 MB against 4.82 MB for the full bundle the plotly package ships.
* **circuitsvis** ships its whole React bundle as ``circuitsvis/dist/cdn/iife.js`` (the global
  ``CircuitsVis``, 1.30 MB), found without importing circuitsvis.

A page embeds a bundle in one of three ways (``Page.render``'s ``assets``):

* ``"inline"``: :meth:`Asset.embedded`, the bundle gzip-compressed (level 9, no timestamp, so
  byte-stable) and base64-encoded in an inert ``<script type="application/gzip;base64">``; the
  page's loader (:data:`mechwork.dashboard.pagestyle.LOADER`) decompresses it with the browser's
  ``DecompressionStream("gzip")`` and runs it before anything is drawn. Both bundles together take
  1.03 MB of page this way instead of 2.49 MB as plain text (6.11 MB with the full plotly.js), which
  leaves room for the page's own data under 2.5 MB. Why all three measures: plotly's smaller official
  dists do not fit (``plotly-basic``, 1.19 MB, has no heatmap; ``plotly-cartesian`` is 1.50 MB), and the
  partial bundle alone still leaves a page of both bundles at 2.49 MB before its data. Plain text would
  need no loader, but gzip saves 2.9x (plotly.js) and 3.6x (circuitsvis) and base64 gives back only a
  third of that. Page data is the rest (:mod:`~mechwork.dashboard.typedarrays`). Measured on the
  modadd-113 dashboard: 7.36 MB before, 2.01 MB after (benchmarks/bench_pagesize.py). Compressing both
  bundles takes about 0.1 s, so mechwork ships their embedded forms (``mechwork/data/js/embedded-*.json``,
  :func:`write_shipped`), each keyed by the sha256 of the source it was made from: a page build uses one when it
  matches the installed bundle, and compresses the bundle itself otherwise (a circuitsvis of another version).
* ``"site"``: :meth:`Asset.source`, the plain bundle, as a ``.js`` file in a shared folder (HTTP
  servers compress it on the way if they like).
* ``"cdn"``: :attr:`Asset.url`, plotly's official *full* bundle of the same plotly.js version on
  its CDN, and circuitsvis on unpkg.

A page holding a figure of the caller's with a trace type outside the partial bundle
(:func:`trace_types`, :func:`partial_traces`; a pie, say) carries plotly's full bundle instead,
:data:`PLOTLY_FULL`, inline; a site page refuses it (the shared folder holds the partial bundle).

Example::

    >>> import base64, gzip
    >>> from mechwork.dashboard.assets import CIRCUITSVIS, PLOTLY, script_json
    >>> CIRCUITSVIS.global_name, PLOTLY.global_name
    ('CircuitsVis', 'Plotly')
    >>> PLOTLY.url == f"https://cdn.plot.ly/plotly-{PLOTLY.js_version}.min.js"
    True
    >>> gzip.decompress(base64.b64decode(PLOTLY.embedded())) == PLOTLY.source().encode()
    True
    >>> script_json({"title": "</script><b>"})
    '{"title":"\\\\u003c/script\\\\u003e\\\\u003cb\\\\u003e"}'
"""

from __future__ import annotations

import base64
import gzip
import hashlib
import importlib.util
import json
import re
from dataclasses import dataclass
from functools import cache
from importlib.metadata import PackageNotFoundError, version
from pathlib import Path
from typing import Any

from mechwork.errors import AssetError

__all__ = ["CIRCUITSVIS", "PLOTLY", "PLOTLY_FULL", "Asset", "bundle_manifest", "partial_traces", "script_json",
           "script_safe_js", "shipped_path", "trace_types", "write_shipped"]


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
    cdn: str  # the CDN address, with {version} for the JavaScript library's version
    banner_version: bool = False  # the library's version is in the bundle's banner, not the package's

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
        """The version of the JavaScript library itself (plotly.js differs from plotly.py and mechwork)."""
        if self.banner_version:
            head = self.path.open(encoding="utf-8").read(200)
            m = re.search(r"plotly\.js v(\d[\w.\-]*)", head)
            if m is None:  # pragma: no cover - a bundle without its banner
                raise AssetError(f"cannot read the plotly.js version from {self.path}")
            return m.group(1)
        return self.package_version

    @property
    def url(self) -> str:
        return self.cdn.format(version=self.js_version)

    def source(self) -> str:
        """The bundle, made safe to inline in a classic ``<script>`` element (what ``assets="site"`` writes)."""
        return _inline_source(self.path)

    def embedded(self) -> str:
        """:meth:`source` gzip-compressed and base64-encoded: what an inline page carries (ASCII, script-safe)."""
        return _embedded(self.path)


@cache
def _inline_source(path: Path) -> str:
    text = path.read_text(encoding="utf-8")
    # the source map would resolve beside the HTML file, where it does not exist
    text = re.sub(r"\n//# sourceMappingURL=\S+\s*$", "\n", text)
    return script_safe_js(text)


def _compress(text: str) -> str:
    return base64.b64encode(gzip.compress(text.encode("utf-8"), 9, mtime=0)).decode("ascii")


def shipped_path(path: Path) -> Path:
    """Where mechwork ships the embedded form of the bundle at ``path``, computed once (:func:`write_shipped`)."""
    return Path(__file__).resolve().parent.parent / "data" / "js" / f"embedded-{path.name}.json"


@cache
def _embedded(path: Path) -> str:
    """The shipped embedded form when it was made from this very source (same sha256), else compressed here."""
    text = _inline_source(path)
    digest = hashlib.sha256(text.encode("utf-8")).hexdigest()
    try:
        shipped = json.loads(shipped_path(path).read_text(encoding="utf-8"))
    except (OSError, ValueError):
        shipped = {}
    if isinstance(shipped, dict) and shipped.get("sha256") == digest and isinstance(shipped.get("embedded"), str):
        return str(shipped["embedded"])
    return _compress(text)


def write_shipped(asset: Asset) -> Path:
    """Write ``asset``'s embedded form (gzip level 9, base64) beside mechwork's partial plotly bundle, keyed by the
    sha256 of its script-safe source, so that a page build need not compress it (rerun after a bundle changes)."""
    from mechwork.atomic import atomic_open

    text = _inline_source(asset.path)
    out = shipped_path(asset.path)
    with atomic_open(out, "w") as f:
        json.dump({"source": f"{asset.package} {asset.package_version}: {asset.relpath}",
                   "sha256": hashlib.sha256(text.encode("utf-8")).hexdigest(), "embedded": _compress(text)}, f)
    return out


def bundle_manifest() -> dict[str, Any]:
    """What the build wrote beside the partial plotly bundle: plotly.js version, trace types, bytes, sha256."""
    path = PLOTLY.path.with_name("plotly-mechwork.json")
    try:
        manifest: dict[str, Any] = json.loads(path.read_text(encoding="utf-8"))
    except (OSError, ValueError) as e:
        raise AssetError(f"cannot read the plotly bundle's manifest {str(path)!r}: {e}") from e
    return manifest


@cache
def partial_traces() -> frozenset[str]:
    """The trace types the partial plotly bundle holds (from its manifest)."""
    return frozenset(bundle_manifest()["traces"])


def trace_types(figure: Any) -> set[str]:
    """The trace types of a plotly figure dict, its animation frames' included (a trace without one: scatter)."""
    frames = figure.get("frames") or [] if isinstance(figure, dict) else []
    traces = [*(figure.get("data") or []), *(t for f in frames if isinstance(f, dict) for t in f.get("data") or [])]
    return {str(t.get("type") or "scatter") for t in traces if isinstance(t, dict)}


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


CIRCUITSVIS = Asset("circuitsvis", "dist/cdn/iife.js", "CircuitsVis", "https://unpkg.com/circuitsvis@{version}/dist/cdn/iife.js")
PLOTLY = Asset("mechwork", "data/js/plotly-mechwork.min.js", "Plotly", "https://cdn.plot.ly/plotly-{version}.min.js",
               banner_version=True)
# plotly's full bundle, for a page of the caller's own figures with a trace type the partial bundle lacks
PLOTLY_FULL = Asset("plotly", "package_data/plotly.min.js", "Plotly", PLOTLY.cdn, banner_version=True)
