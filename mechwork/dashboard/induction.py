"""The standard induction dashboard for an ``induction-2l`` run (or any induction-task run), rendered from its
analysis bundle (:func:`mechwork.analysis.induction.analyse`).

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
   name, and path patching from them to the induction heads' q, k and v;
8. the circuit of the standard probe (:mod:`mechwork.dashboard.circuit`): EAP scores of every edge of the
   position-free graph, the top-n circuit drawn as a layered graph, its faithfulness curve, EAP against
   exact patching, and whether the circuit holds the edges from the previous-token heads into the
   induction heads' keys (:func:`key_edges_line`);
9. when the run or preset has an SAE at ``blocks.1.hook_resid_pre``, its metrics and the feature pages of five
   latents (:mod:`mechwork.dashboard.features`).

Example::

    >>> from mechwork.dashboard import induction_dashboard
    >>> page = induction_dashboard("runs/induction")        # doctest: +SKIP
    >>> key_edges_line(frozenset({"L0H0->L1H2.k"}), [(0, 0, 0.9)], [(1, 2, 0.8)])
    "The circuit holds every edge from a previous-token head into an induction head's key input (L0H0->L1H2.k): \
the K-composition of the two-layer induction circuit."
"""

from __future__ import annotations

import os
from typing import TYPE_CHECKING, Any

import torch

from mechwork.analysis.induction import THRESHOLD
from mechwork.dashboard import sections
from mechwork.dashboard.features import feature_section
from mechwork.dashboard.page import Page

if TYPE_CHECKING:  # pragma: no cover
    from mechwork.results import Analysis

__all__ = ["THRESHOLD", "head_order", "induction_dashboard", "induction_page", "key_edges_line"]

Heads = list[tuple[int, int, float]]


def induction_dashboard(
    run_or_preset: str | os.PathLike[str], *, step: int | None = None, device: str | None = None
) -> Page:
    """The induction dashboard for an induction-task run directory or preset."""
    from mechwork.source import open_source
    from mechwork.tasks.induction import analyse

    return induction_page(analyse(open_source(run_or_preset, step=step, device=device)))


def head_order(prev: Heads, ind: Heads, n_layers: int, n_heads: int) -> list[tuple[int, int, str]]:
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


# -- sections -----------------------------------------------------------------------------------
def summary_section(page: Page, bundle: Analysis, prev: Heads, ind: Heads) -> Page:
    def names(heads: Heads) -> str:
        return ", ".join(f"L{la}H{h} ({s:.2f})" for la, h, s in heads) or "none"

    acc = bundle["repeat_accuracy"]
    text = [
        f"Previous-token heads (score >= {THRESHOLD}): **{names(prev)}**. Induction heads: **{names(ind)}**.",
        f"On the task's held-out sequences the model predicts **{acc.inside:.1%}** of the tokens inside repeated "
        f"segments, against {acc.outside:.1%} elsewhere (chance is {acc.chance:.1%}).",
    ]
    if prev and ind and min(h[0] for h in prev) < max(h[0] for h in ind):
        text.append("A previous-token head feeding a later induction head is the two-layer induction circuit "
                    "(Olsson et al. 2022); the patching tools test that this path carries the effect.")
    else:
        text.append("The detectors find no previous-token head below an induction head, so this model shows no "
                    "two-layer induction circuit.")
    return sections.summary(page, text)


def heads_section(page: Page, bundle: Analysis) -> Page:
    scores, comp = bundle["detectors"], bundle["composition"]
    page.result(scores, title="Head detectors", caption=scores.summary())
    page.table(scores.to_frame(), title="Head detector scores")
    page.result(comp, title="Q, K and V composition", caption=comp.summary())
    return page.result(bundle["position_loss"], title="Loss by position on repeated sequences", summary=False)


def views_section(page: Page, bundle: Analysis, prev: Heads, ind: Heads) -> Page:
    """Every head on two repeated sequences and on one of the task's, the heads the summary names first."""
    pats, own = bundle["repeated_attention"], bundle["task_attention"]
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
    return page.view(ordered_view(own.patterns[0], own.labels[0], order), title="Every head on a task sequence",
                     caption="One held-out sequence of the task: one segment repeated at a random offset." + opens)


def patching_section(page: Page, bundle: Analysis) -> Page:
    """Patching, attribution, ablation and path patching of the induction circuit."""
    exact, check = bundle["patching"], bundle["attribution"]
    page.result(exact, title="Activation patching: every head at every position",
                caption=f"{check.probe}. {exact.summary()}")
    page.result(check, title="Attribution patching",
                caption="One forward and one backward pass estimate every cell of the sweep above.")
    if "ablation" not in bundle:
        return page.note("The detectors name no previous-token head in layer 0 and induction head above it, so there "
                         "is no circuit to ablate or path-patch.", title="Ablation and path patching")
    abl = bundle["ablation"]
    return page.result(abl, title="Ablation and path patching", caption=abl.summary())


def key_edges_line(circuit: Any, prev: Heads, ind: Heads) -> str | None:
    """Whether ``circuit`` (anything ``in`` answers for edges) holds the edges from each previous-token head into
    the key input of each induction head above it (None when the detectors name no such pair)."""
    wanted = [f"L{pl}H{ph}->L{il}H{ih}.k" for pl, ph, _ in prev for il, ih, _ in ind if pl < il]
    if not wanted:
        return None
    missing = [e for e in wanted if e not in circuit]
    if not missing:
        return (f"The circuit holds every edge from a previous-token head into an induction head's key input "
                f"({', '.join(wanted)}): the K-composition of the two-layer induction circuit.")
    return (f"The circuit lacks {len(missing)} of the {len(wanted)} edges from a previous-token head into an "
            f"induction head's key input: {', '.join(missing)}.")


def circuit_part(page: Page, bundle: Analysis, prev: Heads, ind: Heads) -> Page:
    """The circuit of the standard probe, with the line on the previous-token -> induction key edges."""
    from mechwork.dashboard.circuit import circuit_section

    report = bundle.get("circuit")
    line = key_edges_line(report.circuit, prev, ind) if hasattr(report, "circuit") else None
    return circuit_section(page, bundle, title="Circuit of the standard probe", lines=[line] if line else [])


def induction_page(bundle: Analysis) -> Page:
    """Build the page from an induction analysis bundle (see the module docstring for its sections)."""
    info = bundle.info
    scores = bundle["detectors"]
    prev, ind = scores.top("previous_token", THRESHOLD), scores.top("induction", THRESHOLD)
    page = Page(f"Induction dashboard: {info.name}", subtitle=f"{info.task.describe()}; {info.where}")
    summary_section(page, bundle, prev, ind)
    sections.model_and_training(page, info)
    sections.training_curves(page, bundle)
    heads_section(page, bundle)
    views_section(page, bundle, prev, ind)
    patching_section(page, bundle)
    circuit_part(page, bundle, prev, ind)
    return feature_section(page, bundle)
