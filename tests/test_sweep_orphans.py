"""Sweep worker processes die with their parent: a SIGKILLed sweep leaves no workers and no resource tracker."""

from __future__ import annotations

import os
import signal
import subprocess
import sys
import threading
import time
from pathlib import Path

import pytest

pytestmark = pytest.mark.skipif(not Path("/proc/self/stat").exists(), reason="reads processes from /proc")

# Generous bounds: these are waits for something to happen, not timings (the machine may be loaded).
START_BOUND_S = 600.0  # for the sweep to start its workers and their points (workers import torch)
EXIT_BOUND_S = 180.0  # for the orphans to go once the parent is gone (they go within about a second)


def _stat(pid: int) -> tuple[int, str, int] | None:
    """(parent pid, state, start time) of a process, or None if there is none."""
    try:
        text = Path(f"/proc/{pid}/stat").read_text()
    except (FileNotFoundError, ProcessLookupError, PermissionError):
        return None
    fields = text[text.rindex(")") + 2:].split()  # after "pid (comm) "
    return int(fields[1]), fields[0], int(fields[19])


def _cmdline(pid: int) -> str:
    try:
        return Path(f"/proc/{pid}/cmdline").read_bytes().replace(b"\0", b" ").decode(errors="replace")
    except (FileNotFoundError, ProcessLookupError, PermissionError):
        return ""


def _children(parent: int) -> dict[int, tuple[str, int]]:
    """Every live child of ``parent``: pid -> (command line, start time)."""
    out = {}
    for entry in Path("/proc").iterdir():
        if entry.name.isdigit():
            st = _stat(int(entry.name))
            if st is not None and st[0] == parent and st[1] != "Z":
                out[int(entry.name)] = (_cmdline(int(entry.name)), st[2])
    return out


def _alive(pid: int, start: int) -> bool:
    """The same process (not a reused pid) still exists and is not a zombie."""
    st = _stat(pid)
    return st is not None and st[2] == start and st[1] != "Z"


def _wait_for(cond, bound: float, what: str):
    deadline = time.monotonic() + bound
    while True:
        got = cond()
        if got:
            return got
        if time.monotonic() > deadline:
            pytest.fail(f"{what} not within {bound:.0f} s")
        time.sleep(0.2)


def test_sigkilled_sweep_leaves_no_workers_and_no_resource_tracker(tmp_path):
    marks = tmp_path / "marks"
    marks.mkdir()
    code = (
        "from mechwork.studies.sweep import sweep\n"
        f"sweep('sweep_points:sleepy_point', {{'x': [1, 2, 3, 4]}}, {str(tmp_path / 'sweep')!r},\n"
        f"      fixed={{'marks': {str(marks)!r}, 'sleep': 3600.0}}, workers=2)\n"
    )
    env = {**os.environ, "PYTHONPATH": os.pathsep.join([str(Path(__file__).parent),
                                                        os.environ.get("PYTHONPATH", "")])}
    parent = subprocess.Popen([sys.executable, "-c", code], stdin=subprocess.DEVNULL, env=env)
    try:
        def started() -> dict[int, tuple[str, int]] | None:
            kids = _children(parent.pid)
            workers = {p for p, v in kids.items() if "spawn_main" in v[0]}
            trackers = [p for p, v in kids.items() if "resource_tracker" in v[0]]
            inside = {int(m.name) for m in marks.iterdir()}  # workers that have started a point
            return kids if len(workers) == 2 and workers == inside and len(trackers) == 1 else None

        kids = _wait_for(started, START_BOUND_S, "two sweep workers inside their points, and a resource tracker")
    finally:
        os.kill(parent.pid, signal.SIGKILL)
        parent.wait()
    assert parent.returncode == -signal.SIGKILL
    try:
        _wait_for(lambda: not [p for p, (_, start) in kids.items() if _alive(p, start)], EXIT_BOUND_S,
                  f"the orphans {sorted(kids)} gone")
    finally:  # never leave them behind, whatever the outcome
        for pid, (_, start) in kids.items():
            if _alive(pid, start):
                os.kill(pid, signal.SIGKILL)
    # ... and the interrupted sweep recorded nothing for the points in flight
    assert list((tmp_path / "sweep" / "points").iterdir()) == []


def test_watchdog_notices_a_parent_that_is_gone():
    """The fallback where the kernel's parent-death signal is not available: a thread polling the parent pid."""
    from mechwork.lifeline import watch_parent

    fired = threading.Event()
    t = threading.Thread(target=watch_parent, args=(os.getppid() + 10**7, 0.05, fired.set), daemon=True)
    t.start()
    assert fired.wait(120.0)  # a bound on waiting, not a timing
    t.join(120.0)
    assert not t.is_alive()  # it stops once it has acted
    quiet = threading.Event()
    threading.Thread(target=watch_parent, args=(os.getppid(), 0.05, quiet.set), daemon=True).start()
    time.sleep(0.5)
    assert not quiet.is_set()  # the parent is alive: nothing happens
