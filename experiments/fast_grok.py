"""The fewest steps to grok (a + b) mod 113 at 30% data, in the modadd-113 preset's architecture, full batch.

A staged sweep (mechwork's sweep runner; points in ``<out>/<stage>/points``) over the initialisation scale
(Omnigrok), lr and weight decay, the loss (softmax or StableMax), ⊥Grad and Grokfast. "Steps to grok" is the
first evaluation (every 10 steps) with test accuracy >= 99%; a recipe's figure is the median over its seeds.
A "spike" is test accuracy falling below 99% again within the stage's window after grokking.

Stages (each a list of grids; a stage's step cap, window and evaluation cadence are shared):

* ``coarse`` -- seed 0 only, 50 steps watched after grokking: init scale x lr x weight decay around the
  default, then StableMax, ⊥Grad and Grokfast on the fastest of them;
* ``seeds`` -- the fastest recipes of ``coarse``, seeds 0, 1, 2, watched for 500 steps after grokking;
* ``calm`` -- smaller lr x weight decay at init scale 0.5: wd 1 (seeds 0, 1, 2) and wd 2 (seed 0), watched alike;
* ``long``, ``long_default`` -- the fastest recipe without a spike in ``calm`` (init scale 0.5, lr 1e-2, wd 1),
  and the default recipe, watched for 1,000 steps;
* ``default`` -- mechwork's default recipe (lr 1e-2, wd 1, init scale 1), seeds 0, 1, 2.

A run stops at its first spike, so a spiky recipe costs little.

    python experiments/fast_grok.py --out experiments/results/fast_grok         # every stage
    python experiments/fast_grok.py --stage coarse --out experiments/results/fast_grok
    python experiments/fast_grok.py --quick     # init scale 0.5 and 1 with the default lr and wd, seed 0 (~1 min idle)
    python experiments/fast_grok.py --smoke                                        # a tiny plan (tests)

Writes ``results.json`` (every recipe's row) and ``table.md`` into ``--out``.
"""

from __future__ import annotations

import argparse
import sys
from pathlib import Path
from typing import Any

from mechwork.studies.fastgrok import recipe_table

POINT = "mechwork.studies.fastgrok:fast_grok_point"
SEEDS = [0, 1, 2]

def _r(init_scale: float, lr: float, weight_decay: float, **options: Any) -> dict[str, Any]:
    """One recipe: the init scale, lr and weight decay, and any other option of the point."""
    return {"init_scale": init_scale, "lr": lr, "weight_decay": weight_decay, **options}


# stage -> (fixed settings, grids); a grid lists values for the point's parameters (product taken)
FULL: dict[str, tuple[dict[str, Any], list[dict[str, list[Any]]]]] = {
    "coarse": ({"steps": 800, "window": 50}, [{"seed": [0], "recipe": [
        *(_r(a, lr, wd) for a in (1.0, 0.5) for lr in (1e-2, 2e-2) for wd in (3.0, 6.0)),
        _r(1.0, 1e-2, 1.0),  # the default recipe
        _r(0.25, 1e-2, 3.0), _r(0.25, 1e-2, 2.0), _r(0.5, 1e-2, 2.0), _r(0.5, 1e-2, 4.0),
        _r(0.5, 1.5e-2, 2.0), _r(0.5, 2e-2, 1.5), _r(0.5, 5e-3, 6.0),
        _r(0.5, 1e-2, 3.0, loss="stablemax"), _r(0.5, 1e-2, 3.0, orthograd=True),
        _r(0.5, 1e-2, 3.0, grokfast_alpha=0.98), _r(0.5, 1e-2, 3.0, grokfast_alpha=0.8, grokfast_lambda=1.0),
        _r(0.5, 1e-2, 0.0, orthograd=True), _r(0.5, 1e-2, 1.0, orthograd=True),  # ⊥Grad as its paper uses it
    ]}]),
    "seeds": ({"steps": 1000, "window": 500}, [{"seed": SEEDS, "recipe": [
        _r(0.5, 1e-2, 3.0, grokfast_alpha=0.8, grokfast_lambda=1.0), _r(0.5, 1.5e-2, 2.0), _r(0.5, 1e-2, 3.0),
    ]}]),
    "calm": ({"steps": 1000, "window": 500}, [{"recipe": [_r(0.5, 1e-2, 1.0)], "seed": SEEDS},
                                              {"recipe": [_r(0.5, 1e-2, 2.0)], "seed": [0]}]),
    "long": ({"steps": 1500, "window": 1000}, [{"recipe": [_r(0.5, 1e-2, 1.0)], "seed": SEEDS}]),
    "long_default": ({"steps": 1600, "window": 1000}, [{"recipe": [_r(1.0, 1e-2, 1.0)], "seed": SEEDS}]),
    "default": ({"steps": 1500, "window": 50}, [{"seed": SEEDS, "recipe": [_r(1.0, 1e-2, 1.0)]}]),
}
QUICK: dict[str, tuple[dict[str, Any], list[dict[str, list[Any]]]]] = {
    "quick": ({"steps": 800, "window": 50}, [{"seed": [0], "recipe": [_r(0.5, 1e-2, 1.0), _r(1.0, 1e-2, 1.0)]}]),
}
SMOKE: dict[str, tuple[dict[str, Any], list[dict[str, list[Any]]]]] = {
    "coarse": ({"steps": 60, "window": 20, "eval_every": 5, "p": 17, "train_frac": 0.6, "target": 0.3}, [
        {"seed": [0], "recipe": [{"lr": 1e-2}, {"lr": 3e-2}]},
    ]),
}


def load_stage(path: Path) -> list[dict[str, Any]]:
    """The sweep records of one stage directory, each with the stage's fixed settings under ``"fixed"``."""
    from mechwork.io import load_json

    if not (path / "sweep.json").is_file():
        return []
    fixed = load_json(path / "sweep.json")["fixed"]
    return [load_json(f) | {"fixed": fixed} for f in sorted((path / "points").glob("*.json"))]


def markdown(rows: list[dict[str, Any]]) -> str:
    """The table of recipes, fastest median first ("-": not within the step cap)."""
    head = ("| init scale | lr | wd | loss | ⊥Grad | Grokfast | seeds | steps to grok (per seed) | median "
            "| watched after grokking | spikes (at step) |")
    lines = [head, "| " + " | ".join(["---"] * 11) + " |"]
    for r in rows:
        gf = "-" if r["grokfast_alpha"] is None else f"alpha {r['grokfast_alpha']:g}, lambda {r['grokfast_lambda']:g}"
        steps = ", ".join("-" if s is None else str(s) for s in r["steps"])
        med = f"- (cap {r['cap']})" if r["median"] is None else f"{r['median']:g}"
        at = ", ".join(str(s) for s in r["spike_steps"] if s is not None)
        lines.append(f"| {r['init_scale']:g} | {r['lr']:g} | {r['weight_decay']:g} | {r['loss']} | "
                     f"{'yes' if r['orthograd'] else 'no'} | {gf} | {','.join(map(str, r['seeds']))} | {steps} | "
                     f"{med} | {r['window']} | {r['spikes']}{f' ({at})' if at else ''} |")
    return "\n".join(lines) + "\n"


def main(argv: list[str] | None = None) -> int:
    from mechwork.atomic import atomic_open, write_json_atomic
    from mechwork.studies.study import pick_plan, run_sweep, study_args

    pre = argparse.ArgumentParser(add_help=False)
    pre.add_argument("--stage", action="append", default=None)
    known, rest = pre.parse_known_args(argv)
    args = study_args("fast_grok", __doc__, rest)
    plan = pick_plan(args, FULL, QUICK, SMOKE)
    stages = known.stage or list(plan)
    unknown = [s for s in stages if s not in plan]
    if unknown:
        pre.error(f"--stage must be one of {', '.join(plan)} (got {unknown[0]!r})")
    for stage in stages:
        fixed, grids = plan[stage]
        for grid in grids:
            run_sweep(args, POINT, grid, args.out / stage, fixed=fixed)
    records = [r for stage in plan for r in load_stage(args.out / stage)]
    rows = recipe_table(records)
    write_json_atomic({"rows": rows, "stages": {k: {"fixed": v[0], "grids": v[1]} for k, v in plan.items()}},
                      args.out / "results.json")
    table = markdown(rows)
    with atomic_open(args.out / "table.md") as f:
        f.write(table)
    print(table)
    return 0


if __name__ == "__main__":
    sys.exit(main())
