"""The ten-post test site (tests/posts/): its size, a prose edit that re-renders from the cache, every page in
Chromium with the network blocked, and every figure exported as SVG and PNG.

The site is built once per module, from a copy of the posts into a temporary directory with a fresh result
cache, so the first build computes every block and later builds can hit. Sizes are checked against the two
bundles computed independently (:meth:`mechwork.dashboard.assets.Asset.source`, what a page inlines), and each
post's own data is its single-file inline page less the bundles it inlines.
"""

from __future__ import annotations

import re
import shutil
import struct
import xml.etree.ElementTree as ET
from dataclasses import dataclass
from html.parser import HTMLParser
from pathlib import Path
from urllib.parse import unquote, urlsplit

import pytest
from chromium_check import FLAGS, check_pages, chromium_path, require_chromium

from mechwork.dashboard.assets import CIRCUITSVIS, PLOTLY
from mechwork.post.blocks import BLOCKS
from mechwork.post.build import BuildReport, build, render_post
from mechwork.post.cache import ResultCache
from mechwork.post.parse import Post, Prose, parse_post

POSTS = Path(__file__).parent / "posts"
BUNDLES = {"plotly": PLOTLY, "circuitsvis": CIRCUITSVIS}
# a sentence of 07-patching.md, outside its first paragraph (so the index's description does not change)
EDIT_OLD = "The metric is the mean log-probability"
EDIT_NEW = "The metric, as before, is the mean log-probability"
FIGURE_POST = "08-attribution.md"
# inline and display math, as the markdown parser finds it (not "$" before a digit or after a space)
MATH = re.compile(r"\$\$.+?\$\$|\$(?=\S)[^$\n]+?(?<=\S)\$(?!\d)", re.S)
FENCE = re.compile(r"^(`{3,}|~{3,}).*?^\1\s*$", re.M | re.S)


@dataclass(frozen=True)
class Site:
    src: Path  # a copy of tests/posts
    out: Path
    cache: ResultCache
    report: BuildReport
    posts: tuple[Post, ...]


@pytest.fixture(scope="module")
def site(tmp_path_factory) -> Site:
    root = tmp_path_factory.mktemp("post-site")
    src = root / "posts"
    shutil.copytree(POSTS, src)
    cache = ResultCache(root / "cache")
    report = build(src, root / "site", site=True, cache=cache)
    posts = tuple(parse_post(p) for p in sorted(src.glob("*.md")))
    return Site(src, root / "site", cache, report, posts)


def tree_bytes(path: Path) -> int:
    return sum(f.stat().st_size for f in path.rglob("*") if f.is_file())


def page_of(site: Site, post: Post) -> Path:
    """The site page of a post: the one page whose <title> is the post's title."""
    found = [p for p in site.report.pages if f"<title>{_esc(post.title)}</title>" in p.read_text()]
    assert len(found) == 1, (post.title, site.report.pages)
    return found[0]


def _esc(text: str) -> str:
    import html

    return html.escape(text, quote=True)


# -- the test site itself ------------------------------------------------------------------------------
def test_ten_posts_each_with_different_blocks_covering_every_kind(site):
    assert len(site.posts) == 10 and len(site.report.pages) == 10
    uses = [frozenset((b.kind, b.model) for b in p.blocks) for p in site.posts]
    assert all(uses) and len(set(uses)) == 10  # no two posts show the same results
    assert {b.kind for p in site.posts for b in p.blocks} == set(BLOCKS)  # every kind, somewhere
    assert {b.model for p in site.posts for b in p.blocks} == {"modadd-113", "induction-2l"}
    assert site.report.blocks == sum(len(p.blocks) for p in site.posts)
    assert site.report.cache_hits == 0  # a fresh cache: the first build computed every block


# -- 1. bytes -------------------------------------------------------------------------------------------
def test_site_is_the_bundles_once_plus_the_posts_own_data(site):
    """Site bytes <= bundles once + 1.1 x the posts' own data; and smaller than ten single-file pages."""
    inline_bundle = {name: len(a.embedded()) for name, a in BUNDLES.items()}  # as a page inlines it (gzip+base64)
    assets = site.out / "assets"
    assert sorted(f.name for f in assets.iterdir()) == ["circuitsvis.js", "plotly.min.js"]
    assets_bytes = tree_bytes(assets)
    assert assets_bytes == sum(len(a.source().encode()) for a in BUNDLES.values())  # each bundle exactly once

    inline_pages, own = [], []
    for post in site.posts:
        html = render_post(post, cache=site.cache).render("inline")
        size = len(html.encode())
        used = [name for name, a in BUNDLES.items() if a.embedded() in html]
        assert used, post.path  # every post has a figure or a view
        inline_pages.append(size)
        own.append(size - sum(inline_bundle[n] for n in used))
    total = tree_bytes(site.out)
    bound = assets_bytes + 1.1 * sum(own)
    print(f"site {total:,} bytes; bound {bound:,.0f} (bundles {assets_bytes:,} + 1.1 x own data {sum(own):,}); "
          f"ten inline pages {sum(inline_pages):,}")
    assert total <= bound
    assert total < sum(inline_pages)
    # the pages do not carry a bundle themselves
    for page in site.report.pages:
        text = page.read_text()
        assert PLOTLY.source()[:2000] not in text and CIRCUITSVIS.source()[:2000] not in text, page
        assert "data-mw-bundle" not in text, page  # nor compressed


# -- 2. a prose edit re-renders from the cache -------------------------------------------------------------
def test_prose_edit_hits_the_cache_for_every_block_and_changes_only_that_prose(site, tmp_path):
    src = tmp_path / "posts"
    shutil.copytree(site.src, src)
    edited = src / "07-patching.md"
    text = edited.read_text()
    assert text.count(EDIT_OLD) == 1
    edited.write_text(text.replace(EDIT_OLD, EDIT_NEW))
    report = build(src, tmp_path / "site", site=True, cache=site.cache)
    assert report.blocks == site.report.blocks and report.cache_hits == report.blocks

    before = {p.name: p.read_bytes() for p in site.report.pages}
    after = {p.name: p.read_bytes() for p in report.pages}
    assert set(before) == set(after)
    changed = [name for name in before if before[name] != after[name]]
    assert changed == [page_of(site, site.posts[6]).name]
    assert after[changed[0]] == before[changed[0]].replace(EDIT_OLD.encode(), EDIT_NEW.encode())
    assert report.index is not None and site.report.index is not None
    assert report.index.read_bytes() == site.report.index.read_bytes()


# -- 3. every page in Chromium, network blocked --------------------------------------------------------------
class _Links(HTMLParser):
    def __init__(self) -> None:
        super().__init__()
        self.refs: list[str] = []

    def handle_starttag(self, tag, attrs):
        for k, v in attrs:
            if k in ("href", "src") and v:
                self.refs.append(v)


def local_refs(page: Path) -> list[Path]:
    """Every relative href/src of a page, as the file it names."""
    parser = _Links()
    parser.feed(page.read_text())
    out = []
    for ref in parser.refs:
        parts = urlsplit(ref)
        if parts.scheme or parts.netloc or not parts.path:  # external, or a #fragment of the page itself
            continue
        out.append((page.parent / unquote(parts.path)).resolve())
    return out


def math_in(post: Post) -> int:
    """How many $..$ / $$..$$ spans the post's prose has, outside code."""
    prose = "\n\n".join(s.text for s in post.segments if isinstance(s, Prose))
    return len(MATH.findall(FENCE.sub("", prose)))


_RAW_DOLLARS = """() => {
  const out = [];
  const w = document.createTreeWalker(document.body, NodeFilter.SHOW_TEXT);
  while (w.nextNode()) {
    const n = w.currentNode;
    if (n.parentElement.closest('script, style, svg, math, code, pre, .mw-fig, .mw-cv')) continue;
    if (n.textContent.includes('$')) out.push(n.textContent);
  }
  return out;
}"""


def raw_dollars(pages: list[Path]) -> dict[str, list[str]]:
    """Text left with a '$' on each page (math that was not rendered), in one browser, network blocked."""
    import tempfile

    from playwright.sync_api import sync_playwright

    found: dict[str, list[str]] = {}
    with tempfile.TemporaryDirectory(prefix="mw-chromium-") as profile, sync_playwright() as pw:
        ctx = pw.chromium.launch_persistent_context(profile, executable_path=chromium_path(), headless=True,
                                                    args=FLAGS)
        try:
            ctx.route("**/*", lambda r: r.continue_() if r.request.url.startswith(("file:", "data:"))
                      else r.abort())
            page = ctx.new_page()
            for path in pages:
                page.goto(path.resolve().as_uri(), wait_until="load", timeout=600_000)
                found[path.name] = page.evaluate(_RAW_DOLLARS)
        finally:
            ctx.close()
    return found


def test_every_page_opens_offline_and_draws_everything(site):
    require_chromium()
    assert site.report.index is not None
    index_links = {p for p in local_refs(site.report.index) if p.suffix == ".html"}
    assert index_links == {p.resolve() for p in site.report.pages}  # the index links every post, nothing else
    problems = []
    *reports, r_index = check_pages([*(page_of(site, post) for post in site.posts), site.report.index])
    for post, r in zip(site.posts, reports, strict=True):
        path = page_of(site, post)
        page = render_post(post, cache=site.cache)
        figs = sum(b.kind == "plotly" for b in page.blocks)
        views = sum(b.kind == "view" for b in page.blocks)
        want = (figs, figs, views, views, math_in(post), math_in(post), 0)
        got = (r.plotly_mounts, r.plotly_drawn, r.cv_mounts, r.cv_drawn, r.math, r.math_drawn, r.math_errors)
        if got != want or r.console_errors or r.page_errors or r.requests or r.title != post.title:
            problems.append((path.name, want, got, r))
    r = r_index
    if r.console_errors or r.page_errors or r.requests or r.math_drawn != r.math or r.math_errors:
        problems.append(("index.html", r))
    assert not problems, problems
    assert sum(math_in(p) > 0 for p in site.posts) >= 5  # math on several pages, so the counts mean something
    leftovers = raw_dollars([page_of(site, p) for p in site.posts] + [site.report.index])
    assert all(v == [] for v in leftovers.values()), leftovers
    for page in [*site.report.pages, site.report.index]:
        missing = [p for p in local_refs(page) if not p.is_file()]
        assert not missing, (page.name, missing)


# -- 4. figures as SVG and PNG ---------------------------------------------------------------------------------
def test_every_figure_exported_as_svg_and_png_with_its_title_and_size(site, tmp_path):
    from mechwork.dashboard.export import DEFAULT_HEIGHT, DEFAULT_WIDTH

    require_chromium()
    post = next(p for p in site.posts if Path(p.path).name == FIGURE_POST)
    specs = render_post(post, cache=site.cache).figures()
    assert len(specs) >= 2
    report = build(Path(post.path), tmp_path / "out", figures="svg,png", cache=site.cache)
    assert report.cache_hits == report.blocks
    by_name = {p.name: p for p in report.figures}
    assert len(by_name) == 2 * len(specs)
    (page,) = report.pages
    html = page.read_text()
    for spec in specs:
        svg, png = by_name[f"{spec.stem}.svg"], by_name[f"{spec.stem}.png"]
        root = ET.parse(svg).getroot()  # parses as XML
        assert root.tag == "{http://www.w3.org/2000/svg}svg"
        texts = ["".join(e.itertext()) for e in root.iter() if e.tag.endswith("}text")]
        assert spec.title in texts, (spec.title, texts[:10])
        data = png.read_bytes()
        assert data[:8] == b"\x89PNG\r\n\x1a\n" and data[12:16] == b"IHDR"
        layout = spec.figure.get("layout", {})
        assert struct.unpack(">II", data[16:24]) == (layout.get("width") or DEFAULT_WIDTH,
                                                       layout.get("height") or DEFAULT_HEIGHT)
        # linked under the figure: in its own section, relative to the page
        start = html.index(f'<section id="{spec.id}"')
        own = html[start:html.index("</section>", start)]
        for f in (svg, png):
            assert f'href="{f.relative_to(page.parent).as_posix()}"' in own, (spec.id, f.name)
