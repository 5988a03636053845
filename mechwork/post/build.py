"""Build posts into pages: one inline page for one post, or a site whose pages share one ``assets/`` folder.

:func:`build` works in three stages, and nothing is written until the first two have passed:

1. **check** (no model is opened): every post parses with its models resolved (:func:`mechwork.post.parse.
   parse_post`), ``out`` is neither a source folder nor inside one (nor the post file itself), ``out``, every
   page, figure folder and the ``assets/`` folder can be written, and the figure formats are valid (with a
   Chromium to draw them). The first fault is one line naming it (for a post: ``FILE:LINE``).
2. **render**: each result block comes from the :class:`~mechwork.post.cache.ResultCache` or is computed
   (:func:`mechwork.post.blocks.render_block`, one :class:`~mechwork.post.blocks.BlockContext` per distinct model
   across the whole build, so each model is opened once) and stored; prose becomes markdown. A block that
   fails stops the build here, before any page is written.
3. **write**: for a site, the bundles once into ``<out>/assets/`` (:func:`mechwork.dashboard.site.write_assets`),
   each page as ``<out>/<slug>.html`` (the slug is the file's stem) loading them by relative path, and
   ``<out>/index.html`` listing every post (title, date, description) by relative link, so the site works from
   ``file://`` and any static host. One post (no ``site``) is one page with its bundles inline. Each page is
   written atomically; with ``figures``, its figures go to ``<out>/<slug>-figures/`` with a link under each.
   Links between the build's posts point at their pages and local images are copied beside them
   (:mod:`mechwork.post.links`; an image outside its post's folder or missing is refused in stage 1).

A folder of posts (every ``*.md`` in it, sorted) makes a site unless ``site=False``; ``site=True`` makes a
site of single files too. :class:`BuildReport` says what was written, how many result blocks the cache
served, and the time each stage took.

Example (a post of prose only needs no model)::

    >>> import tempfile
    >>> d = Path(tempfile.mkdtemp())
    >>> _ = (d / "hello.md").write_text("# Hello\\n\\nNo results yet, only $e^{i\\\\pi} = -1$.\\n")
    >>> report = build(d / "hello.md", d / "site", cache=None)
    >>> [p.name for p in report.pages], report.blocks, report.index, report.assets
    (['hello.html'], 0, None, ())
    >>> report = build([d], d / "site", cache=None)
    Traceback (most recent call last):
    ...
    mechwork.errors.ConfigError: 'out' must be a folder outside the source folder ...
"""

from __future__ import annotations

import os
import time
from collections.abc import Mapping, Sequence
from contextlib import ExitStack
from dataclasses import dataclass, field, replace
from pathlib import Path
from typing import TYPE_CHECKING, Any

from mechwork import bars
from mechwork.errors import ConfigError, OutputError
from mechwork.post.cache import ResultCache, model_path, roundtrip, weights_digest

if TYPE_CHECKING:  # pragma: no cover
    from mechwork.dashboard.page import Block, Page
    from mechwork.post.blocks import BlockContext
    from mechwork.post.parse import Post, ResultBlock

__all__ = ["BuildReport", "Renderer", "build", "render_post"]

POST_SUFFIXES = (".md", ".markdown")
ASSETS_DIR = "assets"


@dataclass(frozen=True)
class BuildReport:
    """What a build wrote, and how: result ``blocks`` rendered, ``cache_hits`` of them from the cache,
    ``seconds`` in all and ``stages`` (check, render, write) in seconds."""

    pages: tuple[Path, ...]
    index: Path | None
    assets: tuple[Path, ...]
    figures: tuple[Path, ...]
    blocks: int
    cache_hits: int
    seconds: float
    stages: Mapping[str, float] = field(default_factory=dict)

    def summary(self) -> str:
        """One line: pages, result blocks and cache hits, seconds."""
        pages = len(self.pages) + (self.index is not None)
        figs = f", {len(self.figures)} figure files" if self.figures else ""
        return (f"{pages} page{'s' * (pages != 1)}, {self.blocks} result block{'s' * (self.blocks != 1)}"
                f" ({self.cache_hits} from the cache){figs}, {self.seconds:.1f} s")


class Renderer:
    """Renders posts into pages, sharing one :class:`BlockContext` per model and counting cache hits."""

    def __init__(self, cache: ResultCache, device: str | None = None, pages: Mapping[Path, str] | None = None):
        self.cache, self.device = cache, device
        self.pages = dict(pages or {})  # the build's posts (resolved) -> their page slugs, for links between them
        self.contexts: dict[tuple[str, int | None], BlockContext] = {}
        self.blocks = self.hits = 0

    def context(self, model: str, step: int | None = None) -> BlockContext:
        """The build's one context of ``model`` (an absolute path or a preset name) at ``step`` (a run's checkpoint;
        None: its last)."""
        from mechwork.post.blocks import BlockContext

        if (model, step) not in self.contexts:
            self.contexts[model, step] = BlockContext(model, None, self.device, step)
        return self.contexts[model, step]

    def result(self, block: ResultBlock) -> list[Block]:
        """The page blocks of one result block: cached, or computed now (and then cached). The cache holds the
        result without the block's ``title``/``caption``, applied after it, so relabelling a block is a hit."""
        from mechwork.post.blocks import unlabelled, with_labels  # cheap: no torch

        bare = unlabelled(block)
        model = model_path(block.model, Path(block.path).parent)
        step = block.args.get("step")
        step = step if isinstance(step, int) and not isinstance(step, bool) else None
        key = self.cache.key(bare, weights_digest(model, step=step))
        self.blocks += 1
        cached = self.cache.get(key)
        if cached is not None:
            self.hits += 1
            return with_labels(cached, block.args)
        from mechwork.post.blocks import render_block  # only on a miss: a build of cached results needs no torch

        fresh = roundtrip(render_block(bare, self.context(model, step)))  # as a cached copy will render
        self.cache.put(key, fresh)
        return with_labels(fresh, block.args)

    def page(self, post: Post) -> Page:
        """The page of ``post``: its title, then prose and results in order."""
        from mechwork.dashboard.page import Page
        from mechwork.post.parse import Prose

        page = Page(post.title, subtitle=post.date)
        for i, seg in enumerate(post.segments):
            if isinstance(seg, Prose):
                text = _without_title(seg.text, post.title) if i == 0 else seg.text
                if text.strip():
                    from mechwork.post.links import rewrite

                    md = page.markdown(text).blocks[-1]
                    page.blocks[-1] = replace(md, body=rewrite(md.body, Path(post.path), self.pages))
            else:
                bars.stage(f"{Path(post.path).name}:{seg.line}: {seg.kind}")
                page.extend(self.result(seg))
        page.toc = contents_box(page)
        return page


def contents_box(page: Page) -> bool:
    """A post lists its sections only when it has at least three titled ones and no title twice."""
    titles = [b.title for b in page.blocks if b.title]
    return len(titles) >= 3 and len(set(titles)) == len(titles)


def _without_title(text: str, title: str) -> str:
    """``text`` without its first line when that line is the ``# `` heading the page already shows as its title."""
    lines = text.lstrip("\n").split("\n")
    if lines and lines[0].startswith("# ") and _heading_text(lines[0]) == " ".join(title.split()):
        return "\n".join(lines[1:])
    return text


def _heading_text(line: str) -> str:
    """The plain text of the ``# `` heading ``line``, as the parser reads a post's title (math as its symbols,
    code as its text, markup dropped)."""
    from mechwork.post.parse import _plain, _tokens

    toks = _tokens(line)
    return next((_plain(toks[i + 1]) for i, t in enumerate(toks) if t.type == "heading_open"), "")


def render_post(post: Post, *, cache: ResultCache, device: str | None = None) -> Page:
    """The page of one post, its results from ``cache`` where it has them."""
    return Renderer(cache, device).page(post)


# -- the check stage -----------------------------------------------------------------------------------
@dataclass(frozen=True)
class _Plan:
    posts: tuple[tuple[str, Post], ...]  # (slug, post), in build order
    out: Path
    site: bool
    formats: tuple[str, ...]
    title: str  # of the index page
    images: Mapping[str, Path] = field(default_factory=dict)  # the posts' local images: output name -> file


def _post_files(sources: Sequence[Path]) -> list[Path]:
    """Every post file the sources name (a folder: its ``*.md``, sorted), each once; one line for a bad source."""
    files: list[Path] = []
    for src in sources:
        if src.is_dir():
            found = sorted(p for p in src.iterdir() if p.suffix in POST_SUFFIXES and p.is_file())
            if not found:
                raise ConfigError(f"'SOURCE' must hold posts: the folder {str(src)!r} has no *.md file")
            files += found
        elif src.is_file() and src.suffix in POST_SUFFIXES:
            files.append(src)
        else:
            what = "is not a .md file" if src.exists() else "does not exist"
            raise ConfigError(f"'SOURCE' must be a Markdown post (.md) or a folder of them (got {str(src)!r}: "
                              f"it {what})")
    seen: dict[Path, Path] = {}
    for f in files:
        seen.setdefault(f.resolve(), f)
    return list(seen.values())


def _slugs(files: Sequence[Path], site: bool) -> list[str]:
    """Each post's page name (its file stem); two posts with one name, or a post named like the index, refused."""
    by_slug: dict[str, Path] = {}
    for f in files:
        if f.stem in by_slug:
            raise ConfigError(f"two posts would write the same page {f.stem}.html: {str(by_slug[f.stem])!r} and "
                              f"{str(f)!r}; rename one")
        by_slug[f.stem] = f
    if site and "index" in by_slug:
        raise ConfigError(f"post {str(by_slug['index'])!r} would overwrite the site's index.html; rename it")
    return list(by_slug)


def _check_out_place(out: Path, sources: Sequence[Path], files: Sequence[Path], option: str) -> None:
    """``out`` is a folder (or can be one) that is not a source folder, inside one, or a post file."""
    target = out.resolve()
    for src in sources:
        if src.is_dir():
            folder = src.resolve()
            if target == folder or folder in target.parents:
                raise ConfigError(f"'{option}' must be a folder outside the source folder {str(src)!r} "
                                  f"(got {str(out)!r}); pages written among the posts would mix with them")
    for f in files:
        if target == f.resolve():
            raise ConfigError(f"'{option}' must be a folder for the pages, not the post itself (got {str(out)!r})")
    if out.exists() and not out.is_dir():
        raise OutputError(f"'{option}' must be a folder (got {str(out)!r}, which is a file)")


def _check_writable(plan: _Plan, option: str) -> None:
    """``out`` and everything the build writes into it can be written; writes nothing that stays."""
    from mechwork.dashboard.site import check_assets_dir
    from mechwork.limits import check_writable

    check_writable(plan.out / "index.html", f"'{option}'", make_parents=True)  # out, or its nearest parent
    names = [f"{slug}.html" for slug, _ in plan.posts] + (["index.html"] if plan.site else [])
    for name in [*names, *plan.images]:
        if (plan.out / name).is_dir():
            what = "page" if name in names else "image"
            raise OutputError(f"cannot write the {what} {str(plan.out / name)!r}: it is a folder")
    if plan.formats:
        for slug, _ in plan.posts:
            figs = plan.out / f"{slug}-figures"
            if figs.exists() and not figs.is_dir():
                raise OutputError(f"cannot write the figures folder {str(figs)!r}: it is a file")
    if plan.site:
        check_assets_dir(plan.out / ASSETS_DIR)


def plan_build(sources: Sequence[str | os.PathLike[str]] | str | os.PathLike[str], out: Path, *,
               site: bool | None = None, figures: Any = None, option: str = "out") -> _Plan:
    """Every check of :func:`build`, before anything is computed or written; the plan it will follow."""
    from mechwork.dashboard.export import parse_formats

    raw = [sources] if isinstance(sources, (str, os.PathLike)) else list(sources)
    if not raw:
        raise ConfigError("'SOURCE' must name at least one post (.md) or folder of posts (got none)")
    if any(not os.fspath(s).strip() for s in raw):
        raise ConfigError("'SOURCE' must be a Markdown post (.md) or a folder of them (got '': it is empty)")
    srcs = [Path(s) for s in raw]
    out = Path(out)
    files = _post_files(srcs)
    site = any(s.is_dir() for s in srcs) if site is None else bool(site)
    slugs = _slugs(files, site)
    formats = parse_formats(figures)
    _check_out_place(out, srcs, files, option)
    bars.stage("reading the posts")
    from mechwork.post.parse import parse_post

    posts = tuple(zip(slugs, (parse_post(f, check_models=True) for f in files), strict=True))
    folders = [s for s in srcs if s.is_dir()]
    title = folders[0].resolve().name if len(folders) == 1 and len(srcs) == 1 else "Posts"
    from mechwork.post.links import post_images

    plan = _Plan(posts, out, site, formats, title, post_images([p for _, p in posts]))
    _check_writable(plan, option)
    if formats:
        from mechwork.dashboard.export import check_can_export

        check_can_export()
    return plan


# -- the write stage -----------------------------------------------------------------------------------
def index_page(plan: _Plan) -> Page:
    """The site's index: every post's title (a relative link to its page), its date if it has one, and its
    description if it has one (plain text: :func:`mechwork.post.parse.parse_text` gives math as its symbols);
    every string escaped."""
    import html
    from urllib.parse import quote

    from mechwork.dashboard.page import Block, Page

    items = []
    for slug, post in plan.posts:
        when = f" <time>{html.escape(post.date)}</time>" if post.date else ""
        desc = f"<p>{html.escape(post.description)}</p>" if post.description else ""
        items.append(f'<li><p><a href="{html.escape(quote(slug))}.html"><strong>{html.escape(post.title)}</strong>'
                     f"</a>{when}</p>{desc}</li>")
    count = f"{len(plan.posts)} post{'s' * (len(plan.posts) != 1)}"
    body = f'<p>{count}:</p>\n<ul class="mw-posts">\n' + "\n".join(items) + "\n</ul>"
    return Page(plan.title, toc=False).extend([Block("html", None, None, body)])


def _write(plan: _Plan, pages: Sequence[tuple[str, Page]]) -> tuple[list[Path], list[Path], list[Path], Path | None]:
    """Write the assets (a site), every page (atomically, with its figures) and the index (a site)."""
    from mechwork.dashboard.site import write_assets

    try:
        plan.out.mkdir(parents=True, exist_ok=True)
    except OSError as e:
        raise OutputError(f"cannot make the folder {str(plan.out)!r}: {e.strerror or e}") from None
    assets = list(write_assets(plan.out / ASSETS_DIR).values()) if plan.site else []
    from mechwork.post.links import copy_images

    assets += copy_images(plan.images, plan.out)
    mode = "site" if plan.site else "inline"
    written, figures = [], []
    with ExitStack() as stack:
        exporter = None
        if plan.formats and any(page.figures() for _, page in pages):  # one browser draws every page's figures
            from mechwork.dashboard.export import Exporter

            exporter = stack.enter_context(Exporter())
        for slug, page in pages:
            bars.stage(f"writing {slug}.html")
            figs_dir = plan.out / f"{slug}-figures"
            written.append(page.save(plan.out / f"{slug}.html", mode, asset_base=f"{ASSETS_DIR}/",
                                     figures=plan.formats or None, figures_dir=figs_dir, exporter=exporter))
            figures += [figs_dir / f"{spec.stem}.{fmt}" for spec in page.figures() for fmt in plan.formats]
    index = index_page(plan).save(plan.out / "index.html", mode, asset_base=f"{ASSETS_DIR}/") if plan.site else None
    return written, assets, figures, index


def build(sources: Sequence[str | os.PathLike[str]] | str | os.PathLike[str], out: str | os.PathLike[str], *,
          site: bool | None = None, figures: str | Sequence[str] | None = None,
          cache: ResultCache | Any | None = ..., device: str | None = None, option: str = "out") -> BuildReport:
    """Build the posts of ``sources`` (files and folders) into ``out``; see the module docstring.

    ``cache``: a :class:`ResultCache`, ``None`` for none, or left out for the user's
    (:meth:`ResultCache.default`). ``figures``: ``"svg,png"`` or a list of formats. ``option`` names ``out``
    in the one-line errors (the command line passes ``--out``).
    """
    t0 = time.perf_counter()
    stages: dict[str, float] = {}
    if not os.fspath(out).strip():
        raise ConfigError(f"'{option}' must name a folder for the pages (got {os.fspath(out)!r}: it is empty; '.' is "
                          "this folder)")
    store = ResultCache.default() if cache is ... else ResultCache(None) if cache is None else cache
    if not isinstance(store, ResultCache):
        raise ConfigError(f"'cache' must be a ResultCache or None (got {type(store).__name__})")
    plan = plan_build(sources, Path(out), site=site, figures=figures, option=option)
    stages["check"] = time.perf_counter() - t0
    renderer = Renderer(store, device, {Path(post.path).resolve(): slug for slug, post in plan.posts})
    pages = [(slug, renderer.page(post)) for slug, post in plan.posts]  # every result, before any write
    stages["render"] = time.perf_counter() - t0 - stages["check"]
    written, assets, figs, index = _write(plan, pages)
    seconds = time.perf_counter() - t0
    stages["write"] = seconds - stages["check"] - stages["render"]
    return BuildReport(tuple(written), index, tuple(assets), tuple(figs), renderer.blocks, renderer.hits,
                       seconds, stages)
