"""Attention patterns and head detectors, checked against loops over TransformerLens's own cache."""

from __future__ import annotations

import pytest
import torch

import mechwork
from mechwork.analysis.attention import attention_patterns, head_detectors, repeated_tokens
from mechwork.dashboard import attention_heads
from mechwork.errors import ConfigError


@pytest.fixture(scope="module")
def induction_model():
    return mechwork.load("induction-2l", device="cpu")


def test_patterns_match_the_cache_and_label_tokens(embedded_model, modadd_preset):
    toks = modadd_preset.task.tokens[:5]
    pats = attention_patterns(embedded_model, toks)
    _, cache = embedded_model.run_with_cache(toks)
    torch.testing.assert_close(pats.patterns[:, 0], cache["blocks.0.attn.hook_pattern"].float())
    assert pats.labels[3] == ["0", "3", "="]
    view = attention_heads(**pats.view_args(3))
    assert view.component == "AttentionHeads" and view.props["tokens"] == ["0", "3", "="]
    assert len(view.props["attention"]) == 4
    with pytest.raises(ConfigError, match="example index"):
        pats.view_args(5)


def test_detectors_agree_with_a_brute_force_loop(induction_model):
    half = 10
    scores = head_detectors(induction_model, half=half, batch=4, seed=3)
    toks = repeated_tokens(64, half, batch=4, seed=3)
    _, cache = induction_model.run_with_cache(toks)
    for layer in range(2):
        pat = cache[f"blocks.{layer}.attn.hook_pattern"]
        for h in range(4):
            prev = [float(pat[b, h, t, t - 1]) for b in range(4) for t in range(1, 2 * half)]
            ind = [float(pat[b, h, t, t - half + 1]) for b in range(4) for t in range(half, 2 * half)]
            dup = [float(pat[b, h, t, t - half]) for b in range(4) for t in range(half, 2 * half)]
            for name, vals in (("previous_token", prev), ("induction", ind), ("duplicate_token", dup)):
                assert abs(float(scores[name][layer, h]) - sum(vals) / len(vals)) < 1e-5, (name, layer, h)


def test_the_embedded_induction_model_has_the_circuit(induction_model):
    scores = head_detectors(induction_model)
    prev, ind = scores.top("previous_token"), scores.top("induction")
    assert any(layer == 0 for layer, _, _ in prev), scores.to_frame()
    assert any(layer == 1 for layer, _, _ in ind), scores.to_frame()
    fig = scores.figure()
    assert len(fig.data) == 3


def test_bad_detector_arguments(induction_model):
    with pytest.raises(ConfigError, match="half"):
        head_detectors(induction_model, half=40)
    with pytest.raises(ConfigError, match="at most n_ctx = 48 positions"):
        attention_patterns(induction_model, torch.zeros(1, 60, dtype=torch.long))
