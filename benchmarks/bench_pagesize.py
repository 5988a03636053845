"""Bytes of every standard page and every study page, before and after the page-size work, with their parts.

"after" is the page as mechwork writes it now (``assets="inline"``): the partial plotly.js and circuitsvis
each gzip + base64, long float lists as typed arrays. "before" is the same page rendered the old way, in the
same run: plotly's full ``plotly.min.js`` (from the plotly package) and circuitsvis as plain scripts, and
every number as JSON decimals. The parts of "after": each bundle as embedded, the figures' and views' data
(every ``application/json`` element), and the rest (text, tables, style, the loader and drawing scripts).

Standard pages: the dashboards ``mechwork dashboard`` writes for modadd-113 and induction-2l (the latter
holds the circuit and feature sections), the generic page of each (a kit without its own page), and the
prompt page of induction-2l. Study pages: each study script in ``experiments/`` on its ``--smoke`` plan (or
``--quick``).

    OMP_WAIT_POLICY=PASSIVE .venv/bin/python benchmarks/bench_pagesize.py [--studies smoke|quick|none]
        [--out benchmarks/out/pages] [--device cpu]
"""

from __future__ import annotations

import argparse
import importlib.util
import re
import sys
from contextlib import contextmanager
from pathlib import Path
from typing import Any

ROOT = Path(__file__).resolve().parents[1]
LIMIT = 2_500_000  # bytes: the page-size goal (2.5 MB, decimal)
STUDIES = ["grokking_wd_data", "grokfast", "lottery_tickets", "progress_measures", "clock_pizza", "infinite_width",
           "scaling_laws", "optimisation", "superposition"]
_BUNDLE = re.compile(r'<script type="application/gzip;base64" data-mw-bundle="([\w-]+)">[^<]*</script>\n')
_JSON = re.compile(r'<script type="application/json" id="[^"]+">.*?</script>', re.S)


def standard_pages(device: str = "cpu") -> dict[str, Any]:
    """name -> Page, for every standard page (each model analysed once)."""
    from mechwork.dashboard import page_for, prompt_dashboard
    from mechwork.dashboard.sections import generic_page
    from mechwork.dashboard.standard import analyse
    from mechwork.source import open_source

    pages = {}
    for preset in ("modadd-113", "induction-2l"):
        bundle = analyse(open_source(preset, device=device))
        pages[preset] = page_for(bundle.info.task.kind)(bundle)
        pages[f"{preset} (generic page)"] = generic_page(bundle)
    pages["induction-2l (prompt page)"] = prompt_dashboard("induction-2l", device=device)
    return pages


def study_pages(out: Path, names: list[str] = STUDIES, plan: str = "smoke") -> dict[str, tuple[Path, Any]]:
    """name -> (the page file each study script writes on its ``plan``, the Page it saved); results go under
    ``out/<name>``."""
    from mechwork.dashboard.page import Page

    out.mkdir(parents=True, exist_ok=True)
    saved: list[Any] = []
    original = Page.save

    def save(self: Any, *a: Any, **kw: Any) -> Any:
        saved.append(self)
        return original(self, *a, **kw)

    pages = {}
    Page.save = save  # type: ignore[method-assign]
    try:
        for name in names:
            spec = importlib.util.spec_from_file_location(f"study_{name}", ROOT / "experiments" / f"{name}.py")
            assert spec is not None and spec.loader is not None
            module = importlib.util.module_from_spec(spec)
            spec.loader.exec_module(module)
            page = out / f"{name}.html"
            saved.clear()
            rc = module.main([f"--{plan}", "--out", str(out / name), "--dashboard", str(page), "--workers", "1"])
            if rc != 0 or len(saved) != 1:
                raise SystemExit(f"study {name} failed ({rc}, {len(saved)} pages saved)")
            pages[f"study: {name}"] = (page, saved[0])
    finally:
        Page.save = original  # type: ignore[method-assign]
    return pages


def parts(html: str) -> dict[str, int]:
    """Bytes of an inline page by part: each bundle as embedded, the data, and the rest."""
    out = {"plotly": 0, "circuitsvis": 0}
    for m in _BUNDLE.finditer(html):
        out[m.group(1)] = len(m.group(0).encode())
    out["data"] = sum(len(m.group(0).encode()) for m in _JSON.finditer(html))
    out["rest"] = len(html.encode()) - sum(out.values())
    return out


@contextmanager
def old_encoding():
    """Render as before: plotly's full bundle and circuitsvis as plain scripts, numbers as JSON decimals."""
    import mechwork.dashboard.page as page_module
    from mechwork.dashboard.assets import CIRCUITSVIS, Asset

    full = Asset("plotly", "package_data/plotly.min.js", "Plotly", "")
    plain = {"plotly": full, "circuitsvis": CIRCUITSVIS}
    saved = page_module.bundle_scripts, page_module.pack_figure
    page_module.bundle_scripts = lambda figs, views, mode, base="": "".join(
        f"<script>\n{plain[n].source()}\n</script>\n" for n in ["plotly"] * bool(figs) + ["circuitsvis"] * views)
    page_module.pack_figure = lambda spec: spec
    try:
        yield
    finally:
        page_module.bundle_scripts, page_module.pack_figure = saved


def measure(name: str, html_after: str, html_before: str) -> dict[str, Any]:
    return {"page": name, "before": len(html_before.encode()), "after": len(html_after.encode()),
            **parts(html_after)}


def main(argv: list[str] | None = None) -> int:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--studies", choices=["smoke", "quick", "none"], default="smoke")
    ap.add_argument("--out", type=Path, default=ROOT / "benchmarks" / "out" / "pages")
    ap.add_argument("--device", default="cpu")
    args = ap.parse_args(argv)
    import os

    rows = []
    for name, page in standard_pages(args.device).items():
        with old_encoding():
            before = page.render("inline")
        rows.append(measure(name, page.render("inline"), before))
    if args.studies != "none":
        for name, (path, page) in study_pages(args.out / "studies", plan=args.studies).items():
            with old_encoding():
                before = page.render("inline")
            rows.append(measure(name, path.read_text(encoding="utf-8"), before))
    print(f"{'page':42} {'before':>11} {'after':>11} {'plotly':>9} {'circuitsvis':>11} {'data':>9} {'rest':>7}")
    for r in rows:
        print(f"{r['page']:42} {r['before']:>11,} {r['after']:>11,} {r['plotly']:>9,} {r['circuitsvis']:>11,} "
              f"{r['data']:>9,} {r['rest']:>7,}")
    worst = max(rows, key=lambda r: r["after"])
    print(f"largest inline page: {worst['page']} {worst['after']:,} bytes "
          f"({'within' if worst['after'] <= LIMIT else 'OVER'} {LIMIT:,}); load {os.getloadavg()[0]:.1f}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
