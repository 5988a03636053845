"""The hypotheses the tools exist to test: the induction circuit and the modular-addition Fourier circuit.

Attribution patching is checked against exact patching, path patching and
ablations against direct hooked runs, and the Fourier ablation against a
brute-force DFT of the embedding.
"""

from __future__ import annotations

import numpy as np
import pytest
import torch

import mechwork
from mechwork.analysis.ablation import ablate, ablation_hooks, keep_frequencies, remove_frequencies
from mechwork.analysis.attention import head_detectors, repeated_tokens
from mechwork.analysis.attribution import attribute, path_patch
from mechwork.analysis.metrics import accuracy
from mechwork.analysis.patching import patch
from mechwork.cli import main
from mechwork.errors import ConfigError


@pytest.fixture(scope="module")
def induction():
    return mechwork.load("induction-2l", device="cpu")


@pytest.fixture(scope="module")
def repeat_eval():
    ev = mechwork.preset("induction-2l").task.eval_batches()["test"]
    return ev.tokens, accuracy(ev.targets, ev.mask)


def sweep_inputs(batch=8, half=20):
    clean = repeated_tokens(64, half, batch=batch, seed=1)
    corrupted = clean.clone()
    corrupted[:, :half] = torch.randint(0, 64, (batch, half), generator=torch.Generator().manual_seed(2))
    target = clean[:, half + 1:, None]

    def logit_vs_mean(logits):  # logit of the right next token against the mean logit, second half
        lg = logits[:, half:-1]
        return (lg.gather(-1, target)[..., 0] - lg.mean(-1)).mean()

    return clean, corrupted, logit_vs_mean


# -- attribution patching ------------------------------------------------------------------------
def test_attribution_tracks_exact_patching_over_every_head_and_position(induction):
    clean, corrupted, metric = sweep_inputs()  # length 40, batch 8
    exact = patch(induction, clean, corrupted, metric, site="z", by="head_pos")
    approx = attribute(induction, clean, corrupted, metric, site="z", by="head_pos")
    assert approx.values.shape == exact.values.shape == (2, 40, 4)
    assert approx.corrupted_value == pytest.approx(exact.corrupted_value, abs=1e-5)
    r = float(torch.corrcoef(torch.stack([exact.values.flatten(), approx.values.flatten()]))[0, 1])
    print(f"Pearson r, attribution vs exact, 320 head x position cells: {r:.3f}")
    assert r >= 0.9


def test_attribution_is_exact_where_the_model_is_linear(induction):
    """Layer-1 z feeds the logits linearly (no LayerNorm), and this metric is linear in the logits."""
    clean, corrupted, metric = sweep_inputs(batch=4)
    exact = patch(induction, clean, corrupted, metric, site="z", by="head_pos", layers=[1])
    approx = attribute(induction, clean, corrupted, metric, site="z", by="head_pos", layers=[1])
    torch.testing.assert_close(approx.values, exact.values, atol=1e-4, rtol=0)


def test_attribution_needs_a_differentiable_metric(induction):
    clean, corrupted, _ = sweep_inputs(batch=2)
    with pytest.raises(ConfigError, match="differentiable"):
        attribute(induction, clean, corrupted, lambda lg: (lg.argmax(-1) == 0).float().mean(), site="z", by="head")


# -- the induction circuit ------------------------------------------------------------------------
def test_the_induction_circuit_is_found_by_the_tools(induction, repeat_eval):
    tokens, acc = repeat_eval
    scores = head_detectors(induction)
    prev = [(la, h) for la, h, _ in scores.top("previous_token", 0.5) if la == 0]
    ind = [(la, h) for la, h, _ in scores.top("induction", 0.5) if la == 1]
    assert prev and ind, scores.to_frame()
    base = float(acc(induction(tokens)))
    ablated = float(acc(ablate(induction, tokens, heads=prev, how="mean").logits))
    print(f"previous-token heads {prev}, induction heads {ind}; repeat accuracy {base:.3f} -> {ablated:.3f}")
    assert ablated <= 0.5 * base
    paths = {c: path_patch(induction, tokens, "mean", acc, senders=prev, receivers=ind, component=c)
             for c in "qkv"}
    for r in paths.values():
        print(r.summary())
        assert r.full_value == pytest.approx(ablated, abs=1e-6)  # the same ablation, every path
    assert paths["k"].fraction >= 0.5  # most of the effect goes through the induction heads' keys
    assert paths["k"].fraction > max(paths["q"].fraction, paths["v"].fraction)


def test_path_patching_matches_a_hand_built_two_step_run(induction):
    """Sender L0H0 corrupted, receiver L1H3's k: for a 2-layer model the path is layer-0 z -> layer-1 k."""
    clean, corrupted, metric = sweep_inputs(batch=4)
    res = path_patch(induction, clean, corrupted, metric, senders=[(0, 0)], receivers=[(1, 3)], component="k")
    _, cc = induction.run_with_cache(clean)
    _, kc = induction.run_with_cache(corrupted)
    z = cc["blocks.0.attn.hook_z"].clone()
    z[:, :, 0] = kc["blocks.0.attn.hook_z"][:, :, 0]
    rec = {}

    def set_z(act, hook):
        return z

    def grab_k(act, hook):
        rec["k"] = act.clone()
        return act

    induction.run_with_hooks(clean, fwd_hooks=[("blocks.0.attn.hook_z", set_z), ("blocks.1.attn.hook_k", grab_k)])

    def set_k(act, hook):
        act = act.clone()
        act[:, :, 3] = rec["k"][:, :, 3]
        return act

    with torch.no_grad():
        want = float(metric(induction.run_with_hooks(clean, fwd_hooks=[("blocks.1.attn.hook_k", set_k)])))
    assert res.value == pytest.approx(want, abs=1e-5)


def spy(name):
    """A hook that records what ``name`` carries after the ablation hooks ran."""
    seen = {}

    def hook(act, hook):
        seen["act"] = act.detach().clone()
        return act

    return (name, hook), seen


def test_ablation_modes_against_direct_hooks(induction):
    toks = repeated_tokens(64, 10, batch=6, seed=4)
    _, cache = induction.run_with_cache(toks)
    z = cache["blocks.0.attn.hook_z"]
    for how, want in (("zero", torch.zeros_like(z[:, :, 1])), ("mean", z[:, :, 1].mean(0, keepdim=True))):
        watch, seen = spy("blocks.0.attn.hook_z")
        induction.run_with_hooks(toks, fwd_hooks=[*ablation_hooks(induction, toks, heads=[(0, 1)], how=how), watch])
        torch.testing.assert_close(seen["act"][:, :, 1], want.expand_as(seen["act"][:, :, 1]))
        torch.testing.assert_close(seen["act"][:, :, 0], z[:, :, 0])  # other heads untouched
    # resample: another input's activation, by a seeded permutation
    watch, seen = spy("blocks.0.attn.hook_z")
    hooks = ablation_hooks(induction, toks, heads=[(0, 1)], how="resample", seed=3)
    induction.run_with_hooks(toks, fwd_hooks=[*hooks, watch])
    perm = torch.randperm(6, generator=torch.Generator().manual_seed(3))
    torch.testing.assert_close(seen["act"][:, :, 1], z[perm][:, :, 1])
    # a residual direction: its component is removed, the orthogonal part kept
    u = torch.randn(64, generator=torch.Generator().manual_seed(0))
    watch, seen = spy("blocks.1.hook_resid_pre")
    hooks = ablation_hooks(induction, toks, directions={"blocks.1.hook_resid_pre": u}, how="zero")
    induction.run_with_hooks(toks, fwd_hooks=[*hooks, watch])
    assert float((seen["act"] @ (u / u.norm())).abs().max()) < 1e-4
    orth = seen["act"] - (seen["act"] @ (u / u.norm()))[..., None] * (u / u.norm())
    plain = cache["blocks.1.hook_resid_pre"]
    torch.testing.assert_close(orth, plain - (plain @ (u / u.norm()))[..., None] * (u / u.norm()), atol=1e-4, rtol=0)


def test_bad_ablation_and_path_arguments(induction):
    toks = repeated_tokens(64, 10, batch=2)
    with pytest.raises(ConfigError, match="'how' must be one of zero, mean, resample"):
        ablate(induction, toks, heads=[(0, 0)], how="noise")
    with pytest.raises(ConfigError, match=r"'heads' must be .*\(got \(2, 0\)\)"):
        ablate(induction, toks, heads=[(2, 0)])
    with pytest.raises(ConfigError, match="'neurons' must be"):
        ablate(induction, toks, neurons=[(0, 0)])  # attention-only: no neurons
    with pytest.raises(ConfigError, match="resample ablation needs a reference batch shaped like the input"):
        ablate(induction, toks, heads=[(0, 0)], how="resample", reference=toks[:1])
    with pytest.raises(ConfigError, match="below every receiver"):
        path_patch(induction, toks, "mean", lambda lg: lg.mean(), senders=[(1, 0)], receivers=[(1, 3)])
    with pytest.raises(ConfigError, match="'component' must be q, k or v"):
        path_patch(induction, toks, "mean", lambda lg: lg.mean(), senders=[(0, 0)], receivers=[(1, 3)],
                   component="z")
    with pytest.raises(ConfigError, match=r"'corrupted' must be a token batch or one of zero, mean \(direction"):
        path_patch(induction, toks, "resample", lambda lg: lg.mean(), senders=[(0, 0)], receivers=[(1, 3)])


# -- the modular-addition hypothesis ------------------------------------------------------------------
def test_keep_and_remove_the_key_frequencies(embedded_model, modadd_preset):
    task = modadd_preset.task
    kept, removed = keep_frequencies(embedded_model, task), remove_frequencies(embedded_model, task)
    print(kept.summary())
    print(removed.summary())
    assert kept.freqs == removed.freqs == [1, 5, 10, 19, 47]
    assert kept.accuracy >= 0.98 and removed.accuracy <= 0.05
    # independent: the energy the projection keeps, from numpy's FFT of W_E over the 113 number tokens
    we = embedded_model.W_E[:113].detach().double().numpy()
    spec = np.abs(np.fft.fft(we, axis=0)) ** 2  # [freq, d_model]
    keep_rows = [0] + [k for f in kept.freqs for k in (f, 113 - f)]
    assert kept.energy_kept == pytest.approx(spec[keep_rows].sum() / spec.sum(), abs=1e-4)
    assert removed.energy_kept == pytest.approx(1 - (spec[keep_rows[1:]].sum() / spec.sum()), abs=1e-4)


# -- end to end -----------------------------------------------------------------------------------------
def test_train_induction_then_find_the_circuit(tmp_path):
    """`mechwork train induction` on the induction-2l preset; the detectors then find both halves of the circuit."""
    out = tmp_path / "ind"
    assert main(["train", "induction", "--steps", "1600", "--out", str(out), "--quiet"]) == 0
    model = mechwork.load(out, device="cpu")
    scores = head_detectors(model)
    prev = [h for h in scores.top("previous_token", 0.5) if h[0] == 0]
    ind = [h for h in scores.top("induction", 0.5) if h[0] == 1]
    print(scores.summary())
    assert prev and ind, scores.to_frame()


@pytest.mark.parametrize("component", ["q", "k", "v"])
def test_direct_path_sweep_is_transformer_lens_definition(induction, component):
    """TransformerLens's get_act_patch_direct_path adds the sender's clean-minus-corrupted write (z @ W_O) to
    each later head's own q/k/v input in the corrupted run. It refuses the native toy models (their attention
    has no pre-q/k/v fork), so mechwork's sweep is checked against that definition, built by hand."""
    import transformer_lens.patching as tlp

    from mechwork.analysis.attribution import direct_path_sweep
    from mechwork.models import head_weights

    clean, corrupted, metric = sweep_inputs(batch=4)
    _, cc = induction.run_with_cache(clean)
    _, kc = induction.run_with_cache(corrupted)
    with pytest.raises(NotImplementedError, match="pre-Q/K/V|use_split_qkv_input"):
        tlp.get_act_patch_direct_path(induction, corrupted, cc, kc, metric, 0, 0, component=component, verbose=False)
    w = head_weights(induction)
    sl, sh = 0, 3
    ours = direct_path_sweep(induction, clean, corrupted, metric, sender=(sl, sh), component=component)
    assert torch.isnan(ours[0]).all()
    delta = (cc["blocks.0.attn.hook_z"][:, :, sh] - kc["blocks.0.attn.hook_z"][:, :, sh]) @ w["W_O"][sl, sh]
    mat = w[f"W_{component.upper()}"]
    for h in range(4):
        def add(act, hook, h=h):
            act = act.clone()
            act[:, :, h] = act[:, :, h] + delta @ mat[1, h]
            return act

        with torch.no_grad():
            want = float(metric(induction.run_with_hooks(corrupted, fwd_hooks=[(f"blocks.1.attn.hook_{component}",
                                                                               add)])))
        assert abs(float(ours[1, h]) - want) <= 1e-4, (h, float(ours[1, h]), want)
    assert float(ours[1].std()) > 0
