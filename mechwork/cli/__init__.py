"""The ``mechwork`` command line: ``train``, ``info``, ``analyze``, ``patch``, ``dashboard`` and ``demo``.

``info``, ``patch`` and ``dashboard`` take a MODEL: a preset, a run directory, or a model directory saved
with ``save_pretrained`` (booted offline through TransformerLens's bridge). ``--prompts FILE`` and
``--pair CLEAN CORRUPTED`` give a model prompts of your own (text if it has a tokenizer, else token ids).

Bad input never half-writes anything: every argument is validated (and the
task, model and train configs are built) before a run directory is touched.
A bad argument prints one line, ``mechwork: error: ...`` naming the value and
what would be valid, and exits with code 2. A missing or corrupt checkpoint
prints the file's name and exits with code 1.

The checks that need no model (runs, presets, --step, --device, output paths,
task arguments and memory estimates, see :mod:`mechwork.limits`) run before
torch is imported, so a bad argument is refused in a fraction of a second.

Task kits come from the registry (:mod:`mechwork.kit`): ``mechwork train KIND`` exists for every
registered kind, with options from the kit's table (the built-in tables live in
:data:`mechwork.limits.COMMANDS`, so they build before torch); ``--kit FILE`` (repeatable) or
``MECHWORK_KITS`` loads a user's kit first.

Examples::

    mechwork --kit my_task.py train my_task --steps 500 --out runs/mine
    mechwork --task my_task.py:KIT train my_task --steps 500 --out runs/mine
    mechwork train modadd --p 113 --steps 3000 --out runs/modadd
    mechwork train modadd --out runs/modadd --resume --steps 6000
    mechwork train induction --steps 3000 --out runs/induction
    mechwork info runs/modadd
    mechwork info modadd-113
    mechwork patch induction-2l --site z --by head_pos --json z.json
    mechwork patch path/to/hf_model --pair "when mary and john went" "when john and mary went"
    mechwork dashboard modadd-113 --out dashboards/modadd-113.html
    mechwork dashboard path/to/hf_model --prompts prompts.txt --pair "the cat sat" "the dog sat"
    mechwork demo
"""

from __future__ import annotations

import os
import sys
from pathlib import Path
from typing import Any

import click

from mechwork import bars, limits
from mechwork.errors import CheckpointError, ConfigError, MechworkError, NonFiniteError, RunBusyError
from mechwork.hooks import BY_NAMES, DIRECTIONS, METHODS, SITE_NAMES
from mechwork.kit import HOW_TO_LOAD, Command, Option, get_kit, held_out, kinds

__all__ = ["main"]

OPS = limits.OPS
_POS_FLOAT = click.FloatRange(min=0.0, min_open=True)


def _source(run_or_preset: str, step: int | None = None, device: str | None = None) -> tuple[str, str]:
    """Check a run/preset argument, its --step and --device from files and names alone (torch not imported)."""
    kind, key = limits.resolve(run_or_preset)
    limits.check_step(kind, key, step)
    limits.check_device(device)
    return kind, key


def _writable(path: Path | None, option: str, *, html: bool = False, make_parents: bool = False) -> None:
    """Refuse an output file that cannot be written, before any work (torch not imported)."""
    if path is None:
        return
    if html and path.suffix.lower() not in (".html", ".htm"):
        raise click.BadParameter(f"must end in .html (got {str(path)!r})", param_hint=f"'{option}'")
    try:
        limits.check_writable(path, option, make_parents=make_parents)
    except MechworkError as e:
        raise click.BadParameter(str(e), param_hint=f"'{option}'") from e


def _explicit(ctx: click.Context) -> set[str]:
    """Names of the options the user actually typed (not defaults)."""
    return {
        name
        for name in ctx.params
        if ctx.get_parameter_source(name) not in (click.core.ParameterSource.DEFAULT, None)
    }


def _load_kits(ctx: click.Context, param: click.Parameter, value: tuple[str, ...]) -> None:
    """Register the user kits of ``MECHWORK_KITS`` and ``--kit`` (before any subcommand is looked up)."""
    from mechwork.kit import ENV, load_kits

    try:
        load_kits(os.environ.get(ENV))
    except MechworkError as e:
        raise ConfigError(f"{ENV}: {e}") from None
    for item in value:
        try:
            load_kits(item)
        except MechworkError as e:
            raise click.BadParameter(str(e), param_hint="'--kit'") from None


def _load_tasks(ctx: click.Context, param: click.Parameter, value: tuple[str, ...]) -> None:
    """Register the Kit objects named by ``--task path/to/file.py:KitName``."""
    from mechwork.kit import load_task

    for item in value:
        try:
            load_task(item)
        except MechworkError as e:
            raise click.BadParameter(str(e), param_hint="'--task'") from None


@click.group(context_settings={"help_option_names": ["-h", "--help"]})
@click.version_option(package_name="mechwork")
@click.option("--kit", "kits", multiple=True, metavar="FILE", expose_value=False, callback=_load_kits,
              help="load a task kit from a .py file or module (repeatable; also MECHWORK_KITS, os.pathsep-separated)")
@click.option("--task", "tasks", multiple=True, metavar="FILE.py:KIT", expose_value=False, callback=_load_tasks,
              help="register the Kit object KIT defined in FILE.py (repeatable)")
def cli() -> None:
    """mechwork: train toy transformers, open them up, publish what you find."""


class _TrainGroup(click.Group):
    """``mechwork train KIND``: one command per registered task kit (built-in ones build without torch)."""

    def list_commands(self, ctx: click.Context) -> list[str]:
        return sorted(kinds())

    def get_command(self, ctx: click.Context, name: str) -> click.Command | None:
        if name not in kinds():  # e.g. a user kit's kind without its --kit
            raise click.UsageError(f"No such command {name!r}: KIND must be one of {', '.join(sorted(kinds()))}, "
                                   f"or the kind of {HOW_TO_LOAD}")
        return _train_command(name)


@cli.group(cls=_TrainGroup)
def train() -> None:
    """Train a toy model into a run directory."""


def _common_train_options() -> list[click.Option]:
    return [
        click.Option(["--steps"], type=click.IntRange(min=1), default=None, help="optimiser updates"),
        click.Option(["--lr"], type=_POS_FLOAT, default=None, help="peak AdamW learning rate"),
        click.Option(["--wd"], type=click.FloatRange(min=0.0), default=None, help="AdamW weight decay"),
        click.Option(["--warmup"], type=click.IntRange(min=0), default=None, help="linear warmup steps"),
        click.Option(["--decay-steps"], type=click.IntRange(min=0), default=None,
                     help="linear lr decay to 0 over the last N steps"),
        click.Option(["--seed"], type=click.IntRange(0, limits.SEED_MAX), default=0, show_default=True,
                     help="seeds the init, the data split and sampling"),
        click.Option(["--eval-every"], type=click.IntRange(min=1), default=None, help="steps between evals"),
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
        click.Option(["--grokfast-alpha"], type=click.FloatRange(0.0, 1.0, max_open=True), default=None),
        click.Option(["--grokfast-lambda"], type=click.FloatRange(min=0.0), default=None),
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
    explicit = _explicit(ctx)
    if kw["resume"]:
        run = Run(out)
        stored_task, stored_train = run.task, TrainConfig.from_dict(run.config["train"])
        if stored_task.kind != task.kind:
            article = "an" if stored_task.kind[0] in "aeiou" else "a"
            raise click.UsageError(f"--out {str(out)!r} is {article} {stored_task.kind} run, not {task.kind}")
        wanted = _train_config(task, kw, task_options)
        for name in sorted(explicit):
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


@cli.command()
@click.argument("run_or_preset", metavar="MODEL")
@bars.quiet_option
def info(run_or_preset: str) -> None:
    """Describe a preset, a run directory or a model directory (saved with save_pretrained)."""
    _source(run_or_preset)
    from mechwork.summary import describe

    bars.stage("reading")
    click.echo(describe(run_or_preset))


@cli.group()
def analyze() -> None:
    """Analyse a run directory or a preset."""


@analyze.command("fourier")
@click.argument("run_or_preset")
@click.option("--json", "json_out", type=click.Path(path_type=Path), default=None,
              help="also write every figure to this JSON file")
@click.option("--step", type=click.IntRange(min=0), default=None, help="checkpoint (default: the last)")
@click.option("--progress/--no-progress", default=True, show_default=True,
              help="for a run: progress measures over every checkpoint, and the phases")
@click.option("--device", default=None, help="torch device (default: cuda if available, else cpu)")
@bars.quiet_option
def analyze_fourier(
    run_or_preset: str, json_out: Path | None, step: int | None, progress: bool, device: str | None
) -> None:
    """Key frequencies, neuron clusters, trig-identity fit and restricted/excluded loss."""
    _writable(json_out, "--json")
    limits.check_fourier_source(*_source(run_or_preset, step, device))
    from mechwork.report import fourier_report

    text, data = fourier_report(run_or_preset, step=step, progress=progress, device=device)
    click.echo(text)
    if json_out is not None:
        from mechwork.io import write_json_atomic

        write_json_atomic(data, json_out)
        click.echo(f"wrote {json_out}")


def _prompt_arg(text: str) -> str | list[int]:
    """A --pair prompt: a line of integers (space- or comma-separated) is token ids, anything else text."""
    parts = [p for p in text.replace(",", " ").split() if p]
    if parts and all(p.lstrip("-").isdigit() for p in parts):
        return [int(p) for p in parts]
    return text


def _prompt_inputs(prompts: Path | None, pair: tuple[str, str] | None, kind: str, key: str) -> tuple[Any, Any] | None:
    """Check --prompts and --pair before any model is loaded; the pair with each prompt parsed.

    A preset or a run (a toy model: no tokenizer) takes token ids only, which must fit the context its config
    names: a text prompt or a long one is refused here already (a model directory's are, once it is loaded).
    """
    if prompts is not None and not prompts.is_file():
        what = "does not exist" if not prompts.exists() else "is not a file"
        raise click.BadParameter(f"prompts file {str(prompts)!r} {what}", param_hint="'--prompts'")
    if pair is not None and any(not p.strip() for p in pair):
        raise click.BadParameter(f"both prompts must be non-empty (got {pair[0]!r} and {pair[1]!r})",
                                 param_hint="'--pair'")
    toy = kind in ("preset", "run")
    n_ctx = (limits.source_config(kind, key) or {}).get("model", {}).get("n_ctx") if toy else None
    if prompts is not None and toy:
        lines = [(n, line.strip()) for n, line in enumerate(_read_lines(prompts), 1) if line.strip()]
        for n, line in lines:
            _check_ids(_prompt_arg(line), f"line {n} of {str(prompts)!r}", n_ctx, "'--prompts'")
    if pair is None:
        return None
    parsed = (_prompt_arg(pair[0]), _prompt_arg(pair[1]))
    if toy:
        for what, p in zip(("the clean prompt", "the corrupted prompt"), parsed, strict=True):
            _check_ids(p, what, n_ctx, "'--pair'")
    if not any(isinstance(p, str) for p in parsed) and len(parsed[0]) != len(parsed[1]):
        raise ConfigError(f"'--pair' prompts must tokenise to the same length (clean {len(parsed[0])} tokens, "
                          f"corrupted {len(parsed[1])})")
    return parsed


def _read_lines(path: Path) -> list[str]:
    try:
        return path.read_text(encoding="utf-8").splitlines()
    except (OSError, UnicodeDecodeError) as e:
        raise click.BadParameter(f"prompts file {str(path)!r} cannot be read as UTF-8 text: {e}",
                                 param_hint="'--prompts'") from None


def _check_ids(prompt: str | list[int], what: str, n_ctx: Any, hint: str) -> None:
    """A toy model's prompt: token ids (it has no tokenizer) that fit its context."""
    if isinstance(prompt, str):
        raise click.BadParameter(f"this model has no tokenizer: give token ids (got the string {prompt!r} in "
                                 f"{what})", param_hint=hint)
    if isinstance(n_ctx, int) and len(prompt) > n_ctx:
        shown = " ".join(map(str, prompt))
        shown = shown if len(shown) <= 40 else shown[:37] + "..."
        raise ConfigError(f"{what} {shown!r} is {len(prompt)} tokens, longer than the model's context of "
                          f"{n_ctx} tokens")


_PAIR_HELP = "a clean and a corrupted prompt of one token length (text, or token ids like '1 2 3')"


@cli.command("patch")
@click.argument("model", metavar="MODEL")
@click.option("--pair", nargs=2, metavar="CLEAN CORRUPTED", default=None,
              help=_PAIR_HELP + "; the metric: clean top next token minus corrupted top next token "
                   "(default: the task's standard prompts; repeated random tokens for a model directory)")
@click.option("--site", type=click.Choice(SITE_NAMES), default="resid_pre", show_default=True)
@click.option("--by", type=click.Choice(BY_NAMES), default="layer_pos", show_default=True)
@click.option("--direction", type=click.Choice(DIRECTIONS), default="denoising", show_default=True)
@click.option("--method", type=click.Choice(METHODS), default="exact", show_default=True,
              help="exact activation patching, or its gradient approximation (one forward + one backward)")
@click.option("--n", "n_prompts", type=click.IntRange(min=1), default=8, show_default=True, help="prompts")
@click.option("--seed", type=click.IntRange(0, limits.SEED_MAX), default=0, show_default=True)
@click.option("--top", type=click.IntRange(min=1), default=10, show_default=True, help="cells to print")
@click.option("--step", type=click.IntRange(min=0), default=None, help="checkpoint (default: the last)")
@click.option("--json", "json_out", type=click.Path(path_type=Path), default=None, help="write every cell as JSON")
@click.option("--dashboard", "dash_out", type=click.Path(path_type=Path), default=None,
              help="write the result as a dashboard page (.html)")
@bars.quiet_option
def patch_cmd(model: str, pair: tuple[str, str] | None, site: str, by: str, direction: str, method: str,
              n_prompts: int, seed: int, top: int, step: int | None, json_out: Path | None,
              dash_out: Path | None) -> None:
    """Activation patching of a preset, run or model directory; prints the top cells.

    The prompts are the task's standard clean/corrupted ones, or --pair's two prompts.
    """
    _writable(json_out, "--json")
    _writable(dash_out, "--dashboard", html=True)
    light_kind, light_key = _source(model, step)
    prompts = _prompt_inputs(None, pair, light_kind, light_key)
    if (prompts is not None or light_kind == "model") and "n_prompts" in _explicit(click.get_current_context()):
        why = "--pair gives one pair (drop --n or --pair)" if prompts is not None else \
            "a model directory has no task: it is patched on --pair, or one pair of repeated random tokens"
        raise click.UsageError(f"'--n' {n_prompts} counts a task's standard prompts; {why}")
    if prompts is None and light_kind != "model":
        limits.patch_check(light_kind, light_key, n_prompts)
    from mechwork.dashboard.standard import check_out
    from mechwork.source import open_source

    if dash_out is not None:
        try:
            check_out(dash_out)
        except MechworkError as e:
            raise click.BadParameter(str(e), param_hint="'--dashboard'") from e
    bars.stage("loading the model")
    src = open_source(model, step=step, history=False)
    key, probe = src.name, _probe(src, prompts, n_prompts, seed)
    bars.stage(f"{method} patching of {site} by {by} over {probe.clean.shape[0]} prompt(s)")
    if method == "exact":
        from mechwork.analysis.patching import patch

        res = patch(src.model, probe.clean, probe.corrupted, probe.metric, site=site, by=by, direction=direction)
    else:
        from mechwork.analysis.attribution import attribute

        res = attribute(src.model, probe.clean, probe.corrupted, probe.metric, site=site, by=by, direction=direction)
    _print_patch(res, key, probe.description, top)
    if json_out is not None:
        from mechwork.io import write_json_atomic

        write_json_atomic({"source": key, "site": site, "by": by, "direction": direction, "method": method,
                           "prompts": probe.description, "dims": list(res.dims), "coords": res.coords,
                           "values": res.values.tolist(), "clean": res.clean_value,
                           "corrupted": res.corrupted_value}, json_out)
        click.echo(f"wrote {json_out}")
    if dash_out is not None:
        from mechwork.dashboard import Page

        page = Page(f"{res.method}: {key}", subtitle=f"{site} by {by}, {direction}")
        page.text(probe.description, title="Prompts and metric")
        page.result(res, title=f"{site} by {by}", table=True)
        page.save(dash_out)
        click.echo(f"wrote {dash_out}")


def _probe(src: Any, pair: tuple[Any, Any] | None, n_prompts: int, seed: int) -> Any:
    """The clean/corrupted prompts and metric: --pair's (the pair metric), else the task's standard probe, else
    (a model directory) a repeated-random-token pair."""
    from types import SimpleNamespace

    if pair is None and src.task is not None:
        from mechwork.tasks import standard_probe

        return standard_probe(src.task, n=n_prompts, seed=seed)
    from mechwork.analysis.prompt import default_prompts, pair_metric
    from mechwork.prompts import prompt_pair

    if pair is not None:
        clean, corrupted = prompt_pair(src.model, *pair)
        where = f"--pair {clean.texts[0]!r} / {corrupted.texts[0]!r} ({clean.lengths[0]} tokens)"
    else:
        _, (clean, corrupted), how = default_prompts(src.model, seed=seed)
        where = f"one pair of {how} (clean) and fresh tokens in the first half (corrupted)"
    info, metric = pair_metric(src.model, clean, corrupted)
    return SimpleNamespace(clean=clean.batch(), corrupted=corrupted.batch(), metric=metric,
                           description=f"{where}; {info.summary()}")


def _print_patch(res: Any, key: str, description: str, top: int) -> None:
    click.echo(f"{res.method} of {key}: {res.site} by {res.by}, {res.direction}")
    click.echo(f"  prompts: {description}")
    click.echo(f"  metric: clean {res.clean_value:.4g}, corrupted {res.corrupted_value:.4g}")
    negligible = res.gap_is_negligible()
    if negligible:
        click.echo(f"  the corruption barely moves the metric (gap {abs(res.clean_value - res.corrupted_value):.2g}),"
                   " so no cell's share of it is meaningful")
    click.echo(f"  top {top} cells (value" + ("" if negligible else ", share of the clean-corrupted gap") + "):")
    for label, value, eff in res.top(top):
        click.echo(f"    {label:<16} {value:>10.4g}" + ("" if negligible else f"  {eff:>7.1%}"))


@cli.command("dashboard")
@click.argument("model", metavar="MODEL")
@click.option("--prompts", type=click.Path(path_type=Path), default=None, metavar="FILE",
              help="one prompt a line (text, or token ids like '1 2 3'): the prompt page on these prompts")
@click.option("--pair", nargs=2, metavar="CLEAN CORRUPTED", default=None,
              help=_PAIR_HELP + ": the prompt page with the patching and attribution sweeps of the pair")
@click.option("--out", type=click.Path(path_type=Path), default=None,
              help="HTML file to write; its directory must exist (default: dashboards/<name>.html, "
                   "<name>-prompts.html for a prompt page of a run or preset, .cdn.html with --assets cdn)")
@click.option("--assets", type=click.Choice(limits.ASSET_MODES), default="inline", show_default=True,
              help="inline: one file that works offline; cdn: small, loads plotly.js and circuitsvis from CDNs")
@click.option("--step", type=click.IntRange(min=0), default=None, help="checkpoint (default: the last)")
@click.option("--device", default=None, help="torch device (default: cuda if available, else cpu)")
@bars.quiet_option
def dashboard_cmd(model: str, prompts: Path | None, pair: tuple[str, str] | None, out: Path | None, assets: str,
                  step: int | None, device: str | None) -> None:
    """Write the dashboard of a preset, run directory or model directory.

    A run or preset gets its kit's page (grokking, induction, or the generic one); with --prompts or --pair,
    or for a model directory (saved with save_pretrained), the prompt page: attention, direct logit
    attribution, logit lens, head detectors, and the patching sweeps of a pair (repeated random tokens when no
    prompts are given). The pair's metric is the logit of the clean prompt's top next token minus that of the
    corrupted prompt's (the clean runner-up when both predict the same token).
    """
    kind, key = _source(model, step, device)
    parsed = _prompt_inputs(prompts, pair, kind, key)
    prompt_page = prompts is not None or parsed is not None or kind == "model"
    name = Path(key).resolve().name if kind != "preset" else key
    suffix = "-prompts" if prompt_page and kind != "model" else ""
    out = out or Path("dashboards") / f"{name}{suffix}{'.cdn' if assets == 'cdn' else ''}.html"
    _writable(out, "--out", html=True)
    from mechwork.dashboard.standard import check_out, dashboard

    try:
        check_out(out)
    except MechworkError as e:
        raise click.BadParameter(str(e), param_hint="'--out'") from e
    from mechwork.dashboard.page import saved_assets

    before = saved_assets(out)  # replacing a page of the other mode is said, never silent
    if prompt_page:
        from mechwork.dashboard.standard import prompt_dashboard

        prompt_dashboard(key, out, prompts_file=prompts, pair=parsed, assets=assets, step=step, device=device)
    else:
        dashboard(key, out, assets=assets, step=step, device=device)
    note = f"; replaced the {before} page that was there" if before not in (None, assets) else ""
    click.echo(f"wrote {out} ({out.stat().st_size:,} bytes, {assets} assets{note})")


@cli.command()
@click.option("--device", default=None, help="torch device (default: cuda if available, else cpu)")
@click.option("--out", type=click.Path(path_type=Path), default=Path("dashboards/modadd-113.html"),
              show_default=True, help="where to write the dashboard")
@click.option("--dashboard/--no-dashboard", "with_dashboard", default=True, show_default=True,
              help="also write the grokking dashboard of the embedded model")
@bars.quiet_option
def demo(device: str | None, out: Path, with_dashboard: bool) -> None:
    """The main job: report what the embedded grokked model does, and write its dashboard."""
    limits.check_device(device)
    if with_dashboard:
        _writable(out, "--out", html=True, make_parents=True)
    from mechwork.summary import demo_report

    bars.stage("evaluating the embedded model")
    click.echo(demo_report(device))
    if with_dashboard:
        from mechwork.dashboard.standard import check_out, dashboard

        out.parent.mkdir(parents=True, exist_ok=True)
        try:
            check_out(out)
        except MechworkError as e:
            raise click.BadParameter(str(e), param_hint="'--out'") from e
        dashboard("modadd-113", out, device=device)
        click.echo(f"dashboard: {out.resolve()} ({out.stat().st_size:,} bytes; open it in a browser, offline)")


def main(argv: list[str] | None = None) -> int:
    """Entry point; returns the exit code (2 for bad arguments)."""
    prog = "mechwork"
    try:
        cli.main(args=argv, prog_name=prog, standalone_mode=False)
    except click.exceptions.Exit as e:
        return int(e.exit_code)
    except click.exceptions.Abort:
        click.echo(f"{prog}: aborted", err=True)
        return 130
    except click.exceptions.NoArgsIsHelpError as e:
        click.echo(e.ctx.get_help() if e.ctx else "")
        return 0
    except click.UsageError as e:
        msg = e.format_message().replace("\n", " ")
        click.echo(f"{prog}: error: {msg}", err=True)
        return 2
    except click.ClickException as e:
        click.echo(f"{prog}: error: {e.format_message()}", err=True)
        return e.exit_code
    except (CheckpointError, NonFiniteError, RunBusyError) as e:  # a bad file, a diverged run, a busy run
        click.echo(f"{prog}: error: {e}", err=True)
        return 1
    except MechworkError as e:
        click.echo(f"{prog}: error: {e}", err=True)
        return 2
    return 0


if __name__ == "__main__":  # pragma: no cover
    sys.exit(main())
