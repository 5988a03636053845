"""Chinchilla Approach 3 fits (mechwork.studies.scaling) and the multitask sparse parity task
(mechwork.studies.parity)."""

from __future__ import annotations

import numpy as np
import pytest

from mechwork.errors import ConfigError, MechworkError
from mechwork.studies.parity import parity_point
from mechwork.studies.scaling import BESIROGLU, FitConfig, fit_scaling

# a 200-start seeded subsample of Chinchilla's 4,500-start grid keeps the tests fast
FAST = FitConfig(n_starts=200)


def synthetic(noise: float = 0.01, seed: int = 0, n: int = 8):
    """Losses from Besiroglu et al.'s refit on an n x n grid, times log-normal noise."""
    N, D = (v.ravel() for v in np.meshgrid(np.logspace(7, 10, n), np.logspace(8, 12, n)))
    P = BESIROGLU
    L = P["E"] + P["A"] / N ** P["alpha"] + P["B"] / D ** P["beta"]
    return L * np.exp(np.random.default_rng(seed).normal(0.0, noise, L.size)), N, D


@pytest.fixture(scope="module")
def noisy_fit():
    L, N, D = synthetic()
    return fit_scaling(L, N, D, config=FitConfig(n_starts=200, n_boot=40, seed=0))


def test_recovers_besiroglu_exponents_within_their_standard_error(noisy_fit):
    assert abs(noisy_fit.alpha - BESIROGLU["alpha"]) < 0.02
    assert abs(noisy_fit.beta - BESIROGLU["beta"]) < 0.02
    assert abs(noisy_fit.E - BESIROGLU["E"]) < 0.05
    assert noisy_fit.n_points == 64 and noisy_fit.n_starts == 200


def test_bootstrap_intervals_contain_the_true_values(noisy_fit):
    for name in ("E", "alpha", "beta"):
        lo, hi = noisy_fit.ci[name]
        assert lo <= BESIROGLU[name] <= hi, (name, lo, hi)
        assert lo <= noisy_fit.params[name] <= hi
        assert noisy_fit.se[name] > 0
    assert noisy_fit.ci["alpha"][1] - noisy_fit.ci["alpha"][0] < 0.1  # informative, not vacuous


def test_the_fit_is_seeded_and_repeatable():
    L, N, D = synthetic(n=5)
    cfg = FitConfig(n_starts=20, n_boot=5, seed=3)
    a, b = fit_scaling(L, N, D, config=cfg), fit_scaling(L, N, D, config=cfg)
    assert a.params == b.params and a.ci == b.ci


def test_summing_the_huber_terms_matters():
    # Averaging has the same minimiser, but L-BFGS-B's absolute tolerances stop the search short of it
    L, N, D = synthetic()
    summed = fit_scaling(L, N, D, config=FAST)
    averaged = fit_scaling(L, N, D, config=FitConfig(n_starts=200, reduction="mean"))
    assert averaged.objective * len(L) > summed.objective * 1.02
    err = lambda f: abs(f.alpha - BESIROGLU["alpha"]) + abs(f.beta - BESIROGLU["beta"])
    assert err(summed) < err(averaged)


def test_one_variable_fit_recovers_an_exact_power_law():
    N = np.logspace(3, 7, 12)
    fit = fit_scaling(0.5 + 30.0 / N**0.45, N)
    assert fit.B is None and fit.beta is None and fit.n_starts == 150
    assert fit.alpha == pytest.approx(0.45, abs=1e-3) and abs(fit.E - 0.5) < 1e-3
    assert fit_scaling(0.5 + 30.0 / N**0.45, N, variable="D").summary().startswith("L(D) = E + A/D^alpha")


def test_result_summary_frame_figure_and_prediction(noisy_fit):
    assert "alpha 0.3" in noisy_fit.summary() and "95% bootstrap" in noisy_fit.summary()
    frame = noisy_fit.to_frame()
    assert list(frame["param"]) == ["E", "A", "alpha", "B", "beta"]
    assert {"estimate", "ci_low", "ci_high", "se"} <= set(frame.columns)
    fig = noisy_fit.figure()
    assert len(fig.data) == 16  # 8 values of D: markers and a fitted curve each
    L, N, D = synthetic(noise=0.0)
    assert np.allclose(noisy_fit.predict(N, D), L, rtol=0.02)
    with pytest.raises(ConfigError, match="'D' must be data sizes"):
        noisy_fit.predict(N)
    a, b = noisy_fit.optimal_exponents or (0.0, 0.0)
    assert a + b == pytest.approx(1.0)


def test_fewer_points_than_parameters_is_refused():
    L, N, D = synthetic(n=2)  # 4 points, 5 parameters
    msg = r"^'L' must be at least 5 points, one per fitted parameter \(got '4 points'\)$"
    with pytest.raises(ConfigError, match=msg):
        fit_scaling(L, N, D, config=FAST)
    with pytest.raises(ConfigError, match="at least 3 points"):
        fit_scaling([3.0, 2.0], [1e6, 1e7])


@pytest.mark.parametrize("which", ["L", "N", "D"])
@pytest.mark.parametrize("bad", [0.0, -1.0, float("nan"), float("inf")])
def test_non_positive_or_non_finite_values_are_refused(which, bad):
    data = dict(zip("LND", synthetic(n=3), strict=True))
    data[which] = data[which].copy()
    data[which][4] = bad
    with pytest.raises(ConfigError, match=rf"^'{which}' must be positive and finite everywhere") as e:
        fit_scaling(data["L"], data["N"], data["D"], config=FAST)
    assert isinstance(e.value, MechworkError) and "\n" not in str(e.value)


def test_mismatched_lengths_are_refused():
    L, N, D = synthetic(n=3)
    with pytest.raises(ConfigError, match=r"^'N' must be one value per loss \(9 values, like L\) \(got '8 values'\)$"):
        fit_scaling(L, N[:-1], D)
    with pytest.raises(ConfigError, match="'D' must be one value per loss"):
        fit_scaling(L, N, D[:3])
    with pytest.raises(ConfigError, match="'L' must be a 1-D sequence"):
        fit_scaling(L.reshape(3, 3), N, D)


@pytest.mark.parametrize(("kw", "name"), [({"reduction": "median"}, "reduction"), ({"delta": 0.0}, "delta"),
                                          ({"n_starts": 0}, "n_starts"), ({"n_boot": -1}, "n_boot"),
                                          ({"ci": 1.0}, "ci"), ({"boot_starts": 0}, "boot_starts")])
def test_bad_fit_config_is_refused(kw, name):
    with pytest.raises(ConfigError, match=f"^'{name}' must be"):
        FitConfig(**kw)


def test_sparse_parity_task():
    import torch

    from mechwork.studies.parity import SparseParity

    task = SparseParity(n_tasks=6, n_bits=6, k=3, alpha=0.4)
    p = task.probs()
    assert float(p.sum()) == pytest.approx(1.0) and float(p[0] / p[1]) == pytest.approx(2**1.4, rel=1e-5)
    subsets = task.subsets()
    assert len({tuple(sorted(s.tolist())) for s in subsets}) == 6  # distinct subtasks
    x, y, t = task.sample(500, seed=1)
    assert torch.equal(x[:, :6].argmax(1), t) and set(x.unique().tolist()) == {0.0, 1.0}
    bits = x[:, 6:].long()
    assert torch.equal(y, bits.gather(1, subsets[t]).sum(1) % 2)
    with pytest.raises(ConfigError, match="'n_tasks' must be at most C"):
        SparseParity(n_tasks=30, n_bits=5, k=3)


def test_parity_point_reports_a_frequency_weighted_loss():
    from mechwork.studies.parity import parity_point

    r = parity_point(width=8, n_train=512, steps=30, n_tasks=4, n_bits=6, eval_every=10, eval_per_task=32)
    assert r["N"] == (10 * 8 + 8) + (8 * 2 + 2) and r["D"] == 512 and len(r["task_loss"]) == 4
    assert 0 < r["test_loss"] < 2 and 0 <= r["n_learned"] <= 4 and 1 <= r["best_step"] <= 30
    with pytest.raises(ConfigError, match="'n_train' must be"):
        parity_point(width=8, n_train=0, steps=5)


@pytest.mark.parametrize(("call", "match"), [
    (lambda: fit_scaling([1.0, 0.9, 0.8], [1, 2, 3], variable="Q"), "'variable' must be 'N' or 'D'"),
    (lambda: parity_point(width=4, n_train=64, steps=0), r"'steps' must be a positive integer \(got 0\)"),
    (lambda: parity_point(width=4, n_train=64, batch_size=0), r"'batch_size' must be a positive integer \(got 0\)"),
    (lambda: parity_point(width=4, n_train=64, eval_every=0), r"'eval_every' must be a positive integer \(got 0\)"),
])
def test_bad_point_and_fit_arguments_are_one_line_errors(call, match):
    with pytest.raises(ConfigError, match=match) as e:
        call()
    assert "\n" not in str(e.value)
