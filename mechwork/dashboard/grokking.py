"""The standard grokking dashboard for a modular-arithmetic run or preset.

One pass over all p^2 pairs (logits and MLP activations together) feeds every
Fourier analysis; one more gives the attention patterns. The page has, in order:

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
10. the embedding with only the key frequencies kept, or with them removed.

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

import torch

from mechwork.analysis.fourier import FOURIER_OPS, embedding_spectrum, grid_run, key_frequencies, neuron_frequencies_of
from mechwork.dashboard.page import Page
from mechwork.dashboard.standard import Source, open_source
from mechwork.errors import ConfigError
from mechwork.tasks import ModularArithmetic

if TYPE_CHECKING:  # pragma: no cover
    import pandas as pd

    from mechwork.analysis.progress import ProgressMeasures

__all__ = ["grokking_dashboard", "grokking_page"]

PHASE_NAMES = ("memorisation", "circuit formation", "cleanup")
SYMBOLS = {"add": "+", "sub": "-", "mul": "*", "div": "/"}


def grokking_dashboard(
    run_or_preset: str | os.PathLike[str], *, step: int | None = None, device: str | None = None
) -> Page:
    """The grokking dashboard for a modular-arithmetic run directory or preset."""
    return grokking_page(open_source(run_or_preset, step=step, device=device))


FOURIER_EVIDENT = 0.5  # trig-fit FVE from which the summary says the model uses its key frequencies


def phase_spans(progress: ProgressMeasures | None, last_step: int) -> list[tuple[str, int, int]]:
    """``(name, start, end)`` of each phase the run reached (see :func:`mechwork.analysis.progress.phase_spans`).

    A phase over within one checkpoint interval (start == end) has no width to shade, so it is left out.
    """
    if progress is None:
        return []
    from mechwork.analysis.progress import phase_spans as spans_of

    return [(s.name, s.start, s.end) for s in spans_of(progress, last_step) if s.end > s.start]


def formula(task: ModularArithmetic, c: str | None = None) -> str:
    """``(a + b) mod p``, ``(a^2 + b^2) mod p``, ...; with ``c``: the trig identity's argument instead."""
    if c is not None:
        return f"a {SYMBOLS[task.op]} b - {c}"
    body = "a^2 + b^2" if task.op == "x2+y2" else f"a {SYMBOLS[task.op]} b"
    return f"({body}) mod {task.p}"


def fourier_reason(task: ModularArithmetic, cfg: Any) -> str | None:
    """Why the Fourier sections do not apply to this task and model, or None when they do."""
    if task.op not in FOURIER_OPS:
        return (f"they assume a Fourier circuit for a + b or a - b, and this task's op is {task.op!r} "
                "(they apply to add and sub only)")
    if task.p % 2 == 0:
        return f"p={task.p} is even (the Fourier analyses need an odd p)"
    if cfg.attn_only:
        return "the model has no MLP (the neuron and key-frequency analyses need one)"
    return None


def _bands(fig: Any, spans: list[tuple[str, int, int]], col: int, y0: float, y1: float, legend: bool) -> None:
    """Phase bands as filled traces (shapes misplace on log axes), drawn before the curves so they sit below."""
    from mechwork.analysis.progress import PHASE_COLOURS  # the palette every phase-shaded figure uses

    for name, lo, hi in spans:
        x0, x1 = max(lo, 1), max(hi, lo, 1)
        fig.add_scatter(x=[x0, x1, x1, x0, x0], y=[y0, y0, y1, y1, y0], fill="toself", fillcolor=PHASE_COLOURS[name],
                        mode="none", name=name, legendgroup=name, showlegend=legend,
                        hoverinfo="name", row=1, col=col)


def curves_figure(metrics: pd.DataFrame, spans: list[tuple[str, int, int]]) -> Any:
    """Loss (log-log) and accuracy (log x) against step, phases shaded."""
    import math

    from plotly.subplots import make_subplots

    df = metrics[metrics["step"] >= 1]
    fig = make_subplots(rows=1, cols=2, subplot_titles=("loss", "accuracy"))
    x = df["step"].tolist()
    losses = [v for c in ("train_loss", "test_loss") if c in df for v in df[c].tolist() if v > 0]
    if spans and losses:
        _bands(fig, spans, 1, min(losses) / 2, max(losses) * 2, legend=True)
        _bands(fig, spans, 2, 0.0, 1.02, legend=False)
    for col, colour in (("train", "#1f77b4"), ("test", "#d62728")):
        if f"{col}_loss" in df:
            fig.add_scatter(x=x, y=df[f"{col}_loss"].tolist(), name=f"{col} loss", line_color=colour, row=1, col=1)
        if f"{col}_acc" in df:
            fig.add_scatter(x=x, y=df[f"{col}_acc"].tolist(), name=f"{col} accuracy", line_color=colour,
                            line_dash="dot", row=1, col=2)
    fig.update_xaxes(type="log", title_text="step", range=[math.log10(max(1, min(x))), math.log10(max(x))])
    fig.update_yaxes(type="log", title_text="cross-entropy loss (log scale)", row=1, col=1)
    fig.update_yaxes(range=[0, 1.02], title_text="accuracy", row=1, col=2)
    title = "Training curves (log scale; phases shaded)" if spans else "Training curves (log scale)"
    return fig.update_layout(title=title, height=420)


def neuron_grids_figure(acts: torch.Tensor, p: int, neurons: list[tuple[int, int, float]]) -> Any:
    """One heatmap per (frequency, neuron, fve): the neuron's activation over the (a, b) grid."""
    from plotly.subplots import make_subplots

    cols = min(len(neurons), 4)
    rows = -(-len(neurons) // cols)
    fig = make_subplots(rows=rows, cols=cols, horizontal_spacing=0.04, vertical_spacing=0.12,
                        subplot_titles=[f"k={k}: neuron {n} (FVE {f:.0%})" for k, n, f in neurons])
    for j, (_, n, _) in enumerate(neurons):
        z = acts[:, n].reshape(p, p).numpy().astype("float32")
        fig.add_heatmap(z=z, colorscale="RdBu", zmid=0, showscale=False, row=j // cols + 1, col=j % cols + 1,
                        hovertemplate="a=%{y}, b=%{x}: %{z:.3g}<extra></extra>")
    fig.update_xaxes(title_text="b", showticklabels=False)
    fig.update_yaxes(title_text="a", showticklabels=False, autorange="reversed")
    return fig.update_layout(title="One neuron per key frequency: activation over (a, b)",
                             height=300 * rows + 80)


def attention_grid_figure(pattern_eq: torch.Tensor, p: int) -> Any:
    """Attention from ``=`` to ``a`` per head, over the (a, b) grid (the rest goes to ``b`` and ``=``)."""
    from plotly.subplots import make_subplots

    n_heads = pattern_eq.shape[1]
    cols = min(n_heads, 4)
    rows = -(-n_heads // cols)
    fig = make_subplots(rows=rows, cols=cols, horizontal_spacing=0.04,
                        subplot_titles=[f"head {h}" for h in range(n_heads)])
    for h in range(n_heads):
        z = pattern_eq[:, h, 0].reshape(p, p).numpy().astype("float32")
        fig.add_heatmap(z=z, zmin=0, zmax=1, coloraxis="coloraxis", row=h // cols + 1, col=h % cols + 1,
                        hovertemplate="a=%{y}, b=%{x}: to a %{z:.2f}<extra></extra>")
    fig.update_xaxes(title_text="b", showticklabels=False)
    fig.update_yaxes(title_text="a", showticklabels=False, autorange="reversed")
    return fig.update_layout(title="Attention from '=' to 'a' over (a, b)",
                             coloraxis={"colorscale": "Viridis", "colorbar": {"title": {"text": "attention to a"}}},
                             height=320 * rows + 60)


def _examples(p: int) -> list[tuple[int, int]]:
    return [(1, 2), (p // 3, p // 2), (p - 1, p - 2)]


def grokking_page(src: Source) -> Page:
    """Build the page from an opened :class:`Source` (see the module docstring for its sections)."""
    from mechwork.analysis.attention import attention_patterns
    from mechwork.summary import _arch, _recipe, last_recorded

    model = src.model
    task = src.task
    if not isinstance(task, ModularArithmetic):
        raise ConfigError(f"the grokking dashboard needs a modular-arithmetic run (got a {task.kind} run: "
                          f"{src.name!r})")
    cfg = model.cfg
    if cfg.d_vocab != task.d_vocab or cfg.d_vocab_out != task.d_vocab_out:
        raise ConfigError(f"model vocabulary ({cfg.d_vocab} in, {cfg.d_vocab_out} out) does not match the task's "
                          f"p={task.p} (needs {task.d_vocab} in, {task.d_vocab_out} out)")
    p = task.p
    reason = fourier_reason(task, src.model_config)
    logits, acts = grid_run(model, task, None if reason else "blocks.0.mlp.hook_post")
    labels = task.labels
    acc = float((logits.argmax(-1) == labels).float().mean())
    tr_acc = float((logits[task.train_idx].argmax(-1) == labels[task.train_idx]).float().mean())
    te_acc = float((logits[task.test_idx].argmax(-1) == labels[task.test_idx]).float().mean())
    pats = attention_patterns(model, task.tokens).patterns[:, 0]  # (n_pairs, head, dest, src)
    a_tok, b_tok = task.tokens[:, 0], task.tokens[:, 1]
    row_of = {(int(a), int(b)): i for i, (a, b) in enumerate(zip(a_tok, b_tok, strict=True))}

    where = f"step {src.step} of run {src.name}" if src.kind == "run" else f"the {src.name} preset"
    last_step = int(src.metrics["step"].iloc[-1]) if src.metrics is not None else (src.step or 0)
    spans = phase_spans(src.progress, last_step)
    page = Page(f"Grokking dashboard: {src.name}",
                subtitle=f"{formula(task)}, {task.train_frac:.0%} of pairs for training; {where}")

    # 1. summary
    lines = [
        f"The model gets **{acc:.2%}** of all {task.n_pairs:,} pairs right "
        f"({tr_acc:.2%} on the {len(task.train_idx):,} training pairs, {te_acc:.2%} on the "
        f"{len(task.test_idx):,} held out).",
    ]
    if reason is None:
        assert acts is not None
        from mechwork.analysis.trig import losses_of, trig_fit_of

        nf = neuron_frequencies_of(acts, p)
        kf = key_frequencies(model, task, neurons=nf)
        we = embedding_spectrum(model, "W_E", p)
        fit = trig_fit_of(logits, task, kf.freqs)
        rex = losses_of(logits, task, kf.freqs)
        # "uses" only on evidence: the trig identity over the key frequencies explains most of the logits
        lead = (f"It uses the **key frequencies {kf.freqs}**" if fit.fve >= FOURIER_EVIDENT else
                f"No Fourier circuit is evident (the trig-identity fit below explains under {FOURIER_EVIDENT:.0%} "
                f"of the logit variance); the candidate key frequencies are {kf.freqs}")
        lines += [
            f"{lead}: they carry {kf.embedding_share:.1%} of W_E's Fourier "
            f"energy, and {nf.fraction_clustered(kf.freqs):.1%} of the {len(nf.fve)} MLP neurons are explained "
            f"(FVE >= {nf.threshold:.0%}) by a single key frequency. The embedding gap gives {kf.from_embedding}, "
            f"the neuron clusters give {kf.from_neurons}; the two methods {'agree' if kf.agree else 'disagree'}.",
            f"The trig identity cos(w_k({formula(task, 'c')})) over the key frequencies explains **{fit.fve:.1%}** "
            f"of the logit variance. Keeping only the key-frequency directions of the logits gives a loss of "
            f"{rex.restricted_loss:.3g} (test loss {rex.test_loss:.3g}); removing them gives "
            f"{rex.excluded_loss:.3g} on the training pairs (train loss {rex.train_loss:.3g}).",
        ]
    else:
        lines.append(f"The Fourier sections are left out: {reason}.")
    from mechwork.analysis.progress import held_out_caveat

    caveat = held_out_caveat(len(task.test_idx))
    if caveat is not None:
        lines.append(caveat)
    if src.progress is not None:
        from mechwork.analysis.progress import phase_sentence

        lines.append(phase_sentence(src.progress, last_step))
    elif src.metrics is None:
        lines.append("There is no training history for this model, so the phases are not known.")
    elif reason is not None:
        lines.append("The phases are not marked: they are found from the Fourier progress measures, which do not "
                     "apply here.")
    else:
        lines.append("The phases are not marked: they need the progress measures of at least two checkpoints.")
    if src.metrics is not None and {"test_loss", "test_acc"} <= set(src.metrics.columns):
        from mechwork.analysis.progress import spike_sentence

        m = src.metrics
        lines.append(spike_sentence(m["step"].tolist(), m["test_loss"].tolist(), m["test_acc"].tolist()))
    page.markdown("\n\n".join(lines), title="Summary")

    # 2. model and recipe
    info: list[tuple[str, Any]] = [("source", src.name), ("task", task.describe()), ("model", _arch(src.model_config))]
    if src.train is not None:
        info.append(("training", _recipe(src.train, task, last_recorded(src))))
    if src.summary.get("grok_step") is not None:
        info.append(("test accuracy >= 99% first at step", src.summary["grok_step"]))
    info += [(f"phase: {name}", f"steps {lo:,}-{hi:,}") for name, lo, hi in spans]
    page.kv(info, title="Model and training")

    # 3-4. history
    if src.metrics is not None:
        colours = dict(zip(PHASE_NAMES, ("red", "yellow", "green"), strict=True))
        page.plotly(curves_figure(src.metrics, spans), title="Training curves",
                    caption=("Shaded: " + ", ".join(f"{name} ({colours[name]})" for name, _, _ in spans) + "."
                             if spans else None))
    else:
        page.note("No training history: this model has no metrics to plot. Train one with "
                  "`mechwork train modadd` and build the dashboard from its run directory.", title="Training curves")
    if src.progress is not None:
        page.plotly(src.progress.figure(), title="Progress measures",
                    caption=f"Measured at every checkpoint with the final key frequencies {src.progress.key_freqs}.")
    elif reason is not None:
        page.note(f"Progress measures are left out: {reason}.", title="Progress measures")
    else:
        page.note("No checkpoints to measure progress on (a preset without history, or a run with "
                  "fewer than two checkpoints).", title="Progress measures")

    import plotly.graph_objects as go

    if reason is None:
        # 5. spectrum
        page.plotly(we.figure(key=kf.freqs), title="Fourier spectrum of the embedding",
                    caption=f"Key frequencies in red: {kf.freqs}.")
        page.table(kf.to_frame(), title="Key frequencies")

        # 6. neurons
        page.plotly(nf.figure(), title="Neuron clusters", caption=nf.summary())
        sizes = nf.cluster_sizes()
        ks = sorted(sizes)
        bar = go.Figure(go.Bar(x=[str(k) for k in ks], y=[sizes[k] for k in ks],
                               marker_color=["#d62728" if k in kf.freqs else "#1f77b4" for k in ks]))
        page.plotly(bar.update_layout(title="Clustered neurons per frequency (key frequencies in red)",
                                      xaxis_title="frequency k", yaxis_title="neurons", height=360))
        best = []
        for k in kf.freqs:
            members = ((nf.freq == k) & nf.clustered).nonzero()[:, 0]
            if len(members):
                n = int(members[nf.fve[members].argmax()])
                best.append((k, n, float(nf.fve[n])))
        if best:
            assert acts is not None
            page.plotly(neuron_grids_figure(acts, p, best))
    else:
        page.note(f"The Fourier spectrum, key frequencies and neuron clusters are left out: {reason}.",
                  title="Fourier analysis")

    # 7-8. attention (every op); a pair the task leaves out (b = 0 for div) is blank on the grid
    grid = torch.full((p * p, *pats.shape[1:2], pats.shape[-1]), float("nan"))
    grid[a_tok * p + b_tok] = pats[:, :, 2, :]
    page.plotly(attention_grid_figure(grid, p), title="Attention from '=' over the (a, b) grid")
    symbol = SYMBOLS.get(task.op, ",")
    for a, b in _examples(p):
        i = row_of.get((a, b))
        if i is None:
            continue
        shown = f"{a}^2 + {b}^2 =" if task.op == "x2+y2" else f"{a} {symbol} {b} ="
        page.attention(pats[i], [a, b, "="], head_names=[f"head {h}" for h in range(pats.shape[1])],
                       title=f"Attention on {shown}",
                       caption=f"The model predicts {int(logits[i].argmax())} (correct: {int(labels[i])}).")

    if reason is not None:
        page.note(f"The trig-identity logit fit, restricted and excluded losses and Fourier ablation are left out: "
                  f"{reason}.", title="Logits and ablation")
        return page
    # 9. logits
    page.plotly(fit.figure(), title="Trig-identity logit fit", caption=fit.summary())
    page.plotly(rex.figure(), title="Restricted and excluded loss", caption=rex.summary())

    # 10. the hypothesis, tested by ablation
    from mechwork.analysis.ablation import keep_frequencies, remove_frequencies

    kept, removed = keep_frequencies(model, task, kf.freqs), remove_frequencies(model, task, kf.freqs)
    abl = go.Figure(go.Bar(x=["unablated", "key frequencies only", "key frequencies removed"],
                           y=[kept.base_accuracy, kept.accuracy, removed.accuracy],
                           marker_color=["#7f7f7f", "#2ca02c", "#d62728"]))
    abl.update_layout(title="Accuracy on all pairs with the embedding projected", yaxis_range=[0, 1], height=360,
                      xaxis_title="embedding", yaxis_title="accuracy on all pairs")
    page.plotly(abl, title="Fourier ablation of the embedding", caption=f"{kept.summary()}. {removed.summary()}.")
    return page
