"""Plain-text and JSON reports of the Fourier analyses (``mechwork analyze fourier``).

:func:`fourier_report` opens a run directory or a preset, has :func:`mechwork.analysis.grokking.analyse`
compute every Fourier result once, and :func:`render_fourier_report` turns the bundle into a readable
table beside a JSON-ready dict of the same numbers (the progress measures, phases and loss spikes for a
run). The rendering sees the bundle only, never the model.

Example::

    >>> from mechwork.report import fourier_report
    >>> text, data = fourier_report("modadd-113", progress=False)
    >>> sorted(data)[:3]
    ['embedding', 'key_frequencies', 'losses']
"""

from __future__ import annotations

import os
from typing import TYPE_CHECKING, Any

from mechwork.bars import stage

if TYPE_CHECKING:  # pragma: no cover
    from mechwork.results import Analysis

__all__ = ["fourier_report", "render_fourier_report"]


def fourier_report(
    run_or_preset: str | os.PathLike[str],
    *,
    step: int | None = None,
    progress: bool = True,
    device: str | None = None,
) -> tuple[str, dict[str, Any]]:
    """(readable summary table, JSON-ready numbers) for a run directory or a preset."""
    from mechwork.analysis.fourier import check_task
    from mechwork.analysis.grokking import analyse
    from mechwork.source import open_source

    stage("loading the model")  # progress bars: only inside a command (mechwork.bars)
    src = open_source(run_or_preset, step=step, device=device)
    check_task(src.model, src.task, "analyze fourier")
    stage("Fourier analyses")
    bundle = analyse(src, progress=progress and src.kind == "run")
    return render_fourier_report(bundle)


def _rows(bundle: Analysis) -> list[tuple[str, str]]:
    kf, we, wu, nf = bundle["key_frequencies"], bundle["embedding"], bundle["unembedding"], bundle["neurons"]
    fit, rex = bundle["trig_fit"], bundle["losses"]
    return [
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


def _data(bundle: Analysis) -> dict[str, Any]:
    kf, we, wu, nf = bundle["key_frequencies"], bundle["embedding"], bundle["unembedding"], bundle["neurons"]
    fit, rex = bundle["trig_fit"], bundle["losses"]
    return {
        "source": bundle.info.name,
        "task": bundle.info.task.to_dict(),
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


def _progress(bundle: Analysis, rows: list[tuple[str, str]], data: dict[str, Any]) -> list[str]:
    """The phases and loss spikes of a run's progress measures and metrics (added to ``rows`` and ``data``)."""
    from dataclasses import asdict

    from mechwork.analysis.progress import loss_spikes, phase_sentence, spike_sentence

    pm, df = bundle["progress"], bundle.info.metrics
    rows += [(f"phase: {k.replace('_', ' ')}", "not reached" if v is None else f"step {v}")
             for k, v in pm.phases.items()]
    data["phases"] = pm.phases
    data["progress"] = pm.to_frame().to_dict("list")
    notes = [phase_sentence(pm, int(df["step"].iloc[-1]) if df is not None else None)]
    if df is not None and {"test_loss", "test_acc"} <= set(df.columns):
        steps, loss, acc = df["step"].tolist(), df["test_loss"].tolist(), df["test_acc"].tolist()
        notes.append(spike_sentence(steps, loss, acc))
        data["loss_spikes"] = [asdict(s) for s in loss_spikes(steps, loss, acc)]
    return notes


def render_fourier_report(bundle: Analysis) -> tuple[str, dict[str, Any]]:
    """(readable summary table, JSON-ready numbers) of a modular-arithmetic analysis bundle.

    The progress measures (phases, and loss spikes from the metrics) are reported for a run's bundle
    that holds them.
    """
    rows, data = _rows(bundle), _data(bundle)
    notes = _progress(bundle, rows, data) if bundle.info.kind == "run" and "progress" in bundle else []
    width = max(len(r[0]) for r in rows)
    head = f"Fourier analysis of {bundle.info.name} ({bundle.info.task.describe()})"
    return "\n".join([head, *(f"  {name.ljust(width)}  {value}" for name, value in rows), *notes]), data
