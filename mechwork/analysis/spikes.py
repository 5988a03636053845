"""Grokking and loss spikes read from a training history: plain lists of numbers, no torch.

A run has **grokked** once its test accuracy reaches :data:`GROKKED` (99%). A **loss spike**
(:func:`loss_spikes`) is an episode after grokking in which the test loss rises above both
:data:`SPIKE_FACTOR` (10) times its lowest value since grokking and :data:`SPIKE_FLOOR` (0.01);
consecutive evaluations above that line are one spike. :func:`spike_sentence` says how many spikes
followed grokking and when; :func:`held_out_caveat` warns when the held-out split is too small for
test accuracy to time anything. ``mechwork info`` reads these from a run's ``metrics.jsonl`` or a
preset's stored history without loading a model (:mod:`mechwork.analysis.progress` re-exports them).

Example::

    >>> [s.start for s in loss_spikes([0, 1, 2, 3, 4], [5.0, 1e-3, 1e-4, 0.5, 1e-4], [0.0, 1.0, 1.0, 0.7, 1.0])]
    [3]
    >>> spike_sentence([0, 1, 2], [5.0, 1.0, 0.5], [0.0, 0.5, 0.6])
    'Test accuracy never reached 99%, so there is no grokking to count loss spikes after.'
"""

from __future__ import annotations

import math
from collections.abc import Sequence
from dataclasses import dataclass
from typing import Any

__all__ = ["GROKKED", "SMALL_TEST", "SPIKE_FACTOR", "SPIKE_FLOOR", "Spike", "held_out_caveat", "loss_spikes",
           "spike_sentence"]

GROKKED = 0.99  # test accuracy that counts as generalised (and train accuracy that counts as memorised)
SPIKE_FACTOR = 10.0  # a spike: test loss above this many times its lowest value since grokking ...
SPIKE_FLOOR = 0.01  # ... and above this
SMALL_TEST = 20  # fewer held-out pairs than this: each one is more than 5% of test accuracy


def held_out_caveat(n_test: int) -> str | None:
    """A warning when the held-out split is too small for test accuracy to time grokking or phases, else None.

    >>> print(held_out_caveat(2))  # doctest: +NORMALIZE_WHITESPACE
    Only 2 pairs are held out, so test accuracy moves in steps of 50.0%: the grok step and the phases
    rest on those 2 pairs.
    >>> held_out_caveat(85) is None
    True
    """
    if n_test >= SMALL_TEST:
        return None
    if n_test == 0:
        return "No pair is held out, so test accuracy, the grok step and the phases are not measured."
    return (f"Only {n_test} pair{'s are' if n_test > 1 else ' is'} held out, so test accuracy moves in steps of "
            f"{1 / n_test:.1%}: the grok step and the phases rest on {'those' if n_test > 1 else 'that'} "
            f"{n_test} pair{'s' if n_test > 1 else ''}.")


@dataclass(frozen=True)
class Spike:
    """A loss spike after grokking: evaluations ``start``..``end`` (``end`` is the last one above the line)."""

    start: int
    end: int
    peak_loss: float  # highest test loss in the spike
    min_acc: float  # lowest test accuracy in the spike
    before_loss: float  # test loss at the evaluation just before the spike


def loss_spikes(
    steps: Sequence[float | int], test_loss: Sequence[float | int], test_acc: Sequence[float | int], *,
    factor: float = SPIKE_FACTOR, floor: float = SPIKE_FLOOR,
) -> list[Spike]:
    """Loss spikes after grokking (see the module docstring): one :class:`Spike` per episode."""
    spikes: list[Spike] = []
    low: float | None = None  # lowest test loss since grokking (None: not grokked yet)
    cur: list[Any] | None = None
    prev = math.nan
    for s, loss, acc in zip(steps, test_loss, test_acc, strict=True):
        s, loss, acc = int(s), float(loss), float(acc)
        if not (math.isfinite(loss) and math.isfinite(acc)):
            continue
        if low is None:
            if acc >= GROKKED:
                low = loss
            prev = loss
            continue
        if loss > factor * low and loss > floor:
            if cur is None:
                cur = [s, s, loss, acc, prev]
            else:
                cur[1], cur[2], cur[3] = s, max(cur[2], loss), min(cur[3], acc)
            continue
        if cur is not None:
            spikes.append(Spike(*cur))
            cur = None
        low, prev = min(low, loss), loss
    if cur is not None:
        spikes.append(Spike(*cur))
    return spikes


def spike_sentence(
    steps: Sequence[float | int], test_loss: Sequence[float | int], test_acc: Sequence[float | int]
) -> str:
    """How many loss spikes followed grokking and when, or that there were none, or that the run did not grok."""
    grok = next((int(s) for s, a in zip(steps, test_acc, strict=True) if float(a) >= GROKKED), None)
    if grok is None:
        return f"Test accuracy never reached {GROKKED:.0%}, so there is no grokking to count loss spikes after."
    spikes = loss_spikes(steps, test_loss, test_acc)
    rule = (f"test loss above {SPIKE_FACTOR:g}x its lowest value since grokking and above {SPIKE_FLOOR:g}; "
            f"test accuracy first reached {GROKKED:.0%} at step {grok:,}")
    if not spikes:
        return f"No loss spikes after grokking ({rule})."
    each = "; ".join(
        (f"step {sp.start:,}" if sp.start == sp.end else f"steps {sp.start:,}-{sp.end:,}")
        + f" (test loss from {sp.before_loss:.1e} up to {sp.peak_loss:.1e}, test accuracy down to {sp.min_acc:.1%})"
        for sp in spikes)
    n = len(spikes)
    return f"{n} loss spike{'s' if n > 1 else ''} after grokking ({rule}): {each}."
