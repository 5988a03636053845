"""Plain-text and JSON reports of the Fourier analyses (``mechwork analyze fourier``).

One function gathers every analysis of :mod:`mechwork.analysis.fourier`,
:mod:`mechwork.analysis.trig` and (for a run) :mod:`mechwork.analysis.progress`, and returns a
readable table beside a JSON-ready dict of the same numbers.

Example::

    >>> from mechwork.report import fourier_report
    >>> text, data = fourier_report("modadd-113", progress=False)
    >>> sorted(data)[:3]
    ['embedding', 'key_frequencies', 'losses']
"""

from __future__ import annotations

import os
from typing import Any

from mechwork.analysis.fourier import check_task, embedding_spectrum, key_frequencies, neuron_frequencies
from mechwork.analysis.trig import logit_trig_fit, restricted_excluded
from mechwork.bars import stage
from mechwork.models import preset
from mechwork.runs import Run, load, resolve

__all__ = ["fourier_report"]


def fourier_report(
    run_or_preset: str | os.PathLike[str],
    *,
    step: int | None = None,
    progress: bool = True,
    device: str | None = None,
) -> tuple[str, dict[str, Any]]:
    """(readable summary table, JSON-ready numbers) for a run directory or a preset."""
    kind, key = resolve(run_or_preset)
    run = Run(key) if kind == "run" else None
    task = run.task if run is not None else preset(key).task
    stage("loading the model")  # progress bars: only inside a command (mechwork.bars)
    model = load(key, step=step, device=device)
    task = check_task(model, task, "analyze fourier")
    stage("Fourier analyses")
    we, wu = embedding_spectrum(model, "W_E", task.p), embedding_spectrum(model, "W_U", task.p)
    nf = neuron_frequencies(model, task)
    kf = key_frequencies(model, task, neurons=nf)
    fit = logit_trig_fit(model, task, kf.freqs)
    rex = restricted_excluded(model, task, kf.freqs)
    rows = [
        ("key frequencies", f"{kf.freqs}"),
        ("  from the embedding gap", f"{kf.from_embedding}"),
        ("  from neuron clusters", f"{kf.from_neurons}"),
        ("  methods agree", "yes" if kf.agree else "no"),
        ("W_E Fourier energy at key freqs", f"{we.share(kf.freqs):.1%}"),
        ("W_E Gini / W_U Gini", f"{we.gini:.3f} / {wu.gini:.3f}"),
        ("neurons clustered (FVE >= 85%)", f"{nf.fraction_clustered():.1%} ({int(nf.clustered.sum())}/{len(nf.fve)})"),
        ("  ... at a key frequency", f"{nf.fraction_clustered(kf.freqs):.1%}"),
        ("  cluster sizes", ", ".join(f"k={k}: {n}" for k, n in nf.cluster_sizes().items())),
        ("trig-identity logit fit (FVE)", f"{fit.fve:.1%}"),
        ("train / test loss", f"{rex.train_loss:.3g} / {rex.test_loss:.3g}"),
        ("restricted loss (all pairs)", f"{rex.restricted_loss:.3g}"),
        ("excluded loss (train pairs)", f"{rex.excluded_loss:.3g}"),
    ]
    data: dict[str, Any] = {
        "source": key,
        "task": task.to_dict(),
        "key_frequencies": {"freqs": kf.freqs, "from_embedding": kf.from_embedding,
                            "from_neurons": kf.from_neurons, "agree": kf.agree},
        "embedding": {"energy_at_key": we.share(kf.freqs), "gini_W_E": we.gini, "gini_W_U": wu.gini,
                      "freq_norms_W_E": we.freq_norms.tolist()},
        "neurons": {"fraction_clustered": nf.fraction_clustered(),
                    "fraction_clustered_at_key": nf.fraction_clustered(kf.freqs),
                    "cluster_sizes": {str(k): n for k, n in nf.cluster_sizes().items()}},
        "trig_fit": {"fve": fit.fve, "fve_per_freq": dict(zip(map(str, fit.freqs), fit.fve_per_freq.tolist(),
                                                             strict=True))},
        "losses": rex.to_frame().set_index("measure")["value"].to_dict(),
    }
    notes: list[str] = []
    if run is not None and progress:
        from dataclasses import asdict

        from mechwork.analysis.progress import loss_spikes, phase_sentence, progress_measures, spike_sentence

        stage("progress measures over the checkpoints")
        pm = progress_measures(run, kf.freqs)
        rows += [(f"phase: {k.replace('_', ' ')}", "not reached" if v is None else f"step {v}")
                 for k, v in pm.phases.items()]
        data["phases"] = pm.phases
        data["progress"] = pm.to_frame().to_dict("list")
        df = run.metrics
        notes.append(phase_sentence(pm, int(df["step"].iloc[-1]) if len(df) else None))
        if len(df) and {"test_loss", "test_acc"} <= set(df.columns):
            steps, loss, acc = df["step"].tolist(), df["test_loss"].tolist(), df["test_acc"].tolist()
            notes.append(spike_sentence(steps, loss, acc))
            data["loss_spikes"] = [asdict(s) for s in loss_spikes(steps, loss, acc)]
    width = max(len(r[0]) for r in rows)
    head = f"Fourier analysis of {key} ({task.describe()})"
    text = "\n".join([head, *(f"  {name.ljust(width)}  {value}" for name, value in rows), *notes])
    return text, data
