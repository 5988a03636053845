"""The arguments a result block takes: each with its default, what is valid, and a check that normalises it.

An :class:`ArgSpec` is data plus one function: ``check(value)`` returns the value in canonical form (so that
two spellings of one block share a cache entry) or raises :class:`ValueError`; the parser then reports
``'ARG' = VALUE`` and :attr:`ArgSpec.valid`. Nothing here imports torch: the parser checks every block of
a post before any model is opened. :func:`load_yaml` reads a block or front matter: dates stay text, a
duplicate key is refused, and each top-level key's line is kept so that an error can point at it.

Example::

    >>> TOKENS.check("repeated  24"), TOKENS.check([3, 4, 5])
    ('repeated 24', [3, 4, 5])
    >>> integer(0, 8).check(9)
    Traceback (most recent call last):
    ...
    ValueError: out of range
    >>> choice("W_E", "W_U").valid
    'one of W_E, W_U'
    >>> load_yaml("title: 2021-13-01\\nseed: 1\\n")
    ({'title': '2021-13-01', 'seed': 1}, {'title': 0, 'seed': 1})
"""

from __future__ import annotations

import functools
import re
from collections.abc import Callable
from dataclasses import dataclass
from typing import Any

__all__ = ["COMMON", "REQUIRED", "TOKENS", "ArgSpec", "DuplicateKey", "choice", "heads", "integer", "latents",
           "layer", "load_yaml", "optional_step", "optional_text", "text", "tokens", "yaml_line"]

REQUIRED = "<required>"  # the default of an argument a block must give
_REPEATED = re.compile(r"repeated\s+(\d+)")
MAX_TOKENS = 512


@dataclass(frozen=True)
class ArgSpec:
    """One argument: ``default``, ``valid`` (what is valid, in words), ``check`` (the value in canonical form, or
    :class:`ValueError`), ``required`` (a block must give it)."""

    default: Any
    valid: str
    check: Callable[[Any], Any]
    required: bool = False  # a block must give it (its default is then None)


def _is_int(v: Any) -> bool:
    return isinstance(v, int) and not isinstance(v, bool)


def integer(lo: int, hi: int | None = None, default: Any = 0) -> ArgSpec:
    """An integer in ``lo..hi`` (``hi`` None: no upper bound)."""
    def check(v: Any) -> int:
        if not _is_int(v):
            raise ValueError("not an integer")
        if v < lo or (hi is not None and v > hi):
            raise ValueError("out of range")
        return int(v)

    valid = f"an integer >= {lo}" if hi is None else f"an integer in {lo}..{hi}"
    return ArgSpec(default, valid, check)


def choice(*values: str, default: str | None = None) -> ArgSpec:
    """One of ``values`` (default: the first)."""
    def check(v: Any) -> str:
        if not isinstance(v, str) or v not in values:
            raise ValueError("not a choice")
        return v

    return ArgSpec(values[0] if default is None else default, f"one of {', '.join(values)}", check)


def _int_list(v: Any, what: str) -> list[int]:
    if not isinstance(v, list) or not v or not all(_is_int(x) and x >= 0 for x in v):
        raise ValueError(f"not {what}")
    return [int(x) for x in v]


def _tokens(v: Any) -> str | list[int]:
    if isinstance(v, str):
        m = _REPEATED.fullmatch(v.strip())
        if m:
            n = int(m.group(1))
            if not 2 <= n <= MAX_TOKENS // 2:
                raise ValueError("repeat length out of range")
            return f"repeated {n}"
        if not v.strip():
            raise ValueError("empty text")
        return v
    if isinstance(v, list) and len(v) > MAX_TOKENS:
        raise ValueError("too many tokens")
    return _int_list(v, "a list of token ids")


def tokens(default: Any = "repeated 24") -> ArgSpec:
    """``repeated N`` (random tokens, repeated once; N in 2..256), a list of token ids, or text (a model
    with a tokenizer)."""
    return ArgSpec(default, f"'repeated N' (N in 2..{MAX_TOKENS // 2}), a list of token ids >= 0 or text", _tokens)


def layer() -> ArgSpec:
    """``all`` or one layer index."""
    def check(v: Any) -> str | int:
        if v == "all":
            return "all"
        if _is_int(v) and v >= 0:
            return int(v)
        raise ValueError("not a layer")

    return ArgSpec("all", "'all' or a layer index >= 0", check)


def heads() -> ArgSpec:
    """``all``, one head index or a list of them."""
    def check(v: Any) -> str | list[int]:
        if v == "all":
            return "all"
        if _is_int(v) and v >= 0:
            return [int(v)]
        return _int_list(v, "a list of head indices")

    return ArgSpec("all", "'all', a head index >= 0 or a list of them", check)


def latents() -> ArgSpec:
    """A count of latents to show (the most active first), or a list of latent indices."""
    def check(v: Any) -> int | list[int]:
        if _is_int(v):
            if not 1 <= v <= 32:
                raise ValueError("count out of range")
            return int(v)
        return _int_list(v, "a list of latent indices")

    return ArgSpec(5, "a count in 1..32 or a list of latent indices >= 0", check)


def text(default: Any = REQUIRED, valid: str = "a non-empty string") -> ArgSpec:
    """A non-empty string."""
    def check(v: Any) -> str:
        if not isinstance(v, str) or not v.strip():
            raise ValueError("not text")
        return v.strip()

    required = isinstance(default, str) and default == REQUIRED
    return ArgSpec(None if required else default, valid, check, required)


def optional_text() -> ArgSpec:
    """A string, or nothing (default None)."""
    def check(v: Any) -> str | None:
        if v is None:
            return None
        if isinstance(v, (int, float)) and not isinstance(v, bool):
            return str(v)
        if not isinstance(v, str):
            raise ValueError("not text")
        return v.strip() or None

    return ArgSpec(None, "a string", check)


def optional_step() -> ArgSpec:
    """A run's checkpoint step (default: the last)."""
    def check(v: Any) -> int | None:
        if v is None:
            return None
        if not _is_int(v) or v < 0:
            raise ValueError("not a step")
        return int(v)

    return ArgSpec(None, "a checkpointed step >= 0 of a run (default: the last)", check)


TOKENS = tokens()
COMMON: dict[str, ArgSpec] = {"title": optional_text(), "caption": optional_text(), "step": optional_step()}


class DuplicateKey(Exception):
    """A YAML mapping gives ``key`` twice; ``line`` (0-based, in the YAML text) is the second one."""

    def __init__(self, key: Any, line: int) -> None:
        super().__init__(f"duplicate key {key!r}")
        self.key, self.line = key, line


@functools.cache
def _loader() -> Any:
    """A safe YAML loader without timestamps (a date stays the text written) that refuses a duplicate key."""
    import yaml

    class Loader(yaml.SafeLoader):
        def construct_mapping(self, node: Any, deep: bool = False) -> Any:
            seen: set[Any] = set()
            for key_node, _ in node.value:
                if key_node.tag == "tag:yaml.org,2002:merge":
                    continue
                key = self.construct_object(key_node, deep=True)
                try:
                    if key in seen:
                        raise DuplicateKey(key, key_node.start_mark.line)
                    seen.add(key)
                except TypeError:  # an unhashable key: the constructor reports it
                    pass
            return super().construct_mapping(node, deep)

    Loader.yaml_implicit_resolvers = {
        c: [(tag, rx) for tag, rx in rs if tag != "tag:yaml.org,2002:timestamp"]
        for c, rs in yaml.SafeLoader.yaml_implicit_resolvers.items()}
    return Loader


def load_yaml(text: str) -> tuple[Any, dict[str, int]]:
    """The YAML ``text`` (safe, no timestamps, no duplicate keys) and the 0-based line of each top-level key (by
    its text). Raises ``yaml.YAMLError``, :class:`DuplicateKey`, or ValueError/TypeError from a constructor."""
    import yaml

    loader = _loader()(text)
    try:
        node = loader.get_single_node()
        data = None if node is None else loader.construct_document(node)
    finally:
        loader.dispose()
    lines: dict[str, int] = {}
    if isinstance(node, yaml.MappingNode):
        for key_node, _ in node.value:
            if isinstance(key_node, yaml.ScalarNode):
                lines[str(key_node.value)] = key_node.start_mark.line
    return data, lines


def yaml_line(e: Exception) -> int:
    """The 0-based line of a YAML error: the start of an unclosed quote or bracket, else where it was found."""
    context, mark = str(getattr(e, "context", None) or ""), getattr(e, "context_mark", None)
    if mark is None or not ("quoted scalar" in context or "flow" in context):
        mark = getattr(e, "problem_mark", None) or mark
    return mark.line if mark is not None else 0
