"""Optimisation and curvature: the edge of stability, Adam's edge, LayerNorm, and Omnigrok, on digits.

Every run is full batch on scikit-learn's digits (1,438 train / 359 test
images), with the square loss 0.5 * mean ||f(x) - onehot(y)||^2 and a
64-200-200-10 MLP; sharpness is the top Hessian eigenvalue by Lanczos
(``mechwork.studies.curvature``), measured on the whole training set.

(a) Edge of stability (Cohen et al. 2021): gradient descent on the tanh MLP at
    lr 0.1 and 0.2. Rule, fixed before the runs: the plateau is the median
    sharpness over the second half of the measurements made after the
    sharpness first reaches 90% of 2/lr; PASS if it is within 5% of 2/lr at
    both rates, and the loss still falls (non-monotonically) over that stretch.
(b) Adam (Cohen et al. 2022): full-batch Adam (betas 0.9, 0.999, eps 1e-8) at
    lr 1e-3 and 2e-3. The preconditioned sharpness (top eigenvalue of P^-1 H)
    should settle near 38/lr (same plateau rule, PASS within 10%), while the
    raw sharpness keeps rising (last measurement >= 1.1x its value when the
    plateau began) and, as the issue puts it, exceeds 2/lr.
(c) LayerNorm (exploratory): (a)'s network with LayerNorm after each hidden
    linear layer, same rates. Sharpness against 2/lr, and the effective
    learning rate lr / ||w||^2 of the scale-invariant hidden layers.
(d) Omnigrok (Liu et al. 2022): AdamW lr 1e-3 on the ReLU MLP, initial
    weights x1 or x8, weight decay 0.1 (so that lr * wd * steps = 2 in full
    mode: decay alone could undo most of the x8 within the budget), and x8
    without decay as a control. "Memorised": train accuracy >= 99%;
    "generalised": test accuracy >= 90%; lag = the steps between them.
    Delayed if the lag is >= 25% of the budget (or it never generalises);
    prompt if the lag is <= 10%.

    python experiments/optimisation.py            # full: 9 runs, about 12.5 CPU-minutes
    python experiments/optimisation.py --quick    # 7 shorter runs (Adam at 1e-3 only, no x8 control), ~3.5 CPU-min
"""

from __future__ import annotations

import sys
from typing import Any

from mechwork.studies.study import finish, pick_plan, run_sweep, study_args, verdict_page

GD = {"part": "gd", "lr": [0.1, 0.2], "layernorm": [False, True]}
OMNI = [(1.0, 0.1), (8.0, 0.1), (8.0, 0.0)]  # (initialisation scale, weight decay)
FULL = {"gd": {**GD, "steps": 3000, "measure_every": 50},
        "adam": {"lr": [1e-3, 2e-3], "steps": 1500, "measure_every": 50},
        "omnigrok": {"runs": OMNI, "steps": 20000, "measure_every": 200}}
QUICK = {"gd": {**GD, "steps": 2000, "measure_every": 100},
         "adam": {"lr": [1e-3], "steps": 800, "measure_every": 100},
         "omnigrok": {"runs": OMNI[:2], "steps": 5000, "measure_every": 250}}
TINY = {"sizes": [64, 16, 10], "iters": 5}
SMOKE = {"gd": {**GD, "lr": [0.1], "steps": 20, "measure_every": 10, **TINY},
         "adam": {"lr": [1e-3], "steps": 10, "measure_every": 5, **TINY},
         "omnigrok": {"runs": OMNI[:2], "steps": 20, "measure_every": 10, "sizes": TINY["sizes"]}}
GD_TOL, ADAM_TOL = 0.05, 0.10
PAPERS = {"eos": "Cohen et al. 2021 (ICLR): full-batch GD, sharpness rises to 2/lr and hovers just above it; "
                 "a probe of this set-up measured 19.9 +- 0.3 at lr 0.1 and about 10 at lr 0.2",
          "adam": "Cohen et al. 2022: the top eigenvalue of P^-1 H equilibrates at (2 + 2 beta1) / ((1 - beta1) lr) "
                  "= 38/lr, while the raw sharpness keeps rising",
          "layernorm": "Lyu, Li & Arora 2022; Arora, Li & Panigrahi 2022 (exploratory, no numbers to match)",
          "omnigrok": "Liu et al. 2022 (Omnigrok), MNIST MLP on 1,000 images: with the initial weights scaled up "
                      "and weight decay, test accuracy rises long after train accuracy; at the standard scale it "
                      "does not (qualitative)"}


def _fmt(v: float | None, spec: str = ".3g") -> str:
    return "n/a" if v is None else format(v, spec)


def _compact(obj: Any, most: int = 40) -> Any:
    """Curves for results.json: at most ``most`` rows each (``most`` * 2 loss points; the first and last kept),
    floats to 4 significant digits; the dashboard draws the full curves."""
    if isinstance(obj, dict) and "curve" in obj:
        obj = {**obj, "curve": _every(obj["curve"], most)} | ({"loss": _every(obj["loss"], 2 * most)}
                                                              if "loss" in obj else {})
    if isinstance(obj, float):
        return float(f"{obj:.4g}")
    if isinstance(obj, dict):
        return {k: _compact(v, most) for k, v in obj.items()}
    if isinstance(obj, list):
        return [_compact(v, most) for v in obj]
    return obj


def _every(rows: list[Any], most: int) -> list[Any]:
    stride = -(-len(rows) // most)
    return rows[::stride] + ([rows[-1]] if (len(rows) - 1) % stride else [])


def _word(n_ok: int, n: int) -> str:
    return "reproduced" if n_ok == n else "partly reproduced" if n_ok else "not reproduced"


def _specs(plan: dict[str, Any]) -> list[dict[str, Any]]:
    """Every run as one sweep point, the longest (Omnigrok) first so that both workers stay busy."""
    specs: list[dict[str, Any]] = []
    og = {k: v for k, v in plan["omnigrok"].items() if k != "runs"}
    for scale, wd in plan["omnigrok"]["runs"]:
        specs.append({"part": "omnigrok", "init_scale": scale, "weight_decay": wd, **og})
    gd = {k: v for k, v in plan["gd"].items() if k not in ("lr", "layernorm")}
    for norm in plan["gd"]["layernorm"]:
        for lr in plan["gd"]["lr"]:
            specs.append({**gd, "lr": lr, "layernorm": norm})
    adam = {k: v for k, v in plan["adam"].items() if k != "lr"}
    specs += [{"part": "adam", "lr": lr, **adam} for lr in plan["adam"]["lr"]]
    return specs


CROSS_REF = (
    "Studies I's weight-decay sweep (`experiments/grokking_wd_data.py`, full results in "
    "`experiments/results/grokking_wd_data.json`) is the same story on modular addition: with the standard "
    "initialisation, no run grokked without weight decay (0/10 within 3,000 steps), and more decay shortened "
    "the memorise-to-grok gap (30% data: 2,125 steps at wd 0.3, 975 at wd 1, 350 at wd 3). Omnigrok's reading "
    "is that weight decay pulls the weight norm into the range where the model generalises; here the delay is "
    "instead created on purpose, on digits, by starting far outside that range (x8).")
PARTS = {"adam": ("(b) Adam at its own edge", "full-batch Adam: the preconditioned sharpness settles near "
                  "38/lr (beta1 0.9) while the raw sharpness keeps rising; the issue also asks whether the raw "
                  "sharpness exceeds 2/lr"),
         "layernorm": ("(c) LayerNorm (exploratory)", "with LayerNorm, GD still trains at the edge of stability, "
                       "and the effective learning rate lr/||w||^2 of the scale-invariant layers falls as "
                       "their norm grows"),
         "omnigrok": ("(d) Omnigrok on digits", "a large initialisation (x8) plus weight decay delays "
                      "generalisation (test accuracy lags train accuracy for a long time); x1 does not")}


def _line(fig: Any, x: list[Any], y: list[Any], name: str, dash: str | None = None, **kw: Any) -> None:
    fig.add_scatter(x=x, y=y, mode="lines", name=name, line={"dash": dash} if dash else None, **kw)


def _sections(page: Any, results: dict[str, Any], ours: dict[str, str]) -> None:
    """The figures and tables of every part, after the verdict header of (a)."""
    import pandas as pd
    import plotly.graph_objects as go

    runs = results["runs"]
    plain = [r for r in runs["gd"] if not r["layernorm"]]
    fig = go.Figure()
    for r in plain:
        c = r["curve"]
        _line(fig, [p["step"] for p in c if "sharpness" in p], [p["sharpness"] for p in c if "sharpness" in p],
              f"lr {r['lr']}")
        _line(fig, [0, c[-1]["step"]], [r["threshold"]] * 2, f"2/lr = {r['threshold']:.3g}", "dash")
    fig.update_layout(title="(a) Sharpness under gradient descent", xaxis_title="step", yaxis_title="sharpness")
    page.plotly(fig, title="(a) Sharpness rises to 2/lr", caption="Top Hessian eigenvalue (Lanczos, full "
                "training set); dashed: 2/lr.")
    fig = go.Figure()
    for r in plain:
        _line(fig, [p[0] for p in r["loss"]], [p[1] for p in r["loss"]], f"lr {r['lr']}")
    fig.update_layout(title="(a) Training loss", xaxis_title="step", yaxis_title="square loss", yaxis_type="log")
    page.plotly(fig, title="(a) The loss keeps falling, not monotonically")
    page.table(pd.DataFrame(results["eos"]), title="(a) Plateaus")

    title, claim = PARTS["adam"]
    page.kv([("claim", claim), ("anchor", results["anchors"]["adam"]), ("ours", ours["adam"]),
             ("verdict", results["verdict_adam"])], title=title)
    for key, thr, name in (("pre_sharpness", "threshold", "38/lr"), ("sharpness", "gd_threshold", "2/lr")):
        fig = go.Figure()
        for r in runs["adam"]:
            c = [p for p in r["curve"] if key in p]
            _line(fig, [p["step"] for p in c], [p[key] for p in c], f"lr {r['lr']:g}")
            _line(fig, [0, r["curve"][-1]["step"]], [r[thr]] * 2, f"{name} = {r[thr]:.4g}", "dash")
        what = "preconditioned sharpness (top eigenvalue of P^-1 H)" if key == "pre_sharpness" else "raw sharpness"
        fig.update_layout(title=f"(b) Adam: {what}", xaxis_title="step", yaxis_title=what,
                          yaxis_type="log" if key == "sharpness" else None)
        page.plotly(fig, title=f"(b) {what}")
    page.table(pd.DataFrame(results["adam"]), title="(b) Adam")

    title, claim = PARTS["layernorm"]
    page.kv([("claim", claim), ("anchor", results["anchors"]["layernorm"]), ("ours", ours["layernorm"]),
             ("verdict", results["verdict_layernorm"])], title=title)
    lr_label = "lr / ||w1||^2 (first hidden layer)"
    for key, label, log in (("sharpness", "sharpness", False), ("eff_lr_0", lr_label, True)):
        fig = go.Figure()
        for r in runs["gd"]:
            c = [p for p in r["curve"] if key in p]
            _line(fig, [p["step"] for p in c], [p[key] for p in c],
                  f"lr {r['lr']} {'LayerNorm' if r['layernorm'] else 'plain'}", "dot" if r["layernorm"] else None)
        fig.update_layout(title=f"(c) {label}", xaxis_title="step", yaxis_title=label,
                          yaxis_type="log" if log else None)
        page.plotly(fig, title=f"(c) {label}, with and without LayerNorm")
    page.table(pd.DataFrame(results["layernorm"]).astype({"eff_lr_start": str, "eff_lr_end": str}),
               title="(c) With and without LayerNorm")

    title, claim = PARTS["omnigrok"]
    page.kv([("claim", claim), ("anchor", results["anchors"]["omnigrok"]), ("ours", ours["omnigrok"]),
             ("verdict", results["verdict_omnigrok"])], title=title)
    for keys, label in ((("train_acc", "test_acc"), "accuracy"), (("weight_norm",), "weight norm")):
        fig = go.Figure()
        for r in runs["omnigrok"]:
            for k in keys:
                _line(fig, [p["step"] for p in r["curve"]], [p.get(k) for p in r["curve"]],
                      f"x{r['init_scale']:g} wd {r['weight_decay']:g} {k}", "dot" if k == "train_acc" else None)
        fig.update_layout(title=f"(d) {label}", xaxis_title="step", yaxis_title=label)
        page.plotly(fig, title=f"(d) {label}")
    page.table(pd.DataFrame(results["omnigrok"]), title="(d) Memorised and generalised")
    page.markdown(CROSS_REF, title="(d) Against Studies I")


def main(argv: list[str] | None = None) -> int:
    args = study_args("optimisation", __doc__, argv)
    plan = pick_plan(args, FULL, QUICK, SMOKE)
    res = run_sweep(args, "mechwork.studies.stability:run_point", {"run": _specs(plan)}, fixed={"seed": 0},
                    progress=lambda s: print(s[:160]))
    runs = [{**r["params"]["run"], **r["result"]} for r in res.records()]
    gd = sorted((r for r in runs if r["part"] == "gd"), key=lambda r: (r["layernorm"], r["lr"]))
    adam = sorted((r for r in runs if r["part"] == "adam"), key=lambda r: r["lr"])
    omni = [r for r in runs if r["part"] == "omnigrok"]
    steps_og = plan["omnigrok"]["steps"]

    # (a) edge of stability
    plain = [r for r in gd if not r["layernorm"]]
    eos_rows = [{"lr": r["lr"], "2/lr": r["threshold"], "reached_at": r["plateau"]["reached"],
                 "plateau": r["plateau"]["median"], "ratio": r["plateau"]["ratio"],
                 "loss_at_reach": r["loss_at_reach"], "final_loss": r["final_loss"],
                 "loss_up_fraction": r["loss_up_fraction"]} for r in plain]
    at_edge = all(r["ratio"] is not None and abs(r["ratio"] - 1) <= GD_TOL for r in eos_rows)
    falls = all(r["loss_at_reach"] is not None and r["final_loss"] < r["loss_at_reach"]
                and r["loss_up_fraction"] > 0 for r in eos_rows)
    ours_eos = "; ".join(f"lr {r['lr']}: plateau {_fmt(r['plateau'])} vs 2/lr {r['2/lr']:.3g} "
                         f"(ratio {_fmt(r['ratio'])}, from step {r['reached_at']}); loss {_fmt(r['loss_at_reach'])}"
                         f" -> {_fmt(r['final_loss'])}, up on {100 * r['loss_up_fraction']:.0f}% of steps"
                         for r in eos_rows)
    verdict_eos = (f"{_word(at_edge + falls, 2)}: plateau within {GD_TOL:.0%} of 2/lr at every rate "
                   f"{'yes' if at_edge else 'no'}; loss keeps falling non-monotonically {'yes' if falls else 'no'}")

    # (b) Adam
    adam_rows = []
    for r in adam:
        pre = [c for c in r["curve"] if "pre_sharpness" in c]
        reach = r["plateau"]["reached"]
        raw_at_reach = next((c["sharpness"] for c in pre if c["step"] == reach), None)
        adam_rows.append({"lr": r["lr"], "38/lr": r["threshold"], "2/lr": r["gd_threshold"], "reached_at": reach,
                          "pre_plateau": r["plateau"]["median"], "ratio": r["plateau"]["ratio"],
                          "raw_at_reach": raw_at_reach, "raw_tail": r["raw_sharpness_tail"],
                          "raw_final": pre[-1]["sharpness"] if pre else None})
    settles = bool(adam_rows) and all(r["ratio"] is not None and abs(r["ratio"] - 1) <= ADAM_TOL for r in adam_rows)
    rising = all(r["raw_at_reach"] is not None and r["raw_final"] >= 1.1 * r["raw_at_reach"] for r in adam_rows)
    above = all(r["raw_tail"] is not None and r["raw_tail"] > r["2/lr"] for r in adam_rows)
    ours_adam = "; ".join(f"lr {r['lr']:g}: preconditioned plateau {_fmt(r['pre_plateau'], '.4g')} vs 38/lr "
                          f"{r['38/lr']:.4g} (ratio {_fmt(r['ratio'])}); raw sharpness {_fmt(r['raw_at_reach'])} -> "
                          f"{_fmt(r['raw_final'])} vs 2/lr {r['2/lr']:.4g}" for r in adam_rows)
    verdict_adam = (f"{_word(settles + rising + above, 3)}: preconditioned sharpness within {ADAM_TOL:.0%} of 38/lr "
                    f"{'yes' if settles else 'no'}; raw sharpness keeps rising {'yes' if rising else 'no'}; raw "
                    f"sharpness above 2/lr {'yes' if above else 'no'}"
                    + ("" if above or not adam_rows else " (at most {:.2g} of it)".format(
                        max((r["raw_final"] or 0) / r["2/lr"] for r in adam_rows))))

    # (c) LayerNorm (exploratory)
    ln_rows = []
    for r in gd:
        first, last = r["curve"][0], r["curve"][-1]
        ln_rows.append({"lr": r["lr"], "layernorm": r["layernorm"], "plateau": r["plateau"]["median"],
                        "ratio": r["plateau"]["ratio"], "final_loss": r["final_loss"],
                        "eff_lr_start": [first.get(f"eff_lr_{i}") for i in range(2)],
                        "eff_lr_end": [last.get(f"eff_lr_{i}") for i in range(2)]})
    ln = [r for r in ln_rows if r["layernorm"]]
    ln_edge = bool(ln) and all(r["ratio"] is not None and abs(r["ratio"] - 1) <= GD_TOL for r in ln)
    ln_falls = bool(ln) and all(None not in r["eff_lr_end"] + r["eff_lr_start"]
                                and all(e < s for s, e in zip(r["eff_lr_start"], r["eff_lr_end"], strict=True))
                                for r in ln)
    ours_ln = "; ".join(f"lr {r['lr']} {'with' if r['layernorm'] else 'without'} LN: plateau {_fmt(r['plateau'])} "
                        f"(ratio {_fmt(r['ratio'])}), lr/||w||^2 of the hidden layers "
                        f"{'/'.join(_fmt(v) for v in r['eff_lr_start'])} -> "
                        f"{'/'.join(_fmt(v) for v in r['eff_lr_end'])}"
                        for r in ln_rows)
    verdict_ln = (f"{_word(ln_edge + ln_falls, 2)}: exploratory. With LayerNorm the sharpness plateau is within "
                  f"{GD_TOL:.0%} of 2/lr {'yes' if ln_edge else 'no'}; the effective learning rate of the "
                  f"scale-invariant layers falls as their norm grows {'yes' if ln_falls else 'no'}")

    # (d) Omnigrok
    og_rows = []
    for r in sorted(omni, key=lambda r: (-r["weight_decay"], r["init_scale"])):
        lag = None if r["memorised"] is None or r["generalised"] is None else max(0, r["generalised"] - r["memorised"])
        og_rows.append({"init_scale": r["init_scale"], "weight_decay": r["weight_decay"],
                        "memorised": r["memorised"], "generalised": r["generalised"], "lag": lag,
                        "test_acc_at_memorised": r["test_acc_at_memorised"],
                        "final_train_acc": r["final_train_acc"], "final_test_acc": r["final_test_acc"]})
    x1 = next((r for r in og_rows if r["init_scale"] == 1.0 and r["weight_decay"] > 0), None)
    x8 = next((r for r in og_rows if r["init_scale"] == 8.0 and r["weight_decay"] > 0), None)
    prompt = x1 is not None and x1["lag"] is not None and x1["lag"] <= 0.10 * steps_og
    delayed = x8 is not None and x8["memorised"] is not None and (x8["lag"] is None or x8["lag"] >= 0.25 * steps_og)
    groks = delayed and x8 is not None and x8["generalised"] is not None
    ours_og = "; ".join(f"x{r['init_scale']:g} wd {r['weight_decay']:g}: memorised at {r['memorised']}, test >= 90% "
                        f"at {r['generalised']} (test acc {_fmt(r['final_test_acc'])} at the end)" for r in og_rows)
    verdict_og = (f"{_word(prompt + delayed + groks, 3)}: x1 generalises promptly {'yes' if prompt else 'no'}; "
                  f"x8 with weight decay lags {'yes' if delayed else 'no'}, and generalises within "
                  f"{steps_og:,} steps {'yes' if groks else 'no'}")

    results: dict[str, Any] = {
        "plan": plan, "anchors": PAPERS, "verdict_eos": verdict_eos, "verdict_adam": verdict_adam,
        "verdict_layernorm": verdict_ln, "verdict_omnigrok": verdict_og,
        "eos": eos_rows, "adam": adam_rows, "layernorm": ln_rows, "omnigrok": og_rows,
        "runs": _compact({"gd": gd, "adam": adam, "omnigrok": omni}),  # thinned: the page draws the full ones
    }
    command = f"python experiments/optimisation.py{' --quick' if args.quick else ''}"
    page = verdict_page("Optimisation: edge of stability, Adam, LayerNorm, Omnigrok",
                        claim="(a) full-batch GD: the sharpness rises to 2/lr and hovers there while the loss keeps "
                              "falling non-monotonically", anchor=PAPERS["eos"], ours=ours_eos, verdict=verdict_eos,
                        command=command)
    _sections(page, {**results, "runs": {"gd": gd, "adam": adam, "omnigrok": omni}},
              {"adam": ours_adam, "layernorm": ours_ln, "omnigrok": ours_og})
    finish(args, results, page)
    for key in ("verdict_eos", "verdict_adam", "verdict_layernorm", "verdict_omnigrok"):
        print(f"{key}: {results[key]}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
