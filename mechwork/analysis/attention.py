"""Attention: cached patterns for given inputs, and head detectors.

* :func:`attention_patterns` runs the model once with a cache filtered to the
  ``hook_pattern`` points and returns every layer's patterns with readable
  token labels; ``.view_args(i)`` gives example ``i``'s patterns, labels and head
  names, ready for a circuitsvis view (``attention_heads(**pats.view_args(i))``
  in :mod:`mechwork.dashboard` draws it).
* :func:`head_detectors` scores every head as a previous-token, induction and
  duplicate-token head on sequences made of a random half repeated once
  (``[r, r]``, the ARENA / TransformerLens convention):

  - previous-token: mean attention from position ``t`` to ``t - 1`` (t >= 1);
  - induction: mean attention from ``t`` in the second half to ``t - L + 1``,
    the token after the earlier copy of the current token;
  - duplicate-token: mean attention from ``t`` in the second half to ``t - L``,
    the earlier copy itself.

Each score is an average attention weight in [0, 1]: 1 means the head puts all
its attention where the detector looks.

* :func:`composition_scores` (from :mod:`mechwork.analysis.composition`, re-exported
  here) reads the weights alone and scores how much each earlier head's output
  feeds each later head's query, key or value side.

Example::

    >>> import mechwork
    >>> from mechwork.analysis.attention import attention_patterns
    >>> model = mechwork.load("modadd-113")
    >>> pats = attention_patterns(model, mechwork.preset("modadd-113").task.tokens[:4])
    >>> tuple(pats.patterns.shape), pats.labels[0]
    ((4, 1, 4, 3, 3), ['0', '0', '='])
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass
from typing import TYPE_CHECKING, Any

import torch
from jaxtyping import Float, Int
from torch import Tensor

from mechwork.analysis.checks import check_tokens
from mechwork.analysis.composition import COMPOSITIONS, CompositionScores, composition_scores
from mechwork.errors import invalid
from mechwork.hooks import hook_name, token_labels
from mechwork.prompts import has_tokenizer
from mechwork.results import Result

if TYPE_CHECKING:  # pragma: no cover
    import pandas as pd
    from transformer_lens.model_bridge import TransformerBridge

__all__ = ["COMPOSITIONS", "DETECTORS", "AttentionPatterns", "CompositionScores", "HeadScores", "attention_patterns",
           "composition_scores", "head_detectors", "repeated_tokens"]

DETECTORS = ("previous_token", "induction", "duplicate_token")


def _cfg(model: TransformerBridge) -> tuple[int, int, int, int]:
    c = model.cfg
    return int(c.n_layers), int(c.n_heads), int(c.d_vocab), int(c.n_ctx)


def _eq_token(model: TransformerBridge) -> int | None:
    """Modular arithmetic's ``=`` token (p numbers in and out, then ``=``), else None."""
    d_vocab = _cfg(model)[2]
    out_vocab = int(getattr(model.cfg, "d_vocab_out", d_vocab))
    return d_vocab - 1 if d_vocab == out_vocab + 1 else None


@dataclass(frozen=True)
class AttentionPatterns(Result):
    """Patterns of every layer and head for a batch of inputs."""

    patterns: Float[Tensor, "batch layer head dest src"]
    labels: list[list[str]]  # token labels per example

    def summary(self) -> str:
        b, n_layers, n_heads, t, _ = self.patterns.shape
        return f"attention patterns of {n_layers} layer(s) x {n_heads} heads on {b} input(s) of {t} tokens"

    def to_frame(self) -> pd.DataFrame:
        """Per head: mean attention to the previous token and mean entropy (nats)."""
        import pandas as pd

        p = self.patterns
        ent = -(p.clamp_min(1e-12).log() * p).sum(-1).mean(dim=(0, 3))
        prev = p.diagonal(offset=-1, dim1=-2, dim2=-1).mean(dim=(0, 3)) if p.shape[-1] > 1 else torch.zeros_like(ent)
        n_layers, n_heads = ent.shape
        return pd.DataFrame({
            "layer": [layer for layer in range(n_layers) for _ in range(n_heads)],
            "head": list(range(n_heads)) * n_layers,
            "entropy": ent.flatten().tolist(),
            "to_previous": prev.flatten().tolist(),
        })

    def view_args(self, i: int = 0, layer: int | None = None) -> dict[str, Any]:
        """Example ``i``'s patterns of every layer's heads (or one layer's), as the keyword arguments of a
        circuitsvis AttentionHeads view: ``attention`` ``[head, dest, src]``, ``tokens`` (labels), ``head_names``.

        ``mechwork.dashboard.attention_heads(**pats.view_args(0))`` is the view;
        ``page.attention(**pats.view_args(0))`` puts it on a page.
        """
        b, n_layers, n_heads = self.patterns.shape[:3]
        if not 0 <= i < b:
            raise invalid("i", f"an example index in [0, {b})", i)
        layers = range(n_layers) if layer is None else [layer]
        if layer is not None and not 0 <= layer < n_layers:
            raise invalid("layer", f"a layer in [0, {n_layers})", layer)
        att = torch.cat([self.patterns[i, la] for la in layers])
        names = [f"L{la}H{h}" for la in layers for h in range(n_heads)]
        return {"attention": att, "tokens": self.labels[i], "head_names": names}

    def figure(self, i: int = 0) -> Any:
        from plotly.subplots import make_subplots

        _, n_layers, n_heads = self.patterns.shape[:3]
        labels = self.labels[i]
        ticks = [f"{j}:{t}" for j, t in enumerate(labels)]
        fig = make_subplots(rows=n_layers, cols=n_heads, subplot_titles=[
            f"L{la}H{h}" for la in range(n_layers) for h in range(n_heads)])
        for la in range(n_layers):
            for h in range(n_heads):
                fig.add_heatmap(z=self.patterns[i, la, h].tolist(), x=ticks, y=ticks, zmin=0, zmax=1,
                                coloraxis="coloraxis", row=la + 1, col=h + 1)
        fig.update_yaxes(autorange="reversed", title_text="destination")
        fig.update_xaxes(title_text="source")
        return fig.update_layout(title=f"Attention patterns, example {i} (rows: destination, columns: source)",
                                 coloraxis={"colorscale": "Blues", "colorbar": {"title": {"text": "attention"}}},
                                 height=300 * n_layers + 100)


@torch.no_grad()
def attention_patterns(
    model: TransformerBridge,
    tokens: Int[Tensor, "batch pos"],
    labels: Sequence[Sequence[str]] | None = None,
) -> AttentionPatterns:
    """Every layer's attention pattern on ``tokens`` (one forward pass, cache filtered to the patterns).

    Tokens are labelled by ``labels``, else by the model's tokenizer (its token strings), else by their ids.
    """
    check_tokens(model, tokens, "tokens")
    n_layers, _, _, n_ctx = _cfg(model)
    if tokens.shape[1] > n_ctx:
        raise invalid("tokens", f"at most n_ctx = {n_ctx} positions", tokens.shape[1])
    device = next(model.parameters()).device
    names = {hook_name("pattern", la) for la in range(n_layers)}
    _, cache = model.run_with_cache(tokens.to(device), names_filter=lambda n: n in names)
    pats = torch.stack([cache[hook_name("pattern", la)] for la in range(n_layers)], dim=1).float().cpu()
    if labels is None and has_tokenizer(model):  # the tokenizer's strings, as TransformerLens's to_str_tokens
        labs = [[str(t) for t in model.to_str_tokens(row)] for row in tokens]
    elif labels is None:
        eq = _eq_token(model)
        labs = [token_labels(row, eq) for row in tokens]
    else:
        labs = [[str(t) for t in row] for row in labels]
        if len(labs) != tokens.shape[0] or any(len(r) != tokens.shape[1] for r in labs):
            raise invalid("labels", f"{tokens.shape[0]} rows of {tokens.shape[1]} labels", f"{len(labs)} rows")
    return AttentionPatterns(pats, labs)


def repeated_tokens(d_vocab: int, half: int, batch: int = 32, seed: int = 0) -> Int[Tensor, "batch pos"]:
    """``batch`` sequences ``[r, r]``: ``half`` uniform random tokens, then the same again."""
    g = torch.Generator().manual_seed(seed)
    r = torch.randint(0, d_vocab, (batch, half), generator=g)
    return torch.cat([r, r], dim=1)


@dataclass(frozen=True)
class HeadScores(Result):
    """Detector scores for every head: ``scores[name]`` is ``[layer, head]``."""

    scores: dict[str, Float[Tensor, "layer head"]]
    half: int  # length of the repeated half used

    def __getitem__(self, name: str) -> Tensor:
        return self.scores[name]

    def top(self, name: str, threshold: float = 0.5) -> list[tuple[int, int, float]]:
        """``(layer, head, score)`` of the heads at or above ``threshold``, best first."""
        if name not in self.scores:
            raise invalid("name", f"one of {', '.join(self.scores)}", name)
        s = self.scores[name]
        found = [(la, h, float(s[la, h])) for la in range(s.shape[0]) for h in range(s.shape[1])
                 if float(s[la, h]) >= threshold]
        return sorted(found, key=lambda x: -x[2])

    def summary(self) -> str:
        parts = []
        for name, s in self.scores.items():
            la, h = divmod(int(s.argmax()), s.shape[1])
            parts.append(f"{name.replace('_', '-')}: best L{la}H{h} ({float(s[la, h]):.2f})")
        return "; ".join(parts)

    def to_frame(self) -> pd.DataFrame:
        import pandas as pd

        first = next(iter(self.scores.values()))
        n_layers, n_heads = first.shape
        return pd.DataFrame({
            "layer": [la for la in range(n_layers) for _ in range(n_heads)],
            "head": list(range(n_heads)) * n_layers,
            **{k: v.flatten().tolist() for k, v in self.scores.items()},
        })

    def figure(self) -> Any:
        import plotly.graph_objects as go

        return go.Figure(self.figure_spec())

    def figure_spec(self) -> dict[str, Any]:
        """:meth:`figure` as a plotly figure dict (:mod:`mechwork.analysis.figspec`), what a page draws."""
        from mechwork.analysis.figspec import colorscale, on, subplots

        names = list(self.scores)
        layout = subplots(1, len(names), tuple(n.replace("_", "-") for n in names))
        data = []
        for j, name in enumerate(names):
            s = self.scores[name]
            data.append(on(1, j + 1, len(names), {
                "coloraxis": "coloraxis", "text": [[f"{float(v):.2f}" for v in row] for row in s],
                "texttemplate": "%{text}", "x": [f"H{h}" for h in range(s.shape[1])],
                "y": [f"L{la}" for la in range(s.shape[0])], "z": s.tolist(), "zmax": 1, "zmin": 0, "type": "heatmap"}))
            n = "" if j == 0 else str(j + 1)
            layout[f"xaxis{n}"] |= {"title": {"text": "head"}}
            layout[f"yaxis{n}"] |= {"title": {"text": "layer"}, "autorange": "reversed"}
        layout["coloraxis"] = {"colorbar": {"title": {"text": "score"}}, "colorscale": colorscale("Viridis"),
                               "cmin": 0, "cmax": 1}
        return {"data": data, "layout": layout | {
            "title": {"text": f"Head detector scores (repeated random halves of {self.half} tokens)"}, "height": 320}}


def head_detectors(
    model: TransformerBridge, *, half: int | None = None, batch: int = 32, seed: int = 0
) -> HeadScores:
    """Previous-token, induction and duplicate-token scores of every head (see the module docstring)."""
    _, _, d_vocab, n_ctx = _cfg(model)
    half = n_ctx // 2 if half is None else half
    if not 2 <= half <= n_ctx // 2:
        raise invalid("half", f"an integer in [2, {n_ctx // 2}] (two halves must fit n_ctx = {n_ctx})", half)
    pats = attention_patterns(model, repeated_tokens(d_vocab, half, batch, seed)).patterns  # b l h t t
    prev = pats.diagonal(offset=-1, dim1=-2, dim2=-1).mean(dim=(0, -1))
    ind = pats.diagonal(offset=-(half - 1), dim1=-2, dim2=-1)[..., 1:].mean(dim=(0, -1))
    dup = pats.diagonal(offset=-half, dim1=-2, dim2=-1).mean(dim=(0, -1))
    return HeadScores({"previous_token": prev, "induction": ind, "duplicate_token": dup}, half)
