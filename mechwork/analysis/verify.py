"""Approximate edge scores checked against exact edge patching, on the edges that matter and a sample of the rest.

:func:`verify` takes approximate scores (an :class:`~mechwork.analysis.edges.EdgeScores` from EAP or EAP-IG) and
exact ones: either already computed over every edge, or a function that patches just the edges it is given
(:func:`mechwork.analysis.edges.exact_patcher`), so that exact patching runs only on the approximation's top-k
edges plus a random sample of the rest (``sample=None``: every edge). It reports

* Spearman's rho of the two rankings over the checked edges (:func:`spearman`: Pearson's r of the average ranks,
  computed in torch);
* the largest miss: the checked edge with the largest ``|approx - exact|``;
* the top-k overlap: the fraction of the true top-k (by ``|exact|`` among the checked edges) that the
  approximation also ranks in its top-k.

:meth:`Verification.figure` is the approximate-against-exact scatter, with the line y = x.

Example::

    >>> import torch
    >>> from mechwork.analysis.verify import spearman
    >>> round(spearman(torch.tensor([1.0, 2.0, 3.0, 4.0]), torch.tensor([10.0, 20.0, 40.0, 30.0])), 3)
    0.8
"""

from __future__ import annotations

import math
from collections.abc import Callable, Sequence
from dataclasses import dataclass
from typing import TYPE_CHECKING, Any

import torch
from jaxtyping import Float
from torch import Tensor

from mechwork.errors import ConfigError, invalid
from mechwork.graph import Edge
from mechwork.results import Result

if TYPE_CHECKING:  # pragma: no cover
    import pandas as pd

__all__ = ["Verification", "ranks", "spearman", "verify"]


def ranks(x: Float[Tensor, " n"]) -> Float[Tensor, " n"]:
    """1-based ranks of ``x``, ties sharing their average rank (as ``scipy.stats.rankdata``).

    >>> ranks(torch.tensor([3.0, 1.0, 3.0, 2.0])).tolist()
    [3.5, 1.0, 3.5, 2.0]
    """
    x = x.detach().double().cpu()
    order = torch.argsort(x, stable=True)
    _, inverse, counts = torch.unique_consecutive(x[order], return_inverse=True, return_counts=True)
    ends = counts.cumsum(0).double()
    out = torch.empty_like(x)
    out[order] = (ends - (counts.double() - 1) / 2)[inverse]
    return out


def spearman(a: Float[Tensor, " n"], b: Float[Tensor, " n"]) -> float:
    """Spearman's rho of ``a`` and ``b``: Pearson's r of their average ranks (NaN when either is constant)."""
    if a.shape != b.shape:
        raise ConfigError(f"spearman needs two vectors of one length (got {tuple(a.shape)} and {tuple(b.shape)})")
    if a.numel() < 2:
        return math.nan
    ra, rb = ranks(a), ranks(b)
    ra, rb = ra - ra.mean(), rb - rb.mean()
    den = float(ra.norm() * rb.norm())
    return float((ra * rb).sum()) / den if den > 0 else math.nan


@dataclass(frozen=True)
class Verification(Result):
    """Approximate scores against exact patching over ``edges`` (the checked ones)."""

    spearman: float
    largest_miss: tuple[Edge, float, float]  # (edge, approx, exact) with the largest |approx - exact|
    topk_overlap: float  # fraction of the true top-k the approximation ranks in its top-k
    k: int
    n_checked: int
    n_edges: int  # edges in the graph
    edges: tuple[Edge, ...]
    approx: Float[Tensor, " checked"]
    exact: Float[Tensor, " checked"]
    method: str = "eap"  # the approximation's method

    def summary(self) -> str:
        e, a, x = self.largest_miss
        return (f"{self.method} against exact patching on {self.n_checked:,} of {self.n_edges:,} edges: Spearman rho "
                f"{self.spearman:.3f}; top-{self.k} overlap {self.topk_overlap:.0%}; largest miss {e} "
                f"({self.method} {a:.4g}, exact {x:.4g})")

    def to_frame(self) -> pd.DataFrame:
        import pandas as pd

        return pd.DataFrame({"edge": [str(e) for e in self.edges], "approx": self.approx.tolist(),
                             "exact": self.exact.tolist(), "miss": (self.approx - self.exact).abs().tolist()})

    def figure(self) -> Any:
        """The approximate score of each checked edge against its exact score, with the line y = x."""
        import plotly.graph_objects as go

        a, x = self.approx.tolist(), self.exact.tolist()
        lo, hi = min(a + x + [0.0]), max(a + x + [0.0])
        fig = go.Figure()
        fig.add_trace(go.Scatter(x=[lo, hi], y=[lo, hi], mode="lines", name="y = x",
                                 line={"dash": "dash", "color": "#9aa5b1"}, hoverinfo="skip"))
        fig.add_trace(go.Scatter(x=x, y=a, mode="markers", name="edges", text=[str(e) for e in self.edges],
                                 hovertemplate=f"%{{text}}<br>exact %{{x:.4g}}<br>{self.method} %{{y:.4g}}"
                                               "<extra></extra>"))
        fig.update_layout(title=f"{self.method} against exact edge patching ({self.n_checked:,} of "
                                f"{self.n_edges:,} edges): Spearman rho {self.spearman:.3f}, top-{self.k} overlap "
                                f"{self.topk_overlap:.0%}",
                          xaxis_title="exact score (metric change)", yaxis_title=f"{self.method} score",
                          template="plotly_white")
        return fig


def _checked(values: Tensor, k: int, sample: int | None, seed: int) -> list[int]:
    """The top-k edges by |value| (NaN skipped) plus ``sample`` others drawn at random (None: all), sorted."""
    ok = torch.nonzero(~torch.isnan(values))[:, 0]
    ranked = ok[torch.sort(values[ok].abs(), descending=True, stable=True).indices].tolist()
    if sample is None:
        return sorted(ranked)
    rest = ranked[k:]
    pick = torch.randperm(len(rest), generator=torch.Generator().manual_seed(seed))[:sample].tolist()
    return sorted(ranked[:k] + [rest[i] for i in pick])


def _top(values: Tensor, k: int) -> set[int]:
    return set(torch.sort(values.abs(), descending=True, stable=True).indices[:k].tolist())


def verify(scores: Any, exact: Any | Callable[[Sequence[Edge]], Any], *, k: int = 10, sample: int | None = 40,
           seed: int = 0) -> Verification:
    """``scores`` against exact patching on their top-``k`` edges and ``sample`` others (None: every edge).

    ``exact``: exact scores (an EdgeScores over the same graph), or a function ``edges -> EdgeScores`` that
    patches just the edges it is given (:func:`mechwork.analysis.edges.exact_patcher`).
    """
    if isinstance(k, bool) or not isinstance(k, int) or k < 1:
        raise invalid("k", "a positive number of top edges", k)
    if sample is not None and (isinstance(sample, bool) or not isinstance(sample, int) or sample < 0):
        raise invalid("sample", "a number of edges >= 0, or None for every edge", sample)
    graph = scores.graph
    approx_all = scores.values.detach().double().cpu()
    chosen = _checked(approx_all, k, sample, seed)
    if not chosen:
        raise ConfigError("verify needs at least one scored edge (every approximate score is NaN)")
    try:
        ex = exact([graph.edges[i] for i in chosen]) if callable(exact) else exact
    except ConfigError as e:
        if graph.n_pos is not None and "names a position" in str(e):
            raise ConfigError("the scores are per position: pass exact_patcher(..., per_position=True)") from None
        raise
    if ex.graph != graph:
        raise ConfigError(f"the exact scores are over another graph ({ex.graph.describe()}; the approximate ones: "
                          f"{graph.describe()})")
    kinds = [(x.direction, x.ablation) for x in (scores, ex)]
    if kinds[0] != kinds[1]:
        raise ConfigError(f"the approximate scores are {'/'.join(kinds[0])}, the exact ones {'/'.join(kinds[1])}: "
                          "compute both with the same direction and ablation")
    idx = torch.tensor(chosen, dtype=torch.long)
    a, x = approx_all[idx], ex.values.detach().double().cpu()[idx]
    missing = torch.isnan(x)
    if bool(missing.any()):
        raise ConfigError(f"the exact scores miss {int(missing.sum())} checked edges (e.g. "
                          f"{graph.edges[chosen[int(missing.nonzero()[0])]]}); compute them, or pass exact_patcher")
    worst = int((a - x).abs().argmax())
    kk = min(k, len(chosen))
    overlap = len(_top(x, kk) & _top(a, kk)) / kk
    edges = tuple(graph.edges[i] for i in chosen)
    return Verification(spearman(a, x), (edges[worst], float(a[worst]), float(x[worst])), overlap, kk, len(chosen),
                        graph.n_edges, edges, a, x, str(scores.method))
