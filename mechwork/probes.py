"""Standard clean/corrupted inputs and a metric for each task: the default patching experiment.

* **Modular arithmetic** -- ``n`` random pairs ``(a, b)``; the corrupted input
  changes ``b`` (to ``b + shift``), so the answer moves; the metric is the
  logit difference between the clean answer and the corrupted one at ``=``.
* **Induction** -- ``n`` sequences ``[r, r]`` of two equal random halves; the
  corrupted input draws a fresh first half, so nothing in the second half can
  be copied; the metric is the logit of the right next token against the mean
  logit, averaged over the second half (linear in the logits, which also
  suits attribution patching).

Example::

    >>> import mechwork
    >>> from mechwork.probes import standard_probe
    >>> probe = standard_probe(mechwork.preset("modadd-113").task, n=4)
    >>> tuple(probe.clean.shape), probe.clean.shape == probe.corrupted.shape
    ((4, 3), True)
"""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass

import torch
from torch import Tensor

from mechwork.analysis.metrics import logit_diff
from mechwork.errors import invalid
from mechwork.limits import check_fits, check_seed, probe_bytes
from mechwork.tasks import InductionTask, ModularArithmetic, Task

__all__ = ["Probe", "standard_probe"]


@dataclass(frozen=True)
class Probe:
    clean: Tensor
    corrupted: Tensor
    metric: Callable[[Tensor], Tensor]
    description: str


def standard_probe(task: Task, n: int = 8, seed: int = 0, *, shift: int = 1, half: int | None = None) -> Probe:
    """The default clean/corrupted pair and metric for ``task`` (see the module docstring)."""
    if not isinstance(n, int) or n < 1:
        raise invalid("n", "a positive number of prompts", n)
    check_seed(seed)
    n_pos = 3 if isinstance(task, ModularArithmetic) else 2 * (task.seq_len // 2 if half is None else half)
    check_fits(f"{n:,} standard prompts of {n_pos} tokens", probe_bytes(n, n_pos))
    g = torch.Generator().manual_seed(seed)
    if isinstance(task, ModularArithmetic):
        idx = torch.randint(0, task.n_pairs, (n,), generator=g)
        clean = task.tokens[idx]
        corrupted = clean.clone()
        corrupted[:, 1] = (clean[:, 1] + shift) % task.p
        right = task.apply(clean[:, 0], clean[:, 1])
        wrong = task.apply(corrupted[:, 0], corrupted[:, 1])
        return Probe(clean, corrupted, logit_diff(right, wrong),
                     f"{n} random pairs (a, b); corrupted b -> b + {shift}; metric: logit(answer) - "
                     f"logit(corrupted answer) at '='")
    if isinstance(task, InductionTask):
        h = task.seq_len // 2 if half is None else half
        if not 2 <= h <= task.seq_len // 2:
            raise invalid("half", f"an integer in [2, {task.seq_len // 2}]", h)
        first = torch.randint(0, task.d_vocab, (n, h), generator=g)
        clean = torch.cat([first, first], 1)
        corrupted = torch.cat([torch.randint(0, task.d_vocab, (n, h), generator=g), first], 1)
        target = clean[:, h + 1:, None]

        def metric(logits: Tensor) -> Tensor:
            lg = logits[:, h:-1]
            return (lg.gather(-1, target.to(lg.device))[..., 0] - lg.mean(-1)).mean()

        return Probe(clean, corrupted, metric,
                     f"{n} sequences [r, r] of two equal halves of {h} tokens; corrupted: a fresh first half; "
                     "metric: logit of the right next token minus the mean logit, over the second half")
    raise invalid("task", "a modular-arithmetic or induction task", type(task).__name__)  # pragma: no cover
