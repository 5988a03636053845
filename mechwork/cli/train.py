"""``mechwork train KIND``: one command per registered task kit, checked before torch, then trained.

The built-in kits' option tables live in :data:`mechwork.limits.COMMANDS`, so a bad argument is refused before
torch is imported; a user kit's table comes from the kit itself. ``--resume`` continues a run and refuses any
change but ``--steps``. A training option left out takes the kit's recipe value; a float option is refused if
it is not a finite number in its range (``--init-scale nan`` as much as ``--init-scale 0``).

Example::

    mechwork train modadd --p 113 --steps 3000 --out runs/modadd
    mechwork train modadd --init-scale 0.5 --loss stablemax --orthograd --out runs/modadd-tricks
"""

from __future__ import annotations

import math
from pathlib import Path
from typing import Any

import click

from mechwork import bars, limits
from mechwork.cli.args import explicit
from mechwork.errors import ConfigError
from mechwork.kit import HOW_TO_LOAD, Command, Option, get_kit, held_out, kinds
from mechwork.trainconfig import LOSSES

__all__ = ["train"]


class FiniteRange(click.FloatRange):
    """A float in a range that is also finite: click's range alone lets ``nan`` (and ``inf`` above a minimum)
    through."""

    def convert(self, value: Any, param: click.Parameter | None, ctx: click.Context | None) -> Any:
        rv = super().convert(value, param, ctx)
        if not math.isfinite(rv):
            self.fail(f"{rv} is not a finite number in the range {self._describe_range()}.", param, ctx)
        return rv


POS_FLOAT = FiniteRange(min=0.0, min_open=True)


class _TrainGroup(click.Group):
    """``mechwork train KIND``: one command per registered task kit (built-in ones build without torch)."""

    def list_commands(self, ctx: click.Context) -> list[str]:
        return sorted(kinds())

    def get_command(self, ctx: click.Context, name: str) -> click.Command | None:
        if name not in kinds():  # e.g. a user kit's kind without its --kit
            raise click.UsageError(f"No such command {name!r}: KIND must be one of {', '.join(sorted(kinds()))}, "
                                   f"or the kind of {HOW_TO_LOAD}")
        return _train_command(name)


@click.group(cls=_TrainGroup)
def train() -> None:
    """Train a toy model into a run directory."""


def _common_train_options() -> list[click.Option]:
    return [
        click.Option(["--steps"], type=click.IntRange(min=1), default=None, help="optimiser updates"),
        click.Option(["--lr"], type=POS_FLOAT, default=None, help="peak AdamW learning rate"),
        click.Option(["--wd"], type=FiniteRange(min=0.0), default=None, help="AdamW weight decay"),
        click.Option(["--warmup"], type=click.IntRange(min=0), default=None, help="linear warmup steps"),
        click.Option(["--decay-steps"], type=click.IntRange(min=0), default=None,
                     help="linear lr decay to 0 over the last N steps"),
        click.Option(["--seed"], type=click.IntRange(0, limits.SEED_MAX), default=0, show_default=True,
                     help="seeds the init, the data split and sampling"),
        click.Option(["--eval-every"], type=click.IntRange(min=1), default=None, help="steps between evals"),
        click.Option(["--init-scale"], type=POS_FLOAT, default=None,
                     help="multiply the seeded initial weights by this (Omnigrok: below 1, grokking comes "
                          "sooner)"),
        click.Option(["--loss"], type=click.Choice(LOSSES), default=None,
                     help="training loss: softmax cross-entropy, or StableMax (Prieto et al. 2025)"),
        click.Option(["--orthograd/--no-orthograd"], default=None,
                     help="orthogonal gradients (Prieto et al. 2025): drop each gradient's part along its "
                          "weight, keep its norm"),
        click.Option(["--out"], type=click.Path(path_type=Path), default=None,
                     help="run directory (default: runs/<task>-<seed>)"),
        click.Option(["--resume"], is_flag=True, help="continue the run at --out from its last checkpoint"),
        click.Option(["--force"], is_flag=True, help="overwrite a non-empty --out"),
        click.Option(["--device"], default=None, help="torch device (default: cuda if available, else cpu)"),
        click.Option(["--quiet"], is_flag=True, help="no progress bar"),
    ]


_EXTRA_TRAIN_OPTIONS: dict[str, list[click.Option]] = {  # training options a kit's command may offer
    "grokfast": [
        click.Option(["--grokfast/--no-grokfast"], default=None,
                     help="Grokfast EMA gradient filter (alpha 0.98, lambda 2 unless given)"),
        click.Option(["--grokfast-alpha"], type=FiniteRange(0.0, 1.0, max_open=True), default=None),
        click.Option(["--grokfast-lambda"], type=FiniteRange(min=0.0), default=None),
    ],
    "batch_size": [click.Option(["--batch-size"], type=click.IntRange(min=1), default=None,
                                help="minibatch (default: full batch)")],
}


def _click_option(o: Option) -> click.Option:
    """A task option of a kit's command as a click option (ranges and choices checked by click)."""
    if isinstance(o.type, tuple):
        kind: Any = click.Choice(o.type)
    elif o.type is int and (o.min is not None or o.max is not None):
        kind = click.IntRange(None if o.min is None else int(o.min), None if o.max is None else int(o.max),
                              min_open=o.min_open, max_open=o.max_open)
    elif o.type is float and (o.min is not None or o.max is not None):
        kind = click.FloatRange(o.min, o.max, min_open=o.min_open, max_open=o.max_open)
    else:
        kind = o.type
    return click.Option([f"--{o.name.replace('_', '-')}"], type=kind, default=o.default,
                        show_default=o.default is not None, help=o.help or None)


def _train_command(kind: str) -> click.Command:
    """The ``mechwork train KIND`` command, from the kit's option table (built-in ones: limits.COMMANDS)."""
    spec = limits.COMMANDS[kind] if kind in limits.COMMANDS else get_kit(kind).train_command()
    params: list[click.Parameter] = [_click_option(o) for o in spec.options]
    params += [opt for name in spec.train_options for opt in _EXTRA_TRAIN_OPTIONS[name]]

    @click.pass_context
    def run(ctx: click.Context, **kw: Any) -> None:
        _train_kind(ctx, kind, spec, kw)

    params += _common_train_options()
    return click.Command(kind, callback=run, params=params, help=spec.help)


def _train_kind(ctx: click.Context, kind: str, spec: Command, kw: dict[str, Any]) -> None:
    """Check everything that needs no torch, then build the task through its kit and train."""
    if "grokfast" in spec.train_options:
        _check_grokfast(kw)
    fields = spec.fields({o.name: kw[o.name] for o in spec.options} | {"seed": kw["seed"]})
    default_out = spec.out.format(**({"kind": kind, "seed": kw["seed"]} | fields))
    _check_train(kw, kind, spec, fields, default_out)
    task = get_kit(kind).build_task(fields)
    _run_training(ctx, task, kw, {o.name for o in spec.options} | {"seed"}, default_out)


def _check_grokfast(kw: dict[str, Any]) -> None:
    if kw["grokfast"] is False and (kw["grokfast_alpha"] is not None or kw["grokfast_lambda"] is not None):
        raise ConfigError("'--no-grokfast' turns the filter off; drop --grokfast-alpha/--grokfast-lambda or it")
    if kw["grokfast_lambda"] is not None and kw["grokfast"] is None and kw["grokfast_alpha"] is None \
            and not kw["resume"]:
        raise ConfigError(f"'--grokfast-lambda' {kw['grokfast_lambda']} needs the filter on: add --grokfast "
                          "(or --grokfast-alpha)")


def _check_train(kw: dict[str, Any], kind: str, spec: Command, fields: dict[str, Any], default_out: str) -> None:
    """Device, run directory, task arguments and memory, all before torch is imported."""
    limits.check_device(kw["device"])
    out = kw["out"] or Path(default_out)
    limits.check_run_target(out, resume=kw["resume"], force=kw["force"])
    if kw["resume"]:
        stored = limits.source_config("run", str(out))
        if stored is None:
            return  # the full load names the broken file
        task, model = stored["task"], stored["model"]
        batch = (stored.get("train") or {}).get("batch_size") if isinstance(stored.get("train"), dict) else None
    else:
        if spec.check is not None:
            spec.check(fields)
        preset = limits.source_config("preset", spec.preset) if spec.preset else None
        if preset is None or spec.vocab is None:
            return  # no light estimate for this kit: training checks its memory before allocating
        task = {"kind": kind, **fields}
        model = preset["model"] | spec.vocab(fields)
        batch = kw.get("batch_size")
    n = limits.model_params(model)
    limits.check_fits(f"training a model of {n:,} parameters on the {task.get('kind')} task",
                      limits.train_bytes(task, model, batch if isinstance(batch, int) else None))


def _run_training(ctx: click.Context, task: Any, kw: dict[str, Any], task_options: set[str], default_out: str) -> None:
    from mechwork.models import ToyConfig
    from mechwork.runs import Run, RunWriter
    from mechwork.training import TrainConfig, train

    out = kw["out"] or Path(default_out)
    RunWriter.check_target(out, resume=kw["resume"], force=kw["force"])
    given = explicit(ctx)
    if kw["resume"]:
        run = Run(out)
        stored_task, stored_train = run.task, TrainConfig.from_dict(run.config["train"])
        if stored_task.kind != task.kind:
            article = "an" if stored_task.kind[0] in "aeiou" else "a"
            raise click.UsageError(f"--out {str(out)!r} is {article} {stored_task.kind} run, not {task.kind}")
        wanted = _train_config(task, kw, task_options)
        for name in sorted(given):
            field = None if name in task_options else _TRAIN_FIELDS.get(name)
            old, new = (
                (getattr(stored_task, name, None), getattr(task, name, None)) if name in task_options
                else (getattr(stored_train, field), getattr(wanted, field)) if field and field != "steps"
                else (None, None)
            )
            if old != new:
                raise click.UsageError(
                    f"--{name.replace('_', '-')} cannot change on --resume (the run has {old!r}, got {new!r});"
                    " only --steps may"
                )
        task = stored_task
        train_cfg = TrainConfig.from_dict(stored_train.to_dict() | ({"steps": kw["steps"]} if kw["steps"] else {}))
    else:
        train_cfg = _train_config(task, kw, task_options)
    model_cfg = None if kw["resume"] else ToyConfig.for_task(task, seed=kw["seed"])
    res = train(
        task, model_cfg, train_cfg, out,
        resume=kw["resume"], force=kw["force"], quiet=bars.silenced(kw["quiet"]), device=kw["device"],
    )
    last, held = res.rows[-1], held_out(task)  # held: "test" but for a kit whose eval splits name another
    grok = res.first_step(f"{held}_acc", 0.99)
    click.echo(
        f"{out}: step {last['step']}, "
        + (f"train acc {last.get('train_acc', float('nan')):.4f}, " if held != "train" else "")  # no held-out split
        + f"{held} acc {last[f'{held}_acc']:.4f}, {held} loss {last[f'{held}_loss']:.4g}; "
        + (f"{held} acc >= 99% first at step {grok}" if grok is not None else f"{held} acc never reached 99%")
        + f" ({last['wall']:.1f} s)"
    )


_TRAIN_FIELDS = {
    "steps": "steps",
    "lr": "lr",
    "wd": "weight_decay",
    "warmup": "warmup_steps",
    "decay_steps": "decay_steps",
    "eval_every": "eval_every",
    "batch_size": "batch_size",
    "grokfast": "grokfast_alpha",
    "grokfast_alpha": "grokfast_alpha",
    "grokfast_lambda": "grokfast_lambda",
    "init_scale": "init_scale",
    "loss": "loss",
    "orthograd": "orthograd",
}


def _train_config(task: Any, kw: dict[str, Any], task_options: set[str]) -> Any:
    """The kit's recipe for ``task``, with the training options given (not the task's own options)."""
    from mechwork.training import TrainConfig, recipe

    d = recipe(task).to_dict()
    for cli_name, field in _TRAIN_FIELDS.items():
        if cli_name != "grokfast" and cli_name not in task_options and kw.get(cli_name) is not None:
            d[field] = kw[cli_name]
    if kw.get("grokfast") is False:
        d["grokfast_alpha"] = None
    elif kw.get("grokfast") is True and d["grokfast_alpha"] is None:
        d["grokfast_alpha"] = 0.98
    d["seed"] = kw["seed"]
    return TrainConfig.from_dict(d)
