"""``mechwork post``: render Markdown posts with live results into a page, or into a site that shares its assets.

``mechwork post POST.md --out DIR`` writes ``DIR/POST.html`` with its bundles inline (one file that opens
offline); a folder of posts, or ``--site``, writes ``DIR/assets/`` once, a page per post loading it by relative
path, and ``DIR/index.html`` listing them (:func:`mechwork.post.build.build`). ``--figures svg,png`` also writes
every figure as images under ``DIR/<post>-figures/``, linked under each figure. Results come from the result
cache (``--cache DIR``, default ``$MECHWORK_CACHE`` or ``~/.cache/mechwork/results``; ``--no-cache`` for none),
so re-rendering after a prose edit computes nothing. ``--list`` prints every result a block can name, with
its arguments.

It prints one line per page written and a summary (pages, result blocks, cache hits, seconds). Bad input is
one line and exit 2, and nothing is written: an unknown result, a model that does not exist or a malformed
block (each naming ``FILE:LINE``), an empty ``SOURCE`` or ``--out``, an ``--out`` inside a source folder, an
output or assets folder that cannot be written, an unknown figure format or an empty one (``--figures ,``).
``--device``, ``--figures`` and the cache options are refused before torch is imported.

Example::

    mechwork post posts/grokking.md --out site/
    mechwork post posts/ --out site/ --figures svg,png
    mechwork post --list

The options checked before any post is read::

    >>> check_options(None, "svg", None, False)
    ('svg',)
"""

from __future__ import annotations

import warnings
from pathlib import Path
from typing import Any

import click

from mechwork import bars, limits
from mechwork.errors import ConfigError

__all__ = ["check_options", "kinds_listing", "post_cmd"]


def check_options(device: str | None, figures: str | None, cache_dir: Path | None, no_cache: bool) -> tuple[str, ...]:
    """``--device``, ``--figures`` and the cache options, checked without torch; returns the figure formats."""
    from mechwork.dashboard.export import parse_formats

    if cache_dir is not None and no_cache:
        raise click.UsageError("'--cache' and '--no-cache' exclude each other: give one")
    if cache_dir is not None and cache_dir.exists() and not cache_dir.is_dir():
        raise click.BadParameter(f"must be a folder (got the file {str(cache_dir)!r})", param_hint="'--cache'")
    limits.check_device(device)
    try:
        return parse_formats(figures)
    except ConfigError as e:
        raise ConfigError(str(e).replace("'figures'", "'--figures'", 1)) from None


def kinds_listing() -> str:
    """Every result a block can name: its name, what it shows, and its arguments with their defaults."""
    from mechwork.post.blocks import BLOCKS

    lines = []
    for name in sorted(BLOCKS):
        kind = BLOCKS[name]
        lines.append(f"{name}: {kind.doc}")
        args = [_arg_text(arg, spec) for arg, spec in kind.args.items()]
        lines.append(f"    arguments: {', '.join(args) if args else 'none'}")
    return "\n".join(lines)


def _arg_text(name: str, spec: Any) -> str:
    if getattr(spec, "required", False):
        return f"{name} (required)"
    default = getattr(spec, "default", None)
    return name if default is None else f"{name} (default {default!r})"


def _echo_cache_warning(message: Any, category: type[Warning], filename: str, lineno: int, file: Any = None,
                        line: str | None = None, *, default: Any = None) -> None:
    from mechwork.post.cache import CacheWarning

    if issubclass(category, CacheWarning):
        click.echo(f"mechwork: warning: {message}", err=True)
    elif default is not None:
        default(message, category, filename, lineno, file, line)


@click.command("post")
@click.argument("sources", nargs=-1, metavar="SOURCE...", type=str)
@click.option("--out", type=str, default=None, help="the folder to write the pages into")
@click.option("--site", is_flag=True, default=False,
              help="write a site (shared assets/, index.html) even for one post; a folder of posts always is one")
@click.option("--figures", default=None, metavar="svg,png", help="also write every figure as these image formats")
@click.option("--cache", "cache_dir", type=click.Path(path_type=Path), default=None,
              help="the result cache folder (default $MECHWORK_CACHE, else ~/.cache/mechwork/results)")
@click.option("--no-cache", is_flag=True, help="compute every result; read and write no cache")
@click.option("--device", default=None, help="torch device (default: cuda if available, else cpu)")
@click.option("--list", "list_kinds", is_flag=True, help="list every result a block can name, with its arguments")
@bars.quiet_option
def post_cmd(sources: tuple[str, ...], out: str | None, site: bool, figures: str | None, cache_dir: Path | None,
             no_cache: bool, device: str | None, list_kinds: bool) -> None:
    """Render Markdown posts (SOURCE: .md files or folders of them) with live results into pages."""
    if list_kinds:
        click.echo(kinds_listing())
        return
    if not sources:
        raise click.UsageError("Missing argument 'SOURCE...': give a post (.md) or a folder of posts")
    if out is None:
        raise click.UsageError("Missing option '--out': the folder to write the pages into")
    if not out.strip():
        raise ConfigError("'--out' must name a folder for the pages (got '': it is empty; '.' is this folder)")
    formats = check_options(device, figures, cache_dir, no_cache)
    from mechwork.post.build import build
    from mechwork.post.cache import ResultCache

    cache = ResultCache(None) if no_cache else ResultCache(cache_dir) if cache_dir is not None else ...
    with warnings.catch_warnings():
        default = warnings.showwarning
        warnings.showwarning = lambda *a, **k: _echo_cache_warning(*a, **k, default=default)
        report = build(list(sources), out, site=True if site else None, figures=formats, cache=cache,
                       device=device, option="--out")
    for page in (*report.pages, *([report.index] if report.index is not None else [])):
        click.echo(f"wrote {page} ({page.stat().st_size:,} bytes)")
    click.echo(report.summary())
