"""The SAE section of the dashboards (mechwork.dashboard.features): each sentence both ways, token strings escaped,
the kits' wiring (an SAE beside a preset gives bundle["sae"]; none gives no section), and the views in Chromium."""

from __future__ import annotations

import json
import math
import re
from dataclasses import replace
from types import SimpleNamespace as NS

import pytest
import torch
from tiny_sae import induction_sae as fit_induction_sae

import mechwork
from mechwork.analysis.features import DOMINANT, FeatureGrid, FeatureReport, SAEBundle, feature_report
from mechwork.analysis.sae import SAE, SAEConfig
from mechwork.dashboard.features import feature_section, latent_lines, metrics_lines, top_view
from mechwork.dashboard.page import Page
from mechwork.results import Analysis
from mechwork.source import SourceInfo

RESID = "blocks.1.hook_resid_pre"
EVIL = "<img src=x onerror=\"console.error('injected')\">"  # runs if inserted as HTML (a <script> would not)


def report(**changes) -> FeatureReport:
    """A hand-made report of 2 latents (3 and 7) of an 8-latent SAE over 10 activations, 2 inputs of 3 tokens."""
    r = FeatureReport(
        hook_name="blocks.0.mlp.hook_post", latents=[3, 7], by="density", n_acts=10,
        density_all=torch.tensor([0, 0, 0, 0.5, 0, 0, 0, 0.2]), max_all=torch.tensor([0, 0, 0, 2.0, 0, 0, 0, 1.0]),
        hist_edges=torch.stack([torch.linspace(0, 2, 3), torch.linspace(0, 1, 3)]),
        hist_counts=torch.tensor([[2, 3], [1, 1]]), top_values=torch.tensor([[2.0, 1.5], [1.0, 0.0]]),
        top_input=torch.tensor([[1, 0], [0, 1]]), top_pos=torch.tensor([[2, 2], [1, 2]]),
        top_tokens=[[["4", "5", "="], ["1", EVIL, "="]], [["1", EVIL, "="], ["4", "5", "="]]],
        top_acts=torch.tensor([[[0, 0, 2.0], [0, 0, 1.5]], [[0, 1.0, 0], [0, 0, 0]]]), vocab=["0", "1", "2", EVIL],
        logit_effect=torch.tensor([[0.5, -1.0, 2.0, 0.1], [0.0, 0.3, -0.2, 0.1]]),
        logit_path="W_dec @ W_out[0] @ W_U: the direct path")
    return replace(r, **changes)


def grid(energy: list[list[float]]) -> FeatureGrid:
    e = torch.tensor(energy)
    return FeatureGrid(5, torch.zeros(2, 5, 5), torch.zeros(2, 5, 5), e, torch.tensor([1] * 8),
                       torch.tensor([0, 0, 0, 0.9, 0, 0, 0, 0.5]))


def test_metric_sentences_both_ways():
    m = NS(l0=12.0, fve=0.93, n_dead=0, n_dense=0, dense_threshold=0.1, loss_recovered=0.97, n_activations=100)
    lines = metrics_lines(m, 64)
    assert lines[0].startswith("L0 **12.0** of 64 latents") and "**93.0%**" in lines[0]
    assert lines[1] == "Every latent fires on the evaluation activations; none fires on more than 10% of them."
    assert "recovers **97.0%** of the loss" in lines[2]
    m2 = NS(**{**vars(m), "n_dead": 5, "n_dense": 2, "loss_recovered": math.nan})
    lines2 = metrics_lines(m2, 64)
    assert lines2[1] == ("5 of the latents never fire on the evaluation activations (dead); 2 are dense (fire on more "
                         "than 10% of them).")
    assert lines2[2] == "The loss recovered was not measured."


def test_latent_sentences_both_ways():
    r = report()
    lines = latent_lines(r, 0)
    assert lines[0] == "Latent 3 fires on **50.00%** of the 10 activations (5); its largest activation is 2."
    assert lines[1] == "Its top activation is at position 2 of input 1, token '='."
    assert "raises '2' (+2), '0' (+0.5), " in lines[2] and "lowers '1' (-1)" in lines[2]
    assert len(lines) == 3  # no grid, no grid sentence
    assert latent_lines(report(logit_effect=None, logit_path="no linear path"), 0)[2] == \
        "No logit effect is shown: no linear path."
    silent = report(density_all=torch.zeros(8))
    assert latent_lines(silent, 1) == ["Latent 7 never fires on the 10 activations."]
    both = latent_lines(report(grid=grid([[0.05, 0.9], [0.5, 0.3]])), 0)
    assert both[-1].startswith("Over the (a, b) grid it is **dominated by frequency 2**: 90.0%")
    other = latent_lines(report(grid=grid([[0.05, 0.9], [0.5, 0.3]])), 1)
    assert other[-1] == ("No single frequency dominates it over the (a, b) grid: the largest, 1, holds 50.0% of its "
                         f"non-constant Fourier energy (under {DOMINANT:.0%}).")
    flat = latent_lines(report(grid=grid([[0.0, 0.0], [0.5, 0.3]])), 0)
    assert flat[-1] == "Its activation is constant over the (a, b) grid: it has no Fourier energy."


def bundle_of(sae_part) -> Analysis:
    info = SourceInfo("demo", "preset", None, None, None, None, {}, None)
    return Analysis(info, {} if sae_part is None else {"sae": sae_part})


def test_the_section_is_absent_without_an_sae_and_escapes_token_strings():
    assert feature_section(Page("x"), bundle_of(None)).blocks == []
    metrics = NS(l0=3.0, fve=0.5, n_dead=1, n_dense=0, dense_threshold=0.1, loss_recovered=0.8, n_activations=10)
    cfg = SAEConfig(d_in=4, d_sae=8, architecture="topk", k=2)
    r = report(grid=grid([[0.05, 0.9], [0.5, 0.3]]))
    page = feature_section(Page("x"), bundle_of(SAEBundle("blocks.0.mlp.hook_post", "here", cfg, metrics, r)))
    titles = [b.title for b in page.blocks if b.title]
    assert titles == ["SAE features", "SAE metrics", "SAE latent 3", "Latent 3: top activations", "SAE latent 7",
                      "Latent 7: top activations"]
    assert sum(b.kind == "plotly" for b in page.blocks) == 6  # histogram, logits, grid per latent
    html = page.render("cdn")
    assert "<img src=x" not in html
    assert "**1** of its 2 live latents are dominated" not in html and "<strong>1</strong> of its 2 live" in html
    props = json.loads(re.search(r'id="mw-\d+-cv-props">(.*?)</script>', html).group(1))
    assert props["tokens"][1][1] == "&lt;img src=x onerror=\"console.error('injected')\"&gt; "
    view = top_view(r, 1)  # latent 7 fires on one input only: one sample
    assert view.props["tokens"] == [["1 ", EVIL + " ", "= "]]  # ids: spaced
    assert view.props["activations"] == [[[[0.0]], [[1.0]], [[0.0]]]]
    text = report(top_tokens=[[["The", " cat", " sat"]] * 2] * 2)
    assert top_view(text, 0).props["tokens"] == [["The", " cat", " sat"]] * 2  # text keeps its own spaces


@pytest.fixture(scope="module")
def induction_sae(tmp_path_factory):
    model, toks, sae, _ = fit_induction_sae(64, 64, 40)
    from mechwork.analysis.saeio import save_sae

    root = tmp_path_factory.mktemp("saes")
    save_sae(sae, root / "induction-2l" / RESID)
    return root, model, toks, sae


def test_the_induction_kit_pages_a_shipped_sae_and_none_without(induction_sae, monkeypatch, tmp_path):
    import mechwork.analysis.saestore as store
    from mechwork.source import open_source
    from mechwork.tasks.induction import sae as kit_sae

    root = induction_sae[0]
    src = open_source("induction-2l")
    monkeypatch.setattr(store, "SHIPPED_ROOT", tmp_path)  # no SAEs there
    assert kit_sae(src) is None
    assert feature_section(Page("x"), bundle_of(kit_sae(src))).blocks == []
    monkeypatch.setattr(store, "SHIPPED_ROOT", root)
    part = kit_sae(src)
    assert isinstance(part, SAEBundle) and part.hook_name == RESID
    assert part.where == "shipped with the induction-2l preset"
    r = part.features
    assert len(r.latents) == 5 and r.n_acts == 512 * 48 and r.grid is None
    assert part.metrics.n_activations == 512 * 48 and math.isfinite(part.metrics.loss_recovered)
    page = feature_section(Page("x"), bundle_of(part))
    assert sum(b.kind == "view" for b in page.blocks) == 5 and "SAE latent" in page.render("cdn")


def test_the_feature_views_draw_in_chromium_and_injected_tokens_do_not_run(induction_sae, tmp_path):
    from chromium_check import check_page, require_chromium

    require_chromium()
    _, model, toks, sae = induction_sae
    labels = [EVIL if j == int(toks[0, 0]) else str(j) for j in range(64)]
    r = feature_report(model, sae, toks[:16], latents=2, labels=labels, n_top=4)
    assert any(EVIL in row for rows in r.top_tokens for row in rows)
    metrics = NS(l0=4.0, fve=0.5, n_dead=1, n_dense=0, dense_threshold=0.1, loss_recovered=math.nan, n_activations=1)
    page = feature_section(Page("features"), bundle_of(SAEBundle(RESID, "a test", sae.cfg, metrics, r)))
    out = tmp_path / "features.html"
    page.save(out)
    rep = check_page(out)
    assert rep.cv_mounts == 2 and rep.cv_drawn == 2, rep
    assert rep.plotly_mounts == 4 and rep.plotly_drawn == 4, rep
    assert rep.console_errors == [] and rep.page_errors == [] and rep.requests == [], rep
    from chromium_check import chromium_path
    from playwright.sync_api import sync_playwright

    with sync_playwright() as pw:  # the token shows as text (inserted as HTML, it would vanish into an element)
        browser = pw.chromium.launch(executable_path=chromium_path(), headless=True)
        try:
            tab = browser.new_page()
            tab.goto(out.resolve().as_uri())
            tab.wait_for_selector(".mw-cv select")
            shown = " ".join(tab.locator(".mw-cv").all_inner_texts()).replace("\xa0", " ")
        finally:
            browser.close()
    assert EVIL in shown


def test_a_run_directory_s_saes_are_paged_and_the_kits_standard_hook_comes_first(induction_sae, tmp_path):
    from mechwork.analysis.features import sae_result
    from mechwork.analysis.saeio import save_sae

    _, model, _, sae = induction_sae
    run = tmp_path / "run"
    save_sae(sae, run / "saes" / RESID)
    other = SAE(SAEConfig(d_in=64, d_sae=16, hook_name="blocks.0.hook_resid_pre", model_name="run"))
    save_sae(other, run / "saes" / "blocks.0.hook_resid_pre")
    batch = mechwork.preset("induction-2l").task.batch("test")
    small = type(batch)(batch.tokens[:8], batch.targets[:8], batch.mask[:8])
    src = NS(name=str(run), kind="run", model=model)
    part = sae_result(src, RESID, small, positions=torch.ones(8, 48, dtype=torch.bool), latents=2)
    assert part.hook_name == RESID and part.where == f"read from {run / 'saes' / RESID}"
    assert part.features.d_sae == 64 and part.metrics.n_activations == 8 * 48
    fallback = sae_result(src, "blocks.1.hook_resid_post", small, latents=1)  # not there: the first it has
    assert fallback.hook_name == "blocks.0.hook_resid_pre" and fallback.features.d_sae == 16
    assert sae_result(NS(name=str(tmp_path), kind="run", model=model), RESID, small) is None
    assert sae_result(NS(name="gpt2", kind="model", model=model), RESID, small) is None


def test_the_below_sentence_says_when_a_chosen_latent_never_fires():
    cfg = SAEConfig(d_in=4, d_sae=8, architecture="topk", k=2)

    def below(r: FeatureReport) -> str:
        page = feature_section(Page("x"), bundle_of(SAEBundle("blocks.0.mlp.hook_post", "here", cfg, None, r)))
        return next(b.body for b in page.blocks if b.title == "SAE features")

    both_fire = below(report())
    assert "2 of the 8 latents (2 fire on the 10 activations the pages are drawn from)." in both_fire
    assert "never do" not in both_fire
    one_dead = below(report(latents=[3, 5], by="given"))  # latent 5 has density 0
    assert "the chosen 2 of the 8 latents (2 fire on the 10 activations the pages are drawn from; 1 of those below " \
           "never does)." in one_dead
