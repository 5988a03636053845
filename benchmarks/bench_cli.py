"""Seconds for the command line to refuse a bad argument, and to start its read-only commands, against
starting Python at all and against importing torch.

Each command runs as its own ``python -m mechwork.cli ...`` process (as a
user would type it); the baseline is ``python -c pass`` and the peer
``python -c "import torch"``. Commands are interleaved over ``--repeats``
rounds; the figures are medians of wall time and of CPU time (user + system, which
a loaded machine changes less). Every refusal must exit 2 with one line; every
read-only command (``info`` of both presets and of a small run directory, ``--help``,
``--version``, ``train modadd --help``, ``post --list``, ``sae --help``) must exit 0.

    python benchmarks/bench_cli.py [--repeats 7] [--section refusal|startup|both] [--device cpu]

``--device`` only names the device of the small run directory trained for ``info RUN`` (any device runs
unchanged; ``info`` itself reads files, so its timings do not depend on it).
"""

from __future__ import annotations

import argparse
import os
import resource
import statistics
import subprocess
import sys
import tempfile
import time
from pathlib import Path

PY = sys.executable
BAD = {
    "unknown run or preset": ["info", "no-such-run"],
    "--p 100003 (too big)": ["train", "modadd", "--p", "100003"],
    "--d-vocab 100000000 (too big)": ["train", "induction", "--d-vocab", "100000000"],
    "patch --n 100000000 (too big)": ["patch", "modadd-113", "--n", "100000000"],
    "--device tpu": ["dashboard", "modadd-113", "--device", "tpu"],
    "--device cuda (CPU torch)": ["train", "modadd", "--device", "cuda"],
    "--json in an unwritable place": ["patch", "modadd-113", "--json", "/proc/x.json"],
    "--step of a preset": ["analyze", "fourier", "modadd-113", "--step", "5"],
}
READ_ONLY = {
    "info modadd-113": ["info", "modadd-113"],
    "info induction-2l": ["info", "induction-2l"],
    "info RUN (a run directory)": ["info", "RUN"],
    "--help": ["--help"],
    "--version": ["--version"],
    "train modadd --help": ["train", "modadd", "--help"],
    "post --list": ["post", "--list"],
    "sae --help": ["sae", "--help"],
}
PEER = 'python -c "import torch"'
BASE = {"python -c pass": [PY, "-c", "pass"], PEER: [PY, "-c", "import torch"]}


def _cpu() -> float:
    r = resource.getrusage(resource.RUSAGE_CHILDREN)
    return r.ru_utime + r.ru_stime


def _time(cmd: list[str], cwd: str, want: int | None) -> tuple[float, float]:
    """Wall and CPU (user + system) seconds of one process; ``want`` 2: a one-line refusal, 0: success."""
    t, c = time.perf_counter(), _cpu()
    res = subprocess.run(cmd, capture_output=True, text=True, cwd=cwd)
    dt, dc = time.perf_counter() - t, _cpu() - c
    if want == 2:
        lines = res.stderr.strip().splitlines()
        assert res.returncode == 2 and len(lines) == 1, (cmd, res.returncode, res.stderr)
    elif want == 0:
        assert res.returncode == 0, (cmd, res.returncode, res.stderr)
    return dt, dc


def _small_run(cwd: str, device: str) -> str:
    """A run directory of a few steps of modadd p=7 (trained once, before any timing)."""
    run = str(Path(cwd) / "run")
    subprocess.run([PY, "-m", "mechwork.cli", "train", "modadd", "--p", "7", "--steps", "20", "--out", run,
                    "--device", device, "--quiet"], check=True, capture_output=True, cwd=cwd)
    return run


def _measure(cmds: dict[str, tuple[list[str], int | None]], cwd: str, repeats: int) -> tuple[dict, dict]:
    times: dict[str, list[float]] = {name: [] for name in cmds}
    cpu: dict[str, list[float]] = {name: [] for name in cmds}
    for c, want in cmds.values():  # warm the file cache once
        _time(c, cwd, want)
    for _ in range(repeats):
        for name, (c, want) in cmds.items():
            wall, used = _time(c, cwd, want)
            times[name].append(wall)
            cpu[name].append(used)
    return ({n: statistics.median(t) for n, t in times.items()}, {n: statistics.median(t) for n, t in cpu.items()})


def _table(wall: dict[str, float], cpu: dict[str, float]) -> None:
    base, peer = wall["python -c pass"], wall[PEER]
    print(f"{'command':<34} {'median wall s':>13} {'minus python -c pass':>21} {'median CPU s':>13} "
          f"{'import torch / this':>20}")
    for name, med in wall.items():
        print(f"{name:<34} {med:>13.3f} {med - base:>21.3f} {cpu[name]:>13.3f} {peer / med:>19.1f}x")


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--repeats", type=int, default=7)
    ap.add_argument("--section", choices=("refusal", "startup", "both"), default="both")
    ap.add_argument("--device", default="cpu", help="device of the small run directory that `info RUN` reads")
    args = ap.parse_args()
    with tempfile.TemporaryDirectory() as cwd:
        base = {name: (c, None) for name, c in BASE.items()}
        if args.section in ("refusal", "both"):
            cmds = {name: ([PY, "-m", "mechwork.cli", *a], 2) for name, a in BAD.items()}
            wall, cpu = _measure(cmds | base, cwd, args.repeats)
            _table(wall, cpu)
            refusals, cpus = [wall[n] for n in BAD], [cpu[n] for n in BAD]
            print(f"refusal: median {statistics.median(refusals):.3f} s wall ({statistics.median(cpus):.3f} s CPU), "
                  f"slowest {max(refusals):.3f} s ({len(BAD)} bad arguments x {args.repeats} runs); "
                  f"python -c pass {wall['python -c pass']:.3f} s; load average {os.getloadavg()[0]:.1f}")
            print(f"ratio: importing torch (what a refusal waited for before) / median refusal = "
                  f"{wall[PEER] / statistics.median(refusals):.1f}x")
        if args.section in ("startup", "both"):
            run = _small_run(cwd, args.device)
            cmds = {name: ([PY, "-m", "mechwork.cli", *[run if x == "RUN" else x for x in a]], 0)
                    for name, a in READ_ONLY.items()}
            wall, cpu = _measure(cmds | base, cwd, args.repeats)
            _table(wall, cpu)
            slowest = max(READ_ONLY, key=lambda n: wall[n])
            print(f"start-up: slowest read-only command {slowest!r} {wall[slowest]:.3f} s wall ({cpu[slowest]:.3f} s "
                  f"CPU) [target <= 2 s idle]; import torch {wall[PEER]:.3f} s; "
                  f"{args.repeats} runs each; load average {os.getloadavg()[0]:.1f}")


if __name__ == "__main__":
    main()
