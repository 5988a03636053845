"""Seconds for the command line to refuse a bad argument, against starting Python at all.

Each bad argument runs as its own ``python -m mechwork.cli ...`` process (as a
user would type it); the baseline is ``python -c pass`` and, for scale,
``python -c "import torch"``. Commands are interleaved over ``--repeats``
rounds; the figures are medians of wall time and of CPU time (user + system, which
a loaded machine changes less). Every refusal must exit 2 with one line.

    python benchmarks/bench_cli.py [--repeats 7]
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
BASE = {"python -c pass": [PY, "-c", "pass"], 'python -c "import torch"': [PY, "-c", "import torch"]}


def _cpu() -> float:
    r = resource.getrusage(resource.RUSAGE_CHILDREN)
    return r.ru_utime + r.ru_stime


def _time(cmd: list[str], cwd: str, refusal: bool) -> tuple[float, float]:
    """Wall and CPU (user + system) seconds of one process."""
    t, c = time.perf_counter(), _cpu()
    res = subprocess.run(cmd, capture_output=True, text=True, cwd=cwd)
    dt, dc = time.perf_counter() - t, _cpu() - c
    if refusal:
        lines = res.stderr.strip().splitlines()
        assert res.returncode == 2 and len(lines) == 1, (cmd, res.returncode, res.stderr)
    return dt, dc


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--repeats", type=int, default=7)
    args = ap.parse_args()
    cwd = tempfile.mkdtemp()
    cmds = {name: ([PY, "-m", "mechwork.cli", *a], True) for name, a in BAD.items()}
    cmds |= {name: (c, False) for name, c in BASE.items()}
    times: dict[str, list[float]] = {name: [] for name in cmds}
    cpu: dict[str, list[float]] = {name: [] for name in cmds}
    for c, refusal in cmds.values():  # warm the file cache once
        _time(c, cwd, refusal)
    for _ in range(args.repeats):
        for name, (c, refusal) in cmds.items():
            wall, used = _time(c, cwd, refusal)
            times[name].append(wall)
            cpu[name].append(used)
    base = statistics.median(times["python -c pass"])
    print(f"{'command':<34} {'median wall s':>13} {'minus python -c pass':>21} {'median CPU s':>13}")
    for name, ts in times.items():
        med = statistics.median(ts)
        print(f"{name:<34} {med:>13.3f} {med - base:>21.3f} {statistics.median(cpu[name]):>13.3f}")
    refusals = [statistics.median(times[n]) for n in BAD]
    cpus = [statistics.median(cpu[n]) for n in BAD]
    print(f"refusal: median {statistics.median(refusals):.3f} s wall ({statistics.median(cpus):.3f} s CPU), "
          f"slowest {max(refusals):.3f} s ({len(BAD)} bad arguments x {args.repeats} runs); "
          f"python -c pass {base:.3f} s; load average {os.getloadavg()[0]:.1f}")
    torch_import = statistics.median(times['python -c "import torch"'])
    print(f"ratio: importing torch (what a refusal waited for before) / median refusal = "
          f"{torch_import / statistics.median(refusals):.1f}x")
    Path(cwd).rmdir()


if __name__ == "__main__":
    main()
