"""Both standard dashboards in Debian's headless Chromium, opened from file:// with the network blocked.

In CI (``CI`` set) a missing browser fails the test; elsewhere it skips.
Screenshots land in ``tests/artifacts/`` (or ``$MECHWORK_ARTIFACTS``).
"""

from __future__ import annotations

import os
from pathlib import Path

import pytest
from chromium_check import check_page, require_chromium

from mechwork.dashboard import Page, dashboard

ARTIFACTS = Path(os.environ.get("MECHWORK_ARTIFACTS", Path(__file__).parent / "artifacts"))


@pytest.fixture(scope="module", autouse=True)
def need_chromium():
    require_chromium()


def assert_fully_drawn(r):
    assert r.plotly_mounts > 0 and r.plotly_drawn == r.plotly_mounts, r
    assert r.cv_mounts > 0 and r.cv_drawn == r.cv_mounts, r
    assert r.console_errors == [] and r.page_errors == [], r
    assert r.requests == [], r


@pytest.mark.parametrize("source", ["modadd-113", "induction-2l"])
def test_standard_dashboard_draws_everything_offline(tmp_path, source):
    out = tmp_path / f"{source}.html"
    page = dashboard(source, out)
    shot = ARTIFACTS / f"{source}.png"
    shot.unlink(missing_ok=True)
    r = check_page(out, screenshot=shot)
    assert_fully_drawn(r)
    assert r.plotly_mounts == sum(b.kind == "plotly" for b in page.blocks)
    assert r.cv_mounts == sum(b.kind == "view" for b in page.blocks)
    assert r.title == page.title and "Summary" in r.headings
    assert shot.is_file() and shot.stat().st_size > 50_000


def test_the_check_sees_network_requests_and_script_injection(tmp_path):
    """The instrument can fail: a CDN page makes (blocked) requests, and an injected script would run."""
    import torch

    evil = "<img src=x onerror=\"console.error('injected')\"><script>console.error('injected')</script>"
    page = Page(evil).markdown(evil).attention(torch.eye(2)[None], [evil, "b"]).plotly(
        {"data": [{"type": "bar", "x": [evil], "y": [1]}], "layout": {"title": {"text": evil}}})
    safe = tmp_path / "safe.html"
    page.save(safe)
    assert_fully_drawn(check_page(safe))  # escaped: nothing injected runs
    cdn = tmp_path / "cdn.html"
    page.save(cdn, assets="cdn")
    r = check_page(cdn, timeout_s=5)
    assert any(u.startswith("https://cdn.plot.ly/") for u in r.requests), r
    assert any("circuitsvis" in u for u in r.requests), r
    assert r.plotly_drawn == 0
    raw = tmp_path / "raw.html"
    raw.write_text(f"<html><body>{evil}</body></html>")
    assert "injected" in " ".join(check_page(raw, timeout_s=5).console_errors)
