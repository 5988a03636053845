"""The standard induction dashboard for an ``induction-2l`` run (or any induction-task run).

Sections:

1. a generated summary naming the previous-token and induction heads the
   detectors find, and the accuracy inside and outside repeated segments;
2. the model and training recipe, and the training curves when there is a history;
3. head-detector scores (previous-token, induction, duplicate-token) for every head,
   and the Q/K/V composition scores between the layers' heads;
4. loss per position on ``[r, r]`` sequences: an induction circuit makes the
   second copy cheap to predict;
5. circuitsvis attention views of every head on repeated sequences, and on
   one of the task's own sequences (a repeat at a random offset); the heads
   the summary names come first (top induction head, then the other induction
   heads, then the previous-token heads), so each view opens on the top one;
6. activation patching of every head at every position, and attribution
   patching against it;
7. zero, mean and resample ablation of the previous-token heads the detectors
   name, and path patching from them to the induction heads' q, k and v.

Example::

    >>> from mechwork.dashboard import induction_dashboard
    >>> page = induction_dashboard("runs/induction")        # doctest: +SKIP
"""

from __future__ import annotations

import os
from typing import Any

import torch

from mechwork.dashboard.page import Page
from mechwork.dashboard.standard import Source, open_source
from mechwork.errors import ConfigError

__all__ = ["induction_dashboard", "induction_page", "repeat_accuracy"]

THRESHOLD = 0.5  # detector score that names a head


def induction_dashboard(
    run_or_preset: str | os.PathLike[str], *, step: int | None = None, device: str | None = None
) -> Page:
    """The induction dashboard for an induction-task run directory or preset."""
    return induction_page(open_source(run_or_preset, step=step, device=device))


@torch.no_grad()
def repeat_accuracy(model: Any, tokens: torch.Tensor, targets: torch.Tensor, mask: torch.Tensor) -> tuple[float, float]:
    """Next-token accuracy inside the repeated segments (``mask``) and elsewhere."""
    device = next(model.parameters()).device
    pred = model(tokens.to(device)).argmax(-1).cpu()
    ok = pred == targets
    inside = float(ok[mask].float().mean())
    outside = float(ok[:, :-1][~mask[:, :-1]].float().mean())
    return inside, outside


@torch.no_grad()
def position_loss_figure(model: Any, tokens: torch.Tensor) -> Any:
    """Mean next-token loss at each position of ``[r, r]`` sequences."""
    import plotly.graph_objects as go

    device = next(model.parameters()).device
    logits = model(tokens.to(device)).float().cpu()
    lp = logits[:, :-1].log_softmax(-1).gather(-1, tokens[:, 1:, None])[..., 0]
    loss = (-lp).mean(0)
    half = tokens.shape[1] // 2
    fig = go.Figure(go.Scatter(x=list(range(1, tokens.shape[1])), y=loss.tolist(), mode="lines+markers",
                               name="loss predicting token t"))
    fig.add_vline(x=half - 0.5, line_dash="dash", annotation_text="second copy starts")
    return fig.update_layout(title="Next-token loss by position on repeated random sequences",
                             xaxis_title="position t of the predicted token", yaxis_title="loss (nats)",
                             height=380)


def head_order(prev: list[tuple[int, int, float]], ind: list[tuple[int, int, float]], n_layers: int,
               n_heads: int) -> list[tuple[int, int, str]]:
    """Every head as ``(layer, head, label)``: induction heads (best first), previous-token heads, then the rest.

    >>> head_order([(0, 1, 0.9)], [(1, 0, 0.8)], 2, 2)
    [(1, 0, 'L1H0 induction 0.80'), (0, 1, 'L0H1 previous-token 0.90'), (0, 0, 'L0H0'), (1, 1, 'L1H1')]
    """
    out: list[tuple[int, int, str]] = []
    seen: set[tuple[int, int]] = set()
    for kind, heads in (("induction", ind), ("previous-token", prev)):
        for la, h, s in heads:
            if (la, h) not in seen:
                seen.add((la, h))
                out.append((la, h, f"L{la}H{h} {kind} {s:.2f}"))
    out += [(la, h, f"L{la}H{h}") for la in range(n_layers) for h in range(n_heads) if (la, h) not in seen]
    return out


def ordered_view(patterns: torch.Tensor, labels: list[Any], order: list[tuple[int, int, str]]) -> Any:
    """circuitsvis AttentionHeads of one example (``patterns[layer, head, dest, src]``) with heads in ``order``."""
    from mechwork.dashboard.views import attention_heads

    att = torch.stack([patterns[la, h] for la, h, _ in order])
    return attention_heads(att, labels, head_names=[name for _, _, name in order])


def induction_page(src: Source) -> Page:
    from mechwork.analysis.attention import attention_patterns, composition_scores, head_detectors, repeated_tokens
    from mechwork.dashboard.grokking import curves_figure
    from mechwork.summary import _arch, _recipe, last_recorded
    from mechwork.tasks import InductionTask

    task = src.task
    if not isinstance(task, InductionTask):
        raise ConfigError(f"the induction dashboard needs an induction run (got a {task.kind} run: {src.name!r})")
    model = src.model
    scores = head_detectors(model)
    prev, ind = scores.top("previous_token", THRESHOLD), scores.top("induction", THRESHOLD)
    ev = task.eval_batches()["test"]
    inside, outside = repeat_accuracy(model, ev.tokens, ev.targets, ev.mask)
    where = f"step {src.step} of run {src.name}" if src.kind == "run" else f"the {src.name} preset"
    page = Page(f"Induction dashboard: {src.name}", subtitle=f"{task.describe()}; {where}")

    def names(heads: list[tuple[int, int, float]]) -> str:
        return ", ".join(f"L{la}H{h} ({s:.2f})" for la, h, s in heads) or "none"

    text = [
        f"Previous-token heads (score >= {THRESHOLD}): **{names(prev)}**. "
        f"Induction heads: **{names(ind)}**.",
        f"On the task's held-out sequences the model predicts **{inside:.1%}** of the tokens inside repeated "
        f"segments, against {outside:.1%} elsewhere (chance is {1 / task.d_vocab:.1%}).",
    ]
    if prev and ind and min(h[0] for h in prev) < max(h[0] for h in ind):
        text.append("A previous-token head feeding a later induction head is the two-layer induction circuit "
                    "(Olsson et al. 2022); the patching tools test that this path carries the effect.")
    else:
        text.append("The detectors find no previous-token head below an induction head, so this model shows no "
                    "two-layer induction circuit.")
    page.markdown("\n\n".join(text), title="Summary")
    info: list[tuple[str, Any]] = [("source", src.name), ("task", task.describe()),
                                   ("model", _arch(src.model_config))]
    if src.train is not None:
        info.append(("training", _recipe(src.train, task, last_recorded(src))))
    page.kv(info, title="Model and training")
    if src.metrics is not None:
        page.plotly(curves_figure(src.metrics, []), title="Training curves")
    else:
        page.note("No training history for this model.", title="Training curves")

    page.plotly(scores.figure(), title="Head detectors", caption=scores.summary())
    page.table(scores.to_frame(), title="Head detector scores")
    comp = composition_scores(model)
    page.plotly(comp.figure(), title="Q, K and V composition", caption=comp.summary())
    rep = repeated_tokens(task.d_vocab, task.seq_len // 2, batch=64, seed=1)
    page.plotly(position_loss_figure(model, rep), title="Loss by position on repeated sequences")
    pats = attention_patterns(model, rep[:2])
    order = head_order(prev, ind, pats.patterns.shape[1], pats.patterns.shape[2])
    named = [name for _, _, name in order[: len({(la, h) for la, h, _ in prev + ind})]]
    opens = (f" Heads the summary names come first ({', '.join(named)}); the view opens on {order[0][2]}."
             if named else f" The detectors name no head, so the heads are in layer order (the view opens on "
             f"{order[0][2]}).")
    for i in range(2):
        page.view(ordered_view(pats.patterns[i], pats.labels[i], order),
                  title=f"Every head on a repeated sequence ({i + 1})",
                  caption="Second half = first half. Induction heads attend to the token after the earlier copy; "
                          "previous-token heads to the token just before." + opens)
    own = attention_patterns(model, ev.tokens[:1])
    page.view(ordered_view(own.patterns[0], own.labels[0], order), title="Every head on a task sequence",
              caption="One held-out sequence of the task: one segment repeated at a random offset." + opens)
    patching_sections(page, model, task, [(la, h) for la, h, _ in prev if la == 0],
                      [(la, h) for la, h, _ in ind if la >= 1])
    return page


def patching_sections(page: Page, model: Any, task: Any, prev: list[tuple[int, int]],
                      ind: list[tuple[int, int]]) -> None:
    """Patching, attribution, ablation and path patching of the induction circuit."""
    import plotly.graph_objects as go

    from mechwork.analysis.ablation import ablate
    from mechwork.analysis.attribution import attribute, path_patch
    from mechwork.analysis.metrics import accuracy
    from mechwork.analysis.patching import patch
    from mechwork.probes import standard_probe

    probe = standard_probe(task, n=8, seed=0)
    exact = patch(model, probe.clean, probe.corrupted, probe.metric, site="z", by="head_pos")
    approx = attribute(model, probe.clean, probe.corrupted, probe.metric, site="z", by="head_pos")
    page.plotly(exact.figure(), title="Activation patching: every head at every position",
                caption=f"{probe.description}. {exact.summary()}")
    x, y = exact.values.flatten(), approx.values.flatten()
    r = float(torch.corrcoef(torch.stack([x, y]))[0, 1])
    labels = [exact.label(idx) for idx in torch.cartesian_prod(
        *[torch.arange(n) for n in exact.values.shape]).tolist()]
    scatter = go.Figure(go.Scatter(x=x.tolist(), y=y.tolist(), mode="markers", text=labels,
                                   marker={"size": 5, "opacity": 0.6}))
    scatter.update_layout(title=f"Attribution patching against exact patching (Pearson r = {r:.3f})",
                          xaxis_title="exact patched metric", yaxis_title="attribution estimate", height=400)
    page.plotly(scatter, title="Attribution patching",
                caption="One forward and one backward pass estimate every cell of the sweep above.")
    if not (prev and ind):
        page.note("The detectors name no previous-token head in layer 0 and induction head above it, so there is "
                  "no circuit to ablate or path-patch.", title="Ablation and path patching")
        return
    ev = task.eval_batches()["test"]
    acc = accuracy(ev.targets, ev.mask)
    base = float(acc(model(ev.tokens)))
    rows = [("unablated", base)]
    for how in ("zero", "mean", "resample"):
        rows.append((f"{how}-ablate {', '.join(f'L{la}H{h}' for la, h in prev)}",
                     float(acc(ablate(model, ev.tokens, heads=prev, how=how)))))
    paths = {c: path_patch(model, ev.tokens, "mean", acc, senders=prev, receivers=ind, component=c) for c in "qkv"}
    rows += [(f"path {c}: mean-ablate only via the induction heads' {c}", paths[c].value) for c in "qkv"]
    bars = go.Figure(go.Bar(x=[v for _, v in rows], y=[n for n, _ in rows], orientation="h"))
    bars.update_yaxes(autorange="reversed")
    bars.update_layout(title="Accuracy inside repeated segments", xaxis_range=[0, 1], height=360,
                       xaxis_title="accuracy inside repeated segments", yaxis_title="heads ablated or path patched",
                       margin={"l": 360})
    page.plotly(bars, title="Ablation and path patching",
                caption=" ".join(p.summary() + "." for p in paths.values()))
