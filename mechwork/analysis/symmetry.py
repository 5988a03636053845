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
logits at the last position.

Example::

    >>> import mechwork
    >>> from mechwork.analysis.symmetry import distance_irrelevance, gradient_symmetricity
    >>> model, task = mechwork.load("modadd-113"), mechwork.preset("modadd-113").task
    >>> 0.0 <= gradient_symmetricity(model, task, n=20) <= 1.0
    True
"""

from __future__ import annotations

from typing import TYPE_CHECKING, Any

import torch
import torch.nn.functional as F

from mechwork.errors import invalid

if TYPE_CHECKING:  # pragma: no cover
    from transformer_lens.model_bridge import TransformerBridge

    from mechwork.tasks import Task

__all__ = ["clock_pizza_point", "distance_irrelevance", "distance_irrelevance_of", "gradient_symmetricity"]


def gradient_symmetricity(model: TransformerBridge, task: Task, *, n: int = 100, seed: int = 0) -> float:
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
    return float(F.cosine_similarity(grad[:, 0], grad[:, 1], dim=-1).mean())


@torch.no_grad()
def distance_irrelevance(model: TransformerBridge, task: Task) -> float:
    """mean_d std_a L[a, a + d] / std L, with L the correct-answer logit over all pairs."""
    from mechwork.analysis.fourier import check_task, grid_run

    mt = check_task(model, task, "distance_irrelevance")
    logits, _ = grid_run(model, mt, hook=None)
    p = mt.p
    return distance_irrelevance_of(logits.gather(1, mt.labels[:, None])[:, 0].reshape(p, p))


def distance_irrelevance_of(correct: torch.Tensor) -> float:
    """The measure on a ``[p, p]`` matrix of correct-answer logits ``L[a, b]``."""
    p = correct.shape[0]
    if correct.ndim != 2 or correct.shape[1] != p:
        raise invalid("correct", "a square [p, p] matrix", tuple(correct.shape))
    a = torch.arange(p)
    per_d = torch.stack([correct[a, (a + d) % p].std() for d in range(p)])
    return float(per_d.mean() / correct.std())


def clock_pizza_point(
    *, attn_rate: float, seed: int, p: int = 59, train_frac: float = 0.8, steps: int = 3000, lr: float = 3e-3,
    weight_decay: float = 2.0,
) -> dict[str, Any]:
    """Train one model at ``attn_rate`` (a sweep point) and measure both: Zhong et al.'s set-up, shortened."""
    from mechwork.models import ToyConfig
    from mechwork.tasks import ModularArithmetic
    from mechwork.training import TrainConfig, train

    task = ModularArithmetic(p=p, op="add", train_frac=train_frac, seed=seed)
    cfg = ToyConfig.for_task(task, seed=seed, attn_rate=attn_rate)
    res = train(task, cfg, TrainConfig(lr=lr, weight_decay=weight_decay, steps=steps, eval_every=100, seed=seed),
                quiet=True, device="cpu")
    last = res.rows[-1]
    return {"gradient_symmetricity": gradient_symmetricity(res.model, task, seed=seed),
            "distance_irrelevance": distance_irrelevance(res.model, task),
            "test_acc": float(last["test_acc"]), "train_acc": float(last["train_acc"]),
            "grokked": res.first_step("test_acc", 0.99)}
