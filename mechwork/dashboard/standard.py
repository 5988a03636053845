"""``mechwork dashboard``: open a run or preset, have its kit analyse it once, render its page, save it.

:func:`dashboard` is the whole pipeline: :func:`~mechwork.source.open_source` (``light``: a preset's or run's
toy model opens as a :class:`~mechwork.hookedtoy.HookedToy`, so a cold build never imports TransformerLens),
then the kit's ``analyse(source)`` (every result, computed once), then the kind's page from
:func:`~mechwork.dashboard.page_for` (the generic page for a kit without its own), then
:meth:`~mechwork.dashboard.page.Page.save`. The page sees the analysis bundle, never the model.
A model directory (saved with ``save_pretrained``) has no kit: it gets the prompt page
(:func:`prompt_dashboard`, the same pipeline for prompts of your own: the page is
:func:`mechwork.dashboard.prompt.prompt_page`) on repeated random tokens.

Example::

    >>> from mechwork.dashboard.standard import dashboard
    >>> page = dashboard("induction-2l")
    >>> page.title
    'Induction dashboard: induction-2l'
"""

from __future__ import annotations

import os
from pathlib import Path
from typing import TYPE_CHECKING, Any

from mechwork.bars import stage
from mechwork.errors import ConfigError

if TYPE_CHECKING:  # pragma: no cover
    from mechwork.dashboard.page import Page
    from mechwork.results import Analysis
    from mechwork.source import Source

__all__ = ["analyse", "check_out", "dashboard", "prompt_dashboard", "save"]


def analyse(src: Source) -> Analysis:
    """The analysis bundle of an opened source, from its kit's ``analyse``."""
    from mechwork.kit import get_kit

    bundle: Analysis = get_kit(src.task.kind).analyse(src)
    return bundle


def dashboard(
    run_or_preset: str | os.PathLike[str],
    out: str | os.PathLike[str] | None = None,
    *,
    assets: str = "inline",
    step: int | None = None,
    device: str | None = None,
    figures: str | None = None,
) -> Page:
    """The standard dashboard for the run's task; saved to ``out`` when given.

    ``--out`` is checked before any work is done, so a bad path costs nothing.
    """
    from mechwork.dashboard import page_for
    from mechwork.dashboard.page import ASSET_MODES
    from mechwork.source import open_source

    if assets not in ASSET_MODES:
        raise ConfigError(f"'assets' must be one of {', '.join(ASSET_MODES)} (got {assets!r})")
    if out is not None:
        check_out(out, assets, figures)
    from mechwork.runs import resolve

    if resolve(run_or_preset)[0] == "model":  # no task, so no kit: the prompt page
        return prompt_dashboard(run_or_preset, out, assets=assets, step=step, device=device, figures=figures)
    stage("loading the model and its history")  # progress bars: only inside a command (mechwork.bars)
    src = open_source(run_or_preset, step=step, device=device, light=True)  # no TransformerLens for a toy model
    kind = src.task.kind
    stage(f"analysing the {kind} model")
    bundle = analyse(src)
    del src  # the page is built from the bundle alone
    stage(f"building the {kind} page")
    page = page_for(kind)(bundle)
    if out is not None:
        stage(f"writing {out}")
        save(page, out, assets, figures)
    return page


def prompt_dashboard(
    model_or_path: str | os.PathLike[str], out: str | os.PathLike[str] | None = None, *,
    prompts_file: str | os.PathLike[str] | None = None, pair: tuple[Any, Any] | None = None,
    assets: str = "inline", step: int | None = None, device: str | None = None, figures: str | None = None,
) -> Page:
    """Open a model, read its prompts, analyse them once, build the page; save it to ``out`` when given.

    Without ``prompts_file`` and ``pair``: repeated random tokens and a pair made from them
    (:func:`~mechwork.analysis.prompt.default_prompts`). Every prompt is checked before the analysis runs.
    """
    from mechwork.analysis.prompt import analyse_prompts, default_prompts
    from mechwork.dashboard.prompt import prompt_page
    from mechwork.prompts import prompt_pair, read_prompts
    from mechwork.source import open_source

    if out is not None:
        check_out(out, assets, figures)
    stage("loading the model")
    src = open_source(model_or_path, step=step, device=device)
    model, source = src.model, "given"
    prompts = read_prompts(model, prompts_file) if prompts_file is not None else None
    pairs = prompt_pair(model, *pair) if pair is not None else None
    if prompts is None and pairs is None:
        prompts, pairs, source = default_prompts(model)
    stage("analysing the prompts")
    bundle = analyse_prompts(model, prompts, pairs, name=src.name, info=src.info, source=source)
    del src, model
    stage("building the prompt page")
    page = prompt_page(bundle)
    if out is not None:
        stage(f"writing {out}")
        save(page, out, assets, figures)
    return page


def save(page: Page, out: str | os.PathLike[str], assets: str, figures: str | None) -> None:
    """Save ``page``; ``assets="site"`` writes the bundles into ``assets/`` beside it (shared by every page
    saved there), ``figures`` (e.g. ``"svg,png"``) exports every figure into ``<page stem>-figures/``."""
    if assets == "site":
        from mechwork.dashboard.site import write_assets

        write_assets(Path(out).parent / "assets")
    page.save(out, assets=assets, figures=figures)


def check_out(out: str | os.PathLike[str], assets: str = "inline", figures: str | None = None) -> None:
    """Refuse an output path whose directory is missing, a site page whose ``assets/`` cannot be written, or bad
    figure formats, before any work is done."""
    from mechwork.dashboard.export import check_can_export, parse_formats
    from mechwork.errors import OutputError

    if parse_formats(figures):
        check_can_export()

    p = Path(out)
    if p.is_dir():
        raise OutputError(f"dashboard path must be a file, not a directory (got {str(p)!r})")
    if not p.parent.is_dir():
        what = "is not a directory" if p.parent.exists() else "does not exist"
        raise OutputError(f"cannot write {str(p)!r}: directory {str(p.parent)!r} {what}")
    if p.suffix.lower() not in (".html", ".htm"):
        raise ConfigError(f"'out' must end in .html (got {str(p)!r})")
    if assets == "site":
        from mechwork.dashboard.site import check_assets_dir

        check_assets_dir(p.parent / "assets")
