"""The four models of the own-model acceptance tests, built once per test session (no network).

* ``custom3l``: a run directory of a 3-layer ``ToyConfig`` (LayerNorm, GELU, n_ctx 64) trained briefly on
  the induction task;
* ``gpt2``: a directory saved with ``save_pretrained`` of a tiny GPT-2 built from a ``transformers`` config
  (random weights), with a BPE tokenizer trained offline by ``tokenizers``;
* ``llama``: the same for a tiny Llama (rotary, RMSNorm, gated MLP);
* ``induction-2l``: the embedded preset.

``build(name, root)`` returns what ``mechwork.load`` takes for that model (a path, or the preset name).
"""

from __future__ import annotations

import os
from pathlib import Path
from typing import Any

NAMES = ("custom3l", "gpt2", "llama", "induction-2l")

CORPUS = [
    "the cat sat on the mat and the dog sat on the log",
    "a quick brown fox jumps over the lazy dog in the park",
    "when mary and john went to the store john gave a drink to mary",
    "one two three four five six seven eight nine ten",
    "hello world this is a small test of a tiny model",
] * 20


def tokenizer():
    """A word-level BPE tokenizer of about 120 entries, trained offline on :data:`CORPUS`."""
    from tokenizers import Tokenizer, models, pre_tokenizers, trainers
    from transformers import PreTrainedTokenizerFast

    tok = Tokenizer(models.BPE(unk_token="[UNK]"))
    tok.pre_tokenizer = pre_tokenizers.Whitespace()
    tok.train_from_iterator(CORPUS, trainers.BpeTrainer(vocab_size=120, special_tokens=["[UNK]", "<|endoftext|>"]))
    return PreTrainedTokenizerFast(tokenizer_object=tok, unk_token="[UNK]", eos_token="<|endoftext|>",
                                   bos_token="<|endoftext|>", pad_token="<|endoftext|>")


def hf_dir(arch: str, out: Path, *, with_tokenizer: bool = True, n_ctx: int = 64) -> Path:
    """Save a tiny random ``arch`` ("gpt2" or "llama") model, and its tokenizer, to ``out``."""
    import torch
    from transformers import GPT2Config, GPT2LMHeadModel, LlamaConfig, LlamaForCausalLM

    tok = tokenizer()
    torch.manual_seed(0)
    model: Any
    if arch == "gpt2":
        model = GPT2LMHeadModel(GPT2Config(vocab_size=len(tok), n_positions=n_ctx, n_embd=64, n_layer=2, n_head=4,
                                           bos_token_id=tok.bos_token_id, eos_token_id=tok.eos_token_id))
    elif arch == "llama":
        model = LlamaForCausalLM(LlamaConfig(vocab_size=len(tok), hidden_size=64, intermediate_size=128,
                                             num_hidden_layers=2, num_attention_heads=4, num_key_value_heads=4,
                                             max_position_embeddings=n_ctx, bos_token_id=tok.bos_token_id,
                                             eos_token_id=tok.eos_token_id))
    else:
        raise ValueError(arch)
    out.mkdir(parents=True, exist_ok=True)
    model.eval().save_pretrained(out)
    if with_tokenizer:
        tok.save_pretrained(out)
    return out


def jitter_biases_and_norms(model: Any, seed: int = 7, *, norm_names: tuple[str, ...] = ("ln", "norm")) -> None:
    """In place: every bias drawn from N(0, 0.3^2), every norm weight from N(1, 0.3^2) (``seed``), so that a
    reading of the weights that drops a bias or a norm scale shows (tiny random models start with zero biases and
    unit norms)."""
    import torch

    g = torch.Generator().manual_seed(seed)
    with torch.no_grad():
        for name, p in sorted(model.named_parameters()):
            if name.endswith("bias"):
                p.copy_(0.3 * torch.randn(p.shape, generator=g))
            elif any(n in name for n in norm_names) and name.endswith("weight"):
                p.copy_(1 + 0.3 * torch.randn(p.shape, generator=g))


def custom3l_run(out: Path, steps: int = 60) -> Path:
    """A run directory: 3 layers, LayerNorm, GELU, n_ctx 64, trained ``steps`` steps on the induction task."""
    from mechwork.models import ToyConfig
    from mechwork.tasks import InductionTask
    from mechwork.training import TrainConfig, train

    task = InductionTask(d_vocab=48, seq_len=64, batch_size=32, n_eval=64)
    cfg = ToyConfig(n_layers=3, d_model=64, n_heads=4, d_head=16, d_mlp=128, d_vocab=48, d_vocab_out=48, n_ctx=64,
                    act_fn="gelu", normalization="LN", init="gpt2")
    train(task, cfg, TrainConfig(steps=steps, lr=1e-3, weight_decay=0.01, eval_every=steps, ckpt_every=steps,
                                 warmup_steps=0), out, quiet=True)
    return out


def build(name: str, root: Path) -> str:
    """What ``mechwork.load`` takes for model ``name``, built under ``root`` (a preset needs nothing built)."""
    os.environ.setdefault("HF_HUB_OFFLINE", "1")
    if name == "custom3l":
        return str(custom3l_run(root / "custom3l"))
    if name in ("gpt2", "llama"):
        return str(hf_dir(name, root / name))
    if name == "induction-2l":
        return name
    raise ValueError(name)


def sender_writes(model: Any, tokens: Any) -> dict[str, Any]:
    """Every edge sender's write from TransformerLens's cache (the edge runners' ``senders`` by hand): input =
    resid_pre of layer 0, head = its z @ W_O[h] (no b_O), MLP = mlp_out; detached."""
    _, cache = model.run_with_cache(tokens)
    out = {"input": cache["blocks.0.hook_resid_pre"]}
    for layer in range(int(model.cfg.n_layers)):
        z = cache[f"blocks.{layer}.attn.hook_z"]
        for h in range(int(model.cfg.n_heads)):
            out[f"L{layer}H{h}"] = z[:, :, h] @ model.W_O[layer, h]
        if f"blocks.{layer}.hook_mlp_out" in cache:
            out[f"MLP{layer}"] = cache[f"blocks.{layer}.hook_mlp_out"]
    return {k: v.detach() for k, v in out.items()}
