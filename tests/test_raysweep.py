"""The sweep runner's Ray backend against a real single-machine Ray head bound to 127.0.0.1."""

from __future__ import annotations

import os
import socket
import subprocess
import tempfile
from pathlib import Path

import pytest

from mechwork.errors import ConfigError
from mechwork.studies.sweep import sweep

GRID = {"seed": [0, 1, 2]}
FIXED = {"p": 11, "op": "add", "train_frac": 0.6, "weight_decay": 1.0, "lr": 1e-2, "steps": 60}
ENV = {**os.environ, "RAY_ENABLE_WINDOWS_OR_OSX_CLUSTER": "0", "RAY_USAGE_STATS_ENABLED": "0"}
BOUND_S = 1800  # only against a hung `ray start`/`ray stop`: they take seconds, or minutes on a loaded machine


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def listeners() -> set[tuple[str, str]]:
    """(address, port) of every listening TCP socket on this machine, from /proc/net/tcp{,6}, in hex."""
    out = set()
    for name in ("tcp", "tcp6"):
        path = Path("/proc/net") / name
        if path.exists():
            for line in path.read_text().splitlines()[1:]:
                local, state = line.split()[1], line.split()[3]
                if state == "0A":
                    out.add(tuple(local.split(":")))
    return out


LOOPBACK = {"0100007F", "00000000000000000000000001000000", "0000000000000000FFFF00000100007F"}


@pytest.fixture(scope="module")
def ray_head():
    pytest.importorskip("ray", reason="the optional 'ray' extra is not installed")
    from mechwork.studies.raysweep import head_command

    port = free_port()
    temp = tempfile.mkdtemp(prefix="mwray")  # short: Ray's socket paths must stay under 108 characters
    cmd = head_command(port, temp, num_cpus=2)
    before = listeners()
    started = subprocess.run(cmd, env=ENV, capture_output=True, text=True, timeout=BOUND_S)
    assert started.returncode == 0, started.stderr[-2000:]
    try:
        opened = listeners() - before
        assert any(int(p, 16) == port for _, p in opened)  # the head is up, on the port asked for
        # ... and every socket the head opened listens on loopback only
        assert all(addr in LOOPBACK for addr, _ in opened), opened
        yield f"127.0.0.1:{port}"
    finally:
        subprocess.run([cmd[0], "stop", "--force"], env=ENV, capture_output=True, timeout=BOUND_S)


def test_ray_backend_matches_local_and_resumes(ray_head, tmp_path):
    on_ray = sweep("mechwork.studies.study:grok_point", GRID, tmp_path / "ray", fixed=FIXED, ray=ray_head)
    assert (on_ray.ran, on_ray.skipped, on_ray.errors) == (3, 0, [])
    local = sweep("mechwork.studies.study:grok_point", GRID, tmp_path / "local", fixed=FIXED, workers=2)
    strip = lambda res: sorted(({k: v for k, v in r["result"].items() if k != "seconds"} | r["params"]
                                for r in res.records()), key=lambda r: r["seed"])
    assert strip(on_ray) == strip(local)  # same seeds, same numbers, to the last bit
    # the points directory is the same format: a rerun on either backend finds everything done
    assert sorted(p.name for p in (tmp_path / "ray" / "points").iterdir()) == \
        sorted(p.name for p in (tmp_path / "local" / "points").iterdir())
    again = sweep("mechwork.studies.study:grok_point", GRID, tmp_path / "local", fixed=FIXED, ray=ray_head)
    assert (again.ran, again.skipped) == (0, 3)


def test_ray_backend_records_a_failing_point(ray_head, tmp_path):
    res = sweep("mechwork.studies.study:grok_point", {"seed": [0]}, tmp_path, fixed={**FIXED, "p": 1}, ray=ray_head)
    assert res.ran == 1 and len(res.errors) == 1 and "p" in res.errors[0]["error"]


def test_unreachable_address_is_a_quick_clear_error(tmp_path, monkeypatch):
    from mechwork.studies import raysweep

    def no_ray(loopback):  # quick: refused by the TCP check alone, never through Ray's own retry loop
        raise AssertionError("Ray was imported for an unreachable address")

    monkeypatch.setattr(raysweep, "_import_ray", no_ray)
    port = free_port()  # nothing listens there
    with pytest.raises(ConfigError, match=rf"cannot reach a Ray cluster at '127.0.0.1:{port}'") as e:
        sweep("mechwork.studies.sweep:_demo_point", {"x": [1]}, tmp_path / "s", fixed={"y": 1}, ray=f"127.0.0.1:{port}")
    assert "\n" not in str(e.value)
    assert not (tmp_path / "s").exists()  # nothing written
    for bad in ("nonsense", "host:notaport", "ray://:10001", "127.0.0.1:70000"):
        with pytest.raises(ConfigError, match="'host:port', 'ray://host:port' or 'auto'"):
            sweep("mechwork.studies.sweep:_demo_point", {"x": [1]}, tmp_path / "s", fixed={"y": 1}, ray=bad)


def test_study_flag_rejects_an_unreachable_cluster(capsys):
    from test_studies import load_study

    study = load_study("clock_pizza")
    with pytest.raises(SystemExit) as e:
        study.main(["--smoke", "--ray", f"127.0.0.1:{free_port()}"])
    err = capsys.readouterr().err
    assert e.value.code == 2 and "--ray: cannot reach a Ray cluster" in err


def test_missing_ray_extra_is_named(monkeypatch, tmp_path):
    import sys

    from mechwork.studies import raysweep

    monkeypatch.setitem(sys.modules, "ray", None)  # import ray -> ImportError
    with pytest.raises(ConfigError, match=r"pip install 'mechwork\[ray\]'"):
        raysweep._import_ray(loopback=False)


def test_head_command_binds_loopback_only():
    from mechwork.studies.raysweep import head_command

    cmd = head_command(6390, Path("/tmp/x"))
    assert "--node-ip-address=127.0.0.1" in cmd and "--disable-usage-stats" in cmd
    assert "--include-dashboard=false" in cmd
