"""The induction kit: random sequences with one repeated segment, for induction heads (Olsson et al. 2022).

:class:`InductionTask` draws sequences in which a segment of random length is repeated at a random
offset; only the positions inside the repeat, whose next token is predictable by copying, count
towards loss and accuracy. The kit adds the ``induction-2l`` preset (a 2-layer attention-only
model), plain AdamW on fresh batches, the standard probe (``[r, r]`` against a fresh first half)
and the lines ``mechwork info`` says about a run.

Example::

    >>> from mechwork.tasks.induction import KIT, InductionTask
    >>> task = InductionTask(d_vocab=16, seq_len=16, max_len=6, batch_size=4, n_eval=8)
    >>> tuple(task.batch("train", step=3).tokens.shape), tuple(task.batch("test").tokens.shape)
    ((4, 16), (8, 16))
    >>> KIT.probe(task, n=2).clean.shape
    torch.Size([2, 16])
"""

from __future__ import annotations

from collections.abc import Mapping
from dataclasses import asdict, dataclass
from functools import cached_property
from typing import TYPE_CHECKING, Any, ClassVar, no_type_check

from mechwork.errors import invalid
from mechwork.kit import Batch, Kit, Preset, Probe, register
from mechwork.limits import COMMANDS, check_fits, check_induction, check_seed, probe_bytes
from mechwork.models import ToyConfig

if TYPE_CHECKING:  # pragma: no cover (torch loads when the task's data is first asked for)
    import pandas as pd
    import torch
    from torch import Tensor

    from mechwork.results import Analysis
    from mechwork.source import Source
    from mechwork.training import TrainConfig

__all__ = ["KIT", "InductionTask"]


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
    eval_splits: ClassVar[tuple[str, ...]] = ("test",)

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
        import torch
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

    def batch(self, split: str, step: int = 0) -> Batch:
        """The data seam: ``"train"`` (fresh sequences, seeded by step) or ``"test"`` (the fixed evaluation set)."""
        if split == "train":
            return self.train_batch(step)
        if split == "test":
            return self._eval
        raise invalid("split", "train or test", split)

    def train_batch(self, step: int) -> Batch:
        import torch
        g = torch.Generator().manual_seed(self.seed * 1_000_003 + step)
        return self.sample(self.batch_size, g)

    @cached_property
    def _eval(self) -> Batch:
        import torch
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


# -- the kit --------------------------------------------------------------------------------------
PRESET = Preset(
    "induction-2l",
    ToyConfig(
        n_layers=2, d_model=64, n_heads=4, d_head=16, d_mlp=None,
        d_vocab=64, d_vocab_out=64, n_ctx=48, init="gpt2",
    ),
    InductionTask(d_vocab=64, seq_len=48),
    "2-layer attention-only transformer that forms induction heads",
)
ACCURACY = "induction accuracy (next token inside the repeated segments of held-out sequences)"


def model(task: InductionTask) -> ToyConfig:
    """The induction-2l architecture, sized to the task's vocabulary and length."""
    return ToyConfig.from_dict(PRESET.model.to_dict() | {"d_vocab": task.d_vocab, "d_vocab_out": task.d_vocab_out,
                                                         "n_ctx": task.n_ctx})


def recipe(task: InductionTask) -> TrainConfig:
    """Plain AdamW on fresh batches."""
    from mechwork.training import TrainConfig

    return TrainConfig(lr=3e-3, weight_decay=0.01, warmup_steps=100, steps=3000, eval_every=100)


def probe(task: InductionTask, n: int = 8, seed: int = 0, *, half: int | None = None) -> Probe:
    """``n`` sequences ``[r, r]`` of two equal random halves; the corrupted input draws a fresh first half, so
    nothing in the second half can be copied; the metric is the logit of the right next token against the
    mean logit, averaged over the second half (linear in the logits, which also suits attribution patching)."""
    import torch
    if not isinstance(n, int) or n < 1:
        raise invalid("n", "a positive number of prompts", n)
    check_seed(seed)
    h = task.seq_len // 2 if half is None else half
    check_fits(f"{n:,} standard prompts of {2 * h} tokens", probe_bytes(n, 2 * h))
    g = torch.Generator().manual_seed(seed)
    if not 2 <= h <= task.seq_len // 2:
        raise invalid("half", f"an integer in [2, {task.seq_len // 2}]", h)
    first = torch.randint(0, task.d_vocab, (n, h), generator=g)
    clean = torch.cat([first, first], 1)
    corrupted = torch.cat([torch.randint(0, task.d_vocab, (n, h), generator=g), first], 1)
    target = clean[:, h + 1:, None]

    def metric(logits: Tensor) -> Tensor:
        lg = logits[:, h:-1]
        return (lg.gather(-1, target.to(lg.device))[..., 0] - lg.mean(-1)).mean()

    return Probe(clean, corrupted, metric,
                 f"{n} sequences [r, r] of two equal halves of {h} tokens; corrupted: a fresh first half; "
                 "metric: logit of the right next token minus the mean logit, over the second half")


def batch_line(task: InductionTask, train: Mapping[str, Any]) -> str:
    """The task draws fresh sequences every step; ``TrainConfig.batch_size`` is not used."""
    return f"minibatches of {task.batch_size} fresh sequences per step"


def history_lines(task: InductionTask, df: pd.DataFrame) -> list[str]:
    """The last and best induction accuracy."""
    if "test_acc" not in df or not len(df):
        return []
    best = int(df["test_acc"].idxmax())
    return [f"{ACCURACY}: {df['test_acc'].iloc[-1]:.2%} at step {int(df['step'].iloc[-1])}; best "
            f"{df['test_acc'].loc[best]:.2%} at step {int(df['step'].loc[best])}"]


def embedded_lines(task: InductionTask, meta: Mapping[str, Any]) -> list[str]:
    """The embedded model's accuracy inside and outside the repeats (else its history)."""
    import pandas as pd

    s = meta.get("summary", {})
    hist = (meta.get("history") or {}).get("metrics")
    step = meta.get("step", s.get("steps"))
    if "repeat_acc" in s:
        return [f"{ACCURACY} {s['repeat_acc']:.2%} at step {step}"
                + (f"; {s['other_acc']:.2%} elsewhere" if "other_acc" in s else "")]
    return history_lines(task, pd.DataFrame(hist)) if hist else []


def analyse(source: Source) -> Analysis:
    """Every result of the induction dashboard, computed once (:func:`mechwork.analysis.induction.analyse`), and
    ``circuit``: the circuit of the standard probe (EAP scores over the position-free edge graph, exact scores,
    the top-n circuit and its faithfulness curve; :func:`mechwork.analysis.prompt.circuit_result`), and ``sae`` when
    the source has an SAE (:func:`sae`)."""
    from mechwork.analysis.induction import analyse as induction
    from mechwork.analysis.prompt import circuit_result

    bundle, pr = induction(source), probe(source.task, n=8, seed=0)  # the probe bundle["patching"] ran on
    values = (bundle["patching"].clean_value, bundle["patching"].corrupted_value)
    return bundle.replace(circuit=circuit_result(source.model, pr.clean, pr.corrupted, pr.metric, values=values),
                          sae=sae(source))


def sae(source: Source) -> Any:
    """The source's SAE at ``blocks.1.hook_resid_pre`` (shipped with a preset, or in a run's ``saes/``), read at
    every position of the task's held-out sequences: its metrics and the feature pages of its 5 most often firing
    latents (:func:`mechwork.analysis.features.sae_result`); None without one."""
    import torch

    from mechwork.analysis.features import sae_result

    held_out = source.task.batch("test")
    every = torch.ones(held_out.tokens.shape, dtype=torch.bool)
    return sae_result(source, "blocks.1.hook_resid_pre", held_out, positions=every)


KIT = register(Kit(
    kind="induction",
    task=InductionTask,
    model=model,
    recipe=recipe,
    probe=probe,
    analyse=analyse,
    presets={PRESET.name: PRESET},
    description="Train the 2-layer attention-only model on repeated random sequences.",
    command=COMMANDS["induction"],
    batch_line=batch_line,
    history_lines=history_lines,
    embedded=embedded_lines,
))
