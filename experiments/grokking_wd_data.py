"""Steps to grok against weight decay and training fraction, on modular addition.

Anchors: Power et al. (2022) and Nanda et al. (2023, App. D):
* no grokking without weight decay within the budget;
* a larger training fraction groks sooner;
* with >= 60% of the pairs as data the model generalises almost at once.

Set-up: (a + b) mod p with p = 59, mechwork's default recipe (AdamW lr 1e-2,
betas (0.9, 0.98), warmup 10, full batch), weight decay in {0, 0.3, 1, 3},
training fraction 0.2-0.6, seeds 0-1, a budget of 3,000 steps. "Grokked" is
test accuracy >= 99% held for two evaluations (50 steps apart); the gap is
grok step minus memorisation step (train accuracy >= 99%).

    python experiments/grokking_wd_data.py            # full (40 runs, ~15 min on 2 cores)
    python experiments/grokking_wd_data.py --quick    # p = 31, 4 runs, under 3 minutes
"""

from __future__ import annotations

import itertools
import sys

from mechwork.studies.study import finish, median_or_none, pick_plan, run_sweep, study_args, verdict_page

FULL = {"p": 59, "weight_decay": [0.0, 0.3, 1.0, 3.0], "train_frac": [0.2, 0.3, 0.4, 0.5, 0.6],
        "seed": [0, 1], "steps": 3000}
QUICK = {"p": 31, "weight_decay": [0.0, 1.0], "train_frac": [0.3, 0.6], "seed": [0], "steps": 1500}
SMOKE = {"p": 11, "weight_decay": [0.0, 1.0], "train_frac": [0.6], "seed": [0], "steps": 150}


def main(argv: list[str] | None = None) -> int:
    args = study_args("grokking_wd_data", __doc__, argv)
    plan = pick_plan(args, FULL, QUICK, SMOKE)
    grid = {k: plan[k] for k in ("weight_decay", "train_frac", "seed")}
    fixed = {"p": plan["p"], "op": "add", "lr": 1e-2, "steps": plan["steps"]}
    res = run_sweep(args, "mechwork.studies.study:grok_point", grid, fixed=fixed)
    df = res.frame()
    cells = []
    for wd in plan["weight_decay"]:
        for frac in plan["train_frac"]:
            sub = df[(df["weight_decay"] == wd) & (df["train_frac"] == frac)]
            grok = [None if v != v else v for v in sub["grokked"].tolist()]  # NaN -> None
            mem = [None if v != v else v for v in sub["memorised"].tolist()]
            gaps = [g - m for g, m in zip(grok, mem, strict=True) if g is not None and m is not None]
            cells.append({"weight_decay": wd, "train_frac": frac, "runs": len(sub),
                          "grokked_runs": sum(g is not None for g in grok), "median_grok_step": median_or_none(grok),
                          "median_gap": median_or_none(gaps)})
    no_wd = [c for c in cells if c["weight_decay"] == 0.0]
    with_wd = [c for c in cells if c["weight_decay"] > 0]
    claim1 = all(c["grokked_runs"] == 0 for c in no_wd)
    # larger fraction sooner: for each wd > 0, median grok step never rises with the fraction (among grokked cells)
    mono = []
    for wd in plan["weight_decay"][1:]:
        steps = [c["median_grok_step"] for c in with_wd if c["weight_decay"] == wd]
        known = [s for s in steps if s is not None]
        mono.append(all(a >= b for a, b in itertools.pairwise(known)) and bool(known))
    claim2 = all(mono)
    top = [c for c in with_wd if c["train_frac"] == max(plan["train_frac"])]
    claim3 = all(c["median_gap"] is not None and c["median_gap"] <= 300 for c in top)
    verdicts = {"no_grokking_without_wd": claim1, "larger_fraction_sooner": claim2, "top_fraction_at_once": claim3}
    n_ok = sum(verdicts.values())
    verdict = ("reproduced" if n_ok == 3 else "partly reproduced" if n_ok else "not reproduced") + ": " + ", ".join(
        f"{k.replace('_', ' ')} {'yes' if v else 'no'}" for k, v in verdicts.items())
    results = {"plan": plan, "cells": cells, "verdicts": verdicts, "verdict": verdict,
               "points": df.to_dict("records")}
    command = f"python experiments/grokking_wd_data.py{' --quick' if args.quick else ''}"
    page = verdict_page(
        "Grokking against weight decay and data fraction",
        claim="no grokking without weight decay; more data groks sooner; >= 60% data generalises almost at once",
        anchor="Power et al. 2022; Nanda et al. 2023, App. D (qualitative)",
        ours=f"p={plan['p']}, {len(df)} runs; " + "; ".join(
            f"wd {c['weight_decay']:g} frac {c['train_frac']:g}: {c['median_grok_step']}" for c in cells
            if c["weight_decay"] in (0.0, 1.0)),
        verdict=verdict, command=command)
    import pandas as pd
    import plotly.graph_objects as go

    table = pd.DataFrame(cells)
    heat = table.pivot(index="weight_decay", columns="train_frac", values="median_grok_step")
    z = [[None if v != v else float(v) for v in row] for row in heat.to_numpy(dtype=float)]
    fig = go.Figure(go.Heatmap(
        z=z, x=[f"{c:g}" for c in heat.columns], y=[f"{i:g}" for i in heat.index], zmin=0, zmax=plan["steps"],
        colorscale="Viridis", text=[["not grokked" if v is None else f"{v:g}" for v in row] for row in z],
        texttemplate="%{text}", colorbar={"title": {"text": "steps"}}))
    fig.update_layout(title=f"Median steps to grok (within {plan['steps']} steps)", xaxis_title="training fraction",
                      yaxis_title="weight decay")
    page.plotly(fig, title="Steps to grok")
    page.table(table, title="Every cell")
    finish(args, results, page)
    print(verdict)
    return 0


if __name__ == "__main__":
    sys.exit(main())
