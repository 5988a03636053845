"""Training-step speed: mechwork's fast path vs a plain forward/backward through the bridge.

Both run the same full-batch AdamW step (3,830 pairs, modadd-113) on the same
weights, interleaved in blocks so machine noise hits both alike. Prints the
median step time of each and the ratio.

    python benchmarks/bench_fastpath.py [--steps 40] [--blocks 5]
"""

from __future__ import annotations

import argparse
import json
import statistics
import time
from pathlib import Path

import torch
import torch.nn.functional as F

from mechwork.fastpath import modadd_logits
from mechwork.models import build_model, native_module, preset, weights


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--steps", type=int, default=40, help="timed steps per block per path")
    ap.add_argument("--blocks", type=int, default=5, help="interleaved blocks")
    args = ap.parse_args()
    torch.set_num_threads(2)
    pre = preset("modadd-113")
    model = build_model(pre.model, "cpu").train()
    w = weights(model)
    batch = pre.task.eval_batches()["train"]
    labels = batch.targets[:, -1]
    params = [p for p in w.values() if p.requires_grad]
    opt = torch.optim.AdamW(params, lr=1e-3, weight_decay=1.0, betas=(0.9, 0.98))
    paths = {
        "bridge (hooked forward)": lambda: model(batch.tokens)[:, -1],
        "native module (no hooks)": lambda: native_module(model)(batch.tokens)[:, -1],
        "mechwork fast path": lambda: modadd_logits(w, pre.model, batch.tokens),
    }
    with torch.no_grad():
        ref = paths["bridge (hooked forward)"]()
        diff = (paths["mechwork fast path"]() - ref).abs().max().item()
    times: dict[str, list[float]] = {k: [] for k in paths}
    for block in range(args.blocks + 1):  # block 0 warms up
        for name, fwd in paths.items():
            for _ in range(args.steps):
                t = time.perf_counter()
                loss = F.cross_entropy(fwd(), labels)
                opt.zero_grad(set_to_none=True)
                loss.backward()
                opt.step()
                if block:
                    times[name].append(time.perf_counter() - t)
    med = {k: statistics.median(v) * 1e3 for k, v in times.items()}
    base = med["bridge (hooked forward)"]
    print(f"full-batch training step, modadd-113, {len(labels)} pairs, torch {torch.__version__}, "
          f"{torch.get_num_threads()} threads; fast vs bridge logits max abs diff {diff:.2e}")
    print(f"{'path':28s} {'median ms/step':>15s} {'speed-up vs bridge':>19s}")
    for k, v in med.items():
        print(f"{k:28s} {v:15.1f} {base / v:18.2f}x")
    out = Path(__file__).parent / "out"
    out.mkdir(exist_ok=True)
    (out / "fastpath.json").write_text(json.dumps({"median_ms": med, "max_abs_diff": diff}, indent=2))


if __name__ == "__main__":
    main()
