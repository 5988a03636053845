"""One error family for mechwork.

Every error mechwork raises on purpose is a :class:`MechworkError`. The
subclasses also inherit from the builtin a Python user would expect, so
``except ValueError`` still catches a bad argument::

    >>> from mechwork.errors import ConfigError, MechworkError
    >>> try:
    ...     raise ConfigError("'p' must be an integer >= 3 (got 2)")
    ... except ValueError as e:
    ...     isinstance(e, MechworkError)
    True

Messages follow one shape: ``'<name>' must be <what is valid> (got <value>)``,
so a CLI can print them as its one-line error.
"""

from __future__ import annotations

__all__ = [
    "AssetError",
    "CheckpointError",
    "ConfigError",
    "ExportError",
    "MechworkError",
    "NonFiniteError",
    "NotApplicable",
    "OutputError",
    "PostError",
    "RunBusyError",
    "RunDirError",
    "check_known_fields",
    "invalid",
]


class MechworkError(RuntimeError):
    """Base class of every error mechwork raises on purpose."""


class ConfigError(MechworkError, ValueError):
    """A configuration value or argument is out of its valid range."""


class RunDirError(MechworkError, FileExistsError):
    """A run directory cannot be used as asked (exists, is not a run, ...)."""


class RunBusyError(RunDirError):
    """Another process holds the run directory's lock (it is training or writing into it)."""


class NonFiniteError(MechworkError, FloatingPointError):
    """Training reached a NaN or inf loss or weight and stopped; the run keeps its last finite checkpoint.

    ``step`` is the step where it was found, ``last_checkpoint`` the last
    finite checkpointed step written (None without a run directory).
    """

    def __init__(self, message: str, step: int, last_checkpoint: int | None):
        super().__init__(message)
        self.step, self.last_checkpoint = step, last_checkpoint

    def __reduce__(self) -> tuple[type, tuple[str, int, int | None]]:  # survives a sweep worker's pickling
        return type(self), (str(self), self.step, self.last_checkpoint)


class CheckpointError(MechworkError, OSError):
    """A checkpoint or embedded model file is missing, truncated or corrupt."""


class OutputError(MechworkError, OSError):
    """An output file (a dashboard, say) cannot be written where asked; nothing was written."""


class NotApplicable(MechworkError, ValueError):
    """The analysis does not apply to this task (only add and sub have Fourier circuits)."""


class AssetError(MechworkError, FileNotFoundError):
    """A JavaScript bundle that should ship inside an installed package is missing."""


class PostError(ConfigError):
    """A post cannot be rendered as written: the message is one line, ``FILE:LINE: what is wrong; what is valid``."""


class ExportError(MechworkError, RuntimeError):
    """Figures cannot be exported as images here (no Chromium, no playwright, or the browser failed)."""


def invalid(name: str, valid: str, got: object) -> ConfigError:
    """Build the standard one-line :class:`ConfigError`.

    >>> str(invalid("p", "a prime >= 3", 12))
    "'p' must be a prime >= 3 (got 12)"
    """
    return ConfigError(f"'{name}' must be {valid} (got {got!r})")


def check_counts(**counts: object) -> None:
    """Refuse any count (steps, batch size, ...) that is not a positive integer.

    >>> check_counts(steps=0)
    Traceback (most recent call last):
    mechwork.errors.ConfigError: 'steps' must be a positive integer (got 0)
    """
    for name, v in counts.items():
        if isinstance(v, bool) or not isinstance(v, int) or v < 1:
            raise invalid(name, "a positive integer", v)


def check_known_fields(d: dict[str, object], cls: type, what: str) -> None:
    """Refuse keys of ``d`` that are not fields of the dataclass ``cls``.

    >>> from dataclasses import dataclass
    >>> @dataclass
    ... class C:
    ...     a: int = 0
    >>> check_known_fields({"b": 1}, C, "C")
    Traceback (most recent call last):
    mechwork.errors.ConfigError: unknown C fields ['b']; valid: ['a']
    """
    names = set(getattr(cls, "__dataclass_fields__", {}))
    unknown = set(d) - names
    if unknown:
        raise ConfigError(f"unknown {what} fields {sorted(unknown)}; valid: {sorted(names)}")
