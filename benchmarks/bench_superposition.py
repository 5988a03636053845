"""Seconds to train a superposition sweep: one batched model against a plain Python loop over instances.

The same work both ways: every instance gets the same number of Adam steps on batches of the same size
(the loop trains ``n_instances`` separate single-instance models, each with its own optimiser, one after
another within each step). Two sweeps: the study's n=20, m=5 sparsity sweep (7 instances) and a phase-diagram
grid (n=2, m=1, 143 cells x 3 restarts = 429 instances). Medians of ``--repeats`` runs, one torch thread.

    python benchmarks/bench_superposition.py [--steps 200] [--repeats 3]
"""

from __future__ import annotations

import argparse
import statistics
import time

import torch

from mechwork.studies.superposition import ToyModel, ToyModelConfig, train_toy

SWEEPS = {
    "n=20, m=5, 7 sparsities (study part 1)": (ToyModelConfig.sweep(20, 5, [0, 0.7, 0.9, 0.97, 0.99, 0.997, 0.999],
                                                                    importance=0.9), 1024),
    "n=2, m=1, 429 instances (phase grid)": (
        ToyModelConfig(2, 1, 429, [[0.1 + 0.9 * (i % 11) / 10] for i in range(429)],
                       [[1.0, 0.1 + (i % 13) / 2] for i in range(429)]), 1024),
}


def batched(cfg: ToyModelConfig, steps: int, batch: int) -> float:
    model = ToyModel(cfg, seed=0)
    t = time.perf_counter()
    train_toy(model, steps=steps, batch_size=batch, lr=1e-3, seed=0)
    return time.perf_counter() - t


def looped(cfg: ToyModelConfig, steps: int, batch: int) -> float:
    """One single-instance model and optimiser per instance, all stepped in a Python loop."""
    from mechwork.studies.superposition import generate_batch, instance_loss

    models = [ToyModel(ToyModelConfig(cfg.n_features, cfg.n_hidden, 1, [cfg.feature_probability[i]],
                                      [cfg.importance[i]]), seed=i) for i in range(cfg.n_instances)]
    opts = [torch.optim.Adam(m.parameters(), lr=1e-3) for m in models]
    g = torch.Generator().manual_seed(0)
    t = time.perf_counter()
    for _ in range(steps):
        for m, opt in zip(models, opts, strict=True):
            loss = instance_loss(m, generate_batch(m.cfg, batch, g)).sum()
            opt.zero_grad(set_to_none=True)
            loss.backward()
            opt.step()
    return time.perf_counter() - t


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--steps", type=int, default=200)
    ap.add_argument("--repeats", type=int, default=3)
    args = ap.parse_args()
    torch.set_num_threads(1)
    print(f"superposition sweeps, {args.steps} Adam steps per instance, batch 1024, "
          f"{torch.get_num_threads()} thread, medians of {args.repeats}:")
    for name, (cfg, batch) in SWEEPS.items():
        b, lp = [], []
        for _ in range(args.repeats):  # interleaved, so load changes hit both
            b.append(batched(cfg, args.steps, batch))
            lp.append(looped(cfg, args.steps, batch))
        mb, ml = statistics.median(b), statistics.median(lp)
        print(f"  {name}: batched {mb:.2f} s, loop over instances {ml:.2f} s, ratio {ml / mb:.1f}x")


if __name__ == "__main__":
    main()
