"""The modular-arithmetic kit: ``(a op b) mod p`` on ``[a, b, =]``, the task models grok on (Nanda et al. 2023).

:class:`ModularArithmetic` holds every pair ``(a, b)`` of Z_p as ``[a, b, =]`` with the label
``(a op b) mod p`` read at the last position. The dataset is finite, so training is full batch on a
fixed, seeded split (or minibatches of it, with ``TrainConfig.batch_size``). The kit adds the
``modadd-113`` preset, the fast grokking recipe, the standard probe (corrupt ``b``, logit difference
at ``=``) and the lines ``mechwork info`` says about a run.

Example::

    >>> from mechwork.tasks.modadd import KIT, ModularArithmetic
    >>> task = ModularArithmetic(p=7, op="add", train_frac=0.5, seed=0)
    >>> task.tokens.shape, task.labels[:3].tolist()
    (torch.Size([49, 3]), [0, 1, 2])
    >>> len(task.batch("train")), len(task.batch("test"))
    (24, 25)
    >>> KIT.probe(task, n=2).clean.shape
    torch.Size([2, 3])
"""

from __future__ import annotations

from collections.abc import Mapping
from dataclasses import asdict, dataclass
from functools import cached_property
from typing import TYPE_CHECKING, Any, ClassVar, Literal, no_type_check

from mechwork.errors import invalid
from mechwork.kit import Batch, Kit, Preset, Probe, register
from mechwork.limits import COMMANDS, check_fits, check_modadd, check_seed, probe_bytes
from mechwork.models import ToyConfig

if TYPE_CHECKING:  # pragma: no cover (torch loads when the task's data is first asked for)
    import pandas as pd
    from jaxtyping import Int
    from torch import Tensor

    from mechwork.results import Analysis
    from mechwork.source import Source
    from mechwork.training import TrainConfig

__all__ = ["KIT", "ModularArithmetic"]

Op = Literal["add", "sub", "mul", "div", "x2+y2"]


@no_type_check  # validates its own fields, with one-line messages
@dataclass(frozen=True)
class ModularArithmetic:
    """All pairs ``(a, b)`` of Z_p as ``[a, b, =]``, labelled ``(a op b) mod p``.

    ``=`` is token ``p``, so the vocabulary is ``p + 1`` tokens in and ``p`` out.
    ``div`` is ``a * b^-1``: it needs a field (p prime) and skips ``b = 0``.
    The split is a seeded permutation: the first ``int(train_frac * n)`` pairs
    train, the rest test, exactly as in Nanda et al.'s code.
    """

    p: int = 113
    op: Op = "add"
    train_frac: float = 0.3
    seed: int = 0
    kind: ClassVar[str] = "modadd"
    eval_splits: ClassVar[tuple[str, ...]] = ("test",)
    finite: ClassVar[bool] = True  # one fixed training set: TrainConfig.batch_size minibatches it
    fast_path: ClassVar[bool] = True  # [a, b, =] with the loss at '=': mechwork.fastpath applies

    def __post_init__(self) -> None:
        check_modadd(self.p, self.op, self.train_frac, self.seed)  # and that its pairs fit in memory

    # -- vocabulary ---------------------------------------------------------
    @property
    def d_vocab(self) -> int:
        return self.p + 1

    @property
    def d_vocab_out(self) -> int:
        return self.p

    @property
    def n_ctx(self) -> int:
        return 3

    @property
    def eq_token(self) -> int:
        return self.p

    @property
    def n_pairs(self) -> int:
        return self.p * (self.p - 1) if self.op == "div" else self.p * self.p

    @property
    def n_train(self) -> int:
        """``len(self.train_idx)``, known without drawing the split."""
        return int(self.train_frac * self.n_pairs)

    @property
    def n_test(self) -> int:
        return self.n_pairs - self.n_train

    # -- data ---------------------------------------------------------------
    @cached_property
    def _ab(self) -> tuple[Tensor, Tensor]:
        import torch
        a = torch.arange(self.p).repeat_interleave(self.p)
        b = torch.arange(self.p).repeat(self.p)
        if self.op == "div":
            keep = b != 0
            a, b = a[keep], b[keep]
        return a, b

    @cached_property
    def tokens(self) -> Int[Tensor, "n_pairs 3"]:
        """Every pair as ``[a, b, =]``, ordered by a then b."""
        import torch
        a, b = self._ab
        return torch.stack([a, b, torch.full_like(a, self.p)], dim=1)

    @cached_property
    def labels(self) -> Int[Tensor, " n_pairs"]:
        a, b = self._ab
        return self.apply(a, b)

    def apply(self, a: Tensor, b: Tensor) -> Tensor:
        """``(a op b) mod p`` for integer tensors, in int64 arithmetic."""
        import torch
        p = self.p
        if self.op == "add":
            return (a + b) % p
        if self.op == "sub":
            return (a - b) % p
        if self.op == "mul":
            return (a * b) % p
        if self.op == "x2+y2":
            return (a * a + b * b) % p
        # Fermat: b^(p-2) is b's inverse mod a prime p.
        inv = torch.tensor([pow(int(x), p - 2, p) for x in range(p)])
        return (a * inv[b]) % p

    @cached_property
    def _split(self) -> tuple[Tensor, Tensor]:
        import torch
        g = torch.Generator().manual_seed(self.seed)
        perm = torch.randperm(self.n_pairs, generator=g)
        n_train = self.n_train
        return perm[:n_train].sort().values, perm[n_train:].sort().values

    @property
    def train_idx(self) -> Int[Tensor, " n_train"]:
        return self._split[0]

    @property
    def test_idx(self) -> Int[Tensor, " n_test"]:
        return self._split[1]

    def pairs(self, idx: Tensor | None = None) -> Batch:
        """The pairs at ``idx`` (all pairs when None) as a :class:`Batch`."""
        import torch
        tokens = self.tokens if idx is None else self.tokens[idx]
        labels = self.labels if idx is None else self.labels[idx]
        targets = torch.zeros_like(tokens)
        targets[:, -1] = labels
        mask = torch.zeros(tokens.shape, dtype=torch.bool)
        mask[:, -1] = True
        return Batch(tokens, targets, mask)

    def batch(self, split: str, step: int = 0) -> Batch:
        """The data seam: ``"train"`` (the whole training split, at every step), ``"test"`` or ``"all"``."""
        if split == "train":
            return self._train_batch
        if split == "test":
            return self._test_batch
        if split == "all":
            return self.pairs()
        raise invalid("split", "train, test or all", split)

    def train_batch(self, step: int) -> Batch:
        return self._train_batch

    @cached_property
    def _train_batch(self) -> Batch:
        return self.pairs(self.train_idx)

    @cached_property
    def _test_batch(self) -> Batch:
        return self.pairs(self.test_idx)

    def eval_batches(self) -> dict[str, Batch]:
        return {"train": self._train_batch, "test": self._test_batch}

    def to_dict(self) -> dict[str, Any]:
        return {"kind": self.kind, **asdict(self)}

    def describe(self) -> str:
        return (
            f"(a {self.op} b) mod {self.p}: {self.n_pairs} pairs, "
            f"{self.n_train} train ({self.train_frac:.0%}), seed {self.seed}"
        )


# -- the kit --------------------------------------------------------------------------------------
PRESET = Preset(
    "modadd-113",
    ToyConfig(),
    ModularArithmetic(p=113, op="add", train_frac=0.3, seed=0),
    "Nanda et al. 2023: 1-layer transformer that groks (a + b) mod 113",
)


def model(task: ModularArithmetic) -> ToyConfig:
    """The modadd-113 architecture, sized to the task's vocabulary."""
    return ToyConfig.from_dict(PRESET.model.to_dict() | {"d_vocab": task.d_vocab, "d_vocab_out": task.d_vocab_out,
                                                         "n_ctx": task.n_ctx})


def recipe(task: ModularArithmetic) -> TrainConfig:
    """mechwork's fast grokking recipe (the TrainConfig defaults; ``benchmarks/README.md`` compares it with
    Nanda et al.'s)."""
    from mechwork.training import TrainConfig

    return TrainConfig()


def probe(task: ModularArithmetic, n: int = 8, seed: int = 0, *, shift: int = 1) -> Probe:
    """``n`` random pairs; the corrupted input changes ``b`` to ``b + shift``, so the answer moves; the metric
    is the logit difference between the clean answer and the corrupted one at ``=``."""
    import torch

    from mechwork.analysis.metrics import logit_diff

    if not isinstance(n, int) or n < 1:
        raise invalid("n", "a positive number of prompts", n)
    check_seed(seed)
    check_fits(f"{n:,} standard prompts of 3 tokens", probe_bytes(n, 3))
    g = torch.Generator().manual_seed(seed)
    idx = torch.randint(0, task.n_pairs, (n,), generator=g)
    clean = task.tokens[idx]
    corrupted = clean.clone()
    corrupted[:, 1] = (clean[:, 1] + shift) % task.p
    right = task.apply(clean[:, 0], clean[:, 1])
    wrong = task.apply(corrupted[:, 0], corrupted[:, 1])
    return Probe(clean, corrupted, logit_diff(right, wrong),
                 f"{n} random pairs (a, b); corrupted b -> b + {shift}; metric: logit(answer) - "
                 f"logit(corrupted answer) at '='")


def batch_line(task: ModularArithmetic, train: Mapping[str, Any]) -> str:
    """How each step's batch was drawn: the full training split, or minibatches of it."""
    size = train.get("batch_size")
    if size is None:
        return "full batch"
    if size >= len(task.train_idx):
        return f"full batch (batch_size {size} >= {len(task.train_idx)} training pairs)"
    return f"minibatches of {size}"


def history_lines(task: ModularArithmetic, df: pd.DataFrame) -> list[str]:
    """When the run grokked, whether its held-out split is too small to say, and its loss spikes."""
    from mechwork.analysis.spikes import GROKKED, held_out_caveat, spike_sentence

    if "test_acc" not in df or not len(df):
        return []
    hit = df[df["test_acc"] >= GROKKED]
    lines = [f"test acc >= {GROKKED:.0%} first at step {int(hit['step'].iloc[0])}" if len(hit) else
             f"test acc < {GROKKED:.0%} so far (best {df['test_acc'].max():.2%})"]
    caveat = held_out_caveat(task.n_test)
    if caveat is not None:
        lines.append(caveat)
    if len(hit) and "test_loss" in df:
        lines.append(spike_sentence(df["step"].tolist(), df["test_loss"].tolist(), df["test_acc"].tolist()))
    return lines


def embedded_lines(task: ModularArithmetic, meta: Mapping[str, Any]) -> list[str]:
    """The embedded model's train and test accuracy, and its history."""
    import pandas as pd

    s = meta.get("summary", {})
    hist = (meta.get("history") or {}).get("metrics")
    step = meta.get("step", s.get("steps"))
    lines = []
    if "train_acc" in s and "test_acc" in s:
        lines.append(f"at step {step}: train acc {s['train_acc']:.4f}, test acc {s['test_acc']:.4f}")
    if hist:
        lines += history_lines(task, pd.DataFrame(hist))
    elif s.get("grok_step") is not None:
        lines.append(f"test acc >= 99% first at step {s['grok_step']}")
    return lines


def sae(source: Source, acts: Mapping[str, Tensor] | None = None) -> Any:
    """The source's SAE at ``blocks.0.mlp.hook_post`` (shipped with a preset, or in a run's ``saes/``), read at
    ``=``: its metrics (on 2,048 pairs drawn with seed 0, to keep the dashboard fast) and the feature pages of its 5
    most often firing latents over every pair, with the (a, b) grid when the op is add or sub
    (:func:`mechwork.analysis.features.sae_result`; ``acts``: the activations of every pair by hook, when the
    caller has them); None without one."""

    from mechwork.analysis.features import sae_result

    task = source.task
    everything = task.batch("all")
    fourier = task.op in ("add", "sub") and task.n_pairs == task.p * task.p and task.p % 2 == 1
    return sae_result(source, "blocks.0.mlp.hook_post", everything, labels=[str(j) for j in range(task.p)] + ["="],
                      grid=(task.p, task.tokens) if fourier else None, metric_rows=2048, acts=acts)


def analyse(source: Source, *, progress: bool = True) -> Analysis:
    """Every result of the grokking dashboard, computed once (:func:`mechwork.analysis.grokking.analyse`), and
    ``sae`` when the source has an SAE (:func:`sae`); the one pass over every pair also gives the SAE's feature
    pages their MLP activations."""
    from mechwork.analysis.fourier import grid_pass
    from mechwork.analysis.grokking import analyse as grokking
    from mechwork.analysis.grokking import grid_hooks

    grid = grid_pass(source.model, source.task, grid_hooks(source))
    return grokking(source, progress=progress, grid=grid).replace(sae=sae(source, acts=grid[1]))


KIT = register(Kit(
    kind="modadd",
    task=ModularArithmetic,
    model=model,
    recipe=recipe,
    probe=probe,
    analyse=analyse,
    presets={PRESET.name: PRESET},
    description="Train the 1-layer modular-arithmetic model (Nanda et al. 2023).",
    command=COMMANDS["modadd"],
    batch_line=batch_line,
    history_lines=history_lines,
    embedded=embedded_lines,
))
