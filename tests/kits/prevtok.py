"""A user kit loaded by module name (tests/test_kit_probes.py): predict the previous token.

Its held-out split is called ``"valid"`` (``eval_splits = ("valid",)``), and its one result has a
summary and a table but no figure::

    PYTHONPATH=tests/kits MECHWORK_KITS=prevtok mechwork train prevtok --out runs/prev
"""
from __future__ import annotations

from dataclasses import asdict, dataclass
from typing import Any, ClassVar

import torch

from mechwork.kit import Batch, Kit, Probe, register
from mechwork.models import ToyConfig
from mechwork.results import Analysis, Result
from mechwork.training import TrainConfig


@dataclass(frozen=True)
class PrevToken:
    """Predict the previous token of a random sequence."""
    d_vocab: int = 10
    seq_len: int = 5
    seed: int = 0
    kind: ClassVar[str] = "prevtok"
    eval_splits: ClassVar[tuple[str, ...]] = ("valid",)

    @property
    def d_vocab_out(self) -> int:
        return self.d_vocab

    @property
    def n_ctx(self) -> int:
        return self.seq_len

    def sample(self, n, seed):
        t = torch.randint(0, self.d_vocab, (n, self.seq_len), generator=torch.Generator().manual_seed(seed))
        tg = torch.zeros_like(t)
        tg[:, 1:] = t[:, :-1]
        m = torch.ones_like(t, dtype=torch.bool)
        m[:, 0] = False
        return Batch(t, tg, m)

    def batch(self, split: str, step: int = 0) -> Batch:
        if split == "train":
            return self.sample(64, self.seed * 7919 + step)
        return self.sample(128, 10**6 + self.seed)

    def to_dict(self) -> dict[str, Any]:
        return {"kind": self.kind, **asdict(self)}

    def describe(self) -> str:
        return f"previous token of {self.seq_len} tokens of {self.d_vocab}"


def model(task):
    return ToyConfig(n_layers=1, d_model=16, n_heads=2, d_head=8, d_mlp=None, d_vocab=task.d_vocab,
                     d_vocab_out=task.d_vocab_out, n_ctx=task.n_ctx, init="gpt2")


def recipe(task):
    return TrainConfig(lr=1e-2, weight_decay=0.0, warmup_steps=2, steps=30, eval_every=10)


def probe(task, n=8, seed=0):
    clean = task.sample(n, seed).tokens
    cor = clean.clone()
    cor[:, -2] = (clean[:, -2] + 1) % task.d_vocab
    r, w = clean[:, -2], cor[:, -2]

    def metric(logits):
        lg = logits[:, -1].float()
        return (lg.gather(-1, r[:, None].to(lg.device)) - lg.gather(-1, w[:, None].to(lg.device))).mean()

    return Probe(clean, cor, metric, "corrupt the second-last token")


@dataclass(frozen=True)
class Note(Result):
    """A result with a summary and a table but no figure; the generic page shows both."""
    acc: float

    def summary(self) -> str:
        return f"prevtok accuracy {self.acc:.1%}"

    def to_frame(self):
        import pandas as pd
        return pd.DataFrame({"acc": [self.acc]})


@torch.no_grad()
def analyse(source):
    b = source.task.batch("valid")
    dev = next(source.model.parameters()).device
    lg = source.model(b.tokens.to(dev)).cpu()
    acc = float((lg.argmax(-1) == b.targets)[b.mask].float().mean())
    return Analysis(source.info, {"prevtok_note": Note(acc), "plain_value": acc})  # a plain float too


KIT = register(Kit("prevtok", PrevToken, model, recipe, probe, analyse, description="previous-token kit"))
