"""Progress measures over a real (small-p) training run: the orderings Nanda et al. report."""

from __future__ import annotations

import json
import math
import shutil

import pytest
import torch

from mechwork.analysis.progress import progress_measures
from mechwork.errors import CheckpointError, NotApplicable
from mechwork.tasks import InductionTask, ModularArithmetic
from mechwork.training import TrainConfig, train

P31 = ModularArithmetic(p=31, op="add", train_frac=0.5, seed=0)


@pytest.fixture(scope="module")
def p31_run(tmp_path_factory):
    out = tmp_path_factory.mktemp("p31") / "run"
    train(P31, train_cfg=TrainConfig(steps=2000, eval_every=50), out=out, quiet=True, device="cpu")
    return out


@pytest.fixture(scope="module")
def p31_measures(p31_run):
    return progress_measures(p31_run)


def test_phases_are_ordered_and_match_the_paper(p31_measures):
    pm = p31_measures
    ph = pm.phases
    assert None not in ph.values(), ph
    assert ph["end_memorisation"] < ph["start_cleanup"] < ph["end_cleanup"]
    steps = pm.steps.tolist()
    # circuit formation: excluded loss rises while test accuracy is still below 50%
    before = [s for s in steps if ph["end_memorisation"] <= s < ph["start_cleanup"]]
    assert all(pm.at("test_acc", s) < 0.5 for s in before)
    assert pm.at("excluded_loss", before[-1]) > pm.at("excluded_loss", ph["end_memorisation"]) + 0.5
    # restricted loss falls before the test loss does
    first_below = lambda name: next(s for s in steps if pm.at(name, s) < 1.0)
    assert first_below("restricted_loss") < first_below("test_loss")
    # the embedding's Gini rises during cleanup
    assert pm.at("gini", ph["end_cleanup"]) > pm.at("gini", ph["start_cleanup"]) + 0.05
    # memorisation: train loss low while the test loss is far above ln p
    assert pm.at("test_loss", ph["end_memorisation"]) > math.log(31)


def test_measures_agree_with_the_training_log(p31_run, p31_measures):
    rows = {json.loads(line)["step"]: json.loads(line) for line in (p31_run / "metrics.jsonl").read_text().splitlines()}
    for s in (0, 1000, 2000):
        assert p31_measures.at("test_loss", s) == pytest.approx(rows[s]["test_loss"], rel=1e-4, abs=1e-6)
        assert p31_measures.at("train_acc", s) == pytest.approx(rows[s]["train_acc"], abs=1e-6)


def test_weight_norm_and_key_freqs(p31_run, p31_measures):
    from mechwork.runs import Run

    w = Run(p31_run).weights_at(2000)
    assert p31_measures.at("weight_norm", 2000) == pytest.approx(sum(float(v.pow(2).sum()) for v in w.values()),
                                                                rel=1e-5)
    assert 1 <= len(p31_measures.key_freqs) <= 8
    assert set(p31_measures.to_frame().columns) >= {"step", "restricted_loss", "excluded_loss", "gini"}
    assert p31_measures.figure().to_dict()["data"]


def test_given_frequencies_are_used(p31_run):
    pm = progress_measures(p31_run, key_freqs=[1, 2])
    assert pm.key_freqs == [1, 2]


def test_no_checkpoints_and_wrong_task(p31_run, tmp_path):
    empty = tmp_path / "empty"
    shutil.copytree(p31_run, empty)
    shutil.rmtree(empty / "checkpoints")
    with pytest.raises(CheckpointError, match="has no checkpoints"):
        progress_measures(empty)
    ind = tmp_path / "ind"
    train(InductionTask(d_vocab=8, seq_len=8, min_len=2, max_len=4, batch_size=2, n_eval=2),
          train_cfg=TrainConfig(steps=1), out=ind, quiet=True, device="cpu")
    with pytest.raises(NotApplicable, match="needs a ModularArithmetic task"):
        progress_measures(ind)


def test_vectorised_no_python_loop_over_inputs(p31_run, monkeypatch):
    # one fast-path call per checkpoint, whatever p is
    import mechwork.analysis.progress as prog

    calls = []
    real = prog.modadd_logits
    monkeypatch.setattr(prog, "modadd_logits", lambda *a, **k: calls.append(1) or real(*a, **k))
    pm = progress_measures(p31_run, key_freqs=[1])
    assert len(calls) == len(pm.steps)
    assert torch.isfinite(pm["excluded_loss"]).all()


# -- phases only on evidence ---------------------------------------------------------------
@pytest.fixture(scope="module")
def p31_stopped(tmp_path_factory):
    """The same task stopped at step 400, part-way to generalising (test accuracy between 50% and 99%)."""
    out = tmp_path_factory.mktemp("p31s") / "run"
    train(P31, train_cfg=TrainConfig(steps=400, eval_every=50), out=out, quiet=True, device="cpu")
    return progress_measures(out)


def test_a_run_stopped_before_generalising_gets_no_cleanup(p31_stopped):
    from mechwork.analysis.progress import phase_sentence, phase_spans

    pm = p31_stopped
    best = float(pm["test_acc"].max())
    assert 0.5 <= best < 0.99, best  # the situation under test: past 50%, not generalised
    assert pm.phases["start_cleanup"] is None and pm.phases["end_cleanup"] is None
    spans = phase_spans(pm)
    assert [s.name for s in spans] == ["memorisation", "circuit formation"]
    assert spans[-1].finished is False and spans[-1].end == 400
    text = phase_sentence(pm)
    assert "cleanup (steps" not in text and f"Cleanup was not reached: test accuracy peaked at {best:.1%}" in text
    assert "still under way at the last checkpoint" in text
    assert pm.figure().layout.title.text == "Progress measures (phases shaded)"  # two phases did happen


def test_a_generalised_run_gets_all_three_phases(p31_measures):
    from mechwork.analysis.progress import phase_sentence, phase_spans

    spans = phase_spans(p31_measures)
    assert [s.name for s in spans] == ["memorisation", "circuit formation", "cleanup"]
    assert all(s.finished for s in spans)
    text = phase_sentence(p31_measures)
    assert "not reached" not in text and "under way" not in text
    assert f"cleanup (steps {spans[2].start:,}-{spans[2].end:,})" in text
