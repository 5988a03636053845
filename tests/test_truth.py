"""Truthful pages: every sentence the summaries, reports and standard dashboards print comes from a condition,
and each condition is checked here on a run where it holds and on one where it does not.

Fabricated measures and metrics rows make a condition true or false cheaply; tiny real runs (p=11, a few
steps) carry them into the pages.
"""

from __future__ import annotations

import dataclasses
import json

import pandas as pd
import pytest
import torch

from mechwork.analysis.progress import (
    MEASURES,
    ProgressMeasures,
    detect_phases,
    loss_spikes,
    phase_sentence,
    phase_spans,
    spike_sentence,
)
from mechwork.tasks import OPS, InductionTask, ModularArithmetic
from mechwork.training import TrainConfig, train

TINY_CFG = TrainConfig(steps=20, eval_every=10, ckpt_every=10, ckpt_log=4)
TINY_INDUCTION = InductionTask(d_vocab=8, seq_len=8, min_len=2, max_len=4, batch_size=2, n_eval=8)


def measures(train_acc, test_acc, test_loss, excluded=None) -> ProgressMeasures:
    """Progress measures at checkpoints 0, 10, 20, ... with the given values (the rest constant)."""
    n = len(train_acc)
    steps = torch.arange(n) * 10
    v = {k: torch.ones(n) for k in MEASURES}
    v |= {"train_acc": torch.tensor(train_acc), "test_acc": torch.tensor(test_acc),
          "test_loss": torch.tensor(test_loss), "excluded_loss": torch.tensor(excluded or [1.0] * n)}
    return ProgressMeasures(steps, v, [1], detect_phases(steps, v))


NOT_MEMORISED = measures([0.1, 0.5, 0.8], [0.0, 0.0, 0.1], [4.0, 5.0, 6.0])
NO_CIRCUIT = measures([0.1, 1.0, 1.0, 1.0], [0.0, 0.1, 0.1, 0.1], [4.0, 8.0, 7.0, 6.0])
STOPPED_AT_79 = measures([0.1, 1.0, 1.0, 1.0, 1.0], [0.0, 0.1, 0.3, 0.6, 0.79], [4.0, 8.0, 6.0, 2.0, 0.9])
GROKKED = measures([0.1, 1.0, 1.0, 1.0, 1.0], [0.0, 0.1, 0.6, 1.0, 1.0], [4.0, 8.0, 2.0, 0.01, 0.001],
                   excluded=[1.0, 1.0, 3.0, 6.0, 6.0])
CLEANUP_UNFINISHED = measures([0.1, 1.0, 1.0, 1.0], [0.0, 0.6, 1.0, 0.9], [4.0, 1.0, 0.01, 0.2],
                              excluded=[1.0, 1.0, 1.0, 5.0])


# -- phases ----------------------------------------------------------------------------------
def test_no_phase_is_marked_before_memorisation_finishes():
    assert phase_spans(NOT_MEMORISED) == []
    assert phase_sentence(NOT_MEMORISED) == ("Memorisation did not finish: train accuracy peaked at 80.0% "
                                             "(below 99%), so no phase is marked.")
    assert "Memorisation did not finish" not in phase_sentence(NO_CIRCUIT)


def test_circuit_formation_needs_the_test_loss_to_fall():
    assert [s.name for s in phase_spans(NO_CIRCUIT)] == ["memorisation"]
    text = phase_sentence(NO_CIRCUIT)
    assert text.startswith("Training went through memorisation (steps 0-10).")
    assert "Circuit formation and cleanup were not reached" in text
    assert [s.name for s in phase_spans(STOPPED_AT_79)] == ["memorisation", "circuit formation"]
    assert "Circuit formation and cleanup were not reached" not in phase_sentence(STOPPED_AT_79)


def test_cleanup_needs_the_run_to_generalise():
    # the case: test accuracy past 50% but stopped at 79% -- no cleanup, and the page says why
    assert STOPPED_AT_79.phases["start_cleanup"] is None
    text = phase_sentence(STOPPED_AT_79)
    assert "cleanup (steps" not in text
    assert "circuit formation (steps 10-40, still under way at the last checkpoint)" in text
    assert "Cleanup was not reached: test accuracy peaked at 79.0% (below 99%)." in text
    assert GROKKED.phases == {"end_memorisation": 10, "start_cleanup": 20, "end_cleanup": 30}
    text = phase_sentence(GROKKED)
    assert text == ("Training went through memorisation (steps 0-10), circuit formation (steps 10-20) and "
                    "cleanup (steps 20-30).")


def test_an_unfinished_cleanup_says_so():
    spans = phase_spans(CLEANUP_UNFINISHED, last_step=35)
    assert [(s.name, s.finished) for s in spans][-1] == ("cleanup", False) and spans[-1].end == 35
    assert "cleanup (steps 10-35, still under way at the last checkpoint)" in phase_sentence(CLEANUP_UNFINISHED, 35)
    assert "under way" not in phase_sentence(GROKKED)


def test_progress_figure_shades_only_phases_that_happened():
    assert NOT_MEMORISED.figure().layout.title.text == "Progress measures"
    assert not NOT_MEMORISED.figure().layout.shapes
    fig = STOPPED_AT_79.figure()
    assert fig.layout.title.text == "Progress measures (phases shaded)"
    assert sorted({(s.x0, s.x1) for s in fig.layout.shapes}) == [(0, 10), (10, 40)]


def test_stored_phases_are_redetected_from_the_measures():
    d = STOPPED_AT_79.to_dict() | {"phases": {"end_memorisation": 10, "start_cleanup": 30, "end_cleanup": 40}}
    assert ProgressMeasures.from_dict(d).phases["start_cleanup"] is None
    assert ProgressMeasures.from_dict(GROKKED.to_dict()).phases == GROKKED.phases
    assert "start cleanup not reached" in STOPPED_AT_79.summary()
    assert "start cleanup at step 20" in GROKKED.summary()


# -- loss spikes -------------------------------------------------------------------------------
STEPS = list(range(0, 130, 10))
ACC = [0.1, 0.5, 1.0, 1.0, 0.6, 0.7, 1.0, 1.0, 1.0, 0.95, 1.0, 1.0, 1.0]
LOSS = [5.0, 2.0, 0.01, 1e-4, 2.0, 0.5, 1e-3, 1e-4, 1e-4, 0.3, 2e-4, 1e-4, 1e-4]


def test_spikes_are_separate_episodes_after_grokking():
    spikes = loss_spikes(STEPS, LOSS, ACC)
    assert [(s.start, s.end) for s in spikes] == [(40, 50), (90, 90)]
    assert spikes[0].peak_loss == 2.0 and spikes[0].min_acc == 0.6 and spikes[0].before_loss == 1e-4
    text = spike_sentence(STEPS, LOSS, ACC)
    assert text.startswith("2 loss spikes after grokking (test loss above 10x its lowest value since grokking "
                           "and above 0.01; test accuracy first reached 99% at step 20): steps 40-50 ")
    assert "step 90 (test loss from 1.0e-04 up to 3.0e-01, test accuracy down to 95.0%)" in text


def test_what_is_not_a_spike():
    # a rise before grokking, a rise above 10x that stays under 0.01, a rise above 0.01 that stays under 10x
    steps = [0, 10, 20, 30, 40, 50, 60]
    acc = [0.1, 0.3, 1.0, 1.0, 1.0, 1.0, 1.0]
    assert loss_spikes(steps, [1.0, 5.0, 1e-4, 5e-3, 1e-4, 1e-4, 1e-4], acc) == []
    assert loss_spikes(steps, [1.0, 5.0, 0.005, 0.02, 0.004, 0.004, 0.004], acc) == []
    assert spike_sentence(steps, [1.0, 5.0, 1e-4, 5e-3, 1e-4, 1e-4, 1e-4], acc).startswith(
        "No loss spikes after grokking")
    assert len(loss_spikes(steps, [1.0, 5.0, 1e-4, 0.02, 1e-4, 1e-4, 1e-4], acc)) == 1


def test_a_run_that_never_grokked_has_no_spike_count():
    text = spike_sentence(STEPS, LOSS, [min(a, 0.9) for a in ACC])
    assert text == "Test accuracy never reached 99%, so there is no grokking to count loss spikes after."
    assert "never reached" not in spike_sentence(STEPS, LOSS, ACC)


def test_the_shipped_model_reports_its_three_spikes():
    from mechwork.runs import embedded_info
    from mechwork.summary import describe

    m = embedded_info("modadd-113")["history"]["metrics"]
    spikes = loss_spikes(m["step"], m["test_loss"], m["test_acc"])
    assert [(s.start, s.end) for s in spikes] == [(2700, 2900), (4400, 4650), (7300, 7550)]
    assert min(s.min_acc for s in spikes) < 0.61
    text = describe("modadd-113")
    assert "3 loss spikes after grokking" in text and "steps 7,300-7,550" in text


# -- summaries: describe, demo, report -----------------------------------------------------------
@pytest.fixture(scope="module")
def tiny_run(tmp_path_factory):
    out = tmp_path_factory.mktemp("truth") / "add"
    train(ModularArithmetic(p=11, op="add", train_frac=0.5, seed=0), train_cfg=TINY_CFG, out=out, quiet=True,
          device="cpu")
    return out


def with_metrics(run, dest, acc, loss):
    """A copy of ``run`` whose metrics.jsonl holds fabricated rows (test accuracy ``acc``, test loss ``loss``)."""
    import shutil

    shutil.copytree(run, dest)
    rows = [{"step": s, "wall": 0.1 * i, "lr": 1e-3, "train_loss": 0.01, "train_acc": 1.0, "test_loss": lo,
             "test_acc": a} for i, (s, a, lo) in enumerate(zip(STEPS, acc, loss, strict=True))]
    (dest / "metrics.jsonl").write_text("".join(json.dumps(r) + "\n" for r in rows))
    return dest


def test_describe_a_run_says_whether_it_grokked_and_counts_spikes(tiny_run, tmp_path):
    from mechwork.summary import describe

    grokked = describe(with_metrics(tiny_run, tmp_path / "g", ACC, LOSS))
    assert "test acc >= 99% first at step 20" in grokked and "2 loss spikes after grokking" in grokked
    assert "so far" not in grokked
    never = describe(with_metrics(tiny_run, tmp_path / "n", [min(a, 0.9) for a in ACC], LOSS))
    assert "test acc < 99% so far (best 90.00%)" in never
    assert "loss spike" not in never and "first at step" not in never


def test_info_on_induction_reports_the_induction_accuracy_and_its_step(tmp_path):
    from mechwork.summary import describe

    text = describe("induction-2l")
    assert "induction accuracy (next token inside the repeated segments of held-out sequences) 94.63% at step " \
           "3000; 1.65% elsewhere" in text
    assert "None" not in text and "test acc 0.0000" not in text and "full batch" not in text
    assert "minibatches of 64 fresh sequences per step" in text
    modadd = describe("modadd-113")
    assert "induction accuracy" not in modadd and "full batch" in modadd
    assert "test acc >= 99% first at step 800" in modadd
    # an induction run directory: its test accuracy is the induction accuracy; no grokking threshold
    out = tmp_path / "ind"
    train(TINY_INDUCTION, train_cfg=TrainConfig(steps=4, eval_every=2), out=out, quiet=True, device="cpu")
    run_text = describe(out)
    assert "induction accuracy (next token inside the repeated segments of held-out sequences): " in run_text
    assert "at step 4; best" in run_text and "test acc >= 99%" not in run_text and "so far" not in run_text


def test_recipe_describes_the_batches_that_were_drawn():
    from mechwork.source import describe_recipe as _recipe

    base = {"lr": 1e-3, "weight_decay": 1.0, "betas": [0.9, 0.98], "warmup_steps": 0, "steps": 10}
    task = ModularArithmetic(p=11, train_frac=0.5)  # 60 training pairs
    assert "full batch," in _recipe(base | {"batch_size": None}, task)
    assert "minibatches of 16," in _recipe(base | {"batch_size": 16}, task)
    assert "full batch (batch_size 64 >= 60 training pairs)" in _recipe(base | {"batch_size": 64}, task)
    ind = _recipe(base | {"batch_size": None}, TINY_INDUCTION)
    assert "minibatches of 2 fresh sequences per step" in ind and "full batch" not in ind
    assert _recipe(base | {"batch_size": None}, task).endswith(", 10 steps")
    assert _recipe(base | {"batch_size": None, "steps": 1}, task).endswith(", 1 step")


def test_demo_report_claims_grokking_and_spikes_only_from_history(monkeypatch):
    import mechwork.summary as summary

    text = summary.demo_report("cpu")
    assert "grokked (test acc >= 99%) at step 800" in text and "3 loss spikes after grokking" in text
    real = summary.embedded_info("modadd-113")
    fake = real | {"summary": real["summary"] | {"grok_step": None}, "history": {}}
    monkeypatch.setattr(summary, "embedded_info", lambda name: fake)
    text = summary.demo_report("cpu")
    assert "test acc never reached 99% in training" in text
    assert "grokked" not in text and "loss spike" not in text


def test_fourier_report_marks_unreached_phases(tiny_run):
    from mechwork.analysis.progress import progress_measures
    from mechwork.report import fourier_report

    text, data = fourier_report(tiny_run)
    phases = progress_measures(tiny_run).phases
    assert data["phases"] == phases
    assert any(v is None for v in phases.values()) and any(v is not None for v in phases.values())
    for k, v in phases.items():
        want = "not reached" if v is None else f"step {v}"
        assert any(line.strip().startswith(f"phase: {k.replace('_', ' ')}") and line.rstrip().endswith(want)
                   for line in text.splitlines()), (k, text)
    assert "step None" not in text
    assert phase_sentence(progress_measures(tiny_run), TINY_CFG.steps) in text
    assert "Test accuracy never reached 99%" in text or "loss spike" in text


# -- the grokking dashboard ---------------------------------------------------------------------
def page_text(page) -> str:
    return page.render("cdn")


@pytest.mark.parametrize("op", OPS)
def test_dashboard_works_for_every_op(op, tmp_path):
    from mechwork.dashboard import dashboard

    run = tmp_path / "run"
    train(ModularArithmetic(p=11, op=op, train_frac=0.5, seed=0), train_cfg=TINY_CFG, out=run, quiet=True,
          device="cpu")
    out = tmp_path / "d.html"
    page = dashboard(run, out, assets="cdn")
    titles = [b.title for b in page.blocks if b.title]
    html = out.read_text()
    fourier = op in ("add", "sub")
    assert ("Fourier spectrum of the embedding" in titles) == fourier
    assert ("Trig-identity logit fit" in titles) == fourier
    assert ("The Fourier sections are left out: they assume a Fourier circuit" in html) == (not fourier)
    assert ("Progress measures are left out" in html) == (not fourier)
    kinds = {b.title: b.kind for b in page.blocks if b.title}
    assert kinds["Progress measures"] == ("plotly" if fourier else "html")
    assert kinds["Training curves"] == "plotly" and "Attention from '=' over the (a, b) grid" in titles
    assert sum(b.kind == "view" for b in page.blocks) == 3
    assert ("they are found from the Fourier progress measures, which do not apply here" in html) == (not fourier)


def test_grokking_page_text_follows_the_history(tiny_run):
    from mechwork.analysis.grokking import analyse
    from mechwork.dashboard.grokking import grokking_page
    from mechwork.source import open_source

    base = analyse(open_source(tiny_run))
    good = grokking_page(base.replace(
        metrics=pd.DataFrame({"step": STEPS, "test_acc": ACC, "test_loss": LOSS}), progress=GROKKED))
    curves = next(b for b in good.blocks if b.title == "Training curves")
    assert curves.body["layout"]["title"]["text"] == "Training curves (log scale; phases shaded)"
    assert curves.caption == "Shaded: memorisation (red), circuit formation (yellow), cleanup (green)."
    html = page_text(good)
    assert "Training went through memorisation (steps 0-10), circuit formation" in html
    assert "2 loss spikes after grokking" in html

    bad = grokking_page(base.replace(
        metrics=pd.DataFrame({"step": STEPS, "test_acc": [min(a, 0.9) for a in ACC], "test_loss": LOSS}),
        progress=NOT_MEMORISED))
    curves = next(b for b in bad.blocks if b.title == "Training curves")
    assert curves.body["layout"]["title"]["text"] == "Training curves (log scale)" and curves.caption is None
    html = page_text(bad)
    assert "phases shaded" not in html and "Shaded:" not in html and "phase: " not in html
    assert "Memorisation did not finish" in html and "never reached 99%" in html

    unmeasured = page_text(grokking_page(base.replace(progress=None)))
    assert "The phases are not marked: they need the progress measures of at least two checkpoints." in unmeasured
    assert "phase: " not in unmeasured and "phases shaded" not in unmeasured
    assert "they need the progress measures" not in page_text(good)

    partial = page_text(grokking_page(base.replace(progress=STOPPED_AT_79)))
    assert "Cleanup was not reached" in partial and "cleanup (steps" not in partial
    assert "phase: circuit formation" in partial and "phase: cleanup" not in partial


# -- the induction dashboard ----------------------------------------------------------------------
def test_induction_page_opens_on_the_named_heads_and_says_nothing_untrue():
    from mechwork.analysis.attention import head_detectors
    from mechwork.dashboard import induction_dashboard
    from mechwork.dashboard.induction import THRESHOLD

    page = induction_dashboard("induction-2l")
    scores = head_detectors(page_model := __import__("mechwork").load("induction-2l"))
    del page_model
    ind, prev = scores.top("induction", THRESHOLD), scores.top("previous_token", THRESHOLD)
    assert ind and prev
    views = [b.body for b in page.blocks if b.kind == "view" and b.body.component == "AttentionHeads"]
    assert views
    for v in views:
        names = v.props["attentionHeadNames"]
        assert names[0] == f"L{ind[0][0]}H{ind[0][1]} induction {ind[0][2]:.2f}"  # the view opens on it
        named = len({(la, h) for la, h, _ in ind + prev})
        assert [n.split()[0] for n in names[:named]] == [f"L{la}H{h}" for la, h, _ in ind + prev]
        assert all(" " not in n for n in names[named:])
    assert all(f"the view opens on L{ind[0][0]}H{ind[0][1]} induction" in b.caption
               for b in page.blocks if b.kind == "view" and b.body.component == "AttentionHeads")
    html = page_text(page)
    assert "phases shaded" not in html and "full batch" not in html
    assert "minibatches of 64 fresh sequences per step" in html
    assert "two-layer induction circuit (Olsson et al. 2022)" in html
    assert "shows no two-layer induction circuit" not in html
    assert "Induction heads: <strong>none" not in html and "no circuit to ablate" not in html


def test_induction_page_without_a_circuit_says_so(tmp_path):
    from mechwork.analysis.attention import head_detectors
    from mechwork.dashboard import induction_dashboard
    from mechwork.dashboard.induction import THRESHOLD
    from mechwork.runs import Run

    out = tmp_path / "ind"
    train(TINY_INDUCTION, train_cfg=TrainConfig(steps=2, eval_every=1), out=out, quiet=True, device="cpu")
    scores = head_detectors(Run(out).model_at(None, "cpu"))
    assert not scores.top("induction", THRESHOLD)  # the situation under test: an untrained model
    page = induction_dashboard(out)
    html = page_text(page)
    assert "shows no two-layer induction circuit" in html and "Olsson" not in html
    assert "Induction heads: <strong>none</strong>" in html
    assert "so there is no circuit to ablate or path-patch" in html
    views = [b for b in page.blocks if b.kind == "view" and b.body.component == "AttentionHeads"]
    assert views and all(b.body.props["attentionHeadNames"][0] == "L0H0" for b in views)
    assert all("in layer order (the view opens on L0H0)" in b.caption for b in views)


def test_key_frequency_methods_agree_or_disagree_as_measured(tiny_run, monkeypatch):
    import mechwork.analysis.grokking as grokking
    from mechwork.dashboard.grokking import grokking_page
    from mechwork.source import open_source

    src = open_source(tiny_run)
    seen = []
    real = grokking.key_frequencies

    def spy(*a, **k):
        seen.append(real(*a, **k))
        return seen[-1]

    monkeypatch.setattr(grokking, "key_frequencies", spy)
    html = page_text(grokking_page(grokking.analyse(src, progress=False)))
    want = "agree" if seen[-1].agree else "disagree"
    assert f"the two methods {want}." in html
    forced = dataclasses.replace(seen[-1], from_neurons=list(seen[-1].from_embedding),
                                 freqs=list(seen[-1].from_embedding)) if not seen[-1].agree else \
        dataclasses.replace(seen[-1], from_neurons=[*seen[-1].from_embedding, 99])
    monkeypatch.setattr(grokking, "key_frequencies", lambda *a, **k: forced)
    other = "disagree" if want == "agree" else "agree"
    assert f"the two methods {other}." in page_text(grokking_page(grokking.analyse(src, progress=False)))


def test_describe_a_preset_claims_only_what_its_stored_files_hold(monkeypatch, tmp_path):
    import mechwork.summary as summary

    real = summary.embedded_info("modadd-113")
    no_history = real | {"history": {}}
    monkeypatch.setattr(summary, "embedded_info", lambda name: no_history)
    text = summary.describe("modadd-113")
    assert "test acc >= 99% first at step 800" in text and "loss spike" not in text
    assert "at step 8000: train acc 1.0000, test acc 1.0000" in text
    bare = real | {"history": {}, "summary": {}}
    monkeypatch.setattr(summary, "embedded_info", lambda name: bare)
    text = summary.describe("modadd-113")
    assert "first at step" not in text and "train acc" not in text and "None" not in text
    assert "embedded weights: none" not in text
    monkeypatch.setattr(summary, "embedded_path", lambda name: tmp_path / "missing.safetensors")
    text = summary.describe("modadd-113")
    assert "embedded weights: none (train with `mechwork train`)" in text and "trained:" not in text


# -- claims that need more evidence than a run may give ----------------------------------------
SAME_CHECKPOINT = measures([0.1, 1.0, 1.0, 1.0], [0.0, 1.0, 1.0, 1.0], [4.0, 0.01, 0.005, 0.001],
                           excluded=[1.0, 2.0, 4.0, 6.0])


def test_a_phase_over_within_one_checkpoint_interval_is_not_given_a_span():
    """Memorised and generalised at one checkpoint: circuit formation has no measurable span ("steps 10-10")."""
    text = phase_sentence(SAME_CHECKPOINT)
    assert "circuit formation (at step 10: over within one checkpoint interval)" in text
    assert "steps 10-10" not in text
    assert "within one checkpoint interval" not in phase_sentence(GROKKED)
    assert "circuit formation (steps 10-20)" in phase_sentence(GROKKED)
    # nothing to shade: no zero-width band in the figures, and the caption does not name it
    from mechwork.dashboard.grokking import phase_spans as page_spans

    assert [name for name, _, _ in page_spans(SAME_CHECKPOINT, 30)] == ["memorisation", "cleanup"]
    assert all(s.x1 > s.x0 for s in SAME_CHECKPOINT.figure().layout.shapes)
    assert sorted({(s.x0, s.x1) for s in SAME_CHECKPOINT.figure().layout.shapes}) == [(0, 10), (10, 30)]
    assert len({(s.x0, s.x1) for s in GROKKED.figure().layout.shapes}) == 3
    assert [name for name, _, _ in page_spans(GROKKED, 40)] == ["memorisation", "circuit formation", "cleanup"]


def test_a_tiny_held_out_split_is_flagged_in_info_and_on_the_page(tiny_run, tmp_path):
    import shutil

    from mechwork.analysis.grokking import analyse
    from mechwork.analysis.progress import SMALL_TEST, held_out_caveat
    from mechwork.dashboard.grokking import grokking_page
    from mechwork.source import open_source
    from mechwork.summary import describe

    assert held_out_caveat(SMALL_TEST) is None and held_out_caveat(SMALL_TEST - 1) is not None
    assert "1 pair is held out" in held_out_caveat(1) and "No pair is held out" in held_out_caveat(0)
    tiny = ModularArithmetic(p=11, op="add", train_frac=0.99, seed=0)
    n = len(tiny.test_idx)
    assert 0 < n < SMALL_TEST
    dest = shutil.copytree(tiny_run, tmp_path / "tiny-split")
    cfg = json.loads((dest / "config.json").read_text())
    cfg["task"]["train_frac"] = 0.99
    (dest / "config.json").write_text(json.dumps(cfg))
    assert f"Only {n} pairs are held out" in describe(dest)
    assert "held out, so test accuracy moves" not in describe(tiny_run)

    base = open_source(tiny_run)
    assert f"Only {n} pairs are held out" in page_text(grokking_page(analyse(dataclasses.replace(base, task=tiny),
                                                                             progress=False)))
    assert "held out, so test accuracy moves" not in page_text(grokking_page(analyse(base, progress=False)))


@pytest.mark.parametrize("fve", [0.9, 0.1])
def test_the_page_says_the_model_uses_key_frequencies_only_when_the_trig_fit_explains_the_logits(
        tiny_run, monkeypatch, fve):
    """An untrained or barely trained model has candidate frequencies, not a Fourier circuit."""
    import mechwork.analysis.trig as trig
    from mechwork.analysis.grokking import analyse
    from mechwork.dashboard.grokking import FOURIER_EVIDENT, grokking_page
    from mechwork.source import open_source

    real = trig.logit_trig_fit_of
    monkeypatch.setattr(trig, "logit_trig_fit_of", lambda *a, **k: dataclasses.replace(real(*a, **k), fve=fve))
    html = page_text(grokking_page(analyse(open_source(tiny_run), progress=False)))
    assert ("It uses the <strong>key frequencies" in html) == (fve >= FOURIER_EVIDENT)
    assert ("No Fourier circuit is evident" in html) == (fve < FOURIER_EVIDENT)


@pytest.mark.parametrize("corrupted", [-0.01211, -5.8])
def test_patching_names_shares_of_the_gap_only_when_the_corruption_moves_the_metric(corrupted):
    """clean -0.0123 against corrupted -0.01211 (an untrained induction model): a '61%' share would be noise."""
    from mechwork.analysis.patching import PatchResult

    values = torch.tensor([[-0.0122, -0.0123, corrupted]])
    res = PatchResult(values, ("layer", "pos"), {"layer": [0], "pos": [0, 1, 2]}, "resid_pre", "layer_pos",
                      "denoising", -0.0123, corrupted)
    moved = abs(corrupted + 0.0123) > 1e-2
    assert res.gap_is_negligible() == (not moved)
    assert ("top cells L0 pos" in res.summary()) == moved
    assert ("the corruption barely moves the metric (gap 0.00019)" in res.summary()) == (not moved)


@pytest.mark.parametrize("negligible", [True, False])
def test_patch_command_prints_shares_of_the_gap_only_when_it_is_not_negligible(tiny_run, monkeypatch, negligible):
    from click.testing import CliRunner

    from mechwork.analysis.patching import PatchResult
    from mechwork.cli import cli

    monkeypatch.setattr(PatchResult, "gap_is_negligible", lambda self: negligible)
    res = CliRunner().invoke(cli, ["patch", str(tiny_run), "--top", "3", "--quiet"])
    assert res.exit_code == 0, res.output
    assert ("share of the clean-corrupted gap" in res.output) == (not negligible)
    assert ("the corruption barely moves the metric" in res.output) == negligible
    assert ("%" in res.output.split("top 3 cells")[1]) == (not negligible)


def test_a_run_stopped_before_its_planned_steps_says_where_it_stopped(tiny_run, tmp_path):
    """A killed run's config still holds the planned steps: info and the page must not present them as done."""
    import shutil

    from mechwork.analysis.grokking import analyse
    from mechwork.dashboard.grokking import grokking_page
    from mechwork.source import open_source
    from mechwork.summary import describe

    cut = shutil.copytree(tiny_run, tmp_path / "cut")
    cfg = json.loads((cut / "config.json").read_text())
    cfg["train"]["steps"] = 50
    (cut / "config.json").write_text(json.dumps(cfg))
    assert "50 steps planned, stopped at step 20" in describe(cut)
    assert "planned" not in describe(tiny_run) and "20 steps" in describe(tiny_run)
    stopped = page_text(grokking_page(analyse(open_source(cut), progress=False)))
    assert "50 steps planned, stopped at step 20" in stopped
    assert "planned" not in page_text(grokking_page(analyse(open_source(tiny_run), progress=False)))
