"""A dashboard's analysis and page stages, one source tree against another, each build a new process.

For ``modadd-113`` and ``induction-2l``: the kit's ``analyse`` (every analysis of the page), building the page
from the bundle, and rendering and writing it inline, timed in a new Python process per build. The trees are
interleaved build by build (each on ``PYTHONPATH``): the one given by ``--before`` (e.g. a ``git archive`` of an
older commit), this checkout on TransformerLens's bridge, and this checkout on the model ``mechwork dashboard``
opens (``open_source(light=True)``, when the tree has it). Medians of wall seconds and CPU seconds (user + system,
all threads).

    python benchmarks/bench_stages.py --before /tmp/old-tree [--repeats 3] [--device cpu]
"""

from __future__ import annotations

import argparse
import json
import os
import statistics
import subprocess
import sys
from pathlib import Path

CHILD = r"""
import json, sys, tempfile, time
from pathlib import Path
from mechwork.dashboard import page_for
from mechwork.dashboard.standard import analyse, save
from mechwork.source import open_source
name, light, device = sys.argv[1], sys.argv[2] == "light", sys.argv[3]
src = open_source(name, device=device, light=True) if light else open_source(name, device=device)
out = {"model": type(src.model).__name__}
def sync():
    if device.startswith("cuda"):
        import torch
        torch.cuda.synchronize()
def clock(stage, fn, *a):
    sync()
    t, c = time.perf_counter(), time.process_time()
    r = fn(*a)
    sync()
    out[stage] = (time.perf_counter() - t, time.process_time() - c)
    return r
bundle = clock("analysis", analyse, src)
page = clock("page", page_for({"modadd-113": "modadd", "induction-2l": "induction"}[name]), bundle)
with tempfile.TemporaryDirectory() as d:
    clock("write", save, page, Path(d) / "page.html", "inline", None)
print(json.dumps(out))
"""
STAGES = ("analysis", "page", "write")


def build(tree: str, preset: str, model: str, device: str) -> dict[str, object]:
    env = os.environ | {"PYTHONPATH": tree, "OMP_WAIT_POLICY": "PASSIVE"}
    res = subprocess.run([sys.executable, "-c", CHILD, preset, model, device], capture_output=True, text=True, cwd=tree,
                         env=env)
    if res.returncode:
        raise RuntimeError(f"{preset} in {tree} failed: {res.stderr[-2000:]}")
    out: dict[str, object] = json.loads(res.stdout.strip().splitlines()[-1])
    return out


def main(argv: list[str] | None = None) -> int:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--before", required=True, help="a source tree to compare with (its mechwork/ on PYTHONPATH)")
    ap.add_argument("--repeats", type=int, default=3)
    ap.add_argument("--device", default="cpu", help="torch device of the builds (cuda runs unchanged)")
    args = ap.parse_args(argv)
    here = str(Path(__file__).resolve().parents[1])
    runs = {"before": (args.before, "bridge"), "after, bridge": (here, "bridge"), "after, dashboard's model":
            (here, "light")}
    rows: dict[tuple[str, str], list[dict[str, object]]] = {}
    print(f"load average at the start {os.getloadavg()}")
    for _ in range(args.repeats):
        for preset in ("modadd-113", "induction-2l"):
            for label, (tree, model) in runs.items():
                rows.setdefault((preset, label), []).append(build(tree, preset, model, args.device))
    print(f"load average at the end {os.getloadavg()}")
    print("| preset | tree, model | " + " | ".join(STAGES) + " |")
    print("| --- | --- |" + " ---: |" * len(STAGES))
    for (preset, label), ds in rows.items():
        cells = [f"{statistics.median(d[s][0] for d in ds):.2f} ({statistics.median(d[s][1] for d in ds):.2f})"
                 for s in STAGES]  # type: ignore[index]
        print(f"| {preset} | {label} ({ds[0]['model']}) | " + " | ".join(cells) + " |")
    return 0


if __name__ == "__main__":
    sys.exit(main())
