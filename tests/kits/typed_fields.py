"""A user kit whose task fields have many types (tests/test_kit_probes.py): how ``train KIND`` options derive.

``d_vocab``/``seq_len`` (int), ``noise`` (float, checked by the task itself), ``reverse`` (bool:
``--reverse true``), ``mode`` (a Literal: a choice), ``weights`` (a tuple: ``--weights 1,2``)::

    mechwork --kit tests/kits/typed_fields.py train typed --mode shift --reverse true --weights 3,4
"""
from __future__ import annotations

from dataclasses import asdict, dataclass
from typing import Any, ClassVar, Literal

import torch

from mechwork.kit import Batch, Kit, Probe, register
from mechwork.models import ToyConfig
from mechwork.results import Analysis
from mechwork.training import TrainConfig


@dataclass(frozen=True)
class Typed:
    """A copy task with fields of many types."""
    d_vocab: int = 8
    seq_len: int = 4
    noise: float = 0.0
    reverse: bool = False
    mode: Literal["copy", "shift"] = "copy"
    weights: tuple[float, ...] = (1.0, 2.0)
    seed: int = 0
    kind: ClassVar[str] = "typed"

    def __post_init__(self):
        if not 0.0 <= self.noise <= 1.0:
            raise ValueError(f"noise must be in [0, 1] (got {self.noise})")

    @property
    def d_vocab_out(self):
        return self.d_vocab

    @property
    def n_ctx(self):
        return self.seq_len

    def batch(self, split: str, step: int = 0) -> Batch:
        seed = self.seed * 1000 + step if split == "train" else 99991
        t = torch.randint(0, self.d_vocab, (32, self.seq_len), generator=torch.Generator().manual_seed(seed))
        tg = t.flip(1) if self.reverse else t
        if self.mode == "shift":
            tg = (tg + 1) % self.d_vocab
        return Batch(t, tg.clone(), torch.ones_like(t, dtype=torch.bool))

    def to_dict(self) -> dict[str, Any]:
        return {"kind": self.kind, **asdict(self)}

    def describe(self) -> str:
        return f"typed {self.mode} reverse={self.reverse} noise={self.noise} weights={self.weights}"


def model(task):
    return ToyConfig(n_layers=1, d_model=16, n_heads=2, d_head=8, d_mlp=None, d_vocab=task.d_vocab,
                     d_vocab_out=task.d_vocab, n_ctx=task.n_ctx, init="gpt2")


def recipe(task):
    return TrainConfig(lr=1e-2, weight_decay=0.0, warmup_steps=1, steps=10, eval_every=5)


def probe(task, n=8, seed=0):
    clean = task.batch("test").tokens[:n]
    cor = (clean + 1) % task.d_vocab
    return Probe(clean, cor, lambda lg: lg[..., 0].float().mean(), "shift all")


def analyse(source):
    return Analysis(source.info, {})


KIT = register(Kit("typed", Typed, model, recipe, probe, analyse))  # no presets, no description
