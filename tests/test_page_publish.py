"""Publishing a page: site assets by relative path, heading anchors, MathML, print CSS, blocks as JSON, figures.

The checks read the written files back (relative ``src``/``href`` resolved against the page's folder, ids
collected by an HTML parser, SVG parsed as XML, PNG sizes from their IHDR chunk) and, for what only a browser
can tell (MathML laid out, print styles applied, hostile ``\\text{...}`` inert), open a site page in Debian's
headless Chromium from disk with the network blocked.
"""

from __future__ import annotations

import json
import os
import re
import stat
import struct
import xml.etree.ElementTree as ET
from html.parser import HTMLParser
from pathlib import Path
from typing import Literal
from urllib.parse import unquote

import plotly.graph_objects as go
import pytest
import torch
from chromium_check import FLAGS, check_page, chromium_path, require_chromium

from mechwork.dashboard.assets import CIRCUITSVIS, PLOTLY
from mechwork.dashboard.mathml import ELEMENTS, to_mathml
from mechwork.dashboard.page import Block, Page, saved_assets
from mechwork.dashboard.site import ASSET_FILES, check_assets_dir, write_assets
from mechwork.errors import ConfigError, ExportError, OutputError

PROSE = """Intro with $x^2 + y_1$ inline; prices stay text: $5 and $10.

## Results

$$
\\sum_{k=1}^{n} \\frac{1}{k^2}
$$

### Results

Again.
"""


class Tags(HTMLParser):
    """Every start tag with its attributes, in document order."""

    def __init__(self, text: str):
        super().__init__()
        self.tags: list[tuple[str, dict[str, str | None]]] = []
        self.feed(text)

    def handle_starttag(self, tag, attrs):
        self.tags.append((tag, dict(attrs)))

    def attr(self, tag: str, name: str) -> list[str]:
        return [str(a[name]) for t, a in self.tags if t == tag and a.get(name) is not None]


def small_page(title: str = "A small post") -> Page:
    fig = go.Figure(go.Bar(x=["a", "b", "c"], y=[3, 1, 2]), layout={"title": {"text": "Three bars"}, "height": 320})
    page = Page(title)
    page.markdown(PROSE, title="Results")  # the same slug as the markdown heading below it
    page.plotly(fig, title="Bars", caption="Three bars.")
    page.attention(torch.softmax(torch.randn(2, 4, 4, generator=torch.Generator().manual_seed(0)), -1),
                   ["a", "b", "c", "d"], title="Attention")
    page.plotly(go.Figure(go.Scatter(y=[1, 4, 9])), title="Squares")
    return page


# -- site mode ---------------------------------------------------------------------------------------------
def test_site_pages_load_the_shared_bundles_by_relative_path(tmp_path):
    written = write_assets(tmp_path / "site" / "assets")
    top = small_page().save(tmp_path / "site" / "a.html", assets="site")
    (tmp_path / "site" / "posts").mkdir()
    deep = small_page().save(tmp_path / "site" / "posts" / "b.html", assets="site", asset_base="../assets")
    for page in (top, deep):
        html = page.read_text()
        srcs = Tags(html).attr("script", "src")
        assert [Path(s).name for s in srcs] == ["plotly.min.js", "circuitsvis.js"]
        resolved = [(page.parent / s).resolve() for s in srcs]
        assert resolved == [written["plotly"].resolve(), written["circuitsvis"].resolve()]
        assert "var CircuitsVis=" not in html and len(html) < 200_000  # nothing inlined
        assert saved_assets(page) == "site"
    only_text = Page("t").text("x").render("site")
    only_fig = Page("f").plotly(go.Figure()).render("site", asset_base="static/")
    assert "<script src" not in only_text
    assert Tags(only_fig).attr("script", "src") == ["static/plotly.min.js"]
    with pytest.raises(ConfigError, match="'assets' must be .*'site'.*got 'offline'"):
        Page("x").render("offline")


def test_write_assets_writes_script_safe_bundles_once(tmp_path):
    d = tmp_path / "assets"
    check_assets_dir(d)
    assert not d.exists()  # the check writes nothing
    first = write_assets(d)
    assert sorted(p.name for p in d.iterdir()) == sorted(ASSET_FILES.values())
    assert first["plotly"].read_text(encoding="utf-8") == PLOTLY.source()
    assert first["circuitsvis"].read_text(encoding="utf-8") == CIRCUITSVIS.source()
    raw = CIRCUITSVIS.path.read_text(encoding="utf-8")  # the installed bundle has both hazards
    assert "sourceMappingURL" in raw[-300:] and "</script" in raw.lower()
    for f in first.values():
        text = f.read_text(encoding="utf-8")
        assert "</script" not in text.lower() and "sourceMappingURL" not in text[-300:]
    before = {p.name: (p.stat().st_ino, p.stat().st_mtime_ns) for p in d.iterdir()}
    write_assets(d)  # identical bytes: left alone
    assert {p.name: (p.stat().st_ino, p.stat().st_mtime_ns) for p in d.iterdir()} == before
    first["plotly"].write_text("stale")
    write_assets(d)
    assert first["plotly"].read_text(encoding="utf-8") == PLOTLY.source()
    assert [p.name for p in d.iterdir() if p.name.startswith(".")] == []


def _one_line_error(fn, match: str) -> None:
    with pytest.raises(OutputError, match=match) as e:
        fn()
    assert "\n" not in str(e.value)


def test_an_unwritable_assets_folder_is_one_line_and_writes_nothing(tmp_path):
    as_file = tmp_path / "file" / "assets"
    as_file.parent.mkdir()
    as_file.write_text("not a folder")
    dangling = tmp_path / "link" / "assets"
    dangling.parent.mkdir()
    dangling.symlink_to(tmp_path / "nowhere")
    under_file = tmp_path / "plain" / "assets"
    under_file.parent.write_text("a file where the site folder should be")
    cases = [(as_file, "exists and is not a directory"), (dangling, "dangling symbolic link"),
             (under_file, "is not a directory")]
    for d, match in cases:
        _one_line_error(lambda d=d: check_assets_dir(d), match)
        _one_line_error(lambda d=d: write_assets(d), match)
    assert as_file.read_text() == "not a folder" and not (tmp_path / "nowhere").exists()
    clash = tmp_path / "clash" / "assets"
    (clash / "plotly.min.js").mkdir(parents=True)
    _one_line_error(lambda: write_assets(clash), "plotly.min.js.* not a file")
    assert [p.name for p in clash.iterdir()] == ["plotly.min.js"]


def test_a_read_only_assets_folder_is_refused(tmp_path):
    ro = tmp_path / "site" / "assets"
    ro.mkdir(parents=True)
    ro_parent = tmp_path / "ro-site"
    ro_parent.mkdir()
    ro.chmod(stat.S_IRUSR | stat.S_IXUSR)
    ro_parent.chmod(stat.S_IRUSR | stat.S_IXUSR)
    try:
        if os.access(ro, os.W_OK):  # root: permissions do not bind (the other test covers root)
            pytest.skip("permission bits do not stop this user from writing")
        _one_line_error(lambda: write_assets(ro), "assets folder .*read-only")
        _one_line_error(lambda: check_assets_dir(ro_parent / "assets"), "ro-site.* is read-only")
        assert list(ro.iterdir()) == [] and list(ro_parent.iterdir()) == []
    finally:
        ro.chmod(stat.S_IRWXU)
        ro_parent.chmod(stat.S_IRWXU)


def test_a_write_refused_by_the_system_is_one_line(tmp_path, monkeypatch):
    """What a read-only folder does to a writer that permission bits do not stop (root): the write fails."""
    import tempfile

    def refused(*a, **k):
        raise PermissionError(13, "Permission denied")

    d = tmp_path / "assets"
    d.mkdir()
    monkeypatch.setattr(tempfile, "mkstemp", refused)
    _one_line_error(lambda: write_assets(d), "cannot write the assets folder .*: Permission denied")
    assert list(d.iterdir()) == []


# -- anchors -----------------------------------------------------------------------------------------------
def test_headings_have_unique_ids_and_anchors(tmp_path):
    page = small_page()
    page.markdown("# Bars\n\n## mw-1\n\n## Über Größe!", title="Results")
    html = page.render("cdn")
    tags = Tags(html)
    ids = [a["id"] for _, a in tags.tags if a.get("id")]
    assert len(ids) == len(set(ids)), ids
    sections = [a["id"] for t, a in tags.tags if t == "section"]
    assert sections == [f"mw-{i}" for i in range(1, len(page.blocks) + 1)]  # block ids unchanged
    heads = [(t, a["id"]) for t, a in tags.tags if re.fullmatch(r"h[1-6]", t) and a.get("id")]
    assert heads == [("h2", "results"), ("h2", "results-1"), ("h3", "results-2"), ("h2", "bars"),
                     ("h2", "attention"), ("h2", "squares"), ("h2", "results-3"), ("h1", "bars-1"),
                     ("h2", "section-mw-1"), ("h2", "uber-groe")]
    anchors = [a["href"] for t, a in tags.tags if t == "a" and a.get("class") == "mw-anchor"]
    assert anchors == [f"#{h}" for _, h in heads]
    toc = [a["href"] for t, a in tags.tags if t == "a" and str(a.get("href", "")).startswith("#mw-")]
    assert toc == [f"#mw-{i}" for i, b in enumerate(page.blocks, 1) if b.title]  # contents box keeps mw-N
    assert 'class="mw-toc"' in html and 'class="mw-toc"' not in Page("x", toc=False).extend(page.blocks).render("cdn")


# -- math --------------------------------------------------------------------------------------------------
def _math(html: str) -> list[str]:
    return re.findall(r"<math\b.*?</math>", html, re.S)


def test_dollar_math_becomes_mathml_and_prices_stay_text():
    html = Page("m").markdown(PROSE).render("cdn")
    inline, display = _math(html)
    assert inline.startswith('<math display="inline">') and display.startswith('<math display="block">')
    for m in (inline, display):
        root = ET.fromstring(m)  # well-formed, and only MathML elements
        assert {el.tag for el in root.iter()} <= ELEMENTS
    assert [el.text for el in ET.fromstring(inline).iter("mi")] == ["x", "y"]
    assert [el.text for el in ET.fromstring(inline).iter("mn")] == ["2", "1"]
    sign = ET.fromstring(display).find(".//munderover/mo")
    assert sign is not None and sign.text == "\u2211"  # the sum sign
    assert "$5 and $10" in html
    assert ET.fromstring(to_mathml(r"\frac{a}{b}", False)).find("mfrac") is not None


def test_math_errors_show_the_source_escaped():
    for bad in (r"a_", r"\nosuchcommand{x}"):
        html = Page("m").markdown(f"before ${bad}$ after").render("cdn")
        assert f'<code class="mw-math-error">{bad}</code>' in html and not _math(html)
    assert to_mathml("x <b", True).count("&lt;") == 1


@pytest.mark.parametrize("evil", [
    r"\text{<script>window.pwned=1</script>}",
    r"\text{<img src=x onerror=window.pwned=1>}",
    r"\text{</mtext></math><script>window.pwned=1</script>}",
    r"\mathrm{<svg onload=window.pwned=1>}",
])
def test_math_text_cannot_carry_markup(evil):
    html = Page("m").markdown(f"${evil}$").render("cdn")
    body = html.split("<main>", 1)[1].split("</main>", 1)[0]
    assert "<script" not in body and "<img" not in body and "<svg" not in body
    names = {t for t, _ in Tags(body).tags}
    assert names <= ELEMENTS | {"header", "h1", "section", "div", "p", "footer", "code"}, names


# -- print CSS ---------------------------------------------------------------------------------------------
def test_print_stylesheet_hides_navigation_and_keeps_figures_whole():
    css = small_page().render("cdn").split("<style>", 1)[1].split("</style>", 1)[0]
    printed = css.split("@media print", 1)[1]
    hidden = re.search(r"([^{}]*)\{\s*display:\s*none", printed)
    assert hidden and {".mw-toc", ".mw-anchor", ".mw-figlinks"} <= {s.strip() for s in hidden.group(1).split(",")}
    whole = re.search(r"([^{}]*)\{[^}]*break-inside:\s*avoid", printed)
    assert whole and {".mw-fig", ".mw-cv", "table"} <= {s.strip() for s in whole.group(1).split(",")}


# -- blocks as JSON ----------------------------------------------------------------------------------------
@pytest.fixture(scope="module")
def grokking_page() -> Page:
    from mechwork.dashboard import grokking_dashboard

    return grokking_dashboard("modadd-113")


def test_blocks_round_trip_through_json(grokking_page):
    page = grokking_page
    assert {b.kind for b in page.blocks} == {"html", "plotly", "view"}
    data = json.loads(json.dumps([b.to_dict() for b in page.blocks], allow_nan=False))
    back = [Block.from_dict(d) for d in data]
    assert back == page.blocks
    assert [b.to_dict() for b in back] == data
    copy = Page(page.title, subtitle=page.subtitle).extend(back)
    assert copy.render("cdn") == page.render("cdn")
    with pytest.raises(ConfigError, match="'block kind' must be one of html, plotly, view .got 'table'."):
        Block.from_dict({"kind": "table", "body": ""})
    with pytest.raises(ConfigError, match="'view block body' must be a dict"):
        Block.from_dict({"kind": "view", "body": "x"})
    with pytest.raises((ConfigError, TypeError), match="Block"):  # the test suite type-checks arguments too
        Page("x").extend([{"kind": "html"}])  # type: ignore[list-item]


def test_figures_list_every_plotly_block(grokking_page):
    specs = grokking_page.figures()
    plotly_ids = [f"mw-{i}" for i, b in enumerate(grokking_page.blocks, 1) if b.kind == "plotly"]
    assert [s.id for s in specs] == plotly_ids
    small = small_page().figures()
    assert [(s.id, s.title, s.height) for s in small] == [("mw-2", "Three bars", 320), ("mw-4", "Squares", 450)]
    assert Page("x").plotly(go.Figure()).figures()[0].title == "Figure 1"
    assert len({s.stem for s in specs}) == len(specs)


def test_figure_links_are_rendered_under_their_figure():
    page = small_page()
    html = page.render("cdn", figure_links={"mw-4": ["fig/04-squares.svg", "fig/04 squares.png"]})
    section = html.split('<section id="mw-4"', 1)[1].split("</section>", 1)[0]
    assert '<p class="mw-figlinks">Download: <a href="fig/04-squares.svg">SVG</a> · ' in section
    assert '<a href="fig/04 squares.png">PNG</a></p>' in section
    assert html.count("mw-figlinks") == 1 + html.count(".mw-figlinks")  # the CSS rules, plus this one
    with pytest.raises(ConfigError, match="'figure_links' must be keyed by .*got 'mw-3'"):
        page.render(figure_links={"mw-3": ["x.svg"]})  # a view, not a figure


# -- save with figures -------------------------------------------------------------------------------------
def png_size(path: Path) -> tuple[int, int]:
    head = path.read_bytes()[:24]
    assert head[:8] == b"\x89PNG\r\n\x1a\n"
    width, height = struct.unpack(">II", head[16:24])
    return width, height


def test_save_exports_every_figure_and_links_it(tmp_path):
    require_chromium()
    page = small_page("Figures <&>")
    out = page.save(tmp_path / "post.html", assets="site", figures="svg,png")
    fig_dir = tmp_path / "post-figures"
    specs = page.figures()
    assert sorted(p.name for p in fig_dir.iterdir()) == sorted(f"{s.stem}.{f}" for s in specs for f in ("svg", "png"))
    hrefs = [h for t, a in Tags(out.read_text()).tags if t == "a" and (h := a.get("href")) and "figures/" in h]
    assert [(out.parent / unquote(h)).resolve() for h in hrefs] == [
        (fig_dir / f"{s.stem}.{f}").resolve() for s in specs for f in ("svg", "png")]
    for s in specs:
        svg = ET.parse(fig_dir / f"{s.stem}.svg").getroot()
        assert s.title in ["".join(t.itertext()) for t in svg.iter("{http://www.w3.org/2000/svg}text")]
        assert png_size(fig_dir / f"{s.stem}.png") == (s.width, s.height)
    assert sorted(p.name for p in tmp_path.iterdir()) == ["post-figures", "post.html"]
    # saved again elsewhere, with one format: the old folder is replaced whole
    page.save(out, figures=["png"], figures_dir=tmp_path / "imgs")
    assert sorted(p.suffix for p in (tmp_path / "imgs").iterdir()) == [".png", ".png"]
    assert "imgs/02-three-bars.png" in out.read_text() and "post-figures/" not in out.read_text()


def test_a_failed_figure_export_leaves_nothing(tmp_path, monkeypatch):
    import mechwork.dashboard.export as export

    def no_browser(specs, out_dir, formats):
        (Path(out_dir) / "half.svg").write_text("<svg")
        raise ExportError("no Chromium at /usr/bin/chromium: apt-get install chromium")

    monkeypatch.setattr(export, "export_figures", no_browser)
    with pytest.raises(ExportError, match="apt-get install chromium"):
        small_page().save(tmp_path / "p.html", figures="svg")
    assert list(tmp_path.iterdir()) == []
    (tmp_path / "p-figures").mkdir()
    (tmp_path / "p-figures" / "old.svg").write_text("old")
    (tmp_path / "p.html").write_text("old page")
    with pytest.raises(ExportError):
        small_page().save(tmp_path / "p.html", figures="svg")
    assert sorted(p.name for p in tmp_path.iterdir()) == ["p-figures", "p.html"]
    assert (tmp_path / "p.html").read_text() == "old page" and os.listdir(tmp_path / "p-figures") == ["old.svg"]

    def fake(specs, out_dir, formats):
        for s in specs:
            (Path(out_dir) / f"{s.stem}.svg").write_text("<svg/>")

    monkeypatch.setattr(export, "export_figures", fake)
    import mechwork.atomic as mio

    def torn(*a, **k):
        raise OSError(28, "No space left on device")

    monkeypatch.setattr(mio, "atomic_open", torn)
    with pytest.raises(OutputError, match="No space left"):
        small_page().save(tmp_path / "p.html", figures="svg")
    assert sorted(p.name for p in tmp_path.iterdir()) == ["p-figures", "p.html"]  # the old ones, restored
    assert os.listdir(tmp_path / "p-figures") == ["old.svg"]
    with pytest.raises(ConfigError, match="'figures' must be a comma-separated list of svg, png .got 'gif'."):
        small_page().save(tmp_path / "q.html", figures="gif")
    assert not (tmp_path / "q.html").exists()


# -- in Chromium -------------------------------------------------------------------------------------------
_BROWSER_STATE = """() => ({
  pwned: window.pwned === undefined ? null : window.pwned,
  injected: document.querySelectorAll('math script, math img, math svg, main img').length,
  mathText: [...document.querySelectorAll('math mtext')].map(m => m.textContent.replace(/\u00a0/g, ' ')),
  mathBlocks: [...document.querySelectorAll('math[display=block]')].map(m => m.getBoundingClientRect().height),
  printToc: getComputedStyle(document.querySelector('.mw-toc')).display,
  printAnchor: getComputedStyle(document.querySelector('.mw-anchor')).display,
  printFigBreak: getComputedStyle(document.querySelector('.mw-fig')).breakInside,
  screenAnchor: getComputedStyle(document.querySelector('.mw-anchor'), '::before').content,
})"""


def browser_state(path: Path, media: Literal["screen", "print"]) -> dict:
    from playwright.sync_api import sync_playwright

    exe = chromium_path()
    assert exe is not None
    with sync_playwright() as pw:
        browser = pw.chromium.launch(executable_path=exe, headless=True, args=FLAGS)
        try:
            ctx = browser.new_context()
            ctx.route("**/*", lambda r: r.continue_() if r.request.url.startswith("file:") else r.abort())
            page = ctx.new_page()
            page.emulate_media(media=media)
            page.goto(path.resolve().as_uri(), wait_until="load", timeout=600_000)
            state: dict = page.evaluate(_BROWSER_STATE)
        finally:
            browser.close()
    return state


def test_a_site_page_draws_offline_with_mathml(tmp_path):
    require_chromium()
    site = tmp_path / "site"
    write_assets(site / "assets")
    (site / "posts").mkdir()
    page = small_page()
    page.markdown(r"Hostile: $\text{<script>window.pwned=1</script>}$ and $\text{<img src=x onerror=window.pwned=2>}$")
    out = page.save(site / "posts" / "p.html", assets="site", asset_base="../assets/")
    r = check_page(out)
    assert r.plotly_mounts == 2 and r.plotly_drawn == 2, r
    assert r.cv_mounts == 1 and r.cv_drawn == 1, r
    assert r.math == 4 and r.math_drawn == 4 and r.math_errors == 0, r
    assert r.console_errors == [] and r.page_errors == [] and r.requests == [], r
    screen = browser_state(out, "screen")
    assert screen["pwned"] is None and screen["injected"] == 0, screen
    assert screen["mathText"] == ["<script>window.pwned=1</script>", "<img src=x onerror=window.pwned=2>"]
    assert screen["mathBlocks"] and all(h > 20 for h in screen["mathBlocks"]), screen  # a display fraction
    assert screen["printToc"] == "block" and screen["screenAnchor"] == '"#"', screen
    printed = browser_state(out, "print")
    assert printed["printToc"] == "none" and printed["printAnchor"] == "none", printed
    assert printed["printFigBreak"] == "avoid", printed
