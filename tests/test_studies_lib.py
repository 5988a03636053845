"""The reusable pieces behind the studies: the sweep runner, pruning masks, masked training, digits MLPs."""

from __future__ import annotations

import json

import pytest
import torch

from mechwork.errors import ConfigError
from mechwork.studies.digits import digits_data, make_mlp, train_mlp
from mechwork.studies.prune import (
    MaskedOptimizerHook,
    apply_masks,
    check_masks,
    imp_sparsity,
    magnitude_masks,
    random_masks,
    sparsity_of,
)
from mechwork.studies.sweep import point_key, sweep


# -- sweeps ------------------------------------------------------------------------------------
def flaky_point(x: int, fail: bool = False) -> dict:
    if fail and x == 2:
        raise ValueError("x=2 fails")
    return {"square": x * x}


def test_sweep_runs_in_worker_processes_and_resumes(tmp_path):
    out = tmp_path / "s"
    res = sweep("mechwork.studies.sweep:_demo_point", {"x": [1, 2, 3], "y": [10, 20]}, out, workers=2)
    assert (res.ran, res.skipped) == (6, 0)
    df = res.frame()
    assert sorted(df["sum"]) == [11, 12, 13, 21, 22, 23]
    stamps = {f.name: f.stat().st_mtime_ns for f in (out / "points").iterdir()}
    again = sweep("mechwork.studies.sweep:_demo_point", {"x": [1, 2, 3, 4], "y": [10, 20]}, out, workers=2)
    assert (again.ran, again.skipped) == (2, 6)  # only the new points ran
    assert all((out / "points" / n).stat().st_mtime_ns == t for n, t in stamps.items())  # finished ones untouched
    assert len(again.frame()) == 8
    assert json.loads((out / "sweep.json").read_text())["fn"] == "mechwork.studies.sweep:_demo_point"
    # the same directory with other fixed settings: the result holds this call's points only
    other = sweep("mechwork.studies.sweep:_demo_point", {"x": [1, 2]}, out, fixed={"y": 100}, workers=1)
    assert (other.ran, other.skipped) == (2, 0) and sorted(other.frame()["sum"]) == [101, 102]
    assert len(list((out / "points").iterdir())) == 10  # nothing was deleted


def test_a_failing_point_is_recorded_and_retried(tmp_path):
    out = tmp_path / "s"
    res = sweep(flaky_point, {"x": [1, 2]}, out, fixed={"fail": True}, workers=1)
    assert len(res.errors) == 1 and "x=2 fails" in res.errors[0]["error"]
    assert res.frame()["square"].tolist() == [1]
    res = sweep(flaky_point, {"x": [1, 2]}, out, fixed={"fail": True}, workers=1)
    assert (res.ran, res.skipped) == (1, 1)  # the failed point is retried, the good one kept


def test_sweep_bad_input(tmp_path):
    with pytest.raises(ConfigError, match="'grid' has an unknown parameter 'z'; _demo_point takes x, y"):
        sweep("mechwork.studies.sweep:_demo_point", {"x": [1], "z": [2]}, tmp_path)
    with pytest.raises(ConfigError, match=r"'grid\['x'\]' must be a non-empty list"):
        sweep("mechwork.studies.sweep:_demo_point", {"x": [], "y": [1]}, tmp_path)
    with pytest.raises(ConfigError, match="'fn' must be an importable 'module:function'"):
        sweep("mechwork.studies.sweep:nope", {"x": [1]}, tmp_path)
    with pytest.raises(ConfigError, match="module-level function"):
        sweep(lambda x: {}, {"x": [1]}, tmp_path)
    with pytest.raises(ConfigError, match="both in the grid and fixed"):
        sweep("mechwork.studies.sweep:_demo_point", {"x": [1], "y": [1]}, tmp_path, fixed={"y": 2})
    assert point_key({"a": 1, "b": 2}) == point_key({"b": 2, "a": 1})


# -- pruning -------------------------------------------------------------------------------------
def test_magnitude_masks_global_and_iterative():
    g = torch.Generator().manual_seed(0)
    w = {"a": torch.randn(10, 10, generator=g), "b": torch.randn(50, generator=g) * 3}
    m = magnitude_masks(w, 0.2)
    assert sparsity_of(m) == pytest.approx(0.2, abs=0.01)
    flat = torch.cat([w["a"].flatten(), w["b"]]).abs()
    kept = torch.cat([m["a"].flatten(), m["b"]])
    assert flat[kept].min() >= flat[~kept].max()  # the kept are exactly the largest
    m2 = magnitude_masks(w, imp_sparsity(2), prev=m)
    assert sparsity_of(m2) == pytest.approx(0.36, abs=0.01)
    assert not (m2["a"] & ~m["a"]).any()  # nothing pruned comes back
    per_layer = magnitude_masks(w, 0.5, scope="layer")
    assert [int(v.sum()) for v in per_layer.values()] == [50, 25]


def test_random_masks_and_masked_training_keep_pruned_weights_at_zero():
    w = {"x": torch.randn(200)}
    r = random_masks(w, 0.75, seed=1)
    assert sparsity_of(r) == pytest.approx(0.75, abs=0.01)
    assert not torch.equal(r["x"], random_masks(w, 0.75, seed=2)["x"])
    lin = torch.nn.Linear(20, 5)
    params = dict(lin.named_parameters())
    masks = magnitude_masks({"weight": params["weight"]}, 0.6)
    hook = MaskedOptimizerHook(params, masks)
    opt = torch.optim.AdamW(lin.parameters(), lr=0.1, weight_decay=0.1)
    hook.after_step()
    for _ in range(20):
        loss = lin(torch.randn(8, 20)).pow(2).sum()
        opt.zero_grad()
        loss.backward()
        hook.before_step()
        opt.step()
        hook.after_step()
    assert (params["weight"][~masks["weight"]] == 0).all()
    assert (params["weight"][masks["weight"]] != 0).all()


def test_pruning_bad_input():
    w = {"a": torch.randn(4, 4)}
    for bad in (1.0, -0.1, 1.5):
        with pytest.raises(ConfigError, match=r"'sparsity' must be a fraction in \[0, 1\)"):
            magnitude_masks(w, bad)
    with pytest.raises(ConfigError, match=r"mask for 'a' has shape \(3, 4\), but the parameter has shape \(4, 4\)"):
        apply_masks(w, {"a": torch.ones(3, 4, dtype=torch.bool)})
    with pytest.raises(ConfigError, match="mask for unknown parameter 'b'"):
        check_masks(w, {"b": torch.ones(4, 4, dtype=torch.bool)})
    with pytest.raises(ConfigError, match="must be a bool tensor"):
        check_masks(w, {"a": torch.ones(4, 4)})
    m = magnitude_masks(w, 0.5)
    with pytest.raises(ConfigError, match="at least the previous mask's 0.5000"):
        magnitude_masks(w, 0.25, prev=m)


def test_train_with_masks_and_rewound_init(tiny_task, tiny_train_cfg):
    from mechwork.models import ToyConfig, build_model, weights
    from mechwork.training import train

    cfg = ToyConfig.for_task(tiny_task)
    init = {k: v.detach().clone() for k, v in weights(build_model(cfg, "cpu")).items()}
    target = {k: v for k, v in init.items() if k.endswith("fc_in.weight")}
    masks = magnitude_masks(target, 0.5)
    res = train(tiny_task, cfg, tiny_train_cfg, quiet=True, device="cpu", init=init, masks=masks)
    w = weights(res.model)["layers.0.mlp.fc_in.weight"]
    assert (w[~masks["layers.0.mlp.fc_in.weight"]] == 0).all() and (w[masks["layers.0.mlp.fc_in.weight"]] != 0).all()
    with pytest.raises(ConfigError, match="mask for 'layers.0.mlp.fc_in.weight' has shape"):
        train(tiny_task, cfg, tiny_train_cfg, quiet=True, device="cpu",
              masks={"layers.0.mlp.fc_in.weight": torch.ones(3, dtype=torch.bool)})


# -- digits ----------------------------------------------------------------------------------------
def test_digits_mlp_learns_and_respects_masks():
    from mechwork.studies.digits import digits_data, make_mlp, train_mlp

    data = digits_data(seed=0)
    assert data.x_train.shape[1] == 64 and set(data.y_test.tolist()) == set(range(10))
    model = make_mlp([64, 64, 10], seed=0)
    masks = random_masks({"0.weight": model[0].weight}, 0.9, seed=0)
    res = train_mlp(model, data, steps=300, lr=1e-2, masks=masks)
    assert res.test_acc > 0.8
    assert (model[0].weight[~masks["0.weight"]] == 0).all()
    noisy = digits_data(seed=0, label_noise=0.5)
    assert (noisy.y_train != data.y_train).float().mean() > 0.3
    with pytest.raises(ConfigError, match="'sizes' must be at least two positive layer widths"):
        make_mlp([64])


# -- clock and pizza ----------------------------------------------------------------------------------
def test_attention_rate_mixes_in_constant_attention_on_both_paths():
    from mechwork.fastpath import modadd_logits
    from mechwork.models import ToyConfig, build_model, weights
    from mechwork.tasks import ModularArithmetic

    task = ModularArithmetic(p=13)
    for rate in (0.0, 0.3):
        cfg = ToyConfig.for_task(task, attn_rate=rate)
        model = build_model(cfg)
        _, cache = model.run_with_cache(task.tokens[:4])
        pat = cache["blocks.0.attn.hook_pattern"]
        plain = build_model(ToyConfig.for_task(task))  # same seed, same weights, learned attention only
        _, c0 = plain.run_with_cache(task.tokens[:4])
        uniform = torch.tril(torch.ones(3, 3)) / torch.arange(1, 4)[:, None]
        torch.testing.assert_close(pat, rate * c0["blocks.0.attn.hook_pattern"] + (1 - rate) * uniform)
        with torch.no_grad():
            torch.testing.assert_close(modadd_logits(weights(model), cfg, task.tokens), model(task.tokens)[:, -1],
                                       atol=1e-4, rtol=0)
    with pytest.raises(ConfigError, match=r"'attn_rate' must be a number in \[0, 1\]"):
        ToyConfig(attn_rate=1.5)


def test_symmetry_measures_on_known_cases():
    from mechwork.analysis.symmetry import distance_irrelevance_of, gradient_symmetricity
    from mechwork.models import ToyConfig, build_model, weights
    from mechwork.tasks import ModularArithmetic

    task = ModularArithmetic(p=13)
    model = build_model(ToyConfig.for_task(task, attn_rate=0.0))
    with torch.no_grad():  # a and b in the same position slot: the logits depend on E_a + E_b only
        weights(model)["pos.weight"][1] = weights(model)["pos.weight"][0]
    assert gradient_symmetricity(model, task, n=30).value == pytest.approx(1.0, abs=1e-5)
    p = 11
    a, b = torch.meshgrid(torch.arange(p), torch.arange(p), indexing="ij")
    only_distance = torch.cos(2 * torch.pi * ((a - b) % p) / p)
    assert distance_irrelevance_of(only_distance).value == pytest.approx(0.0, abs=1e-6)
    noise = torch.randn(200, 200, generator=torch.Generator().manual_seed(0))
    assert distance_irrelevance_of(noise).value == pytest.approx(1.0, abs=0.05)
    with pytest.raises(ConfigError, match="square"):
        distance_irrelevance_of(torch.zeros(3, 4))


@pytest.mark.parametrize(("call", "match"), [
    (lambda d: digits_data(test_frac=1.0), r"'test_frac' must be a fraction in \(0, 1\) \(got 1.0\)"),
    (lambda d: digits_data(label_noise=-0.1), r"'label_noise' must be a fraction in \[0, 1\) \(got -0.1\)"),
    (lambda d: make_mlp([64, 10], act="swish"), "'act' must be one of relu, tanh, gelu"),
    (lambda d: train_mlp(make_mlp([64, 10]), d, steps=0), "'steps' must be a positive number of steps"),
    (lambda d: train_mlp(make_mlp([64, 10]), d, optimizer="lbfgs"), "'optimizer' must be adam or sgd"),
    (lambda d: train_mlp(make_mlp([64, 10]), d, eval_every=0), r"'eval_every' must be a positive integer \(got 0\)"),
    (lambda d: train_mlp(make_mlp([64, 10]), d, batch_size=0), r"'batch_size' must be a positive integer \(got 0\)"),
])
def test_digits_bad_input(call, match):
    with pytest.raises(ConfigError, match=match) as e:
        call(digits_data())
    assert "\n" not in str(e.value)
