"""The residual-stream graph: its edges are TransformerLens's ``enumerate_edges`` edges, one to one.

TransformerLens builds its edge list from a cache's hook names and shapes; the tests hand it a cache of
empty tensors of the right shapes, so the comparison needs no forward pass and covers shapes no model here has
(parallel attention and MLP, attention-only, several positions).
"""

from __future__ import annotations

from types import SimpleNamespace

import pytest
import torch
from transformer_lens.tools.analysis import attribution_patching as ap

from mechwork.errors import ConfigError
from mechwork.graph import Edge, Graph


def _tl_edges(n_layers: int, n_heads: int, n_pos: int, parallel: bool) -> set[str]:
    names = ap._edge_hook_names(n_layers)
    acts = {n: torch.zeros(1, n_pos, n_heads, 1) if "attn" in n else torch.zeros(1, n_pos, 1) for n in names}
    model = SimpleNamespace(cfg=SimpleNamespace(n_layers=n_layers, parallel_attn_mlp=parallel))
    cache = ap.GradientCache(activations=acts, gradients={}, metric=torch.tensor(0.0))
    return {_name(w, r) for w, r in ap.enumerate_edges(model, cache)}


def _node(n: ap.Node) -> str:
    return {"embed": "input", "attn_head_out": f"L{n.layer}H{n.head}", "mlp_out": f"MLP{n.layer}",
            "mlp_in": f"MLP{n.layer}", "logits": "logits"}.get(n.kind) or f"L{n.layer}H{n.head}.{n.kind[0]}"


def _name(w: ap.Node, r: ap.Node) -> str:
    return f"{_node(w)}->{_node(r)}@{w.position}"


@pytest.mark.parametrize(("n_layers", "n_heads", "parallel"), [(2, 4, False), (3, 2, True), (1, 3, False)])
def test_edges_match_transformer_lens(n_layers: int, n_heads: int, parallel: bool) -> None:
    g = Graph(n_layers, n_heads, mlp=True, parallel=parallel, n_pos=3)
    ours = [str(e) for e in g.edges]
    assert len(ours) == len(set(ours)) == g.n_edges
    assert set(ours) == _tl_edges(n_layers, n_heads, 3, parallel)


def test_attention_only_graph_drops_the_mlps() -> None:
    g = Graph(2, 4, mlp=False)
    assert not any("MLP" in str(e) for e in g.edges)
    # TransformerLens always has MLP nodes; without them its graph is ours
    tl = {e.rsplit("@", 1)[0] for e in _tl_edges(2, 4, 1, False) if "MLP" not in e}
    assert {str(e) for e in g.edges} == tl
    assert g.n_edges == 4 * 3 + 4 * 3 * 5 + 9


def test_index_keep_and_parse_round_trip() -> None:
    g = Graph(2, 2, mlp=True, n_pos=4)
    for i, e in enumerate(g.edges):
        assert g.index(str(e)) == i and Edge.parse(str(e)) == e
    keep = g.keep(["L0H1->MLP0", "input->logits@2"], 4)
    assert keep.shape == (len(g.pairs), 4) and keep.sum() == 5
    assert keep[g.pair_index("L0H1->MLP0")].tolist() == [1.0] * 4
    assert keep[g.pair_index("input->logits")].tolist() == [0.0, 0.0, 1.0, 0.0]
    assert g.layer_of("input") == -1 and g.layer_of("L1H0.k") == 1 and g.layer_of("logits") == 2


@pytest.mark.parametrize("bad", ["L1H0->L0H0.k", "L0H9->logits", "MLP1->MLP1", "L0H0->L0H1.q"])
def test_an_edge_not_in_the_graph_is_one_line(bad: str) -> None:
    with pytest.raises(ConfigError, match="is not in this graph") as err:
        Graph(2, 2, mlp=True).index(bad)
    assert "\n" not in str(err.value) and bad in str(err.value)


@pytest.mark.parametrize("bad", ["L0H0", "L0H0->L1H2.x", "foo->logits", 3, "L0H0->logits@x"])
def test_malformed_edges_are_one_line(bad: object) -> None:
    with pytest.raises(ConfigError, match="SENDER->RECEIVER"):
        Edge.parse(bad)


def test_positions_are_required_exactly_when_the_graph_has_them() -> None:
    with pytest.raises(ConfigError, match="names a position"):
        Graph(1, 1, mlp=False).index("input->logits@0")
    with pytest.raises(ConfigError, match=r"needs a position in \[0, 2\)"):
        Graph(1, 1, mlp=False, n_pos=2).index("input->logits")
    with pytest.raises(ConfigError, match="outside the 2 positions"):
        Graph(1, 1, mlp=False).keep(["input->logits@5"], 2)


def test_grouped_query_attention_is_refused() -> None:
    model = SimpleNamespace(cfg=SimpleNamespace(n_layers=1, n_heads=4, n_key_value_heads=2))
    with pytest.raises(ConfigError, match="n_key_value_heads=2 for 4 heads"):
        Graph.of_model(model)
