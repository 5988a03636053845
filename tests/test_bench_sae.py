"""The SAE and superposition benchmarks run end to end (a couple of steps; the timings are not checked)."""

from __future__ import annotations

import os
import re
import subprocess
import sys
from pathlib import Path

ROOT = Path(__file__).parents[1]


def run(script: str, *args: str) -> str:
    out = subprocess.run([sys.executable, str(ROOT / "benchmarks" / script), *args], capture_output=True, text=True,
                         cwd=ROOT, env={**os.environ, "OMP_WAIT_POLICY": "PASSIVE", "MECHWORK_QUIET": "1"})
    assert out.returncode == 0, out.stderr[-2000:]
    return out.stdout


def test_bench_sae_prints_both_architectures_ratios():
    out = run("bench_sae.py", "--steps", "2", "--repeats", "1", "--d-sae", "64", "--batch", "64")
    for arch in ("topk", "standard"):
        assert re.search(rf"^{arch} 512->64 .*train_sae [\d,]+ act/s, plain loop [\d,]+ act/s, ratio \d+\.\d+", out,
                         re.M), out


def test_bench_superposition_prints_both_sweeps_ratios():
    out = run("bench_superposition.py", "--steps", "2", "--repeats", "1")
    assert len(re.findall(r"batched [\d.]+ s, loop over instances [\d.]+ s, ratio [\d.]+x", out)) == 2, out
