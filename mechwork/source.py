"""A run directory, a preset or any model, opened: the model, its task, its configs and its training history.

:func:`open_source` resolves a run directory or a preset name into a :class:`Source`: the eval-mode
model, the task, the configs and, when there is one, the metrics table. A run's history is read from
its directory; a preset's from the JSON beside its embedded weights. A preset with no history has
``metrics=None``. A directory saved with ``save_pretrained`` (kind ``"model"``) or a ``TransformerBridge``
(kind ``"bridge"``) has no task, configs or history (all None); its :attr:`SourceInfo.description` is
:func:`describe_bridge`, the architecture in one line read from the model's cfg.

``open_source(..., light=True)``, what ``mechwork dashboard`` uses, opens a preset or run of the built-in kits as a
:class:`~mechwork.hookedtoy.HookedToy` instead of the bridge: the same numbers, without importing TransformerLens.

A kit's ``analyse(source)`` turns a source into an :class:`~mechwork.results.Analysis` bundle (every
result its pages show, computed once). The bundle keeps :attr:`Source.info`, the model-free part of the
source, so that dashboards, reports and summaries render without a model.

:func:`describe_model` and :func:`recipe_line` are the one-line descriptions of a model config and a
training recipe that ``mechwork info``, the demo and the dashboards print.

Example::

    >>> from mechwork.source import open_source
    >>> src = open_source("induction-2l")
    >>> src.kind, src.task.kind, len(src.metrics) > 10
    ('preset', 'induction', True)
    >>> src.info.last_recorded is None                     # a preset: no run to have stopped early
    True
"""

from __future__ import annotations

import json
import math
import os
from dataclasses import dataclass, field, fields
from typing import TYPE_CHECKING, Any, Literal

if TYPE_CHECKING:  # pragma: no cover
    import pandas as pd
    from transformer_lens.model_bridge import TransformerBridge

    from mechwork.models import ToyConfig

__all__ = [
    "Source", "SourceInfo", "count_parameters", "describe_bridge", "describe_model", "describe_recipe", "open_source",
    "recipe_line", "safetensors_shapes",
]


@dataclass(frozen=True)
class SourceInfo:
    """What is known of a source without its model: the part of a :class:`Source` a bundle keeps."""

    name: str  # the preset name, the run or model directory as given, or a bridge's cfg.model_name
    kind: Literal["preset", "run", "model", "bridge"]
    task: Any  # the task dataclass (see mechwork.kit.Task); None for a model directory or a bridge
    model_config: ToyConfig | None  # None for a model directory or a bridge (see description)
    step: int | None  # the checkpoint shown (None: a preset's final weights, a model directory, a bridge)
    train: dict[str, Any] | None  # the training config, if known
    summary: dict[str, Any]  # the preset's stored summary ({} for a run)
    metrics: pd.DataFrame | None  # one row per evaluation, or None without history
    hooks: tuple[str, ...] = ()  # the model's hook points
    description: str | None = None  # a model directory's or bridge's architecture in one line (describe_bridge)

    @property
    def where(self) -> str:
        """``step 20 of run runs/x``, ``the modadd-113 preset``, ``model directory d (GPT2LMHeadModel, ...)``."""
        if self.kind == "run":
            return f"step {self.step} of run {self.name}"
        if self.kind == "preset":
            return f"the {self.name} preset"
        what = "model directory" if self.kind == "model" else "TransformerBridge"
        return f"{what} {self.name} ({self.description})"

    @property
    def model_line(self) -> str:
        """The model in one line: :func:`describe_model` of a toy config, else :attr:`description`."""
        return describe_model(self.model_config) if self.model_config is not None else str(self.description)

    @property
    def last_step(self) -> int:
        """The last step of the history (or the step shown, or 0 without either)."""
        return int(self.metrics["step"].iloc[-1]) if self.metrics is not None else (self.step or 0)

    @property
    def last_recorded(self) -> int | None:
        """The last step a run recorded (evaluation or shown checkpoint); None for a preset."""
        if self.kind != "run":
            return None
        steps = [int(self.step)] if self.step is not None else []
        if self.metrics is not None and "step" in self.metrics and len(self.metrics):
            steps.append(int(self.metrics["step"].max()))
        return max(steps) if steps else 0

    @property
    def recipe(self) -> str | None:
        """The training recipe in one line (None when the training config is not known)."""
        return None if self.train is None else describe_recipe(self.train, self.task, self.last_recorded)


@dataclass(frozen=True)
class Source(SourceInfo):
    """A run or preset, opened: everything :class:`SourceInfo` holds, and the eval-mode model (the bridge, or a
    :class:`~mechwork.hookedtoy.HookedToy` with the same weights and hook points when opened ``light``)."""

    model: TransformerBridge = field(kw_only=True)

    @property
    def info(self) -> SourceInfo:
        """Everything but the model (what a bundle keeps)."""
        return SourceInfo(**{f.name: getattr(self, f.name) for f in fields(SourceInfo)})


def open_source(
    run_or_preset: str | os.PathLike[str] | TransformerBridge | object, *, step: int | None = None,
    device: str | None = None, history: bool = True, light: bool = False,
) -> Source:
    """Open a run directory, a preset, a ``save_pretrained`` directory or a ``TransformerBridge``; anything else
    is a one-line :class:`~mechwork.errors.ConfigError`.

    This is the one way to open any of them (:func:`mechwork.runs.resolve` tells them apart). ``history=False``
    leaves a run's ``metrics.jsonl`` unread (``metrics`` is None), for a command that needs only the task
    and the model, such as ``mechwork patch``.

    ``light=True`` (``mechwork dashboard``) opens a preset or run of a kit in :data:`mechwork.hookedtoy.KITS` as a
    :class:`~mechwork.hookedtoy.HookedToy` when it reproduces the model's config: the same weights, hook points and
    numbers as the bridge, without importing TransformerLens. Anything else opens the bridge.
    """
    import pandas as pd

    from mechwork.models import ToyConfig, is_bridge, preset
    from mechwork.runs import Run, embedded_info, embedded_path, load, resolve

    if is_bridge(run_or_preset):
        model = load(run_or_preset, step=step, device=device)
        name = str(getattr(model.cfg, "model_name", None) or "TransformerBridge")
        return Source(name, "bridge", None, None, None, None, {}, None, _hooks(model), describe_bridge(model),
                      model=model)
    kind, key = resolve(run_or_preset)
    if kind == "model":
        model = load(key, step=step, device=device)
        return Source(key, "model", None, None, None, None, {}, None, _hooks(model), describe_bridge(model),
                      model=model)
    if kind == "preset":
        pre = preset(key)
        info = embedded_info(key) if embedded_path(key).with_suffix(".json").is_file() else {}
        model = load(key, step=step, device=device, light=light and pre.task.kind in _light_kits())
        stored = info.get("history") or {}
        metrics = pd.DataFrame(stored["metrics"]) if "metrics" in stored else None
        return Source(key, "preset", pre.task, ToyConfig.from_dict(info.get("model", pre.model.to_dict())),
                      info.get("step"), info.get("train"), info.get("summary", {}), metrics, _hooks(model), model=model)
    run = Run(key)
    model = run.model_at(step, device, light=light and run.task.kind in _light_kits())
    metrics = run.metrics if history else None
    return Source(key, "run", run.task, run.model_config, step if step is not None else run.steps[-1],
                  run.config["train"], {}, metrics if metrics is not None and len(metrics) else None, _hooks(model),
                  model=model)


def _light_kits() -> tuple[str, ...]:
    from mechwork.hookedtoy import KITS

    return KITS


def _hooks(model: Any) -> tuple[str, ...]:
    return tuple(getattr(model, "hook_dict", ()))


def describe_model(cfg: ToyConfig) -> str:
    """A model config in one line: layers, widths, MLP, normalisation, vocabulary, context and biases."""
    mlp = "attention-only" if cfg.attn_only else f"d_mlp {cfg.d_mlp} ({cfg.act_fn})"
    norm = "no LayerNorm" if cfg.normalization is None else "LayerNorm"
    bias = "attention biases " + ("trained" if cfg.attn_bias else "frozen at 0")
    return (
        f"{cfg.n_layers} layer(s), d_model {cfg.d_model}, {cfg.n_heads} heads of {cfg.d_head}, {mlp}, "
        f"{norm}, d_vocab {cfg.d_vocab} -> {cfg.d_vocab_out}, n_ctx {cfg.n_ctx}; {bias}"
    )


def describe_bridge(model: Any) -> str:
    """Any bridge's architecture in one line, from its cfg: layers, widths, MLP, normalisation, positions,
    vocabulary, context, and whether it has a tokenizer (else prompts are token ids)."""
    from mechwork.models import hybrid_blocks, mlp_width

    c = model.cfg
    arch = getattr(c, "architecture", None) or type(getattr(model, "original_model", model)).__name__
    kv = getattr(c, "n_key_value_heads", None)
    heads = f"{c.n_heads} heads of {c.d_head}" + (
        f" ({kv} key/value head{'s' if kv != 1 else ''})" if kv and kv != c.n_heads else "")
    hybrid = hybrid_blocks(model)
    if hybrid:
        heads = f"{', '.join(hybrid)} blocks (state-space or linear attention)"
    gated = "gated " if getattr(c, "gated_mlp", False) else ""
    width = mlp_width(model) or c.d_mlp
    mlp = "attention-only" if getattr(c, "attn_only", False) else f"{gated}d_mlp {width} ({c.act_fn})"
    if getattr(c, "num_experts", None) and mlp_width(model) is None:
        mlp = f"a mixture of {c.num_experts} {mlp} experts ({getattr(c, 'experts_per_token', '?')} per token)"
    norm = {"LN": "LayerNorm", "LNPre": "LayerNorm (folded)", "RMS": "RMSNorm", "RMSPre": "RMSNorm (folded)"}.get(
        getattr(c, "normalization_type", None) or "", "no normalisation")
    pos = getattr(c, "positional_embedding_type", None) or "standard"
    positions = {"standard": "learned positions", "shortformer": "shortformer positions",
                 "none": "no positional embedding"}.get(pos, f"{pos} positions")
    d_out = getattr(c, "d_vocab_out", None)
    vocab = f"d_vocab {c.d_vocab}" + (f" -> {d_out}" if d_out not in (None, -1, c.d_vocab) else "")
    tok = "a tokenizer" if getattr(model, "tokenizer", None) is not None else "no tokenizer (prompts are token ids)"
    return (f"{arch}: {c.n_layers} layer(s), d_model {c.d_model}, {heads}, {mlp}, {norm}, {positions}, {vocab}, "
            f"n_ctx {c.n_ctx}; {tok}")


def count_parameters(cfg: ToyConfig, weights_file: str | os.PathLike[str] | None = None) -> tuple[int, int]:
    """(all parameters, trained ones) of a model built from ``cfg``.

    With ``weights_file`` (its safetensors weights, as :func:`mechwork.models.weights` names them) the count is
    read from the file's JSON header, without torch: a bias is trained when ``cfg`` trains that kind of bias
    (``attn_bias`` inside attention, ``mlp_bias`` elsewhere), as :func:`mechwork.models.build_model` sets it.
    Without it, or when the header cannot be read, the model is built and counted.
    """
    shapes = safetensors_shapes(weights_file) if weights_file is not None else None
    if shapes is not None:
        sizes = {name: math.prod(shape) for name, shape in shapes.items()}
        frozen = sum(n for name, n in sizes.items() if name.endswith(".bias")
                     and not (cfg.attn_bias if ".attn." in name else cfg.mlp_bias))
        return sum(sizes.values()), sum(sizes.values()) - frozen
    from mechwork.models import build_model

    ps = list(build_model(cfg, "cpu").parameters())
    return sum(p.numel() for p in ps), sum(p.numel() for p in ps if p.requires_grad)


def safetensors_shapes(path: str | os.PathLike[str]) -> dict[str, tuple[int, ...]] | None:
    """Every tensor's shape in a safetensors file, from its JSON header alone (the stdlib, no torch); None when
    the file cannot be read or its header is not a safetensors header.

    >>> from mechwork.limits import embedded_file
    >>> safetensors_shapes(embedded_file("modadd-113"))["layers.0.mlp.fc_in.weight"]
    (512, 128)
    """
    try:
        with open(path, "rb") as f:
            n = int.from_bytes(f.read(8), "little")
            header = json.loads(f.read(n)) if 2 <= n <= _MAX_HEADER else None
    except (OSError, ValueError):
        return None
    if not isinstance(header, dict):
        return None
    shapes: dict[str, Any] = {k: v.get("shape") for k, v in header.items()
                              if k != "__metadata__" and isinstance(v, dict)}
    if not shapes or not all(isinstance(s, list) and all(isinstance(d, int) and d >= 0 for d in s)
                             for s in shapes.values()):
        return None
    return {k: tuple(s) for k, s in shapes.items()}


_MAX_HEADER = 100_000_000  # safetensors' own limit on the header's length


def describe_recipe(train: dict[str, Any], task: Any, reached: int | None = None) -> str:
    """:func:`recipe_line` with the batches described by the task's kit (``Kit.batch_line``)."""
    from mechwork.kit import get_kit

    return recipe_line(train, get_kit(task.kind).batch_line(task, train), reached)


def recipe_line(train: dict[str, Any], batch: str, reached: int | None = None) -> str:
    """A training recipe (a ``TrainConfig`` as a dict) in one line; ``batch`` says how each step's batch was drawn.

    ``reached`` (the last step the run recorded) marks a run that stopped before its planned steps.
    """
    gf = (
        f"Grokfast alpha {train['grokfast_alpha']} lambda {train['grokfast_lambda']}"
        if train.get("grokfast_alpha") is not None
        else "no Grokfast"
    )
    extra = "".join([  # the options a recipe may change from their defaults (absent from older runs' configs)
        f", init scale {train['init_scale']:g}" if train.get("init_scale", 1.0) != 1.0 else "",
        ", StableMax loss" if train.get("loss", "softmax") == "stablemax" else "",
        ", \u22a5Grad" if train.get("orthograd", False) else "",
    ])
    return (
        f"AdamW lr {train['lr']:g}, wd {train['weight_decay']:g}, betas {tuple(train['betas'])}, "
        f"warmup {train['warmup_steps']}, {batch}, {gf}{extra}, "
        f"{train['steps']} step{'' if train['steps'] == 1 else 's'}"
        + (f" planned, stopped at step {reached}" if reached is not None and reached < train["steps"] else "")
        + (f" (lr decays to 0 over the last {train['decay_steps']})" if train.get("decay_steps") else "")
    )
