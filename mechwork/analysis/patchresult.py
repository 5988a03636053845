"""The result of activation patching and of its variants: :class:`PatchResult`, one metric value per cell.

:func:`mechwork.analysis.patching.patch`, :func:`mechwork.analysis.attribution.attribute` and the SAE latent
patcher (:mod:`mechwork.analysis.saepatch`) all return it, labelled by the dimensions of
:data:`mechwork.hooks.DIMS`, so results of different methods compare cell for cell.

Example::

    >>> import torch
    >>> res = PatchResult(torch.tensor([[0.25, 0.75]]), ("layer", "pos"), {"layer": [0], "pos": [0, 1]},
    ...                   "resid_pre", "layer_pos", "denoising", clean_value=1.0, corrupted_value=0.0)
    >>> res.top(1), res.label((0, 0))
    ([('L0 pos 1', 0.75, 0.75)], 'L0 pos 0')
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass
from typing import TYPE_CHECKING, Any

import torch
from torch import Tensor

from mechwork.results import Result

if TYPE_CHECKING:  # pragma: no cover
    import pandas as pd

__all__ = ["ENGINES", "NEGLIGIBLE_GAP", "PatchResult"]

ENGINES = {"fast": "fast engine", "hooks": "hook path"}  # PatchResult.engine -> how summaries and titles name it
NEGLIGIBLE_GAP = 1e-3  # a clean-corrupted gap under this share of the metric's scale is treated as none


@dataclass(frozen=True)
class PatchResult(Result):
    """Metric of the patched run for every cell; ``coords[dim]`` lists the indices along each dim."""

    values: Tensor
    dims: tuple[str, ...]
    coords: dict[str, list[int]]
    site: str
    by: str
    direction: str
    clean_value: float  # metric of the clean run
    corrupted_value: float  # metric of the corrupted run
    per_example: Tensor | None = None  # [..., batch] when the metric returned a [batch] vector
    method: str = "activation patching"
    engine: str = "hooks"  # which path ran: "fast" (mechwork.engine) or "hooks" (the bridge's forward with hooks)

    def effect(self) -> Tensor:
        """Fraction of the clean-corrupted gap each cell accounts for (1 = all of it)."""
        gap = self.clean_value - self.corrupted_value
        if gap == 0:
            return torch.full_like(self.values, float("nan"))
        if self.direction == "denoising":
            return (self.values - self.corrupted_value) / gap
        return (self.clean_value - self.values) / gap

    def label(self, idx: Sequence[int]) -> str:
        parts = {d: self.coords[d][i] for d, i in zip(self.dims, idx, strict=True)}
        if "latent" in parts:  # site "sae"
            return f"latent {parts['latent']}" + (f" pos {parts['pos']}" if "pos" in parts else "")
        if "head" in parts:
            s = f"L{parts['layer']}H{parts['head']}"
        elif "neuron" in parts:
            s = f"L{parts['layer']}N{parts['neuron']}"
        else:
            s = f"L{parts['layer']}"
        return s + (f" pos {parts['pos']}" if "pos" in parts else "") + \
            (f" dest {parts['dest']} src {parts['src']}" if "dest" in parts else "")

    def top(self, k: int = 5) -> list[tuple[str, float, float]]:
        """The ``k`` cells with the largest absolute effect: ``(label, value, effect)``."""
        eff = self.effect()
        order = eff.abs().nan_to_num(-1).flatten().argsort(descending=True)[:k]
        out = []
        for flat in order.tolist():
            idx, rest = [], flat  # the cell's index, row-major (torch.unravel_index's first call imports sympy)
            for size in reversed(self.values.shape):
                rest, i = divmod(rest, size)
                idx.append(i)
            out.append((self.label(idx[::-1]), float(self.values.flatten()[flat]), float(eff.flatten()[flat])))
        return out

    def gap_is_negligible(self) -> bool:
        """True when clean and corrupted differ by under 1e-3 of their scale (at least 1): shares of it are noise."""
        gap = abs(self.clean_value - self.corrupted_value)
        return not gap >= NEGLIGIBLE_GAP * max(1.0, abs(self.clean_value), abs(self.corrupted_value))

    def summary(self) -> str:
        head = (f"{self.method} ({ENGINES.get(self.engine, self.engine)}), {self.site} by {self.by} "
                f"({self.direction}): clean {self.clean_value:.4g}, "
                f"corrupted {self.corrupted_value:.4g}")
        if self.gap_is_negligible():
            return (f"{head}; the corruption barely moves the metric (gap "
                    f"{abs(self.clean_value - self.corrupted_value):.2g}), so no cell's share of it is meaningful")
        tops = ", ".join(f"{lab} {v:.3g} ({e:.0%})" for lab, v, e in self.top(3))
        return f"{head}; top cells {tops}"

    def to_frame(self) -> pd.DataFrame:
        import pandas as pd

        grids = torch.meshgrid(*[torch.tensor(self.coords[d]) for d in self.dims], indexing="ij")
        cols = {d: g.flatten().tolist() for d, g in zip(self.dims, grids, strict=True)}
        df = pd.DataFrame({**cols, "value": self.values.flatten().tolist(),
                           "effect": self.effect().flatten().tolist()})
        df.attrs.update(method=self.method, engine=self.engine)
        return df

    def figure(self) -> Any:
        import plotly.graph_objects as go

        v = self.values
        title = f"{self.method} ({ENGINES.get(self.engine, self.engine)}): {self.site} by {self.by} " \
                f"({self.direction}); clean {self.clean_value:.3g}, corrupted {self.corrupted_value:.3g}"
        metric = f"patched metric ({self.direction})"
        if v.ndim == 1:
            d0 = self.dims[0]  # layer, or an SAE's latent
            fig = go.Figure(go.Bar(x=[f"L{x}" if d0 == "layer" else str(x) for x in self.coords[d0]], y=v.tolist()))
            return fig.update_layout(title=title, xaxis_title=d0, yaxis_title=metric)
        if self.dims == ("layer", "neuron"):
            # hundreds of neurons: one line per layer over the neuron index (a heatmap would be a 1-row strip)
            fig = go.Figure()
            for j, la in enumerate(self.coords["layer"]):
                fig.add_scatter(x=self.coords["neuron"], y=v[j].tolist(), mode="lines+markers", marker_size=3,
                                name=f"L{la}", hovertemplate=f"L{la}" + " N%{x}: %{y:.4g}<extra></extra>")
            for value, what in ((self.clean_value, "clean"), (self.corrupted_value, "corrupted")):
                fig.add_hline(y=value, line_dash="dot", line_color="#777", annotation_text=what)
            return fig.update_layout(title=title, xaxis_title="neuron index", yaxis_title=metric, height=380)
        if v.ndim == 4:
            return self._pairs_figure(title)
        if v.ndim == 3:  # layer, pos, head -> rows L{l}H{h}, columns pos
            rows = [f"L{la}H{h}" for la in self.coords["layer"] for h in self.coords["head"]]
            z = v.permute(0, 2, 1).reshape(len(rows), -1)
            x = [str(p) for p in self.coords["pos"]]
            names = ("head", "position")
        else:
            d0, d1 = self.dims
            prefix = {"layer": "L", "head": "H", "neuron": "N", "pos": "", "latent": ""}
            rows = [f"{prefix[d0]}{i}" for i in self.coords[d0]]
            x = [f"{prefix[d1]}{i}" for i in self.coords[d1]]
            z = v
            names = (d0, "position" if d1 == "pos" else d1)
        mid = self.corrupted_value if self.direction == "denoising" else self.clean_value
        fig = go.Figure(go.Heatmap(z=z.tolist(), x=x, y=rows, colorscale="RdBu", zmid=mid,
                                   colorbar={"title": {"text": "metric"}},
                                   hovertemplate="%{y} %{x}: %{z:.4g}<extra></extra>"))
        fig.update_yaxes(autorange="reversed")
        return fig.update_layout(title=title, yaxis_title=names[0], xaxis_title=names[1],
                                 height=max(320, 22 * len(rows) + 140))

    def _pairs_figure(self, title: str) -> Any:
        """``[layer, head, dest, src]``: one destination x source heatmap per head, one colour scale; a menu picks."""
        import plotly.graph_objects as go

        mid = self.corrupted_value if self.direction == "denoising" else self.clean_value
        r = max(float((self.values - mid).abs().max()), 1e-12)
        heads = [(i, j) for i in range(len(self.coords["layer"])) for j in range(len(self.coords["head"]))]
        names = [f"L{self.coords['layer'][i]}H{self.coords['head'][j]}" for i, j in heads]
        fig = go.Figure()
        for n, (i, j) in enumerate(heads):
            fig.add_heatmap(z=self.values[i, j].tolist(), x=[str(p) for p in self.coords["src"]],
                            y=[str(p) for p in self.coords["dest"]], colorscale="RdBu", zmin=mid - r, zmax=mid + r,
                            visible=n == 0, name=names[n], colorbar={"title": {"text": "metric"}},
                            hovertemplate=names[n] + " dest %{y} src %{x}: %{z:.4g}<extra></extra>")
        buttons = [{"label": nm, "method": "update", "args": [{"visible": [k == n for k in range(len(heads))]}]}
                   for n, nm in enumerate(names)]
        fig.update_yaxes(autorange="reversed")
        return fig.update_layout(title=title, xaxis_title="source position", yaxis_title="destination position",
                                 updatemenus=[{"buttons": buttons, "x": 1.0, "y": 1.12, "xanchor": "right"}],
                                 height=max(360, 22 * len(self.coords["dest"]) + 160))
