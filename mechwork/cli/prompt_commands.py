"""``mechwork patch`` and ``mechwork dashboard``: a MODEL on its task's prompts or on prompts of your own.

MODEL is a preset, a run directory or a model directory saved with ``save_pretrained``; ``--prompts FILE``
and ``--pair CLEAN CORRUPTED`` (text if the model has a tokenizer, else token ids) give it prompts of your own,
checked before the model loads where they can be (:mod:`mechwork.cli.args`).

Example::

    mechwork patch induction-2l --site z --by head_pos --json z.json
    mechwork dashboard path/to/hf_model --prompts prompts.txt --pair "the cat sat" "the dog sat"
"""

from __future__ import annotations

from pathlib import Path
from typing import Any

import click

from mechwork import bars, limits
from mechwork.cli.args import PAIR_HELP, check_page_out, check_source, check_writable, explicit, prompt_inputs
from mechwork.hooks import BY_NAMES, DIRECTIONS, METHODS, SITE_NAMES

__all__ = ["dashboard_cmd", "patch_cmd"]


@click.command("patch")
@click.argument("model", metavar="MODEL")
@click.option("--pair", nargs=2, metavar="CLEAN CORRUPTED", default=None,
              help=PAIR_HELP + "; the metric: clean top next token minus corrupted top next token "
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
    check_writable(json_out, "--json")
    check_writable(dash_out, "--dashboard", html=True)
    light_kind, light_key = check_source(model, step)
    prompts = prompt_inputs(None, pair, light_kind, light_key)
    if (prompts is not None or light_kind == "model") and "n_prompts" in explicit(click.get_current_context()):
        why = "--pair gives one pair (drop --n or --pair)" if prompts is not None else \
            "a model directory has no task: it is patched on --pair, or one pair of repeated random tokens"
        raise click.UsageError(f"'--n' {n_prompts} counts a task's standard prompts; {why}")
    if prompts is None and light_kind != "model":
        limits.patch_check(light_kind, light_key, n_prompts)
    from mechwork.source import open_source

    if dash_out is not None:
        check_page_out(dash_out, "--dashboard")
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


@click.command("dashboard")
@click.argument("model", metavar="MODEL")
@click.option("--prompts", type=click.Path(path_type=Path), default=None, metavar="FILE",
              help="one prompt a line (text, or token ids like '1 2 3'): the prompt page on these prompts")
@click.option("--pair", nargs=2, metavar="CLEAN CORRUPTED", default=None,
              help=PAIR_HELP + ": the prompt page with the patching and attribution sweeps of the pair")
@click.option("--out", type=click.Path(path_type=Path), default=None,
              help="HTML file to write; its directory must exist (default: dashboards/<name>.html, "
                   "<name>-prompts.html for a prompt page of a run or preset, .cdn.html with --assets cdn)")
@click.option("--assets", type=click.Choice(limits.ASSET_MODES), default="inline", show_default=True,
              help="inline: one file that works offline; cdn: small, loads plotly.js and circuitsvis from CDNs; "
                   "site: loads them from assets/ beside the page (written there, shared by every page)")
@click.option("--figures", default=None, metavar="svg,png",
              help="also write every figure as SVG and/or PNG into <page>-figures/, linked under each figure "
                   "(drawn in the system's Chromium)")
@click.option("--step", type=click.IntRange(min=0), default=None, help="checkpoint (default: the last)")
@click.option("--device", default=None, help="torch device (default: cuda if available, else cpu)")
@click.option("--cache", "use_cache", is_flag=True, default=False,
              help="keep a preset's or run's page in the result cache mechwork post uses ($MECHWORK_CACHE, else "
                   "~/.cache/mechwork/results): a rebuild of unchanged weights and code loads no model")
@bars.quiet_option
def dashboard_cmd(model: str, prompts: Path | None, pair: tuple[str, str] | None, out: Path | None, assets: str,
                  figures: str | None, step: int | None, device: str | None, use_cache: bool) -> None:
    """Write the dashboard of a preset, run directory or model directory.

    A run or preset gets its kit's page (grokking, induction, or the generic one); with --prompts or --pair,
    or for a model directory (saved with save_pretrained), the prompt page: attention, direct logit
    attribution, logit lens, head detectors, and the patching sweeps of a pair (repeated random tokens when no
    prompts are given). The pair's metric is the logit of the clean prompt's top next token minus that of the
    corrupted prompt's (the clean runner-up when both predict the same token). With --cache, a preset's or
    run's page is kept in the result cache and rebuilt from it while the weights and mechwork's code are unchanged.
    """
    from mechwork.dashboard.export import parse_formats

    parse_formats(figures)  # a bad format is refused before any work
    kind, key = check_source(model, step, device)
    parsed = prompt_inputs(prompts, pair, kind, key)
    prompt_page = prompts is not None or parsed is not None or kind == "model"
    if use_cache and prompt_page:
        raise click.UsageError("'--cache' keeps a preset's or run's own page; a prompt page (--prompts, --pair or "
                               "a model directory) is not cached")
    name = Path(key).resolve().name if kind != "preset" else key
    suffix = "-prompts" if prompt_page and kind != "model" else ""
    out = out or Path("dashboards") / f"{name}{suffix}{'.cdn' if assets == 'cdn' else ''}.html"
    check_writable(out, "--out", html=True)
    from mechwork.dashboard.standard import check_out, dashboard

    check_page_out(out, "--out")
    check_out(out, assets, figures)
    from mechwork.dashboard.page import saved_assets

    before = saved_assets(out)  # replacing a page of the other mode is said, never silent
    if prompt_page:
        from mechwork.dashboard.standard import prompt_dashboard

        prompt_dashboard(key, out, prompts_file=prompts, pair=parsed, assets=assets, step=step, device=device,
                         figures=figures)
    elif use_cache:
        _cached_dashboard(key, out, assets, figures, step, device)
    else:
        dashboard(key, out, assets=assets, step=step, device=device, figures=figures)
    note = f"; replaced the {before} page that was there" if before not in (None, assets) else ""
    click.echo(f"wrote {out} ({out.stat().st_size:,} bytes, {assets} assets{note})")


def _cached_dashboard(key: str, out: Path, assets: str, figures: str | None, step: int | None,
                      device: str | None) -> None:
    """The kit's page from the result cache when it holds it (no model, no torch), else analysed and stored."""
    import warnings

    from mechwork.cli.pagecache import cached_page, page_key, store_page
    from mechwork.cli.post import _echo_cache_warning
    from mechwork.dashboard.standard import dashboard, save
    from mechwork.post.cache import ResultCache

    cache = ResultCache.default()
    cache_key = page_key(cache, key, step)
    page = cached_page(cache, cache_key)
    if page is None:
        with warnings.catch_warnings():
            default = warnings.showwarning
            warnings.showwarning = lambda *a, **k: _echo_cache_warning(*a, **k, default=default)
            page = store_page(cache, cache_key, dashboard(key, None, step=step, device=device))
    else:
        bars.stage("the page from the result cache")
    bars.stage(f"writing {out}")
    save(page, out, assets, figures)
