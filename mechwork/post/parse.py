"""Read a Markdown post into prose and result blocks, checking every block before anything is computed.

A result block is a fenced code block (```` ``` ```` or ``~~~``, any fence length) whose info string's first
word is ``mechwork`` (any case); markdown-it's parser finds the fences (so a block inside a list is found, and a
fence of another language stays prose). Its body is YAML (safe, dates kept as text, no duplicate keys): the first
key names the result (:data:`mechwork.post.blocks.BLOCKS`), its value the model (a preset, or a run or model
directory relative to the post's folder); the other keys are that result's arguments, checked and completed with
their defaults.
An optional front matter (a leading ``---`` YAML mapping) gives ``title``, ``description`` and ``date``.
HTML comments (``<!-- ... -->``, outside code) are not there: not in the prose, and a fence inside one is no block.

Every fault is one :class:`~mechwork.errors.PostError` line, ``FILE:LINE: what is wrong; what is valid``.
``LINE`` is the line of the faulty key or argument, else the block's opening fence (for what concerns the whole
block), or for malformed YAML the line of the fault inside the file.

Example::

    >>> post = parse_text("# Heads\\n\\nWhich heads induct?\\n\\n```mechwork\\nhead-detectors: induction-2l\\n```\\n")
    >>> post.title, post.description, [(b.kind, b.model, b.line) for b in post.blocks]
    ('Heads', 'Which heads induct?', [('head-detectors', 'induction-2l', 5)])
    >>> parse_text("```mechwork\\nhead-detector: induction-2l\\n```\\n", "p.md")
    Traceback (most recent call last):
    ...
    mechwork.errors.PostError: p.md:1: unknown result 'head-detector'; valid: ... (did you mean 'head-detectors'?)
"""

from __future__ import annotations

import difflib
import json
import os
import re
from collections.abc import Mapping
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from mechwork.errors import MechworkError, PostError
from mechwork.post.blockargs import COMMON, DuplicateKey, load_yaml, yaml_line

__all__ = ["FRONT_MATTER", "Post", "Prose", "ResultBlock", "parse_post", "parse_text"]

INFO = "mechwork"
FRONT_MATTER = ("title", "description", "date")


@dataclass(frozen=True)
class ResultBlock:
    """One ``mechwork`` block: the result ``kind``, the ``model`` as written, the checked ``args`` (defaults filled
    in), the post file ``path`` and the ``line`` of its opening fence (1-based)."""

    kind: str
    model: str
    args: Mapping[str, Any]
    path: str
    line: int

    def key(self) -> dict[str, Any]:
        """The block's kind and arguments, canonical (JSON types, sorted): its cache key without the weights."""
        return {"kind": self.kind, "args": json.loads(json.dumps(dict(self.args), sort_keys=True, default=str))}


@dataclass(frozen=True)
class Prose:
    """Markdown between result blocks, starting at ``line`` of the file."""

    text: str
    line: int


@dataclass(frozen=True)
class Post:
    """A parsed post: its ``title``, ``description`` and ``date`` (front matter, else from the prose), and its
    prose and result ``segments`` in order."""

    path: str
    title: str
    description: str | None
    segments: tuple[Prose | ResultBlock, ...]
    date: str | None = None

    @property
    def blocks(self) -> tuple[ResultBlock, ...]:
        return tuple(s for s in self.segments if isinstance(s, ResultBlock))


def _flat(text: object) -> str:
    return " ".join(str(text).split())


def _front_matter(text: str, path: str) -> tuple[dict[str, Any], int]:
    """The front matter mapping and the number of lines it takes (0 without one)."""
    lines = text.split("\n")
    if not lines or lines[0].rstrip() != "---":
        return {}, 0
    end = next((i for i in range(1, len(lines)) if lines[i].rstrip() in ("---", "...")), None)
    if end is None:
        raise PostError(f"{path}:1: front matter is not closed; valid: a '---' line after the YAML mapping")
    data, at = _load("\n".join(lines[1:end]), path, 2, "the front matter", "a 'key: value' line per key")
    if data is None:
        data = {}
    if not isinstance(data, dict):
        raise PostError(f"{path}:1: front matter must be a YAML mapping (got {type(data).__name__}); valid keys: "
                        f"{', '.join(FRONT_MATTER)}")
    unknown = [k for k in data if k not in FRONT_MATTER]
    if unknown:
        raise PostError(f"{path}:{2 + at.get(str(unknown[0]), -1)}: unknown front matter key {unknown[0]!r}; valid: "
                        f"{', '.join(FRONT_MATTER)}")
    for k in ("title", "description"):
        if k in data and (not isinstance(data[k], (str, int, float)) or isinstance(data[k], bool)):
            raise PostError(f"{path}:{2 + at.get(k, -1)}: front matter {k!r} must be text (got "
                            f"{_flat(repr(data[k]))[:60]})")
    return data, end + 1


def _load(text: str, path: str, first: int, what: str, valid: str) -> tuple[Any, dict[str, int]]:
    """The YAML ``text`` (starting at file line ``first``) and its top-level keys' lines; a fault is a PostError."""
    import yaml

    try:
        return load_yaml(text)
    except DuplicateKey as e:
        raise PostError(f"{path}:{first + e.line}: duplicate key {e.key!r} in {what}; valid: each key once") from None
    except yaml.YAMLError as e:
        raise PostError(f"{path}:{first + yaml_line(e)}: malformed YAML in {what}: {_problem(e)}; valid: {valid}"
                        ) from None
    except (ValueError, TypeError) as e:
        raise PostError(f"{path}:{first}: malformed YAML in {what}: {_flat(e)[:80]}; valid: {valid}") from None


def _problem(e: Exception) -> str:
    problem = getattr(e, "problem", None) or str(e).split("\n")[0]
    context = getattr(e, "context", None)
    return _flat(f"{problem} ({context})" if context and context not in str(problem) else problem)


_FENCE = re.compile(r"(?:[ \t]*(?:>|[-*+][ \t]|\d{1,9}[.)][ \t]))*[ \t]*(`{3,}|~{3,})(.*)")
_CODE_OR_COMMENT = re.compile(r"`+|<!--")


def _drop_comments(text: str) -> str:
    """``text`` without its HTML comments (``<!-- ... -->`` outside fenced and inline code; an unclosed ``<!--`` is
    text), each comment's newlines kept so that every line keeps its number."""
    out: list[str] = []
    fence = ""  # the marker of the open code fence
    i = 0
    while i < len(text):
        end = text.find("\n", i)
        end = len(text) if end < 0 else end
        m = _FENCE.fullmatch(text, i, end)
        if fence:
            if m and m.group(1)[0] == fence[0] and len(m.group(1)) >= len(fence) and not m.group(2).strip():
                fence = ""
        elif m and not (m.group(1)[0] == "`" and "`" in m.group(2)):
            fence = m.group(1)
        if fence or m:
            out.append(text[i:end + 1])
            i = end + 1
            continue
        i = _comments_in_line(text, i, end, out)
    return "".join(out)


def _comments_in_line(text: str, i: int, end: int, out: list[str]) -> int:
    """Copy ``text[i:end]`` and its newline to ``out`` without comments; a comment may run on past ``end``: the
    position after everything copied."""
    while True:
        m = _CODE_OR_COMMENT.search(text, i, end)
        if m is None:
            out.append(text[i:end + 1])
            return end + 1
        out.append(text[i:m.start()])
        if m.group() != "<!--":  # inline code: up to the same run of backticks on this line, else just the run
            close = re.compile(f"(?<!`){m.group()}(?!`)").search(text, m.end(), end)
            stop = close.end() if close else m.end()
            out.append(text[m.start():stop])
            i = stop
            continue
        stop = m.end() + 1 if text.startswith(">", m.end()) else m.end() + 2 if text.startswith("->", m.end()) \
            else text.find("-->", m.end()) + 3
        if stop < m.end():  # never closed: text, as CommonMark reads it
            out.append(m.group())
            i = m.end()
            continue
        out.append("\n" * text.count("\n", m.start(), stop))
        if stop > end:  # the comment ends on a later line: go on from there
            end = text.find("\n", stop)
            end = len(text) if end < 0 else end
        i = stop


def _tokens(body: str) -> list[Any]:
    from markdown_it import MarkdownIt
    from mdit_py_plugins.dollarmath import dollarmath_plugin

    md = MarkdownIt("commonmark", {"html": False}).enable("table")  # as the page's markdown reads it
    dollarmath_plugin(md, allow_labels=False, allow_space=False, allow_digits=False, double_inline=True)
    return md.parse(body)


_SYMBOLS = {"cdot": "·", "times": "×", "pi": "π", "omega": "ω", "alpha": "α", "beta": "β", "sum": "Σ", "approx": "≈",
            "le": "≤", "ge": "≥", "in": "∈", "to": "→", "bmod": "mod", "mod": "mod"}


def _plain_math(latex: str) -> str:
    """Inline LaTeX as plain text: a few symbols by name, other commands dropped, braces removed."""
    out = re.sub(r"\\([A-Za-z]+)", lambda m: _SYMBOLS.get(m.group(1), ""), latex)
    return out.replace("{", "").replace("}", "")


def _plain(inline: Any) -> str:
    parts = []
    for child in inline.children or []:
        if child.type in ("text", "code_inline"):
            parts.append(child.content)
        elif child.type in ("math_inline", "math_inline_double"):
            parts.append(_plain_math(child.content))
        elif child.type in ("softbreak", "hardbreak"):
            parts.append(" ")
    return _flat("".join(parts))


def _title_description(tokens: list[Any]) -> tuple[str | None, str | None]:
    """The first ``# `` heading and the first paragraph (plain text), from the parser's tokens."""
    title = desc = None
    for i, tok in enumerate(tokens):
        if tok.type == "heading_open" and tok.tag == "h1" and title is None:
            title = _plain(tokens[i + 1]) or None
        elif tok.type == "paragraph_open" and desc is None and not tok.hidden:
            desc = _plain(tokens[i + 1]) or None
    return title, desc


def parse_text(text: str, path: str = "<post>", *, base: Path | None = None, check_models: bool = True) -> Post:
    """Parse the post ``text`` (from the file ``path``; models relative to ``base``, default the file's folder)."""
    text = text.removeprefix("\ufeff").replace("\r\n", "\n")
    meta, skip = _front_matter(text, path)
    lines = text.split("\n")
    body = _drop_comments("\n".join(lines[skip:]))
    lines = lines[:skip] + body.split("\n")
    tokens = _tokens(body)
    base = Path(path).parent if base is None else Path(base)
    segments: list[Prose | ResultBlock] = []
    at = 0  # the next body line (0-based) not yet in a segment
    for tok in tokens:
        if tok.type != "fence" or (tok.info.split() or [""])[0].lower() != INFO or tok.map is None:
            continue
        start, end = tok.map
        _prose(segments, lines, skip, at, start)
        segments.append(_block(tok.content, path, skip + start + 1, base, check_models))
        at = end
    _prose(segments, lines, skip, at, len(lines) - skip)
    h1, para = _title_description(tokens)
    title = meta.get("title")
    desc = meta.get("description")
    date = meta.get("date")
    return Post(path, _flat(title) if title is not None else h1 or Path(path).stem,
                _flat(desc) if desc is not None else para, tuple(segments), None if date is None else str(date))


def _prose(segments: list[Prose | ResultBlock], lines: list[str], skip: int, a: int, b: int) -> None:
    chunk = lines[skip + a:skip + b]
    while chunk and not chunk[0].strip():  # the prose starts at its first line that is not blank
        chunk, a = chunk[1:], a + 1
    if any(line.strip() for line in chunk):
        segments.append(Prose("\n".join(chunk).rstrip("\n") + "\n", skip + a + 1))


def parse_post(path: str | os.PathLike[str], *, check_models: bool = True) -> Post:
    """Parse the post file ``path`` (UTF-8)."""
    p = Path(path)
    try:
        text = p.read_text(encoding="utf-8-sig")
    except FileNotFoundError:
        raise PostError(f"{p}: no such post file") from None
    except (OSError, UnicodeDecodeError) as e:
        raise PostError(f"{p}: cannot read the post: {_flat(getattr(e, 'strerror', None) or e)}") from None
    return parse_text(text, str(p), base=p.parent, check_models=check_models)


def _load_block(content: str, where: str, line: int) -> tuple[dict[str, Any], dict[str, int]]:
    """The block's mapping and the file line of each of its keys."""
    from mechwork.post.blocks import BLOCKS

    names = ", ".join(sorted(BLOCKS))
    if not content.strip():
        raise PostError(f"{where}:{line}: empty mechwork block; valid: 'RESULT: MODEL' then arguments, RESULT one of "
                        f"{names}")
    data, at = _load(content, where, line + 1, "the mechwork block", "'RESULT: MODEL' then 'argument: value' lines")
    if not isinstance(data, dict) or not data:
        got = "a list" if isinstance(data, list) else f"{_flat(repr(data))[:60]}"
        raise PostError(f"{where}:{line}: a mechwork block must be a YAML mapping (got {got}); valid: 'RESULT: MODEL' "
                        f"then 'argument: value' lines, RESULT one of {names}")
    return data, {k: line + 1 + n for k, n in at.items()}


def _block(content: str, path: str, line: int, base: Path, check_models: bool) -> ResultBlock:
    """One block's YAML, checked: its result name, model and arguments."""
    from mechwork.post.blocks import BLOCKS

    data, at = _load_block(content, path, line)
    items = list(data.items())
    name, model = items[0]
    if not isinstance(name, str) or name not in BLOCKS:
        names = ", ".join(sorted(BLOCKS))
        if name in COMMON or any(k in BLOCKS for k in data):
            raise PostError(f"{path}:{line}: the first key must name the result (one of {names}), then "
                            f"'argument: value' lines (got {_flat(repr(name))[:60]} first)")
        close = difflib.get_close_matches(str(name), list(BLOCKS), n=1)
        hint = f" (did you mean {close[0]!r}?)" if close else ""
        raise PostError(f"{path}:{line}: unknown result {_flat(repr(name))[:80]}; valid: {names}{hint}")
    kind = BLOCKS[name]
    if not isinstance(model, str) or not model.strip():
        raise PostError(f"{path}:{line}: {name} needs a model (got {_flat(repr(model))[:60]}); valid: a preset "
                        "(modadd-113, induction-2l), a run directory or a model directory")
    args = _args(kind, dict(items[1:]), path, line, at)
    if check_models:
        _check_model(name, model.strip(), args, path, line, base)
    return ResultBlock(name, model.strip(), args, path, line)


def _args(kind: Any, given: dict[Any, Any], path: str, line: int, at: Mapping[str, int]) -> dict[str, Any]:
    """The checked arguments (defaults filled in); a bad one is reported at its own line ``at[key]``."""
    specs = kind.all_args
    out: dict[str, Any] = {}
    for key, value in given.items():
        here = at.get(str(key), line)
        if key not in specs:
            close = difflib.get_close_matches(str(key), list(specs), n=1)
            hint = f" (did you mean {close[0]!r}?)" if close else ""
            raise PostError(f"{path}:{here}: unknown argument {_flat(repr(key))[:80]} for {kind.name}; valid: "
                            f"{', '.join(specs)}{hint}")
        try:
            out[key] = specs[key].check(value)
        except (ValueError, TypeError):
            raise PostError(f"{path}:{here}: argument {key!r} of {kind.name} must be {specs[key].valid} (got "
                            f"{_flat(repr(value))[:80]})") from None
    for key, spec in specs.items():
        if key not in out:
            if spec.required:
                raise PostError(f"{path}:{line}: {kind.name} needs the argument {key!r}: {spec.valid}")
            out[key] = spec.default
    return out


def _model_ref(model: str, base: Path) -> str:
    try:
        p = Path(model).expanduser()
        if not p.is_absolute() and (base / p).exists():
            return str(base / p)
        return str(p) if p.exists() else model
    except (OSError, RuntimeError, ValueError):  # too long a name, an unknown ~user, a NUL
        return model


def _check_model(name: str, model: str, args: Mapping[str, Any], path: str, line: int, base: Path) -> None:
    """The model resolves (JSON only, no weights), takes the block's ``step``, and the result applies to its task."""
    from mechwork.limits import PRESET_NAMES, check_step, resolve, source_config
    from mechwork.post.blocks import BLOCKS

    ref = _model_ref(model, base)
    valid = (f"give a preset ({', '.join(PRESET_NAMES)}), a run directory or a model directory (relative to "
             f"{str(base)!r})")
    shown = repr(model if len(model) <= 80 else model[:77] + "...")
    try:
        exists = Path(ref).exists()
    except (OSError, ValueError):  # a name too long for the file system
        exists = False
    if not exists and ref not in PRESET_NAMES:
        try:
            resolve(ref)  # a preset of a user's kit
        except (MechworkError, OSError, ValueError):
            close = difflib.get_close_matches(model.lower(), PRESET_NAMES, n=1)
            hint = f" (did you mean {close[0]!r}?)" if close else ""
            raise PostError(f"{path}:{line}: model {shown} does not exist; {valid}{hint}") from None
    try:
        kind, key = resolve(ref)
        check_step(kind, key, args.get("step"))
    except MechworkError as e:
        raise PostError(f"{path}:{line}: model {shown}: {_flat(e)}") from None
    cfg = source_config(kind, key)
    task_kind = cfg["task"].get("kind") if cfg is not None else None
    reason = BLOCKS[name].applies(task_kind if kind != "model" else None)
    if reason:
        raise PostError(f"{path}:{line}: {name} does not apply to {shown}: {reason}")
