"""The kit registry: how training, models, probes, the CLI and the dashboards find a task.

A *kit* gathers everything mechwork needs to know about one kind of task, in the task's own module
(``mechwork/tasks/<kind>.py``, or a user's file): the task dataclass, whose data comes through one seam,
``task.batch(split, step)`` (as nanoGPT's ``get_batch(split)``); its presets; the default model and recipe;
its standard probe; ``analyse(source) -> Analysis`` (every result its pages show, computed once); what
``mechwork info`` says of its runs and the options of ``mechwork train KIND`` (by default one per typed task
field, :mod:`mechwork.kitcommand`). Nothing outside a kit branches on the task's type.

The registry is core, below :mod:`mechwork.tasks`, because a run directory must rebuild its task from
``config.json``; built-in kits are named here by module path and imported on first use, as plugins. A user
kit is loaded, before the command, with ``--kit FILE`` (a file or module that calls :func:`register`),
``--task path/to/file.py:KitName`` (:func:`load_task`: registers that Kit object of the file),
``MECHWORK_KITS`` (``os.pathsep``-separated files or modules; read by Python too, on the first kind it does
not know) or :func:`load_kits`. A file loads once; a built-in kind cannot be taken; a run whose kit is not
loaded is refused in one line saying how to load it. Training evaluates ``task.eval_splits`` (default
``("test",)``); the first one other than ``"train"`` is the held-out split the summaries read
(:func:`held_out`). This module imports no torch: the CLI reads it before deciding whether torch is needed.

Example::

    >>> from mechwork.kit import get_kit
    >>> kit = get_kit("modadd")
    >>> kit.kind, sorted(kit.presets)
    ('modadd', ['modadd-113'])
    >>> kit.model(kit.task(p=7)).d_vocab
    8
"""

from __future__ import annotations

import os
from collections.abc import Callable, Mapping
from dataclasses import dataclass, field, fields, replace
from pathlib import Path
from typing import TYPE_CHECKING, Any, ClassVar, Protocol, runtime_checkable

from mechwork.errors import ConfigError, check_known_fields, invalid
from mechwork.kitcheck import check_protocol, check_task, one_line, reported
from mechwork.kitcommand import Command, Option, command_from_fields

if TYPE_CHECKING:  # pragma: no cover
    import pandas as pd
    import torch
    from jaxtyping import Bool, Int
    from torch import Tensor

__all__ = [
    "BUILTIN", "Batch", "Command", "Kit", "Option", "Preset", "Probe", "Task", "all_presets", "find_preset",
    "get_kit", "held_out", "kinds", "kit_of", "load_env_kits", "load_kits", "load_task", "register",
    "task_from_dict",
]

# kind -> module that defines ``KIT`` (imported on first use)
BUILTIN: dict[str, str] = {"modadd": "mechwork.tasks.modadd", "induction": "mechwork.tasks.induction"}
ENV = "MECHWORK_KITS"  # os.pathsep-separated .py files or module names, loaded by the CLI


# -- what a kit hands out ---------------------------------------------------------------------
@dataclass(frozen=True)
class Batch:
    """Tokens, next-token targets and the mask of positions the loss counts."""

    tokens: Int[Tensor, "batch pos"]
    targets: Int[Tensor, "batch pos"]
    mask: Bool[Tensor, "batch pos"]

    def __len__(self) -> int:
        return int(self.tokens.shape[0])

    def to(self, device: torch.device | str) -> Batch:
        return Batch(self.tokens.to(device), self.targets.to(device), self.mask.to(device))


@dataclass(frozen=True)
class Probe:
    """A task's standard patching experiment: clean and corrupted prompts, and a metric of the logits."""

    clean: Tensor
    corrupted: Tensor
    metric: Callable[[Tensor], Tensor]
    description: str


@dataclass(frozen=True)
class Preset:
    """A named architecture with the task it was built for."""

    name: str
    model: Any  # a mechwork.models.ToyConfig
    task: Any
    description: str


@runtime_checkable
class Task(Protocol):
    """What training, models and analyses may assume of any task (a frozen dataclass).

    Optional class attributes, read with ``getattr`` and a default: ``eval_splits`` (``("test",)``: the
    held-out splits training evaluates); ``finite`` (False: the ``"train"`` split is one fixed dataset, which
    training minibatches when ``TrainConfig.batch_size`` is set); ``fast_path`` (False: inputs are ``[a, b, =]``
    with the loss at the last position, so :mod:`mechwork.fastpath` may train it).
    """

    kind: ClassVar[str]

    @property
    def d_vocab(self) -> int: ...
    @property
    def d_vocab_out(self) -> int: ...
    @property
    def n_ctx(self) -> int: ...
    def batch(self, split: str, step: int = 0) -> Batch: ...
    def to_dict(self) -> dict[str, Any]: ...
    def describe(self) -> str: ...


# -- the kit --------------------------------------------------------------------------------
def generic_batch_line(task: Any, train: Mapping[str, Any]) -> str:
    """How each training step's batch was drawn, for the recipe line of ``mechwork info``."""
    if not getattr(task, "finite", False):
        return "a fresh batch per step"
    size = train.get("batch_size")
    return "full batch" if size is None else f"minibatches of {size}"


def held_out(task: Any) -> str:
    """The split training's summary line reads: the task's first eval split other than ``"train"``.

    >>> from mechwork.tasks import ModularArithmetic
    >>> held_out(ModularArithmetic(p=7))
    'test'
    """
    return next((s for s in getattr(task, "eval_splits", ("test",)) if s != "train"), "train")


def generic_history_lines(task: Any, df: pd.DataFrame) -> list[str]:
    """The last and best accuracy on the held-out split (:func:`held_out`) of a metrics table."""
    split = held_out(task)
    col = f"{split}_acc"
    if df is None or col not in df or not len(df):
        return []
    best = int(df[col].idxmax())
    return [f"{split} acc {df[col].iloc[-1]:.2%} at step {int(df['step'].iloc[-1])}; best "
            f"{df[col].loc[best]:.2%} at step {int(df['step'].loc[best])}"]


def generic_embedded_lines(kit: Kit, task: Any, meta: Mapping[str, Any]) -> list[str]:
    """Result lines of a preset's embedded model, from the history stored beside its weights."""
    import pandas as pd

    hist = (meta.get("history") or {}).get("metrics")
    return kit.history_lines(task, pd.DataFrame(hist)) if hist else []


@dataclass(frozen=True)
class Kit:
    """Everything mechwork needs to know about one kind of task (see the module docstring)."""

    kind: str
    task: type  # the task dataclass; ``task(**fields)`` builds one
    model: Callable[[Any], Any]  # model(task) -> ToyConfig: the default architecture for a task of this kind
    recipe: Callable[[Any], Any]  # recipe(task) -> TrainConfig: the default training recipe
    probe: Callable[..., Probe]  # probe(task, n=8, seed=0, **kw): the standard patching experiment
    analyse: Callable[[Any], Any]  # analyse(source) -> Analysis: every result, computed once
    presets: Mapping[str, Preset] = field(default_factory=dict)  # name -> Preset
    description: str = ""
    command: Command | None = None  # options of `mechwork train KIND`; None: one per task field
    batch_line: Callable[[Any, Mapping[str, Any]], str] = generic_batch_line  # (task, train dict)
    history_lines: Callable[[Any, Any], list[str]] = generic_history_lines  # (task, metrics DataFrame)
    embedded: Callable[[Any, Mapping[str, Any]], list[str]] | None = None  # (task, preset JSON)

    def embedded_lines(self, task: Any, meta: Mapping[str, Any]) -> list[str]:
        """What ``mechwork info PRESET`` says of the embedded model's results (``meta``: its JSON)."""
        return self.embedded(task, meta) if self.embedded is not None else generic_embedded_lines(self, task, meta)

    def train_command(self) -> Command:
        return self.command or command_from_fields(self.task, self.description)

    def build_task(self, values: Mapping[str, Any], *, check: bool = True) -> Any:
        """``task(**values)``; whatever the task's constructor raises is a one-line ConfigError.

        With ``check``, a user kit's task is tried before anything is trained: its batches, its model
        and its recipe (:func:`check_task`).
        """
        try:
            task = self.task(**values)
        except ConfigError:
            raise
        except Exception as e:  # a user's task validates its fields as it likes
            raise ConfigError(f"bad {self.kind} task: {one_line(e)}") from None
        if check and self.kind not in BUILTIN:
            check_task(self, task)
        return task


_REGISTRY: dict[str, Kit] = {}
_PASSED: dict[str, tuple[Kit, Kit]] = {}  # kind -> (the registered kit, the Kit given to register)


def register(kit: Kit) -> Kit:
    """Add ``kit`` to the registry (a second kit of the same kind replaces the first); returns the registered kit.

    A user kit's ``analyse`` and ``probe`` come back wrapped: an error they raise (but a MechworkError) is a
    one-line ConfigError naming the kit, the error and where it was raised, chained to the original.
    """
    if not isinstance(kit, Kit):
        raise invalid("kit", "a mechwork.kit.Kit", type(kit).__name__)
    if getattr(kit.task, "kind", None) != kit.kind:
        raise ConfigError(f"kit {kit.kind!r}: its task class {kit.task.__name__} must have kind = {kit.kind!r} "
                          f"(got {getattr(kit.task, 'kind', None)!r})")
    if kit.kind in BUILTIN and getattr(kit.task, "__module__", None) != BUILTIN[kit.kind]:
        raise ConfigError(f"kit kind {kit.kind!r} is built in; give your kit (and its task's kind) another name")
    check_protocol(kit)
    wrapped = kit if kit.kind in BUILTIN else replace(  # a user's analyse or probe that fails is one line
        kit, analyse=reported(kit.kind, "analyse", kit.analyse), probe=reported(kit.kind, "probe", kit.probe))
    _REGISTRY[kit.kind], _PASSED[kit.kind] = wrapped, (wrapped, kit)
    return wrapped


HOW_TO_LOAD = (f"a kit loaded with --kit FILE or --task FILE.py:KIT (before the command), {ENV}=FILE or "
               "mechwork.kit.load_kits(FILE)")


def get_kit(kind: str) -> Kit:
    """The kit of ``kind``; an unknown kind is a one-line :class:`~mechwork.errors.ConfigError`.

    A kind not registered yet is looked for in the kits named by ``MECHWORK_KITS`` (loaded once, on the
    first miss), so a script run with that variable set opens its runs without calling :func:`load_kits`.
    """
    if kind not in _REGISTRY and isinstance(kind, str) and kind in BUILTIN:
        from importlib import import_module

        import_module(BUILTIN[kind])  # registers itself
    if kind not in _REGISTRY:
        load_env_kits()
    if kind not in _REGISTRY:
        raise invalid("task kind", f"one of {', '.join(kinds())}, or the kind of {HOW_TO_LOAD}", kind)
    return _REGISTRY[kind]


def kit_of(task: Any) -> Kit:
    """The kit of ``task`` (by its ``kind``); anything else is a one-line ConfigError naming the task classes.

    >>> kit_of(None)
    Traceback (most recent call last):
    mechwork.errors.ConfigError: 'task' must be a ModularArithmetic or InductionTask (got 'NoneType')
    """
    kind = getattr(task, "kind", None)
    kit = get_kit(kind) if isinstance(kind, str) and kind in kinds() else None
    if kit is None or not isinstance(task, kit.task):
        names = [get_kit(k).task.__name__ for k in kinds()]
        valid = " or ".join([", ".join(names[:-1]), names[-1]] if len(names) > 1 else names)
        raise invalid("task", f"a {valid}", type(task).__name__)
    return kit


def kinds() -> list[str]:
    """Every registered kind, built-in first."""
    return [*BUILTIN, *(k for k in _REGISTRY if k not in BUILTIN)]


def task_from_dict(d: Mapping[str, Any]) -> Any:
    """Rebuild a task from its ``to_dict()`` (as stored in ``config.json``), through its kit."""
    d = dict(d)
    kind = d.pop("kind", None)
    if isinstance(kind, str) and kind not in kinds():
        load_env_kits()
    if not isinstance(kind, str) or kind not in kinds():
        raise invalid("task.kind", f"one of {', '.join(kinds())}, or the kind of {HOW_TO_LOAD}", kind)
    kit = get_kit(kind)
    check_known_fields(d, kit.task, f"{kind} task")
    tuples = {f.name for f in fields(kit.task) if isinstance(f.default, tuple) or "tuple" in str(f.type).lower()}
    return kit.build_task({k: tuple(v) if k in tuples and isinstance(v, list) else v for k, v in d.items()},
                          check=False)


def all_presets() -> dict[str, Preset]:
    """Every registered kit's presets, built-in kits first (loads the built-in kits and those of MECHWORK_KITS)."""
    load_env_kits()
    return {name: pre for kind in kinds() for name, pre in get_kit(kind).presets.items()}


def registered_presets() -> list[str]:
    """The preset names of the kits registered so far (imports nothing)."""
    return [name for kit in _REGISTRY.values() for name in kit.presets]


def find_preset(name: str) -> Preset:
    """The preset ``name`` of any kit; a one-line ConfigError names the valid ones."""
    presets = all_presets()
    if name not in presets:
        raise invalid("preset", f"one of {', '.join(presets)}", name)
    return presets[name]


# -- user kits ------------------------------------------------------------------------------
_ENV_LOADED: list[str] = []  # the MECHWORK_KITS values loaded so far
_FILES: dict[Path, Any] = {}  # a kit file loaded already (resolved path) -> its module


def load_env_kits() -> list[str]:
    """Load the kits named by ``MECHWORK_KITS`` (once per value of the variable); returns the kinds registered.

    A kit that cannot be loaded is a one-line ConfigError that starts with ``MECHWORK_KITS:``.
    """
    spec = os.environ.get(ENV, "")
    if not spec.strip() or spec in _ENV_LOADED:
        return []
    try:
        loaded = load_kits(spec)
    except ConfigError as e:  # not marked loaded: the next kind it is asked for says this again
        raise ConfigError(f"{ENV}: {e}") from None
    _ENV_LOADED.append(spec)
    return loaded


def load_kits(spec: str | None) -> list[str]:
    """Import every kit named in ``spec`` (``os.pathsep``-separated ``.py`` files or module names).

    Returns the kinds they registered. A file or module is loaded once, however often it is named (as an
    import is). A file that does not exist, a module that cannot be imported, one that raises or one that
    registers no kit is a one-line :class:`~mechwork.errors.ConfigError`.
    """
    before = {k: id(kit) for k, kit in _REGISTRY.items()}
    for item in (s.strip() for s in (spec or "").split(os.pathsep)):
        if item:
            _load_one(item)
    return [k for k, kit in _REGISTRY.items() if before.get(k) != id(kit)]


def _load_one(item: str) -> None:
    before = set(map(id, _REGISTRY.values()))
    if item.endswith(".py") or os.sep in item:
        if not (path := Path(item)).is_file():
            why = "a directory" if path.is_dir() else "no such file"
            raise ConfigError(f"'kit' must be a .py file or a module name (got {item!r}: {why})")
        if path.resolve() in _FILES:
            return  # loaded already: its kits are registered
    module = _imported(item, "kit")
    registered = set(map(id, _REGISTRY.values()))
    if registered == before and not any(id(v) in registered for v in vars(module).values()):  # holds no kit
        kits = [k for k, v in vars(module).items() if isinstance(v, Kit) and not k.startswith("_")]
        hint = f", or name its Kit with --task {item}:{kits[0]}" if kits else ""
        raise ConfigError(f"kit {item!r} registered no kit (call mechwork.kit.register(Kit(...)) in it{hint})")


def load_task(spec: str) -> str:
    """Register the :class:`Kit` named ``Name`` in ``path/to/file.py:Name`` (the CLI's ``--task``); returns its kind.

    The file is imported once (as by ``--kit``); a kit it registered itself is not registered again. A missing
    file, a name it does not define (its Kit objects are named) or no Kit is a one-line ConfigError.
    """
    file, sep, name = str(spec).rpartition(":")
    if not sep or not file or not name.isidentifier():
        raise invalid("task", "path/to/file.py:KitName", spec)
    if not Path(file).is_file():
        raise ConfigError(f"task file {file!r} {'is not a file' if Path(file).exists() else 'does not exist'}")
    defined = vars(_imported(file, "task file", path=True))
    if name not in defined:
        kits = ", ".join(k for k, v in defined.items() if isinstance(v, Kit) and not k.startswith("_")) or "none"
        raise ConfigError(f"{file} does not define {name!r} (the Kit objects it defines: {kits})")
    kit = defined[name]
    if not isinstance(kit, Kit):
        raise ConfigError(f"{file}:{name} must be a mechwork.Kit (got {type(kit).__name__})")
    now, (was, given) = _REGISTRY.get(kit.kind), _PASSED.get(kit.kind, (None, None))
    if now is not kit and not (now is was and given is kit):  # not registered by the file itself
        register(kit)
    return kit.kind


def _imported(item: str, what: str, *, path: bool = False) -> Any:
    """The module ``item`` (a .py file, or with ``path``); whatever it raises but a ConfigError is one line."""
    import importlib.util
    import sys

    try:
        if not (path or item.endswith(".py") or os.sep in item):
            return importlib.import_module(item)
        if (file := Path(item).resolve()) not in _FILES:  # a user's file: a module of its own, imported once
            name = f"mechwork_user_kit_{file.stem}"
            while name in sys.modules:  # another file of the same name
                name += "_"
            spec = importlib.util.spec_from_file_location(name, file)
            if spec is None or spec.loader is None:
                raise ConfigError(f"cannot import {item!r} as Python")
            sys.modules[name] = module = importlib.util.module_from_spec(spec)
            try:
                spec.loader.exec_module(module)
            except BaseException:
                del sys.modules[name]
                raise
            _FILES[file] = module
        return _FILES[file]
    except ConfigError:
        raise
    except Exception as e:  # a user's file: any error it raises is reported in one line
        msg = f"{type(e).__name__}: {e}".replace("\n", " ")
        raise ConfigError(f"cannot load {what} {item!r}: {msg}") from None
