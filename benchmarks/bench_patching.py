"""Activation patching speed and memory: mechwork's ``patch`` vs ``transformer_lens.patching``, on three models.

Two full sweeps, denoising, on each model (batch 8; the clean batch is ``half`` random tokens repeated, the
corrupted one has other random tokens in the first half; metric: the mean log-prob of the correct next token
over the repeated half):

* ``resid_pre`` by layer and position: ``get_act_patch_resid_pre`` vs
  ``patch(..., site="resid_pre", by="layer_pos")``;
* ``z`` by head and position: ``get_act_patch_attn_head_out_by_pos`` vs
  ``patch(..., site="z", by="head_pos")``.

The models (``--models``, default all three):

* ``induction-2l``: the embedded preset (2 layers, 4 heads, attention-only), sequence length 40;
* ``custom3l``: a ``ToyConfig`` with 3 layers, LayerNorm, GELU, d_model 64, 4 heads of 16, d_mlp 256,
  vocabulary 64, n_ctx 64 (its seeded random init), sequence length 64;
* ``gpt2``: a GPT-2-style model from a ``transformers`` ``GPT2Config`` (3 layers, n_embd 64, 4 heads,
  vocabulary 512, n_positions 64) with random weights, saved with ``save_pretrained`` to a temporary
  directory and booted offline by ``mechwork.load`` (TransformerLens's bridge), sequence length 64.

TransformerLens's timing includes building the clean cache
(``model.run_with_cache(clean)``), since mechwork's timing includes its own
clean (source) run. mechwork is timed twice: with its fast engine (the
default, where :func:`mechwork.engine.supports` the model; the engine that ran
is printed) and with ``engine=False`` (its generic path, batching cells through
bridge hooks). After one untimed warm-up call of each, the methods run
interleaved over the repeats in one process; medians are reported, and the
ratios are TransformerLens's median over mechwork's. Every result is checked
against TransformerLens's to 1e-5 and the max abs difference printed (exit
status 1 if one is over). Peak resident memory (``ru_maxrss``) is measured on
induction-2l for each method and sweep in a fresh child process (``--no-memory``
skips it): after loading the model and inputs, and after running the sweep
twice. The children run before this process loads anything, because a child's
``ru_maxrss`` starts at its parent's resident size when it is spawned.

    OMP_WAIT_POLICY=PASSIVE python benchmarks/bench_patching.py [--repeats 5] [--models custom3l gpt2]
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

BATCH = 8
TOL = 1e-5
SWEEPS = {"resid_pre": ("get_act_patch_resid_pre", "resid_pre", "layer_pos"),
          "z": ("get_act_patch_attn_head_out_by_pos", "z", "head_pos")}
METHODS = {"tl": "TransformerLens", "mw": "mechwork", "mw-hooks": "mechwork, engine=False"}
MODELS = {"induction-2l": 20, "custom3l": 32, "gpt2": 32}  # name -> half: sequence length 2 * half


def build(name: str) -> Any:
    """The model ``name`` (see the module docstring), in eval mode on the CPU."""
    import mechwork

    if name == "induction-2l":
        return mechwork.load("induction-2l", device="cpu")
    if name == "custom3l":
        from mechwork.models import ToyConfig, build_model

        return build_model(ToyConfig(n_layers=3, d_model=64, n_heads=4, d_head=16, d_mlp=256, d_vocab=64,
                                     d_vocab_out=64, n_ctx=64, act_fn="gelu", normalization="LN", init="gpt2"),
                           "cpu")
    if name == "gpt2":
        import torch
        from transformers import GPT2Config, GPT2LMHeadModel

        torch.manual_seed(0)
        hf = GPT2LMHeadModel(GPT2Config(vocab_size=512, n_positions=64, n_embd=64, n_layer=3, n_head=4))
        with tempfile.TemporaryDirectory() as d:
            hf.eval().save_pretrained(d)
            return mechwork.load(d, device="cpu")
    raise ValueError(f"unknown model {name!r} (one of {', '.join(MODELS)})")


def setup(name: str = "induction-2l") -> dict[str, Any]:
    import torch
    import transformer_lens.patching  # noqa: F401  (imported here so every child's baseline holds it)

    from mechwork.analysis.attention import repeated_tokens

    torch.set_num_threads(2)
    half = MODELS[name]
    model = build(name)
    d_vocab = int(model.cfg.d_vocab)
    clean = repeated_tokens(d_vocab, half, batch=BATCH, seed=1)
    corrupted = clean.clone()
    corrupted[:, :half] = torch.randint(0, d_vocab, (BATCH, half), generator=torch.Generator().manual_seed(2))

    def metric(logits: torch.Tensor) -> torch.Tensor:  # mean log-prob of the repeated half's next tokens
        return logits[:, half:-1].log_softmax(-1).gather(-1, clean[:, half + 1:, None]).mean()

    return {"name": name, "model": model, "clean": clean, "corrupted": corrupted, "metric": metric}


def runner(method: str, sweep: str, s: dict[str, Any]) -> Callable[[], Any]:
    """A call running one whole sweep one way: TransformerLens's tensor, or mechwork's ``PatchResult``."""
    import transformer_lens.patching as tlp

    from mechwork.analysis.patching import patch

    tl_name, site, by = SWEEPS[sweep]
    model, clean, corrupted, metric = s["model"], s["clean"], s["corrupted"], s["metric"]
    if method == "tl":
        tl_fn = getattr(tlp, tl_name)

        def tl() -> Any:
            _, clean_cache = model.run_with_cache(clean)
            return tl_fn(model, corrupted, clean_cache, metric).cpu()

        return tl
    engine = method == "mw"
    return lambda: patch(model, clean, corrupted, metric, site=site, by=by, engine=engine)


def values(result: Any) -> Any:
    """The tensor of a sweep: TransformerLens's as it is, a ``PatchResult``'s ``values``."""
    import torch

    return result if isinstance(result, torch.Tensor) else result.values


def child(method: str, sweep: str) -> None:
    """Peak resident memory of one method on one sweep, in this (fresh) process; prints JSON."""
    s = setup()
    run = runner(method, sweep, s)
    base = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss
    for _ in range(2):
        run()
    peak = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss
    print(json.dumps({"base_mb": base / 1024, "peak_mb": peak / 1024}))  # ru_maxrss is in KiB on Linux


def memory() -> dict[tuple[str, str], dict[str, float]]:
    out = {}
    for sweep in SWEEPS:
        for method in METHODS:
            r = subprocess.run([sys.executable, __file__, "--child", method, sweep],
                               check=True, capture_output=True, text=True)
            out[(sweep, method)] = json.loads(r.stdout.strip().splitlines()[-1])
    return out


def describe(s: dict[str, Any]) -> str:
    c = s["model"].cfg
    mlp = "attention-only" if getattr(c, "attn_only", False) else f"d_mlp {c.d_mlp} ({c.act_fn})"
    norm = getattr(c, "normalization_type", None) or "no norm"
    return (f"{s['name']}: {c.n_layers} layers x {c.n_heads} heads of {c.d_head}, d_model {c.d_model}, {mlp}, "
            f"{norm}, d_vocab {c.d_vocab}; batch {BATCH} x {s['clean'].shape[1]} positions")


def time_model(name: str, repeats: int) -> dict[str, Any]:
    """Every sweep of model ``name`` every way: medians, ratios, max abs differences, the engine that ran."""
    s = setup(name)
    runs = {(sweep, m): runner(m, sweep, s) for sweep in SWEEPS for m in METHODS}
    results = {k: run() for k, run in runs.items()}  # warm-up, untimed; kept for the checks
    times: dict[tuple[str, str], list[float]] = {k: [] for k in runs}
    for _ in range(repeats):
        for k, run in runs.items():
            t = time.perf_counter()
            run()
            times[k].append(time.perf_counter() - t)
    rows = []
    for sweep, (_, site, by) in SWEEPS.items():
        ref, tl_med = results[(sweep, "tl")], statistics.median(times[(sweep, "tl")])
        for m in METHODS:
            got, med = values(results[(sweep, m)]), statistics.median(times[(sweep, m)])
            diff = float((got - ref).abs().max()) if got.shape == ref.shape else float("inf")
            rows.append({"sweep": f"{site} by {by}", "method": m, "median_s": med, "min_s": min(times[(sweep, m)]),
                         "ratio": tl_med / med, "max_abs_diff": diff, "cells": int(ref.numel()),
                         "engine": getattr(results[(sweep, m)], "engine", "-")})
    return {"model": name, "describe": describe(s), "rows": rows}


def report(r: dict[str, Any]) -> bool:
    """Print one model's table; False if a mechwork result is further than TOL from TransformerLens's."""
    print(r["describe"])
    print(f"  {'sweep':20s} {'method':24s} {'engine':>7s} {'median s':>9s} {'min s':>8s} {'TL / this':>10s} "
          f"{'max |diff| vs TL':>17s}")
    ok = True
    for row in r["rows"]:
        ok = ok and row["max_abs_diff"] <= TOL
        print(f"  {row['sweep']:20s} {METHODS[row['method']]:24s} {row['engine']:>7s} {row['median_s']:9.3f} "
              f"{row['min_s']:8.3f} {row['ratio']:9.2f}x {row['max_abs_diff']:17.2e}")
    med = {(row["sweep"], row["method"]): row["median_s"] for row in r["rows"]}
    tot = {m: sum(v for (_, mm), v in med.items() if mm == m) for m in METHODS}
    print(f"  both sweeps (sum of medians): mechwork {tot['tl'] / tot['mw']:.2f}x, "
          f"engine=False {tot['tl'] / tot['mw-hooks']:.2f}x (TransformerLens {tot['tl']:.3f} s)")
    r["both"] = {m: {"median_s": tot[m], "ratio": tot["tl"] / tot[m]} for m in METHODS}
    return ok


def print_memory(mem: dict[tuple[str, str], dict[str, float]]) -> None:
    print("peak resident memory on induction-2l, one child process per row (model and inputs loaded, then the "
          "sweep run twice):")
    print(f"  {'sweep':20s} {'method':24s} {'after setup MB':>15s} {'peak MB':>8s} {'increase MB':>12s}")
    for sweep, (_, site, by) in SWEEPS.items():
        for m, name in METHODS.items():
            r = mem[(sweep, m)]
            print(f"  {site + ' by ' + by:20s} {name:24s} {r['base_mb']:15.1f} {r['peak_mb']:8.1f}"
                  f" {r['peak_mb'] - r['base_mb']:12.1f}")


def main(argv: list[str] | None = None) -> int:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--repeats", type=int, default=5)
    ap.add_argument("--models", nargs="+", choices=list(MODELS), default=list(MODELS))
    ap.add_argument("--no-memory", action="store_true", help="skip the memory children (induction-2l)")
    ap.add_argument("--json", default=None, help="also write the figures to this JSON file")
    ap.add_argument("--child", nargs=2, metavar=("METHOD", "SWEEP"), help=argparse.SUPPRESS)
    args = ap.parse_args(argv)
    if args.child:
        child(*args.child)
        return 0

    with_memory = not args.no_memory and "induction-2l" in args.models
    mem = memory() if with_memory else {}  # first, while this process is small (a child's ru_maxrss starts here)

    from importlib.metadata import version

    import torch

    torch.set_num_threads(2)
    print(f"activation patching, denoising; TransformerLens {version('transformer-lens')}, torch {torch.__version__}, "
          f"{torch.get_num_threads()} threads, OMP_WAIT_POLICY={os.environ.get('OMP_WAIT_POLICY', 'unset')}; "
          f"medians of {args.repeats} interleaved repeats (TransformerLens's time includes its run_with_cache)")
    ok, out = True, []
    for name in args.models:
        r = time_model(name, args.repeats)
        ok = report(r) and ok
        out.append(r)
    print("speed ratio, TransformerLens median / mechwork median (engine=False in brackets):")
    for r in out:
        by_sweep = "; ".join(f"{row['sweep']} {row['ratio']:.2f}x" for row in r["rows"] if row["method"] == "mw")
        hooks = "; ".join(f"{row['ratio']:.2f}x" for row in r["rows"] if row["method"] == "mw-hooks")
        print(f"  {r['model']}: {by_sweep}; both {r['both']['mw']['ratio']:.2f}x "
              f"({hooks}; both {r['both']['mw-hooks']['ratio']:.2f}x)")
    if with_memory:
        print_memory(mem)
    if args.json:
        with open(args.json, "w") as f:
            json.dump({"models": out, "memory": {f"{k[0]}/{k[1]}": v for k, v in mem.items()},
                       "repeats": args.repeats, "threads": torch.get_num_threads()}, f, indent=1)
    if not ok:
        print(f"FAILED: a mechwork result differs from TransformerLens's by more than {TOL:g}")
        return 1
    print(f"all mechwork results match TransformerLens's to <= {TOL:g}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
