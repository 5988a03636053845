"""Training: AdamW (optionally Grokfast-filtered, ⊥Grad-projected, on a StableMax loss) on a task, into a run directory.

(The module is ``training`` rather than ``train`` so that ``mechwork.train``
always means the function: importing a submodule named ``train`` would
rebind the package attribute to the module.)

One loop serves every task kit: each step's batch comes through the task's data seam,
``task.batch("train", step)`` (see :func:`train_batches`), and the default model and
recipe from its kit. For modular arithmetic it uses the fast path of
:mod:`mechwork.fastpath` (last-position logits from per-token tables), which
trains the bridge's own parameters several times faster than a forward through
the bridge; other tasks use the bridge's plain module with hooks bypassed.
:func:`train` is two steps: open (or resume) the run, then the loop.
Either way the weights live in the bridge, so the trained model is the
hookable TransformerLens model with no conversion step.

The loop is deterministic on CPU for a fixed seed (on one machine, at one thread
count; not across machines), and ``resume=True``
continues from ``resume.safetensors`` (weights, AdamW moments, Grokfast EMA)
to exactly the weights an uninterrupted run reaches; a resume file that lacks
any of that state is refused. Training holds the run directory's lock, and
stops with :class:`~mechwork.errors.NonFiniteError` at the first NaN or inf
loss or weight, leaving the run at its last finite checkpoint.

Example::

    >>> from mechwork.tasks import ModularArithmetic
    >>> from mechwork.training import TrainConfig, train
    >>> res = train(ModularArithmetic(p=23, train_frac=0.5), train_cfg=TrainConfig(steps=20), quiet=True)
    >>> sorted(res.history.columns)[:3]
    ['lr', 'step', 'test_acc']
"""

from __future__ import annotations

import functools
import inspect
import math
import os
import sys
import time
from collections.abc import Callable, Mapping
from dataclasses import dataclass
from pathlib import Path
from typing import TYPE_CHECKING, Any, ParamSpec

import torch
import torch.nn.functional as F
from jaxtyping import Float, Int
from torch import Tensor

from mechwork.engine import loss_accuracy
from mechwork.errors import CheckpointError, ConfigError, NonFiniteError, invalid
from mechwork.fastpath import modadd_logits, supports_fast_path
from mechwork.io import first_non_finite
from mechwork.kit import BUILTIN, Batch, Task, kit_of
from mechwork.kitcheck import check_task
from mechwork.limits import check_fits, model_params, train_bytes
from mechwork.masks import MaskedOptimizerHook
from mechwork.models import ToyConfig, build_model, load_weights, native_module, resolve_device, weights
from mechwork.runs import Run, RunLock, RunWriter, package_versions
from mechwork.trainconfig import TrainConfig

if TYPE_CHECKING:  # pragma: no cover
    import pandas as pd
    from transformer_lens.model_bridge import TransformerBridge

__all__ = ["GrokfastEMA", "TrainConfig", "TrainResult", "checkpoint_steps", "eval_sets", "orthogonalise_grads",
           "recipe", "stablemax_cross_entropy", "train", "train_batches"]


def recipe(task: Task) -> TrainConfig:
    """The default :class:`TrainConfig` for ``task``, from its kit.

    Modular arithmetic gets mechwork's fast grokking recipe (the
    :class:`TrainConfig` defaults; see ``benchmarks/README.md`` for how it
    compares with Nanda et al.'s). Induction gets plain AdamW on fresh batches.
    """
    return kit_of(task).recipe(task)


def checkpoint_steps(steps: int, ckpt_every: int | None = None, ckpt_log: int = 24) -> list[int]:
    """Log-spaced plus linear checkpoint steps in ``[0, steps]``.

    >>> checkpoint_steps(1000, ckpt_every=250, ckpt_log=5)
    [0, 1, 4, 16, 63, 250, 251, 500, 750, 1000]
    """
    every = ckpt_every or max(1, steps // 40)
    out = set(range(0, steps + 1, every)) | {0, steps}
    if ckpt_log > 0 and steps > 1:
        out |= {round(steps ** (i / ckpt_log)) for i in range(ckpt_log)}
    return sorted(out)


class GrokfastEMA:
    """Grokfast (Lee et al. 2024): amplify the slow (EMA) part of the gradient.

    ``ema = alpha * ema + (1 - alpha) * g`` then ``g = g + lamb * ema``; the EMA
    starts at the first gradient, as in the reference ``gradfilter_ema``.
    """

    def __init__(self, named: Mapping[str, Tensor], alpha: float, lamb: float):
        self.named, self.alpha, self.lamb = named, alpha, lamb
        self.ema: dict[str, Tensor] = {}

    @torch.no_grad()
    def __call__(self) -> None:
        for name, p in self.named.items():
            if p.grad is None:
                continue
            e = self.ema.get(name)
            if e is None:
                self.ema[name] = e = p.grad.detach().clone()
            else:
                e.mul_(self.alpha).add_(p.grad, alpha=1 - self.alpha)
            p.grad.add_(e, alpha=self.lamb)


def stablemax_cross_entropy(logits: Float[Tensor, "n vocab"], targets: Int[Tensor, " n"]) -> Tensor:
    """Mean cross-entropy under StableMax (Prieto et al. 2025), computed in float64 as in their code.

    StableMax replaces softmax's ``exp`` by ``s(x) = x + 1`` for ``x >= 0`` and ``1 / (1 - x)`` for ``x < 0``:
    ``p_i = s(x_i) / sum_j s(x_j)``, and the loss is ``-log p_target``.

    >>> round(float(stablemax_cross_entropy(torch.tensor([[1.0, -1.0]]), torch.tensor([0]))), 4)  # -log(2 / 2.5)
    0.2231
    """
    x = logits.to(torch.float64)
    s = torch.where(x >= 0, x + 1, 1 / (1 - torch.clamp(x, max=0.0)))
    logp = torch.log(s.gather(-1, targets[:, None]).squeeze(-1)) - torch.log(s.sum(-1))
    return -logp.mean()


@torch.no_grad()
def orthogonalise_grads(named: Mapping[str, Tensor], eps: float = 1e-30) -> None:
    """⊥Grad (Prieto et al. 2025), in place: each gradient loses its component along its parameter, then is
    rescaled to its original norm. A zero parameter (e.g. a zero bias) keeps its gradient as it is.

    >>> w = torch.nn.Parameter(torch.tensor([1.0, 0.0])); w.grad = torch.tensor([3.0, 4.0])
    >>> orthogonalise_grads({"w": w}); w.grad.tolist()  # (0, 4) rescaled to norm 5
    [0.0, 5.0]
    """
    for p in named.values():
        if p.grad is None:
            continue
        w, g = p.detach().reshape(-1), p.grad.reshape(-1)
        orth = g - (torch.dot(w, g) / (torch.dot(w, w) + eps)) * w
        p.grad.copy_((orth * (g.norm() / (orth.norm() + eps))).view_as(p.grad))


@dataclass
class TrainResult:
    """The trained (eval-mode) model, its metric rows and, if written, its run."""

    model: TransformerBridge
    rows: list[dict[str, Any]]
    run: Run | None

    @property
    def history(self) -> pd.DataFrame:
        import pandas as pd

        return pd.DataFrame(self.rows)

    def first_step(self, metric: str = "test_acc", threshold: float = 0.99) -> int | None:
        """First evaluated step where ``metric >= threshold`` (None if never)."""
        return next((r["step"] for r in self.rows if r.get(metric, -1) >= threshold), None)


def _make_forward(
    model: TransformerBridge, cfg: ToyConfig, task: Task, fast: bool
) -> Callable[[Batch], tuple[Float[Tensor, "n d_vocab_out"], Int[Tensor, " n"]]]:
    """A function from a batch to (logits, targets) at the positions the loss counts."""
    if fast and supports_fast_path(cfg, task):
        w = weights(model)
        return lambda b: (modadd_logits(w, cfg, b.tokens), b.targets[:, -1])
    module = native_module(model) if fast else model

    def forward(b: Batch) -> tuple[Tensor, Tensor]:
        logits = module(b.tokens)
        return logits[b.mask], b.targets[b.mask]

    return forward


def train_batches(task: Task, cfg: TrainConfig, device: torch.device | str = "cpu") -> Callable[[int], Batch]:
    """The training batch of each step, on ``device``, from the task's data seam ``task.batch("train", step)``.

    A task whose training split is one fixed dataset (``task.finite``) trains on all of it, or, with
    ``cfg.batch_size`` smaller than it, on a minibatch drawn by a permutation seeded by
    ``(cfg.seed, step)`` (so a resumed run sees the same data).
    """
    if not getattr(task, "finite", False):
        return lambda step: task.batch("train", step).to(device)
    full = task.batch("train").to(device)
    size = cfg.batch_size
    if size is None or size >= len(full):
        return lambda step: full
    gen = torch.Generator().manual_seed(cfg.seed)

    def minibatch(step: int) -> Batch:
        g = gen.manual_seed(cfg.seed * 1_000_003 + step)
        idx = torch.randperm(len(full), generator=g)[:size].to(device)
        return Batch(full.tokens[idx], full.targets[idx], full.mask[idx])

    return minibatch


def eval_sets(task: Task, device: torch.device | str = "cpu") -> dict[str, Batch]:
    """The task's held-out splits (``task.eval_splits``, default ``("test",)``) on ``device``."""
    splits = getattr(task, "eval_splits", ("test",))
    return {s: task.batch(s).to(device) for s in splits if s != "train"}


_P = ParamSpec("_P")


def _holding_run_lock(fn: Callable[_P, TrainResult]) -> Callable[_P, TrainResult]:
    """Run ``fn`` holding the writer lock of its ``out`` run directory (a second writer is refused)."""
    sig = inspect.signature(fn)

    @functools.wraps(fn)
    def wrapper(*args: _P.args, **kwargs: _P.kwargs) -> TrainResult:
        bound = sig.bind(*args, **kwargs)
        out = bound.arguments.get("out")
        if out is None:
            return fn(*args, **kwargs)
        # refuse a bad target before the lock creates the directory; fn checks again under the lock
        opts = {k: bool(bound.arguments.get(k, False)) for k in ("resume", "force")}
        RunWriter.check_target(out, **opts)
        with RunLock(out):
            return fn(*args, **kwargs)

    return wrapper


@_holding_run_lock
def train(
    task: Task,
    model_cfg: ToyConfig | None = None,
    train_cfg: TrainConfig | None = None,
    out: str | os.PathLike[str] | None = None,
    *,
    resume: bool = False,
    force: bool = False,
    quiet: bool = False,
    device: torch.device | str | None = None,
    fast: bool = True,
    stop_when: Callable[[dict[str, Any]], bool] | None = None,
    init: Mapping[str, Tensor] | None = None,
    masks: Mapping[str, Tensor] | None = None,
) -> TrainResult:
    """Train a toy model on ``task``; write a run directory when ``out`` is given.

    ``resume`` continues the run at ``out`` from its last checkpoint: its stored
    task, model and train configs are used, and a ``train_cfg`` passed along
    may differ from the stored one only in ``steps`` (to extend a run); without
    one, the stored configs are used as they are (nothing falls back to a recipe).
    ``fast=False`` trains through the hooked bridge forward (for benchmarks).
    ``stop_when(row)`` may end training early after an evaluation.
    ``init`` replaces the seeded initial weights (e.g. rewinding a lottery
    ticket to an early checkpoint) and is used exactly as given:
    ``train_cfg.init_scale`` multiplies the seeded init only, so with ``init``
    it must be 1.0 (a :class:`~mechwork.errors.ConfigError` otherwise: scale
    the weights you pass instead). ``masks`` (see :mod:`mechwork.masks`) zero
    the pruned weights at the start and keep them at zero through training.

    With ``out``, training holds the run directory's lock (another writer gets
    :class:`~mechwork.errors.RunBusyError`). A NaN or inf loss, evaluation loss
    or weight stops training with :class:`~mechwork.errors.NonFiniteError`; no
    non-finite checkpoint is written, and the run stays resumable from its
    last finite checkpoint.
    """
    plan = _open(task, model_cfg, train_cfg, out, resume=resume, force=force, device=device, fast=fast)
    if (init is not None or masks is not None) and resume:
        raise ConfigError("'init' and 'masks' apply to a fresh run, not to resume=True")
    if init is not None and plan.train_cfg.init_scale != 1.0:  # the given weights are not scaled a second time
        raise invalid("init_scale", "1.0 when 'init' is given, whose weights are used as they are",
                      plan.train_cfg.init_scale)
    loop = _Loop(plan, fast=fast, init=init, masks=masks)
    loop.start_writing()
    rows = loop.run(stop_when, quiet)
    return TrainResult(loop.model, rows, Run(plan.writer.path) if plan.writer is not None else None)


# -- open or resume ---------------------------------------------------------------------------
@dataclass
class _Plan:
    """What a run starts from: its configs, its run directory and, on resume, the saved state."""

    task: Task
    model_cfg: ToyConfig
    train_cfg: TrainConfig
    writer: RunWriter | None
    device: torch.device
    force: bool = False
    start: int = 0
    state: dict[str, Tensor] | None = None
    wall: float = 0.0

    @property
    def resume(self) -> bool:
        return self.state is not None


def _open(
    task: Task, model_cfg: ToyConfig | None, train_cfg: TrainConfig | None, out: str | os.PathLike[str] | None, *,
    resume: bool, force: bool, device: torch.device | str | None, fast: bool,
) -> _Plan:
    """Check the arguments and settle the configs of a fresh run, or of the run to resume; write nothing."""
    kit = kit_of(task)
    if task.kind not in BUILTIN:  # a user kit's batches, model and recipe, tried before anything is written
        check_task(kit, task)
    if model_cfg is not None and not isinstance(model_cfg, ToyConfig):
        raise invalid("model_cfg", "a ToyConfig or None", type(model_cfg).__name__)
    if train_cfg is not None and not isinstance(train_cfg, TrainConfig):
        raise invalid("train_cfg", "a TrainConfig or None", type(train_cfg).__name__)
    dev = resolve_device(device)
    writer = RunWriter(out) if out is not None else None
    if writer is not None:
        RunWriter.check_target(writer.path, resume=resume, force=force)
    elif resume:
        raise invalid("out", "a run directory when resume=True", out)
    if resume:
        assert writer is not None
        plan = _resumed(writer, train_cfg, dev)
    else:
        plan = _Plan(task, model_cfg or ToyConfig.for_task(task), train_cfg or recipe(task), writer, dev, force)
    _check_fits(plan.model_cfg, plan.task)
    check_fits(f"training a model of {model_params(plan.model_cfg):,} parameters on the {plan.task.kind} task",
               train_bytes(plan.task.to_dict(), plan.model_cfg, plan.train_cfg.batch_size))
    if plan.model_cfg.attn_rate < 1.0 and not (fast and supports_fast_path(plan.model_cfg, plan.task)):
        raise ConfigError("attn_rate < 1 trains on the fast path only (1 layer, no LayerNorm, [a, b, =] inputs)")
    return plan


def _resumed(writer: RunWriter, train_cfg: TrainConfig | None, device: torch.device) -> _Plan:
    """The one place a resume is validated: the run's stored configs (only ``steps`` may change) and state."""
    run = Run(writer.path)
    stored = TrainConfig.from_dict(run.config["train"])
    if train_cfg is not None:
        changed = {k for k, v in train_cfg.to_dict().items() if k != "steps" and stored.to_dict()[k] != v}
        if changed:
            raise ConfigError(f"cannot change {sorted(changed)} on resume; only 'steps' may change")
        stored = TrainConfig.from_dict(stored.to_dict() | {"steps": train_cfg.steps})
    start, state, meta = writer.load_resume()
    return _Plan(run.task, run.model_config, stored, writer, device, start=start, state=state,
                 wall=float(meta.get("wall", 0.0)))


def _check_fits(cfg: ToyConfig, task: Task) -> None:
    for name in ("d_vocab", "d_vocab_out", "n_ctx"):
        need, have = getattr(task, name), getattr(cfg, name)
        if (name == "n_ctx" and have < need) or (name != "n_ctx" and have != need):
            raise ConfigError(f"model '{name}' is {have} but the task needs {need}")


# -- the loop ---------------------------------------------------------------------------------
class _Loop:
    """The model, optimiser and filters of one training run, and the loop that steps them."""

    def __init__(self, plan: _Plan, *, fast: bool, init: Mapping[str, Tensor] | None,
                 masks: Mapping[str, Tensor] | None):
        self.plan, cfg = plan, plan.train_cfg
        self.model = build_model(plan.model_cfg, plan.device)
        if init is not None:
            load_weights(self.model, dict(init), source="init")
        if plan.train_cfg.init_scale != 1.0 and not plan.resume and init is None:  # Omnigrok's alpha: the seeded init
            with torch.no_grad():
                for p in weights(self.model).values():
                    p.mul_(plan.train_cfg.init_scale)
        self.named = {k: p for k, p in weights(self.model).items() if p.requires_grad}
        self.masked = None
        if masks is not None:
            self.masked = MaskedOptimizerHook(weights(self.model), masks)
            self.masked.after_step()
        self.opt = torch.optim.AdamW(list(self.named.values()), lr=cfg.lr, betas=cfg.betas,
                                     weight_decay=cfg.weight_decay)
        self.grokfast = (GrokfastEMA(self.named, cfg.grokfast_alpha, cfg.grokfast_lambda)
                         if cfg.grokfast_alpha is not None else None)
        self.forward = _make_forward(self.model, plan.model_cfg, plan.task, fast)
        self.last_ckpt: int | None = plan.start if plan.resume else None
        self.t0 = 0.0

    def start_writing(self) -> None:
        """Write the run's config (a fresh run) or restore the saved state (a resume)."""
        plan, writer = self.plan, self.plan.writer
        if writer is None:
            return
        config = {
            "task": plan.task.to_dict(),
            "model": plan.model_cfg.to_dict(),
            "train": plan.train_cfg.to_dict(),
            "seed": plan.model_cfg.seed,
            "versions": package_versions(),
        }
        if plan.state is not None:
            _restore(self.model, self.named, self.opt, self.grokfast, plan.state,
                     str(writer.path / "resume.safetensors"), plan.start)
            writer.truncate_metrics(plan.start - 1)
            writer.update_config(config)
            return
        kept = writer.start(config, force=plan.force)
        if kept:
            shown = ", ".join(kept[:8]) + (f" and {len(kept) - 8} more" if len(kept) > 8 else "")
            print(f"mechwork: force removed only mechwork's own files from {writer.path}; kept {len(kept)}"
                  f" other entr{'y' if len(kept) == 1 else 'ies'}: {shown}", file=sys.stderr)

    def run(self, stop_when: Callable[[dict[str, Any]], bool] | None, quiet: bool) -> list[dict[str, Any]]:
        """Evaluate, checkpoint and step from the plan's start to its last step (or an early stop)."""
        from tqdm.auto import tqdm

        plan, cfg, writer = self.plan, self.plan.train_cfg, self.plan.writer
        rows = [] if writer is None else _existing_rows(writer.path)
        ckpts = set(checkpoint_steps(cfg.steps, cfg.ckpt_every, cfg.ckpt_log))
        evals = eval_sets(plan.task, plan.device)
        batches = train_batches(plan.task, cfg, plan.device)
        self.bar = tqdm(total=cfg.steps, initial=plan.start, disable=quiet, desc="train", dynamic_ncols=True)
        self.t0 = time.perf_counter() - plan.wall
        self.model.train()
        for step in range(plan.start, cfg.steps + 1):
            batch = batches(step)
            if step % cfg.eval_every == 0 or step == cfg.steps:
                rows.append(self.evaluate(batch, evals, step))
            stop = step == cfg.steps or bool(
                stop_when is not None and rows and rows[-1]["step"] == step and stop_when(rows[-1])
            )
            if writer is not None and (step in ckpts or stop):  # an early stop is checkpointed too
                self.checkpoint(step)
            if stop:
                break
            self.update(batch, step)
        self.bar.close()
        self.model.eval()
        return rows

    def diverged(self, step: int, what: str) -> NonFiniteError:
        self.bar.close()
        writer, last = self.plan.writer, self.last_ckpt
        kept = (
            "no run directory was written" if writer is None
            else f"{writer.path} keeps its last finite checkpoint, step {last}" if last is not None
            else f"no checkpoint of {writer.path} was finite"
        )
        return NonFiniteError(f"training stopped at step {step}: {what}; {kept}", step, last)

    def evaluate(self, batch: Batch, evals: dict[str, Batch], step: int) -> dict[str, Any]:
        row = _evaluate(self.forward, batch, evals, step, self.plan.train_cfg.lr_at(step),
                        time.perf_counter() - self.t0)
        bad = next((k for k, v in row.items() if isinstance(v, float) and not math.isfinite(v)), None)
        if bad is not None:
            raise self.diverged(step, f"the evaluated {bad} is {row[bad]}")
        if self.plan.writer is not None:
            self.plan.writer.log(row)
        self.bar.set_postfix({k: f"{v:.3g}" for k, v in row.items() if k.startswith(("train", "test"))})
        return row

    def checkpoint(self, step: int) -> None:
        """Write the weights and the resume state at ``step``; never a non-finite checkpoint."""
        assert self.plan.writer is not None
        ckpt = {k: v.detach().cpu() for k, v in weights(self.model).items()}
        state = _state(self.model, self.named, self.opt, self.grokfast)
        bad_w, bad_s = first_non_finite(ckpt), first_non_finite(state)
        if bad_w is not None or bad_s is not None:
            what = f"weight {bad_w!r}" if bad_w is not None else f"optimiser state {bad_s!r}"
            raise self.diverged(step, f"{what} holds NaN or inf")
        self.plan.writer.checkpoint(step, ckpt)
        self.plan.writer.save_resume(step, state, {"wall": time.perf_counter() - self.t0})
        self.last_ckpt = step

    def update(self, batch: Batch, step: int) -> None:
        """One optimiser step on ``batch`` (Grokfast filter and masks applied)."""
        for group in self.opt.param_groups:
            group["lr"] = self.plan.train_cfg.lr_at(step)
        logits, targets = self.forward(batch)
        stable = self.plan.train_cfg.loss == "stablemax"
        loss = stablemax_cross_entropy(logits, targets) if stable else F.cross_entropy(logits, targets)
        if not bool(torch.isfinite(loss)):
            raise self.diverged(step, f"the training loss is {float(loss.detach())}")
        self.opt.zero_grad(set_to_none=True)
        loss.backward()
        if self.grokfast is not None:
            self.grokfast()
        if self.plan.train_cfg.orthograd:
            orthogonalise_grads(self.named)
        if self.masked is not None:
            self.masked.before_step()
        self.opt.step()
        if self.masked is not None:
            self.masked.after_step()
        self.bar.update(1)


@torch.no_grad()
def _evaluate(
    forward: Callable[[Batch], tuple[Tensor, Tensor]],
    train_batch: Batch,
    evals: dict[str, Batch],
    step: int,
    lr: float,
    wall: float,
) -> dict[str, Any]:
    row: dict[str, Any] = {"step": step, "wall": round(wall, 4), "lr": lr}
    sets = {"train": train_batch} | {k: v for k, v in evals.items() if k != "train"}
    for name, b in sets.items():
        loss, acc = loss_accuracy(*forward(b))
        row[f"{name}_loss"], row[f"{name}_acc"] = float(loss), float(acc)
    return row


def _existing_rows(path: Path) -> list[dict[str, Any]]:
    from mechwork.runs import read_metrics_rows

    return read_metrics_rows(path / "metrics.jsonl")


def _state(
    model: TransformerBridge, named: Mapping[str, Tensor], opt: torch.optim.Optimizer, gf: GrokfastEMA | None
) -> dict[str, Tensor]:
    state = {f"w.{k}": v.detach().cpu() for k, v in weights(model).items()}
    for name, p in named.items():
        s = opt.state.get(p, {})
        for key, val in s.items():
            state[f"opt.{key}.{name}"] = torch.as_tensor(val).detach().cpu()
    if gf is not None:
        state |= {f"ema.{k}": v.detach().cpu() for k, v in gf.ema.items()}
    return state


def _restore(
    model: TransformerBridge,
    named: Mapping[str, Tensor],
    opt: torch.optim.Optimizer,
    gf: GrokfastEMA | None,
    state: dict[str, Tensor],
    source: str,
    step: int,
) -> None:
    load_weights(model, {k[2:]: v for k, v in state.items() if k.startswith("w.")}, source=source)
    if step > 0:  # AdamW (and Grokfast) state exists from the first update on: all of it is needed
        needed = [f"opt.{key}.{name}" for name in named for key in ("exp_avg", "exp_avg_sq", "step")]
        if gf is not None:
            needed += [f"ema.{name}" for name in named]
        missing = [k for k in needed if k not in state]
        if missing:
            raise CheckpointError(
                f"cannot resume from {source}: it lacks {len(missing)} of the {len(needed)} optimiser"
                f" state tensors ({', '.join(missing[:3])}{', ...' if len(missing) > 3 else ''});"
                " resuming without them would restart AdamW's moments"
            )
    for name, p in named.items():
        s = {key: state[f"opt.{key}.{name}"] for key in ("step", "exp_avg", "exp_avg_sq")
             if f"opt.{key}.{name}" in state}
        if s:
            opt.state[p] = {k: v.to(p.device) if k != "step" else v for k, v in s.items()}
    if gf is not None:
        gf.ema = {k[4:]: v.to(named[k[4:]].device) for k, v in state.items() if k.startswith("ema.")}
