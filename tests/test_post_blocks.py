"""Every result kind renders on the embedded presets into page blocks with a figure or a view, and the numbers drawn are
the analysis's own: each figure's data is compared with a direct call of the analysis (or, for attention, with the
model's own pattern hook)."""

from __future__ import annotations

import base64
import json
import os

os.environ.setdefault("OMP_WAIT_POLICY", "PASSIVE")

import numpy as np
import pytest
import torch

from mechwork.dashboard.page import Block
from mechwork.errors import PostError
from mechwork.post.blocks import BLOCKS, CIRCUIT_METHODS, SITES, BlockContext, render_block
from mechwork.post.parse import parse_text

torch.set_num_threads(1)

CASES = {  # one block of every kind, on the preset it applies to
    "attention": ("induction-2l", "tokens: [5, 6, 7, 8, 5, 6, 7, 8]\nlayer: 1\nheads: [0, 2]"),
    "fourier": ("modadd-113", "matrix: W_U"),
    "key-frequencies": ("modadd-113", ""),
    "neuron-clusters": ("modadd-113", ""),
    "progress": ("modadd-113", ""),
    "head-detectors": ("induction-2l", "tokens: repeated 10\nseed: 3"),
    "patching": ("induction-2l", "site: z\nby: head\nn: 4"),
    "dla": ("induction-2l", ""),
    "logit-lens": ("modadd-113", ""),
    "circuit": ("induction-2l", "n: 4\ntop: 12"),
    "sae-features": ("induction-2l", "latents: 2"),
    "training-curves": ("modadd-113", "title: Loss by step\ncaption: Both splits."),
    "result": ("induction-2l", "name: composition"),
}


def arr(v) -> np.ndarray:
    """A plotly JSON array (a list, or plotly's base64 typed array) as numpy."""
    if isinstance(v, dict) and "bdata" in v:
        a = np.frombuffer(base64.b64decode(v["bdata"]), dtype=v["dtype"])
        return a.reshape(v["shape"]) if "shape" in v else a
    return np.asarray(v, dtype=float)


def traces(blocks: list[Block]) -> list[dict]:
    return [t for b in blocks if b.kind == "plotly" for t in b.body["data"]]


def close(a, b) -> bool:
    a, b = np.asarray(a, dtype=float), np.asarray(b, dtype=float)
    return a.shape == b.shape and np.allclose(a, b, atol=1e-5, rtol=1e-4, equal_nan=True)


@pytest.fixture(scope="module")
def contexts() -> dict[str, BlockContext]:
    return {m: BlockContext(m) for m in ("modadd-113", "induction-2l")}


def block_of(kind: str, model: str, extra: str = ""):
    text = f"# T\n\n```mechwork\n{kind}: {model}\n{extra}\n```\n"
    return parse_text(text, "posts/t.md").blocks[0]


@pytest.fixture(scope="module")
def rendered(contexts) -> dict[str, list[Block]]:
    return {kind: render_block(block_of(kind, model, extra), contexts[model])
            for kind, (model, extra) in CASES.items()}


def test_the_cases_cover_every_kind_and_the_constants_match_the_analyses():
    from mechwork.analysis.circuitreport import METHODS
    from mechwork.hooks import SITES as HOOK_SITES

    assert set(CASES) == set(BLOCKS)
    assert CIRCUIT_METHODS == METHODS and set(SITES) == set(HOOK_SITES) - {"sae"}


@pytest.mark.parametrize("kind", sorted(CASES))
def test_every_kind_renders_a_figure_or_view_that_survives_json(rendered, kind):
    blocks = rendered[kind]
    assert blocks and any(b.kind in ("plotly", "view") for b in blocks), [b.kind for b in blocks]
    for b in blocks:
        d = json.loads(json.dumps(b.to_dict()))
        assert Block.from_dict(d).to_dict() == d


def test_attention_is_the_models_own_pattern(rendered, contexts):
    ctx = contexts["induction-2l"]
    toks = torch.tensor([[5, 6, 7, 8, 5, 6, 7, 8]])
    _, cache = ctx.model.run_with_cache(toks, names_filter=lambda n: n == "blocks.1.attn.hook_pattern")
    want = cache["blocks.1.attn.hook_pattern"][0, [0, 2]]
    (view,) = [b for b in rendered["attention"] if b.kind == "view"]
    props = view.to_dict()["body"]["props"]
    assert props["attentionHeadNames"] == ["L1H0", "L1H2"]
    assert close(props["attention"], want)


def test_fourier_draws_the_spectrum_of_the_matrix_asked_for(rendered, contexts):
    from mechwork.analysis.fourier import embedding_spectrum

    ctx = contexts["modadd-113"]
    spec = embedding_spectrum(ctx.model, "W_U", ctx.task.p)
    (bar,) = traces(rendered["fourier"])
    assert close(arr(bar["y"]), spec.freq_norms)
    assert not close(arr(bar["y"]), embedding_spectrum(ctx.model, "W_E", ctx.task.p).freq_norms)


@pytest.fixture(scope="module")
def frequencies(contexts):
    from mechwork.analysis.fourier import grid_run, key_frequencies, neuron_frequencies_of

    ctx = contexts["modadd-113"]
    _, acts = grid_run(ctx.model, ctx.task, "blocks.0.mlp.hook_post")
    nf = neuron_frequencies_of(acts, ctx.task.p)
    return nf, key_frequencies(ctx.model, ctx.task, neurons=nf)


def test_key_frequencies_and_neuron_clusters_are_the_analysis_numbers(rendered, frequencies):
    nf, kf = frequencies
    (bar,) = traces(rendered["key-frequencies"])
    assert close(arr(bar["y"]), kf.energy)
    table = next(b.body for b in rendered["key-frequencies"] if b.kind == "html")
    assert all(f"<td class=\"num\">{k}</td>" in table for k in kf.freqs)
    scatter, sizes = traces(rendered["neuron-clusters"])
    assert close(arr(scatter["x"]), nf.freq) and close(arr(scatter["y"]), nf.fve)
    ks = [int(k) for k in sizes["x"]]
    assert ks and close(arr(sizes["y"]), [int(((nf.freq == k) & nf.clustered).sum()) for k in ks])


def test_progress_is_the_stored_progress_measures(rendered, contexts):
    from mechwork.analysis.grokking import stored_progress

    pm = stored_progress(contexts["modadd-113"].source)
    drawn = {t["name"]: t for t in traces(rendered["progress"])}
    for name in ("train_loss", "test_loss", "restricted_loss"):
        assert close(arr(drawn[name]["x"]), pm.steps) and close(arr(drawn[name]["y"]), pm[name])


def test_head_detectors_are_the_detector_scores(rendered, contexts):
    from mechwork.analysis.attention import head_detectors

    det = head_detectors(contexts["induction-2l"].model, half=10, seed=3)
    zs = [arr(t["z"]) for t in traces(rendered["head-detectors"])]
    for name in ("previous_token", "induction", "duplicate_token"):
        assert any(close(z, det.scores[name]) for z in zs), name
    other = head_detectors(contexts["induction-2l"].model, half=10, seed=4)
    assert not all(close(z, s) for z, s in zip(zs, other.scores.values(), strict=True))


def test_patching_is_the_patch_of_the_standard_probe(rendered, contexts):
    from mechwork.analysis.patching import patch
    from mechwork.tasks import standard_probe

    ctx = contexts["induction-2l"]
    pr = standard_probe(ctx.task, n=4, seed=0)
    res = patch(ctx.model, pr.clean, pr.corrupted, pr.metric, site="z", by="head")
    (heat,) = traces(rendered["patching"])
    assert close(arr(heat["z"]), res.values)


def test_dla_and_the_logit_lens_are_the_analysis_numbers(rendered, contexts):
    from mechwork.analysis.lens import logit_lens
    from mechwork.analysis.logit import direct_logit_attribution
    from mechwork.tasks import standard_probe

    ind = contexts["induction-2l"]
    toks = standard_probe(ind.task, n=8, seed=0).clean[:1]
    answer = int(ind.model(toks)[0, -1].argmax())
    dla = direct_logit_attribution(ind.model, toks, answer, unit="head")
    (bar,) = traces(rendered["dla"])
    assert close(arr(bar["y"]), dla.values[:, 0]) or close(arr(bar["y"]), dla.mean())
    mod = contexts["modadd-113"]
    lens = logit_lens(mod.model, standard_probe(mod.task, n=8, seed=0).clean[:1])
    zs = [arr(t["z"]) for t in traces(rendered["logit-lens"]) if "z" in t]
    assert any(close(z, getattr(lens, f)[:, 0]) for z in zs for f in ("logits", "log_probs", "ranks"))


def test_circuit_is_the_circuit_report_of_the_probe(rendered, contexts):
    from mechwork.analysis.prompt import circuit_result
    from mechwork.tasks import standard_probe

    ctx = contexts["induction-2l"]
    pr = standard_probe(ctx.task, n=4, seed=0)
    report = circuit_result(ctx.model, pr.clean, pr.corrupted, pr.metric, method="eap", top=12)
    kept = set(report.to_frame().query("kept")["edge"])
    assert len(kept) == 12
    graph = next(b for b in rendered["circuit"] if b.kind == "plotly")
    assert {t["name"] for t in graph.body["data"] if "->" in str(t.get("name"))} == kept


def test_sae_features_pages_the_latents_the_analysis_chooses(rendered, contexts):
    from mechwork.tasks.induction import sae

    chosen = sae(contexts["induction-2l"].source).features.latents[:2]
    views = [b for b in rendered["sae-features"] if b.kind == "view"]
    assert len(views) == 2
    assert [b.title for b in rendered["sae-features"] if b.title and b.title.startswith("SAE latent ")] == \
        [f"SAE latent {i}" for i in chosen]


def test_training_curves_take_the_blocks_title_and_caption_and_draw_the_history(rendered, contexts):
    first = rendered["training-curves"][0]
    assert (first.title, first.caption) == ("Loss by step", "Both splits.")
    metrics = contexts["modadd-113"].source.metrics
    drawn = {t["name"]: t for t in traces(rendered["training-curves"])}
    x = arr(drawn["train loss"]["x"])
    rows = metrics.set_index("step").loc[x.astype(int)]
    assert len(x) >= len(metrics) - 1 and close(arr(drawn["train loss"]["y"]), rows["train_loss"])


def test_result_is_the_kits_named_result(rendered, contexts):
    import html

    comp = contexts["induction-2l"].analysis()["composition"]
    note = rendered["result"][0]
    assert note.title == "composition" and html.escape(comp.summary()) in note.body


def test_a_failing_block_is_one_line_naming_its_file_and_line(contexts):
    block = block_of("attention", "induction-2l", "layer: 5")
    with pytest.raises(PostError) as info:
        render_block(block, contexts["induction-2l"])
    msg = str(info.value)
    assert msg.startswith("posts/t.md:3: attention: 'layer' must be below 2") and "\n" not in msg
    with pytest.raises(PostError, match=r"posts/t\.md:3: result: 'name' must be one of .*composition"):
        render_block(block_of("result", "induction-2l", "name: nope"), contexts["induction-2l"])


def test_a_context_opens_its_model_once_and_analyses_once(contexts):
    ctx = contexts["induction-2l"]
    assert ctx.source is ctx.source and ctx.analysis() is ctx.analysis() and not ctx.model.training


def test_a_run_beside_the_post_renders_at_the_step_a_block_asks_for(tmp_path, tiny_task, tiny_train_cfg):
    from mechwork.analysis.fourier import embedding_spectrum
    from mechwork.runs import Run
    from mechwork.training import train

    train(tiny_task, train_cfg=tiny_train_cfg, out=tmp_path / "runs" / "tiny", quiet=True, device="cpu")
    text = "# Run\n\n```mechwork\nfourier: runs/tiny\nstep: 10\n```\n\n```mechwork\nfourier: runs/tiny\n```\n"
    post = parse_text(text, str(tmp_path / "post.md"))
    ctx = BlockContext(str(tmp_path / "runs" / "tiny"))
    early, last = (traces(render_block(b, ctx))[0] for b in post.blocks)
    run = Run(tmp_path / "runs" / "tiny")
    for bar, step in ((early, 10), (last, run.steps[-1])):
        assert close(arr(bar["y"]), embedding_spectrum(run.model_at(step, "cpu"), "W_E", tiny_task.p).freq_norms)
    assert not close(arr(early["y"]), arr(last["y"]))
    with pytest.raises(PostError, match=r"post\.md:3: model 'runs/tiny': 'step' must be a checkpointed step"):
        parse_text(text.replace("step: 10", "step: 11"), str(tmp_path / "post.md"))


def test_patching_a_given_pair_uses_the_pairs_own_metric(contexts):
    from mechwork.analysis.patching import patch
    from mechwork.analysis.prompt import pair_metric
    from mechwork.prompts import tokenize

    ctx = contexts["induction-2l"]
    clean, corrupted = [3, 9, 4, 1, 3, 9, 4, 1], [7, 2, 8, 5, 3, 9, 4, 1]
    block = block_of("patching", "induction-2l", f"clean: {clean}\ncorrupted: {corrupted}\nsite: resid_pre")
    (heat,) = traces(render_block(block, ctx))
    c, k = tokenize(ctx.model, [clean]), tokenize(ctx.model, [corrupted])
    _, metric = pair_metric(ctx.model, c, k)
    assert close(arr(heat["z"]), patch(ctx.model, c.batch(), k.batch(), metric, site="resid_pre").values)
    with pytest.raises(PostError, match=r"t\.md:3: patching: 'clean' and 'corrupted' must be given together"):
        render_block(block_of("patching", "induction-2l", f"clean: {clean}"), ctx)


def test_a_circuit_top_out_of_range_or_with_acdc_is_one_line_not_a_note(contexts):
    from mechwork.graph import Graph

    ctx = contexts["induction-2l"]
    total = Graph.of_model(ctx.model).n_edges
    with pytest.raises(PostError) as info:
        render_block(block_of("circuit", "induction-2l", f"top: {total + 1}"), ctx)
    msg = str(info.value)
    assert msg == f"posts/t.md:3: circuit: 'top' must be a number of edges in [1, {total:,}] (got {total + 1})"
    with pytest.raises(PostError) as info:
        render_block(block_of("circuit", "induction-2l", "method: acdc\ntop: 5"), ctx)
    msg = str(info.value)
    assert msg.startswith("posts/t.md:3: circuit: 'top' does not apply to method acdc") and "\n" not in msg
    assert "eap" in msg and "(got top: 5)" in msg
