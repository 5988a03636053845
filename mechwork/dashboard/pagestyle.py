"""How a page looks and reads: its stylesheet (screen and print), its drawing script, and heading anchors.

* :data:`CSS` is the page's stylesheet. Its print part hides the contents box,
  the heading anchors and the download links, drops the boxes' borders and
  backgrounds, and keeps every figure, view, table and display equation on one
  printed page (``break-inside: avoid``).
* :data:`DRAW` is the one script at the end of a page: it draws every plotly
  figure and mounts every circuitsvis view from their inert JSON. On an inline
  page it first waits for :data:`LOADER`, which unpacks the page's gzip-compressed
  bundles (:mod:`~mechwork.dashboard.assets`) with the browser's
  ``DecompressionStream`` and runs them.
* Every heading gets an id and an anchor link, ``<a class="mw-anchor"
  href="#id">``, shown as ``#`` when the pointer is over the heading (the ``#``
  is drawn by CSS, so the heading's text stays its title). Ids are
  slugs of the heading's text, made unique per page by :class:`HeadingIds`
  (``intro``, ``intro-1``, ...); a slug never starts with ``mw-``, the prefix
  of the page's block ids.

Example::

    >>> from mechwork.dashboard.pagestyle import CSS, HeadingIds, heading, slug
    >>> slug("Fourier: the <b>key</b> frequencies"), slug("mw-2"), slug("???")
    ('fourier-the-b-key-b-frequencies', 'section-mw-2', 'section')
    >>> ids = HeadingIds()
    >>> ids.fix(heading(2, "Intro", "intro"))
    '<h2 id="intro">Intro<a class="mw-anchor" href="#intro" aria-label="Link to this section"></a></h2>'
    >>> ids.fix(heading(3, "Intro", "intro")).split('"')[1]
    'intro-1'
    >>> "@media print" in CSS and ".mw-toc" in CSS
    True
"""

from __future__ import annotations

import re
import unicodedata

__all__ = ["CSS", "DRAW", "LOADER", "HeadingIds", "anchor", "ascii_words", "heading", "slug"]

_SLUG_CHARS = 60
# a heading this module wrote: its level, its id, its (already escaped) content, and its anchor
_HEADING = re.compile(
    r'<h([1-6]) id="([a-z0-9-]*)">(.*?)<a class="mw-anchor" href="#\2" aria-label="Link to this section"></a></h\1>',
    re.S)


def ascii_words(text: str, limit: int = _SLUG_CHARS) -> str:
    """Lower-case ASCII letters and digits of ``text`` joined by ``-``, at most ``limit`` characters: safe in any
    URL fragment or file name (accents folded, everything else dropped)."""
    ascii_text = unicodedata.normalize("NFKD", str(text)).encode("ascii", "ignore").decode("ascii")
    return "-".join(re.findall(r"[a-z0-9]+", ascii_text.lower()))[:limit].strip("-")


def slug(text: str) -> str:
    """:func:`ascii_words` of ``text``, never starting with ``mw-``; ``section`` when there are none."""
    out = ascii_words(text)
    if not out or out.startswith("mw-") or out == "mw":
        out = f"section-{out}" if out else "section"
    return out


def anchor(hid: str) -> str:
    """The link to heading ``hid`` (a slug: nothing to escape)."""
    return f'<a class="mw-anchor" href="#{hid}" aria-label="Link to this section"></a>'


def heading(level: int, content_html: str, hid: str) -> str:
    """A heading with its id and its anchor; ``content_html`` must already be escaped."""
    return f'<h{level} id="{hid}">{content_html}{anchor(hid)}</h{level}>'


class HeadingIds:
    """The heading ids of one page: :meth:`take` makes each unique, :meth:`fix` rewrites an HTML block's."""

    def __init__(self) -> None:
        self.used: set[str] = set()

    def take(self, wanted: str) -> str:
        hid, n = wanted, 0
        while hid in self.used:
            n += 1
            hid = f"{wanted}-{n}"
        self.used.add(hid)
        return hid

    def fix(self, html: str) -> str:
        """``html`` with every heading of :func:`heading` given a page-unique id (in document order)."""
        return _HEADING.sub(lambda m: heading(int(m.group(1)), m.group(3), self.take(m.group(2))), html)


# Runs the page's compressed bundles (inline pages): each <script data-mw-bundle> holds one bundle, gzip then
# base64; they are decompressed together and run in page order as classic scripts. window.mwBundles is the
# promise DRAW waits for; a browser without DecompressionStream rejects it, and every mount says so.
LOADER = """window.mwBundles = Promise.resolve().then(function () {
  var els = document.querySelectorAll("script[data-mw-bundle]");
  return Promise.all(Array.prototype.map.call(els, function (el) {
    var bin = atob(el.textContent), bytes = new Uint8Array(bin.length);
    for (var i = 0; i < bin.length; i++) { bytes[i] = bin.charCodeAt(i); }
    var gunzip = new DecompressionStream("gzip");
    return new Response(new Blob([bytes]).stream().pipeThrough(gunzip)).text();
  })).then(function (codes) {
    codes.forEach(function (code) {
      var s = document.createElement("script");
      s.textContent = code;
      document.head.appendChild(s);
    });
  });
});
"""

# Draws every figure and view (after the inline bundles ran, if any); one failure is reported in place (and
# on the console), the rest still draw.
DRAW = """(function () {
  function json(id) { return JSON.parse(document.getElementById(id).textContent); }
  function fail(el, e) {
    el.textContent = "This figure could not be drawn: " + e;
    el.className += " mw-error";
    console.error(e);
  }
  function draw() {
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
  }
  if (!window.mwBundles) { draw(); return; }
  window.mwBundles.then(draw, function (e) {
    document.querySelectorAll(".mw-fig, .mw-cv").forEach(function (el) {
      fail(el, "this browser cannot unpack the page's scripts (" + e + ")");
    });
  });
})();
"""

BASE_CSS = """
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

CSS = BASE_CSS + """h1[id], h2[id], h3[id], h4[id], h5[id], h6[id] { scroll-margin-top: 12px; }
.mw-anchor::before { content: "#"; }
.mw-anchor { margin-left: 0.35em; color: var(--muted); text-decoration: none; font-weight: normal; opacity: 0; }
:is(h1, h2, h3, h4, h5, h6):hover > .mw-anchor, .mw-anchor:focus { opacity: 1; }
.mw-figlinks { color: var(--muted); font-size: 0.88em; margin: 6px 0 0; }
.mw-figlinks a { color: var(--accent); }
math { font-family: "STIX Two Math", "Latin Modern Math", "DejaVu Math TeX Gyre", "Cambria Math", math;
  font-size: 1.12em; }
.mw-math { overflow-x: auto; margin: 0.6em 0; }
.mw-math-error { color: #b42318; }
@media print {
  body { background: #fff; font-size: 11pt; }
  main { max-width: none; padding: 0; }
  .mw-toc, .mw-anchor, .mw-figlinks, .modebar-container { display: none !important; }
  .mw-block { background: none; border: 0; border-radius: 0; box-shadow: none; padding: 0; margin: 0 0 14pt; }
  .mw-note { background: none; }
  .mw-fig, .mw-cv, .mw-table, table, .mw-math, dl.mw-kv { break-inside: avoid; page-break-inside: avoid; }
  .mw-cv, .mw-table, .mw-math { overflow: visible; }
  h1, h2, h3, h4 { break-after: avoid; page-break-after: avoid; }
  a { color: inherit; }
}
"""
