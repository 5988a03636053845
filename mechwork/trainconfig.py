"""The training recipe of a run: optimiser, schedule, evaluation and checkpoint cadence, as one frozen config.

:class:`TrainConfig` is what ``config.json``'s ``train`` section holds. It lives below both
:mod:`mechwork.training` (which runs it; it re-exports the class) and :mod:`mechwork.runs` (which checks
a stored one when it opens a run directory), so neither imports the other for it.

Example::

    >>> from mechwork.trainconfig import TrainConfig
    >>> cfg = TrainConfig(steps=100, warmup_steps=10)
    >>> cfg.lr_at(0), cfg.lr_at(50)
    (0.001, 0.01)
    >>> TrainConfig.from_dict(cfg.to_dict()) == cfg
    True
"""

from __future__ import annotations

import math
from dataclasses import asdict, dataclass
from typing import Any, no_type_check

from mechwork.errors import check_known_fields, invalid
from mechwork.limits import check_seed

__all__ = ["LOSSES", "TrainConfig"]

LOSSES = ("softmax", "stablemax")  # the training losses (see mechwork.training.stablemax_cross_entropy)


@no_type_check  # validates its own fields, with one-line messages
@dataclass(frozen=True)
class TrainConfig:
    """Optimiser and schedule. Defaults: mechwork's fast grokking recipe for modadd-113."""

    lr: float = 1e-2  # peak AdamW learning rate (Nanda et al.: 1e-3)
    weight_decay: float = 1.0  # decoupled AdamW weight decay, on every trained parameter
    betas: tuple[float, float] = (0.9, 0.98)  # AdamW betas (Nanda et al. use (0.9, 0.98))
    warmup_steps: int = 10  # linear warmup to lr, then constant
    steps: int = 3000  # optimiser updates
    decay_steps: int = 0  # linear decay of lr to 0 over the last N steps (0: constant to the end)
    batch_size: int | None = None  # None: full batch (modadd); induction draws task.batch_size
    eval_every: int = 50  # evaluate train/test loss and accuracy every N steps
    ckpt_every: int | None = None  # linear checkpoint spacing; None: steps // 40
    ckpt_log: int = 24  # log-spaced checkpoints on top (dense early, sparse later)
    grokfast_alpha: float | None = None  # Grokfast EMA decay (paper: 0.98); None: filter off
    grokfast_lambda: float = 2.0  # Grokfast amplification of the slow gradient
    init_scale: float = 1.0  # multiply the seeded initial weights by this (Omnigrok's alpha); 1.0: as seeded
    loss: str = "softmax"  # training loss: "softmax" cross-entropy or "stablemax" (Prieto et al. 2025)
    orthograd: bool = False  # ⊥Grad (Prieto et al. 2025): drop each gradient's part along its weight, keep its norm
    seed: int = 0  # seeds minibatch sampling

    def __post_init__(self) -> None:
        def num(name: str, lo: float, hi: float | None = None, lo_open: bool = False) -> None:
            v = getattr(self, name)
            ok = isinstance(v, (int, float)) and not isinstance(v, bool) and math.isfinite(v)
            ok = ok and (v > lo if lo_open else v >= lo) and (hi is None or v < hi)
            if not ok:
                rng = f"{'>' if lo_open else '>='} {lo}" + ("" if hi is None else f" and < {hi}")
                raise invalid(name, f"a finite number {rng}", v)

        num("lr", 0.0, lo_open=True)
        num("weight_decay", 0.0)
        if (
            not isinstance(self.betas, (tuple, list))
            or len(self.betas) != 2
            or not all(isinstance(b, (int, float)) and 0.0 <= b < 1.0 for b in self.betas)
        ):
            raise invalid("betas", "two numbers in [0, 1)", self.betas)
        for name, lo in (("warmup_steps", 0), ("steps", 1), ("decay_steps", 0), ("eval_every", 1), ("ckpt_log", 0)):
            v = getattr(self, name)
            if not isinstance(v, int) or isinstance(v, bool) or v < lo:
                raise invalid(name, f"an integer >= {lo}", v)
        check_seed(self.seed)
        if self.decay_steps > self.steps:
            raise invalid("decay_steps", f"an integer in [0, steps={self.steps}]", self.decay_steps)
        for name in ("batch_size", "ckpt_every"):
            v = getattr(self, name)
            if v is not None and (not isinstance(v, int) or isinstance(v, bool) or v < 1):
                raise invalid(name, "an integer >= 1, or None", v)
        if self.grokfast_alpha is not None:
            num("grokfast_alpha", 0.0, 1.0)
            num("grokfast_lambda", 0.0)
        num("init_scale", 0.0, lo_open=True)
        if self.loss not in LOSSES:
            raise invalid("loss", " or ".join(repr(x) for x in LOSSES), self.loss)
        if not isinstance(self.orthograd, bool):
            raise invalid("orthograd", "True or False", self.orthograd)

    def lr_at(self, step: int) -> float:
        """Learning rate for the update at ``step``: warmup, constant, then the optional decay.

        >>> cfg = TrainConfig(lr=1.0, warmup_steps=2, steps=10, decay_steps=4)
        >>> [cfg.lr_at(s) for s in (0, 1, 5, 6, 8, 9)]
        [0.5, 1.0, 1.0, 1.0, 0.5, 0.25]
        """
        lr = self.lr * min(1.0, (step + 1) / self.warmup_steps) if self.warmup_steps else self.lr
        if self.decay_steps and step >= self.steps - self.decay_steps:
            lr *= (self.steps - step) / self.decay_steps
        return lr

    def to_dict(self) -> dict[str, Any]:
        d = asdict(self)
        d["betas"] = list(self.betas)
        return d

    @classmethod
    def from_dict(cls, d: dict[str, Any]) -> TrainConfig:
        check_known_fields(d, cls, "train")
        d = dict(d)
        if "betas" in d:
            d["betas"] = tuple(d["betas"])
        return cls(**d)
