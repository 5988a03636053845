"""Small MLPs on scikit-learn's bundled digits (8x8 images, 10 classes): nothing is downloaded.

The data set ships inside scikit-learn (1,797 images); :func:`digits_data`
standardises the 64 pixels with the training split's statistics and splits
by a seeded permutation. :func:`make_mlp` builds ``64-h1-...-10`` MLPs with a
chosen activation; :func:`train_mlp` trains one full-batch or minibatch with
SGD or Adam, optionally from given initial weights and under pruning masks
(see :mod:`mechwork.studies.prune`), and reports test accuracy.

Example::

    >>> from mechwork.studies.digits import digits_data, make_mlp, train_mlp
    >>> data = digits_data(seed=0)
    >>> tuple(data.x_train.shape), tuple(data.x_test.shape)
    ((1438, 64), (359, 64))
    >>> res = train_mlp(make_mlp([64, 32, 10], seed=0), data, steps=200, lr=1e-2)
    >>> res.test_acc > 0.9
    True
"""

from __future__ import annotations

import itertools
from collections.abc import Mapping, Sequence
from dataclasses import dataclass
from functools import cache

import torch
import torch.nn.functional as F
from jaxtyping import Float
from torch import Tensor, nn

from mechwork.engine import correct
from mechwork.errors import check_counts, invalid
from mechwork.fastpath import ACTIVATIONS

__all__ = ["MLP_ACTIVATIONS", "Activation", "Digits", "MLPResult", "digits_data", "make_mlp", "train_mlp"]

MLP_ACTIVATIONS = ("relu", "tanh", "gelu")  # the nonlinearities a study MLP takes (from mechwork.fastpath.ACTIVATIONS)


class Activation(nn.Module):
    """One of :data:`mechwork.fastpath.ACTIVATIONS`, by name, as a (parameter-free) layer."""

    def __init__(self, name: str):
        super().__init__()
        if name not in MLP_ACTIVATIONS:
            raise invalid("act", f"one of {', '.join(MLP_ACTIVATIONS)}", name)
        self.name = name

    def forward(self, x: Float[Tensor, "*batch d"]) -> Float[Tensor, "*batch d"]:
        return ACTIVATIONS[self.name](x)

    def extra_repr(self) -> str:
        return self.name


@dataclass(frozen=True)
class Digits:
    x_train: Tensor
    y_train: Tensor
    x_test: Tensor
    y_test: Tensor


@cache
def _raw() -> tuple[Tensor, Tensor]:
    from sklearn.datasets import load_digits

    d = load_digits()
    return torch.tensor(d.data, dtype=torch.float32), torch.tensor(d.target, dtype=torch.long)


def digits_data(seed: int = 0, test_frac: float = 0.2, label_noise: float = 0.0) -> Digits:
    """Standardised digits, split by a seeded permutation; ``label_noise`` re-draws that fraction of train labels."""
    if not 0.0 < test_frac < 1.0:
        raise invalid("test_frac", "a fraction in (0, 1)", test_frac)
    if not 0.0 <= label_noise < 1.0:
        raise invalid("label_noise", "a fraction in [0, 1)", label_noise)
    x, y = _raw()
    g = torch.Generator().manual_seed(seed)
    perm = torch.randperm(len(x), generator=g)
    n_test = round(test_frac * len(x))
    te, tr = perm[:n_test], perm[n_test:]
    mean, std = x[tr].mean(0), x[tr].std(0).clamp_min(1e-3)
    xs = (x - mean) / std
    y_tr = y[tr].clone()
    if label_noise > 0:
        flip = torch.rand(len(tr), generator=g) < label_noise
        y_tr[flip] = torch.randint(0, 10, (int(flip.sum()),), generator=g)
    return Digits(xs[tr], y_tr, xs[te], y[te])


def make_mlp(sizes: Sequence[int], *, act: str = "relu", seed: int = 0, bias: bool = True) -> nn.Sequential:
    """An MLP ``sizes[0] -> ... -> sizes[-1]`` with PyTorch's default init, seeded."""
    if len(sizes) < 2 or any(not isinstance(n, int) or n < 1 for n in sizes):
        raise invalid("sizes", "at least two positive layer widths", list(sizes))
    if act not in MLP_ACTIVATIONS:
        raise invalid("act", f"one of {', '.join(MLP_ACTIVATIONS)}", act)
    torch.manual_seed(seed)
    layers: list[nn.Module] = []
    for i, (a, b) in enumerate(itertools.pairwise(sizes)):
        layers.append(nn.Linear(a, b, bias=bias))
        if i < len(sizes) - 2:
            layers.append(Activation(act))
    return nn.Sequential(*layers)


@dataclass(frozen=True)
class MLPResult:
    model: nn.Module
    test_acc: float
    train_acc: float
    train_loss: float
    best_test_acc: float
    history: list[dict[str, float]]  # step (as a float), loss, test_acc


@torch.no_grad()
def _acc(model: nn.Module, x: Tensor, y: Tensor) -> float:
    return float(correct(model(x), y).mean())


def train_mlp(
    model: nn.Module,
    data: Digits,
    *,
    steps: int = 2000,
    lr: float = 1e-3,
    optimizer: str = "adam",
    batch_size: int | None = 64,
    weight_decay: float = 0.0,
    masks: Mapping[str, Tensor] | None = None,
    eval_every: int = 100,
    seed: int = 0,
) -> MLPResult:
    """Train ``model`` on ``data`` (cross-entropy); pruned weights stay zero under ``masks``."""
    if optimizer not in ("adam", "sgd"):
        raise invalid("optimizer", "adam or sgd", optimizer)
    if not isinstance(steps, int) or steps < 1:
        raise invalid("steps", "a positive number of steps", steps)
    check_counts(eval_every=eval_every)
    if batch_size is not None:  # None: full batch
        check_counts(batch_size=batch_size)
    params = dict(model.named_parameters())
    hook = None
    if masks is not None:
        from mechwork.masks import MaskedOptimizerHook

        hook = MaskedOptimizerHook(params, masks)
        hook.after_step()
    opt: torch.optim.Optimizer = (torch.optim.Adam(model.parameters(), lr=lr, weight_decay=weight_decay)
                                  if optimizer == "adam" else
                                  torch.optim.SGD(model.parameters(), lr=lr, weight_decay=weight_decay))
    g = torch.Generator().manual_seed(seed)
    n = len(data.x_train)
    history: list[dict[str, float]] = []
    best = 0.0
    loss = torch.tensor(0.0)
    for step in range(1, steps + 1):
        idx = torch.randint(0, n, (batch_size,), generator=g) if batch_size else slice(None)
        loss = F.cross_entropy(model(data.x_train[idx]), data.y_train[idx])
        opt.zero_grad(set_to_none=True)
        loss.backward()
        if hook is not None:
            hook.before_step()
        opt.step()
        if hook is not None:
            hook.after_step()
        if step % eval_every == 0 or step == steps:
            acc = _acc(model, data.x_test, data.y_test)
            best = max(best, acc)
            history.append({"step": float(step), "loss": float(loss.detach()), "test_acc": acc})
    return MLPResult(model, _acc(model, data.x_test, data.y_test), _acc(model, data.x_train, data.y_train),
                     float(loss.detach()), best, history)
