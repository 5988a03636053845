"""Infinite width: coordinate checks, learning-rate transfer and lazy training under SP, NTK and muP.

Anchors: Yang et al. 2022 (Tensor Programs V): under muP activations keep
their scale as width grows and the optimal learning rate stays put, while
under the standard parametrisation (SP) activations blow up and the optimum
drifts (a probe of this digits setting saw log2 lr -6 -> -8 from width 64 to
1024 under SP, about -6 under muP). Jacot et al. 2018 / Lee et al. 2019: under
the NTK parametrisation the tangent kernel's relative change over training
falls like width^-0.5 (lazy training); under muP features keep moving.

Here: MLPs on scikit-learn's digits (:mod:`mechwork.studies.width`,
:mod:`mechwork.studies.width_study`), muP with base width 64 (where it equals SP).

(a) Coordinate check: 3 hidden layers, 5 full-batch Adam steps at lr 2^-6
    on 256 training images; mean |pre-activation| of each layer (and the
    logits) after step 5, against width 64-2048, seeds 0-2.
(b) Transfer: 2 hidden layers, Adam, 300 steps of batch 64, lr 2^-11 .. 2^-2,
    widths 64 / 256 / 1024, seeds 0-2. Criterion, fixed before the runs: the
    final loss on the whole training split (as in the muP paper's train-loss
    plots), averaged over seeds; a diverged run counts as infinite loss.
(c) Lazy training: 2 hidden layers, no biases, 100 full-batch SGD steps on
    256 images, widths 64-2048, seeds 0-2. Kernel: the lr-weighted tangent
    kernel on 32 test images, traced over the logits; its relative change
    ||K_T - K_0|| / ||K_0||. Base lr 0.1 under muP and 64 x 0.1 under NTK, so
    both start as the same network with the same dynamics at width 64.

Verdict rules, fixed before the runs (slopes are least-squares log-log fits
over all widths of the seed means):
(a) reproduced if every muP layer's |slope| <= 0.1 and SP's logits slope >= 0.25;
    partly if only one holds.
(b) with shift = optimum at the widest width minus at the narrowest (log2 lr):
    reproduced if |SP shift| >= 2 and |muP shift| <= 1; partly if |SP shift| > |muP shift|.
(c) reproduced if the NTK slope is within -0.5 +- 0.25 and |muP slope| <= 0.15;
    partly if the NTK slope <= -0.25 and the muP slope is at least 0.25 higher.

    python experiments/infinite_width.py            # full (14 min with other jobs on the machine)
    python experiments/infinite_width.py --quick    # 1 seed, fewer widths and rates
"""

from __future__ import annotations

import math
import sys
from typing import Any

from mechwork.studies.study import finish, pick_plan, run_sweep, study_args, verdict_page
from mechwork.studies.width import check_widths
from mechwork.studies.width_study import loglog_slope

ANCHOR = {"transfer_probe_log2_lr": {"sp": {"64": -6, "1024": -8}, "mup": {"64": -6, "1024": -6}},
          "ntk_kernel_change_slope": -0.5}
FULL = {"coord": {"widths": [64, 128, 256, 512, 1024, 2048], "seeds": [0, 1, 2], "steps": 5, "base_width": 64},
        "transfer": {"widths": [64, 256, 1024], "log2_lr": list(range(-11, -1)), "seeds": [0, 1, 2], "steps": 300,
                     "base_width": 64},
        "lazy": {"widths": [64, 128, 256, 512, 1024, 2048], "seeds": [0, 1, 2], "steps": 100, "lr": 0.1,
                 "base_width": 64, "n_train": 256, "n_kernel": 32}}
QUICK = {"coord": {**FULL["coord"], "widths": [64, 256, 1024], "seeds": [0]},
         "transfer": {**FULL["transfer"], "log2_lr": list(range(-10, -3)), "seeds": [0]},
         "lazy": {**FULL["lazy"], "widths": [64, 256, 1024], "seeds": [0]}}
SMOKE = {"coord": {"widths": [16, 32], "seeds": [0], "steps": 2, "base_width": 16},
         "transfer": {"widths": [16, 32], "log2_lr": [-7, -5], "seeds": [0], "steps": 10, "base_width": 16},
         "lazy": {"widths": [16, 32], "seeds": [0], "steps": 5, "lr": 0.1, "base_width": 16, "n_train": 32,
                  "n_kernel": 8}}


def _mean(values: list[Any]) -> float:
    """Mean, infinite if any value is missing or NaN (a diverged run)."""
    if not values or any(v is None or v != v for v in values):
        return math.inf
    return sum(float(v) for v in values) / len(values)


def _slope(widths: list[int], ys: list[float]) -> float | None:
    ok = [(w, y) for w, y in zip(widths, ys, strict=True) if y is not None and math.isfinite(y) and y > 0]
    return loglog_slope(*zip(*ok, strict=True)) if len(ok) >= 2 else None  # type: ignore[arg-type]


def _range(values: list[float | None]) -> list[float] | None:
    got = [v for v in values if v is not None]
    return [min(got), max(got)] if len(got) == len(values) and got else None


def _run(args: Any, name: str, fn: str, grid: dict[str, list[Any]], fixed: dict[str, Any]) -> Any:
    return run_sweep(args, f"mechwork.studies.width_study:{fn}", grid, args.out / name, fixed=fixed).frame()


def coord_check(args: Any, plan: dict[str, Any]) -> tuple[dict[str, Any], str]:
    widths = list(check_widths(plan["widths"]))
    df = _run(args, "coord", "coord_point", {"param": ["sp", "mup"], "width": widths, "seed": plan["seeds"]},
              {"steps": plan["steps"], "base_width": plan["base_width"]})
    layers = df["layers"].iloc[0]
    out: dict[str, Any] = {"widths": widths, "layers": layers}
    for param in ("sp", "mup"):
        sub = df[df["param"] == param]
        final = {w: [r[-1] for r in sub[sub["width"] == w]["mean_abs"]] for w in widths}
        means = {layer: [_mean([f[i] for f in final[w]]) for w in widths] for i, layer in enumerate(layers)}
        last = {(w, s): r[-1] for w, s, r in zip(sub["width"], sub["seed"], sub["mean_abs"], strict=True)}
        per_seed = {layer: [_slope(widths, [last[w, s][i] for w in widths]) for s in plan["seeds"]]
                    for i, layer in enumerate(layers)}
        out[param] = {"mean_abs_final": means, "slopes": {k: _slope(widths, v) for k, v in means.items()},
                      "slope_range_over_seeds": {k: _range(v) for k, v in per_seed.items()}}
    mup_flat = all(s is not None and abs(s) <= 0.1 for s in out["mup"]["slopes"].values())
    sp_logits = out["sp"]["slopes"]["output"]
    sp_grows = sp_logits is not None and sp_logits >= 0.25
    fmt = lambda d: ", ".join(f"{k} {v:+.2f}" for k, v in d.items() if v is not None)
    why = f"log-log slopes of mean |h| after {plan['steps']} Adam steps, SP: {fmt(out['sp']['slopes'])}; " \
          f"muP: {fmt(out['mup']['slopes'])}"
    label = "reproduced" if mup_flat and sp_grows else "partly reproduced" if mup_flat or sp_grows else "not reproduced"
    return out, f"{label}: {why}"


def lr_transfer(args: Any, plan: dict[str, Any]) -> tuple[dict[str, Any], str]:
    widths, lrs = list(check_widths(plan["widths"])), plan["log2_lr"]
    df = _run(args, "transfer", "transfer_point",
              {"param": ["sp", "mup"], "width": widths, "log2_lr": lrs, "seed": plan["seeds"]},
              {"steps": plan["steps"], "base_width": plan["base_width"]})
    out: dict[str, Any] = {"widths": widths, "log2_lr": lrs}
    for param in ("sp", "mup"):
        curves: dict[str, list[float | None]] = {}
        optima: dict[str, int] = {}
        seed_optima: dict[str, list[int]] = {}
        for w in widths:
            sub = df[(df["param"] == param) & (df["width"] == w)]
            curve = [_mean(sub[sub["log2_lr"] == lr]["train_loss"].tolist()) for lr in lrs]
            curves[str(w)] = [None if math.isinf(c) else c for c in curve]
            optima[str(w)] = lrs[curve.index(min(curve))]
            seed_optima[str(w)] = []
            for s in plan["seeds"]:
                by_lr = dict(zip(sub[sub["seed"] == s]["log2_lr"], sub[sub["seed"] == s]["train_loss"], strict=True))
                seed_curve = [_mean([by_lr[lr]]) for lr in lrs]
                seed_optima[str(w)].append(lrs[seed_curve.index(min(seed_curve))])
        shift = optima[str(widths[-1])] - optima[str(widths[0])]
        out[param] = {"train_loss": curves, "optimum_log2_lr": optima, "per_seed_optima": seed_optima,
                      "shift": shift, "best_loss": {str(w): min(c for c in curves[str(w)] if c is not None)
                                                    for w in widths if any(c is not None for c in curves[str(w)])}}
    sp, mup = abs(out["sp"]["shift"]), abs(out["mup"]["shift"])
    fmt = lambda d: " / ".join(f"{v}" for v in d.values())
    seeds = lambda p: "; ".join(",".join(map(str, v)) for v in out[p]["per_seed_optima"].values())
    why = (f"optimal log2 lr at widths {' / '.join(map(str, widths))}: SP {fmt(out['sp']['optimum_log2_lr'])}, "
           f"muP {fmt(out['mup']['optimum_log2_lr'])} (per seed, SP {seeds('sp')}; muP {seeds('mup')})")
    label = "reproduced" if sp >= 2 and mup <= 1 else "partly reproduced" if sp > mup else "not reproduced"
    return out, f"{label}: {why}"


def lazy_training(args: Any, plan: dict[str, Any]) -> tuple[dict[str, Any], str]:
    widths = list(check_widths(plan["widths"]))
    lr = {"mup": plan["lr"], "ntk": plan["lr"] * plan["base_width"]}
    frames = {p: _run(args, f"lazy-{p}", "lazy_point", {"width": widths, "seed": plan["seeds"]},
                      {"param": p, "lr": lr[p], "steps": plan["steps"], "base_width": plan["base_width"],
                       "n_train": plan["n_train"], "n_kernel": plan["n_kernel"]}) for p in ("ntk", "mup")}
    out: dict[str, Any] = {"widths": widths, "lr": lr}
    for param, df in frames.items():
        row: dict[str, Any] = {}
        for key in ("kernel_change", "feature_change", "train_loss"):
            row[key] = [_mean(df[df["width"] == w][key].tolist()) for w in widths]
        row["slope"] = _slope(widths, row["kernel_change"])
        row["feature_slope"] = _slope(widths, row["feature_change"])
        wide = [i for i, w in enumerate(widths) if w >= 4 * widths[0]]
        row["slope_wide"] = _slope([widths[i] for i in wide], [row["kernel_change"][i] for i in wide])
        per_seed = [_slope(widths, [float(df[(df["width"] == w) & (df["seed"] == s)]["kernel_change"].iloc[0])
                                    for w in widths]) for s in plan["seeds"]]
        row["slope_range_over_seeds"] = _range(per_seed)
        out[param] = {k: ([None if isinstance(x, float) and not math.isfinite(x) else x for x in v]
                          if isinstance(v, list) else v) for k, v in row.items()}
    ntk, mup = out["ntk"]["slope"], out["mup"]["slope"]
    f = lambda v: "n/a" if v is None else f"{v:+.2f}"
    why = (f"slope of the kernel's relative change against width: NTK {f(ntk)}, muP {f(mup)} "
           f"(widths >= {4 * widths[0]} only: NTK {f(out['ntk']['slope_wide'])}, muP {f(out['mup']['slope_wide'])}); "
           f"of the last hidden layer's features: NTK {f(out['ntk']['feature_slope'])}, "
           f"muP {f(out['mup']['feature_slope'])}")
    ok_ntk = ntk is not None and -0.75 <= ntk <= -0.25
    ok_mup = mup is not None and abs(mup) <= 0.15
    partly = ntk is not None and mup is not None and ntk <= -0.25 and mup >= ntk + 0.25
    label = "reproduced" if ok_ntk and ok_mup else "partly reproduced" if partly else "not reproduced"
    return out, f"{label}: {why}"


def _figures(page: Any, coord: dict[str, Any], transfer: dict[str, Any], lazy: dict[str, Any]) -> None:
    import pandas as pd
    import plotly.graph_objects as go
    from plotly.subplots import make_subplots

    fig = make_subplots(rows=1, cols=2, subplot_titles=["SP", "muP"], shared_yaxes=True)
    for col, param in enumerate(("sp", "mup"), start=1):
        for layer, ys in coord[param]["mean_abs_final"].items():
            fig.add_scatter(x=coord["widths"], y=ys, mode="lines+markers", name=f"{param} {layer}", row=1, col=col)
    fig.update_xaxes(type="log", title_text="width")
    fig.update_yaxes(type="log", title_text="mean |pre-activation| after the last step")
    page.plotly(fig, title="(a) Coordinate check", caption="flat lines: the layer's scale does not change with width")
    fig = make_subplots(rows=1, cols=2, subplot_titles=["SP", "muP"], shared_yaxes=True)
    for col, param in enumerate(("sp", "mup"), start=1):
        for w, ys in transfer[param]["train_loss"].items():
            fig.add_scatter(x=transfer["log2_lr"], y=ys, mode="lines+markers", name=f"{param} width {w}", row=1,
                            col=col)
    fig.update_xaxes(title_text="log2 learning rate")
    fig.update_yaxes(type="log", title_text="final training loss (seed mean)")
    page.plotly(fig, title="(b) Learning-rate transfer", caption="gaps in a line: at least one seed diverged")
    fig = go.Figure()
    for param in ("ntk", "mup"):
        fig.add_scatter(x=lazy["widths"], y=lazy[param]["kernel_change"], mode="lines+markers",
                        name=f"{param} kernel change")
        fig.add_scatter(x=lazy["widths"], y=lazy[param]["feature_change"], mode="lines+markers",
                        line={"dash": "dot"}, name=f"{param} last-layer feature change")
    fig.update_layout(xaxis_type="log", yaxis_type="log", xaxis_title="width", yaxis_title="relative change")
    page.plotly(fig, title="(c) Lazy training")
    rows = [{"part": "a", "param": p, "quantity": f"mean |h| slope, {k}", "value": v}
            for p in ("sp", "mup") for k, v in coord[p]["slopes"].items()]
    rows += [{"part": "b", "param": p, "quantity": f"optimal log2 lr, width {w}", "value": v}
             for p in ("sp", "mup") for w, v in transfer[p]["optimum_log2_lr"].items()]
    rows += [{"part": "c", "param": p, "quantity": q, "value": lazy[p][k]} for p in ("ntk", "mup")
             for q, k in (("kernel change slope", "slope"), ("feature change slope", "feature_slope"))]
    page.table(pd.DataFrame(rows), title="Numbers behind the verdicts")


def main(argv: list[str] | None = None) -> int:
    args = study_args("infinite_width", __doc__ or "", argv)
    plan = pick_plan(args, FULL, QUICK, SMOKE)
    coord, v_coord = coord_check(args, plan["coord"])
    transfer, v_transfer = lr_transfer(args, plan["transfer"])
    lazy, v_lazy = lazy_training(args, plan["lazy"])
    labels = [v.split(":")[0] for v in (v_coord, v_transfer, v_lazy)]
    overall = ("reproduced" if all(x == "reproduced" for x in labels) else
               "not reproduced" if all(x == "not reproduced" for x in labels) else "partly reproduced")
    verdict = f"{overall}: (a) {labels[0]}, (b) {labels[1]}, (c) {labels[2]}"
    results = {"plan": plan, "anchor": ANCHOR, "coord": coord, "transfer": transfer, "lazy": lazy,
               "verdict_coord": v_coord, "verdict_transfer": v_transfer, "verdict_lazy": v_lazy, "verdict": verdict}
    command = f"python experiments/infinite_width.py{' --quick' if args.quick else ''}"
    page = verdict_page("Infinite width: SP, NTK and muP",
                        claim="muP keeps activations and the optimal lr fixed as width grows, SP does not; "
                              "under NTK the kernel freezes with width (relative change ~ width^-0.5)",
                        anchor="Yang et al. 2022 (TP V); probe: SP log2 lr -6 -> -8 (width 64 -> 1024), muP ~ -6; "
                               "Jacot et al. 2018 / Lee et al. 2019: slope -0.5",
                        ours="; ".join(v.split(": ", 1)[1] for v in (v_coord, v_transfer, v_lazy)),
                        verdict=verdict, command=command)
    page.kv([("(a) coordinate check", v_coord), ("(b) lr transfer", v_transfer), ("(c) lazy training", v_lazy)],
            title="Verdicts by part")
    _figures(page, coord, transfer, lazy)
    finish(args, results, page)
    print("\n".join((v_coord, v_transfer, v_lazy)))
    return 0


if __name__ == "__main__":
    sys.exit(main())
