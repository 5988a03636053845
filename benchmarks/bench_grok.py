"""Wall-clock time to grok modadd-113: mechwork's default recipe vs Nanda et al.'s.

Both train p=113, 30% data, full batch, seed-for-seed the same model and split,
through the same trainer (mechwork's fast path), in one process. "Grokked" is
the first evaluation (every ``--eval-every`` steps, default 50, timed as part of
training) with test accuracy >= 99%. Nanda's recipe is AdamW lr 1e-3, wd 1.0,
betas (0.9, 0.98), 10 warmup steps, no Grokfast.

    python benchmarks/bench_grok.py [--seeds 0 1 2] [--nanda-steps 30000] [--nanda-seeds] [--device cuda]

``--nanda-seeds`` with no seeds skips Nanda's recipe (thousands of steps).
"""

from __future__ import annotations

import argparse
import json
import statistics
from pathlib import Path

import torch

from mechwork.tasks import ModularArithmetic
from mechwork.training import TrainConfig, recipe, train

NANDA = TrainConfig(
    lr=1e-3, weight_decay=1.0, betas=(0.9, 0.98), warmup_steps=10, grokfast_alpha=None, steps=30_000, eval_every=50
)


def time_to_grok(cfg: TrainConfig, seed: int, device: str = "cpu") -> dict[str, float | int | None]:
    task = ModularArithmetic(p=113, op="add", train_frac=0.3, seed=seed)
    cfg = TrainConfig.from_dict(cfg.to_dict() | {"seed": seed})
    from mechwork.models import ToyConfig

    res = train(task, ToyConfig(seed=seed), cfg, quiet=True, device=device, stop_when=lambda r: r["test_acc"] >= 0.99)
    last = res.rows[-1]
    grokked = last["test_acc"] >= 0.99
    return {
        "seed": seed,
        "grok_step": last["step"] if grokked else None,
        "grok_seconds": last["wall"] if grokked else None,
        "last_step": last["step"],
        "last_test_acc": last["test_acc"],
        "ms_per_step": 1e3 * last["wall"] / max(1, last["step"]),
    }


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--seeds", type=int, nargs="+", default=[0, 1, 2])
    ap.add_argument("--nanda-steps", type=int, default=30_000, help="cap for Nanda's recipe")
    ap.add_argument("--nanda-seeds", type=int, nargs="*", default=[0], help="none: skip Nanda's recipe")
    ap.add_argument("--eval-every", type=int, default=50, help="evaluate every N steps (both recipes)")
    ap.add_argument("--threads", type=int, default=2, help="torch intra-op threads")
    ap.add_argument("--device", default="cpu")
    args = ap.parse_args()
    torch.set_num_threads(args.threads)
    default = recipe(ModularArithmetic())
    default = TrainConfig.from_dict(default.to_dict() | {"steps": max(default.steps, 10_000),
                                                         "eval_every": args.eval_every})
    nanda = TrainConfig.from_dict(NANDA.to_dict() | {"steps": args.nanda_steps, "eval_every": args.eval_every})
    results: dict[str, list[dict]] = {"mechwork default": [], "Nanda et al. reference": []}
    for seed in args.seeds:
        results["mechwork default"].append(time_to_grok(default, seed, args.device))
        print("mechwork default", results["mechwork default"][-1], flush=True)
    for seed in args.nanda_seeds:
        results["Nanda et al. reference"].append(time_to_grok(nanda, seed, args.device))
        print("Nanda et al. reference", results["Nanda et al. reference"][-1], flush=True)
    print()
    print(f"{'recipe':24s} {'seeds':>6s} {'grokked':>8s} {'median steps':>13s} {'median s':>9s} {'ms/step':>8s}")
    med: dict[str, float | None] = {}
    for name, rows in results.items():
        ok = [r for r in rows if r["grok_step"] is not None]
        steps = statistics.median(r["grok_step"] for r in ok) if ok else None
        secs = statistics.median(r["grok_seconds"] for r in ok) if ok else None
        med[name] = secs
        ms = statistics.median(r["ms_per_step"] for r in rows)
        print(f"{name:24s} {len(rows):6d} {len(ok):>8d} {steps if steps is not None else '-':>13} "
              f"{f'{secs:.1f}' if secs is not None else '-':>9s} {ms:8.1f}")
    a, b = med["mechwork default"], med["Nanda et al. reference"]
    if a and b:
        print(f"time-to-grok ratio (Nanda / mechwork default): {b / a:.1f}x")
    elif not args.nanda_seeds:
        print("Nanda's recipe not run (--nanda-seeds with no seeds)")
    else:
        print("Nanda's recipe did not grok within the cap; see last_test_acc above")
    out = Path(__file__).parent / "out"
    out.mkdir(exist_ok=True)
    (out / "grok.json").write_text(json.dumps({"default": default.to_dict(), "results": results}, indent=2))


if __name__ == "__main__":
    main()
