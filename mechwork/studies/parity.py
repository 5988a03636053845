"""Multitask sparse parity (Michaud et al. 2023): a toy task whose scaling exponents the quantization model predicts.

Each input is ``n_tasks`` one-hot control bits, which pick a subtask, then
``n_bits`` task bits. Subtask ``i``'s label is the parity of a fixed random
set of ``k`` task bits. Subtask ``i`` is drawn with probability
``p_i ∝ i^-(alpha + 1)``, a Zipf law. The quantization model treats each
subtask as one quantum, learned whole or not at all, in order of frequency.
Then the loss falls as ``L ∝ N^-alpha`` in the parameters and
``L ∝ D^-alpha/(1+alpha)`` in the samples. The task is deterministic, so
``E = 0``.

:func:`parity_point` trains a one-hidden-layer ReLU MLP of a given width on
``n_train`` samples (or on fresh samples at every step when ``n_train`` is
None). It reports the frequency-weighted test loss ``sum_i p_i loss_i`` at
the step with the best validation loss (checked every ``eval_every`` steps,
and more often in the first 200), so small data sets are early-stopped.

Example::

    >>> from mechwork.studies.parity import SparseParity
    >>> task = SparseParity(n_tasks=4, n_bits=8, k=3)
    >>> x, y, t = task.sample(5, seed=0)
    >>> tuple(x.shape), round(float(task.probs().sum()), 6)
    ((5, 12), 1.0)
"""

from __future__ import annotations

import itertools
import math
import time
from dataclasses import dataclass
from functools import cache
from typing import Any

import torch
import torch.nn.functional as F
from jaxtyping import Float, Int
from torch import Tensor, nn

from mechwork.engine import correct
from mechwork.errors import check_counts, invalid
from mechwork.studies.digits import make_mlp

__all__ = ["SparseParity", "param_count", "parity_mlp", "parity_point"]

EARLY_EVALS = frozenset({10, 20, 35, 50, 75, 100, 150, 200})  # small data sets overfit within the first 250 steps


@dataclass(frozen=True)
class SparseParity:
    """``n_tasks`` subtasks, each a ``k``-bit parity of ``n_bits`` bits, drawn by Zipf(``alpha + 1``)."""

    n_tasks: int = 32
    n_bits: int = 12
    k: int = 3
    alpha: float = 0.4
    seed: int = 0  # picks the subtasks' bits

    def __post_init__(self) -> None:
        if not isinstance(self.n_tasks, int) or self.n_tasks < 1:
            raise invalid("n_tasks", "a positive number of subtasks", self.n_tasks)
        if not isinstance(self.n_bits, int) or self.n_bits < 1:
            raise invalid("n_bits", "a positive number of task bits", self.n_bits)
        if not isinstance(self.k, int) or not 1 <= self.k <= self.n_bits:
            raise invalid("k", f"an integer in [1, n_bits={self.n_bits}]", self.k)
        if math.comb(self.n_bits, self.k) < self.n_tasks:
            raise invalid("n_tasks", f"at most C(n_bits, k) = {math.comb(self.n_bits, self.k)} (distinct subsets)",
                          self.n_tasks)
        if not self.alpha > 0:
            raise invalid("alpha", "a positive Zipf exponent", self.alpha)

    @property
    def d_in(self) -> int:
        return self.n_tasks + self.n_bits

    def probs(self) -> Float[Tensor, " n_tasks"]:
        """p_i ∝ i^-(alpha + 1), i = 1..n_tasks."""
        return _probs(self.n_tasks, self.alpha).clone()

    def subsets(self) -> Int[Tensor, "n_tasks k"]:
        """The ``k`` bits whose parity is each subtask's label (seeded)."""
        return _subsets(self.n_tasks, self.n_bits, self.k, self.seed).clone()

    def sample(self, n: int, *, seed: int | None = None, task: int | None = None,
               generator: torch.Generator | None = None,
               ) -> tuple[Float[Tensor, "n d_in"], Int[Tensor, " n"], Int[Tensor, " n"]]:
        """``n`` samples (inputs, labels, subtask ids): subtasks drawn by frequency, or all ``task``."""
        g = generator or torch.Generator().manual_seed(0 if seed is None else seed)
        if task is None:
            tasks = torch.multinomial(_probs(self.n_tasks, self.alpha), n, replacement=True, generator=g)
        else:
            tasks = torch.full((n,), task, dtype=torch.long)
        bits = torch.randint(0, 2, (n, self.n_bits), generator=g)
        labels = bits.gather(1, _subsets(self.n_tasks, self.n_bits, self.k, self.seed)[tasks]).sum(1) % 2
        x = torch.cat([F.one_hot(tasks, self.n_tasks), bits], dim=1).float()
        return x, labels, tasks


@cache
def _probs(n_tasks: int, alpha: float) -> Tensor:
    w = torch.arange(1, n_tasks + 1, dtype=torch.float64) ** -(alpha + 1)
    return (w / w.sum()).float()


@cache
def _subsets(n_tasks: int, n_bits: int, k: int, seed: int) -> Tensor:
    every = torch.tensor(list(itertools.combinations(range(n_bits), k)))  # distinct subsets for distinct subtasks
    return every[torch.randperm(len(every), generator=torch.Generator().manual_seed(seed))[:n_tasks]]


def parity_mlp(d_in: int, width: int, *, seed: int = 0) -> nn.Sequential:
    """``d_in -> width -> 2``, ReLU, PyTorch's default init, seeded."""
    if not isinstance(width, int) or width < 1:
        raise invalid("width", "a positive hidden width", width)
    return make_mlp([d_in, width, 2], act="relu", seed=seed)


def param_count(model: nn.Module) -> int:
    """N: every weight and bias."""
    return sum(p.numel() for p in model.parameters())


@torch.no_grad()
def _per_task_loss(model: nn.Module, x: Float[Tensor, "n d"], y: Int[Tensor, " n"], t: Int[Tensor, " n"],
                   n_tasks: int) -> tuple[Tensor, Tensor]:
    logits = model(x)
    ce = F.cross_entropy(logits, y, reduction="none")
    ok = correct(logits, y)
    count = torch.bincount(t, minlength=n_tasks).clamp_min(1).float()
    return (torch.bincount(t, ce, minlength=n_tasks) / count,
            torch.bincount(t, ok, minlength=n_tasks) / count)


def parity_point(
    *, width: int, n_train: int | None, seed: int = 0, steps: int = 4000, batch_size: int = 1024, lr: float = 1e-2,
    n_tasks: int = 32, n_bits: int = 12, k: int = 3, alpha: float = 0.4, eval_every: int = 250,
    eval_per_task: int = 256,
) -> dict[str, Any]:
    """Train one MLP (a sweep point); the frequency-weighted test loss at the best validation step."""
    check_counts(steps=steps, batch_size=batch_size, eval_every=eval_every, eval_per_task=eval_per_task)
    if n_train is not None and (not isinstance(n_train, int) or n_train < 1):
        raise invalid("n_train", "a positive number of samples or None (fresh samples every step)", n_train)
    if not isinstance(steps, int) or steps < 1:
        raise invalid("steps", "a positive number of steps", steps)
    t0 = time.perf_counter()
    task = SparseParity(n_tasks=n_tasks, n_bits=n_bits, k=k, alpha=alpha, seed=0)
    p = task.probs()
    g = torch.Generator().manual_seed(1000 + seed)
    sets: list[tuple[Tensor, Tensor, Tensor]] = []
    for _ in range(2):  # validation, test: eval_per_task samples of every subtask
        parts = [task.sample(eval_per_task, task=i, generator=g) for i in range(n_tasks)]
        sets.append((torch.cat([q[0] for q in parts]), torch.cat([q[1] for q in parts]),
                     torch.cat([q[2] for q in parts])))
    data = task.sample(n_train, generator=g) if n_train is not None else None
    model = parity_mlp(task.d_in, width, seed=seed)
    opt = torch.optim.Adam(model.parameters(), lr=lr)
    best: tuple[float, int, Tensor, Tensor] = (float("inf"), 0, torch.zeros(n_tasks), torch.zeros(n_tasks))
    for step in range(1, steps + 1):
        if data is None:
            if (step - 1) % eval_every == 0:  # fresh samples, drawn a chunk at a time
                chunk = task.sample(batch_size * min(eval_every, steps - step + 1), generator=g)
            i = (step - 1) % eval_every * batch_size
            x, y = chunk[0][i:i + batch_size], chunk[1][i:i + batch_size]
        else:
            idx = torch.randint(0, len(data[1]), (min(batch_size, len(data[1])),), generator=g)
            x, y = data[0][idx], data[1][idx]
        loss = F.cross_entropy(model(x), y)
        opt.zero_grad(set_to_none=True)
        loss.backward()
        opt.step()
        if step % eval_every == 0 or step == steps or step in EARLY_EVALS:
            val, _ = _per_task_loss(model, *sets[0], n_tasks)
            v = float((p * val).sum())
            if v < best[0]:
                test, acc = _per_task_loss(model, *sets[1], n_tasks)
                best = (v, step, test, acc)
    _, best_step, test, acc = best
    return {"N": param_count(model), "D": n_train, "seen": steps * batch_size, "width": width,
            "test_loss": float((p * test).sum()), "best_step": best_step, "n_learned": int((acc >= 0.9).sum()),
            "task_loss": [round(float(v), 5) for v in test], "seconds": time.perf_counter() - t0}
