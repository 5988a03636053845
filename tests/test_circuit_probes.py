"""Probes of the circuit API as a TransformerLens / ARENA user calls it: numbers against hand-written hooks and TL,
the inputs users get wrong (one ConfigError line each), and the edge cases around them.

* Exact edge patches on a tiny GPT-2 directory = one edge patched through plain TL hooks on the bridge's per-head
  fork (denoising, noising, zero, mean with default and given ``mean_tokens``, one position), to 1e-9 in float64.
* EAP per position = TL's ``attribution_patch(granularity="edge")``; faithfulness = TL's ``faithfulness``;
  EAP-IG on activations = integrated gradients through plain hooks (pinned writes, probes on receiver inputs);
  ACDC = the greedy pass written out over ``faithfulness()`` calls; circuits do not change when the metric is
  scaled by -1000 (a gap of the other sign).
* A [batch] metric = its mean; a Python-float metric works for exact patching and is one line for EAP; Prompts =
  tensors; batch of 1; a single position; zero gap; mean/zero ablation without corrupted prompts; train mode; GQA;
  per-position EAP summed over positions = position-free EAP; tiny ``memory_mb`` chunks give the same numbers.
* ``mechwork circuit`` on a directory: a text ``--pair`` without a tokenizer, a GQA model and a zero-gap pair exit 2
  with one line; the page is one file that loads nothing from another host.
* Float64 faithfulness, a lone edge string and verify's direction check were xfail until their fixes landed.
"""

from __future__ import annotations

import os
import re
import shutil
import sys
from pathlib import Path
from typing import Any

import pytest
import torch

import mechwork
from mechwork.analysis.circuits import acdc, faithfulness, faithfulness_curve, top_n
from mechwork.analysis.edges import eap, eap_ig, edge_patch
from mechwork.errors import ConfigError
from mechwork.graph import Edge, Graph
from mechwork.tasks import standard_probe

sys.path.insert(0, os.path.dirname(__file__))
from fourmodels import hf_dir, jitter_biases_and_norms

os.environ.setdefault("HF_HUB_OFFLINE", "1")
_CACHE: dict[str, Any] = {}


def one_line(exc: pytest.ExceptionInfo[Any], *needles: str) -> str:
    text = str(exc.value)
    assert "\n" not in text and text, text
    for n in needles:
        assert n in text, (n, text)
    return text


@pytest.fixture(scope="module")
def ind() -> tuple[Any, Any, Any, Any]:
    model = mechwork.load("induction-2l", device="cpu").eval()
    pr = standard_probe(mechwork.preset("induction-2l").task, n=3, half=6)
    return model, pr.clean, pr.corrupted, pr.metric


@pytest.fixture(scope="module")
def dirs(tmp_path_factory: pytest.TempPathFactory) -> dict[str, Path]:
    root = tmp_path_factory.mktemp("probe_models")
    out = {"gpt2": hf_dir("gpt2", root / "gpt2"), "notok": root / "notok"}
    out["notok"].mkdir()
    for f in out["gpt2"].iterdir():  # the same model without its tokenizer files
        if "token" not in f.name and "vocab" not in f.name and "merges" not in f.name:
            shutil.copy(f, out["notok"] / f.name)
    from transformers import LlamaConfig, LlamaForCausalLM

    torch.manual_seed(0)
    LlamaForCausalLM(LlamaConfig(vocab_size=122, hidden_size=32, intermediate_size=64, num_hidden_layers=1,
                                 num_attention_heads=4, num_key_value_heads=2, max_position_embeddings=32)
                     ).eval().save_pretrained(root / "gqa")
    out["gqa"] = root / "gqa"
    return out


@pytest.fixture(scope="module")
def gpt2(dirs: dict[str, Path]) -> Any:
    model = mechwork.load(str(dirs["gpt2"]))
    jitter_biases_and_norms(model.original_model)
    return model.eval().to(torch.float64)


def _pair(model: Any, batch: int = 2, n_pos: int = 6, seed: int = 5) -> tuple[torch.Tensor, torch.Tensor]:
    g = torch.Generator().manual_seed(seed)
    v = model.cfg.d_vocab
    return torch.randint(0, v, (batch, n_pos), generator=g), torch.randint(0, v, (batch, n_pos), generator=g)


def logit_diff(logits: torch.Tensor) -> torch.Tensor:
    return (logits[:, -1, 3] - logits[:, -1, 7]).mean()


# ---- numbers: exact patching = one edge through plain hooks; EAP and faithfulness = TransformerLens ----

EDGES = ("L0H1->L1H2.k", "L0H3->MLP1", "L1H0->logits", "input->L1H3.q", "MLP0->L1H1.v", "input->logits")


def _hooked_patch(model: Any, base: torch.Tensor, base_cache: Any, rep: Any, edge: str,
                  pos: int | None = None) -> float:
    """metric(base run with only ``edge``'s receiver reading ``rep(sender)`` in place of the sender's base write)
    minus metric(base run), through TL hooks on the per-head fork (hook_{q,k,v}_input, hook_mlp_in, ln_final)."""
    def write(cache: Any, s: str) -> torch.Tensor:
        if s == "input":
            return cache["blocks.0.hook_resid_pre"]
        if s.startswith("MLP"):
            return cache[f"blocks.{s[3:]}.hook_mlp_out"]
        layer, head = s[1:].split("H")
        return cache[f"blocks.{layer}.attn.hook_result"][:, :, int(head)]

    sender, receiver = edge.split("->")
    delta = rep(write, sender) - write(base_cache, sender)
    if pos is not None:
        delta = delta * (torch.arange(delta.shape[1]) == pos).to(delta.dtype)[None, :, None]
    head = None
    if receiver == "logits":
        name = "ln_final.hook_in"
    elif receiver.startswith("MLP"):
        name = f"blocks.{receiver[3:]}.hook_mlp_in"
    else:
        lh, kind = receiver.split(".")
        layer, h = lh[1:].split("H")
        name, head = f"blocks.{layer}.hook_{kind}_input", int(h)

    def hook(x: torch.Tensor, hook: Any) -> torch.Tensor:
        x = x.clone()
        if head is None:
            return x + delta
        x[:, :, head] += delta
        return x

    with torch.no_grad():
        return float(logit_diff(model.run_with_hooks(base, fwd_hooks=[(name, hook)])) - logit_diff(model(base)))


def _forked(model: Any, flag: bool) -> None:
    model.set_use_split_qkv_input(flag)
    model.set_use_attn_result(flag)
    model.set_use_hook_mlp_in(flag)


def test_exact_edge_patch_equals_one_edge_through_plain_hooks(gpt2: Any) -> None:
    clean, corr = _pair(gpt2, batch=3)
    mt = _pair(gpt2, batch=5, seed=9)[0]
    runs = {
        "denoising": edge_patch(gpt2, clean, corr, logit_diff, edges=EDGES),
        "noising": edge_patch(gpt2, clean, corr, logit_diff, edges=EDGES, direction="noising"),
        "zero": edge_patch(gpt2, clean, None, logit_diff, edges=EDGES, ablation="zero"),
        "mean": edge_patch(gpt2, clean, None, logit_diff, edges=EDGES, ablation="mean"),
        "mean_tokens": edge_patch(gpt2, clean, None, logit_diff, edges=EDGES, ablation="mean", mean_tokens=mt),
    }
    at4 = edge_patch(gpt2, clean, corr, logit_diff, per_position=True)  # every edge at every position, chunked
    picked = ["L0H3->MLP1@4", "input->L1H3.q@2", "MLP1->logits@5", "L0H0->L1H1.v@0", "MLP0->L1H2.k@3", "L1H3->MLP1@5"]
    _forked(gpt2, True)
    try:
        caches = {name: gpt2.run_with_cache(t)[1] for name, t in (("c", clean), ("k", corr), ("m", mt))}
        base = {"denoising": (corr, caches["k"])}
        reps = {"denoising": lambda w, s: w(caches["c"], s), "noising": lambda w, s: w(caches["k"], s),
                "zero": lambda w, s: torch.zeros_like(w(caches["c"], s)),
                "mean": lambda w, s: w(caches["c"], s).mean(0, keepdim=True),
                "mean_tokens": lambda w, s: w(caches["m"], s).mean(0, keepdim=True)}
        for kind, scores in runs.items():
            tokens, cache = base.get(kind, (clean, caches["c"]))
            for e in EDGES:
                want = _hooked_patch(gpt2, tokens, cache, reps[kind], e)
                got = float(scores.values[scores.graph.index(e)])
                assert abs(got - want) < 1e-9, (kind, e, got, want)
        for e in picked:
            edge, pos = e.split("@")
            want = _hooked_patch(gpt2, corr, caches["k"], reps["denoising"], edge, int(pos))
            assert abs(float(at4.values[at4.graph.index(e)]) - want) < 1e-9, e
    finally:
        _forked(gpt2, False)


def test_eap_and_faithfulness_equal_transformer_lens_on_one_pair(gpt2: Any) -> None:
    from transformer_lens.tools.analysis import attribution_patching as ap

    from mechwork.analysis.edgerun import to_tl

    clean, corr = _pair(gpt2, batch=1, n_pos=5, seed=3)
    ref = ap.attribution_patch(gpt2, clean, corr, logit_diff, ap.EdgeAttributionConfig(granularity="edge"))
    ours = eap(gpt2, clean, corr, logit_diff, per_position=True)
    g = ours.graph
    matched = 0
    for i, e in enumerate(g.edges):
        for pair in to_tl(e, g.n_layers):
            assert abs(float(ref.edge_scores[pair]) - float(ours.values[i])) < 1e-9, e
            matched += 1
    assert matched == g.n_edges == len(ref.edge_scores)
    kept = [e for e, _ in eap(gpt2, clean, corr, logit_diff).top(8)]
    tl = ap.faithfulness(gpt2, clean, corr, logit_diff, [p for e in kept for p in to_tl(e, g.n_layers, 5)])
    mine = faithfulness(gpt2, clean, corr, logit_diff, kept)
    assert abs(mine.recovered - tl.recovered) < 1e-6 and mine.kept == 8 and mine.total == 110
    assert abs(mine.recovered) > 1e-3  # the check bites: these 8 edges recover something



def test_faithfulness_keeps_a_float64_model_in_float64(gpt2: Any) -> None:
    from transformer_lens.tools.analysis import attribution_patching as ap

    from mechwork.analysis.edgerun import to_tl

    clean, corr = _pair(gpt2, batch=1, n_pos=5, seed=3)
    kept = [e for e, _ in eap(gpt2, clean, corr, logit_diff).top(10)]
    tl = ap.faithfulness(gpt2, clean, corr, logit_diff, [p for e in kept for p in to_tl(e, 2, 5)])
    mine = faithfulness(gpt2, clean, corr, logit_diff, kept)
    with torch.no_grad():
        assert mine.clean_value == pytest.approx(float(logit_diff(gpt2(clean))), abs=1e-12)
    assert mine.recovered == pytest.approx(tl.recovered, abs=1e-12)

# ---- metrics, prompt types, shapes ----

@pytest.mark.filterwarnings("ignore:Converting a tensor with requires_grad")
def test_a_batch_metric_is_its_mean_and_a_float_metric_is_exact_only(ind: Any) -> None:
    model, clean, corr, _ = ind
    vec = lambda logits: logits[:, -1, 5] - logits[:, -1, 9]
    mean = lambda logits: vec(logits).mean()
    for fn in (eap, edge_patch):
        a, b = fn(model, clean, corr, vec), fn(model, clean, corr, mean)
        assert torch.allclose(a.values, b.values, atol=1e-6) and a.values.abs().max() > 1e-3
    py = edge_patch(model, clean, corr, lambda logits: float(mean(logits)))
    assert torch.allclose(py.values, edge_patch(model, clean, corr, mean).values, atol=1e-5)
    for fn in (eap, eap_ig):
        with pytest.raises(ConfigError) as exc:
            fn(model, clean, corr, lambda logits: float(mean(logits)))
        one_line(exc, "'metric'", "differentiable")
    for m in (vec, lambda logits: float(mean(logits))):  # forward-only search takes either
        assert acdc(model, clean, corr, m, threshold=0.05).edges == acdc(model, clean, corr, mean, threshold=0.05).edges
        kept = ["L0H0->L1H1.k", "L1H1->logits", "input->L1H1.v"]
        assert faithfulness(model, clean, corr, m, kept).recovered == pytest.approx(
            faithfulness(model, clean, corr, mean, kept).recovered, abs=1e-6)
    for bad, needle in ((lambda logits: logits[:, -1, :2], "(3, 2)"), (lambda logits: logits[:2, -1, 0], "(2,)"),
                        (lambda logits: mean(logits) * float("nan"), "nan")):
        with pytest.raises(ConfigError) as exc:
            edge_patch(model, clean, corr, bad)
        one_line(exc, "'metric'", needle)


def test_prompts_objects_equal_tensors(gpt2: Any) -> None:
    from mechwork.prompts import tokenize

    c, k = tokenize(gpt2, ["the cat sat on the mat"]), tokenize(gpt2, ["the dog sat on the log"])
    ct, kt = c.batch(), k.batch()
    assert torch.equal(eap(gpt2, c, k, logit_diff).values, eap(gpt2, ct, kt, logit_diff).values)
    ig = [eap_ig(gpt2, a, b, logit_diff, steps=2).values for a, b in ((c, kt), (ct, kt))]
    assert torch.equal(ig[0], ig[1])
    kept = ["L0H0->logits", "MLP0->MLP1", "input->MLP0"]
    f = [faithfulness(gpt2, a, b, logit_diff, kept).recovered for a, b in ((c, k), (ct, kt))]
    assert f[0] == f[1]
    longer = tokenize(gpt2, ["the dog sat on the log and"])
    for fn in (eap, edge_patch):
        with pytest.raises(ConfigError) as exc:
            fn(gpt2, c, longer, logit_diff)
        one_line(exc, "'clean' and 'corrupted'", str(ct.shape[1]), str(longer.batch().shape[1]))
    with pytest.raises(ConfigError) as exc:
        faithfulness(gpt2, c, longer, logit_diff, kept)
    one_line(exc, "'clean' and 'corrupted'", str(longer.batch().shape[1]))


def test_batch_of_one_and_a_single_position(ind: Any) -> None:
    model, *_ = ind
    pr = standard_probe(mechwork.preset("induction-2l").task, n=1, half=5)
    a, b = eap(model, pr.clean, pr.corrupted, pr.metric), edge_patch(model, pr.clean, pr.corrupted, pr.metric)
    assert a.values.shape == b.values.shape == (81,)
    # edges into the logits are linear in the patch: EAP is exact there
    logits = [i for i, e in enumerate(a.graph.edges) if e.receiver == "logits"]
    assert torch.allclose(a.values[logits], b.values[logits], atol=1e-4)
    one = lambda logits: logits[:, -1, 0].mean()
    s = edge_patch(model, pr.clean[:, :1], pr.corrupted[:, :1], one, per_position=True)
    assert s.graph.n_pos == 1 and s.graph.n_edges == 81 and torch.isfinite(s.values).all()
    p = eap(model, pr.clean[:, :1], pr.corrupted[:, :1], one, per_position=True)
    assert torch.allclose(p.values, eap(model, pr.clean[:, :1], pr.corrupted[:, :1], one).values)


def test_per_position_eap_summed_is_position_free_eap_and_chunking_changes_nothing(ind: Any) -> None:
    model, clean, corr, metric = ind
    pp, pf = eap(model, clean, corr, metric, per_position=True), eap(model, clean, corr, metric)
    assert pp.graph.n_edges == 81 * clean.shape[1]
    assert torch.allclose(pp.by_pair(), pf.values, atol=1e-5)
    full = edge_patch(model, clean, corr, metric)
    assert torch.equal(edge_patch(model, clean, corr, metric, memory_mb=0.001).values, full.values)
    some = edge_patch(model, clean, corr, metric, edges=["L0H0->L1H0.k", "L0H0->L1H0.k"])
    i = some.graph.index("L0H0->L1H0.k")
    assert some.values[i] == full.values[i] and int(torch.isnan(some.values).sum()) == 80
    assert some.top(5) == [(Edge("L0H0", "L1H0.k"), float(full.values[i]))]


# ---- the issue's bad inputs, and the class around them ----

def test_the_issues_bad_inputs_are_one_line_each(ind: Any) -> None:
    model, clean, corr, metric = ind
    for steps in (0, -1, 2.5, True):
        with pytest.raises(ConfigError) as exc:
            eap_ig(model, clean, corr, metric, steps=steps)
        one_line(exc, "'steps'", f"got {steps}")
    for edge, needle in (("L1H0->L0H1.k", "not in this graph"), ("L5H0->logits", "not in this graph"),
                         ("L0H0->L1H0.k@99", "position 99"), ("L0H0->L1H0.k@-1", "position -1"),
                         ("garbage", "SENDER->RECEIVER")):
        with pytest.raises(ConfigError) as exc:
            faithfulness(model, clean, corr, metric, [edge])
        one_line(exc, edge, needle)
        with pytest.raises(ConfigError) as exc:  # a position on position-free scores is refused too
            edge_patch(model, clean, corr, metric, edges=[edge])
        one_line(exc, edge)
    short = corr[:, :-1]
    for call in (lambda: eap(model, clean, short, metric), lambda: eap_ig(model, clean, short, metric),
                 lambda: edge_patch(model, clean, short, metric), lambda: faithfulness(model, clean, short, metric, []),
                 lambda: top_n(model, clean, short, metric, eap(model, clean, corr, metric), 3)):
        with pytest.raises(ConfigError) as exc:
            call()
        one_line(exc, "'clean' and 'corrupted'", str(clean.shape[1]), str(short.shape[1]))


def test_empty_and_full_circuits_recover_0_and_1_under_every_ablation(ind: Any) -> None:
    model, clean, corr, metric = ind
    edges = Graph.of_model(model).edges
    for ablation, corrupted in (("corrupted", corr), ("mean", None), ("zero", None)):
        empty = faithfulness(model, clean, corrupted, metric, [], ablation=ablation)
        assert empty.kept == 0 and empty.total == 81 and abs(empty.recovered) < 1e-6, ablation
        full = faithfulness(model, clean, corrupted, metric, edges, ablation=ablation)
        assert abs(full.recovered - 1) < 1e-6 and abs(full.metric - full.clean_value) < 1e-4, ablation
        none = top_n(model, clean, corrupted, metric, eap(model, clean, corr, metric), 0, ablation=ablation)
        assert none.edges == frozenset() and none.faithfulness.recovered == pytest.approx(0, abs=1e-6)
    # corrupted prompts given with mean ablation: normalised by the clean/corrupt gap, as TL's faithfulness
    mean = faithfulness(model, clean, corr, metric, [], ablation="mean")
    bottom = faithfulness(model, clean, None, metric, [], ablation="mean").metric
    assert mean.metric == pytest.approx(bottom) and mean.corrupted_value != pytest.approx(bottom)


def test_zero_gap_train_mode_and_gqa(ind: Any, dirs: dict[str, Path]) -> None:
    model, clean, corr, metric = ind
    assert float(eap(model, clean, clean, metric).values.abs().max()) == 0.0
    with pytest.raises(ConfigError) as exc:
        faithfulness(model, clean, clean, metric, ["L1H0->logits"])
    one_line(exc, "same metric", "undefined")
    model.train()
    try:
        for call in (lambda: eap(model, clean, corr, metric), lambda: faithfulness(model, clean, corr, metric, [])):
            with pytest.raises(ConfigError) as exc:
                call()
            one_line(exc, "eval mode", "model.eval()")
    finally:
        model.eval()
    gqa = mechwork.load(str(dirs["gqa"]))
    c = torch.tensor([[1, 2, 3, 4]])
    for call in (lambda: Graph.of_model(gqa), lambda: eap(gqa, c, c + 1, logit_diff),
                 lambda: faithfulness(gqa, c, c + 1, logit_diff, [])):
        with pytest.raises(ConfigError) as exc:
            call()
        one_line(exc, "n_key_value_heads=2", "4 heads")


def test_top_refuses_a_negative_or_fractional_k(ind: Any) -> None:
    model, clean, corr, metric = ind
    s = eap(model, clean, corr, metric)
    assert s.top(0) == [] and len(s.top(10**6)) == 81
    for k in (-1, 2.5, "3"):
        with pytest.raises(ConfigError) as exc:
            s.top(k)  # type: ignore[arg-type]
        one_line(exc, "'k'")


def test_a_lone_edge_string_is_one_edge_or_one_clear_line(ind: Any) -> None:
    model, clean, corr, metric = ind
    try:
        f = faithfulness(model, clean, corr, metric, "L0H0->L1H0.k")
    except ConfigError as e:
        assert "'L0H0->L1H0.k'" in str(e) and "\n" not in str(e), e
    else:
        assert f.kept == 1 and f.recovered == faithfulness(model, clean, corr, metric, ["L0H0->L1H0.k"]).recovered


def test_float_noise_around_zero_reads_0_percent_not_minus_0(ind: Any) -> None:
    model, clean, corr, metric = ind
    s = edge_patch(model, clean, corr, metric)
    c = top_n(model, clean, corr, metric, s, 3)
    assert abs(c.faithfulness.recovered) < 1e-6  # three edges into the logits, fed by ablated heads
    assert "-0.0%" not in c.summary() and "0.0%" in c.summary()


# ---- mechwork circuit ----

def _cli(capsys: pytest.CaptureFixture[str], *args: str) -> tuple[int, str, str]:
    from mechwork.cli import main

    capsys.readouterr()
    code = main(["circuit", *args, "--quiet"])
    out, err = capsys.readouterr()
    return code, out, err


def _error_line(err: str) -> str:
    lines = [x for x in err.splitlines() if x.strip()]
    assert len(lines) == 1 and "Traceback" not in err, err
    return lines[0]


def test_cli_on_directories_text_pair_without_tokenizer_gqa_and_zero_gap(capsys: Any, dirs: dict[str, Path],
                                                                         tmp_path: Path) -> None:
    page = tmp_path / "p.html"
    code, _, err = _cli(capsys, str(dirs["notok"]), "--pair", "the cat", "the dog", "--out", str(page))
    assert code == 2 and "no tokenizer" in _error_line(err) and "'the cat'" in err and not page.exists()
    code, _, err = _cli(capsys, str(dirs["gqa"]), "--pair", "1 2 3", "1 2 4")
    assert code == 2 and "n_key_value_heads=2" in _error_line(err)
    code, _, err = _cli(capsys, str(dirs["notok"]), "--pair", "1 2 3 4", "1 2 3 4", "--out", str(page))
    assert code == 2 and "same metric" in _error_line(err) and not page.exists()


def test_cli_page_is_one_file_with_nothing_from_another_host(capsys: Any, dirs: dict[str, Path],
                                                              tmp_path: Path) -> None:
    page, js = tmp_path / "c.html", tmp_path / "c.json"
    code, _, err = _cli(capsys, str(dirs["notok"]), "--pair", "1 2 3 4 5", "1 2 9 4 5", "--method", "eap",
                          "--out", str(page), "--json", str(js))
    assert code == 0, err
    html = page.read_text()
    outside = re.sub(r"<script\b[^>]*>.*?</script>", "", html, flags=re.S)
    assert "<script" in html and len(outside) < len(html) / 10  # the plotly bundle is inlined
    assert not re.search(r"""(?:src|href)\s*=\s*["']?(?:https?:)?//""", outside), "external src/href"
    assert not re.search(r"<script[^>]*\bsrc=|<link[^>]*\bhref=|@import|url\(\s*['\"]?https?:", html)
    assert set(tmp_path.iterdir()) == {page, js}


def test_eap_under_inference_mode_works_or_says_so(ind: Any) -> None:
    model, clean, corr, metric = ind
    want = eap(model, clean, corr, metric).values
    with torch.no_grad():
        assert torch.equal(eap(model, clean, corr, metric).values, want)
    try:
        with torch.inference_mode():
            got = eap(model, clean, corr, metric).values
    except ConfigError as e:
        assert "inference_mode" in str(e) and "\n" not in str(e), e
    else:
        assert torch.allclose(got, want)


def test_eap_ig_on_activations_equals_integrated_gradients_through_plain_hooks(gpt2: Any) -> None:
    """Every sender's write pinned at corrupted + alpha (clean - corrupted) (value pinned, gradient straight through),
    a zero probe on every receiver's input, gradients averaged over alpha = k / steps, dotted with clean - corrupted."""
    clean, corr = _pair(gpt2)
    steps, n_layers, n_heads = 3, gpt2.cfg.n_layers, gpt2.cfg.n_heads
    ours = eap_ig(gpt2, clean, corr, logit_diff, steps=steps, on="activations")
    senders = {"input": "blocks.0.hook_resid_pre", **{f"MLP{i}": f"blocks.{i}.hook_mlp_out" for i in range(n_layers)}}
    readers = {"logits": "ln_final.hook_in", **{f"MLP{i}": f"blocks.{i}.hook_mlp_in" for i in range(n_layers)},
               **{f"{i}{r}": f"blocks.{i}.hook_{r}_input" for i in range(n_layers) for r in "qkv"}}
    _forked(gpt2, True)
    try:
        with torch.no_grad():
            caches = [gpt2.run_with_cache(t)[1] for t in (clean, corr)]
        writes = [{**{s: c[n] for s, n in senders.items()}, **{f"L{i}H{h}": c[f"blocks.{i}.attn.hook_result"][:, :, h]
                   for i in range(n_layers) for h in range(n_heads)}} for c in caches]
        grads: dict[str, torch.Tensor] = {}
        for k in range(steps):
            pins = {s: writes[1][s] + k / steps * (writes[0][s] - writes[1][s]) for s in writes[0]}
            probes: dict[str, torch.Tensor] = {}

            def pin(value: torch.Tensor) -> Any:
                return lambda x, hook: x + (value - x).detach()

            def pin_heads(layer: int, pins: dict[str, torch.Tensor] = pins) -> Any:
                return lambda x, hook: torch.stack([x[:, :, h] + (pins[f"L{layer}H{h}"] - x[:, :, h]).detach()
                                                    for h in range(n_heads)], dim=2)

            def probe(key: str, probes: dict[str, torch.Tensor] = probes) -> Any:
                def f(x: torch.Tensor, hook: Any) -> torch.Tensor:
                    probes[key] = torch.zeros_like(x, requires_grad=True)
                    return x + probes[key]
                return f

            hooks = [(n, pin(pins[s])) for s, n in senders.items()]
            hooks += [(f"blocks.{i}.attn.hook_result", pin_heads(i)) for i in range(n_layers)]
            hooks += [(n, probe(key)) for key, n in readers.items()]
            logit_diff(gpt2.run_with_hooks(corr, fwd_hooks=hooks)).backward()
            for key, p in probes.items():
                assert p.grad is not None
                grads[key] = grads[key] + p.grad / steps if key in grads else p.grad / steps
    finally:
        _forked(gpt2, False)

    def grad_of(receiver: str) -> torch.Tensor:
        if receiver == "logits" or receiver.startswith("MLP"):
            return grads[receiver]
        lh, kind = receiver.split(".")
        layer, h = lh[1:].split("H")
        return grads[f"{layer}{kind}"][:, :, int(h)]

    for i, e in enumerate(ours.graph.edges):
        want = float(((writes[0][e.sender] - writes[1][e.sender]) * grad_of(e.receiver)).sum())
        assert abs(float(ours.values[i]) - want) < 1e-9, (e, float(ours.values[i]), want)
    assert float((ours.values - eap(gpt2, clean, corr, logit_diff).values).abs().max()) > 1e-4  # not EAP again


def test_circuits_do_not_depend_on_the_metrics_sign_or_scale(ind: Any) -> None:
    """ACDC's threshold and faithfulness are fractions of the clean-to-corrupted gap: -1000 * metric + 5 (a gap of the
    other sign) finds the same circuit with the same faithfulness; EAP scores scale by -1000."""
    model, clean, corr, metric = ind
    flipped = lambda logits: -1000 * metric(logits) + 5
    for kw in ({"threshold": 0.05, "per_position": True}, {"threshold": 0.05, "ablation": "zero"}):
        corrupted = None if "ablation" in kw else corr
        a, b = acdc(model, clean, corrupted, metric, **kw), acdc(model, clean, corrupted, flipped, **kw)
        assert a.edges == b.edges and 0 < len(a.edges) < a.graph.n_edges, kw
        assert a.faithfulness.recovered == pytest.approx(b.faithfulness.recovered, abs=1e-5), kw
    e1, e2 = eap(model, clean, corr, metric), eap(model, clean, corr, flipped)
    assert torch.allclose(e2.values, -1000 * e1.values, rtol=1e-4, atol=1e-3)
    c1, c2 = faithfulness_curve(model, clean, corr, metric, e1), faithfulness_curve(model, clean, corr, flipped, e2)
    assert c1.sizes == c2.sizes and c1.recovered == pytest.approx(c2.recovered, abs=1e-5)


def test_acdc_equals_a_sequential_greedy_pass_over_faithfulness(ind: Any) -> None:
    """The greedy pass written out with one faithfulness() call per tried edge: receivers from the logits back,
    senders latest first; an edge stays removed when the metric drops by < threshold of the gap; a head or MLP
    that feeds nothing any more loses its incoming edges untried."""
    model = ind[0]
    pr = standard_probe(mechwork.preset("induction-2l").task, n=2, half=4)
    clean, corr, metric = pr.clean, pr.corrupted, pr.metric
    g = Graph.of_model(model)
    for threshold, ablation in ((0.1, "zero"),):
        corrupted = corr if ablation == "corrupted" else None
        kept = set(g.edges)
        start = faithfulness(model, clean, corrupted, metric, kept, ablation=ablation)
        cur, gap = start.clean_value, start.clean_value - start.corrupted_value
        for r in reversed(g.receivers):
            into = [g.edges[i] for i, (_, v) in enumerate(g.pairs) if g.receivers[v] == r][::-1]
            node = None if r == "logits" else r.split(".")[0]
            if node is not None and not any(e.sender == node for e in kept):
                kept -= set(into)
                continue
            for e in into:
                value = faithfulness(model, clean, corrupted, metric, kept - {e}, ablation=ablation).metric
                if (cur - value) / gap < threshold:
                    kept.discard(e)
                    cur = value
        found = acdc(model, clean, corrupted, metric, threshold=threshold, ablation=ablation)
        assert found.edges == frozenset(kept) and 0 < len(kept) < g.n_edges, (threshold, ablation)
        assert found.faithfulness.metric == pytest.approx(cur, abs=1e-5)


def test_cli_refusals_from_the_config_alone(capsys: Any, tmp_path: Path) -> None:
    same = str(tmp_path / "x.html")
    code, _, err = _cli(capsys, "induction-2l", "--out", same, "--json", same)
    assert code == 2 and "same file" in _error_line(err) and not (tmp_path / "x.html").exists()
    code, _, err = _cli(capsys, "induction-2l", "--pair", "1 2 3", "1 2 99")
    assert code == 2 and "99" in _error_line(err) and "0 to 63" in err
    code, _, err = _cli(capsys, "induction-2l", "--top", "82")
    assert code == 2 and "82" in _error_line(err) and "81" in err


def test_verify_refuses_scores_of_another_direction_or_ablation(ind: Any) -> None:
    from mechwork.analysis.edges import verify

    model, clean, corr, metric = ind
    exact = edge_patch(model, clean, corr, metric)
    assert verify(eap(model, clean, corr, metric), exact, sample=None).spearman > 0.5
    for approx, needle in ((eap(model, clean, corr, metric, direction="noising"), "noising"),
                           (eap(model, clean, None, metric, ablation="mean"), "mean")):
        with pytest.raises(ConfigError) as exc:
            verify(approx, exact, sample=None)
        one_line(exc, needle, "denoising")


def test_circuit_report_counts_a_per_position_graph_of_prompts(ind: tuple[Any, Any, Any, Any]) -> None:
    """``top`` is checked against the per-position graph of the prompts' length, for Prompts as for tensors."""
    from mechwork.analysis.circuitreport import circuit_report
    from mechwork.prompts import tokenize

    model = ind[0]
    clean, corrupted = tokenize(model, [[1, 2, 3, 1, 2]]), tokenize(model, [[4, 5, 6, 1, 2]])

    def metric(logits: torch.Tensor) -> torch.Tensor:
        return logits[:, -1, 3].mean()

    total = Graph.of_model(model, n_pos=5).n_edges  # 405 edges, against 81 over every position
    report = circuit_report(model, clean, corrupted, metric, per_position=True, top=100)
    assert len(report.circuit.edges) == 100 and report.graph.n_edges == total
    with pytest.raises(ConfigError) as e:
        circuit_report(model, clean, corrupted, metric, per_position=True, top=total + 1)
    one_line(e, f"[1, {total:,}]")
