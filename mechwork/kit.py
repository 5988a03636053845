"""The kit registry: how training, models, probes, the CLI and the dashboards find a task.

A *kit* gathers everything mechwork needs to know about one task, in the task's own module
(``mechwork/tasks/<kind>.py``, or a user's file):

* the task dataclass, whose data comes through one seam, ``task.batch(split, step)``
  (in the style of nanoGPT's ``get_batch(split)``);
* its presets (named model config + task) and the default model and recipe for any task of the kind;
* its standard probe (clean, corrupted, metric);
* ``analyse(source) -> Analysis``: every result its pages show, computed once.

Nothing outside a kit branches on the task's type: callers ask the registry for the kit of
``task.kind``.

The registry lives in the core, below :mod:`mechwork.tasks`, because a run directory (core) must
rebuild its task from ``config.json``. Built-in kits are named here by module path and imported on
first use, as a plugin's entry point would be; a user kit is registered with :func:`register`,
by naming its file or module in ``MECHWORK_KITS`` (``os.pathsep``-separated), or with the CLI's
``--kit FILE``.

Example::

    >>> from mechwork.kit import get_kit
    >>> get_kit("modadd").kind
    'modadd'
"""

from __future__ import annotations

from collections.abc import Callable, Mapping
from dataclasses import dataclass, field
from typing import TYPE_CHECKING, Any, ClassVar, Protocol, runtime_checkable

if TYPE_CHECKING:  # pragma: no cover
    from mechwork.models import ToyConfig
    from mechwork.training import TrainConfig

__all__ = ["BUILTIN", "Kit", "Task", "get_kit", "kinds", "register"]

# kind -> module that defines ``KIT`` (imported on first use)
BUILTIN: dict[str, str] = {"modadd": "mechwork.tasks.modadd", "induction": "mechwork.tasks.induction"}


@runtime_checkable
class Task(Protocol):
    """What training, models and analyses may assume of any task (a frozen dataclass)."""

    kind: ClassVar[str]

    @property
    def d_vocab(self) -> int: ...
    @property
    def d_vocab_out(self) -> int: ...
    @property
    def n_ctx(self) -> int: ...
    def to_dict(self) -> dict[str, Any]: ...
    def describe(self) -> str: ...


@dataclass(frozen=True)
class Kit:
    """Everything mechwork needs to know about one kind of task (see the module docstring)."""

    kind: str
    task: type  # the task dataclass; ``task(**fields)`` builds one
    model: Callable[[Any], ToyConfig]  # the default architecture for a task of this kind
    recipe: Callable[[Any], TrainConfig]  # the default training recipe
    probe: Callable[..., Any]  # probe(task, n=8, seed=0, **kw) -> Probe
    analyse: Callable[[Any], Any]  # analyse(source) -> Analysis
    presets: Mapping[str, Any] = field(default_factory=dict)  # name -> Preset
    description: str = ""


_REGISTRY: dict[str, Kit] = {}


def register(kit: Kit) -> Kit:
    """Add ``kit`` to the registry (a second kit of the same kind replaces the first)."""
    _REGISTRY[kit.kind] = kit
    return kit


def get_kit(kind: str) -> Kit:
    """The kit of ``kind``; an unknown kind is a one-line :class:`~mechwork.errors.ConfigError`."""
    if kind not in _REGISTRY and kind in BUILTIN:
        from importlib import import_module

        import_module(BUILTIN[kind])  # registers itself
    if kind not in _REGISTRY:
        from mechwork.errors import invalid

        raise invalid("task kind", f"one of {', '.join(kinds())}", kind)
    return _REGISTRY[kind]


def kinds() -> list[str]:
    """Every registered kind, built-in first."""
    return [*BUILTIN, *(k for k in _REGISTRY if k not in BUILTIN)]
