"""Checks on the command line's arguments that need no model and no torch: sources, outputs, prompts.

``check_source`` resolves a MODEL (preset, run or model directory) with its ``--step`` and ``--device`` from
files and names alone; ``check_writable`` refuses an output that cannot be written; ``prompt_inputs`` checks
``--prompts FILE`` and ``--pair CLEAN CORRUPTED`` before a model is loaded (a toy model takes token ids that
fit its context); ``top_arg``, ``check_threshold`` and ``config_edges`` check ``mechwork circuit``'s
``--top`` and ``--threshold`` (and ``--top`` against a toy model's edge count, read from its config). Each
refusal is one line naming the value and what is valid.

Example::

    >>> prompt_arg("1, 2 3")
    [1, 2, 3]
    >>> top_arg("8"), top_arg("0.1"), config_edges("preset", "induction-2l")
    (8, 0.1, 81)
    >>> check_source("modadd-113")
    ('preset', 'modadd-113')
"""

from __future__ import annotations

from pathlib import Path
from typing import Any

import click

from mechwork import limits
from mechwork.errors import ConfigError, MechworkError

__all__ = ["CIRCUIT_METHODS", "PAIR_HELP", "check_source", "check_threshold", "check_writable", "config_edges",
           "explicit", "prompt_arg", "prompt_inputs", "top_arg"]

CIRCUIT_METHODS = ("eap", "eap-ig", "exact", "acdc")  # mechwork.analysis.circuitreport.METHODS, without importing it

def check_source(run_or_preset: str, step: int | None = None, device: str | None = None) -> tuple[str, str]:
    """Check a run/preset argument, its --step and --device from files and names alone (torch not imported)."""
    kind, key = limits.resolve(run_or_preset)
    limits.check_step(kind, key, step)
    limits.check_device(device)
    return kind, key


def check_writable(path: Path | None, option: str, *, html: bool = False, make_parents: bool = False) -> None:
    """Refuse an output file that cannot be written, before any work (torch not imported)."""
    if path is None:
        return
    if html and path.suffix.lower() not in (".html", ".htm"):
        raise click.BadParameter(f"must end in .html (got {str(path)!r})", param_hint=f"'{option}'")
    try:
        limits.check_writable(path, option, make_parents=make_parents)
    except MechworkError as e:
        raise click.BadParameter(str(e), param_hint=f"'{option}'") from e


def check_page_out(path: Path, option: str) -> None:
    """A dashboard's output file, checked as the page writer will check it (after torch is loaded): one line
    naming ``option`` if it cannot be written."""
    from mechwork.dashboard.standard import check_out

    try:
        check_out(path)
    except MechworkError as e:
        raise click.BadParameter(str(e), param_hint=f"'{option}'") from e


def explicit(ctx: click.Context) -> set[str]:
    """Names of the options the user actually typed (not defaults)."""
    return {
        name
        for name in ctx.params
        if ctx.get_parameter_source(name) not in (click.core.ParameterSource.DEFAULT, None)
    }


def prompt_arg(text: str) -> str | list[int]:
    """A --pair prompt: a line of integers (space- or comma-separated) is token ids, anything else text."""
    parts = [p for p in text.replace(",", " ").split() if p]
    if parts and all(p.lstrip("-").isdigit() for p in parts):
        return [int(p) for p in parts]
    return text


def prompt_inputs(prompts: Path | None, pair: tuple[str, str] | None, kind: str, key: str) -> tuple[Any, Any] | None:
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
    model = (limits.source_config(kind, key) or {}).get("model", {}) if toy else {}
    n_ctx, d_vocab = model.get("n_ctx"), model.get("d_vocab")
    if prompts is not None and toy:
        lines = [(n, line.strip()) for n, line in enumerate(_read_lines(prompts), 1) if line.strip()]
        for n, line in lines:
            _check_ids(prompt_arg(line), f"line {n} of {str(prompts)!r}", n_ctx, "'--prompts'", d_vocab)
    if pair is None:
        return None
    parsed = (prompt_arg(pair[0]), prompt_arg(pair[1]))
    if toy:
        for what, p in zip(("the clean prompt", "the corrupted prompt"), parsed, strict=True):
            _check_ids(p, what, n_ctx, "'--pair'", d_vocab)
    if not any(isinstance(p, str) for p in parsed) and len(parsed[0]) != len(parsed[1]):
        raise ConfigError(f"'--pair' prompts must tokenise to the same length (clean {len(parsed[0])} tokens, "
                          f"corrupted {len(parsed[1])})")
    return parsed


def _read_lines(path: Path) -> list[str]:
    try:  # as mechwork.prompts.read_prompts: UTF-8 (a byte-order mark is not text), or UTF-16 with its mark
        raw = path.read_bytes()
        return raw.decode("utf-16" if raw[:2] in (b"\xff\xfe", b"\xfe\xff") else "utf-8-sig").splitlines()
    except (OSError, UnicodeDecodeError) as e:
        raise click.BadParameter(f"prompts file {str(path)!r} cannot be read as UTF-8 text: {e}",
                                 param_hint="'--prompts'") from None


def _check_ids(prompt: str | list[int], what: str, n_ctx: Any, hint: str, d_vocab: Any = None) -> None:
    """A toy model's prompt: token ids (it has no tokenizer) of its vocabulary that fit its context (the same
    lines as :func:`mechwork.prompts.tokenize` says once the model is loaded)."""
    if isinstance(prompt, str):
        raise click.BadParameter(f"this model has no tokenizer: give token ids (got the string {prompt!r} in "
                                 f"{what})", param_hint=hint)
    bad = [t for t in prompt if isinstance(d_vocab, int) and not 0 <= t < d_vocab]
    if bad:
        raise ConfigError(f"{what} holds token id {bad[0]}, outside the model's vocabulary (ids 0 to {d_vocab - 1})")
    if isinstance(n_ctx, int) and len(prompt) > n_ctx:
        shown = " ".join(map(str, prompt))
        shown = shown if len(shown) <= 40 else shown[:37] + "..."
        raise ConfigError(f"{what} {shown!r} is {len(prompt)} tokens, longer than the model's context of "
                          f"{n_ctx} tokens")


PAIR_HELP = "a clean and a corrupted prompt of one token length (text, or token ids like '1 2 3')"


def top_arg(text: str | None) -> int | float | None:
    """``--top``: a number of edges (an integer >= 1) or a fraction of the edges in (0, 1]."""
    if text is None:
        return None
    msg = f"must be a number of edges (an integer >= 1) or a fraction of the edges in (0, 1] (got {text!r})"
    t = text.strip()
    try:
        value: int | float = int(t) if t.lstrip("+").isdigit() else float(t)
    except ValueError:
        raise click.BadParameter(msg, param_hint="'--top'") from None
    if isinstance(value, int) and value >= 1:
        return value
    if isinstance(value, float) and 0 < value <= 1:
        return value
    raise click.BadParameter(msg, param_hint="'--top'")


def check_threshold(value: float) -> float:
    """ACDC's ``--threshold``: a fraction of the clean-to-corrupted gap, in (0, 1)."""
    if not 0 < value < 1:
        raise click.BadParameter(f"must be a fraction of the clean-to-corrupted gap in (0, 1) (got {value:g})",
                                 param_hint="'--threshold'")
    return value


def config_edges(kind: str, key: str) -> int | None:
    """The position-free edge count of a preset's or run's model, from its config alone (None: not known here)."""
    from mechwork.graph import Graph

    m = (limits.source_config(kind, key) or {}).get("model", {})
    if not isinstance(m.get("n_layers"), int) or not isinstance(m.get("n_heads"), int):
        return None
    return Graph(m["n_layers"], m["n_heads"], mlp=m.get("d_mlp", 512) is not None).n_edges  # ToyConfig: 512
