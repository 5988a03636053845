"""The fast edge runner (mechwork.edgeforward) against TransformerLens's own forward, cache and autograd.

Every check but the first runs the models in float64, so a 1e-5 tolerance separates a wrong edge (errors of
order 0.01-1) from rounding (1e-12). Biases and norm weights are jittered first, so a runner that dropped one
(b_O, q/k/v biases, a LayerNorm scale) would show. The brute-force references go through plain TL hooks and
the bridge's own weights (``W_O``, ``W_K``, ``b_K``, its ``ln1`` module), one edge per forward pass.
"""

from __future__ import annotations

import os
import sys
from typing import Any

import pytest
import torch

import mechwork
from mechwork.edgeforward import EngineRunner
from mechwork.errors import ConfigError
from mechwork.models import weights

sys.path.insert(0, os.path.dirname(__file__))
from fourmodels import sender_writes

os.environ.setdefault("HF_HUB_OFFLINE", "1")
TOL = 1e-5
NAMES = ("induction-2l", "custom3l", "gpt2")
_MODELS: dict[tuple[str, bool], Any] = {}


def _model(four_models: dict[str, str], name: str, double: bool = True) -> Any:
    """``name`` loaded once (per dtype), its biases drawn from N(0, 0.3^2) and norm weights from N(1, 0.3^2)."""
    if (name, double) not in _MODELS:
        model = mechwork.load(four_models[name]).eval()
        g = torch.Generator().manual_seed(7)
        with torch.no_grad():
            for key, p in sorted(weights(model).items()):
                if key.endswith("bias"):
                    p.copy_(0.3 * torch.randn(p.shape, generator=g))
                elif "ln" in key and key.endswith("weight"):
                    p.copy_(1 + 0.3 * torch.randn(p.shape, generator=g))
                elif name == "gpt2" and p.ndim == 2:  # from N(0, 0.02^2) to N(0, 0.2^2): edges that matter
                    p.mul_(10.0)
        _MODELS[(name, double)] = model.to(torch.float64) if double else model
    return _MODELS[(name, double)]


def _tokens(model: Any, shape: tuple[int, int], seed: int) -> torch.Tensor:
    return torch.randint(0, int(model.cfg.d_vocab), shape, generator=torch.Generator().manual_seed(seed))


def _err(a: torch.Tensor, b: torch.Tensor | None) -> float:
    assert b is not None
    return float((a - b).detach().abs().max())


def _one_edge(runner: EngineRunner, edge: str, n_pos: int, pos: int | None = None) -> torch.Tensor:
    keep = torch.ones(1, len(runner.graph.pairs), n_pos, dtype=torch.float64)
    keep[0, runner.graph.pair_index(edge), slice(None) if pos is None else pos] = 0.0
    return keep


# -- (1) the plain run is the model's run ------------------------------------------------------------------
@pytest.mark.parametrize("name", NAMES)
def test_plain_run_is_the_model(four_models, name):
    model = _model(four_models, name, double=False)
    runner = EngineRunner(model)
    toks = _tokens(model, (3, 11), 0)
    with torch.no_grad():
        ref = model(toks)
        out = runner.run(toks)
        many = runner.run(toks, keep=torch.ones(4, len(runner.graph.pairs), 11))  # kept edges change nothing
    assert runner.engine == "fast" and out.shape == (1, 3, 11, model.cfg.d_vocab)
    assert _err(out[0], ref) <= 1e-4 and many.shape[0] == 4 and _err(many, out) <= 1e-4
    assert runner.copy_bytes(3, 11) > 0


# -- (2) the senders are the model's writes ----------------------------------------------------------------
@pytest.mark.parametrize("name", NAMES)
def test_senders_are_the_writes_and_add_up_to_the_residual_stream(four_models, name):
    model = _model(four_models, name)
    runner = EngineRunner(model)
    toks = _tokens(model, (2, 9), 1)
    senders = runner.senders(toks)
    ref = sender_writes(model, toks)
    assert senders.shape == (len(runner.graph.senders), 2, 9, model.cfg.d_model)
    for i, s in enumerate(runner.graph.senders):
        assert _err(senders[i], ref[s]) <= TOL, s
    _, cache = model.run_with_cache(toks)
    final = cache[f"blocks.{model.cfg.n_layers - 1}.hook_resid_post"]
    assert _err(senders.sum(0) + model.b_O.sum(0), final) <= TOL


# -- (3) one ablated edge, against one brute-force hooked forward ------------------------------------------
def _replacement(runner: EngineRunner, sender: str, write: torch.Tensor) -> torch.Tensor:
    """Random rows for every sender but ``sender`` (a kept edge must never read them), ``write`` for it."""
    n_s = len(runner.graph.senders)
    rep = torch.randn(n_s, *write.shape, generator=torch.Generator().manual_seed(3), dtype=write.dtype)
    rep[runner.graph.senders.index(sender)] = write
    return rep


@pytest.mark.parametrize("name", NAMES)
@pytest.mark.parametrize("sender", ["input", "L0H1", "L1H3"])
@pytest.mark.parametrize("pos", [None, 4])
def test_edge_into_logits_is_the_patched_final_residual(four_models, name, sender, pos):
    model = _model(four_models, name)
    runner = EngineRunner(model)
    clean, corrupted = _tokens(model, (2, 8), 2), _tokens(model, (2, 8), 3)
    w_clean, w_corr = sender_writes(model, clean)[sender], sender_writes(model, corrupted)[sender]
    at = slice(None) if pos is None else pos

    def patch(act, hook):
        act = act.clone()
        act[:, at] = act[:, at] - w_clean[:, at] + w_corr[:, at]
        return act

    with torch.no_grad():
        ref = model.run_with_hooks(clean, fwd_hooks=[(f"blocks.{model.cfg.n_layers - 1}.hook_resid_post", patch)])
        out = runner.run(clean, keep=_one_edge(runner, f"{sender}->logits", 8, pos),
                         replacement=_replacement(runner, sender, w_corr))
    assert _err(out[0], ref) <= TOL
    assert _err(out[0], model(clean)) > 1e-3  # the edge does matter


@pytest.mark.parametrize("name", NAMES)
@pytest.mark.parametrize(("sender", "receiver"), [("L0H0", "L1H2.k"), ("input", "L1H0.q"), ("L0H3", "L1H1.v"),
                                                  ("input", "L0H2.k")])
def test_edge_into_a_head_input_is_the_patched_projection(four_models, name, sender, receiver):
    """The receiver's q/k/v recomputed by hand from the cached resid_pre, minus the clean write plus the
    corrupted one, through the bridge's ln1 and W/b; patched into that head's hook_q/k/v slot only."""
    model = _model(four_models, name)
    runner = EngineRunner(model)
    clean, corrupted = _tokens(model, (2, 8), 4), _tokens(model, (2, 8), 5)
    w_clean, w_corr = sender_writes(model, clean)[sender], sender_writes(model, corrupted)[sender]
    layer, head, which = int(receiver[1]), int(receiver[3]), receiver[-1]
    _, cache = model.run_with_cache(clean)
    with torch.no_grad():
        x = model.blocks[layer].ln1(cache[f"blocks.{layer}.hook_resid_pre"] - w_clean + w_corr)
        w, b = getattr(model, f"W_{which.upper()}")[layer, head], getattr(model, f"b_{which.upper()}")[layer, head]
        new = x @ w + b

        def patch(act, hook):
            act = act.clone()
            act[:, :, head] = new
            return act

        ref = model.run_with_hooks(clean, fwd_hooks=[(f"blocks.{layer}.attn.hook_{which}", patch)])
        out = runner.run(clean, keep=_one_edge(runner, f"{sender}->{receiver}", 8),
                         replacement=_replacement(runner, sender, w_corr))
    assert _err(out[0], ref) <= TOL
    assert _err(out[0], model(clean)) > 1e-3


@pytest.mark.parametrize("name", ["custom3l", "gpt2"])
@pytest.mark.parametrize(("sender", "receiver"), [("L0H2", "MLP0"), ("MLP0", "MLP1"), ("input", "MLP1")])
def test_edge_into_an_mlp_is_the_patched_mlp_input(four_models, name, sender, receiver):
    model = _model(four_models, name)
    runner = EngineRunner(model)
    clean, corrupted = _tokens(model, (2, 8), 6), _tokens(model, (2, 8), 7)
    w_clean, w_corr = sender_writes(model, clean)[sender], sender_writes(model, corrupted)[sender]
    layer = int(receiver[3])

    def patch(act, hook):  # the bridge's ln2 input is the MLP's input only; the residual sum keeps its own
        return act - w_clean + w_corr

    with torch.no_grad():
        ref = model.run_with_hooks(clean, fwd_hooks=[(f"blocks.{layer}.ln2.hook_in", patch)])
        out = runner.run(clean, keep=_one_edge(runner, f"{sender}->{receiver}", 8),
                         replacement=_replacement(runner, sender, w_corr))
    assert _err(out[0], ref) <= TOL
    assert _err(out[0], model(clean)) > 1e-3


# -- (4) every edge ablated: the corrupted run; copies run independently -----------------------------------
@pytest.mark.parametrize("name", NAMES)
def test_every_edge_ablated_is_the_corrupted_run_and_copies_are_independent(four_models, name):
    model = _model(four_models, name)
    runner = EngineRunner(model)
    clean, corrupted = _tokens(model, (2, 7), 8), _tokens(model, (2, 7), 9)
    rep = runner.senders(corrupted)
    n_pairs = len(runner.graph.pairs)
    keep = (torch.rand(5, n_pairs, 7, generator=torch.Generator().manual_seed(0)) < 0.7).double()
    keep[0], keep[1] = 0.0, 1.0
    with torch.no_grad():
        out = runner.run(clean, keep=keep, replacement=rep)
        assert _err(out[0], model(corrupted)) <= TOL and _err(out[1], model(clean)) <= TOL
        for c in range(2, 5):  # a copy in a batch of copies is that copy run alone
            assert _err(out[c], runner.run(clean, keep=keep[c:c + 1], replacement=rep)[0]) <= 1e-9
        zero = runner.run(clean, keep=torch.zeros(1, n_pairs, 7))  # no replacement: zero ablation
        # every edge zero-ablated: every receiver reads the constants (the b_O terms) alone
        final = f"blocks.{model.cfg.n_layers - 1}.hook_resid_post"
        ref = model.run_with_hooks(clean, fwd_hooks=[(final, lambda act, hook: 0 * act + model.b_O.sum(0))])
    assert _err(zero[0], ref) <= TOL


@pytest.mark.parametrize("name", ["induction-2l", "custom3l"])
@pytest.mark.parametrize("pinned", [(), (0,)])
def test_one_edge_per_copy_batched_is_each_copy_alone(four_models, name, pinned):
    """Every pair ablated in its own copy (one position of it in some), and (pinned) the input pinned to another
    input in the odd copies: the batch equals each copy run alone. Unpinned, the batch starts each copy at the
    layer of its edge's receiver (from the plain run's residual stream there); pinned, every copy starts at 0 and
    copies differ from the input on."""
    model = _model(four_models, name)
    runner = EngineRunner(model)
    clean, corrupted, other = (_tokens(model, (2, 6), s) for s in (13, 14, 15))
    rep, n_pairs = runner.senders(corrupted), len(runner.graph.pairs)
    keep = torch.ones(n_pairs, n_pairs, 6, dtype=torch.float64)
    for i in range(n_pairs):
        keep[i, i, slice(None) if i % 3 else i % 6] = 0.0
    pin = torch.zeros(n_pairs, len(runner.graph.senders), 2, 6, model.cfg.d_model, dtype=torch.float64)
    pin[:, 0] = runner.senders(clean)[0]
    pin[1::2, 0] = runner.senders(other)[0]
    with torch.no_grad():
        out = runner.run(clean, keep=keep, replacement=rep, pin=pin, pinned=pinned)
        for i in range(n_pairs):
            alone = runner.run(clean, keep=keep[i:i + 1], replacement=rep, pin=pin[i:i + 1], pinned=pinned)
            assert _err(out[i], alone[0]) <= 1e-9, runner.graph.edges[i]


# -- (5) probe gradients are TransformerLens's residual-stream gradients ---------------------------------
@pytest.mark.parametrize("name", NAMES)
def test_probe_gradients_are_the_residual_stream_gradients(four_models, name):
    model = _model(four_models, name)
    runner = EngineRunner(model)
    toks = _tokens(model, (2, 8), 10)
    target = toks[:, -1]

    def metric(logits: torch.Tensor) -> torch.Tensor:
        return logits[torch.arange(2), -3, target].sum() - logits[:, -1].logsumexp(-1).sum()

    g = runner.graph
    probe = torch.zeros(1, len(g.receivers), 2, 8, model.cfg.d_model, dtype=torch.float64, requires_grad=True)
    metric(runner.run(toks, probe=probe)[0]).backward()
    assert probe.grad is not None
    n_layers = int(model.cfg.n_layers)
    leaves = {f"blocks.{la}.hook_resid_pre": torch.zeros(2, 8, model.cfg.d_model, dtype=torch.float64,
                                                          requires_grad=True) for la in range(n_layers)}
    leaves["final"] = torch.zeros_like(leaves["blocks.0.hook_resid_pre"], requires_grad=True)
    names = {f"blocks.{n_layers - 1}.hook_resid_post": "final"} | {k: k for k in leaves if k != "final"}
    hooks = [(hook, lambda act, hook, k=k: act + leaves[k]) for hook, k in names.items()]
    metric(model.run_with_hooks(toks, fwd_hooks=hooks)).backward()
    assert _err(probe.grad[0, -1], leaves["final"].grad) <= TOL
    for layer in range(n_layers):  # resid_pre of a layer reaches every receiver from that layer on, unchanged
        first = g.receivers.index(f"L{layer}H0.q")
        assert _err(probe.grad[0, first:].sum(0), leaves[f"blocks.{layer}.hook_resid_pre"].grad) <= TOL
    heads = [i for i, r in enumerate(g.receivers) if r.startswith("L0H")]  # the heads' receivers do get gradients
    assert float(probe.grad[0, heads].abs().max()) > 1e-3


@pytest.mark.parametrize("name", ["induction-2l", "gpt2"])
def test_keep_gradients_are_the_edge_attribution(four_models, name):
    """d metric / d keep[u->v, p] = (clean_u - replacement_u) . d metric / d input_v at p: a gradient through
    keep (every receiver reads its own input) against one through the probes (the EAP formula)."""
    model = _model(four_models, name)
    runner = EngineRunner(model)
    clean, corrupted = _tokens(model, (2, 7), 16), _tokens(model, (2, 7), 17)
    rep, live, g = runner.senders(corrupted), runner.senders(clean), runner.graph
    keep = torch.ones(1, len(g.pairs), 7, dtype=torch.float64, requires_grad=True)
    runner.run(clean, keep=keep, replacement=rep)[0, :, -1, 3].sum().backward()
    probe = torch.zeros(1, len(g.receivers), 2, 7, model.cfg.d_model, dtype=torch.float64, requires_grad=True)
    runner.run(clean, probe=probe)[0, :, -1, 3].sum().backward()
    assert keep.grad is not None and probe.grad is not None
    s, r = (torch.tensor(x) for x in zip(*g.pairs, strict=True))
    expected = torch.einsum("ebpd,ebpd->ep", live[s] - rep[s], probe.grad[0, r])
    assert _err(keep.grad[0], expected) <= TOL and float(expected.abs().max()) > 1e-2


# -- (6) a pinned input sender is that input ---------------------------------------------------------------
@pytest.mark.parametrize("name", NAMES)
def test_pinned_input_is_the_other_input(four_models, name):
    model = _model(four_models, name)
    runner = EngineRunner(model)
    toks, other = _tokens(model, (2, 8), 11), _tokens(model, (2, 8), 12)
    pin = torch.zeros(2, len(runner.graph.senders), 2, 8, model.cfg.d_model, dtype=torch.float64)
    pin[1, 0] = runner.senders(other)[0]
    pin[0, 0] = runner.senders(toks)[0]
    with torch.no_grad():
        out = runner.run(toks, pin=pin, pinned=[0])
        assert _err(out[1], model(other)) <= TOL and _err(out[0], model(toks)) <= TOL


# -- bad input ---------------------------------------------------------------------------------------------
def test_bad_arguments_are_one_line_config_errors(four_models):
    model = _model(four_models, "induction-2l")
    runner = EngineRunner(model)
    toks = _tokens(model, (2, 5), 0)
    n = len(runner.graph.pairs)
    check = runner._check  # the checks run() makes (under pytest, jaxtyping rejects a bad shape before them)
    with pytest.raises(ConfigError, match=r"'keep' must be \[copy, 81, 5\]"):
        check(toks, torch.ones(1, n, 4), None, None, (), None)
    with pytest.raises(ConfigError, match="same number of copies"):
        check(toks, torch.ones(2, n, 5), None, None, (), torch.zeros(3, len(runner.graph.receivers), 2, 5, 64))
    with pytest.raises(ConfigError, match="'replacement'"):
        check(toks, None, torch.zeros(9, 3, 5, 64), None, (), None)
    with pytest.raises(ConfigError, match="'pinned'"):
        runner.run(toks, pinned=[0])
    with pytest.raises(ConfigError, match="supports"):
        EngineRunner(mechwork.load(four_models["llama"]))
