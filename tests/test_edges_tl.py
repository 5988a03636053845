"""Edge scores (mechwork.analysis.edges) against TransformerLens's own ``attribution_patching``, to 1e-5.

* EAP edge scores per position = ``attribution_patch(..., EdgeAttributionConfig(granularity="edge"))`` on the
  Hugging Face GPT-2 and Llama bridges (the only ones TL's per-head fork runs on), edge for edge
  (:func:`mechwork.analysis.edgerun.to_tl` names them); position-free scores = TL's summed over positions.
* Node totals (each sender's out-edges summed) = TL's node granularity scores on all four models. TL's
  ``attribution_patch(granularity="node")`` requires ``hook_mlp_out``, which an attention-only model has not: on
  induction-2l the same numbers come from TL's own pieces (``cache_activation_and_gradient`` per example,
  ``_node_effects`` over the embed and head nodes, averaged over the batch, as ``attribution_patch`` does).
* Exact noising patches of single edges = TL's ``_ablate_edges`` with every other edge kept.
* EAP-IG on the inputs (TL raises NotImplementedError for ``ig_steps > 1``) = integrated gradients assembled from
  TL's pieces: ``hook_embed`` moved along the corrupted-to-clean line by a plain hook, reader gradients from
  ``cache_activation_and_gradient`` averaged over the steps, edges scored by ``_edge_effects``. EAP-IG on the
  activations likewise, every writer pinned on its line by plain reader hooks (gradient straight through).

TL applies the metric to one example at a time and averages the scores; mechwork applies it to the batch. The
metric here (a logit difference at the last position, averaged over the batch) makes the two the same quantity.
Biases and norm weights of the HF models are jittered, so a dropped bias would show; the models run in float64,
so 1e-5 separates a wrong score from rounding on every model (induction-2l's node scores reach 20).
"""

from __future__ import annotations

import os
import sys
from collections.abc import Callable
from typing import Any

import pytest
import torch

import mechwork
from mechwork.analysis.edgerun import to_tl
from mechwork.analysis.edges import eap, eap_ig, edge_patch
from mechwork.graph import Edge

sys.path.insert(0, os.path.dirname(__file__))
from fourmodels import jitter_biases_and_norms

os.environ.setdefault("HF_HUB_OFFLINE", "1")
TOL = 1e-5
_MODELS: dict[str, Any] = {}


def _model(four_models: dict[str, str], name: str) -> Any:
    if name not in _MODELS:
        model = mechwork.load(four_models[name])
        if name in ("gpt2", "llama"):
            jitter_biases_and_norms(model.original_model, norm_names=("ln", "norm"))
        _MODELS[name] = model.eval().to(torch.float64)
    return _MODELS[name]


def _inputs(model: Any, name: str, batch: int = 3, n_pos: int = 8) -> tuple[torch.Tensor, torch.Tensor, Any]:
    """Clean and corrupted prompts (the induction probe's on induction-2l) and a batch-mean logit difference."""
    if name == "induction-2l":
        from mechwork.tasks import standard_probe

        pr = standard_probe(mechwork.preset("induction-2l").task, n=batch, half=n_pos // 2)
        clean, corrupted = pr.clean, pr.corrupted
    else:
        g = torch.Generator().manual_seed(11)
        clean, corrupted = (torch.randint(0, int(model.cfg.d_vocab), (batch, n_pos), generator=g) for _ in range(2))
    with torch.no_grad():
        gap = (model(clean) - model(corrupted))[:, -1].mean(0)
    a, b = int(gap.argmax()), int(gap.argmin())
    return clean, corrupted, lambda logits: (logits[:, -1, a] - logits[:, -1, b]).mean()


def _key(node: Any) -> str:
    if node.kind == "embed":
        return "input"
    return f"L{node.layer}H{node.head}" if node.kind == "attn_head_out" else f"MLP{node.layer}"


@pytest.mark.parametrize("name", ["gpt2", "llama"])
def test_eap_is_transformer_lens_edge_attribution(four_models, name):
    from transformer_lens.tools.analysis.attribution_patching import EdgeAttributionConfig, attribution_patch

    model = _model(four_models, name)
    clean, corrupted, metric = _inputs(model, name)
    n_layers, n_pos = int(model.cfg.n_layers), clean.shape[1]
    ref = attribution_patch(model, clean, corrupted, metric, EdgeAttributionConfig(granularity="edge")).edge_scores
    per = eap(model, clean, corrupted, metric, per_position=True)
    free = eap(model, clean, corrupted, metric)
    ig1 = eap_ig(model, clean, corrupted, metric, steps=1, per_position=True)
    got = {pair: float(v) for e, v in zip(per.graph.edges, per.values, strict=True) for pair in to_tl(e, n_layers)}
    assert set(got) == set(ref) and per.graph.n_edges == len(ref)  # the same edges, one for one
    worst = max(abs(got[k] - ref[k]) for k in ref)
    summed = torch.tensor([sum(ref[k] for k in to_tl(e, n_layers, n_pos)) for e in free.graph.edges],
                          dtype=torch.float64)
    print(f"\n{name}: {len(ref)} edges, max |mechwork EAP - TL| = {worst:.2e} (largest |score| "
          f"{max(abs(v) for v in ref.values()):.3g}); position-free {float((free.values - summed).abs().max()):.2e}")
    assert worst <= TOL
    assert float((free.values - summed).abs().max()) <= TOL
    assert float((ig1.values - per.values).abs().max()) <= 1e-9  # EAP-IG with one step is EAP
    assert max(abs(v) for v in ref.values()) > 1e-2  # the comparison is not between zeros
    assert per.engine == ("fast" if name == "gpt2" else "hooks")


def _tl_nodes(model: Any, name: str, clean: torch.Tensor, corrupted: torch.Tensor, metric: Any) -> dict[Any, float]:
    from transformer_lens.tools.analysis import attribution_patching as ap

    if not getattr(model.cfg, "attn_only", False):
        return ap.attribution_patch(model, clean, corrupted, metric, ap.EdgeAttributionConfig("node")).node_scores
    n_layers, n_heads, n_pos = int(model.cfg.n_layers), int(model.cfg.n_heads), clean.shape[1]
    names = ["hook_embed"] + [f"blocks.{layer}.attn.hook_z" for layer in range(n_layers)]
    nodes = [ap.Node("embed", p) for p in range(n_pos)]
    nodes += [ap.Node("attn_head_out", p, layer, h) for layer in range(n_layers) for h in range(n_heads)
              for p in range(n_pos)]
    out: dict[Any, float] = {}
    for i in range(clean.shape[0]):
        cc = ap.cache_activation_and_gradient(model, clean[i:i + 1], metric, names_filter=names,
                                              compute_gradient=False)
        kc = ap.cache_activation_and_gradient(model, corrupted[i:i + 1], metric, names_filter=names)
        for node, v in ap._node_effects(cc, kc, nodes).items():
            out[node] = out.get(node, 0.0) + v / clean.shape[0]
    return out


@pytest.mark.parametrize("name", ["custom3l", "gpt2", "llama", "induction-2l"])
def test_node_totals_are_transformer_lens_node_scores(four_models, name):
    model = _model(four_models, name)
    clean, corrupted, metric = _inputs(model, name)
    ref = _tl_nodes(model, name, clean, corrupted, metric)
    per = eap(model, clean, corrupted, metric, per_position=True)
    totals = eap(model, clean, corrupted, metric).node_totals()
    by_pos: dict[tuple[str, int], float] = {}  # per (sender, position): the out-edges at that position
    for e, v in zip(per.graph.edges, per.values.tolist(), strict=True):
        by_pos[(e.sender, e.pos)] = by_pos.get((e.sender, e.pos), 0.0) + v
    summed: dict[str, float] = {}
    for node, v in ref.items():
        summed[_key(node)] = summed.get(_key(node), 0.0) + v
    assert set(summed) == set(totals) and len(by_pos) == len(ref)
    worst_pos = max(abs(by_pos[(_key(n), n.position)] - v) for n, v in ref.items())
    worst = max(abs(totals[k] - summed[k]) for k in summed)
    print(f"\n{name}: {len(ref)} nodes, max |node total - TL node score| = {worst_pos:.2e} per position, "
          f"{worst:.2e} summed over positions (largest {max(abs(v) for v in summed.values()):.3g})")
    assert worst_pos <= TOL and worst <= TOL
    assert max(abs(v) for v in summed.values()) > 1e-2


@pytest.mark.parametrize("name", ["gpt2", "llama"])
def test_exact_noising_is_transformer_lens_ablate_edges(four_models, name):
    """Noising one edge (corrupted write) = TL's _ablate_edges with every other edge kept."""
    from transformer_lens.tools.analysis import attribution_patching as ap

    model = _model(four_models, name)
    clean, corrupted, metric = _inputs(model, name, batch=1)
    n_layers, n_pos = int(model.cfg.n_layers), clean.shape[1]
    edges = [Edge("input", "logits"), Edge("L0H1", "L1H2.k"), Edge("L0H3", "MLP0"), Edge("MLP0", "L1H0.v"),
             Edge("input", "L1H3.q", 5), Edge("L0H2", "logits", 7), Edge("L1H1", "logits", 3)]
    free = edge_patch(model, clean, corrupted, metric, direction="noising", edges=[e for e in edges if e.pos is None])
    per = edge_patch(model, clean, corrupted, metric, direction="noising", per_position=True,
                     edges=[e for e in edges if e.pos is not None])
    with torch.no_grad(), ap._edge_hook_flags(model):
        cache = ap.cache_activation_and_gradient(model, clean, metric, names_filter=ap._edge_hook_names(n_layers),
                                                 compute_gradient=False)
        every = ap.enumerate_edges(model, cache)
        writers = ap.capture_writer_outputs(model, corrupted)
        base = float(metric(model(clean)))
        worst, largest = 0.0, 0.0
        for e in edges:
            scores = free if e.pos is None else per
            gone = set(to_tl(e, n_layers, n_pos))
            ref = float(metric(ap._ablate_edges(model, clean, every, set(every) - gone, writers))) - base
            got = float(scores.values[scores.graph.index(e)])
            worst, largest = max(worst, abs(got - ref)), max(largest, abs(ref))
    print(f"\n{name}: {len(edges)} single-edge noising patches, max |mechwork - TL _ablate_edges| = {worst:.2e} "
          f"(largest effect {largest:.3g})")
    assert worst <= TOL and largest > 1e-3
    assert int((~torch.isnan(free.values)).sum()) == 4 and int((~torch.isnan(per.values)).sum()) == 3


def _tl_ig(model: Any, clean: torch.Tensor, corrupted: torch.Tensor, metric: Any, steps: int,
           pins: Callable[[float, Any, Any], list[tuple[str, Any]]]) -> dict[Any, float]:
    """EAP-IG from TransformerLens's own pieces, one example at a time: for alpha = k / steps, the corrupted run
    with the hooks ``pins(alpha, clean_cache, corrupted_cache)`` moving writes onto the corrupted-to-clean line,
    the reader gradients of ``cache_activation_and_gradient`` averaged over the steps, scored by
    ``_edge_effects`` (clean - corrupted writer deltas), averaged over the batch."""
    from transformer_lens.tools.analysis import attribution_patching as ap

    n = int(model.cfg.n_layers)
    names, writers = ap._edge_hook_names(n), ap._writer_hook_names(n)
    readers = [*ap._reader_hook_names(n), f"blocks.{n - 1}.hook_resid_post"]
    out: dict[Any, float] = {}
    with ap._edge_hook_flags(model):
        for i in range(clean.shape[0]):
            c_cache, k_cache = (ap.cache_activation_and_gradient(model, t[i:i + 1], metric,
                                                                 names_filter=names + writers, compute_gradient=False)
                                for t in (clean, corrupted))
            grads: dict[str, Any] = {}
            for k in range(steps):
                with model.hooks(fwd_hooks=pins(k / steps, c_cache, k_cache)):
                    g = ap.cache_activation_and_gradient(model, corrupted[i:i + 1], metric, names_filter=readers)
                for name in readers:
                    grad = g.gradients[name]
                    assert grad is not None
                    grads[name] = grads.get(name, 0) + grad / steps
            avg = ap.GradientCache(k_cache.activations, grads, k_cache.metric)
            for edge, v in ap._edge_effects(c_cache, avg, ap.enumerate_edges(model, k_cache)).items():
                out[edge] = out.get(edge, 0.0) + v / clean.shape[0]
    return out


def _tl_ig_inputs(model: Any, clean: torch.Tensor, corrupted: torch.Tensor, metric: Any,
                  steps: int) -> dict[Any, float]:
    """EAP-IG on the inputs: ``hook_embed`` moved to corrupted + alpha (clean - corrupted), value pinned,
    gradient straight through."""
    def pins(alpha: float, c_cache: Any, k_cache: Any) -> list[tuple[str, Any]]:
        c_in, k_in = c_cache.activations["hook_embed"], k_cache.activations["hook_embed"]
        target = k_in + alpha * (c_in - k_in)

        def pin(act: torch.Tensor, hook: Any) -> torch.Tensor:
            return act + (target - act).detach()

        return [("hook_embed", pin)]

    return _tl_ig(model, clean, corrupted, metric, steps, pins)


@pytest.mark.parametrize("name", ["gpt2", "llama"])
def test_eap_ig_on_inputs_is_integrated_gradients_through_transformer_lens_hooks(four_models, name):
    model = _model(four_models, name)
    clean, corrupted, metric = _inputs(model, name, batch=2)
    ref = _tl_ig_inputs(model, clean, corrupted, metric, steps=4)
    ours = eap_ig(model, clean, corrupted, metric, steps=4, on="inputs", per_position=True)
    plain = eap(model, clean, corrupted, metric, per_position=True)
    n_layers = int(model.cfg.n_layers)
    got = {pair: float(v) for e, v in zip(ours.graph.edges, ours.values, strict=True) for pair in to_tl(e, n_layers)}
    assert set(got) == set(ref)
    worst = max(abs(got[k] - ref[k]) for k in ref)
    moved, largest = float((ours.values - plain.values).abs().max()), float(ours.values.abs().max())
    print(f"\n{name}: EAP-IG (4 steps, inputs) max |mechwork - TL hooks| = {worst:.2e}; it moves scores by up to "
          f"{moved:.3g} from EAP (largest score {largest:.3g})")
    assert worst <= TOL and moved > 1e-3 * largest and moved > 1e4 * worst  # IG is not EAP here, and matches


def _pin_hooks(n_layers: int, n_heads: int, mlp: bool, target: dict[str, torch.Tensor]) -> list[tuple[str, Any]]:
    """Plain hooks that make every reader read each writer's ``target`` write in place of its live one (the
    difference detached: the gradient goes straight through), writers captured as the forward makes them."""
    live: dict[str, torch.Tensor] = {}

    def grab(name: str) -> Any:
        return lambda act, hook: live.__setitem__(name, act)

    def shift(names: list[str], heads_of: list[int]) -> torch.Tensor:
        out = (target["hook_embed"] - live["hook_embed"]).detach()
        for layer in heads_of:
            out = out + (target[f"blocks.{layer}.attn.hook_result"]
                         - live[f"blocks.{layer}.attn.hook_result"]).detach().sum(2)
        for name in names:
            out = out + (target[name] - live[name]).detach()
        return out

    def reader(layer: int, kind: str) -> Any:
        mlps = [f"blocks.{x}.hook_mlp_out" for x in range(layer if kind != "final" else n_layers)] if mlp else []
        heads = list(range(layer + 1 if kind in ("mlp", "final") else layer))

        def hook(act: torch.Tensor, hook: Any) -> torch.Tensor:
            s = shift(mlps, heads)
            return act + (s[:, :, None] if kind == "head" else s)

        return hook

    hooks: list[tuple[str, Any]] = [("hook_embed", grab("hook_embed"))]
    for layer in range(n_layers):
        hooks += [(f"blocks.{layer}.attn.hook_{c}_input", reader(layer, "head")) for c in "qkv"]
        hooks.append((f"blocks.{layer}.attn.hook_result", grab(f"blocks.{layer}.attn.hook_result")))
        if mlp:
            hooks += [(f"blocks.{layer}.hook_mlp_in", reader(layer, "mlp")),
                      (f"blocks.{layer}.hook_mlp_out", grab(f"blocks.{layer}.hook_mlp_out"))]
    return [*hooks, (f"blocks.{n_layers - 1}.hook_resid_post", reader(n_layers - 1, "final"))]


@pytest.mark.parametrize("name", ["gpt2", "llama"])
def test_eap_ig_on_activations_is_integrated_gradients_through_transformer_lens_hooks(four_models, name):
    """Every writer pinned on the corrupted-to-clean line by plain reader hooks (value pinned, gradient straight
    through), reader gradients from ``cache_activation_and_gradient`` averaged over 3 steps, ``_edge_effects``."""
    from transformer_lens.tools.analysis import attribution_patching as ap

    model = _model(four_models, name)
    clean, corrupted, metric = _inputs(model, name, batch=2)
    n, steps = int(model.cfg.n_layers), 3
    writers = ap._writer_hook_names(n)

    def pins(alpha: float, c_cache: Any, k_cache: Any) -> list[tuple[str, Any]]:
        target = {w: k_cache.activations[w] + alpha * (c_cache.activations[w] - k_cache.activations[w])
                  for w in writers}
        return _pin_hooks(n, int(model.cfg.n_heads), True, target)

    ref = _tl_ig(model, clean, corrupted, metric, steps, pins)
    ours = eap_ig(model, clean, corrupted, metric, steps=steps, on="activations", per_position=True)
    got = {pair: float(v) for e, v in zip(ours.graph.edges, ours.values, strict=True) for pair in to_tl(e, n)}
    assert set(got) == set(ref)
    worst = max(abs(got[k] - ref[k]) for k in ref)
    moved = float((ours.values - eap(model, clean, corrupted, metric, per_position=True).values).abs().max())
    print(f"\n{name}: EAP-IG (3 steps, activations) max |mechwork - TL hooks| = {worst:.2e}; moved from EAP by "
          f"up to {moved:.3g}")
    assert worst <= TOL and moved > 1e4 * worst
