"""SAE files in SAELens's on-disk format: a directory with ``cfg.json`` and ``sae_weights.safetensors``.

:func:`save_sae` writes SAELens 6's layout (the fields of its ``SAEConfig`` at the top level, the model and hook
under ``metadata``) together with the flat fields SAELens 5 reads (``hook_name``, ``hook_layer``,
``activation_fn_str``, ``activation_fn_kwargs``, ...), so either version's ``SAE.load_from_disk`` accepts the
directory; the weights are safetensors with SAELens's key names ``W_enc``, ``W_dec``, ``b_enc``, ``b_dec``. Each
file is written atomically and ``cfg.json`` records the weights' content hash, so a directory whose two files
come from different saves is refused. Nothing is ever unpickled.

:func:`load_sae` reads both layouts, ours and SAELens's own saves (standard and topk; a topk SAE trained with
``rescale_acts_by_decoder_norm`` has the decoder norms folded into the encoder, which computes the same latents
and reconstruction). It refuses, in one line naming the file: a missing field, an architecture mechwork does not
have (jumprelu, gated, ...), activation normalisation or hook_z reshaping, and tensors whose shapes disagree
with the config. :data:`SAELENS_FIELDS` lists the fields SAELens reads, with its version and source file.

Example::

    >>> import tempfile, torch
    >>> from mechwork.analysis.sae import SAE, SAEConfig
    >>> sae = SAE(SAEConfig(d_in=4, d_sae=8, architecture="topk", k=2, hook_name="blocks.0.hook_resid_pre"))
    >>> d = save_sae(sae, tempfile.mkdtemp() + "/sae")
    >>> back = load_sae(d)
    >>> back.cfg == sae.cfg, all(torch.equal(a, b) for a, b in zip(sae.parameters(), back.parameters()))
    (True, True)
"""

from __future__ import annotations

import json
import re
from collections.abc import Mapping
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import torch

from mechwork.analysis.sae import SAE, SAEConfig
from mechwork.errors import CheckpointError, ConfigError
from mechwork.io import (
    HASH_KEY,
    first_non_finite,
    load_json,
    read_safetensors,
    save_tensors_atomic,
    tensors_digest,
    write_json_atomic,
)

__all__ = ["CFG_FILENAME", "SAELENS_FIELDS", "SAELENS_VERSION", "WEIGHTS_FILENAME", "SAELensFields", "load_sae",
           "read_sae_config", "save_sae"]

CFG_FILENAME = "cfg.json"  # sae_lens/constants.py SAE_CFG_FILENAME
WEIGHTS_FILENAME = "sae_weights.safetensors"  # sae_lens/constants.py SAE_WEIGHTS_FILENAME
WEIGHT_KEYS = ("W_enc", "W_dec", "b_enc", "b_dec")
SAELENS_VERSION = "6.18.0"  # the layout written (metadata.sae_lens_version >= 6 selects SAELens 6's reader)


@dataclass(frozen=True)
class SAELensFields:
    """The ``cfg.json`` fields one SAELens class reads, with the version and file they come from."""

    version: str
    path: str
    where: str
    fields: tuple[str, ...]


SAELENS_FIELDS: tuple[SAELensFields, ...] = (
    SAELensFields("6.18.0", "sae_lens/saes/sae.py", "SAEConfig (every architecture; 'architecture' picks the class)",
                  ("architecture", "d_in", "d_sae", "dtype", "device", "apply_b_dec_to_input",
                   "normalize_activations", "reshape_activations", "metadata")),
    SAELensFields("6.18.0", "sae_lens/saes/topk_sae.py", "TopKSAEConfig (architecture 'topk')",
                  ("k", "rescale_acts_by_decoder_norm")),
    SAELensFields("6.18.0", "sae_lens/loading/pretrained_sae_loaders.py", "LLM_METADATA_KEYS (cfg['metadata'])",
                  ("model_name", "hook_name", "model_class_name", "hook_head_index", "model_from_pretrained_kwargs",
                   "prepend_bos", "exclude_special_tokens", "neuronpedia_id", "context_size", "seqpos_slice",
                   "dataset_path", "sae_lens_version", "sae_lens_training_version", "hook_name_out",
                   "hook_head_index_out")),
    SAELensFields("5.11.0", "sae_lens/sae.py", "SAEConfig (flat; fields without a default must be present)",
                  ("architecture", "d_in", "d_sae", "activation_fn_str", "apply_b_dec_to_input",
                   "finetuning_scaling_factor", "context_size", "model_name", "hook_name", "hook_layer",
                   "hook_head_index", "prepend_bos", "dataset_path", "dataset_trust_remote_code",
                   "normalize_activations", "dtype", "device", "sae_lens_training_version", "activation_fn_kwargs",
                   "neuronpedia_id", "model_from_pretrained_kwargs", "seqpos_slice")),
)

_DTYPES = {"float32": "float32", "torch.float32": "float32", "float64": "float64", "torch.float64": "float64",
           "float16": "float32", "torch.float16": "float32", "bfloat16": "float32", "torch.bfloat16": "float32"}
_OTHER_ARCHITECTURES = ("jumprelu", "gated", "batchtopk", "matryoshka_batchtopk", "transcoder", "skip_transcoder",
                        "jumprelu_transcoder")
_RESERVED = ("model_name", "hook_name", "sae_lens_version")


def _hook_layer(hook_name: str) -> int:
    m = re.match(r"blocks\.(\d+)\.", hook_name)
    return int(m.group(1)) if m else 0


def _cfg_dict(sae: SAE, metadata: Mapping[str, Any], digest: str) -> dict[str, Any]:
    c = sae.cfg
    topk = c.architecture == "topk"
    meta: dict[str, Any] = {
        "sae_lens_version": SAELENS_VERSION, "sae_lens_training_version": None, "model_name": c.model_name,
        "hook_name": c.hook_name, "hook_head_index": None, "model_class_name": "HookedTransformer",
        "model_from_pretrained_kwargs": {}, "prepend_bos": False, "context_size": None, "dataset_path": "",
        "neuronpedia_id": None, "seqpos_slice": [None], "exclude_special_tokens": False,
    }
    meta.update(metadata)
    return {
        # SAELens 6 (sae_lens/saes/sae.py SAEConfig.to_dict)
        "architecture": c.architecture, "d_in": c.d_in, "d_sae": c.d_sae, "dtype": c.dtype, "device": "cpu",
        "apply_b_dec_to_input": c.apply_b_dec_to_input, "normalize_activations": "none",
        "reshape_activations": "none", "metadata": meta,
        **({"k": c.k, "rescale_acts_by_decoder_norm": False} if topk else {}),
        # SAELens 5 (flat, sae_lens/sae.py SAEConfig.to_dict): ignored by SAELens 6's reader
        "model_name": c.model_name, "hook_name": c.hook_name, "hook_layer": _hook_layer(c.hook_name),
        "hook_head_index": None, "activation_fn_str": "topk" if topk else "relu",
        "activation_fn_kwargs": {"k": c.k} if topk else {}, "finetuning_scaling_factor": False,
        "context_size": meta["context_size"], "prepend_bos": meta["prepend_bos"], "dataset_path": meta["dataset_path"],
        "dataset_trust_remote_code": False, "sae_lens_training_version": None, "neuronpedia_id": None,
        "model_from_pretrained_kwargs": {}, "seqpos_slice": [None],
        # mechwork: the weights this cfg.json was written with
        "mechwork": {"weights_sha256": digest},
    }


def save_sae(sae: SAE, directory: str | Path, *, metadata: Mapping[str, Any] | None = None) -> Path:
    """Write ``sae`` to ``directory`` (created if need be) in SAELens's format; ``metadata`` adds JSON fields to
    ``cfg.json``'s ``metadata`` (e.g. ``context_size``, ``prepend_bos``, ``dataset_path``). Returns the directory."""
    metadata = dict(metadata or {})
    clash = [k for k in _RESERVED if k in metadata]
    if clash:
        raise ConfigError(f"save_sae's metadata may not set {', '.join(clash)}: they come from the SAE's config")
    try:
        json.dumps(metadata)
    except (TypeError, ValueError) as e:
        raise ConfigError(f"save_sae's metadata must be JSON (got {e})") from None
    directory = Path(directory)
    tensors = {k: getattr(sae, k).detach().to("cpu").contiguous() for k in WEIGHT_KEYS}
    bad = first_non_finite(tensors)
    if bad is not None:
        raise ConfigError(f"SAE tensor {bad!r} holds NaN or inf: not saved")
    digest = tensors_digest(tensors)
    directory.mkdir(parents=True, exist_ok=True)
    save_tensors_atomic(tensors, directory / WEIGHTS_FILENAME)
    write_json_atomic(_cfg_dict(sae, metadata, digest), directory / CFG_FILENAME)
    return directory


def _version(cfg: Mapping[str, Any]) -> int:
    """SAELens's choice of reader: the major version in ``sae_lens_version`` (top level or metadata), else 5."""
    meta = cfg.get("metadata")
    if not isinstance(meta, dict):
        meta = {}
    v = cfg.get("sae_lens_version") or meta.get("sae_lens_version")
    m = re.match(r"\s*(\d+)", str(v)) if v else None
    return int(m.group(1)) if m else 5


def _need(cfg: Mapping[str, Any], names: tuple[str, ...], path: Path, layout: str) -> None:
    missing = [n for n in names if n not in cfg]
    if missing:
        raise ConfigError(f"{path} is missing field(s) {', '.join(missing)} (SAELens {layout} layout)")


def read_sae_config(directory: str | Path) -> SAEConfig:
    """The :class:`SAEConfig` in ``directory/cfg.json`` (either SAELens layout)."""
    return _read_config(directory)[0]


def _read_config(directory: str | Path) -> tuple[SAEConfig, bool]:
    """The config, and whether a topk SAE's decoder norms must be folded into the encoder
    (``rescale_acts_by_decoder_norm``)."""
    path = Path(directory) / CFG_FILENAME
    if not path.is_file():
        raise CheckpointError(f"no SAE config at {path} (an SAE directory holds {CFG_FILENAME} and "
                              f"{WEIGHTS_FILENAME})")
    raw = load_json(path)
    if not isinstance(raw, dict):
        raise ConfigError(f"{path} must hold a JSON object (got {type(raw).__name__})")
    cfg: dict[str, Any] = raw
    rename = {"hook_point": "hook_name", "hook_point_head_index": "hook_head_index",
              "activation_fn": "activation_fn_str"}
    if _version(cfg) >= 6:
        _need(cfg, ("architecture", "d_in", "d_sae", "dtype"), path, "6.x")
        meta = cfg.get("metadata") or {}
        arch = cfg["architecture"]
        if arch == "topk":
            _need(cfg, ("k",), path, "6.x topk")
        k = cfg.get("k")
        hook, model, head = meta.get("hook_name") or "", meta.get("model_name") or "", meta.get("hook_head_index")
        reshape = cfg.get("reshape_activations", "none")
        rescale = bool(cfg.get("rescale_acts_by_decoder_norm", False)) and arch == "topk"
    else:
        cfg = {rename.get(key, key): v for key, v in cfg.items()}
        _need(cfg, ("d_in", "d_sae", "dtype"), path, "5.x")
        act = cfg.get("activation_fn_str", "relu")
        arch = cfg.get("architecture", "standard")
        kwargs = cfg.get("activation_fn_kwargs") or {}
        if act == "topk" or arch == "topk":
            if "k" not in kwargs:
                raise ConfigError(f"{path} is missing field(s) activation_fn_kwargs.k (SAELens 5.x topk layout)")
            arch, k = "topk", kwargs["k"]
        elif act != "relu":
            raise ConfigError(f"{path}: activation function {act!r} is not supported (mechwork reads relu and topk)")
        else:
            k = None
        hook, model, head = cfg.get("hook_name") or "", cfg.get("model_name") or "", cfg.get("hook_head_index")
        reshape = "hook_z" if "hook_z" in hook else "none"
        rescale = False
        if cfg.get("finetuning_scaling_factor"):
            raise ConfigError(f"{path}: finetuning_scaling_factor is not supported")
    if arch in _OTHER_ARCHITECTURES:
        raise ConfigError(f"{path}: architecture {arch!r} is not supported (mechwork reads standard and topk SAEs)")
    norm = cfg.get("normalize_activations", "none")
    if norm not in ("none", None, False):
        raise ConfigError(f"{path}: normalize_activations={norm!r} is not supported (mechwork's SAE reads the raw "
                          "activation): fold the scaling into the weights first")
    if reshape != "none":
        raise ConfigError(f"{path}: reshape_activations={reshape!r} is not supported (the SAE must read the hook's "
                          "last dimension)")
    if head is not None:
        raise ConfigError(f"{path}: hook_head_index={head!r} is not supported (the SAE must read the whole hook)")
    dtype = _DTYPES.get(str(cfg["dtype"]))
    if dtype is None:
        raise ConfigError(f"{path}: dtype {cfg['dtype']!r} is not supported (float32, float64, float16, bfloat16)")
    try:
        sae_cfg = SAEConfig(d_in=cfg["d_in"], d_sae=cfg["d_sae"], architecture=arch, k=k, hook_name=hook,
                            model_name=model, apply_b_dec_to_input=bool(cfg.get("apply_b_dec_to_input", True)),
                            dtype=dtype)
    except ConfigError as e:
        raise ConfigError(f"{path}: {e}") from None
    return sae_cfg, rescale


def load_sae(directory: str | Path, *, device: torch.device | str = "cpu") -> SAE:
    """The SAE saved in ``directory`` (by :func:`save_sae` or SAELens; see the module docstring)."""
    directory = Path(directory)
    cfg, rescale = _read_config(directory)
    path = directory / WEIGHTS_FILENAME
    tensors, meta = read_safetensors(path, "SAE weights")
    scale = tensors.pop("scaling_factor", None)  # SAELens wrote an all-ones one for a while
    if scale is not None and not torch.equal(scale, torch.ones_like(scale)):
        raise ConfigError(f"{path}: a scaling_factor other than 1 (finetuning scaling) is not supported")
    missing = [k for k in WEIGHT_KEYS if k not in tensors]
    extra = sorted(set(tensors) - set(WEIGHT_KEYS))
    if missing or extra:
        raise CheckpointError(f"{path} must hold exactly {', '.join(WEIGHT_KEYS)} (missing: {missing or 'none'}; "
                              f"unexpected: {extra or 'none'})")
    want = {"W_enc": (cfg.d_in, cfg.d_sae), "W_dec": (cfg.d_sae, cfg.d_in), "b_enc": (cfg.d_sae,), "b_dec": (cfg.d_in,)}
    for k, shape in want.items():
        if tuple(tensors[k].shape) != shape:
            raise CheckpointError(f"{path}: tensor {k} has shape {tuple(tensors[k].shape)}, but cfg.json "
                                  f"(d_in={cfg.d_in}, d_sae={cfg.d_sae}) needs {shape}")
    recorded = (load_json(directory / CFG_FILENAME).get("mechwork") or {}).get("weights_sha256")
    for what, h in (("cfg.json", recorded), ("its own metadata", meta.get(HASH_KEY))):
        if h is not None and h != tensors_digest(tensors):
            raise CheckpointError(f"{path} does not match the content hash recorded in {what}: the directory's "
                                  "files come from different saves, or the weights were changed")
    bad = first_non_finite(tensors)
    if bad is not None:
        raise CheckpointError(f"{path}: tensor {bad!r} holds NaN or inf")
    dtype = getattr(torch, cfg.dtype)
    tensors = {k: v.to(dtype) for k, v in tensors.items()}
    if rescale:  # SAELens: pre *= |W_dec|, acts /= |W_dec| before decoding; folded (sae_lens _fold_norm_topk)
        norms = tensors["W_dec"].norm(dim=-1)
        tensors["W_enc"] = tensors["W_enc"] * norms
        tensors["b_enc"] = tensors["b_enc"] * norms
        tensors["W_dec"] = tensors["W_dec"] / norms[:, None]
    sae = SAE(cfg, device=device)
    with torch.no_grad():
        for k in WEIGHT_KEYS:
            getattr(sae, k).copy_(tensors[k])
    return sae
