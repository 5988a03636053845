"""A finite user kit (tests/test_kit_probes.py): ``(a + b) mod 10`` on ``[a, b, =]``, a fixed train/test split.

``finite = True``: training takes the whole train split each step, or minibatches of it with
``--batch-size`` (which ``mechwork train digitsum`` offers because the task is finite); ``eval_splits``
lists ``"train"`` beside ``"test"`` (training evaluates its batch anyway). It has a dashboard page of its
own, set in ``mechwork.dashboard.PAGES``::

    mechwork --kit tests/kits/digitsum.py train digitsum --batch-size 16 --out runs/digits
"""
from __future__ import annotations

from dataclasses import asdict, dataclass
from functools import cached_property
from typing import Any, ClassVar

import torch

from mechwork.dashboard import PAGES
from mechwork.kit import Batch, Kit, Preset, Probe, register
from mechwork.models import ToyConfig
from mechwork.results import Analysis, Result
from mechwork.training import TrainConfig


@dataclass(frozen=True)
class DigitSum:
    """Sum of two digits mod 10."""
    train_frac: float = 0.6
    seed: int = 0
    kind: ClassVar[str] = "digitsum"
    finite: ClassVar[bool] = True
    eval_splits: ClassVar[tuple[str, ...]] = ("train", "test")
    d_vocab: ClassVar[int] = 11
    d_vocab_out: ClassVar[int] = 10
    n_ctx: ClassVar[int] = 3

    @cached_property
    def _all(self):
        a = torch.arange(10).repeat_interleave(10)
        b = torch.arange(10).repeat(10)
        t = torch.stack([a, b, torch.full_like(a, 10)], 1)
        tg = torch.zeros_like(t)
        tg[:, -1] = (a + b) % 10
        m = torch.zeros_like(t, dtype=torch.bool)
        m[:, -1] = True
        perm = torch.randperm(100, generator=torch.Generator().manual_seed(self.seed))
        k = int(self.train_frac * 100)
        return Batch(t, tg, m), perm[:k], perm[k:]

    def batch(self, split: str, step: int = 0) -> Batch:
        full, tr, te = self._all
        idx = {"train": tr, "test": te}[split]
        return Batch(full.tokens[idx], full.targets[idx], full.mask[idx])

    def to_dict(self) -> dict[str, Any]:
        return {"kind": self.kind, **asdict(self)}

    def describe(self) -> str:
        return f"(a + b) mod 10, {self.train_frac:.0%} train, seed {self.seed}"


def model(task):
    return ToyConfig(n_layers=1, d_model=32, n_heads=2, d_head=16, d_mlp=64, d_vocab=11, d_vocab_out=10, n_ctx=3)


def recipe(task):
    return TrainConfig(lr=1e-2, weight_decay=1.0, warmup_steps=2, steps=40, eval_every=10)


def probe(task, n=8, seed=0):
    g = torch.Generator().manual_seed(seed)
    clean = task.batch("test").tokens[torch.randint(0, len(task.batch("test")), (n,), generator=g)]
    cor = clean.clone()
    cor[:, 1] = (clean[:, 1] + 1) % 10
    r, w = (clean[:, 0] + clean[:, 1]) % 10, (cor[:, 0] + cor[:, 1]) % 10

    def metric(lg):
        lg = lg[:, -1].float()
        return (lg.gather(-1, r[:, None].to(lg.device)) - lg.gather(-1, w[:, None].to(lg.device))).mean()

    return Probe(clean, cor, metric, "b -> b + 1")


@dataclass(frozen=True)
class Acc(Result):
    train: float
    test: float

    def summary(self):
        return f"digitsum train {self.train:.1%} test {self.test:.1%}"

    def to_frame(self):
        import pandas as pd
        return pd.DataFrame({"split": ["train", "test"], "acc": [self.train, self.test]})

    def figure(self):
        import plotly.graph_objects as go
        return go.Figure(go.Bar(x=["train", "test"], y=[self.train, self.test]))


@torch.no_grad()
def analyse(source):
    dev = next(source.model.parameters()).device
    out = {}
    for s in ("train", "test"):
        b = source.task.batch(s)
        lg = source.model(b.tokens.to(dev)).cpu()
        out[s] = float((lg[:, -1].argmax(-1) == b.targets[:, -1]).float().mean())
    return Analysis(source.info, {"acc": Acc(**out)})


def page(bundle: Analysis) -> Any:
    """The kit's own dashboard page (instead of the generic one): the model, then its accuracy."""
    from mechwork.dashboard import Page
    from mechwork.dashboard.sections import model_and_training

    out = Page(f"Digit sums: {bundle.info.name}", subtitle=bundle.info.task.describe())
    model_and_training(out, bundle.info)
    return out.result(bundle["acc"], title="Accuracy by split", table=True)


PAGES[DigitSum.kind] = page  # mechwork dashboard renders a digitsum run with it

PRESET = Preset("digitsum-small", model(DigitSum()), DigitSum(), "tiny digit-sum model")
KIT = register(Kit("digitsum", DigitSum, model, recipe, probe, analyse, presets={PRESET.name: PRESET},
                   description="sum of two digits"))
