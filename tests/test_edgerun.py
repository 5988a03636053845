"""The edge runners (mechwork.analysis.edgerun): the hook runner against the model itself, against the fast engine
runner (two independent implementations), and against TransformerLens's own edge ablation (``_ablate_edges``) and
``faithfulness`` on the Hugging Face GPT-2 and Llama bridges, to 1e-5. Biases and norm weights are jittered
first, so a runner that dropped one would show.
"""

from __future__ import annotations

import os
import sys
from typing import Any

import pytest
import torch

import mechwork
from mechwork.analysis.edgerun import EdgeRunner, HookRunner, runner, to_tl
from mechwork.errors import ConfigError
from mechwork.graph import Edge

sys.path.insert(0, os.path.dirname(__file__))
from fourmodels import jitter_biases_and_norms

os.environ.setdefault("HF_HUB_OFFLINE", "1")
TOL = 1e-5
_MODELS: dict[str, Any] = {}
FLAGS = ("use_attn_result", "use_split_qkv_input", "use_hook_mlp_in", "use_attn_in")


def _model(four_models: dict[str, str], name: str) -> Any:
    """The model ``name``, loaded once, with random biases and norm weights (in place, on the live weights)."""
    if name not in _MODELS:
        model = mechwork.load(four_models[name])
        jitter_biases_and_norms(model.original_model, norm_names=("ln", "norm"))
        _MODELS[name] = model.eval()
    return _MODELS[name]


def _flags(model: Any) -> dict[str, bool]:
    return {f: bool(getattr(model.cfg, f, False)) for f in FLAGS}


def _tokens(model: Any, shape: tuple[int, int], seed: int) -> torch.Tensor:
    return torch.randint(0, int(model.cfg.d_vocab), shape, generator=torch.Generator().manual_seed(seed))


def _err(a: torch.Tensor, b: torch.Tensor) -> float:
    return float((a - b).detach().abs().max())


# -- (a) the plain run is the model's run -----------------------------------------------------------------
@pytest.mark.parametrize("name", ["gpt2", "llama"])
def test_plain_run_is_the_model_and_leaves_the_flags_as_they_were(four_models, name):
    model = _model(four_models, name)
    r = HookRunner(model)
    toks = _tokens(model, (3, 9), 0)
    before = _flags(model)
    with torch.no_grad():
        out, ref = r.run(toks), model(toks)
    assert out.shape == (1, 3, 9, model.cfg.d_vocab)
    assert _err(out[0], ref) <= TOL
    assert _flags(model) == before and not any(before.values())
    senders = r.senders(toks)  # the writes add up to the final residual stream (minus the attention biases)
    assert senders.shape == (len(r.graph.senders), 3, 9, model.cfg.d_model)


@pytest.mark.parametrize("name", ["gpt2", "llama"])
def test_every_edge_ablated_is_the_corrupted_run(four_models, name):
    """keep = 0 everywhere with the corrupted senders as replacement: every receiver reads the corrupted run."""
    model = _model(four_models, name)
    r = HookRunner(model)
    clean, corrupted = _tokens(model, (2, 8), 1), _tokens(model, (2, 8), 2)
    with torch.no_grad():
        out = r.run(clean, keep=torch.zeros(1, len(r.graph.pairs), 8), replacement=r.senders(corrupted))
        assert _err(out[0], model(corrupted)) <= TOL
        assert _err(out[0], model(clean)) > 0.01  # the inputs do differ


# -- (c) the same edge ablation and faithfulness as TransformerLens ----------------------------------------
def _tl_edges(model: Any, tokens: torch.Tensor) -> list[Any]:
    from transformer_lens.tools.analysis import attribution_patching as ap

    n = int(model.cfg.n_layers)
    with torch.no_grad(), ap._edge_hook_flags(model):
        cache = ap.cache_activation_and_gradient(model, tokens, lambda x: x.sum(), names_filter=ap._edge_hook_names(n),
                                                 compute_gradient=False)
        return ap.enumerate_edges(model, cache)


def _circuit(graph: Any, n_pos: int, seed: int) -> list[Edge]:
    """A random circuit: a quarter of the edges over every position, and a few at one position."""
    g = torch.Generator().manual_seed(seed)
    free = [graph.edges[int(i)] for i in torch.randperm(graph.n_edges, generator=g)[: graph.n_edges // 4]]
    picked = torch.randperm(graph.n_edges, generator=g)[:12].tolist()
    pos = torch.randint(0, n_pos, (12,), generator=g).tolist()
    return free + [Edge(graph.edges[i].sender, graph.edges[i].receiver, p) for i, p in zip(picked, pos, strict=True)]


def _logit_diff(clean_logits: torch.Tensor, corrupted_logits: torch.Tensor) -> Any:
    """A metric with the widest clean-corrupted gap at the last position: logit a minus logit b."""
    gap = clean_logits[0, -1] - corrupted_logits[0, -1]
    a, b = int(gap.argmax()), int(gap.argmin())
    return lambda logits: logits[0, -1, a] - logits[0, -1, b]


@pytest.mark.parametrize("name", ["gpt2", "llama"])
def test_a_circuit_is_transformer_lens_ablate_edges_and_faithfulness(four_models, name):
    from transformer_lens.tools.analysis import attribution_patching as ap

    model = _model(four_models, name)
    r, n, p = HookRunner(model), int(model.cfg.n_layers), 8
    clean, corrupted = _tokens(model, (1, p), 3), _tokens(model, (1, p), 4)
    tl_edges = _tl_edges(model, corrupted)
    ours = [pair for e in r.graph.edges for pair in to_tl(e, n, p)]
    assert len(ours) == len(set(ours)) and set(ours) == set(tl_edges)  # the same graph, edge for edge
    circuit = _circuit(r.graph, p, 5)
    kept = list(dict.fromkeys(pair for e in circuit for pair in to_tl(e, n, p)))
    mean_tokens = _tokens(model, (5, p), 6)
    with torch.no_grad():
        with ap._edge_hook_flags(model):
            ref = ap._ablate_edges(model, clean, tl_edges, set(kept), ap.capture_writer_outputs(model, corrupted))
        keep = r.graph.keep(circuit, p)[None]
        out = r.run(clean, keep=keep, replacement=r.senders(corrupted))[0]
        mean_out = r.run(clean, keep=keep, replacement=r.senders(mean_tokens).mean(1, keepdim=True))[0]
        plain_clean, plain_corrupted = model(clean), model(corrupted)
    assert _err(out, ref) <= TOL
    assert min(_err(out, plain_clean), _err(out, plain_corrupted)) > 1e-3  # the circuit is neither run
    metric = _logit_diff(plain_clean, plain_corrupted)
    m_clean, m_corr = float(metric(plain_clean)), float(metric(plain_corrupted))
    for got, config, kw in [(out, ap.FaithfulnessConfig(), {}),
                            (mean_out, ap.FaithfulnessConfig(ablation="mean"), {"mean_tokens": mean_tokens})]:
        res = ap.faithfulness(model, clean, corrupted, metric, kept, config, **kw)
        assert abs(res.full_metric - m_clean) <= TOL and abs(res.corrupt_metric - m_corr) <= TOL
        assert abs((float(metric(got)) - m_corr) / (m_clean - m_corr) - res.recovered) <= TOL
    assert _flags(model) == dict.fromkeys(FLAGS, False)


@pytest.mark.parametrize("name", ["gpt2", "llama"])
def test_probe_gradients_are_transformer_lens_reader_gradients(four_models, name):
    """d metric / d probe on a plain run = TransformerLens's gradient at each reader hook (what EAP dots with)."""
    from transformer_lens.tools.analysis import attribution_patching as ap

    model = _model(four_models, name)
    r, n, p = HookRunner(model), int(model.cfg.n_layers), 6
    toks, other = _tokens(model, (1, p), 7), _tokens(model, (1, p), 8)
    with torch.no_grad():
        metric = _logit_diff(model(toks), model(other))
    probe = torch.zeros(1, len(r.graph.receivers), 1, p, model.cfg.d_model, requires_grad=True)
    metric(r.run(toks, probe=probe)[0]).backward()
    with ap._edge_hook_flags(model):
        cache = ap.cache_activation_and_gradient(model, toks, metric, names_filter=ap._edge_hook_names(n))
    worst, got = 0.0, probe.grad
    assert got is not None
    for i, rec in enumerate(r.graph.receivers):
        reader = to_tl(Edge("input", rec, 0), n)[0][1]
        g = cache.gradients[reader.hook_name]
        assert g is not None
        ref = g[0, :, reader.head] if reader.head is not None else g[0]
        worst = max(worst, _err(got[0, i, 0], ref))
    assert worst <= TOL
    assert float(got.abs().max()) > 1e-3


@pytest.mark.parametrize("name", ["gpt2", "llama"])
def test_a_pinned_input_is_the_model_run_on_that_input_gradient_straight_through(four_models, name):
    """Pinning the input sender to an interpolated embedding = the model with resid_pre 0 set to it, in the
    logits and in the receivers' gradients (EAP-IG on inputs); a plain hook is the independent reference."""
    model = _model(four_models, name)
    r = HookRunner(model)
    clean, corrupted = _tokens(model, (2, 6), 9), _tokens(model, (2, 6), 10)
    s_clean, s_corr = r.senders(clean), r.senders(corrupted)
    alpha = torch.tensor([0.25, 0.75]).view(2, 1, 1, 1, 1)
    pin = (alpha * s_clean[None] + (1 - alpha) * s_corr[None])  # two copies, two points on the path
    probe = torch.zeros(2, len(r.graph.receivers), 2, 6, model.cfg.d_model, requires_grad=True)
    out = r.run(corrupted, pin=pin, pinned=[0], probe=probe)
    out.sum().backward()
    got = probe.grad
    assert got is not None
    for c in range(2):
        grads: dict[str, torch.Tensor] = {}

        def put(t, hook, c=c):
            return pin[c, 0].clone()

        def keep_grad(t, hook, grads=grads):  # the MLP branch's own input (t also runs on along the stream)
            t = t.clone()
            t.register_hook(lambda g, name=hook.name: grads.__setitem__(name, g))
            return t

        model.set_use_hook_mlp_in(True)
        try:
            with model.hooks(fwd_hooks=[("blocks.0.hook_resid_pre", put), ("blocks.1.hook_mlp_in", keep_grad)]):
                ref = model(corrupted)
                ref.sum().backward()
        finally:
            model.set_use_hook_mlp_in(False)
        assert _err(out[c], ref) <= TOL
        assert _err(got[c, r.graph.receivers.index("MLP1")], grads["blocks.1.hook_mlp_in"]) <= TOL
    with torch.no_grad():
        assert _err(out[1], model(corrupted)) > 0.01


# -- (d) the caller's flags survive a call that raises ----------------------------------------------------------
@pytest.mark.parametrize("state", [{}, {"use_attn_result": True}, {"use_hook_mlp_in": True}, {"use_attn_in": True}])
def test_flags_are_restored_after_a_call_that_raises(four_models, state):
    model = _model(four_models, "gpt2")
    r = HookRunner(model)
    for flag, value in state.items():
        getattr(model, f"set_{flag}")(value)
    try:
        before = _flags(model)
        assert before == {f: f in state for f in FLAGS}
        bad = torch.full((1, 4), 10**6)  # out of the vocabulary: the embedding raises inside the forward
        with pytest.raises(IndexError):
            r.run(bad, probe=torch.zeros(1, len(r.graph.receivers), 1, 4, model.cfg.d_model))
        assert _flags(model) == before
        with pytest.raises(IndexError):
            r.senders(bad)
        assert _flags(model) == before
    finally:
        for flag in state:
            getattr(model, f"set_{flag}")(False)


# -- (e) which runner, and the refusals ------------------------------------------------------------------------
def test_runner_picks_fast_on_a_native_model_hooks_on_llama_and_refuses_what_it_cannot_run(four_models, tmp_path):
    llama = _model(four_models, "llama")
    assert runner(llama).engine == "hooks" and isinstance(runner(llama), HookRunner)
    with pytest.raises(ConfigError, match="fast engine does not run LlamaForCausalLM"):
        runner(llama, engine="fast")
    with pytest.raises(ConfigError, match=r"'engine' must be auto \| fast \| hooks \(got 'slow'\)"):
        runner(llama, engine="slow")
    native = mechwork.load("induction-2l")
    assert isinstance(runner(native), EdgeRunner) and isinstance(runner(llama), EdgeRunner)
    assert runner(native).engine == "fast" and runner(native, engine="fast").graph.describe().startswith("2 layers")
    with pytest.raises(ConfigError) as e:
        runner(native, engine="hooks")
    assert "TransformerLensNative has neither" in str(e.value) and "\n" not in str(e.value)
    native.train()
    with pytest.raises(ConfigError, match="eval mode"):
        runner(native)
    from transformers import LlamaConfig, LlamaForCausalLM

    torch.manual_seed(0)
    LlamaForCausalLM(LlamaConfig(vocab_size=120, hidden_size=64, intermediate_size=128, num_hidden_layers=1,
                                 num_attention_heads=4, num_key_value_heads=2, max_position_embeddings=64)
                     ).save_pretrained(tmp_path)
    with pytest.raises(ConfigError) as e:
        runner(mechwork.load(str(tmp_path)))
    msg = str(e.value)
    assert "LlamaForCausalLM" in msg and "n_key_value_heads=2" in msg and "\n" not in msg


def test_bad_arguments_get_one_line(four_models):
    model = _model(four_models, "gpt2")
    r = HookRunner(model)
    toks, n_p, n_s = _tokens(model, (2, 5), 0), len(r.graph.pairs), len(r.graph.senders)
    cases: list[tuple[dict[str, Any], str]] = [
        ({"keep": torch.ones(1, n_p, 4)}, r"'keep' must be a tensor \[copy, 110, 5\] with copy 1 \(got \(1, 110, 4\)"),
        ({"keep": torch.ones(2, n_p, 5), "probe": torch.zeros(3, 89, 2, 5, 64)}, "same copy count"),
        ({"replacement": torch.zeros(n_s, 3, 5, 64)}, "'replacement' must be a tensor \\[11, 2 or 1, 5, 64\\]"),
        ({"pinned": [0]}, "'pinned' must be sender indices in \\[0, 11\\) with a pin tensor"),
        ({"pinned": [11], "pin": torch.zeros(1, n_s, 2, 5, 64)}, "'pinned' must be"),
    ]
    for kw, match in cases:
        with pytest.raises(ConfigError, match=match) as e:
            r.run(toks, **kw)
        assert "\n" not in str(e.value)
    with pytest.raises(ConfigError, match="'tokens' must be an integer tensor"):
        r.run(torch.zeros(2, 5))
    with pytest.raises(ConfigError, match="pass n_pos"):
        to_tl("L0H0->L1H2.k", 2)


# -- (b) two independent implementations: the hook runner and the engine runner ----------------------------------
def test_hook_runner_equals_engine_runner_on_gpt2(four_models):
    """Random per-position keep masks over 3 copies, corrupted and mean replacements, pins on the input, a head and
    an MLP, and the probe gradients: TL's per-head fork against mechwork's functional engine, to 1e-5."""
    model = _model(four_models, "gpt2")
    hooks, fast = HookRunner(model), runner(model)
    assert fast.engine == "fast" and hooks.engine == "hooks" and fast.graph == hooks.graph
    g = torch.Generator().manual_seed(11)
    b, p, c = 2, 7, 3
    clean, corrupted = _tokens(model, (b, p), 12), _tokens(model, (b, p), 13)
    s_clean, s_corr = hooks.senders(clean), hooks.senders(corrupted)
    assert _err(s_clean, fast.senders(clean)) <= TOL
    keep = (torch.rand(c, len(hooks.graph.pairs), p, generator=g) > 0.4).float()
    pinned = [0, hooks.graph.senders.index("L0H2"), hooks.graph.senders.index("MLP0")]
    alpha = torch.rand(c, 1, 1, 1, 1, generator=g)
    pin = alpha * s_clean[None] + (1 - alpha) * s_corr[None] + 0.1 * torch.randn(c, *s_clean.shape, generator=g)
    weights = torch.randn(b, p, model.cfg.d_vocab, generator=g)
    worst: dict[str, float] = {}
    cases: list[tuple[str, dict[str, Any]]] = [
        ("keep", {"keep": keep, "replacement": s_corr}),
        ("mean", {"keep": keep[:1], "replacement": s_corr.mean(1, keepdim=True)}),
        ("pins", {"keep": keep, "replacement": s_corr, "pin": pin, "pinned": pinned}),
        ("pins only", {"pin": pin[:, :, :1].expand(c, -1, b, -1, -1), "pinned": [0]})]
    for name, kw in cases:
        outs: list[torch.Tensor] = []
        grads: list[torch.Tensor] = []
        for r in (hooks, fast):
            probe = torch.zeros(c, len(r.graph.receivers), b, p, model.cfg.d_model, requires_grad=True)
            out = r.run(clean, probe=probe, **kw)
            (out * weights).sum().backward()
            assert probe.grad is not None
            outs.append(out.detach())
            grads.append(probe.grad)
        worst[name] = max(_err(outs[0], outs[1]), _err(grads[0], grads[1]))
        assert outs[0].shape == (c, b, p, model.cfg.d_vocab)
        with torch.no_grad():  # the run did change something
            assert _err(outs[0], model(clean).expand(c, -1, -1, -1)) > 1e-3
    assert max(worst.values()) <= TOL, worst


def test_the_hook_runner_refuses_an_attention_write_that_is_not_its_heads_sum(four_models):
    """A hook doubling blocks.0's attention write stands in for a post-norm or scaled block (TL refuses those)."""
    model = _model(four_models, "llama")
    with model.hooks(fwd_hooks=[("blocks.0.hook_attn_out", lambda t, hook: 2 * t)]), \
            pytest.raises(ConfigError) as e:
        HookRunner(model)
    assert "blocks.0.hook_attn_out is not its heads' sum" in str(e.value) and "\n" not in str(e.value)
    assert _flags(model) == dict.fromkeys(FLAGS, False)
    HookRunner(model)  # and without the hook it runs


def _hf(tmp_path: Any, model_cls: str, config_cls: str, **kw: Any) -> Any:
    """A tiny random Hugging Face model of another architecture, jittered and loaded."""
    import transformers

    torch.manual_seed(0)
    hf = getattr(transformers, model_cls)(getattr(transformers, config_cls)(vocab_size=120, **kw))
    jitter_biases_and_norms(hf)
    hf.eval().save_pretrained(tmp_path)
    return mechwork.load(str(tmp_path)).eval()


def test_parallel_attention_and_mlp_is_transformer_lens_and_phi_is_refused_as_it_refuses(tmp_path):
    """GPT-NeoX (attention and MLP in parallel: an MLP does not read its own layer's heads) runs on hooks and equals
    TL's _ablate_edges; Phi (its MLP reads the attention's norm: no hook_mlp_in) is refused in one line, as TL is."""
    from transformer_lens.tools.analysis import attribution_patching as ap

    arch = {"hidden_size": 64, "num_hidden_layers": 2, "num_attention_heads": 4, "intermediate_size": 128,
            "max_position_embeddings": 64}
    neox = _hf(tmp_path / "neox", "GPTNeoXForCausalLM", "GPTNeoXConfig", rotary_pct=0.25, use_parallel_residual=True,
               **arch)
    r, n, p = runner(neox), 2, 6
    assert r.engine == "hooks" and r.graph.parallel
    with pytest.raises(ConfigError, match="not in this graph"):
        r.graph.pair_index("L0H0->MLP0")
    clean, corrupted = _tokens(neox, (1, p), 1), _tokens(neox, (1, p), 2)
    tl_edges = _tl_edges(neox, corrupted)
    assert {pair for e in r.graph.edges for pair in to_tl(e, n, p)} == set(tl_edges)
    circuit = _circuit(r.graph, p, 3)
    with torch.no_grad():
        with ap._edge_hook_flags(neox):
            kept = {pair for e in circuit for pair in to_tl(e, n, p)}
            ref = ap._ablate_edges(neox, clean, tl_edges, kept, ap.capture_writer_outputs(neox, corrupted))
        out = r.run(clean, keep=r.graph.keep(circuit, p)[None], replacement=r.senders(corrupted))[0]
        assert _err(out, ref) <= TOL and _err(out, neox(clean)) > 1e-3
    phi = _hf(tmp_path / "phi", "PhiForCausalLM", "PhiConfig", partial_rotary_factor=0.5, **arch)
    with pytest.raises(ConfigError) as e:
        runner(phi)
    assert "PhiForCausalLM has neither: it has no blocks.0.hook_mlp_in hook point" in str(e.value)
    assert "\n" not in str(e.value) and _flags(phi) == dict.fromkeys(FLAGS, False)
    with pytest.raises(ValueError, match="hook_mlp_in"):  # TL: the same refusal
        ap.faithfulness(phi, clean, corrupted, lambda x: x[0, -1, 0], [])


def test_copies_and_batch_rows_are_independent_runs_on_llama(four_models):
    """3 copies x 2 rows in one forward = each (copy, row) run alone, logits and probe gradients (the tiling)."""
    model = _model(four_models, "llama")
    r, b, p, c = HookRunner(model), 2, 5, 3
    clean, corrupted = _tokens(model, (b, p), 20), _tokens(model, (b, p), 21)
    g = torch.Generator().manual_seed(22)
    keep = (torch.rand(c, len(r.graph.pairs), p, generator=g) > 0.5).float()
    repl = r.senders(corrupted)
    pin = r.senders(clean)[None].expand(c, -1, -1, -1, -1)
    shape = (c, len(r.graph.receivers), b, p, model.cfg.d_model)
    probe = (0.01 * torch.randn(shape, generator=g)).requires_grad_()
    together = r.run(clean, keep=keep, replacement=repl, pin=pin, pinned=[1, 5], probe=probe)
    together.sum().backward()
    assert probe.grad is not None
    for i in range(c):
        for row in range(b):
            alone_probe = probe.detach()[i:i + 1, :, row:row + 1].clone().requires_grad_()
            alone = r.run(clean[row:row + 1], keep=keep[i:i + 1], replacement=repl[:, row:row + 1],
                          pin=pin[i:i + 1, :, row:row + 1], pinned=[1, 5], probe=alone_probe)
            alone.sum().backward()
            assert alone_probe.grad is not None
            assert _err(together[i, row], alone[0, 0]) <= TOL
            scale = max(1.0, float(alone_probe.grad.abs().max()))  # sum-of-logits gradients reach ~10
            assert _err(probe.grad[i, :, row], alone_probe.grad[0, :, 0]) <= TOL * scale
    assert _err(together[0], together[1]) > 1e-3  # the copies differ
