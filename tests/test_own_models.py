"""Every analysis on the four own-model acceptance models (tests/fourmodels.py): patching against
TransformerLens's own ``transformer_lens.patching``, and attention, head detectors, composition, attribution,
path patching and ablation run and give numbers that could have come out wrong.

* **patching**: ``patch()`` equals every ``get_act_patch_*`` variant that TransformerLens offers and that applies
  to the model, to 1e-5: resid_pre, resid_mid, attn_out and mlp_out by layer and position; each head's z, q, k, v
  and pattern at every position and by position; the ``*_every`` stacks of those. TL runs with gradients
  enabled (under ``torch.no_grad()`` its patched ``hook_resid_mid`` reaches the residual stream too: see
  :mod:`mechwork.analysis.patching`). Both execution paths are checked: the fast engine where
  :func:`mechwork.engine.supports` takes the model (custom3l, gpt2, induction-2l) and the hook path
  (``engine=False``; the only path for llama); ``PatchResult.engine`` says which ran. TL's
  ``get_act_patch_attn_head_pattern_dest_src_pos`` (``by="head_dest_src"``) is compared on the same four models in
  tests/test_pattern_pairs.py. TL has no neuron variant: ``mlp_post`` by neuron and by position is checked fast engine
  against hook path.
* **jittered copies**: the tiny GPT-2 starts with zero biases and unit norm weights and near-uniform attention,
  so the engine's reading of its weights is also checked on a copy with random biases and norm weights and
  sharper attention (queries and keys scaled up), where a misplaced bias or transpose would show.
* **direct paths**: ``direct_path_sweep`` equals TL's ``get_act_patch_direct_path`` on the Hugging Face models
  (TL needs the bridge's per-head Q/K/V input fork, which the native models lack; TL raises there).
"""

from __future__ import annotations

import os
import re
from typing import Any

import pytest
import torch
import transformer_lens.patching as tlp
from fourmodels import NAMES  # type: ignore[import-not-found]
from test_patching import VARIANTS  # type: ignore[import-not-found]  # one table of TL's variants

import mechwork
from mechwork.analysis.ablation import ablate
from mechwork.analysis.attention import attention_patterns, composition_scores, head_detectors, repeated_tokens
from mechwork.analysis.attribution import attribute, direct_path_sweep, path_patch
from mechwork.analysis.patching import patch
from mechwork.engine import supports
from mechwork.errors import ConfigError
from mechwork.hooks import hook_name
from mechwork.models import weights

os.environ.setdefault("HF_HUB_OFFLINE", "1")
TOL = 1e-5
FAST = {"custom3l": True, "gpt2": True, "llama": False, "induction-2l": True}  # the engine takes the model

EVERY: list[tuple[Any, list[tuple[str, str]]]] = [  # TL's stacked sweeps: (function, the (site, by) of each row)
    (tlp.get_act_patch_block_every, [("resid_pre", "layer_pos"), ("attn_out", "layer_pos"), ("mlp_out", "layer_pos")]),
    (tlp.get_act_patch_attn_head_all_pos_every, [(s, "head") for s in ("z", "q", "k", "v", "pattern")]),
    (tlp.get_act_patch_attn_head_by_pos_every, [(s, "head_pos") for s in ("z", "q", "k", "v", "pattern")]),
]
_MODELS: dict[tuple[str, bool], Any] = {}


def _jitter(model: Any) -> None:
    """Random biases and norm weights, queries and keys scaled up (sharper attention), in place."""
    g = torch.Generator().manual_seed(7)
    with torch.no_grad():
        for name, p in sorted(weights(model).items()):
            if name.endswith("bias"):
                p.copy_(0.2 * torch.randn(p.shape, generator=g))
            elif p.ndim == 1:  # a norm's weight
                p.copy_(1 + 0.3 * torch.randn(p.shape, generator=g))
            elif re.search(r"\.(q|k|q_proj|k_proj)\.weight$", name):
                p.mul_(8.0)


@pytest.fixture(scope="module")
def models(four_models):
    """``models(name, jitter=False)``: the model, loaded once per module (a jittered copy is a second load)."""

    def get(name: str, jitter: bool = False) -> Any:
        if (name, jitter) not in _MODELS:
            model = mechwork.load(four_models[name], device="cpu")
            if jitter:
                _jitter(model)
            _MODELS[(name, jitter)] = model
        return _MODELS[(name, jitter)]

    yield get
    _MODELS.clear()


def _inputs(model: Any, batch: int = 2, n: int = 8) -> tuple[torch.Tensor, torch.Tensor, Any]:
    """Clean tokens, corrupted ones (the first three positions redrawn), and a log-prob metric."""
    g = torch.Generator().manual_seed(0)
    d_vocab = int(model.cfg.d_vocab)
    clean = torch.randint(0, d_vocab, (batch, n), generator=g)
    corrupted = clean.clone()
    corrupted[:, :3] = torch.randint(0, d_vocab, (batch, 3), generator=g)
    answer = clean[:, -1]

    def metric(logits: torch.Tensor) -> torch.Tensor:  # log-prob of the last token, read one position earlier
        return logits[:, -2].log_softmax(-1).gather(-1, answer[:, None]).mean()

    return clean, corrupted, metric


def _has(model: Any, site: str) -> bool:
    return hook_name(site, 0) in model.hook_dict


def _sweeps(name: str, model: Any, label: str = "") -> list[str]:
    """Compare every variant on ``model``; return a line per variant (the largest differences)."""
    clean, corrupted, metric = _inputs(model)
    assert torch.is_grad_enabled()  # TL's resid_mid numbers are those with gradients on (module docstring)
    _, cache = model.run_with_cache(clean)
    ours: dict[tuple[str, str], torch.Tensor] = {}
    lines = []
    for site, by, tl_fn, perm in VARIANTS:
        if not _has(model, site):
            continue
        ref = tl_fn(model, corrupted, cache, metric).cpu()
        assert float(ref.std()) > 0, (name, site, by)  # the sweep is not degenerate
        diffs = {}
        for engine in (True, False):
            res = patch(model, clean, corrupted, metric, site=site, by=by, engine=engine)
            assert res.engine == ("fast" if engine and FAST[name] else "hooks")
            assert ("fast engine" if res.engine == "fast" else "hook path") in res.summary()
            got = res.values if perm is None else res.values.permute(*perm)
            assert got.shape == ref.shape, (name, label, site, by)
            key = "hooks" if not engine else "fast" if res.engine == "fast" else "default (hooks)"
            diffs[key] = float((got - ref).abs().max())
            ours[(site, by)] = res.values
        assert max(diffs.values()) <= TOL, (name, label, site, by, diffs)
        lines.append(f"{name}{label} {site} by {by}: " + ", ".join(f"{k} {v:.1e}" for k, v in diffs.items()))
    if _has(model, "mlp_post"):  # TL has no neuron variant: the two paths against each other
        for by, kw in (("neuron", {"neurons": range(6)}), ("layer_pos", {})):
            fast, hooks = (patch(model, clean, corrupted, metric, site="mlp_post", by=by, engine=e, **kw)
                           for e in (True, False))
            assert float((fast.values - hooks.values).abs().max()) <= TOL and float(hooks.values.std()) > 0
    for tl_fn, rows in EVERY if not label else []:  # the stacks of the sweeps above: on the plain model only
        if not all(_has(model, site) for site, _ in rows):
            continue
        ref = tl_fn(model, corrupted, cache, metric).cpu()
        got = torch.stack([ours[r] for r in rows])
        assert float((got - ref).abs().max()) <= TOL, (name, label, tl_fn)
    return lines


@pytest.mark.parametrize("name", NAMES)
def test_patch_equals_transformer_lens_on_every_variant(models, name):
    model = models(name)
    assert supports(model) == FAST[name]
    lines = _sweeps(name, model)
    # every variant whose hook the model has was compared (a renamed hook would otherwise skip silently)
    attn_only = not _has(model, "mlp_out")
    assert len(lines) == len(VARIANTS) - (2 if attn_only else 0), lines  # attention-only: no resid_mid, mlp_out
    if FAST[name]:  # the engine's reading of the weights, on a copy where biases and norms matter
        lines += _sweeps(name, models(name, jitter=True), " (jittered)")
    print("\n".join(lines))


@pytest.mark.parametrize("name", NAMES)
def test_attention_patterns_and_head_detectors(models, name):
    model = models(name)
    clean, _, _ = _inputs(model)
    pats = attention_patterns(model, clean)
    n_layers, n_heads = int(model.cfg.n_layers), int(model.cfg.n_heads)
    assert pats.patterns.shape == (2, n_layers, n_heads, 8, 8)
    torch.testing.assert_close(pats.patterns.sum(-1), torch.ones(2, n_layers, n_heads, 8), atol=1e-5, rtol=0)
    assert float(pats.patterns.triu(diagonal=1).abs().max()) == 0.0  # causal
    _, cache = model.run_with_cache(clean)
    torch.testing.assert_close(pats.patterns[:, -1], cache[hook_name("pattern", n_layers - 1)].float())
    if name in ("gpt2", "llama"):  # a tokenizer labels the tokens with its strings
        assert pats.labels[0] == [str(s) for s in model.to_str_tokens(clean[0])]
        assert any(not lab.isdigit() for lab in pats.labels[0])
    else:
        assert pats.labels[0] == [str(int(t)) for t in clean[0]]
    half = 6
    scores = head_detectors(model, half=half, batch=3, seed=1)
    _, cache = model.run_with_cache(repeated_tokens(int(model.cfg.d_vocab), half, batch=3, seed=1))
    for layer in range(n_layers):
        pat = cache[hook_name("pattern", layer)].float()
        prev = pat.diagonal(offset=-1, dim1=-2, dim2=-1).mean(dim=(0, -1))
        ind = torch.stack([pat[:, :, t, t - half + 1] for t in range(half, 2 * half)], -1).mean(dim=(0, -1))
        torch.testing.assert_close(scores["previous_token"][layer], prev, atol=1e-5, rtol=0)
        torch.testing.assert_close(scores["induction"][layer], ind, atol=1e-5, rtol=0)
    for s in scores.scores.values():
        assert s.shape == (n_layers, n_heads) and float(s.min()) >= 0 and float(s.max()) <= 1
    if name == "induction-2l":  # the known circuit
        assert scores.top("previous_token")[0][0] == 0 and scores.top("induction")[0][0] == 1


@pytest.mark.parametrize("name", NAMES)
def test_composition_reads_the_weights_the_forward_uses(models, name):
    model = models(name)
    clean, _, _ = _inputs(model)
    _, cache = model.run_with_cache(clean)
    w_o, b_o = model.W_O.detach(), model.blocks[0].attn.b_O if name != "llama" else None
    out = torch.einsum("bphd,hdm->bpm", cache[hook_name("z", 0)], w_o[0]) + (0 if b_o is None else b_o.detach())
    torch.testing.assert_close(out, cache[hook_name("attn_out", 0)], atol=1e-5, rtol=0)  # z @ W_O is attn_out
    comp = composition_scores(model, n_samples=20)
    rotary = name == "llama"
    assert set(comp.scores) == ({"v"} if rotary else {"q", "k", "v"})
    for s in comp.scores.values():
        later = s[0, :, 1]
        assert bool(s[1, :, 0].isnan().all()) and float(later.min()) > 0 and float(later.max()) <= 1
    w_ov = model.W_V.detach()[0, 0] @ model.W_O.detach()[0, 0]
    w_ov2 = model.W_V.detach()[1, 2] @ model.W_O.detach()[1, 2]
    expect = torch.linalg.norm(w_ov @ w_ov2) / (torch.linalg.norm(w_ov) * torch.linalg.norm(w_ov2))
    assert abs(float(comp["v"][0, 0, 1, 2]) - float(expect)) < 1e-5
    assert comp.summary().startswith("V-" if rotary else "Q-")
    if rotary:
        with pytest.raises(ConfigError, match="'kinds' must be \\['v'\\] on a rotary model"):
            composition_scores(model, kinds=["q", "v"])


def _grad_formula(model: Any, clean: torch.Tensor, corrupted: torch.Tensor, metric: Any, layer: int) -> torch.Tensor:
    """(clean - corrupted resid_pre) . d metric / d resid_pre, per position: attribution patching by hand."""
    name = hook_name("resid_pre", layer)
    _, cc = model.run_with_cache(clean, names_filter=name)
    _, kc = model.run_with_cache(corrupted, names_filter=name)
    leaf = kc[name].detach().clone().requires_grad_(True)
    logits = model.run_with_hooks(corrupted, fwd_hooks=[(name, lambda act, hook=None: leaf)])
    (grad,) = torch.autograd.grad(metric(logits), leaf)
    return ((cc[name] - kc[name]) * grad).sum(dim=(0, 2))


@pytest.mark.parametrize("name", NAMES)
def test_attribution_is_the_gradient_formula(models, name):
    model = models(name)
    clean, corrupted, metric = _inputs(model)
    res = attribute(model, clean, corrupted, metric, site="resid_pre", by="layer_pos")
    assert res.method == "attribution patching" and res.engine == "hooks"
    exact = patch(model, clean, corrupted, metric, site="resid_pre", by="layer_pos")
    assert res.corrupted_value == pytest.approx(exact.corrupted_value, abs=1e-5)
    assert res.clean_value == pytest.approx(exact.clean_value, abs=1e-5)
    for layer in range(int(model.cfg.n_layers)):
        want = res.corrupted_value + _grad_formula(model, clean, corrupted, metric, layer)
        torch.testing.assert_close(res.values[layer], want.float(), atol=1e-5, rtol=0)
    # layer 0, position 0 patches the embedding: the clean and corrupted tokens differ there
    assert float((res.values[0, :3] - res.corrupted_value).abs().max()) > 0
    heads = attribute(model, clean, corrupted, metric, site="z", by="head")
    assert heads.values.shape == (int(model.cfg.n_layers), int(model.cfg.n_heads))
    assert bool(torch.isfinite(heads.values).all())


@pytest.mark.parametrize("name", NAMES)
def test_path_patching_and_direct_paths(models, name):
    model = models(name)
    clean, corrupted, metric = _inputs(model)
    same = path_patch(model, clean, clean, metric, senders=[(0, 0)], receivers=[(1, 1)], component="k")
    assert same.value == pytest.approx(same.base_value, abs=1e-5) == pytest.approx(same.full_value, abs=1e-5)
    moved = path_patch(model, clean, corrupted, metric, senders=[(0, 0), (0, 1)], receivers=[(1, 0), (1, 1)],
                       component="v")
    assert moved.base_value == pytest.approx(float(metric(model(clean).detach())), abs=1e-5)
    assert moved.full_value != pytest.approx(moved.base_value, abs=1e-7)  # swapping the senders moves the metric
    _, cc = model.run_with_cache(clean)
    _, kc = model.run_with_cache(corrupted)
    for component in ("q", "k", "v"):
        sweep = direct_path_sweep(model, clean, corrupted, metric, sender=(0, 1), component=component)
        assert bool(sweep.values[0].isnan().all()) and bool(torch.isfinite(sweep.values[1:]).all())
        if name in ("gpt2", "llama"):
            ref = tlp.get_act_patch_direct_path(model, corrupted, cc, kc, metric, 0, 1, component=component,
                                                verbose=False)
            diff = float((sweep.values[1:] - ref[1:].cpu()).abs().max())
            print(f"{name} direct path L0H1 -> * ({component}): max abs diff against TL {diff:.1e}")
            assert diff <= TOL
        else:
            with pytest.raises(NotImplementedError):
                tlp.get_act_patch_direct_path(model, corrupted, cc, kc, metric, 0, 1, component=component,
                                              verbose=False)


@pytest.mark.parametrize("name", NAMES)
def test_ablation(models, name):
    model = models(name)
    clean, _, _ = _inputs(model)
    one = clean[:1]
    has_mlp = _has(model, "mlp_post")
    neurons = [(0, 3)] if has_mlp else []
    base = model(one).detach()
    # the mean over a batch of one is the activation itself: nothing changes
    same = ablate(model, one, heads=[(0, 1), (1, 2)], neurons=neurons, how="mean")
    torch.testing.assert_close(same.logits, base, atol=1e-5, rtol=0)
    zeroed = ablate(model, one, heads=[(0, 1)], how="zero")
    assert float((zeroed.logits - base).abs().max()) > 1e-4
    name_z = hook_name("z", 0)

    def zero_head(act: torch.Tensor, hook: Any = None) -> torch.Tensor:
        act = act.clone()
        act[:, :, 1] = 0
        return act

    torch.testing.assert_close(zeroed.logits, model.run_with_hooks(one, fwd_hooks=[(name_z, zero_head)]),
                               atol=1e-5, rtol=0)
    if has_mlp:
        resampled = ablate(model, clean, neurons=[(0, 3), (0, 5)], how="resample", seed=1)
        assert resampled.logits.shape == model(clean).shape and "L0N3" in resampled.summary()
