"""Clock or pizza: Zhong et al.'s (2023) two measures that tell the algorithms apart.

* **Gradient symmetricity** -- for a triple ``(a, b, c)``, the cosine similarity
  between the gradient of the output logit ``c`` with respect to the embedding
  of ``a`` and with respect to the embedding of ``b``; averaged over sampled
  triples (here ``c = (a + b) mod p``, the answer). Pizza, whose logits depend
  on ``E_a + E_b``, scores about 0.99; clock, which multiplies the two inputs
  through attention, about 0.5.
* **Distance irrelevance** -- with ``L[a, b]`` the logit of the correct answer,
  the mean over distances ``d`` of the standard deviation of ``L[a, a + d]``,
  divided by the standard deviation of all of ``L``. Pizza's correct logit
  depends on the distance ``a - b`` (low score, about 0.3); clock's does not
  (about 0.85).

Both read the model through its hooks: the embeddings at ``hook_embed``, the
logits at the last position. Each returns a result whose ``value`` is the
measure (``float(result)`` too), with the per-pair or per-distance numbers
behind it.

Example::

    >>> import mechwork
    >>> from mechwork.analysis.symmetry import distance_irrelevance, gradient_symmetricity
    >>> model, task = mechwork.load("modadd-113"), mechwork.preset("modadd-113").task
    >>> 0.0 <= gradient_symmetricity(model, task, n=20).value <= 1.0
    True
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import TYPE_CHECKING, Any

import torch
import torch.nn.functional as F
from jaxtyping import Float
from torch import Tensor

from mechwork.errors import invalid
from mechwork.results import Result

if TYPE_CHECKING:  # pragma: no cover
    import pandas as pd
    from transformer_lens.model_bridge import TransformerBridge

__all__ = ["DistanceIrrelevance", "GradientSymmetricity", "distance_irrelevance", "distance_irrelevance_of",
           "gradient_symmetricity"]


@dataclass(frozen=True)
class GradientSymmetricity(Result):
    """Mean cosine similarity of d logit_c / d E_a and d logit_c / d E_b (pizza about 0.99, clock about 0.5)."""

    value: float
    per_pair: Float[Tensor, " n"]  # the cosine similarity of each sampled pair
    seed: int

    def __float__(self) -> float:
        return self.value

    def summary(self) -> str:
        return (f"gradient symmetricity {self.value:.3f} over {len(self.per_pair)} sampled pairs "
                "(pizza about 0.99, clock about 0.5)")

    def to_frame(self) -> pd.DataFrame:
        import pandas as pd

        return pd.DataFrame({"pair": range(len(self.per_pair)), "cosine": self.per_pair.tolist()})

    def figure(self) -> Any:
        import plotly.graph_objects as go

        fig = go.Figure(go.Histogram(x=self.per_pair.tolist(), nbinsx=40))
        return fig.update_layout(title=self.summary(), xaxis_title="cosine of the two embedding gradients",
                                 yaxis_title="sampled pairs", height=360)


@dataclass(frozen=True)
class DistanceIrrelevance(Result):
    """mean_d std_a L[a, a + d] / std L (pizza about 0.3, clock about 0.85)."""

    value: float
    per_distance: Float[Tensor, " p"]  # std over a of L[a, a + d], for each distance d
    overall_std: float  # std of every L[a, b]

    def __float__(self) -> float:
        return self.value

    def summary(self) -> str:
        return (f"distance irrelevance {self.value:.3f} over {len(self.per_distance)} distances "
                "(pizza about 0.3, clock about 0.85)")

    def to_frame(self) -> pd.DataFrame:
        import pandas as pd

        return pd.DataFrame({"distance": range(len(self.per_distance)), "std": self.per_distance.tolist()})

    def figure(self) -> Any:
        import plotly.graph_objects as go

        fig = go.Figure(go.Bar(x=list(range(len(self.per_distance))), y=self.per_distance.tolist()))
        fig.add_hline(y=self.overall_std, line_dash="dot", annotation_text="std of all logits")
        return fig.update_layout(title=self.summary(), xaxis_title="distance d = b - a (mod p)",
                                 yaxis_title="std of the correct logit", height=360)


def gradient_symmetricity(
    model: TransformerBridge, task: object, *, n: int = 100, seed: int = 0
) -> GradientSymmetricity:
    """Mean cosine similarity of d logit_c / d E_a and d logit_c / d E_b over ``n`` sampled pairs."""
    from mechwork.analysis.fourier import check_task

    mt = check_task(model, task, "gradient_symmetricity")
    if not isinstance(n, int) or n < 1:
        raise invalid("n", "a positive number of sampled pairs", n)
    g = torch.Generator().manual_seed(seed)
    idx = torch.randint(0, mt.n_pairs, (n,), generator=g)
    device = next(model.parameters()).device
    toks, labels = mt.tokens[idx].to(device), mt.labels[idx].to(device)
    kept: dict[str, Any] = {}

    def grab(act: torch.Tensor, hook: Any = None) -> torch.Tensor:
        act = act.detach().requires_grad_(True)
        kept["embed"] = act
        return act

    with torch.enable_grad():
        logits = model.run_with_hooks(toks, fwd_hooks=[("hook_embed", grab)])[:, -1]
        picked = logits.gather(1, labels[:, None]).sum()
        (grad,) = torch.autograd.grad(picked, kept["embed"])
    cos = F.cosine_similarity(grad[:, 0], grad[:, 1], dim=-1)
    return GradientSymmetricity(float(cos.mean()), cos.detach().float().cpu(), seed)


@torch.no_grad()
def distance_irrelevance(model: TransformerBridge, task: object) -> DistanceIrrelevance:
    """mean_d std_a L[a, a + d] / std L, with L the correct-answer logit over all pairs."""
    from mechwork.analysis.fourier import check_task, grid_run

    mt = check_task(model, task, "distance_irrelevance")
    logits, _ = grid_run(model, mt, hook=None)
    p = mt.p
    return distance_irrelevance_of(logits.gather(1, mt.labels[:, None])[:, 0].reshape(p, p))


def distance_irrelevance_of(correct: Tensor) -> DistanceIrrelevance:  # checked here: a square [p, p] matrix
    """:func:`distance_irrelevance` of a ``[p, p]`` matrix of correct-answer logits ``L[a, b]``."""
    p = correct.shape[0]
    if correct.ndim != 2 or correct.shape[1] != p:
        raise invalid("correct", "a square [p, p] matrix", tuple(correct.shape))
    a = torch.arange(p)
    per_d = torch.stack([correct[a, (a + d) % p].std() for d in range(p)])
    overall = correct.std()
    return DistanceIrrelevance(float(per_d.mean() / overall), per_d.float().cpu(), float(overall))
