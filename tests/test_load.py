"""mechwork.load and open_source on the four acceptance models, offline; and the bad inputs, one line each."""

from __future__ import annotations

import json
import os
import socket
import subprocess
import sys
from pathlib import Path

import pytest
import torch

import mechwork
from mechwork.errors import ConfigError, RunDirError
from mechwork.prompts import has_tokenizer, tokenize
from mechwork.source import open_source

sys.path.insert(0, os.path.dirname(__file__))
import fourmodels

KINDS = {"custom3l": "run", "gpt2": "model", "llama": "model", "induction-2l": "preset"}
ARCH = {"gpt2": "GPT2LMHeadModel", "llama": "LlamaForCausalLM"}


@pytest.fixture
def no_network(monkeypatch):
    """Every socket connection fails: a load that reached the network would raise.

    (``HF_HUB_OFFLINE`` is read by ``huggingface_hub`` at import, so setting it here is for subprocesses only;
    mechwork's boot turns the Hub's own flag on itself. The socket patch is what blocks.)
    """
    def refuse(*args, **kwargs):
        raise OSError("network blocked by the test")

    monkeypatch.setattr(socket.socket, "connect", refuse)
    monkeypatch.setattr(socket.socket, "connect_ex", refuse)
    monkeypatch.setattr(socket, "create_connection", refuse)
    monkeypatch.setenv("HF_HUB_OFFLINE", "1")
    with socket.socket() as s, pytest.raises(OSError, match="blocked"):  # a raw socket, not only the helper
        s.connect(("127.0.0.1", 9))


def _hf_logits(path, tokens):
    """The logits of the saved model through transformers itself (eager attention, as the bridge runs it)."""
    from transformers import AutoModelForCausalLM

    hf = AutoModelForCausalLM.from_pretrained(path, attn_implementation="eager", local_files_only=True).eval()
    with torch.no_grad():
        return hf(tokens).logits


@pytest.mark.parametrize("name", fourmodels.NAMES)
def test_each_model_loads_offline(name, four_models, no_network):
    x = four_models[name]
    model = mechwork.load(x, device="cpu")
    assert type(model).__name__ == "TransformerBridge" and not model.training
    src = open_source(x, device="cpu")
    assert src.kind == KINDS[name] and src.name == x and not src.model.training
    tokens = torch.randint(3, int(model.cfg.d_vocab), (2, 12), generator=torch.Generator().manual_seed(0))
    with torch.no_grad():
        logits = model(tokens)
    assert tuple(logits.shape) == (2, 12, model.cfg.d_vocab_out)
    assert torch.allclose(src.model(tokens), logits, atol=1e-6)  # the same weights, loaded twice
    if name in ARCH:  # a save_pretrained directory: no task or history, its tokenizer, the weights saved
        assert (src.task, src.model_config, src.train, src.metrics, src.step) == (None, None, None, None, None)
        assert src.description is not None and src.description.startswith(f"{ARCH[name]}: 2 layer(s), d_model 64")
        assert src.where == f"model directory {x} ({src.description})" and src.model_line == src.description
        assert has_tokenizer(model) and "a tokenizer" in src.description
        assert torch.allclose(logits, _hf_logits(x, tokens), atol=1e-5)
        assert tokenize(model, "the cat sat on the mat").lengths == (7,)
    else:  # a run or a preset: a task and a toy config, ids only
        assert src.task.kind == "induction" and src.model_config is not None and not has_tokenizer(model)
        assert src.description is None and src.model_line.startswith(f"{src.model_config.n_layers} layer(s)")


def test_custom3l_is_the_run_it_says(four_models):
    src = open_source(four_models["custom3l"], device="cpu")
    cfg = src.model_config
    assert cfg is not None
    assert (cfg.n_layers, cfg.normalization, cfg.act_fn, cfg.n_ctx) == (3, "LN", "gelu", 64)
    assert src.where == f"step 60 of run {four_models['custom3l']}" and src.step == 60


@pytest.mark.parametrize("arch", ["gpt2", "llama"])
def test_a_directory_without_tokenizer_boots_without_one(arch, tmp_path, no_network):
    d = fourmodels.hf_dir(arch, tmp_path / arch, with_tokenizer=False)
    assert not any((d / f).exists() for f in ("tokenizer.json", "tokenizer_config.json"))
    model = mechwork.load(str(d), device="cpu")
    assert model.tokenizer is None and not has_tokenizer(model)
    with pytest.raises(ConfigError, match=r"^this model has no tokenizer: give token ids"):
        tokenize(model, "the cat")
    tokens = torch.tensor([[5, 9, 30, 2]])
    with torch.no_grad():
        assert torch.allclose(model(tokens), _hf_logits(str(d), tokens), atol=1e-5)
    src = open_source(d, device="cpu")
    assert src.kind == "model" and str(src.description).endswith("no tokenizer (prompts are token ids)")


def test_info_describes_a_model_directory_from_its_cfg(four_models, no_network):
    from mechwork.summary import describe

    text = describe(four_models["llama"])
    lines = text.splitlines()
    assert lines[0] == f"model directory {four_models['llama']} (booted offline)"
    assert lines[1] == ("  model: LlamaForCausalLM: 2 layer(s), d_model 64, 4 heads of 16, gated d_mlp 128 (silu), "
                        "RMSNorm, rotary positions, d_vocab 120, n_ctx 64; a tokenizer")
    model = mechwork.load(four_models["gpt2"], device="cpu")
    n = sum(p.numel() for p in model.parameters())
    assert f"  parameters: {n:,}" in describe(four_models["gpt2"]).splitlines()
    assert "LayerNorm, learned positions" in describe(model)  # a bridge object too


def test_a_bridge_loads_as_is(four_models):
    model = mechwork.load(four_models["gpt2"], device="cpu")
    model.train()
    same = mechwork.load(model)
    assert same is model and not model.training
    src = open_source(model)
    assert src.kind == "bridge" and src.model is model and src.task is None and src.model_config is None
    assert src.where.startswith("TransformerBridge ") and "GPT2LMHeadModel: 2 layer(s)" in src.where
    with pytest.raises(ConfigError, match=r"^'step' must be None for a TransformerBridge"):
        mechwork.load(model, step=3)


def test_a_path_that_is_neither_run_preset_nor_model_dir(tmp_path):
    accepted = ("a run directory or one of modadd-113, induction-2l (a preset), a directory saved with "
                "save_pretrained, or a TransformerBridge")
    with pytest.raises(RunDirError, match=rf"^not a run directory \(no config.json\): '{tmp_path}' \(it is empty\); "
                                          rf"give {accepted}$".replace("(a preset)", r"\(a preset\)")):
        mechwork.load(tmp_path)
    with pytest.raises(ConfigError) as e:
        mechwork.load(tmp_path / "missing")
    assert str(e.value) == f"'path_or_preset' must be {accepted} (got '{tmp_path / 'missing'}': no such file or " \
                           "directory)"
    with pytest.raises(ConfigError, match="must be a run directory"):
        open_source(3.5)  # type: ignore[arg-type]
    neither = tmp_path / "neither"
    neither.mkdir()
    (neither / "config.json").write_text(json.dumps({"hello": 1}))
    with pytest.raises(ConfigError, match=r"is neither a run directory .* nor a model directory saved with "
                                          r"save_pretrained \(no model_type or architectures\)$"):
        mechwork.load(neither)


def test_an_architecture_transformer_lens_cannot_boot_is_named(tmp_path, no_network):
    d = tmp_path / "foo"
    d.mkdir()
    (d / "config.json").write_text(json.dumps({"architectures": ["FooForCausalLM"], "model_type": "foo",
                                               "hidden_size": 8}))
    with pytest.raises(ConfigError) as e:
        mechwork.load(d)
    msg = str(e.value)
    assert "\n" not in msg and "cannot boot architecture 'FooForCausalLM' (model_type 'foo')" in msg
    assert msg.endswith("transformer_lens.factories.architecture_adapter_factory.SUPPORTED_ARCHITECTURES")
    from transformer_lens.factories.architecture_adapter_factory import SUPPORTED_ARCHITECTURES

    assert "FooForCausalLM" not in SUPPORTED_ARCHITECTURES and "GPT2LMHeadModel" in SUPPORTED_ARCHITECTURES


def test_missing_or_corrupt_weights_are_one_line(tmp_path, four_models):
    from mechwork.errors import CheckpointError

    src = Path(four_models["gpt2"])
    (tmp_path / "none").mkdir()
    (tmp_path / "none" / "config.json").write_text((src / "config.json").read_text())
    with pytest.raises(CheckpointError, match=r"holds a config.json \(GPT2LMHeadModel\) but no weights \(model."
                                              r"safetensors or pytorch_model.bin\): save the model there"):
        mechwork.load(tmp_path / "none")
    (tmp_path / "none" / "model.safetensors").write_bytes((src / "model.safetensors").read_bytes()[:1000])
    with pytest.raises(CheckpointError, match=r"\(SafetensorError: .*header") as e:
        mechwork.load(tmp_path / "none")
    assert "\n" not in str(e.value)


def test_a_model_directory_takes_no_step(four_models):
    with pytest.raises(ConfigError, match=r"^'step' must be None for model directory .* \(got 5\)$"):
        mechwork.load(four_models["gpt2"], step=5)


def test_limits_tells_a_model_directory_from_json_alone(four_models, tmp_path):
    """The CLI's pre-torch check: a model directory is kind "model", from its config.json, torch not imported."""
    neither = tmp_path / "neither"
    neither.mkdir()
    (neither / "config.json").write_text("{}")
    code = (
        "import sys, mechwork.limits as L\n"
        f"print(L.resolve({four_models['gpt2']!r}), L.resolve({four_models['custom3l']!r}), L.resolve('modadd-113'))\n"
        "try:\n"
        f"    L.resolve({str(neither)!r})\n"
        "except Exception as e:\n"
        "    print(type(e).__name__)\n"
        "try:\n"
        f"    L.check_step('model', {four_models['gpt2']!r}, 3)\n"
        "except Exception as e:\n"
        "    print(type(e).__name__)\n"
        "print('torch' in sys.modules)\n"
    )
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, timeout=300)
    assert out.returncode == 0, out.stderr
    assert out.stdout.splitlines() == [
        f"('model', {four_models['gpt2']!r}) ('run', {four_models['custom3l']!r}) ('preset', 'modadd-113')",
        "ConfigError", "ConfigError", "False"]


def test_a_module_that_is_not_a_bridge_is_named_by_its_type():
    with pytest.raises(ConfigError) as e:
        mechwork.load(torch.nn.Sequential(torch.nn.Linear(2, 2), torch.nn.ReLU()))
    assert "\n" not in str(e.value) and str(e.value).endswith("or a TransformerBridge (got a Sequential)")


def test_unscaled_gpt2_attention_is_refused_because_the_bridge_would_scale_it(tmp_path, no_network):
    """TransformerLens's bridge divides GPT-2's attention scores by sqrt(d_head) even when the config says
    ``scale_attn_weights=false``, so its logits are not the model's: mechwork refuses such a directory in one
    line. The bridge is booted directly to show the difference is real (this test fails once TL honours the flag)."""
    from transformer_lens.model_bridge import TransformerBridge
    from transformers import GPT2Config, GPT2LMHeadModel

    torch.manual_seed(0)
    hf = GPT2LMHeadModel(GPT2Config(vocab_size=50, n_positions=16, n_embd=32, n_layer=1, n_head=4,
                                    scale_attn_weights=False))
    with torch.no_grad():
        for p in hf.parameters():
            p.mul_(3)
    hf.save_pretrained(tmp_path)
    tokens = torch.randint(0, 50, (1, 6))
    bridge = TransformerBridge.boot_transformers(str(tmp_path), device="cpu").eval()
    with torch.no_grad():
        assert (bridge(tokens) - _hf_logits(tmp_path, tokens)).abs().max() > 1e-2
    with pytest.raises(ConfigError) as e:
        mechwork.load(tmp_path)
    assert "\n" not in str(e.value) and "scale_attn_weights=false" in str(e.value)
