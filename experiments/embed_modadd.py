"""Regenerate the embedded ``modadd-113`` model that ships in ``mechwork/data``.

Trains p=113, 30% data, seed 0 with mechwork's default recipe into a run
directory, past grokking and through cleanup, then exports the last
checkpoint with a JSON summary (accuracy measured through the hooked bridge).

    python experiments/embed_modadd.py                      # the shipped model
    python experiments/embed_modadd.py --steps 2500 --dest /tmp/x/modadd-113   # reduced scale
"""

from __future__ import annotations

import argparse
import shlex
import sys
from pathlib import Path

import torch

from mechwork.models import ToyConfig
from mechwork.runs import embedded_path, export
from mechwork.summary import evaluate_modadd
from mechwork.tasks import ModularArithmetic
from mechwork.training import TrainConfig, recipe, train

STEPS = 5000


def main(argv: list[str] | None = None) -> int:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--steps", type=int, default=STEPS, help=f"optimiser updates (default {STEPS})")
    ap.add_argument("--seed", type=int, default=0)
    ap.add_argument("--run-dir", type=Path, default=Path("runs/modadd-113-embedded"))
    ap.add_argument("--dest", type=Path, default=embedded_path("modadd-113").with_suffix(""),
                    help="output stem: writes DEST.safetensors and DEST.json")
    ap.add_argument("--quiet", action="store_true")
    args = ap.parse_args(argv)
    torch.set_num_threads(min(2, torch.get_num_threads()))
    task = ModularArithmetic(p=113, op="add", train_frac=0.3, seed=args.seed)
    cfg = TrainConfig.from_dict(recipe(task).to_dict() | {"steps": args.steps, "seed": args.seed})
    res = train(task, ToyConfig(seed=args.seed), cfg, out=args.run_dir, force=True, quiet=args.quiet, device="cpu")
    assert res.run is not None
    ev = evaluate_modadd(res.model, task)
    summary = ev | {
        "grok_step": res.first_step("test_acc", 0.99),
        "memorised_step": res.first_step("train_acc", 0.99),
        "steps": args.steps,
        "train_seconds": res.rows[-1]["wall"],
    }
    command = "python experiments/embed_modadd.py" + "".join(f" {shlex.quote(a)}" for a in (argv or sys.argv[1:]))
    w, m = export(res.run, args.dest, summary=summary, command=command)
    print(f"wrote {w} ({w.stat().st_size:,} bytes) and {m}")
    print(", ".join(f"{k} {v:.4g}" if isinstance(v, float) else f"{k} {v}" for k, v in summary.items()))
    return 0


if __name__ == "__main__":
    sys.exit(main())
