"""mechwork.post.build and mechwork.post.cache: a post's results are computed once and kept by their inputs.

The cache: a second build of an unchanged post takes every result block from the cache and writes the same bytes;
a prose-only edit takes every block from the cache and changes the page; a changed argument, a changed weights
file or a changed SAE file misses; a corrupt entry is a miss; a cache that cannot be written warns once and the
build goes on. The site: the bundles once in ``assets/``, pages that load them by relative path, an index linking
every post; one post alone is one inline page. The checks: everything is checked before a result is computed or a
file is written; one model is opened once per build however many posts name it.
"""

from __future__ import annotations

import hashlib
import re
import shutil
import warnings
from html.parser import HTMLParser
from pathlib import Path

import pytest

from mechwork.dashboard.assets import PLOTLY
from mechwork.dashboard.page import Block
from mechwork.errors import OutputError, PostError
from mechwork.post import build as build_mod
from mechwork.post.build import build
from mechwork.post.cache import CacheWarning, ResultCache, weights_digest
from mechwork.post.parse import parse_text

DATA = Path(__file__).resolve().parents[1] / "mechwork" / "data"
FIGURE_BLOCK = "```mechwork\nhead-detectors: {model}\ntitle: {title}\n```\n"
VIEW_BLOCK = "```mechwork\nattention: {model}\ntitle: Attention on a repeat\n```\n"


def post(title: str, prose: str, model: str = "induction-2l", block_title: str = "Head scores") -> str:
    return (f"---\ntitle: {title}\ndescription: About {title.lower()}.\ndate: 2026-12-01\n---\n\n# {title}\n\n"
            f"{prose}\n\n{FIGURE_BLOCK.format(model=model, title=block_title)}\nBetween the results.\n\n"
            f"{VIEW_BLOCK.format(model=model)}\nThe end.\n")


def n_blocks(text: str) -> int:
    """The result blocks of a post, counted from its text (not by the parser)."""
    return text.count("```mechwork\n")


@pytest.fixture(scope="module")
def first(tmp_path_factory):
    """Two posts on one model built once as a site into a fresh cache; how many contexts the build opened."""
    root = tmp_path_factory.mktemp("posts")
    src = root / "src"
    src.mkdir()
    (src / "a.md").write_text(post("Induction heads", "Two layers find the repeat."))
    (src / "b.md").write_text(post("The same heads again", "A second post on the same model.", block_title="Again"))
    contexts = []
    from mechwork.post.blocks import BlockContext

    init = BlockContext.__init__

    def counting(self, model, *a, **k):
        contexts.append(model)
        init(self, model, *a, **k)

    BlockContext.__init__ = counting
    try:
        report = build(src, root / "site", cache=ResultCache(root / "cache"))
    finally:
        BlockContext.__init__ = init
    return root, src, report, contexts


def test_the_first_build_computes_every_block_and_opens_the_model_once(first):
    root, src, report, contexts = first
    want = sum(n_blocks(p.read_text()) for p in src.glob("*.md"))
    assert report.blocks == want == 4
    assert report.cache_hits == 2  # b.md's blocks are a.md's but for one title (applied after the cache)
    assert len(contexts) == 1  # two posts, one model: one context for the whole build
    assert [p.name for p in report.pages] == ["a.html", "b.html"] and report.index == root / "site" / "index.html"
    assert set(report.stages) == {"check", "render", "write"} and report.seconds >= sum(report.stages.values()) * 0.99


def test_an_unchanged_post_hits_every_block_and_writes_the_same_bytes(first, tmp_path):
    root, src, report, _ = first
    again = build(src, tmp_path / "site", cache=ResultCache(root / "cache"))
    assert again.cache_hits == again.blocks == report.blocks
    for old, new in zip(report.pages, again.pages, strict=True):
        assert old.read_bytes() == new.read_bytes()
    assert report.index.read_bytes() == again.index.read_bytes()


def test_a_prose_edit_hits_every_block_and_changes_the_page(first, tmp_path):
    root, src, report, _ = first
    text = (src / "a.md").read_text()
    edited = tmp_path / "a.md"
    edited.write_text(text.replace("Two layers find the repeat.", "Two layers find the repeated half."))
    got = build(edited, tmp_path / "out", cache=ResultCache(root / "cache"))
    assert got.blocks == n_blocks(text) and got.cache_hits == got.blocks
    html = got.pages[0].read_text()
    assert "repeated half" in html and "repeated half" not in report.pages[0].read_text()


def test_a_changed_argument_misses(first, tmp_path):
    root, src, _, _ = first
    text = (src / "a.md").read_text().replace("title: Head scores", "title: Head scores\nseed: 3")
    (tmp_path / "a.md").write_text(text)
    got = build(tmp_path / "a.md", tmp_path / "out", cache=ResultCache(root / "cache"))
    assert (got.blocks, got.cache_hits) == (2, 1)


def test_a_changed_title_or_caption_hits_and_shows_the_new_label(first, tmp_path, monkeypatch):
    root, src, _, _ = first
    text = (src / "a.md").read_text().replace("title: Head scores", "title: Head scores, retitled\ncaption: New <b>")
    (tmp_path / "a.md").write_text(text)

    def never(block, ctx):
        raise AssertionError("a relabelled block must come from the cache")

    monkeypatch.setattr("mechwork.post.blocks.render_block", never)
    got = build(tmp_path / "a.md", tmp_path / "out", cache=ResultCache(root / "cache"))
    assert (got.blocks, got.cache_hits) == (2, 2)
    page = got.pages[0].read_text()
    assert "Head scores, retitled" in page and "New &lt;b&gt;" in page
    assert "Head scores, retitled" not in (root / "site" / "a.html").read_text()


def run_from_preset(path: Path, preset: str) -> Path:
    """A run directory holding a preset's weights as its one checkpoint (config.json from the preset's JSON)."""
    import json

    from mechwork.models import ToyConfig
    from mechwork.trainconfig import TrainConfig

    info = json.loads((DATA / f"{preset}.json").read_text())
    (path / "checkpoints").mkdir(parents=True)
    config = {"task": info["task"], "model": ToyConfig.from_dict(info["model"]).to_dict(),
              "train": TrainConfig.from_dict(info["train"]).to_dict(), "versions": info["versions"]}
    (path / "config.json").write_text(json.dumps(config))
    shutil.copyfile(DATA / f"{preset}.safetensors", path / "checkpoints" / "step_0000100.safetensors")
    return path


def nudge(weights: Path) -> None:
    """Rewrite a safetensors file with one weight changed (a valid checkpoint, other bytes)."""
    from mechwork.io import load_tensors, save_tensors_atomic

    tensors, meta = load_tensors(weights)
    name = sorted(k for k, v in tensors.items() if v.is_floating_point())[0]
    tensors[name] = tensors[name].clone()
    tensors[name].view(-1)[0] += 0.25
    save_tensors_atomic(tensors, weights, {k: v for k, v in meta.items() if k != "sha256"})


def test_a_changed_weights_file_misses(first, tmp_path):
    root, _, _, _ = first
    run_from_preset(tmp_path / "run", "induction-2l")
    (tmp_path / "p.md").write_text("# On a run\n\n" + FIGURE_BLOCK.format(model="run", title="Scores"))
    cache = ResultCache(root / "cache")
    runs = [build(tmp_path / "p.md", tmp_path / f"out{i}", cache=cache) for i in range(2)]
    assert [(r.blocks, r.cache_hits) for r in runs] == [(1, 0), (1, 1)]
    nudge(tmp_path / "run" / "checkpoints" / "step_0000100.safetensors")
    after = build(tmp_path / "p.md", tmp_path / "out2", cache=cache)
    assert (after.blocks, after.cache_hits) == (1, 0)


def test_the_weights_digest_follows_the_weight_bytes_only(tmp_path):
    run = run_from_preset(tmp_path / "run", "modadd-113")
    before = weights_digest(str(run))
    (run / "notes.txt").write_text("not weights")
    ck = run / "checkpoints" / "step_0000100.safetensors"
    ck.write_bytes(ck.read_bytes())  # the same bytes, a new modification time
    assert weights_digest(str(run)) == before
    nudge(ck)
    nudged = weights_digest(str(run))
    assert nudged != before
    shutil.copyfile(DATA / "modadd-113.safetensors", run / "checkpoints" / "step_0000200.safetensors")
    assert weights_digest(str(run)) == before  # the last checkpoint by default: the preset's bytes again
    assert weights_digest(str(run), step=100) == nudged
    assert weights_digest("modadd-113") != weights_digest("induction-2l")


def test_a_changed_sae_file_or_mechwork_source_changes_the_key(tmp_path, monkeypatch):
    run = run_from_preset(tmp_path / "run", "modadd-113")
    hook = "blocks.0.mlp.hook_post"
    shutil.copytree(DATA / "saes" / "modadd-113" / hook, run / "saes" / hook)
    text = f"# SAE\n\n```mechwork\nsae-features: run\nhook: {hook}\n```\n"
    block = parse_text(text, str(tmp_path / "p.md"), base=tmp_path).blocks[0]
    cache = ResultCache(tmp_path / "cache")
    digest = weights_digest(str(run))
    key = cache.key(block, digest)
    assert cache.key(block, digest) == key
    nudge(run / "saes" / hook / "sae_weights.safetensors")
    changed = cache.key(block, digest)
    assert changed != key
    monkeypatch.setattr("mechwork.post.cache.code_digest", lambda: "other source")  # an edit to mechwork itself
    assert cache.key(block, digest) not in (key, changed)


def test_a_corrupt_entry_is_a_miss_and_an_unwritable_cache_warns_once(tmp_path):
    cache = ResultCache(tmp_path / "cache")
    key = hashlib.sha256(b"k").hexdigest()
    blocks = [Block("html", "T", "c", "<p>x</p>"), Block("plotly", None, None, {"data": [{"y": [1]}], "layout": {}})]
    cache.put(key, blocks)
    assert [b.to_dict() for b in cache.get(key)] == [b.to_dict() for b in blocks]
    entry = tmp_path / "cache" / key[:2] / f"{key}.json"
    for junk in (b"{not json", b"[1, 2]", b'{"format": 1, "key": "other", "blocks": []}', b"\xff\xfe"):
        entry.write_bytes(junk)
        assert cache.get(key) is None
    (tmp_path / "file").write_text("a file where the cache folder should be")
    broken = ResultCache(tmp_path / "file")
    with warnings.catch_warnings(record=True) as seen:
        warnings.simplefilter("always")
        broken.put(key, blocks)
        broken.put(hashlib.sha256(b"other").hexdigest(), blocks)
    assert [w.category for w in seen] == [CacheWarning] and "cannot be written" in str(seen[0].message)
    assert broken.get(key) is None


class Links(HTMLParser):
    def __init__(self):
        super().__init__()
        self.refs: list[str] = []

    def handle_starttag(self, tag, attrs):
        self.refs += [v for k, v in attrs if k in ("href", "src") and v and not v.startswith("#")]


def refs(path: Path) -> list[str]:
    parser = Links()
    parser.feed(path.read_text())
    return parser.refs


def test_a_site_shares_its_assets_and_its_index_links_every_post(first):
    root, src, report, _ = first
    site = root / "site"
    assert sorted(p.name for p in (site / "assets").iterdir()) == ["circuitsvis.js", "plotly.min.js"]
    assert sorted(report.assets) == sorted((site / "assets").iterdir())
    bundle = (site / "assets" / "plotly.min.js").read_text()[:4000]
    for page in report.pages:
        html = page.read_text()
        assert bundle not in html  # loaded, not inlined
        assert html.count("<h1") == 1 and "2026-12-01" in html  # the post's '# Title' is the page's title, once
        got = refs(page)
        assert "assets/plotly.min.js" in got and "assets/circuitsvis.js" in got
        for ref in got:
            if "://" not in ref:
                assert (page.parent / ref).is_file(), ref
    index = report.index.read_text()
    links = refs(report.index)
    for f in sorted(src.glob("*.md")):
        title = re.search(r"^title: (.+)$", f.read_text(), re.M).group(1)
        assert title in index and f"{f.stem}.html" in links
        assert (site / f"{f.stem}.html").is_file()
    assert "2026-12-01" in index and "About induction heads." in index


def test_one_post_alone_is_one_inline_page(first, tmp_path):
    root, src, _, _ = first
    got = build(src / "a.md", tmp_path / "out", cache=ResultCache(root / "cache"))
    assert got.index is None and got.assets == () and not (tmp_path / "out" / "assets").exists()
    assert sorted(p.name for p in (tmp_path / "out").iterdir()) == ["a.html"]
    html = got.pages[0].read_text()
    assert not any(r.startswith("assets/") for r in refs(got.pages[0]))
    # inlined (gzip + base64), and it is the very bundle the site loads as a file
    assert PLOTLY.embedded() in html and (root / "site" / "assets" / "plotly.min.js").read_text() == PLOTLY.source()


def test_every_check_comes_before_any_result_or_file(first, tmp_path, monkeypatch):
    _, src, _, _ = first
    posts = tmp_path / "posts"
    posts.mkdir()
    shutil.copy(src / "a.md", posts / "a.md")
    (posts / "b.md").write_text("# B\n\n```mechwork\nhead-detectors: induction-2l\nnot-an-argument: 1\n```\n")

    def no_render(*a, **k):
        raise AssertionError("a result was rendered before every post was checked")

    monkeypatch.setattr(build_mod.Renderer, "result", no_render)
    with pytest.raises(PostError, match=r"b\.md:[35]: .*'not-an-argument'"):  # the fence's or the argument's line
        build(posts, tmp_path / "out", cache=ResultCache(tmp_path / "cache"))
    (posts / "b.md").write_text("# B\n\nJust prose.\n")
    (tmp_path / "out" / "assets").mkdir(parents=True)
    (tmp_path / "out" / "assets" / "plotly.min.js").mkdir()  # a folder where a bundle must go
    with pytest.raises(OutputError, match="plotly.min.js"):
        build(posts, tmp_path / "out", cache=ResultCache(tmp_path / "cache"))
    assert sorted(p.name for p in (tmp_path / "out").iterdir()) == ["assets"]
    assert not (tmp_path / "cache").exists()


def test_two_posts_of_one_name_or_a_post_named_index_are_refused(tmp_path):
    for d in ("x", "y"):
        (tmp_path / d).mkdir()
        (tmp_path / d / "same.md").write_text("# Same\n")
    with pytest.raises(Exception, match="same page same.html"):
        build([tmp_path / "x", tmp_path / "y"], tmp_path / "out", cache=None)
    (tmp_path / "x" / "index.md").write_text("# Home\n")
    with pytest.raises(Exception, match="index.html"):
        build([tmp_path / "x"], tmp_path / "out", cache=None)
    assert not (tmp_path / "out").exists()


def test_one_post_may_write_beside_itself_but_not_over_itself(tmp_path):
    src = tmp_path / "note.md"
    src.write_text("# A note\n\nProse only, with $x$.\n")
    with pytest.raises(Exception, match="not the post itself"):
        build(src, src, cache=None)
    got = build(src, tmp_path, cache=None)  # `mechwork post POST.md --out .`: the page goes beside the post
    assert got.pages == (tmp_path / "note.html",) and src.read_text().startswith("# A note")
    assert sorted(p.name for p in tmp_path.iterdir()) == ["note.html", "note.md"]


def test_a_site_with_figures_writes_each_figure_beside_its_page_and_links_it(first, tmp_path):
    from mechwork.dashboard.export import chromium_executable

    if chromium_executable() is None:
        pytest.skip("no Chromium to draw the figures")
    root, src, _, _ = first
    got = build(src, tmp_path / "site", figures="svg", cache=ResultCache(root / "cache"))
    assert got.cache_hits == got.blocks
    n_figs = sum(p.read_text().count('class="mw-fig"') for p in got.pages)
    assert n_figs > 0 and len(got.figures) == n_figs
    for page in got.pages:
        links = [r for r in refs(page) if r.endswith(".svg")]
        assert len(links) == page.read_text().count('class="mw-fig"')
        assert all(r.startswith(f"{page.stem}-figures/") and (page.parent / r).is_file() for r in links)
    assert all(f.is_file() and f.read_text().lstrip().startswith("<svg") for f in got.figures)


def test_a_block_that_fails_to_render_leaves_no_page_of_the_build(first, tmp_path, monkeypatch):
    root, src, _, _ = first
    posts = tmp_path / "posts"
    posts.mkdir()
    shutil.copy(src / "a.md", posts / "a.md")  # every block cached: its page is ready first
    block = FIGURE_BLOCK.format(model="induction-2l", title="Never drawn").replace("title:", "seed: 9\ntitle:")
    (posts / "z.md").write_text("# Z\n\n" + block)  # a new seed: a miss

    def failing(block, ctx):
        raise PostError(f"{block.path}:{block.line}: {block.kind}: it failed")

    monkeypatch.setattr("mechwork.post.blocks.render_block", failing)
    with pytest.raises(PostError, match=r"z\.md:3: head-detectors: it failed"):
        build(posts, tmp_path / "out", cache=ResultCache(root / "cache"))
    assert not (tmp_path / "out").exists()


def test_a_post_lists_its_sections_only_when_there_are_three_distinct_ones():
    from mechwork.dashboard.page import Page
    from mechwork.post.build import contents_box

    def page(*titles):
        p = Page("post")
        for t in titles:
            p.note("x", title=t)
        return p

    assert contents_box(page("a", "b", "c"))
    assert '<nav class="mw-toc">' in page("a", "b", "c").render("cdn")
    assert not contents_box(page("a", "b"))
    assert not contents_box(page("Key frequencies", "Key frequencies", "Table"))
    p = page("Key frequencies", "Key frequencies", "Table")
    p.toc = contents_box(p)
    assert '<nav class="mw-toc">' not in p.render("cdn")


@pytest.mark.parametrize("heading", ["Title with $\\alpha$", "Plain `code` title", "**Bold** and *it*"])
def test_a_title_with_inline_markup_shows_once(tmp_path, heading):
    src = tmp_path / "t.md"
    src.write_text(f"# {heading}\n\nThe body.\n")
    page = build(src, tmp_path / "out", cache=None).pages[0].read_text()
    assert page.count("<h1") == 1 and "The body." in page
    assert heading.split()[0].strip("*") in page.split("<h1", 1)[1]


@pytest.mark.parametrize("out", ["", "  "])
def test_an_empty_out_or_source_is_refused_and_nothing_is_written(tmp_path, monkeypatch, out):
    monkeypatch.chdir(tmp_path)
    (tmp_path / "t.md").write_text("# T\n\nBody.\n")
    with pytest.raises(Exception, match=r"^'out' must name a folder for the pages \(got '\s*': it is empty"):
        build(tmp_path / "t.md", out, cache=None)
    with pytest.raises(Exception, match=r"^'SOURCE' must be a Markdown post .*it is empty\)$"):
        build(out, tmp_path / "o", cache=None)
    assert sorted(p.name for p in tmp_path.iterdir()) == ["t.md"]


def test_the_command_refuses_an_empty_out_or_source_in_one_line(capsys, monkeypatch, tmp_path):
    from clirun import refused

    monkeypatch.chdir(tmp_path)
    (tmp_path / "t.md").write_text("# T\n\nBody.\n")
    assert refused(capsys, ["post", "t.md", "--out", ""], ["'--out'", "empty"]) == ""
    assert refused(capsys, ["post", "", "--out", "o"], ["'SOURCE'", "empty"]) == ""
    assert refused(capsys, ["post", "t.md", "--out", "o", "--figures", ","], ["'--figures'", "svg, png"]) == ""
    assert sorted(p.name for p in tmp_path.iterdir()) == ["t.md"]


PNG = bytes.fromhex("89504e470d0a1a0a0000000d4948445200000001000000010806000000"
                    "1f15c4890000000d49444154789c63f8cfc0f01f0005000201a8c9b1ed0000000049454e44ae426082")


def test_links_between_posts_become_pages_and_local_images_are_copied(tmp_path):
    from chromium_check import check_page, require_chromium

    src = tmp_path / "posts"
    (src / "img").mkdir(parents=True)
    (src / "img" / "dot 1.png").write_bytes(PNG)
    (src / "a.md").write_text("# A\n\nSee [b](b.md#part), [the web](https://example.org/b.md) and [top](#a).\n\n"
                              "![a dot](img/dot%201.png)\n")
    (src / "b.md").write_text("# B\n\nBack to [a](./a.md).\n")
    got = build(src, tmp_path / "site", cache=None)
    a, b = (got.pages[0].read_text(), got.pages[1].read_text())
    assert 'href="b.html#part"' in a and 'href="https://example.org/b.md"' in a and 'href="#a"' in a
    assert 'href="a.html"' in b and ".md" not in re.sub(r"https://example\.org/b\.md", "", a)
    assert 'src="img/dot%201.png"' in a and (tmp_path / "site" / "img" / "dot 1.png").read_bytes() == PNG
    if require_chromium():
        report = check_page(got.pages[0])
        assert not report.console_errors and not report.page_errors, (report.console_errors, report.page_errors)
        assert report.requests == []  # the remote link is a link, never fetched
        (tmp_path / "site" / "img" / "dot 1.png").unlink()  # the check sees a missing image
        assert check_page(got.pages[0]).console_errors


@pytest.mark.parametrize(("image", "needle"), [("../out.png", "must be in the post's folder"),
                                                ("nope.png", "does not exist")])
def test_an_image_outside_the_posts_folder_or_missing_is_one_line_and_nothing_is_written(tmp_path, image, needle):
    src = tmp_path / "posts"
    src.mkdir()
    (tmp_path / "out.png").write_bytes(PNG)
    (src / "a.md").write_text(f"# A\n\nProse.\n\nMore, then ![x]({image}).\n")
    with pytest.raises(PostError) as info:
        build(src, tmp_path / "site", cache=None)
    msg = str(info.value)
    assert msg.startswith(f"{src / 'a.md'}:5: image {image!r} {needle}") and "\n" not in msg and "valid:" in msg
    assert not (tmp_path / "site").exists()
