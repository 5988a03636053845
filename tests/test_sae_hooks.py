"""SAE latents as hook points: splicing, the cache, patching by latent, ablation, restoring, bad input.

Every reproduction is checked against code written here: the cached latents against ``sae.encode`` of the
clean cache and against the encoder written out (away from TopK ties), and the effect of a patched or
ablated latent as one ``run_with_hooks`` per cell on the model's own hook, adding ``change * W_dec[j]``
(what the spliced SAE with its error term must do) or replacing the activation by the decoded latents.
The splicing bound on modadd-113 uses the weights after ``blocks.0.mlp.hook_post``: the logits are linear
in that activation there (one layer, no LayerNorm), so the logit change is exactly the reconstruction
error mapped through ``W_out @ W_U``, and bounded by its norm times that map's norm.
"""

from __future__ import annotations

import pytest
import torch

import mechwork
from mechwork.analysis.attribution import attribute
from mechwork.analysis.metrics import logit_diff
from mechwork.analysis.patching import patch
from mechwork.analysis.sae import SAE, SAEConfig
from mechwork.analysis.saehook import HOOK_SUFFIXES, ablate_latents, run_with_saes, spliced
from mechwork.analysis.saepatch import patch_latents
from mechwork.analysis.saetrain import SAETrainConfig, train_sae
from mechwork.errors import ConfigError
from mechwork.models import weights

HOOK = "blocks.0.mlp.hook_post"
LAT = f"{HOOK}.hook_sae_acts_post"
P = 113


def _encode_by_hand(sae: SAE, x: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor]:
    """Pre-activations and latents, written out (not sae.encode): ReLU, then for TopK the k largest kept; and
    where the k-th and (k+1)-th largest are within 1e-5 (a tie: which one TopK keeps is arbitrary)."""
    pre = torch.einsum("...i,il->...l", x - sae.b_dec, sae.W_enc) + sae.b_enc
    acts = pre.clamp_min(0)
    tie = torch.zeros(acts.shape[:-1], dtype=torch.bool)
    if sae.cfg.architecture == "topk":
        top = acts.sort(-1, descending=True).values
        kth = top[..., sae.cfg.k - 1: sae.cfg.k]
        tie = (top[..., sae.cfg.k - 1] - top[..., sae.cfg.k] < 1e-5) & (top[..., sae.cfg.k] > 0)
        acts = torch.where(acts >= kth, acts, torch.zeros_like(acts))
    return pre, acts, tie


@pytest.fixture(scope="module")
def modadd():
    torch.manual_seed(0)
    model = mechwork.load("modadd-113", device="cpu").eval()
    toks = mechwork.preset("modadd-113").task.tokens
    return model, toks


@pytest.fixture(scope="module")
def trained_sae(modadd):
    """A TopK SAE trained briefly (mechwork's train_sae) on hook_post at the '=' position; its quality is reported,
    not relied on: every check below holds for any SAE."""
    model, toks = modadd
    with torch.no_grad():
        _, cache = model.run_with_cache(toks, names_filter=HOOK)
    x = cache[HOOK][:, -1]
    cfg = SAEConfig(d_in=512, d_sae=256, architecture="topk", k=16, hook_name=HOOK, model_name="modadd-113")
    sae = train_sae(x, cfg, SAETrainConfig(steps=100, batch_size=256, lr=3e-3, log_every=50), quiet=True).sae.eval()
    sae.requires_grad_(False)
    with torch.no_grad():
        fve = 1 - (sae(x) - x).pow(2).sum() / (x - x.mean(0)).pow(2).sum()
    print(f"trained SAE at {HOOK} ('=' position): FVE {float(fve):.3f}")
    return sae


def _pairs(toks):
    clean, corrupted = toks[[5, 300, 4000, 9000]], toks[[6, 301, 4100, 9100]]
    metric = logit_diff((clean[:, 0] + clean[:, 1]) % P, (corrupted[:, 0] + corrupted[:, 1]) % P)
    return clean, corrupted, metric


# -- splicing ---------------------------------------------------------------------------------------


def test_splicing_replaces_the_activation_by_the_reconstruction_and_error_true_is_the_model(modadd, trained_sae):
    model, toks = modadd
    sae, t = trained_sae, toks[:512]
    with torch.no_grad():
        clean_logits, clean = model.run_with_cache(t, names_filter=HOOK)
        x = clean[HOOK]
        with spliced(model, sae):
            logits, cache = model.run_with_cache(t)
        with spliced(model, sae, error=True):
            logits_err, cache_err = model.run_with_cache(t)
    recon = torch.einsum("...l,li->...i", sae.encode(x), sae.W_dec) + sae.b_dec
    # what flows on from the hook is the reconstruction: the hook's output moved by exactly -(x - recon)
    assert torch.equal(cache[f"{HOOK}.hook_sae_input"], x)
    assert float((cache[HOOK] - recon).abs().max()) < 1e-5
    assert torch.equal(cache[HOOK], cache[f"{HOOK}.hook_sae_output"])
    assert f"{HOOK}.hook_sae_error" not in cache  # SAELens fires it only with the error term
    # with the error term the output is the activation itself, bit for bit, and the latents are live
    assert torch.equal(logits_err, clean_logits) and torch.equal(cache_err[HOOK], x)
    assert float((cache_err[f"{HOOK}.hook_sae_error"] - (x - recon)).abs().max()) < 1e-5
    assert torch.equal(cache_err[LAT], cache[LAT]) and float(cache_err[LAT].abs().sum()) > 0
    assert not torch.equal(logits, clean_logits)
    print(f"error=True: max |logits - clean| = {float((logits_err - clean_logits).abs().max()):.1e}")


def test_splicing_changes_the_logits_by_no_more_than_the_reconstruction_error(modadd, trained_sae):
    """modadd-113: logits = resid_mid W_U + hook_post W_out W_U + const, so splicing moves them by -e W_out W_U."""
    model, toks = modadd
    sae, t = trained_sae, toks[:512]
    w = weights(model)
    lin = w["layers.0.mlp.fc_out.weight"].T @ w["head.weight"].T  # [d_mlp, d_vocab]: hook_post -> logits
    with torch.no_grad():
        clean_logits, clean = model.run_with_cache(t, names_filter=HOOK)
        spliced_logits = run_with_saes(model, t, sae)
        x = clean[HOOK]
        err = x - sae(x)  # the reconstruction error, [batch, pos, d_mlp]
        lin = lin.detach()
    delta = spliced_logits - clean_logits
    assert float((delta + err @ lin).abs().max()) < 1e-3 * float(delta.abs().max())
    bound = err.norm(dim=-1, keepdim=True) * torch.linalg.matrix_norm(lin, ord=2)
    assert bool((delta.abs() <= bound + 1e-4).all())
    last = delta[:, -1].abs().max(-1).values
    same = (spliced_logits[:, -1].argmax(-1) == clean_logits[:, -1].argmax(-1)).float().mean()
    print(f"'=' position: max |logit change| {float(last.max()):.3g}, mean {float(last.mean()):.3g}; "
          f"bound |e| * ||W_out W_U||_2: mean {float(bound[:, -1].mean()):.3g}; same answer spliced {float(same):.3f}")


def test_an_exact_sae_leaves_the_induction_logits_unchanged_and_a_random_one_does_not():
    """ReLU(x) - ReLU(-x) = x: an SAE with W_enc = [I, -I], W_dec = [I; -I] reconstructs exactly (error 0)."""
    model = mechwork.load("induction-2l", device="cpu").eval()
    toks = torch.randint(0, int(model.cfg.d_vocab), (4, 20), generator=torch.Generator().manual_seed(0))
    hook, d = "blocks.1.hook_resid_pre", int(model.cfg.d_model)
    exact = SAE(SAEConfig(d_in=d, d_sae=2 * d, hook_name=hook))
    eye = torch.eye(d)
    with torch.no_grad():
        exact.W_enc.copy_(torch.cat([eye, -eye], 1))
        exact.W_dec.copy_(torch.cat([eye, -eye], 0))
        clean = model(toks)
        same = run_with_saes(model, toks, exact)
        other = run_with_saes(model, toks, SAE(SAEConfig(d_in=d, d_sae=2 * d, hook_name=hook), seed=1))
    assert float((same - clean).abs().max()) < 1e-5
    assert float((other - clean).abs().max()) > 1e-2


# -- the cache and hooks ----------------------------------------------------------------------------------


def test_the_cache_holds_the_latents_encode_gives_by_hand(modadd, trained_sae):
    model, toks = modadd
    sae, t = trained_sae, toks[:300]
    with torch.no_grad():
        _, clean = model.run_with_cache(t, names_filter=HOOK)
        x = clean[HOOK]
        pre, acts, tie = _encode_by_hand(sae, x)
        for names_filter in (LAT, [LAT, f"{HOOK}.hook_sae_acts_pre"], lambda n: n.startswith(f"{HOOK}.hook_sae")):
            _, cache = run_with_saes(model, t, sae, error=True, names_filter=names_filter)
            assert torch.equal(cache[LAT], sae.encode(x))  # sae.encode on the clean activation
            assert float((cache[LAT] - acts)[~tie].abs().max()) < 1e-5  # the encoder written out, away from ties
            assert int((cache[LAT] > 0).sum(-1).max()) <= 16 and int((acts > 0).sum()) > 0
        assert float((cache[f"{HOOK}.hook_sae_acts_pre"] - pre).abs().max()) < 1e-4
        assert float(tie.float().mean()) < 0.01
        assert set(cache.keys()) == {f"{HOOK}.{s}" for s in HOOK_SUFFIXES}


def test_a_hook_on_the_latents_changes_the_output_by_its_decoder_row(modadd, trained_sae):
    """run_with_hooks on `...hook_sae_acts_post` (error=True): zeroing latent j subtracts a_j W_dec[j] exactly."""
    model, toks = modadd
    sae, t = trained_sae, toks[:256]
    with torch.no_grad():
        _, clean = model.run_with_cache(t, names_filter=HOOK)
        a = sae.encode(clean[HOOK])
        j = int(a[:, -1].gt(0).sum(0).argmax())  # the latent that fires most often at '='

        def zero_j(acts, hook):
            acts = acts.clone()
            acts[..., j] = 0
            return acts

        with spliced(model, sae, error=True):
            _, cache = model.run_with_cache(t, names_filter=HOOK)  # hooks on the hook itself run after the SAE
            with model.hooks(fwd_hooks=[(LAT, zero_j)]):
                _, edited = model.run_with_cache(t, names_filter=HOOK)
    expected = clean[HOOK] - a[..., j:j + 1] * sae.W_dec[j]
    assert float((edited[HOOK] - expected).abs().max()) < 1e-5
    assert torch.equal(cache[HOOK], clean[HOOK])


def test_with_the_error_term_the_gradient_to_the_activation_is_the_identity_and_to_the_latents_the_decoder():
    from mechwork.analysis.saehook import SAEHooks

    sae = SAE(SAEConfig(d_in=8, d_sae=32, architecture="topk", k=4), seed=3)
    g = torch.Generator().manual_seed(0)
    x = torch.randn(5, 8, generator=g, requires_grad=True)
    r = torch.randn(5, 8, generator=g)
    kept = []
    mod = SAEHooks(sae, error=True)
    mod.hook_sae_acts_post.add_hook(lambda a, hook: kept.append(a) or a)
    out = mod(x)
    gx, ga = torch.autograd.grad((out * r).sum(), [x, kept[0]])
    assert torch.allclose(out, x) and float((gx - r).abs().max()) < 1e-6
    assert float((ga - r @ sae.W_dec.detach().T).abs().max()) < 1e-5
    mod.hook_sae_acts_post.remove_hooks()


# -- patching by latent -------------------------------------------------------------------------------


def _brute_patch(model, sae, base, source, metric, latents, positions, error):
    """One run_with_hooks per cell, on the model's own hook: the patched hook output, computed here."""
    with torch.no_grad():
        _, src_cache = model.run_with_cache(source, names_filter=HOOK)
        src_acts = sae.encode(src_cache[HOOK])
        out = []
        for j in latents:
            row = []
            for p in positions if positions is not None else [None]:
                def hook(x, hook, j=j, p=p):
                    a = sae.encode(x)
                    a2 = a.clone()
                    if p is None:
                        a2[..., j] = src_acts[..., j]
                    else:
                        a2[:, p, j] = src_acts[:, p, j]
                    if error:  # the output moves by the decoder row times the latent's change
                        return x + (a2[..., j] - a[..., j])[..., None] * sae.W_dec[j]
                    return a2 @ sae.W_dec + sae.b_dec

                row.append(float(metric(model.run_with_hooks(base, fwd_hooks=[(HOOK, hook)]))))
            out.append(row)
    res = torch.tensor(out)
    return res if positions is not None else res[:, 0]


@pytest.mark.parametrize("by", ["latent", "latent_pos"])
@pytest.mark.parametrize("direction", ["denoising", "noising"])
def test_patching_latents_equals_a_brute_force_loop(modadd, trained_sae, by, direction):
    model, toks = modadd
    clean, corrupted, metric = _pairs(toks)
    with torch.no_grad():
        _, c = model.run_with_cache(torch.cat([clean, corrupted]), names_filter=HOOK)
    live = trained_sae.encode(c[HOOK]).gt(0).flatten(0, 1).any(0).nonzero().flatten().tolist()
    latents = live[:10] + [j for j in range(trained_sae.d_sae) if j not in live][:2]  # some live, two silent
    res = patch(model, clean, corrupted, metric, site="sae", by=by, sae=trained_sae, latents=latents,
                direction=direction, memory_mb=0.05)  # a tiny budget: several chunks
    base, source = (corrupted, clean) if direction == "denoising" else (clean, corrupted)
    ref = _brute_patch(model, trained_sae, base, source, metric, latents, [0, 1, 2] if by == "latent_pos" else None,
                       error=True)
    assert res.dims == (("latent", "pos") if by == "latent_pos" else ("latent",)) and res.coords["latent"] == latents
    assert res.values.shape == ref.shape
    assert float((res.values - ref).abs().max()) < 1e-5
    assert float(ref.std()) > 1e-3  # not degenerate: the latents matter
    with torch.no_grad():
        assert abs(res.clean_value - float(metric(model(clean)))) < 1e-5  # the error term: the model's own runs
        assert abs(res.corrupted_value - float(metric(model(corrupted)))) < 1e-5
    print(f"{by} {direction}: patch vs loop max diff {float((res.values - ref).abs().max()):.1e}, "
          f"top {res.top(2)}")


def test_patching_latents_on_the_reconstruction_and_per_example(modadd, trained_sae):
    model, toks = modadd
    clean, corrupted, metric = _pairs(toks)
    latents = [0, 5, 17, 40, 99]
    res = patch_latents(model, clean, corrupted, metric, sae=trained_sae, latents=latents, error=False)
    ref = _brute_patch(model, trained_sae, corrupted, clean, metric, latents, None, error=False)
    assert float((res.values - ref).abs().max()) < 1e-4
    per = patch_latents(model, clean, corrupted, lambda lg: metric(lg) * torch.ones(lg.shape[0]),
                        sae=trained_sae, latents=latents, error=False)
    assert per.per_example is not None and per.per_example.shape == (5, 4)
    assert float((per.values - res.values).abs().max()) < 1e-5


def test_attribution_equals_exact_where_the_model_is_linear_in_the_latents(modadd, trained_sae):
    """Downstream of modadd's hook_post the logits are linear, so gradient x delta is exact there."""
    model, toks = modadd
    clean, corrupted, metric = _pairs(toks)
    for by in ("latent", "latent_pos"):
        for direction in ("denoising", "noising"):
            exact = patch_latents(model, clean, corrupted, metric, sae=trained_sae, by=by, direction=direction)
            approx = patch_latents(model, clean, corrupted, metric, sae=trained_sae, by=by, direction=direction,
                                   method="attribution")
            assert approx.method == "attribution patching" and approx.values.shape == exact.values.shape
            via = attribute(model, clean, corrupted, metric, site="sae", by=by, direction=direction, sae=trained_sae)
            assert torch.equal(via.values, approx.values)
            assert float((approx.values - exact.values).abs().max()) < 1e-3
            assert float(exact.values.std()) > 1e-3


def test_inside_a_splice_patching_runs_the_hook_path(modadd, trained_sae):
    """The fast engine bypasses hooks: inside `spliced`, patch() must see the SAE (as the hook path does)."""
    model, toks = modadd
    clean, corrupted, metric = _pairs(toks)
    outside = patch(model, clean, corrupted, metric, site="resid_pre", by="layer_pos")
    with spliced(model, trained_sae):
        inside = patch(model, clean, corrupted, metric, site="resid_pre", by="layer_pos")
        hooks = patch(model, clean, corrupted, metric, site="resid_pre", by="layer_pos", engine=False)
    assert inside.engine == "hooks" and outside.engine == "fast"
    assert float((inside.values - hooks.values).abs().max()) < 1e-5
    assert float((inside.values - outside.values).abs().max()) > 1e-3


# -- ablation ------------------------------------------------------------------------------------------


@pytest.mark.parametrize("how", ["zero", "mean"])
def test_ablation_equals_a_hand_written_loop(modadd, trained_sae, how):
    model, toks = modadd
    sae, t = trained_sae, toks[::97]  # 132 pairs
    ans = (t[:, 0] + t[:, 1]) % P

    def metric(lg):  # the answer's logit at '='
        return lg[:, -1].gather(-1, ans[:, None]).mean()

    latents = [1, 7, 30, 64, 200]
    res = ablate_latents(model, sae, t, latents, how=how, metric=metric, together=True, memory_mb=0.05)
    default = ablate_latents(model, sae, t, latents[:2], how=how)
    with torch.no_grad():
        clean_logits, clean = model.run_with_cache(t, names_filter=HOOK)
        a = sae.encode(clean[HOOK])
        fill = a.mean(0, keepdim=True) if how == "mean" else torch.zeros_like(a[:1])

        def run(js):
            def hook(x, hook):
                change = (fill[..., js] - a[..., js]) @ sae.W_dec[js]
                return x + change

            return model.run_with_hooks(t, fwd_hooks=[(HOOK, hook)])

        ref = torch.tensor([float(metric(run([j]))) for j in latents])
        together = float(metric(run(latents)))
        ref_default = torch.tensor([float((run([j]) - clean_logits).abs().mean()) for j in latents[:2]])
    assert float((res.values - ref).abs().max()) < 1e-5 and abs(res.together_value - together) < 1e-5
    assert abs(res.base_value - float(metric(clean_logits))) < 1e-6
    assert float((default.values - ref_default).abs().max()) < 1e-5 and default.base_value == 0
    assert float(ref.std()) > 0  # the ablations differ
    print(res.summary())


# -- restoring ----------------------------------------------------------------------------------------------


def test_everything_is_restored_after_the_block_and_after_an_exception():
    model = mechwork.load("induction-2l", device="cpu").eval()
    toks = torch.randint(0, int(model.cfg.d_vocab), (2, 12), generator=torch.Generator().manual_seed(1))
    d = int(model.cfg.d_model)
    saes = [SAE(SAEConfig(d_in=d, d_sae=32, hook_name=f"blocks.{i}.hook_resid_pre"), seed=i) for i in (0, 1)]
    names, state = set(model.hook_dict), set(model.state_dict())
    point = model.hook_dict["blocks.1.hook_resid_pre"]
    n_hooks = len(point._forward_hooks)
    with torch.no_grad():
        before = model(toks)
        with spliced(model, *saes):
            added = set(model.hook_dict) - names
            assert added == {f"blocks.{i}.hook_resid_pre.{s}" for i in (0, 1) for s in HOOK_SUFFIXES}
            assert set(model.state_dict()) == state and model.spliced_hooks
            _, cache = model.run_with_cache(toks, names_filter=lambda n: "acts_post" in n)
            assert set(cache.keys()) == {f"blocks.{i}.hook_resid_pre.hook_sae_acts_post" for i in (0, 1)}
            assert not torch.equal(model(toks), before)
        assert set(model.hook_dict) == names and torch.equal(model(toks), before)
        assert len(point._forward_hooks) == n_hooks and not hasattr(model, "spliced_hooks")
        with pytest.raises(RuntimeError, match="inside"), spliced(model, saes[1]):
            model(toks)
            raise RuntimeError("inside")
        assert set(model.hook_dict) == names and torch.equal(model(toks), before)
        with pytest.raises(KeyError):
            model.run_with_hooks(toks, fwd_hooks=[("blocks.1.hook_resid_pre.hook_sae_acts_post", lambda a, hook: a)])


# -- bad input ------------------------------------------------------------------------------------------------


def _one_line(excinfo) -> str:
    msg = str(excinfo.value)
    assert "\n" not in msg
    return msg


def test_bad_input_is_refused_in_one_line(modadd, trained_sae):
    model, toks = modadd
    clean, corrupted, metric = _pairs(toks)
    narrow = SAE(SAEConfig(d_in=128, d_sae=64, hook_name=HOOK))
    with pytest.raises(ConfigError) as e, spliced(model, narrow):
        pass
    assert "128" in _one_line(e) and "512" in str(e.value) and HOOK in str(e.value)
    typo = SAE(SAEConfig(d_in=512, d_sae=64, hook_name="blocks.0.mlp.hook_pots"))
    with pytest.raises(ConfigError) as e, spliced(model, typo):
        pass
    assert "nearest is 'blocks.0.mlp.hook_post'" in _one_line(e)
    second = SAE(SAEConfig(d_in=512, d_sae=8, hook_name=HOOK))
    with pytest.raises(ConfigError) as e, spliced(model, trained_sae, second):
        pass
    assert "two SAEs at hook" in _one_line(e)
    other_name = SAE(SAEConfig(d_in=512, d_sae=8, hook_name="blocks.0.mlp.out.hook_in"))  # the same hook point
    with spliced(model, trained_sae), pytest.raises(ConfigError) as e, spliced(model, other_name):
        pass
    assert "the same hook point" in _one_line(e)
    with pytest.raises(ConfigError) as e:
        patch(model, clean, corrupted, metric, site="sae", sae=trained_sae, latents=[0, 256])
    assert "[0, d_sae=256)" in _one_line(e) and "256" in str(e.value)
    with pytest.raises(ConfigError) as e:
        ablate_latents(model, trained_sae, toks[:4], [-1])
    assert "latent" in _one_line(e)
    with pytest.raises(ConfigError) as e:
        patch(model, clean, corrupted, metric, site="sae")
    assert "'sae' must be" in _one_line(e)
    with pytest.raises(ConfigError) as e:
        patch(model, clean, corrupted, metric, site="resid_pre", sae=trained_sae)
    assert "site='sae' only" in _one_line(e)
    with pytest.raises(ConfigError) as e:
        patch(model, clean, corrupted, metric, site="sae", by="neuron", sae=trained_sae)
    assert "latent, latent_pos" in _one_line(e)
    with pytest.raises(ConfigError) as e:
        ablate_latents(model, trained_sae, toks[:4], [0], how="resample")
    assert "'how' must be zero or mean" in _one_line(e)
    model.train()
    try:
        with pytest.raises(ConfigError) as e, spliced(model, trained_sae):
            pass
        assert "eval mode" in _one_line(e)
    finally:
        model.eval()


def test_site_sae_is_in_the_shared_tables():
    from mechwork.hooks import BY, BY_NAMES, DIMS, SITE_NAMES, SITES

    assert "sae" in SITE_NAMES and BY[SITES["sae"][1]] == ("latent", "latent_pos")
    assert DIMS["latent"] == ("latent",) and DIMS["latent_pos"] == ("latent", "pos")
    assert {"latent", "latent_pos"} <= set(BY_NAMES)

