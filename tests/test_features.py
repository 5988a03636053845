"""Feature reports (mechwork.analysis.features) against brute force: the top activations, the histogram, the logit
effect (a hand-written matmul, and the logits' own change when the activation moves), the (a, b) grid against the
model's own activation, and the Fourier energy against numpy's DFT.

The modadd SAE here reads MLP neurons one to one (latent j = ReLU(neuron n_j), decoder row = e_{n_j}): its numbers
have an independent reference in the model's cache. The induction SAE is a small TopK SAE trained for a few steps.
"""

from __future__ import annotations

import math

import numpy as np
import pytest
import torch
from tiny_sae import induction_sae

import mechwork
from mechwork.analysis.features import DOMINANT, feature_report, frequency_energy
from mechwork.analysis.sae import SAE, SAEConfig
from mechwork.errors import ConfigError

MLP = "blocks.0.mlp.hook_post"
RESID = "blocks.1.hook_resid_pre"
NEURONS = [3, 17, 100, 250, 511]


def fft_shares(grid: np.ndarray) -> np.ndarray:
    """The same from numpy's fft2 (for p = 113, where the loops are slow)."""
    p = grid.shape[0]
    power = np.abs(np.fft.fft2(grid)) ** 2
    total = power.sum() - power[0, 0]
    return np.array([sum(power[u, v] for u in (0, k, p - k) for v in (0, k, p - k) if (u, v) != (0, 0)) / total
                     for k in range(1, (p - 1) // 2 + 1)])


def dft_shares(grid: np.ndarray) -> np.ndarray:
    """Each frequency's share of the non-constant energy, from a brute-force 2D DFT (two loops over the grid)."""
    p = grid.shape[0]
    idx = np.arange(p)
    power = np.zeros((p, p))
    for u in range(p):
        for v in range(p):
            phase = np.exp(-2j * np.pi * (u * idx[:, None] + v * idx[None, :]) / p)
            power[u, v] = abs((grid * phase).sum()) ** 2
    total = power.sum() - power[0, 0]
    return np.array([sum(power[u, v] for u in (0, k, p - k) for v in (0, k, p - k) if (u, v) != (0, 0)) / total
                     for k in range(1, (p - 1) // 2 + 1)])


@pytest.fixture(scope="module")
def modadd():
    torch.set_num_threads(1)
    model, task = mechwork.load("modadd-113"), mechwork.preset("modadd-113").task
    sae = SAE(SAEConfig(d_in=512, d_sae=len(NEURONS), hook_name=MLP, model_name="modadd-113"), seed=0)
    with torch.no_grad():
        sae.W_enc.zero_()
        sae.W_dec.zero_()
        for j, n in enumerate(NEURONS):
            sae.W_enc[n, j] = 1.0
            sae.W_dec[j, n] = 1.0
    mask = torch.zeros(task.tokens.shape, dtype=torch.bool)
    mask[:, -1] = True
    labels = [str(j) for j in range(113)] + ["="]
    report = feature_report(model, sae, task.tokens, latents=list(range(len(NEURONS))), mask=mask, labels=labels,
                            grid=(113, task.tokens), n_top=6)
    _, cache = model.run_with_cache(task.tokens, names_filter=lambda n: n == MLP)
    return model, task, sae, report, cache[MLP][:, -1].detach()


def test_fourier_energy_matches_a_brute_force_dft_and_numpy_fft2():
    g = torch.Generator().manual_seed(0)
    for p in (5, 7, 11):
        grid = torch.randn(2, p, p, generator=g, dtype=torch.float64)
        ours = frequency_energy(grid).numpy()
        for j in range(2):
            np.testing.assert_allclose(ours[j], dft_shares(grid[j].numpy()), atol=1e-12)
            power = np.abs(np.fft.fft2(grid[j].numpy())) ** 2
            k1 = [power[u, v] for u in (0, 1, p - 1) for v in (0, 1, p - 1) if (u, v) != (0, 0)]
            assert math.isclose(ours[j, 0], sum(k1) / (power.sum() - power[0, 0]), rel_tol=1e-10)


def test_one_key_frequency_dominates_or_not_on_constructed_grids():
    p = 13
    a, b = torch.meshgrid(torch.arange(p, dtype=torch.float64), torch.arange(p, dtype=torch.float64), indexing="ij")
    w = 2 * math.pi / p
    grids = {
        "a+b at 3, small b at 5": torch.cos(w * 3 * (a + b)) + 0.2 * torch.sin(w * 5 * b) + 7.0,
        "a-b at 4 with linear a at 4": torch.sin(w * 4 * (a - b)) + 0.5 * torch.cos(w * 4 * a),
        "3 and 5 equal": torch.cos(w * 3 * (a + b)) + torch.cos(w * 5 * a),
        "cross term 2 x 6": torch.cos(w * 2 * a) * torch.cos(w * 6 * b),
        "constant": torch.full((p, p), 2.5, dtype=torch.float64),
    }
    e = {name: frequency_energy(g) for name, g in grids.items()}
    assert int(e["a+b at 3, small b at 5"].argmax()) + 1 == 3
    assert float(e["a+b at 3, small b at 5"].max()) == pytest.approx(1 / 1.04) and DOMINANT <= 1 / 1.04
    assert float(e["a-b at 4 with linear a at 4"][3]) == pytest.approx(1.0)  # every term of k=4 counts
    assert float(e["3 and 5 equal"].max()) == pytest.approx(0.5) and DOMINANT > 0.5
    assert float(e["cross term 2 x 6"].sum()) == pytest.approx(0.0, abs=1e-12)  # belongs to no single frequency
    assert float(e["constant"].abs().sum()) == 0.0
    with pytest.raises(ConfigError, match="p odd"):
        frequency_energy(torch.zeros(4, 4))


def test_top_activations_are_the_true_top_and_the_histogram_counts_every_firing(modadd):
    _, task, _, r, acts = modadd
    for i, n in enumerate(NEURONS):
        v = acts[:, n].relu().numpy()
        order = np.argsort(-v, kind="stable")[:6]
        np.testing.assert_allclose(r.top_values[i].numpy(), v[order], rtol=1e-6)
        assert set(r.top_input[i].tolist()) <= set(np.flatnonzero(v >= v[order[-1]] - 1e-6).tolist())
        assert (r.top_pos[i] == 2).all()  # the SAE reads '=' only
        j = int(r.top_input[i, 0])
        assert r.top_tokens[i][0] == [str(int(task.tokens[j, 0])), str(int(task.tokens[j, 1])), "="]
        assert r.top_acts[i, 0].tolist()[:2] == [0.0, 0.0]  # positions the SAE does not read
        assert float(r.top_acts[i, 0, 2]) == pytest.approx(float(v[order[0]]), rel=1e-6)
        fired = int((v > 0).sum())
        assert int(r.hist_counts[i].sum()) == fired == r.firing(i)
        assert float(r.density_all[i]) == pytest.approx(fired / len(v))
        assert float(r.hist_edges[i, -1]) == pytest.approx(float(v.max()), rel=1e-6)
        nz = v[v > 0]
        width = v.max() / r.hist_counts.shape[1]
        first = int(((nz >= 0) & (nz < width)).sum())
        assert int(r.hist_counts[i, 0]) == first


def test_the_grid_is_the_models_own_activation_at_equals(modadd):
    model, _, _, r, _ = modadd
    pairs = [(0, 0), (5, 100), (112, 1), (57, 57)]
    toks = torch.tensor([[a, b, 113] for a, b in pairs])
    _, cache = model.run_with_cache(toks, names_filter=lambda n: n == MLP)
    for row, (a, b) in enumerate(pairs):
        for i, n in enumerate(NEURONS):
            assert float(r.grid.acts[i, a, b]) == pytest.approx(max(0.0, float(cache[MLP][row, -1, n])), abs=1e-5)
    for i in range(len(NEURONS)):
        shares = fft_shares(r.grid.acts[i].double().numpy())
        np.testing.assert_allclose(r.grid.energy[i].numpy(), shares, atol=1e-5)
        assert bool(r.dominated()[i]) == (shares.max() >= DOMINANT)
        assert int(r.grid.top_freq_all[i]) == int(np.argmax(shares)) + 1
    # the real 2D basis coefficients hold the same energy per frequency
    from mechwork.analysis.fourier import fourier_basis

    fb = fourier_basis(113)
    c = r.grid.coef[0].double()
    k = int(r.grid.top_freq_all[0])
    rows = [0, 2 * k - 1, 2 * k]
    block = c[rows][:, rows].pow(2).sum() - c[0, 0] ** 2
    assert float(block / (c.pow(2).sum() - c[0, 0] ** 2)) == pytest.approx(float(r.grid.energy[0, k - 1]), abs=1e-4)
    assert fb.labels[2 * k - 1] == f"cos {k}"


def test_the_mlp_logit_effect_is_the_logits_change_per_unit_of_activation(modadd):
    model, task, _, r, _ = modadd
    w_out, w_u = model.W_out[0].detach(), model.W_U.detach()
    for i, n in enumerate(NEURONS):
        hand = sum(w_out[n, d] * w_u[d] for d in range(w_out.shape[1]))  # the matmul, one term at a time
        torch.testing.assert_close(r.logit_effect[i], hand, atol=1e-4, rtol=1e-4)
    assert r.logit_path.startswith("W_dec @ W_out[0] @ W_U") and "LayerNorm" not in r.logit_path
    toks = task.tokens[:4]
    n, delta = NEURONS[1], 0.5

    def bump(act, hook):
        act[:, -1, n] += delta
        return act

    with torch.no_grad():
        clean = model(toks)[:, -1]
        moved = model.run_with_hooks(toks, fwd_hooks=[(MLP, bump)])[:, -1]
    torch.testing.assert_close((moved - clean) / delta, r.logit_effect[1].expand(4, -1), atol=2e-3, rtol=1e-3)
    assert [t for t, _ in r.tokens(1, 3)] == [str(j) for j in r.logit_effect[1].argsort(descending=True)[:3].tolist()]
    assert r.tokens(1, 1, bottom=True)[0][1] == pytest.approx(float(r.logit_effect[1].min()))


@pytest.fixture(scope="module")
def induction():
    return induction_sae(96, 96, 60)


def test_the_induction_report_picks_the_most_frequent_latents_and_their_true_top(induction):
    model, toks, sae, x = induction
    r = feature_report(model, sae, toks, latents=3, n_top=5)
    with torch.no_grad():
        acts = sae.encode(x)  # [n * T, d_sae], row-major over (input, position)
    density = (acts > 0).float().mean(0)
    assert r.latents == density.argsort(descending=True, stable=True)[:3].tolist() and r.by == "density"
    assert r.grid is None and r.n_acts == x.shape[0]
    for i, lat in enumerate(r.latents):
        col = acts[:, lat]
        flat = (r.top_input[i] * toks.shape[1] + r.top_pos[i]).tolist()
        np.testing.assert_allclose(col[flat].numpy(), r.top_values[i].numpy(), rtol=1e-5)
        np.testing.assert_allclose(r.top_values[i].numpy(), np.sort(col.numpy())[::-1][:5], rtol=1e-5)
        j = int(r.top_input[i, 0])
        torch.testing.assert_close(r.top_acts[i, 0], acts.reshape(toks.shape[0], toks.shape[1], -1)[j, :, lat])
        assert r.top_tokens[i][0] == [str(int(t)) for t in toks[j]]
    by_max = feature_report(model, sae, toks, latents=2, by="max", n_top=2)
    assert by_max.latents == acts.max(0).values.argsort(descending=True, stable=True)[:2].tolist()


def test_the_residual_logit_effect_is_the_direct_path_and_says_what_it_skips(induction):
    model, toks, sae, _ = induction
    r = feature_report(model, sae, toks[:8], latents=[0, 5], n_top=2)
    torch.testing.assert_close(r.logit_effect, sae.W_dec.detach()[[0, 5]] @ model.W_U.detach())
    assert "skips block 1" in r.logit_path and "LayerNorm" not in r.logit_path
    d = sae.W_dec.detach()[5]

    def push(act, hook):  # the same direction added at the last residual stream: the logits move by d @ W_U
        return act + d

    with torch.no_grad():
        moved = model.run_with_hooks(toks[:2], fwd_hooks=[("ln_final.hook_in", push)]) - model(toks[:2])
    torch.testing.assert_close(moved, r.logit_effect[1].expand_as(moved), atol=1e-4, rtol=1e-4)


def test_bad_arguments_are_one_line_errors(induction):
    model, toks, sae, _ = induction
    for bad in ([96], [], -1, 0):
        with pytest.raises(ConfigError, match="'latents' must be"):
            feature_report(model, sae, toks[:4], latents=bad)
    with pytest.raises(ConfigError, match="'by' must be"):
        feature_report(model, sae, toks[:4], by="loudest")
    with pytest.raises(ConfigError, match="'mask' must be"):
        feature_report(model, sae, toks[:4], mask=torch.zeros(4, 48, dtype=torch.bool))
    wrong = SAE(SAEConfig(d_in=64, d_sae=8, hook_name="blocks.1.hook_resid_prx"))
    with pytest.raises(ConfigError, match="nearest is 'blocks.1.hook_resid_pre'"):
        feature_report(model, wrong, toks[:4])
    with pytest.raises(ConfigError, match="no \\(a, b\\) grid"):
        feature_report(model, sae, toks[:4], latents=[0]).dominated()


def test_the_one_frequency_share_of_a_neuron_is_its_neuron_frequencies_fve(modadd):
    """fourier.neuron_frequencies computes each neuron's variance explained by one frequency in the real 3x3 basis
    block (its own code): over the model's 512 neurons it equals the largest frequency_energy share."""
    from mechwork.analysis.fourier import neuron_frequencies

    model, task, _, _, acts = modadd
    nf = neuron_frequencies(model, task)
    e = frequency_energy(acts.T.reshape(512, 113, 113))
    share, k = e.max(-1)
    live = acts.var(0) > 1e-4  # a neuron (almost) constant over the grid has no spectrum to compare
    assert int(live.sum()) > 400
    torch.testing.assert_close(share.float()[live], nf.fve.float()[live], atol=2e-3, rtol=0)
    assert float((share.float()[live] - nf.fve.float()[live]).abs().median()) < 1e-5
    assert bool(((k + 1) == nf.freq)[live & (nf.fve > 0.01)].all())
