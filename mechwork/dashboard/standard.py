"""What a standard dashboard is built from, and :func:`dashboard`, which picks one by task.

A :class:`Source` gathers, for a run directory or a preset, everything the
standard pages show: the eval-mode model, the task, the configs and, when
there is one, the training history (the metrics and, for modular arithmetic,
the progress measures). A run's history is read from its directory (progress
measures are computed over its checkpoints); a preset's comes from the JSON
beside its embedded weights. A preset with no history has ``metrics=None``,
and the pages say so instead of failing.

Example::

    >>> from mechwork.dashboard.standard import open_source
    >>> src = open_source("induction-2l")
    >>> src.kind, src.task.kind, len(src.metrics) > 10
    ('preset', 'induction', True)
"""

from __future__ import annotations

import os
from dataclasses import dataclass
from pathlib import Path
from typing import TYPE_CHECKING, Any, Literal

from mechwork.bars import stage
from mechwork.errors import ConfigError

if TYPE_CHECKING:  # pragma: no cover
    import pandas as pd
    from transformer_lens.model_bridge import TransformerBridge

    from mechwork.analysis.progress import ProgressMeasures
    from mechwork.dashboard.page import Page
    from mechwork.models import ToyConfig
    from mechwork.tasks import Task

__all__ = ["Source", "dashboard", "fourier_applies", "open_source"]


@dataclass(frozen=True)
class Source:
    """A run or preset, opened for a dashboard."""

    name: str  # the preset name, or the run directory as given
    kind: Literal["preset", "run"]
    task: Task
    model_config: ToyConfig
    model: TransformerBridge
    step: int | None  # the checkpoint shown (None: a preset's final weights)
    train: dict[str, Any] | None  # the training config, if known
    summary: dict[str, Any]  # the preset's stored summary ({} for a run)
    metrics: pd.DataFrame | None  # one row per evaluation, or None without history
    progress: ProgressMeasures | None  # modular arithmetic only, None without checkpoints


def open_source(
    run_or_preset: str | os.PathLike[str], *, step: int | None = None, device: str | None = None,
    progress: bool = True,
) -> Source:
    """Open a run directory or a preset; an unknown name is a one-line :class:`ConfigError`."""
    import pandas as pd

    from mechwork.models import ToyConfig, preset
    from mechwork.runs import Run, embedded_info, embedded_path, load, resolve

    kind, key = resolve(run_or_preset)
    if kind == "preset":
        pre = preset(key)
        info = embedded_info(key) if embedded_path(key).with_suffix(".json").is_file() else {}
        model = load(key, step=step, device=device)
        history = info.get("history") or {}
        metrics = pd.DataFrame(history["metrics"]) if "metrics" in history else None
        prog = None
        if progress and "progress" in history:
            from mechwork.analysis.progress import ProgressMeasures

            prog = ProgressMeasures.from_dict(history["progress"])
        return Source(key, "preset", pre.task, ToyConfig.from_dict(info.get("model", pre.model.to_dict())), model,
                      info.get("step"), info.get("train"), info.get("summary", {}), metrics, prog)
    run = Run(key)
    model = run.model_at(step, device)
    metrics = run.metrics
    metrics = metrics if len(metrics) else None
    prog = None
    if progress and run.task.kind == "modadd" and len(run.steps) >= 2 and fourier_applies(run.task, run.model_config):
        from mechwork.analysis.progress import progress_measures

        prog = progress_measures(run)
    return Source(key, "run", run.task, run.model_config, model, step if step is not None else run.steps[-1],
                  run.config["train"], {}, metrics, prog)


def fourier_applies(task: Task, cfg: ToyConfig) -> bool:
    """Whether the Fourier analyses (and so the progress measures) apply: add or sub, odd p, a model with an MLP."""
    from mechwork.analysis.fourier import FOURIER_OPS

    return getattr(task, "op", None) in FOURIER_OPS and getattr(task, "p", 0) % 2 == 1 and not cfg.attn_only


def dashboard(
    run_or_preset: str | os.PathLike[str],
    out: str | os.PathLike[str] | None = None,
    *,
    assets: str = "inline",
    step: int | None = None,
    device: str | None = None,
) -> Page:
    """The standard dashboard for the run's task; saved to ``out`` when given.

    ``--out`` is checked before any work is done, so a bad path costs nothing.
    """
    from mechwork.dashboard.page import ASSET_MODES

    if assets not in ASSET_MODES:
        raise ConfigError(f"'assets' must be one of {', '.join(ASSET_MODES)} (got {assets!r})")
    if out is not None:
        check_out(out)
    stage("loading the model and its history")  # progress bars: only inside a command (mechwork.bars)
    src = open_source(run_or_preset, step=step, device=device)
    stage(f"building the {src.task.kind} page")
    if src.task.kind == "modadd":
        from mechwork.dashboard.grokking import grokking_page

        page = grokking_page(src)
    elif src.task.kind == "induction":
        from mechwork.dashboard.induction import induction_page

        page = induction_page(src)
    else:  # pragma: no cover - every task kind has a page
        raise ConfigError(f"no standard dashboard for task kind {src.task.kind!r}")
    if out is not None:
        stage(f"writing {out}")
        page.save(out, assets=assets)
    return page


def check_out(out: str | os.PathLike[str]) -> None:
    """Refuse an output path whose directory is missing, before any work is done."""
    from mechwork.errors import OutputError

    p = Path(out)
    if p.is_dir():
        raise OutputError(f"dashboard path must be a file, not a directory (got {str(p)!r})")
    if not p.parent.is_dir():
        what = "is not a directory" if p.parent.exists() else "does not exist"
        raise OutputError(f"cannot write {str(p)!r}: directory {str(p.parent)!r} {what}")
    if p.suffix.lower() not in (".html", ".htm"):
        raise ConfigError(f"'out' must end in .html (got {str(p)!r})")
