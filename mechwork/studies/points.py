"""One sweep point: a point function found by its import name, called, and its result or error recorded.

Both sweep backends run points through :func:`run_point`: the local worker
processes of :mod:`mechwork.studies.sweep` and the Ray tasks of
:mod:`mechwork.studies.raysweep`. A point function is named ``"module:function"``
so that a worker (a fresh process, or a node of a cluster) can import it.

Example::

    >>> from mechwork.studies.points import run_point
    >>> run_point("mechwork.studies.sweep:_demo_point", {"x": 1, "y": 2})["result"]
    {'sum': 3}
"""

from __future__ import annotations

import importlib
import time
import traceback
from collections.abc import Callable, Mapping
from typing import Any

from mechwork.errors import invalid

__all__ = ["resolve", "run_point"]


def resolve(fn: str | Callable[..., Any]) -> tuple[str, Callable[..., Any]]:
    """``"module:function"`` (or a module-level function) -> (its import name, the function)."""
    if callable(fn):
        name = f"{fn.__module__}:{fn.__qualname__}"
        if "<" in fn.__qualname__ or fn.__module__ == "__main__":
            raise invalid("fn", "a module-level function of an importable module (workers import it by name)",
                          name)
        return name, fn
    if not isinstance(fn, str) or ":" not in fn:
        raise invalid("fn", "a function or a 'module:function' string", fn)
    module, _, attr = fn.partition(":")
    try:
        obj = getattr(importlib.import_module(module), attr)
    except (ImportError, AttributeError) as e:
        raise invalid("fn", "an importable 'module:function'", fn) from e
    return fn, obj


def run_point(fn_name: str, kwargs: dict[str, Any]) -> dict[str, Any]:
    """``{"result": ..., "seconds": ...}``, or ``{"error": ..., "traceback": ..., "seconds": ...}`` if it raised."""
    _, fn = resolve(fn_name)
    t0 = time.perf_counter()
    try:
        result = fn(**kwargs)
        if not isinstance(result, Mapping):
            raise TypeError(f"{fn_name} returned {type(result).__name__}, not a dict")
        return {"result": dict(result), "seconds": time.perf_counter() - t0}
    except Exception as e:  # recorded per point, and retried on the next run
        return {"error": f"{type(e).__name__}: {e}", "traceback": traceback.format_exc(),
                "seconds": time.perf_counter() - t0}
