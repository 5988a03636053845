"""Activation patching speed and memory: mechwork's ``patch`` vs ``transformer_lens.patching``, over model sizes.

Two sweeps, denoising, on each model (the clean batch is ``half`` random tokens repeated, the corrupted one has
other random tokens in the first half; metric: the mean cross-entropy of the correct next token over the
repeated half, ``mechwork.analysis.metrics.loss(targets, mask)``, the same function for both libraries; its mask
declares the positions it reads, so mechwork's fast engine computes the last layer and the logits there only):

* ``resid_pre`` by layer and position: ``get_act_patch_resid_pre`` vs
  ``patch(..., site="resid_pre", by="layer_pos")``;
* ``z`` by head and position: ``get_act_patch_attn_head_out_by_pos`` vs
  ``patch(..., site="z", by="head_pos")`` (on ``toy4l``, every 4th position: TransformerLens's ``index_df``
  against mechwork's ``positions=``).

The models (``--models``, default all four), smallest first:

* ``induction-2l``: the embedded preset (2 layers, 4 heads, attention-only), batch 8, sequence length 40;
* ``custom3l``: a ``ToyConfig`` with 3 layers, LayerNorm, GELU, d_model 64, 4 heads of 16, d_mlp 256,
  vocabulary 64, n_ctx 64 (its seeded random init), batch 8, sequence length 64;
* ``gpt2``: a GPT-2-style model from a ``transformers`` ``GPT2Config`` (3 layers, n_embd 64, 4 heads,
  vocabulary 512, n_positions 64) with random weights, saved with ``save_pretrained`` to a temporary
  directory and booted offline by ``mechwork.load`` (TransformerLens's bridge), batch 8, sequence length 64;
* ``toy4l``: a ``ToyConfig`` with 4 layers, 8 heads of 32, d_model 256, d_mlp 1024, LayerNorm, GELU,
  vocabulary 64, n_ctx 128, batch 2, sequence length 128 (512 ``resid_pre`` cells, 1,024 ``z`` cells).

TransformerLens's timing includes building the clean cache
(``model.run_with_cache(clean)``), since mechwork's timing includes its own
clean (source) run. mechwork is timed with its fast engine (the default, where
:func:`mechwork.engine.supports` the model; the engine that ran is printed), with
``engine=False`` (its generic path, batching cells through bridge hooks), and
with attribution patching (``mechwork.analysis.attribution.attribute``, the
gradient estimate of the same sweep: its time against exact patching and the
correlation of its values with exact's). After one untimed warm-up call of
each, the methods run interleaved over the repeats in one process; medians are
reported, and the ratios are TransformerLens's median over mechwork's. Every
exact result is checked against TransformerLens's to 1e-5 and the max abs
difference printed (exit status 1 if one is over). Peak resident memory
(``ru_maxrss``) is measured for each model, method and sweep in a fresh child
process (``--no-memory`` skips it): after loading the model and inputs, and
after running the sweep once. The children run before this process loads
anything, because a child's ``ru_maxrss`` starts at its parent's resident size
when it is spawned. ``--device cuda`` runs everything on the GPU (timings
synchronised; memory children then report host memory only).

    OMP_WAIT_POLICY=PASSIVE python benchmarks/bench_patching.py [--repeats 3] [--models custom3l toy4l]
        [--device cpu] [--no-memory] [--json out.json]
"""

from __future__ import annotations

import argparse
import json
import os
import resource
import statistics
import subprocess
import sys
import tempfile
import time
from collections.abc import Callable
from typing import Any

os.environ["TQDM_DISABLE"] = "1"  # TransformerLens's progress bars; read when tqdm is imported (by torch)
os.environ.setdefault("HF_HUB_OFFLINE", "1")  # the GPT-2 model boots from local files only
os.environ.setdefault("TRANSFORMERS_OFFLINE", "1")

TOL = 1e-5
SWEEPS = {"resid_pre": ("get_act_patch_resid_pre", "resid_pre", "layer_pos"),
          "z": ("get_act_patch_attn_head_out_by_pos", "z", "head_pos")}
METHODS = {"tl": "TransformerLens", "mw": "mechwork", "mw-hooks": "mechwork, engine=False"}
ATTR = "attribution"  # mechwork's attribution patching, timed against exact patching
# name -> (half: sequence length 2 * half, batch, stride of the z sweep's positions)
MODELS = {"induction-2l": (20, 8, 1), "custom3l": (32, 8, 1), "gpt2": (32, 8, 1), "toy4l": (64, 2, 4)}


def build(name: str, device: str = "cpu") -> Any:
    """The model ``name`` (see the module docstring), in eval mode on ``device``."""
    import mechwork

    if name == "induction-2l":
        return mechwork.load("induction-2l", device=device)
    if name in ("custom3l", "toy4l"):
        from mechwork.models import ToyConfig, build_model

        size = dict(n_layers=3, d_model=64, n_heads=4, d_head=16, d_mlp=256, n_ctx=64) if name == "custom3l" \
            else dict(n_layers=4, d_model=256, n_heads=8, d_head=32, d_mlp=1024, n_ctx=128)
        return build_model(ToyConfig(**size, d_vocab=64, d_vocab_out=64, act_fn="gelu", normalization="LN",
                                     init="gpt2"), device)
    if name == "gpt2":
        import torch
        from transformers import GPT2Config, GPT2LMHeadModel

        torch.manual_seed(0)
        hf = GPT2LMHeadModel(GPT2Config(vocab_size=512, n_positions=64, n_embd=64, n_layer=3, n_head=4))
        with tempfile.TemporaryDirectory() as d:
            hf.eval().save_pretrained(d)
            return mechwork.load(d, device=device)
    raise ValueError(f"unknown model {name!r} (one of {', '.join(MODELS)})")


PLAIN_METRIC = False  # --plain-metric: wrap the metric in a plain function (see setup)


def setup(name: str, device: str = "cpu") -> dict[str, Any]:
    import torch
    import transformer_lens.patching  # noqa: F401  (imported here so every child's baseline holds it)

    import mechwork.analysis.attribution  # noqa: F401  (likewise)
    from mechwork.analysis.attention import repeated_tokens
    from mechwork.analysis.metrics import loss

    torch.set_num_threads(2)
    half, batch, stride = MODELS[name]
    model = build(name, device)
    d_vocab = int(model.cfg.d_vocab)
    clean = repeated_tokens(d_vocab, half, batch=batch, seed=1)
    corrupted = clean.clone()
    corrupted[:, :half] = torch.randint(0, d_vocab, (batch, half), generator=torch.Generator().manual_seed(2))
    clean, corrupted = clean.to(device), corrupted.to(device)

    # the mean cross-entropy of the repeated half's next tokens: mechwork's loss metric, whose mask tells the fast
    # engine which positions' logits it reads (TransformerLens calls the same function)
    mask = torch.zeros(clean.shape, dtype=torch.bool, device=device)
    mask[:, half:-1] = True
    metric = loss(clean.roll(-1, dims=1), mask)
    if PLAIN_METRIC:  # the same numbers through a plain function, which declares no positions: full logits
        declared = metric
        metric = lambda logits: declared(logits)

    return {"name": name, "model": model, "clean": clean, "corrupted": corrupted, "metric": metric,
            "batch": batch, "z_positions": list(range(0, 2 * half, stride)), "device": device}


def runner(method: str, sweep: str, s: dict[str, Any], layer0: bool = False) -> Callable[[], Any]:
    """A call running one whole sweep one way (``layer0``: its layer-0 cells only): TransformerLens's tensor, or
    mechwork's ``PatchResult``."""
    import transformer_lens.patching as tlp

    from mechwork.analysis.attribution import attribute
    from mechwork.analysis.patching import patch

    tl_name, site, by = SWEEPS[sweep]
    model, clean, corrupted, metric = s["model"], s["clean"], s["corrupted"], s["metric"]
    positions = s["z_positions"] if sweep == "z" else list(range(clean.shape[1]))
    kw: dict[str, Any] = {} if len(positions) == clean.shape[1] else {"positions": positions}
    if layer0:
        kw["layers"] = [0]
    sync = synchroniser(s["device"])
    if method == "tl":
        tl_fn = getattr(tlp, tl_name)
        tl_kw: dict[str, Any] = {}
        if kw:  # the partial function fixes its index axes: the generic one takes explicit cells
            tl_fn = tlp.generic_activation_patch
            tl_kw = {"index_df": cells_frame(model, sweep, kw.get("layers"), positions), "activation_name": site,
                     "patch_setter": tlp.layer_pos_head_vector_patch_setter if sweep == "z"
                     else tlp.layer_pos_patch_setter}

        def tl() -> Any:
            _, clean_cache = model.run_with_cache(clean)
            out = tl_fn(model, corrupted, clean_cache, metric, **tl_kw)
            sync()
            shape = (len(kw.get("layers", range(int(model.cfg.n_layers)))), len(positions))
            return out.cpu().reshape(*shape, *((int(model.cfg.n_heads),) if sweep == "z" else ()))

        return tl
    if method == ATTR:
        return lambda: (attribute(model, clean, corrupted, metric, site=site, by=by, **kw), sync())[0]
    engine = method == "mw"
    return lambda: (patch(model, clean, corrupted, metric, site=site, by=by, engine=engine, **kw), sync())[0]


def cells_frame(model: Any, sweep: str, layers: list[int] | None, positions: list[int]) -> Any:
    """TransformerLens's ``index_df``: every (layer, position[, head]) cell, in mechwork's order."""
    import itertools

    import pandas as pd

    axes = [layers if layers is not None else range(int(model.cfg.n_layers)), positions]
    names = ["layer", "pos"]
    if sweep == "z":
        axes, names = [*axes, range(int(model.cfg.n_heads))], [*names, "head_index"]
    return pd.DataFrame(list(itertools.product(*axes)), columns=names)


def synchroniser(device: str) -> Callable[[], None]:
    """Waits for the GPU's queued work on cuda (so a timing covers it); nothing on the CPU."""
    import torch

    if str(device).startswith("cuda"):
        return torch.cuda.synchronize
    return lambda: None


def values(result: Any) -> Any:
    """The tensor of a sweep: TransformerLens's as it is, a ``PatchResult``'s ``values``."""
    import torch

    return result if isinstance(result, torch.Tensor) else result.values


def child(name: str, method: str, sweep: str, device: str) -> None:
    """Peak resident memory of one method on the layer-0 cells of one sweep of model ``name`` (the largest
    reruns: every layer above them), in this (fresh) process; prints JSON."""
    s = setup(name, device)
    run = runner(method, sweep, s, layer0=True)
    base = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss
    run()
    peak = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss
    print(json.dumps({"base_mb": base / 1024, "peak_mb": peak / 1024}))  # ru_maxrss is in KiB on Linux


def memory(models: list[str], device: str) -> dict[tuple[str, str, str], dict[str, float]]:
    out = {}
    for name in models:
        for sweep in SWEEPS:
            for method in METHODS:
                r = subprocess.run([sys.executable, __file__, "--device", device, "--child", name, method, sweep],
                                   check=True, capture_output=True, text=True)
                out[(name, sweep, method)] = json.loads(r.stdout.strip().splitlines()[-1])
    return out


def describe(s: dict[str, Any]) -> str:
    c = s["model"].cfg
    mlp = "attention-only" if getattr(c, "attn_only", False) else f"d_mlp {c.d_mlp} ({c.act_fn})"
    norm = getattr(c, "normalization_type", None) or "no norm"
    return (f"{s['name']}: {c.n_layers} layers x {c.n_heads} heads of {c.d_head}, d_model {c.d_model}, {mlp}, "
            f"{norm}, d_vocab {c.d_vocab}; batch {s['batch']} x {s['clean'].shape[1]} positions")


def correlation(a: Any, b: Any) -> float:
    """Pearson correlation of two sweeps' values, flattened."""
    import torch

    return float(torch.corrcoef(torch.stack([a.flatten().double(), b.flatten().double()]))[0, 1])


def time_model(name: str, repeats: int, device: str) -> dict[str, Any]:
    """Every sweep of model ``name`` every way: medians, ratios, max abs differences, the engine that ran."""
    s = setup(name, device)
    runs = {(sweep, m): runner(m, sweep, s) for sweep in SWEEPS for m in (*METHODS, ATTR)}
    results = {k: run() for k, run in runs.items()}  # warm-up, untimed; kept for the checks
    times: dict[tuple[str, str], list[float]] = {k: [] for k in runs}
    for _ in range(repeats):
        for k, run in runs.items():
            t = time.perf_counter()
            run()
            times[k].append(time.perf_counter() - t)
    rows, attr = [], {}
    for sweep, (_, site, by) in SWEEPS.items():
        ref, tl_med = results[(sweep, "tl")], statistics.median(times[(sweep, "tl")])
        for m in METHODS:
            got, med = values(results[(sweep, m)]), statistics.median(times[(sweep, m)])
            diff = float((got - ref).abs().max()) if got.shape == ref.shape else float("inf")
            rows.append({"sweep": f"{site} by {by}", "method": m, "median_s": med, "min_s": min(times[(sweep, m)]),
                         "ratio": tl_med / med, "max_abs_diff": diff, "cells": int(ref.numel()),
                         "engine": getattr(results[(sweep, m)], "engine", "-")})
        exact = statistics.median(times[(sweep, "mw")])
        a_med = statistics.median(times[(sweep, ATTR)])
        attr[f"{site} by {by}"] = {"median_s": a_med, "exact_s": exact, "exact_over_attr": exact / a_med,
                                   "corr": correlation(values(results[(sweep, ATTR)]), values(results[(sweep, "mw")]))}
    return {"model": name, "describe": describe(s), "rows": rows, "attribution": attr}


def report(r: dict[str, Any]) -> bool:
    """Print one model's table; False if a mechwork result is further than TOL from TransformerLens's."""
    print(r["describe"])
    print(f"  {'sweep':22s} {'method':24s} {'engine':>7s} {'cells':>6s} {'median s':>9s} {'min s':>8s} "
          f"{'TL / this':>10s} {'max |diff| vs TL':>17s}")
    ok = True
    for row in r["rows"]:
        ok = ok and row["max_abs_diff"] <= TOL
        print(f"  {row['sweep']:22s} {METHODS[row['method']]:24s} {row['engine']:>7s} {row['cells']:6d} "
              f"{row['median_s']:9.3f} {row['min_s']:8.3f} {row['ratio']:9.2f}x {row['max_abs_diff']:17.2e}")
    med = {(row["sweep"], row["method"]): row["median_s"] for row in r["rows"]}
    tot = {m: sum(v for (_, mm), v in med.items() if mm == m) for m in METHODS}
    print(f"  both sweeps (sum of medians): mechwork {tot['tl'] / tot['mw']:.2f}x, "
          f"engine=False {tot['tl'] / tot['mw-hooks']:.2f}x (TransformerLens {tot['tl']:.3f} s)")
    for sweep, a in r["attribution"].items():
        print(f"  attribution patching, {sweep}: {a['median_s']:.3f} s, exact (fast engine) / attribution "
              f"{a['exact_over_attr']:.1f}x, correlation with exact {a['corr']:.3f}")
    r["both"] = {m: {"median_s": tot[m], "ratio": tot["tl"] / tot[m]} for m in METHODS}
    return ok


def print_memory(mem: dict[tuple[str, str, str], dict[str, float]]) -> None:
    print("peak resident memory, one child process per row (model and inputs loaded, then the sweep run once):")
    print(f"  {'model':13s} {'sweep':22s} {'method':24s} {'after setup MB':>15s} {'peak MB':>8s} "
          f"{'increase MB':>12s}")
    for (name, sweep, m), r in mem.items():
        _, site, by = SWEEPS[sweep]
        print(f"  {name:13s} {site + ' by ' + by:22s} {METHODS[m]:24s} {r['base_mb']:15.1f} {r['peak_mb']:8.1f}"
              f" {r['peak_mb'] - r['base_mb']:12.1f}")


def main(argv: list[str] | None = None) -> int:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--repeats", type=int, default=3)
    ap.add_argument("--models", nargs="+", choices=list(MODELS), default=list(MODELS))
    ap.add_argument("--device", default="cpu", help="cpu (default) or cuda")
    ap.add_argument("--no-memory", action="store_true", help="skip the memory children")
    ap.add_argument("--json", default=None, help="also write the figures to this JSON file")
    ap.add_argument("--plain-metric", action="store_true",
                    help="call the metric through a plain function that declares no positions (full logits); "
                         "implies --no-memory")
    ap.add_argument("--child", nargs=3, metavar=("MODEL", "METHOD", "SWEEP"), help=argparse.SUPPRESS)
    args = ap.parse_args(argv)
    if args.child:
        child(*args.child, args.device)
        return 0

    global PLAIN_METRIC
    PLAIN_METRIC = args.plain_metric
    load = os.getloadavg()
    skip_memory = args.no_memory or args.plain_metric
    mem = {} if skip_memory else memory(args.models, args.device)  # first, while this process is small

    from importlib.metadata import version

    import torch

    torch.set_num_threads(2)
    print(f"activation patching, denoising, on {args.device}; TransformerLens {version('transformer-lens')}, "
          f"torch {torch.__version__}, {torch.get_num_threads()} threads, "
          f"OMP_WAIT_POLICY={os.environ.get('OMP_WAIT_POLICY', 'unset')}; "
          f"{'a plain metric (no declared positions)' if PLAIN_METRIC else 'the loss metric (positions declared)'}; "
          f"medians of {args.repeats} interleaved "
          f"repeats (TransformerLens's time includes its run_with_cache); load average at the start "
          f"{load[0]:.1f} / {load[1]:.1f} / {load[2]:.1f}")
    ok, out = True, []
    for name in args.models:
        r = time_model(name, args.repeats, args.device)
        r["load"] = os.getloadavg()
        ok = report(r) and ok
        print(f"  load average after: {r['load'][0]:.1f} / {r['load'][1]:.1f} / {r['load'][2]:.1f}")
        out.append(r)
    print("speed ratio, TransformerLens median / mechwork median (engine=False in brackets):")
    for r in out:
        by_sweep = "; ".join(f"{row['sweep']} {row['ratio']:.2f}x" for row in r["rows"] if row["method"] == "mw")
        hooks = "; ".join(f"{row['ratio']:.2f}x" for row in r["rows"] if row["method"] == "mw-hooks")
        print(f"  {r['model']}: {by_sweep}; both {r['both']['mw']['ratio']:.2f}x "
              f"({hooks}; both {r['both']['mw-hooks']['ratio']:.2f}x)")
    if mem:
        print_memory(mem)
    if args.json:
        with open(args.json, "w") as f:
            json.dump({"models": out, "memory": {"/".join(k): v for k, v in mem.items()}, "load_start": load,
                       "repeats": args.repeats, "threads": torch.get_num_threads(), "device": args.device},
                      f, indent=1)
    if not ok:
        print(f"FAILED: a mechwork result differs from TransformerLens's by more than {TOL:g}")
        return 1
    print(f"all mechwork results match TransformerLens's to <= {TOL:g}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
