"""Edge scores on every edge of induction-2l: exact edge patching batched vs one edge per forward, EAP and EAP-IG
vs exact, and mechwork's EAP vs TransformerLens's ``attribution_patch(granularity="edge")``.

The input is the induction probe, ``mechwork.tasks.standard_probe(task, n=8)`` of the preset's task: 8
sequences ``[r, r]`` of 48 tokens (two halves of 24); corrupted: a fresh first half; metric: the logit of the
right next token minus the mean logit, over the second half. Direction: denoising (the base run is the
corrupted one; an edge's receiver reads the sender's clean write). Two graphs: position-free (81 edges: 2
layers x 4 heads, q/k/v apart, attention only) and per position (81 x 48 = 3,888 edges).

On induction-2l, for each graph:

* ``exact``: :func:`mechwork.analysis.edges.edge_patch`, many edges per forward (copies of the batch);
* ``loop, runner``: the same runner, one edge per call (one copy, one zero in ``keep``);
* ``loop, TL hooks``: plain TransformerLens hooks, one edge per forward: the receiver's
  ``blocks.l.attn.hook_q/k/v`` (head ``h``) gets ``(clean write - corrupted write) @ W_Q/K/V[l, h]`` of the
  sender (the preset has no norm, so a head's q/k/v is linear in its residual input), ``logits`` gets the
  write's difference added at the last ``hook_resid_post``; a head's write is ``z[h] @ W_O[l, h]``, the
  input's ``blocks.0.hook_resid_pre``;
* ``eap``: :func:`mechwork.analysis.edges.eap`; ``eap-ig``: :func:`~mechwork.analysis.edges.eap_ig`, 5 steps
  on the inputs.

Both loops are checked against ``exact`` (max abs difference printed; exit status 1 over ``LOOP_TOL``), and the
Spearman rho of EAP and EAP-IG against exact printed.

TransformerLens's edge granularity needs the bridge's per-head fork, which mechwork's native toys do not have
(it raises ``NotImplementedError`` on induction-2l's ``AttentionBridge``; the script prints that error). So the
comparison with TransformerLens runs on a Hugging Face GPT-2 of induction-2l's size (``GPT2Config(n_layer=2,
n_head=4, n_embd=64, n_positions=48, vocab_size=64, initializer_range=0.3)``, seeded random weights (the
default init std 0.02 gives edge scores under 1e-3, too small for a 1e-5 check to mean much; 0.3 gives up to
about 0.2), ``save_pretrained`` to a temporary directory and booted by ``mechwork.load``), same probe, per
position (TransformerLens's edges are per position):
``attribution_patch(model, clean, corrupted, metric, EdgeAttributionConfig(granularity="edge"))`` (one call
over the batch; it scores one example at a time and averages) vs ``eap(..., per_position=True)``, checked to
``TOL`` = 1e-5.

After one untimed warm-up call of each, the methods run interleaved over the repeats in one process, with
``torch.set_num_threads(1)``; medians are reported, and ratios. Peak resident memory (``ru_maxrss``, the
kernel's high-water mark of the process; it sees torch's CPU allocations, which ``tracemalloc`` does not) is
measured per method in a fresh child process (``--no-memory`` skips it): after loading the model and inputs,
and after running the method (twice; the loops once). The children run before this process loads anything,
because a child's ``ru_maxrss`` starts at its parent's resident size.

    OMP_WAIT_POLICY=PASSIVE python benchmarks/bench_circuits.py [--repeats 3] [--json out.json]
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

os.environ["TQDM_DISABLE"] = "1"
os.environ.setdefault("HF_HUB_OFFLINE", "1")
os.environ.setdefault("TRANSFORMERS_OFFLINE", "1")

N_PROMPTS = 8
IG_STEPS = 5
INIT_RANGE = 0.3  # GPT-2 init std; the default 0.02 gives edge scores below 1e-3, a weak 1e-5 check
TOL = 1e-5  # mechwork's EAP vs TransformerLens's
LOOP_TOL = 1e-4  # exact batched vs the loops (float32 sums in another order; metric values near 10)
GRAPHS = ("pos-free", "per-pos")
METHODS = {"exact": "exact, batched", "loop": "loop, runner", "hooks": "loop, TL hooks", "eap": "EAP",
           "eap-ig": f"EAP-IG ({IG_STEPS} steps)"}
TL_METHODS = {"tl": "TransformerLens attribution_patch(edge)", "mw": "mechwork eap(per_position=True)"}
LOOPS = ("loop", "hooks")


# -- inputs ---------------------------------------------------------------------------------------
def setup(model_name: str = "induction-2l") -> dict[str, Any]:
    """The model (``induction-2l`` or ``gpt2``, see the docstring), the induction probe and one thread."""
    import torch
    import transformer_lens.tools.analysis.attribution_patching  # noqa: F401  (every child's baseline holds it)

    import mechwork
    from mechwork.tasks import standard_probe

    torch.set_num_threads(1)
    probe = standard_probe(mechwork.preset("induction-2l").task, n=N_PROMPTS)
    if model_name == "induction-2l":
        model = mechwork.load("induction-2l", device="cpu")
    else:
        from transformers import GPT2Config, GPT2LMHeadModel

        torch.manual_seed(0)
        hf = GPT2LMHeadModel(GPT2Config(vocab_size=64, n_positions=48, n_embd=64, n_layer=2, n_head=4,
                                           initializer_range=INIT_RANGE))
        with tempfile.TemporaryDirectory() as d:
            hf.eval().save_pretrained(d)
            model = mechwork.load(d, device="cpu")
    return {"name": model_name, "model": model, "clean": probe.clean, "corrupted": probe.corrupted,
            "metric": probe.metric, "half": probe.clean.shape[1] // 2}


def graph_of(s: dict[str, Any], graph: str) -> Any:
    from mechwork.graph import Graph

    return Graph.of_model(s["model"], n_pos=s["clean"].shape[1] if graph == "per-pos" else None)


# -- the one-edge-per-forward loops ----------------------------------------------------------------
def runner_loop(s: dict[str, Any], graph: str) -> Any:
    """Every edge of ``graph`` by its own ``runner(model).run`` call: one copy, one zero in ``keep``."""
    import torch

    from mechwork.analysis.edgerun import runner

    r, g = runner(s["model"]), graph_of(s, graph)
    clean, corrupted, metric = s["clean"], s["corrupted"], s["metric"]
    n_pos = clean.shape[1]
    out = torch.empty(g.n_edges)
    with torch.no_grad():
        replacement = r.senders(clean)
        base = float(metric(r.run(corrupted)[0]))
        keep = torch.ones(1, len(g.pairs), n_pos)
        for i, e in enumerate(g.edges):
            pair = g.pair_index(e)
            where = (0, pair) if e.pos is None else (0, pair, e.pos)
            keep[where] = 0.0
            out[i] = float(metric(r.run(corrupted, keep=keep, replacement=replacement)[0])) - base
            keep[where] = 1.0
    return out


def _writes(model: Any, tokens: Any) -> dict[str, Any]:
    """Each sender's write into the residual stream, from a plain ``run_with_cache``."""
    import torch

    n_layers, n_heads = model.cfg.n_layers, model.cfg.n_heads
    names = ["blocks.0.hook_resid_pre"] + [f"blocks.{layer}.attn.hook_z" for layer in range(n_layers)]
    with torch.no_grad():
        _, cache = model.run_with_cache(tokens, names_filter=lambda n: n in names)
    out = {"input": cache["blocks.0.hook_resid_pre"]}
    for layer in range(n_layers):
        z = cache[f"blocks.{layer}.attn.hook_z"]
        for h in range(n_heads):
            out[f"L{layer}H{h}"] = z[:, :, h] @ model.W_O[layer, h]
    return out


def _reader_hook(model: Any, receiver: str, delta: Any) -> tuple[str, Callable[..., Any]]:
    """The hook that adds ``delta`` (a sender's write difference) to what ``receiver`` reads."""
    if receiver == "logits":
        return f"blocks.{model.cfg.n_layers - 1}.hook_resid_post", lambda t, hook=None: t + delta
    head, comp = receiver.split(".")
    layer, h = (int(x) for x in head[1:].split("H"))
    weight = {"q": model.W_Q, "k": model.W_K, "v": model.W_V}[comp][layer, h]

    def hook(t: Any, hook: Any = None) -> Any:
        t = t.clone()
        t[:, :, h] += delta @ weight
        return t

    return f"blocks.{layer}.attn.hook_{comp}", hook


def hooks_loop(s: dict[str, Any], graph: str) -> Any:
    """Every edge of ``graph`` by its own forward through plain TransformerLens hooks (see the docstring).

    One edge patched: its sender is upstream of its receiver, so the sender's live write in the patched run
    is its write in the plain corrupted run, and the receiver reads ``+ clean write - corrupted write``.
    """
    import torch

    model, clean, corrupted, metric = s["model"], s["clean"], s["corrupted"], s["metric"]
    g = graph_of(s, graph)
    if g.mlp:
        raise ValueError("the TL-hooks loop handles attention-only models (no MLP receivers)")
    clean_w, corr_w = _writes(model, clean), _writes(model, corrupted)
    out = torch.empty(g.n_edges)
    with torch.no_grad():
        base = float(metric(model(corrupted)))
        for i, e in enumerate(g.edges):
            delta = clean_w[e.sender] - corr_w[e.sender]
            if e.pos is not None:
                only = torch.zeros_like(delta)
                only[:, e.pos] = delta[:, e.pos]
                delta = only
            out[i] = float(metric(model.run_with_hooks(corrupted, fwd_hooks=[_reader_hook(model, e.receiver,
                                                                                              delta)]))) - base
    return out


# -- the methods -----------------------------------------------------------------------------------
def method_call(method: str, graph: str, s: dict[str, Any]) -> Callable[[], Any]:
    """A call computing every edge's score one way; returns the ``[edge]`` tensor."""
    if method == "loop":
        return lambda: runner_loop(s, graph)
    if method == "hooks":
        return lambda: hooks_loop(s, graph)
    from mechwork.analysis import edges

    args = (s["model"], s["clean"], s["corrupted"], s["metric"])
    pp = graph == "per-pos"
    if method == "exact":
        return lambda: edges.edge_patch(*args, per_position=pp).values
    if method == "eap":
        return lambda: edges.eap(*args, per_position=pp).values
    if method == "eap-ig":
        return lambda: edges.eap_ig(*args, steps=IG_STEPS, per_position=pp).values
    raise ValueError(f"unknown method {method!r}")


class PerExampleMetric:
    """The probe's metric on one example's logits, for TransformerLens's ``attribution_patch``.

    TransformerLens calls ``metric_fn`` on one example at a time, its clean pass then its corrupt pass (a
    scalar each), so call ``k`` is example ``k // 2``; the probe's own metric holds all 8 targets. The 1e-5
    check against mechwork catches any other order.
    """

    def __init__(self, clean: Any, half: int):
        self.target, self.half, self.calls = clean[:, half + 1:, None], half, 0

    def __call__(self, logits: Any) -> Any:
        i = self.calls // 2
        self.calls += 1
        lg = logits[:, self.half:-1]
        return (lg.gather(-1, self.target[i:i + 1])[..., 0] - lg.mean(-1)).mean()


def tl_scores(s: dict[str, Any]) -> Any:
    """TransformerLens's edge scores as a tensor in mechwork's per-position edge order."""
    import torch
    from transformer_lens.tools.analysis.attribution_patching import EdgeAttributionConfig, attribution_patch

    from mechwork.analysis.edgerun import to_tl

    g = graph_of(s, "per-pos")
    res = attribution_patch(s["model"], s["clean"], s["corrupted"], PerExampleMetric(s["clean"], s["half"]),
                            EdgeAttributionConfig(granularity="edge"))
    if len(res.edge_scores) != g.n_edges:
        raise ValueError(f"TransformerLens scored {len(res.edge_scores)} edges, mechwork's graph has {g.n_edges}")
    n_layers = s["model"].cfg.n_layers
    return torch.tensor([res.edge_scores[to_tl(e, n_layers)[0]] for e in g.edges])


def tl_call(method: str, s: dict[str, Any]) -> Callable[[], Any]:
    if method == "tl":
        return lambda: tl_scores(s)
    from mechwork.analysis.edges import eap

    return lambda: eap(s["model"], s["clean"], s["corrupted"], s["metric"], per_position=True).values


def tl_native_error() -> str:
    """What TransformerLens says when asked for edge granularity on induction-2l (one example)."""
    from transformer_lens.tools.analysis.attribution_patching import EdgeAttributionConfig, attribution_patch

    s = setup()
    try:
        attribution_patch(s["model"], s["clean"][:1], s["corrupted"][:1], PerExampleMetric(s["clean"], s["half"]),
                          EdgeAttributionConfig(granularity="edge"))
    except Exception as e:
        return f"{type(e).__name__}: {e}"
    return "no error (TransformerLens ran edge granularity on induction-2l)"


def have_edges() -> bool:
    """Whether :mod:`mechwork.analysis.edges` (exact, EAP, EAP-IG) is importable in this tree."""
    try:
        from mechwork.analysis import edges  # noqa: F401
    except ImportError:
        return False
    return True


def spearman(a: Any, b: Any) -> float:
    """Spearman's rho of two 1-D tensors (ranks by sort; ties are broken by order, none expected here)."""
    import torch

    ra, rb = (x.argsort().argsort().double() for x in (a, b))
    ra, rb = ra - ra.mean(), rb - rb.mean()
    return float((ra * rb).sum() / torch.sqrt((ra * ra).sum() * (rb * rb).sum()))


# -- timing ----------------------------------------------------------------------------------------
def timed(calls: dict[Any, Callable[[], Any]], repeats: int, skip_warmup: set[Any]) -> tuple[dict, dict, dict]:
    """Warm up (except ``skip_warmup``), then run ``calls`` interleaved ``repeats`` times.

    Returns the results, the wall times and the CPU times of this process (one thread: on a shared machine the
    CPU time is the steadier measure of the work done).
    """
    results = {k: run() for k, run in calls.items() if k not in skip_warmup}
    times: dict[Any, list[float]] = {k: [] for k in calls}
    cpu: dict[Any, list[float]] = {k: [] for k in calls}
    for _ in range(repeats):
        for k, run in calls.items():
            t, c = time.perf_counter(), time.process_time()
            got = run()
            times[k].append(time.perf_counter() - t)
            cpu[k].append(time.process_time() - c)
            results.setdefault(k, got)
    return results, times, cpu


def time_induction(repeats: int, methods: list[str]) -> dict[str, Any]:
    import torch

    s = setup("induction-2l")
    calls = {(g, m): method_call(m, g, s) for g in GRAPHS for m in methods}
    results, times, cpu = timed(calls, repeats, {("per-pos", m) for m in LOOPS})
    rows = []
    for g in GRAPHS:
        ref = results.get((g, "exact"))
        ref_med = statistics.median(times[(g, "exact")]) if ref is not None else None
        for m in methods:
            got, med = results[(g, m)], statistics.median(times[(g, m)])
            row = {"graph": g, "method": m, "edges": int(got.numel()), "median_s": med, "min_s": min(times[(g, m)]),
                   "median_cpu_s": statistics.median(cpu[(g, m)]), "vs_exact": med / ref_med if ref_med else None}
            if ref is not None and m in LOOPS:
                row["max_abs_diff"] = float((got - ref).abs().max())
            if ref is not None and m in ("eap", "eap-ig"):
                row["spearman"] = spearman(got, ref)
            rows.append(row)
    if "loop" in methods and "hooks" in methods:  # the two loops against each other (before edge_patch lands)
        for g in GRAPHS:
            rows.append({"graph": g, "method": "loop-vs-hooks",
                         "max_abs_diff": float((results[(g, "loop")] - results[(g, "hooks")]).abs().max())})
    with torch.no_grad():
        clean_value, corrupted_value = (float(s["metric"](s["model"](s[k]))) for k in ("clean", "corrupted"))
    return {"rows": rows, "n_pos": int(s["clean"].shape[1]), "batch": int(s["clean"].shape[0]),
            "metric_clean": clean_value, "metric_corrupted": corrupted_value}


def time_tl(repeats: int, methods: list[str]) -> dict[str, Any]:
    s = setup("gpt2")
    calls = {m: tl_call(m, s) for m in methods}
    results, times, cpu = timed(calls, repeats, set())
    rows = [{"method": m, "median_s": statistics.median(times[m]), "min_s": min(times[m]),
             "median_cpu_s": statistics.median(cpu[m]),
             "edges": int(results[m].numel())} for m in methods]
    out: dict[str, Any] = {"rows": rows, "describe": describe_gpt2(s)}
    if "mw" in results:
        out["max_abs_diff"] = float((results["mw"] - results["tl"]).abs().max())
        out["max_abs_tl"] = float(results["tl"].abs().max())
        out["ratio"] = rows[0]["median_s"] / rows[1]["median_s"]
        out["ratio_cpu"] = rows[0]["median_cpu_s"] / rows[1]["median_cpu_s"]
    return out


def describe_gpt2(s: dict[str, Any]) -> str:
    from mechwork.analysis.edgerun import runner

    c = s["model"].cfg
    return (f"Hugging Face GPT-2 bridge, {c.n_layers} layers x {c.n_heads} heads, d_model {c.d_model}, d_mlp "
            f"{c.d_mlp}, n_ctx {c.n_ctx}, d_vocab {c.d_vocab}; mechwork runner engine: {runner(s['model']).engine}")


# -- memory ----------------------------------------------------------------------------------------
def child(model_name: str, graph: str, method: str) -> None:
    """Peak resident memory of one method in this (fresh) process; prints JSON."""
    s = setup(model_name)
    run = tl_call(method, s) if model_name == "gpt2" else method_call(method, graph, s)
    base = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss
    for _ in range(1 if method in LOOPS else 2):
        run()
    peak = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss
    print(json.dumps({"base_mb": base / 1024, "peak_mb": peak / 1024}))  # ru_maxrss is in KiB on Linux


def memory(jobs: list[tuple[str, str, str]]) -> dict[tuple[str, str, str], dict[str, float]]:
    out = {}
    for job in jobs:
        r = subprocess.run([sys.executable, __file__, "--child", *job], check=True, capture_output=True, text=True)
        out[job] = json.loads(r.stdout.strip().splitlines()[-1])
    return out


def memory_jobs(methods: list[str], tl_methods: list[str]) -> list[tuple[str, str, str]]:
    return ([("induction-2l", g, m) for g in GRAPHS for m in methods] +
            [("gpt2", "per-pos", m) for m in tl_methods])


# -- report ----------------------------------------------------------------------------------------
def ratio(med: dict[str, tuple[float, float]], a: str, b: str) -> str:
    """Wall-time ratio of ``a`` over ``b``, and the CPU-time ratio in brackets."""
    return f"{med[a][0] / med[b][0]:.2f}x ({med[a][1] / med[b][1]:.2f}x)"


def report_induction(r: dict[str, Any]) -> bool:
    """Print the induction-2l table and ratios; False if a loop differs from exact by more than LOOP_TOL."""
    print(f"induction-2l, induction probe: batch {r['batch']} x {r['n_pos']} positions; metric clean "
          f"{r['metric_clean']:.4f}, corrupted {r['metric_corrupted']:.4f}")
    print(f"  {'graph':9s} {'method':20s} {'edges':>6s} {'median s':>9s} {'min s':>8s} {'CPU s':>8s} {'/ exact':>9s}"
          "  check vs exact")
    ok = True
    for row in r["rows"]:
        if row["method"] == "loop-vs-hooks":
            print(f"  {row['graph']:9s} loops: runner vs TL hooks, max |diff| {row['max_abs_diff']:.2e}")
            continue
        check = ""
        if "max_abs_diff" in row:
            ok = ok and row["max_abs_diff"] <= LOOP_TOL
            check = f"max |diff| {row['max_abs_diff']:.2e}"
        if "spearman" in row:
            check = f"Spearman rho {row['spearman']:.4f}"
        rel = f"{row['vs_exact']:8.3f}x" if row.get("vs_exact") else f"{'-':>9s}"
        print(f"  {row['graph']:9s} {METHODS[row['method']]:20s} {row['edges']:6d} {row['median_s']:9.3f} "
              f"{row['min_s']:8.3f} {row['median_cpu_s']:8.3f} {rel}  {check}")
    print("speed ratios, wall (CPU) median / median:")
    for g in GRAPHS:
        med = {row["method"]: (row["median_s"], row["median_cpu_s"]) for row in r["rows"]
               if row["graph"] == g and "median_s" in row}
        if "exact" not in med:
            continue
        parts = [f"{METHODS[m]} / exact batched {ratio(med, m, 'exact')}" for m in LOOPS if m in med]
        parts += [f"exact / {METHODS[m]} {ratio(med, 'exact', m)}" for m in ("eap", "eap-ig") if m in med]
        print(f"  {g}: " + "; ".join(parts))
    return ok


def report_tl(r: dict[str, Any], native_error: str) -> bool:
    print(f"TransformerLens edge granularity on induction-2l: {native_error}")
    print(f"mechwork EAP vs TransformerLens, per position, on a {r['describe']}:")
    for row in r["rows"]:
        print(f"  {TL_METHODS[row['method']]:42s} {row['edges']:6d} edges  median {row['median_s']:.3f} s  "
              f"min {row['min_s']:.3f} s  CPU {row['median_cpu_s']:.3f} s")
    if "ratio" not in r:
        return True
    print(f"  TransformerLens / mechwork: {r['ratio']:.2f}x (CPU {r['ratio_cpu']:.2f}x); "
          f"max |diff| {r['max_abs_diff']:.2e} "
          f"(largest |score| {r['max_abs_tl']:.3g})")
    return r["max_abs_diff"] <= TOL


def print_memory(mem: dict[tuple[str, str, str], dict[str, float]]) -> None:
    print("peak resident memory (ru_maxrss), one child process per row (model and probe loaded, then the method "
          "run twice; the loops once):")
    print(f"  {'model':13s} {'graph':9s} {'method':42s} {'after setup MB':>15s} {'peak MB':>8s} {'increase MB':>12s}")
    for (model, g, m), v in mem.items():
        name = TL_METHODS[m] if model == "gpt2" else METHODS[m]
        print(f"  {model:13s} {g:9s} {name:42s} {v['base_mb']:15.1f} {v['peak_mb']:8.1f} "
              f"{v['peak_mb'] - v['base_mb']:12.1f}")


def main(argv: list[str] | None = None) -> int:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--repeats", type=int, default=3)
    ap.add_argument("--no-memory", action="store_true", help="skip the memory children")
    ap.add_argument("--no-tl", action="store_true", help="skip the GPT-2 comparison with TransformerLens")
    ap.add_argument("--json", default=None, help="also write the figures to this JSON file")
    ap.add_argument("--child", nargs=3, metavar=("MODEL", "GRAPH", "METHOD"), help=argparse.SUPPRESS)
    args = ap.parse_args(argv)
    if args.child:
        child(*args.child)
        return 0
    full = have_edges()
    methods = list(METHODS) if full else list(LOOPS)
    tl_methods = ([] if args.no_tl else list(TL_METHODS) if full else ["tl"])
    mem = {} if args.no_memory else memory(memory_jobs(methods, tl_methods))  # first, while this process is small

    from importlib.metadata import version

    import torch

    torch.set_num_threads(1)
    print(f"edge scores, denoising; mechwork.analysis.edges {'present' if full else 'MISSING (loops only)'}; "
          f"TransformerLens {version('transformer-lens')}, torch {torch.__version__}, {torch.get_num_threads()} "
          f"thread, OMP_WAIT_POLICY={os.environ.get('OMP_WAIT_POLICY', 'unset')}; medians of {args.repeats} "
          f"interleaved repeats; load average {os.getloadavg()[0]:.1f}")
    ind = time_induction(args.repeats, methods)
    ok = report_induction(ind)
    tl: dict[str, Any] = {}
    if tl_methods:
        tl = time_tl(args.repeats, tl_methods)
        ok = report_tl(tl, tl_native_error()) and ok
    if mem:
        print_memory(mem)
    print(f"load average at the end {os.getloadavg()[0]:.1f}")
    if args.json:
        with open(args.json, "w") as f:
            json.dump({"induction": ind, "tl": tl, "memory": {"/".join(k): v for k, v in mem.items()},
                       "repeats": args.repeats}, f, indent=1)
    if not ok:
        print(f"FAILED: a loop differs from exact by more than {LOOP_TOL:g}, or mechwork's EAP from "
              f"TransformerLens's by more than {TOL:g}")
        return 1
    print("all checks passed")
    return 0


if __name__ == "__main__":
    sys.exit(main())
