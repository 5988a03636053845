"""A post's relative links and images, made to work from the built pages.

Prose links and images are read from the HTML the page's own Markdown renderer makes (raw HTML in a post is
shown as text, so every ``<a href>`` and ``<img src>`` is the renderer's, its value quoted and escaped). A link
to another post of the build (``[other](other.md)``, relative to the post's folder) becomes that post's page,
``other.html`` (its ``#fragment`` kept); a local image (``![a](pic.png)``) must be a file in the post's folder
or below it, and is copied into the output under the same relative path. Remote URLs, ``#fragments``,
absolute paths and links to anything else are left as they are. A missing image, or one outside the post's
folder, is one line ``FILE:LINE: ...`` (:class:`~mechwork.errors.PostError`).

Example::

    >>> import tempfile
    >>> d = Path(tempfile.mkdtemp())
    >>> _ = (d / "pic.png").write_bytes(b"png")
    >>> html = '<p><a href="b.md#top">b</a> <img src="./pic.png" alt="a" /> <a href="https://x.org/b.md">x</a></p>'
    >>> rewrite(html, d / "a.md", {(d / "b.md").resolve(): "b"})
    '<p><a href="b.html#top">b</a> <img src="pic.png" alt="a" /> <a href="https://x.org/b.md">x</a></p>'
    >>> [(name, src.name) for name, src in images(html, d / "a.md", "prose", 1).items()]
    [('pic.png', 'pic.png')]
"""

from __future__ import annotations

import html as htmllib
import re
from collections.abc import Mapping, Sequence
from pathlib import Path
from typing import Any
from urllib.parse import quote, unquote, urlsplit

from mechwork.errors import PostError

__all__ = ["copy_images", "images", "post_images", "rewrite"]

_ATTR = re.compile(r'(<(a|img)\b[^<>]*?\s(?:href|src)=")([^"]*)(")')


def _local(value: str) -> tuple[str, str] | None:
    """The relative path (unquoted) and ``#fragment`` of a relative URL, or None for anything else."""
    url = htmllib.unescape(value)
    parts = urlsplit(url)
    if parts.scheme or parts.netloc or url.startswith(("/", "#", "\\")) or not parts.path:
        return None
    return unquote(parts.path), parts.fragment


def _image(path: str, post: Path, text: str, line: int) -> tuple[str, Path]:
    """The output-relative name and the source file of the local image ``path`` (one line when it is bad)."""
    folder = post.parent.resolve()
    target = (post.parent / path).resolve()
    at = next((line + i for i, ln in enumerate(text.split("\n")) if path in ln or quote(path) in ln), line)
    where = f"{post}:{at}"
    if target != folder and folder not in target.parents:
        raise PostError(f"{where}: image {path!r} must be in the post's folder or below it (got a path outside "
                        f"{str(post.parent)!r}); valid: a relative path inside it, or a remote URL")
    if not target.is_file():
        raise PostError(f"{where}: image {path!r} does not exist; valid: a file in the post's folder or below it, "
                        "or a remote URL")
    return target.relative_to(folder).as_posix(), target


def images(body: str, post: Path, text: str, line: int) -> dict[str, Path]:
    """Every local image of ``body`` (HTML of prose ``text`` starting at ``line`` of ``post``): its name under
    the output folder -> its file; a missing image or one outside the post's folder is one line."""
    found: dict[str, Path] = {}
    for m in _ATTR.finditer(body):
        local = _local(m.group(3)) if m.group(2) == "img" else None
        if local is not None:
            name, src = _image(local[0], post, text, line)
            found[name] = src
    return found


def rewrite(body: str, post: Path, pages: Mapping[Path, str]) -> str:
    """``body`` with each link to a post of the build (``pages``: resolved post file -> page slug) pointing at
    its page, and each local image at its copy's name (:func:`images` has checked them)."""
    folder = post.parent.resolve()

    def sub(m: re.Match[str]) -> str:
        local = _local(m.group(3))
        if local is None:
            return m.group(0)
        path, fragment = local
        target = (post.parent / path).resolve()
        if m.group(2) == "img":
            new = quote(target.relative_to(folder).as_posix()) if folder in target.parents else None
        else:
            slug = pages.get(target)
            new = None if slug is None else quote(slug) + ".html" + (f"#{quote(fragment, safe='')}" if fragment
                                                                       else "")
        return m.group(0) if new is None else m.group(1) + htmllib.escape(new) + m.group(4)

    return _ATTR.sub(sub, body)


def post_images(posts: Sequence[Any]) -> dict[str, Path]:
    """Every local image of the prose of ``posts`` (parsed posts), checked: output name -> file. Two different
    files under one name are refused (one line)."""
    from mechwork.dashboard.mathml import markdown_html
    from mechwork.post.parse import Prose

    found: dict[str, Path] = {}
    for post in posts:
        for seg in post.segments:
            if not isinstance(seg, Prose):
                continue
            for name, src in images(markdown_html(seg.text), Path(post.path), seg.text, seg.line).items():
                if found.setdefault(name, src) != src:
                    raise PostError(f"{post.path}:{seg.line}: image {name!r} would overwrite another post's image "
                                    f"{str(found[name])!r} in the output; valid: a distinct name")
    return found


def copy_images(found: Mapping[str, Path], out: Path) -> list[Path]:
    """Copy each image to ``out/<name>`` atomically (an image already there as itself is left); the paths."""
    from mechwork.atomic import atomic_open
    from mechwork.errors import OutputError

    written = []
    for name, src in found.items():
        dest = out / name
        if dest.resolve() != src:
            try:
                with atomic_open(dest, "wb") as f:
                    f.write(src.read_bytes())
            except OSError as e:
                raise OutputError(f"cannot write the image {str(dest)!r}: {e.strerror or e}") from None
        written.append(dest)
    return written
