"""Training runs that record their curvature: edge of stability, Adam's edge, and Omnigrok, as sweep points.

Every run here is full batch on scikit-learn's digits (:mod:`mechwork.studies.digits`)
with the square loss ``0.5 * mean_i ||f(x_i) - onehot(y_i)||^2`` (Cohen et al.
2021's choice), and every ``measure_every`` steps it records the loss,
accuracies and the sharpness (:mod:`mechwork.studies.curvature`, Lanczos):

* :func:`gd_point` -- gradient descent with step ``lr`` on a 64-200-200-10
  tanh MLP, optionally with LayerNorm after each hidden linear layer; it also
  records the squared norm of each hidden layer's (weight, bias), the
  scale-invariant parameters once LayerNorm follows, and so the effective
  learning rate ``lr / ||w||^2``.
* :func:`adam_point` -- full-batch Adam; records the raw sharpness and the
  preconditioned sharpness (the top eigenvalue of ``P^-1 H``).
* :func:`omnigrok_point` -- AdamW on a ReLU MLP whose initial weights are
  scaled by ``init_scale``; records train and test accuracy and the weight norm.
* :func:`run_point` -- any of the three, named by ``run["part"]``.

:func:`plateau` is the fixed rule the study uses to read an equilibrium off a
sharpness curve: the median over the second half of the measurements made
after the curve first reaches ``frac`` of the threshold.

Example::

    >>> from mechwork.studies.stability import gd_point, plateau
    >>> pl = plateau([0, 100, 200, 300, 400], [5.0, 19.0, 21.0, 20.0, 19.8], threshold=20.0)
    >>> pl["reached"], round(pl["median"], 2), round(pl["ratio"], 3)
    (100, 19.9, 0.995)
    >>> r = gd_point(lr=0.1, seed=0, steps=20, measure_every=10, sizes=(64, 16, 10))  # doctest: +SKIP
    >>> [row["step"] for row in r["curve"]], r["threshold"]                          # doctest: +SKIP
    ([0, 10, 20], 20.0)
"""

from __future__ import annotations

import itertools
from collections.abc import Callable, Mapping, Sequence
from typing import Any

import torch
from torch import Tensor, nn

from mechwork.engine import correct
from mechwork.errors import invalid
from mechwork.studies.curvature import adam_threshold, gd_threshold, preconditioned_sharpness, sharpness

__all__ = ["adam_point", "gd_point", "omnigrok_point", "plateau", "run_point"]


def plateau(steps: Sequence[int | float], values: Sequence[int | float], threshold: float,
            frac: float = 0.9) -> dict[str, Any]:
    """Median of ``values`` over the second half of the measurements at or after the first reaching
    ``frac * threshold``; ``{"reached": step or None, "median": value or None, "ratio": median / threshold}``."""
    if len(steps) != len(values):
        raise invalid("values", f"as many values as steps ({len(steps)})", len(values))
    if not threshold > 0:
        raise invalid("threshold", "a positive sharpness", threshold)
    if not 0 < frac <= 1:
        raise invalid("frac", "a fraction in (0, 1]", frac)
    first = next((i for i, v in enumerate(values) if v >= frac * threshold), None)
    if first is None:
        return {"reached": None, "median": None, "ratio": None, "n": 0}
    tail = sorted(values[first + (len(values) - first) // 2:])
    mid = len(tail) // 2
    med = float(tail[mid]) if len(tail) % 2 else (tail[mid - 1] + tail[mid]) / 2
    return {"reached": steps[first], "median": med, "ratio": med / threshold, "n": len(tail)}


def _mse(out: Tensor, y: Tensor) -> Tensor:
    return 0.5 * ((out - y) ** 2).sum(-1).mean()


def _data(seed: int) -> tuple[Tensor, Tensor, Tensor, Tensor, Tensor]:
    from mechwork.studies.digits import digits_data

    d = digits_data(seed=seed)
    return d.x_train, d.y_train, torch.nn.functional.one_hot(d.y_train, 10).float(), d.x_test, d.y_test


def _model(sizes: Sequence[int], act: str, seed: int, layernorm: bool) -> nn.Sequential:
    from mechwork.studies.digits import make_mlp

    mlp = make_mlp(list(sizes), act=act, seed=seed)
    if not layernorm:
        return mlp
    layers: list[nn.Module] = []
    for m in mlp:
        layers.append(m)
        if isinstance(m, nn.Linear) and m.out_features != sizes[-1]:
            layers.append(nn.LayerNorm(m.out_features))
    return nn.Sequential(*layers)


@torch.no_grad()
def _acc(model: nn.Module, x: Tensor, y: Tensor) -> float:
    return float(correct(model(x), y).mean())


def _hidden_norms(model: nn.Sequential) -> list[float]:
    """Squared norm of (weight, bias) of every linear layer but the last."""
    lins = [m for m in model if isinstance(m, nn.Linear)][:-1]
    return [float(m.weight.detach().pow(2).sum() + (0 if m.bias is None else m.bias.detach().pow(2).sum()))
            for m in lins]


def _run(model: nn.Sequential, opt: torch.optim.Optimizer, seed: int, steps: int, measure_every: int,
         measure: Callable[[Tensor], dict[str, float]]) -> dict[str, Any]:
    """The shared loop, on one torch thread: full-batch steps, every step's loss, and ``measure`` at every
    ``measure_every``."""
    if not isinstance(steps, int) or steps < 1:
        raise invalid("steps", "a positive number of steps", steps)
    if not isinstance(measure_every, int) or measure_every < 1:
        raise invalid("measure_every", "a positive number of steps", measure_every)
    threads = torch.get_num_threads()
    torch.set_num_threads(1)  # these models are too small to gain from more; on a busy machine more is far slower
    try:
        return _loop(model, opt, seed, steps, measure_every, measure)
    finally:
        torch.set_num_threads(threads)


def _loop(model: nn.Sequential, opt: torch.optim.Optimizer, seed: int, steps: int, measure_every: int,
          measure: Callable[[Tensor], dict[str, float]]) -> dict[str, Any]:
    x, y, y1h, xt, yt = _data(seed)
    losses: list[float] = []
    curve: list[dict[str, float]] = []
    for step in range(steps + 1):
        loss = _mse(model(x), y1h)
        losses.append(float(loss.detach()))
        if losses[-1] != losses[-1] or losses[-1] > 1e6:  # diverged
            curve.append({"step": step, "loss": losses[-1]})
            break
        if step % measure_every == 0 or step == steps:
            row = {"step": step, "loss": losses[-1], "train_acc": _acc(model, x, y), "test_acc": _acc(model, xt, yt)}
            curve.append({**row, **measure(loss)})
        if step == steps:
            break
        opt.zero_grad(set_to_none=True)
        loss.backward()
        opt.step()
    return {"curve": curve, "losses": losses}


def _thin(losses: list[float], n: int = 400) -> list[list[int | float]]:
    """[step, loss] pairs, at most about ``n`` of them, evenly spaced (the last one kept)."""
    stride = max(1, len(losses) // n)
    idx = list(range(0, len(losses), stride))
    if idx[-1] != len(losses) - 1:
        idx.append(len(losses) - 1)
    return [[i, losses[i]] for i in idx]


def _ups(losses: list[float], start: int) -> float:
    """Fraction of steps from ``start`` on at which the loss went up."""
    tail = losses[start:]
    return sum(b > a for a, b in itertools.pairwise(tail)) / max(1, len(tail) - 1)


def gd_point(*, lr: float, seed: int, steps: int, measure_every: int, layernorm: bool = False,
             sizes: Sequence[int] = (64, 200, 200, 10), act: str = "tanh", iters: int = 20) -> dict[str, Any]:
    """Full-batch gradient descent; sharpness, loss, accuracies and hidden-layer norms over training."""
    if not lr > 0:
        raise invalid("lr", "a positive learning rate", lr)
    model = _model(sizes, act, seed, layernorm)
    opt = torch.optim.SGD(model.parameters(), lr=lr)

    def measure(loss: Tensor) -> dict[str, float]:
        s = sharpness(loss, model, iters=iters, tol=1e-3)
        norms = _hidden_norms(model)
        return {"sharpness": s.value, **{f"norm2_{i}": v for i, v in enumerate(norms)},
                **{f"eff_lr_{i}": lr / v for i, v in enumerate(norms)}}

    run = _run(model, opt, seed, steps, measure_every, measure)
    curve = [r for r in run["curve"] if "sharpness" in r]
    pl = plateau([r["step"] for r in curve], [r["sharpness"] for r in curve], gd_threshold(lr))
    start = int(pl["reached"]) if pl["reached"] is not None else len(run["losses"])
    return {"threshold": gd_threshold(lr), "plateau": pl, "curve": run["curve"], "loss": _thin(run["losses"]),
            "loss_up_fraction": _ups(run["losses"], start), "final_loss": run["losses"][-1],
            "loss_at_reach": run["losses"][start] if start < len(run["losses"]) else None,
            "diverged": len(run["losses"]) < steps + 1}


def adam_point(*, lr: float, seed: int, steps: int, measure_every: int, beta1: float = 0.9, beta2: float = 0.999,
               eps: float = 1e-8, sizes: Sequence[int] = (64, 200, 200, 10), act: str = "tanh",
               iters: int = 20) -> dict[str, Any]:
    """Full-batch Adam; raw and preconditioned sharpness against 2 / lr and (2 + 2 beta1) / ((1 - beta1) lr)."""
    if not lr > 0:
        raise invalid("lr", "a positive learning rate", lr)
    model = _model(sizes, act, seed, False)
    opt = torch.optim.Adam(model.parameters(), lr=lr, betas=(beta1, beta2), eps=eps)

    def measure(loss: Tensor) -> dict[str, float]:
        raw = sharpness(loss, model, iters=iters, tol=1e-3).value
        if not opt.state:  # before the first step there is no preconditioner yet
            return {"sharpness": raw}
        pre = preconditioned_sharpness(loss, model, opt, iters=iters, tol=1e-3).value
        return {"sharpness": raw, "pre_sharpness": pre}

    run = _run(model, opt, seed, steps, measure_every, measure)
    curve = [r for r in run["curve"] if "pre_sharpness" in r]
    thr = adam_threshold(lr, beta1)
    pl = plateau([r["step"] for r in curve], [r["pre_sharpness"] for r in curve], thr)
    raw_tail = None
    if pl["reached"] is not None:
        tail = [r["sharpness"] for r in curve if r["step"] >= pl["reached"]]
        tail = sorted(tail[len(tail) // 2:])
        raw_tail = tail[len(tail) // 2]
    return {"threshold": thr, "gd_threshold": gd_threshold(lr), "plateau": pl, "raw_sharpness_tail": raw_tail,
            "curve": run["curve"], "loss": _thin(run["losses"]), "final_loss": run["losses"][-1],
            "diverged": len(run["losses"]) < steps + 1}


def omnigrok_point(*, init_scale: float, weight_decay: float, seed: int, steps: int, measure_every: int,
                   lr: float = 1e-3, sizes: Sequence[int] = (64, 200, 200, 10), act: str = "relu",
                   memorised: float = 0.99, generalised: float = 0.9) -> dict[str, Any]:
    """AdamW from weights scaled by ``init_scale``; steps to memorise and to generalise, and the weight norm."""
    if not init_scale > 0:
        raise invalid("init_scale", "a positive factor", init_scale)
    model = _model(sizes, act, seed, False)
    with torch.no_grad():
        for m in model:
            if isinstance(m, nn.Linear):
                m.weight.mul_(init_scale)
    opt = torch.optim.AdamW(model.parameters(), lr=lr, weight_decay=weight_decay)

    def measure(loss: Tensor) -> dict[str, float]:
        return {"weight_norm": float(sum(p.detach().pow(2).sum() for p in model.parameters())) ** 0.5}

    run = _run(model, opt, seed, steps, measure_every, measure)
    curve = run["curve"]
    mem = next((r["step"] for r in curve if r.get("train_acc", 0) >= memorised), None)
    gen = next((r["step"] for r in curve if r.get("test_acc", 0) >= generalised), None)
    at_mem = next((r["test_acc"] for r in curve if r["step"] == mem), None)
    return {"memorised": mem, "generalised": gen, "test_acc_at_memorised": at_mem,
            "final_train_acc": curve[-1].get("train_acc"), "final_test_acc": curve[-1].get("test_acc"),
            "curve": curve, "diverged": len(run["losses"]) < steps + 1}


POINTS: dict[str, Callable[..., dict[str, Any]]] = {"gd": gd_point, "adam": adam_point, "omnigrok": omnigrok_point}


def run_point(*, run: Mapping[str, Any], seed: int = 0) -> dict[str, Any]:
    """One run of any kind, ``run = {"part": "gd" | "adam" | "omnigrok", **its keyword arguments}``, so a
    study can put runs of different kinds in one sweep (longest first) and keep both workers busy."""
    kw = dict(run)
    part = kw.pop("part", None)
    if part not in POINTS:
        raise invalid("run['part']", " or ".join(POINTS), part)
    return POINTS[part](seed=seed, **kw)
