"""The prompt dashboard: its bundle on the four own-model acceptance models, the page in Chromium (from disk,
network blocked, no console error, every figure drawn and every circuitsvis view mounted), and each summary
sentence both ways on constructed bundles (condition true: present; false: absent)."""

from __future__ import annotations

import os
import time
from dataclasses import replace
from pathlib import Path

import fourmodels
import pytest
import torch
from chromium_check import check_page, require_chromium

from mechwork.analysis.attention import HeadScores
from mechwork.analysis.patching import PatchResult
from mechwork.analysis.prompt import DIFFERENT_TOP, SAME_TOP, PairMetric, Predictions
from mechwork.dashboard.prompt import summary_lines
from mechwork.results import Analysis
from mechwork.source import SourceInfo

ARTIFACTS = Path(os.environ.get("MECHWORK_ARTIFACTS", Path(__file__).parent / "artifacts"))
TEXT = {"gpt2", "llama"}  # the models with a tokenizer
PAIRS = {True: ("when mary and john went to the store john gave a drink to",
                "when mary and john went to the store mary gave a drink to"),
         False: ("3 9 14 22 3 9 14", "3 9 14 22 5 11 40")}
EVIL = "<img src=x onerror=console.error(1)>"  # run as HTML, it would log an error (and request x)
PROMPTS = {True: f"the cat sat on the mat and the dog sat on the\none two three {EVIL}\n",  # shown as text
           False: "1 2 3 4 5 1 2 3 4\n7, 8, 9, 7, 8\n"}


# -- the real pages ---------------------------------------------------------------------------------
@pytest.mark.parametrize("name", fourmodels.NAMES)
def test_prompt_page_draws_everything_offline(tmp_path, four_models, name):
    require_chromium()
    from mechwork.cli.args import prompt_arg as _prompt_arg
    from mechwork.dashboard.standard import prompt_dashboard

    text = name in TEXT
    prompts = tmp_path / "prompts.txt"
    prompts.write_text(PROMPTS[text])
    clean, corrupted = PAIRS[text]
    pair = (_prompt_arg(clean), _prompt_arg(corrupted))
    out = tmp_path / f"{name}.html"
    start = time.perf_counter()
    page = prompt_dashboard(four_models[name], out, prompts_file=prompts, pair=pair, device="cpu")
    built = time.perf_counter() - start
    shot = ARTIFACTS / f"prompt-{name}.png"
    shot.unlink(missing_ok=True)
    r = check_page(out, screenshot=shot, timeout_s=60)
    print(f"{name}: page {out.stat().st_size:,} bytes, built in {built:.1f} s, {r.plotly_mounts} figures, "
          f"{r.cv_mounts} views")
    assert r.plotly_mounts == sum(b.kind == "plotly" for b in page.blocks) >= 8, r
    assert r.plotly_drawn == r.plotly_mounts, r
    assert r.cv_mounts == sum(b.kind == "view" for b in page.blocks) == 2, r  # one view per prompt
    assert r.cv_drawn == r.cv_mounts, r
    assert r.console_errors == [] and r.page_errors == [] and r.requests == [], r
    assert r.title == page.title and "Summary" in r.headings
    html = out.read_text()
    assert "Activation patching of each head" in html and "Logit lens on prompt 2" in html
    assert "no pair was given" not in html.lower()
    assert ("&lt;img src=x" in html) is text and "<img src=x" not in html


def test_dashboard_of_a_model_directory_is_the_prompt_page(four_models):
    from mechwork.dashboard import dashboard

    page = dashboard(four_models["llama"])
    assert page.title.startswith("Prompt dashboard:")
    titles = [b.title for b in page.blocks]
    assert "Attention on prompt 2" in titles and "Activation patching of each head's output (z)" in titles


def test_prompt_bundle_metric_is_the_models_own_prediction(four_models):
    """The pair metric: clean top minus corrupted top; the same top token falls back to the clean runner-up."""
    import mechwork
    from mechwork.analysis.prompt import analyse_prompts, top_two

    model = mechwork.load(four_models["gpt2"], device="cpu")
    clean, corrupted = PAIRS[True]
    bundle = analyse_prompts(model, None, (clean, corrupted))
    m = bundle["metric"]
    c, k = (model.to_tokens(s) for s in (clean, corrupted))
    a, r = top_two(model, c[0])
    w = top_two(model, k[0])[0]
    with torch.no_grad():
        lc, lk = model(c)[0, -1], model(k)[0, -1]
    assert m.answer[0] == a[0] == int(lc.argmax())
    if w[0] != a[0]:
        assert m.rule == DIFFERENT_TOP and m.wrong[0] == w[0] == int(lk.argmax())
    else:
        assert m.rule == SAME_TOP and m.wrong[0] == r[0]
    assert abs(m.clean_value - float(lc[m.answer[0]] - lc[m.wrong[0]])) < 1e-4
    assert abs(m.corrupted_value - float(lk[m.answer[0]] - lk[m.wrong[0]])) < 1e-4
    assert abs(bundle["patch_resid"].clean_value - m.clean_value) < 1e-4
    # the same prompt twice: the same top token, so the clean runner-up, and a gap of zero
    same = analyse_prompts(model, None, (clean, clean))
    assert same["metric"].rule == SAME_TOP and same["metric"].wrong[0] == r[0]
    assert any("barely moves" in s for s in summary_lines(same))
    # the bundle holds one result per prompt of each per-prompt analysis
    assert len(bundle["attention"]) == len(bundle["dla"]) == len(bundle["lens"]) == 2


# -- the summary, sentence by sentence, on constructed bundles -------------------------------------------
def _bundle(pair: bool = True, **changes) -> Analysis:
    info = SourceInfo("demo", "preset", None, None, None, None, {}, None)
    preds = Predictions(("a b c",), (("a", "b", "c"),), ((7, "x", 0.9),), ((8, "y", 0.05),),
                        dla_top=(("L1H2", 3.0),), lens_first=(1,), lens_layers=("0_pre", "1_pre", "final_post"))
    det = HeadScores({"previous_token": torch.tensor([[0.9, 0.1], [0.1, 0.1]]),
                      "induction": torch.tensor([[0.0, 0.1], [0.8, 0.1]]),
                      "duplicate_token": torch.zeros(2, 2)}, 10)
    res: dict = {"predictions": preds, "detectors": det}
    if pair:
        res["metric"] = PairMetric(("a",), ("b",), (7, "x"), (9, "z"), DIFFERENT_TOP, 4.0, -2.0)
        resid = torch.tensor([[-2.0, 3.4], [-1.0, 1.0]])  # [layer, pos]: L0 pos 1 restores 90%
        res["patch_resid"] = PatchResult(resid, ("layer", "pos"), {"layer": [0, 1], "pos": [0, 1]}, "resid_pre",
                                         "layer_pos", "denoising", 4.0, -2.0)
        heads = torch.tensor([[-2.0, 2.5], [-1.0, 0.0]])  # [layer, head]: L0H1 restores 75%
        res["patch_heads"] = PatchResult(heads, ("layer", "head"), {"layer": [0, 1], "head": [0, 1]}, "z", "head",
                                         "denoising", 4.0, -2.0)
        res["attr_heads"] = replace(res["patch_heads"], method="attribution patching")
    for k, v in changes.items():
        if k in ("top", "runner_up", "dla_top", "lens_first"):
            res["predictions"] = replace(res["predictions"], **{k: v})
        else:
            res[k] = v
    return Analysis(info, res)


def _text(bundle: Analysis) -> str:
    return "\n".join(summary_lines(bundle))


def test_summary_confidence_both_ways():
    assert "is confident of its next token: **'x'** with probability 90.0%" in _text(_bundle())
    assert "no next token reaches" not in _text(_bundle())
    low = _text(_bundle(top=((7, "x", 0.3),)))
    assert "is confident" not in low and "no next token reaches 50%: the most likely is 'x' (30.0%)" in low


def test_summary_dla_names_a_head_only_when_a_head_leads():
    assert "Head **L1H2** contributes most directly to the logit of 'x' on prompt 1 (+3)" in _text(_bundle())
    other = _text(_bundle(dla_top=(("1_mlp_out", -2.5),)))
    assert "contributes most directly" not in other
    assert "comes from 1_mlp_out, not from a head (-2.5)" in other
    assert "not from a head" not in _text(_bundle())


def test_summary_lens_first_layer_both_ways():
    early = _text(_bundle())
    assert "first ranks the final answer 'x' top-1 at **1_pre**" in early and "only at the model's output" not in early
    for first in (2, None):  # the output layer itself, or never top-1
        late = _text(_bundle(lens_first=(first,)))
        assert "first ranks" not in late and "top-1 only at the model's output" in late


def test_summary_detectors_both_ways():
    found = _text(_bundle())
    assert "Induction heads (score >= 0.5): **L1H0 (0.80)**" in found
    assert "Previous-token heads: **L0H0 (0.90)**" in found
    assert "two-layer induction circuit" in found
    assert "No head scores" not in found
    none = _text(_bundle(detectors=HeadScores({k: torch.full((2, 2), 0.2) for k in
                                               ("previous_token", "induction", "duplicate_token")}, 10)))
    assert "Induction heads (" not in none and "Previous-token heads:" not in none
    assert "as an induction head" in none and "as a previous-token head" in none
    assert "two-layer induction circuit" not in none
    same_layer = HeadScores({"previous_token": torch.tensor([[0.1, 0.1], [0.9, 0.1]]),
                             "induction": torch.tensor([[0.1, 0.1], [0.1, 0.8]]), "duplicate_token": torch.zeros(2, 2)},
                            10)  # both in layer 1: no previous-token head below the induction head
    assert "two-layer induction circuit" not in _text(_bundle(detectors=same_layer))


def test_summary_pair_sentences_both_ways():
    full = _text(_bundle())
    assert "metric is the logit of 'x' (clean top) minus 'z' (corrupted top)" in full
    assert "Both prompts of the pair predict" not in full and "No pair was given" not in full
    assert "Patching the clean residual stream at **L0 pos 1** restores 90%" in full
    assert "Of the heads, **L0H1**'s output restores the most: 75%" in full
    assert "Attribution patching agrees: its top head is L0H1 too" in full and "disagrees" not in full
    assert "barely moves" not in full
    nopair = _text(_bundle(pair=False))
    assert "No pair was given" in nopair and "metric" not in nopair and "Patching" not in nopair
    same = _text(_bundle(metric=PairMetric(("a",), ("b",), (7, "x"), (8, "y"), SAME_TOP, 4.0, -2.0)))
    assert "Both prompts of the pair predict 'x', so the metric is its logit minus the clean runner-up 'y'" in same
    assert "(corrupted top)" not in same


def test_summary_negligible_gap_and_attribution_disagreement():
    b = _bundle()
    flat = replace(b["patch_resid"], clean_value=1.0, corrupted_value=1.0)
    neg = _text(_bundle(patch_resid=flat))
    assert "barely moves the metric (gap 0)" in neg
    assert "restores" not in neg and "Attribution patching" not in neg
    attr = replace(b["attr_heads"], values=torch.tensor([[-2.0, -2.0], [3.0, 0.0]]))  # L1H0 leads
    dis = _text(_bundle(attr_heads=attr))
    assert "Attribution patching disagrees: its top head is L1H0, exact patching's L0H1" in dis
    assert "agrees" not in dis.replace("disagrees", "")


def test_a_model_dla_cannot_split_gets_a_note_not_a_crash(monkeypatch):
    """DLA's own one-line refusal (a model it cannot split exactly) becomes a note; the rest of the page stays."""
    import mechwork
    import mechwork.analysis.logit as logit
    from mechwork.analysis.prompt import NotApplicable, analyse_prompts
    from mechwork.dashboard.prompt import prompt_page
    from mechwork.errors import ConfigError

    def refuse(*a, **k):
        raise ConfigError("direct logit attribution cannot split this model exactly (a test)")

    monkeypatch.setattr(logit, "direct_logit_attribution", refuse)
    bundle = analyse_prompts(mechwork.load("induction-2l", device="cpu"), [[1, 2, 3, 1, 2]])
    assert isinstance(bundle["dla"], NotApplicable) and isinstance(bundle["dla_diff"], NotApplicable)
    assert not isinstance(bundle["lens"], NotApplicable) and bundle["predictions"].dla_top == ()
    page = prompt_page(bundle)
    notes = [b.body for b in page.blocks if b.title == "Direct logit attribution"]
    assert len(notes) == 1 and "cannot split this model exactly (a test)" in notes[0]
    assert "Logit lens on prompt 1" in [b.title for b in page.blocks]
    assert not any("contributes most directly" in s or "not from a head" in s for s in summary_lines(bundle))


def test_summary_head_share_small_or_negative_is_not_said_to_restore():
    b = _bundle()
    small = replace(b["patch_heads"], values=torch.tensor([[-1.9, -2.0], [-2.0, -2.0]]))  # L0H0: +1.7%
    txt = _text(_bundle(patch_heads=small))
    assert "No head's output alone restores 5% of the gap (the largest share, L0H0's, is 1.7%)" in txt
    assert "restores the most" not in txt
    neg = replace(b["patch_heads"], values=torch.tensor([[-3.2, -2.0], [-2.0, -2.0]]))  # L0H0: -20%
    txt = _text(_bundle(patch_heads=neg))
    assert "**L0H0**'s output moves the metric most, away from clean: -20% of the gap" in txt
    assert "restores the most" not in txt and "No head's output alone" not in txt
    away = replace(b["patch_resid"], values=torch.tensor([[-5.0, -2.0], [-2.0, -2.0]]))  # L0 pos 0: -50%
    assert "at **L0 pos 0** moves the metric away from clean by 50%" in _text(_bundle(patch_resid=away))
