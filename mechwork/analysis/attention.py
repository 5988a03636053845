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

* :func:`composition_scores` reads the weights alone (no inputs) and scores how
  much each earlier head's output feeds each later head's query, key or value
  side: Q-, K- and V-composition (Elhage et al. 2021, "A Mathematical Framework
  for Transformer Circuits"; the ARENA 1.2 formulas), with the score that random
  matrices of the same shapes get as a baseline.

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

from mechwork.analysis.patching import check_tokens
from mechwork.errors import ConfigError, invalid
from mechwork.hooks import hook_name, token_labels
from mechwork.prompts import has_tokenizer
from mechwork.results import Result

if TYPE_CHECKING:  # pragma: no cover
    import pandas as pd
    from transformer_lens.model_bridge import TransformerBridge

__all__ = ["COMPOSITIONS", "DETECTORS", "AttentionPatterns", "CompositionScores", "HeadScores", "attention_patterns",
           "composition_scores", "head_detectors", "repeated_tokens"]

DETECTORS = ("previous_token", "induction", "duplicate_token")
COMPOSITIONS = ("q", "k", "v")


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
        from plotly.subplots import make_subplots

        names = list(self.scores)
        fig = make_subplots(rows=1, cols=len(names), subplot_titles=[n.replace("_", "-") for n in names])
        for j, name in enumerate(names):
            s = self.scores[name]
            fig.add_heatmap(z=s.tolist(), x=[f"H{h}" for h in range(s.shape[1])],
                            y=[f"L{la}" for la in range(s.shape[0])], zmin=0, zmax=1, coloraxis="coloraxis",
                            text=[[f"{float(v):.2f}" for v in row] for row in s], texttemplate="%{text}",
                            row=1, col=j + 1)
        fig.update_yaxes(autorange="reversed", title_text="layer")
        fig.update_xaxes(title_text="head")
        return fig.update_layout(title=f"Head detector scores (repeated random halves of {self.half} tokens)",
                                 coloraxis={"colorscale": "Viridis", "cmin": 0, "cmax": 1,
                                            "colorbar": {"title": {"text": "score"}}}, height=320)


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


# -- composition --------------------------------------------------------------
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
        from plotly.subplots import make_subplots

        kinds = list(self.scores)
        n_layers, n_heads = next(iter(self.scores.values())).shape[:2]
        senders = [(la, h) for la in range(n_layers - 1) for h in range(n_heads)]
        readers = [(la, h) for la in range(1, n_layers) for h in range(n_heads)]
        top = max([float(v) for k in kinds for *_, v in self.pairs(k)] + [self.baseline, 1e-6])
        fig = make_subplots(rows=1, cols=len(kinds), subplot_titles=[f"{k.upper()}-composition" for k in kinds])
        for j, kind in enumerate(kinds):
            s = self.scores[kind]
            z = [[None if l2 <= l1 else float(s[l1, h1, l2, h2]) for l2, h2 in readers] for l1, h1 in senders]
            fig.add_heatmap(z=z, x=[f"L{la}H{h}" for la, h in readers], y=[f"L{la}H{h}" for la, h in senders],
                            zmin=0, zmax=top, coloraxis="coloraxis",
                            text=[["" if v is None else f"{v:.2f}" for v in row] for row in z],
                            texttemplate="%{text}", row=1, col=j + 1)
        fig.update_yaxes(autorange="reversed", title_text="writing head")
        fig.update_xaxes(title_text="reading head")
        return fig.update_layout(
            title=f"Composition scores (rows: earlier head writing, columns: later head reading); "
                  f"random baseline {self.baseline:.3f}",
            coloraxis={"colorscale": "Viridis", "cmin": 0, "cmax": top, "colorbar": {"title": {"text": "score"}}},
            height=120 + 40 * max(len(senders), 4))


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
