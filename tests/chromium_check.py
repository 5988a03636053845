"""Open a dashboard in Debian's headless Chromium and report what it drew.

Playwright-python drives ``/usr/bin/chromium`` (``executable_path``; no browser
download). Every request that is not ``file:`` or ``data:`` is blocked and
recorded. After the page has loaded, the check waits until every plotly mount
has its SVG and every circuitsvis mount has children (or the timeout passes)
and returns counts, console errors and blocked requests; it can save a
full-page screenshot.

    python tests/chromium_check.py dashboards/modadd-113.html --screenshot dashboards/screenshots/modadd-113.png
"""

from __future__ import annotations

import argparse
import contextlib
import os
import shutil
import sys
import tempfile
from dataclasses import dataclass, field
from pathlib import Path

CHROMIUM = os.environ.get("MECHWORK_CHROMIUM", "/usr/bin/chromium")
FLAGS = [
    "--headless", "--no-sandbox", "--disable-gpu", "--no-first-run", "--disable-background-networking",
    "--disable-component-update", "--disable-sync", "--disable-quic",
]


def chromium_path() -> str | None:
    """The Chromium binary, or None when it is not installed."""
    return shutil.which(CHROMIUM) or (CHROMIUM if os.access(CHROMIUM, os.X_OK) else None)


def require_chromium() -> bool:
    """True when Chromium is installed; without it, fail under CI and skip elsewhere."""
    if chromium_path() is not None:
        return True
    import pytest

    msg = "Debian's chromium is not installed (apt-get install chromium); .ci/run installs it"
    if os.environ.get("CI"):
        pytest.fail(msg)
    pytest.skip(msg)


@dataclass
class PageReport:
    plotly_mounts: int = 0
    plotly_drawn: int = 0  # mounts that contain svg.main-svg
    cv_mounts: int = 0
    cv_drawn: int = 0  # circuitsvis mounts with rendered children
    console_errors: list[str] = field(default_factory=list)
    page_errors: list[str] = field(default_factory=list)
    requests: list[str] = field(default_factory=list)  # every non-file, non-data request (all blocked)
    title: str = ""
    headings: list[str] = field(default_factory=list)
    math: int = 0  # MathML <math> elements
    math_drawn: int = 0  # ... laid out with a nonzero box (Chromium renders MathML Core natively)
    math_errors: int = 0  # <merror> elements and math left unrendered (.mw-math-error)


_STATE_JS = """() => {
  const figs = [...document.querySelectorAll('.mw-fig')];
  const cvs = [...document.querySelectorAll('.mw-cv')];
  return {
    plotly_mounts: figs.length,
    plotly_drawn: figs.filter(f => f.querySelector('svg.main-svg')).length,
    cv_mounts: cvs.length,
    cv_drawn: cvs.filter(c => c.children.length > 0 && c.querySelector('*:not(script)')).length,
    title: document.title,
    headings: [...document.querySelectorAll('h1, h2')].map(h => h.textContent),
    math: document.querySelectorAll('math').length,
    math_drawn: [...document.querySelectorAll('math')].filter(m => {
      const r = m.getBoundingClientRect(); return r.width > 0 && r.height > 0; }).length,
    math_errors: document.querySelectorAll('merror, .mw-math-error').length,
  };
}"""


LOAD_BOUND_S = 600.0  # seconds a loaded machine may take to open a page (a bound, not a timing)


def check_page(path: str | os.PathLike[str], screenshot: str | os.PathLike[str] | None = None,
               timeout_s: float = 600.0) -> PageReport:
    return check_pages([path], [screenshot], timeout_s)[0]


def check_pages(paths: list[str | os.PathLike[str]], screenshots: list | None = None,
                timeout_s: float = 600.0) -> list[PageReport]:
    """:func:`check_page` of every path, in one browser (a fresh tab and fresh counters for each page)."""
    from playwright.sync_api import sync_playwright

    exe = chromium_path()
    if exe is None:
        raise FileNotFoundError(f"no Chromium at {CHROMIUM}: apt-get install chromium")
    shots = screenshots or [None] * len(paths)
    with tempfile.TemporaryDirectory(prefix="mw-chromium-") as profile, sync_playwright() as pw:
        ctx = pw.chromium.launch_persistent_context(
            profile, executable_path=exe, headless=True, args=FLAGS, viewport={"width": 1280, "height": 900},
        )
        try:
            return [_check(ctx, path, shot, timeout_s) for path, shot in zip(paths, shots, strict=True)]
        finally:
            ctx.close()


def _check(ctx, path, screenshot, timeout_s: float) -> PageReport:
    from playwright.sync_api import TimeoutError as PlaywrightTimeout

    report = PageReport()
    url = Path(path).resolve().as_uri()

    def route(r):
        if r.request.url.startswith(("file:", "data:")):
            r.continue_()
        else:
            report.requests.append(r.request.url)
            r.abort()

    ctx.unroute("**/*")
    ctx.route("**/*", route)
    page = ctx.new_page()
    try:
        page.on("console", lambda m: report.console_errors.append(m.text) if m.type == "error" else None)
        page.on("pageerror", lambda e: report.page_errors.append(str(e)))
        page.on("request", lambda req: report.requests.append(req.url)
                if not req.url.startswith(("file:", "data:", "blob:")) and req.url not in report.requests
                else None)
        # loading a local file is never the thing under test: a generous bound, whatever timeout_s
        page.goto(url, wait_until="load", timeout=max(timeout_s, LOAD_BOUND_S) * 1000)
        # wait until everything is drawn, or the timeout: then report what was drawn; the caller asserts
        with contextlib.suppress(PlaywrightTimeout):
            page.wait_for_function(
                f"() => {{ const s = ({_STATE_JS})();"
                " return s.plotly_drawn === s.plotly_mounts && s.cv_drawn === s.cv_mounts; }",
                timeout=timeout_s * 1000,
            )
        page.wait_for_timeout(300)  # let late console errors arrive
        for k, v in page.evaluate(_STATE_JS).items():
            setattr(report, k, v)
        if screenshot is not None:
            # charts inside circuitsvis draw lazily when on screen: show the whole page, then shoot
            height = page.evaluate("() => document.documentElement.scrollHeight")
            page.set_viewport_size({"width": 1280, "height": min(int(height), 16000)})
            page.wait_for_timeout(1500)
            Path(screenshot).parent.mkdir(parents=True, exist_ok=True)
            page.screenshot(path=str(screenshot), full_page=True)
    finally:
        page.close()
    return report


def main(argv: list[str] | None = None) -> int:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("html", type=Path)
    ap.add_argument("--screenshot", type=Path, default=None)
    args = ap.parse_args(argv)
    r = check_page(args.html, args.screenshot)
    print(r)
    ok = (r.plotly_drawn == r.plotly_mounts and r.cv_drawn == r.cv_mounts and not r.console_errors
          and not r.page_errors and not r.requests)
    return 0 if ok else 1


if __name__ == "__main__":
    sys.exit(main())
