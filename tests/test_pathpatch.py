"""Path patching into several receiver components at once (``path_patches``): the same numbers as path patching
each component on its own, written out here run by run, in fewer forward passes; and TransformerLens's direct
path patching on a Hugging Face GPT-2 bridge, every component from one call."""

from __future__ import annotations

import os
import sys
from typing import Any

import pytest
import torch

import mechwork
from mechwork.analysis.attention import repeated_tokens
from mechwork.analysis.metrics import accuracy
from mechwork.analysis.pathpatch import base_hooks, path_patch, path_patches
from mechwork.errors import ConfigError

SENDERS, RECEIVERS = [(0, 1), (0, 2)], [(1, 3), (1, 0)]


@pytest.fixture(scope="module")
def induction():
    return mechwork.load("induction-2l", device="cpu")


def inputs(batch: int = 8, half: int = 20) -> tuple[torch.Tensor, torch.Tensor, Any]:
    clean = repeated_tokens(64, half, batch=batch, seed=1)
    corrupted = repeated_tokens(64, half, batch=batch, seed=2)

    def metric(logits: torch.Tensor) -> torch.Tensor:  # per sequence: log-prob of the copied tokens
        return logits[:, half:-1].log_softmax(-1).gather(-1, clean[:, half + 1:, None])[..., 0].mean(-1)

    return clean, corrupted, metric


def passes(model: Any, fn: Any) -> tuple[int, Any]:
    n = [0]
    handle = model.hook_dict["hook_embed"].register_forward_hook(lambda *a: n.__setitem__(0, n[0] + 1))
    try:
        out = fn()
    finally:
        handle.remove()
    return n[0], out


@torch.no_grad()
def by_hand(model: Any, clean: torch.Tensor, corrupted: Any, metric: Any, component: str,
            direction: str = "noising") -> tuple[float, float, float]:
    """(value, base value, full value) of one component's path patching, its three runs written out: the base run
    cached, the senders swapped with every other head output and MLP output below the receivers frozen (the
    receivers' ``component`` recorded), then the base input with only that recorded input patched."""
    n_heads = int(model.cfg.n_heads)
    base = corrupted if direction == "denoising" else clean
    logits, cache = model.run_with_cache(base)
    z0 = cache["blocks.0.attn.hook_z"]
    if isinstance(corrupted, str):
        swap = torch.zeros_like(z0) if corrupted == "zero" else z0.mean(0, keepdim=True).expand_as(z0)
    else:
        swap = model.run_with_cache(clean if direction == "denoising" else corrupted)[1]["blocks.0.attn.hook_z"]
    mixed = z0.clone()
    for _, h in SENDERS:
        mixed[:, :, h] = swap[:, :, h]
    full = model.run_with_hooks(base, fwd_hooks=[("blocks.0.attn.hook_z", lambda act, hook: mixed.clone())])
    assert n_heads == 4 and "blocks.0.hook_mlp_out" not in model.hook_dict  # attention only: z is all there is
    seen = {}

    def record(act: torch.Tensor, hook: Any) -> torch.Tensor:
        seen["x"] = act.clone()
        return act

    model.run_with_hooks(base, fwd_hooks=[("blocks.0.attn.hook_z", lambda act, hook: mixed.clone()),
                                          (f"blocks.1.attn.hook_{component}", record)])

    def patch(act: torch.Tensor, hook: Any) -> torch.Tensor:
        act = act.clone()
        for _, h in RECEIVERS:
            act[:, :, h] = seen["x"][:, :, h]
        return act

    value = model.run_with_hooks(base, fwd_hooks=[(f"blocks.1.attn.hook_{component}", patch)])
    return tuple(float(torch.as_tensor(metric(lg)).float().mean()) for lg in (value, logits, full))


@pytest.mark.parametrize("corrupted,direction", [("mean", "noising"), ("zero", "noising"), ("tokens", "noising"),
                                                 ("tokens", "denoising")])
def test_every_component_at_once_equals_each_by_hand(induction, corrupted, direction):
    clean, tokens, metric = inputs()
    corr = tokens if corrupted == "tokens" else corrupted
    n, got = passes(induction, lambda: path_patches(induction, clean, corr, metric, senders=SENDERS,
                                                     receivers=RECEIVERS, direction=direction))
    assert n == (7 if corrupted == "tokens" else 6)  # base, (corrupted), full, frozen, one per component
    assert list(got) == ["q", "k", "v"]
    for c in "qkv":
        want = by_hand(induction, clean, corr, metric, c, direction)
        assert (got[c].value, got[c].base_value, got[c].full_value) == want  # the same numbers, bit for bit
        assert got[c].component == c and got[c].direction == direction
        one_n, one = passes(induction, lambda c=c: path_patch(induction, clean, corr, metric, senders=SENDERS,
                                                              receivers=RECEIVERS, component=c, direction=direction))
        assert one == got[c] and one_n == n - 2  # one component alone: two passes fewer
    assert len({got[c].value for c in "qkv"}) == 3  # three different paths, three numbers


def test_a_base_run_from_the_caller_saves_its_pass(induction):
    ev = mechwork.preset("induction-2l").task.batch("test")
    acc = accuracy(ev.targets, ev.mask)
    wanted = base_hooks(induction, [(1, 3)])
    assert wanted == {"blocks.0.attn.hook_z"}  # attention only, one layer below the receivers
    with torch.no_grad():
        run = induction.run_with_cache(ev.tokens, names_filter=lambda n: n in wanted)
    n, shared = passes(induction, lambda: path_patches(induction, ev.tokens, "mean", acc, senders=[(0, 1)],
                                                       receivers=[(1, 3)], components="kq", base_run=run))
    assert n == 4 and list(shared) == ["k", "q"]
    assert shared == path_patches(induction, ev.tokens, "mean", acc, senders=[(0, 1)], receivers=[(1, 3)],
                                  components=["k", "q"])
    with pytest.raises(ConfigError, match=r"'base_run' must be .*\(got 'no blocks.0.attn.hook_z'\)"):
        path_patches(induction, ev.tokens, "mean", acc, senders=[(0, 1)], receivers=[(1, 3)], base_run=(run[0], {}))


def test_components_are_checked(induction):
    toks = repeated_tokens(64, 10, batch=2)
    for bad, got in (("qz", "'z'"), (["k", "k"], "'k'"), ((), "'none'")):
        with pytest.raises(ConfigError, match=rf"^'components' must be some of q, k and v, each once \(got {got}\)$"):
            path_patches(induction, toks, "mean", lambda lg: lg.mean(), senders=[(0, 0)], receivers=[(1, 3)],
                         components=bad)
    with pytest.raises(ConfigError, match=r"^'component' must be q, k or v \(got 'qk'\)$"):
        path_patch(induction, toks, "mean", lambda lg: lg.mean(), senders=[(0, 0)], receivers=[(1, 3)],
                   component="qk")


def test_denoising_components_equal_transformer_lens_direct_paths(tmp_path_factory):
    """On a Hugging Face GPT-2 bridge (where TransformerLens has the per-head q/k/v input fork), one
    ``path_patches`` call per receiver gives TL's ``get_act_patch_direct_path`` for q, k and v."""
    import transformer_lens.patching as tlp

    sys.path.insert(0, os.path.dirname(__file__))
    import fourmodels  # type: ignore[import-not-found]

    model = mechwork.load(fourmodels.build("gpt2", tmp_path_factory.mktemp("gpt2")), device="cpu")
    g = torch.Generator().manual_seed(0)
    clean = torch.randint(0, int(model.cfg.d_vocab), (2, 8), generator=g)
    corrupted = clean.clone()
    corrupted[:, :3] = torch.randint(0, int(model.cfg.d_vocab), (2, 3), generator=g)

    def metric(logits: torch.Tensor) -> torch.Tensor:
        return logits[:, -2].log_softmax(-1).gather(-1, clean[:, -1:]).mean()

    _, cc = model.run_with_cache(clean)
    _, kc = model.run_with_cache(corrupted)
    ref = {c: tlp.get_act_patch_direct_path(model, corrupted, cc, kc, metric, 0, 1, component=c, verbose=False)
           for c in "qkv"}
    worst = 0.0
    for h in range(int(model.cfg.n_heads)):
        got = path_patches(model, clean, corrupted, metric, senders=[(0, 1)], receivers=[(1, h)],
                           direction="denoising")
        for c in "qkv":
            worst = max(worst, abs(got[c].value - float(ref[c][1, h])))
    print(f"path_patches against TL's direct path patching, every layer-1 head and component: max diff {worst:.1e}")
    assert worst <= 1e-5
    assert len({round(float(ref[c][1, 0]), 6) for c in "qkv"}) == 3  # the components differ: a mix-up would show
