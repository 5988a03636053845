"""Patching metrics: functions from logits ``[batch, pos, vocab]`` to a number.

Each helper returns a metric (a callable). By default a metric returns the
batch mean, a 0-d tensor, as TransformerLens's patching functions expect;
``per_example=True`` returns the ``[batch]`` vector instead (the patcher then
keeps per-example values and reports their mean).

* :func:`logit_diff` -- logit of the answer minus logit of a wrong token;
* :func:`normalized` -- rescales any metric so that the corrupted run is 0 and
  the clean run is 1 (``normalized(logit_diff(...), clean_logits, corrupted_logits)``
  is the normalised logit difference);
* :func:`correct_prob` -- probability of the answer;
* :func:`loss` -- cross-entropy of the targets, over all or masked positions;
* :func:`accuracy` -- argmax accuracy over all or masked positions (built on
  :func:`mechwork.engine.correct`, the one accuracy helper, re-exported here);
* :func:`split_scores` -- (loss, accuracy) of a modular task's logits on all pairs, the training
  pairs and the held-out ones (built on :func:`mechwork.engine.loss_accuracy`, as training scores a split).

The metrics that read some positions only say which (:class:`Reads`: ``logit_diff`` and
``correct_prob`` their ``pos``, ``loss`` and ``accuracy`` the last position or their ``mask``'s);
:func:`positions_of` reads that back. The fast patching engine then computes the
last layer and the logits at those positions only (the other positions hold the
unpatched run's logits). Wrap a metric of your own in :class:`Reads` to declare
its positions; a metric that does not declare them gets every position.

Example::

    >>> import torch
    >>> from mechwork.analysis.metrics import logit_diff, normalized
    >>> logits = torch.zeros(2, 3, 5); logits[:, -1, 1] = 2.0
    >>> float(logit_diff(torch.tensor([1, 1]), torch.tensor([0, 0]))(logits))
    2.0
    >>> m = normalized(logit_diff(torch.tensor([1, 1]), torch.tensor([0, 0])), logits, torch.zeros(2, 3, 5))
    >>> float(m(logits)), float(m(torch.zeros(2, 3, 5)))
    (1.0, 0.0)
"""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass
from typing import Any

import torch
import torch.nn.functional as F
from torch import Tensor

from mechwork.engine import correct, loss_accuracy
from mechwork.errors import ConfigError

__all__ = ["Metric", "Reads", "accuracy", "correct", "correct_prob", "logit_diff", "loss", "normalized",
           "positions_of", "split_scores"]

Metric = Callable[[Tensor], Tensor]


@dataclass(frozen=True)
class Reads:
    """A metric ``fn`` that reads the logits at ``positions`` only (negative ones count from the end).

    >>> m = Reads(lambda logits: logits[:, -1, 0].mean(), (-1,))
    >>> float(m(torch.ones(2, 3, 4))), positions_of(m, 3)
    (1.0, [2])
    """

    fn: Metric
    positions: tuple[int, ...]

    def __call__(self, logits: Tensor) -> Tensor:
        return self.fn(logits)


def positions_of(metric: Callable[[Tensor], Any], n_pos: int) -> list[int] | None:
    """The positions (ascending, in ``range(n_pos)``) a :class:`Reads` metric reads; None for any other
    metric, or for one that declares no valid position."""
    if not isinstance(metric, Reads):
        return None
    out = sorted({p % n_pos for p in metric.positions if -n_pos <= p < n_pos})
    return out or None


def _masked(fn: Metric, targets: Tensor, mask: Tensor | None) -> Metric:
    """``fn`` declaring the positions it reads: the last one for ``[batch]`` targets, the masked ones."""
    if targets.ndim == 1:
        return Reads(fn, (-1,))
    if mask is None:
        return fn
    return Reads(fn, tuple(int(p) for p in mask.reshape(-1, mask.shape[-1]).any(0).nonzero()[:, 0]))


def _reduce(x: Tensor, per_example: bool) -> Tensor:
    return x if per_example else x.mean()


def _answers(answer: Tensor | int, logits: Tensor) -> Tensor:
    a = torch.as_tensor(answer, device=logits.device)
    return a.expand(logits.shape[0]) if a.ndim == 0 else a


def logit_diff(answer: Tensor | int, wrong: Tensor | int, *, pos: int = -1, per_example: bool = False) -> Metric:
    """logits[b, pos, answer[b]] - logits[b, pos, wrong[b]] (batch mean unless ``per_example``)."""

    def metric(logits: Tensor) -> Tensor:
        lg = logits[:, pos]
        a, w = _answers(answer, logits), _answers(wrong, logits)
        return _reduce(lg.gather(-1, a[:, None])[:, 0] - lg.gather(-1, w[:, None])[:, 0], per_example)

    return Reads(metric, (pos,))


def correct_prob(answer: Tensor | int, *, pos: int = -1, per_example: bool = False) -> Metric:
    """Softmax probability of the answer at ``pos``."""

    def metric(logits: Tensor) -> Tensor:
        p = logits[:, pos].float().softmax(-1)
        return _reduce(p.gather(-1, _answers(answer, logits)[:, None])[:, 0], per_example)

    return Reads(metric, (pos,))


def loss(targets: Tensor, mask: Tensor | None = None, *, per_example: bool = False) -> Metric:
    """Cross-entropy of ``targets`` (``[batch]`` at the last position, or ``[batch, pos]``; ``mask`` selects)."""

    def metric(logits: Tensor) -> Tensor:
        if targets.ndim == 1:
            ce = F.cross_entropy(logits[:, -1].float(), targets.to(logits.device), reduction="none")
            return _reduce(ce, per_example)
        t, m = targets.to(logits.device), None if mask is None else mask.to(logits.device)
        if m is not None:  # the masked positions only (the others would count 0)
            cols = m.reshape(-1, m.shape[-1]).any(0)
            logits, t, m = logits[:, cols], t[:, cols], m[..., cols]
        ce = F.cross_entropy(logits.float().transpose(1, 2), t, reduction="none")
        m = torch.ones_like(ce) if m is None else m.float()
        per = (ce * m).sum(1) / m.sum(1).clamp_min(1)
        return _reduce(per, per_example) if per_example else (ce * m).sum() / m.sum().clamp_min(1)

    return _masked(metric, targets, mask)


def accuracy(targets: Tensor, mask: Tensor | None = None) -> Metric:
    """Argmax accuracy of ``targets`` (``[batch]`` at the last position, or ``[batch, pos]`` under ``mask``)."""

    def metric(logits: Tensor) -> Tensor:
        t = targets.to(logits.device)
        if t.ndim == 1:
            return correct(logits[:, -1], t).mean()
        ok = correct(logits, t)
        m = torch.ones_like(ok) if mask is None else mask.to(ok.device).float()
        return (ok * m).sum() / m.sum().clamp_min(1)

    return _masked(metric, targets, mask)


def normalized(metric: Metric, clean_logits: Tensor, corrupted_logits: Tensor) -> Metric:
    """``metric`` rescaled so the corrupted run gives 0 and the clean run 1."""
    with torch.no_grad():
        hi, lo = metric(clean_logits).float(), metric(corrupted_logits).float()
    gap = hi - lo
    if bool((gap.abs() < 1e-12).any()):
        raise ConfigError("cannot normalise: the metric is the same on the clean and corrupted runs")

    def norm(logits: Tensor) -> Tensor:
        return (metric(logits) - lo) / gap

    return Reads(norm, metric.positions) if isinstance(metric, Reads) else norm


def split_scores(logits: Tensor, task: Any) -> dict[str, tuple[float, float]]:
    """``{"all" | "train" | "test": (loss, accuracy)}`` of last-position logits ``[n_pairs, d_vocab_out]``
    (rows in ``task.tokens`` order) against ``task.labels``, over ``task.train_idx`` and ``task.test_idx``.

    The one place the modular-arithmetic scores are computed (the accuracy result and the
    restricted/excluded losses read them).
    """
    labels = task.labels.to(logits.device)
    out = {"all": loss_accuracy(logits, labels)}
    for name, idx in (("train", task.train_idx), ("test", task.test_idx)):
        i = idx.to(logits.device)
        out[name] = loss_accuracy(logits[i], labels[i])
    return {name: (float(loss), float(acc)) for name, (loss, acc) in out.items()}
