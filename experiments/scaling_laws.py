"""Scaling laws on multitask sparse parity: do L(N) and L(D) follow the quantization model's exponents?

Anchor: Michaud et al. (2023), the quantization model. Subtask frequencies
follow p_i ∝ i^-(alpha+1). Each subtask is a quantum, learned whole or not at
all, most frequent first. The model then predicts L ∝ N^-alpha_N with
alpha_N = alpha, and L ∝ D^-alpha_D with alpha_D = alpha/(1+alpha). The task
is deterministic, so E = 0. For scale: Chinchilla (Hoffmann et al. 2022)
fitted alpha 0.34 and beta 0.28 on language. Besiroglu et al.'s (2024) refit
of the same data gives E 1.8172, A 482.01, alpha 0.3478, B 2085.43,
beta 0.3658.

Here: 32 subtasks, each a 3-bit parity of 12 task bits, with alpha = 0.4. So
the predictions are alpha_N 0.4 and alpha_D 0.286. A much smaller instance
than the paper's 500 subtasks of 100 bits, so that it fits this machine. The
models are one-hidden-layer ReLU MLPs of several widths (N counts every
parameter). Each trains with Adam (lr 1e-2, batch 1024) on D samples, or on
fresh samples at every step, where D is the number of samples seen. The loss
is the frequency-weighted test cross-entropy at the best validation step.
Fits: L(N, D) by Chinchilla's Approach 3 with Besiroglu's summed Huber
objective over every point; L(N) over the fresh-sample runs; L(D) over the
widest model's runs. All have 95% bootstrap intervals.

    python experiments/scaling_laws.py            # 7 widths x 10 data sizes, 5,000 steps
    python experiments/scaling_laws.py --quick    # 5 widths x 5 data sizes, 2,500 steps
"""

from __future__ import annotations

import sys
from typing import Any

from mechwork.studies.scaling import BESIROGLU, FitConfig, ScalingFit, fit_scaling
from mechwork.studies.study import finish, pick_plan, run_sweep, study_args, verdict_page

ALPHA = 0.4  # the task's Zipf exponent: p_i ∝ i^-(ALPHA + 1)
PREDICTED = {"alpha_N": ALPHA, "alpha_D": ALPHA / (1 + ALPHA), "E": 0.0}
ANCHORS = {"quantization_model": PREDICTED, "chinchilla": {"alpha": 0.34, "beta": 0.28}, "besiroglu": BESIROGLU}
TOLERANCE = 0.25  # an exponent agrees if within 25% of the prediction; E agrees if below 0.05 nats
TASK = {"n_tasks": 32, "n_bits": 12, "k": 3, "alpha": ALPHA}
FULL = {"width": [4, 8, 16, 32, 64, 128, 256], "n_train": [2**i for i in range(10, 19)] + [None],
        "steps": 5000, "n_starts": None, "n_boot": 200}
QUICK = {"width": [4, 16, 32, 64, 128], "n_train": [2**10, 2**12, 2**14, 2**16, None],
         "steps": 2500, "n_starts": None, "n_boot": 100}
SMOKE = {"width": [4, 8, 16], "n_train": [256, None], "steps": 20, "n_starts": 20, "n_boot": 3}


def _fit(L: list[float], x: list[float], d: list[float] | None, plan: dict[str, Any],
         variable: str = "N") -> ScalingFit | None:
    cfg = FitConfig(n_starts=plan["n_starts"], n_boot=plan["n_boot"], seed=0)
    if len(L) < (5 if d is not None else 3):
        return None
    return fit_scaling(L, x, d, config=cfg, variable=variable)


def finite_prediction(n_lo: int, n_hi: int) -> float | None:
    """The quantization model on this instance: the log-log slope of ln 2 x (mass of subtasks > n) over
    n_lo..n_hi subtasks learned. With 32 subtasks the tail runs out, so this is steeper than alpha."""
    import numpy as np

    from mechwork.studies.parity import SparseParity

    p = SparseParity(**TASK).probs().double().numpy()  # type: ignore[arg-type]
    n = np.arange(max(n_lo, 1), min(n_hi, len(p) - 1) + 1)
    if len(n) < 2:
        return None
    tail = 1 - np.cumsum(p)[n - 1]
    return float(-np.polyfit(np.log(n), np.log(tail), 1)[0])


def _show(fit: ScalingFit | None) -> dict[str, Any] | None:
    if fit is None:
        return None
    return {"params": fit.params, "ci95": {k: list(v) for k, v in fit.ci.items()}, "se": fit.se,
            "objective": fit.objective, "n_points": fit.n_points, "n_starts": fit.n_starts, "summary": fit.summary()}


def main(argv: list[str] | None = None) -> int:
    args = study_args("scaling_laws", __doc__, argv)
    plan = pick_plan(args, FULL, QUICK, SMOKE)
    res = run_sweep(args, "mechwork.studies.parity:parity_point", {"width": plan["width"], "n_train": plan["n_train"]},
                    fixed={"steps": plan["steps"], "seed": 0, **TASK})
    df = res.frame().sort_values(["width", "seen"])
    df["D"] = [int(d) if d == d and d is not None else int(s) for d, s in zip(df["n_train"], df["seen"], strict=True)]
    fresh = df[df["n_train"].isna()]
    widest = df[(df["width"] == max(plan["width"])) & df["n_train"].notna()]
    joint = _fit(df["test_loss"].tolist(), df["N"].tolist(), df["D"].tolist(), plan)
    by_n = _fit(fresh["test_loss"].tolist(), fresh["N"].tolist(), None, plan)
    by_d = _fit(widest["test_loss"].tolist(), widest["D"].tolist(), None, plan, variable="D")

    # the quantization model's exponents for 32 subtasks, over the range of subtasks our runs learned
    fin_n = finite_prediction(int(fresh["n_learned"].min()), int(fresh["n_learned"].max()))
    fin_a = finite_prediction(int(widest["n_learned"].min()), int(widest["n_learned"].max()))
    finite = {"alpha_N": fin_n, "alpha_D": None if fin_a is None else fin_a / (1 + ALPHA)}

    def near(v: float | None, want: float) -> bool:
        return v is not None and abs(v - want) <= TOLERANCE * want

    ours_n = [f.alpha for f in (joint, by_n) if f is not None]
    ours_d = [v for v in ((joint.beta if joint else None), (by_d.alpha if by_d else None)) if v is not None]
    checks = {"alpha_N_near_0.4": bool(ours_n) and all(near(v, PREDICTED["alpha_N"]) for v in ours_n),
              "alpha_D_near_0.286": bool(ours_d) and all(near(v, PREDICTED["alpha_D"]) for v in ours_d),
              "E_near_0": joint is not None and joint.E < 0.05}
    fmt = lambda f, name: "n/a" if f is None else (
        f"{f.params[name]:.3f}" + (f" [{f.ci[name][0]:.3f}, {f.ci[name][1]:.3f}]" if name in f.ci else ""))
    f3 = lambda v: "n/a" if v is None else f"{v:.2f}"
    context = (f"; the quantization model on this 32-subtask instance, over the subtasks our runs learned, "
               f"gives alpha_N {f3(finite['alpha_N'])} and alpha_D {f3(finite['alpha_D'])}")
    ours = (f"L(N, D) fit over {len(df)} runs: alpha {fmt(joint, 'alpha')}, beta {fmt(joint, 'beta')}, "
            f"E {fmt(joint, 'E')}; L(N) alone: alpha_N {fmt(by_n, 'alpha')}; "
            f"L(D) alone (width {max(plan['width'])}): alpha_D {fmt(by_d, 'alpha')}")
    n_ok = sum(checks.values())
    failed = ", ".join(k for k, ok in checks.items() if not ok)
    verdict = ("reproduced" if n_ok == 3 else "partly reproduced" if n_ok else "not reproduced") + ": " + ours + (
        f" (prediction alpha_N 0.4, alpha_D 0.286, E 0; off: {failed}){context}" if failed else context)
    points = df[["width", "N", "n_train", "D", "test_loss", "n_learned", "best_step", "seconds"]]
    results = {"plan": plan, "task": TASK, "anchors": ANCHORS, "tolerance": TOLERANCE, "finite_instance": finite,
               "fits": {"joint": _show(joint), "L_of_N": _show(by_n), "L_of_D": _show(by_d)},
               "checks": checks, "verdict": verdict,
               "points": [{k: (None if v != v else v) for k, v in r.items()} for r in points.to_dict("records")]}
    command = f"python experiments/scaling_laws.py{' --quick' if args.quick else ''}"
    page = verdict_page("Scaling laws on multitask sparse parity",
                        claim="loss falls as N^-alpha and D^-alpha/(1+alpha) when subtasks are Zipf(alpha+1)",
                        anchor="quantization model (Michaud et al. 2023): alpha_N 0.4, alpha_D 0.286, E 0 at "
                               "alpha 0.4; Chinchilla 0.34 / 0.28; Besiroglu et al. E 1.8172, A 482.01, "
                               "alpha 0.3478, B 2085.43, beta 0.3658",
                        ours=ours, verdict=verdict, command=command)
    for title, fit in (("L(N, D), Chinchilla Approach 3 over every run", joint),
                       ("L(N) over the fresh-sample runs", by_n),
                       (f"L(D) at width {max(plan['width'])}", by_d)):
        if fit is not None:
            page.plotly(fit.figure(), title=title)
            page.table(fit.to_frame(), title=f"{title}: parameters (95% bootstrap intervals)")
    import numpy as np
    import plotly.graph_objects as go

    from mechwork.studies.parity import SparseParity

    p = SparseParity(**TASK).probs().double().numpy()  # type: ignore[arg-type]
    tail = np.log(2) * (1 - np.concatenate([[0.0], np.cumsum(p)]))
    fig = go.Figure()
    fig.add_scatter(x=df["n_learned"].tolist(), y=df["test_loss"].tolist(), mode="markers", name="runs",
                    text=[f"width {w}, D {d}" for w, d in zip(df["width"], df["D"], strict=True)])
    fig.add_scatter(x=list(range(len(tail))), y=tail.tolist(), mode="lines", name="ln 2 x (mass of unlearned subtasks)")
    fig.update_layout(title="Loss against subtasks learned (test accuracy >= 90%)", xaxis_title="subtasks learned",
                      yaxis_title="test loss", yaxis_type="log")
    page.plotly(fig, title="The quantization picture: loss against subtasks learned")
    page.table(points, title="Every run")
    finish(args, results, page)
    print(verdict)
    return 0


if __name__ == "__main__":
    sys.exit(main())
