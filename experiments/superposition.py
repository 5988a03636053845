"""Toy models of superposition: importance and sparsity, the phase diagram, and feature dimensionality.

Anchor: Elhage et al. (2022), "Toy Models of Superposition", with the set-up of Anthropic's notebook and
ARENA 1.3.1: ReLU-output models ``ReLU(W^T W x + b)``, features ``U[0, 1]`` present with probability
``1 - S``, importance-weighted squared error, Adam lr 1e-3, batch 1024, 10,000 steps, constant lr; every
model of a part is one instance of one batched model.

(1) n=20 features, m=5 dimensions, importance 0.9**i, S in {0, 0.7, 0.9, 0.97, 0.99, 0.997, 0.999}: at S=0
    the 5 most important features get orthogonal dimensions and the rest are dropped; as S grows more
    features are packed in (the paper's Figure 2/3 bars).
(2) n=2, m=1: the phase of the extra feature over its relative importance (0.1-10) and the feature density
    (1-0.01): dense and less important -> not represented; dense and more important -> a dedicated dimension
    (the other feature dropped); sparse -> superposition (the two antipodal). Each cell is the lowest-loss of
    3 restarts.
(3) n=200, m=20, uniform importance, density 20**-t for 20 t in [0, 1] (ARENA): feature dimensionalities
    ``D_i`` cluster at the sticky fractions 1, 3/4, 2/3, 1/2, 2/5, 3/8.

    python experiments/superposition.py            # full (23 min on a shared 2-core machine)
    python experiments/superposition.py --quick    # smaller parts (33 s here)
"""

from __future__ import annotations

import itertools
import json
import sys
from pathlib import Path
from typing import Any

import torch

from mechwork.studies.study import finish, pick_plan, study_args, verdict_page

RESULTS = Path(__file__).resolve().parent / "results" / "superposition.json"
SPARSITIES = [0.0, 0.7, 0.9, 0.97, 0.99, 0.997, 0.999]
FULL = {"sparsity": {"n": 20, "m": 5, "sparsities": SPARSITIES, "steps": 10_000, "batch": 1024, "lr": 1e-3},
        "phase": {"importance": [round(10 ** (k / 6 - 1), 4) for k in range(13)],
                  "density": [round(10 ** (-k / 5), 4) for k in range(11)], "restarts": 3, "steps": 10_000,
                  "batch": 1024, "lr": 1e-3},
        "dims": {"n": 200, "m": 20, "instances": 20, "top": 20, "steps": 10_000, "batch": 1024, "lr": 1e-3}}
QUICK = {"sparsity": {**FULL["sparsity"], "steps": 4000},
         "phase": {"importance": [0.1, 0.3, 1.0, 3.0, 10.0], "density": [1.0, 0.3, 0.1, 0.03, 0.01], "restarts": 2,
                   "steps": 4000, "batch": 1024, "lr": 1e-3},
         "dims": {"n": 40, "m": 8, "instances": 8, "top": 20, "steps": 3000, "batch": 512, "lr": 1e-3}}
SMOKE = {"sparsity": {"n": 6, "m": 2, "sparsities": [0.0, 0.9], "steps": 30, "batch": 64, "lr": 1e-2},
         "phase": {"importance": [0.3, 3.0], "density": [1.0, 0.03], "restarts": 2, "steps": 30, "batch": 64,
                   "lr": 1e-2},
         "dims": {"n": 12, "m": 3, "instances": 3, "top": 20, "steps": 30, "batch": 64, "lr": 1e-2}}
# the phase diagram's three regions, fixed before the run (relative importance r, density d)
REGIONS = {"not represented": lambda r, d: d >= 0.5 and r <= 0.5,
           "dedicated dimension": lambda r, d: d >= 0.5 and r >= 2,
           "superposition": lambda r, d: d <= 0.05 and 0.5 <= r <= 2}
REGION_TEXT = {"not represented": "density >= 0.5 and r <= 0.5", "dedicated dimension": "density >= 0.5 and r >= 2",
               "superposition": "density <= 0.05 and 0.5 <= r <= 2"}


def trained(args: Any, part: str, plan: dict[str, Any], build: Any) -> Any:
    """The part's trained model, reloaded from ``<out>/<part>.safetensors`` when the plan is unchanged."""
    from mechwork.io import load_tensors, save_tensors_atomic
    from mechwork.studies.superposition import ToyModel, train_toy

    cfg = build(plan)
    model = ToyModel(cfg, seed=0)
    path = Path(args.out) / f"{part}.safetensors"
    key = json.dumps(plan, sort_keys=True)
    if path.exists():
        tensors, meta = load_tensors(path)
        if meta.get("plan") == key:
            model.load_state_dict(tensors)
            return model
    train_toy(model, steps=plan["steps"], batch_size=plan["batch"], lr=plan["lr"], seed=0, desc=part)
    Path(args.out).mkdir(parents=True, exist_ok=True)
    save_tensors_atomic({k: v.detach().contiguous() for k, v in model.state_dict().items()}, path, {"plan": key})
    return model


def part_sparsity(args: Any, plan: dict[str, Any]) -> tuple[dict[str, Any], Any]:
    from mechwork.studies.superposition import ToyModelConfig, geometry, gram

    model = trained(args, "sparsity", plan, lambda p: ToyModelConfig.sweep(p["n"], p["m"], p["sparsities"], 0.9))
    g = geometry(model)
    m = plan["m"]
    dense = [i for i, s in enumerate(g.sparsity) if s == 0]
    sparse = [i for i, s in enumerate(g.sparsity) if s >= 0.9]
    norms = g.norms
    out: dict[str, Any] = {"labels": list(g.labels), "represented": g.represented(),
                           "norms": [[round(float(v), 4) for v in row] for row in norms]}
    if dense:
        i = dense[0]
        kept = [f for f in range(plan["n"]) if float(norms[i, f]) > 0.5]
        G = gram(g.W)[i][:m, :m]
        off = float((G - torch.diag(torch.diagonal(G))).abs().max())
        out.update(dense_kept=kept, dense_offdiag_max=round(off, 4),
                   dense_top_norms=[round(float(v), 3) for v in norms[i, :m]],
                   dense_rest_max=round(float(norms[i, m:].max()), 4))
        out["check_dense"] = kept == list(range(m)) and off <= 0.1
    else:
        out["check_dense"] = False
    out["sparse_min_represented"] = min(g.represented()[i] for i in sparse) if sparse else None
    out["check_sparse"] = bool(sparse) and out["sparse_min_represented"] >= min(10, plan["n"] // 2)
    reps = g.represented()
    out["monotone"] = all(a <= b for a, b in itertools.pairwise(reps))
    return out, g


def part_phase(args: Any, plan: dict[str, Any]) -> tuple[dict[str, Any], Any]:
    """The phase diagram, reloaded from ``<out>/phase.safetensors`` (its best W per cell) when the plan is unchanged."""
    from mechwork.io import load_tensors, save_tensors_atomic
    from mechwork.studies.superposition import PhaseDiagram, phase_diagram

    path, key = Path(args.out) / "phase.safetensors", json.dumps(plan, sort_keys=True)
    p = None
    if path.exists():
        tensors, meta = load_tensors(path)
        if meta.get("plan") == key:
            saved = json.loads(meta["result"])
            p = PhaseDiagram(tuple(plan["importance"]), tuple(plan["density"]),
                             tuple(tuple(r) for r in saved["phases"]), tensors["W"], plan["restarts"],
                             saved["agreement"])
    if p is None:
        p = phase_diagram(plan["importance"], plan["density"], restarts=plan["restarts"], steps=plan["steps"],
                          batch_size=plan["batch"], lr=plan["lr"], seed=0)
        Path(args.out).mkdir(parents=True, exist_ok=True)
        save_tensors_atomic({"W": p.W.contiguous()}, path, {"plan": key, "result": json.dumps(
            {"phases": [list(r) for r in p.phases], "agreement": p.agreement})})
    regions = {}
    for name, inside in REGIONS.items():
        cells = [(r, d) for a, d in enumerate(p.density) for b, r in enumerate(p.relative_importance)
                 if inside(r, d)]
        hits = [(r, d) for (r, d) in cells if p.phases[p.density.index(d)][p.relative_importance.index(r)] == name]
        regions[name] = {"cells": len(cells), "match": len(hits), "rule": REGION_TEXT[name]}
    out = {"importance": list(p.relative_importance), "density": list(p.density),
           "phases": [list(r) for r in p.phases], "restarts": p.restarts, "agreement": round(p.agreement, 3),
           "regions": regions,
           "check": all(v["cells"] > 0 and v["match"] >= 0.8 * v["cells"] for v in regions.values())}
    return out, p


def part_dims(args: Any, plan: dict[str, Any]) -> tuple[dict[str, Any], Any]:
    from mechwork.studies.superposition import ToyModelConfig, dimensionalities

    def build(p: dict[str, Any]) -> Any:
        dens = (p["top"] ** -torch.linspace(0, 1, p["instances"])).tolist()
        return ToyModelConfig(p["n"], p["m"], p["instances"], [[d] for d in dens],
                              labels=tuple(f"1/(1-S)={1 / d:.3g}" for d in dens))

    d = dimensionalities(trained(args, "dims", plan, build))
    s = d.sticky()
    populated = [k for k, v in s["counts"].items() if v > 0]
    out = {"density": list(d.density), "dims_per_feature": [round(float(v), 4) for v in d.dims_per_feature],
           "D": [[round(float(v), 4) for v in row] for row in d.D], "represented": len(d.represented_D()),
           "sticky": s, "populated": populated,
           "check": s["n"] > 0 and s["share"] >= 2 * s["null_share"] and len(populated) >= 2}
    return out, d


def sentences(sp: dict[str, Any], ph: dict[str, Any], dm: dict[str, Any], plan: dict[str, Any]) -> list[str]:
    """What the page says, each sentence chosen by the measured condition."""
    m, n = plan["sparsity"]["m"], plan["sparsity"]["n"]
    out = []
    if "dense_kept" in sp:
        kept = sp["dense_kept"]
        if kept == list(range(m)):
            out.append(f"At S=0 exactly the {m} most important features have ||W_i|| > 0.5 "
                       f"(their norms {sp['dense_top_norms']}; the largest other norm {sp['dense_rest_max']}).")
        else:
            out.append(f"At S=0 the features with ||W_i|| > 0.5 are {kept}, not the {m} most important.")
        out.append(f"Their Gram matrix is {'diagonal' if sp['dense_offdiag_max'] <= 0.1 else 'not diagonal'} to 0.1 "
                   f"(largest off-diagonal |W_i . W_j| = {sp['dense_offdiag_max']}).")
    if sp["sparse_min_represented"] is not None:
        out.append(f"At S >= 0.9 every model represents at least {sp['sparse_min_represented']} of {n} features.")
    out.append("The number represented " + ("never falls" if sp["monotone"] else "does not rise monotonically")
               + f" as S grows: {sp['represented']}.")
    for name, v in ph["regions"].items():
        out.append(f"Phase region '{name}' ({v['rule']}): {v['match']} of {v['cells']} cells are {name}.")
    s = dm["sticky"]
    out.append(f"{100 * s['share']:.0f}% of the {s['n']} represented features have D_i within {s['tol']} of a "
               f"sticky fraction, against {100 * s['null_share']:.0f}% for a uniform spread; populated: "
               + (", ".join(f"{k} ({s['counts'][k]})" for k in dm["populated"]) or "none") + ".")
    return out


def main(argv: list[str] | None = None) -> int:
    args = study_args("superposition", __doc__, argv)
    torch.set_num_threads(1)
    plan = pick_plan(args, FULL, QUICK, SMOKE)
    from mechwork import bars
    from mechwork.studies import superfig

    with bars.command("superposition", quiet=args.quiet):
        bars.stage("importance and sparsity")
        sp, g = part_sparsity(args, plan["sparsity"])
        bars.stage("phase diagram")
        ph, p = part_phase(args, plan["phase"])
        bars.stage("dimensionality")
        dm, d = part_dims(args, plan["dims"])
    checks = {"dense_orthogonal_top_m": sp["check_dense"], "sparse_packs_more": sp["check_sparse"],
              "phase_regions": ph["check"], "sticky_fractions": dm["check"]}
    lines = sentences(sp, ph, dm, plan)
    n_ok = sum(checks.values())
    failed = [k for k, v in checks.items() if not v]
    verdict = ("reproduced" if n_ok == len(checks) else "partly reproduced" if n_ok else "not reproduced") + ": " \
        + (f"all {len(checks)} checks hold" if not failed else "fails " + ", ".join(failed))
    results = {"plan": plan, "checks": checks, "verdict": verdict, "sentences": lines, "sparsity": sp, "phase": ph,
               "dims": dm}
    command = "python experiments/superposition.py" + (" --quick" if args.quick else "")
    page = verdict_page("Toy models of superposition",
                        claim="sparsity lets a ReLU model pack more features than dimensions, with a phase change and "
                              "sticky geometries",
                        anchor="Elhage et al. 2022 (n=20, m=5 bars; n=2, m=1 phase diagram; n=200, m=20 "
                               "dimensionality, as in ARENA 1.3.1)",
                        ours=" ".join(lines[:3]), verdict=verdict, command=command)
    page.text("\n\n".join(lines), title="What the runs show")
    page.plotly(superfig.norms_figure(g), title="(1) Feature norms by sparsity",
                caption="Bars: ||W_i||; colour: sum over j != i of (W^_i . W_j)^2 (black: a dimension to itself).")
    page.plotly(superfig.gram_figure(g), title="(1) Gram matrices W^T W")
    page.plotly(superfig.phase_figure(p), title="(2) Phase diagram, n=2, m=1",
                caption="Paper's arrangement: dense and less important: not represented; dense and more "
                        "important: dedicated dimension; sparse: superposition.")
    page.plotly(superfig.dimensionality_figure(d), title="(3) Feature dimensionality")
    page.plotly(superfig.dimensionality_histogram(d), title="(3) Histogram of D_i")
    import pandas as pd

    page.table(pd.DataFrame([{"geometry": k, "fraction": f"{v:.3f}", "features within tol": dm["sticky"]["counts"][k]}
                             for k, v in __import__("mechwork.studies.superposition", fromlist=["STICKY"])
                             .STICKY.items()]), title="(3) Features at each sticky fraction")
    finish(args, results, page)
    if not args.quick and not args.smoke and args.out == Path("runs/studies/superposition"):
        from mechwork.io import write_json_atomic

        write_json_atomic(results, RESULTS)
        print(f"wrote {RESULTS}")
    print(verdict)
    return 0


if __name__ == "__main__":
    sys.exit(main())
