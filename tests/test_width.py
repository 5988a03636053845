"""Width parametrisations: the muP / NTK / SP tables per layer and optimiser, and the study's point functions."""

from __future__ import annotations

import importlib.util
import json
import math
from pathlib import Path

import pytest
import torch

from mechwork.errors import ConfigError, MechworkError
from mechwork.studies.width import LayerScale, WidthConfig, WidthMLP, check_widths, layer_scale, make_optimizer
from mechwork.studies.width_study import coord_point, lazy_point, loglog_slope, tangent_kernel, transfer_point

BASE = 64


def lrs(param: str, width: int, optimizer: str) -> dict[str, float]:
    model = WidthMLP(WidthConfig(param=param, width=width, base_width=BASE, depth=2))
    return {g["name"]: g["lr"] for g in make_optimizer(model, optimizer, 1.0).param_groups}


# Tensor Programs V, Table 3, as the ratio of a parameter's lr at width 4 x BASE to its lr at BASE.
MUP_LR_RATIO = {
    "adam": {"layers.0.weight": 1.0, "layers.0.bias": 1.0, "layers.1.weight": 1 / 4, "layers.1.bias": 1.0,
             "layers.2.weight": 1 / 4, "layers.2.bias": 1.0},
    "sgd": {"layers.0.weight": 4.0, "layers.0.bias": 4.0, "layers.1.weight": 1.0, "layers.1.bias": 4.0,
            "layers.2.weight": 1 / 4, "layers.2.bias": 1.0},
}


@pytest.mark.parametrize("optimizer", ["adam", "sgd"])
def test_mup_scales_each_layers_lr_as_table_3_says(optimizer):
    narrow, wide = lrs("mup", BASE, optimizer), lrs("mup", 4 * BASE, optimizer)
    assert set(narrow) == set(MUP_LR_RATIO[optimizer])
    for name, ratio in MUP_LR_RATIO[optimizer].items():
        assert wide[name] / narrow[name] == pytest.approx(ratio, rel=1e-12), name


@pytest.mark.parametrize("param", ["sp", "ntk"])
@pytest.mark.parametrize("optimizer", ["adam", "sgd"])
def test_sp_and_ntk_keep_every_lr_constant(param, optimizer):
    assert lrs(param, BASE, optimizer) == lrs(param, 8 * BASE, optimizer) == dict.fromkeys(lrs(param, BASE, optimizer),
                                                                                             1.0)


def test_init_std_scales_with_width():
    for param, kind, ratio in [("sp", "hidden", 0.5), ("sp", "output", 0.5), ("mup", "hidden", 0.5),
                               ("mup", "output", 0.25), ("mup", "input", 1.0), ("ntk", "hidden", 1.0)]:
        fan = 64 if kind == "input" else None
        a = layer_scale(param, kind, fan or 100, 1.0).init_std
        b = layer_scale(param, kind, fan or 400, 4.0).init_std
        assert b / a == pytest.approx(ratio), (param, kind)
    # and the sampled weights follow: muP's readout std is 1/sqrt(fan_in * width_mult)
    model = WidthMLP(WidthConfig(param="mup", width=1024, base_width=64, depth=2))
    assert model.layers[2].weight.std().item() == pytest.approx(1 / math.sqrt(1024 * 16), rel=0.05)
    assert model.layers[1].weight.std().item() == pytest.approx(1 / math.sqrt(1024), rel=0.02)


def test_ntk_multipliers_are_one_over_sqrt_fan_in_with_unit_weights():
    model = WidthMLP(WidthConfig(param="ntk", width=256, depth=2))
    assert [layer.multiplier for layer in model.layers] == [1 / 8, 1 / 16, 1 / 16]
    assert model.layers[1].weight.std().item() == pytest.approx(1.0, rel=0.02)
    # the forward pass uses it: an NTK net computes the same function as SP with W / sqrt(fan_in)
    sp = WidthMLP(WidthConfig(param="sp", width=256, depth=2))
    x = torch.randn(5, 64)
    assert torch.allclose(model(x), sp(x), atol=1e-5)
    assert all(layer_scale("mup", k, 10).multiplier == 1.0 for k in ("input", "hidden", "output"))


def test_mup_at_the_base_width_is_sp():
    for width in (32, 64):
        mup = WidthMLP(WidthConfig(param="mup", width=width, base_width=width, seed=3))
        sp = WidthMLP(WidthConfig(param="sp", width=width, base_width=width, seed=3))
        assert all(torch.equal(a, b) for a, b in zip(mup.parameters(), sp.parameters(), strict=True))
        for opt in ("adam", "sgd"):
            m_groups = make_optimizer(mup, opt, 0.01).param_groups
            s_groups = make_optimizer(sp, opt, 0.01).param_groups
            assert [g["lr"] for g in m_groups] == [g["lr"] for g in s_groups] == [0.01] * 6
    assert isinstance(layer_scale("mup", "hidden", 64, 1.0), LayerScale)


def test_bad_input_is_a_one_line_config_error():
    cases = [
        (lambda: check_widths([64, 256, 128]), "'widths' must be strictly increasing (got [64, 256, 128])"),
        (lambda: check_widths([64, 64]), "'widths' must be strictly increasing"),
        (lambda: check_widths([0, 64]), "'widths' must be a non-empty list of positive integers"),
        (lambda: WidthConfig(param="mf"), "'param' must be one of sp, ntk, mup (got 'mf')"),
        (lambda: layer_scale("standard", "hidden", 64), "'param' must be one of sp, ntk, mup"),
        (lambda: layer_scale("mup", "middle", 64), "'kind' must be one of input, hidden, output"),
        (lambda: WidthConfig(width=0), "'width' must be a positive integer (got 0)"),
        (lambda: WidthConfig(width=-8), "'width' must be a positive integer (got -8)"),
        (lambda: layer_scale("mup", "hidden", 64, width_mult=0.0), "'width_mult' must be a positive number"),
        (lambda: make_optimizer(WidthMLP(WidthConfig()), "rmsprop", 1e-3), "'optimizer' must be sgd or adam"),
        (lambda: make_optimizer(WidthMLP(WidthConfig()), "adam", -1.0), "'lr' must be a positive number"),
    ]
    for fn, msg in cases:
        with pytest.raises(ConfigError) as e:
            fn()
        assert isinstance(e.value, MechworkError) and "\n" not in str(e.value)
        assert str(e.value).startswith(msg), str(e.value)
    assert check_widths([64, 128]) == (64, 128)


def test_tangent_kernel_matches_the_brute_force_jacobian():
    for param, opt in (("mup", "sgd"), ("ntk", "sgd"), ("mup", "adam")):
        model = WidthMLP(WidthConfig(param=param, width=24, base_width=8, depth=2, d_in=5, d_out=3, act="tanh"))
        x = torch.randn(4, 5)
        k = tangent_kernel(model, x, opt)
        groups = make_optimizer(model, opt, 1.0).param_groups
        brute = torch.zeros(4, 4)
        out = model(x)
        for c in range(3):
            jac = [torch.autograd.grad(out[i, c], [g["params"][0] for g in groups], retain_graph=True)
                   for i in range(4)]
            for gi, g in enumerate(groups):
                flat = torch.stack([j[gi].flatten() for j in jac])
                brute += g["lr"] * flat @ flat.T
        assert torch.allclose(k, brute, rtol=1e-4, atol=1e-6), param


def test_loglog_slope_and_the_point_functions():
    assert loglog_slope([1, 10, 100], [5.0, 0.5, 0.05]) == pytest.approx(-1.0)
    with pytest.raises(ConfigError):
        loglog_slope([1], [1.0])
    c = coord_point(param="sp", width=32, seed=0, steps=3, base_width=32, batch=32)
    assert len(c["mean_abs"]) == 4 and all(len(r) == 4 for r in c["mean_abs"])
    t = transfer_point(param="mup", width=32, log2_lr=-6, seed=0, steps=20, base_width=16)
    assert t["train_loss"] < 2.3 and not t["diverged"]
    assert json.dumps(t)
    lz = lazy_point(param="ntk", width=32, seed=0, lr=3.2, steps=5, n_train=64, n_kernel=8, base_width=32)
    assert 0 < lz["kernel_change"] < 5 and lz["train_loss"] < lz["train_loss0"]


def test_ntk_and_mup_agree_at_the_base_width_in_the_lazy_study():
    # every layer's fan_in is 64 here (input dim = width = base width), so NTK at lr 64 x eta is SP at eta
    kw = {"width": 64, "seed": 1, "steps": 5, "n_train": 64, "n_kernel": 8, "base_width": 64}
    ntk, mup = lazy_point(param="ntk", lr=0.1 * 64, **kw), lazy_point(param="mup", lr=0.1, **kw)
    assert ntk["train_loss"] == pytest.approx(mup["train_loss"], rel=1e-4)
    assert ntk["kernel_change"] == pytest.approx(mup["kernel_change"], rel=1e-3)


def test_study_smoke_plan_writes_every_verdict(tmp_path):
    path = Path(__file__).resolve().parents[1] / "experiments" / "infinite_width.py"
    spec = importlib.util.spec_from_file_location("study_infinite_width", path)
    study = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(study)
    out = tmp_path / "study"
    assert study.main(["--smoke", "--out", str(out), "--dashboard", str(tmp_path / "p.html"), "--workers", "1"]) == 0
    res = json.loads((out / "results.json").read_text())
    for key in ("verdict_coord", "verdict_transfer", "verdict_lazy", "verdict"):
        assert res[key].split(":")[0] in ("reproduced", "partly reproduced", "not reproduced"), key


@pytest.mark.parametrize(("call", "match"), [
    (lambda: coord_point(param="sp", width=16, seed=0, steps=-1), r"'steps' must be a positive integer \(got -1\)"),
    (lambda: coord_point(param="sp", width=16, seed=0, batch=0), r"'batch' must be a positive integer \(got 0\)"),
    (lambda: transfer_point(param="sp", width=16, log2_lr=-6, seed=0, steps=0), r"'steps' must be a positive"),
    (lambda: transfer_point(param="sp", width=16, log2_lr=-6, seed=0, batch_size=0), r"'batch_size' must be a po"),
    (lambda: lazy_point(param="ntk", width=16, seed=0, lr=0.1, n_kernel=0), r"'n_kernel' must be a positive"),
])
def test_bad_point_arguments_are_one_line_errors(call, match):
    with pytest.raises(ConfigError, match=match) as e:
        call()
    assert "\n" not in str(e.value)
