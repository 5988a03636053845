"""Direct logit attribution, residual decomposition and the logit lens on many architectures, each a tiny random
``transformers`` model saved with ``save_pretrained`` (offline, the tokenizer of ``tests/fourmodels.py``), checked
against TransformerLens's own functions to 1e-5.

Every bias is drawn at random and every norm weight jittered (so that folding the final norm's weight and bias,
the value biases and a parallel block's shared norm are exercised). Per architecture:

* ``mechwork.load`` boots the directory offline and its logits equal ``transformers``' own;
* DLA by component and by head equals TransformerLens's ``direct_logit_attribution`` on a compatibility-mode copy,
  DLA by neuron equals ``ActivationCache.logit_attrs`` of ``get_neuron_results`` there, and the rows sum to the
  raw model's own logit difference;
* the residual decomposition sums to the final residual stream; the logit lens equals TransformerLens's
  ``logit_lens`` (logits and ranks).

Covered: GPT-NeoX/Pythia (parallel attention and MLP, partial rotary), Qwen2 (GQA, qkv bias), a GQA Llama,
Mistral, OPT, Gemma (embedding scale, RMSNorm with offset, one KV head), GPT-J, Phi (parallel, partial rotary),
BLOOM (ALiBi, embedding norm folded by TL), GPT-BigCode (multi-query), Falcon, StableLM, Qwen3 (QK norm), Mixtral
(mixture of experts: no neuron unit, refused in one line) and Cohere (a logit scale). Granite's ``logits_scaling``
is applied to DLA's rows, which sum to the model's own logit; TransformerLens's DLA leaves it out (pinned).

What cannot be split exactly is refused in one line, never answered wrong: Gemma 2's soft-capped logits, XGLM (an
embedding scale outside the hooks), BERT (a masked-LM head on the readout path), Mamba and Jamba (state-space
blocks), RecurrentGemma (recurrent blocks, and a soft cap), and a CodeGen directory that TransformerLens boots but
cannot run. The logit lens needs only the accumulated stream and the readout: on Gemma 2, XGLM, Mamba, Jamba and
RecurrentGemma it equals TransformerLens's (and ends at the model's own logits).
"""

from __future__ import annotations

import os
from collections.abc import Callable
from pathlib import Path
from typing import Any

import pytest
import torch
from fourmodels import jitter_biases_and_norms, tokenizer

import mechwork
from mechwork.analysis.lens import logit_lens
from mechwork.analysis.logit import direct_logit_attribution, residual_decomposition
from mechwork.errors import MechworkError

os.environ.setdefault("HF_HUB_OFFLINE", "1")
ATOL = 1e-5
_L = {"hidden_size": 64, "num_hidden_layers": 2, "num_attention_heads": 4, "intermediate_size": 128,
      "max_position_embeddings": 64}


def _configs() -> dict[str, tuple[str, str, dict[str, Any]]]:
    """name -> (transformers model class, config class, config arguments)."""
    kv2 = {**_L, "num_key_value_heads": 2}
    return {
        "neox": ("GPTNeoXForCausalLM", "GPTNeoXConfig", {**_L, "rotary_pct": 0.25, "use_parallel_residual": True}),
        "qwen2": ("Qwen2ForCausalLM", "Qwen2Config", kv2),
        "llama-gqa": ("LlamaForCausalLM", "LlamaConfig", kv2),
        "mistral": ("MistralForCausalLM", "MistralConfig", {**kv2, "sliding_window": None}),
        "opt": ("OPTForCausalLM", "OPTConfig", {**_L, "ffn_dim": 128, "word_embed_proj_dim": 64, "pad_token_id": 0}),
        "gemma": ("GemmaForCausalLM", "GemmaConfig", {**_L, "num_key_value_heads": 1, "head_dim": 16,
                                                      "pad_token_id": 0}),
        "gptj": ("GPTJForCausalLM", "GPTJConfig", {"n_embd": 64, "n_layer": 2, "n_head": 4, "rotary_dim": 8,
                                                   "n_positions": 64}),
        "phi": ("PhiForCausalLM", "PhiConfig", {**_L, "partial_rotary_factor": 0.5}),
        "bloom": ("BloomForCausalLM", "BloomConfig", {"hidden_size": 64, "n_layer": 2, "n_head": 4}),
        "bigcode": ("GPTBigCodeForCausalLM", "GPTBigCodeConfig", {"n_embd": 64, "n_layer": 2, "n_head": 4,
                                                                 "n_positions": 64, "multi_query": True}),
        "falcon": ("FalconForCausalLM", "FalconConfig", {"hidden_size": 64, "num_hidden_layers": 2,
                                                         "num_attention_heads": 4, "new_decoder_architecture": False,
                                                         "multi_query": True, "parallel_attn": True, "alibi": False}),
        "stablelm": ("StableLmForCausalLM", "StableLmConfig", {**kv2, "partial_rotary_factor": 0.25}),
        "qwen3": ("Qwen3ForCausalLM", "Qwen3Config", {**kv2, "head_dim": 16}),
        "mixtral": ("MixtralForCausalLM", "MixtralConfig", {**kv2, "num_local_experts": 4, "num_experts_per_tok": 2}),
        # refused: what these models do is not final norm -> W_U + b_U of a sum of attention and MLP outputs
        "cohere": ("CohereForCausalLM", "CohereConfig", {**kv2, "logit_scale": 0.5, "pad_token_id": 0}),
        # scaled or capped logits: DLA scales its rows (Granite: TransformerLens's own DLA does not), the lens
        # reads through the cap; DLA refuses the cap
        "granite": ("GraniteForCausalLM", "GraniteConfig", {**kv2, "logits_scaling": 4.0, "embedding_multiplier": 2.0,
                                                            "residual_multiplier": 0.5}),
        "gemma2": ("Gemma2ForCausalLM", "Gemma2Config", {**kv2, "head_dim": 16, "pad_token_id": 0}),
        "xglm": ("XGLMForCausalLM", "XGLMConfig", {"d_model": 64, "num_layers": 2, "attention_heads": 4,
                                                   "ffn_dim": 128, "max_position_embeddings": 64, "pad_token_id": 0}),
        "bert": ("BertForMaskedLM", "BertConfig", {"hidden_size": 64, "num_hidden_layers": 1, "num_attention_heads": 4,
                                                   "intermediate_size": 128}),
        "mamba": ("MambaForCausalLM", "MambaConfig", {"hidden_size": 64, "num_hidden_layers": 2, "state_size": 8}),
        "jamba": ("JambaForCausalLM", "JambaConfig", {
            **kv2, "attn_layer_period": 2, "attn_layer_offset": 1, "expert_layer_period": 2, "expert_layer_offset": 1,
            "num_experts": 2, "mamba_d_state": 8, "use_mamba_kernels": False}),
        "recurrent-gemma": ("RecurrentGemmaForCausalLM", "RecurrentGemmaConfig", {
            **_L, "num_key_value_heads": 1, "lru_width": 64, "block_types": ["recurrent", "attention"]}),
        "codegen": ("CodeGenForCausalLM", "CodeGenConfig", {"n_embd": 64, "n_layer": 2, "n_head": 4, "rotary_dim": 8,
                                                            "n_positions": 64, "n_ctx": 64}),
    }


EXACT = ("neox", "qwen2", "llama-gqa", "mistral", "opt", "gemma", "gptj", "phi", "bloom", "bigcode", "falcon",
         "stablelm", "qwen3", "mixtral", "cohere")


def _save(name: str, out: Path) -> Path:
    """Save a tiny random ``name`` model (random biases, jittered norm weights) and the test tokenizer to ``out``."""
    import transformers

    model_cls, config_cls, kwargs = _configs()[name]
    tok = tokenizer()
    config = getattr(transformers, config_cls)(vocab_size=len(tok), bos_token_id=tok.bos_token_id,
                                               eos_token_id=tok.eos_token_id, **kwargs)
    torch.manual_seed(0)
    model = getattr(transformers, model_cls)(config)
    jitter_biases_and_norms(model)
    out.mkdir(parents=True, exist_ok=True)
    model.eval().save_pretrained(out)
    tok.save_pretrained(out)
    return out


@pytest.fixture(scope="module")
def model_dir(tmp_path_factory):
    root = tmp_path_factory.mktemp("architectures")
    built: dict[str, Path] = {}

    def get(name: str) -> Path:
        if name not in built:
            built[name] = _save(name, root / name)
        return built[name]

    return get


def _tokens(model: Any) -> torch.Tensor:
    return torch.randint(2, int(model.cfg.d_vocab), (2, 7), generator=torch.Generator().manual_seed(0))


@pytest.mark.parametrize("name", EXACT)
def test_the_three_analyses_equal_transformer_lens(model_dir, name):
    from transformer_lens.tools.analysis import direct_logit_attribution as tl_dla
    from transformer_lens.tools.analysis import logit_lens as tl_lens
    from transformers import AutoModelForCausalLM

    path = model_dir(name)
    raw = mechwork.load(path, device="cpu")
    ref = mechwork.load(path, device="cpu")
    ref.enable_compatibility_mode(disable_warnings=True)
    ref.eval()
    toks = _tokens(raw)
    logits = raw(toks)
    hf = AutoModelForCausalLM.from_pretrained(path).eval()
    with torch.no_grad():
        torch.testing.assert_close(logits, hf(toks).logits, atol=ATOL, rtol=0)
    a, w = torch.tensor([3, 11]), torch.tensor([5, 7])
    diff = logits[torch.arange(2), -1, a] - logits[torch.arange(2), -1, w]
    for unit in ("component", "head"):
        mine, theirs = direct_logit_attribution(raw, toks, a, w, unit=unit), tl_dla(ref, toks, a, w, unit=unit)
        torch.testing.assert_close(mine.values.sum(0), diff.float(), atol=ATOL, rtol=0)
        if unit == "component":
            assert list(mine.labels[:-1]) == theirs.labels
            torch.testing.assert_close(mine.values[:-1], theirs.attribution.float(), atol=ATOL, rtol=0)
        else:
            heads = [i for i, lab in enumerate(mine.labels) if lab[0] == "L"]
            rest = [i for i, lab in enumerate(mine.labels) if lab[0] != "L" and lab != "bias"]
            assert [mine.labels[i] for i in heads] == theirs.labels[:-1]
            torch.testing.assert_close(mine.values[heads], theirs.attribution[:-1].float(), atol=ATOL, rtol=0)
            torch.testing.assert_close(mine.values[rest].sum(0), theirs.attribution[-1].float(), atol=ATOL, rtol=0)
    if name == "mixtral":
        with pytest.raises(MechworkError, match="unit='neuron' needs a dense MLP") as exc:
            direct_logit_attribution(raw, toks, a, w, unit="neuron")
        assert "\n" not in str(exc.value)
    else:
        mine = direct_logit_attribution(raw, toks, a, w, unit="neuron", layer=0)
        _, cache = ref.run_with_cache(toks)
        stack = cache.get_neuron_results(0, pos_slice=-1).transpose(0, 1)
        n = stack.shape[0]
        assert mine.labels[n:] == ("0_mlp_bias", "rest", "bias")
        torch.testing.assert_close(mine.values[:n], cache.logit_attrs(stack, a, w, pos_slice=-1).float(),
                                   atol=ATOL, rtol=0)
        torch.testing.assert_close(mine.values.sum(0), diff.float(), atol=ATOL, rtol=0)
    dec = residual_decomposition(raw, toks, pos=3)
    _, cache = raw.run_with_cache(toks)
    torch.testing.assert_close(dec.vectors.sum(0), cache[f"blocks.{raw.cfg.n_layers - 1}.hook_resid_post"][:, 3],
                               atol=ATOL, rtol=0)
    lens = logit_lens(raw, toks)
    tl = tl_lens(raw, toks, positions=None, targets=lens.targets, return_type="logits")
    assert list(lens.labels) == tl.labels
    torch.testing.assert_close(lens.logits, tl.values[..., 0].float(), atol=ATOL, rtol=0)
    ranks = tl.readout.target_ranks
    assert ranks is not None and torch.equal(lens.ranks, ranks[..., 0])


REFUSED = {  # name -> what DLA's one line says
    "gemma2": "soft-caps its logits (output_logits_soft_cap 30)",
    "xglm": "cannot split this model exactly",
    "bert": "mlm_head",
    "mamba": "hybrid blocks (mixer)",
    "jamba": "hybrid blocks",
    "recurrent-gemma": "block 0 (RecurrentGemmaBlockBridge) has no blocks.0.hook_attn_out",
}
SPLIT = ("gemma2", "bert")  # their residual stream does split into attention and MLP outputs
LENS = ("gemma2", "xglm", "mamba", "jamba", "recurrent-gemma")  # their logit lens is exact, as TransformerLens's


@pytest.mark.parametrize("name", sorted(REFUSED))
def test_what_cannot_be_split_exactly_is_refused_in_one_line(model_dir, name):
    """DLA is refused in one line; the decomposition too where the stream does not split; the logit lens, which
    needs only the accumulated stream and the readout, equals TransformerLens's wherever the readout is exact."""
    from transformer_lens.tools.analysis import logit_lens as tl_lens

    raw = mechwork.load(model_dir(name), device="cpu")
    toks = _tokens(raw)
    calls: list[Callable[[], object]] = [lambda: direct_logit_attribution(raw, toks, 3, 5, unit="head")]
    if name not in LENS:
        calls.append(lambda: logit_lens(raw, toks))
    if name not in SPLIT:
        calls.append(lambda: residual_decomposition(raw, toks))
    for call in calls:
        with pytest.raises(MechworkError) as exc:
            call()
        assert "\n" not in str(exc.value)
    with pytest.raises(MechworkError, match=REFUSED[name].replace("(", r"\(").replace(")", r"\)")):
        direct_logit_attribution(raw, toks, 3, 5)
    if name in LENS:
        lens = logit_lens(raw, toks)
        theirs = tl_lens(raw, toks, positions=None, targets=lens.targets, return_type="logits")
        torch.testing.assert_close(lens.logits, theirs.values[..., 0].float(), atol=ATOL, rtol=0)
        torch.testing.assert_close(lens.logits[-1], raw(toks).gather(-1, lens.targets[..., None])[..., 0].float(),
                                   atol=ATOL, rtol=0)


def test_a_directory_transformer_lens_boots_but_cannot_run_is_refused_at_load(model_dir):
    path = model_dir("codegen")
    with pytest.raises(MechworkError) as exc:
        mechwork.load(path, device="cpu")
    msg = str(exc.value)
    assert "\n" not in msg and "CodeGenForCausalLM" in msg and "cannot run it" in msg and str(path) in msg


@pytest.mark.parametrize("dtype", [torch.float16, torch.bfloat16])
def test_half_precision_bridges_are_not_refused(model_dir, dtype):
    """A bridge booted in half precision rounds every part: the exactness check allows for it."""
    from transformer_lens.model_bridge import TransformerBridge

    model = TransformerBridge.boot_transformers(str(model_dir("llama-gqa")), device="cpu", dtype=dtype).eval()
    toks = _tokens(model)
    dla = direct_logit_attribution(model, toks, 3, 5, unit="head")
    assert dla.values.dtype == torch.float32 and len(dla.labels) == 14
    residual_decomposition(model, toks)
    logit_lens(model, toks)


def test_info_describes_each_architecture_from_its_weights(model_dir):
    from mechwork.summary import describe

    expect = {"opt": "4 heads of 16, d_mlp 128 (relu), LayerNorm, learned positions",  # cfg.d_mlp says 256
              "gemma": "4 heads of 16 (1 key/value head), gated d_mlp 128", "bloom": "alibi positions",
              "mixtral": "(2 key/value heads), a mixture of 4 gated d_mlp 128 (silu) experts (2 per token)",
              "mamba": "mixer blocks (state-space or linear attention)", "neox": "LayerNorm, rotary positions"}
    for name, part in expect.items():
        text = describe(str(model_dir(name)))
        assert part in text, (name, text)


def test_granite_logits_scaling_is_applied_to_the_rows(model_dir):
    """Granite divides its logits by ``logits_scaling`` (4 here): mechwork's rows sum to the model's own logit
    difference; TransformerLens's DLA (compatibility mode) leaves the division out, so sums to 4 times it."""
    from transformer_lens.tools.analysis import direct_logit_attribution as tl_dla
    from transformer_lens.tools.analysis import logit_lens as tl_lens

    raw = mechwork.load(model_dir("granite"), device="cpu")
    ref = mechwork.load(model_dir("granite"), device="cpu")
    ref.enable_compatibility_mode(disable_warnings=True)
    ref.eval()
    toks = _tokens(raw)
    a, w = torch.tensor([3, 11]), torch.tensor([5, 7])
    logits = raw(toks)
    diff = (logits[torch.arange(2), -1, a] - logits[torch.arange(2), -1, w]).float()
    for unit in ("component", "head", "neuron"):
        torch.testing.assert_close(direct_logit_attribution(raw, toks, a, w, unit=unit).values.sum(0), diff,
                                   atol=ATOL, rtol=0)
    mine, theirs = direct_logit_attribution(raw, toks, a, w), tl_dla(ref, toks, a, w)
    torch.testing.assert_close(4 * mine.values[:-1], theirs.attribution.float(), atol=ATOL, rtol=0)
    lens = logit_lens(raw, toks)
    tl = tl_lens(raw, toks, positions=None, targets=lens.targets, return_type="logits")
    torch.testing.assert_close(lens.logits, tl.values[..., 0].float(), atol=ATOL, rtol=0)


def test_a_tokenizer_that_adds_its_own_bos(model_dir, tmp_path):
    """Llama, Mistral and Gemma tokenizers put the BOS token in themselves: one BOS per prompt still, and a
    one-word answer is still one token."""
    import shutil

    from tokenizers import processors

    from mechwork.prompts import tokenize

    out = tmp_path / "llama-bos"
    shutil.copytree(model_dir("llama-gqa"), out)
    tok = tokenizer()
    bos = int(tok.bos_token_id)
    tok._tokenizer.post_processor = processors.TemplateProcessing(
        single="<|endoftext|> $A", pair="<|endoftext|> $A <|endoftext|> $B", special_tokens=[("<|endoftext|>", bos)])
    tok.save_pretrained(out)
    model = mechwork.load(out, device="cpu")
    assert model.tokenizer("the cat")["input_ids"][0] == bos  # the tokenizer adds it
    p = tokenize(model, "the cat sat")
    assert p.labels[0] == ("<|endoftext|>", "the", "cat", "sat")
    dla = direct_logit_attribution(model, ["the cat sat on the", "the dog sat on the"], "mat", " log")
    assert dla.target == "the logit of 'mat' minus that of 'log'" and dla.pos == 5
