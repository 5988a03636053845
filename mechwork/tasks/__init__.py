"""Toy tasks: the data a toy transformer is trained and probed on.

Two tasks, one interface. Each task is a frozen dataclass that knows its
vocabulary, context length and how to hand out :class:`Batch` es of tokens,
next-token targets and a mask of the positions the loss counts.

* :class:`ModularArithmetic` -- every pair ``(a, b)`` as ``[a, b, =]`` with the
  label ``(a op b) mod p`` read at the last position (Nanda et al. 2023).
  The dataset is finite, so training is full batch on a fixed, seeded split.
* :class:`InductionTask` -- random sequences in which a segment of random
  length is repeated at a random offset. Only the positions inside the repeat,
  whose next token is predictable by copying, count towards loss and accuracy.

Example::

    >>> from mechwork.tasks import ModularArithmetic
    >>> task = ModularArithmetic(p=7, op="add", train_frac=0.5, seed=0)
    >>> task.tokens.shape, task.labels[:3].tolist()
    (torch.Size([49, 3]), [0, 1, 2])
    >>> len(task.train_idx) + len(task.test_idx) == 49
    True
"""

from __future__ import annotations

from dataclasses import asdict, dataclass
from functools import cached_property
from typing import Any, ClassVar, Literal, no_type_check

import torch
from jaxtyping import Bool, Int
from torch import Tensor

from mechwork.errors import check_known_fields, invalid
from mechwork.limits import OPS, check_induction, check_modadd, is_prime  # noqa: F401  (is_prime: public here too)

__all__ = ["OPS", "Batch", "InductionTask", "ModularArithmetic", "Task", "task_from_dict"]

Op = Literal["add", "sub", "mul", "div", "x2+y2"]


@dataclass(frozen=True)
class Batch:
    """Tokens, next-token targets and the mask of positions the loss counts."""

    tokens: Int[Tensor, "batch pos"]
    targets: Int[Tensor, "batch pos"]
    mask: Bool[Tensor, "batch pos"]

    def __len__(self) -> int:
        return int(self.tokens.shape[0])

    def to(self, device: torch.device | str) -> Batch:
        return Batch(self.tokens.to(device), self.targets.to(device), self.mask.to(device))


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

    # -- data ---------------------------------------------------------------
    @cached_property
    def _ab(self) -> tuple[Tensor, Tensor]:
        a = torch.arange(self.p).repeat_interleave(self.p)
        b = torch.arange(self.p).repeat(self.p)
        if self.op == "div":
            keep = b != 0
            a, b = a[keep], b[keep]
        return a, b

    @cached_property
    def tokens(self) -> Int[Tensor, "n_pairs 3"]:
        """Every pair as ``[a, b, =]``, ordered by a then b."""
        a, b = self._ab
        return torch.stack([a, b, torch.full_like(a, self.p)], dim=1)

    @cached_property
    def labels(self) -> Int[Tensor, " n_pairs"]:
        a, b = self._ab
        return self.apply(a, b)

    def apply(self, a: Tensor, b: Tensor) -> Tensor:
        """``(a op b) mod p`` for integer tensors, in int64 arithmetic."""
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
        g = torch.Generator().manual_seed(self.seed)
        perm = torch.randperm(self.n_pairs, generator=g)
        n_train = int(self.train_frac * self.n_pairs)
        return perm[:n_train].sort().values, perm[n_train:].sort().values

    @property
    def train_idx(self) -> Int[Tensor, " n_train"]:
        return self._split[0]

    @property
    def test_idx(self) -> Int[Tensor, " n_test"]:
        return self._split[1]

    def batch(self, idx: Tensor | None = None) -> Batch:
        """The pairs at ``idx`` (all pairs when None) as a :class:`Batch`."""
        tokens = self.tokens if idx is None else self.tokens[idx]
        labels = self.labels if idx is None else self.labels[idx]
        targets = torch.zeros_like(tokens)
        targets[:, -1] = labels
        mask = torch.zeros(tokens.shape, dtype=torch.bool)
        mask[:, -1] = True
        return Batch(tokens, targets, mask)

    def train_batch(self, step: int) -> Batch:
        return self._train_batch

    @cached_property
    def _train_batch(self) -> Batch:
        return self.batch(self.train_idx)

    def eval_batches(self) -> dict[str, Batch]:
        return {"train": self._train_batch, "test": self.batch(self.test_idx)}

    def to_dict(self) -> dict[str, Any]:
        return {"kind": self.kind, **asdict(self)}

    def describe(self) -> str:
        return (
            f"(a {self.op} b) mod {self.p}: {self.n_pairs} pairs, "
            f"{len(self.train_idx)} train ({self.train_frac:.0%}), seed {self.seed}"
        )


@no_type_check  # validates its own fields, with one-line messages
@dataclass(frozen=True)
class InductionTask:
    """Random token sequences with one repeated segment, for induction heads.

    Each sequence of ``seq_len`` tokens (drawn uniformly from ``d_vocab``) has a
    segment of length ``L ~ U[min_len, max_len]`` starting at a random ``s1``
    copied to a random later offset ``s2 >= s1 + L``. Position ``t`` in
    ``[s2, s2 + L - 2]`` predicts ``x[t+1] = x[s1 + t - s2 + 1]`` by copying:
    only those positions enter the loss. Because ``s2 - s1`` varies, a head that
    attends a fixed distance back cannot solve the task; an induction circuit
    (previous-token head + induction head) can.

    Training batches come from a generator seeded by ``(seed, step)`` so that a
    resumed run sees the same data; the evaluation set is fixed by
    ``seed + 1_000_003`` and never overlaps the training stream's seeds.
    """

    d_vocab: int = 64
    seq_len: int = 48
    min_len: int = 4
    max_len: int = 12
    batch_size: int = 64
    n_eval: int = 512
    seed: int = 0
    kind: ClassVar[str] = "induction"

    def __post_init__(self) -> None:
        check_induction(self.d_vocab, self.seq_len, self.min_len, self.max_len, self.batch_size, self.n_eval,
                        self.seed)

    @property
    def d_vocab_out(self) -> int:
        return self.d_vocab

    @property
    def n_ctx(self) -> int:
        return self.seq_len

    def sample(self, n: int, generator: torch.Generator) -> Batch:
        """``n`` sequences, each with one repeat at a random length and offset."""
        T = self.seq_len
        tokens = torch.randint(0, self.d_vocab, (n, T), generator=generator)
        lengths = torch.randint(self.min_len, self.max_len + 1, (n,), generator=generator)
        # s1 in [0, T - 2L], then s2 in [s1 + L, T - L]; uniform draws scaled per row.
        u1, u2 = torch.rand(n, generator=generator), torch.rand(n, generator=generator)
        s1 = (u1 * (T - 2 * lengths + 1).float()).long()
        s2 = s1 + lengths + (u2 * (T - s1 - 2 * lengths + 1).float()).long()
        ar = torch.arange(T)
        rel = ar[None, :] - s2[:, None]  # offset inside the repeat
        in_rep = (rel >= 0) & (rel < lengths[:, None])
        src = (s1[:, None] + rel).clamp(0, T - 1)
        tokens = torch.where(in_rep, tokens.gather(1, src), tokens)
        targets = torch.zeros_like(tokens)
        targets[:, :-1] = tokens[:, 1:]
        mask = (rel >= 0) & (rel <= lengths[:, None] - 2)
        return Batch(tokens, targets, mask)

    def train_batch(self, step: int) -> Batch:
        g = torch.Generator().manual_seed(self.seed * 1_000_003 + step)
        return self.sample(self.batch_size, g)

    @cached_property
    def _eval(self) -> Batch:
        return self.sample(self.n_eval, torch.Generator().manual_seed(self.seed + 1_000_003))

    def eval_batches(self) -> dict[str, Batch]:
        return {"test": self._eval}

    def to_dict(self) -> dict[str, Any]:
        return {"kind": self.kind, **asdict(self)}

    def describe(self) -> str:
        return (
            f"induction: {self.d_vocab} tokens, length {self.seq_len}, repeats of "
            f"{self.min_len}-{self.max_len} at random offsets, seed {self.seed}"
        )


Task = ModularArithmetic | InductionTask
_KINDS: dict[str, type[ModularArithmetic] | type[InductionTask]] = {
    "modadd": ModularArithmetic,
    "induction": InductionTask,
}


def task_from_dict(d: dict[str, Any]) -> Task:
    """Rebuild a task from :meth:`to_dict` output (as stored in ``config.json``)."""
    d = dict(d)
    kind = d.pop("kind", None)
    if kind not in _KINDS:
        raise invalid("task.kind", f"one of {', '.join(_KINDS)}", kind)
    cls = _KINDS[kind]
    check_known_fields(d, cls, f"{kind} task")
    return cls(**d)

