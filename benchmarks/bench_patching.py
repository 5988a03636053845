"""Activation patching speed and memory: mechwork's ``patch`` vs ``transformer_lens.patching``.

Two full sweeps on the embedded ``induction-2l`` model (2 layers, 4 heads,
attention-only), batch 8, sequence length 40 (20 random tokens repeated; the
corrupted batch has other random tokens in the first half), denoising, metric
the mean log-prob of the correct next token over the repeated half:

* ``resid_pre`` by layer and position: ``get_act_patch_resid_pre`` vs
  ``patch(..., site="resid_pre", by="layer_pos")`` (80 cells);
* ``z`` by head and position: ``get_act_patch_attn_head_out_by_pos`` vs
  ``patch(..., site="z", by="head_pos")`` (320 cells).

TransformerLens's timing includes building the clean cache
(``model.run_with_cache(clean)``), since mechwork's timing includes its own
clean (source) run. mechwork is timed twice: with its fast engine (the
default) and with ``engine=False`` (its generic path, batching cells through
bridge hooks, used for models the engine does not support). After one
untimed warm-up call of each, the methods run interleaved over the repeats in
one process; medians are reported, and the ratios are TransformerLens's
median over mechwork's. Every result is checked against TransformerLens's to
1e-5 (exit status 1 if not). Peak resident memory (``ru_maxrss``) is measured
for each method and sweep in a fresh child process: after loading the model
and inputs, and after running the sweep twice. The children run before this
process loads anything, because a child's ``ru_maxrss`` starts at its
parent's resident size when it is spawned.

    python benchmarks/bench_patching.py [--repeats 5]
"""

from __future__ import annotations

import argparse
import json
import os
import resource
import statistics
import subprocess
import sys
import time
from collections.abc import Callable
from typing import Any

os.environ["TQDM_DISABLE"] = "1"  # TransformerLens's progress bars; read when tqdm is imported (by torch)

HALF = 20  # sequence length 2 * HALF = 40
BATCH = 8
TOL = 1e-5
SWEEPS = {"resid_pre": ("get_act_patch_resid_pre", "resid_pre", "layer_pos"),
          "z": ("get_act_patch_attn_head_out_by_pos", "z", "head_pos")}
METHODS = {"tl": "TransformerLens", "mw": "mechwork", "mw-hooks": "mechwork, engine=False"}


def setup() -> dict[str, Any]:
    import torch
    import transformer_lens.patching  # noqa: F401  (imported here so every child's baseline holds it)

    import mechwork
    from mechwork.analysis.attention import repeated_tokens

    torch.set_num_threads(2)
    model = mechwork.load("induction-2l", device="cpu")
    clean = repeated_tokens(int(model.cfg.d_vocab), HALF, batch=BATCH, seed=1)
    corrupted = clean.clone()
    corrupted[:, :HALF] = torch.randint(0, int(model.cfg.d_vocab), (BATCH, HALF),
                                        generator=torch.Generator().manual_seed(2))

    def metric(logits: torch.Tensor) -> torch.Tensor:  # mean log-prob of the repeated half's next tokens
        return logits[:, HALF:-1].log_softmax(-1).gather(-1, clean[:, HALF + 1:, None]).mean()

    return {"model": model, "clean": clean, "corrupted": corrupted, "metric": metric}


def runner(method: str, sweep: str, s: dict[str, Any]) -> Callable[[], Any]:
    """A call running one whole sweep one way, returning its ``[layer, pos(, head)]`` tensor."""
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
    return lambda: patch(model, clean, corrupted, metric, site=site, by=by, engine=engine).values


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


def main(argv: list[str] | None = None) -> int:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--repeats", type=int, default=5)
    ap.add_argument("--child", nargs=2, metavar=("METHOD", "SWEEP"), help=argparse.SUPPRESS)
    args = ap.parse_args(argv)
    if args.child:
        child(*args.child)
        return 0

    mem = memory()  # first, while this process is small: a child's ru_maxrss starts at its parent's RSS

    from importlib.metadata import version

    import torch

    s = setup()
    runs = {(sweep, m): runner(m, sweep, s) for sweep in SWEEPS for m in METHODS}
    results = {k: run() for k, run in runs.items()}  # warm-up, untimed; kept for the checks
    times: dict[tuple[str, str], list[float]] = {k: [] for k in runs}
    for _ in range(args.repeats):
        for k, run in runs.items():
            t = time.perf_counter()
            run()
            times[k].append(time.perf_counter() - t)
    med = {k: statistics.median(v) for k, v in times.items()}

    cfg = s["model"].cfg
    print(f"activation patching, induction-2l ({cfg.n_layers} layers x {cfg.n_heads} heads, attention-only), "
          f"batch {BATCH} x {2 * HALF} positions, denoising; TransformerLens {version('transformer-lens')}, "
          f"torch {torch.__version__}, {torch.get_num_threads()} threads; medians of {args.repeats} interleaved "
          f"repeats (TransformerLens's time includes its run_with_cache)")
    ok = True
    print(f"{'sweep':22s} {'method':24s} {'median s':>9s} {'min s':>8s} {'TL / this':>10s} {'max |diff| vs TL':>17s}")
    for sweep, (_, site, by) in SWEEPS.items():
        ref = results[(sweep, "tl")]
        label = f"{site} by {by}"
        for m, name in METHODS.items():
            k = (sweep, m)
            diff = float((results[k] - ref).abs().max()) if m != "tl" else 0.0
            if results[k].shape != ref.shape or diff > TOL:
                ok = False
            check = f"{diff:.2e}" if m != "tl" else f"{tuple(ref.shape)}"
            print(f"{label:22s} {name:24s} {med[k]:9.3f} {min(times[k]):8.3f} {med[(sweep, 'tl')] / med[k]:9.2f}x "
                  f"{check:>17s}")
    tot = {m: sum(med[(sweep, m)] for sweep in SWEEPS) for m in METHODS}
    for m, name in METHODS.items():
        print(f"{'both sweeps':22s} {name:24s} {tot[m]:9.3f} {'':8s} {tot['tl'] / tot[m]:9.2f}x")
    print("speed ratio, TransformerLens median / mechwork median   [target >= 5x]:")
    for sweep, (_, site, by) in SWEEPS.items():
        print(f"  {site} by {by}: {med[(sweep, 'tl')] / med[(sweep, 'mw')]:.2f}x"
              f" (engine=False: {med[(sweep, 'tl')] / med[(sweep, 'mw-hooks')]:.2f}x)")
    print(f"  both sweeps (sum of medians): {tot['tl'] / tot['mw']:.2f}x"
          f" (engine=False: {tot['tl'] / tot['mw-hooks']:.2f}x)")

    print("peak resident memory, one child process per row (model and inputs loaded, then the sweep run twice):")
    print(f"{'sweep':22s} {'method':24s} {'after setup MB':>15s} {'peak MB':>8s} {'increase MB':>12s}")
    for sweep, (_, site, by) in SWEEPS.items():
        for m, name in METHODS.items():
            r = mem[(sweep, m)]
            print(f"{site + ' by ' + by:22s} {name:24s} {r['base_mb']:15.1f} {r['peak_mb']:8.1f}"
                  f" {r['peak_mb'] - r['base_mb']:12.1f}")
    if not ok:
        print(f"FAILED: a mechwork result differs from TransformerLens's by more than {TOL:g}")
        return 1
    print(f"all mechwork results match TransformerLens's to <= {TOL:g}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
