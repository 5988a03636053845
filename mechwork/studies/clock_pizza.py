"""Clock or pizza as a sweep point: train one modular-addition model at an attention rate, then measure it.

:func:`clock_pizza_point` trains Zhong et al.'s (2023) set-up, shortened, at
one ``attn_rate`` (0: constant attention, the pizza regime; 1: learned
attention, the clock regime) and measures the trained model with the two
analyses of :mod:`mechwork.analysis.symmetry`: gradient symmetricity and
distance irrelevance. ``experiments/clock_pizza.py`` sweeps it over rates and
seeds.

Example::

    >>> from mechwork.studies.clock_pizza import clock_pizza_point
    >>> r = clock_pizza_point(attn_rate=0.0, seed=0, p=13, steps=20)
    >>> 0.0 <= r["gradient_symmetricity"] <= 1.0 and r["grokked"] is None
    True
"""

from __future__ import annotations

from typing import Any

from mechwork.analysis.symmetry import distance_irrelevance, gradient_symmetricity
from mechwork.models import ToyConfig
from mechwork.tasks import ModularArithmetic
from mechwork.training import TrainConfig, train

__all__ = ["clock_pizza_point"]


def clock_pizza_point(
    *, attn_rate: float, seed: int, p: int = 59, train_frac: float = 0.8, steps: int = 3000, lr: float = 3e-3,
    weight_decay: float = 2.0,
) -> dict[str, Any]:
    """Train one model at ``attn_rate`` (a sweep point) and measure both: Zhong et al.'s set-up, shortened."""
    task = ModularArithmetic(p=p, op="add", train_frac=train_frac, seed=seed)
    cfg = ToyConfig.for_task(task, seed=seed, attn_rate=attn_rate)
    res = train(task, cfg, TrainConfig(lr=lr, weight_decay=weight_decay, steps=steps, eval_every=100, seed=seed),
                quiet=True, device="cpu")
    last = res.rows[-1]
    return {"gradient_symmetricity": float(gradient_symmetricity(res.model, task, seed=seed)),
            "distance_irrelevance": float(distance_irrelevance(res.model, task)),
            "test_acc": float(last["test_acc"]), "train_acc": float(last["train_acc"]),
            "grokked": res.first_step("test_acc", 0.99)}
