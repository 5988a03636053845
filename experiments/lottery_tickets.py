"""Lottery tickets: iterative magnitude pruning on a digits MLP, and grokking tickets.

(a) Frankle & Carbin (2019): an MLP 64-300-100-10 on scikit-learn's bundled
digits (nothing is downloaded), Adam lr 1.2e-3. Each round prunes 20% of the
remaining hidden weights and 10% of the output weights by magnitude, rewinds
to the initialisation and retrains. Controls at every sparsity: the same mask
on a fresh initialisation ("reinit"), and a random mask ("random prune").
Anchor (qualitative): tickets match or beat the dense net down to about 20% of
the weights and degrade later than random re-initialisation.

(b) Minegishi et al. (2023): a magnitude mask taken from a *grokked* modular-
addition model, applied at its initialisation, groks with less delay than the
dense model and than a random mask of the same sparsity. Also reported: whether
the ticket keeps the dense model's key frequencies.

    python experiments/lottery_tickets.py            # full (~15 min on 2 cores)
    python experiments/lottery_tickets.py --quick    # under 3 minutes
"""

from __future__ import annotations

import sys

from mechwork.studies.study import finish, median_or_none, pick_plan, run_sweep, study_args, verdict_page

FULL = {"mlp": {"seed": [0, 1, 2], "rounds": 12, "steps": 1500},
        "grok": {"seed": [0, 1], "sparsity": [0.5, 0.8], "p": 59, "train_frac": 0.5, "steps": 3000}}
QUICK = {"mlp": {"seed": [0], "rounds": 4, "steps": 300},
         "grok": {"seed": [0], "sparsity": [0.5], "p": 31, "train_frac": 0.6, "steps": 1200}}
SMOKE = {"mlp": {"seed": [0], "rounds": 2, "steps": 60},
         "grok": {"seed": [0], "sparsity": [0.5], "p": 11, "train_frac": 0.6, "steps": 150}}


def main(argv: list[str] | None = None) -> int:
    args = study_args("lottery_tickets", __doc__, argv)
    plan = pick_plan(args, FULL, QUICK, SMOKE)
    m, g = plan["mlp"], plan["grok"]
    mlp = run_sweep(args, "mechwork.studies.tickets:mlp_tickets", {"seed": m["seed"]}, args.out / "mlp",
                    fixed={"rounds": m["rounds"], "steps": m["steps"]})
    grok = run_sweep(args, "mechwork.studies.tickets:grok_tickets", {"seed": g["seed"], "sparsity": g["sparsity"]},
                     args.out / "grok", fixed={"p": g["p"], "train_frac": g["train_frac"], "steps": g["steps"]})
    # (a) accuracy against remaining weights, median over seeds
    runs = [r["result"] for r in mlp.records() if "result" in r]
    curve = []
    for i in range(m["rounds"] + 1):
        rows = [run["rounds"][i] for run in runs]
        entry = {"round": i, "remaining": rows[0]["remaining"]}
        for key in ("ticket", "reinit", "random_prune"):
            vals = [row[key] for row in rows if key in row]
            entry[key] = median_or_none(vals)
        curve.append(entry)
    dense = curve[0]["ticket"]
    assert dense is not None
    at20 = [c for c in curve if c["remaining"] >= 0.2 - 1e-9]
    matches = all(c["ticket"] is not None and c["ticket"] >= dense - 0.01 for c in at20)
    last = curve[-1]

    def first_drop(key: str) -> float | None:  # remaining fraction where accuracy first falls 1 point below dense
        return next((c["remaining"] for c in curve[1:] if c[key] is not None and c[key] < dense - 0.01), None)

    drop_ticket, drop_reinit = first_drop("ticket"), first_drop("reinit")
    # "degrades later": re-initialisation drops below dense - 1 point at a sparsity where the ticket has not
    later = drop_reinit is not None and (drop_ticket is None or drop_ticket < drop_reinit)
    # (b) steps to grok
    gt = grok.frame()
    grok_rows = []
    for sp in g["sparsity"]:
        sub = gt[gt["sparsity"] == sp]
        med = {k: median_or_none([None if v != v else v for v in sub[k].tolist()]) for k in ("dense", "ticket",
                                                                                              "random")}
        shared = [len(s) / max(1, len(d)) for s, d in zip(sub["shared_freqs"], sub["dense_freqs"], strict=True)]
        grok_rows.append({"sparsity": sp, **{f"median_{k}": v for k, v in med.items()},
                          "key_freqs_kept": median_or_none(shared)})
    def sooner(t: float | None, other: float | None) -> bool:
        return t is not None and (other is None or t < other)

    faster = all(sooner(r["median_ticket"], r["median_dense"]) and sooner(r["median_ticket"], r["median_random"])
                 for r in grok_rows)
    a_ok = matches and later
    drops = ", ".join(f"{k} first 1 point below dense at {'never' if v is None else f'{v:.1%} remaining'}"
                      for k, v in (("ticket", drop_ticket), ("reinit", drop_reinit),
                                   ("random prune", first_drop("random_prune"))))
    verdict_a = ("reproduced" if a_ok else "partly reproduced" if (matches or later) else "not reproduced") + (
        f": tickets within 1 point of dense ({dense:.3f}) down to 20% remaining: {'yes' if matches else 'no'}; "
        f"{drops} (down to {last['remaining']:.1%}: ticket {last['ticket']:.3f}, reinit {last['reinit']:.3f})")
    verdict_b = ("reproduced" if faster else "not reproduced") + ": " + "; ".join(
        f"sparsity {r['sparsity']}: ticket {r['median_ticket']}, dense {r['median_dense']}, random {r['median_random']}"
        f" steps" for r in grok_rows)
    results = {"plan": plan, "mlp_curve": curve, "mlp_runs": runs, "grok": grok_rows,
               "grok_points": gt.to_dict("records"), "verdict_mlp": verdict_a, "verdict_grok": verdict_b}
    command = f"python experiments/lottery_tickets.py{' --quick' if args.quick else ''}"
    both = "reproduced" if a_ok and faster else "partly reproduced" if (a_ok or faster) else "not reproduced"
    page = verdict_page(
        "Lottery tickets: IMP on a digits MLP, and grokking tickets",
        claim="(a) winning tickets match the dense net to ~20% weights and outlast re-initialisation; "
              "(b) a mask from the grokked model removes most of the grokking delay",
        anchor="Frankle & Carbin 2019 (LeNet-300-100 on MNIST); Minegishi et al. 2023",
        ours=f"(a) {verdict_a.split(': ', 1)[1]}. (b) {verdict_b.split(': ', 1)[1]}",
        verdict=f"{both}: (a) {verdict_a.split(':')[0]}, (b) {verdict_b.split(':')[0]}", command=command)
    import plotly.graph_objects as go

    fig = go.Figure()
    for key, name in (("ticket", "winning ticket"), ("reinit", "same mask, new init"),
                      ("random_prune", "random mask")):
        pts = [(c["remaining"], c[key]) for c in curve if c[key] is not None]
        fig.add_scatter(x=[x for x, _ in pts], y=[y for _, y in pts], name=name, mode="lines+markers")
    xs = [c["remaining"] for c in curve]
    fig.add_scatter(x=[min(xs), max(xs)], y=[dense, dense], name="dense", mode="lines", line={"dash": "dot"})
    fig.update_xaxes(type="log", autorange="reversed", title_text="fraction of weights remaining")
    fig.update_layout(title=f"(a) Test accuracy on digits (median of {len(runs)} seeds)",
                      yaxis_title="test accuracy")
    page.plotly(fig, title="(a) Accuracy against sparsity")
    import pandas as pd

    page.table(pd.DataFrame(curve), title="(a) Every round")
    bars = go.Figure()
    budget = g["steps"]
    for key, name in (("dense", "dense"), ("ticket", "grokking ticket"), ("random", "random mask")):
        ys = [r[f"median_{key}"] for r in grok_rows]
        bars.add_bar(x=[f"{r['sparsity']:.0%} pruned" for r in grok_rows], y=[budget if y is None else y for y in ys],
                     name=name, text=["not grokked" if y is None else f"{y:g}" for y in ys])
    bars.update_layout(title=f"(b) Median steps to grok (budget {budget}; median of {len(g['seed'])} seeds)",
                       xaxis_title="share of weights pruned", yaxis_title="steps", barmode="group")
    page.plotly(bars, title="(b) Steps to grok: dense, ticket, random mask")
    page.table(pd.DataFrame(grok_rows), title="(b) Median steps to grok")
    finish(args, results, page)
    print(results["verdict_mlp"])
    print(results["verdict_grok"])
    return 0


if __name__ == "__main__":
    sys.exit(main())
