"""Prompts for any model: text through the model's tokenizer, or token ids, checked against the model.

A prompt is a string (tokenized as TransformerLens's ``model.to_tokens`` does,
with the beginning-of-sequence token when the model's cfg prepends one) or a
sequence of token ids. :func:`tokenize` turns one prompt or several into
:class:`Prompts`: one 1-D id tensor per prompt, the token strings that label
it, and the prompt as given. Every id is checked against the model's
vocabulary and every prompt against its context, with one line naming the
prompt when it does not fit. A model without a tokenizer (the presets, a run,
a ``save_pretrained`` directory without tokenizer files) takes ids only.

* :func:`read_prompts` -- a file, one prompt a line; a line of integers is token ids.
* :func:`prompt_pair` -- a clean and a corrupted prompt that must tokenise to the same length.

Example::

    >>> import mechwork
    >>> from mechwork.prompts import tokenize
    >>> model = mechwork.load("induction-2l", device="cpu")
    >>> p = tokenize(model, [[1, 2, 3, 1, 2], [4, 5, 6, 4, 5]])
    >>> tuple(p.batch().shape), p.labels[0]
    ((2, 5), ('1', '2', '3', '1', '2'))
    >>> tokenize(model, "hello")
    Traceback (most recent call last):
    mechwork.errors.ConfigError: this model has no tokenizer: give token ids (got the string 'hello')
"""

from __future__ import annotations

import os
import re
from collections.abc import Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import torch
from jaxtyping import Int
from torch import Tensor

from mechwork.errors import ConfigError

__all__ = ["Prompts", "check_model", "has_tokenizer", "prompt_pair", "read_prompts", "tokenize"]

_IDS_LINE = re.compile(r"^-?\d+(?:\s*[,\s]\s*-?\d+)*\s*,?$")


@dataclass(frozen=True)
class Prompts:
    """Tokenized prompts: ``rows[i]`` holds the ids of prompt ``i``, ``labels[i]`` its token strings."""

    rows: tuple[Int[Tensor, " _pos"], ...]  # one 1-D id tensor per prompt (lengths may differ: "_" unchecked)
    labels: tuple[tuple[str, ...], ...]  # token strings per row (decoded, or the ids as strings)
    texts: tuple[str, ...]  # each prompt as given (ids as a space-separated line)

    def __len__(self) -> int:
        return len(self.rows)

    @property
    def lengths(self) -> tuple[int, ...]:
        """The number of tokens of each prompt."""
        return tuple(int(r.shape[0]) for r in self.rows)

    def batch(self) -> Int[Tensor, "batch pos"]:
        """The rows stacked into one ``[batch, pos]`` tensor; one line naming the lengths if they differ."""
        if len(set(self.lengths)) > 1:
            raise ConfigError(f"the prompts tokenise to different lengths ({', '.join(map(str, self.lengths))} "
                              "tokens): give prompts of one length to batch them")
        return torch.stack(list(self.rows))


def check_model(model: Any, operation: str = "this") -> None:
    """Refuse, in one line, a ``model`` that is not a model (a path, a name, None...): ``mechwork.load`` makes one."""
    cfg = getattr(model, "cfg", None)
    if cfg is None or not hasattr(cfg, "d_vocab") or not hasattr(model, "run_with_cache"):
        got = repr(model) if isinstance(model, (str, int, float)) or model is None else f"a {type(model).__name__}"
        raise ConfigError(f"{operation} needs a TransformerBridge as 'model' (mechwork.load(path or preset) gives "
                          f"one; got {got[:80]})")


def has_tokenizer(model: Any) -> bool:
    """Whether ``model`` (a ``TransformerBridge``) carries a tokenizer, so that it takes prompts as strings."""
    return getattr(model, "tokenizer", None) is not None


def _device(model: Any) -> torch.device:
    for p in model.parameters():
        return p.device
    return torch.device("cpu")


def _short(text: str, width: int = 40) -> str:
    return repr(text if len(text) <= width else text[: width - 3] + "...")


def _ids_text(ids: Sequence[int]) -> str:
    return " ".join(str(int(i)) for i in ids)


def _ids_row(model: Any, ids: Any, what: str) -> Int[Tensor, " pos"]:
    """One prompt of token ids as a 1-D int64 tensor, each id checked against the vocabulary."""
    if isinstance(ids, Tensor):
        if ids.is_floating_point() or ids.is_complex() or ids.dtype == torch.bool:
            raise ConfigError(f"{what} must hold integer token ids (got a {ids.dtype} tensor)")
        row = ids.detach().reshape(-1).to(torch.int64).cpu()
    else:
        values = list(ids)
        bad = next((v for v in values if isinstance(v, bool) or not isinstance(v, int)), None)
        if bad is not None:
            raise ConfigError(f"{what} must be a string or a sequence of integer token ids (got {bad!r})")
        row = torch.tensor(values, dtype=torch.int64)
    if row.numel() == 0:
        raise ConfigError(f"{what} is empty: give at least one token")
    d_vocab = int(model.cfg.d_vocab)
    out = (row < 0) | (row >= d_vocab)
    if bool(out.any()):
        raise ConfigError(f"{what} holds token id {int(row[out][0])}, outside the model's vocabulary "
                          f"(ids 0 to {d_vocab - 1})")
    return row


def _text_row(model: Any, text: str, what: str) -> Int[Tensor, " pos"]:
    """A string tokenized as ``model.to_tokens`` does (never truncated: a long prompt is refused instead)."""
    if not has_tokenizer(model):
        where = "" if re.fullmatch(r"prompt \d+", what) else f" on {what}"
        raise ConfigError(f"this model has no tokenizer: give token ids (got the string {_short(text)}{where})")
    row = model.to_tokens(text, truncate=False, move_to_device=False)[0].to(torch.int64).cpu()
    if row.numel() == 0:
        raise ConfigError(f"{what} {_short(text)} tokenises to no tokens")
    return row


def _labels(model: Any, row: Int[Tensor, " pos"]) -> tuple[str, ...]:
    if has_tokenizer(model):
        return tuple(str(s) for s in model.to_str_tokens(row))
    return tuple(str(int(i)) for i in row.tolist())


def _as_prompts(prompts: Any) -> list[Any]:
    """Split what :func:`tokenize` takes into a list of single prompts (each a string, or ids)."""
    if isinstance(prompts, str):
        return [prompts]
    if isinstance(prompts, Prompts):  # already tokenized (perhaps for another model: checked again)
        return list(prompts.rows)
    if hasattr(prompts, "__array__") and not isinstance(prompts, Tensor):  # a numpy array of ids
        try:
            prompts = torch.as_tensor(prompts)
        except (TypeError, ValueError, RuntimeError) as e:
            raise ConfigError(f"prompts as an array must hold integer token ids ({e})") from None
    if isinstance(prompts, Tensor):
        if prompts.dim() == 1:
            return [prompts]
        if prompts.dim() == 2:
            return list(prompts)
        raise ConfigError(f"a token tensor must be [pos] or [batch, pos] (got shape {tuple(prompts.shape)})")
    if isinstance(prompts, Sequence) and not isinstance(prompts, (bytes, bytearray)):
        items = list(prompts)
        if not items:
            raise ConfigError("no prompts given: give a string, token ids, or a list of them")
        if all(isinstance(v, int) and not isinstance(v, bool) for v in items):
            return [items]  # one prompt of ids
        return items
    raise ConfigError(f"prompts must be a string, a list of strings, a token tensor or lists of token ids "
                      f"(got {type(prompts).__name__})")


def _one(model: Any, prompt: Any, what: str) -> tuple[Int[Tensor, " pos"], str]:
    if isinstance(prompt, str):
        return _text_row(model, prompt, what), prompt
    if isinstance(prompt, Tensor) or (isinstance(prompt, Sequence) and not isinstance(prompt, (bytes, bytearray))):
        row = _ids_row(model, prompt, what)
        return row, _ids_text(row.tolist())
    raise ConfigError(f"{what} must be a string or a sequence of token ids (got {type(prompt).__name__})")


def _check_context(model: Any, row: Int[Tensor, " pos"], text: str, what: str) -> None:
    n_ctx = int(model.cfg.n_ctx)
    if row.shape[0] > n_ctx:
        raise ConfigError(f"{what} {_short(text)} is {row.shape[0]} tokens, longer than the model's context "
                          f"of {n_ctx} tokens")


def tokenize(model: Any, prompts: Any, *, names: Sequence[str] | None = None) -> Prompts:
    """``prompts`` (a string, strings, a ``[pos]`` or ``[batch, pos]`` tensor or numpy array, lists of ids, or
    :class:`Prompts` already made) as :class:`Prompts`.

    ``names`` (optional) names each prompt in the errors (default ``prompt 1``, ``prompt 2``, ...).
    """
    check_model(model, "tokenize")
    items = _as_prompts(prompts)
    if not items:
        raise ConfigError("no prompts given: give a string, token ids, or a list of them (got an empty batch)")
    given = prompts.texts if isinstance(prompts, Prompts) else None
    device = _device(model)
    rows, labels, texts = [], [], []
    for i, prompt in enumerate(items):
        what = names[i] if names is not None and i < len(names) else f"prompt {i + 1}"
        row, text = _one(model, prompt, what)
        _check_context(model, row, text, what)
        labels.append(_labels(model, row))
        rows.append(row.to(device))
        texts.append(given[i] if given is not None else text)
    return Prompts(rows=tuple(rows), labels=tuple(labels), texts=tuple(texts))


def _parse_line(line: str) -> str | list[int]:
    """A line of integers (space- or comma-separated) is token ids; any other line is text."""
    if _IDS_LINE.match(line):
        return [int(v) for v in re.split(r"[\s,]+", line.strip(" ,")) if v]
    return line


def read_prompts(model: Any, path: str | os.PathLike[str]) -> Prompts:
    """The prompts of a text file, one a line (blank lines skipped); a line of integers is token ids.

    A missing, unreadable or empty file is refused with one line, as is a prompt that does not fit the model
    (the error names its line).
    """
    p = Path(path)
    if not p.is_file():
        raise ConfigError(f"prompts file {str(p)!r} does not exist" if not p.exists()
                          else f"prompts file {str(p)!r} is not a file")
    try:
        raw = p.read_bytes()  # UTF-8 (a byte-order mark is not part of the first prompt), or UTF-16 with its mark
        text = raw.decode("utf-16" if raw[:2] in (b"\xff\xfe", b"\xfe\xff") else "utf-8-sig")
    except (OSError, UnicodeDecodeError) as e:
        raise ConfigError(f"prompts file {str(p)!r} cannot be read as UTF-8 text: {e}") from None
    numbered = [(n, line.strip()) for n, line in enumerate(text.splitlines(), 1) if line.strip()]
    if not numbered:
        raise ConfigError(f"prompts file {str(p)!r} holds no prompts: write one prompt a line "
                          "(text, or token ids separated by spaces or commas)")
    names = [f"line {n} of {str(p)!r}" for n, _ in numbered]
    return tokenize(model, [_parse_line(line) for _, line in numbered], names=names)


def prompt_pair(model: Any, clean: Any, corrupted: Any) -> tuple[Prompts, Prompts]:
    """A clean and a corrupted prompt (each a string or token ids), tokenised to the same length, else one line.

    >>> import mechwork
    >>> model = mechwork.load("induction-2l", device="cpu")
    >>> prompt_pair(model, [1, 2, 3], [1, 2])
    Traceback (most recent call last):
    mechwork.errors.ConfigError: '--pair' prompts must tokenise to the same length (clean 3 tokens, corrupted 2)
    """
    a = tokenize(model, [clean], names=["the clean prompt"]) if _single(clean) else tokenize(model, clean)
    b = tokenize(model, [corrupted], names=["the corrupted prompt"]) if _single(corrupted) \
        else tokenize(model, corrupted)
    if len(a) != len(b):
        raise ConfigError(f"'--pair' needs as many clean as corrupted prompts (clean {len(a)}, corrupted {len(b)})")
    for la, lb in zip(a.lengths, b.lengths, strict=True):
        if la != lb:
            raise ConfigError(f"'--pair' prompts must tokenise to the same length (clean {la} tokens, "
                              f"corrupted {lb})")
    return a, b


def _single(prompt: Any) -> bool:
    """Whether ``prompt`` is one prompt (a string, a 1-D tensor or a flat list of ids) rather than several."""
    if isinstance(prompt, str):
        return True
    if isinstance(prompt, Tensor):
        return prompt.dim() <= 1
    return isinstance(prompt, Sequence) and all(isinstance(v, int) and not isinstance(v, bool) for v in prompt)
