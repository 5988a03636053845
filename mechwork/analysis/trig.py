"""Trig-identity logits: how a grokked model's logits are built from key frequencies.

Nanda et al. (2023) show the logits of a grokked ``(a + b) mod p`` model are
approximately ``sum_k alpha_k cos(w_k (a + b - c))`` over the key frequencies,
``w_k = 2 pi k / p``. Two views of that claim:

* :func:`logit_trig_fit` -- least-squares fit of those terms to the logits;
  the fraction of variance they explain. The logits are centred over c for
  each input (softmax ignores that shift) and over inputs for each c (a
  per-output bias, which the restricted loss also adds back); ``fve_raw``
  keeps the per-output bias in the variance.
* :func:`restricted_excluded` -- each output's logit, as a function on the
  (a, b) grid, split by orthogonal projection into the span of
  ``cos(w_k (a + b))`` and ``sin(w_k (a + b))`` for the key k ("restricted") and
  its complement ("excluded"). Restricted + excluded = the logits exactly.
  The restricted loss is over all p^2 pairs, with the excluded part's mean
  over inputs added back (a per-output bias; the ``bias_correction`` of the
  reference code); the excluded loss is over the training pairs (a model that
  still memorises keeps a low excluded loss).

For ``op="sub"`` every ``a + b`` reads ``a - b``. Each function that runs the
model has a counterpart on ready-made logits, named with ``_of``
(:func:`logit_trig_fit_of`, :func:`restricted_excluded_of`; also
:func:`split_logits`), which the progress measures and dashboards reuse.

Example::

    >>> import mechwork
    >>> from mechwork.analysis.trig import logit_trig_fit
    >>> model, task = mechwork.load("modadd-113"), mechwork.preset("modadd-113").task
    >>> logit_trig_fit(model, task).fve > 0.8
    True
"""

from __future__ import annotations

import math
from dataclasses import dataclass
from typing import TYPE_CHECKING, Any

import torch
import torch.nn.functional as F
from jaxtyping import Float
from torch import Tensor

from mechwork.analysis.fourier import ModularTask, check_task, grid_run, key_frequencies
from mechwork.analysis.metrics import split_scores
from mechwork.errors import invalid
from mechwork.results import Result

if TYPE_CHECKING:  # pragma: no cover
    import pandas as pd
    from transformer_lens.model_bridge import TransformerBridge

__all__ = [
    "RestrictedExcluded",
    "TrigFit",
    "logit_trig_fit",
    "logit_trig_fit_of",
    "restricted_excluded",
    "restricted_excluded_of",
    "restricted_loss",
    "split_logits",
    "trig_directions",
]


def _sum_grid(task: ModularTask) -> Tensor:
    a, b = task.tokens[:, 0], task.tokens[:, 1]
    return (a + b) % task.p if task.op == "add" else (a - b) % task.p


def _check_freqs(freqs: list[int], p: int) -> list[int]:
    bad = [k for k in freqs if not isinstance(k, int) or not 1 <= k <= (p - 1) // 2]
    if bad:
        raise invalid("freqs", f"frequencies in 1..{(p - 1) // 2}", bad)
    return sorted(set(freqs))


def trig_directions(task: ModularTask, freqs: list[int]) -> Float[Tensor, "dirs n_pairs"]:
    """Orthonormal directions cos/sin(w_k (a +- b)) over the grid of pairs, two per frequency."""
    freqs = _check_freqs(freqs, task.p)
    s = _sum_grid(task).double()
    rows = []
    for k in freqs:
        w = 2 * math.pi * k / task.p
        for v in (torch.cos(w * s), torch.sin(w * s)):
            rows.append(v / v.norm())
    if not rows:
        return torch.zeros(0, task.n_pairs)
    return torch.stack(rows).float()


def split_logits(
    logits: Float[Tensor, "n_pairs d_vocab_out"], task: ModularTask, freqs: list[int]
) -> tuple[Float[Tensor, "n_pairs d_vocab_out"], Float[Tensor, "n_pairs d_vocab_out"]]:
    """(restricted, excluded): projection onto the key-frequency directions and its complement."""
    u = trig_directions(task, freqs).to(logits)
    restricted = u.T @ (u @ logits)
    return restricted, logits - restricted


@dataclass(frozen=True)
class RestrictedExcluded(Result):
    """Losses of the full, restricted and excluded logits (Nanda et al.'s progress measures)."""

    freqs: list[int]
    full_loss: float  # all p^2 pairs
    train_loss: float
    test_loss: float
    restricted_loss: float  # restricted logits (+ the excluded part's mean per output), all p^2 pairs
    excluded_loss: float  # excluded logits, training pairs

    def summary(self) -> str:
        return (
            f"key frequencies {self.freqs}: restricted loss {self.restricted_loss:.4g} (all pairs; test loss "
            f"{self.test_loss:.4g}), excluded loss {self.excluded_loss:.4g} (train pairs; train loss "
            f"{self.train_loss:.4g})"
        )

    def to_frame(self) -> pd.DataFrame:
        import pandas as pd

        names = ["full_loss", "train_loss", "test_loss", "restricted_loss", "excluded_loss"]
        return pd.DataFrame({"measure": names, "value": [getattr(self, n) for n in names]})

    def figure(self) -> Any:
        import plotly.graph_objects as go

        df = self.to_frame()
        fig = go.Figure(go.Bar(x=df["measure"].tolist(), y=df["value"].tolist()))
        fig.update_yaxes(type="log")
        return fig.update_layout(title=f"Restricted vs excluded loss, key frequencies {self.freqs}",
                                 xaxis_title="measure", yaxis_title="cross-entropy loss (log scale)")


def restricted_loss(
    restricted: Float[Tensor, "n d_vocab_out"], excluded: Float[Tensor, "n d_vocab_out"], labels: Tensor
) -> float:
    """Cross-entropy of the restricted logits plus the excluded part's per-output mean (the bias)."""
    return float(F.cross_entropy(restricted + excluded.mean(0, keepdim=True), labels))


def restricted_excluded_of(
    logits: Float[Tensor, "n_pairs d_vocab_out"], task: ModularTask, freqs: list[int]
) -> RestrictedExcluded:
    """:func:`restricted_excluded` of last-position logits already computed (rows ordered as ``task.tokens``)."""
    labels = task.labels.to(logits.device)
    restricted, excluded = split_logits(logits, task, freqs)
    tr = task.train_idx.to(logits.device)
    scores = split_scores(logits, task)
    return RestrictedExcluded(
        _check_freqs(freqs, task.p),
        scores["all"][0],
        scores["train"][0],
        scores["test"][0],
        restricted_loss(restricted, excluded, labels),
        float(F.cross_entropy(excluded[tr], labels[tr])),
    )


def restricted_excluded(
    model: TransformerBridge, task: object, freqs: list[int] | None = None
) -> RestrictedExcluded:
    """Restricted and excluded loss of ``model`` (key frequencies detected when not given)."""
    mt = check_task(model, task, "restricted_excluded")
    freqs = key_frequencies(model, mt).freqs if freqs is None else freqs
    logits, _ = grid_run(model, mt, hook=None)
    return restricted_excluded_of(logits, mt, freqs)


@dataclass(frozen=True)
class TrigFit(Result):
    """Least-squares fit of the logits by sum_k alpha_k cos(w_k (a +- b - c))."""

    freqs: list[int]
    coef: Float[Tensor, " freq"]  # alpha_k
    fve_per_freq: Float[Tensor, " freq"]  # variance explained by each term (they are orthogonal)
    fve: float  # fraction of the logit variance explained (per-input and per-output means removed)
    fve_raw: float  # the same with the per-output bias left in the variance

    def summary(self) -> str:
        parts = ", ".join(f"k={k}: {float(v):.1%}" for k, v in zip(self.freqs, self.fve_per_freq, strict=True))
        return (f"cos(w_k(a+b-c)) terms explain {self.fve:.1%} of logit variance ({parts}); "
                f"{self.fve_raw:.1%} counting the per-output bias")

    def to_frame(self) -> pd.DataFrame:
        import pandas as pd

        return pd.DataFrame({"freq": self.freqs, "alpha": self.coef, "fve": self.fve_per_freq})

    def figure(self) -> Any:
        import plotly.graph_objects as go

        fig = go.Figure(go.Bar(x=[str(k) for k in self.freqs], y=self.fve_per_freq.tolist()))
        return fig.update_layout(title=f"Logit variance explained by cos(w_k(a+b-c)): {self.fve:.1%} in all",
                                 xaxis_title="key frequency k", yaxis_title="fraction of variance")


def logit_trig_fit_of(
    logits: Float[Tensor, "n_pairs d_vocab_out"], task: ModularTask, freqs: list[int]
) -> TrigFit:
    """:func:`logit_trig_fit` of last-position logits already computed (rows ordered as ``task.tokens``)."""
    freqs = _check_freqs(freqs, task.p)
    raw = logits.double()
    raw = raw - raw.mean(dim=1, keepdim=True)  # softmax ignores a per-input shift
    x = raw - raw.mean(dim=0, keepdim=True)  # the per-output bias
    s = _sum_grid(task).double()[:, None]
    c = torch.arange(task.d_vocab_out, dtype=torch.float64)[None, :]
    feats = torch.stack([torch.cos(2 * math.pi * k * (s - c) / task.p) for k in freqs])  # (K, n, p)
    flat = feats.reshape(len(freqs), -1)  # matrix products in float64 (einsum's loops took 0.3 s on p=113)
    gram = flat @ flat.T
    rhs = flat @ x.reshape(-1)
    coef = torch.linalg.solve(gram, rhs)
    total = x.pow(2).sum()
    fitted = (coef @ flat).reshape(x.shape)
    per = coef.pow(2) * torch.diagonal(gram) / total
    fve = 1 - (x - fitted).pow(2).sum() / total
    fve_raw = 1 - (raw - fitted).pow(2).sum() / raw.pow(2).sum()
    return TrigFit(freqs, coef.float(), per.float(), float(fve), float(fve_raw))


def logit_trig_fit(model: TransformerBridge, task: object, freqs: list[int] | None = None) -> TrigFit:
    """Fraction of the logit variance explained by the key frequencies' cos(w_k(a+b-c)) terms."""
    mt = check_task(model, task, "logit_trig_fit")
    freqs = key_frequencies(model, mt).freqs if freqs is None else freqs
    logits, _ = grid_run(model, mt, hook=None)
    return logit_trig_fit_of(logits, mt, freqs)
