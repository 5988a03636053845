"""Seconds for ``progress_measures`` over 100 checkpoints of a p=113 run.

Trains modadd-113 (default recipe) for 500 steps with a checkpoint every 5
steps (101 checkpoints), then times ``progress_measures`` on it: mechwork's
way (one fast-path pass per checkpoint) against the same measures computed
through the hooked bridge forward, in one process. Medians of 3 repeats.

    python benchmarks/bench_progress.py [--repeats 3]
"""

from __future__ import annotations

import argparse
import statistics
import tempfile
import time
from pathlib import Path

import torch

import mechwork.analysis.progress as prog
from mechwork.tasks import ModularArithmetic
from mechwork.training import TrainConfig, train


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--repeats", type=int, default=3)
    args = ap.parse_args()
    torch.set_num_threads(2)
    out = Path(tempfile.mkdtemp()) / "run"
    train(ModularArithmetic(p=113), train_cfg=TrainConfig(steps=500, ckpt_every=5, ckpt_log=0, eval_every=50),
          out=out, quiet=True, device="cpu")
    keys = prog.progress_measures(out).key_freqs  # detected once, outside the timing

    def timed() -> float:
        t = time.perf_counter()
        pm = prog.progress_measures(out, key_freqs=keys)
        assert len(pm.steps) >= 100
        return time.perf_counter() - t

    fast = [timed() for _ in range(args.repeats)]
    real = prog.supports_fast_path
    prog.supports_fast_path = lambda cfg, task: False  # peer: logits through the hooked bridge
    try:
        bridge = [timed() for _ in range(args.repeats)]
    finally:
        prog.supports_fast_path = real
    n = len(prog.progress_measures(out, key_freqs=keys).steps)
    f, b = statistics.median(fast), statistics.median(bridge)
    print(f"progress_measures over {n} checkpoints of p=113 ({torch.get_num_threads()} threads):")
    print(f"  mechwork (fast path per checkpoint): {f:.2f} s median of {args.repeats}")
    print(f"  same measures via the hooked bridge:  {b:.2f} s median of {args.repeats}")
    print(f"  ratio: {b / f:.2f}x")


if __name__ == "__main__":
    main()
