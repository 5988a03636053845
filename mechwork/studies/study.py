"""What every study script shares: its command line, its output files, its page, and grokking runs as sweep points.

A study (``experiments/<name>.py``) is a thin script: it declares its grid,
runs it with :func:`mechwork.studies.sweep.sweep`, reduces the points to a small
``results`` dict with the anchor's numbers beside ours, and calls
:func:`finish`, which writes ``results.json`` (atomically) into the study's
directory and a dashboard to ``dashboards/<name>.html``.

* :func:`study_args` -- ``--quick``, ``--out``, ``--workers``, ``--dashboard``,
  ``--ray ADDRESS`` (points become Ray tasks on that cluster; see :mod:`mechwork.studies.raysweep`),
  ``--quiet`` (no progress bar and no line per finished point);
  ``--quick`` runs a reduced grid meant to finish in under 3 minutes here
  (and a hidden ``--smoke`` a tiny one, for the test suite).
* :func:`run_sweep` -- :func:`mechwork.studies.sweep.sweep` with the command line's
  ``--workers`` and ``--ray``, under a progress bar of finished points on stderr
  (see :mod:`mechwork.bars`); a point that failed stops the study (exit 1,
  one line) instead of leaving a verdict computed from fewer points.
* :func:`grok_point` -- one modular-arithmetic training run as a sweep point:
  steps to memorise (train acc >= 99%) and to grok (test acc >= the target),
  stopping early once grokked and held for ``hold`` evaluations.
* :func:`verdict_page` -- the page header every study dashboard starts with: the
  claim, the anchor, our numbers, and the verdict.

Example::

    >>> from mechwork.studies.study import grok_point
    >>> r = grok_point(p=23, op="add", train_frac=0.6, weight_decay=1.0, lr=1e-2, seed=0, steps=600)
    >>> r["memorised"] is not None and r["steps_run"] <= 600
    True
"""

from __future__ import annotations

import argparse
import os
from collections.abc import Mapping, Sequence
from pathlib import Path
from typing import Any

from mechwork.errors import invalid

__all__ = ["finish", "grok_point", "grokfast_point", "median_or_none", "pick_plan", "run_sweep", "study_args",
           "verdict_page"]


def study_args(name: str, doc: str, argv: Sequence[str] | None = None) -> argparse.Namespace:
    """The common command line; outputs default to ``runs/studies/<name>[-quick]`` and ``dashboards/``."""
    ap = argparse.ArgumentParser(prog=f"experiments/{name}.py", description=doc.splitlines()[0])
    ap.add_argument("--quick", action="store_true", help="the reduced grid (under 3 minutes on 2 cores)")
    ap.add_argument("--out", type=Path, default=None, help="study directory (points and results.json)")
    ap.add_argument("--dashboard", type=Path, default=None, help="dashboard file (default dashboards/<name>.html)")
    ap.add_argument("--workers", type=int, default=2, help="worker processes (one torch thread each)")
    ap.add_argument("--ray", metavar="ADDRESS", default=os.environ.get("MECHWORK_RAY_ADDRESS") or None,
                    help="run the sweep's points as Ray tasks on this cluster ('auto', 'ray://host:10001', ...; "
                         "default: $MECHWORK_RAY_ADDRESS, else local worker processes)")
    ap.add_argument("--quiet", action="store_true", help="no progress bar (stderr) and no line per finished point")
    ap.add_argument("--smoke", action="store_true", help=argparse.SUPPRESS)  # the test suite's tiny plan
    args = ap.parse_args(argv)
    args.study = name
    if args.workers < 1:
        ap.error(f"--workers must be >= 1 (got {args.workers})")
    if args.ray is not None:
        from mechwork.errors import ConfigError
        from mechwork.studies.raysweep import check_address

        try:
            check_address(args.ray)
        except ConfigError as e:
            ap.error(f"--ray: {e}")
    suffix = "-smoke" if args.smoke else "-quick" if args.quick else ""
    args.out = args.out or Path("runs/studies") / f"{name}{suffix}"
    args.dashboard = args.dashboard or Path("dashboards") / f"{name}{suffix}.html"
    if not args.dashboard.parent.is_dir():
        ap.error(f"--dashboard: directory {str(args.dashboard.parent)!r} does not exist")
    return args


def run_sweep(args: argparse.Namespace, fn: str, grid: Mapping[str, Sequence[Any]], out: Path | None = None, *,
              fixed: Mapping[str, Any] | None = None, progress: Any = print) -> Any:
    """Run a study's sweep into ``out`` (default ``args.out``) on the flags' backend; exit 1 if points failed.

    Unless ``args.quiet``, a bar on stderr counts the finished points and ``progress`` gets a line per point."""
    import sys

    from mechwork import bars
    from mechwork.studies.sweep import sweep

    quiet = bool(getattr(args, "quiet", False))
    with bars.command(getattr(args, "study", "study"), quiet=quiet):
        bars.stage(f"sweeping {fn}" + ("" if args.ray is None else f" on Ray at {args.ray}"))
        res = sweep(fn, grid, args.out if out is None else out, fixed=fixed, workers=args.workers, ray=args.ray,
                    progress=None if quiet else progress)
    if res.errors:  # a rerun retries them
        first = res.errors[0]["error"].strip().splitlines()[0]
        print(f"error: {len(res.errors)} point(s) of {fn} failed (a rerun retries them); the first: {first}",
              file=sys.stderr)
        raise SystemExit(1)
    return res


def grok_point(
    *,
    p: int,
    op: str,
    train_frac: float,
    weight_decay: float,
    lr: float,
    seed: int,
    steps: int,
    target: float = 0.99,
    hold: int = 2,
    eval_every: int = 50,
    grokfast_alpha: float | None = None,
    grokfast_lambda: float = 2.0,
    warmup_steps: int = 10,
    betas: tuple[float, float] = (0.9, 0.98),
    batch_size: int | None = None,
    n_layers: int = 1,
    normalization: str | None = None,
) -> dict[str, Any]:
    """Train one modular-arithmetic model; steps to memorise and to grok (None if not within ``steps``)."""
    from mechwork.models import ToyConfig
    from mechwork.tasks import ModularArithmetic
    from mechwork.training import TrainConfig, train

    task = ModularArithmetic(p=p, op=op, train_frac=train_frac, seed=seed)  # type: ignore[arg-type]  # validated
    cfg = TrainConfig(lr=lr, weight_decay=weight_decay, steps=steps, eval_every=eval_every, seed=seed,
                      warmup_steps=warmup_steps, betas=(float(betas[0]), float(betas[1])),
                      grokfast_alpha=grokfast_alpha, grokfast_lambda=grokfast_lambda, batch_size=batch_size)
    streak = {"n": 0}

    def stop(row: dict[str, Any]) -> bool:
        streak["n"] = streak["n"] + 1 if row["test_acc"] >= target else 0
        return streak["n"] >= hold

    model = ToyConfig.for_task(task, seed=seed, n_layers=n_layers, normalization=normalization)
    res = train(task, model, cfg, quiet=True, device="cpu", stop_when=stop)
    last = res.rows[-1]
    return {
        "memorised": res.first_step("train_acc", 0.99),
        "grokked": res.first_step("test_acc", target),
        "steps_run": int(last["step"]),
        "final_test_acc": float(last["test_acc"]),
        "final_train_acc": float(last["train_acc"]),
        "seconds": float(last["wall"]),
    }


def grokfast_point(*, variant: str, baseline_wd: float, filter_wd: float, **kw: Any) -> dict[str, Any]:
    """:func:`grok_point` as ``variant`` "baseline" (no filter, ``baseline_wd``) or "grokfast" (EMA alpha 0.98,
    lambda 2, ``filter_wd``), the pairing Lee et al. compare."""
    if variant not in ("baseline", "grokfast"):
        raise invalid("variant", "baseline or grokfast", variant)
    if variant == "baseline":
        return grok_point(grokfast_alpha=None, weight_decay=baseline_wd, **kw)
    return grok_point(grokfast_alpha=0.98, grokfast_lambda=2.0, weight_decay=filter_wd, **kw)


def median_or_none(values: Sequence[float | None]) -> float | None:
    """Median of the values that are not None (None if there are none)."""
    got = sorted(v for v in values if v is not None)
    if not got:
        return None
    mid = len(got) // 2
    return float(got[mid]) if len(got) % 2 else (got[mid - 1] + got[mid]) / 2


def verdict_page(title: str, claim: str, anchor: str, ours: str, verdict: str, command: str) -> Any:
    """A dashboard page opening with the claim, the anchor, our numbers and the verdict."""
    from mechwork.dashboard import Page

    if verdict.split(":")[0] not in ("reproduced", "partly reproduced", "not reproduced"):
        raise invalid("verdict", "'reproduced', 'partly reproduced' or 'not reproduced' (then ': why')", verdict)
    page = Page(title, subtitle=command)
    page.kv([("claim", claim), ("anchor", anchor), ("ours", ours), ("verdict", verdict)], title="Result")
    return page


def pick_plan(args: argparse.Namespace, full: Any, quick: Any, smoke: Any) -> Any:
    """The plan the flags ask for."""
    return smoke if args.smoke else quick if args.quick else full


def finish(args: argparse.Namespace, results: Mapping[str, Any], page: Any) -> None:
    """Write ``results.json`` and the dashboard; print where they went."""
    from mechwork.io import write_json_atomic

    path = Path(args.out) / "results.json"
    write_json_atomic(dict(results), path)
    page.save(args.dashboard)
    print(f"wrote {path} and {args.dashboard} ({os.path.getsize(args.dashboard):,} bytes)")
