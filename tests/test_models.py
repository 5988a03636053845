from __future__ import annotations

import math

import pytest
import torch

from mechwork.errors import CheckpointError, ConfigError
from mechwork.models import PRESETS, ToyConfig, build_model, load_weights, preset, save_tensors, weights

HOOKS = [
    "hook_embed",
    "hook_pos_embed",
    "blocks.0.hook_resid_pre",
    "blocks.0.attn.hook_q",
    "blocks.0.attn.hook_k",
    "blocks.0.attn.hook_v",
    "blocks.0.attn.hook_attn_scores",
    "blocks.0.attn.hook_pattern",
    "blocks.0.attn.hook_z",
    "blocks.0.hook_attn_out",
    "blocks.0.hook_resid_mid",
    "blocks.0.mlp.hook_pre",
    "blocks.0.mlp.hook_post",
    "blocks.0.hook_mlp_out",
    "blocks.0.hook_resid_post",
]


@pytest.fixture(scope="module")
def modadd_model():
    return build_model(preset("modadd-113").model, "cpu")


def test_modadd_cache_names_and_shapes(modadd_model):
    toks = preset("modadd-113").task.tokens[:5]
    logits, cache = modadd_model.run_with_cache(toks)
    assert logits.shape == (5, 3, 113)
    for name in HOOKS:
        assert name in cache, name
    assert cache["hook_embed"].shape == (5, 3, 128)
    assert cache["blocks.0.attn.hook_pattern"].shape == (5, 4, 3, 3)
    assert cache["blocks.0.attn.hook_z"].shape == (5, 3, 4, 32)
    assert cache["blocks.0.mlp.hook_post"].shape == (5, 3, 512)
    # causal: nothing attends forward
    pat = cache["blocks.0.attn.hook_pattern"]
    assert torch.all(pat.triu(diagonal=1) == 0)
    torch.testing.assert_close(pat.sum(-1), torch.ones(5, 4, 3))
    # the residual stream adds up: resid_post = embed + pos + attn_out + mlp_out
    total = cache["hook_embed"] + cache["hook_pos_embed"] + cache["blocks.0.hook_attn_out"]
    total = total + cache["blocks.0.hook_mlp_out"]
    torch.testing.assert_close(cache["blocks.0.hook_resid_post"], total, atol=1e-5, rtol=1e-5)


def test_run_with_hooks_intervenes(modadd_model):
    toks = preset("modadd-113").task.tokens[:7]
    clean = modadd_model(toks)

    def kill(post, hook):
        return torch.zeros_like(post)

    ablated = modadd_model.run_with_hooks(toks, fwd_hooks=[("blocks.0.mlp.hook_post", kill)])
    assert not torch.allclose(clean, ablated)
    # the ablated logits equal a by-hand computation without the MLP's weights (only b_out remains)
    w = weights(modadd_model)
    _, cache = modadd_model.run_with_cache(toks)
    resid = cache["blocks.0.hook_resid_mid"] + w["layers.0.mlp.fc_out.bias"]
    torch.testing.assert_close(ablated, resid @ w["head.weight"].T, atol=1e-5, rtol=1e-5)
    # and hooks are scoped: the next plain run is clean again
    torch.testing.assert_close(modadd_model(toks), clean)


def test_induction_preset_is_attention_only():
    pre = preset("induction-2l")
    model = build_model(pre.model, "cpu")
    toks = pre.task.train_batch(0).tokens[:2]
    _, cache = model.run_with_cache(toks)
    assert "blocks.1.attn.hook_pattern" in cache
    assert cache["blocks.1.attn.hook_pattern"].shape == (2, 4, 48, 48)
    assert not any("mlp" in k for k in cache)
    assert pre.model.n_layers == 2 and pre.model.attn_only


def test_biases_match_the_paper(modadd_model):
    w = weights(modadd_model)
    for name in ("q", "k", "v", "o"):
        b = w[f"layers.0.attn.{name}.bias"]
        assert not b.requires_grad and torch.all(b == 0)
    assert w["layers.0.mlp.fc_in.bias"].requires_grad and w["layers.0.mlp.fc_out.bias"].requires_grad
    assert not any(k.startswith("head.bias") for k in w)  # no unembed bias at all


def test_nanda_init_scales(modadd_model):
    w = weights(modadd_model)
    for name in ("tok_embed.weight", "layers.0.attn.q.weight", "layers.0.mlp.fc_in.weight"):
        assert abs(w[name].std().item() - 1 / math.sqrt(128)) < 0.01, name
    assert abs(w["head.weight"].std().item() - 1 / math.sqrt(114)) < 0.01


def test_seeded_build_is_deterministic_and_eval_mode():
    cfg = ToyConfig(seed=3)
    a, b, c = build_model(cfg, "cpu"), build_model(cfg, "cpu"), build_model(ToyConfig(seed=4), "cpu")
    assert not a.training
    for k, v in save_tensors(a).items():
        assert torch.equal(v, save_tensors(b)[k])
    assert not torch.equal(save_tensors(a)["tok_embed.weight"], save_tensors(c)["tok_embed.weight"])


def test_weights_round_trip_and_mismatch(modadd_model):
    other = build_model(ToyConfig(seed=9), "cpu")
    load_weights(other, save_tensors(modadd_model))
    toks = preset("modadd-113").task.tokens[:4]
    torch.testing.assert_close(other(toks), modadd_model(toks))
    bad = save_tensors(modadd_model)
    bad["head.weight"] = torch.zeros(5, 5)
    with pytest.raises(CheckpointError, match=r"'head.weight' has shape \(5, 5\), model needs \(113, 128\)"):
        load_weights(other, bad, source="x.safetensors")
    bad.pop("head.weight")
    with pytest.raises(CheckpointError, match=r"missing \['head.weight'\]"):
        load_weights(other, bad)


@pytest.mark.parametrize(
    ("kwargs", "message"),
    [
        ({"n_layers": 0}, "'n_layers' must be an integer >= 1 (got 0)"),
        ({"act_fn": "tanh"}, "'act_fn' must be one of relu, gelu, gelu_new, silu (got 'tanh')"),
        ({"normalization": "RMS"}, "'normalization' must be None or 'LN' (got 'RMS')"),
        ({"d_mlp": 0}, "'d_mlp' must be an integer >= 1, or None for attention-only (got 0)"),
    ],
)
def test_bad_toy_config(kwargs, message):
    with pytest.raises(ConfigError) as e:
        ToyConfig(**kwargs)
    assert str(e.value) == message


def test_unknown_preset_and_fields():
    with pytest.raises(ConfigError, match="'preset' must be one of modadd-113, induction-2l"):
        preset("gpt2")
    with pytest.raises(ConfigError, match="unknown model fields"):
        ToyConfig.from_dict({"d_model": 8, "width": 3})
    assert set(PRESETS) == {"modadd-113", "induction-2l"}


def test_device_is_respected():
    model = build_model(ToyConfig(), torch.device("cpu"))
    assert all(p.device.type == "cpu" for p in model.parameters())
