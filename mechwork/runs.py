"""Run directories: a training run as files, and ``load`` for runs and presets.

A run directory holds everything needed to rebuild, resume and analyse a run::

    RUN/
      config.json                       task, model, train, seed, package versions
      metrics.jsonl                     one JSON line per evaluation
      checkpoints/step_0000000.safetensors   weights only, dense early, sparse later
      resume.safetensors                weights + optimiser + filter state of the last checkpoint

Every file is written atomically (see :mod:`mechwork.io`); nothing is pickled.
``Run(path)`` reads a run; :func:`load` returns an eval-mode bridge model for a
run (any checkpointed step) or for a preset with embedded weights.

Example::

    >>> import mechwork
    >>> model = mechwork.load("modadd-113")          # embedded, offline
    >>> model.training
    False
"""

from __future__ import annotations

import json
import os
import re
import sys
from functools import cached_property
from importlib import resources
from pathlib import Path
from typing import TYPE_CHECKING, Any

import torch

from mechwork.errors import CheckpointError, ConfigError, RunDirError
from mechwork.io import atomic_open, load_json, load_tensors, save_tensors_atomic, write_json_atomic
from mechwork.models import PRESETS, ToyConfig, build_model, load_weights
from mechwork.tasks import Task, task_from_dict

if TYPE_CHECKING:  # pragma: no cover
    import pandas as pd
    from transformer_lens.model_bridge import TransformerBridge

__all__ = ["Run", "RunWriter", "embedded_path", "export", "load", "package_versions", "resolve"]

_CKPT = re.compile(r"^step_(\d{7,})\.safetensors$")


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
        """Refuse a non-empty ``path`` unless resuming or forcing; write nothing."""
        p = Path(path)
        if p.exists() and not p.is_dir():
            raise RunDirError(f"'--out' must be a directory (got file {str(p)!r})")
        nonempty = p.is_dir() and any(p.iterdir())
        if resume:
            if not (p / "config.json").is_file():
                raise RunDirError(f"cannot resume: {str(p)!r} is not a run directory (no config.json)")
        elif nonempty and not force:
            raise RunDirError(
                f"'--out' {str(p)!r} exists and is not empty; pass --resume to continue it or --force"
            )

    def start(self, config: dict[str, Any], *, force: bool) -> None:
        if force and self.path.is_dir():
            ckdir = self.path / "checkpoints"
            if ckdir.is_dir():
                for ck in ckdir.iterdir():
                    ck.unlink()
            for name in ("metrics.jsonl", "resume.safetensors", "config.json"):
                (self.path / name).unlink(missing_ok=True)
        (self.path / "checkpoints").mkdir(parents=True, exist_ok=True)
        write_json_atomic(config, self.path / "config.json")
        with atomic_open(self.path / "metrics.jsonl", "w"):
            pass

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
        save_tensors_atomic(weights, self.path / "checkpoints" / ckpt_name(step), {"step": str(step)})

    def save_resume(self, step: int, state: dict[str, torch.Tensor], meta: dict[str, Any]) -> None:
        save_tensors_atomic(
            state, self.path / "resume.safetensors", {"step": str(step), "meta": json.dumps(meta)}
        )

    def load_resume(self) -> tuple[int, dict[str, torch.Tensor], dict[str, Any]]:
        tensors, meta = load_tensors(self.path / "resume.safetensors")
        try:
            return int(meta["step"]), tensors, json.loads(meta["meta"])
        except (KeyError, ValueError) as e:
            raise CheckpointError(
                f"corrupt checkpoint {self.path / 'resume.safetensors'}: bad metadata ({e})"
            ) from None


def read_metrics_rows(path: Path) -> list[dict[str, Any]]:
    rows: list[dict[str, Any]] = []
    if not path.is_file():
        return rows
    for line in path.read_text().splitlines():
        try:
            rows.append(json.loads(line))
        except json.JSONDecodeError:
            continue  # a torn last line from a crash
    return rows


def embedded_path(name: str) -> Path:
    """Where the embedded weights of preset ``name`` live inside the package."""
    return Path(str(resources.files("mechwork") / "data" / f"{name}.safetensors"))


class Run:
    """A run directory, read-only.

    ``.steps`` lists checkpointed steps, ``.metrics`` is a DataFrame of
    ``metrics.jsonl``, ``.model_at(step)`` rebuilds the model at a checkpoint.
    """

    def __init__(self, path: str | os.PathLike[str]):
        self.path = Path(path)
        if not (self.path / "config.json").is_file():
            raise RunDirError(f"not a run directory (no config.json): {str(self.path)!r}")
        self.config: dict[str, Any] = load_json(self.path / "config.json")
        for key in ("task", "model", "train"):
            if key not in self.config:
                raise CheckpointError(f"{self.path / 'config.json'} has no '{key}' section")

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
        if step not in steps:
            near = min(steps, key=lambda s: abs(s - step))
            raise ConfigError(f"'step' must be a checkpointed step of {self.path} (got {step}; nearest {near})")
        return load_tensors(self.path / "checkpoints" / ckpt_name(step))[0]

    def model_at(self, step: int | None = None, device: torch.device | str | None = None) -> TransformerBridge:
        """The bridge model at ``step`` (default: the last checkpoint), in eval mode."""
        tensors = self.weights_at(step)
        model = build_model(self.model_config, device)
        load_weights(model, tensors, source=str(self.path))
        return model.eval()


def load(
    path_or_preset: str | os.PathLike[str], step: int | None = None, device: torch.device | str | None = None
) -> TransformerBridge:
    """An eval-mode bridge model from a run directory or a preset name.

    A preset loads the weights embedded in the package (offline, no download).
    """
    kind, key = resolve(path_or_preset)
    if kind == "preset":
        if step is not None:
            raise ConfigError(f"'step' must be None for preset {key!r} (got {step})")
        weights_file = embedded_path(key)
        if not weights_file.is_file():
            raise CheckpointError(
                f"preset {key!r} has no embedded weights ({weights_file}); train one with `mechwork train`"
            )
        meta = load_json(weights_file.with_suffix(".json"))
        model = build_model(ToyConfig.from_dict(meta["model"]), device)
        load_weights(model, load_tensors(weights_file)[0], source=str(weights_file))
        return model.eval()
    return Run(key).model_at(step, device)


def resolve(path_or_preset: str | os.PathLike[str]) -> tuple[str, str]:
    """``("preset", name)`` or ``("run", path)``; anything else is a one-line error.

    An existing path wins over a preset of the same name.
    """
    key = os.fspath(path_or_preset)
    if Path(key).exists():
        return "run", key
    if key in PRESETS:
        return "preset", key
    raise ConfigError(f"'path_or_preset' must be a run directory or one of {', '.join(PRESETS)} (got {key!r})")


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
    dest = Path(dest)
    step = run.steps[-1] if step is None else step
    weights_path, meta_path = dest.with_suffix(".safetensors"), dest.with_suffix(".json")
    save_tensors_atomic(run.weights_at(step), weights_path, {"step": str(step)})
    meta = {k: run.config[k] for k in ("task", "model", "train", "versions")}
    meta |= {"step": step, "summary": summary or {}, "command": command}
    if history is not None:
        meta["history"] = history
    write_json_atomic(meta, meta_path)
    return weights_path, meta_path
