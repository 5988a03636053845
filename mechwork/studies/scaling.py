"""Scaling-law fits: ``L(N, D) = E + A/N^alpha + B/D^beta`` by Chinchilla's Approach 3, as Besiroglu et al. redid it.

Hoffmann et al. (2022) fit the parametric loss in log space: with
``a = log A``, ``b = log B``, ``e = log E``, the predicted log loss is
``logsumexp(a - alpha log N, b - beta log D, e)``. The objective is a Huber
loss (``delta = 1e-3``) on ``predicted log L - observed log L``. Besiroglu
et al. (2024) found Chinchilla's published fit inconsistent with its own
data, most likely because the optimiser stopped early. They sum the Huber
terms over the points instead of averaging them, so that the optimiser's
absolute tolerances do not end the search too soon. Their refit is
E 1.8172, A 482.01, alpha 0.3478, B 2085.43, beta 0.3658.

:func:`fit_scaling` minimises the objective with L-BFGS (scipy's L-BFGS-B,
with an analytic gradient) from every point of Chinchilla's grid of starts
and keeps the best: alpha, beta in {0, 0.5, ..., 2}, e in {-1, -0.5, ..., 1},
a, b in {0, 5, ..., 25}, 4,500 starts. ``FitConfig(n_starts=...)`` uses a
seeded subsample of the grid instead. Bootstrap intervals refit resampled
points (with replacement) and take percentiles. Each refit starts from the
``boot_starts`` grid points whose main-fit runs ended lowest, and from the
main optimum. Without ``D`` the fit is ``L(N) = E + A/N^alpha``. The
landscape has local minima: a small subsample of starts can miss the best.

Example::

    >>> import numpy as np
    >>> from mechwork.studies.scaling import FitConfig, fit_scaling
    >>> N, D = (v.ravel() for v in np.meshgrid(np.logspace(7, 10, 5), np.logspace(8, 12, 5)))
    >>> L = 1.8172 + 482.01 / N**0.3478 + 2085.43 / D**0.3658
    >>> fit = fit_scaling(L, N, D, config=FitConfig(n_starts=100))
    >>> round(fit.alpha, 3), round(fit.beta, 3)
    (0.348, 0.366)
"""

from __future__ import annotations

import itertools
import math
from collections.abc import Sequence
from dataclasses import dataclass, field
from typing import TYPE_CHECKING, Any

import numpy as np
from jaxtyping import Float

from mechwork.errors import invalid
from mechwork.results import Result

if TYPE_CHECKING:  # pragma: no cover
    import pandas as pd

__all__ = ["BESIROGLU", "CHINCHILLA_GRID", "FitConfig", "ScalingFit", "fit_scaling"]

BESIROGLU = {"E": 1.8172, "A": 482.01, "alpha": 0.3478, "B": 2085.43, "beta": 0.3658}
CHINCHILLA_GRID = {"e": (-1.0, -0.5, 0.0, 0.5, 1.0), "a": (0.0, 5.0, 10.0, 15.0, 20.0, 25.0),
                   "alpha": (0.0, 0.5, 1.0, 1.5, 2.0), "b": (0.0, 5.0, 10.0, 15.0, 20.0, 25.0),
                   "beta": (0.0, 0.5, 1.0, 1.5, 2.0)}
Values = Sequence[float] | Sequence[int] | np.ndarray  # ints are valid counts (N, D)


@dataclass(frozen=True)
class FitConfig:
    """How to fit: Huber ``delta``, sum or mean over points, the starts, and the bootstrap."""

    delta: float = 1e-3
    reduction: str = "sum"  # "sum" (Besiroglu et al.) or "mean" (Chinchilla's original)
    n_starts: int | None = None  # None: Chinchilla's whole grid; else a seeded subsample of it
    n_boot: int = 0  # bootstrap refits (0: no intervals)
    boot_starts: int = 8
    ci: float = 0.95
    seed: int = 0

    def __post_init__(self) -> None:
        if not self.delta > 0:
            raise invalid("delta", "a positive Huber threshold", self.delta)
        if self.reduction not in ("sum", "mean"):
            raise invalid("reduction", "sum or mean", self.reduction)
        if self.n_starts is not None and (not isinstance(self.n_starts, int) or self.n_starts < 1):
            raise invalid("n_starts", "None (the whole grid) or a positive number of starts", self.n_starts)
        if not isinstance(self.n_boot, int) or self.n_boot < 0:
            raise invalid("n_boot", "a number of bootstrap refits >= 0", self.n_boot)
        if not isinstance(self.boot_starts, int) or self.boot_starts < 1:
            raise invalid("boot_starts", "a positive number of starts per bootstrap refit", self.boot_starts)
        if not 0 < self.ci < 1:
            raise invalid("ci", "a confidence level in (0, 1)", self.ci)


@dataclass(frozen=True)
class ScalingFit(Result):
    """A fitted law; ``B`` and ``beta`` are None for ``L(N)``. ``ci``/``se`` are empty without a bootstrap."""

    E: float
    A: float
    alpha: float
    B: float | None
    beta: float | None
    objective: float  # the Huber objective at the optimum (summed or averaged, as configured)
    n_points: int
    n_starts: int
    config: FitConfig
    N: tuple[float, ...]
    D: tuple[float, ...] | None
    L: tuple[float, ...]
    variable: str = "N"  # what N stands for in a one-variable fit ("D" for L(D) = E + A/D^alpha)
    ci: dict[str, tuple[float, float]] = field(default_factory=dict)
    se: dict[str, float] = field(default_factory=dict)

    @property
    def params(self) -> dict[str, float]:
        names = ("E", "A", "alpha") if self.D is None else ("E", "A", "alpha", "B", "beta")
        return {n: float(getattr(self, n)) for n in names}

    def predict(self, N: Values, D: Values | None = None) -> np.ndarray:
        """The fitted loss at ``N`` (and ``D``)."""
        out = self.E + self.A / np.asarray(N, dtype=float) ** self.alpha
        if self.B is not None and self.beta is not None:
            if D is None:
                raise invalid("D", "data sizes for a fit of L(N, D)", None)
            out = out + self.B / np.asarray(D, dtype=float) ** self.beta
        return out

    @property
    def optimal_exponents(self) -> tuple[float, float] | None:
        """Chinchilla's compute-optimal N ∝ C^a, D ∝ C^b: a = beta/(alpha+beta), b = alpha/(alpha+beta)."""
        if self.beta is None:
            return None
        s = self.alpha + self.beta
        return (self.beta / s, self.alpha / s) if s > 0 else None

    def summary(self) -> str:
        def one(name: str) -> str:
            v = self.params[name]
            lo_hi = self.ci.get(name)
            return f"{name} {v:.4g}" + (f" [{lo_hi[0]:.4g}, {lo_hi[1]:.4g}]" if lo_hi else "")

        v = self.variable
        law = f"L({v}) = E + A/{v}^alpha" if self.D is None else "L(N, D) = E + A/N^alpha + B/D^beta"
        ci = f"; {self.config.ci:.0%} bootstrap intervals ({self.config.n_boot} refits)" if self.ci else ""
        how = "summed" if self.config.reduction == "sum" else "averaged"
        return (f"{law}: " + ", ".join(one(n) for n in self.params)
                + f" ({self.n_points} points, {self.n_starts} starts, {how} Huber {self.objective:.3g}{ci})")

    def to_frame(self) -> pd.DataFrame:
        import pandas as pd

        return pd.DataFrame([{"param": n, "estimate": v, "ci_low": self.ci.get(n, (math.nan,))[0],
                              "ci_high": self.ci.get(n, (math.nan, math.nan))[1], "se": self.se.get(n, math.nan)}
                             for n, v in self.params.items()])

    def figure(self) -> Any:
        """Observed losses against N (one colour per D) with the fitted curves, log-log."""
        import plotly.graph_objects as go

        n, loss = np.asarray(self.N), np.asarray(self.L)
        d = np.asarray(self.D) if self.D is not None else None
        grid = np.logspace(np.log10(n.min()), np.log10(n.max()), 60)
        fig = go.Figure()
        groups = [None] if d is None else sorted(set(d.tolist()))
        for i, g in enumerate(groups):
            sel = np.ones(len(n), bool) if g is None else d == g
            name = "observed" if g is None else f"D = {g:.3g}"
            color = f"hsl({int(270 * i / max(len(groups) - 1, 1))}, 70%, 45%)"
            fig.add_scatter(x=n[sel].tolist(), y=loss[sel].tolist(), mode="markers", name=name,
                            marker={"color": color}, legendgroup=name)
            fit = self.predict(grid, None if g is None else np.full_like(grid, g))
            fig.add_scatter(x=grid.tolist(), y=fit.tolist(), mode="lines", name=f"fit, {name}",
                            line={"color": color}, legendgroup=name, showlegend=False)
        fig.update_layout(title=self.summary().split(" (")[0], xaxis_title=self.variable, yaxis_title="loss",
                          xaxis_type="log", yaxis_type="log")
        return fig


def _objective(theta: Float[np.ndarray, " k"], log_n: Float[np.ndarray, " n"], log_d: Float[np.ndarray, " n"] | None,
               log_l: Float[np.ndarray, " n"], delta: float, scale: float) -> tuple[float, np.ndarray]:
    """The Huber objective on log L and its gradient; theta = (e, a, alpha[, b, beta])."""
    t_n = theta[1] - theta[2] * log_n
    t_d = theta[3] - theta[4] * log_d if log_d is not None else None
    m = np.maximum(t_n, theta[0]) if t_d is None else np.maximum(np.maximum(t_n, theta[0]), t_d)
    w_n, w_e = np.exp(t_n - m), np.exp(theta[0] - m)
    w_d = np.exp(t_d - m) if t_d is not None else None
    s = w_n + w_e + (w_d if w_d is not None else 0.0)
    r = m + np.log(s) - log_l
    ar = np.abs(r)
    huber = np.where(ar <= delta, 0.5 * r * r, delta * (ar - 0.5 * delta)).sum()
    psi = np.clip(r, -delta, delta) / s  # dHuber/dr times the softmax's denominator
    g_n = psi * w_n
    grad = [(psi * w_e).sum(), g_n.sum(), -(g_n @ log_n)]
    if w_d is not None and log_d is not None:
        g_d = psi * w_d
        grad += [g_d.sum(), -(g_d @ log_d)]
    return float(scale * huber), scale * np.array(grad)


def _starts(two: bool, cfg: FitConfig) -> np.ndarray:
    names = ("e", "a", "alpha", "b", "beta") if two else ("e", "a", "alpha")
    grid = np.array(list(itertools.product(*(CHINCHILLA_GRID[n] for n in names))), dtype=float)
    if cfg.n_starts is not None and cfg.n_starts < len(grid):
        grid = grid[np.random.default_rng(cfg.seed).choice(len(grid), cfg.n_starts, replace=False)]
    return grid


def _minimise(starts: np.ndarray, logs: tuple[np.ndarray, np.ndarray | None, np.ndarray],
              cfg: FitConfig) -> tuple[np.ndarray, np.ndarray]:
    """Run L-BFGS from every start; the final objectives and parameters, one row per start."""
    from scipy.optimize import minimize
    from threadpoolctl import threadpool_limits

    scale = 1.0 if cfg.reduction == "sum" else 1.0 / len(logs[0])
    fs, xs = np.full(len(starts), np.inf), np.array(starts, dtype=float)
    # one BLAS thread: L-BFGS-B's small dense algebra is ~40x slower when OpenBLAS threads contend
    with np.errstate(over="ignore", invalid="ignore"), threadpool_limits(1):
        for i, x0 in enumerate(starts):
            res = minimize(_objective, x0, args=(*logs, cfg.delta, scale), jac=True, method="L-BFGS-B")
            if np.isfinite(res.fun):
                fs[i], xs[i] = res.fun, res.x
    return fs, xs


def _natural(theta: np.ndarray, two: bool) -> dict[str, float]:
    out = {"E": math.exp(theta[0]), "A": math.exp(theta[1]), "alpha": float(theta[2])}
    if two:
        out |= {"B": math.exp(theta[3]), "beta": float(theta[4])}
    return out


def _values(name: str, v: Values, n: int | None) -> np.ndarray:
    arr = np.asarray(v, dtype=float)
    if arr.ndim != 1:
        raise invalid(name, "a 1-D sequence of numbers", f"shape {arr.shape}")
    if n is not None and len(arr) != n:
        raise invalid(name, f"one value per loss ({n} values, like L)", f"{len(arr)} values")
    bad = ~np.isfinite(arr) | (arr <= 0)
    if bad.any():
        raise invalid(name, "positive and finite everywhere (the fit takes its log)", float(arr[bad][0]))
    return arr


def fit_scaling(L: Values, N: Values, D: Values | None = None, *, config: FitConfig | None = None,
                variable: str = "N") -> ScalingFit:
    """Fit ``L(N, D) = E + A/N^alpha + B/D^beta`` (or ``L(N) = E + A/N^alpha`` without ``D``); see the module.

    ``variable`` names N in a one-variable fit's summary and figure (say "D" to fit ``L(D)``)."""
    cfg = config or FitConfig()
    if variable not in ("N", "D"):
        raise invalid("variable", "'N' or 'D' (what the fit's size variable is)", variable)
    loss = _values("L", L, None)
    n = _values("N", N, len(loss))
    d = None if D is None else _values("D", D, len(loss))
    two = d is not None
    k = 5 if two else 3
    if len(loss) < k:
        raise invalid("L", f"at least {k} points, one per fitted parameter", f"{len(loss)} points")
    logs = (np.log(n), None if d is None else np.log(d), np.log(loss))
    starts = _starts(two, cfg)
    fs, xs = _minimise(starts, logs, cfg)
    if not np.isfinite(fs).any():
        raise invalid("L", "losses a finite fit exists for", "every start diverged")
    best = xs[int(np.argmin(fs))]
    ci: dict[str, tuple[float, float]] = {}
    se: dict[str, float] = {}
    if cfg.n_boot:
        order = np.argsort(fs)[: cfg.boot_starts]
        boot_x0 = np.vstack([best[None], starts[order]])
        rng = np.random.default_rng(cfg.seed)
        draws = []
        for _ in range(cfg.n_boot):
            idx = rng.integers(0, len(loss), len(loss))
            sub = (logs[0][idx], None if logs[1] is None else logs[1][idx], logs[2][idx])
            bf, bx = _minimise(boot_x0, sub, cfg)
            if np.isfinite(bf).any():
                draws.append(_natural(bx[int(np.argmin(bf))], two))
        q = (50 * (1 - cfg.ci), 50 * (1 + cfg.ci))
        for name in draws[0] if draws else ():
            vals = np.array([dr[name] for dr in draws])
            lo, hi = np.percentile(vals, q)
            ci[name], se[name] = (float(lo), float(hi)), float(vals.std(ddof=1)) if len(vals) > 1 else math.nan
    p = _natural(best, two)
    return ScalingFit(E=p["E"], A=p["A"], alpha=p["alpha"], B=p.get("B"), beta=p.get("beta"),
                      objective=float(fs.min()), n_points=len(loss), n_starts=len(starts), config=cfg,
                      N=tuple(n.tolist()), D=None if d is None else tuple(d.tolist()), L=tuple(loss.tolist()),
                      variable=variable if d is None else "N", ci=ci, se=se)
