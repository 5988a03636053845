"""Analyse once, render after: a kit's analyse() runs each analysis once, and pages render without a model.

Forward passes are counted at the model's ``hook_embed`` (every pass through the bridge goes through it,
hooked or not). The expected count is the sum of each analysis run alone, so a second run of any one of
them shows up; the counter is checked to see such a second run.
"""

from __future__ import annotations

import dataclasses
from collections.abc import Callable
from typing import Any

import pandas as pd
import plotly.graph_objects as go
import pytest
import torch

from mechwork.dashboard import Page, page_for, sections
from mechwork.results import Analysis, Result
from mechwork.source import SourceInfo, open_source


def passes(model: Any, fn: Callable[[], Any]) -> int:
    """How many forward passes through ``model`` calling ``fn`` makes."""
    n = [0]
    handle = model.hook_dict["hook_embed"].register_forward_hook(lambda *a: n.__setitem__(0, n[0] + 1))
    try:
        fn()
    finally:
        handle.remove()
    return n[0]


@pytest.fixture(scope="module")
def modadd():
    return open_source("modadd-113")


@pytest.fixture(scope="module")
def modadd_bundle(modadd):
    from mechwork.analysis.grokking import analyse

    return analyse(modadd, progress=False)


def test_the_grokking_analysis_runs_each_forward_pass_once(modadd, monkeypatch):
    import mechwork.analysis.grokking as grokking
    from mechwork.analysis.ablation import keep_frequencies, remove_frequencies
    from mechwork.analysis.fourier import grid_pass

    model, task = modadd.model, modadd.task
    freqs = [1, 5, 10, 19, 47]
    logits, _ = grid_pass(model, task, ["blocks.0.attn.hook_pattern", "blocks.0.mlp.hook_post"])
    singles = {  # one pass over the grid gives the logits, the MLP activations and the attention patterns; the
        # ablations reuse its logits as their unablated run: each runs its embedding table and its ablated grid
        "grid": passes(model, lambda: grid_pass(model, task, ["blocks.0.attn.hook_pattern", "blocks.0.mlp.hook_post"])),
        "keep": passes(model, lambda: keep_frequencies(model, task, freqs, base_logits=logits)),
        "remove": passes(model, lambda: remove_frequencies(model, task, freqs, base_logits=logits)),
    }
    assert singles == {"grid": 1, "keep": 2, "remove": 2}  # the counter sees a pass
    assert passes(model, lambda: keep_frequencies(model, task, freqs)) == 3  # without them: its own unablated run
    assert passes(model, lambda: grokking.analyse(modadd, progress=False)) == sum(singles.values())
    # and a second grid pass (as the page once made) would be seen
    real = grokking.grid_pass
    monkeypatch.setattr(grokking, "grid_pass", lambda *a, **k: (real(*a, **k), real(*a, **k))[1])
    assert passes(model, lambda: grokking.analyse(modadd, progress=False)) == sum(singles.values()) + 1


def test_the_grid_pass_gives_the_sae_features_their_activations(modadd):
    """The modadd kit's one pass over the grid also feeds the SAE's feature pages (blocks.0.mlp.hook_post, the
    hook the Fourier analyses read): the SAE then runs the model only for its metrics (2,048 pairs in chunks of
    512: clean, spliced and zeroed each), and every number is what the feature report's own pass gives."""
    import mechwork.tasks.modadd as kit
    from mechwork.analysis.fourier import grid_pass
    from mechwork.analysis.grokking import analyse, grid_hooks

    model = modadd.model
    grid = grid_pass(model, modadd.task, grid_hooks(modadd))
    assert grid_hooks(modadd) == ["blocks.0.attn.hook_pattern", "blocks.0.mlp.hook_post"]
    metrics_only = passes(model, lambda: kit.sae(modadd, acts=grid[1]))
    alone = passes(model, lambda: kit.sae(modadd))
    assert metrics_only == 3 * 4 and alone == metrics_only + 7  # its own pass over the grid: 7 chunks of 2,048
    assert passes(model, lambda: analyse(modadd, progress=False, grid=grid)) == 4  # the two Fourier ablations
    assert passes(model, lambda: kit.analyse(modadd, progress=False)) == 1 + 4 + metrics_only
    shared, own = kit.sae(modadd, acts=grid[1]).features, kit.sae(modadd).features
    for f in dataclasses.fields(own):
        a, b = getattr(own, f.name), getattr(shared, f.name)
        if dataclasses.is_dataclass(a):
            assert all(torch.equal(getattr(a, g.name), getattr(b, g.name)) if isinstance(getattr(a, g.name),
                       torch.Tensor) else getattr(a, g.name) == getattr(b, g.name) for g in dataclasses.fields(a))
        else:
            assert torch.equal(a, b) if isinstance(a, torch.Tensor) else a == b, f.name


def test_the_induction_analysis_runs_each_forward_pass_once(monkeypatch):
    import mechwork.analysis.induction as induction
    from mechwork.analysis.attention import attention_patterns, composition_scores, head_detectors, repeated_tokens
    from mechwork.analysis.attribution import base_hooks
    from mechwork.kit import get_kit

    src = open_source("induction-2l")
    model, task = src.model, src.task
    ev, rep = task.batch("test"), repeated_tokens(task.d_vocab, task.seq_len // 2, batch=64, seed=1)
    prev, ind = induction.circuit_heads(head_detectors(model))
    assert prev and ind
    wanted = base_hooks(model, ind)
    run = model.run_with_cache(ev.tokens, names_filter=lambda n: n in wanted)
    singles = [  # one run over the held-out sequences gives repeat accuracy's logits and the ablations' base run
        passes(model, lambda: head_detectors(model)),
        passes(model, lambda: model.run_with_cache(ev.tokens, names_filter=lambda n: n in wanted)),
        passes(model, lambda: induction.repeat_accuracy(model, ev.tokens, ev.targets, ev.mask, logits=run[0])),
        passes(model, lambda: composition_scores(model)),
        passes(model, lambda: induction.position_loss(model, rep)),
        passes(model, lambda: attention_patterns(model, rep[:2])),
        passes(model, lambda: attention_patterns(model, ev.tokens[:1])),
        passes(model, lambda: induction.patching_results(model, task)),
        passes(model, lambda: induction.circuit_ablation(model, task, prev, ind, base_run=run)),
    ]
    assert singles[1] == 1 and singles[2] == 0  # the counter sees a pass
    # zero and resample ablation, then path patching into q, k and v: the senders mean-ablated on every path
    # (which is the mean ablation), the frozen run, and one run per component
    assert singles[-1] == 2 + 2 + 3
    assert passes(model, lambda: induction.circuit_ablation(model, task, prev, ind)) == singles[-1] + 1
    assert passes(model, lambda: induction.analyse(src)) == sum(singles)
    real = induction.position_loss
    monkeypatch.setattr(induction, "position_loss", lambda *a: (real(*a), real(*a))[1])
    assert passes(model, lambda: induction.analyse(src)) == sum(singles) + 1
    assert get_kit("induction").probe(task, n=8, seed=0).clean.shape[0] == 8


def _modules(obj: Any, seen: set[int] | None = None) -> list[Any]:
    """Every torch module reachable from ``obj`` through dataclass fields, mappings and sequences."""
    seen = set() if seen is None else seen
    if id(obj) in seen or isinstance(obj, (str, bytes, int, float, torch.Tensor, pd.DataFrame)):
        return []
    seen.add(id(obj))
    if isinstance(obj, torch.nn.Module):
        return [obj]
    if dataclasses.is_dataclass(obj):
        children: Any = [getattr(obj, f.name) for f in dataclasses.fields(obj)]
    elif hasattr(obj, "items"):
        children = list(obj.values())
    elif isinstance(obj, (list, tuple, set)):
        children = list(obj)
    else:
        return []
    return [m for c in children for m in _modules(c, seen)]


def test_a_bundle_holds_no_model_and_its_page_runs_none(modadd_bundle, monkeypatch):
    from mechwork.dashboard.grokking import fourier_section, grokking_page

    assert _modules(modadd_bundle) == [] and "model" not in {f.name for f in dataclasses.fields(modadd_bundle.info)}

    def no_forward(*a: Any, **k: Any) -> Any:
        raise AssertionError("a page ran a model")

    monkeypatch.setattr(torch.nn.Module, "__call__", no_forward)
    page = fourier_section(Page("sections"), modadd_bundle)  # one section, from results alone
    assert [b.title for b in page.blocks if b.title] == ["Fourier spectrum of the embedding", "Key frequencies",
                                                         "Neuron clusters"]
    assert sum(b.kind == "plotly" for b in page.blocks) == 4  # spectrum, clusters, cluster sizes, neuron grids
    full = grokking_page(modadd_bundle)
    assert "Fourier ablation of the embedding" in [b.title for b in full.blocks]
    assert full.render("cdn").count('class="mw-fig"') == sum(b.kind == "plotly" for b in full.blocks)


def test_page_result_draws_the_results_own_figure(modadd_bundle):
    sizes = modadd_bundle["cluster_sizes"]
    page = Page("r").result(sizes, title="Cluster sizes", caption="In red: the key frequencies.")
    (block,) = page.blocks
    assert block.kind == "plotly" and block.title == "Cluster sizes" and block.caption == "In red: the key frequencies."
    assert block.body["layout"]["title"]["text"] == sizes.figure().layout.title.text
    noted = Page("r").result(sizes, title="Cluster sizes")  # no caption: the summary goes above as a note
    assert [b.kind for b in noted.blocks] == ["html", "plotly"] and sizes.summary() in noted.render("cdn")


@dataclasses.dataclass(frozen=True)
class Share(Result):
    """A user kit's result, with a figure."""

    share: float

    def summary(self) -> str:
        return f"first token predicted {self.share:.0%} of the time"

    def to_frame(self) -> pd.DataFrame:
        return pd.DataFrame({"share": [self.share]})

    def figure(self) -> Any:
        return go.Figure(go.Bar(x=["first token"], y=[self.share])).update_layout(
            title="Share", xaxis_title="prediction", yaxis_title="share")


@dataclasses.dataclass(frozen=True)
class Note(Result):
    """A result with neither figure nor table."""

    def summary(self) -> str:
        return "nothing to draw"


@dataclasses.dataclass(frozen=True)
class FirstToken:
    kind = "first-token"

    def describe(self) -> str:
        return "predict the first token"


def test_the_generic_page_renders_any_bundle():
    from mechwork.models import ToyConfig

    metrics = pd.DataFrame({"step": [0, 5, 10], "train_loss": [2.0, 1.0, 0.5], "test_acc": [0.1, 0.5, 0.9]})
    info = SourceInfo("runs/first", "run", FirstToken(), ToyConfig(d_vocab=5, d_vocab_out=5, n_ctx=4), 10, None, {},
                      metrics)
    page = page_for("first-token")(Analysis(info, {"share": Share(0.75), "note": Note()}))
    assert page.title == "first-token dashboard: runs/first"
    titles = [b.title for b in page.blocks if b.title]
    assert titles == ["Summary", "Model and training", "Training curves", "share", "note"]
    html = page.render("cdn")
    assert "first token predicted 75% of the time" in html and "nothing to draw" in html
    assert sum(b.kind == "plotly" for b in page.blocks) == 2  # the curves and Share's figure
    bare = sections.generic_page(Analysis(dataclasses.replace(info, metrics=None), {}))
    assert "analysis has no results." in bare.render("cdn")
    assert [b.kind for b in bare.blocks if b.title == "Training curves"] == ["html"]


def test_the_sae_metrics_clean_run_serves_the_feature_report():
    """On induction-2l's held-out sequences (metrics on every input) the SAE result runs the model three times:
    clean, reconstruction spliced in, activation zeroed; the clean run gives the feature report its activations,
    and the numbers are those of the metrics and report each making its own run."""
    from mechwork.analysis.features import feature_report, sae_result
    from mechwork.analysis.saeio import load_sae
    from mechwork.analysis.saemetrics import clean_run, evaluate_sae
    from mechwork.analysis.saestore import saes_for
    from mechwork.tasks.induction import sae

    src = open_source("induction-2l")
    model, ev = src.model, src.task.batch("test")
    hook = "blocks.1.hook_resid_pre"
    every = torch.ones(ev.tokens.shape, dtype=torch.bool)
    assert passes(model, lambda: sae(src)) == 3
    bundle = sae_result(src, hook, ev, positions=every)
    s = load_sae(saes_for("induction-2l")[hook])
    run = clean_run(model, hook, ev.tokens)
    assert passes(model, lambda: evaluate_sae(model, s, ev, positions=every)) == 3
    assert passes(model, lambda: evaluate_sae(model, s, ev, positions=every, clean=run)) == 2
    for alone, shared in ((evaluate_sae(model, s, ev, positions=every), bundle.metrics),
                          (feature_report(model, s, ev.tokens, latents=5, mask=every), bundle.features)):
        for f in dataclasses.fields(alone):
            a, b = getattr(alone, f.name), getattr(shared, f.name)
            assert torch.equal(a, b) if isinstance(a, torch.Tensor) else a == b, f.name
