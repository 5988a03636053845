"""Sharpness: the top eigenvalue of the loss Hessian, from Hessian-vector products only.

The Hessian H of a loss w.r.t. the parameters is never formed. Each
Hessian-vector product is one double backward pass (the gradient is taken
once with ``create_graph=True``; then ``d(g . v)/dw = H v``), and the top
eigenvalue comes from an iterative method on that operator:

* **Lanczos** (the default) -- ``iters`` steps of the Lanczos recurrence with
  full re-orthogonalisation; the top Ritz value of the tridiagonal matrix is
  the algebraically largest eigenvalue (what Cohen et al. track).
* **power** iteration -- converges to the eigenvalue of largest *magnitude*;
  if that is negative, a second run on ``H - lambda I`` finds the top one.

Both stop early once the estimate changes by less than ``tol`` (relative).

**Preconditioned sharpness** (Cohen et al. 2022, "Adaptive gradient methods at
the edge of stability"). Adam's step is ``w -= lr * P^-1 m`` with the raw
first moment ``m`` and the diagonal preconditioner
``P = (1 - beta1^t) * (sqrt(v_hat) + eps)``, ``v_hat = v / (1 - beta2^t)``.
Full-batch Adam is stable on a quadratic while the top eigenvalue of
``P^-1 H`` stays below ``(2 + 2 beta1) / ((1 - beta1) lr)`` (38 / lr at
beta1 = 0.9), against 2 / lr for plain gradient descent. :func:`adam_preconditioner`
reads ``P`` from a ``torch.optim.Adam``'s state (``exp_avg_sq``, ``step``:
the preconditioner of the step just taken), and the eigenvalue is computed
on the symmetric ``P^-1/2 H P^-1/2``, which has the same spectrum.

Example::

    >>> import torch
    >>> from mechwork.studies.curvature import sharpness
    >>> w = torch.tensor([1.0, 1.0], dtype=torch.float64, requires_grad=True)
    >>> loss = 3.0 * w[0] ** 2 + 0.5 * w[1] ** 2      # Hessian diag(6, 1)
    >>> round(sharpness(loss, [w]).value, 6)
    6.0
"""

from __future__ import annotations

import math
from collections.abc import Callable, Iterable, Sequence
from dataclasses import dataclass

import torch
from jaxtyping import Float
from torch import Tensor, nn

from mechwork.errors import ConfigError, invalid

__all__ = [
    "Sharpness",
    "adam_preconditioner",
    "adam_threshold",
    "gd_threshold",
    "hvp_operator",
    "preconditioned_sharpness",
    "sharpness",
    "top_eigenvalue",
]

METHODS = ("lanczos", "power")
MatVec = Callable[[Tensor], Tensor]


@dataclass(frozen=True)
class Sharpness:
    """The top eigenvalue of a (possibly preconditioned) Hessian, and how it was found."""

    value: float
    iterations: int  # Hessian-vector products used
    converged: bool  # the estimate settled within ``tol`` before ``iters`` ran out
    method: str
    preconditioned: bool = False

    def summary(self) -> str:
        what = "preconditioned sharpness" if self.preconditioned else "sharpness"
        state = "converged" if self.converged else "not converged"
        return f"{what} {self.value:.6g} ({self.method}, {self.iterations} HVPs, {state})"


def gd_threshold(lr: float) -> float:
    """2 / lr: the largest curvature gradient descent with step ``lr`` is stable on."""
    if not lr > 0:
        raise invalid("lr", "a positive learning rate", lr)
    return 2.0 / lr


def adam_threshold(lr: float, beta1: float = 0.9) -> float:
    """(2 + 2 beta1) / ((1 - beta1) lr): Adam's bound on the preconditioned sharpness (38 / lr at beta1 0.9)."""
    if not lr > 0:
        raise invalid("lr", "a positive learning rate", lr)
    if not 0 <= beta1 < 1:
        raise invalid("beta1", "a momentum coefficient in [0, 1)", beta1)
    return (2.0 + 2.0 * beta1) / ((1.0 - beta1) * lr)


def _params(params: nn.Module | Iterable[Tensor]) -> list[Tensor]:
    got = list(params.parameters()) if isinstance(params, nn.Module) else list(params)
    got = [p for p in got if isinstance(p, Tensor) and p.requires_grad]
    if not got:
        raise invalid("params", "a module or tensors with at least one that requires grad", "none")
    return got


def hvp_operator(loss: Tensor, params: nn.Module | Iterable[Tensor]) -> tuple[MatVec, int]:
    """``(v -> H v, n)`` on flat vectors of the ``n`` parameters' length; the graph is kept for reuse."""
    if not isinstance(loss, Tensor) or loss.numel() != 1:
        raise invalid("loss", "a scalar tensor", type(loss).__name__ if not isinstance(loss, Tensor)
                      else f"shape {tuple(loss.shape)}")
    if not loss.requires_grad:
        raise invalid("loss", "a scalar that requires grad (computed from the parameters, outside no_grad)",
                      "a tensor without grad")
    ps = _params(params)
    grads = torch.autograd.grad(loss, ps, create_graph=True, allow_unused=True)
    idx = [i for i, g in enumerate(grads) if g is not None and g.requires_grad]
    if not idx:
        raise ConfigError("'loss' has no second derivative w.r.t. 'params' (is it linear in them?)")
    sizes = [p.numel() for p in ps]

    def matvec(v: Tensor) -> Tensor:
        chunks = torch.split(v, sizes)
        dot = torch.stack([(grads[i] * chunks[i].view_as(ps[i]).to(grads[i].dtype)).sum() for i in idx]).sum()
        hv = torch.autograd.grad(dot, ps, retain_graph=True, allow_unused=True)
        return torch.cat([torch.zeros(s, dtype=v.dtype) if h is None else h.reshape(-1).to(v.dtype)
                          for h, s in zip(hv, sizes, strict=True)])

    return matvec, sum(sizes)


def _check(iters: int, tol: float, method: str) -> None:
    if not isinstance(iters, int) or isinstance(iters, bool) or iters < 1:
        raise invalid("iters", "a positive number of iterations", iters)
    if not (isinstance(tol, (int, float)) and tol > 0):
        raise invalid("tol", "a positive relative tolerance", tol)
    if method not in METHODS:
        raise invalid("method", " or ".join(METHODS), method)


def _power(matvec: MatVec, v: Tensor, iters: int, tol: float, shift: float = 0.0) -> tuple[float, int, bool]:
    v = v / v.norm()
    value = math.nan
    for k in range(1, iters + 1):
        w = matvec(v) - shift * v
        new = float(v @ w)
        norm = w.norm()
        if norm == 0:
            return new + shift, k, True
        v = w / norm
        if k > 1 and abs(new - value) <= tol * max(abs(new), 1e-30):
            return new + shift, k, True
        value = new
    return value + shift, iters, False


def _lanczos(matvec: MatVec, v: Tensor, iters: int, tol: float) -> tuple[float, int, bool]:
    n = v.numel()
    q = v / v.norm()
    basis = [q]
    alphas: list[float] = []
    betas: list[float] = []
    value = math.nan
    for k in range(1, min(iters, n) + 1):
        w = matvec(q)
        alphas.append(float(q @ w))
        qs = torch.stack(basis)
        for _ in range(2):  # full re-orthogonalisation, twice for safety
            w = w - qs.T @ (qs @ w)
        t = torch.diag(torch.tensor(alphas, dtype=torch.float64))
        if betas:
            off = torch.tensor(betas, dtype=torch.float64)
            t = t + torch.diag(off, 1) + torch.diag(off, -1)
        new = float(torch.linalg.eigvalsh(t)[-1])
        beta = float(w.norm())
        if beta <= 1e-12 * max(abs(new), 1.0) or k == n:  # invariant subspace: the Ritz values are exact
            return new, k, True
        if k > 1 and abs(new - value) <= tol * max(abs(new), 1e-30):
            return new, k, True
        value = new
        q = w / beta
        basis.append(q)
        betas.append(beta)
    return value, min(iters, n), False


def top_eigenvalue(matvec: MatVec, n: int, *, iters: int = 20, tol: float = 1e-4, method: str = "lanczos",
                   seed: int = 0) -> Sharpness:
    """The top eigenvalue of a symmetric operator on R^n given as ``v -> A v`` (float64 vectors)."""
    _check(iters, tol, method)
    if not isinstance(n, int) or n < 1:
        raise invalid("n", "a positive dimension", n)
    g = torch.Generator().manual_seed(seed)
    v = torch.randn(n, generator=g, dtype=torch.float64)
    if method == "lanczos":
        value, k, ok = _lanczos(matvec, v, iters, tol)
        return Sharpness(value, k, ok, method)
    value, k, ok = _power(matvec, v, iters, tol)
    if value < 0:  # found the most negative eigenvalue; the top one is the largest of H - value I
        top, k2, ok = _power(matvec, torch.randn(n, generator=g, dtype=torch.float64), iters, tol, shift=value)
        value, k = top, k + k2
    return Sharpness(value, k, ok, method)


def sharpness(loss: Tensor, params: nn.Module | Iterable[Tensor], *, iters: int = 20, tol: float = 1e-4,
              method: str = "lanczos", seed: int = 0) -> Sharpness:
    """The top eigenvalue of the Hessian of ``loss`` w.r.t. ``params``; see the module docstring."""
    _check(iters, tol, method)
    matvec, n = hvp_operator(loss, params)
    return top_eigenvalue(matvec, n, iters=iters, tol=tol, method=method, seed=seed)


def adam_preconditioner(optimizer: torch.optim.Optimizer,
                        params: Sequence[Tensor] | None = None) -> Float[Tensor, " n"]:
    """Adam's diagonal ``P = (1 - beta1^t) (sqrt(v / (1 - beta2^t)) + eps)``, flattened over ``params``."""
    if not isinstance(optimizer, torch.optim.Adam | torch.optim.AdamW):
        raise invalid("optimizer", "a torch.optim.Adam or AdamW", type(optimizer).__name__)
    wanted = None if params is None else {id(p) for p in params}
    parts = []
    for group in optimizer.param_groups:
        if group.get("amsgrad"):
            raise invalid("optimizer", "Adam without amsgrad (its preconditioner is a running maximum)", "amsgrad")
        beta1, beta2 = group["betas"]
        eps = group["eps"]
        for p in group["params"]:
            if wanted is not None and id(p) not in wanted:
                continue
            state = optimizer.state.get(p, {})
            if "exp_avg_sq" not in state:
                raise invalid("optimizer", "an Adam that has taken at least one step", "no exp_avg_sq state")
            t = float(state["step"])
            v_hat = state["exp_avg_sq"].detach().double() / (1.0 - beta2**t)
            parts.append(((1.0 - beta1**t) * (v_hat.sqrt() + eps)).reshape(-1))
    if not parts:
        raise invalid("params", "parameters the optimizer holds", "none of them")
    return torch.cat(parts)


def preconditioned_sharpness(loss: Tensor, params: nn.Module | Iterable[Tensor],
                             precond: Float[Tensor, " n"] | torch.optim.Optimizer, *, iters: int = 20,
                             tol: float = 1e-4, method: str = "lanczos", seed: int = 0) -> Sharpness:
    """The top eigenvalue of ``P^-1 H`` (as ``P^-1/2 H P^-1/2``); ``precond`` is ``P``'s diagonal or an Adam."""
    _check(iters, tol, method)
    ps = _params(params)
    p_diag = adam_preconditioner(precond, ps) if isinstance(precond, torch.optim.Optimizer) else precond
    if not isinstance(p_diag, Tensor) or p_diag.dim() != 1:
        raise invalid("precond", "a 1-d tensor (P's diagonal) or an Adam optimizer", type(precond).__name__)
    n_params = sum(p.numel() for p in ps)
    if p_diag.numel() != n_params or not bool((p_diag > 0).all()):
        raise invalid("precond", f"{n_params} positive entries", f"{p_diag.numel()} entries, min "
                      f"{float(p_diag.min()) if p_diag.numel() else 'n/a'}")
    matvec, n = hvp_operator(loss, ps)
    d = p_diag.detach().double().rsqrt()
    res = top_eigenvalue(lambda v: d * matvec(d * v), n, iters=iters, tol=tol, method=method, seed=seed)
    return Sharpness(res.value, res.iterations, res.converged, res.method, preconditioned=True)
