"""The page builder and the standard dashboards (the browser test is in test_browser.py)."""

from __future__ import annotations

import json
import os
import re
import stat
from pathlib import Path

import pandas as pd
import plotly.graph_objects as go
import pytest
import torch

from mechwork.cli import main
from mechwork.dashboard import CircuitsView, Page, attention_heads, colored_tokens
from mechwork.dashboard.assets import CIRCUITSVIS, PLOTLY, bundle_manifest
from mechwork.errors import ConfigError, OutputError

EVIL = "<script>alert(1)</script>"
CV_MARK = "var CircuitsVis="  # appears once in the circuitsvis bundle
PLOTLY_MARK = "* plotly.js v"  # the plotly.js banner
BUNDLE = re.compile(r'<script type="application/gzip;base64" data-mw-bundle="([\w-]+)">([A-Za-z0-9+/=]*)</script>')


def bundles(html: str) -> dict[str, str]:
    """Every bundle an inline page embeds, unpacked as the browser's DecompressionStream would (name -> text)."""
    import base64
    import gzip

    found = BUNDLE.findall(html)
    assert len({name for name, _ in found}) == len(found)  # each at most once
    return {name: gzip.decompress(base64.b64decode(data)).decode("utf-8") for name, data in found}


def busy_page(n: int = 3, title: str = "t") -> Page:
    page = Page(title)
    g = torch.Generator().manual_seed(0)
    for i in range(n):
        page.plotly(go.Figure(go.Scatter(x=[0, 1, 2], y=torch.rand(3, generator=g).tolist())), title=f"fig {i}")
        page.attention(torch.rand(2, 4, 4, generator=g).softmax(-1), ["a", "b", "c", "d"], title=f"view {i}")
    return page


def test_inline_mode_embeds_each_bundle_exactly_once():
    html = busy_page(10).render("inline")
    got = bundles(html)
    assert got == {"plotly": PLOTLY.source(), "circuitsvis": CIRCUITSVIS.source()}
    assert got["circuitsvis"].count(CV_MARK) == 1 and got["plotly"].count(PLOTLY_MARK) == 1
    assert CV_MARK not in html and PLOTLY_MARK not in html  # compressed, not plain text
    assert html.count("data-mw-bundle=") == 2 and html.count("window.mwBundles = ") == 1  # the loader, once
    assert html.count('class="mw-cv"') == 10 and html.count('class="mw-fig"') == 10
    assert not re.search(r"<script[^>]*\ssrc=", html)  # no external script at all
    assert "sourceMappingURL" not in html and all("sourceMappingURL" not in b[-300:] for b in got.values())


def test_page_without_views_or_figures_carries_no_bundle():
    html = Page("plain").text("hello").render("inline")
    assert bundles(html) == {} and "window.mwBundles = " not in html
    only_fig = Page("f").plotly(go.Figure()).render("inline")
    assert list(bundles(only_fig)) == ["plotly"] and only_fig.count("window.mwBundles = ") == 1


def test_cdn_mode_references_versioned_urls_and_stays_small():
    html = busy_page(10).render("cdn")
    srcs = re.findall(r'<script src="([^"]+)"', html)
    head = PLOTLY.path.read_text(encoding="utf-8")[:200]
    plotly_js = re.search(r"plotly\.js v([\d.]+)", head).group(1)
    from importlib.metadata import version

    assert plotly_js == bundle_manifest()["plotly.js"]
    assert srcs == [f"https://cdn.plot.ly/plotly-{plotly_js}.min.js",  # plotly's official full bundle
                    f"https://unpkg.com/circuitsvis@{version('circuitsvis')}/dist/cdn/iife.js"]
    assert CV_MARK not in html and PLOTLY_MARK not in html and bundles(html) == {} and "window.mwBundles = " not in html
    assert len(html.encode()) < 100_000


def test_output_is_deterministic(tmp_path):
    a, b = tmp_path / "a.html", tmp_path / "b.html"
    busy_page(4).save(a)
    busy_page(4).save(b)
    assert a.read_bytes() == b.read_bytes()
    assert not re.search(r"\d{4}-\d\d-\d\d", busy_page(4).render("cdn"))  # no timestamp unless asked
    assert re.search(r"\d{4}-\d\d-\d\d \d\d:\d\d UTC", Page("x", stamp=True).render("cdn"))


def test_every_user_string_is_escaped():
    page = (
        Page(EVIL, subtitle=EVIL)
        .markdown(f"**bold** {EVIL} [x](javascript:alert(1))", title=EVIL)
        .text(EVIL, title=EVIL)
        .plotly(go.Figure(go.Bar(x=[EVIL], y=[1])).update_layout(title=EVIL), title=EVIL, caption=EVIL)
        .attention(torch.eye(2)[None], [EVIL, "b"], head_names=[EVIL], title=EVIL)
        .tokens([EVIL, "x"], [0.5, -1.0])
        .table(pd.DataFrame({EVIL: [EVIL, 1.5]}), title=EVIL)
        .kv({EVIL: EVIL})
    )
    html = page.render("cdn")
    # the only <script> elements are ours: 2 CDN links, 3 data blocks, the template block and the draw script
    assert "alert(1)</script>" not in html and "<script>alert" not in html
    assert "javascript:alert" not in html.replace("[x](javascript:alert(1))", "")
    assert html.count("&lt;script&gt;alert(1)&lt;/script&gt;") >= 8
    assert html.count("<script") == html.count("</script>") == 2 + 3 + 1 + 1
    assert "<strong>bold</strong>" in html  # markdown itself still works
    # data blocks parse back to the original strings
    blocks = re.findall(r'<script type="application/json" id="[^"]+">(.*?)</script>', html, re.S)
    assert any(EVIL in json.dumps(json.loads(b)) or EVIL in json.loads(b).get("tokens", []) for b in blocks)


def test_views_map_integer_tokens_and_check_shapes():
    v = attention_heads(torch.eye(3)[None], torch.tensor([12, 7, 113]))
    assert v.props["tokens"] == ["12", "7", "113"]
    with pytest.raises(ConfigError, match=r"\[2 x 2\] matrices for 2 tokens"):
        attention_heads(torch.eye(3)[None], ["a", "b"])
    with pytest.raises(ConfigError, match="one value"):
        colored_tokens(["a", "b"], [1.0])
    with pytest.raises(ConfigError, match="component"):
        CircuitsView("NoSuchThing")
    with pytest.raises(ConfigError, match="assets"):
        Page("x").render("offline")  # type: ignore[arg-type]


def test_notebook_view_inlines_the_bundle_and_never_probes(monkeypatch):
    import urllib.request

    def refuse(*a, **k):
        raise AssertionError("probed the internet")

    monkeypatch.setattr(urllib.request, "urlopen", refuse)
    html = attention_heads(torch.eye(2)[None], ["a", "b"])._repr_html_()
    assert html.count(CV_MARK) == 1 and "CircuitsVis.render(" in html
    assert "http" not in html.split(CV_MARK)[0]
    # a sandboxed iframe: scripts run, but in an opaque origin, away from the notebook
    assert html.startswith('<iframe sandbox="allow-scripts" srcdoc="') and "allow-same-origin" not in html
    page_html = Page("x").text("y")._repr_html_()
    assert page_html.startswith('<iframe sandbox="allow-scripts" srcdoc="') and "allow-same-origin" not in page_html


# -- saving -------------------------------------------------------------------------
def test_save_refuses_missing_or_bad_directories_and_writes_nothing(tmp_path):
    page = busy_page(1)
    with pytest.raises(OutputError, match="does not exist"):
        page.save(tmp_path / "missing" / "x.html")
    assert not (tmp_path / "missing").exists()
    f = tmp_path / "file"
    f.write_text("keep")
    with pytest.raises(OutputError, match="is not a directory"):
        page.save(f / "x.html")
    with pytest.raises(OutputError, match="not a directory"):
        page.save(tmp_path)
    assert sorted(p.name for p in tmp_path.iterdir()) == ["file"]


def test_save_to_unwritable_directory_is_a_clear_error(tmp_path):
    ro = tmp_path / "ro"
    ro.mkdir()
    ro.chmod(stat.S_IRUSR | stat.S_IXUSR)
    # root ignores permission bits: /proc refuses new files for everyone
    target = Path("/proc/mechwork-dashboard.html") if os.geteuid() == 0 else ro / "x.html"
    try:
        with pytest.raises(OutputError, match="cannot write"):
            busy_page(1).save(target)
    finally:
        ro.chmod(stat.S_IRWXU)
    assert list(ro.iterdir()) == []


def test_a_failed_write_leaves_the_old_file_whole(tmp_path, monkeypatch):
    out = tmp_path / "d.html"
    out.write_text("old dashboard")

    def boom(self, assets="inline"):
        raise RuntimeError("rendering failed")

    monkeypatch.setattr(Page, "render", boom)
    with pytest.raises(RuntimeError):
        busy_page(1).save(out)
    assert out.read_text() == "old dashboard" and [p.name for p in tmp_path.iterdir()] == ["d.html"]

    import mechwork.io as mio

    real_open = mio.os.fdopen

    class Torn:
        def __init__(self, f):
            self.f = f

        def __enter__(self):
            return self

        def __exit__(self, *exc):
            self.f.close()

        def write(self, s):
            self.f.write(s[: len(s) // 2])
            raise OSError(28, "No space left on device")

    monkeypatch.undo()
    monkeypatch.setattr(mio.os, "fdopen", lambda fd, mode: Torn(real_open(fd, mode)))
    with pytest.raises(OutputError, match="No space left"):
        busy_page(1).save(out)
    assert out.read_text() == "old dashboard" and [p.name for p in tmp_path.iterdir()] == ["d.html"]


# -- standard dashboards ---------------------------------------------------------------
def headings(page: Page) -> list[str]:
    return [b.title for b in page.blocks if b.title]


def test_grokking_dashboard_of_the_embedded_model():
    from mechwork.dashboard import grokking_dashboard

    page = grokking_dashboard("modadd-113")
    h = headings(page)
    for want in ("Summary", "Model and training", "Training curves", "Progress measures",
                 "Fourier spectrum of the embedding", "Neuron clusters", "Attention from '=' over the (a, b) grid",
                 "Attention on 1 + 2 =", "Trig-identity logit fit", "Restricted and excluded loss"):
        assert want in h, h
    assert sum(b.kind == "view" and b.body.component == "AttentionHeads" for b in page.blocks) == 3
    kinds = {b.title: b.kind for b in page.blocks if b.title}
    assert kinds["Training curves"] == "plotly" and kinds["Progress measures"] == "plotly"  # its history ships
    html = page.render("cdn")
    assert "key frequencies [1, 5, 10, 19, 47]" in html and "100.00%" in html and "circuit formation" in html
    assert "Fourier ablation of the embedding" in h


def test_preset_without_history_says_so_instead_of_failing():
    from mechwork.analysis.grokking import analyse
    from mechwork.dashboard.grokking import grokking_page
    from mechwork.source import open_source

    src = analyse(open_source("modadd-113"), progress=False).replace(metrics=None, progress=None)
    page = grokking_page(src)
    kinds = {b.title: b.kind for b in page.blocks if b.title}
    assert kinds["Training curves"] == "html" and kinds["Progress measures"] == "html"
    html = page.render("cdn")
    assert "No training history" in html and "No checkpoints to measure progress on" in html


def test_grokking_dashboard_of_a_fresh_run(tmp_path, tiny_task, tiny_train_cfg):
    from mechwork.dashboard import dashboard
    from mechwork.training import train

    run = tmp_path / "run"
    train(tiny_task, train_cfg=tiny_train_cfg, out=run, quiet=True, device="cpu")
    out = tmp_path / "run.html"
    page = dashboard(run, out, assets="cdn")
    kinds = {b.title: b.kind for b in page.blocks if b.title}
    assert kinds["Training curves"] == "plotly" and kinds["Progress measures"] == "plotly"
    html = out.read_text()
    assert "memorisation" in html and f"step {tiny_train_cfg.steps} of run" in html
    assert out.is_file() and "Grokking dashboard" in out.read_text()


def test_induction_dashboard_of_the_embedded_model():
    from mechwork.dashboard import induction_dashboard

    page = induction_dashboard("induction-2l")
    h = headings(page)
    assert "Head detectors" in h and "Every head on a repeated sequence (1)" in h
    assert "Activation patching: every head at every position" in h and "Ablation and path patching" in h
    views = [b.body for b in page.blocks if b.kind == "view" and b.body.component == "AttentionHeads"]
    assert len(views) == 3
    assert all(len(v.props["attentionHeadNames"]) == 8 for v in views)  # every head of both layers
    # the shipped SAE's feature pages: five latents, each with its top activations
    assert "SAE features" in h
    assert sum(b.kind == "view" and b.body.component == "TextNeuronActivations" for b in page.blocks) == 5
    html = page.render("cdn")
    assert "Induction heads: <strong>L1H" in html


def test_every_result_figure_goes_on_a_page(embedded_model, modadd_preset, tmp_path, tiny_task, tiny_train_cfg):
    from mechwork.analysis.attention import attention_patterns, head_detectors
    from mechwork.analysis.fourier import embedding_spectrum, key_frequencies, neuron_frequencies
    from mechwork.analysis.progress import progress_measures
    from mechwork.analysis.trig import logit_trig_fit, restricted_excluded
    from mechwork.training import train

    task = modadd_preset.task
    train(tiny_task, train_cfg=tiny_train_cfg, out=tmp_path / "run", quiet=True, device="cpu")
    import mechwork

    results = [
        embedding_spectrum(embedded_model), neuron_frequencies(embedded_model, task),
        key_frequencies(embedded_model, task), logit_trig_fit(embedded_model, task),
        restricted_excluded(embedded_model, task), attention_patterns(embedded_model, task.tokens[:2]),
        head_detectors(mechwork.load("induction-2l", device="cpu")), progress_measures(tmp_path / "run"),
    ]
    page = Page("every result")
    for r in results:
        fig = r.figure()
        assert isinstance(fig, go.Figure) and len(fig.data) >= 1, type(r).__name__
        page.result(r, table=True)
    assert sum(b.kind == "plotly" for b in page.blocks) == len(results)
    assert page.render("cdn").count('class="mw-fig"') == len(results)


# -- the command line -------------------------------------------------------------------
def test_cli_writes_a_dashboard(tmp_path, capsys):
    out = tmp_path / "m.html"
    assert main(["dashboard", "modadd-113", "--out", str(out), "--assets", "cdn"]) == 0
    assert f"wrote {out}" in capsys.readouterr().out
    assert out.stat().st_size < 2_000_000


@pytest.mark.parametrize("args, message", [
    (["dashboard", "no-such-preset"], "must be a run directory or one of modadd-113, induction-2l"),
    (["dashboard", "modadd-113", "--out", "MISSING/x.html"], "directory 'MISSING' does not exist"),
    (["dashboard", "modadd-113", "--out", "x.txt"], "must end in .html"),
    (["dashboard", "modadd-113", "--assets", "offline"], "'offline' is not one of 'inline', 'cdn'"),
])
def test_cli_bad_input_is_one_line_and_exit_2(tmp_path, monkeypatch, capsys, args, message):
    monkeypatch.chdir(tmp_path)
    assert main(args) == 2
    err = capsys.readouterr().err
    assert message in err and err.count("\n") == 1 and err.startswith("mechwork: error:")
    assert list(tmp_path.iterdir()) == []


def test_cli_unknown_run_path(tmp_path, capsys):
    notrun = tmp_path / "notrun"
    notrun.mkdir()
    assert main(["dashboard", str(notrun), "--out", str(tmp_path / "x.html")]) == 2
    assert "not a run directory" in capsys.readouterr().err
    assert not (tmp_path / "x.html").exists()


def test_saved_assets_tells_inline_from_cdn_pages(tmp_path):
    from mechwork.dashboard.page import saved_assets

    page = busy_page(1)
    assert saved_assets(page.save(tmp_path / "i.html")) == "inline"
    assert saved_assets(page.save(tmp_path / "c.html", assets="cdn")) == "cdn"
    assert saved_assets(Page("text only").text("x").save(tmp_path / "t.html")) is None
    (tmp_path / "other.html").write_text("<html><head><script src='x.js'></script></head></html>")
    assert saved_assets(tmp_path / "other.html") is None and saved_assets(tmp_path / "missing.html") is None


def test_cli_dashboard_of_dot_and_cdn_page_beside_the_inline_one(tmp_path, monkeypatch, capsys, tiny_task,
                                                                   tiny_train_cfg):
    """`dashboard .` names the page after the run directory; --assets cdn has its own default name, and
    replacing a page of the other mode is said in the output line."""
    from mechwork.training import train

    run = tmp_path / "myrun"
    train(tiny_task, train_cfg=tiny_train_cfg, out=run, quiet=True, device="cpu")
    (run / "dashboards").mkdir()
    monkeypatch.chdir(run)
    assert main(["dashboard", ".", "--device", "cpu"]) == 0
    inline = run / "dashboards" / "myrun.html"
    line = capsys.readouterr().out
    assert "wrote dashboards/myrun.html" in line and "inline assets" in line and "replaced" not in line
    before = inline.read_bytes()
    assert main(["dashboard", ".", "--device", "cpu", "--assets", "cdn"]) == 0
    line = capsys.readouterr().out
    assert "wrote dashboards/myrun.cdn.html" in line and "replaced" not in line
    assert inline.read_bytes() == before  # the inline page is untouched
    assert main(["dashboard", ".", "--device", "cpu", "--assets", "cdn", "--out", "dashboards/myrun.html"]) == 0
    assert "replaced the inline page that was there" in capsys.readouterr().out
