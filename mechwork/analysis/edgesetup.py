"""The setup every edge score and circuit shares: the checked prompt pair, the edge runner, the base run, the
writes a patched edge reads, and the metric at both ends of the clean-to-corrupted gap.

:func:`setup` checks the arguments (one line each), builds the runner (:func:`mechwork.analysis.edgerun.runner`)
and returns a :class:`Setup`: the base run's tokens and each sender's write in it, the ``replacement`` writes a
patched edge reads (denoising: the clean writes into the corrupted run; noising: the corrupted writes, their mean
over ``mean_tokens``, or zero, into the clean run), the metric of the clean run and of the bottom of the gap (the
corrupted run, or without corrupted prompts the clean run with every edge ablated), and how many copies fit one
forward pass. :func:`metric_value` reads a metric in float64. :mod:`mechwork.analysis.edges` scores edges with
it; :mod:`mechwork.analysis.circuits` measures faithfulness with its noising setup.

Example::

    >>> import mechwork
    >>> from mechwork.analysis.edgesetup import setup
    >>> from mechwork.tasks import standard_probe
    >>> model = mechwork.load("induction-2l", device="cpu")
    >>> pr = standard_probe(mechwork.preset("induction-2l").task, n=4)
    >>> s = setup(model, pr.clean, pr.corrupted, pr.metric, None, "mean", False, None, 512)
    >>> s.direction, tuple(s.replacement.shape), s.clean_value > s.corrupted_value
    ('noising', (9, 1, 48, 64), True)
"""

from __future__ import annotations

import dataclasses
from collections.abc import Callable
from dataclasses import dataclass
from typing import Any

import torch
from torch import Tensor

from mechwork.analysis.checks import check_tokens, evaluate_metric
from mechwork.analysis.edgerun import EdgeRunner
from mechwork.analysis.edgerun import runner as make_runner
from mechwork.errors import ConfigError, invalid
from mechwork.graph import Graph
from mechwork.hooks import check_eval
from mechwork.limits import finite_positive
from mechwork.prompts import Prompts

__all__ = ["ABLATIONS", "DIRECTIONS", "MEMORY_MB", "Setup", "check_pair", "metric_value", "resolve_direction",
           "setup"]

DIRECTIONS = ("denoising", "noising")
ABLATIONS = ("corrupted", "mean", "zero")
MEMORY_MB = 512.0  # default budget of one batched forward pass (copies per pass = budget / runner.copy_bytes)


@dataclass(frozen=True)
class Setup:
    """The runner, the base run's tokens and writes, what a patched edge reads, and the metric at both ends."""

    runner: EdgeRunner
    tokens: Tensor  # the base run's input
    base: Tensor  # [sender, batch, pos, d_model]: each sender's write in the base run
    replacement: Tensor  # [sender, batch or 1, pos, d_model]: what a patched edge reads
    metric: Callable[[Tensor], Any]
    base_value: float
    clean_value: float
    corrupted_value: float
    direction: str
    ablation: str
    cap: int  # copies per forward pass

    @property
    def delta(self) -> Tensor:
        return self.replacement - self.base

    def graph(self, per_position: bool) -> Graph:
        return dataclasses.replace(self.runner.graph, n_pos=int(self.tokens.shape[1]) if per_position else None)


def resolve_direction(direction: Any, ablation: Any) -> str:
    """``direction`` checked against ``ablation`` (None: denoising for corrupted ablation, else noising)."""
    if ablation not in ABLATIONS:
        raise invalid("ablation", ", ".join(ABLATIONS), ablation)
    if direction is None:
        return "denoising" if ablation == "corrupted" else "noising"
    if direction not in DIRECTIONS:
        raise invalid("direction", " or ".join(DIRECTIONS), direction)
    if direction == "denoising" and ablation != "corrupted":
        raise ConfigError(f"ablation={ablation!r} scores an edge by ablating it in the clean run: use "
                          "direction='noising' (or None); denoising patches the corrupted run toward clean")
    return str(direction)


def check_pair(model: Any, clean: Any, corrupted: Any, ablation: str, per_position: Any, mean_tokens: Any,
               operation: str = "edge scoring") -> None:
    if not isinstance(per_position, bool):
        raise invalid("per_position", "True or False", per_position)
    check_eval(model, operation)
    check_tokens(model, clean, "clean")
    if corrupted is None:
        if ablation == "corrupted":
            raise ConfigError("ablation='corrupted' needs corrupted prompts (or ablate by 'mean' or 'zero')")
    else:
        check_tokens(model, corrupted, "corrupted")
        if corrupted.shape[1] != clean.shape[1]:
            raise ConfigError(f"'clean' and 'corrupted' must have the same length (got {clean.shape[1]} and "
                              f"{corrupted.shape[1]} tokens: shapes {tuple(clean.shape)} and "
                              f"{tuple(corrupted.shape)})")
        if corrupted.shape[0] != clean.shape[0]:
            raise ConfigError(f"'clean' and 'corrupted' must hold as many prompts (got {clean.shape[0]} and "
                              f"{corrupted.shape[0]})")
    if clean.shape[1] > model.cfg.n_ctx:
        raise invalid("clean", f"at most n_ctx = {model.cfg.n_ctx} positions", clean.shape[1])
    if mean_tokens is not None:
        if ablation != "mean":
            raise ConfigError(f"'mean_tokens' applies to ablation='mean' only (got ablation={ablation!r})")
        check_tokens(model, mean_tokens, "mean_tokens")
        if mean_tokens.shape[1] != clean.shape[1]:
            raise ConfigError(f"'mean_tokens' must have the clean prompts' {clean.shape[1]} positions "
                              f"(got {mean_tokens.shape[1]})")


@torch.no_grad()
def setup(model: Any, clean: Any, corrupted: Any, metric: Callable[[Tensor], Any], direction: Any,
           ablation: str, per_position: Any, mean_tokens: Any, memory_mb: Any, operation: str = "edge scoring",
           ) -> Setup:
    """Check everything; build the runner, the base run and the replacement writes; measure both ends."""
    clean, corrupted, mean_tokens = (t.batch() if isinstance(t, Prompts) else t
                                     for t in (clean, corrupted, mean_tokens))
    direction = resolve_direction(direction, ablation)
    check_pair(model, clean, corrupted, ablation, per_position, mean_tokens, operation)
    memory_mb = finite_positive("memory_mb", memory_mb)
    run = make_runner(model)
    device = next(model.parameters()).device
    clean = clean.to(device)
    b = int(clean.shape[0])
    w_clean = run.senders(clean)
    if ablation == "corrupted":
        other = run.senders(corrupted.to(device))
    elif ablation == "mean":
        other = run.senders((clean if mean_tokens is None else mean_tokens).to(device)).mean(1, keepdim=True)
    else:
        other = torch.zeros_like(w_clean[:, :1])

    def value(tokens: Tensor, **kw: Any) -> float:
        return metric_value(metric, run.run(tokens, **kw)[0], b)

    clean_value = value(clean)
    if corrupted is not None:
        corrupted_value = value(corrupted.to(device))
    else:  # mean / zero without corrupted prompts: the bottom is the clean run with every edge ablated
        corrupted_value = value(clean, keep=torch.zeros(1, len(run.graph.pairs), int(clean.shape[1]),
                                                        device=device), replacement=other)
    if direction == "noising":
        tokens, base, rep, base_value = clean, w_clean, other, clean_value
    else:
        tokens, base, rep, base_value = corrupted.to(device), other, w_clean, corrupted_value
    cap = max(1, int(memory_mb * 2**20 // max(1, run.copy_bytes(b, int(clean.shape[1])))))
    return Setup(run, tokens, base, rep, metric, base_value, clean_value, corrupted_value, direction,
                  ablation, cap)


def metric_value(metric: Callable[[Tensor], Any], logits: Tensor, batch: int) -> float:
    """The metric (checked: a scalar or a [batch] vector, finite) averaged over the batch, in float64."""
    out = metric(logits)
    evaluate_metric(lambda _: out, logits, batch)
    return float(torch.as_tensor(out).detach().double().mean())
