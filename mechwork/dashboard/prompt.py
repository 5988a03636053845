"""The prompt dashboard: any model on a few prompts, rendered from its prompt analysis bundle alone.

:func:`prompt_page` turns the bundle of :func:`mechwork.analysis.prompt.analyse_prompts` into a
:class:`~mechwork.dashboard.page.Page`; :func:`mechwork.dashboard.standard.prompt_dashboard` opens a model (a
preset, a run directory, a ``save_pretrained`` directory), reads the prompts, analyses them once and saves the
page. Sections:

1. a summary whose every sentence is chosen by a condition on the numbers (:func:`summary_lines`): how
   sure the model is of its next token, which component contributes most directly to it, the layer at
   which the logit lens first ranks the final answer top-1, the heads the detectors name, and for a pair
   the metric, whether the patching gap is negligible, the cells and the head that restore most of it,
   and whether attribution patching agrees;
2. the model and the prompts, with the model's two most likely next tokens;
3. attention: every head on each prompt (circuitsvis; token strings escaped by the views);
4. direct logit attribution at the last position, of the top token and of top minus runner-up;
5. the logit lens, every layer x position;
6. the head detectors on repeated random tokens;
7. for a pair: exact patching of ``resid_pre`` by layer and position and of each head's ``z``, and the
   attribution-patching sweeps of the same cells. The metric is the clean prompt's top next token minus the
   corrupted prompt's top next token (the clean runner-up when both predict the same token);
8. for a pair: the pair's circuit (:mod:`mechwork.dashboard.circuit`): EAP scores of every edge, the top-n
   circuit as a layered graph, its faithfulness curve and EAP against exact patching.

Example::

    >>> import mechwork
    >>> from mechwork.analysis.prompt import analyse_prompts
    >>> from mechwork.dashboard.prompt import prompt_page
    >>> model = mechwork.load("induction-2l", device="cpu")
    >>> page = prompt_page(analyse_prompts(model, [[5, 6, 7, 5, 6]], name="induction-2l"))
    >>> page.title
    'Prompt dashboard: induction-2l'
"""

from __future__ import annotations

from typing import TYPE_CHECKING, Any

from mechwork.analysis.prompt import SAME_TOP, NotApplicable, PerPrompt
from mechwork.dashboard import sections
from mechwork.dashboard.page import Page

if TYPE_CHECKING:  # pragma: no cover
    from mechwork.results import Analysis

__all__ = ["CONFIDENT", "DETECTED", "prompt_page", "summary_lines"]

CONFIDENT = 0.5  # a top next token at or above this probability is a confident prediction
DETECTED = 0.5  # a detector score at or above this names the head


# -- the summary: one function per claim, each returning its sentence only when its condition holds ------------
def confidence_line(bundle: Analysis) -> str:
    pred = bundle["predictions"]
    (_, top, p), (_, second, q) = pred.top[0], pred.runner_up[0]
    if p >= CONFIDENT:
        return f"On prompt 1 the model is confident of its next token: **{top!r}** with probability {p:.1%}."
    return (f"On prompt 1 no next token reaches {CONFIDENT:.0%}: the most likely is {top!r} ({p:.1%}), "
            f"then {second!r} ({q:.1%}).")


def dla_line(bundle: Analysis) -> str | None:
    pred = bundle["predictions"]
    if not pred.dla_top:
        return None
    label, value = pred.dla_top[0]
    top = pred.top[0][1]
    if label.startswith("L") and "H" in label:
        return f"Head **{label}** contributes most directly to the logit of {top!r} on prompt 1 ({value:+.3g})."
    return (f"The largest direct contribution to the logit of {top!r} on prompt 1 comes from {label}, not from a "
            f"head ({value:+.3g}).")


def lens_line(bundle: Analysis) -> str | None:
    pred = bundle["predictions"]
    if not pred.lens_first or not pred.lens_layers:
        return None
    first, layers, top = pred.lens_first[0], pred.lens_layers, pred.top[0][1]
    if first is not None and first < len(layers) - 1:
        return (f"The logit lens first ranks the final answer {top!r} top-1 at **{layers[first]}** "
                f"(of {len(layers)} lens layers, the last being the output) on prompt 1.")
    return f"The logit lens ranks the final answer {top!r} top-1 only at the model's output on prompt 1."


def detector_lines(bundle: Analysis) -> list[str]:
    if "detectors" not in bundle:
        return []
    scores = bundle["detectors"]
    prev, ind = scores.top("previous_token", DETECTED), scores.top("induction", DETECTED)

    def names(heads: list[tuple[int, int, float]]) -> str:
        return ", ".join(f"L{la}H{h} ({s:.2f})" for la, h, s in heads)

    out = [f"Induction heads (score >= {DETECTED}): **{names(ind)}**." if ind
           else f"No head scores {DETECTED} or more as an induction head on repeated random tokens."]
    out.append(f"Previous-token heads: **{names(prev)}**." if prev
               else f"No head scores {DETECTED} or more as a previous-token head.")
    if prev and ind and min(h[0] for h in prev) < max(h[0] for h in ind):
        out.append("A previous-token head below an induction head is the two-layer induction circuit "
                   "(Olsson et al. 2022).")
    return out


SMALL = 0.05  # a head share under 5% of the gap is not "restoring" it


def pair_lines(bundle: Analysis) -> list[str]:
    if "metric" not in bundle:
        return ["No pair was given (`--pair CLEAN CORRUPTED`), so there are no patching or attribution sweeps."]
    m, resid, heads, attr = bundle["metric"], bundle["patch_resid"], bundle["patch_heads"], bundle["attr_heads"]
    out = [f"Both prompts of the pair predict {m.answer[1]!r}, so the metric is its logit minus the clean "
           f"runner-up {m.wrong[1]!r}." if m.rule == SAME_TOP else
           f"The pair's metric is the logit of {m.answer[1]!r} (clean top) minus {m.wrong[1]!r} (corrupted top)."]
    if resid.gap_is_negligible():
        gap = abs(resid.clean_value - resid.corrupted_value)
        out.append(f"The corruption barely moves the metric (gap {gap:.2g}), so no cell's share of it is meaningful.")
        return out
    label, _, eff = resid.top(1)[0]
    moves = "restores" if eff >= 0 else "moves the metric away from clean by"
    out.append(f"Patching the clean residual stream at **{label}** {moves} {abs(eff):.0%} of the gap between the "
               f"corrupted ({resid.corrupted_value:.3g}) and clean ({resid.clean_value:.3g}) metric.")
    hlabel, _, heff = heads.top(1)[0]  # the head of the largest |share|, which may be small or negative
    out.append(f"Of the heads, **{hlabel}**'s output restores the most: {heff:.0%} of the gap." if heff >= SMALL
               else f"Of the heads, **{hlabel}**'s output moves the metric most, away from clean: {heff:.0%} of the "
               "gap." if heff <= -SMALL
               else f"No head's output alone restores {SMALL:.0%} of the gap (the largest share, {hlabel}'s, is "
               f"{heff:.1%}).")
    alabel = attr.top(1)[0][0]
    out.append(f"Attribution patching agrees: its top head is {alabel} too." if alabel == hlabel else
               f"Attribution patching disagrees: its top head is {alabel}, exact patching's {hlabel}.")
    return out


def summary_lines(bundle: Analysis) -> list[str]:
    """The summary's sentences, each chosen by a condition on the bundle's numbers."""
    lines = [confidence_line(bundle), dla_line(bundle), lens_line(bundle)]
    return [s for s in lines if s is not None] + detector_lines(bundle) + pair_lines(bundle)


# -- sections ----------------------------------------------------------------------------------
def model_section(page: Page, bundle: Analysis) -> Page:
    pred, info = bundle["predictions"], bundle.info
    task = getattr(info, "task", None)
    rows = [("source", _where(info)), *([("task", task.describe())] if task is not None else [])]
    page.kv(rows + list(pred.model.items()), title="Model")
    more = f" ({pred.dropped} more not analysed)" if pred.dropped else ""
    return page.table(pred.to_frame(), title="Prompts and next-token predictions",
                      caption=f"Prompts: {pred.source}{more}. The two most likely next tokens at the last position.")


def attention_section(page: Page, bundle: Analysis) -> Page:
    pats = bundle["attention"]
    for i, p in enumerate(pats.items):
        page.attention(**p.view_args(0), title=f"Attention on prompt {i + 1}",
                       caption="Every head (L = layer, H = head); rows are destinations, columns sources.")
    return page


def logit_section(page: Page, bundle: Analysis) -> Page:
    dla, diff, lens = bundle["dla"], bundle["dla_diff"], bundle["lens"]
    pred = bundle["predictions"]
    if isinstance(dla, NotApplicable):
        page.note(dla.summary(), title="Direct logit attribution")
    for i in range(len(dla) if isinstance(dla, PerPrompt) else 0):
        top, second = pred.top[i][1], pred.runner_up[i][1]
        page.result(dla[i], title=f"Direct logit attribution on prompt {i + 1}: {top!r}", summary=True)
        page.result(diff[i], title=f"Direct logit attribution on prompt {i + 1}: {top!r} minus {second!r}",
                    summary=True)
    if isinstance(lens, NotApplicable):
        return page.note(lens.summary(), title="Logit lens")
    for i in range(len(lens)):
        page.result(lens[i], title=f"Logit lens on prompt {i + 1}", summary=True)
    return page


def patching_section(page: Page, bundle: Analysis) -> Page:
    if "metric" not in bundle:
        return page.note("Give a clean and a corrupted prompt of one token length (`--pair CLEAN CORRUPTED`) for "
                         "activation and attribution patching.", title="Patching")
    page.table(bundle["metric"].to_frame(), title="The pair and its metric", caption=bundle["metric"].summary())
    for key, what in (("resid", "the residual stream (resid_pre) by layer and position"),
                      ("heads", "each head's output (z)")):
        page.result(bundle[f"patch_{key}"], title=f"Activation patching of {what}", summary=True)
        page.result(bundle[f"attr_{key}"], title=f"Attribution patching of {what}", summary=True)
    return page


def prompt_page(bundle: Analysis) -> Page:
    """The page of a prompt analysis bundle (see the module docstring); it never sees a model."""
    info = bundle.info
    page = Page(f"Prompt dashboard: {info.name}", subtitle=_where(info))
    sections.summary(page, summary_lines(bundle))
    model_section(page, bundle)
    attention_section(page, bundle)
    logit_section(page, bundle)
    detector_section(page, bundle)
    patching_section(page, bundle)
    if "metric" not in bundle:
        return page
    from mechwork.dashboard.circuit import circuit_section

    return circuit_section(page, bundle, title="Circuit of the pair")


def detector_section(page: Page, bundle: Analysis) -> Page:
    if "detectors" not in bundle:
        return page.note("The model's context is too short for two repeated halves of 2 tokens, so the head "
                         "detectors do not apply.", title="Head detectors")
    det = bundle["detectors"]
    page.result(det, title="Head detectors", caption=det.summary())
    return page.table(det.to_frame(), title="Head detector scores")


def _where(info: Any) -> str:
    try:
        return str(info.where)
    except (AttributeError, TypeError, ValueError):
        return str(info.name)
