"""What a published page puts on disk: the shared ``assets/`` folder, and a page with its figures folder.

A page rendered with ``assets="site"`` loads ``<asset_base>plotly.min.js`` and
``<asset_base>circuitsvis.js`` by relative path (only the ones it uses), so it
works from ``file://`` and from any static host. :func:`write_assets` writes
both bundles (plain text: mechwork's partial plotly.js and circuitsvis),
script-safe and without their source-map comment, each atomically; a file
already holding the same bytes is left alone (its mtime too), so rebuilding a
site rewrites nothing here. :func:`bundle_scripts` is a page's ``<head>``
scripts for each mode (an inline page's bundles gzip-compressed). :func:`check_assets_dir`
checks, writing nothing, that the folder can be written; both raise a one-line
:class:`~mechwork.errors.OutputError` when it cannot.

:func:`save_with_figures` writes a page together with its exported images:
they go into a temporary folder beside the figures folder, which is renamed
into place (replacing an older one) before the page is written atomically;
on any error the old state is restored and nothing new is left.

Example::

    >>> import tempfile
    >>> from pathlib import Path
    >>> from mechwork.dashboard.site import ASSET_FILES, check_assets_dir, write_assets
    >>> sorted(ASSET_FILES.values())
    ['circuitsvis.js', 'plotly.min.js']
    >>> with tempfile.TemporaryDirectory() as d:
    ...     check_assets_dir(Path(d) / "assets")
    ...     written = write_assets(Path(d) / "assets")
    ...     sorted(p.name for p in written.values()), written["plotly"].read_text()[:12]
    (['circuitsvis.js', 'plotly.min.js'], '/**\\n* plotly')
    >>> Path(d, "assets").exists()  # the temporary directory is gone, and so is everything in it
    False
"""

from __future__ import annotations

import os
import shutil
import tempfile
from collections.abc import Callable
from pathlib import Path
from typing import Any
from urllib.parse import quote

from mechwork.dashboard.assets import CIRCUITSVIS, PLOTLY, PLOTLY_FULL, Asset, partial_traces, trace_types
from mechwork.errors import MechworkError, OutputError

__all__ = [
    "ASSETS",
    "ASSET_FILES",
    "bundle_scripts",
    "check_assets_dir",
    "check_page_path",
    "href",
    "plotly_bundle",
    "save_with_figures",
    "saved_assets",
    "write_assets",
    "write_page",
]

# bundle -> its file name in the assets folder
ASSET_FILES: dict[str, str] = {"plotly": "plotly.min.js", "circuitsvis": "circuitsvis.js"}
ASSETS: dict[str, Asset] = {"plotly": PLOTLY, "circuitsvis": CIRCUITSVIS, "plotly-full": PLOTLY_FULL}


def plotly_bundle(figures: list[Any], mode: str) -> str:
    """``"plotly"`` (the partial bundle) when it draws every trace type of ``figures``, else ``"plotly-full"``;
    a site page, which loads the shared partial bundle, refuses such figures in one line."""
    from mechwork.errors import invalid

    extra = sorted(set().union(*(trace_types(f) for f in figures)) - partial_traces())
    if not extra:
        return "plotly"
    if mode == "site":
        raise invalid("assets", f"'inline' or 'cdn' for figures of trace type {', '.join(extra)} (the site's "
                      f"plotly bundle draws {', '.join(sorted(partial_traces()))})", mode)
    return "plotly-full"


def bundle_scripts(figures: list[Any], views: bool, mode: str, asset_base: str = "assets/") -> str:
    """The ``<head>`` scripts of a page holding plotly ``figures`` (dicts) and, if ``views``, circuitsvis views.

    ``"inline"``: each bundle gzip + base64 in an inert element, then the loader that unpacks and runs them
    (:data:`~mechwork.dashboard.pagestyle.LOADER`); ``"cdn"``: their CDN addresses; ``"site"``: their files
    under ``asset_base``. plotly.js is the partial bundle unless :func:`plotly_bundle` says otherwise.
    """
    import html

    from mechwork.dashboard.pagestyle import LOADER

    names = ([plotly_bundle(figures, mode)] if figures else []) + (["circuitsvis"] if views else [])
    if mode == "inline":
        tags = [f'<script type="application/gzip;base64" data-mw-bundle="{n}">{ASSETS[n].embedded()}</script>\n'
                for n in names]
        return "".join(tags) + (f"<script>\n{LOADER}</script>\n" if names else "")
    base = asset_base if not asset_base or asset_base.endswith("/") else f"{asset_base}/"
    srcs = [ASSETS[n].url if mode == "cdn" else f"{base}{ASSET_FILES[n]}" for n in names]
    return "".join(f'<script src="{html.escape(src)}" charset="utf-8"></script>\n' for src in srcs)


def _writable_dir(path: Path) -> bool:
    return path.is_dir() and os.access(path, os.W_OK | os.X_OK)


def check_assets_dir(assets_dir: str | os.PathLike[str]) -> None:
    """Raise :class:`OutputError` unless ``assets_dir`` is (or can be made) a writable directory; writes nothing."""
    path = Path(assets_dir)
    where = str(path)
    if path.is_symlink() and not path.exists():
        raise OutputError(f"cannot write the assets folder {where!r}: it is a dangling symbolic link")
    if path.exists():
        if not path.is_dir():
            raise OutputError(f"cannot write the assets folder {where!r}: it exists and is not a directory")
        if not os.access(path, os.W_OK | os.X_OK):
            raise OutputError(f"cannot write the assets folder {where!r}: it is read-only")
        for name in ASSET_FILES.values():
            f = path / name
            if f.is_dir() or (f.is_symlink() and not f.exists()):
                raise OutputError(f"cannot write {str(f)!r} in the assets folder: it is not a file")
        return
    parent = path.parent  # the folder is made: its nearest existing ancestor must be a writable directory
    while not parent.exists() and parent != parent.parent:
        parent = parent.parent
    if not _writable_dir(parent):
        what = "read-only" if parent.is_dir() else "not a directory"
        raise OutputError(f"cannot create the assets folder {where!r}: {str(parent)!r} is {what}")


def _same_bytes(path: Path, data: bytes) -> bool:
    try:
        return path.is_file() and path.stat().st_size == len(data) and path.read_bytes() == data
    except OSError:
        return False


def write_assets(assets_dir: str | os.PathLike[str]) -> dict[str, Path]:
    """Write every bundle into ``assets_dir`` (made if missing); returns bundle name -> its path."""
    from mechwork.atomic import atomic_open

    path = Path(assets_dir)
    check_assets_dir(path)
    out: dict[str, Path] = {}
    try:
        path.mkdir(parents=True, exist_ok=True)
        for name, file in ASSET_FILES.items():
            target = path / file
            data = ASSETS[name].source().encode("utf-8")
            if not _same_bytes(target, data):
                with atomic_open(target, "wb", make_parents=False) as f:
                    f.write(data)
            out[name] = target
    except OSError as e:
        raise OutputError(f"cannot write the assets folder {str(path)!r}: {e.strerror or e}") from e
    return out


# -- a page and its figures folder -----------------------------------------------------------------------
def href(file: Path, page_dir: Path) -> str:
    """``file`` as a URL relative to the folder of a page (``page_dir``)."""
    return quote(Path(os.path.relpath(file.absolute(), page_dir.absolute())).as_posix())


def check_page_path(path: Path) -> None:
    """Raise :class:`OutputError` unless a page can be written at ``path`` (into an existing directory)."""
    parent = path.parent
    if path.is_dir():
        raise OutputError(f"dashboard path must be a file, not a directory (got {str(path)!r})")
    if not parent.is_dir():
        what = "is not a directory" if parent.exists() else "does not exist"
        raise OutputError(f"cannot write {str(path)!r}: directory {str(parent)!r} {what}")


def write_page(path: Path, text: str) -> None:
    """Write ``text`` to ``path`` atomically; :class:`OutputError` on failure."""
    from mechwork.atomic import atomic_open

    try:
        with atomic_open(path, "w", make_parents=False) as f:
            f.write(text)
    except OSError as e:
        raise OutputError(f"cannot write {str(path)!r}: {e.strerror or e}") from e


def save_with_figures(path: Path, text: str, fig_dir: Path, export: Callable[[Path], object]) -> None:
    """Export into a temporary folder beside ``fig_dir``, swap it in, write the page; undo all on any error."""
    parent = fig_dir.parent
    if not parent.is_dir() or (fig_dir.exists() and not fig_dir.is_dir()):
        what = f"{str(parent)!r} is not a directory" if not parent.is_dir() else "it exists and is not a directory"
        raise OutputError(f"cannot write the figures folder {str(fig_dir)!r}: {what}")
    try:
        tmp = Path(tempfile.mkdtemp(prefix=f".tmp-{fig_dir.name}.", dir=parent))
    except OSError as e:
        raise OutputError(f"cannot write the figures folder {str(fig_dir)!r}: {e.strerror or e}") from e
    old = parent / f".old-{tmp.name}"
    try:
        export(tmp)
        tmp.chmod(0o755)  # mkdtemp makes it private
        if fig_dir.exists():
            os.replace(fig_dir, old)
        os.replace(tmp, fig_dir)
        try:
            write_page(path, text)
        except BaseException:
            shutil.rmtree(fig_dir, ignore_errors=True)
            if old.exists():
                os.replace(old, fig_dir)
            raise
    except MechworkError:
        raise
    except OSError as e:
        raise OutputError(f"cannot write the figures folder {str(fig_dir)!r}: {e.strerror or e}") from e
    finally:
        shutil.rmtree(tmp, ignore_errors=True)
        shutil.rmtree(old, ignore_errors=True)


def saved_assets(path: str | os.PathLike[str]) -> str | None:
    """``"inline"``, ``"cdn"`` or ``"site"`` for a page mechwork saved at ``path``; None for anything else.

    Read from the page's head: a CDN page links its bundles (``<script src="https:...">``), a site page
    links them by relative path, an inline page embeds them (compressed; plain scripts in older pages).
    A page without figures or views carries no bundle either way and gives None.
    """
    try:
        with open(path, encoding="utf-8", errors="replace") as f:
            head = f.read(65536)
    except OSError:
        return None
    head = head.split("</head>", 1)[0]
    if '<meta name="generator" content="mechwork' not in head:
        return None
    if '<script src="http' in head:
        return "cdn"
    if '<script src="' in head:
        return "site"
    return "inline" if "<script>" in head or "<script type=\"application/gzip;base64\"" in head else None
