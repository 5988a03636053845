"""Plain-text summaries of runs, presets, any model and the embedded model (``mechwork info``, ``demo``).

:func:`describe` reads a run directory (config, checkpoints, metrics) or a preset (its config and the JSON
beside its weights), and asks the task's kit for the lines only it knows how to say (``Kit.batch_line``,
``Kit.history_lines``, ``Kit.embedded_lines``). A directory saved with ``save_pretrained`` has no task or
history: it is booted (offline) and described from its cfg, as is a ``TransformerBridge``. A preset or a run is
described from its files alone (JSON, and the safetensors header for the parameter count): no torch, no model.
:func:`demo_report` renders the quick analysis bundle of the embedded model
(:func:`mechwork.analysis.grokking.evaluate`: accuracy and loss through the hooked bridge itself, not the
training fast path, so the numbers printed are those of the model a user gets from :func:`mechwork.load`).

Example::

    >>> from mechwork.summary import describe
    >>> print(describe("modadd-113").splitlines()[3])
      task: (a add b) mod 113: 12769 pairs, 3830 train (30%), seed 0
"""

from __future__ import annotations

from typing import Any

from mechwork.kit import get_kit
from mechwork.models import boot_directory, is_bridge, preset
from mechwork.runs import Run, embedded_info, embedded_path, resolve
from mechwork.source import count_parameters, describe_bridge, describe_model, describe_recipe

__all__ = ["demo_report", "describe", "describe_loaded"]


def describe(run_or_preset: Any) -> str:
    """A readable description of a run directory, a preset, a ``save_pretrained`` directory or a bridge."""
    if is_bridge(run_or_preset):
        return describe_loaded(run_or_preset, f"TransformerBridge {getattr(run_or_preset.cfg, 'model_name', '')}")
    kind, key = resolve(run_or_preset)
    if kind == "model":
        return describe_loaded(boot_directory(key, "cpu"), f"model directory {key} (booted offline)")
    return describe_preset(key) if kind == "preset" else describe_run(key)


def describe_loaded(model: Any, title: str) -> str:
    """A model with no task or history (a model directory or a bridge): its architecture from its cfg, its
    parameters and its tokenizer."""
    ps = list(model.parameters())  # a bridge's parameters are those of the model it wraps
    tok = getattr(model, "tokenizer", None)
    return "\n".join([
        title.strip(),
        f"  model: {describe_bridge(model)}",
        f"  parameters: {sum(p.numel() for p in ps):,}",
        f"  tokenizer: {type(tok).__name__} of {len(tok):,} entries (prompts may be text)" if tok is not None
        else "  tokenizer: none (prompts are token ids)",
    ])


def describe_preset(name: str) -> str:
    """A preset: its model, parameters and task, and what the JSON beside its embedded weights holds."""
    pre = preset(name)
    weights_file = embedded_path(name)
    total, trained = count_parameters(pre.model, weights_file if weights_file.is_file() else None)
    lines = [
        f"preset {pre.name}: {pre.description}",
        f"  model: {describe_model(pre.model)}",
        f"  parameters: {total:,} ({trained:,} trained)",
        f"  task: {pre.task.describe()}",
    ]
    if not embedded_path(name).is_file():
        return "\n".join([*lines, "  embedded weights: none (train with `mechwork train`)"])
    meta = embedded_info(name)
    return "\n".join([
        *lines,
        f"  embedded weights: {embedded_path(name).name} ({embedded_path(name).stat().st_size:,} bytes)",
        f"  trained: {describe_recipe(meta['train'], pre.task)}",
        *(f"  {line}" for line in get_kit(pre.task.kind).embedded_lines(pre.task, meta)),
        f"  regenerate: {meta.get('command', '?')}",
    ])


def describe_run(path: str) -> str:
    """A run directory: task, model, recipe, checkpoints, the last evaluation and what its history says."""
    run = Run(path)
    steps = run.steps
    lines = [
        f"run {run.path}",
        f"  task: {run.task.describe()}",
        f"  model: {describe_model(run.model_config)}",
        f"  train: {describe_recipe(run.config['train'], run.task, steps[-1] if steps else 0)}",
        f"  checkpoints: {len(steps)}" + (f" (steps {steps[0]}..{steps[-1]})" if steps else ""),
    ]
    df = run.metrics
    if len(df):
        last = df.iloc[-1]
        cols = [c for c in ("train_loss", "train_acc", "test_loss", "test_acc") if c in df]
        lines.append(
            f"  last eval (step {int(last['step'])}, {last['wall']:.1f} s): "
            + ", ".join(f"{c} {last[c]:.4g}" for c in cols)
        )
        lines += [f"  {line}" for line in get_kit(run.task.kind).history_lines(run.task, df)]
    return "\n".join(lines)


def demo_report(device: str | None = None) -> str:
    """Load the embedded grokked model and report its accuracy and how it was made."""
    from mechwork.analysis.grokking import evaluate
    from mechwork.source import open_source

    bundle = evaluate(open_source("modadd-113", device=device))
    pre = preset("modadd-113")
    meta = embedded_info("modadd-113")  # the stored summary and history (read here: tests replace it)
    ev, task = bundle["accuracy"], bundle.info.task
    grok = meta.get("summary", {}).get("grok_step")
    hist = (meta.get("history") or {}).get("metrics")
    spikes = []
    if hist and grok is not None:
        from mechwork.analysis.spikes import spike_sentence

        spikes = [f"  {spike_sentence(hist['step'], hist['test_loss'], hist['test_acc'])}"]
    return "\n".join(
        [
            f"mechwork demo: the embedded {pre.name} model ({pre.description})",
            f"  model: {describe_model(pre.model)}",
            f"  accuracy on all {ev.n_all:,} pairs (a + b) mod 113: {ev.all:.2%} (loss {ev.all_loss:.2e})",
            f"  train split {ev.n_train:,} pairs: acc {ev.train:.2%}; held-out {ev.n_test:,} pairs: acc {ev.test:.2%}",
            f"  trained by mechwork: {describe_recipe(meta['train'], task)}"
            + (f"; grokked (test acc >= 99%) at step {grok}" if grok is not None else
               "; test acc never reached 99% in training"),
            *spikes,
            f"  {len(bundle.info.hooks)} hook points, e.g. hook_embed, blocks.0.attn.hook_pattern,"
            " blocks.0.mlp.hook_post: use model.run_with_cache(tokens)",
        ]
    )
