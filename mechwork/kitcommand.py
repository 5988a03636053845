"""The options of ``mechwork train KIND`` for a task kit: :class:`Option`, :class:`Command`, and the table a
user's kit gets from its task's fields (:func:`command_from_fields`). Core, light: no torch, no click.

Example::

    >>> from dataclasses import dataclass
    >>> from typing import ClassVar, Literal
    >>> @dataclass(frozen=True)
    ... class Copy:
    ...     length: int = 4
    ...     mode: Literal["copy", "shift"] = "copy"
    ...     steps: int = 3  # named like a training option: not an option
    ...     kind: ClassVar[str] = "copy"
    >>> [(o.name, o.type, o.default) for o in command_from_fields(Copy).options]
    [('length', <class 'int'>, 4), ('mode', ('copy', 'shift'), 'copy')]
"""

from collections.abc import Callable
from dataclasses import MISSING, dataclass, fields
from typing import Any

from mechwork.errors import ConfigError, invalid

__all__ = ["TRAIN_OPTIONS", "Command", "Option", "command_from_fields"]

@dataclass(frozen=True)
class Option:
    """One task field as an option of ``mechwork train KIND`` (the flag is ``--name-with-dashes``)."""

    name: str
    type: Any  # int, float, str, bool, a tuple of the allowed strings, or a converter of the typed string
    default: Any = None
    help: str = ""
    min: int | float | None = None
    max: int | float | None = None
    min_open: bool = False
    max_open: bool = False


def _same(fields: dict[str, Any]) -> dict[str, Any]:
    return fields


@dataclass(frozen=True)
class Command:
    """What ``mechwork train KIND`` takes, and checks before torch is imported.

    ``fields(values)`` turns the option values (and ``seed``) into the task's fields (derived defaults
    go here); ``check(fields)`` refuses bad ones in one line; ``vocab(fields)`` gives ``d_vocab``,
    ``d_vocab_out`` and ``n_ctx`` for the memory estimate of the model ``preset``; ``out`` is the
    default run directory, formatted with the fields; ``train_options`` names the extra training
    options the command offers (``"grokfast"``, ``"batch_size"``).
    """

    help: str
    options: tuple[Option, ...]
    fields: Callable[[dict[str, Any]], dict[str, Any]] = _same
    check: Callable[[dict[str, Any]], None] | None = None
    vocab: Callable[[dict[str, Any]], dict[str, int]] | None = None
    preset: str | None = None
    out: str = "runs/{kind}-s{seed}"
    train_options: tuple[str, ...] = ()


# options every ``mechwork train KIND`` has (mechwork.cli): a task field of one of these names is no option
TRAIN_OPTIONS = frozenset({"steps", "lr", "wd", "warmup", "decay_steps", "seed", "eval_every", "out", "resume",
                           "force", "device", "quiet", "help", "kit", "grokfast", "grokfast_alpha",
                           "grokfast_lambda", "init_scale", "loss", "orthograd"})


def _tuple_of(item: type) -> Callable[[Any], tuple[Any, ...]]:
    """A converter of ``"1,2,3"`` (or a tuple) to a tuple of ``item``; its name is the CLI's metavar."""

    def convert(value: Any) -> tuple[Any, ...]:
        parts = value if isinstance(value, (tuple, list)) else [v for v in str(value).split(",") if v.strip()]
        return tuple(item(v.strip() if isinstance(v, str) else v) for v in parts)

    convert.__name__ = f"{item.__name__}s"
    return convert


def _option_type(hint: Any, default: Any) -> Any:
    """The Option type of a field: int, float, str, bool, the strings of a Literal, a tuple converter; or None."""
    import typing

    origin, args = typing.get_origin(hint), typing.get_args(hint)
    if origin is typing.Literal and args and all(isinstance(a, str) for a in args):
        return tuple(args)
    items = {a for a in args if a is not Ellipsis}
    if origin is tuple and len(items) == 1 and items <= {int, float, str}:  # of one type
        return _tuple_of(args[0])
    if isinstance(hint, str):  # an annotation that did not resolve
        hint = {"bool": bool, "int": int, "float": float, "str": str}.get(hint)
    if hint in (bool, int, float, str):
        return hint
    if default is not MISSING and type(default) in (bool, int, float, str):
        return type(default)  # an unresolved annotation: the default's type
    return None


def _field_options(task: type) -> tuple[Option, ...]:
    """One option per task field the CLI can type (see :func:`command_from_fields`)."""
    import typing

    try:
        hints = typing.get_type_hints(task)
    except Exception:  # an annotation that does not resolve: fall back to the defaults' types
        hints = {}
    opts = []
    for f in fields(task):
        default = f.default_factory() if f.default_factory is not MISSING else f.default
        kind = _option_type(hints.get(f.name, f.type), default)
        if f.name not in TRAIN_OPTIONS and kind is not None:
            opts.append(Option(f.name, kind, None if default is MISSING else default))
    return tuple(opts)


def command_from_fields(task: type, help: str = "") -> Command:
    """The ``mechwork train KIND`` of a kit without its own :class:`Command`: one option per task field.

    A field becomes ``--name-with-dashes`` when its type is int, float, str, bool (``--flag true``), a
    ``Literal`` of strings (a choice) or a tuple of int, float or str (``--weights 1,2``); other fields keep
    their defaults, and so does a field named like a training option (``steps``, ``lr``, ``out``, ...).
    ``--seed`` sets the task's ``seed`` field when it has one. A non-finite float or a missing required
    field (one without a default) is refused in one line; ``--resume`` needs a required field again, with the
    run's value. A ``finite`` task also gets ``--batch-size`` (minibatches of its
    training split), unless it has a field of that name.
    """
    import math

    names = {f.name for f in fields(task)}
    opts = _field_options(task)
    required = [f.name for f in fields(task) if f.default is MISSING and f.default_factory is MISSING]

    def task_fields(values: dict[str, Any]) -> dict[str, Any]:
        return {k: v for k, v in values.items() if k in names and not (v is None and k in required)}

    def check(values: dict[str, Any]) -> None:
        for name in required:
            if values.get(name) is None:
                raise ConfigError(f"'--{name.replace('_', '-')}' is required by the {task.__name__} task")
        for o in opts:
            v = values.get(o.name)
            if isinstance(v, float) and not math.isfinite(v):
                raise invalid(o.name, "a finite number", v)

    extra = ("batch_size",) if getattr(task, "finite", False) and "batch_size" not in names else ()
    return Command(help or (task.__doc__ or "").strip().split("\n")[0], opts, fields=task_fields, check=check,
                   train_options=extra)
