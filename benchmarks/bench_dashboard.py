"""Dashboard size and build time.

Size: a page of 10 circuitsvis views and 10 plotly figures in inline mode,
against (the circuitsvis bundle + plotly.js + the data), and against the same
10 views saved through circuitsvis's own local rendering (which inlines its
bundle into every view) plus the 10 figures through plotly's ``to_html`` with
plotly.js included once.

Build time, for ``modadd-113`` and ``induction-2l``, by stage: importing torch, importing TransformerLens's
bridge, importing mechwork's dashboard code, loading the model (``open_source``), each analysis of the kit's
``analyse`` (the kit's own functions, timed where the kit calls them; "other" is the rest of ``analyse``), building
the page from the bundle (no model) and writing it (render + atomic write). *Cold*: a new Python process per
build (``--cold`` repeats); the real command, ``python -m mechwork.cli dashboard PRESET``, is timed beside it,
with ``--cache`` rebuilding from the result cache, and ``python -c "import torch"`` as the peer. *Warm*: in this
process, after one untimed build (``--repeats``). Medians of wall and CPU (user + system, all threads) seconds.
The peer, interleaved with each cold build: the same build on TransformerLens's bridge (``open_source`` without
``light``, importing the bridge first), as every dashboard was built before HookedToy; the process's wall time
from start to exit is the *cold total*.

    python benchmarks/bench_dashboard.py [--repeats 5] [--cold 3] [--device cpu] [--part size|time|both]
"""

from __future__ import annotations

import argparse
import functools
import json
import os
import re
import resource
import statistics
import subprocess
import sys
import tempfile
import time
from collections.abc import Callable
from pathlib import Path
from typing import Any


def size_bench() -> dict[str, float]:
    import circuitsvis.attention as cva
    import plotly.graph_objects as go
    import torch

    from mechwork.dashboard import Page
    from mechwork.dashboard.assets import CIRCUITSVIS, PLOTLY

    g = torch.Generator().manual_seed(0)
    page = Page("size benchmark")
    cv_local = 0
    plotly_html = 0
    for i in range(10):
        att = torch.rand(4, 20, 20, generator=g).softmax(-1)
        toks = [f"t{j}" for j in range(20)]
        page.attention(att, toks, title=f"view {i}")
        cv_local += len(cva.attention_heads(att, toks).local_src.encode())
        fig = go.Figure(go.Scatter(x=list(range(200)), y=torch.randn(200, generator=g).tolist()))
        page.plotly(fig, title=f"figure {i}")
        plotly_html += len(fig.to_html(full_html=False, include_plotlyjs=(i == 0)).encode())
    html = page.render("inline").encode()
    data = sum(len(m.encode()) for m in re.findall(
        r'<script type="application/json" id="[^"]+">(.*?)</script>', html.decode(), re.S))
    cv_bundle = len(CIRCUITSVIS.embedded().encode())  # as an inline page carries them: gzip + base64
    plotly_js = len(PLOTLY.embedded().encode())
    cdn = len(page.render("cdn").encode())
    return {
        "page": len(html), "cv_bundle": cv_bundle, "plotly_js": plotly_js, "data": data,
        "ratio_vs_parts": len(html) / (cv_bundle + plotly_js + data),
        "cv_local_10_views": cv_local, "peer_total": cv_local + plotly_html,
        "ratio_vs_cv_local": len(html) / cv_local, "ratio_vs_peer_total": len(html) / (cv_local + plotly_html),
        "cdn_page": cdn,
    }


def print_size(s: dict[str, float]) -> None:
    print("size, 10 circuitsvis views + 10 plotly figures, inline:")
    print(f"  page {s['page']:,} B = {s['ratio_vs_parts']:.3f} x (circuitsvis bundle {s['cv_bundle']:,}"
          f" + plotly.js (partial, gzip+base64) {s['plotly_js']:,} + data {s['data']:,})   [target <= 1.2]")
    print(f"  circuitsvis local rendering of the 10 views: {s['cv_local_10_views']:,} B;"
          f" mechwork's page is {s['ratio_vs_cv_local']:.3f} x that ({1 / s['ratio_vs_cv_local']:.2f}x smaller)")
    print(f"  with the 10 figures through plotly.to_html (plotly.js once): {s['peer_total']:,} B;"
          f" ratio {s['ratio_vs_peer_total']:.3f}")
    print(f"  the same page in CDN mode: {s['cdn_page']:,} B")


STAGES = {  # kind -> (module, attribute, stage) of the analyses a kit's analyse calls, timed where it calls them
    "modadd": [("mechwork.analysis.grokking", "grid_pass", "grid pass (logits, MLP, attention)"),
               ("mechwork.analysis.grokking", "grid_run", "grid pass (logits, MLP, attention)"),  # older code
               ("mechwork.analysis.grokking", "_attention", "attention at '='"),
               ("mechwork.analysis.grokking", "fourier_results", "Fourier analyses and ablations"),
               ("mechwork.analysis.grokking", "stored_progress", "progress measures"),
               ("mechwork.tasks.modadd", "sae", "SAE metrics and features")],
    "induction": [("mechwork.analysis.attention", "head_detectors", "head detectors"),
                  ("mechwork.analysis.induction", "repeat_accuracy", "repeat accuracy"),
                  ("mechwork.analysis.attention", "composition_scores", "composition scores"),
                  ("mechwork.analysis.induction", "position_loss", "loss by position"),
                  ("mechwork.analysis.attention", "attention_patterns", "attention patterns"),
                  ("mechwork.analysis.induction", "patching_results", "patching and attribution"),
                  ("mechwork.analysis.induction", "circuit_ablation", "ablations and path patching"),
                  ("mechwork.analysis.prompt", "circuit_result", "circuit (EAP, exact, faithfulness)"),
                  ("mechwork.tasks.induction", "sae", "SAE metrics and features")],
}
PRESETS = {"modadd-113": "modadd", "induction-2l": "induction"}
BRIDGE_OF = {n: f"{n} on the bridge" for n in PRESETS}  # the peer: the same build on TransformerLens's bridge
BRIDGE = {BRIDGE_OF[n]: kind for n, kind in PRESETS.items()}


class Clock:
    """Wall and CPU seconds per stage; ``torch.cuda.synchronize()`` around each stage on a CUDA device."""

    def __init__(self, device: str) -> None:
        self.cuda = device.startswith("cuda")
        self.wall: dict[str, float] = {}
        self.cpu: dict[str, float] = {}
        self.depth = 0

    def _sync(self) -> None:
        if self.cuda and "torch" in sys.modules:
            sys.modules["torch"].cuda.synchronize()

    def run(self, stage: str, fn: Callable[..., Any], *a: Any, **k: Any) -> Any:
        if self.depth:  # an analysis inside another: counted in the outer one
            return fn(*a, **k)
        self._sync()
        self.depth += 1
        t, c = time.perf_counter(), time.process_time()
        try:
            return fn(*a, **k)
        finally:
            self._sync()
            self.depth -= 1
            self.wall[stage] = self.wall.get(stage, 0.0) + time.perf_counter() - t
            self.cpu[stage] = self.cpu.get(stage, 0.0) + time.process_time() - c

    def timed(self, fn: Callable[..., Any], stage: str) -> Callable[..., Any]:
        return functools.wraps(fn)(lambda *a, **k: self.run(stage, fn, *a, **k))


def build_stages(name: str, out: Path, device: str, clock: Clock, bridge: bool = False) -> None:
    """One dashboard build of preset ``name``, every stage timed on ``clock`` (imports too, when not yet done); on
    a HookedToy as ``mechwork dashboard`` builds it, or with ``bridge`` on TransformerLens's bridge."""
    import importlib

    clock.run("import torch", importlib.import_module, "torch")
    if bridge:
        clock.run("import TransformerLens bridge", importlib.import_module,
                  "transformer_lens.model_bridge.sources.native")
    clock.run("import mechwork dashboard", importlib.import_module, "mechwork.dashboard")
    from mechwork.dashboard import page_for
    from mechwork.dashboard.standard import analyse, save
    from mechwork.source import open_source

    kind = PRESETS[name]
    patched = []
    for module, attr, stage in STAGES[kind]:
        mod = importlib.import_module(module)
        if not hasattr(mod, attr):  # an analysis this version of the kit does not call
            continue
        patched.append((mod, attr, getattr(mod, attr)))
        setattr(mod, attr, clock.timed(getattr(mod, attr), stage))
    try:
        src = clock.run("model load", open_source, name, device=device, light=not bridge)
        assert (type(src.model).__name__ == "TransformerBridge") == bridge
        labels = {s for *_, s in STAGES[kind]}
        before = sum(clock.wall.get(s, 0.0) for s in labels), sum(clock.cpu.get(s, 0.0) for s in labels)
        t, c = time.perf_counter(), time.process_time()
        bundle = analyse(src)
        clock.wall["other analysis"] = clock.wall.get("other analysis", 0.0) + time.perf_counter() - t - (
            sum(clock.wall.get(s, 0.0) for s in labels) - before[0])
        clock.cpu["other analysis"] = clock.cpu.get("other analysis", 0.0) + time.process_time() - c - (
            sum(clock.cpu.get(s, 0.0) for s in labels) - before[1])
        del src
        page = clock.run("page from the bundle", page_for(kind), bundle)
        clock.run("render and write", save, page, out, "inline", None)
    finally:
        for mod, attr, fn in patched:
            setattr(mod, attr, fn)


def _child(name: str, device: str, bridge: bool) -> None:
    """``--child``: one cold build in this new process; its stage times as JSON on stdout."""
    clock = Clock(device)
    with tempfile.TemporaryDirectory() as d:
        build_stages(name, Path(d) / "page.html", device, clock, bridge)
    heavy = [m for m in ("transformer_lens", "transformers", "datasets", "sympy", "pandas", "plotly")
             if m in sys.modules]
    print(json.dumps({"wall": clock.wall, "cpu": clock.cpu, "heavy": heavy}))


def _cpu_children() -> float:
    r = resource.getrusage(resource.RUSAGE_CHILDREN)
    return r.ru_utime + r.ru_stime


def _process(cmd: list[str], cwd: str, env: dict[str, str] | None = None) -> tuple[float, float, str]:
    t, c = time.perf_counter(), _cpu_children()
    res = subprocess.run(cmd, capture_output=True, text=True, cwd=cwd, env=env)
    if res.returncode != 0:
        raise RuntimeError(f"{cmd} failed: {res.stderr[-2000:]}")
    return time.perf_counter() - t, _cpu_children() - c, res.stdout


def cold_bench(repeats: int, device: str, cli: bool = True) -> dict[str, Any]:
    """Per preset, interleaved: the stage-timed child, the real command, its --cache rebuild (unless ``cli`` is
    False); and import torch."""
    py = [sys.executable]
    rows: dict[str, Any] = {n: {"wall": [], "cpu": [], "total": [], "total_cpu": [], "heavy": [], "cli": [],
                                "cli_cpu": [], "hit": [], "hit_cpu": []} for n in [*PRESETS, *BRIDGE]}
    rows["import torch"] = {"wall": [], "cpu": []}
    with tempfile.TemporaryDirectory() as cwd:
        env = os.environ | {"MECHWORK_CACHE": str(Path(cwd) / "cache")}
        for name in PRESETS if cli else ():  # fill the result cache once (and the file cache)
            _process([*py, "-m", "mechwork.cli", "dashboard", name, "--out", "x.html", "--device", device,
                      "--cache", "--quiet"], cwd, env)
        for _ in range(repeats):
            for name in PRESETS:
                for label, extra in ((name, []), (BRIDGE_OF[name], ["--bridge"])):
                    wall, cpu, out = _process([*py, __file__, "--child", name, "--device", device, *extra], cwd)
                    for key, value in (("wall", json.loads(out)["wall"]), ("cpu", json.loads(out)["cpu"]),
                                       ("total", wall), ("total_cpu", cpu), ("heavy", json.loads(out)["heavy"])):
                        rows[label][key].append(value)
                if not cli:
                    continue
                command = [*py, "-m", "mechwork.cli", "dashboard", name, "--out", "x.html", "--device", device,
                           "--quiet"]
                wall, cpu, _ = _process(command, cwd)
                rows[name]["cli"].append(wall)
                rows[name]["cli_cpu"].append(cpu)
                wall, cpu, _ = _process([*command, "--cache"], cwd, env)
                rows[name]["hit"].append(wall)
                rows[name]["hit_cpu"].append(cpu)
            wall, cpu, _ = _process([*py, "-c", "import torch"], cwd)
            rows["import torch"]["wall"].append(wall)
            rows["import torch"]["cpu"].append(cpu)
    return rows


def warm_bench(repeats: int, device: str) -> dict[str, dict[str, list[dict[str, float]]]]:
    """Per preset, interleaved, in this process after one untimed build of each: the stage times."""
    rows: dict[str, dict[str, list[dict[str, float]]]] = {n: {"wall": [], "cpu": []} for n in PRESETS}
    with tempfile.TemporaryDirectory() as d:
        for name in PRESETS:
            build_stages(name, Path(d) / "page.html", device, Clock(device))
        for _ in range(repeats):
            for name in PRESETS:
                clock = Clock(device)
                build_stages(name, Path(d) / "page.html", device, clock)
                rows[name]["wall"].append(clock.wall)
                rows[name]["cpu"].append(clock.cpu)
    return rows


def _median_stages(runs: list[dict[str, float]]) -> dict[str, float]:
    return {k: statistics.median(r.get(k, 0.0) for r in runs) for k in runs[0]}


def print_time(cold: dict[str, Any], warm: dict[str, Any], n_cold: int, n_warm: int) -> None:
    cols = [(n, "cold") for n in PRESETS for n in (n, BRIDGE_OF[n])] + [(n, "warm") for n in PRESETS]
    med = {(n, "cold"): (_median_stages(cold[n]["wall"]), _median_stages(cold[n]["cpu"])) for n in cold
           if n in PRESETS or n in BRIDGE}
    med |= {(n, "warm"): (_median_stages(warm[n]["wall"]), _median_stages(warm[n]["cpu"])) for n in PRESETS}
    order = ["import torch", "import TransformerLens bridge", "import mechwork dashboard", "model load"]
    order += [s for kind in ("modadd", "induction") for *_, s in STAGES[kind]]
    order += ["other analysis", "page from the bundle", "render and write"]
    order = list(dict.fromkeys(order))  # a stage both kits have (the SAE) once
    head = " | ".join(f"{n} {mode}" for n, mode in cols)
    print(f"build time by stage, median wall s (CPU s); cold: {n_cold} new processes each, interleaved (HookedToy, "
          f"then the bridge), warm: {n_warm} in process on HookedToy")
    print(f"| stage | {head} |")
    print("| --- |" + " ---: |" * len(cols))
    analysis = {s for kind in STAGES.values() for *_, s in kind} | {"other analysis"}
    for stage in order:
        if not any(stage in med[c][0] for c in cols):
            continue
        cells = [f"{med[c][0][stage]:.2f} ({med[c][1][stage]:.2f})" if stage in med[c][0] else "" for c in cols]
        print(f"| {stage} | {' | '.join(cells)} |")
    for label, keep in (("imports", lambda s: s.startswith("import")), ("load", lambda s: s == "model load"),
                        ("analysis", lambda s: s in analysis),
                        ("page + write", lambda s: s in ("page from the bundle", "render and write")),
                        ("total in process", lambda s: True)):
        cells = [f"{sum(v for s, v in med[c][0].items() if keep(s)):.2f} "
                 f"({sum(v for s, v in med[c][1].items() if keep(s)):.2f})" for c in cols]
        print(f"| **{label}** | {' | '.join(cells)} |")
    cells = [f"{statistics.median(cold[n]['total']):.2f} ({statistics.median(cold[n]['total_cpu']):.2f})"
             if mode == "cold" else "" for n, mode in cols]
    print(f"| **cold total (process start to exit)** | {' | '.join(cells)} |")
    cells = [", ".join(sorted(set().union(*map(set, cold[n]["heavy"])))) or "none" if mode == "cold" else ""
             for n, mode in cols]
    print(f"| imported by the end | {' | '.join(cells)} |")
    for n in PRESETS:
        toy, ref = statistics.median(cold[n]["total"]), statistics.median(cold[BRIDGE_OF[n]]["total"])
        print(f"{n}: cold build {toy:.2f} s on HookedToy against {ref:.2f} s on the bridge, {ref / toy:.2f}x "
              "faster   [target <= 5 s idle]")
    for n in [n for n in PRESETS if cold[n]["cli"]]:
        cli, hit = statistics.median(cold[n]["cli"]), statistics.median(cold[n]["hit"])
        cli_cpu, hit_cpu = statistics.median(cold[n]["cli_cpu"]), statistics.median(cold[n]["hit_cpu"])
        print(f"{n}: `mechwork dashboard` (new process) {cli:.2f} s wall ({cli_cpu:.2f} CPU); with --cache, "
              f"rebuilt from the result cache: {hit:.2f} s ({hit_cpu:.2f} CPU), {cli / hit:.1f}x faster"
              "   [target <= 5 s idle]")
    print(f"peer: python -c \"import torch\" {statistics.median(cold['import torch']['wall']):.2f} s wall "
          f"({statistics.median(cold['import torch']['cpu']):.2f} CPU); load average "
          f"{' '.join(f'{x:.2f}' for x in os.getloadavg())} at the end")


def main(argv: list[str] | None = None) -> int:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--repeats", type=int, default=5, help="warm builds of each preset, in process")
    ap.add_argument("--cold", type=int, default=3, help="cold builds of each preset, each a new process")
    ap.add_argument("--device", default="cpu", help="torch device of the builds (cuda runs unchanged)")
    ap.add_argument("--part", choices=("size", "time", "both"), default="both")
    ap.add_argument("--no-cli", dest="cli", action="store_false",
                    help="time the stages only, not the real command and its --cache rebuild")
    ap.add_argument("--child", default=None, help=argparse.SUPPRESS)
    ap.add_argument("--bridge", action="store_true", help=argparse.SUPPRESS)
    args = ap.parse_args(argv)
    if args.child is not None:
        _child(args.child, args.device, args.bridge)
        return 0
    if args.part in ("size", "both"):
        print_size(size_bench())
    if args.part in ("time", "both"):
        print(f"load average {' '.join(f'{x:.2f}' for x in os.getloadavg())} at the start")
        cold = cold_bench(args.cold, args.device, args.cli)
        warm = warm_bench(args.repeats, args.device)
        print_time(cold, warm, args.cold, args.repeats)
    return 0


if __name__ == "__main__":
    sys.exit(main())
