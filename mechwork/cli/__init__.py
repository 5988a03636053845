"""The ``mechwork`` command line: ``train``, ``info``, ``analyze``, ``patch``, ``circuit``, ``sae``, ``dashboard``
and ``demo``.

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
torch is imported, so a bad argument is refused in a fraction of a second. The
read-only commands import no torch either: ``--help`` and ``--version`` of every
command, ``post --list``, and ``info`` of a preset or a run directory (read from
its JSON and the safetensors header); ``info`` of a model directory boots it.
``dashboard --cache`` rebuilds an unchanged preset's or run's page from the
result cache without loading its model.

Before anything loads torch, the command line sets ``OMP_WAIT_POLICY=PASSIVE``
unless the environment already gives a value: with the default (active) policy,
torch's OpenMP threads spin while they wait, and on a machine whose cores are
busy with other work a ``mechwork dashboard`` took 7x as long (41.6 s against
5.3 s at load 2.2; ``benchmarks/README.md``). Set ``OMP_WAIT_POLICY=ACTIVE`` to
keep the spinning on a machine of your own.

Task kits come from the registry (:mod:`mechwork.kit`): ``mechwork train KIND`` exists for every
registered kind, with options from the kit's table (the built-in tables live in
:data:`mechwork.limits.COMMANDS`, so they build before torch); ``--kit FILE`` (repeatable) or
``MECHWORK_KITS`` loads a user's kit first.

The commands live by idea: :mod:`mechwork.cli.args` (the checks before torch), :mod:`mechwork.cli.train`
(``train KIND``), :mod:`mechwork.cli.prompt_commands` (``patch``, ``dashboard``), :mod:`mechwork.cli.circuit`
(``circuit``), :mod:`mechwork.cli.sae` (``sae train``, ``sae info``); this module holds the group,
``info``, ``analyze``, ``demo`` and :func:`main`.

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
    mechwork circuit induction-2l --method eap --out circuit.html
    mechwork sae train modadd-113 --hook blocks.0.mlp.hook_post --positions mask --out saes/modadd
    mechwork sae info modadd-113
    mechwork dashboard modadd-113 --out dashboards/modadd-113.html
    mechwork dashboard modadd-113 --cache        # a rebuild of unchanged weights: from the result cache
    mechwork dashboard path/to/hf_model --prompts prompts.txt --pair "the cat sat" "the dog sat"
    mechwork demo
"""

from __future__ import annotations

import os
from pathlib import Path

os.environ.setdefault("OMP_WAIT_POLICY", "PASSIVE")  # before torch: see the module docstring

import click

from mechwork import bars, limits
from mechwork.cli.args import check_page_out, check_source, check_writable
from mechwork.cli.circuit import circuit_cmd
from mechwork.cli.post import post_cmd
from mechwork.cli.prompt_commands import dashboard_cmd, patch_cmd
from mechwork.cli.sae import sae_group
from mechwork.cli.train import train
from mechwork.errors import CheckpointError, ConfigError, MechworkError, NonFiniteError, RunBusyError

__all__ = ["cli", "main"]

OPS = limits.OPS


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


for _command in (train, patch_cmd, circuit_cmd, dashboard_cmd, sae_group, post_cmd):
    cli.add_command(_command)


@cli.command()
@click.argument("run_or_preset", metavar="MODEL")
@bars.quiet_option
def info(run_or_preset: str) -> None:
    """Describe a preset, a run directory or a model directory (saved with save_pretrained)."""
    check_source(run_or_preset)
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
    check_writable(json_out, "--json")
    limits.check_fourier_source(*check_source(run_or_preset, step, device))
    from mechwork.report import fourier_report

    text, data = fourier_report(run_or_preset, step=step, progress=progress, device=device)
    click.echo(text)
    if json_out is not None:
        from mechwork.io import write_json_atomic

        write_json_atomic(data, json_out)
        click.echo(f"wrote {json_out}")


@cli.command()
@click.option("--device", default=None, help="torch device (default: cuda if available, else cpu)")
@click.option("--out", type=click.Path(path_type=Path), default=Path("dashboards/modadd-113.html"),
              show_default=True, help="where to write the dashboard")
@click.option("--dashboard/--no-dashboard", "with_dashboard", default=True, show_default=True,
              help="also write the grokking dashboard of the embedded model")
@bars.quiet_option
def demo(device: str | None, out: Path, with_dashboard: bool) -> None:
    """The main job: report what the embedded grokked model does, write its dashboard, and the README's example
    post as a small site beside it (site/)."""
    limits.check_device(device)
    site = out.parent / "site"
    if with_dashboard:
        check_writable(out, "--out", html=True, make_parents=True)
        from mechwork.dashboard.site import check_assets_dir

        check_assets_dir(site / "assets")
    from mechwork.summary import demo_report

    bars.stage("evaluating the embedded model")
    click.echo(demo_report(device))
    if with_dashboard:
        from importlib.resources import files

        from mechwork.dashboard.standard import dashboard
        from mechwork.post.build import build

        out.parent.mkdir(parents=True, exist_ok=True)
        check_page_out(out, "--out")
        dashboard("modadd-113", out, device=device)
        click.echo(f"dashboard: {out.resolve()} ({out.stat().st_size:,} bytes; open it in a browser, offline)")
        example = Path(str(files("mechwork") / "data" / "posts" / "grokking.md"))
        report = build(example, site, site=True, device=device, option="--out")
        pages = ", ".join(p.name for p in report.pages)
        click.echo(f"site: {site / 'index.html'} (the example post of the README: {pages} and its index, "
                   f"sharing {site / 'assets'}/)")


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
