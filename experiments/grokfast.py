"""Grokfast: steps to grok with and without the EMA gradient filter (alpha 0.98, lambda 2).

Anchor: Lee et al. (2024) report 39,890 -> 910 iterations (x43.8) to 95%
validation accuracy on x*y mod 97 with 50% data, a 2-layer width-128
decoder, batch 512, Adam betas (0.9, 0.98), lr 1e-3; the filtered run uses
weight decay 0.005, the baseline none.

(A) That setting: mechwork's 2-layer, width-128, 4-head model with LayerNorm
and an MLP, batches of 512, lr 1e-3, on x*y mod 97 at 50% data. The
baseline's budget is capped (full mode 6,000 steps; a step of this model takes ~80 ms here): if it does not reach
95% the ratio is reported as a lower bound.
(B) mechwork's default task and recipe: (a + b) mod 113 at 30%, AdamW
lr 1e-2, wd 1, full batch, with and without the filter (seeds 0-2).

    python experiments/grokfast.py            # full (about 15 min on 2 cores)
    python experiments/grokfast.py --quick    # reduced budgets, under 3 minutes
"""

from __future__ import annotations

import sys

from mechwork.studies.study import finish, median_or_none, pick_plan, run_sweep, study_args, verdict_page

ANCHOR = {"baseline": 39_890, "grokfast": 910, "ratio": 43.8}
FULL = {"A": {"seed": [0], "steps": 6000}, "B": {"seed": [0, 1, 2], "steps": 3000, "p": 113, "frac": 0.3}}
QUICK = {"A": {"seed": [0], "steps": 400}, "B": {"seed": [0], "steps": 1500, "p": 31, "frac": 0.6}}
SMOKE = {"A": {"seed": [0], "steps": 20}, "B": {"seed": [0], "steps": 150, "p": 11, "frac": 0.6}}


def main(argv: list[str] | None = None) -> int:
    args = study_args("grokfast", __doc__, argv)
    plan = pick_plan(args, FULL, QUICK, SMOKE)
    variants = ["baseline", "grokfast"]
    a = run_sweep(args, "mechwork.studies.study:grokfast_point", {"seed": plan["A"]["seed"], "variant": variants},
                  args.out / "A",
              fixed={"p": 97, "op": "mul", "train_frac": 0.5, "lr": 1e-3, "steps": plan["A"]["steps"],
                     "target": 0.95, "batch_size": 512, "n_layers": 2, "normalization": "LN",
                     "baseline_wd": 0.0, "filter_wd": 0.005, "warmup_steps": 0})
    b = run_sweep(args, "mechwork.studies.study:grokfast_point", {"seed": plan["B"]["seed"], "variant": variants},
                  args.out / "B",
              fixed={"p": plan["B"]["p"], "op": "add", "train_frac": plan["B"]["frac"], "lr": 1e-2,
                     "baseline_wd": 1.0, "filter_wd": 1.0, "steps": plan["B"]["steps"]})
    rows = {}
    for name, res, budget in (("A", a, plan["A"]["steps"]), ("B", b, plan["B"]["steps"])):
        df = res.frame()
        base = df[df["variant"] == "baseline"]["grokked"].tolist()
        fast = df[df["variant"] == "grokfast"]["grokked"].tolist()
        mb = median_or_none([None if v != v else v for v in base])
        mf = median_or_none([None if v != v else v for v in fast])
        ratio = None if mf is None else (mb if mb is not None else budget) / mf
        rows[name] = {"baseline": mb, "grokfast": mf, "ratio": ratio, "ratio_is_lower_bound": mb is None,
                      "budget": budget, "runs": len(df)}
    ra, rb = rows["A"], rows["B"]

    def fmt(r: dict) -> str:
        if r["grokfast"] is None:
            return f"Grokfast did not reach the target within {r['budget']} steps"
        base = f"> {r['budget']}" if r["baseline"] is None else f"{r['baseline']:g}"
        ratio = f"{'>= ' if r['ratio_is_lower_bound'] else ''}x{r['ratio']:.1f}"
        return f"{base} -> {r['grokfast']:g} steps ({ratio})"

    big = ra["ratio"] is not None and ra["ratio"] >= 10
    verdict = ("reproduced" if big and not ra["ratio_is_lower_bound"] else
               "partly reproduced" if big else "not reproduced") + (
        f": (A) {fmt(ra)} against the paper's 39,890 -> 910 (x43.8); (B) {fmt(rb)}")
    results = {"plan": plan, "anchor": ANCHOR, "A": ra, "B": rb, "verdict": verdict,
               "points_A": a.frame().to_dict("records"), "points_B": b.frame().to_dict("records")}
    command = f"python experiments/grokfast.py{' --quick' if args.quick else ''}"
    page = verdict_page("Grokfast: the EMA gradient filter", claim="the EMA filter makes grokking ~40x faster",
                        anchor="Lee et al. 2024: 39,890 -> 910 iterations to 95% on x*y mod 97 (x43.8)",
                        ours=f"(A) {fmt(ra)}; (B) {fmt(rb)}", verdict=verdict, command=command)
    import pandas as pd
    import plotly.graph_objects as go

    fig = go.Figure()
    for variant in ("baseline", "grokfast"):
        ys = [r[variant] if r[variant] is not None else r["budget"] for r in rows.values()]
        text = ["" if r[variant] is not None else "not reached" for r in rows.values()]
        fig.add_bar(x=[f"({k})" for k in rows], y=ys, name=variant, text=text)
    fig.update_layout(title="Median steps to the target accuracy (bars at the budget: not reached)",
                      xaxis_title="setting", yaxis_title="steps", barmode="group", height=380)
    page.plotly(fig, title="Steps to grok")
    page.table(pd.DataFrame([{"setting": k, **v} for k, v in rows.items()]), title="Steps to the target accuracy")
    page.table(a.frame(), title="(A) every run")
    page.table(b.frame(), title="(B) every run")
    finish(args, results, page)
    print(verdict)
    return 0


if __name__ == "__main__":
    sys.exit(main())
