"""Progress measures and the three phases of grokking on one full p = 113 run.

Anchor: Nanda et al. (2023, Fig. 7) with AdamW lr 1e-3, wd 1, betas (0.9, 0.98),
warmup 10, full batch, 30% of the pairs: memorisation ends at about 1.4k
epochs, circuit formation runs to about 9.4k and cleanup to about 14k; 433 of
512 neurons (84.6%) are explained by a single frequency; their seed's key
frequencies are {14, 35, 41, 42, 52} (other seeds find 3-6 others).

Full mode trains that recipe for 16,000 steps (about 11 minutes on 2 cores) and
analyses every checkpoint with :func:`mechwork.analysis.progress.progress_measures`;
quick mode uses mechwork's fast recipe (lr 1e-2) for 1,500 steps.

    python experiments/progress_measures.py
    python experiments/progress_measures.py --quick
"""

from __future__ import annotations

import sys

import torch

from mechwork import bars
from mechwork.studies.study import finish, pick_plan, study_args, verdict_page

PAPER = {"end_memorisation": 1400, "start_cleanup": 9400, "end_cleanup": 14000, "neurons_single_freq": 0.846}
FULL = {"lr": 1e-3, "steps": 16_000, "eval_every": 100}
QUICK = {"lr": 1e-2, "steps": 1500, "eval_every": 50}
SMOKE = {"lr": 1e-2, "steps": 200, "eval_every": 50}


def main(argv: list[str] | None = None) -> int:
    from mechwork.analysis.fourier import neuron_frequencies
    from mechwork.analysis.grokking import analyse
    from mechwork.dashboard.grokking import grokking_page
    from mechwork.models import ToyConfig
    from mechwork.runs import Run
    from mechwork.source import open_source
    from mechwork.tasks import ModularArithmetic
    from mechwork.training import TrainConfig, train

    args = study_args("progress_measures", __doc__, argv)
    plan = pick_plan(args, FULL, QUICK, SMOKE)
    if args.ray:
        print("note: --ray is for sweeps; this study is one training run, so it runs on this machine")
    torch.set_num_threads(max(1, args.workers))
    task = ModularArithmetic(p=113, op="add", train_frac=0.3, seed=0)
    run_dir = args.out / "run"
    cfg = TrainConfig(lr=plan["lr"], weight_decay=1.0, steps=plan["steps"], eval_every=plan["eval_every"],
                      ckpt_log=30)
    if not (run_dir / "checkpoints").is_dir() or not Run(run_dir).steps or Run(run_dir).steps[-1] != cfg.steps:
        resume = (run_dir / "resume.safetensors").is_file()
        train(task, None if resume else ToyConfig(seed=0), cfg, run_dir, resume=resume, force=not resume,
              quiet=bars.silenced(args.quiet), device="cpu")
    with bars.command("progress_measures", quiet=args.quiet):  # a bar over the checkpoints, on stderr
        bars.stage("progress measures of the run")
        src = open_source(run_dir)
        bundle = analyse(src)  # every result of the page, the progress measures included
    pm = bundle.get("progress")
    assert pm is not None
    nf = neuron_frequencies(src.model, task)
    frac = nf.fraction_clustered(pm.key_freqs)
    ours = dict(pm.phases)
    order_ok = all(ours[k] is not None for k in PAPER if k in ours) and \
        ours["end_memorisation"] < ours["start_cleanup"] < ours["end_cleanup"]
    ratios = {k: (ours[k] / PAPER[k] if ours.get(k) else None) for k in ("end_memorisation", "start_cleanup",
                                                                            "end_cleanup")}
    within2 = all(r is not None and 0.5 <= r <= 2 for r in ratios.values())
    verdict = ("reproduced" if order_ok and within2 and frac >= 0.8 else
               "partly reproduced" if order_ok else "not reproduced") + (
        f": phases at steps {ours} against the paper's 1.4k / 9.4k / 14k; "
        f"{frac:.1%} of neurons single-frequency (paper 84.6%); key frequencies {pm.key_freqs}")
    results = {"plan": plan, "paper": PAPER, "phases": ours, "phase_ratio_to_paper": ratios,
               "key_freqs": pm.key_freqs, "neurons_single_freq": frac,
               "neurons_single_freq_any": nf.fraction_clustered(), "verdict": verdict,
               "progress": pm.to_dict()}
    command = f"python experiments/progress_measures.py{' --quick' if args.quick else ''}"
    page = verdict_page("Progress measures and the phases of grokking (p = 113)",
                        claim="memorisation, circuit formation and cleanup are distinct phases, visible in "
                              "restricted/excluded loss, Gini and weight norm",
                        anchor="Nanda et al. 2023, Fig. 7: 1.4k / 9.4k / 14k epochs; 84.6% single-frequency neurons",
                        ours=verdict.split(": ", 1)[1], verdict=verdict, command=command)
    page.blocks.extend(grokking_page(bundle).blocks)
    finish(args, results, page)
    print(verdict)
    return 0


if __name__ == "__main__":
    sys.exit(main())
