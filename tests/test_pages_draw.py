"""Every standard page in Chromium from file:// with every other request blocked: each figure and view draws,
and each inline page is at most 2,500,000 bytes (2.5 MB, decimal).

The standard pages are those ``mechwork dashboard`` writes for modadd-113 and induction-2l (which holds the
circuit and feature sections), the generic page of each (a kit without its own page) and the prompt page;
the study pages are in tests/test_pages_studies*.py and tests/test_pages_progress.py. Each page is also read
back: its figures' numbers (packed as typed arrays) decode to exactly the page's figure data, and every trace
type is one the shipped plotly bundle holds.
"""

from __future__ import annotations

import importlib.util
import json
import re
from pathlib import Path
from typing import Any

import pytest
from chromium_check import check_pages, require_chromium

from mechwork.dashboard.assets import bundle_manifest
from mechwork.dashboard.typedarrays import unpack

ROOT = Path(__file__).resolve().parents[1]
LIMIT = 2_500_000  # bytes (2.5 MB decimal; stricter than 2.5 MiB = 2,621,440)
_FIG = re.compile(r'<script type="application/json" id="(mw-\d+)-fig-data">(.*?)</script>', re.S)


def bench():
    """benchmarks/bench_pagesize.py, which builds the pages (one list of pages for the benchmark and the test)."""
    spec = importlib.util.spec_from_file_location("bench_pagesize", ROOT / "benchmarks" / "bench_pagesize.py")
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    return module


def unpacked(obj: Any) -> Any:
    """``obj`` with every typed array turned back into its list."""
    if isinstance(obj, dict):
        if "bdata" in obj and "dtype" in obj:
            return unpack(obj)
        return {k: unpacked(v) for k, v in obj.items()}
    if isinstance(obj, list):
        return [unpacked(v) for v in obj]
    return obj


def check_page_file(path: Path, page: Any, report: Any) -> None:
    """What every page must show: all drawn offline, no errors, within the size limit, exact numbers."""
    n_figs = sum(b.kind == "plotly" for b in page.blocks)
    n_views = sum(b.kind == "view" for b in page.blocks)
    assert n_figs + n_views > 0, path
    assert (report.plotly_mounts, report.plotly_drawn) == (n_figs, n_figs), (path, report)
    assert (report.cv_mounts, report.cv_drawn) == (n_views, n_views), (path, report)
    assert report.console_errors == [] and report.page_errors == [] and report.requests == [], (path, report)
    size = path.stat().st_size
    assert size <= LIMIT, f"{path.name}: {size:,} bytes > {LIMIT:,}"
    html = path.read_text(encoding="utf-8")
    figs = dict(_FIG.findall(html))
    traces = set(bundle_manifest()["traces"])
    for i, block in enumerate(page.blocks, start=1):
        if block.kind != "plotly":
            continue
        shown = json.loads(figs[f"mw-{i}"])
        # as plain lists (plotly.py packs numpy arrays itself): every number exactly as in the figure
        held = unpacked(json.loads(json.dumps(block.body.get("data", []))))
        assert unpacked(shown["data"]) == held, (path.name, f"mw-{i}")
        used = {t.get("type", "scatter") for t in held}
        assert used <= traces, (path.name, f"mw-{i}", used - traces)


@pytest.fixture(scope="module")
def standard(tmp_path_factory):
    require_chromium()
    out = tmp_path_factory.mktemp("pages")
    pages = bench().standard_pages()
    paths = {name: pg.save(out / f"{re.sub(r'[^a-z0-9]+', '-', name.lower()).strip('-')}.html")
             for name, pg in pages.items()}
    reports = dict(zip(paths, check_pages(list(paths.values())), strict=True))
    return pages, paths, reports


def test_every_standard_page_draws_offline_within_the_size_limit(standard):
    pages, paths, reports = standard
    assert set(pages) == {"modadd-113", "induction-2l", "modadd-113 (generic page)", "induction-2l (generic page)",
                          "induction-2l (prompt page)"}
    for name in pages:
        check_page_file(paths[name], pages[name], reports[name])


def test_the_standard_pages_use_the_compressed_bundles_and_typed_arrays(standard):
    """The figures are not small by accident: the big pages hold packed heatmaps and both bundles compressed."""
    _, paths, _ = standard
    html = paths["modadd-113"].read_text(encoding="utf-8")
    assert html.count('data-mw-bundle="plotly"') == 1 and '"dtype":"f4"' in html
    assert 'data-mw-bundle="circuitsvis"' in paths["induction-2l"].read_text(encoding="utf-8")


def check_studies(out: Path, names: list[str]) -> None:
    """Run each study script's ``--smoke`` plan into ``out``, then check its page as every page is checked."""
    require_chromium()
    pages = bench().study_pages(out, names)
    assert list(pages) == [f"study: {n}" for n in names]
    reports = check_pages([path for path, _ in pages.values()])
    for (path, page), report in zip(pages.values(), reports, strict=True):
        check_page_file(path, page, report)
