"""StableMax, ⊥Grad and the initialisation scale: each checked against a hand computation, validated, serialised;
the scale applies to the seeded init, not to weights the caller gives."""

from __future__ import annotations

import json
import math

import numpy as np
import pytest
import torch

from mechwork.errors import ConfigError
from mechwork.models import ToyConfig, build_model, weights
from mechwork.tasks import ModularArithmetic
from mechwork.training import TrainConfig, orthogonalise_grads, stablemax_cross_entropy, train

TASK = ModularArithmetic(p=11, train_frac=0.6)


def _stablemax_ce_by_hand(logits: list[list[float]], targets: list[int]) -> float:
    total = 0.0
    for row, t in zip(logits, targets, strict=True):
        s = [x + 1.0 if x >= 0 else 1.0 / (1.0 - x) for x in row]
        total += -math.log(s[t] / sum(s))
    return total / len(targets)


def test_stablemax_cross_entropy_matches_a_hand_computation():
    g = torch.Generator().manual_seed(0)
    logits = torch.randn(7, 5, generator=g) * 4
    logits[0, 0], logits[1, 2] = 0.0, -1e6  # the branch point, and a logit far out (no overflow: no exp)
    targets = torch.tensor([0, 2, 1, 4, 3, 0, 2])
    got = float(stablemax_cross_entropy(logits, targets))
    assert got == pytest.approx(_stablemax_ce_by_hand(logits.tolist(), targets.tolist()), rel=1e-12)
    # its gradient (float32 logits in, float64 loss out) is finite where softmax's is too
    x = logits.clone().requires_grad_(True)
    stablemax_cross_entropy(x, targets).backward()
    assert x.grad is not None and bool(torch.isfinite(x.grad).all())


def test_orthograd_matches_a_hand_computation():
    g = torch.Generator().manual_seed(1)
    w = torch.nn.Parameter(torch.randn(3, 4, generator=g))
    zero = torch.nn.Parameter(torch.zeros(4))  # a zero bias: no direction to remove
    grad_w, grad_z = torch.randn(3, 4, generator=g), torch.randn(4, generator=g)
    w.grad, zero.grad = grad_w.clone(), grad_z.clone()
    orthogonalise_grads({"w": w, "b": zero})
    wv, gv = w.detach().numpy().astype(np.float64).ravel(), grad_w.numpy().astype(np.float64).ravel()
    perp = gv - (wv @ gv) / (wv @ wv) * wv
    want = perp * np.linalg.norm(gv) / np.linalg.norm(perp)
    np.testing.assert_allclose(w.grad.numpy().ravel(), want, rtol=1e-5, atol=1e-6)
    assert abs(float(w.grad.reshape(-1) @ w.detach().reshape(-1))) < 1e-4  # orthogonal to the weight
    assert torch.equal(zero.grad, grad_z)


def test_init_scale_multiplies_the_seeded_initial_weights():
    res = train(TASK, ToyConfig.for_task(TASK, seed=3), TrainConfig(steps=5, init_scale=0.25), quiet=True,
                stop_when=lambda row: True)  # stops at step 0, before any update
    fresh = weights(build_model(ToyConfig.for_task(TASK, seed=3)))
    for name, p in weights(res.model).items():
        assert torch.equal(p.detach(), fresh[name].detach() * 0.25), name


def test_init_given_by_the_caller_is_used_as_given():
    given = {k: v.detach() * 0.3 for k, v in weights(build_model(ToyConfig.for_task(TASK, seed=4))).items()}
    res = train(TASK, ToyConfig.for_task(TASK, seed=3), TrainConfig(steps=5), quiet=True, init=given,
                stop_when=lambda row: True)  # stops at step 0, before any update
    for name, p in weights(res.model).items():
        assert torch.equal(p.detach(), given[name]), name


def test_init_scale_with_a_given_init_is_refused_and_nothing_is_written(tmp_path):
    given = {k: v.detach() for k, v in weights(build_model(ToyConfig.for_task(TASK, seed=3))).items()}
    out = tmp_path / "run"
    with pytest.raises(ConfigError) as e:
        train(TASK, ToyConfig.for_task(TASK, seed=3), TrainConfig(steps=5, init_scale=0.5), out, quiet=True,
              init=given)
    assert str(e.value) == "'init_scale' must be 1.0 when 'init' is given, whose weights are used as they are (got 0.5)"
    assert list(tmp_path.iterdir()) == []


def count_tricks(monkeypatch) -> dict[str, int]:
    """Count the StableMax loss and ⊥Grad projection calls the training loop makes from here on."""
    import mechwork.training as training

    calls = {"stablemax": 0, "orthograd": 0}

    def count(name, fn):
        def wrapped(*a, **k):
            calls[name] += 1
            return fn(*a, **k)
        return wrapped

    monkeypatch.setattr(training, "stablemax_cross_entropy", count("stablemax", training.stablemax_cross_entropy))
    monkeypatch.setattr(training, "orthogonalise_grads", count("orthograd", training.orthogonalise_grads))
    return calls


def test_each_option_reaches_the_training_step(monkeypatch):
    calls = count_tricks(monkeypatch)
    base = train(TASK, train_cfg=TrainConfig(steps=3, eval_every=3), quiet=True).rows[-1]
    assert calls == {"stablemax": 0, "orthograd": 0}
    both = train(TASK, train_cfg=TrainConfig(steps=3, eval_every=3, loss="stablemax", orthograd=True),
                 quiet=True).rows[-1]
    assert calls == {"stablemax": 3, "orthograd": 3}
    assert both["train_loss"] != base["train_loss"]


def test_the_defaults_leave_the_recipe_as_it_was():
    cfg = TrainConfig()
    assert (cfg.init_scale, cfg.loss, cfg.orthograd) == (1.0, "softmax", False)
    old = {k: v for k, v in cfg.to_dict().items() if k not in ("init_scale", "loss", "orthograd")}
    assert TrainConfig.from_dict(old) == cfg  # a config.json written before these options still loads


@pytest.mark.parametrize(("field", "value", "says"), [
    ("init_scale", 0.0, "'init_scale' must be a finite number > 0.0 (got 0.0)"),
    ("init_scale", float("nan"), "'init_scale' must be a finite number > 0.0 (got nan)"),
    ("init_scale", "1", "'init_scale' must be a finite number > 0.0 (got '1')"),
    ("loss", "softmx", "'loss' must be 'softmax' or 'stablemax' (got 'softmx')"),
    ("orthograd", 1, "'orthograd' must be True or False (got 1)"),
])
def test_bad_values_are_one_line_errors(field, value, says):
    with pytest.raises(ConfigError) as e:
        TrainConfig(**{field: value})
    assert str(e.value) == says


def test_the_options_are_written_to_config_json(tmp_path):
    cfg = TrainConfig(steps=2, eval_every=2, init_scale=0.5, loss="stablemax", orthograd=True)
    train(TASK, train_cfg=cfg, out=tmp_path / "run", quiet=True)
    stored = json.loads((tmp_path / "run" / "config.json").read_text())["train"]
    assert (stored["init_scale"], stored["loss"], stored["orthograd"]) == (0.5, "stablemax", True)
    assert TrainConfig.from_dict(stored) == cfg
