"""Worker processes that end with the process that started them, however it ends (SIGKILL included).

:func:`mechwork.studies.sweep.sweep` starts its workers with :func:`init_worker`. Its
first act, before torch is imported, is :func:`die_with_parent`:

* on Linux the kernel is asked to send the worker SIGKILL when its parent
  dies (``prctl(PR_SET_PDEATHSIG, SIGKILL)``, through ctypes);
* a parent that died before that request was made is caught by comparing
  ``os.getppid()`` with the pid the parent passed down;
* a daemon thread polls the parent pid once a second (:func:`watch_parent`):
  the fallback where the kernel's signal is not available.

With every worker gone, the multiprocessing resource tracker sees the last
writer of its pipe close, cleans up, and exits too. Nothing here imports torch,
so a worker is armed within moments of starting.

Example (a watchdog for a parent pid that is not ours fires at once)::

    >>> import os, threading
    >>> from mechwork.lifeline import watch_parent
    >>> fired = threading.Event()
    >>> watch_parent(os.getppid() + 10**7, 0.01, fired.set)
    >>> fired.is_set()
    True
"""

from __future__ import annotations

import os
import signal
import sys
import threading
import time
from collections.abc import Callable
from typing import Any

__all__ = ["die_with_parent", "init_worker", "watch_parent"]

_PR_SET_PDEATHSIG = 1  # <linux/prctl.h>


def watch_parent(parent: int, interval: float, on_orphan: Callable[[], Any]) -> None:
    """Poll the parent pid every ``interval`` seconds; once it is not ``parent`` (the parent is gone), call
    ``on_orphan`` and return."""
    while os.getppid() == parent:
        time.sleep(interval)
    on_orphan()


def _kill_self() -> None:
    os.kill(os.getpid(), signal.SIGKILL)


def die_with_parent(parent: int, *, interval: float = 1.0) -> None:
    """End this process (SIGKILL) as soon as ``parent`` (its parent's pid, passed down) is gone."""
    if sys.platform.startswith("linux"):
        import contextlib
        import ctypes

        with contextlib.suppress(OSError, AttributeError):  # a libc without prctl: the watchdog remains
            ctypes.CDLL(None, use_errno=True).prctl(_PR_SET_PDEATHSIG, int(signal.SIGKILL), 0, 0, 0)
    if os.getppid() != parent:  # the parent died before the signal was armed
        _kill_self()
    threading.Thread(target=watch_parent, args=(parent, interval, _kill_self), daemon=True,
                     name="mechwork-parent-watchdog").start()


def init_worker(threads: int, parent: int | None = None) -> None:
    """A sweep worker's initializer: die with ``parent`` (when given), then use ``threads`` torch threads."""
    if parent is not None:
        die_with_parent(parent)
    import torch

    torch.set_num_threads(threads)
