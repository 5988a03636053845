"""Fourier analyses, checked against independent computations (torch.fft, hand derivations)."""

from __future__ import annotations

import math

import pytest
import torch

from mechwork.analysis.fourier import (
    NotApplicable,
    embedding_spectrum,
    fourier_basis,
    gini,
    key_frequencies,
    neuron_frequencies,
    neuron_frequencies_of,
    spectrum_of,
)
from mechwork.analysis.trig import logit_trig_fit_of, restricted_excluded_of, split_logits
from mechwork.errors import ConfigError
from mechwork.models import ToyConfig, build_model
from mechwork.tasks import InductionTask, ModularArithmetic


@pytest.mark.parametrize("p", [3, 7, 23, 113])
def test_orthonormal_and_labelled(p):
    b = fourier_basis(p)
    torch.testing.assert_close(b.matrix @ b.matrix.T, torch.eye(p), atol=1e-5, rtol=0)
    assert len(b.labels) == p and b.labels[0] == "const" and b.labels[-1] == f"sin {(p - 1) // 2}"
    assert b.freqs.tolist() == [0] + [k for k in range(1, (p - 1) // 2 + 1) for _ in (0, 1)]


@pytest.mark.parametrize("p", [7, 113])
def test_coefficients_match_fft(p):
    x = torch.randn(p, 5, dtype=torch.float64)
    coef = fourier_basis(p).transform(x.float()).double()
    spec = torch.fft.rfft(x, dim=0)  # spec[k] = sum_n x_n exp(-2 pi i k n / p)
    torch.testing.assert_close(coef[0], spec[0].real / p**0.5, atol=1e-4, rtol=1e-4)
    for k in range(1, (p - 1) // 2 + 1):
        torch.testing.assert_close(coef[2 * k - 1], spec[k].real * (2 / p) ** 0.5, atol=1e-4, rtol=1e-4)
        torch.testing.assert_close(coef[2 * k], -spec[k].imag * (2 / p) ** 0.5, atol=1e-4, rtol=1e-4)


def test_spectrum_matches_brute_force_fft(embedded_model):
    spec = embedding_spectrum(embedded_model)
    w = embedded_model.W_E[:113].detach().double()
    fft = torch.fft.rfft(w, dim=0)  # (57, d_model)
    brute = (2 * fft[1:].abs().pow(2).sum(-1) / 113).sqrt()  # per-frequency norm, k = 1..56
    torch.testing.assert_close(spec.freq_norms.double(), brute, atol=1e-4, rtol=1e-4)
    assert abs(spec.gini - gini(brute.float())) < 1e-5
    # and the unembed spectrum too: W_U columns over the output residue c
    wu = embedded_model.W_U.detach().double().T
    fft = torch.fft.rfft(wu, dim=0)
    torch.testing.assert_close(embedding_spectrum(embedded_model, "W_U").freq_norms.double(),
                               (2 * fft[1:].abs().pow(2).sum(-1) / 113).sqrt(), atol=1e-4, rtol=1e-4)


def test_gini_hand_values():
    assert gini(torch.ones(10)) == pytest.approx(0.0, abs=1e-12)
    assert gini(torch.tensor([0.0, 0.0, 0.0, 4.0])) == pytest.approx(0.75)
    assert gini(torch.tensor([1.0, 3.0])) == pytest.approx(0.25)  # (2*(1+6))/(2*4) - 3/2


def _task(p=13, op="add"):
    return ModularArithmetic(p=p, op=op, train_frac=0.5, seed=0)


def _cos_logits(task, k, amp=1.0):
    s = task.labels.double()[:, None]  # (a +- b) mod p, for add and sub alike
    c = torch.arange(task.p, dtype=torch.float64)[None, :]
    return amp * torch.cos(2 * math.pi * k * (s - c) / task.p)


@pytest.mark.parametrize("op", ["add", "sub"])
def test_restricted_plus_excluded_is_full(op):
    task = _task(op=op)
    logits = torch.randn(task.n_pairs, task.p)
    r, e = split_logits(logits, task, [1, 4])
    torch.testing.assert_close(r + e, logits)
    # complementary orthogonal projections: applying again changes nothing, and they are orthogonal
    r2, _ = split_logits(r, task, [1, 4])
    torch.testing.assert_close(r2, r, atol=1e-5, rtol=1e-5)
    assert abs(float((r * e).sum())) < 1e-2


def test_excluding_nothing_is_the_plain_loss():
    task = _task()
    logits = torch.randn(task.n_pairs, task.p) * 3
    res = restricted_excluded_of(logits, task, [])
    assert res.excluded_loss == pytest.approx(res.train_loss, rel=1e-6)
    # zero restricted logits plus the per-output mean of the rest
    assert res.restricted_loss == pytest.approx(
        float(torch.nn.functional.cross_entropy(logits.mean(0, keepdim=True).expand_as(logits), task.labels)),
        rel=1e-5)


@pytest.mark.parametrize("op", ["add", "sub"])
def test_restricted_and_excluded_on_hand_built_logits(op):
    """Logits A cos(w_k(s - c)) + B cos(w_j(a + b) + w_j(a - b) terms) -- losses derived by hand."""
    task, k, amp = _task(op=op), 3, 4.0
    signal = _cos_logits(task, k, amp)
    a, b = task.tokens[:, 0].double(), task.tokens[:, 1].double()
    other = 5 * (a - b if op == "add" else a + b)  # varies across inputs but is constant over c
    nuisance = 2.0 * torch.cos(2 * math.pi * 2 * other / task.p)[:, None].expand(-1, task.p)
    res = restricted_excluded_of((signal + nuisance).float(), task, [k])
    # by hand: every input's correct logit is amp and the others amp*cos(2 pi k m / p), m = 1..p-1
    by_hand = -amp + math.log(sum(math.exp(amp * math.cos(2 * math.pi * k * m / task.p)) for m in range(task.p)))
    assert res.restricted_loss == pytest.approx(by_hand, rel=1e-4)
    # the nuisance is constant over c (uniform softmax) and orthogonal to the key directions
    assert res.excluded_loss == pytest.approx(math.log(task.p), rel=1e-4)


def test_trig_fit_recovers_known_terms():
    task = _task(p=17)
    logits = _cos_logits(task, 2, 3.0) + _cos_logits(task, 5, 1.0) + torch.randn(task.n_pairs, 1)
    fit = logit_trig_fit_of(logits.float(), task, [2, 5])
    assert fit.fve == pytest.approx(1.0, abs=1e-5)  # per-input shifts are ignored (softmax-invariant)
    torch.testing.assert_close(fit.coef, torch.tensor([3.0, 1.0]), atol=1e-4, rtol=0)
    assert logit_trig_fit_of(logits.float(), task, [2]).fve == pytest.approx(0.9, abs=1e-4)  # 9 / (9 + 1)
    # a per-output bias is outside fve but inside fve_raw: signal energy 10 (per cell 5), bias energy 1
    bias = torch.cos(2 * math.pi * torch.arange(17.0) / 17)[None, :] * math.sqrt(2.0)  # mean 0, mean square 1
    fit = logit_trig_fit_of((logits + bias).float(), task, [2, 5])
    assert fit.fve == pytest.approx(1.0, abs=1e-5)
    assert fit.fve_raw == pytest.approx(5.0 / 6.0, abs=1e-4)


def test_trig_fit_on_the_preset_is_the_einsum_least_squares(embedded_model, modadd_preset):
    """The fit's matrix products give the numbers of the per-term einsums they replaced (float32 results equal)."""
    from mechwork.analysis.fourier import grid_pass

    task, freqs = modadd_preset.task, [1, 5, 10, 19, 47]
    logits, _ = grid_pass(embedded_model, task, [])
    fit = logit_trig_fit_of(logits, task, freqs)
    raw = logits.double() - logits.double().mean(1, keepdim=True)
    x = raw - raw.mean(0, keepdim=True)
    s = ((task.tokens[:, 0] + task.tokens[:, 1]) % task.p).double()[:, None]
    c = torch.arange(task.p, dtype=torch.float64)[None, :]
    feats = torch.stack([torch.cos(2 * math.pi * k * (s - c) / task.p) for k in freqs])
    gram = torch.einsum("knc,jnc->kj", feats, feats)
    coef = torch.linalg.solve(gram, torch.einsum("knc,nc->k", feats, x))
    fitted = torch.einsum("k,knc->nc", coef, feats)
    assert torch.equal(fit.coef, coef.float())
    assert torch.equal(fit.fve_per_freq, (coef.pow(2) * torch.diagonal(gram) / x.pow(2).sum()).float())
    assert fit.fve == pytest.approx(float(1 - (x - fitted).pow(2).sum() / x.pow(2).sum()), rel=1e-12)


def test_neuron_frequencies_on_synthetic_neurons():
    p = 17
    a = torch.arange(p).repeat_interleave(p).double()
    b = torch.arange(p).repeat(p).double()
    w = 2 * math.pi / p
    acts = torch.stack([
        torch.relu(torch.cos(w * 3 * (a + b))),        # quadratic terms of k=3, plus a constant
        torch.cos(w * 5 * a) + torch.sin(w * 5 * b),    # linear terms of k=5
        torch.cos(w * 2 * a) * torch.cos(w * 7 * b),    # mixes k=2 and k=7: no single frequency
    ], dim=1).float()
    nf = neuron_frequencies_of(acts, p)
    assert nf.freq[:2].tolist() == [3, 5]
    assert nf.fve[1] == pytest.approx(1.0, abs=1e-5)
    assert 0.8 < nf.fve[0] < 0.9 and nf.fve[2] < 0.01  # relu adds harmonics of k=3; k=2 x k=7 is in no block
    assert nf.cluster_sizes() == {5: 1}  # only the pure neuron clears 85%


def test_embedded_model_reproduces_the_paper(embedded_model, modadd_preset):
    from mechwork.analysis.trig import logit_trig_fit, restricted_excluded

    task = modadd_preset.task
    nf = neuron_frequencies(embedded_model, task)
    kf = key_frequencies(embedded_model, task, neurons=nf)
    assert 3 <= len(kf.freqs) <= 8
    assert set(kf.from_neurons) <= set(kf.freqs) and len(set(kf.from_embedding) & set(kf.from_neurons)) >= 3
    assert kf.embedding_share >= 0.85
    assert nf.fraction_clustered(kf.freqs) >= 0.80
    assert logit_trig_fit(embedded_model, task, kf.freqs).fve >= 0.80
    rex = restricted_excluded(embedded_model, task, kf.freqs)
    assert rex.restricted_loss <= rex.test_loss + 0.1
    assert rex.excluded_loss > 1.0 and rex.train_loss < 0.01


def test_bad_inputs_are_named():
    model = build_model(ToyConfig(), "cpu")  # p=113 vocabulary
    with pytest.raises(ConfigError, match=r"model vocabulary \(114 in, 113 out\) does not match the task's p=31"):
        neuron_frequencies(model, ModularArithmetic(p=31))
    with pytest.raises(NotApplicable, match="needs a ModularArithmetic task \\(got InductionTask\\)"):
        key_frequencies(model, InductionTask())
    with pytest.raises(NotApplicable, match="applies to op 'add' and 'sub' only \\(got 'mul'\\)"):
        key_frequencies(model, ModularArithmetic(p=113, op="mul"))
    with pytest.raises(ConfigError, match="'matrix' must be 'W_E' or 'W_U'"):
        embedding_spectrum(model, "W_Q")
    with pytest.raises(ConfigError, match="'freqs' must be frequencies in 1..6"):
        split_logits(torch.zeros(169, 13), _task(), [7])
    spec = spectrum_of(torch.randn(13, 4), "W_E", 13)
    assert len(spec.freq_norms) == 6


@pytest.mark.parametrize("p", [1, 2, 12])
def test_bad_p(p):
    with pytest.raises(ConfigError, match=r"'p' must be an odd integer >= 3 \(got "):
        fourier_basis(p)


def test_results_render(embedded_model, modadd_preset):
    from mechwork.analysis.trig import logit_trig_fit

    task = modadd_preset.task
    spec = embedding_spectrum(embedded_model)
    nf = neuron_frequencies(embedded_model, task)
    for res in (spec, nf, key_frequencies(embedded_model, task, neurons=nf), logit_trig_fit(embedded_model, task)):
        html = res._repr_html_()
        assert type(res).__name__ in html and "<table" in html
        assert len(res.to_frame()) > 0
    from mechwork.analysis.trig import restricted_excluded

    kf = key_frequencies(embedded_model, task, neurons=nf)
    rex = restricted_excluded(embedded_model, task, kf.freqs)
    assert "RestrictedExcluded" in rex._repr_html_()
    for fig in (spec.figure(key=[5]), nf.figure(), kf.figure(), rex.figure(),
                logit_trig_fit(embedded_model, task, kf.freqs).figure()):
        assert fig.to_dict()["data"]


def test_sub_models_run_through_every_analysis():
    """op='sub': the whole pipeline runs on a model of a - b (correctness is in the hand-built tests)."""
    from mechwork.analysis.trig import logit_trig_fit, restricted_excluded
    from mechwork.training import TrainConfig, train

    task = ModularArithmetic(p=23, op="sub", train_frac=0.6, seed=0)
    model = train(task, train_cfg=TrainConfig(steps=300, eval_every=100), quiet=True, device="cpu").model
    nf = neuron_frequencies(model, task)
    kf = key_frequencies(model, task, neurons=nf)
    assert kf.freqs and all(1 <= k <= 11 for k in kf.freqs)
    assert 0.0 <= logit_trig_fit(model, task, kf.freqs).fve <= 1.0
    rex = restricted_excluded(model, task, kf.freqs)
    assert math.isfinite(rex.restricted_loss) and math.isfinite(rex.excluded_loss)


def test_restricted_and_excluded_on_a_hand_built_model():
    """A model whose weights are set by hand: logits (cos w(a-c) + cos w(b-c)) / 3, nothing in a + b.

    Uniform attention (zero q, k) averages the embeddings e(a) = (cos wa, sin wa), e(b) and e(=) = 0;
    the MLP is zero; the unembed reads (cos wc, sin wc). So logit_c = (cos w(a-c) + cos w(b-c)) / 3:
    linear in a and b, with no component along cos/sin(w(a + b)). By hand: the restricted logits are
    zero plus the per-output mean (zero), so the restricted loss is ln p; the excluded logits are
    the full logits, so the excluded loss is the train loss of that formula.
    """
    from mechwork.analysis.trig import restricted_excluded
    from mechwork.models import weights

    p, k = 13, 3
    task = ModularArithmetic(p=p, op="add", train_frac=0.5, seed=0)
    model = build_model(ToyConfig.for_task(task), "cpu")
    w = weights(model)
    ang = 2 * math.pi * k * torch.arange(p) / p
    with torch.no_grad():
        for t in w.values():
            t.zero_()
        w["tok_embed.weight"][:p, 0], w["tok_embed.weight"][:p, 1] = torch.cos(ang), torch.sin(ang)
        w["layers.0.attn.v.weight"][0, 0] = w["layers.0.attn.v.weight"][1, 1] = 1.0  # head 0, dims 0-1
        w["layers.0.attn.o.weight"][0, 0] = w["layers.0.attn.o.weight"][1, 1] = 1.0
        w["head.weight"][:, 0], w["head.weight"][:, 1] = torch.cos(ang), torch.sin(ang)
    a, b = task.tokens[:, 0], task.tokens[:, 1]
    c = torch.arange(p)
    wk = 2 * math.pi * k / p
    by_hand = (torch.cos(wk * (a[:, None] - c)) + torch.cos(wk * (b[:, None] - c))) / 3
    torch.testing.assert_close(model(task.tokens)[:, -1], by_hand.float(), atol=1e-5, rtol=1e-5)
    tr = task.train_idx
    train_loss = float(torch.nn.functional.cross_entropy(by_hand[tr], task.labels[tr]))
    rex = restricted_excluded(model, task, [k])
    assert rex.restricted_loss == pytest.approx(math.log(p), abs=1e-5)
    assert rex.excluded_loss == pytest.approx(train_loss, rel=1e-5)
    assert rex.train_loss == pytest.approx(train_loss, rel=1e-5)
