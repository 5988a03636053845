"""Sharpness by Hessian-vector products against the explicit Hessian of a tiny MLP, and the study's points."""

from __future__ import annotations

import pytest
import torch
from torch import nn
from torch.func import functional_call

from mechwork.errors import ConfigError, MechworkError
from mechwork.studies.curvature import (
    adam_preconditioner,
    adam_threshold,
    gd_threshold,
    preconditioned_sharpness,
    sharpness,
    top_eigenvalue,
)
from mechwork.studies.stability import adam_point, gd_point, omnigrok_point, plateau


def _tiny(seed: int = 0) -> tuple[nn.Module, torch.Tensor, torch.Tensor]:
    torch.manual_seed(seed)
    model = nn.Sequential(nn.Linear(3, 5), nn.Tanh(), nn.Linear(5, 2)).double()
    x = torch.randn(16, 3, dtype=torch.float64)
    y = torch.randn(16, 2, dtype=torch.float64)
    return model, x, y


def _loss(model: nn.Module, x: torch.Tensor, y: torch.Tensor) -> torch.Tensor:
    return 0.5 * ((model(x) - y) ** 2).sum(-1).mean()


def _explicit_hessian(model: nn.Module, x: torch.Tensor, y: torch.Tensor) -> torch.Tensor:
    names = [n for n, _ in model.named_parameters()]
    shapes = [p.shape for _, p in model.named_parameters()]
    sizes = [p.numel() for _, p in model.named_parameters()]
    flat = torch.cat([p.detach().reshape(-1) for p in model.parameters()])

    def f(w: torch.Tensor) -> torch.Tensor:
        parts = torch.split(w, sizes)
        params = {n: t.reshape(s) for n, t, s in zip(names, parts, shapes, strict=True)}
        return 0.5 * ((functional_call(model, params, (x,)) - y) ** 2).sum(-1).mean()

    return torch.autograd.functional.hessian(f, flat)


@pytest.mark.parametrize("method", ["lanczos", "power"])
@pytest.mark.parametrize("seed", [0, 1])
def test_sharpness_matches_the_explicit_hessian(method, seed):
    model, x, y = _tiny(seed)
    h = _explicit_hessian(model, x, y)
    exact = float(torch.linalg.eigvalsh(h)[-1])
    got = sharpness(_loss(model, x, y), model, iters=500, tol=1e-10, method=method)
    assert abs(got.value - exact) <= 1e-3 * abs(exact), (got, exact)
    assert got.iterations >= 1 and got.method == method and not got.preconditioned


def test_power_iteration_finds_the_top_eigenvalue_when_a_negative_one_dominates():
    a = torch.diag(torch.tensor([-5.0, 1.0, 2.0], dtype=torch.float64))
    res = top_eigenvalue(lambda v: a @ v, 3, iters=1000, tol=1e-12, method="power")
    assert res.value == pytest.approx(2.0, rel=1e-3)
    assert top_eigenvalue(lambda v: a @ v, 3, iters=10, method="lanczos").value == pytest.approx(2.0, rel=1e-9)


def test_preconditioned_sharpness_matches_the_explicit_matrix():
    model, x, y = _tiny(0)
    opt = torch.optim.Adam(model.parameters(), lr=1e-2)
    for _ in range(5):
        opt.zero_grad()
        _loss(model, x, y).backward()
        opt.step()
    p = adam_preconditioner(opt)
    # P = (1 - beta1^t) (sqrt(v / (1 - beta2^t)) + eps), read independently of the function
    state = [opt.state[q] for q in model.parameters()]
    v = torch.cat([s["exp_avg_sq"].reshape(-1) for s in state])
    t = float(state[0]["step"])
    want = (1 - 0.9**t) * ((v / (1 - 0.999**t)).sqrt() + 1e-8)
    assert torch.allclose(p, want, rtol=1e-12)
    h = _explicit_hessian(model, x, y)
    d = p.rsqrt()
    exact = float(torch.linalg.eigvalsh(d[:, None] * h * d[None, :])[-1])
    for method in ("lanczos", "power"):
        got = preconditioned_sharpness(_loss(model, x, y), model, opt, iters=500, tol=1e-10, method=method)
        assert got.preconditioned and abs(got.value - exact) <= 1e-3 * abs(exact), (method, got, exact)
    # the same from P's diagonal; and P^-1 H has the same top eigenvalue as P^-1/2 H P^-1/2
    assert preconditioned_sharpness(_loss(model, x, y), model, p, iters=500, tol=1e-10).value == pytest.approx(
        exact, rel=1e-3)
    assert float(torch.linalg.eigvals(h / p[:, None]).real.max()) == pytest.approx(exact, rel=1e-6)


def test_thresholds():
    assert gd_threshold(0.1) == pytest.approx(20.0)
    assert adam_threshold(1e-3, 0.9) == pytest.approx(38_000.0)
    assert adam_threshold(1.0, 0.0) == pytest.approx(2.0)  # no momentum: gradient descent's bound


@pytest.mark.parametrize(
    ("call", "match"),
    [
        (lambda m, loss: sharpness(loss, m, iters=0), r"^'iters' must be a positive number of iterations \(got 0\)$"),
        (lambda m, loss: sharpness(loss, m, iters=-3), "'iters' must be"),
        (lambda m, loss: sharpness(loss, m, tol=0.0), "'tol' must be"),
        (lambda m, loss: sharpness(loss, m, method="arnoldi"), "'method' must be lanczos or power"),
        (lambda m, loss: sharpness(loss.detach(), m), "'loss' must be a scalar that requires grad"),
        (lambda m, loss: sharpness(loss * torch.ones(2, dtype=loss.dtype), m), "'loss' must be a scalar tensor"),
        (lambda m, loss: sharpness(loss, []), "'params' must be"),
        (lambda m, loss: preconditioned_sharpness(loss, m, torch.optim.Adam(m.parameters())), "has taken at least"),
        (lambda m, loss: preconditioned_sharpness(loss, m, torch.optim.SGD(m.parameters(), lr=0.1)),
         "'optimizer' must be a torch.optim.Adam"),
        (lambda m, loss: preconditioned_sharpness(loss, m, torch.optim.Adam(m.parameters(), amsgrad=True)),
         "without amsgrad"),
        (lambda m, loss: preconditioned_sharpness(loss, m, torch.ones(3, dtype=torch.float64)), "'precond' must"),
        (lambda m, loss: preconditioned_sharpness(loss, m, -torch.ones(47, dtype=torch.float64)), "positive"),
        (lambda m, loss: gd_threshold(0.0), "'lr' must be a positive"),
        (lambda m, loss: adam_threshold(1e-3, 1.0), "'beta1' must be"),
    ],
)
def test_bad_input_is_a_one_line_error(call, match):
    model, x, y = _tiny(0)
    with pytest.raises(ConfigError, match=match) as e:
        call(model, _loss(model, x, y))
    assert isinstance(e.value, MechworkError) and "\n" not in str(e.value)


def test_a_loss_linear_in_the_parameters_has_no_curvature_to_measure():
    w = torch.ones(3, requires_grad=True)
    with pytest.raises(ConfigError, match="no second derivative"):
        sharpness((2 * w).sum(), [w])


def test_plateau_rule():
    steps = list(range(10))
    vals = [1, 5, 9, 10, 11, 10, 9, 10, 10, 10]
    pl = plateau(steps, vals, 10.0, frac=0.9)  # first at index 2 (9 >= 9); second half of [2..9] is [6..9]
    assert pl["reached"] == 2 and pl["median"] == 10 and pl["ratio"] == 1.0 and pl["n"] == 4
    assert plateau(steps, [1.0] * 10, 10.0)["reached"] is None
    with pytest.raises(ConfigError):
        plateau(steps, [1.0], 10.0)


def test_points_are_json_ready_and_record_what_the_study_reads():
    import json

    g = gd_point(lr=0.1, seed=0, steps=20, measure_every=10, sizes=(64, 8, 10), iters=5, layernorm=True)
    assert [r["step"] for r in g["curve"]] == [0, 10, 20] and g["threshold"] == pytest.approx(20.0)
    assert {"sharpness", "norm2_0", "eff_lr_0"} <= set(g["curve"][0])
    a = adam_point(lr=1e-3, seed=0, steps=10, measure_every=5, sizes=(64, 8, 10), iters=5)
    assert "pre_sharpness" not in a["curve"][0] and "pre_sharpness" in a["curve"][1]
    o = omnigrok_point(init_scale=8.0, weight_decay=0.1, seed=0, steps=10, measure_every=5, sizes=(64, 8, 10))
    assert o["curve"][0]["weight_norm"] > 0 and len(o["curve"]) == 3
    json.dumps([g, a, o])
    with pytest.raises(ConfigError, match="'steps' must"):
        gd_point(lr=0.1, seed=0, steps=0, measure_every=1)
    with pytest.raises(ConfigError, match="'lr' must"):
        adam_point(lr=-1.0, seed=0, steps=1, measure_every=1)
    with pytest.raises(ConfigError, match="'init_scale' must"):
        omnigrok_point(init_scale=0.0, weight_decay=0.0, seed=0, steps=1, measure_every=1)


@pytest.mark.parametrize(("kw", "match"), [
    ({"threshold": 0.0}, "'threshold' must be a positive sharpness"),
    ({"threshold": 20.0, "frac": -1.0}, r"'frac' must be a fraction in \(0, 1\]"),
])
def test_plateau_bad_input(kw, match):
    with pytest.raises(ConfigError, match=match):
        plateau([0, 1], [1.0, 2.0], **kw)
