"""Script injection: every kind of block a Page holds, fed hostile strings, in headless Chromium.

A page carrying each payload in every place a caller can put a string (titles,
captions, markdown, text, notes, tables, key-value lists, Result summaries,
plotly titles / axis titles / tick labels / hover text / legend names /
annotations / colour-bar titles, and the tokens, labels and head names of every
circuitsvis component) is opened from ``file://`` with the network blocked.
Nothing may run: no dialog opens, no payload sets ``window.__pwned``, no element
carries an event-handler attribute, no link or frame has a ``javascript:`` URL,
and the page holds exactly the ``<script>`` elements mechwork wrote. The harness
is shown able to fail: with the view escaping switched off, the same payloads run.

In CI (``CI`` set) a missing browser fails the test; elsewhere it skips.
"""

from __future__ import annotations

import html
import re
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import pandas as pd
import plotly.graph_objects as go
import pytest
import torch
from chromium_check import FLAGS, chromium_path, require_chromium

from mechwork.dashboard import Page, attention_heads, attention_pattern, colored_tokens, views
from mechwork.dashboard.page import Block
from mechwork.dashboard.views import COMPONENTS, HTML_PROPS, CircuitsView
from mechwork.results import Result

WAIT_MS = 600_000  # a bound on waiting for a page to load and draw on a loaded machine, not a timing
PWN = "window.__pwned=(window.__pwned||0)+1;alert(1)"
PAYLOADS = [
    f"<script>{PWN}</script>",
    f'<img src=x onerror="{PWN}">',
    f"<img/src/onerror={PWN}>",
    f'<svg onload="{PWN}">',
    f"<svg><script>{PWN}</script></svg>",
    f"<details/open/ontoggle={PWN}>",
    f'"><img src=x onerror="{PWN}">',
    f"'><svg/onload='{PWN}'>",
    f"</script><script>{PWN}</script>",
    f"<!--<script>{PWN}</script>-->",
    '<iframe src="javascript:alert(1)"></iframe>',
    '<a href="javascript:alert(1)">click</a>',
    f"<math><mtext><table><mglyph><style><img src=x onerror={PWN}>",
    f'<input autofocus onfocus="{PWN}">',
    f'<video><source onerror="{PWN}"></video>',
    f'<object data="javascript:{PWN}"></object>',
    f"<body onload={PWN}>",
    "javascript:alert(1)",
    "\u2028\u2029</SCRIPT>",
    "&lt;img src=x onerror=alert(1)&gt;",  # already escaped: must show as typed, never be decoded
]
MD_LINKS = [
    "[a](javascript:alert(1))", "[b](JaVaScRiPt:alert(1))", "<javascript:alert(1)>",
    "![c](javascript:alert(1))", "[d](java&#x09;script:alert(1))", "[e](data:text/html,<script>alert(1)</script>)",
    "[f][r]\n\n[r]: javascript:alert(1)", "[g](vbscript:msgbox(1))",
]


def count_script_elements(html: str) -> int:
    """The ``<script>`` elements an HTML parser finds (script content is raw text, not parsed for tags)."""
    from html.parser import HTMLParser

    n = 0

    class Counter(HTMLParser):
        def handle_starttag(self, tag, attrs):
            nonlocal n
            n += tag == "script"

    Counter().feed(html)
    return n


def norm(s: str) -> str:
    """Text as the browser shows it: nbsp as space, whitespace runs as one space."""
    return re.sub(r"\s+", " ", s.replace("\xa0", " ")).strip()


@dataclass(frozen=True)
class EvilResult(Result):
    text: str = ""

    def summary(self) -> str:
        return self.text

    def to_frame(self) -> pd.DataFrame:
        return pd.DataFrame({self.text: [self.text]})

    def figure(self) -> Any:
        return evil_figure(self.text)


def evil_figure(s: str) -> go.Figure:
    """A payload in every string slot of a plotly figure that mechwork's figures use."""
    fig = go.Figure()
    fig.add_bar(x=[s, "ok"], y=[1, 2], name=s, hovertext=[s, s], text=[s, s],
                hovertemplate=s + "<extra>" + s + "</extra>")
    fig.add_heatmap(z=[[1, 2], [3, 4]], x=[s, "b"], y=[s, "d"], colorbar={"title": {"text": s}}, xaxis="x2", yaxis="y2",
                    hovertext=[[s, s], [s, s]])
    fig.add_scatter(x=[1, 2], y=[2, 1], mode="markers+text", text=[s, s], name=s, customdata=[s, s])
    return fig.update_layout(
        title={"text": s}, xaxis={"title": {"text": s}, "domain": [0, 0.45]}, yaxis={"title": {"text": s}},
        xaxis2={"title": {"text": s}, "domain": [0.55, 1]}, yaxis2={"title": {"text": s}, "anchor": "x2"},
        annotations=[{"text": s, "x": 1, "y": 1, "showarrow": False}], legend={"title": {"text": s}},
    )


def every_component(tokens: list[str]) -> list[CircuitsView]:
    """One view of each circuitsvis component mechwork allows, with ``tokens`` as its strings."""
    n = len(tokens)
    att = torch.softmax(torch.randn(2, n, n, generator=torch.Generator().manual_seed(0)), -1).tril()
    vals = [float(i) - n / 2 for i in range(n)]
    acts = [[[v]] for v in vals]  # [pos, layers=1, neurons=1]
    built = [
        attention_heads(att, tokens, head_names=tokens[:2]),
        attention_pattern(att[0], tokens),
        colored_tokens(tokens, vals),
        colored_tokens(tokens, [[v, -v] for v in vals], labels=tokens[:2]),
        CircuitsView("AttentionPatterns", {"tokens": tokens, "attention": att.tolist(), "headLabels": tokens[:2]}),
        CircuitsView("TextNeuronActivations", {"tokens": [tokens], "activations": [acts],
                                               "firstDimensionLabels": tokens[:1],
                                               "secondDimensionLabels": tokens[:1]}),
        CircuitsView("TokenLogProbs", {"prompt": tokens, "topKLogProbs": [[-0.1, -2.0]] * (n - 1),
                                       "topKTokens": [[tokens[i + 1], tokens[0]] for i in range(n - 1)],
                                       "correctTokenRank": [0] * (n - 1), "correctTokenLogProb": [-0.1] * (n - 1)}),
        CircuitsView("TopkTokens", {"tokens": [tokens], "topkVals": [[[[v] for v in sorted(vals)[::-1][:2]]]],
                                    "topkIdxs": [[[[n - 1], [n - 2]]]],
                                    "bottomkVals": [[[[v] for v in sorted(vals)[:2]]]],
                                    "bottomkIdxs": [[[[0], [1]]]], "sampleLabels": tokens[:1],
                                    "firstDimensionLabels": tokens[:1]}),
        CircuitsView("TopkSamples", {"tokens": [[[tokens]]], "activations": [[[vals]]],
                                     "zerothDimensionLabels": tokens[:1], "firstDimensionLabels": tokens[:1]}),
    ]
    assert sorted({v.component for v in built}) == sorted(COMPONENTS)
    return built


def hostile_page(payloads: list[str]) -> Page:
    page = Page(payloads[0], subtitle=payloads[1 % len(payloads)], stamp=payloads[2 % len(payloads)])
    joined = " ".join(payloads)
    page.markdown(f"**bold** {joined}\n\n" + "\n\n".join(MD_LINKS) + "\n\n| h |\n|---|\n| " + payloads[0] + " |",
                  title=payloads[0])
    page.text(joined + "\n\n" + joined, title=payloads[1 % len(payloads)])
    page.note(joined, title=payloads[2 % len(payloads)])
    page.table(pd.DataFrame({p: [p, 1.5] for p in payloads}), title=joined, caption=joined)
    page.kv({p: p for p in payloads}, title=joined)
    page.result(EvilResult(joined), title=joined, table=True)
    for p in payloads:
        page.plotly(evil_figure(p), title=p, caption=p)
    for i in range(0, len(payloads), 4):
        toks = payloads[i:i + 4]
        toks += ["x", "y"][: max(0, 2 - len(toks))]
        for v in every_component(toks):
            page.view(v, title=v.component, caption=" ".join(toks))
    page.attention(torch.eye(2)[None], payloads[:2], head_names=payloads[:1], title=joined, caption=joined)
    page.tokens(payloads[:3], [0.1, 0.5, -0.2], title=joined, caption=joined)
    return page


# -- the browser ------------------------------------------------------------------
@pytest.fixture(scope="module")
def browser():
    require_chromium()
    from playwright.sync_api import sync_playwright

    with sync_playwright() as pw:
        b = pw.chromium.launch(executable_path=chromium_path(), headless=True, args=FLAGS)
        try:
            yield b
        finally:
            b.close()


_PROBE_JS = r"""() => {
  const bad = [];
  for (const el of document.querySelectorAll('*')) {
    for (const a of el.attributes) {
      if (/^on/i.test(a.name)) bad.push(el.tagName + '[' + a.name + ']');
      if (/(^|:)(href|src|data|action|formaction)$/i.test(a.name)) {
        let proto = '';
        try { proto = new URL(a.value.trim(), document.baseURI).protocol; } catch (e) { proto = 'bad:'; }
        const image = /^(image|img)$/i.test(el.tagName) && /^data:image\/png;base64,/.test(a.value);  // heatmaps
        if (!['http:', 'https:', 'mailto:', 'file:', 'blob:'].includes(proto) && !image)
          bad.push(el.tagName + '[' + a.name + '=' + a.value.slice(0, 40) + ']');
      }
    }
  }
  const foreign = 'iframe, frame, object, embed, base, meta[http-equiv], details, input[autofocus], video, math, '
    + 'style:not(head > style)';
  for (const el of document.querySelectorAll(foreign))
    bad.push('element ' + el.tagName);
  return {bad: bad, pwned: window.__pwned || 0, scripts: document.scripts.length,
          figs: [...document.querySelectorAll('.mw-fig')].filter(f => f.querySelector('svg.main-svg')).length,
          cvs: [...document.querySelectorAll('.mw-cv')].filter(c => c.querySelector('*:not(script)')).length};
}"""


@dataclass
class Outcome:
    dialogs: list[str]
    pwned: int
    bad: list[str]
    scripts: int
    figs: int
    cvs: int
    errors: list[str]
    texts: dict[str, str]
    hovered: int = 0  # figure traces whose hover label was shown


def open_page(browser, path: Path, interact: bool = True) -> Outcome:
    """Load ``path``, let everything draw, hover every figure and token, and report what ran."""
    ctx = browser.new_context(viewport={"width": 1280, "height": 900})
    dialogs: list[str] = []
    errors: list[str] = []
    try:
        ctx.route("**/*", lambda r: r.continue_() if r.request.url.startswith(("file:", "data:")) else r.abort())
        page = ctx.new_page()
        page.on("dialog", lambda d: (dialogs.append(d.message), d.dismiss()))
        page.on("pageerror", lambda e: errors.append(str(e)))
        page.goto(path.resolve().as_uri(), wait_until="load", timeout=WAIT_MS)
        page.wait_for_function(
            "() => [...document.querySelectorAll('.mw-fig')].every(f => f.querySelector('svg.main-svg'))"
            " && [...document.querySelectorAll('.mw-cv')].every(c => c.querySelector('*:not(script)'))",
            timeout=WAIT_MS)
        if interact:
            # hover labels and tooltips are built on demand: show each figure's and each token's
            hovered = page.evaluate("""() => { let n = 0; document.querySelectorAll('.mw-fig').forEach(el => {
                (el.data || []).forEach((t, i) => { try { Plotly.Fx.hover(el, [{curveNumber: i, pointNumber: 0}]);
                    n += el.querySelectorAll('.hoverlayer .hovertext').length > 0; } catch (e) {} }); });
                return n; }""")
            for el in page.query_selector_all(".mw-cv .colored-tokens > span, .mw-cv button")[:60]:
                el.scroll_into_view_if_needed()
                el.hover(force=True)
            # close the last tooltip: ColoredTokens' hover tooltip prints the token as text, so it shows the
            # escaped form (circuitsvis hands one string both to innerHTML and to a text node)
            page.mouse.move(0, 0)
        page.wait_for_timeout(500)
        res = page.evaluate(_PROBE_JS)
        texts = page.evaluate("() => Object.fromEntries([...document.querySelectorAll('section')].map("
                              "s => [s.id, s.textContent]))")
        return Outcome(dialogs, res["pwned"], res["bad"], res["scripts"], res["figs"], res["cvs"], errors, texts,
                       hovered if interact else 0)
    finally:
        ctx.close()


# -- the tests ------------------------------------------------------------------------
def test_no_payload_runs_in_any_block_kind(browser, tmp_path):
    page = hostile_page(PAYLOADS)
    kinds = {b.kind for b in page.blocks}
    assert kinds == {"html", "plotly", "view"}
    out = page.save(tmp_path / "hostile.html")
    html = out.read_text()
    o = open_page(browser, out)
    assert o.dialogs == [] and o.pwned == 0, (o.dialogs, o.pwned)
    assert o.bad == [], o.bad[:10]
    # the page's loader runs each compressed bundle (data-mw-bundle) as one script element of its own
    assert o.scripts == count_script_elements(html) + html.count("data-mw-bundle="), \
        "a script element appeared that mechwork did not write"
    n_fig = sum(b.kind == "plotly" for b in page.blocks)
    n_cv = sum(b.kind == "view" for b in page.blocks)
    assert o.figs == n_fig and o.cvs == n_cv, (o.figs, n_fig, o.cvs, n_cv)
    assert o.errors == [], o.errors[:3]
    assert o.hovered >= n_fig  # hover labels (payloads in hover text) were drawn, and nothing ran
    # what a reader sees is the label as typed: escaped once for HTML-rendering views, not at all elsewhere
    for i, b in enumerate(page.blocks, start=1):
        text = norm(o.texts[f"mw-{i}"])
        if b.kind == "view" and b.body.component in ("ColoredTokens", "ColoredTokensMulti", "AttentionPatterns"):
            for tok in b.body.props["tokens"]:
                assert norm(tok) in text, (b.body.component, tok)
        if b.kind == "view" and b.body.component == "AttentionHeads":
            for name in b.body.props["attentionHeadNames"]:
                assert norm(name) in text, name
        if b.kind == "view":
            assert "&lt;" not in text.replace("&lt;img src=x onerror=alert(1)&gt;", ""), (b.body.component, text)


def test_the_harness_catches_unescaped_tokens_and_raw_html(browser, tmp_path, monkeypatch):
    """Counter-check: without mechwork's escaping the same payloads run, and the harness says so."""
    monkeypatch.setattr(views, "HTML_PROPS", {})
    page = Page("unescaped").tokens([f"<img src=x onerror=\"{PWN}\">", f"<details/open/ontoggle={PWN}>"], [1.0, 2.0])
    out = page.save(tmp_path / "unescaped.html")
    o = open_page(browser, out, interact=False)
    assert o.dialogs and o.pwned >= 1 and o.bad, o
    monkeypatch.undo()
    raw = Page("raw")
    raw.blocks.append(Block("html", None, None, f"<svg onload=\"{PWN}\"></svg>"))  # an escaping bug, simulated
    o = open_page(browser, raw.save(tmp_path / "raw.html"), interact=False)
    assert o.dialogs and o.pwned >= 1 and any("onload" in b for b in o.bad), o


def test_view_props_escape_only_where_circuitsvis_renders_html():
    label = "<b>&amp;"
    for v in every_component([label, "y", "z"]):
        props = v.props_json()
        escaped = "\\u0026lt;b\\u0026gt;\\u0026amp;amp;"  # &lt;b&gt;&amp;amp; in script-safe JSON
        raw = "\\u003cb\\u003e\\u0026amp;"  # <b>&amp;
        if v.component in HTML_PROPS:
            assert escaped in props, v.component
        else:
            assert raw in props and escaped not in props, v.component
        assert label in str(v.props)  # the view keeps the label as given


def test_notebook_iframes_are_sandboxed_without_same_origin(browser, tmp_path):
    page = Page("nb").plotly(evil_figure("x")).attention(torch.eye(2)[None], ["a", "b"])
    # an escaping bug, simulated: a script inside the page tries to reach the notebook around it
    page.blocks.append(Block("html", None, None, "<script>try { parent.document.title = 'pwned';"
                             " window.top.__pwned = 1; } catch (e) { document.title = 'blocked'; }</script>"))
    view = attention_heads(torch.eye(2)[None], ["a", "b"])
    outputs = [page._repr_html_(), view._repr_html_(), EvilResult(PAYLOADS[1])._repr_html_()]
    for h in outputs[:2]:
        tag = h[: h.index(">") + 1] if h.startswith("<iframe") else h
        assert tag.startswith('<iframe sandbox="allow-scripts" srcdoc="'), tag[:60]
        assert "allow-same-origin" not in re.sub(r'srcdoc="[^"]*"', "", h)
    assert "<img" not in outputs[2]
    nb = tmp_path / "notebook.html"
    nb.write_text("<!DOCTYPE html><html><head><title>notebook</title></head><body>" + "".join(outputs)
                  + "</body></html>")
    ctx = browser.new_context()
    try:
        ctx.route("**/*", lambda r: r.continue_() if r.request.url.startswith(("file:", "data:", "about:"))
                  else r.abort())
        p = ctx.new_page()
        dialogs: list[str] = []
        p.on("dialog", lambda d: (dialogs.append(d.message), d.dismiss()))
        p.goto(nb.resolve().as_uri(), wait_until="load", timeout=WAIT_MS)
        frames = [f for f in p.frames if f is not p.main_frame]
        assert len(frames) == 2
        for f in frames:
            f.wait_for_function("() => document.querySelector('svg.main-svg, .mw-cv *:not(script)')", timeout=WAIT_MS)
            assert f.evaluate("() => window.origin") == "null"  # opaque origin: no access to the notebook
        assert frames[0].evaluate("() => document.title") == "blocked"
        # the notebook view draws its zoomed head at a readable size too
        frames[1].wait_for_function("() => document.querySelectorAll('canvas').length >= 2", timeout=WAIT_MS)
        frames[1].wait_for_timeout(500)
        widths = frames[1].evaluate("() => [...document.querySelectorAll('canvas')].map("
                                    "c => c.getBoundingClientRect().width)")
        assert max(widths) >= 300, widths
        assert p.title() == "notebook" and p.evaluate("() => window.__pwned") is None and dialogs == []
    finally:
        ctx.close()


def test_zoomed_view_of_three_tokens_keeps_a_readable_size(browser, tmp_path):
    """A view first laid out narrow (a notebook output drawn before it is shown) used to stay ~10-30 px wide."""
    page = Page("zoom").attention(torch.softmax(torch.randn(2, 3, 3), -1).tril(), ["a", "b", "c"])
    out = tmp_path / "zoom.html"
    out.write_text(page.render().replace("<main>", '<main style="width:10px">', 1))
    ctx = browser.new_context(viewport={"width": 1280, "height": 900})
    try:
        p = ctx.new_page()
        p.goto(out.resolve().as_uri(), wait_until="load", timeout=WAIT_MS)
        p.wait_for_function("() => document.querySelectorAll('.mw-cv canvas').length >= 3", timeout=WAIT_MS)
        p.wait_for_timeout(500)
        p.evaluate("() => { document.querySelector('main').style.width = ''; }")  # now shown at full width
        p.wait_for_timeout(1000)
        sizes = p.evaluate("() => [...document.querySelectorAll('.mw-cv canvas')].map("
                           "c => c.getBoundingClientRect().width)")
        assert max(sizes) >= 300, sizes
    finally:
        ctx.close()


def test_a_run_directory_named_with_a_payload_reaches_its_pages_as_text(browser, tmp_path):
    """Strings that do not come through Page's API: the run's path (title, subtitle, table) in `mechwork dashboard`
    and `mechwork patch --dashboard`."""
    from click.testing import CliRunner

    from mechwork.cli import cli
    from mechwork.tasks import ModularArithmetic
    from mechwork.training import TrainConfig, train

    name = f'run"><img src=x onerror="{PWN}"><svg onload={PWN}>'
    run = tmp_path / name
    train(ModularArithmetic(p=11, op="add", train_frac=0.5, seed=0), train_cfg=TrainConfig(steps=4, eval_every=2),
          out=run, quiet=True, device="cpu")
    pages = [tmp_path / "dash.html", tmp_path / "patch.html"]
    for args in (["dashboard", str(run), "--out", str(pages[0]), "--quiet"],
                 ["patch", str(run), "--dashboard", str(pages[1]), "--quiet"]):
        res = CliRunner().invoke(cli, args)
        assert res.exit_code == 0, res.output
    for out in pages:
        o = open_page(browser, out, interact=False)
        assert o.dialogs == [] and o.pwned == 0 and o.bad == [] and o.errors == [], (out.name, o)
        title = re.search(r"<title>(.*?)</title>", out.read_text(), re.S)
        assert title and name in html.unescape(title.group(1))  # shown as typed, not parsed
