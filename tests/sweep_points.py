"""Point functions for the sweep process tests (workers import them by name, with this folder on PYTHONPATH)."""

from __future__ import annotations

import os
import time
from pathlib import Path
from typing import Any


def sleepy_point(x: int, marks: str, sleep: float) -> dict[str, Any]:
    """Leave this worker's pid in ``marks`` (so a test knows the worker is inside a point), then sleep."""
    (Path(marks) / str(os.getpid())).touch()
    time.sleep(sleep)
    return {"x": x}
