"""Posts: the size of the ten-post test site, a re-render after a prose edit against the first render, and the
figure export.

Size: ``tests/posts/`` built as a site (one shared ``assets/`` folder) against the same ten posts as single-file
inline pages, and against the issue's bound: the two bundles once plus 1.1x the posts' own data (a post's own
data is its inline page less the bundles it inlines).

Time: one post (``09-circuit.md`` by default) rendered with an empty result cache (first render, the first thing
the process does, so imports and opening the model count as they do for a user), then with
its prose edited and the cache kept (every block hits), median of the repeats; the same in a new
``mechwork post`` process each time (imports included, what a user waits for); the whole site likewise; and
the site's figures exported as SVG and PNG (the site rebuilt with ``figures="svg,png"``, cache hits, less the
rebuild without figures).

    python benchmarks/bench_post.py [--repeats 3] [--post 09-circuit.md] [--json out.json]
"""

from __future__ import annotations

import argparse
import json
import shutil
import statistics
import subprocess
import sys
import tempfile
import time
from collections.abc import Callable
from pathlib import Path
from typing import Any

ROOT = Path(__file__).resolve().parents[1]
POSTS = ROOT / "tests" / "posts"


def tree_bytes(path: Path) -> int:
    return sum(f.stat().st_size for f in path.rglob("*") if f.is_file())


def timed(fn: Callable[[], Any]) -> tuple[float, Any]:
    t0 = time.perf_counter()
    out = fn()
    return time.perf_counter() - t0, out


def edit_prose(path: Path, i: int) -> None:
    """Append one sentence at the end of the post: prose only, no block touched."""
    path.write_text(path.read_text() + f"\nA sentence added by edit {i}.\n")


def sizes(src: Path, out: Path, cache: Any) -> dict[str, float]:
    from mechwork.dashboard.assets import CIRCUITSVIS, PLOTLY
    from mechwork.post.build import render_post
    from mechwork.post.parse import parse_post

    bundles = {a: len(a.source().encode()) for a in (PLOTLY, CIRCUITSVIS)}
    inline, own = 0, 0
    for md in sorted(src.glob("*.md")):
        html = render_post(parse_post(md), cache=cache).render("inline")
        size = len(html.encode())
        inline += size
        own += size - sum(n for a, n in bundles.items() if a.source() in html)
    assets = tree_bytes(out / "assets")
    site = tree_bytes(out)
    bound = assets + 1.1 * own
    return {"site": site, "assets": assets, "pages_and_index": site - assets, "own_data": own,
            "bound": bound, "inline_pages": inline, "site_vs_bound": site / bound, "inline_vs_site": inline / site}


def cli_post(post: Path, out: Path, cache: Path) -> float:
    t, _ = timed(lambda: subprocess.run(
        [sys.executable, "-m", "mechwork.cli", "post", str(post), "--out", str(out), "--cache", str(cache)],
        check=True, capture_output=True))
    return t


def one_post(src: Path, name: str, work: Path, repeats: int) -> dict[str, float]:
    """First render of one post (empty cache) against re-renders after a prose edit (cache hits)."""
    from mechwork.post.build import build
    from mechwork.post.cache import ResultCache

    post = src / name
    cache = ResultCache(work / "cache-one")
    first, rep = timed(lambda: build(post, work / "one", cache=cache))
    assert rep.cache_hits == 0, rep
    hits = []
    for i in range(repeats):
        edit_prose(post, i)
        t, rep = timed(lambda: build(post, work / "one", cache=cache))
        assert rep.cache_hits == rep.blocks, rep
        hits.append(t)
    res = {"blocks": rep.blocks, "first": first, "hit": statistics.median(hits)}  # in process
    cli_first = cli_post(post, work / "one-cli", work / "cache-cli")
    cli_hits = []
    for i in range(repeats):
        edit_prose(post, 100 + i)
        cli_hits.append(cli_post(post, work / "one-cli", work / "cache-cli"))
    return res | {"cli_first": cli_first, "cli_hit": statistics.median(cli_hits)}


def main(argv: list[str] | None = None) -> int:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--repeats", type=int, default=3)
    ap.add_argument("--post", default="09-circuit.md", help="the post to edit (in tests/posts/)")
    ap.add_argument("--json", type=Path, default=None, help="also write the figures to this JSON file")
    args = ap.parse_args(argv)
    from mechwork.post.build import build
    from mechwork.post.cache import ResultCache

    with tempfile.TemporaryDirectory(prefix="bench-post-") as d:
        work = Path(d)
        src = work / "posts"
        shutil.copytree(POSTS, src)
        one = one_post(src, args.post, work, args.repeats)  # first: its first render pays the imports too
        cache = ResultCache(work / "cache")
        site_first, rep = timed(lambda: build(src, work / "site", site=True, cache=cache))
        blocks, figures_n = rep.blocks, 0
        size = sizes(src, work / "site", cache)
        site_hits = []
        for i in range(args.repeats):
            edit_prose(src / args.post, i)
            t, rep = timed(lambda: build(src, work / "site", site=True, cache=cache))
            assert rep.cache_hits == rep.blocks, rep
            site_hits.append(t)
        site_hit = statistics.median(site_hits)
        with_figs, rep = timed(lambda: build(src, work / "site-figs", site=True, figures="svg,png", cache=cache))
        figures_n = len(rep.figures)

    res: dict[str, Any] = {"sizes": size, "site": {"blocks": blocks, "first": site_first, "hit": site_hit},
                           "post": {"name": args.post, **one},
                           "figures": {"files": figures_n, "seconds": with_figs - site_hit, "with_figures": with_figs}}
    report(res)
    if args.json is not None:
        args.json.parent.mkdir(parents=True, exist_ok=True)
        args.json.write_text(json.dumps(res, indent=2) + "\n")
    return 0


def report(res: dict[str, Any]) -> None:
    s, site, post, figs = res["sizes"], res["site"], res["post"], res["figures"]
    print("| what | bytes |\n| --- | ---: |")
    print(f"| **site** (10 pages + index + assets/) | **{s['site']:,}** |")
    print(f"| of which assets/ (plotly.js + circuitsvis, once) | {s['assets']:,} |")
    print(f"| posts' own data (inline pages less their bundles) | {s['own_data']:,} |")
    print(f"| bound: bundles once + 1.1 x own data | {s['bound']:,.0f} (site / bound = {s['site_vs_bound']:.3f}) |")
    print(f"| ten single-file inline pages | {s['inline_pages']:,} ({s['inline_vs_site']:.1f}x the site) |")
    print()
    print("| render | first (empty cache) s | after a prose edit (cache hit) s | ratio |\n| --- | ---: | ---: | ---: |")
    rows = [(f"{post['name']}, in process ({post['blocks']} blocks)", post["first"], post["hit"]),
            (f"{post['name']}, `mechwork post` in a new process", post["cli_first"], post["cli_hit"]),
            (f"the site, in process ({site['blocks']} blocks)", site["first"], site["hit"])]
    for what, first, hit in rows:
        print(f"| {what} | {first:.2f} | {hit:.2f} | {first / hit:.1f}x |")
    print()
    print(f"figure export: {figs['files']} files (SVG + PNG) in {figs['seconds']:.2f} s "
          f"(site rebuilt with figures {figs['with_figures']:.2f} s, without {site['hit']:.2f} s)")


if __name__ == "__main__":
    sys.exit(main())
