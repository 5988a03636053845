"""The least a user kit needs (tests/test_kit_probes.py): no presets, no description, no page of its own,
and an ``analyse`` whose bundle holds no results (the generic page says so)."""

from dataclasses import asdict, dataclass
from typing import ClassVar

import torch

from mechwork.kit import Batch, Kit, Probe, register
from mechwork.models import ToyConfig
from mechwork.results import Analysis
from mechwork.training import TrainConfig


@dataclass(frozen=True)
class Minimal:
    d_vocab: int = 6
    kind: ClassVar[str] = "minimal"
    d_vocab_out: ClassVar[int] = 6
    n_ctx: ClassVar[int] = 3

    def batch(self, split, step=0):
        g = torch.Generator().manual_seed(step if split == "train" else 10**6)
        t = torch.randint(0, self.d_vocab, (16, 3), generator=g)
        return Batch(t, t.clone(), torch.ones_like(t, dtype=torch.bool))

    def to_dict(self):
        return {"kind": self.kind, **asdict(self)}

    def describe(self):
        return "minimal identity task"


def probe(task, n=8, seed=0):
    clean = task.batch("test").tokens[:n]
    return Probe(clean, (clean + 1) % task.d_vocab, lambda logits: logits.float().mean(), "every token + 1")


KIT = register(Kit(
    "minimal", Minimal,
    model=lambda task: ToyConfig(n_layers=1, d_model=8, n_heads=1, d_head=8, d_mlp=None, d_vocab=task.d_vocab,
                                 d_vocab_out=task.d_vocab_out, n_ctx=task.n_ctx, init="gpt2"),
    recipe=lambda task: TrainConfig(steps=5, eval_every=5, lr=1e-2, weight_decay=0.0, warmup_steps=0),
    probe=probe,
    analyse=lambda source: Analysis(source.info, {}),
))
