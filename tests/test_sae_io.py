"""SAE files in SAELens's format: bit-identical round trips, the cfg.json fields SAELens reads, SAELens-written
directories (6.x and 5.x layouts) loaded with SAELens's arithmetic, and one-line refusals of bad files."""

from __future__ import annotations

import json
from pathlib import Path

import pytest
import torch
from safetensors.torch import save_file

from mechwork.analysis.sae import SAE, SAEConfig
from mechwork.analysis.saeio import SAELENS_FIELDS, load_sae, read_sae_config, save_sae
from mechwork.errors import MechworkError

# The cfg.json fields SAELens reads, from its source (not from mechwork's constant):
# SAELens 6.18.0, sae_lens/saes/sae.py, SAEConfig (+ "architecture", which SAEConfig.from_dict reads to pick the class)
SAELENS_6_18 = ("architecture", "d_in", "d_sae", "dtype", "device", "apply_b_dec_to_input", "normalize_activations",
                "reshape_activations", "metadata")
# SAELens 6.18.0, sae_lens/saes/topk_sae.py, TopKSAEConfig
SAELENS_6_18_TOPK = ("k", "rescale_acts_by_decoder_norm")
# SAELens 6.18.0, sae_lens/loading/pretrained_sae_loaders.py: handle_config_defaulting reads the version here
# (< 6 or absent selects the 5.x reader), and SAEMetadata keeps model_name / hook_name
SAELENS_6_18_METADATA = ("sae_lens_version", "model_name", "hook_name", "hook_head_index", "context_size",
                         "prepend_bos", "dataset_path")
# SAELens 5.11.0, sae_lens/sae.py, SAEConfig: the fields without a default (SAEConfig.from_dict fails without them)
SAELENS_5_11_REQUIRED = ("architecture", "d_in", "d_sae", "activation_fn_str", "apply_b_dec_to_input",
                         "finetuning_scaling_factor", "context_size", "model_name", "hook_name", "hook_layer",
                         "hook_head_index", "prepend_bos", "dataset_path", "dataset_trust_remote_code",
                         "normalize_activations", "dtype", "device", "sae_lens_training_version")
WEIGHT_KEYS = {"W_enc", "W_dec", "b_enc", "b_dec"}  # sae_lens state_dict keys (both versions)


def _trained_like(cfg: SAEConfig, seed: int = 0) -> SAE:
    """An SAE with nonzero biases and non-trivial weights (a fresh one has zero biases)."""
    sae = SAE(cfg, seed=seed)
    g = torch.Generator().manual_seed(seed + 1)
    with torch.no_grad():
        for p in sae.parameters():
            p.add_(0.1 * torch.randn(p.shape, generator=g, dtype=p.dtype))
        sae.normalize_decoder_()
    return sae


@pytest.mark.parametrize("cfg", [
    SAEConfig(d_in=12, d_sae=40, hook_name="blocks.0.mlp.hook_post", model_name="modadd-113"),
    SAEConfig(d_in=12, d_sae=40, architecture="topk", k=5, hook_name="blocks.1.hook_resid_pre",
              model_name="induction-2l", apply_b_dec_to_input=False),
    SAEConfig(d_in=6, d_sae=9, dtype="float64"),
])
def test_round_trip_is_bit_identical(tmp_path: Path, cfg: SAEConfig):
    sae = _trained_like(cfg)
    d = save_sae(sae, tmp_path / "sae", metadata={"context_size": 3, "dataset_path": "modadd p=113"})
    assert sorted(p.name for p in d.iterdir()) == ["cfg.json", "sae_weights.safetensors"]  # no temp files left
    back = load_sae(d)
    assert back.cfg == cfg
    for name in WEIGHT_KEYS:
        a, b = getattr(sae, name), getattr(back, name)
        assert a.dtype == b.dtype and torch.equal(a, b), name
    x = torch.randn(7, cfg.d_in, dtype=getattr(torch, cfg.dtype))
    assert torch.equal(sae(x), back(x))


def test_cfg_json_has_the_fields_saelens_reads(tmp_path: Path):
    for cfg in (SAEConfig(d_in=8, d_sae=16, hook_name="blocks.0.hook_resid_pre"),
                SAEConfig(d_in=8, d_sae=16, architecture="topk", k=3, hook_name="blocks.2.mlp.hook_post")):
        d = save_sae(_trained_like(cfg), tmp_path / cfg.architecture)
        raw = json.loads((d / "cfg.json").read_text())
        missing6 = [f for f in SAELENS_6_18 if f not in raw]
        assert not missing6, f"SAELens 6.18.0 fields missing: {missing6}"
        if cfg.architecture == "topk":
            assert all(f in raw for f in SAELENS_6_18_TOPK) and raw["k"] == 3
            assert raw["rescale_acts_by_decoder_norm"] is False
            assert raw["activation_fn_str"] == "topk" and raw["activation_fn_kwargs"] == {"k": 3}
        assert all(f in raw["metadata"] for f in SAELENS_6_18_METADATA)
        assert int(raw["metadata"]["sae_lens_version"].split(".")[0]) >= 6  # SAELens 6 reads it with the 6.x reader
        assert raw["metadata"]["hook_name"] == raw["hook_name"] == cfg.hook_name
        missing5 = [f for f in SAELENS_5_11_REQUIRED if f not in raw]
        assert not missing5, f"SAELens 5.11.0 required fields missing: {missing5}"
        assert raw["hook_layer"] == int(cfg.hook_name.split(".")[1])
        assert raw["normalize_activations"] == "none" and raw["reshape_activations"] == "none"
        from safetensors import safe_open

        with safe_open(str(d / "sae_weights.safetensors"), framework="pt") as f:
            assert set(f.keys()) == WEIGHT_KEYS
    # the module's record of SAELens's fields agrees with this list, version and file included
    recorded = {(r.version, r.path): set(r.fields) for r in SAELENS_FIELDS}
    assert set(SAELENS_6_18) <= recorded[("6.18.0", "sae_lens/saes/sae.py")]
    assert set(SAELENS_6_18_TOPK) <= recorded[("6.18.0", "sae_lens/saes/topk_sae.py")]
    assert set(SAELENS_5_11_REQUIRED) <= recorded[("5.11.0", "sae_lens/sae.py")]


# -- directories as SAELens writes them ------------------------------------------------------------------------------
def _saelens_weights(d_in: int, d_sae: int, seed: int, unit: bool) -> dict[str, torch.Tensor]:
    g = torch.Generator().manual_seed(seed)
    w_dec = torch.randn(d_sae, d_in, generator=g)
    w_dec = w_dec / w_dec.norm(dim=-1, keepdim=True) if unit else w_dec * 0.3  # SAELens 6 leaves norms free
    return {"W_enc": torch.randn(d_in, d_sae, generator=g) * 0.5, "W_dec": w_dec,
            "b_enc": torch.randn(d_sae, generator=g) * 0.1, "b_dec": torch.randn(d_in, generator=g) * 0.1}


def _write(d: Path, cfg: dict, w: dict[str, torch.Tensor]) -> Path:
    d.mkdir(parents=True)
    save_file(w, str(d / "sae_weights.safetensors"))  # as SAELens's save_model: no metadata
    (d / "cfg.json").write_text(json.dumps(cfg))
    return d


def _saelens_forward(w: dict[str, torch.Tensor], x: torch.Tensor, *, k: int | None, rescale: bool = False,
                     apply_b_dec: bool = True) -> torch.Tensor:
    """SAELens 6.18's StandardSAE / TopKSAE encode + decode, written out by hand."""
    sae_in = x - w["b_dec"] * apply_b_dec
    hidden_pre = sae_in @ w["W_enc"] + w["b_enc"]
    if rescale:
        hidden_pre = hidden_pre * w["W_dec"].norm(dim=-1)
    if k is None:
        acts = torch.relu(hidden_pre)
    else:
        vals, idx = torch.topk(hidden_pre, k=k, dim=-1)
        acts = torch.zeros_like(hidden_pre).scatter(-1, idx, vals.relu())
    if rescale:
        acts = acts / w["W_dec"].norm(dim=-1)
    return acts @ w["W_dec"] + w["b_dec"]


def _cfg6(arch: str, d_in: int, d_sae: int, **extra) -> dict:
    """SAELens 6.18 TrainingSAE.save_inference_model's cfg.json (get_inference_sae_cfg_dict)."""
    return {"d_in": d_in, "d_sae": d_sae, "dtype": "float32", "device": "cpu", "apply_b_dec_to_input": True,
            "normalize_activations": "none", "reshape_activations": "none", "architecture": arch,
            "metadata": {"sae_lens_version": "6.18.0", "sae_lens_training_version": "6.18.0", "model_name": "gpt2",
                         "hook_name": "blocks.3.hook_resid_pre", "hook_head_index": None, "context_size": 128,
                         "prepend_bos": True, "seqpos_slice": [None], "model_from_pretrained_kwargs": {}},
            **extra}


def _cfg5(d_in: int, d_sae: int, act: str = "relu", kwargs: dict | None = None, arch: str = "standard") -> dict:
    """SAELens 5.11 SAEConfig.to_dict's cfg.json (flat)."""
    return {"architecture": arch, "d_in": d_in, "d_sae": d_sae, "dtype": "float32", "device": "cpu",
            "model_name": "gpt2-small", "hook_name": "blocks.8.hook_resid_pre", "hook_layer": 8,
            "hook_head_index": None, "activation_fn_str": act, "activation_fn_kwargs": kwargs or {},
            "apply_b_dec_to_input": True, "finetuning_scaling_factor": False, "sae_lens_training_version": "5.11.0",
            "prepend_bos": True, "dataset_path": "Skylion007/openwebtext", "dataset_trust_remote_code": True,
            "context_size": 128, "normalize_activations": "none", "neuronpedia_id": None,
            "model_from_pretrained_kwargs": {}, "seqpos_slice": [None]}


@pytest.mark.parametrize("case", ["6-standard", "6-topk", "6-topk-rescaled", "5-standard", "5-topk", "5-topk-old"])
def test_saelens_written_directories_load_with_saelens_arithmetic(tmp_path: Path, case: str):
    d_in, d_sae = 10, 24
    rescale = case == "6-topk-rescaled"
    w = _saelens_weights(d_in, d_sae, seed=len(case), unit=case.startswith("5"))
    k = None if case.endswith("standard") else 4
    cfg = {"6-standard": _cfg6("standard", d_in, d_sae),
           "6-topk": _cfg6("topk", d_in, d_sae, k=4, rescale_acts_by_decoder_norm=False),
           "6-topk-rescaled": _cfg6("topk", d_in, d_sae, k=4, rescale_acts_by_decoder_norm=True),
           "5-standard": _cfg5(d_in, d_sae),
           "5-topk": _cfg5(d_in, d_sae, "topk", {"k": 4}, arch="topk"),
           "5-topk-old": _cfg5(d_in, d_sae, "topk", {"k": 4}, arch="standard")}[case]
    d = _write(tmp_path / case, cfg, w)
    sae = load_sae(d)
    assert sae.cfg.architecture == ("standard" if k is None else "topk") and sae.cfg.k == k
    assert sae.cfg.hook_name == ("blocks.3.hook_resid_pre" if case.startswith("6") else "blocks.8.hook_resid_pre")
    x = torch.randn(32, d_in, generator=torch.Generator().manual_seed(5))
    want = _saelens_forward(w, x, k=k, rescale=rescale)
    got = sae(x)
    if rescale:  # folded into the encoder: equal up to rounding
        assert torch.allclose(got, want, atol=1e-5, rtol=1e-5)
    else:
        assert torch.equal(got, want) or torch.allclose(got, want, atol=1e-6, rtol=0)
        assert torch.equal(sae.W_dec, w["W_dec"]) and torch.equal(sae.W_enc, w["W_enc"])


# -- bad files, one line each ----------------------------------------------------------------------------------------
def _one_line(exc: pytest.ExceptionInfo) -> str:
    msg = str(exc.value)
    assert "\n" not in msg and isinstance(exc.value, MechworkError), msg
    return msg


@pytest.mark.parametrize("layout,drop", [("6", "d_sae"), ("6", "architecture"), ("6", "k"), ("5", "dtype"),
                                         ("5", "d_in")])
def test_cfg_json_with_missing_fields_is_refused_naming_them(tmp_path: Path, layout: str, drop: str):
    cfg = _cfg6("topk", 10, 24, k=4) if layout == "6" else _cfg5(10, 24)
    cfg.pop(drop)
    d = _write(tmp_path / "x", cfg, _saelens_weights(10, 24, 0, True))
    with pytest.raises(MechworkError) as e:
        load_sae(d)
    msg = _one_line(e)
    assert drop in msg and str(d / "cfg.json") in msg


def test_two_missing_fields_are_both_named(tmp_path: Path):
    cfg = _cfg6("standard", 10, 24)
    del cfg["d_in"], cfg["dtype"]
    d = _write(tmp_path / "x", cfg, _saelens_weights(10, 24, 0, True))
    with pytest.raises(MechworkError) as e:
        read_sae_config(d)
    assert "d_in" in _one_line(e) and "dtype" in str(e.value)


@pytest.mark.parametrize("arch", ["jumprelu", "gated"])
def test_unknown_architectures_are_refused(tmp_path: Path, arch: str):
    d = _write(tmp_path / arch, _cfg6(arch, 10, 24), _saelens_weights(10, 24, 0, True))
    with pytest.raises(MechworkError) as e:
        load_sae(d)
    assert repr(arch) in _one_line(e) and "not supported" in str(e.value)


def test_topk_k_larger_than_d_sae_is_refused(tmp_path: Path):
    d = _write(tmp_path / "k", _cfg6("topk", 10, 24, k=30), _saelens_weights(10, 24, 0, True))
    with pytest.raises(MechworkError) as e:
        load_sae(d)
    msg = _one_line(e)
    assert "'k'" in msg and "d_sae=24" in msg and "(got 30)" in msg


def test_normalisation_and_hook_z_are_refused(tmp_path: Path):
    d = _write(tmp_path / "n", _cfg6("standard", 10, 24, normalize_activations="expected_average_only_in"),
               _saelens_weights(10, 24, 0, True))
    with pytest.raises(MechworkError) as e:
        load_sae(d)
    assert "normalize_activations" in _one_line(e)
    d = _write(tmp_path / "z", _cfg6("standard", 10, 24, reshape_activations="hook_z"),
               _saelens_weights(10, 24, 0, True))
    with pytest.raises(MechworkError) as e:
        load_sae(d)
    assert "hook_z" in _one_line(e)


def test_tensor_shapes_are_checked_against_the_cfg(tmp_path: Path):
    d = _write(tmp_path / "s", _cfg6("standard", 10, 24), _saelens_weights(10, 20, 0, True))
    with pytest.raises(MechworkError) as e:
        load_sae(d)
    msg = _one_line(e)
    assert "W_enc" in msg and "(10, 20)" in msg and "(10, 24)" in msg


def test_files_from_different_saves_are_refused(tmp_path: Path):
    cfg = SAEConfig(d_in=6, d_sae=10)
    a = save_sae(_trained_like(cfg, seed=1), tmp_path / "a")
    b = save_sae(_trained_like(cfg, seed=2), tmp_path / "b")
    (a / "sae_weights.safetensors").write_bytes((b / "sae_weights.safetensors").read_bytes())
    with pytest.raises(MechworkError) as e:
        load_sae(a)
    assert "different saves" in _one_line(e)


def test_a_pickle_is_never_unpickled(tmp_path: Path):
    d = tmp_path / "p"
    d.mkdir()
    (d / "cfg.json").write_text(json.dumps(_cfg6("standard", 4, 8)))
    torch.save(_saelens_weights(4, 8, 0, True), d / "sae_weights.safetensors")  # a pickle under the right name
    with pytest.raises(MechworkError) as e:
        load_sae(d)
    assert "corrupt SAE weights" in _one_line(e)
    with pytest.raises(MechworkError) as e:
        load_sae(tmp_path / "nowhere")
    assert "cfg.json" in _one_line(e)


def test_save_refuses_metadata_that_overrides_the_config(tmp_path: Path):
    with pytest.raises(MechworkError) as e:
        save_sae(SAE(SAEConfig(d_in=4, d_sae=8)), tmp_path / "m", metadata={"hook_name": "x"})
    assert "hook_name" in _one_line(e)
