"""The standard grokking dashboard for a modular-arithmetic run or preset, rendered from its analysis bundle.

The results come from :func:`mechwork.analysis.grokking.analyse`; each section below is a small function
of the bundle. The page has, in order:

1. a generated summary of what the model does and how it learned it;
2. the model and training recipe;
3. training curves (log scale), with the phases the run reached shaded;
4. the progress measures (restricted / excluded loss, Gini, weight norm);
5. W_E's Fourier spectrum with the key frequencies highlighted;
6. the neuron clusters: dominant frequency against variance explained, the
   cluster sizes, and one neuron per key frequency over the (a, b) grid;
7. attention from ``=`` to ``a`` over the (a, b) grid, per head;
8. circuitsvis attention views of a few example inputs;
9. the trig-identity logit fit and the restricted / excluded losses;
10. the embedding with only the key frequencies kept, or with them removed;
11. when the run or preset has an SAE at ``blocks.0.mlp.hook_post``, its metrics and feature pages
    (:mod:`mechwork.dashboard.features`), each latent with its (a, b) grid and Fourier energy.

A preset or run with no training history gets a note in sections 3 and 4.
Sections 4-6 and 9-10 assume a Fourier circuit, so they apply to ``add`` and
``sub`` with odd p and an MLP; for ``mul``, ``div`` and ``x2+y2`` each says so in
one sentence and is left out.

Example::

    >>> from mechwork.dashboard import grokking_dashboard
    >>> page = grokking_dashboard("modadd-113")
    >>> sum(b.kind == "plotly" for b in page.blocks) >= 7
    True
"""

from __future__ import annotations

import os
from typing import TYPE_CHECKING, Any

from mechwork.analysis.grokking import fourier_reason
from mechwork.dashboard import sections
from mechwork.dashboard.features import feature_section
from mechwork.dashboard.page import Page

if TYPE_CHECKING:  # pragma: no cover
    from mechwork.analysis.progress import ProgressMeasures
    from mechwork.results import Analysis

__all__ = ["grokking_dashboard", "grokking_page"]

PHASE_NAMES = ("memorisation", "circuit formation", "cleanup")
SYMBOLS = {"add": "+", "sub": "-", "mul": "*", "div": "/"}
FOURIER_EVIDENT = 0.5  # trig-fit FVE from which the summary says the model uses its key frequencies


def grokking_dashboard(
    run_or_preset: str | os.PathLike[str], *, step: int | None = None, device: str | None = None
) -> Page:
    """The grokking dashboard for a modular-arithmetic run directory or preset."""
    from mechwork.source import open_source
    from mechwork.tasks.modadd import analyse

    return grokking_page(analyse(open_source(run_or_preset, step=step, device=device)))


def phase_spans(progress: ProgressMeasures | None, last_step: int) -> list[tuple[str, int, int]]:
    """``(name, start, end)`` of each phase the run reached (see :func:`mechwork.analysis.progress.phase_spans`).

    A phase over within one checkpoint interval (start == end) has no width to shade, so it is left out.
    """
    if progress is None:
        return []
    from mechwork.analysis.progress import phase_spans as spans_of

    return [(s.name, s.start, s.end) for s in spans_of(progress, last_step) if s.end > s.start]


def formula(task: Any, c: str | None = None) -> str:
    """``(a + b) mod p``, ``(a^2 + b^2) mod p``, ...; with ``c``: the trig identity's argument instead."""
    if c is not None:
        return f"a {SYMBOLS[task.op]} b - {c}"
    body = "a^2 + b^2" if task.op == "x2+y2" else f"a {SYMBOLS[task.op]} b"
    return f"({body}) mod {task.p}"


# -- 1. summary ---------------------------------------------------------------------------------
def fourier_lines(bundle: Analysis) -> list[str]:
    """What the key frequencies, neuron clusters, trig fit and losses say (the Fourier analyses ran)."""
    kf, nf, fit, rex = bundle["key_frequencies"], bundle["neurons"], bundle["trig_fit"], bundle["losses"]
    # "uses" only on evidence: the trig identity over the key frequencies explains most of the logits
    lead = (f"It uses the **key frequencies {kf.freqs}**" if fit.fve >= FOURIER_EVIDENT else
            f"No Fourier circuit is evident (the trig-identity fit below explains under {FOURIER_EVIDENT:.0%} "
            f"of the logit variance); the candidate key frequencies are {kf.freqs}")
    return [
        f"{lead}: they carry {kf.embedding_share:.1%} of W_E's Fourier "
        f"energy, and {nf.fraction_clustered(kf.freqs):.1%} of the {len(nf.fve)} MLP neurons are explained "
        f"(FVE >= {nf.threshold:.0%}) by a single key frequency. The embedding gap gives {kf.from_embedding}, "
        f"the neuron clusters give {kf.from_neurons}; the two methods {'agree' if kf.agree else 'disagree'}.",
        f"The trig identity cos(w_k({formula(bundle.info.task, 'c')})) over the key frequencies explains "
        f"**{fit.fve:.1%}** of the logit variance. Keeping only the key-frequency directions of the logits gives a "
        f"loss of {rex.restricted_loss:.3g} (test loss {rex.test_loss:.3g}); removing them gives "
        f"{rex.excluded_loss:.3g} on the training pairs (train loss {rex.train_loss:.3g}).",
    ]


def history_lines(bundle: Analysis, reason: str | None) -> list[str]:
    """What the history says: a small held-out split, the phases (or why they are not marked), loss spikes."""
    from mechwork.analysis.progress import held_out_caveat, phase_sentence, spike_sentence

    info, progress = bundle.info, bundle.get("progress")
    lines = [c] if (c := held_out_caveat(len(info.task.test_idx))) is not None else []
    if progress is not None:
        lines.append(phase_sentence(progress, info.last_step))
    elif info.metrics is None:
        lines.append("There is no training history for this model, so the phases are not known.")
    elif reason is not None:
        lines.append("The phases are not marked: they are found from the Fourier progress measures, which do not "
                     "apply here.")
    else:
        lines.append("The phases are not marked: they need the progress measures of at least two checkpoints.")
    m = info.metrics
    if m is not None and {"test_loss", "test_acc"} <= set(m.columns):
        lines.append(spike_sentence(m["step"].tolist(), m["test_loss"].tolist(), m["test_acc"].tolist()))
    return lines


def summary_section(page: Page, bundle: Analysis, reason: str | None) -> Page:
    acc = bundle["accuracy"]
    lines = [f"The model gets **{acc.all:.2%}** of all {acc.n_all:,} pairs right ({acc.train:.2%} on the "
             f"{acc.n_train:,} training pairs, {acc.test:.2%} on the {acc.n_test:,} held out)."]
    lines += fourier_lines(bundle) if reason is None else [f"The Fourier sections are left out: {reason}."]
    return sections.summary(page, lines + history_lines(bundle, reason))


# -- 2-4. model, history, progress --------------------------------------------------------------
def model_section(page: Page, bundle: Analysis, spans: list[tuple[str, int, int]]) -> Page:
    grok = bundle.info.summary.get("grok_step")
    extra: list[tuple[str, Any]] = [("test accuracy >= 99% first at step", grok)] if grok is not None else []
    extra += [(f"phase: {name}", f"steps {lo:,}-{hi:,}") for name, lo, hi in spans]
    return sections.model_and_training(page, bundle.info, extra)


def history_section(page: Page, bundle: Analysis, spans: list[tuple[str, int, int]], reason: str | None) -> Page:
    colours = dict(zip(PHASE_NAMES, ("red", "yellow", "green"), strict=True))
    caption = "Shaded: " + ", ".join(f"{name} ({colours[name]})" for name, _, _ in spans) + "." if spans else None
    sections.training_curves(page, bundle, spans, caption=caption,
                             missing="No training history: this model has no metrics to plot. Train one with "
                                     "`mechwork train modadd` and build the dashboard from its run directory.")
    progress = bundle.get("progress")
    if progress is not None:
        return page.result(progress, title="Progress measures", summary=False,
                           caption=f"Measured at every checkpoint with the final key frequencies {progress.key_freqs}.")
    if reason is not None:
        return page.note(f"Progress measures are left out: {reason}.", title="Progress measures")
    return page.note("No checkpoints to measure progress on (a preset without history, or a run with "
                     "fewer than two checkpoints).", title="Progress measures")


# -- 5-6. spectrum and neurons ---------------------------------------------------------------------
def fourier_section(page: Page, bundle: Analysis) -> Page:
    kf, nf = bundle["key_frequencies"], bundle["neurons"]
    page.result(bundle["embedding"], title="Fourier spectrum of the embedding", key=kf.freqs,
                caption=f"Key frequencies in red: {kf.freqs}.")
    page.table(kf.to_frame(), title="Key frequencies")
    page.result(nf, title="Neuron clusters", caption=nf.summary())
    page.result(bundle["cluster_sizes"], summary=False)
    if "neuron_grids" in bundle:
        page.result(bundle["neuron_grids"], summary=False)
    return page


# -- 7-8. attention ------------------------------------------------------------------------------
def attention_section(page: Page, bundle: Analysis) -> Page:
    """Attention from '=' over the grid (every op; a pair the task leaves out is blank), then a few inputs."""
    att, task = bundle["attention"], bundle.info.task
    page.result(att, title="Attention from '=' over the (a, b) grid", summary=False)
    symbol = SYMBOLS.get(task.op, ",")
    for ex in att.examples:
        shown = f"{ex.a}^2 + {ex.b}^2 =" if task.op == "x2+y2" else f"{ex.a} {symbol} {ex.b} ="
        page.attention(ex.pattern, [ex.a, ex.b, "="], head_names=[f"head {h}" for h in range(ex.pattern.shape[0])],
                       title=f"Attention on {shown}",
                       caption=f"The model predicts {ex.predicted} (correct: {ex.correct}).")
    return page


# -- 9-10. logits and ablation ---------------------------------------------------------------------
def logits_section(page: Page, bundle: Analysis) -> Page:
    fit, rex = bundle["trig_fit"], bundle["losses"]
    page.result(fit, title="Trig-identity logit fit", caption=fit.summary())
    page.result(rex, title="Restricted and excluded loss", caption=rex.summary())
    abl = bundle["ablation"]
    return page.result(abl, title="Fourier ablation of the embedding", caption=abl.summary())


def grokking_page(bundle: Analysis) -> Page:
    """Build the page from a modular-arithmetic analysis bundle (see the module docstring for its sections)."""
    info = bundle.info
    reason = fourier_reason(info.task, info.model_config)
    spans = phase_spans(bundle.get("progress"), info.last_step)
    page = Page(f"Grokking dashboard: {info.name}",
                subtitle=f"{formula(info.task)}, {info.task.train_frac:.0%} of pairs for training; {info.where}")
    summary_section(page, bundle, reason)
    model_section(page, bundle, spans)
    history_section(page, bundle, spans, reason)
    if reason is None:
        fourier_section(page, bundle)
    else:
        page.note(f"The Fourier spectrum, key frequencies and neuron clusters are left out: {reason}.",
                  title="Fourier analysis")
    attention_section(page, bundle)
    if reason is not None:
        page.note(f"The trig-identity logit fit, restricted and excluded losses and Fourier ablation are "
                  f"left out: {reason}.", title="Logits and ablation")
    else:
        logits_section(page, bundle)
    return feature_section(page, bundle)
