"""Patching on a 4-layer, 8-head, d_model-256 model against ``transformer_lens.patching``, on both paths.

The fast engine reruns a position-local site's layer at the patched position
alone, and both paths skip cells whose source activation is the base run's own:
each is held here to
TransformerLens's own sweep functions (1e-5), on a corruption in the middle of
the prompt so that both the untouched prefix and the later positions are covered.
"""

from __future__ import annotations

import pytest
import torch
import transformer_lens.patching as tlp

from mechwork.analysis.patching import patch
from mechwork.models import ToyConfig, build_model

TOL = 1e-5
N_POS, BATCH = 10, 2


@pytest.fixture(scope="module")
def four_layers():
    model = build_model(ToyConfig(n_layers=4, d_model=256, n_heads=8, d_head=32, d_mlp=1024, d_vocab=64,
                                  d_vocab_out=64, n_ctx=16, act_fn="gelu", normalization="LN", init="gpt2"), "cpu")
    g = torch.Generator().manual_seed(0)
    clean = torch.randint(0, 64, (BATCH, N_POS), generator=g)
    corrupted = clean.clone()
    corrupted[:, 3:6] = torch.randint(0, 64, (BATCH, 3), generator=g)  # positions 0-2 and 6- keep their tokens

    def metric(logits):  # mean log-prob of the clean next tokens over the second half
        return logits[:, 6:-1].log_softmax(-1).gather(-1, clean[:, 7:, None]).mean()

    _, cache = model.run_with_cache(clean)
    return model, clean, corrupted, metric, cache


SWEEPS = [("resid_pre", "layer_pos", tlp.get_act_patch_resid_pre),
          ("z", "head_pos", tlp.get_act_patch_attn_head_out_by_pos),
          ("mlp_out", "layer_pos", tlp.get_act_patch_mlp_out),
          ("pattern", "head_pos", tlp.get_act_patch_attn_head_pattern_by_pos)]


@pytest.mark.parametrize("site, by, tl_fn", SWEEPS, ids=[s for s, _, _ in SWEEPS])
@pytest.mark.parametrize("engine", [True, False], ids=["fast", "hooks"])
def test_four_layers_equal_transformer_lens(four_layers, site, by, tl_fn, engine):
    model, clean, corrupted, metric, cache = four_layers
    ref = tl_fn(model, corrupted, cache, metric).cpu()
    res = patch(model, clean, corrupted, metric, site=site, by=by, engine=engine)
    got = res.values.permute(0, 2, 1) if site == "pattern" else res.values
    assert res.engine == ("fast" if engine else "hooks")
    assert got.shape == ref.shape
    assert float((got - ref).abs().max()) <= TOL
    assert float(ref.std()) > 1e-3  # not degenerate: the cells differ


def test_noising_and_a_position_subset(four_layers):
    """Noising (the clean run patched with corrupted activations), every other position, both paths."""
    model, clean, corrupted, metric, _ = four_layers
    _, cache = model.run_with_cache(corrupted)
    ref = tlp.get_act_patch_attn_head_out_by_pos(model, clean, cache, metric)[:, 1::2]
    for engine in (True, False):
        res = patch(model, clean, corrupted, metric, site="z", by="head_pos", direction="noising",
                    positions=range(1, N_POS, 2), engine=engine)
        assert float((res.values - ref).abs().max()) <= TOL
