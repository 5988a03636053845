"""Run directories: a training run as files, and ``load`` for runs, presets, model directories and bridges.

A run directory holds everything needed to rebuild, resume and analyse a run::

    RUN/
      config.json                       task, model, train, seed, package versions
      metrics.jsonl                     one JSON line per evaluation
      checkpoints/step_0000000.safetensors   weights only, dense early, sparse later
      resume.safetensors                weights + optimiser + filter state of the last checkpoint
      .lock, .lock.json                 the writers' lock, and who holds it (pid, host, command)

Every file is written atomically (see :mod:`mechwork.io`); nothing is pickled;
every safetensors file carries a content hash that is checked on load.
A writer (training, resuming, exporting) holds the directory's exclusive lock;
a second writer is refused with one line naming the holder.
``Run(path)`` reads a run and checks its ``config.json`` strictly (complete
task, model and train sections of valid types: nothing falls back to a
default); :func:`load` returns an eval-mode bridge model for a run (any
checkpointed step), a preset with embedded weights, a directory saved with
``save_pretrained`` (booted offline) or a ``TransformerBridge`` given as is.

Example::

    >>> import mechwork
    >>> model = mechwork.load("modadd-113")          # embedded, offline
    >>> model.training
    False
"""

from __future__ import annotations

import dataclasses
import json
import os
import re
import socket
import sys
import tempfile
import time
from collections.abc import Iterator
from contextlib import contextmanager, suppress
from functools import cached_property
from pathlib import Path
from typing import TYPE_CHECKING, Any

from mechwork.atomic import atomic_open, load_json, write_json_atomic
from mechwork.errors import CheckpointError, ConfigError, RunBusyError, RunDirError, invalid
from mechwork.kit import HOW_TO_LOAD, Task, get_kit, kinds, load_env_kits, task_from_dict
from mechwork.limits import (
    accepted,
    check_checkpoints_dir,
    check_step,
    classify_dir,
    embedded_file,
    missing_detail,
    no_config_detail,
)
from mechwork.models import PRESETS, ToyConfig, boot_directory, build_model, is_bridge, load_weights, resolve_device
from mechwork.trainconfig import TrainConfig

if TYPE_CHECKING:  # pragma: no cover (torch loads when a model or checkpoint is read or written)
    import pandas as pd
    import torch
    from transformer_lens.model_bridge import TransformerBridge

__all__ = ["Run", "RunWriter", "embedded_path", "export", "load", "package_versions", "resolve", "run_lock"]

_CKPT = re.compile(r"^step_(\d{7,})\.safetensors$")
LOCK_NAME, LOCK_INFO = ".lock", ".lock.json"
_OWN_FILES = ("config.json", "metrics.jsonl", "resume.safetensors")  # mechwork's files at the top of a run


def ckpt_name(step: int) -> str:
    return f"step_{step:07d}.safetensors"


def package_versions() -> dict[str, str]:
    from importlib.metadata import PackageNotFoundError, version

    out = {"python": sys.version.split()[0]}
    for pkg in ("mechwork", "torch", "transformer-lens", "safetensors"):
        try:
            out[pkg] = version(pkg)
        except PackageNotFoundError:  # pragma: no cover - running from a source tree
            out[pkg] = "unknown"
    return out


class RunWriter:
    """Writes one run directory. Used by :func:`mechwork.training.train`."""

    def __init__(self, path: str | os.PathLike[str]):
        self.path = Path(path)

    @staticmethod
    def check_target(path: str | os.PathLike[str], *, resume: bool, force: bool) -> None:
        """Refuse a non-empty ``path`` unless resuming or forcing, or one we cannot write; write nothing."""
        p = Path(path)
        if p.exists() and not p.is_dir():
            raise RunDirError(f"'--out' must be a directory (got file {str(p)!r})")
        _check_writable(p)
        if resume or force:
            check_checkpoints_dir(p)
        nonempty = p.is_dir() and any(f.name not in (LOCK_NAME, LOCK_INFO) for f in p.iterdir())
        if resume:
            if not (p / "config.json").is_file():
                raise RunDirError(f"cannot resume: {str(p)!r} is not a run directory (no config.json)")
        elif nonempty and not force:
            raise RunDirError(
                f"'--out' {str(p)!r} exists and is not empty; pass --resume to continue it or --force"
            )

    def start(self, config: dict[str, Any], *, force: bool) -> list[str]:
        """Begin a fresh run; with ``force``, first delete mechwork's own files (only those).

        Returns what ``force`` left in place: the entries mechwork did not
        write (paths relative to the run, folders ending in ``/``).
        """
        kept = self.clear() if force else []
        (self.path / "checkpoints").mkdir(parents=True, exist_ok=True)
        write_json_atomic(config, self.path / "config.json")
        with atomic_open(self.path / "metrics.jsonl", "w"):
            pass
        return kept

    def clear(self) -> list[str]:
        """Delete mechwork's own files in the run (config, metrics, checkpoints, resume state,
        leftovers of interrupted atomic writes); keep everything else and return its names."""

        def own(name: str, names: tuple[str, ...], pattern: re.Pattern[str] | None = None) -> bool:
            base = name[len(".tmp-"):].rsplit(".", 1)[0] if name.startswith(".tmp-") else name
            return base in names or bool(pattern and pattern.match(base))

        kept: list[str] = []
        if not self.path.is_dir():
            return kept
        for f in sorted(self.path.iterdir()):
            if f.name in (LOCK_NAME, LOCK_INFO, "checkpoints") and (f.name != "checkpoints" or f.is_dir()):
                continue
            if f.is_file() and own(f.name, _OWN_FILES):
                f.unlink()
            else:
                kept.append(f.name + ("/" if f.is_dir() else ""))
        ckdir = self.path / "checkpoints"
        if ckdir.is_dir():
            for f in sorted(ckdir.iterdir()):
                if f.is_file() and own(f.name, (), _CKPT):
                    f.unlink()
                else:
                    kept.append(f"checkpoints/{f.name}" + ("/" if f.is_dir() else ""))
        return kept

    def lock(self, command: str | None = None) -> RunLock:
        """The run directory's exclusive writer lock (a context manager; refuses if it is held)."""
        return RunLock(self.path, command)

    def update_config(self, config: dict[str, Any]) -> None:
        write_json_atomic(config, self.path / "config.json")

    def truncate_metrics(self, last_step: int) -> None:
        """Drop metric rows newer than ``last_step`` (written after the last checkpoint)."""
        rows = read_metrics_rows(self.path / "metrics.jsonl")
        with atomic_open(self.path / "metrics.jsonl", "w") as f:
            for r in rows:
                if r["step"] <= last_step:
                    f.write(json.dumps(r) + "\n")

    def log(self, row: dict[str, Any]) -> None:
        # One short line per append: a crash can only lose a trailing partial
        # line, which read_metrics_rows skips and resume truncates.
        with open(self.path / "metrics.jsonl", "a") as f:
            f.write(json.dumps(row) + "\n")

    def checkpoint(self, step: int, weights: dict[str, torch.Tensor]) -> None:
        from mechwork.io import save_tensors_atomic

        save_tensors_atomic(weights, self.path / "checkpoints" / ckpt_name(step), {"step": str(step)})

    def save_resume(self, step: int, state: dict[str, torch.Tensor], meta: dict[str, Any]) -> None:
        from mechwork.io import save_tensors_atomic

        save_tensors_atomic(
            state, self.path / "resume.safetensors", {"step": str(step), "meta": json.dumps(meta)}
        )

    def load_resume(self) -> tuple[int, dict[str, torch.Tensor], dict[str, Any]]:
        from mechwork.io import load_tensors

        tensors, meta = load_tensors(self.path / "resume.safetensors")
        try:
            return int(meta["step"]), tensors, json.loads(meta["meta"])
        except (KeyError, ValueError) as e:
            raise CheckpointError(
                f"corrupt checkpoint {self.path / 'resume.safetensors'}: bad metadata ({e})"
            ) from None


def read_metrics_rows(path: Path) -> list[dict[str, Any]]:
    """The rows of ``metrics.jsonl``, checked: one line naming the file and line for a bad row.

    Each row must be a JSON object with an integer ``step`` >= 0, steps must
    increase, and every other value must be a number (or null). Only a torn
    last line (a crash mid-append; resume rewrites the file) is skipped.
    """
    rows: list[dict[str, Any]] = []
    if (path.exists() or path.is_symlink()) and not path.is_file():
        what = "a directory" if path.is_dir() else "a broken symlink" if path.is_symlink() else "not a regular file"
        raise CheckpointError(f"{str(path)!r} must be a metrics file (got {what})")
    if not path.is_file():
        return rows
    try:
        lines = path.read_text().splitlines()
    except UnicodeDecodeError:
        raise CheckpointError(f"corrupt metrics {path}: not UTF-8 text") from None
    last = -1
    for i, line in enumerate(lines, 1):
        if not line.strip():
            continue
        where = f"corrupt metrics {path} line {i}:"
        try:
            row = json.loads(line)
        except json.JSONDecodeError:
            if i == len(lines):
                continue  # a torn last line from a crash
            raise CheckpointError(f"{where} not JSON") from None
        if not isinstance(row, dict):
            raise CheckpointError(f"{where} a row must be a JSON object (got {type(row).__name__})")
        step = row.get("step")
        if isinstance(step, bool) or not isinstance(step, int) or step < 0:
            raise CheckpointError(f"{where} 'step' must be an integer >= 0 (got {step!r})")
        if step <= last:
            raise CheckpointError(f"{where} step {step} follows step {last} (rows must be in increasing step order)")
        for k, v in row.items():
            if v is not None and (isinstance(v, bool) or not isinstance(v, (int, float))):
                raise CheckpointError(f"{where} {k!r} must be a number (got {v!r})")
        rows.append(row)
        last = step
    return rows


def _check_writable(p: Path) -> None:
    """Refuse a run directory we cannot create or write into (nothing is written to find out)."""
    probe = p
    while not probe.exists():
        if probe.parent == probe:
            break
        probe = probe.parent
    what = "is not writable" if probe == p else f"cannot be created ({str(probe)!r} is not writable)"
    if not probe.is_dir():
        raise RunDirError(f"'--out' {str(p)!r} cannot be created ({str(probe)!r} is a file)")
    try:  # an unnamed temporary file: the only honest test of writability (root ignores modes)
        with tempfile.TemporaryFile(dir=probe):
            pass
    except OSError:
        raise RunDirError(f"'--out' {str(p)!r} {what}") from None
    ck = p / "checkpoints"
    if ck.is_dir():
        try:
            with tempfile.TemporaryFile(dir=ck):
                pass
        except OSError:
            raise RunDirError(f"'--out' {str(p)!r} is not writable ({str(ck)!r} is read-only)") from None


class RunLock:
    """The exclusive writer lock of a run directory (``RUN/.lock``, held with ``flock``).

    Taking it writes ``RUN/.lock.json`` (pid, host, command, since) so that a
    second writer is refused with one line naming the holder; the OS frees
    the lock when its holder exits, even on SIGKILL. If nothing else was
    written, releasing removes the lock file (and the directory, if taking
    the lock created it).

    >>> import tempfile
    >>> d = tempfile.mkdtemp()
    >>> with RunLock(d, "first"):
    ...     try:
    ...         RunLock(d, "second").acquire()
    ...     except RunBusyError as e:
    ...         print(str(e).split(" by pid")[0].endswith("is in use"), "'first'" in str(e))
    True True
    """

    def __init__(self, path: str | os.PathLike[str], command: str | None = None):
        self.path = Path(path)
        self.command = command if command is not None else " ".join(sys.argv)
        self._lock: Any = None
        self._created = False

    def acquire(self) -> RunLock:
        from filelock import FileLock, Timeout

        self._created = not self.path.exists()
        try:
            self.path.mkdir(parents=True, exist_ok=True)
        except OSError as e:
            raise RunDirError(f"'--out' {str(self.path)!r} cannot be created ({e.strerror})") from None
        lock = FileLock(str(self.path / LOCK_NAME), timeout=0)
        try:
            lock.acquire()
        except Timeout:
            raise RunBusyError(_holder_message(self.path)) from None
        self._lock = lock
        info = {"pid": os.getpid(), "host": socket.gethostname(), "command": self.command,
                "since": time.strftime("%Y-%m-%d %H:%M:%S %Z")}
        try:
            write_json_atomic(info, self.path / LOCK_INFO)
        except BaseException:
            self.release()
            raise
        return self

    def release(self) -> None:
        if self._lock is None:
            return
        lock, self._lock = self._lock, None
        (self.path / LOCK_INFO).unlink(missing_ok=True)
        empty = not any(f.name != LOCK_NAME for f in self.path.iterdir())
        if empty:  # nothing was written: leave no trace (a run's lock file stays, for its next writer)
            (self.path / LOCK_NAME).unlink(missing_ok=True)
        lock.release()
        if empty and self._created:
            with suppress(OSError):  # someone else is using it now
                self.path.rmdir()

    def __enter__(self) -> RunLock:
        return self.acquire() if self._lock is None else self

    def __exit__(self, *exc: object) -> None:
        self.release()


def _holder_message(path: Path) -> str:
    info: dict[str, Any] = {}
    for _ in range(20):  # the holder writes .lock.json just after taking the lock
        try:
            loaded = json.loads((path / LOCK_INFO).read_text())
        except (OSError, ValueError):
            time.sleep(0.05)
            continue
        if isinstance(loaded, dict):
            info = loaded
        break
    if not info:
        return f"run directory {str(path)!r} is in use by another process (no {LOCK_INFO}); wait for it to finish"
    command = " ".join(str(info.get("command", "?")).split())
    if len(command) > 160:
        command = command[:157] + "..."
    return (
        f"run directory {str(path)!r} is in use by pid {info.get('pid', '?')} on {info.get('host', '?')}"
        f" since {info.get('since', '?')} ({command!r}); wait for it to finish"
    )


@contextmanager
def run_lock(path: str | os.PathLike[str], command: str | None = None) -> Iterator[RunLock]:
    """Hold the writer lock of the run directory ``path`` for a ``with`` block."""
    with RunLock(path, command) as lock:
        yield lock


def embedded_path(name: str) -> Path:
    """Where the embedded weights of preset ``name`` live inside the package."""
    return embedded_file(name)


class Run:
    """A run directory, read-only.

    ``.steps`` lists checkpointed steps, ``.metrics`` is a DataFrame of
    ``metrics.jsonl``, ``.model_at(step)`` rebuilds the model at a checkpoint.
    """

    def __init__(self, path: str | os.PathLike[str]):
        if not isinstance(path, (str, os.PathLike)) or not isinstance(os.fspath(path), str):
            raise ConfigError(f"'path' must be a run directory (a str or path; got {path!r})")
        self.path = Path(path)
        if not (self.path / "config.json").is_file():
            raise RunDirError(f"not a run directory (no config.json): {str(self.path)!r}")
        self.config: dict[str, Any] = load_json(self.path / "config.json")
        self._check_config()

    def _check_config(self) -> None:
        """Every field of the task, model and train sections present and valid; one line if not."""
        where = self.path / "config.json"
        if not isinstance(self.config, dict):
            raise CheckpointError(f"bad run config {where}: must hold a JSON object (got {type(self.config).__name__})")
        for key in ("task", "model", "train"):
            if key not in self.config:
                raise CheckpointError(f"{where} has no '{key}' section")
            if not isinstance(self.config[key], dict):
                got = type(self.config[key]).__name__
                raise CheckpointError(f"bad run config {where}: '{key}' must be a JSON object (got {got})")
        kind = self.config["task"].get("kind")
        if isinstance(kind, str) and kind not in kinds():
            load_env_kits()
        if isinstance(kind, str) and kind not in kinds():
            # the file is fine; the command lacks the run's kit: a bad invocation (exit 2), not a bad file
            raise invalid("task.kind", f"one of {', '.join(kinds())}, or the kind of {HOW_TO_LOAD}", kind)
        cls = get_kit(kind).task if isinstance(kind, str) and kind in kinds() else None
        needs: dict[str, set[str]] = {
            "task": {"kind"} | ({f.name for f in dataclasses.fields(cls)} if cls is not None else set()),
            "model": set(ToyConfig.__dataclass_fields__),
            "train": set(TrainConfig.__dataclass_fields__),
        }
        for key, fields in needs.items():
            missing = sorted(fields - set(self.config[key]))
            if missing:
                raise CheckpointError(
                    f"bad run config {where}: '{key}' lacks {missing} (a run's config must be complete;"
                    " no defaults are assumed)"
                )
        build = {"task": task_from_dict, "model": ToyConfig.from_dict, "train": TrainConfig.from_dict}
        built: dict[str, Any] = {}
        for key, make in build.items():
            try:
                built[key] = make(self.config[key])
            except (ConfigError, TypeError, ValueError) as e:
                msg = str(e).replace("\n", " ")
                raise CheckpointError(f"bad run config {where}: {key}: {msg}") from None
        self.__dict__["task"], self.__dict__["model_config"] = built["task"], built["model"]
        self.train_config = built["train"]

    def __repr__(self) -> str:
        return f"Run({str(self.path)!r}, steps={len(self.steps)})"

    @cached_property
    def task(self) -> Task:
        return task_from_dict(self.config["task"])

    @cached_property
    def model_config(self) -> ToyConfig:
        return ToyConfig.from_dict(self.config["model"])

    @property
    def steps(self) -> list[int]:
        d = self.path / "checkpoints"
        found = (_CKPT.match(f.name) for f in d.iterdir()) if d.is_dir() else iter(())
        return sorted(int(m.group(1)) for m in found if m)

    @property
    def metrics(self) -> pd.DataFrame:
        import pandas as pd

        return pd.DataFrame(read_metrics_rows(self.path / "metrics.jsonl"))

    def weights_at(self, step: int | None = None) -> dict[str, torch.Tensor]:
        steps = self.steps
        if not steps:
            raise CheckpointError(f"no checkpoints in {self.path / 'checkpoints'}")
        step = steps[-1] if step is None else step
        if isinstance(step, bool) or not isinstance(step, int):
            raise ConfigError(f"'step' must be an integer checkpointed step of {self.path} or None (got {step!r})")
        if step not in steps:
            near = min(steps, key=lambda s: abs(s - step))
            raise ConfigError(f"'step' must be a checkpointed step of {self.path} (got {step}; nearest {near})")
        from mechwork.io import load_tensors

        return load_tensors(self.path / "checkpoints" / ckpt_name(step))[0]

    def model_at(self, step: int | None = None, device: torch.device | str | None = None,
                 light: bool = False) -> TransformerBridge:
        """The bridge model at ``step`` (default: the last checkpoint), in eval mode; with ``light``, a
        :class:`~mechwork.hookedtoy.HookedToy` when it reproduces the run's config (see :func:`load`)."""
        return _toy_model(self.model_config, self.weights_at(step), str(self.path), device, light)


def _toy_model(cfg: ToyConfig, tensors: dict[str, torch.Tensor], source: str, device: torch.device | str | None,
               light: bool) -> Any:
    """``cfg``'s model holding ``tensors``, in eval mode: a HookedToy when ``light`` and it reproduces ``cfg``,
    else the bridge."""
    if light:
        from mechwork.hookedtoy import HookedToy, reproduces

        if reproduces(cfg):
            toy = HookedToy(cfg, device)
            load_weights(toy, tensors, source=source)  # type: ignore[arg-type]  # the same parameter names
            return toy.eval()
    model = build_model(cfg, device)
    load_weights(model, tensors, source=source)
    return model.eval()


def load(
    path_or_preset: str | os.PathLike[str] | TransformerBridge | object, step: int | None = None,
    device: torch.device | str | None = None, *, light: bool = False,
) -> TransformerBridge:
    """An eval-mode bridge model from a preset name, a run directory, a ``save_pretrained`` directory or a bridge.

    A preset loads the weights embedded in the package (offline, no download); a run its last checkpoint (or
    ``step``); a model directory boots through TransformerLens's bridge from local files only
    (:func:`mechwork.models.boot_directory`); a ``TransformerBridge`` is returned as it is, in eval mode (moved
    to ``device`` when one is given). Anything else is one line naming what is accepted.

    ``light=True`` gives a preset's or run's model as a :class:`~mechwork.hookedtoy.HookedToy` (the same weights
    and hook points, without importing TransformerLens) when it reproduces its config; a model directory, a bridge
    or another config still comes as the bridge.
    """
    if is_bridge(path_or_preset):
        if step is not None:
            raise ConfigError(f"'step' must be None for a TransformerBridge: it holds one set of weights (got {step})")
        model: Any = path_or_preset
        return (model if device is None else model.to(resolve_device(device))).eval()
    kind, key = resolve(path_or_preset)
    if kind == "model":
        check_step("model", key, step)
        return boot_directory(key, device)
    if kind == "preset":
        if step is not None:
            raise ConfigError(f"'step' must be None for preset {key!r} (got {step})")
        weights_file = embedded_path(key)
        if not weights_file.is_file():
            raise CheckpointError(
                f"preset {key!r} has no embedded weights ({weights_file}); train one with `mechwork train`"
            )
        from mechwork.io import load_tensors

        meta = load_json(weights_file.with_suffix(".json"))
        return _toy_model(ToyConfig.from_dict(meta["model"]), load_tensors(weights_file)[0], str(weights_file),
                          device, light)
    return Run(key).model_at(step, device, light)


def resolve(path_or_preset: str | os.PathLike[str] | object) -> tuple[str, str]:
    """``("preset", name)``, ``("run", path)`` or ``("model", path)`` (a ``save_pretrained`` directory); anything
    else is a one-line error.

    An existing path wins over a preset of the same name. A directory without config.json, or whose
    config.json is neither a run's nor a model's, is refused; one that cannot be read is left to :class:`Run`.
    """
    valid = f"'path_or_preset' must be {accepted(list(PRESETS), bridge=True)}"
    if not isinstance(path_or_preset, (str, os.PathLike)):
        got = repr(path_or_preset)
        if len(got) > 80 or "\n" in got:  # a model or a module: its repr is many lines
            got = f"a {type(path_or_preset).__name__}"
        raise ConfigError(f"{valid} (got {got})")
    key = os.fspath(path_or_preset)
    if not isinstance(key, str):
        raise ConfigError(f"{valid} (got {key!r})")
    key = os.path.expanduser(key) if key.startswith("~") else key
    if Path(key).exists():
        if not (Path(key) / "config.json").is_file():
            raise RunDirError(f"not a run directory (no config.json): {key!r}{no_config_detail(key)}; give "
                              f"{accepted(list(PRESETS), bridge=True)}")
        return classify_dir(key), key
    if key in PRESETS:
        return "preset", key
    raise ConfigError(f"{valid} (got {key!r}{missing_detail(key)})")


def embedded_info(name: str) -> dict[str, Any]:
    """The JSON that ships beside a preset's embedded weights."""
    return load_json(embedded_path(name).with_suffix(".json"))


def export(
    run: Run,
    dest: str | os.PathLike[str],
    *,
    step: int | None = None,
    summary: dict[str, Any] | None = None,
    command: str | None = None,
    history: dict[str, Any] | None = None,
) -> tuple[Path, Path]:
    """Write one checkpoint of ``run`` as ``DEST.safetensors`` + ``DEST.json``.

    This is how the embedded presets are made; the JSON carries the run's
    configs, the step, a summary, the command that regenerates it and,
    optionally, a ``history`` (the metrics and progress measures, for dashboards).
    """
    from mechwork.io import save_tensors_atomic

    dest = Path(dest)
    with _lock_unless_read_only(run.path, command):  # no writer may change the run while it is exported
        step = run.steps[-1] if step is None else step
        weights_path, meta_path = dest.with_suffix(".safetensors"), dest.with_suffix(".json")
        save_tensors_atomic(run.weights_at(step), weights_path, {"step": str(step)})
        meta = {k: run.config[k] for k in ("task", "model", "train", "versions")}
        meta |= {"step": step, "summary": summary or {}, "command": command}
        if history is not None:
            meta["history"] = history
        write_json_atomic(meta, meta_path)
    return weights_path, meta_path


@contextmanager
def _lock_unless_read_only(path: Path, command: str | None) -> Iterator[None]:
    """The run's writer lock; a run directory we cannot write is read as it is (no writer of ours can change it)."""
    if not os.access(path, os.W_OK | os.X_OK):
        yield
        return
    with RunLock(path, command):
        yield
