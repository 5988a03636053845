"""Toy transformers as TransformerLens 4 ``TransformerBridge`` models.

This is the one module that touches TransformerLens internals. Everything else
in mechwork sees a bridge (hook names, ``run_with_cache``, ``run_with_hooks``)
or the plain weight dict that :func:`weights` returns (or, per attention
head, the TransformerLens-layout matrices of :func:`head_weights`).

A frozen :class:`ToyConfig` describes the architecture; :func:`build_model`
boots it through ``TransformerBridge.boot_native``. Presets come from the task kits
(:mod:`mechwork.kit`); the two built-in ones:

* ``modadd-113`` -- Nanda et al. 2023's grokking model: 1 layer, d_model 128,
  4 heads of 32, d_mlp 512, ReLU, no LayerNorm, untied embed/unembed,
  d_vocab 114 (``=`` is token 113), d_vocab_out 113, n_ctx 3.
* ``induction-2l`` -- a 2-layer attention-only model for induction heads.

**Biases.** TL's native layers always carry q/k/v/o and MLP biases; the
unembed has none. Nanda et al.'s reference code (``transformers.py``) has no
attention biases, trained MLP biases (``b_in``, ``b_out``) and no unembed bias.
``modadd-113`` matches that: attention biases are zero and frozen
(``requires_grad=False``), MLP biases train. ``induction-2l`` likewise keeps
attention biases frozen at zero (Elhage et al.'s attention-only models have
none). Set ``attn_bias=True`` to train them.

**Init.** ``init="nanda"`` re-draws every weight as in the reference code:
N(0, 1/d_model) for W_E, W_pos, W_Q/K/V/O, W_in and W_out, N(0, 1/d_vocab)
for W_U, biases zero. ``init="gpt2"`` keeps TL's native init.

Example::

    >>> import torch
    >>> from mechwork.models import build_model, preset
    >>> model = build_model(preset("modadd-113").model)
    >>> logits, cache = model.run_with_cache(torch.tensor([[3, 5, 113]]))
    >>> tuple(cache["blocks.0.attn.hook_pattern"].shape)
    (1, 4, 3, 3)
"""

from __future__ import annotations

import math
import os
from collections.abc import Iterator, Mapping
from contextlib import ExitStack, contextmanager
from dataclasses import asdict, dataclass
from pathlib import Path
from typing import TYPE_CHECKING, Any, Literal, no_type_check

from mechwork.errors import CheckpointError, ConfigError, check_known_fields, invalid
from mechwork.hooks import hook_name
from mechwork.kit import Preset, Task, all_presets, find_preset, kit_of
from mechwork.limits import (
    build_bytes,
    check_device,
    check_fits,
    check_seed,
    format_bytes,
    model_bytes,
    model_dir_config,
    model_params,
)

if TYPE_CHECKING:  # pragma: no cover - import for annotations only (torch loads when a model is built or used)
    import torch
    from jaxtyping import Float
    from torch import Tensor, nn
    from transformer_lens.model_bridge import TransformerBridge

__all__ = [
    "PRESETS",
    "Preset",
    "ToyConfig",
    "attach_hook_module",
    "boot_directory",
    "build_model",
    "default_device",
    "head_weights",
    "hybrid_blocks",
    "is_bridge",
    "load_weights",
    "logit_scale",
    "mlp_width",
    "native_module",
    "output_transform",
    "preset",
    "readout_problem",
    "resolve_device",
    "save_tensors",
    "weights",
]

TL_VERSION_LINE = "4.3"
ACT_FNS = ("relu", "gelu", "gelu_new", "silu")


def default_device() -> torch.device:
    """CUDA when available, else CPU."""
    import torch
    return torch.device("cuda" if torch.cuda.is_available() else "cpu")


def resolve_device(device: torch.device | str | None) -> torch.device:
    """``device`` as a ``torch.device`` (default: :func:`default_device`); one line when it cannot be used.

    >>> resolve_device("tpu")
    Traceback (most recent call last):
    mechwork.errors.ConfigError: 'device' must be cpu, cuda, cuda:N or mps (got 'tpu')
    """
    import torch
    if device is None:
        return default_device()
    if not isinstance(device, torch.device):
        check_device(str(device))
        device = torch.device(device)
    if device.type == "cuda" and not torch.cuda.is_available():
        raise ConfigError(f"'device' {str(device)!r} is not available: torch {torch.__version__} sees no CUDA "
                          "device; use cpu")
    if device.type == "cuda" and device.index is not None and device.index >= torch.cuda.device_count():
        raise invalid("device", f"cuda:N with N < {torch.cuda.device_count()}", str(device))
    if device.type == "mps" and not torch.backends.mps.is_available():
        raise ConfigError(f"'device' {str(device)!r} is not available on this machine; use cpu")
    return device


@no_type_check  # validates its own fields, with one-line messages
@dataclass(frozen=True)
class ToyConfig:
    """Architecture of a toy transformer (defaults: Nanda's modadd-113)."""

    n_layers: int = 1  # transformer blocks
    d_model: int = 128  # residual stream width
    n_heads: int = 4  # attention heads per layer
    d_head: int = 32  # width of each head
    d_mlp: int | None = 512  # MLP hidden width; None means attention-only
    d_vocab: int = 114  # input vocabulary (p residues plus '=')
    d_vocab_out: int = 113  # output vocabulary (p residues)
    n_ctx: int = 3  # context length
    act_fn: str = "relu"  # MLP nonlinearity
    normalization: Literal["LN"] | None = None  # None: no LayerNorm, as in the paper
    init: Literal["nanda", "gpt2"] = "nanda"  # weight init, see module docstring
    attn_bias: bool = False  # train q/k/v/o biases (False: frozen at zero)
    mlp_bias: bool = True  # train MLP biases (Nanda's code does)
    seed: int = 0  # seeds the init
    attn_rate: float = 1.0  # Zhong et al.'s attention rate: pattern = rate*softmax + (1-rate)*uniform

    def __post_init__(self) -> None:
        for name in ("n_layers", "d_model", "n_heads", "d_head", "d_vocab", "d_vocab_out", "n_ctx"):
            v = getattr(self, name)
            if not isinstance(v, int) or isinstance(v, bool) or v < 1:
                raise invalid(name, "an integer >= 1", v)
        if self.d_mlp is not None and (not isinstance(self.d_mlp, int) or self.d_mlp < 1):
            raise invalid("d_mlp", "an integer >= 1, or None for attention-only", self.d_mlp)
        if self.act_fn not in ACT_FNS:
            raise invalid("act_fn", f"one of {', '.join(ACT_FNS)}", self.act_fn)
        if self.normalization not in (None, "LN"):
            raise invalid("normalization", "None or 'LN'", self.normalization)
        if self.init not in ("nanda", "gpt2"):
            raise invalid("init", "'nanda' or 'gpt2'", self.init)
        check_seed(self.seed)
        if isinstance(self.attn_rate, bool) or not isinstance(self.attn_rate, (int, float)) \
                or not 0.0 <= self.attn_rate <= 1.0:
            raise invalid("attn_rate", "a number in [0, 1]", self.attn_rate)

    @property
    def attn_only(self) -> bool:
        return self.d_mlp is None

    def to_dict(self) -> dict[str, Any]:
        return asdict(self)

    @classmethod
    def from_dict(cls, d: dict[str, Any]) -> ToyConfig:
        check_known_fields(d, cls, "model")
        return cls(**d)

    @classmethod
    def for_task(cls, task: Task, **overrides: Any) -> ToyConfig:
        """The default architecture of ``task``'s kit (sized to its vocabulary), with ``overrides``."""
        base = kit_of(task).model(task)
        return cls.from_dict(base.to_dict() | overrides) if overrides else base


class _Presets(Mapping[str, Preset]):
    """A read-only view of every registered kit's presets (built-in kits load on first use)."""

    def __getitem__(self, name: str) -> Preset:
        return all_presets()[name]

    def __iter__(self) -> Iterator[str]:
        return iter(all_presets())

    def __len__(self) -> int:
        return len(all_presets())

    def __repr__(self) -> str:
        return f"PRESETS({', '.join(self)})"


PRESETS: Mapping[str, Preset] = _Presets()


def preset(name: str) -> Preset:
    """The preset ``name`` of any registered kit; an unknown name is a one-line ConfigError."""
    return find_preset(name)


# -- building -----------------------------------------------------------------
def _bridge_config(cfg: ToyConfig) -> Any:
    from transformer_lens.config import TransformerBridgeConfig

    return TransformerBridgeConfig(
        architecture="TransformerLensNative",
        n_layers=cfg.n_layers,
        d_model=cfg.d_model,
        n_heads=cfg.n_heads,
        d_head=cfg.d_head,
        d_mlp=cfg.d_mlp if cfg.d_mlp is not None else 4 * cfg.d_model,
        attn_only=cfg.attn_only,
        d_vocab=cfg.d_vocab,
        d_vocab_out=cfg.d_vocab_out,
        n_ctx=cfg.n_ctx,
        act_fn=cfg.act_fn,
        normalization_type=cfg.normalization,
        positional_embedding_type="standard",
        seed=cfg.seed,
    )


def build_model(cfg: ToyConfig, device: torch.device | str | None = None) -> TransformerBridge:
    """Boot a fresh, seeded ``TransformerBridge`` for ``cfg`` (in eval mode).

    Training code calls ``.train()`` itself; everything else (patching,
    attribution) needs eval mode, which TransformerLens insists on.
    """
    import torch
    device = resolve_device(device)
    n = model_params(cfg)
    check_fits(f"a model of {n:,} parameters ({format_bytes(model_bytes(cfg))} of weights, d_vocab {cfg.d_vocab}, "
               f"d_model {cfg.d_model})", build_bytes(cfg))
    import transformer_lens.model_bridge.sources.native  # noqa: F401  (attaches boot_native)
    from transformer_lens.model_bridge import TransformerBridge

    boot = TransformerBridge.boot_native  # type: ignore[attr-defined]  # attached by sources.native
    model = boot(_bridge_config(cfg), device=device)
    if cfg.init == "nanda":
        _init_nanda(model, cfg)
    if cfg.attn_rate < 1.0:
        _add_attention_rate(model, cfg)
    for name, p in weights(model).items():
        if name.endswith(".bias"):
            in_attn = ".attn." in name
            p.requires_grad_(cfg.attn_bias if in_attn else cfg.mlp_bias)
            if not p.requires_grad:
                with torch.no_grad():
                    p.zero_()
    return model.eval()


def _add_attention_rate(model: TransformerBridge, cfg: ToyConfig) -> None:
    """Mix every attention pattern with constant (uniform causal) attention, permanently (Zhong et al. 2023).

    The hook sits on ``hook_pattern`` before the value product, so every bridge
    forward, cache and patching run sees the mixed pattern; the training fast
    path applies the same mix. ``model.attn_rate`` records it.
    """
    import torch
    rate = float(cfg.attn_rate)
    causal = torch.tril(torch.ones(cfg.n_ctx, cfg.n_ctx))
    uniform = causal / causal.sum(-1, keepdim=True)

    def mix(pattern: Tensor, hook: Any = None) -> Tensor:
        n = pattern.shape[-1]
        return rate * pattern + (1 - rate) * uniform[:n, :n].to(pattern)

    for layer in range(cfg.n_layers):
        model.add_hook(hook_name("pattern", layer), mix, is_permanent=True)
    model.attn_rate = rate  # type: ignore[assignment]


def _init_nanda(model: TransformerBridge, cfg: ToyConfig) -> None:
    import torch
    g = torch.Generator().manual_seed(cfg.seed)
    std = 1.0 / math.sqrt(cfg.d_model)
    with torch.no_grad():
        for name, p in sorted(weights(model).items()):
            if name.endswith(".bias"):
                p.zero_()
                continue
            s = 1.0 / math.sqrt(cfg.d_vocab) if name == "head.weight" else std
            p.copy_(torch.randn(p.shape, generator=g) * s)


def native_module(model: TransformerBridge) -> nn.Module:
    """The plain ``nn.Module`` behind the bridge: same weights, no hooks.

    Its ``forward(tokens)`` returns logits; use it where hooks are not needed
    (training) and the bridge everywhere else.
    """
    return model.original_model


def weights(model: TransformerBridge) -> dict[str, nn.Parameter]:
    """Every parameter, live, under stable names (``layers.0.attn.q.weight``...).

    These names are the on-disk format of mechwork checkpoints. Linear weights
    are ``(out, in)`` as in ``nn.Linear``.
    """
    out: dict[str, nn.Parameter] = {}
    for name, p in native_module(model).named_parameters():
        out[name.replace("_original_component.", "")] = p
    return out


def _heads_reading(
    w: Float[Tensor, "out d_model"], n_heads: int, d_head: int
) -> Float[Tensor, "n_heads d_model d_head"]:
    """Split an ``nn.Linear`` q/k/v weight, ``(n_kv * d_head, d_model)``, into per-head ``x @ W`` matrices.

    Grouped key/value heads (``n_kv < n_heads``) are repeated the way the native
    forward repeats them (``repeat_interleave``), so every query head has its own.
    """
    n_kv = w.shape[0] // d_head
    per = w.reshape(n_kv, d_head, w.shape[1]).transpose(-1, -2)
    return per.repeat_interleave(n_heads // n_kv, dim=0)


def _heads_bias(b: Float[Tensor, " out"], n_heads: int, d_head: int) -> Float[Tensor, "n_heads d_head"]:
    n_kv = b.shape[0] // d_head
    return b.reshape(n_kv, d_head).repeat_interleave(n_heads // n_kv, dim=0)


def _heads_writing(
    w: Float[Tensor, "d_model in"], n_heads: int, d_head: int
) -> Float[Tensor, "n_heads d_head d_model"]:
    """Split the ``nn.Linear`` output weight, ``(d_model, n_heads * d_head)``, into per-head ``z @ W_O``."""
    return w.T.reshape(n_heads, d_head, w.shape[0])


def head_weights(model: TransformerBridge) -> dict[str, Tensor]:
    """Per-head attention weights in TransformerLens's layout, stacked over layers.

    Read from the native parameters (:func:`weights`), detached copies:

    * ``W_Q``, ``W_K``, ``W_V``: ``[n_layers, n_heads, d_model, d_head]``;
    * ``W_O``: ``[n_layers, n_heads, d_head, d_model]``;
    * ``b_Q``, ``b_K``, ``b_V``: ``[n_layers, n_heads, d_head]``; ``b_O``: ``[n_layers, d_model]``.

    Row-vector convention, as in TransformerLens: head ``h`` of layer ``l`` computes
    ``q = x @ W_Q[l, h] + b_Q[l, h]`` from its (normalised) input ``x``, and adds
    ``z @ W_O[l, h]`` to the residual stream (``b_O[l]`` once per layer), so its
    OV circuit is ``W_V[l, h] @ W_O[l, h]`` and its QK circuit ``W_Q[l, h] @ W_K[l, h].T``.
    Grouped key/value heads are repeated so every query head has its own ``W_K``/``W_V``.

    Example::

        >>> import mechwork
        >>> w = head_weights(mechwork.load("induction-2l"))
        >>> tuple(w["W_Q"].shape), tuple(w["W_O"].shape)
        ((2, 4, 64, 16), (2, 4, 16, 64))
    """
    import torch
    c = model.cfg
    n_layers, n_heads, d_head = int(c.n_layers), int(c.n_heads), int(c.d_head)
    w = {k: v.detach() for k, v in weights(model).items()}
    out: dict[str, Tensor] = {}
    for name in ("q", "k", "v"):
        up = name.upper()
        out[f"W_{up}"] = torch.stack([
            _heads_reading(w[f"layers.{la}.attn.{name}.weight"], n_heads, d_head) for la in range(n_layers)])
        out[f"b_{up}"] = torch.stack([
            _heads_bias(w[f"layers.{la}.attn.{name}.bias"], n_heads, d_head) for la in range(n_layers)])
    out["W_O"] = torch.stack([_heads_writing(w[f"layers.{la}.attn.o.weight"], n_heads, d_head)
                              for la in range(n_layers)])
    out["b_O"] = torch.stack([w[f"layers.{la}.attn.o.bias"] for la in range(n_layers)])
    return out


def save_tensors(model: TransformerBridge) -> dict[str, Tensor]:
    """Detached, contiguous CPU copies of :func:`weights`, ready for safetensors."""
    return {k: v.detach().to("cpu").contiguous().clone() for k, v in weights(model).items()}


def load_weights(model: TransformerBridge, tensors: dict[str, Tensor], source: str = "") -> None:
    """Copy ``tensors`` into ``model``; refuse any missing, extra or misshapen key."""
    import torch
    live = weights(model)
    where = f" in {source}" if source else ""
    missing = sorted(set(live) - set(tensors))
    extra = sorted(set(tensors) - set(live))
    if missing or extra:
        raise CheckpointError(
            f"checkpoint{where} does not fit the model: missing {missing[:4]}, unexpected {extra[:4]}"
        )
    with torch.no_grad():
        for k, p in live.items():
            t = tensors[k]
            if tuple(t.shape) != tuple(p.shape):
                raise CheckpointError(
                    f"checkpoint{where}: '{k}' has shape {tuple(t.shape)}, model needs {tuple(p.shape)}"
                )
            p.copy_(t.to(device=p.device, dtype=p.dtype))


# -- a directory saved with save_pretrained ---------------------------------------------------
TOKENIZER_FILES = ("tokenizer.json", "tokenizer_config.json", "tokenizer.model", "spiece.model", "vocab.json",
                   "vocab.txt")
WEIGHT_SUFFIXES = (".safetensors", ".bin", ".pt", ".pth", ".h5", ".msgpack", ".ckpt")
ARCHITECTURE_LIST = "transformer_lens.factories.architecture_adapter_factory.SUPPORTED_ARCHITECTURES"


def is_bridge(x: object) -> bool:
    """Whether ``x`` is a TransformerLens ``TransformerBridge`` (checked without importing TransformerLens)."""
    return any(c.__name__ == "TransformerBridge" and c.__module__.startswith("transformer_lens.")
               for c in type(x).__mro__)


def _architecture(path: str, hf: dict[str, Any]) -> str:
    """The architecture TransformerLens's bridge boots for config ``hf``; one line naming it when it has none."""
    from types import SimpleNamespace

    from transformer_lens.model_bridge.sources._hf_format import determine_architecture_from_hf_config

    try:
        return str(determine_architecture_from_hf_config(SimpleNamespace(**hf)))
    except ValueError:
        named = ", ".join(repr(a) for a in hf.get("architectures") or []) or "none named"
        raise ConfigError(
            f"{path!r}: TransformerLens {TL_VERSION_LINE} cannot boot architecture {named} "
            f"(model_type {hf.get('model_type')!r}); the architectures it boots are listed in {ARCHITECTURE_LIST}"
        ) from None


@contextmanager
def _swapped(obj: Any, name: str, value: Any) -> Iterator[None]:
    """``obj.name`` is ``value`` inside the block, and what it was after."""
    old = getattr(obj, name)
    setattr(obj, name, value)
    try:
        yield
    finally:
        setattr(obj, name, old)


@contextmanager
def _offline(with_tokenizer: bool) -> Iterator[None]:
    """No Hub access, no HF progress bars and, for a directory without tokenizer files, no tokenizer loaded."""
    os.environ.setdefault("HF_HUB_OFFLINE", "1")
    os.environ.setdefault("TRANSFORMERS_OFFLINE", "1")
    import huggingface_hub.constants as hub
    from transformer_lens.model_bridge.sources.transformers import source
    from transformers.utils import logging as hf_logging

    bars_on = hf_logging.is_progress_bar_enabled()
    hf_logging.disable_progress_bar()
    try:
        with ExitStack() as stack:
            stack.enter_context(_swapped(hub, "HF_HUB_OFFLINE", True))
            if not with_tokenizer:  # the source would otherwise build an empty tokenizer from the model's config
                stack.enter_context(_swapped(source, "skip_tokenizer_for_modality", lambda cfg: True))
            yield
    finally:
        if bars_on:
            hf_logging.enable_progress_bar()


def boot_directory(path: str | os.PathLike[str], device: torch.device | str | None = None) -> TransformerBridge:
    """Boot a directory saved with ``save_pretrained`` through TransformerLens's bridge, from local files only.

    The directory's tokenizer comes with it when it has tokenizer files; without them the bridge has none
    (prompts are then token ids). Never reaches the network. An architecture TransformerLens cannot boot, or
    a directory that is not a model, is refused with one line. Returns the bridge in eval mode.
    """
    key = os.fspath(path)
    hf = model_dir_config(key)
    if hf is None:
        raise ConfigError(f"{key!r} is not a model directory saved with save_pretrained (it needs a config.json "
                          "naming model_type or architectures)")
    architecture = _architecture(key, hf)
    if hf.get("scale_attn_weights") is False:  # TL 4.3's bridge scales the scores by 1/sqrt(d_head) regardless
        raise ConfigError(f"{key!r}: TransformerLens {TL_VERSION_LINE} runs this {architecture} with its attention "
                          "scores divided by sqrt(d_head) although its config says scale_attn_weights=false "
                          "(its logits would be wrong): save it with scale_attn_weights=true")
    if not any(f.name.endswith(WEIGHT_SUFFIXES) for f in Path(key).iterdir()):
        raise CheckpointError(f"{key!r} holds a config.json ({architecture}) but no weights (model.safetensors or "
                              "pytorch_model.bin): save the model there with save_pretrained")
    device = resolve_device(device)
    with_tokenizer = any((Path(key) / f).is_file() for f in TOKENIZER_FILES)
    from transformer_lens.model_bridge import TransformerBridge

    try:
        with _offline(with_tokenizer):
            model = TransformerBridge.boot_transformers(str(Path(key).resolve()), device=device)
    except Exception as e:  # whatever transformers or TL raise on a user's directory: one line, with its type
        text = " ".join(str(e).split())
        text = f"{type(e).__name__}: {text[:300] + ('...' if len(text) > 300 else '')}"
        weights_fault = "safetensor" in text.lower() or "pytorch_model.bin" in text
        error = CheckpointError if weights_fault else ConfigError
        raise error(f"{key!r}: TransformerLens cannot boot this {architecture} directory offline ({text})") from None
    _smoke(model.eval(), key, architecture)
    return model


def _smoke(model: TransformerBridge, key: str, architecture: str) -> None:
    """Run one token through a freshly booted bridge: a model TransformerLens boots but cannot run (a
    transformers / TransformerLens version mismatch) is refused at load, in one line, not at its first use.
    An encoder-decoder bridge (which needs decoder inputs) is left alone."""
    import torch
    if "decoder_blocks" in model._modules or "encoder_blocks" in model._modules:
        return
    try:
        with torch.no_grad():
            model(torch.zeros(1, 1, dtype=torch.long, device=next(model.parameters()).device))
    except Exception as e:  # whatever the model's own forward raises
        text = " ".join(str(e).split())[:300]
        raise ConfigError(f"{key!r}: TransformerLens {TL_VERSION_LINE} boots this {architecture} directory but "
                          f"cannot run it ({type(e).__name__}: {text})") from None


def hybrid_blocks(model: TransformerBridge) -> list[str]:
    """The state-space or linear-attention block types of ``model`` (TransformerLens's ``hybrid_block_types``)."""
    from transformer_lens.tools.analysis._model_state import hybrid_block_types

    return list(hybrid_block_types(model))


def mlp_width(model: TransformerBridge) -> int | None:
    """The number of neurons of the first MLP, read from its ``W_out`` (``cfg.d_mlp`` can be a default the
    architecture ignores, OPT's ``ffn_dim``); None for a mixture of experts or no MLP."""
    try:
        return int(model.blocks[0].mlp.W_out.shape[-2])
    except (AttributeError, IndexError, TypeError, RuntimeError, NotImplementedError):
        return None


def readout_problem(model: TransformerBridge, readout: bool = True, linear: bool = True,
                    split: bool = True) -> str | None:
    """Why ``model``'s logits are not ``transform(unembed(ln_final(last block's hook_resid_post)))`` of a
    residual stream that its attention and MLP outputs sum to (None: they are), as TransformerLens's own
    logit-lens and DLA checks decide. With ``split``: hybrid (state-space, recurrent) blocks, or a block without
    ``hook_attn_out`` / ``hook_mlp_out``; with ``readout``: a task head on the readout path or no unembedding;
    with ``linear``: a post-unembedding step that is not a plain scale (a soft cap)."""
    from transformer_lens.tools.analysis.logit_lens import _require_decoder_unembed

    if split:
        hybrid = hybrid_blocks(model)
        if hybrid:
            return f"it has hybrid blocks ({', '.join(hybrid)}) whose outputs are not attention and MLP outputs"
        hooks = getattr(model, "hook_dict", {})
        kinds = ("attn",) if getattr(model.cfg, "attn_only", False) else ("attn", "mlp")
        for layer in range(int(model.cfg.n_layers)):
            missing = [f"blocks.{layer}.hook_{k}_out" for k in kinds if f"blocks.{layer}.hook_{k}_out" not in hooks]
            if missing:
                block = type(model.blocks[layer]).__name__
                return f"block {layer} ({block}) has no {' or '.join(missing)}: it is not attention and an MLP"
    if not readout:
        return None
    try:
        _require_decoder_unembed(model, operation="this analysis")
    except (ValueError, NotImplementedError) as e:
        return " ".join(str(e).split())
    if linear and logit_scale(model) is None:
        cap = float(getattr(model.cfg, "output_logits_soft_cap", 0.0) or 0.0)
        return (f"it soft-caps its logits (output_logits_soft_cap {cap:g}), which no sum of parts survives" if cap > 0
                else "its logits pass through a transform that is not a scale")
    return None


def output_transform(model: TransformerBridge, logits: Tensor) -> Tensor:
    """``logits`` (``W_U`` readouts) through the model's own post-unembedding step, as its forward applies it
    (TransformerLens's adapter ``apply_output_logits_transform``: a Gemma soft cap, Granite's ``logits_scaling``,
    Cohere's ``logit_scale``; none for most models)."""
    transform = getattr(getattr(model, "adapter", None), "apply_output_logits_transform", None)
    return transform(logits) if callable(transform) else logits


def logit_scale(model: TransformerBridge) -> float | None:
    """The factor of the model's post-unembedding step when it is a plain scale (1.0: none), None when it is not
    linear (a soft cap): linear steps keep direct logit attribution exact, once its rows are scaled."""
    import torch
    W_U = model.W_U
    probe = torch.tensor([[[-50.0, -3.0, -1.0, 0.5, 2.0, 50.0]]], dtype=W_U.dtype, device=W_U.device)
    with torch.no_grad():
        out = output_transform(model, probe.clone())
    scale = out[..., 4] / probe[..., 4]
    return float(scale) if torch.allclose(out, scale * probe, rtol=1e-4, atol=1e-5) else None


@contextmanager
def attach_hook_module(model: TransformerBridge, name: str, module: nn.Module) -> Iterator[None]:
    """Inside the block, the activation at hook ``name`` is replaced by ``module(activation)``, and every
    ``HookPoint`` of ``module`` is a hook point of the model, ``{name}.{attribute}``, in ``hook_dict``.

    ``module`` runs as a forward hook of the hook point, after the hooks already on it and before any added
    later (so ``run_with_cache`` records at ``name`` what flows downstream). Nothing joins the module tree
    (``state_dict`` and ``named_modules`` are unchanged). On exit, also after an exception, the forward hook,
    the registry entries and the names are removed or restored. ``model.spliced_hooks`` lists the hooks with
    a module attached (the fast engine, which bypasses hooks, must not run while it is non-empty). The caller
    checks ``name`` (:func:`mechwork.hooks.check_hook_name`).
    """
    from transformer_lens.hook_points import HookPoint

    target = model.hook_dict[name]
    points = {f"{name}.{sub}": hp for sub, hp in module.named_modules() if sub and isinstance(hp, HookPoint)}
    registry = model._hook_registry
    taken = sorted(n for n in points if n in registry)
    if taken:
        raise ConfigError(f"hook point {taken[0]!r} is already in the model: is a module attached at {name!r}?")
    names = {n: hp.name for n, hp in points.items()}
    alias_cache = model._block_alias_cache
    before = model.__dict__.get("spliced_hooks")
    handle = target.register_forward_hook(lambda _mod, _inp, out: module(out))
    try:
        for n, hp in points.items():
            hp.name = n
            registry[n] = hp
        model.__dict__["spliced_hooks"] = (*(before or ()), name)
        yield
    finally:
        handle.remove()
        for n, hp in points.items():
            registry.pop(n, None)
            hp.name = names[n]
        model._block_alias_cache = alias_cache
        if before is None:
            model.__dict__.pop("spliced_hooks", None)
        else:
            model.__dict__["spliced_hooks"] = before
