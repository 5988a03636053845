"""Circuits (mechwork.analysis.circuits): faithfulness against TransformerLens's ``faithfulness``, the curve
against faithfulness one size at a time, top-n, and ACDC against an independent sequential pass over
TransformerLens's own edge ablation (``_ablate_edges``, one trial per forward pass); the bad inputs of the issue.

TransformerLens's edge functions need the bridge's per-head fork, so the comparisons run on the Hugging Face
GPT-2 and Llama test models (biases and norm weights jittered, so a dropped bias would show).
"""

from __future__ import annotations

import os
import sys
from types import SimpleNamespace
from typing import Any

import pytest
import torch

import mechwork
from mechwork.analysis.circuits import Circuit, acdc, faithfulness, faithfulness_curve, top_n
from mechwork.analysis.edgerun import to_tl
from mechwork.errors import ConfigError
from mechwork.graph import Edge, Graph
from mechwork.tasks import standard_probe

sys.path.insert(0, os.path.dirname(__file__))
import fourmodels

os.environ.setdefault("HF_HUB_OFFLINE", "1")
TOL = 1e-5
P = 6  # positions of the test prompts


@pytest.fixture(scope="module")
def hf(tmp_path_factory):
    """name -> the tiny random GPT-2 / Llama bridge, biases and norm weights jittered."""
    root = tmp_path_factory.mktemp("circuit_models")
    out = {}
    for name in ("gpt2", "llama"):
        model = mechwork.load(fourmodels.build(name, root), device="cpu")
        fourmodels.jitter_biases_and_norms(model.original_model)
        out[name] = model.eval()
    return out


def _tokens(model: Any, shape: tuple[int, int], seed: int) -> torch.Tensor:
    return torch.randint(0, int(model.cfg.d_vocab), shape, generator=torch.Generator().manual_seed(seed))


def _pair(model: Any, batch: int = 1, seed: int = 0) -> tuple[torch.Tensor, torch.Tensor, Any]:
    """Clean and corrupted prompts and a logit difference with a wide gap (a scalar, as TransformerLens wants)."""
    clean, corrupted = _tokens(model, (batch, P), seed), _tokens(model, (batch, P), seed + 1)
    with torch.no_grad():
        gap = (model(clean)[:, -1] - model(corrupted)[:, -1]).mean(0)
    a, b = int(gap.argmax()), int(gap.argmin())
    return clean, corrupted, lambda logits: (logits[:, -1, a] - logits[:, -1, b]).mean()


def _subset(edges: tuple[Edge, ...], frac: float, seed: int) -> list[Edge]:
    pick = torch.rand(len(edges), generator=torch.Generator().manual_seed(seed)) < frac
    return [e for e, k in zip(edges, pick.tolist(), strict=True) if k]


# -- faithfulness = TransformerLens's faithfulness --------------------------------------------------------------
@pytest.mark.parametrize("name", ["gpt2", "llama"])
@pytest.mark.parametrize("ablation", ["corrupt", "mean"])
@pytest.mark.parametrize("per_position", [True, False])
def test_faithfulness_is_transformer_lens(hf, name, ablation, per_position):
    from transformer_lens.tools.analysis.attribution_patching import FaithfulnessConfig
    from transformer_lens.tools.analysis.attribution_patching import faithfulness as tl_faithfulness

    model = hf[name]
    clean, corrupted, metric = _pair(model)
    graph = Graph.of_model(model, n_pos=P if per_position else None)
    circuit = _subset(graph.edges, 0.6, seed=3)
    tl_circuit = [pair for e in circuit for pair in to_tl(e, int(model.cfg.n_layers), P)]
    kw: dict[str, Any] = {"mean_tokens": _tokens(model, (4, P), 9)} if ablation == "mean" else {}
    ref = tl_faithfulness(model, clean, corrupted, metric, tl_circuit, FaithfulnessConfig(ablation), **kw)
    ours = faithfulness(model, clean, corrupted, metric, circuit,
                        ablation="corrupted" if ablation == "corrupt" else "mean", **kw)
    print(f"{name} {ablation} per_position={per_position}: ours {ours.recovered:.6f}, TL {ref.recovered:.6f}")
    assert abs(ours.recovered - ref.recovered) <= TOL
    assert abs(ours.clean_value - ref.full_metric) <= TOL and abs(ours.corrupted_value - ref.corrupt_metric) <= TOL
    assert min(abs(ours.recovered), abs(ours.recovered - 1)) > 0.005  # neither the clean nor the corrupted run
    assert ours.kept == len(circuit) and ours.total == graph.n_edges
    if per_position:
        assert ours.total == ref.total_edges and ours.kept == ref.circuit_size


def test_faithfulness_takes_a_circuit_and_mean_ablation_without_corrupted_prompts(hf):
    model = hf["gpt2"]
    clean, corrupted, metric = _pair(model, batch=3)
    graph = Graph.of_model(model)
    edges = _subset(graph.edges, 0.5, seed=1)
    direct = faithfulness(model, clean, corrupted, metric, [str(e) for e in edges])
    circuit = Circuit(graph, frozenset(edges), direct, "by hand")
    assert faithfulness(model, clean, corrupted, metric, circuit).recovered == pytest.approx(direct.recovered,
                                                                                              abs=TOL)
    for how in ("mean", "zero"):  # no corrupted prompts: the bottom is the run with every edge ablated
        empty = faithfulness(model, clean, None, metric, [], ablation=how)
        full = faithfulness(model, clean, None, metric, graph.edges, ablation=how)
        assert abs(empty.recovered) <= TOL and abs(full.recovered - 1) <= TOL
        assert empty.metric == pytest.approx(empty.corrupted_value, abs=TOL)


@pytest.mark.parametrize("name", ["gpt2", "llama", "induction-2l", "modadd-113"])
def test_the_full_circuit_recovers_one_and_the_empty_circuit_zero(hf, name):
    if name in hf:
        model = hf[name]
        clean, corrupted, metric = _pair(model, batch=2)
    else:
        model = mechwork.load(name, device="cpu")
        probe = standard_probe(mechwork.preset(name).task, n=4)
        clean, corrupted, metric = probe.clean, probe.corrupted, probe.metric
    graph = Graph.of_model(model)
    full = faithfulness(model, clean, corrupted, metric, graph.edges)
    empty = faithfulness(model, clean, corrupted, metric, [])
    assert abs(full.recovered - 1) <= TOL and abs(empty.recovered) <= TOL
    assert (full.kept, full.total, empty.kept) == (graph.n_edges, graph.n_edges, 0)
    assert "0 of" in empty.summary() and empty.to_frame().shape[0] == 1


# -- the curve and top-n ------------------------------------------------------------------------------------------
@pytest.mark.parametrize("per_position", [False, True])
def test_curve_points_are_faithfulness_one_size_at_a_time(hf, per_position):
    model = hf["gpt2"]
    clean, corrupted, metric = _pair(model, batch=2)
    graph = Graph.of_model(model, n_pos=P if per_position else None)
    values = torch.randn(graph.n_edges, generator=torch.Generator().manual_seed(0))
    values[::7] = float("nan")  # not computed: never ranked
    scores = SimpleNamespace(graph=graph, values=values, method="random")
    curve = faithfulness_curve(model, clean, corrupted, metric, scores, memory_mb=1.0)  # small chunks
    n = int((~values.isnan()).sum())
    assert curve.sizes[0] == 1 and curve.sizes[-1] == n and 12 <= len(curve.sizes) <= 21
    assert list(curve.sizes) == sorted(set(curve.sizes)) and curve.total == graph.n_edges
    order = sorted((i for i in range(graph.n_edges) if not values[i].isnan()), key=lambda i: -abs(float(values[i])))
    for k, got in zip(curve.sizes, curve.recovered, strict=True):
        one = faithfulness(model, clean, corrupted, metric, [graph.edges[i] for i in order[:k]])
        assert abs(got - one.recovered) <= TOL, k
    assert curve.smallest(-1e9) == 1 and curve.smallest(1e9) is None
    assert curve.figure().data and len(curve.to_frame()) == len(curve.sizes)
    circuit = top_n(model, clean, corrupted, metric, scores, 0.25)
    assert circuit.edges == {graph.edges[i] for i in order[:round(0.25 * graph.n_edges)]}
    assert circuit.method == "top-n random" and len(circuit.scores) == n
    k = curve.sizes[len(curve.sizes) // 2]
    assert top_n(model, clean, corrupted, metric, scores, k).faithfulness.recovered == \
        pytest.approx(curve.recovered[len(curve.sizes) // 2], abs=TOL)


# -- ACDC = the sequential pass over TransformerLens's edge ablation ---------------------------------------------
def _tl_acdc(model: Any, clean: torch.Tensor, corrupted: torch.Tensor, metric: Any, threshold: float,
             per_position: bool, mean_tokens: torch.Tensor | None = None) -> tuple[set[Edge], dict[Edge, float]]:
    """ACDC written out: one TransformerLens ``_ablate_edges`` forward pass per trial, no batching."""
    from transformer_lens.tools.analysis import attribution_patching as ap

    n_layers = int(model.cfg.n_layers)
    graph = Graph.of_model(model, n_pos=P if per_position else None)
    with torch.no_grad(), ap._edge_hook_flags(model):
        tl_edges = [pair for e in Graph.of_model(model, n_pos=P).edges for pair in to_tl(e, n_layers)]
        replacements = ap.capture_writer_outputs(model, corrupted) if mean_tokens is None else \
            ap._mean_writer_contributions(model, mean_tokens)
        m_corr = float(metric(model(corrupted)))

        def value(kept: set[Edge]) -> float:
            circuit = {pair for e in kept for pair in to_tl(e, n_layers, P)}
            return float(metric(ap._ablate_edges(model, clean, tl_edges, circuit, replacements)))

        kept, tried = set(graph.edges), {}
        cur = value(kept)
        gap = cur - m_corr
        for receiver in reversed(graph.receivers):
            owner = receiver.split(".")[0]
            into = [e for e in graph.edges if e.receiver == receiver]
            into.sort(key=lambda e: (e.pos or 0, -graph.senders.index(e.sender)))  # node by node
            for e in into:
                out = [k for k in kept if k.sender == owner and (e.pos is None or k.pos == e.pos or (
                    receiver[-2:] in (".k", ".v") and (k.pos or 0) >= (e.pos or 0)))]
                if receiver != "logits" and not out:
                    kept.discard(e)
                    continue
                new = value(kept - {e})
                tried[e] = cur - new
                if (cur - new) / gap < threshold:
                    kept.discard(e)
                    cur = new
    return kept, tried


@pytest.mark.parametrize(("name", "per_position", "ablation", "threshold"), [
    ("gpt2", False, "corrupted", 0.005), ("gpt2", True, "corrupted", 0.005), ("llama", False, "corrupted", 0.02),
    ("llama", True, "corrupted", 0.02), ("llama", False, "mean", 0.02)])
def test_acdc_is_the_sequential_pass(hf, name, per_position, ablation, threshold):
    model = hf[name]  # gpt2 runs on the fast engine, llama on the hook runner
    clean, corrupted, metric = _pair(model, seed=4)
    mean_tokens = _tokens(model, (4, P), 11) if ablation == "mean" else None
    kept, tried = _tl_acdc(model, clean, corrupted, metric, threshold, per_position, mean_tokens)
    ours = acdc(model, clean, corrupted, metric, threshold=threshold, per_position=per_position, ablation=ablation,
                mean_tokens=mean_tokens)
    print(ours.summary())
    assert ours.edges == kept and 1 < len(kept) < ours.graph.n_edges and len(tried) > 10
    scores = dict(ours.scores)
    assert set(scores) == set(tried)
    assert max(abs(scores[e] - tried[e]) for e in tried) <= TOL
    assert ours.method == "acdc" and ours.threshold == threshold
    again = faithfulness(model, clean, corrupted, metric, ours, ablation=ablation, mean_tokens=mean_tokens)
    assert again.recovered == pytest.approx(ours.faithfulness.recovered, abs=TOL)
    assert ours.faithfulness.kept == len(kept) and ours.faithfulness.total == ours.graph.n_edges


def test_acdc_thresholds_keep_everything_or_nothing(hf):
    model = hf["llama"]
    clean, corrupted, metric = _pair(model, batch=2)
    graph = Graph.of_model(model)
    none = acdc(model, clean, corrupted, metric, threshold=1e6)  # every removal costs less than this
    assert none.edges == frozenset() and abs(none.faithfulness.recovered) <= TOL
    strict = acdc(model, clean, corrupted, metric, threshold=0.0)
    assert strict.faithfulness.recovered >= 1 - TOL  # only edges whose removal does not lower the metric go
    assert all(s < 0 or e in strict for e, s in strict.scores) and len(strict.edges) <= graph.n_edges


def test_circuit_membership_and_frame(hf):
    model = hf["gpt2"]
    clean, corrupted, metric = _pair(model)
    circuit = acdc(model, clean, corrupted, metric, threshold=0.05, per_position=True)
    some = next(iter(circuit.edges))
    assert some in circuit and str(some) in circuit
    assert Edge(some.sender, some.receiver) in circuit  # a position-free question: at any position
    frame = circuit.to_frame()
    assert int(frame["kept"].sum()) == len(circuit.edges) and set(frame.columns) >= {"edge", "score", "kept"}
    assert "acdc circuit (threshold 0.05" in circuit.summary()
    assert circuit.figure().data  # the layered graph (mechwork.analysis.circuitfig)


# -- bad input: one line each -------------------------------------------------------------------------------------
def _one_line(excinfo: Any, *words: str) -> None:
    msg = str(excinfo.value)
    assert "\n" not in msg and all(w in msg for w in words), msg


def test_an_edge_not_in_the_graph_is_one_line(hf):
    model = hf["gpt2"]
    clean, corrupted, metric = _pair(model)
    for bad in ("L5H0->logits", "L1H0->L0H1.q", "MLP1->MLP0"):
        with pytest.raises(ConfigError) as e:
            faithfulness(model, clean, corrupted, metric, ["input->logits", bad])
        _one_line(e, bad)
    with pytest.raises(ConfigError) as e:
        faithfulness(model, clean, corrupted, metric, ["input->logits@9"])  # past the 6 positions
    _one_line(e, "input->logits@9")


def test_an_empty_circuit_is_defined_and_recovers_nothing(hf):
    model = hf["llama"]
    clean, corrupted, metric = _pair(model, batch=2)
    res = faithfulness(model, clean, corrupted, metric, [])
    assert res.kept == 0 and abs(res.recovered) <= TOL and res.metric == pytest.approx(res.corrupted_value, abs=TOL)


def test_bad_arguments_are_one_line(hf):
    model = hf["gpt2"]
    clean, corrupted, metric = _pair(model)
    cases = [
        (lambda: faithfulness(model, clean, corrupted[:, :4], metric, []), ("clean", "corrupted", "(1, 4)")),
        (lambda: faithfulness(model, clean, clean, metric, []), ("same metric",)),
        (lambda: faithfulness(model, clean, corrupted, metric, [], ablation="resample"), ("ablation", "resample")),
        (lambda: faithfulness(model, clean, None, metric, []), ("corrupted",)),
        (lambda: faithfulness(model, clean, corrupted, metric, [], mean_tokens=clean), ("mean_tokens",)),
        (lambda: faithfulness(model, clean, corrupted, metric, [], ablation="mean", mean_tokens=clean[:, :3]),
         ("mean_tokens", "6 positions")),
        (lambda: acdc(model, clean, corrupted, metric, threshold=-0.1), ("threshold", "-0.1")),
        (lambda: acdc(model, clean, corrupted, metric, threshold=float("nan")), ("threshold", "nan")),
        (lambda: acdc(model, clean, corrupted[:, :5], metric), ("clean", "corrupted")),
    ]
    graph = Graph.of_model(model)
    scores = SimpleNamespace(graph=graph, values=torch.ones(graph.n_edges), method="ones")
    cases += [
        (lambda: top_n(model, clean, corrupted, metric, scores, graph.n_edges + 1), ("'n'", "111")),
        (lambda: top_n(model, clean, corrupted, metric, scores, 1.5), ("'n'", "1.5")),
        (lambda: faithfulness_curve(model, clean, corrupted, metric, scores, sizes=[0, 500]), ("sizes", "500")),
        (lambda: faithfulness_curve(model, clean, corrupted, metric,
                                    SimpleNamespace(graph=Graph(3, 4, True), values=torch.ones(5), method="x")),
         ("another model",)),
        (lambda: faithfulness_curve(model, clean, corrupted, metric,
                                    SimpleNamespace(graph=Graph.of_model(model, n_pos=4), values=torch.ones(5),
                                                    method="x")), ("4 positions",)),
    ]
    for call, words in cases:
        with pytest.raises(ConfigError) as e:
            call()
        _one_line(e, *words)
