"""``mechwork sae``: train a sparse autoencoder on one hook of a model, and measure one.

``mechwork sae train MODEL --hook HOOK`` caches the activation at HOOK over the task's data, trains an SAE on it
(:func:`mechwork.analysis.saetrain.train_sae`), measures it (:func:`mechwork.analysis.saemetrics.evaluate_sae`) and
writes it in SAELens's layout (:func:`mechwork.analysis.saeio.save_sae`) to ``--out`` (default, for a run
directory: ``RUN/saes/HOOK``, where :func:`mechwork.analysis.saestore.saes_for` finds it; a preset needs ``--out``,
its shipped SAEs being package data). ``mechwork sae info`` prints the metrics of an SAE directory, or of every SAE a
preset ships or a run holds: L0, fraction of variance explained, dead and dense latents, and the loss recovered
when the reconstruction is spliced back in at its hook (0 = zero ablation, 1 = clean).

The data, by the task (no branch on its kind):

* a task whose training split is one fixed dataset (``task.finite``, e.g. modular arithmetic) gives its whole
  dataset, the training split and every evaluation split (for ``modadd``: all p^2 pairs); training and the metrics
  both read it;
* any other task (e.g. induction) trains on fresh training batches ``task.batch("train", step)`` for step 0, 1, ...
  until ``--n-acts`` activations, and is measured on its held-out split.

``--positions mask`` keeps the positions the task's loss counts (``Batch.mask``: for ``modadd`` the ``=`` token),
``all`` every position; the choice is stored in ``cfg.json`` (``metadata.positions``) and ``sae info`` splices the
SAE at the same positions. Bad arguments are one line and exit 2, before torch where they can be (an unknown
architecture, ``--k`` above ``--d-sae``, a non-positive ``--l1``, ``--k`` on a standard SAE or ``--l1`` on a TopK
one, a preset without ``--out``); a hook the model does not have is one line naming the nearest one.

Example::

    mechwork sae train modadd-113 --hook blocks.0.mlp.hook_post --positions mask --k 16 --out saes/modadd
    mechwork sae train runs/induction --hook blocks.1.hook_resid_pre --architecture standard --l1 3e-3
    mechwork sae info saes/modadd
    mechwork sae info modadd-113

The data an SAE of a task reads (a fixed dataset gives all of itself)::

    >>> from mechwork.tasks import InductionTask, ModularArithmetic
    >>> tokens, mask, what = task_data(ModularArithmetic(p=7), "mask", 0)
    >>> tuple(tokens.shape), int(mask.sum()), what
    ((49, 3), 49, 'its train + test splits (49 sequences), the positions its loss counts')
    >>> tokens, mask, what = task_data(InductionTask(d_vocab=16, seq_len=16, max_len=6, batch_size=4), "all", 100)
    >>> tuple(tokens.shape), mask, what
    ((8, 16), None, '2 training batches (8 sequences), every position')
"""

from __future__ import annotations

import math
from pathlib import Path
from typing import Any

import click

from mechwork import bars, limits
from mechwork.cli.args import check_source

__all__ = ["POSITIONS", "sae_group", "task_data"]

ARCHITECTURES = ("topk", "standard")  # mechwork.analysis.sae.ARCHITECTURES, without importing torch
POSITIONS = ("mask", "all")
DEFAULT_K = 16
DEFAULT_L1 = 1e-3
DEFAULT_EXPANSION = 4  # d_sae = 4 * d_in unless --d-sae


@click.group("sae")
def sae_group() -> None:
    """Sparse autoencoders: train one on a hook of a model, or measure one."""


def _check_train_args(architecture: str, k: int | None, l1: float | None, d_sae: int | None,
                      lr: float) -> None:
    """The checks that need neither torch nor the model: each refusal is one line."""
    if architecture == "standard" and k is not None:
        raise click.UsageError("'--k' applies to --architecture topk only (a standard SAE is sparse through --l1)")
    if architecture == "topk" and l1 is not None:
        raise click.UsageError("'--l1' applies to --architecture standard only (a topk SAE keeps --k latents)")
    if l1 is not None and not (math.isfinite(l1) and l1 > 0):
        raise click.BadParameter(f"must be a finite number > 0 (got {l1:g})", param_hint="'--l1'")
    if not (math.isfinite(lr) and lr > 0):
        raise click.BadParameter(f"must be a finite number > 0 (got {lr:g})", param_hint="'--lr'")
    if architecture == "topk" and k is not None and d_sae is not None and k > d_sae:
        raise click.BadParameter(f"must be at most --d-sae {d_sae}: a topk SAE keeps k of its d_sae latents "
                                 f"(got {k})", param_hint="'--k'")


def _check_out(kind: str, key: str, hook: str, out: Path | None, force: bool) -> Path:
    """Where the SAE goes: --out, else (a run) RUN/saes/HOOK; refused before torch if it cannot be written."""
    from mechwork.analysis.saestore import is_sae_dir, run_sae_dir

    if out is None:
        if kind != "run":
            what = "a preset's SAEs ship inside the package" if kind == "preset" else "a model directory is not ours"
            raise click.UsageError(f"'--out' is required for {key!r} ({what}): name the directory to write the SAE to")
        out = run_sae_dir(key, hook)
    if out.exists() and not out.is_dir():
        raise click.BadParameter(f"must be a directory (got the file {str(out)!r})", param_hint="'--out'")
    if out.is_dir() and any(out.iterdir()) and not force:
        what = "holds an SAE" if is_sae_dir(out) else "is not empty"
        raise click.BadParameter(f"{str(out)!r} {what}; pass --force to overwrite it", param_hint="'--out'")
    try:
        limits.check_writable(out / "cfg.json", "--out", make_parents=True)
    except Exception as e:  # a MechworkError: one line naming the path
        raise click.BadParameter(str(e), param_hint="'--out'") from None
    return out


def task_data(task: Any, positions: str, n_acts: int, *, for_eval: bool = False) -> tuple[Any, Any, str]:
    """``(tokens, mask, description)`` of the task's data for an SAE (see the module docstring); ``mask`` is None
    for every position. ``for_eval`` picks the held-out split of a task with a fresh batch per step."""
    import torch

    from mechwork.kit import held_out

    if getattr(task, "finite", False):
        splits = ("train", *(s for s in getattr(task, "eval_splits", ("test",)) if s != "train"))
        got = [task.batch(s) for s in splits]
        what = f"its {' + '.join(splits)} splits ({sum(len(b) for b in got):,} sequences)"
    elif for_eval:
        split = held_out(task)
        got = [task.batch(split)]
        what = f"its {split} split ({len(got[0]):,} sequences)"
    else:
        got, rows, step = [], 0, 0
        while rows < n_acts:
            b = task.batch("train", step)
            got.append(b)
            rows += int(b.mask.sum()) if positions == "mask" else b.tokens.numel()
            step += 1
        what = f"{step} training batches ({sum(len(b) for b in got):,} sequences)"
    tokens = torch.cat([b.tokens for b in got])
    mask = torch.cat([b.mask for b in got])
    where = "the positions its loss counts" if positions == "mask" else "every position"
    return tokens, (mask if positions == "mask" else None), f"{what}, {where}"


def _task_batch(task: Any) -> Any:
    """The Batch the metrics read: the task's whole data (a finite task), else its held-out split."""
    import torch

    from mechwork.kit import Batch, held_out

    if getattr(task, "finite", False):
        splits = ("train", *(s for s in getattr(task, "eval_splits", ("test",)) if s != "train"))
        got = [task.batch(s) for s in splits]
    else:
        got = [task.batch(held_out(task))]
    return Batch(torch.cat([b.tokens for b in got]), torch.cat([b.targets for b in got]),
                 torch.cat([b.mask for b in got]))


def _metric_lines(m: Any) -> list[str]:
    dead = f"{m.n_dead} dead latent{'' if m.n_dead == 1 else 's'}"
    lines = [f"L0 {m.l0:.3g}, fraction of variance explained {m.fve:.2%}, {dead} "
             f"({m.dead_fraction:.1%}), {m.n_dense} dense (firing on more than {m.dense_threshold:.0%})"]
    if math.isfinite(m.loss_recovered):
        lines.append(f"loss recovered {m.loss_recovered:.2%} (clean {m.clean_loss:.4g}, with the SAE "
                     f"{m.sae_loss:.4g}, zero-ablated {m.zero_loss:.4g})")
    return lines


def _evaluate(model: Any, sae: Any, task: Any, positions: str) -> Any:
    import torch

    from mechwork.analysis.saemetrics import evaluate_sae

    batch = _task_batch(task)
    return evaluate_sae(model, sae, batch, positions=batch.mask if positions == "mask" else torch.ones_like(batch.mask))


@sae_group.command("train")
@click.argument("model", metavar="MODEL")
@click.option("--hook", required=True, help="the hook point the SAE reads, e.g. blocks.0.mlp.hook_post")
@click.option("--architecture", type=click.Choice(ARCHITECTURES), default="topk", show_default=True,
              help="topk (Gao et al. 2024) or standard (ReLU with an L1 penalty, Bricken et al. 2023)")
@click.option("--k", type=click.IntRange(min=1), default=None, help=f"topk: latents kept (default {DEFAULT_K})")
@click.option("--l1", type=float, default=None, help=f"standard: the L1 coefficient, > 0 (default {DEFAULT_L1:g})")
@click.option("--d-sae", type=click.IntRange(min=1), default=None,
              help=f"latents (default {DEFAULT_EXPANSION} x the hook's width)")
@click.option("--steps", type=click.IntRange(min=1), default=2000, show_default=True, help="optimiser steps")
@click.option("--batch-size", type=click.IntRange(min=1), default=512, show_default=True, help="activations a step")
@click.option("--lr", type=float, default=2e-3, show_default=True, help="Adam learning rate (decays to 0 over the "
              "last 20%% of the steps)")
@click.option("--positions", type=click.Choice(POSITIONS), default="all", show_default=True,
              help="mask: the positions the task's loss counts (modadd: the = token); all: every position")
@click.option("--n-acts", type=click.IntRange(min=1), default=100_000, show_default=True,
              help="activations to cache (a task with fresh batches; a fixed dataset gives all of itself)")
@click.option("--seed", type=click.IntRange(0, limits.SEED_MAX), default=0, show_default=True)
@click.option("--out", type=click.Path(path_type=Path), default=None,
              help="SAE directory (default for a run: RUN/saes/HOOK; required for a preset)")
@click.option("--force", is_flag=True, help="overwrite an SAE (or any files) already at --out")
@click.option("--step", type=click.IntRange(min=0), default=None, help="checkpoint of a run (default: the last)")
@click.option("--device", default=None, help="torch device (default: cuda if available, else cpu)")
@bars.quiet_option
def sae_train(model: str, hook: str, architecture: str, k: int | None, l1: float | None, d_sae: int | None,
              steps: int, batch_size: int, lr: float, positions: str, n_acts: int, seed: int, out: Path | None,
              force: bool, step: int | None, device: str | None) -> None:
    """Train an SAE on one hook of a preset or a run, measure it, and save it (SAELens's layout)."""
    _check_train_args(architecture, k, l1, d_sae, lr)
    kind, key = check_source(model, step, device)
    if kind == "model":
        raise click.UsageError(f"{key!r} is a model directory with no task to draw activations from: give a preset "
                               "or a run directory")
    out = _check_out(kind, key, hook, out, force)
    from mechwork.analysis.sae import SAEConfig
    from mechwork.analysis.saeio import save_sae
    from mechwork.analysis.saetrain import SAETrainConfig, collect_activations, train_sae
    from mechwork.hooks import check_hook_name
    from mechwork.source import open_source

    bars.stage("loading the model")
    src = open_source(model, step=step, device=device, history=False)
    check_hook_name(hook, src.model.hook_dict)
    tokens, mask, what = task_data(src.task, positions, n_acts)
    bars.stage(f"caching {hook}")
    acts = collect_activations(src.model, hook, tokens, mask=mask)
    d_in = int(acts.shape[-1])
    n_latents = d_sae or DEFAULT_EXPANSION * d_in
    kk = (k or min(DEFAULT_K, n_latents)) if architecture == "topk" else None
    if kk is not None and kk > n_latents:
        raise click.BadParameter(f"must be at most d_sae {n_latents} (got {kk})", param_hint="'--k'")
    cfg = SAEConfig(d_in=d_in, d_sae=n_latents, architecture=architecture, k=kk, hook_name=hook,
                    model_name=str(src.name))
    train_cfg = SAETrainConfig(steps=steps, batch_size=min(batch_size, int(acts.shape[0])), lr=lr,
                               l1_coefficient=l1 or DEFAULT_L1, lr_decay_steps=steps // 5, seed=seed,
                               resample_every=500 if architecture == "standard" else 0)
    bars.stage(f"training the SAE on {acts.shape[0]:,} activations")
    trained = train_sae(acts, cfg, train_cfg)
    bars.stage("measuring the SAE")
    metrics = _evaluate(src.model, trained.sae, src.task, positions)
    save_sae(trained.sae, out, metadata={"positions": positions, "dataset_path": f"{src.name}: {what}",
                                         "mechwork_train": train_cfg.to_dict()})
    click.echo(f"{trained.summary()}")
    click.echo(f"  data: {src.name}, {what}")
    for line in _metric_lines(metrics):
        click.echo("  " + line)
    click.echo(f"wrote {out}")


def _sae_dirs(target: str, hook: str | None) -> tuple[dict[str, Path], str | None]:
    """(hook -> SAE directory, the model they belong to or None to read it from each cfg.json)."""
    from mechwork.analysis.saestore import is_sae_dir, saes_for

    if is_sae_dir(target):
        if hook is not None:
            raise click.UsageError(f"'--hook' picks one of a model's SAEs; {target!r} is one SAE directory already")
        return {"": Path(target)}, None
    kind, key = check_source(target)
    found = saes_for(key)
    if not found:
        where = "ships no SAEs" if kind == "preset" else "has no SAEs (none under its saes/ directory)"
        raise click.UsageError(f"{key!r} {where}; train one with 'mechwork sae train {key} --hook HOOK'")
    if hook is not None:
        from mechwork.hooks import check_hook_name

        check_hook_name(hook, found, what=f"{key}'s SAEs")
        found = {hook: found[hook]}
    return found, key


@sae_group.command("info")
@click.argument("target", metavar="SAE_DIR|MODEL")
@click.option("--hook", default=None, help="MODEL's SAE at this hook (default: all of them)")
@click.option("--model", "model_arg", default=None,
              help="measure against this preset or run (default: the model_name in the SAE's cfg.json)")
@click.option("--device", default=None, help="torch device (default: cuda if available, else cpu)")
@bars.quiet_option
def sae_info(target: str, hook: str | None, model_arg: str | None, device: str | None) -> None:
    """Describe and measure an SAE directory, or every SAE a preset ships or a run holds."""
    limits.check_device(device)
    dirs, owner = _sae_dirs(target, hook)
    from mechwork.io import load_json

    sources: dict[str, str] = {}
    for h, d in dirs.items():
        meta = (load_json(d / "cfg.json") or {}).get("metadata") or {}
        name = model_arg or owner or meta.get("model_name") or ""
        if not name:
            raise click.UsageError(f"{str(d)!r} names no model (cfg.json metadata.model_name): pass --model")
        try:
            check_source(name)
        except Exception as e:
            raise click.UsageError(f"the SAE at {str(d)!r} was trained on {name!r}, which cannot be opened here "
                                   f"({e}); pass --model") from None
        sources[h] = name
    from mechwork.analysis.saeio import load_sae
    from mechwork.source import open_source

    opened: dict[str, Any] = {}
    for h, d in dirs.items():
        sae = load_sae(d, device=device or "cpu")
        name = sources[h]
        if name not in opened:
            bars.stage(f"loading {name}")
            opened[name] = open_source(name, device=device, history=False)
        src = opened[name]
        if src.task is None:
            raise click.UsageError(f"{name!r} has no task to measure the SAE on: give a preset or a run (--model)")
        meta = (load_json(d / "cfg.json") or {}).get("metadata") or {}
        positions = meta.get("positions", "all")
        positions = positions if positions in POSITIONS else "all"
        c = sae.cfg
        k = f", k={c.k}" if c.architecture == "topk" else ""
        click.echo(f"{d}: {c.architecture} SAE {c.d_in} -> {c.d_sae}{k} at {c.hook_name} of {name} "
                   f"(positions: {positions})")
        bars.stage(f"measuring {c.hook_name}")
        for line in _metric_lines(_evaluate(src.model, sae, src.task, positions)):
            click.echo("  " + line)
