"""The figures of an SAE latent's feature page, as plotly figure dicts (:mod:`mechwork.analysis.figspec`).

:meth:`~mechwork.analysis.features.FeatureReport.figure_spec` draws a part of latent ``i``'s page from these:

* :func:`histogram` -- its nonzero activations, in equal bins from 0 to the largest;
* :func:`logits` -- its decoder direction's effect on the output tokens, the top and bottom ones;
* :func:`grid` -- for modular arithmetic, its activation at ``=`` over the (a, b) grid, and each frequency's share
  of the grid's non-constant Fourier energy.

Example::

    >>> import mechwork
    >>> from mechwork.analysis.features import feature_report
    >>> from mechwork.analysis.sae import SAE, SAEConfig
    >>> model = mechwork.load("induction-2l")
    >>> sae = SAE(SAEConfig(d_in=64, d_sae=32, hook_name="blocks.1.hook_resid_pre"), seed=0)
    >>> report = feature_report(model, sae, mechwork.preset("induction-2l").task.batch("test").tokens[:4])
    >>> histogram(report, 0)["data"][0]["type"], logits(report, 0)["layout"]["yaxis"]["title"]["text"]
    ('bar', 'token')
"""

from __future__ import annotations

from typing import Any

from mechwork.analysis.figspec import colorscale, on, subplots, template, typed
from mechwork.errors import ConfigError

__all__ = ["grid", "histogram", "logits"]

# ``r`` below is a mechwork.analysis.features.FeatureReport (not imported: features imports this module)


def histogram(r: Any, i: int) -> dict[str, Any]:
    edges, counts = r.hist_edges[i], r.hist_counts[i]
    mid = ((edges[1:] + edges[:-1]) / 2).tolist()
    lat = r.latents[i]
    bar = {"marker": {"color": "#2b6cb0"}, "name": "activations", "width": float(edges[1] - edges[0]),
           "x": mid, "y": counts.tolist(), "type": "bar"}
    title = (f"Latent {lat}: nonzero activations ({r.firing(i):,} of {r.n_acts:,}, "
             f"density {float(r.density_all[lat]):.3%})")
    return {"data": [bar], "layout": {"template": template(), "title": {"text": title},
                                      "xaxis": {"title": {"text": "activation"}},
                                      "yaxis": {"title": {"text": "count"}}, "bargap": 0.02}}


def logits(r: Any, i: int, k: int = 10) -> dict[str, Any]:
    up, down = r.tokens(i, k), r.tokens(i, k, bottom=True)[::-1]
    pairs = up + [t for t in down if t not in up]
    pairs.sort(key=lambda tv: tv[1])
    bar = {"marker": {"color": ["#d62728" if v < 0 else "#2ca02c" for _, v in pairs]}, "name": "logit",
           "orientation": "h", "x": [v for _, v in pairs], "y": [f"'{t}'" for t, _ in pairs], "type": "bar"}
    return {"data": [bar], "layout": {
        "template": template(), "title": {"text": f"Latent {r.latents[i]}: logit effect ({k} top and bottom tokens)"},
        "xaxis": {"title": {"text": r.logit_path.split(":")[0]}}, "yaxis": {"title": {"text": "token"}},
        "height": max(380, 18 * len(pairs))}}


def grid(r: Any, i: int) -> dict[str, Any]:
    if r.grid is None:
        raise ConfigError("this feature report has no (a, b) grid: pass grid=(p, tokens) to feature_report")
    g, lat = r.grid, r.latents[i]
    e = g.energy[i]
    layout = subplots(1, 2, ("activation over (a, b)", "energy per frequency"), horizontal_spacing=0.2)
    heat = {"colorbar": {"thickness": 14, "title": {"text": "activation"}, "x": 0.41},
            "colorscale": colorscale("Blues"), "hovertemplate": "a=%{y}, b=%{x}: %{z:.3g}<extra></extra>",
            "name": "activation", "z": typed(g.acts[i].detach().cpu().numpy()), "type": "heatmap"}
    k = list(range(1, len(e) + 1))
    bar = {"marker": {"color": ["#d62728" if j == int(e.argmax()) + 1 else "#1f77b4" for j in k]}, "name": "energy",
           "x": k, "y": e.tolist(), "type": "bar"}
    layout["xaxis"] |= {"title": {"text": "b"}}
    layout["yaxis"] |= {"title": {"text": "a"}, "autorange": "reversed"}
    layout["xaxis2"] |= {"title": {"text": "frequency k"}}
    layout["yaxis2"] |= {"title": {"text": "share of non-constant energy"}, "range": [0, 1]}
    layout |= {"title": {"text": f"Latent {lat} over the (a, b) grid: frequency {int(e.argmax()) + 1} holds "
                                 f"{float(e.max()):.1%} of the non-constant energy"}, "height": 420}
    return {"data": [on(1, 1, 2, heat), on(1, 2, 2, bar)], "layout": layout}
