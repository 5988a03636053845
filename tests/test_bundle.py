"""The shipped partial plotly.js: its manifest matches the file, and it holds every trace type mechwork draws.

Three independent views of the trace types: the manifest the build wrote, what the bundle itself registers
(read in Chromium from ``Plotly.PlotSchema``), and every trace type named anywhere in mechwork's sources and
the study scripts (``go.Bar(``, ``fig.add_heatmap(``, ``{"type": "bar"}``, ``type="scatter"``). The figures of
every real page are checked against the manifest too, in tests/test_pages_draw.py.
"""

from __future__ import annotations

import hashlib
import json
import re
from pathlib import Path

import pytest
from chromium_check import require_chromium

from mechwork.dashboard.assets import PLOTLY, bundle_manifest

ROOT = Path(__file__).resolve().parents[1]
RECIPE = ROOT / "mechwork" / "dashboard" / "plotlyjs"
SOURCES = [*sorted((ROOT / "mechwork").rglob("*.py")), *sorted((ROOT / "experiments").glob("*.py"))]


def trace_classes() -> dict[str, str]:
    """plotly.py's trace classes: class name (``Scattergl``) -> its plotly.js type (``scattergl``)."""
    import plotly.graph_objects as go
    from plotly.basedatatypes import BaseTraceType

    out = {}
    for name in dir(go):
        cls = getattr(go, name)
        if isinstance(cls, type) and issubclass(cls, BaseTraceType) and cls is not BaseTraceType:
            out[name] = cls().type
    return out


def trace_types_in(text: str) -> set[str]:
    """Every plotly trace type ``text`` (Python source) names: constructors, ``add_<type>``, ``type`` keys."""
    classes = trace_classes()
    types = set(classes.values())
    found = {classes[m] for m in re.findall(r"\bgo\.([A-Z][A-Za-z0-9]*)\(", text) if m in classes}
    found |= {m for m in re.findall(r"\.add_([a-z0-9]+)\(", text) if m in types}
    found |= {m for m in re.findall(r"""["']type["']\s*:\s*["']([a-z0-9]+)["']""", text) if m in types}
    found |= {m for m in re.findall(r"""\btype\s*=\s*["']([a-z0-9]+)["']""", text) if m in types}
    return found


@pytest.fixture(scope="module")
def manifest() -> dict:
    return bundle_manifest()


def test_the_manifest_describes_the_shipped_file(manifest):
    data = PLOTLY.path.read_bytes()
    assert PLOTLY.path.name == manifest["file"]
    assert manifest["bytes"] == len(data) and manifest["sha256"] == hashlib.sha256(data).hexdigest()
    assert PLOTLY.js_version == manifest["plotly.js"]  # the banner says the same version
    banner = f"* plotly.js v{manifest['plotly.js']} (partial bundle: {', '.join(manifest['traces'])}"
    assert banner in data[:300].decode()
    # the recipe pins that plotly.js, and its lock file resolved exactly it
    pkg = json.loads((RECIPE / "package.json").read_text())
    lock = json.loads((RECIPE / "package-lock.json").read_text())
    assert pkg["devDependencies"]["plotly.js"] == manifest["plotly.js"]
    assert lock["packages"]["node_modules/plotly.js"]["version"] == manifest["plotly.js"]
    assert "node_modules/" in (RECIPE / ".gitignore").read_text().split()
    build = (RECIPE / "build.mjs").read_text()
    assert f'const TRACES = {json.dumps(manifest["traces"])};'.replace('","', '", "') in build


def test_the_scan_finds_each_way_of_naming_a_trace():
    """The instrument can fail: every spelling is seen, and a type outside the bundle is reported."""
    text = ('go.Figure(go.Scatter3d(x=[1]))\nfig.add_violin(y=[1])\nd = {"type": "sankey"}\n'
            "fig.update_traces(type='pie')\nfig.add_hline(y=0)\ngo.Layout(title='x')\n")
    assert trace_types_in(text) == {"scatter3d", "violin", "sankey", "pie"}


def test_every_trace_type_mechwork_draws_is_in_the_bundle(manifest):
    used: dict[str, list[str]] = {}
    for path in SOURCES:
        for t in trace_types_in(path.read_text(encoding="utf-8")):
            used.setdefault(t, []).append(path.relative_to(ROOT).as_posix())
    missing = {t: where for t, where in used.items() if t not in manifest["traces"]}
    assert missing == {}, f"trace types not in {manifest['file']}: {missing} (add them to build.mjs's TRACES)"
    assert {"bar", "heatmap", "histogram", "scatter"} <= set(used)  # the scan sees the ones we know of


def test_the_bundle_registers_exactly_the_manifest_traces_and_draws_each(manifest, tmp_path):
    require_chromium()
    from chromium_check import CHROMIUM, FLAGS
    from playwright.sync_api import sync_playwright

    shell = tmp_path / "shell.html"
    shell.write_text(f'<!doctype html><meta charset="utf-8"><script src="{PLOTLY.path.as_uri()}"></script>'
                     '<div id="f"></div>')
    figs = {"bar": {"x": ["a", "b"], "y": [1, 2]}, "heatmap": {"z": [[1, 2], [3, 4]]},
            "histogram": {"x": [1, 2, 2, 3]}, "scatter": {"y": [1, 3, 2], "mode": "lines"}}
    assert set(figs) == set(manifest["traces"])
    with sync_playwright() as pw:
        browser = pw.chromium.launch(executable_path=CHROMIUM, args=FLAGS)
        try:
            page = browser.new_page()
            page.route("**/*", lambda r: r.continue_() if r.request.url.startswith("file:") else r.abort())
            page.goto(shell.as_uri())
            got = page.evaluate("() => [Plotly.version, Object.keys(Plotly.PlotSchema.get().traces).sort()]")
            assert got == [manifest["plotly.js"], sorted(manifest["traces"])]
            for kind, trace in figs.items():  # each draws its own layer (bars, heatmap image, histogram bars, line)
                n = page.evaluate("""async ([t]) => { const el = document.getElementById('f');
                    await Plotly.newPlot(el, [t], {});
                    return el.querySelectorAll('g.trace, g.hm, image').length; }""", [{**trace, "type": kind}])
                assert n > 0, kind
            missing = page.evaluate("""async () => { const el = document.getElementById('f');
                await Plotly.newPlot(el, [{type: 'violin', y: [1, 2]}], {});
                return el._fullData[0].type; }""")
            assert missing != "violin"  # a type outside the bundle is not drawn as itself
        finally:
            browser.close()


def test_a_figure_outside_the_bundle_gets_plotlys_full_bundle_inline_and_in_export(tmp_path):
    """A caller's own pie: the inline page carries the full plotly.js and draws it, export draws it too, a site
    page (whose shared folder holds the partial bundle) refuses it in one line; mechwork's figures never need it."""
    require_chromium()
    import plotly.graph_objects as go
    from chromium_check import check_page
    from test_dashboard import bundles

    from mechwork.dashboard import Page
    from mechwork.dashboard.assets import PLOTLY_FULL
    from mechwork.dashboard.export import export_figures
    from mechwork.errors import ConfigError

    page = Page("pie").plotly(go.Figure(go.Pie(values=[1, 2, 3])), title="A pie").plotly(go.Figure(go.Bar(y=[1])))
    got = bundles(page.render("inline"))
    assert list(got) == ["plotly-full"] and got["plotly-full"] == PLOTLY_FULL.source()
    r = check_page(page.save(tmp_path / "pie.html"))
    assert r.plotly_drawn == r.plotly_mounts == 2 and r.page_errors == [] and r.console_errors == [], r
    with pytest.raises(ConfigError, match=r"^'assets' must be 'inline' or 'cdn' for figures of trace type pie "):
        page.render("site")
    assert "https://cdn.plot.ly/plotly-" in page.render("cdn")
    files = export_figures(page.figures(), tmp_path / "figs", "svg")
    assert 'class="slice' in files["mw-1"][0].read_text()  # drawn as a pie, not an empty plot


def test_without_decompressionstream_every_mount_says_why_it_is_empty(tmp_path):
    """The inline page draws only through its loader: take the browser's gzip away and nothing draws, each
    figure and view says why in place (and the page still opens offline)."""
    require_chromium()
    import torch
    from chromium_check import CHROMIUM, FLAGS
    from playwright.sync_api import sync_playwright

    from mechwork.dashboard import Page

    out = Page("p").plotly({"data": [{"type": "bar", "y": [1, 2]}]}).attention(torch.eye(2)[None], ["a", "b"]).save(
        tmp_path / "p.html")
    with sync_playwright() as pw:
        browser = pw.chromium.launch(executable_path=CHROMIUM, args=FLAGS)
        try:
            page = browser.new_page()
            page.route("**/*", lambda r: r.continue_() if r.request.url.startswith("file:") else r.abort())
            page.add_init_script("delete window.DecompressionStream;")
            page.goto(out.as_uri())
            page.wait_for_function("() => document.querySelectorAll('.mw-error').length === 2")
            texts = page.evaluate("() => [...document.querySelectorAll('.mw-fig, .mw-cv')].map(e => e.textContent)")
            assert len(texts) == 2 and all("cannot unpack the page's scripts" in t for t in texts), texts
            assert page.evaluate("() => typeof Plotly") == "undefined"
        finally:
            browser.close()


def test_the_shipped_embedded_bundles_are_the_bundles_compressed():
    """A page build takes the bundles' gzip + base64 form from mechwork/data/js/embedded-*.json instead of
    compressing 2.5 MB each time: each shipped form decompresses to its bundle's current script-safe source and
    equals what compressing it gives."""
    import base64
    import gzip

    from mechwork.dashboard.assets import CIRCUITSVIS, _compress, _inline_source, shipped_path

    for asset in (PLOTLY, CIRCUITSVIS):
        shipped = json.loads(shipped_path(asset.path).read_text(encoding="utf-8"))
        source = _inline_source(asset.path)
        if asset is CIRCUITSVIS and shipped["source"] != f"circuitsvis {asset.package_version}: {asset.relpath}":
            pytest.skip(f"the shipped form is of {shipped['source']}; rerun assets.write_shipped(CIRCUITSVIS)")
        assert shipped["sha256"] == hashlib.sha256(source.encode()).hexdigest(), \
            f"{shipped_path(asset.path).name} is stale: rerun mechwork.dashboard.assets.write_shipped"
        assert gzip.decompress(base64.b64decode(shipped["embedded"])).decode() == source
        assert shipped["embedded"] == _compress(source)


def test_a_build_compresses_no_bundle_and_a_stale_shipped_form_is_ignored(monkeypatch, tmp_path):
    import mechwork.dashboard.assets as assets

    def no_compress(*a, **k):
        raise AssertionError("compressed a bundle")

    assets._embedded.cache_clear()
    try:
        with monkeypatch.context() as m:
            m.setattr(assets.gzip, "compress", no_compress)
            shipped = assets.PLOTLY.embedded()  # from the shipped file
        stale = tmp_path / "embedded.json"
        stale.write_text(json.dumps({"sha256": "0" * 64, "embedded": "stale"}))
        monkeypatch.setattr(assets, "shipped_path", lambda path: stale)
        assets._embedded.cache_clear()
        assert assets.PLOTLY.embedded() == shipped != "stale"  # compressed here, to the same bytes
    finally:
        assets._embedded.cache_clear()
