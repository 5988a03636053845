"""A user's task kit in one file: "predict the first token".

Each sequence is ``seq_len`` random tokens; the label at every position is the sequence's first token,
so a model must learn to attend to position 0 and copy what it finds there. Everything mechwork needs
is here: the task (its data seam ``batch(split, step)``), a preset, the default model and recipe, the
standard probe, and ``analyse()`` with a result of its own (accuracy by position) beside the attention
patterns of :mod:`mechwork.analysis.attention`. Registering the kit makes ``mechwork train first_token``,
``info``, ``patch`` and ``dashboard`` work (``--kit`` goes before the command; the task's fields
``d_vocab``, ``seq_len``, ``batch_size`` and ``n_eval`` are options of ``train first_token``)::

    mechwork --kit tests/kits/first_token.py train first_token --steps 200 --out runs/first
    MECHWORK_KITS=tests/kits/first_token.py mechwork dashboard runs/first --out first.html
"""

from __future__ import annotations

from dataclasses import asdict, dataclass
from functools import cached_property
from typing import Any, ClassVar

import torch
from torch import Tensor

from mechwork.kit import Batch, Kit, Preset, Probe, register
from mechwork.models import ToyConfig
from mechwork.results import Analysis, Result
from mechwork.training import TrainConfig


@dataclass(frozen=True)
class FirstToken:
    """Random sequences labelled, at every position, with their first token."""

    d_vocab: int = 12
    seq_len: int = 6
    batch_size: int = 64
    n_eval: int = 256
    seed: int = 0
    kind: ClassVar[str] = "first_token"

    @property
    def d_vocab_out(self) -> int:
        return self.d_vocab

    @property
    def n_ctx(self) -> int:
        return self.seq_len

    def sample(self, n: int, seed: int) -> Batch:
        tokens = torch.randint(0, self.d_vocab, (n, self.seq_len), generator=torch.Generator().manual_seed(seed))
        targets = tokens[:, :1].expand(n, self.seq_len).clone()
        return Batch(tokens, targets, torch.ones_like(tokens, dtype=torch.bool))

    def batch(self, split: str, step: int = 0) -> Batch:
        if split == "train":
            return self.sample(self.batch_size, self.seed * 1_000_003 + step)
        return self._test

    @cached_property
    def _test(self) -> Batch:
        return self.sample(self.n_eval, self.seed + 999_983)

    def to_dict(self) -> dict[str, Any]:
        return {"kind": self.kind, **asdict(self)}

    def describe(self) -> str:
        return f"first token: {self.seq_len} random tokens of {self.d_vocab}, label = the first, seed {self.seed}"


def model(task: FirstToken) -> ToyConfig:
    return ToyConfig(n_layers=1, d_model=32, n_heads=2, d_head=16, d_mlp=None, d_vocab=task.d_vocab,
                     d_vocab_out=task.d_vocab_out, n_ctx=task.n_ctx, init="gpt2")


def recipe(task: FirstToken) -> TrainConfig:
    return TrainConfig(lr=1e-2, weight_decay=0.0, warmup_steps=5, steps=150, eval_every=10)


def probe(task: FirstToken, n: int = 8, seed: int = 0) -> Probe:
    """Corrupt the first token; the metric is the logit of the clean first token minus the corrupted one."""
    clean = task.sample(n, seed).tokens
    corrupted = clean.clone()
    corrupted[:, 0] = (clean[:, 0] + 1) % task.d_vocab
    right, wrong = clean[:, :1], corrupted[:, :1]

    def metric(logits: Tensor) -> Tensor:
        lg = logits.float()
        n_pos = lg.shape[1]
        return (lg.gather(-1, right.to(lg.device).expand(-1, n_pos)[..., None])
                - lg.gather(-1, wrong.to(lg.device).expand(-1, n_pos)[..., None])).mean()

    return Probe(clean, corrupted, metric, f"{n} random sequences; corrupted: first token + 1; "
                 "metric: logit(first token) - logit(corrupted first token), mean over positions")


@dataclass(frozen=True)
class AccuracyByPosition(Result):
    """How often the model names the first token, at each position of held-out sequences."""

    accuracy: tuple[float, ...]

    def summary(self) -> str:
        worst = min(range(len(self.accuracy)), key=lambda i: self.accuracy[i])
        return (f"first-token accuracy by position: mean {sum(self.accuracy) / len(self.accuracy):.1%}, "
                f"lowest {self.accuracy[worst]:.1%} at position {worst}")

    def to_frame(self) -> Any:
        import pandas as pd

        return pd.DataFrame({"position": range(len(self.accuracy)), "accuracy": self.accuracy})

    def figure(self) -> Any:
        import plotly.graph_objects as go

        fig = go.Figure(go.Bar(x=list(range(len(self.accuracy))), y=list(self.accuracy)))
        return fig.update_layout(title="First-token accuracy by position", xaxis_title="position",
                                 yaxis_title="accuracy", yaxis_range=[0, 1])


@torch.no_grad()
def analyse(source: Any) -> Analysis:
    from mechwork.analysis.attention import attention_patterns

    test = source.task.batch("test")
    device = next(source.model.parameters()).device
    logits = source.model(test.tokens.to(device)).cpu()
    acc = (logits.argmax(-1) == test.targets).float().mean(0)
    results = {"accuracy_by_position": AccuracyByPosition(tuple(acc.tolist())),
               "attention": attention_patterns(source.model, test.tokens[:4])}
    return Analysis(source.info, results)


PRESET = Preset("first-token-6", model(FirstToken()), FirstToken(), "1-layer attention-only model that copies "
                "the first token")

KIT = register(Kit("first_token", FirstToken, model, recipe, probe, analyse, presets={PRESET.name: PRESET},
                   description="Train a 1-layer model to predict the first token of random sequences."))
