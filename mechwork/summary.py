"""Plain-text summaries of runs, presets and the embedded model (``mechwork info``, ``demo``).

Evaluation here goes through the hooked bridge itself, not the training fast
path, so the numbers printed are those of the model a user gets from
:func:`mechwork.load`.

Example::

    >>> from mechwork.summary import evaluate_modadd
    >>> import mechwork
    >>> acc = evaluate_modadd(mechwork.load("modadd-113"), mechwork.preset("modadd-113").task)
    >>> acc["all_acc"] > 0.995
    True
"""

from __future__ import annotations

import os
from typing import TYPE_CHECKING, Any

import torch
import torch.nn.functional as F

from mechwork.models import ToyConfig, build_model, preset
from mechwork.runs import Run, embedded_info, embedded_path, load, resolve
from mechwork.tasks import InductionTask, ModularArithmetic, Task

if TYPE_CHECKING:  # pragma: no cover
    from transformer_lens.model_bridge import TransformerBridge

__all__ = ["demo_report", "describe", "evaluate_modadd"]


@torch.no_grad()
def evaluate_modadd(
    model: TransformerBridge, task: ModularArithmetic, batch_size: int = 4096
) -> dict[str, float]:
    """Loss and accuracy of ``model`` (through its hooked forward) on all pairs, train and test."""
    device = next(model.parameters()).device
    logits = torch.cat(
        [model(task.tokens[i : i + batch_size].to(device))[:, -1] for i in range(0, task.n_pairs, batch_size)]
    ).cpu()
    labels = task.labels
    out: dict[str, float] = {}
    for name, idx in (("all", slice(None)), ("train", task.train_idx), ("test", task.test_idx)):
        lg, lb = logits[idx], labels[idx]
        out[f"{name}_loss"] = float(F.cross_entropy(lg, lb))
        out[f"{name}_acc"] = float((lg.argmax(-1) == lb).float().mean())
    return out


def _arch(cfg: ToyConfig) -> str:
    mlp = "attention-only" if cfg.attn_only else f"d_mlp {cfg.d_mlp} ({cfg.act_fn})"
    norm = "no LayerNorm" if cfg.normalization is None else "LayerNorm"
    bias = "attention biases " + ("trained" if cfg.attn_bias else "frozen at 0")
    return (
        f"{cfg.n_layers} layer(s), d_model {cfg.d_model}, {cfg.n_heads} heads of {cfg.d_head}, {mlp}, "
        f"{norm}, d_vocab {cfg.d_vocab} -> {cfg.d_vocab_out}, n_ctx {cfg.n_ctx}; {bias}"
    )


def _n_params(cfg: ToyConfig) -> tuple[int, int]:
    model = build_model(cfg, "cpu")
    ps = list(model.parameters())
    return sum(p.numel() for p in ps), sum(p.numel() for p in ps if p.requires_grad)


def _batch(train: dict[str, Any], task: Task | None) -> str:
    """How each step's batch was drawn (see ``training._train_batch``)."""
    if isinstance(task, InductionTask):  # the task draws fresh sequences every step; batch_size is not used
        return f"minibatches of {task.batch_size} fresh sequences per step"
    size = train.get("batch_size")
    if size is None:
        return "full batch"
    if isinstance(task, ModularArithmetic) and size >= len(task.train_idx):
        return f"full batch (batch_size {size} >= {len(task.train_idx)} training pairs)"
    return f"minibatches of {size}"


def _recipe(train: dict[str, Any], task: Task | None = None, reached: int | None = None) -> str:
    """The training recipe in one line; ``task`` makes the batch description exact.

    ``reached`` (the last step the run recorded) marks a run that stopped before its planned steps.
    """
    gf = (
        f"Grokfast alpha {train['grokfast_alpha']} lambda {train['grokfast_lambda']}"
        if train.get("grokfast_alpha") is not None
        else "no Grokfast"
    )
    batch = _batch(train, task)
    return (
        f"AdamW lr {train['lr']:g}, wd {train['weight_decay']:g}, betas {tuple(train['betas'])}, "
        f"warmup {train['warmup_steps']}, {batch}, {gf}, {train['steps']} step{'' if train['steps'] == 1 else 's'}"
        + (f" planned, stopped at step {reached}" if reached is not None and reached < train["steps"] else "")
        + (f" (lr decays to 0 over the last {train['decay_steps']})" if train.get("decay_steps") else "")
    )


def last_recorded(src: Any) -> int | None:
    """The last step a dashboard source's run recorded (evaluation or shown checkpoint); None for a preset."""
    if src.kind != "run":
        return None
    steps = [int(src.step)] if src.step is not None else []
    if src.metrics is not None and "step" in src.metrics and len(src.metrics):
        steps.append(int(src.metrics["step"].max()))
    return max(steps) if steps else 0


def describe(run_or_preset: str | os.PathLike[str]) -> str:
    """A readable description of a run directory or a preset."""
    kind, key = resolve(run_or_preset)
    if kind == "preset":
        pre = preset(key)
        total, trained = _n_params(pre.model)
        lines = [
            f"preset {pre.name}: {pre.description}",
            f"  model: {_arch(pre.model)}",
            f"  parameters: {total:,} ({trained:,} trained)",
            f"  task: {pre.task.describe()}",
        ]
        if embedded_path(key).is_file():
            meta = embedded_info(key)
            lines += [
                f"  embedded weights: {embedded_path(key).name} ({embedded_path(key).stat().st_size:,} bytes)",
                f"  trained: {_recipe(meta['train'], pre.task)}",
                *(f"  {line}" for line in _embedded_results(meta, pre.task)),
                f"  regenerate: {meta.get('command', '?')}",
            ]
        else:
            lines.append("  embedded weights: none (train with `mechwork train`)")
        return "\n".join(lines)
    run = Run(key)
    steps = run.steps
    lines = [
        f"run {run.path}",
        f"  task: {run.task.describe()}",
        f"  model: {_arch(run.model_config)}",
        f"  train: {_recipe(run.config['train'], run.task, steps[-1] if steps else 0)}",
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
        lines += [f"  {line}" for line in _history_lines(df, run.task)]
    return "\n".join(lines)


def _history_lines(df: Any, task: Task) -> list[str]:
    """What a metrics table (``step``, ``test_acc``, ``test_loss``, ...) says about the run, one claim a line."""
    from mechwork.analysis.progress import GROKKED, held_out_caveat, spike_sentence

    if "test_acc" not in df or not len(df):
        return []
    if isinstance(task, InductionTask):
        best = int(df["test_acc"].idxmax())
        return [f"induction accuracy (next token inside the repeated segments of held-out sequences): "
                f"{df['test_acc'].iloc[-1]:.2%} at step {int(df['step'].iloc[-1])}; best "
                f"{df['test_acc'].loc[best]:.2%} at step {int(df['step'].loc[best])}"]
    hit = df[df["test_acc"] >= GROKKED]
    lines = [f"test acc >= {GROKKED:.0%} first at step {int(hit['step'].iloc[0])}" if len(hit) else
             f"test acc < {GROKKED:.0%} so far (best {df['test_acc'].max():.2%})"]
    caveat = held_out_caveat(len(task.test_idx)) if isinstance(task, ModularArithmetic) else None
    if caveat is not None:
        lines.append(caveat)
    if len(hit) and "test_loss" in df:
        lines.append(spike_sentence(df["step"].tolist(), df["test_loss"].tolist(), df["test_acc"].tolist()))
    return lines


def _embedded_results(meta: dict[str, Any], task: Task) -> list[str]:
    """Results lines for a preset's embedded model, from its stored summary and history."""
    import pandas as pd

    s = meta.get("summary", {})
    hist = (meta.get("history") or {}).get("metrics")
    df = pd.DataFrame(hist) if hist else None
    step = meta.get("step", s.get("steps"))
    if isinstance(task, InductionTask):
        lines = []
        if "repeat_acc" in s:
            lines.append(f"induction accuracy (next token inside the repeated segments of held-out sequences) "
                         f"{s['repeat_acc']:.2%} at step {step}"
                         + (f"; {s['other_acc']:.2%} elsewhere" if "other_acc" in s else ""))
        return lines if lines or df is None else _history_lines(df, task)
    lines = []
    if "train_acc" in s and "test_acc" in s:
        lines.append(f"at step {step}: train acc {s['train_acc']:.4f}, test acc {s['test_acc']:.4f}")
    if df is not None:
        lines += _history_lines(df, task)
    elif s.get("grok_step") is not None:
        lines.append(f"test acc >= 99% first at step {s['grok_step']}")
    return lines


def demo_report(device: str | None = None) -> str:
    """Load the embedded grokked model and report its accuracy and how it was made."""
    pre = preset("modadd-113")
    assert isinstance(pre.task, ModularArithmetic)
    model = load("modadd-113", device=device)
    meta = embedded_info("modadd-113")
    ev = evaluate_modadd(model, pre.task)
    hooks = list(model.hook_dict)
    s = meta.get("summary", {})
    grok = s.get("grok_step")
    hist = (meta.get("history") or {}).get("metrics")
    spikes = []
    if hist and grok is not None:
        from mechwork.analysis.progress import spike_sentence

        spikes = [f"  {spike_sentence(hist['step'], hist['test_loss'], hist['test_acc'])}"]
    return "\n".join(
        [
            f"mechwork demo: the embedded {pre.name} model ({pre.description})",
            f"  model: {_arch(pre.model)}",
            f"  accuracy on all {pre.task.n_pairs:,} pairs (a + b) mod 113: {ev['all_acc']:.2%}"
            f" (loss {ev['all_loss']:.2e})",
            f"  train split {len(pre.task.train_idx):,} pairs: acc {ev['train_acc']:.2%};"
            f" held-out {len(pre.task.test_idx):,} pairs: acc {ev['test_acc']:.2%}",
            f"  trained by mechwork: {_recipe(meta['train'], pre.task)}"
            + (f"; grokked (test acc >= 99%) at step {grok}" if grok is not None else
               "; test acc never reached 99% in training"),
            *spikes,
            f"  {len(hooks)} hook points, e.g. hook_embed, blocks.0.attn.hook_pattern,"
            " blocks.0.mlp.hook_post: use model.run_with_cache(tokens)",
        ]
    )
