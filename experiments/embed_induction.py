"""Regenerate the embedded ``induction-2l`` model that ships in ``mechwork/data``.

Trains the preset's 2-layer attention-only model on the induction task (64
tokens, length 48, one segment of 4-12 tokens repeated at a random offset) with
mechwork's induction recipe (AdamW lr 3e-3, wd 0.01, warmup 100, batches of 64,
3,000 steps; about 75 s on two cores), then exports the last checkpoint with a
JSON summary: the head-detector scores and the accuracy inside and outside the
repeated segments, measured through the hooked bridge, plus the metrics history
for the preset's dashboard.

    python experiments/embed_induction.py                                 # the shipped model
    python experiments/embed_induction.py --steps 1000 --dest /tmp/x/induction-2l
"""

from __future__ import annotations

import argparse
import sys
from pathlib import Path

import torch

from mechwork.analysis.attention import head_detectors
from mechwork.analysis.induction import repeat_accuracy
from mechwork.models import preset
from mechwork.runs import Run, embedded_path, export
from mechwork.training import TrainConfig, recipe, train


def main(argv: list[str] | None = None) -> int:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--steps", type=int, default=None, help="optimiser updates (default: the recipe's)")
    ap.add_argument("--run-dir", type=Path, default=Path("runs/induction-2l-embedded"))
    ap.add_argument("--dest", type=Path, default=embedded_path("induction-2l").with_suffix(""),
                    help="output stem: writes DEST.safetensors and DEST.json")
    ap.add_argument("--quiet", action="store_true")
    ap.add_argument("--reuse-run", action="store_true", help="export --run-dir as it is instead of training")
    args = ap.parse_args(argv)
    torch.set_num_threads(min(2, torch.get_num_threads()))
    pre = preset("induction-2l")
    base = recipe(pre.task).to_dict()
    cfg = TrainConfig.from_dict(base | {"steps": args.steps or base["steps"]})
    if not args.reuse_run:
        train(pre.task, pre.model, cfg, out=args.run_dir, force=True, quiet=args.quiet, device="cpu")
    run = Run(args.run_dir)
    if run.config["train"] != cfg.to_dict() or run.steps[-1] != cfg.steps or run.task != pre.task:
        raise SystemExit(f"{args.run_dir} is not a finished run of this recipe; drop --reuse-run to train it")
    model = run.model_at()
    ev = pre.task.eval_batches()["test"]
    acc = repeat_accuracy(model, ev.tokens, ev.targets, ev.mask)
    inside, outside = acc.inside, acc.outside
    scores = head_detectors(model)
    metrics = run.metrics
    summary = {
        "steps": cfg.steps,
        "repeat_acc": inside,
        "other_acc": outside,
        "test_loss": float(metrics["test_loss"].iloc[-1]),
        "train_seconds": float(metrics["wall"].iloc[-1]),
        "head_scores": {k: v.tolist() for k, v in scores.scores.items()},
    }
    cols = ["step", "train_loss", "test_loss", "train_acc", "test_acc"]
    history = {"metrics": {c: [float(v) if c != "step" else int(v) for v in metrics[c]] for c in cols}}
    command = "python experiments/embed_induction.py" + (f" --steps {args.steps}" if args.steps else "")
    w, m = export(run, args.dest, summary=summary, command=command, history=history)
    print(f"wrote {w} ({w.stat().st_size:,} bytes) and {m}")
    print(f"repeat acc {inside:.4f}, other acc {outside:.4f}; {scores.summary()}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
