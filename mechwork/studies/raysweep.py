"""The sweep runner's Ray backend: every sweep point becomes one Ray task on an existing cluster.

:func:`mechwork.studies.sweep.sweep` runs points in local worker processes by default.
Given ``ray=ADDRESS`` (the studies' ``--ray ADDRESS``, or the environment
variable ``MECHWORK_RAY_ADDRESS``) it hands the same points to this module,
which submits each as a Ray task and records results as they finish, so the
points directory, resumption and retries behave exactly as with local
workers. A task runs the same :func:`~mechwork.studies.points.run_point` with the same torch thread
count, so for the same seeds the results are identical to the local backend's on
nodes of the same kind of machine (determinism holds on one machine at one thread
count, not across machines).

Addresses:

* ``"host:port"`` -- a cluster's head (its GCS port, 6379 by default);
* ``"ray://host:10001"`` -- Ray Client, for a cluster reached from outside;
* ``"auto"`` -- the cluster ``ray start`` last started on this machine.

A ``host:port`` or ``ray://`` address is first checked with a plain TCP
connection (``connect_timeout`` seconds), so an unreachable cluster is a
one-line :class:`~mechwork.errors.ConfigError` within that time rather than
Ray's own retry loop, which waits for minutes. For a loopback address the
driver also tells Ray to stay on loopback (Ray otherwise swaps 127.0.0.1 for
the machine's network address, where a head bound to 127.0.0.1 is not
listening).

Ray is an optional extra (``pip install 'mechwork[ray]'``); every node needs
mechwork installed, because a task imports its point function by name.

Example (no cluster needed: an unreachable address fails fast)::

    >>> from mechwork.errors import ConfigError
    >>> from mechwork.studies.raysweep import check_address
    >>> try:
    ...     check_address("127.0.0.1:1", connect_timeout=2.0)
    ... except ConfigError as e:
    ...     print(str(e).split(" (")[0])
    cannot reach a Ray cluster at '127.0.0.1:1'
"""

from __future__ import annotations

import os
import socket
import sys
from collections.abc import Callable
from pathlib import Path
from typing import Any

from mechwork.errors import ConfigError, invalid
from mechwork.studies.points import run_point

__all__ = ["ENV", "check_address", "run_ray"]

ENV = "MECHWORK_RAY_ADDRESS"
_LOOPBACK = ("127.0.0.1", "localhost", "::1")


def _host_port(address: str) -> tuple[str, int] | None:
    """``host:port`` or ``ray://host:port`` -> (host, port); None for ``auto``."""
    if address == "auto":
        return None
    rest = address.removeprefix("ray://")
    host, sep, port = rest.rpartition(":")
    if not sep or not host or not port.isdigit() or not 0 < int(port) < 65536:
        raise invalid("ray", "'host:port', 'ray://host:port' or 'auto'", address)
    return host.strip("[]"), int(port)


def check_address(address: str, *, connect_timeout: float = 10.0) -> tuple[str, int] | None:
    """Raise a one-line ConfigError unless something accepts TCP connections at ``address``."""
    if not isinstance(address, str):
        raise invalid("ray", "'host:port', 'ray://host:port' or 'auto'", address)
    hp = _host_port(address)
    if hp is not None:
        try:
            socket.create_connection(hp, timeout=connect_timeout).close()
        except OSError as e:
            reason = f"no answer within {connect_timeout:g} s" if isinstance(e, TimeoutError) else str(e)
            raise ConfigError(f"cannot reach a Ray cluster at {address!r} ({reason}); start one with "
                              "`ray start --head` or pass a reachable address") from None
    return hp


def _import_ray(loopback: bool) -> Any:
    if loopback:
        # Ray resolves a loopback address to the node's network address unless told it is a single-node
        # cluster; a head started on 127.0.0.1 would then never be found.
        os.environ["RAY_ENABLE_WINDOWS_OR_OSX_CLUSTER"] = "0"
    os.environ.setdefault("RAY_USAGE_STATS_ENABLED", "0")
    try:
        import ray
    except ImportError:
        raise ConfigError("--ray needs the optional Ray backend: pip install 'mechwork[ray]'") from None
    if loopback:
        from ray._private import ray_constants

        ray_constants.ENABLE_RAY_CLUSTER = False  # the same switch, when ray was imported before
    return ray


def _task(fn_name: str, kwargs: dict[str, Any], threads: int) -> dict[str, Any]:
    """One sweep point inside a Ray worker: the local backend's code, with the same thread count."""
    import torch

    torch.set_num_threads(threads)
    return run_point(fn_name, kwargs)


def run_ray(
    address: str,
    fn_name: str,
    todo: list[tuple[dict[str, Any], Path]],
    fixed: dict[str, Any],
    threads: int,
    record: Callable[[dict[str, Any], Path, dict[str, Any]], None],
) -> None:
    """Run every point of ``todo`` as a Ray task on the cluster at ``address``; ``record`` each as it ends.

    :func:`mechwork.studies.sweep.sweep` has checked ``address`` with :func:`check_address` before anything
    was written."""
    hp = _host_port(address)
    ray = _import_ray(loopback=hp is not None and hp[0] in _LOOPBACK)
    started = not ray.is_initialized()
    if started:
        try:
            ray.init(address=address, log_to_driver=False, logging_level="ERROR", configure_logging=False)
        except (ConnectionError, RuntimeError, ValueError) as e:
            first = str(e).strip().splitlines()[0] if str(e).strip() else type(e).__name__
            raise ConfigError(f"cannot connect to the Ray cluster at {address!r}: {first}") from None
    try:
        remote = ray.remote(num_cpus=threads, max_retries=1)(_task)
        pending = {remote.remote(fn_name, {**p, **fixed}, threads): (p, f) for p, f in todo}
        while pending:
            done, _ = ray.wait(list(pending), num_returns=1)
            ref = done[0]
            p, f = pending.pop(ref)
            try:
                res = ray.get(ref)
            except Exception as e:  # a worker that died: recorded, retried on the next run
                res = {"error": f"{type(e).__name__}: {str(e).strip().splitlines()[0]}", "seconds": 0.0}
            record(p, f, res)
    finally:
        if started:
            ray.shutdown()


def head_command(port: int, temp_dir: str | os.PathLike[str], num_cpus: int = 2) -> list[str]:
    """``ray start --head`` for a single-machine cluster bound to 127.0.0.1 only (the tests use it)."""
    ray_bin = Path(sys.executable).with_name("ray")
    return [str(ray_bin), "start", "--head", "--node-ip-address=127.0.0.1", f"--port={port}",
            "--include-dashboard=false", "--disable-usage-stats", f"--num-cpus={num_cpus}",
            f"--temp-dir={os.fspath(temp_dir)}"]
