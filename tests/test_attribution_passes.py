"""Attribution patching stays one forward and one backward pass over the batch at every model size.

Passes are counted where they happen: every forward pass runs the first block once, every backward pass goes
through ``Tensor.backward`` once. Besides the source run (the activations patched in), attribution patching
runs the base batch forward once with gradients and backward once, whatever the number of cells.
"""

from __future__ import annotations

import pytest
import torch

import mechwork
from mechwork.analysis.attribution import attribute
from mechwork.analysis.patching import patch
from mechwork.models import ToyConfig, build_model


def _four_layers():
    return build_model(ToyConfig(n_layers=4, d_model=256, n_heads=8, d_head=32, d_mlp=1024, d_vocab=64,
                                 d_vocab_out=64, n_ctx=16, act_fn="gelu", normalization="LN", init="gpt2"), "cpu")


@pytest.fixture(scope="module", params=["induction-2l", "four-layers"])
def model(request):
    return mechwork.load("induction-2l", device="cpu") if request.param == "induction-2l" else _four_layers()


@pytest.mark.parametrize("site, by", [("resid_pre", "layer_pos"), ("z", "head_pos"), ("mlp_out", "layer")])
def test_one_forward_and_one_backward(model, site, by, monkeypatch):
    if site == "mlp_out" and "blocks.0.hook_mlp_out" not in model.hook_dict:
        pytest.skip("attention-only")
    g = torch.Generator().manual_seed(0)
    clean = torch.randint(0, 64, (3, 12), generator=g)
    corrupted = clean.clone()
    corrupted[:, 2:5] = torch.randint(0, 64, (3, 3), generator=g)

    def metric(logits):
        return logits[:, 6:-1].log_softmax(-1).gather(-1, clean[:, 7:, None]).mean()

    forwards: list[int] = []
    backwards: list[int] = []
    handle = model.blocks[0].register_forward_pre_hook(lambda mod, args: forwards.append(1))
    real = torch.Tensor.backward
    monkeypatch.setattr(torch.Tensor, "backward", lambda self, *a, **k: (backwards.append(1), real(self, *a, **k)))
    try:
        res = attribute(model, clean, corrupted, metric, site=site, by=by)
    finally:
        handle.remove()
    assert (len(forwards), len(backwards)) == (2, 1)  # the source run; the base run with gradients; its backward
    assert res.values.numel() >= int(model.cfg.n_layers)
    # the positions before the corruption are the same in both runs: their estimated change is exactly 0, as
    # exact patching's (which skips them as well)
    if by.endswith("pos"):
        exact = patch(model, clean, corrupted, metric, site=site, by=by)
        assert res.values.shape == exact.values.shape
        assert bool((res.values[:, :2] == res.corrupted_value).all())
        assert bool((exact.values[:, :2] == exact.corrupted_value).all())
        assert bool((res.values[:, 2:] != res.corrupted_value).any())
