"""Train the SAEs that ship with the presets, reproducibly, and print their metrics.

* ``modadd-113`` at ``blocks.0.mlp.hook_post`` (512 neurons): the activation at the last position (the ``=``
  token) of all 113^2 pairs; the SAE trains on all of them. Its loss recovered is measured on all pairs, and on the
  held-out split (the pairs the model never trained on) too. Its latents' activation over the (a, b) grid gives the
  count of live latents dominated by one key frequency (>= 80% of the grid's non-constant Fourier energy in one
  frequency k: :func:`mechwork.analysis.features.frequency_energy`).
* ``induction-2l`` at ``blocks.1.hook_resid_pre`` (d_model 64): every position of the task's training batches
  ``task.batch("train", step)`` for the first ``n_batches`` steps; measured on the task's test split (512 fresh
  sequences; the loss over the positions ``Batch.mask`` counts, with the SAE spliced in at every position).

Both are TopK SAEs (Gao et al. 2024) with AuxK, trained on one thread from fixed seeds, so a rerun writes the same
bytes. The SAEs go to ``mechwork/data/saes/<preset>/<hook>/`` (SAELens's layout, package data) and the figures to
``experiments/results/saes.json``.

    python experiments/train_saes.py                       # both (a few minutes on one core)
    python experiments/train_saes.py --only modadd-113     # one of them
    python experiments/train_saes.py --out /tmp/saes       # somewhere else (e.g. to compare with the shipped files)
"""

from __future__ import annotations

import argparse
import json
import os
import sys
import time
from dataclasses import dataclass
from pathlib import Path

os.environ.setdefault("OMP_WAIT_POLICY", "PASSIVE")

import torch

import mechwork
from mechwork.analysis.features import DOMINANT, frequency_energy
from mechwork.analysis.sae import SAEConfig
from mechwork.analysis.saeio import save_sae
from mechwork.analysis.saemetrics import evaluate_sae
from mechwork.analysis.saestore import SHIPPED_ROOT
from mechwork.analysis.saetrain import SAETrainConfig, collect_activations, train_sae
from mechwork.io import write_json_atomic

ROOT = Path(__file__).resolve().parents[1]
RESULTS = ROOT / "experiments" / "results" / "saes.json"


@dataclass(frozen=True)
class Spec:
    """One shipped SAE: where it reads, its shape and its training."""

    hook: str
    d_sae: int
    k: int
    steps: int
    batch_size: int
    lr: float
    positions: str  # "mask": the positions the task's loss counts; "all": every position
    n_batches: int = 0  # a task with fresh batches: training batches cached
    seed: int = 0


SPECS = {
    "modadd-113": Spec(hook="blocks.0.mlp.hook_post", d_sae=512, k=16, steps=3000, batch_size=512, lr=2e-3,
                       positions="mask"),
    "induction-2l": Spec(hook="blocks.1.hook_resid_pre", d_sae=512, k=16, steps=3000, batch_size=1024, lr=2e-3,
                         positions="all", n_batches=64),
}


def single_frequency(sae: object, acts_all_pairs: torch.Tensor, p: int) -> dict[str, object]:
    """Live latents (firing on some pair) and how many are dominated by one key frequency."""
    with torch.no_grad():
        lat = sae.encode(acts_all_pairs)  # type: ignore[attr-defined]  # [p*p, d_sae], a-major
    live = (lat > 0).any(0)
    share = frequency_energy(lat.T.reshape(-1, p, p)[live].double())
    top = share.max(-1)
    dom = top.values >= DOMINANT
    freqs = (top.indices[dom] + 1).tolist()
    tops = (top.indices + 1).tolist()
    return {"n_live": int(live.sum()), "n_dominated": int(dom.sum()), "threshold": DOMINANT,
            "by_frequency": {str(f): freqs.count(f) for f in sorted(set(freqs))},
            "top_frequency_of_live": {str(f): tops.count(f) for f in sorted(set(tops))},
            "median_top_share": float(top.values.median())}


def train_one(name: str, spec: Spec, out_root: Path) -> dict[str, object]:
    t0 = time.perf_counter()
    model = mechwork.load(name)
    task = mechwork.preset(name).task
    if spec.positions == "mask":  # a fixed dataset: every pair, at the loss position
        data = task.batch("all")
        tokens, mask, what = data.tokens, data.mask, f"all {len(data):,} pairs, last position"
        eval_batches = {"all pairs": data, "test split": task.batch("test")}
    else:
        got = [task.batch("train", step) for step in range(spec.n_batches)]
        tokens, mask = torch.cat([b.tokens for b in got]), None
        what = f"training batches 0-{spec.n_batches - 1} ({len(tokens):,} sequences), every position"
        eval_batches = {"test split": task.batch("test")}
    acts = collect_activations(model, spec.hook, tokens, mask=mask, batch_size=1024)
    cfg = SAEConfig(d_in=int(acts.shape[-1]), d_sae=spec.d_sae, architecture="topk", k=spec.k, hook_name=spec.hook,
                    model_name=name)
    train = SAETrainConfig(steps=spec.steps, batch_size=spec.batch_size, lr=spec.lr, lr_decay_steps=spec.steps // 5,
                           seed=spec.seed, log_every=100)
    trained = train_sae(acts, cfg, train, quiet=not sys.stderr.isatty())
    sae = trained.sae
    out = save_sae(sae, out_root / name / spec.hook, metadata={
        "positions": spec.positions, "dataset_path": f"{name}: {what}", "mechwork_train": train.to_dict(),
        "mechwork_command": "python experiments/train_saes.py"})
    res: dict[str, object] = {"hook": spec.hook, "d_in": cfg.d_in, "d_sae": cfg.d_sae, "k": cfg.k,
                              "n_train_activations": int(acts.shape[0]), "data": what, "train": train.to_dict()}
    res["metrics"] = {where: {k: float(v) for k, v in evaluate_sae(
        model, sae, b, positions=b.mask if spec.positions == "mask" else torch.ones_like(b.mask)).as_dict().items()}
        for where, b in eval_batches.items()}
    if spec.positions == "mask":
        res["single_frequency"] = single_frequency(sae, acts, task.p)
    res["seconds"] = round(time.perf_counter() - t0, 1)
    res["files"] = {f.name: f.stat().st_size for f in sorted(out.iterdir())}
    return res


def report(name: str, r: dict[str, object]) -> None:
    print(f"{name} at {r['hook']}: topk SAE {r['d_in']} -> {r['d_sae']}, k={r['k']}, trained on "
          f"{r['n_train_activations']:,} activations ({r['data']}) in {r['seconds']} s")
    for where, m in r["metrics"].items():  # type: ignore[attr-defined]
        print(f"  {where}: loss recovered {m['loss_recovered']:.4f} (clean {m['clean_loss']:.4g}, SAE "
              f"{m['sae_loss']:.4g}, zero {m['zero_loss']:.4g}), L0 {m['l0']:.2f}, FVE {m['fve']:.4f}, "
              f"dead {int(m['n_dead'])}, dense {int(m['n_dense'])}")
    sf = r.get("single_frequency")
    if sf:
        print(f"  {sf['n_dominated']} of {sf['n_live']} live latents dominated by one key frequency "  # type: ignore[index]
              f"(>= {sf['threshold']:.0%} of the grid's Fourier energy); by frequency {sf['by_frequency']}")  # type: ignore[index]


def main(argv: list[str] | None = None) -> int:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--only", choices=sorted(SPECS), action="append", help="train only this preset's SAE")
    ap.add_argument("--out", type=Path, default=SHIPPED_ROOT, help="root of <preset>/<hook>/ (default: the package)")
    ap.add_argument("--results", type=Path, default=None,
                    help=f"figures JSON (default: {RESULTS.relative_to(ROOT)} when --out is the package's)")
    args = ap.parse_args(argv)
    torch.set_num_threads(1)
    results_path = args.results or (RESULTS if args.out.resolve() == SHIPPED_ROOT.resolve() else None)
    old = json.loads(results_path.read_text()) if results_path is not None and results_path.is_file() else {}
    for name in args.only or sorted(SPECS):
        r = train_one(name, SPECS[name], args.out)
        report(name, r)
        old[name] = r
    if results_path is not None:
        write_json_atomic(old, results_path)
        print(f"wrote {results_path}")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
