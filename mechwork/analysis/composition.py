"""Composition scores: how much each earlier head's output feeds each later head, from the weights alone.

:func:`composition_scores` scores Q-, K- and V-composition (Elhage et al. 2021,
"A Mathematical Framework for Transformer Circuits"; the ARENA 1.2 formulas)
between every head and every head of a later layer, with the score that random
matrices of the same shapes get as a baseline. It reads TransformerLens's
``model.W_Q``, ``W_K``, ``W_V``, ``W_O``, so it takes any bridge (a Hugging Face
model's fused or Conv1D weights too). On a rotary model the queries and keys
turn with position, so ``W_Q W_K^T`` is not its QK circuit: there only
V-composition is scored, and asking for Q or K is refused in one line.

Example::

    >>> import mechwork
    >>> from mechwork.analysis.composition import composition_scores
    >>> comp = composition_scores(mechwork.load("induction-2l"), n_samples=20)
    >>> sorted(comp.scores), tuple(comp["v"].shape)
    (['k', 'q', 'v'], (2, 4, 2, 4))
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass
from typing import TYPE_CHECKING, Any

import torch
from jaxtyping import Float
from torch import Tensor

from mechwork.errors import ConfigError, invalid
from mechwork.results import Result

if TYPE_CHECKING:  # pragma: no cover
    import pandas as pd
    from transformer_lens.model_bridge import TransformerBridge

__all__ = ["COMPOSITIONS", "CompositionScores", "composition_scores"]

COMPOSITIONS = ("q", "k", "v")


@dataclass(frozen=True)
class CompositionScores(Result):
    """Q/K/V-composition of every (earlier head, later head) pair, with a random baseline.

    ``scores[kind]`` (``kind`` in ``"q"``, ``"k"``, ``"v"``: those computed) is ``[layer1, head1, layer2, head2]``:
    how much head ``(layer1, head1)``'s output feeds head ``(layer2, head2)``'s query, key or
    value side. Entries with ``layer2 <= layer1`` are NaN (no composition is possible there).
    Every score lies in [0, 1]; ``baseline`` (± ``baseline_std``) is the mean score of random
    matrices of the same shapes, so a score well above it is a sign of real composition.
    """

    scores: dict[str, Float[Tensor, "layer head layer head"]]
    baseline: float  # mean score of random low-rank matrix pairs
    baseline_std: float
    n_samples: int  # random pairs behind the baseline

    def __getitem__(self, kind: str) -> Tensor:
        return self.scores[kind]

    def pairs(self, kind: str) -> list[tuple[int, int, int, int, float]]:
        """``(layer1, head1, layer2, head2, score)`` of every pair with ``layer2 > layer1``, best first."""
        if kind not in self.scores:
            raise invalid("kind", f"one of {', '.join(self.scores)}", kind)
        s = self.scores[kind]
        n_layers, n_heads = s.shape[:2]
        found = [(l1, h1, l2, h2, float(s[l1, h1, l2, h2])) for l1 in range(n_layers) for h1 in range(n_heads)
                 for l2 in range(l1 + 1, n_layers) for h2 in range(n_heads)]
        return sorted(found, key=lambda x: -x[4])

    def summary(self) -> str:
        base = f"random baseline {self.baseline:.3f} ± {self.baseline_std:.3f} ({self.n_samples} samples)"
        n_layers = next(iter(self.scores.values())).shape[0]
        if n_layers < 2:
            return f"no composition: {n_layers} layer; {base}"
        parts = []
        for kind in self.scores:
            l1, h1, l2, h2, v = self.pairs(kind)[0]
            ratio = v / self.baseline if self.baseline > 0 else float("inf")
            parts.append(f"{kind.upper()}-composition: best L{l1}H{h1}→L{l2}H{h2} {v:.3f} ({ratio:.1f}x baseline)")
        return "; ".join(parts) + f"; {base}"

    def to_frame(self) -> pd.DataFrame:
        """One row per pair with ``layer2 > layer1``: its q, k and v scores and the baseline."""
        import pandas as pd

        kinds = list(self.scores)
        rows = [(l1, h1, l2, h2) for l1, h1, l2, h2, _ in sorted(self.pairs(kinds[0]), key=lambda x: x[:4])]
        return pd.DataFrame({
            "layer1": [r[0] for r in rows], "head1": [r[1] for r in rows],
            "layer2": [r[2] for r in rows], "head2": [r[3] for r in rows],
            **{k: [float(self.scores[k][r]) for r in rows] for k in kinds},
            "baseline": [self.baseline] * len(rows),
        })

    def figure(self) -> Any:
        """One heatmap per kind: rows are writing heads (layers 0..L-2), columns reading heads (layers 1..L-1)."""
        import plotly.graph_objects as go

        return go.Figure(self.figure_spec())

    def figure_spec(self) -> dict[str, Any]:
        """:meth:`figure` as a plotly figure dict (:mod:`mechwork.analysis.figspec`), what a page draws."""
        from mechwork.analysis.figspec import colorscale, on, subplots

        kinds = list(self.scores)
        n_layers, n_heads = next(iter(self.scores.values())).shape[:2]
        senders = [(la, h) for la in range(n_layers - 1) for h in range(n_heads)]
        readers = [(la, h) for la in range(1, n_layers) for h in range(n_heads)]
        top = max([float(v) for k in kinds for *_, v in self.pairs(k)] + [self.baseline, 1e-6])
        layout = subplots(1, len(kinds), tuple(f"{k.upper()}-composition" for k in kinds))
        data = []
        for j, kind in enumerate(kinds):
            s = self.scores[kind]
            z = [[None if l2 <= l1 else float(s[l1, h1, l2, h2]) for l2, h2 in readers] for l1, h1 in senders]
            data.append(on(1, j + 1, len(kinds), {
                "coloraxis": "coloraxis", "text": [["" if v is None else f"{v:.2f}" for v in row] for row in z],
                "texttemplate": "%{text}", "x": [f"L{la}H{h}" for la, h in readers],
                "y": [f"L{la}H{h}" for la, h in senders], "z": z, "zmax": top, "zmin": 0, "type": "heatmap"}))
            n = "" if j == 0 else str(j + 1)
            layout[f"xaxis{n}"] |= {"title": {"text": "reading head"}}
            layout[f"yaxis{n}"] |= {"title": {"text": "writing head"}, "autorange": "reversed"}
        layout["coloraxis"] = {"colorbar": {"title": {"text": "score"}}, "colorscale": colorscale("Viridis"),
                               "cmin": 0, "cmax": top}
        title = (f"Composition scores (rows: earlier head writing, columns: later head reading); "
                 f"random baseline {self.baseline:.3f}")
        return {"data": data, "layout": layout | {"title": {"text": title}, "height": 120 + 40 * max(len(senders), 4)}}


def _frobenius(m: Float[Tensor, "*batch rows cols"]) -> Float[Tensor, "*batch"]:
    return torch.linalg.matrix_norm(m, ord="fro")


def _composition(a: Float[Tensor, "h1 d d"], b: Float[Tensor, "h2 d d"]) -> Float[Tensor, "h1 h2"]:
    """``||A_i @ B_j||_F / (||A_i||_F ||B_j||_F)`` for every pair ``(i, j)`` at once."""
    prod = torch.einsum("iab,jbc->ijac", a, b)
    return _frobenius(prod) / (_frobenius(a)[:, None] * _frobenius(b)[None, :])


def _random_baseline(d_model: int, d_head: int, n_samples: int, seed: int) -> Float[Tensor, " n_samples"]:
    """Scores of random pairs ``W_A = L_A R_A^T``, ``W_B = L_B R_B^T`` with ``d_model x d_head`` factors.

    The factors are drawn as ARENA draws them (``nn.init.kaiming_uniform_(W, a=sqrt(5))``:
    uniform on ±1/sqrt(d_head)); the score does not depend on their scale.
    """
    g = torch.Generator().manual_seed(seed)
    bound = 1.0 / d_head**0.5
    f = (torch.rand(4, n_samples, d_model, d_head, generator=g, dtype=torch.float64) * 2 - 1) * bound
    w_a = f[0] @ f[1].transpose(-1, -2)
    w_b = f[2] @ f[3].transpose(-1, -2)
    return (_frobenius(w_a @ w_b) / (_frobenius(w_a) * _frobenius(w_b))).float()


def _head_matrices(model: TransformerBridge) -> dict[str, Tensor]:
    """``W_Q``, ``W_K``, ``W_V`` ``[layer, head, d_model, d_head]`` and ``W_O`` ``[layer, head, d_head, d_model]``.

    TransformerLens's own accessors (``model.W_Q``...), which read any bridge's
    weights (a Hugging Face model's fused or Conv1D ones too); grouped key/value
    heads are repeated so every query head has its own.
    """
    n_heads = int(model.cfg.n_heads)
    out = {}
    for k in ("W_Q", "W_K", "W_V", "W_O"):
        w = getattr(model, k).detach().float()
        out[k] = w.repeat_interleave(n_heads // w.shape[1], dim=1) if w.shape[1] != n_heads else w
    return out


def _kinds(model: TransformerBridge, kinds: Sequence[str] | None) -> tuple[str, ...]:
    """The compositions to score: all three, or V only on a rotary model (its W_QK turns with position)."""
    rotary = getattr(model.cfg, "positional_embedding_type", "standard") == "rotary"
    if kinds is None:
        return ("v",) if rotary else COMPOSITIONS
    if isinstance(kinds, str) or not kinds or any(k not in COMPOSITIONS for k in kinds):
        raise invalid("kinds", f"a non-empty list of {', '.join(COMPOSITIONS)}", kinds)
    if rotary and any(k in ("q", "k") for k in kinds):
        raise ConfigError(f"'kinds' must be ['v'] on a rotary model: its queries and keys turn with position, so "
                          f"W_Q W_K^T is not its QK circuit and Q-/K-composition are undefined (got {list(kinds)})")
    return tuple(dict.fromkeys(kinds))


@torch.no_grad()
def composition_scores(model: TransformerBridge, *, n_samples: int = 300, seed: int = 0,
                       kinds: Sequence[str] | None = None) -> CompositionScores:
    """Q-, K- and V-composition scores between every head and every head of a later layer.

    Row-vector convention (TransformerLens's ``model.W_Q``... on any bridge): head ``h``
    of layer ``l`` has ``W_OV = W_V[l, h] @ W_O[l, h]`` and ``W_QK = W_Q[l, h] @ W_K[l, h].T``
    (both ``d_model x d_model``); it writes ``x @ W_OV`` into the residual stream and scores
    ``x_dest @ W_QK @ x_src.T``. For an earlier head ``h1`` and a later head ``h2``, with
    ``c(A, B) = ||A @ B||_F / (||A||_F ||B||_F)`` (ARENA 1.2's ``get_comp_score``):

    * Q-composition ``c(W_OV(h1), W_QK(h2))``: h1's output read by h2's queries;
    * K-composition ``c(W_OV(h1), W_QK(h2).T)``: h1's output read by h2's keys
      (equivalently ``||W_QK(h2) @ W_OV(h1).T||_F / ...``);
    * V-composition ``c(W_OV(h1), W_OV(h2))``: h1's output read by h2's values.

    ``kinds`` picks some of ``q``, ``k``, ``v`` (default: all three; on a rotary model,
    whose QK circuit depends on position, V only, and asking for Q or K is refused).
    Scores are ``[layer1, head1, layer2, head2]`` tensors, NaN where ``layer2 <= layer1``.
    They ignore normalisation and biases (weights only). The baseline is the mean (and std) of
    ``c(W_A, W_B)`` over ``n_samples`` pairs of random rank-``d_head`` ``d_model x d_model``
    matrices (ARENA's ``generate_single_random_comp_score``), seeded by ``seed``.

    Example::

        >>> import mechwork
        >>> comp = composition_scores(mechwork.load("induction-2l"))
        >>> tuple(comp["k"].shape), bool(comp["k"][1, 0, 0, 0].isnan())
        ((2, 4, 2, 4), True)
    """
    if not isinstance(n_samples, int) or isinstance(n_samples, bool) or n_samples < 2:
        raise invalid("n_samples", "an integer >= 2", n_samples)
    chosen = _kinds(model, kinds)
    w = _head_matrices(model)
    w_ov = w["W_V"] @ w["W_O"]  # layer head d_model d_model
    w_qk = w["W_Q"] @ w["W_K"].transpose(-1, -2)
    n_layers, n_heads, d_model = w_ov.shape[:3]
    d_head = int(w["W_Q"].shape[-1])
    scores = {k: torch.full((n_layers, n_heads, n_layers, n_heads), float("nan")) for k in chosen}
    reader = {"q": lambda la: w_qk[la], "k": lambda la: w_qk[la].transpose(-1, -2), "v": lambda la: w_ov[la]}
    for l1 in range(n_layers):
        for l2 in range(l1 + 1, n_layers):
            for k in chosen:
                scores[k][l1, :, l2] = _composition(w_ov[l1], reader[k](l2)).cpu()
    base = _random_baseline(d_model, d_head, n_samples, seed)
    return CompositionScores(scores, float(base.mean()), float(base.std()), n_samples)
