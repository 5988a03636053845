"""Vetting a user's kit before it is used: its parts (:func:`check_protocol`, on :func:`mechwork.kit.register`)
and a task of it (:func:`check_task`, before ``mechwork train`` writes anything). Each problem is one line.

Core, light (torch is only touched through the task's tensors); it takes the kit by duck typing.

Example::

    >>> from types import SimpleNamespace
    >>> kit = SimpleNamespace(kind="demo", model=len, recipe=len, probe=len, analyse=None, task=int)
    >>> check_protocol(kit)
    Traceback (most recent call last):
    mechwork.errors.ConfigError: kit 'demo': analyse must be callable
"""

from __future__ import annotations

import functools
from collections.abc import Callable, Mapping
from dataclasses import fields
from typing import Any

from mechwork.errors import ConfigError

__all__ = ["check_protocol", "check_task", "one_line", "reported"]


def one_line(e: BaseException) -> str:
    """``"ZeroDivisionError: division by zero (at my_kit.py:40)"``: the error and where it was raised."""
    import traceback
    from pathlib import Path

    frames = traceback.extract_tb(e.__traceback__) if e.__traceback__ is not None else []
    at = f" (at {Path(frames[-1].filename).name}:{frames[-1].lineno})" if frames else ""
    return f"{type(e).__name__}: {e}".replace("\n", " ") + at


def reported(kind: str, name: str, fn: Callable[..., Any]) -> Callable[..., Any]:
    """``fn`` (a user kit's ``analyse`` or ``probe``) with any error but a MechworkError turned into one line."""
    from mechwork.errors import MechworkError

    @functools.wraps(fn)
    def call(*args: Any, **kwargs: Any) -> Any:
        try:
            return fn(*args, **kwargs)
        except MechworkError:
            raise
        except Exception as e:
            raise ConfigError(f"kit {kind!r}: {name}() raised {one_line(e)}") from e

    return call


def check_task(kit: Any, task: Any) -> None:
    """Refuse, in one line, a task whose kit hands out what training cannot use (before any run is written).

    Each split of ``("train", *eval_splits)`` must give a :class:`Batch` of integer tokens in the task's
    vocabulary and at most ``n_ctx`` long, targets of the same shape and a boolean mask with a position
    to score; ``model(task)`` and ``recipe(task)`` must give configs (with ``to_dict()``) whose vocabulary
    and context fit the task.
    """
    where = f"kit {kit.kind!r}"
    for split in ("train", *getattr(task, "eval_splits", ("test",))):
        try:
            b = task.batch(split, 0)
        except Exception as e:
            raise ConfigError(f"{where}: task.batch({split!r}) raised {one_line(e)}") from None
        problem = _batch_problem(b, task)
        if problem:
            raise ConfigError(f"{where}: task.batch({split!r}) {problem}")
    for name in ("model", "recipe"):
        try:
            made = getattr(kit, name)(task)
        except Exception as e:
            raise ConfigError(f"{where}: {name}(task) raised {one_line(e)}") from None
        if not callable(getattr(made, "to_dict", None)):
            want = "mechwork.models.ToyConfig" if name == "model" else "mechwork.training.TrainConfig"
            raise ConfigError(f"{where}: {name}(task) must return a {want} (got {type(made).__name__})")
        if name == "model":
            _check_sizes(where, made.to_dict(), task)


def _batch_problem(b: Any, task: Any) -> str | None:
    """What is wrong with a task's batch, or None."""
    if not all(hasattr(b, a) for a in ("tokens", "targets", "mask")):
        return f"must return a mechwork.kit.Batch (got {type(b).__name__})"
    t, y, m = b.tokens, b.targets, b.mask
    if t.dim() != 2 or t.dtype.is_floating_point or t.dtype.is_complex or len(t) == 0:
        return f"tokens must be a non-empty [batch, pos] integer tensor (got {list(t.shape)} {t.dtype})"
    if tuple(y.shape) != tuple(t.shape) or y.dtype.is_floating_point:
        return f"targets must be integers of the tokens' shape {list(t.shape)} (got {list(y.shape)} {y.dtype})"
    if tuple(m.shape) != tuple(t.shape) or str(m.dtype) != "torch.bool":
        return f"mask must be booleans of the tokens' shape {list(t.shape)} (got {list(m.shape)} {m.dtype})"
    if t.shape[1] > task.n_ctx:
        return f"has {t.shape[1]} positions, more than task.n_ctx = {task.n_ctx}"
    if int(t.min()) < 0 or int(t.max()) >= task.d_vocab:
        return f"tokens must be in [0, d_vocab = {task.d_vocab}) (got {int(t.min())}..{int(t.max())})"
    if not bool(m.any()):
        return "mask scores no position"
    ys = y[m]
    if int(ys.min()) < 0 or int(ys.max()) >= task.d_vocab_out:
        return f"targets must be in [0, d_vocab_out = {task.d_vocab_out}) (got {int(ys.min())}..{int(ys.max())})"
    return None


def _check_sizes(where: str, model: Mapping[str, Any], task: Any) -> None:
    for key in ("d_vocab", "d_vocab_out", "n_ctx"):
        if isinstance(model.get(key), int) and model[key] < getattr(task, key):
            raise ConfigError(f"{where}: model(task) has {key} {model[key]}, less than the task's "
                              f"{getattr(task, key)}")


def check_protocol(kit: Any) -> None:
    """The kit's parts are callables and its task class is a dataclass with the :class:`Task` members."""
    import dataclasses

    where = f"kit {kit.kind!r}"
    bad = [n for n in ("model", "recipe", "probe", "analyse") if not callable(getattr(kit, n))]
    if bad:
        raise ConfigError(f"{where}: {', '.join(bad)} must be callable")
    name = getattr(kit.task, "__name__", repr(kit.task))
    if not dataclasses.is_dataclass(kit.task):
        raise ConfigError(f"{where}: its task class {name} must be a dataclass (@dataclass(frozen=True))")
    names = {f.name for f in fields(kit.task)}
    missing = [n for n in ("batch", "to_dict", "describe") if not callable(getattr(kit.task, n, None))]
    missing += [n for n in ("d_vocab", "d_vocab_out", "n_ctx") if n not in names and not hasattr(kit.task, n)]
    if missing:
        raise ConfigError(f"{where}: its task class {name} lacks {', '.join(missing)} "
                          "(see mechwork.kit.Task)")
