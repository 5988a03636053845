"""The study figures quoted in ``experiments/README.md``, recomputed from ``experiments/results/*.json``.

Every figure over seeds is written ``median [min, max]`` over the seeds the
study ran; a study with one seed has no spread, and the README says so. The
test suite (``tests/test_readme.py``) checks that every string this script
prints occurs, verbatim, in ``experiments/README.md``.

    python experiments/tables.py            # one line per figure: study, key, text
"""

from __future__ import annotations

import json
import math
import statistics
import sys
from collections.abc import Callable, Iterable
from pathlib import Path
from typing import Any

RESULTS = Path(__file__).resolve().parent / "results"


def load(name: str) -> dict[str, Any]:
    return json.loads((RESULTS / f"{name}.json").read_text())


def ok(v: Any) -> bool:
    return v is not None and not (isinstance(v, float) and math.isnan(v))


def steps(v: float) -> str:
    return f"{v:,.0f}"


def two(v: float) -> str:
    return f"{v:.2f}"


def signed(v: float) -> str:
    return f"{v:+.2f}"


def pct(v: float) -> str:
    return f"{100 * v:.1f}%"


def spread(values: Iterable[float], fmt: Callable[[float], str]) -> str:
    """``median [min, max]`` of ``values``."""
    vs = [float(v) for v in values]
    return f"{fmt(statistics.median(vs))} [{fmt(min(vs))}, {fmt(max(vs))}]"


def grokking_wd_data() -> dict[str, str]:
    d = load("grokking_wd_data")
    pts = d["points"]
    fracs = [f for f in d["plan"]["train_frac"] if f >= 0.3]
    out: dict[str, str] = {}
    wd0 = [p for p in pts if p["weight_decay"] == 0]
    accs = [100 * p["final_test_acc"] for p in wd0]
    out["wd0"] = (f"{sum(ok(p['grokked']) for p in wd0)}/{len(wd0)} runs grokked** (final test accuracy "
                  f"{min(accs):.0f}-{max(accs):.0f}%)")

    def cell(wd: float, frac: float) -> list[dict[str, Any]]:
        return [p for p in pts if p["weight_decay"] == wd and p["train_frac"] == frac]

    for wd in (0.3, 1.0, 3.0):
        groks = [spread([p["grokked"] for p in cell(wd, f) if ok(p["grokked"])], steps) for f in fracs]
        out[f"grok_wd{wd:g}"] = f"wd {wd:g}: " + " / ".join(groks)
        for f in (0.3, 0.6):
            out[f"gap_wd{wd:g}_{f:g}"] = f"wd {wd:g} at {100 * f:.0f}%: " + spread(
                [p["grokked"] - p["memorised"] for p in cell(wd, f) if ok(p["grokked"])], steps)
    wd3_20 = cell(3.0, 0.2)
    out["wd3_20"] = f"wd 3 groks at 20% in {sum(ok(p['grokked']) for p in wd3_20)} of {len(wd3_20)} runs"
    out["seeds"] = f"{len(d['plan']['seed'])} seeds per cell"
    return out


def grokfast() -> dict[str, str]:
    d = load("grokfast")
    out = {"A_seeds": f"seed {', '.join(map(str, d['plan']['A']['seed']))} (1 seed, spread not measured)"}
    a = {p["variant"]: p for p in d["points_A"]}
    out["A"] = (f"test accuracy was {100 * a['baseline']['final_test_acc']:.0f}% (baseline) and "
                f"{100 * a['grokfast']['final_test_acc']:.0f}% (Grokfast)")
    b = d["points_B"]
    per = {v: [p["grokked"] for p in b if p["variant"] == v] for v in ("baseline", "grokfast")}
    assert all(ok(s) for v in per.values() for s in v), "a run of (B) did not grok"
    out["B"] = (f"{len(d['plan']['B']['seed'])} seeds: median [min, max] **{spread(per['baseline'], steps)} steps "
                f"without the filter, {spread(per['grokfast'], steps)} with it**")
    return out


def progress_measures() -> dict[str, str]:
    d = load("progress_measures")
    ph = d["phases"]
    return {"phases": (f"end of memorisation **{steps(ph['end_memorisation'])}**, start of cleanup "
                       f"**{steps(ph['start_cleanup'])}**, end of cleanup **{steps(ph['end_cleanup'])}**"),
            "neurons": f"**{pct(d['neurons_single_freq'])}** of neurons single-frequency"}


def clock_pizza() -> dict[str, str]:
    d = load("clock_pizza")
    pts = d["points"]
    out = {"seeds": f"{len(d['plan']['attn_rate'])} rates x {len(d['plan']['seed'])} seeds"}
    rows = []
    for a in d["plan"]["attn_rate"]:
        sub = [p for p in pts if p["attn_rate"] == a]
        rows.append(f"{a:g}: {spread([p['gradient_symmetricity'] for p in sub], two)} / "
                    f"{spread([p['distance_irrelevance'] for p in sub], two)}")
    out["rates"] = "; ".join(rows)
    for name, pick in (("pizza", lambda a: a < 0.2), ("clock", lambda a: a >= 0.9)):
        sub = [p for p in pts if pick(p["attn_rate"])]
        meds = {k: statistics.median(statistics.median(p[k] for p in sub if p["attn_rate"] == a)
                                     for a in sorted({p["attn_rate"] for p in sub}))
                for k in ("gradient_symmetricity", "distance_irrelevance")}
        out[name] = (f"**{two(meds['gradient_symmetricity'])} / {two(meds['distance_irrelevance'])}** "
                     f"(runs {two(min(p['gradient_symmetricity'] for p in sub))}-"
                     f"{two(max(p['gradient_symmetricity'] for p in sub))} / "
                     f"{two(min(p['distance_irrelevance'] for p in sub))}-"
                     f"{two(max(p['distance_irrelevance'] for p in sub))})")
    qs = load("clock_pizza-quick-seeds")  # the quick plan at alpha 0 and 1 over seeds 0-2, to see its spread
    out["quick_seeds"] = "; ".join(
        f"alpha {a:g}: " + " / ".join(spread([p[k] for p in qs["points"] if p["attn_rate"] == a], two)
                                      for k in ("gradient_symmetricity", "distance_irrelevance"))
        for a in qs["plan"]["attn_rate"])
    q = load("clock_pizza-quick")
    qr = {r["attn_rate"]: r for r in q["rates"]}
    out["quick"] = (f"alpha 0: {two(qr[0.0]['gradient_symmetricity'])} / {two(qr[0.0]['distance_irrelevance'])}, "
                    f"alpha 1: {two(qr[1.0]['gradient_symmetricity'])} / {two(qr[1.0]['distance_irrelevance'])}")
    return out


def lottery_tickets() -> dict[str, str]:
    d = load("lottery_tickets")
    runs = d["mlp_runs"]
    out = {"mlp_seeds": f"{len(runs)} seeds", "dense": f"Dense accuracy is {spread([r['dense'] for r in runs], pct)}"}
    last = [r["rounds"][-1] for r in runs]
    out["last"] = (f"at {pct(statistics.median(x['remaining'] for x in last))} remaining: ticket "
                   f"{spread([x['ticket'] for x in last], pct)}, "
                   f"re-initialised {spread([x['reinit'] for x in last], pct)}, "
                   f"random {spread([x['random_prune'] for x in last], pct)}")
    drop = {k: max(100 * (r["dense"] - x[k]) for r in runs for x in r["rounds"][1:])
            for k in ("ticket", "reinit", "random_prune")}
    out["drop"] = (f"ticket {drop['ticket']:.2f}, re-initialised {drop['reinit']:.2f}, random "
                   f"{drop['random_prune']:.2f} points")
    gp = d["grok_points"]
    out["grok_seeds"] = f"{len({p['seed'] for p in gp})} seeds"
    for s in sorted({p["sparsity"] for p in gp}):
        sub = [p for p in gp if p["sparsity"] == s]
        kept = [len(p["shared_freqs"]) / len(p["dense_freqs"]) for p in sub]
        out[f"grok_{s:g}"] = (f"at {100 * s:.0f}% sparsity: ticket **{spread([p['ticket'] for p in sub], steps)}**, "
                              f"dense {spread([p['dense'] for p in sub], steps)}, random mask "
                              f"{spread([p['random'] for p in sub], steps)}; key frequencies kept "
                              f"{spread(kept, lambda v: f'{100 * v:.0f}%')}")
    return out


def scaling_laws() -> dict[str, str]:
    d = load("scaling_laws")
    f = d["fits"]

    def ci(fit: str, k: str) -> str:
        lo, hi = f[fit]["ci95"][k]
        return f"{two(f[fit]['params'][k])} [{two(lo)}, {two(hi)}]"

    return {"joint": f"**α {ci('joint', 'alpha')}, β {ci('joint', 'beta')}, E ≈ 0**",
            "N": f"**α_N {ci('L_of_N', 'alpha')}**", "D": f"**α_D {ci('L_of_D', 'alpha')}**",
            "runs": f"fit over {f['joint']['n_points']} runs"}


def infinite_width() -> dict[str, str]:
    d = load("infinite_width")
    c = d["coord"]
    out: dict[str, str] = {}
    for param, label in (("sp", "SP"), ("mup", "muP")):
        rng = c[param]["slope_range_over_seeds"]
        out[f"coord_{param}"] = f"**{label}** " + ", ".join(
            f"{layer} {signed(c[param]['slopes'][layer])} [{signed(rng[layer][0])}, {signed(rng[layer][1])}]"
            for layer in c["layers"])
    t = d["transfer"]
    for param, label in (("sp", "SP"), ("mup", "muP")):
        out[f"transfer_{param}"] = f"**{label}** " + " / ".join(
            spread(t[param]["per_seed_optima"][str(w)], lambda v: f"{v:g}") for w in t["widths"])
    lz = d["lazy"]
    for param, label in (("ntk", "NTK"), ("mup", "muP")):
        lo, hi = lz[param]["slope_range_over_seeds"]
        out[f"lazy_{param}"] = (f"{label} {lz[param]['kernel_change'][0]:.1f} -> {lz[param]['kernel_change'][-1]:.2f}, "
                                f"slope {signed(lz[param]['slope'])} [{signed(lo)}, {signed(hi)}]")
    out["seeds"] = f"{len(d['plan']['coord']['seeds'])} seeds"
    return out


def optimisation() -> dict[str, str]:
    d = load("optimisation")
    eos = {r["lr"]: r for r in d["eos"]}
    adam = {r["lr"]: r for r in d["adam"]}
    return {"eos": f"**lr 0.1: {two(eos[0.1]['plateau'])}** (x{eos[0.1]['ratio']:.3f} of 20",
            "eos2": f"**lr 0.2: {two(eos[0.2]['plateau'])}** (x{eos[0.2]['ratio']:.3f} of 10",
            "adam": (f"**Preconditioned plateau {adam[0.001]['pre_plateau']:,.0f} vs 38,000 at lr 1e-3 "
                     f"(x{adam[0.001]['ratio']:.3f}); {adam[0.002]['pre_plateau']:,.0f} vs 19,000 at lr 2e-3 "
                     f"(x{adam[0.002]['ratio']:.3f}).**")}


def superposition() -> dict[str, str]:
    d = load("superposition")
    sp, ph, dm = d["sparsity"], d["phase"], d["dims"]
    m = d["plan"]["sparsity"]["m"]
    out = {"dense": (f"features with ||W_i|| > 0.5 at S=0: {sp['dense_kept']} (norms {two(min(sp['dense_top_norms']))}-"
                     f"{two(max(sp['dense_top_norms']))}; largest other {sp['dense_rest_max']:.3f}); largest "
                     f"off-diagonal |W_i . W_j| among the top {m}: {sp['dense_offdiag_max']:.4f}"),
           "represented": "; ".join(f"{lab}: {k}" for lab, k in zip(sp["labels"], sp["represented"], strict=True)),
           "phase": "; ".join(f"{name} ({v['rule']}): {v['match']} of {v['cells']} cells"
                              for name, v in ph["regions"].items()),
           "phase_grid": (f"{len(ph['importance'])} relative importances x {len(ph['density'])} densities, best of "
                          f"{ph['restarts']} restarts per cell (the majority of restarts agrees with the best in "
                          f"{pct(ph['agreement'])} of cells)")}
    s = dm["sticky"]
    out["sticky"] = (f"{pct(s['share'])} of {s['n']:,} represented features within {s['tol']} of a sticky fraction "
                     f"(a uniform spread: {pct(s['null_share'])}): "
                     + ", ".join(f"{k} {v}" for k, v in sorted(s["counts"].items(), key=lambda kv: -kv[1])))
    plateau = [1 / dens for dens, row in zip(dm["density"], dm["D"], strict=True)
               if sum(abs(x - 0.5) <= 0.03 for x in row if x > 0.05) >= 0.9 * max(1, sum(x > 0.05 for x in row))]
    out["digon"] = ("1/(1-S) = " + ", ".join(two(v) for v in plateau)) if plateau else "none"
    return out


STUDIES: dict[str, Callable[[], dict[str, str]]] = {
    "grokking_wd_data": grokking_wd_data, "grokfast": grokfast, "progress_measures": progress_measures,
    "clock_pizza": clock_pizza, "lottery_tickets": lottery_tickets, "scaling_laws": scaling_laws,
    "infinite_width": infinite_width, "optimisation": optimisation, "superposition": superposition,
}


def figures() -> dict[str, dict[str, str]]:
    """Every study's figures as the README writes them."""
    return {name: fn() for name, fn in STUDIES.items()}


def main() -> int:
    for study, figs in figures().items():
        for key, text in figs.items():
            print(f"{study}\t{key}\t{text}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
