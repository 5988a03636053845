"""The training fast path must compute exactly what the hooked bridge computes."""

from __future__ import annotations

import torch
import torch.nn.functional as F

from mechwork.fastpath import modadd_logits, supports_fast_path
from mechwork.models import ToyConfig, build_model, preset, weights
from mechwork.tasks import InductionTask, ModularArithmetic


def test_fast_logits_match_bridge_at_init():
    pre = preset("modadd-113")
    model = build_model(pre.model, "cpu")
    toks = pre.task.tokens
    with torch.no_grad():
        ref = model(toks)[:, -1]
        fast = modadd_logits(weights(model), pre.model, toks)
    assert (ref - fast).abs().max().item() <= 1e-4


def test_fast_gradients_match_bridge_gradients():
    task = ModularArithmetic(p=17, train_frac=0.5)
    cfg = ToyConfig.for_task(task, attn_bias=True)  # exercise every bias too
    model = build_model(cfg, "cpu")
    with torch.no_grad():  # non-zero attention biases, so their path is tested
        for k, p in weights(model).items():
            if ".attn." in k and k.endswith("bias"):
                p.normal_(0, 0.1)
    b = task.eval_batches()["train"]
    w = weights(model)
    F.cross_entropy(modadd_logits(w, cfg, b.tokens), b.targets[:, -1]).backward()
    fast_grads = {k: p.grad.clone() for k, p in w.items()}
    model.zero_grad()
    F.cross_entropy(model(b.tokens)[:, -1], b.targets[:, -1]).backward()
    for k, p in w.items():
        torch.testing.assert_close(fast_grads[k], p.grad, atol=1e-5, rtol=1e-4, msg=k)


def test_trained_weights_load_back_into_bridge(embedded_model, modadd_preset):
    # the embedded model was trained with the fast path; the bridge must agree to 1e-4
    toks = modadd_preset.task.tokens
    with torch.no_grad():
        ref = embedded_model(toks)[:, -1]
        fast = modadd_logits(weights(embedded_model), modadd_preset.model, toks)
    assert (ref - fast).abs().max().item() <= 1e-4


def test_support_matrix():
    task = ModularArithmetic(p=7)
    assert supports_fast_path(ToyConfig.for_task(task), task)
    assert not supports_fast_path(ToyConfig.for_task(task, n_layers=2), task)
    assert not supports_fast_path(ToyConfig.for_task(task, normalization="LN"), task)
    ind = InductionTask()
    assert not supports_fast_path(ToyConfig.for_task(ind), ind)


def test_shape_annotations_are_checked_at_run_time():
    # the suite runs with jaxtyping's import hook: a [batch, 5] token tensor violates "batch 3"
    import jaxtyping
    import pytest

    pre = preset("modadd-113")
    model = build_model(pre.model, "cpu")
    with pytest.raises(jaxtyping.TypeCheckError):
        modadd_logits(weights(model), pre.model, torch.zeros(4, 5, dtype=torch.long))
