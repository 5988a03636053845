"""Activation patching against TransformerLens 4.3's own ``transformer_lens.patching``."""

from __future__ import annotations

from typing import cast

import pytest
import torch
import transformer_lens.patching as tlp

import mechwork
from mechwork.analysis.attention import repeated_tokens
from mechwork.analysis.metrics import correct_prob, logit_diff, loss, normalized
from mechwork.analysis.patching import patch
from mechwork.errors import ConfigError

TOL = 1e-5


@pytest.fixture(scope="module")
def induction():
    model = mechwork.load("induction-2l", device="cpu")
    half = 20
    clean = repeated_tokens(64, half, batch=4, seed=1)
    corrupted = clean.clone()
    corrupted[:, :half] = torch.randint(0, 64, (4, half), generator=torch.Generator().manual_seed(2))

    def metric(logits):  # mean log-prob of the repeated half's next tokens
        return logits[:, half:-1].log_softmax(-1).gather(-1, clean[:, half + 1:, None]).mean()

    return model, clean, corrupted, metric


@pytest.fixture(scope="module")
def modadd(embedded_model, modadd_preset):
    toks = modadd_preset.task.tokens
    g = torch.Generator().manual_seed(0)
    clean = toks[torch.randint(0, len(toks), (6,), generator=g)]
    corrupted = clean.clone()
    corrupted[:, 1] = (clean[:, 1] + 7) % 113
    right, wrong = (clean[:, 0] + clean[:, 1]) % 113, (corrupted[:, 0] + corrupted[:, 1]) % 113
    return embedded_model, clean, corrupted, logit_diff(right, wrong)


# (mechwork site, by, TL function, permutation of mechwork's dims into TL's order)
VARIANTS = [
    ("resid_pre", "layer_pos", tlp.get_act_patch_resid_pre, None),
    ("resid_mid", "layer_pos", tlp.get_act_patch_resid_mid, None),  # gradients on: see the test below
    ("attn_out", "layer_pos", tlp.get_act_patch_attn_out, None),
    ("mlp_out", "layer_pos", tlp.get_act_patch_mlp_out, None),
    ("z", "head_pos", tlp.get_act_patch_attn_head_out_by_pos, None),
    ("q", "head_pos", tlp.get_act_patch_attn_head_q_by_pos, None),
    ("k", "head_pos", tlp.get_act_patch_attn_head_k_by_pos, None),
    ("v", "head_pos", tlp.get_act_patch_attn_head_v_by_pos, None),
    ("pattern", "head_pos", tlp.get_act_patch_attn_head_pattern_by_pos, (0, 2, 1)),
    ("z", "head", tlp.get_act_patch_attn_head_out_all_pos, None),
    ("q", "head", tlp.get_act_patch_attn_head_q_all_pos, None),
    ("k", "head", tlp.get_act_patch_attn_head_k_all_pos, None),
    ("v", "head", tlp.get_act_patch_attn_head_v_all_pos, None),
    ("pattern", "head", tlp.get_act_patch_attn_head_pattern_all_pos, None),
]


@pytest.mark.parametrize("which", ["modadd", "induction"])
@pytest.mark.parametrize("site, by, tl_fn, perm", VARIANTS, ids=[f"{s}-{b}" for s, b, _, _ in VARIANTS])
def test_exactly_transformer_lens(request, which, site, by, tl_fn, perm):
    model, clean, corrupted, metric = request.getfixturevalue(which)
    if f"blocks.0.{'mlp.hook_post' if site == 'mlp_post' else 'hook_' + site}" not in model.hook_dict \
            and site in ("resid_mid", "mlp_out"):
        pytest.skip(f"{which} has no {site} (attention-only)")
    _, cache = model.run_with_cache(clean)
    ref = tl_fn(model, corrupted, cache, metric).cpu()
    ours = patch(model, clean, corrupted, metric, site=site, by=by)
    hooks = patch(model, clean, corrupted, metric, site=site, by=by, engine=False)
    got = ours.values if perm is None else ours.values.permute(*perm)
    assert got.shape == ref.shape
    assert float((got - ref).abs().max()) <= TOL
    assert float((hooks.values - ours.values).abs().max()) <= TOL  # both execution paths
    # the sweep is not degenerate (modadd's answer reads q at '=' only, which the corruption leaves alone)
    assert float(ref.std()) > 0 or (which, site) == ("modadd", "q")



@pytest.mark.parametrize("direction", ["denoising", "noising"])
def test_resid_mid_reaches_the_mlp_input_only(direction):
    """The exact condition of the resid_mid equality: TransformerLens run with gradients enabled.

    In TransformerLens 4.3's bridge ``hook_resid_mid`` is the MLP's input (``ln2.hook_in``). mechwork's
    patched resid_mid reaches the MLP's input only; the residual sum after the MLP keeps the unpatched
    value. ``get_act_patch_resid_mid`` gives the same numbers with gradients enabled (its default use);
    under ``torch.no_grad()`` its patch also reaches the residual stream, so it measures patching the
    whole residual stream between attention and MLP, and differs.
    """
    from mechwork.models import ToyConfig, build_model
    from mechwork.tasks import ModularArithmetic

    task = ModularArithmetic(p=23, op="add", train_frac=0.3, seed=0)
    model = build_model(ToyConfig.for_task(task, seed=0, n_layers=2), device="cpu").eval()
    toks = task.tokens
    clean = toks[torch.randint(0, len(toks), (6,), generator=torch.Generator().manual_seed(0))]
    corrupted = clean.clone()
    corrupted[:, 1] = (clean[:, 1] + 7) % 23
    metric = logit_diff((clean[:, 0] + clean[:, 1]) % 23, (corrupted[:, 0] + corrupted[:, 1]) % 23)
    source, base = (clean, corrupted) if direction == "denoising" else (corrupted, clean)
    ours = patch(model, clean, corrupted, metric, site="resid_mid", by="layer_pos", direction=direction).values
    _, src_cache = model.run_with_cache(source)
    with torch.enable_grad():
        tl_grad = tlp.get_act_patch_resid_mid(model, base, src_cache, metric)
    with torch.no_grad():
        tl_no_grad = tlp.get_act_patch_resid_mid(model, base, src_cache, metric)
    assert float((tl_grad - ours).abs().max()) <= TOL
    assert float((tl_no_grad - ours).abs().max()) > 100 * TOL  # the MLP-input-only patch is not the same thing

    # what TransformerLens measures under no_grad: the residual stream itself set to the source's resid_mid
    whole = torch.zeros_like(ours)
    pre: dict[str, torch.Tensor] = {}
    for layer in range(2):
        for pos in range(toks.shape[1]):
            def keep_pre(x, hook, pre=pre):
                pre["x"] = x.clone()
                return x

            def set_resid(attn_out, hook, layer=layer, pos=pos, pre=pre):
                out = attn_out.clone()
                out[:, pos] = src_cache[f"blocks.{layer}.hook_resid_mid"][:, pos] - pre["x"][:, pos]
                return out

            with torch.no_grad():
                logits = model.run_with_hooks(base, fwd_hooks=[(f"blocks.{layer}.hook_resid_pre", keep_pre),
                                                               (f"blocks.{layer}.hook_attn_out", set_resid)])
            whole[layer, pos] = metric(logits)
    assert float((tl_no_grad - whole).abs().max()) <= TOL

def test_noising_and_neurons_against_single_hooked_runs(modadd):
    model, clean, corrupted, metric = modadd
    res = patch(model, clean, corrupted, metric, site="mlp_post", by="neuron", direction="noising",
                neurons=[0, 7, 300])
    _, corr_cache = model.run_with_cache(corrupted)
    for j, n in enumerate([0, 7, 300]):
        def hook(act, hook, n=n):
            act[:, :, n] = corr_cache["blocks.0.mlp.hook_post"][:, :, n]
            return act

        with torch.no_grad():
            want = float(metric(model.run_with_hooks(clean, fwd_hooks=[("blocks.0.mlp.hook_post", hook)])))
        assert abs(float(res.values[0, j]) - want) <= TOL
    assert res.coords["neuron"] == [0, 7, 300] and res.direction == "noising"
    hooks = patch(model, clean, corrupted, metric, site="mlp_post", by="neuron", direction="noising",
                  neurons=[0, 7, 300], engine=False)
    torch.testing.assert_close(hooks.values, res.values, atol=TOL, rtol=0)


def test_per_example_metric_keeps_the_batch(induction):
    model, clean, corrupted, _ = induction
    tgt = clean[:, 1:]
    mask = torch.zeros_like(tgt, dtype=torch.bool)
    mask[:, 20:] = True
    tgt = torch.cat([tgt, tgt[:, -1:]], 1)
    mask = torch.cat([mask, torch.zeros_like(mask[:, :1])], 1)
    per = patch(model, clean, corrupted, loss(tgt, mask, per_example=True), site="z", by="head", layers=[1])
    assert per.per_example is not None and per.per_example.shape == (1, 4, 4)
    torch.testing.assert_close(per.values, per.per_example.mean(-1))


def test_metric_helpers(modadd):
    model, clean, corrupted, metric = modadd
    with torch.no_grad():
        cl, co = model(clean), model(corrupted)
    norm = normalized(metric, cl, co)
    assert abs(float(norm(cl)) - 1) < 1e-6 and abs(float(norm(co))) < 1e-6
    res = patch(model, clean, corrupted, norm, site="resid_pre", by="layer_pos")
    assert abs(float(res.values[0, 1]) - 1) < 1e-4  # b sits at pos 1: patching it restores everything
    right = (clean[:, 0] + clean[:, 1]) % 113
    p = correct_prob(right)(cl)
    assert 0.9 < float(p) <= 1.0
    assert float(loss(right)(cl)) == pytest.approx(float(-cl[:, -1].log_softmax(-1).gather(1, right[:, None]).mean()))


def test_result_is_labelled(induction):
    model, clean, corrupted, metric = induction
    res = patch(model, clean, corrupted, metric, site="z", by="head_pos", layers=[1], positions=range(20, 40))
    assert res.dims == ("layer", "pos", "head") and res.values.shape == (1, 20, 4)
    frame = res.to_frame()
    assert list(frame.columns) == ["layer", "pos", "head", "value", "effect"] and len(frame) == 80
    assert frame["pos"].min() == 20
    top = res.top(3)
    assert len(top) == 3 and top[0][0].startswith("L1H") and abs(top[0][2]) >= abs(top[-1][2])
    assert "z by head_pos" in res.summary()
    assert len(res.figure().data) == 1 and "<table" in res._repr_html_()


# -- bad input -------------------------------------------------------------------------
def test_bad_input_is_a_clear_error(induction):
    model, clean, corrupted, metric = induction
    with pytest.raises(ConfigError, match="same shape"):
        patch(model, clean, corrupted[:, :30], metric)
    with pytest.raises(ConfigError, match="'site' must be one of resid_pre, resid_mid, .*mlp_post"):
        patch(model, clean, corrupted, metric, site="resid")
    with pytest.raises(ConfigError, match="one of the sites this model has: resid_pre, attn_out, z, q, k, v, pat"):
        patch(model, clean, corrupted, metric, site="mlp_out")
    with pytest.raises(ConfigError, match="'by' must be one of head, head_pos for site 'z'"):
        patch(model, clean, corrupted, metric, site="z", by="layer_pos")
    bad_metric = r"'metric' must return a scalar or a \[batch\] tensor .*\(got shape \(4, 40\)\)"
    with pytest.raises(ConfigError, match=bad_metric):
        patch(model, clean, corrupted, lambda lg: lg[..., 0], site="z", by="head")
    with pytest.raises(ConfigError, match=r"'heads' must be indices in \[0, 4\) \(got 4\)"):
        patch(model, clean, corrupted, metric, site="z", by="head", heads=[4])
    with pytest.raises(ConfigError, match=r"'layers' must be indices in \[0, 2\) \(got 2\)"):
        patch(model, clean, corrupted, metric, site="z", by="head", layers=[0, 2])
    with pytest.raises(ConfigError, match="'direction' must be denoising or noising"):
        patch(model, clean, corrupted, metric, direction="up")
    model.train()
    try:
        with pytest.raises(ConfigError, match=r"eval mode .*call model.eval\(\)"):
            patch(model, clean, corrupted, metric)
    finally:
        model.eval()


# -- the command line ----------------------------------------------------------------------
def test_cli_patch_prints_top_cells_and_writes_json_and_a_page(tmp_path, capsys):
    import json

    from mechwork.cli import main

    js, page = tmp_path / "z.json", tmp_path / "z.html"
    assert main(["patch", "induction-2l", "--site", "z", "--by", "head_pos", "--n", "4", "--top", "3",
                 "--json", str(js), "--dashboard", str(page)]) == 0
    out = capsys.readouterr().out
    assert "top 3 cells" in out and out.count("    L1H") + out.count("    L0H") == 3
    data = json.loads(js.read_text())
    assert data["dims"] == ["layer", "pos", "head"] and len(data["values"]) == 2 and len(data["values"][0]) == 48
    assert "activation patching: induction-2l" in page.read_text()


@pytest.mark.parametrize("args, message", [
    (["patch", "induction-2l", "--site", "nope"], "'nope' is not one of"),
    (["patch", "induction-2l", "--site", "mlp_out"], "one of the sites this model has"),
    (["patch", "induction-2l", "--site", "z", "--by", "layer"], "'by' must be one of head, head_pos"),
    (["patch", "induction-2l", "--dashboard", "MISSING/x.html"], "directory 'MISSING' does not exist"),
    (["patch", "nowhere"], "must be a run directory or one of modadd-113, induction-2l"),
])
def test_cli_patch_bad_input(tmp_path, monkeypatch, capsys, args, message):
    from mechwork.cli import main

    monkeypatch.chdir(tmp_path)
    assert main(args) == 2
    err = capsys.readouterr().err
    assert message in err and err.count("\n") == 1
    assert list(tmp_path.iterdir()) == []


def test_the_every_sweeps_and_per_example_reduction_match_transformer_lens(modadd):
    model, clean, corrupted, metric = modadd
    _, cache = model.run_with_cache(clean)
    ref = cast(torch.Tensor, tlp.get_act_patch_block_every(model, corrupted, cache, metric)).cpu()  # [3, layer, pos]
    ours = torch.stack([patch(model, clean, corrupted, metric, site=s, by="layer_pos").values
                        for s in ("resid_pre", "attn_out", "mlp_out")])
    assert float((ours - ref).abs().max()) <= TOL
    ref = cast(torch.Tensor, tlp.get_act_patch_attn_head_all_pos_every(model, corrupted, cache, metric)).cpu()
    ours = torch.stack([patch(model, clean, corrupted, metric, site=s, by="head").values
                        for s in ("z", "q", "k", "v", "pattern")])
    assert float((ours - ref).abs().max()) <= TOL
    # a [batch] metric, averaged by TransformerLens's reduce="mean" and kept per example by mechwork
    right = (clean[:, 0] + clean[:, 1]) % 113
    wrong = (corrupted[:, 0] + corrupted[:, 1]) % 113
    per = logit_diff(right, wrong, per_example=True)
    ref = tlp.get_act_patch_resid_pre(model, corrupted, cache, per, reduce="mean").cpu()
    ours = patch(model, clean, corrupted, per, site="resid_pre", by="layer_pos")
    assert ours.per_example is not None and ours.per_example.shape == (1, 3, 6)
    assert float((ours.values - ref).abs().max()) <= TOL


def test_k_and_v_by_head_on_grouped_query_attention_are_the_key_value_heads(tmp_path):
    """A GQA Llama (4 query heads, 2 key/value heads): hook_k/hook_v hold 2 heads, so k/v cells are kv heads;
    each cell equals patching that kv head by hand (it crashed with an IndexError before)."""
    import os

    from transformers import LlamaConfig, LlamaForCausalLM


    os.environ.setdefault("HF_HUB_OFFLINE", "1")
    torch.manual_seed(0)
    LlamaForCausalLM(LlamaConfig(vocab_size=120, hidden_size=64, intermediate_size=128, num_hidden_layers=2,
                                 num_attention_heads=4, num_key_value_heads=2, max_position_embeddings=64)
                     ).save_pretrained(tmp_path)
    model = mechwork.load(str(tmp_path))
    clean, corrupted = torch.tensor([[1, 5, 7, 9, 11]]), torch.tensor([[1, 5, 8, 9, 11]])

    def metric(logits):
        return logits[:, -1, 3] - logits[:, -1, 4]

    for site in ("k", "v"):
        res = patch(model, clean, corrupted, metric, site=site, by="head")
        assert res.values.shape == (2, 2) and res.coords["head"] == [0, 1]
        _, cache = model.run_with_cache(clean)
        name = f"blocks.1.attn.hook_{site}"

        def put(act, hook, name=name, cache=cache):
            act[:, :, 1] = cache[name][:, :, 1]
            return act

        with torch.no_grad():
            by_hand = float(metric(model.run_with_hooks(corrupted, fwd_hooks=[(name, put)])))
        assert abs(float(res.values[1, 1]) - by_hand) < 1e-5
    with pytest.raises(ConfigError, match=r"indices in \[0, 2\)"):
        patch(model, clean, corrupted, metric, site="k", by="head", heads=[3])
