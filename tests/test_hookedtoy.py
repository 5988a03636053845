"""HookedToy against TransformerLens's bridge, the reference: the same hook points, logits, cached activations,
hook effects and gradients on both presets and a LayerNorm + GELU 2-layer model; the same modadd and induction
dashboard bundles, result by result, tensor by tensor; and the bridge wherever HookedToy does not apply.

That a cold ``mechwork dashboard`` imports no TransformerLens, and writes the page the bridge gives, is in
``tests/test_dashboard_build.py``.
"""

from __future__ import annotations

import dataclasses
import math
from typing import Any

import pytest
import torch

import mechwork
from mechwork.errors import ConfigError
from mechwork.hookedtoy import HookedToy
from mechwork.models import ToyConfig, build_model, load_weights, save_tensors, weights

TOL = 1e-5
LN_GELU = ToyConfig(n_layers=2, d_model=32, n_heads=4, d_head=8, d_mlp=64, d_vocab=23, d_vocab_out=21, n_ctx=10,
                    act_fn="gelu", normalization="LN", attn_bias=True, seed=5)


def _ln_gelu() -> tuple[Any, HookedToy]:
    """The LN + GELU model as a bridge with every weight redrawn (nonzero biases, LayerNorm scales), and HookedToy."""
    bridge = build_model(LN_GELU)
    g = torch.Generator().manual_seed(1)
    with torch.no_grad():
        for p in weights(bridge).values():
            p.copy_(torch.randn(p.shape, generator=g) * 0.3 + (1.0 if p.ndim == 1 else 0.0) * 0.5)
    toy = HookedToy(LN_GELU)
    load_weights(toy, save_tensors(bridge))  # type: ignore[arg-type]
    return bridge, toy


@pytest.fixture(scope="module")
def pairs() -> dict[str, tuple[Any, Any]]:
    out = {name: (mechwork.load(name), mechwork.load(name, light=True)) for name in ("modadd-113", "induction-2l")}
    return out | {"ln-gelu": _ln_gelu()}


def _tokens(model: Any, batch: int = 3) -> torch.Tensor:
    c = model.cfg
    return torch.randint(0, c.d_vocab, (batch, min(c.n_ctx, 12)), generator=torch.Generator().manual_seed(0))


def _close(a: torch.Tensor, b: torch.Tensor) -> bool:
    return a.shape == b.shape and a.dtype == b.dtype and torch.allclose(a.double(), b.double(), rtol=TOL, atol=TOL,
                                                                    equal_nan=True)


@pytest.mark.parametrize("name", ["modadd-113", "induction-2l", "ln-gelu"])
def test_logits_and_every_cached_activation_equal_the_bridge(pairs, name):
    bridge, toy = pairs[name]
    assert type(toy) is HookedToy and type(bridge).__name__ == "TransformerBridge"
    assert list(toy.hook_dict) == list(bridge.hook_dict)  # the same names, in the same order, aliases included
    assert {n: p.name for n, p in toy.hook_dict.items()} == {n: p.name for n, p in bridge.hook_dict.items()}
    toks = _tokens(bridge)
    lb, cb = bridge.run_with_cache(toks)
    lt, ct = toy.run_with_cache(toks)
    assert _close(lt, lb)
    assert list(ct) == list(cb) and len(cb) > 25
    bad = [k for k in cb if not _close(ct[k].float(), cb[k].float()) or ct[k].dtype != cb[k].dtype]
    assert bad == []
    for attr in ("W_E", "W_pos", "W_U", "b_U", "W_Q", "W_K", "W_V", "W_O", "b_Q", "b_K", "b_V", "b_O"):
        assert torch.equal(getattr(toy, attr), getattr(bridge, attr)), attr
    if not bridge.cfg.attn_only:
        assert all(torch.equal(getattr(toy, a), getattr(bridge, a)) for a in ("W_in", "b_in", "W_out", "b_out"))
    read = ("n_layers", "d_model", "n_heads", "d_head", "d_mlp", "attn_only", "d_vocab", "d_vocab_out", "n_ctx",
            "act_fn", "normalization_type", "positional_embedding_type", "eps", "use_attn_scale", "attn_scale",
            "n_key_value_heads", "gated_mlp", "attn_scores_soft_cap", "output_logits_soft_cap", "attention_dir",
            "final_rms", "scale_attn_by_inverse_layer_idx", "architecture", "model_name", "original_architecture",
            "parallel_attn_mlp", "rmsnorm_uses_offset", "dtype", "seed")
    assert {a: getattr(toy.cfg, a) for a in read} == {a: getattr(bridge.cfg, a) for a in read}


def _edits(cfg: Any) -> list[tuple[Any, Any]]:
    """Hook edits the analyses make (patching, ablation, splicing), and some they could."""
    last = cfg.n_layers - 1

    def zero_head(z: torch.Tensor, hook: Any) -> torch.Tensor:
        z[:, :, 1] = 0.0
        return z

    edits: list[tuple[Any, Any]] = [
        ("blocks.0.attn.hook_z", zero_head),
        (lambda n: n.endswith("hook_pattern"), lambda p, hook: p * 0.5),
        ("hook_embed", lambda x, hook: x.flip(0)),
        (f"blocks.{last}.hook_resid_pre", lambda x, hook: x + 1.0),
        ("blocks.0.attn.hook_q", lambda q, hook: q * 2.0),
        ("blocks.0.attn.hook_attn_scores", lambda s, hook: s * 0.0),  # fired after the fact: changes nothing
    ]
    if not cfg.attn_only:
        edits += [("blocks.0.hook_resid_mid", lambda x, hook: x * 3.0),
                  ("blocks.0.mlp.hook_post", lambda x, hook: x * 0)]
    if cfg.normalization_type == "LN":
        edits += [("blocks.0.ln1.hook_scale", lambda s, hook: s * 2.0),
                  ("ln_final.hook_normalized", lambda x, hook: -x)]
    return edits


@pytest.mark.filterwarnings("ignore::UserWarning")  # the bridge warns that an attn_scores edit is discarded
@pytest.mark.parametrize("name", ["modadd-113", "ln-gelu"])
def test_hooks_change_the_logits_as_on_the_bridge(pairs, name):
    bridge, toy = pairs[name]
    toks = _tokens(bridge)
    base = bridge(toks)
    for where, fn in _edits(bridge.cfg):
        with torch.no_grad():
            lb = bridge.run_with_hooks(toks, fwd_hooks=[(where, fn)])
            lt = toy.run_with_hooks(toks, fwd_hooks=[(where, fn)])
        assert _close(lt, lb), where
        assert _close(toy(toks), base)  # the hooks are gone after the call
    for names in ("blocks.0.attn.hook_z", ["hook_embed", "blocks.0.hook_resid_pre"], lambda n: "hook_q" in n):
        ours, ref = toy.run_with_cache(toks, names_filter=names)[1], bridge.run_with_cache(toks, names_filter=names)[1]
        assert list(ours) == list(ref) and all(torch.equal(ours[k], ref[k]) for k in ref)


def test_hooks_are_added_and_removed_as_on_the_bridge(pairs):
    """A call's hooks go when it ends, the caller's own stay; permanent hooks survive reset_hooks."""
    counts = {}
    for label, model in zip(("bridge", "toy"), pairs["modadd-113"], strict=True):
        n = [0]

        def count(x: torch.Tensor, hook: Any, n: list[int] = n) -> None:
            n[0] += 1

        toks = _tokens(model)
        with model.hooks(fwd_hooks=[("hook_embed", count)]):
            model.run_with_cache(toks, names_filter="hook_embed")
            model.run_with_hooks(toks, fwd_hooks=[(lambda name: "embed" in name, count)])
            model(toks)
        model(toks)
        model.add_hook("hook_embed", count, is_permanent=True)
        model.reset_hooks()
        model(toks)
        model.reset_hooks(including_permanent=True)
        model(toks)
        counts[label] = n[0]
    assert counts["toy"] == counts["bridge"] == 1 + (1 + 6) + 1 + 1  # the filter picks 6 points


@pytest.mark.parametrize("name", ["induction-2l", "ln-gelu"])
def test_backward_hooks_and_gradients_equal_the_bridge(pairs, name):
    bridge, toy = pairs[name]
    toks = _tokens(bridge)
    grads: dict[str, dict[str, torch.Tensor]] = {"bridge": {}, "toy": {}}
    for label, model in (("bridge", bridge), ("toy", toy)):
        def keep(g: torch.Tensor, hook: Any, label: str = label) -> None:
            grads[label][hook.name] = g.detach().clone()

        def halve(p: torch.Tensor, hook: Any) -> None:  # an edit in place, under autograd
            p[:, 0] *= 0.5

        hooks = [("blocks.0.hook_resid_pre", keep), ("blocks.1.attn.hook_z", keep), ("hook_embed", keep)]
        logits = model.run_with_hooks(toks, fwd_hooks=[("blocks.0.attn.hook_pattern", halve)], bwd_hooks=hooks)
        logits[:, -1].logsumexp(-1).sum().backward()
        model.zero_grad(set_to_none=True)
    assert list(grads["toy"]) == list(grads["bridge"]) and len(grads["toy"]) == 3
    assert all(_close(grads["toy"][k], grads["bridge"][k]) for k in grads["bridge"])


def test_weights_and_the_fast_engine_read_it_as_the_bridge(pairs):
    from mechwork.engine import BaseRun, supports

    for bridge, toy in pairs.values():
        wb, wt = weights(bridge), weights(toy)  # type: ignore[arg-type]
        assert list(wt) == list(wb) and all(torch.equal(wt[k], wb[k]) for k in wb)
        assert all(wt[k].requires_grad == wb[k].requires_grad for k in wb)
        assert supports(toy) and supports(bridge)  # type: ignore[arg-type]
        toks = _tokens(bridge)
        assert torch.equal(BaseRun(toy, toks).logits, BaseRun(bridge, toks).logits)  # type: ignore[arg-type]
        assert not toy.training and next(toy.parameters()).device.type == "cpu"


def test_hook_points_of_the_per_head_fork_refuse_a_hook_in_one_line(pairs):
    _, toy = pairs["ln-gelu"]
    for name in ("blocks.0.attn.hook_result", "blocks.1.hook_q_input", "blocks.0.hook_mlp_in"):
        with pytest.raises(ConfigError, match="per-head fork") as e:
            toy.run_with_hooks(_tokens(toy), fwd_hooks=[(name, lambda x, hook: x)])
        assert "\n" not in str(e.value)
    with pytest.raises(KeyError, match="does not exist"):
        toy.run_with_hooks(_tokens(toy), fwd_hooks=[("blocks.9.hook_resid_pre", lambda x, hook: x)])


# -- the dashboards' analysis bundles --------------------------------------------------------------------------
def _differences(a: Any, b: Any, path: str = "") -> list[str]:
    """Every place two analysis results differ: tensors and floats beyond TOL, anything else not equal."""
    if isinstance(a, torch.Tensor) or isinstance(b, torch.Tensor):
        same = isinstance(a, torch.Tensor) and isinstance(b, torch.Tensor) and (
            _close(a, b) if a.is_floating_point() else a.dtype == b.dtype and torch.equal(a, b))
        return [] if same else [path]
    if type(a) is not type(b):
        return [f"{path}: {type(a).__name__} against {type(b).__name__}"]
    if type(a).__name__ == "DataFrame":
        return _differences(a.to_dict("list"), b.to_dict("list"), path)
    if type(a).__name__ == "ndarray":
        return _differences(torch.from_numpy(a), torch.from_numpy(b), path)
    if dataclasses.is_dataclass(a):
        return [d for f in dataclasses.fields(a) for d in _differences(getattr(a, f.name), getattr(b, f.name),
                                                                        f"{path}.{f.name}")]
    if isinstance(a, dict):
        if list(a) != list(b):
            return [f"{path}: keys"]
        return [d for k in a for d in _differences(a[k], b[k], f"{path}[{k!r}]")]
    if isinstance(a, (list, tuple)):
        if len(a) != len(b):
            return [f"{path}: length"]
        return [d for i, (x, y) in enumerate(zip(a, b, strict=True)) for d in _differences(x, y, f"{path}[{i}]")]
    if isinstance(a, float):
        return [] if math.isclose(a, b, rel_tol=TOL, abs_tol=TOL) or (math.isnan(a) and math.isnan(b)) else [path]
    if type(a).__module__.startswith("mechwork") and hasattr(a, "__dict__"):
        return _differences(vars(a), vars(b), path)
    return [] if a == b else [f"{path}: {a!r:.60} against {b!r:.60}"]


@pytest.mark.parametrize("name", ["modadd-113", "induction-2l"])
def test_the_dashboard_bundle_on_hookedtoy_equals_the_bridges(name):
    from mechwork.dashboard.standard import analyse
    from mechwork.source import open_source

    light = open_source(name, light=True)
    assert type(light.model) is HookedToy
    ours = analyse(light)
    ref = analyse(open_source(name))
    assert list(ours) == list(ref) and len(ref.results) >= 10
    assert _differences(ours.info, ref.info) == []
    for key in ref:
        assert _differences(ours[key], ref[key], key) == [], key


def test_the_bridge_opens_whatever_hookedtoy_does_not_reproduce(tmp_path, tiny_task):
    import fourmodels

    from mechwork.runs import Run
    from mechwork.source import open_source
    from mechwork.training import TrainConfig, train

    assert type(mechwork.load("modadd-113")).__name__ == "TransformerBridge"  # notebooks keep the bridge
    assert type(open_source("induction-2l").model).__name__ == "TransformerBridge"
    directory = fourmodels.build("gpt2", tmp_path)  # a save_pretrained directory: the bridge, light or not
    assert type(open_source(directory, light=True).model).__name__ == "TransformerBridge"
    cfg = ToyConfig.for_task(tiny_task, d_model=16, n_heads=2, d_head=8, d_mlp=32)
    plain, mixed = tmp_path / "plain", tmp_path / "mixed"
    for out, model_cfg in ((plain, cfg), (mixed, dataclasses.replace(cfg, attn_rate=0.5))):
        train(tiny_task, model_cfg, TrainConfig(steps=2, eval_every=1, ckpt_every=1, ckpt_log=2), out, quiet=True)
    assert type(open_source(str(mixed), light=True).model).__name__ == "TransformerBridge"  # a permanent hook
    src = open_source(str(plain), light=True, step=1)
    assert type(src.model) is HookedToy and src.step == 1
    toks = tiny_task.tokens[:5]
    assert torch.equal(src.model(toks), Run(str(plain)).model_at(1)(toks))


def test_the_bundle_comparison_sees_a_difference():
    @dataclasses.dataclass(frozen=True)
    class R:
        scores: dict[str, torch.Tensor]
        value: float
        label: str

    a = R({"q": torch.tensor([[float("nan"), 1.0]])}, 0.5, "x")
    assert _differences(a, R({"q": torch.tensor([[float("nan"), 1.0 + 1e-7]])}, 0.5 + 1e-7, "x")) == []
    assert _differences(a, R({"q": torch.tensor([[float("nan"), 1.001]])}, 0.5, "x"), "r") == ["r.scores['q']"]
    assert _differences(a, R({"q": torch.tensor([[float("nan"), 1.0]])}, 0.6, "y"), "r") == [
        "r.value", "r.label: 'x' against 'y'"]
