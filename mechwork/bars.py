"""Progress bars for the long commands (tqdm, on stderr); ``--quiet`` silences them.

Every command that can take more than a moment (``mechwork dashboard``,
``patch``, ``analyze``, ``info``, ``demo`` and the study scripts) runs inside
:func:`command`: one bar naming the command, the stage it is at, and the time
so far, which keeps ticking while a stage is busy (importing torch, loading a
model). The code a command calls names its stages with :func:`stage` and wraps
long loops in :func:`track` (or counts finished items with :func:`counter`),
which draw a second bar under the first. Outside a command (library use,
notebooks, the test suite's calls) all of these do nothing and print nothing.

* The bar appears only once a command has run for :data:`DELAY` seconds, so a
  command that is refused at once prints its one-line error and nothing else.
* On success the bar stays, reading ``done``; on an error it is cleared.
* ``--quiet``, or the environment variable ``MECHWORK_QUIET=1``, turns bars off.
* While a bar is on a terminal, lines the command prints to stdout are written
  above it rather than into it.

``train`` has its own per-step bar (see :func:`mechwork.training.train`); ``--quiet`` and
``MECHWORK_QUIET`` silence it too (:func:`silenced`).

Example::

    >>> from mechwork import bars
    >>> with bars.command("count", quiet=True):   # as with --quiet: no bar at all
    ...     bars.stage("adding")
    ...     sum(bars.track(range(4), "numbers"))
    6
"""

from __future__ import annotations

import contextlib
import functools
import os
import sys
import threading
import time
from collections.abc import Callable, Iterable, Iterator
from typing import IO, Any, TypeVar

__all__ = ["DELAY", "ENV", "active", "command", "counter", "quiet_option", "silenced", "stage", "track"]

T = TypeVar("T")
ENV = "MECHWORK_QUIET"
DELAY = 0.5  # seconds before a command's bar appears
TICK = 1.0  # seconds between redraws of the elapsed time on a terminal (TICK_LOG elsewhere: fewer log lines)
TICK_LOG = 10.0


def _env_quiet() -> bool:
    return os.environ.get(ENV, "").strip().lower() not in ("", "0", "false", "no")


def silenced(quiet: bool = False) -> bool:
    """Whether bars are off: ``quiet`` (the ``--quiet`` flag) or ``MECHWORK_QUIET`` set (for other bars, such as
    ``train``'s)."""
    return bool(quiet) or _env_quiet()


class _Bar:
    """One command's bar, drawn by a ticker thread after DELAY seconds."""

    def __init__(self, name: str) -> None:
        self.name, self.text = name, "starting"
        self.file: IO[str] = sys.stderr
        self.t0 = time.time()
        self.tqdm: Any = None
        self.closed = False
        self.lock = threading.RLock()
        self.done = threading.Event()
        self.thread = threading.Thread(target=self._tick, daemon=True, name="mechwork-progress")
        self.thread.start()

    def _tick(self) -> None:
        if self.done.wait(DELAY):
            return
        every = TICK if _isatty(self.file) else TICK_LOG
        while True:
            self.show()
            if self.done.wait(every):
                return

    def show(self) -> None:
        with self.lock:
            if self.closed:
                return
            if self.tqdm is None:
                from tqdm import tqdm

                self.tqdm = tqdm(total=None, desc=f"{self.name}: {self.text}", bar_format="{desc} [{elapsed}]",
                                 file=self.file, dynamic_ncols=True, leave=True)
                self.tqdm.start_t = self.t0  # the elapsed time counts from the command's start
            self.tqdm.set_description_str(f"{self.name}: {self.text}", refresh=False)
            self.tqdm.refresh()

    def set(self, text: str) -> None:
        with self.lock:
            self.text = text
            if self.tqdm is not None:
                self.show()

    def close(self, ok: bool) -> None:
        self.done.set()
        self.thread.join()
        with self.lock:
            if self.tqdm is not None:
                if ok:
                    self.tqdm.set_description_str(f"{self.name}: done", refresh=False)  # close() draws it
                else:
                    self.tqdm.leave = False  # an error follows: clear the bar, leave just the message
                self.tqdm.close()
            self.closed = True


_current: _Bar | None = None


def active() -> bool:
    """Whether a command's bar is running (so :func:`track` and :func:`counter` draw)."""
    return _current is not None


class _StdoutAbove:
    """stdout while a bar is on the same terminal: whole lines are written above the bars (clear, write, redraw)."""

    def __init__(self, raw: IO[str], bar_file: IO[str]) -> None:
        self._raw, self._bar_file, self._pending = raw, bar_file, ""

    def write(self, s: str) -> int:
        self._pending += s
        if "\n" in self._pending:
            lines, _, self._pending = self._pending.rpartition("\n")
            self._emit(lines + "\n")
        return len(s)

    def flush(self) -> None:
        if self._pending:
            text, self._pending = self._pending, ""
            self._emit(text)
        self._raw.flush()

    def _emit(self, text: str) -> None:
        from tqdm import tqdm

        with tqdm.external_write_mode(file=self._bar_file):
            self._raw.write(text)
            self._raw.flush()

    def __getattr__(self, name: str) -> Any:
        return getattr(self._raw, name)


@contextlib.contextmanager
def command(name: str, *, quiet: bool = False) -> Iterator[None]:
    """Run the block under a progress bar named ``name`` (nothing when ``quiet`` or ``MECHWORK_QUIET`` is set,
    or when a command's bar is already running)."""
    global _current
    if silenced(quiet) or _current is not None:
        yield
        return
    bar = _current = _Bar(name)
    raw = sys.stdout
    swap = raw is not None and bar.file is not None and _isatty(raw) and _isatty(bar.file)
    if swap:
        sys.stdout = _StdoutAbove(raw, bar.file)  # type: ignore[assignment]
    ok = False
    try:
        yield
        ok = True
    finally:
        _current = None
        bar.close(ok)
        if swap:
            proxy, sys.stdout = sys.stdout, raw
            if isinstance(proxy, _StdoutAbove) and proxy._pending:  # a line not yet ended goes out after the bar
                raw.write(proxy._pending)
                raw.flush()


def _isatty(f: Any) -> bool:
    try:
        return bool(f.isatty())
    except (AttributeError, ValueError):
        return False


def stage(text: str) -> None:
    """Name what the running command is doing now (nothing outside a command)."""
    if _current is not None:
        _current.set(text)


def track(items: Iterable[T], desc: str, total: int | None = None, unit: str = "it") -> Iterator[T]:
    """``items``, with a bar under the command's while they are consumed (just ``items`` outside a command)."""
    bar = _current
    if bar is None:
        yield from items
        return
    bar.show()  # the command's bar first, so that this one draws under it
    from tqdm import tqdm

    with tqdm(items, desc=desc, total=total, unit=unit, leave=False, file=bar.file, dynamic_ncols=True) as it:
        yield from it


@contextlib.contextmanager
def counter(desc: str, total: int, unit: str = "it") -> Iterator[Callable[[], None]]:
    """A function to call once per finished item, drawing a bar of ``total`` under the command's
    (a function that does nothing outside a command)."""
    bar = _current
    if bar is None or total <= 0:
        yield lambda: None
        return
    bar.show()
    from tqdm import tqdm

    with tqdm(total=total, desc=desc, unit=unit, leave=False, file=bar.file, dynamic_ncols=True) as t:
        yield lambda: t.update(1) and None


def quiet_option(f: Callable[..., Any]) -> Callable[..., Any]:
    """A click command's ``--quiet`` flag; the command's body runs under :func:`command`, named after the
    command (``dashboard``, ``analyze fourier``, ...). Put it directly above the ``def``."""
    import click

    @functools.wraps(f)
    def run(*args: Any, quiet: bool = False, **kwargs: Any) -> Any:
        ctx = click.get_current_context(silent=True)
        name = ctx.command_path.split(" ", 1)[-1] if ctx is not None else f.__name__
        with command(name, quiet=quiet):
            return f(*args, **kwargs)

    return click.option("--quiet", is_flag=True, help="no progress bar (bars go to stderr)")(run)
