"""The SAE section of a page: the SAE's metrics, then one feature page per chosen latent.

:func:`feature_section` renders ``bundle["sae"]`` (a :class:`~mechwork.analysis.features.SAEBundle`); a bundle
without one gets no section. Per latent: sentences each chosen by a condition on the numbers
(:func:`latent_lines`), the histogram of its nonzero activations, its top activations coloured by activation
(circuitsvis TextNeuronActivations, one sample per top input, token strings HTML-escaped by the view), its logit
effect, and, for modular arithmetic, its activation over the (a, b) grid with its Fourier energy per frequency.

Example::

    >>> from types import SimpleNamespace as NS
    >>> m = NS(l0=12.0, fve=0.93, n_dead=0, n_dense=1, dense_threshold=0.1, loss_recovered=0.97, n_activations=100)
    >>> metrics_lines(m, 512)[1]
    'Every latent fires on the evaluation activations; 1 is dense (fires on more than 10% of them).'
"""

from __future__ import annotations

import math
from typing import TYPE_CHECKING, Any

from mechwork.analysis.features import DOMINANT
from mechwork.dashboard.views import CircuitsView

if TYPE_CHECKING:  # pragma: no cover
    from mechwork.analysis.features import FeatureReport, SAEBundle
    from mechwork.dashboard.page import Page
    from mechwork.results import Analysis

__all__ = ["feature_section", "latent_lines", "metrics_lines", "top_view"]


def _quote(labels: list[tuple[str, float]]) -> str:
    return ", ".join(f"'{t}' ({v:+.3g})" for t, v in labels)


def metrics_lines(m: Any, d_sae: int) -> list[str]:
    """What the SAE's metrics say: L0 and FVE, dead and dense latents, the loss recovered (when measured)."""
    lines = [f"L0 **{m.l0:.1f}** of {d_sae:,} latents; it explains **{m.fve:.1%}** of the variance (FVE) of the "
             f"{m.n_activations:,} evaluation activations."]
    verb = "is dense (fires" if m.n_dense == 1 else "are dense (fire"
    dense = (f"{m.n_dense:,} {verb} on more than {m.dense_threshold:.0%} of them)" if m.n_dense else
             f"none fires on more than {m.dense_threshold:.0%} of them")
    dead = (f"{m.n_dead:,} of the latents never fire on the evaluation activations (dead)" if m.n_dead else
            "Every latent fires on the evaluation activations")
    lines.append(f"{dead}; {dense}.")
    lr = m.loss_recovered
    if lr is None or not math.isfinite(float(lr)):
        lines.append("The loss recovered was not measured.")
    else:
        lines.append(f"Spliced in at its hook, the reconstruction recovers **{lr:.1%}** of the loss (0 = the hook's "
                     f"activation zero-ablated, 1 = the clean model).")
    return lines


def latent_lines(r: FeatureReport, i: int) -> list[str]:
    """The sentences of latent ``r.latents[i]``'s page, each from a condition on its numbers."""
    lat, dens = r.latents[i], float(r.density_all[r.latents[i]])
    n_fire = r.firing(i)
    if n_fire == 0:
        return [f"Latent {lat} never fires on the {r.n_acts:,} activations."]
    lines = [f"Latent {lat} fires on **{dens:.2%}** of the {r.n_acts:,} activations ({n_fire:,}); its largest "
             f"activation is {float(r.max_all[lat]):.3g}."]
    j, pos = int(r.top_input[i, 0]), int(r.top_pos[i, 0])
    lines.append(f"Its top activation is at position {pos} of input {j}, token '{r.top_tokens[i][0][pos]}'.")
    if r.logit_effect is None:
        lines.append(f"No logit effect is shown: {r.logit_path}.")
    else:
        up, down = r.tokens(i, 3), r.tokens(i, 3, bottom=True)
        lines.append(f"Logit effect ({r.logit_path}): it raises {_quote(up)} most and lowers {_quote(down)} most.")
    if r.grid is not None:
        e = r.grid.energy[i]
        k, share = int(e.argmax()) + 1, float(e.max())
        if float(e.sum()) == 0.0:
            lines.append("Its activation is constant over the (a, b) grid: it has no Fourier energy.")
        elif share >= DOMINANT:
            lines.append(f"Over the (a, b) grid it is **dominated by frequency {k}**: {share:.1%} of its non-constant "
                         f"Fourier energy (at least {DOMINANT:.0%}).")
        else:
            lines.append(f"No single frequency dominates it over the (a, b) grid: the largest, {k}, holds {share:.1%} "
                         f"of its non-constant Fourier energy (under {DOMINANT:.0%}).")
    return lines


def top_view(r: FeatureReport, i: int) -> CircuitsView:
    """The top activations of latent ``r.latents[i]``: one sample per top input, coloured by the latent's activation
    at each position (circuitsvis TextNeuronActivations: the view escapes the token strings)."""
    from mechwork.dashboard.views import jsonable

    keep = [j for j in range(r.top_values.shape[1]) if float(r.top_values[i, j]) > 0] or [0]
    acts = [[[[v]] for v in jsonable(r.top_acts[i, j])] for j in keep]
    tokens = [r.top_tokens[i][j] for j in keep]
    if not any(t != t.strip() for row in tokens for t in row):  # token ids, not text: a space between them
        tokens = [[t + " " for t in row] for row in tokens]
    return CircuitsView("TextNeuronActivations", {
        "tokens": tokens, "activations": acts, "firstDimensionName": "Latent", "secondDimensionName": "Value",
        "firstDimensionLabels": [str(r.latents[i])], "secondDimensionLabels": ["activation"]}, height="260px")


def _latent(page: Page, sae: SAEBundle, i: int) -> None:
    r = sae.features
    lat = r.latents[i]
    page.markdown("\n\n".join(latent_lines(r, i)), title=f"SAE latent {lat}")
    if r.firing(i) == 0:
        return
    page.plotly(r.figure_spec(i, "histogram"),
                caption=f"Nonzero activations in {r.hist_counts.shape[1]} equal bins from 0 to the largest.")
    where = [f"position {int(r.top_pos[i, j])} of input {int(r.top_input[i, j])} ({float(r.top_values[i, j]):.3g})"
             for j in range(r.top_values.shape[1]) if float(r.top_values[i, j]) > 0]
    page.view(top_view(r, i), title=f"Latent {lat}: top activations",
              caption="Each input coloured by the latent's activation at every position; positions the SAE does not "
                      "read show 0. In order: " + "; ".join(where) + ".")
    if r.logit_effect is not None:
        page.plotly(r.figure_spec(i, "logits"), caption=f"The decoder direction through {r.logit_path}.")
    if r.grid is not None:
        page.plotly(r.figure_spec(i, "grid"), caption="Left: the latent at '=' for every pair (a down, b across). "
                    "Right: each frequency's share of its non-constant Fourier energy (the cos/sin terms of a, of b, "
                    "and of a + b and a - b at that frequency); in red the largest. "
                    f"Dominated: at least {DOMINANT:.0%}.")


def feature_section(page: Page, bundle: Analysis, key: str = "sae", *, title: str = "SAE features") -> Page:
    """The SAE's summary and metrics, then a feature page per chosen latent; nothing when ``bundle`` has no SAE."""
    sae = bundle.get(key)
    if sae is None:
        return page
    r, cfg = sae.features, sae.cfg
    arch = f"TopK, k = {cfg.k}" if cfg.architecture == "topk" else "ReLU with an L1 penalty"
    lines = [f"An SAE of **{r.d_sae:,}** latents ({arch}) reads `{sae.hook_name}` ({sae.where})."]
    if sae.metrics is not None:
        lines += metrics_lines(sae.metrics, r.d_sae)
    n_live = int(r.live.sum())
    if r.grid is not None:
        n_dom = int(r.dominated().sum())
        lines.append(f"**{n_dom}** of its {n_live} live latents are dominated by one key frequency over the (a, b) "
                     f"grid (at least {DOMINANT:.0%} of their non-constant Fourier energy in one frequency).")
    how = {"density": "the most often firing", "max": "the largest-activating", "given": "the chosen"}[r.by]
    silent = sum(not bool(r.live[lat]) for lat in r.latents)
    never = f"; {silent} of those below never {'does' if silent == 1 else 'do'})." if silent else ")."
    lines.append(f"Below: {how} {len(r.latents)} of the {r.d_sae:,} latents ({n_live} fire on the {r.n_acts:,} "
                 f"activations the pages are drawn from{never}")
    page.markdown("\n\n".join(lines), title=title)
    if sae.metrics is not None:
        m = sae.metrics
        page.kv([("L0", m.l0), ("FVE", m.fve), ("dead latents", m.n_dead),
                 (f"dense latents (> {m.dense_threshold:.0%})", m.n_dense), ("loss recovered", m.loss_recovered)],
                title="SAE metrics")
    for i in range(len(r.latents)):
        _latent(page, sae, i)
    return page
