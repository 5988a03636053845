"""A figure's long number lists as plotly.js typed arrays: the same numbers, a third of the bytes.

Figures built from ``tensor.tolist()`` carry float32 values written out as
float64 decimals, 17-20 characters each: a 113 x 113 heatmap is 230 KB of
JSON. plotly.js (since 2.28) also reads a *typed array*,
``{"dtype": "f4", "bdata": <base64 of little-endian bytes>, "shape": "113, 113"}``,
the form plotly.py itself writes for numpy arrays. :func:`pack_figure` rewrites
every list of floats in a figure's traces (and animation frames) that way,
without changing a single number:

* ``"f4"`` (5.3 characters a number) when every value is exactly a float32,
  ``"f8"`` (10.7) otherwise; so decoding gives back exactly the list;
* only lists of at least :data:`MIN_LENGTH` numbers, every one an ``int`` or
  ``float`` (a ``None``, a string or a bool leaves the list alone), with at
  least one non-integral float, and only when the result is shorter;
* a rectangular list of such lists becomes one 2-D array (``shape``);
* keys plotly.py leaves alone stay lists (``range`` and the map keys), and so
  does everything in ``layout``.

:func:`unpack` is the inverse, for tests and tools that read a page back.

Example::

    >>> from mechwork.dashboard.typedarrays import pack_figure, unpack
    >>> y = [i / 3 for i in range(32)]  # not float32 values: f8, still exact
    >>> z = [[(16 * r + c + 1) / 2**20 for c in range(16)] for r in range(3)]  # float32 values: f4
    >>> packed = pack_figure({"data": [{"type": "heatmap", "z": z}, {"y": y, "x": list(range(32))}], "layout": {}})
    >>> packed["data"][0]["z"]["dtype"], packed["data"][0]["z"]["shape"], packed["data"][1]["y"]["dtype"]
    ('f4', '3, 16', 'f8')
    >>> unpack(packed["data"][0]["z"]) == z and unpack(packed["data"][1]["y"]) == y
    True
    >>> packed["data"][1]["x"] == list(range(32))  # integers stay JSON (short already)
    True
    >>> pack_figure({"data": [{"y": [0.5, 0.25] * 8}]})["data"][0]["y"][:2]  # JSON is shorter here
    [0.5, 0.25]
"""

from __future__ import annotations

import base64
import math
from typing import Any

__all__ = ["MIN_LENGTH", "pack_figure", "pack_trace", "unpack"]

MIN_LENGTH = 16  # shorter lists gain little, and info arrays (ranges, domains) are shorter still
SKIPPED_KEYS = frozenset({"geojson", "layer", "layers", "range"})  # what plotly.py never turns into typed arrays
_DTYPES = {"f4": "<f4", "f8": "<f8"}


def _numbers(values: list[Any]) -> bool:
    return all(type(v) in (int, float) for v in values) and any(
        type(v) is float and not v.is_integer() for v in values)


def _typed(value: list[Any]) -> dict[str, str] | None:
    """``value`` as a typed array, or None when it is not a long list of numbers or would not be shorter."""
    import numpy as np

    rows: list[Any] = value
    shape = None
    if value and all(type(r) is list for r in value):  # 2-D: rectangular, every row numbers
        width = len(value[0])
        if width == 0 or any(len(r) != width for r in value):
            return None
        flat = [v for r in value for v in r]
        if not (all(type(v) in (int, float) for v in flat) and _numbers(flat)):
            return None
        rows, shape = flat, f"{len(value)}, {width}"
    elif not _numbers(value):
        return None
    if len(rows) < MIN_LENGTH or not all(math.isfinite(v) for v in rows):
        return None
    arr = np.asarray(rows, dtype=np.float64)
    f4 = arr.astype(np.float32)
    exact = bool(np.array_equal(f4.astype(np.float64), arr))
    dtype = "f4" if exact else "f8"
    data = (f4 if exact else arr).astype(_DTYPES[dtype]).tobytes()
    out = {"dtype": dtype, "bdata": base64.b64encode(data).decode("ascii")}
    if shape is not None:
        out["shape"] = shape
    plain = sum(len(repr(v)) + 1 for v in rows)  # JSON length of the list, near enough
    return out if len(out["bdata"]) < plain else None


def pack_trace(obj: Any) -> Any:
    """``obj`` (a trace, or anything inside one) with every eligible number list packed; a new object."""
    if isinstance(obj, dict):
        return {k: v if k in SKIPPED_KEYS else pack_trace(v) for k, v in obj.items()}
    if isinstance(obj, list):
        packed = _typed(obj)
        if packed is not None:
            return packed
        return [pack_trace(v) for v in obj]
    return obj


def pack_figure(spec: dict[str, Any]) -> dict[str, Any]:
    """A figure dict whose traces (and frames' traces) have their long float lists packed; layout unchanged."""
    out = dict(spec)
    out["data"] = [pack_trace(t) for t in spec.get("data") or []]
    if spec.get("frames"):
        out["frames"] = [{**f, "data": [pack_trace(t) for t in f.get("data") or []]} if isinstance(f, dict) else f
                         for f in spec["frames"]]
    return out


def unpack(value: Any) -> Any:
    """A typed array (``{"dtype", "bdata"[, "shape"]}``) as the list it encodes; anything else unchanged."""
    if not (isinstance(value, dict) and "bdata" in value and "dtype" in value):
        return value
    import numpy as np

    arr = np.frombuffer(base64.b64decode(value["bdata"]), dtype=_DTYPES.get(value["dtype"], value["dtype"]))
    if "shape" in value:
        arr = arr.reshape([int(s) for s in str(value["shape"]).split(",")])
    return arr.astype(np.float64).tolist() if arr.dtype.kind == "f" else arr.tolist()
