"""Sweeps: a grid of parameters, run in parallel worker processes, resumable.

``sweep(fn, grid, out)`` calls ``fn(**point)`` for every point of the product
of ``grid`` (plus ``fixed`` keyword arguments). ``fn`` must be a module-level
function (workers import it by name) that returns a JSON-ready dict. Each
finished point is written atomically to ``out/points/<key>.json`` as it
arrives, so an interrupted sweep loses at most the points in flight, and a
rerun skips every finished point. A point that raised is recorded with its
error and retried on the next run. Workers are separate processes (``spawn``),
each with ``threads`` intra-op torch threads, so ``workers x threads`` should
not exceed the cores. Workers end with the process that runs the sweep, even
when it is killed with SIGKILL (see :mod:`mechwork.lifeline`).

With ``ray="host:port"`` (or ``"ray://host:port"``, ``"auto"``) the same
points run as Ray tasks on that cluster instead: see :mod:`mechwork.studies.raysweep`.
Points directory, resumption and results are the same.

Grid names are checked against ``fn``'s signature before anything runs: an
unknown name is a one-line error that lists the valid ones.

Example::

    >>> import tempfile
    >>> from mechwork.studies.sweep import sweep
    >>> res = sweep("mechwork.studies.sweep:_demo_point", {"x": [1, 2], "y": [10]}, tempfile.mkdtemp(), workers=1)
    >>> sorted(res.frame()["sum"].tolist())
    [11, 12]
"""

from __future__ import annotations

import hashlib
import inspect
import itertools
import json
import os
from collections.abc import Callable, Mapping, Sequence
from concurrent.futures import Future, ProcessPoolExecutor, as_completed
from dataclasses import dataclass
from multiprocessing import get_context
from pathlib import Path
from typing import TYPE_CHECKING, Any

from mechwork.bars import counter
from mechwork.errors import ConfigError, invalid
from mechwork.io import load_json, write_json_atomic
from mechwork.lifeline import init_worker
from mechwork.studies.points import resolve, run_point

if TYPE_CHECKING:  # pragma: no cover
    import pandas as pd

__all__ = ["SweepResult", "point_key", "sweep"]


def point_key(point: Mapping[str, Any]) -> str:
    """A stable name for a point: a hash of its sorted JSON."""
    text = json.dumps(dict(point), sort_keys=True, separators=(",", ":"))
    return hashlib.sha1(text.encode()).hexdigest()[:16]


def _check_grid(fn: Callable[..., Any], grid: Mapping[str, Sequence[Any]], fixed: Mapping[str, Any]) -> None:
    params = inspect.signature(fn).parameters
    takes_kwargs = any(p.kind is inspect.Parameter.VAR_KEYWORD for p in params.values())
    valid = [n for n, p in params.items() if p.kind in (p.POSITIONAL_OR_KEYWORD, p.KEYWORD_ONLY)]
    for source, names in (("grid", grid), ("fixed", fixed)):
        for name in names:
            if name not in valid and not takes_kwargs:
                raise ConfigError(f"'{source}' has an unknown parameter {name!r}; {fn.__name__} takes "
                                  f"{', '.join(valid)}")
    for name, values in grid.items():
        if isinstance(values, (str, bytes)) or not isinstance(values, Sequence) or len(values) == 0:
            raise invalid(f"grid[{name!r}]", "a non-empty list of values", values)
    both = set(grid) & set(fixed)
    if both:
        raise ConfigError(f"parameter(s) {sorted(both)} are both in the grid and fixed")


@dataclass
class SweepResult:
    """Every point of a sweep directory: parameters, results, errors."""

    path: Path
    ran: int  # points computed in this call
    skipped: int  # points already finished before this call
    keys: frozenset[str] | None = None  # the call's point files; None: every point in the directory

    def records(self) -> list[dict[str, Any]]:
        """The call's points (a directory reused with other settings keeps its other points out of this)."""
        files = sorted((self.path / "points").glob("*.json"))
        return [load_json(f) for f in files if self.keys is None or f.stem in self.keys]

    @property
    def errors(self) -> list[dict[str, Any]]:
        return [r for r in self.records() if "error" in r]

    def frame(self) -> pd.DataFrame:
        """One row per finished point: its parameters, then its result fields."""
        import pandas as pd

        rows = [{**r["params"], **r["result"], "seconds": r["seconds"]} for r in self.records() if "result" in r]
        return pd.DataFrame(rows)


def sweep(
    fn: str | Callable[..., Any],
    grid: Mapping[str, Sequence[Any]],
    out: str | os.PathLike[str],
    *,
    fixed: Mapping[str, Any] | None = None,
    workers: int = 2,
    threads: int = 1,
    ray: str | None = None,
    progress: Callable[[str], None] | None = None,
) -> SweepResult:
    """Run every point of ``grid`` not finished in ``out`` yet; see the module docstring."""
    fn_name, func = resolve(fn)
    fixed = dict(fixed or {})
    _check_grid(func, grid, fixed)
    if not isinstance(workers, int) or workers < 1:
        raise invalid("workers", "a positive number of processes", workers)
    if not isinstance(threads, int) or threads < 1:
        raise invalid("threads", "a positive number of threads per worker", threads)
    if ray is not None:  # an unreachable cluster fails here, before anything is written
        from mechwork.studies.raysweep import check_address

        check_address(ray)
    root = Path(out)
    (root / "points").mkdir(parents=True, exist_ok=True)
    write_json_atomic({"fn": fn_name, "grid": {k: list(v) for k, v in grid.items()}, "fixed": fixed},
                      root / "sweep.json")
    names = list(grid)
    points = [dict(zip(names, combo, strict=True)) for combo in itertools.product(*(grid[n] for n in names))]
    todo, skipped = [], 0
    for p in points:
        f = root / "points" / f"{point_key({**p, **fixed})}.json"
        if f.is_file() and "result" in load_json(f):
            skipped += 1
        else:
            todo.append((p, f))

    with counter("sweep points", len(todo), unit="point") as tick:  # a bar only inside a command

        def record(p: dict[str, Any], f: Path, res: dict[str, Any]) -> None:
            write_json_atomic({"params": p, **res}, f)
            tick()
            if progress is not None:
                status = res.get("error") or f"{res['seconds']:.1f} s"
                progress(f"{json.dumps(p, sort_keys=True)}: {status}")

        if ray is not None:
            from mechwork.studies.raysweep import run_ray

            run_ray(ray, fn_name, todo, fixed, threads, record)
        elif workers == 1:
            for p, f in todo:
                record(p, f, run_point(fn_name, {**p, **fixed}))
        elif todo:
            ctx = get_context("spawn")
            # workers die with this process, even when it is SIGKILLed (see mechwork.lifeline)
            with ProcessPoolExecutor(max_workers=workers, mp_context=ctx, initializer=init_worker,
                                     initargs=(threads, os.getpid())) as pool:
                futures: dict[Future[dict[str, Any]], tuple[dict[str, Any], Path]] = {
                    pool.submit(run_point, fn_name, {**p, **fixed}): (p, f) for p, f in todo}
                for fut in as_completed(futures):
                    record(*futures[fut], fut.result())
    return SweepResult(root, len(todo), skipped, frozenset(point_key({**p, **fixed}) for p in points))


def _demo_point(x: int, y: int) -> dict[str, Any]:
    """A tiny point function for the examples and tests."""
    return {"sum": x + y}
