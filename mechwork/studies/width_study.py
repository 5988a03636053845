"""Sweep points for the infinite-width study: coordinate checks, learning-rate transfer and lazy training.

One idea: each of Yang et al.'s (2022) and Jacot et al.'s (2018) width claims
is a single number per (parametrisation, width, seed), computed here by a
module-level point function :mod:`mechwork.studies.sweep` can run, on scikit-learn's
bundled digits (:mod:`mechwork.studies.digits`) with the MLPs of :mod:`mechwork.studies.width`.

* :func:`coord_point` -- mean ``|h|`` of every layer's pre-activations (the
  last is the logits) on a fixed batch after each of a few Adam steps.
* :func:`transfer_point` -- final training loss (on the whole training split)
  after a fixed number of minibatch Adam steps at ``lr = 2 ** log2_lr``.
* :func:`lazy_point` -- relative change of the tangent kernel on a fixed batch
  of test inputs, before vs after full-batch SGD.

The tangent kernel is the one that drives training under per-layer learning
rates: ``K(x, x') = sum_c sum_p eta_p df_c(x)/dtheta_p df_c(x')/dtheta_p``
(summed over the logits ``c``), computed per layer as
``(G G^T) * (A A^T)`` from the layer's inputs ``A`` and the logit gradients
``G`` at its outputs, so no per-sample Jacobian is ever stored.

Example::

    >>> from mechwork.studies.width_study import loglog_slope, coord_point
    >>> round(loglog_slope([64, 128, 256], [1.0, 2.0, 4.0]), 3)
    1.0
    >>> r = coord_point(param="mup", width=32, seed=0, steps=2, lr=1e-2, base_width=32, batch=16)
    >>> r["layers"], len(r["mean_abs"])
    (['input', 'hidden1', 'hidden2', 'output'], 3)
"""

from __future__ import annotations

import math
from collections.abc import Sequence
from typing import Any

import torch
import torch.nn.functional as F
from jaxtyping import Float, Int
from torch import Tensor

from mechwork.engine import correct
from mechwork.errors import check_counts, invalid
from mechwork.studies.digits import digits_data
from mechwork.studies.width import ScaledLinear, WidthConfig, WidthMLP, make_optimizer

__all__ = ["coord_point", "lazy_point", "loglog_slope", "tangent_kernel", "transfer_point"]


def loglog_slope(xs: Sequence[float | int], ys: Sequence[float | int]) -> float:
    """Least-squares slope of ``log y`` against ``log x`` (the exponent of a power law)."""
    if len(xs) != len(ys) or len(xs) < 2 or any(v <= 0 for v in (*xs, *ys)):
        raise invalid("xs, ys", "two equal-length lists of >= 2 positive numbers", (list(xs), list(ys)))
    lx, ly = [math.log(x) for x in xs], [math.log(y) for y in ys]
    mx, my = sum(lx) / len(lx), sum(ly) / len(ly)
    return sum((a - mx) * (b - my) for a, b in zip(lx, ly, strict=True)) / sum((a - mx) ** 2 for a in lx)


def _layer_names(n: int) -> list[str]:
    return ["input"] + [f"hidden{i}" for i in range(1, n - 1)] + ["output"]


def _finite(v: float) -> float | None:
    return v if math.isfinite(v) else None


def coord_point(*, param: str, width: int, seed: int, steps: int = 5, lr: float | int = 2 ** -6, depth: int = 3,
                base_width: int = 64, batch: int = 256) -> dict[str, Any]:
    """Mean |pre-activation| of every layer on one fixed training batch, at init and after each Adam step."""
    check_counts(steps=steps, batch=batch)
    data = digits_data(seed)
    model = WidthMLP(WidthConfig(param=param, width=width, base_width=base_width, depth=depth, seed=seed))
    opt = make_optimizer(model, "adam", lr)
    x, y = data.x_train[:batch], data.y_train[:batch]
    rows: list[list[float]] = []
    for step in range(steps + 1):
        zs = model.preactivations(x)
        rows.append([float(z.detach().abs().mean()) for z in zs])
        if step == steps:
            break
        loss = F.cross_entropy(zs[-1], y)
        opt.zero_grad(set_to_none=True)
        loss.backward()
        opt.step()
    return {"layers": _layer_names(len(model.layers)), "mean_abs": rows}


@torch.no_grad()
def _loss(model: WidthMLP, x: Float[Tensor, "n d"], y: Int[Tensor, " n"]) -> tuple[float, float]:
    logits = model(x)
    return float(F.cross_entropy(logits, y)), float(correct(logits, y).mean())


def transfer_point(*, param: str, width: int, log2_lr: float | int, seed: int, steps: int = 300, batch_size: int = 64,
                   depth: int = 2, base_width: int = 64, label_noise: float = 0.0) -> dict[str, Any]:
    """Adam at ``lr = 2 ** log2_lr`` for ``steps`` minibatch steps; final train and test loss (None if diverged)."""
    check_counts(steps=steps, batch_size=batch_size)
    data = digits_data(seed, label_noise=label_noise)
    model = WidthMLP(WidthConfig(param=param, width=width, base_width=base_width, depth=depth, seed=seed))
    opt = make_optimizer(model, "adam", 2.0 ** log2_lr)
    g = torch.Generator().manual_seed(seed)
    n = len(data.x_train)
    for _ in range(steps):
        idx = torch.randint(0, n, (batch_size,), generator=g)
        loss = F.cross_entropy(model(data.x_train[idx]), data.y_train[idx])
        opt.zero_grad(set_to_none=True)
        loss.backward()
        opt.step()
    train_loss, train_acc = _loss(model, data.x_train, data.y_train)
    test_loss, test_acc = _loss(model, data.x_test, data.y_test)
    return {"train_loss": _finite(train_loss), "test_loss": _finite(test_loss), "train_acc": train_acc,
            "test_acc": test_acc, "diverged": not math.isfinite(train_loss)}


def tangent_kernel(model: WidthMLP, x: Float[Tensor, "n d_in"], optimizer: str = "sgd") -> Float[Tensor, "n n"]:
    """The lr-weighted tangent kernel of ``model`` on ``x``, traced over the logits; see the module docstring."""
    inputs, zs, h = [], [], x
    for i, layer in enumerate(model.layers):
        a = h if i == 0 else model.act(h)
        inputs.append(a.detach())
        h = layer(a)
        zs.append(h)
    kernel = torch.zeros(len(x), len(x))
    for c in range(zs[-1].shape[1]):
        grads = torch.autograd.grad(zs[-1][:, c].sum(), zs, retain_graph=True)
        for layer, a, gz in zip(model.layers, inputs, grads, strict=True):
            assert isinstance(layer, ScaledLinear)
            s = layer.scale
            gg = gz @ gz.T
            kernel += gg * (a @ a.T) * (s.lr(optimizer) * s.multiplier ** 2)
            if layer.bias is not None:
                kernel += gg * s.lr(optimizer, bias=True)
    return kernel.detach()


def lazy_point(*, param: str, width: int, seed: int, lr: float | int, steps: int = 100, n_train: int = 256,
               n_kernel: int = 32, depth: int = 2, base_width: int = 64) -> dict[str, Any]:
    """Full-batch SGD on ``n_train`` digits; relative change of the tangent kernel and of the last features."""
    check_counts(steps=steps, n_train=n_train, n_kernel=n_kernel)
    data = digits_data(seed)
    model = WidthMLP(WidthConfig(param=param, width=width, base_width=base_width, depth=depth, seed=seed,
                                 bias=False))
    opt = make_optimizer(model, "sgd", lr)
    x, y, xk = data.x_train[:n_train], data.y_train[:n_train], data.x_test[:n_kernel]
    k0 = tangent_kernel(model, xk)
    with torch.no_grad():
        f0 = model.act(model.preactivations(xk)[-2])
    loss0, _ = _loss(model, x, y)
    for _ in range(steps):
        loss = F.cross_entropy(model(x), y)
        opt.zero_grad(set_to_none=True)
        loss.backward()
        opt.step()
    k1 = tangent_kernel(model, xk)
    with torch.no_grad():
        f1 = model.act(model.preactivations(xk)[-2])
    loss1, acc1 = _loss(model, x, y)
    return {"kernel_change": _finite(float((k1 - k0).norm() / k0.norm())),
            "feature_change": _finite(float((f1 - f0).norm() / f0.norm())),
            "kernel_norm0": float(k0.norm()), "train_loss0": loss0, "train_loss": _finite(loss1), "train_acc": acc1}
