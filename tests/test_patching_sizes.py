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

from mechwork.analysis.metrics import Reads, accuracy, logit_diff, loss, normalized, positions_of
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


# -- the rows the fast engine leaves out: a residual-stream patch's own layer, the positions a metric reads --------

def _metrics(clean):
    """A metric that reads every position (a plain function), and three that declare theirs: mechwork's loss
    over a mask of later positions, a logit difference at the last position, one at a middle position."""
    mask = torch.zeros(clean.shape, dtype=torch.bool)
    mask[:, 6:-1] = True
    plain = lambda logits: logits[:, 6:-1].log_softmax(-1).gather(-1, clean[:, 7:, None]).mean()
    return {"plain": plain, "loss_mask": loss(clean.roll(-1, dims=1), mask),
            "logit_diff_last": logit_diff(clean[:, 0], clean[:, 1]),
            "middle": Reads(lambda logits: logits[:, 4].log_softmax(-1)[:, 0].mean(), (4,))}


@pytest.mark.parametrize("kind", ["plain", "loss_mask", "logit_diff_last", "middle"])
@pytest.mark.parametrize("site, by, tl_fn", SWEEPS[:2], ids=["resid_pre", "z"])
def test_metric_positions_equal_transformer_lens(four_layers, kind, site, by, tl_fn):
    """Every position patched (the first, the middle ones, the last): the engine's result, with the last layer
    and the logits computed at the metric's positions only, is TransformerLens's full-model one."""
    model, clean, corrupted, _, cache = four_layers
    metric = _metrics(clean)[kind]
    assert (positions_of(metric, N_POS) is None) == (kind == "plain")
    ref = tl_fn(model, corrupted, cache, metric).cpu()
    res = patch(model, clean, corrupted, metric, site=site, by=by)
    assert res.engine == "fast"
    assert float((res.values - ref).abs().max()) <= TOL
    assert float(ref.std()) > 1e-4


@pytest.mark.parametrize("memory_mb", [512.0, 1e-3], ids=["many-copies", "one-copy"])
def test_resid_pre_noising_subset_per_example(four_layers, memory_mb):
    """resid_pre by position, noising, a subset of positions and layers, per-example values, chunks of many
    copies at different positions or of one: TransformerLens's cells."""
    model, clean, corrupted, _, _ = four_layers
    metric = logit_diff(clean[:, 0], clean[:, 1], pos=-2, per_example=True)
    _, cache = model.run_with_cache(corrupted)
    ref = tlp.get_act_patch_resid_pre(model, clean, cache, lambda lg: metric(lg).mean())[1:, [0, 3, 5, 8, 9]]
    res = patch(model, clean, corrupted, metric, site="resid_pre", by="layer_pos", direction="noising",
                layers=[1, 2, 3], positions=[0, 3, 5, 8, 9], memory_mb=memory_mb)
    assert res.per_example is not None and res.per_example.shape == (3, 5, BATCH)
    assert float((res.values - ref).abs().max()) <= TOL
    assert res.values[:, -1].tolist() == pytest.approx([res.clean_value] * 3)  # after the metric's position


def test_metric_positions():
    """What each metric declares, and that normalising keeps it."""
    t = torch.zeros(2, 5, dtype=torch.long)
    mask = torch.zeros(2, 5, dtype=torch.bool)
    mask[0, 1], mask[1, 3] = True, True
    assert positions_of(logit_diff(0, 1), 5) == [4] and positions_of(logit_diff(0, 1, pos=2), 5) == [2]
    assert positions_of(loss(t, mask), 5) == [1, 3] and positions_of(loss(t), 5) is None
    assert positions_of(loss(t[:, 0]), 5) == [4] and positions_of(accuracy(t, mask), 5) == [1, 3]
    lg = torch.randn(2, 5, 7)
    norm = normalized(logit_diff(0, 1), lg, torch.randn(2, 5, 7))
    assert positions_of(norm, 5) == [4] and float(norm(lg)) == pytest.approx(1.0)
    assert positions_of(lambda lg: lg.sum(), 5) is None and positions_of(Reads(lambda lg: lg.sum(), (9,)), 5) is None


def _toy(**kw):
    torch.manual_seed(1)
    return build_model(ToyConfig(**{"n_layers": 3, "d_model": 64, "n_heads": 4, "d_head": 16, "d_mlp": 128,
                                    "d_vocab": 50, "d_vocab_out": 50, "n_ctx": 16, **kw}), "cpu")


@pytest.fixture(scope="module")
def gpt2(tmp_path_factory):
    from fourmodels import hf_dir, jitter_biases_and_norms

    import mechwork

    model = mechwork.load(str(hf_dir("gpt2", tmp_path_factory.mktemp("gpt2"), with_tokenizer=False)))
    jitter_biases_and_norms(model)  # biases (the stacked q/k/v ones too) and norm scales that show if dropped
    return model


@pytest.mark.parametrize("which", ["no-layernorm", "attn-only", "gpt2"])
def test_other_layouts_equal_transformer_lens(which, request):
    """The same on a model without LayerNorm (ReLU), an attention-only one, and a Hugging Face GPT-2's layout."""
    model = request.getfixturevalue("gpt2") if which == "gpt2" else _toy(n_layers=2, d_mlp=None) \
        if which == "attn-only" else _toy(act_fn="relu")
    g = torch.Generator().manual_seed(3)
    clean = torch.randint(0, 50, (BATCH, N_POS), generator=g)
    corrupted = clean.clone()
    corrupted[:, 2:5] = torch.randint(0, 50, (BATCH, 3), generator=g)
    _, cache = model.run_with_cache(clean)
    for kind, metric in _metrics(clean).items():
        for site, by, tl_fn in SWEEPS[:2]:
            ref = tl_fn(model, corrupted, cache, metric).cpu()
            res = patch(model, clean, corrupted, metric, site=site, by=by)
            assert res.engine == "fast"
            assert float((res.values - ref).abs().max()) <= TOL, (kind, site)
