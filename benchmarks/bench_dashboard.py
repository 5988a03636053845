"""Dashboard size and build time.

Size: a page of 10 circuitsvis views and 10 plotly figures in inline mode,
against (the circuitsvis bundle + plotly.js + the data), and against the same
10 views saved through circuitsvis's own local rendering (which inlines its
bundle into every view) plus the 10 figures through plotly's ``to_html`` with
plotly.js included once. Build time: the grokking dashboard of the embedded
``modadd-113`` model, cold (a fresh ``mechwork dashboard`` process, imports
included) and warm (in process; median of repeats), and the warm time split
into its two stages: the kit's analysis (every result, computed once) and the
page rendered from that bundle (no model involved).

    python benchmarks/bench_dashboard.py [--repeats 5]
"""

from __future__ import annotations

import argparse
import re
import statistics
import subprocess
import sys
import tempfile
import time
from pathlib import Path

import torch


def size_bench() -> dict[str, float]:
    import circuitsvis.attention as cva
    import plotly.graph_objects as go

    from mechwork.dashboard import Page
    from mechwork.dashboard.assets import CIRCUITSVIS, PLOTLY

    g = torch.Generator().manual_seed(0)
    page = Page("size benchmark")
    cv_local = 0
    plotly_html = 0
    for i in range(10):
        att = torch.rand(4, 20, 20, generator=g).softmax(-1)
        toks = [f"t{j}" for j in range(20)]
        page.attention(att, toks, title=f"view {i}")
        cv_local += len(cva.attention_heads(att, toks).local_src.encode())
        fig = go.Figure(go.Scatter(x=list(range(200)), y=torch.randn(200, generator=g).tolist()))
        page.plotly(fig, title=f"figure {i}")
        plotly_html += len(fig.to_html(full_html=False, include_plotlyjs=(i == 0)).encode())
    html = page.render("inline").encode()
    data = sum(len(m.encode()) for m in re.findall(
        r'<script type="application/json" id="[^"]+">(.*?)</script>', html.decode(), re.S))
    cv_bundle = len(CIRCUITSVIS.source().encode())
    plotly_js = len(PLOTLY.source().encode())
    cdn = len(page.render("cdn").encode())
    return {
        "page": len(html), "cv_bundle": cv_bundle, "plotly_js": plotly_js, "data": data,
        "ratio_vs_parts": len(html) / (cv_bundle + plotly_js + data),
        "cv_local_10_views": cv_local, "peer_total": cv_local + plotly_html,
        "ratio_vs_cv_local": len(html) / cv_local, "ratio_vs_peer_total": len(html) / (cv_local + plotly_html),
        "cdn_page": cdn,
    }


def time_bench(repeats: int) -> dict[str, float]:
    from mechwork.dashboard import dashboard

    with tempfile.TemporaryDirectory() as d:
        out = Path(d) / "modadd-113.html"
        colds = []
        for _ in range(3):
            t0 = time.perf_counter()
            subprocess.run([sys.executable, "-m", "mechwork.cli", "dashboard", "modadd-113", "--out", str(out)],
                           check=True, capture_output=True)
            colds.append(time.perf_counter() - t0)
        cold = statistics.median(colds)
        warm = []
        for _ in range(repeats):
            t0 = time.perf_counter()
            dashboard("modadd-113", out)
            warm.append(time.perf_counter() - t0)
        size = out.stat().st_size
    return {"cold_s": cold, "warm_median_s": statistics.median(warm), "warm_min_s": min(warm), "size": size,
            **stage_bench(repeats)}


def stage_bench(repeats: int) -> dict[str, float]:
    """Median seconds of the analysis (open + analyse) and of rendering the page from the bundle."""
    from mechwork.dashboard import page_for
    from mechwork.dashboard.standard import analyse
    from mechwork.source import open_source

    analyse_s, render_s = [], []
    for _ in range(repeats):
        t0 = time.perf_counter()
        bundle = analyse(open_source("modadd-113"))
        t1 = time.perf_counter()
        page_for("modadd")(bundle).render("inline")
        analyse_s.append(t1 - t0)
        render_s.append(time.perf_counter() - t1)
    return {"analyse_median_s": statistics.median(analyse_s), "render_median_s": statistics.median(render_s)}


def main(argv: list[str] | None = None) -> int:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--repeats", type=int, default=5)
    args = ap.parse_args(argv)
    s = size_bench()
    print("size, 10 circuitsvis views + 10 plotly figures, inline:")
    print(f"  page {s['page']:,} B = {s['ratio_vs_parts']:.3f} x (circuitsvis bundle {s['cv_bundle']:,}"
          f" + plotly.js {s['plotly_js']:,} + data {s['data']:,})   [target <= 1.2]")
    print(f"  circuitsvis local rendering of the 10 views: {s['cv_local_10_views']:,} B;"
          f" mechwork's page is {s['ratio_vs_cv_local']:.3f} x that ({1 / s['ratio_vs_cv_local']:.2f}x smaller)")
    print(f"  with the 10 figures through plotly.to_html (plotly.js once): {s['peer_total']:,} B;"
          f" ratio {s['ratio_vs_peer_total']:.3f}")
    print(f"  the same page in CDN mode: {s['cdn_page']:,} B")
    t = time_bench(args.repeats)
    print("time, grokking dashboard of the embedded modadd-113 model:")
    print(f"  cold (new process, imports included), median of 3: {t['cold_s']:.2f} s   [target <= 10 s]")
    print(f"  warm: median {t['warm_median_s']:.2f} s, min {t['warm_min_s']:.2f} s over {args.repeats};"
          f" file {t['size']:,} B")
    print(f"  of which: analysis (open + analyse, every result once) median {t['analyse_median_s']:.2f} s;"
          f" page from the bundle (render, no model) median {t['render_median_s']:.2f} s")
    return 0


if __name__ == "__main__":
    sys.exit(main())
