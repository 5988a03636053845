"""Toy models of superposition (Elhage et al. 2022): many ReLU-output models trained at once, and their geometry.

One idea: ``n`` sparse features squeezed through ``m < n`` hidden dimensions and read back out::

    hidden = W x                  W [inst, n_hidden, n_features]  (column W_i: feature i's direction)
    out    = ReLU(W^T hidden + b)  b [inst, n_features]

Every instance is its own model (own W, b, feature importance and feature probability); the instances axis
lets one optimiser train a whole sweep in one batched step, as Anthropic's notebook and ARENA 1.3.1 do.
Each feature is ``U[0, 1]`` with probability ``1 - S`` (the density) and 0 otherwise; the loss is the
importance-weighted squared error, averaged over the batch and the features, summed over instances (so each
instance's gradient is its own). The defaults are the reference's: importance ``0.9**i`` where used,
Xavier-normal W (std ``sqrt(2 / (n_hidden + n_features))`` per instance), zero b, Adam lr 1e-3, batch 1024,
10,000 steps, constant learning rate.

The geometry: feature norms ``||W_i||``, the Gram matrix ``W^T W``, each feature's superposition
``sum_{j != i} (W^_i . W_j)^2``, its dimensionality ``D_i = ||W_i||^2 / sum_j (W^_i . W_j)^2`` and the model's
dimensions per feature ``m / ||W||_F^2``; :func:`phase_of` names the phase of the paper's n=2, m=1 (or
n=3, m=2) diagram. Figures are in :mod:`mechwork.studies.superfig`.

Example::

    >>> cfg = ToyModelConfig.sweep(n_features=5, n_hidden=2, sparsities=[0.0, 0.9], importance=0.9)
    >>> model = ToyModel(cfg, seed=0)
    >>> losses = train_toy(model, steps=300, batch_size=256, lr=1e-2, seed=0)
    >>> x = generate_batch(cfg, 4, torch.Generator().manual_seed(1))
    >>> tuple(model.hidden(x).shape), tuple(model(x).shape), losses[-1] < losses[0]
    ((4, 2, 2), (4, 2, 5), True)
    >>> ToyModelConfig(n_features=5, n_hidden=2, feature_probability=1.5)
    Traceback (most recent call last):
    mechwork.errors.ConfigError: 'feature_probability' must be in (0, 1], i.e. sparsity in [0, 1) (got 1.5)
"""

from __future__ import annotations

import math
from collections.abc import Callable, Sequence
from dataclasses import dataclass, field
from typing import Any, ClassVar

import torch
from jaxtyping import Float
from torch import Tensor, nn

from mechwork.errors import check_counts, invalid
from mechwork.results import Result

__all__ = ["PHASES", "STICKY", "Dimensionality", "FeatureGeometry", "PhaseDiagram", "ToyModel", "ToyModelConfig",
           "dimensionalities", "dimensionality", "dims_per_feature", "feature_norms", "generate_batch", "geometry",
           "gram", "instance_loss", "phase_diagram", "phase_of", "sticky_counts", "superposition", "train_toy"]

# the sticky fractions of the paper's Figure (dimensionality of a feature in each geometry)
STICKY: dict[str, float] = {"dedicated dimension": 1.0, "tetrahedron": 3 / 4, "triangle": 2 / 3, "digon": 1 / 2,
                            "pentagon": 2 / 5, "square antiprism": 3 / 8}
PHASES: tuple[str, ...] = ("not represented", "dedicated dimension", "superposition", "other")
Grid = tuple[tuple[float, ...], ...]


def _grid(name: str, value: Any, n_inst: int, n_feat: int, ok: Callable[[float], bool], valid: str) -> Grid:
    """A scalar, a per-instance list, a per-feature list (n_inst == 1 ambiguity: per instance) or an
    [inst][feat] nested list/tensor, as an [inst][feat] tuple grid."""
    t = torch.as_tensor(value, dtype=torch.float64)
    if t.dim() == 0:
        t = t.expand(n_inst, n_feat)
    elif t.dim() == 1 and t.numel() == n_inst:
        t = t[:, None].expand(n_inst, n_feat)
    elif t.dim() == 1 and t.numel() == n_feat:
        t = t[None, :].expand(n_inst, n_feat)
    elif t.dim() == 2 and t.shape[1] in (1, n_feat) and t.shape[0] in (1, n_inst):
        t = t.expand(n_inst, n_feat)
    else:
        raise invalid(name, f"a number, {n_inst} per-instance values, {n_feat} per-feature values or an "
                            f"[{n_inst}, {n_feat}] grid", f"shape {tuple(t.shape)}")
    bad = [v for v in t.flatten().tolist() if not (math.isfinite(v) and ok(v))]
    if bad:
        raise invalid(name, valid, bad[0] if t.numel() == 1 else value if t.numel() <= 8 else bad[0])
    return tuple(tuple(float(v) for v in row) for row in t.tolist())


@dataclass(frozen=True)
class ToyModelConfig:
    """n features through m hidden dimensions, ``n_instances`` models at once.

    ``feature_probability`` (the density, ``1 - S``) and ``importance`` take a number, one value per
    instance, one per feature, or an ``[n_instances, n_features]`` grid; they are stored as the grid.
    """

    n_features: int
    n_hidden: int
    n_instances: int = 1
    feature_probability: Any = 1.0  # density 1 - S per [instance][feature], in (0, 1]
    importance: Any = 1.0  # per [instance][feature], > 0
    labels: tuple[str, ...] = field(default=())  # one name per instance (e.g. "S=0.9"), for tables and figures

    def __post_init__(self) -> None:
        check_counts(n_features=self.n_features, n_hidden=self.n_hidden, n_instances=self.n_instances)
        if self.n_hidden >= self.n_features:
            raise invalid("n_hidden", f"< n_features={self.n_features} (else every feature gets its own dimension "
                                      "and nothing is in superposition)", self.n_hidden)
        fp = _grid("feature_probability", self.feature_probability, self.n_instances, self.n_features,
                   lambda v: 0 < v <= 1, "in (0, 1], i.e. sparsity in [0, 1)")
        imp = _grid("importance", self.importance, self.n_instances, self.n_features, lambda v: v > 0, "> 0")
        object.__setattr__(self, "feature_probability", fp)
        object.__setattr__(self, "importance", imp)
        labels = tuple(str(s) for s in self.labels) or tuple(f"instance {i}" for i in range(self.n_instances))
        if len(labels) != self.n_instances:
            raise invalid("labels", f"{self.n_instances} names (one per instance)", len(labels))
        object.__setattr__(self, "labels", labels)

    @classmethod
    def sweep(cls, n_features: int, n_hidden: int, sparsities: Sequence[float], importance: float | Any = 1.0,
              repeats: int = 1) -> ToyModelConfig:
        """One instance per sparsity (``repeats`` copies each, adjacent); ``importance`` a number ``r`` means
        ``r**i`` for feature i (0.9: the paper's decay), anything else is passed on as is."""
        bad = [s for s in sparsities if not (isinstance(s, (int, float)) and 0 <= s < 1)]
        if bad or not sparsities:
            raise invalid("sparsity", "a number in [0, 1)", bad[0] if bad else list(sparsities))
        check_counts(repeats=repeats)
        sp = [float(s) for s in sparsities for _ in range(repeats)]
        imp = [float(importance) ** i for i in range(n_features)] if isinstance(importance, (int, float)) \
            else importance
        labels = tuple(f"S={s:g}" + (f" #{k}" if repeats > 1 else "") for s in sparsities for k in range(repeats))
        return cls(n_features, n_hidden, len(sp), [1 - s for s in sp], imp, labels)

    def probability(self) -> Float[Tensor, "inst feat"]:
        return torch.tensor(self.feature_probability, dtype=torch.float32)

    def importances(self) -> Float[Tensor, "inst feat"]:
        return torch.tensor(self.importance, dtype=torch.float32)

    def sparsity(self) -> Float[Tensor, " inst"]:  # float64
        """Each instance's sparsity, ``1 -`` its first feature's probability (rounded to 12 places, so that the
        sparsity 0.9 a sweep was given reads back as 0.9, not 0.8999999)."""
        return torch.tensor([round(1 - row[0], 12) for row in self.feature_probability], dtype=torch.float64)


def generate_batch(cfg: ToyModelConfig, batch_size: int,
                   generator: torch.Generator | None = None) -> Float[Tensor, "batch inst feat"]:
    """Each feature ``U[0, 1]`` with its probability, else 0 (independently per example, instance and feature)."""
    check_counts(batch_size=batch_size)
    u = torch.rand((cfg.n_instances, batch_size, cfg.n_features), generator=generator)  # stored [inst, batch, feat]
    p = cfg.probability()[:, None, :]
    # one uniform per entry: on with probability p, and given u < p, u / p is U[0, 1) and independent of being on
    return torch.where(u < p, u / p, torch.zeros(())).transpose(0, 1)


class ToyModel(nn.Module):
    """``n_instances`` ReLU-output models: ``out = ReLU(W^T W x + b)``, W ``[inst, n_hidden, n_features]``."""

    def __init__(self, cfg: ToyModelConfig, seed: int = 0):
        super().__init__()
        self.cfg = cfg
        g = torch.Generator().manual_seed(int(seed))
        std = math.sqrt(2.0 / (cfg.n_hidden + cfg.n_features))  # Xavier normal of each [n_hidden, n_features]
        self.W = nn.Parameter(torch.randn(cfg.n_instances, cfg.n_hidden, cfg.n_features, generator=g) * std)
        self.b_final = nn.Parameter(torch.zeros(cfg.n_instances, cfg.n_features))
        self.register_buffer("importance", cfg.importances(), persistent=False)

    def hidden(self, x: Float[Tensor, "batch inst feat"]) -> Float[Tensor, "batch inst hidden"]:
        """The hidden layer ``W x`` (what an SAE on this model reads)."""
        return torch.bmm(x.transpose(0, 1), self.W.transpose(1, 2)).transpose(0, 1)

    def forward(self, x: Float[Tensor, "batch inst feat"]) -> Float[Tensor, "batch inst feat"]:
        return self._out(x.transpose(0, 1)).transpose(0, 1)

    def _out(self, x: Float[Tensor, "inst batch feat"]) -> Float[Tensor, "inst batch feat"]:
        h = torch.bmm(x, self.W.transpose(1, 2))  # [inst, batch, hidden]: bmm, as einsum is 2x slower here
        return torch.relu(torch.baddbmm(self.b_final[:, None, :], h, self.W))


def instance_loss(model: ToyModel, x: Float[Tensor, "batch inst feat"]) -> Float[Tensor, " inst"]:
    """Importance-weighted squared error per instance, averaged over the batch and the features."""
    xi = x.transpose(0, 1)
    imp: Tensor = model.importance  # type: ignore[assignment]  # a buffer
    return (imp[:, None, :] * (xi - model._out(xi)) ** 2).mean(dim=(1, 2))


LR_SCHEDULES: dict[str, Callable[[int, int], float]] = {
    "constant": lambda step, steps: 1.0,
    "linear": lambda step, steps: 1 - step / steps,
    "cosine": lambda step, steps: math.cos(0.5 * math.pi * step / max(steps - 1, 1)),
}


def train_toy(model: ToyModel, *, steps: int = 10_000, batch_size: int = 1024, lr: float = 1e-3, seed: int = 0,
              schedule: str = "constant", batches: Callable[[int], Tensor] | None = None,
              log_every: int = 100, desc: str = "training toy models") -> list[float]:
    """Train every instance at once with one Adam optimiser; returns the summed loss every ``log_every`` steps.

    ``batches(step)`` overrides the data (default: :func:`generate_batch` from a generator seeded ``seed``).
    Inside a command a bar (:mod:`mechwork.bars`) counts the steps."""
    from mechwork import bars

    check_counts(steps=steps, batch_size=batch_size, log_every=log_every)
    if not (isinstance(lr, (int, float)) and lr > 0 and math.isfinite(lr)):
        raise invalid("lr", "a positive number", lr)
    if schedule not in LR_SCHEDULES:
        raise invalid("schedule", " or ".join(LR_SCHEDULES), schedule)
    g = torch.Generator().manual_seed(int(seed))
    opt = torch.optim.Adam(model.parameters(), lr=lr)
    scale = LR_SCHEDULES[schedule]
    log: list[float] = []
    for step in bars.track(range(steps), desc, total=steps, unit="step"):
        for group in opt.param_groups:
            group["lr"] = lr * scale(step, steps)
        x = generate_batch(model.cfg, batch_size, g) if batches is None else batches(step)
        loss = instance_loss(model, x).sum()
        opt.zero_grad(set_to_none=True)
        loss.backward()
        opt.step()
        if step % log_every == 0 or step == steps - 1:
            log.append(float(loss.detach()))
    return log


# -- geometry --------------------------------------------------------------------------------------------------
def feature_norms(W: Float[Tensor, "inst hidden feat"]) -> Float[Tensor, "inst feat"]:
    """``||W_i||``, each feature's length in hidden space."""
    return W.norm(dim=1)


def gram(W: Float[Tensor, "inst hidden feat"]) -> Float[Tensor, "inst feat feat2"]:
    """``W^T W`` per instance."""
    return torch.einsum("ihf,ihg->ifg", W, W)


def _overlaps(W: Float[Tensor, "inst hidden feat"]) -> Float[Tensor, "inst feat feat2"]:
    """``(W^_i . W_j)^2`` (the reference's ``W / (1e-5 + ||W||)`` as W^)."""
    unit = W / (1e-5 + feature_norms(W)[:, None, :])
    return torch.einsum("ihf,ihg->ifg", unit, W) ** 2


def superposition(W: Float[Tensor, "inst hidden feat"]) -> Float[Tensor, "inst feat"]:
    """``sum_{j != i} (W^_i . W_j)^2``: how much of the other features lies along feature i (the bar colour)."""
    ov = _overlaps(W)
    return ov.sum(-1) - torch.diagonal(ov, dim1=-2, dim2=-1)


def dimensionality(W: Float[Tensor, "inst hidden feat"]) -> Float[Tensor, "inst feat"]:
    """``D_i = ||W_i||^2 / sum_j (W^_i . W_j)^2`` (1: a dedicated dimension; about 0: not represented)."""
    return feature_norms(W) ** 2 / _overlaps(W).sum(-1).clamp_min(1e-12)


def dims_per_feature(W: Float[Tensor, "inst hidden feat"]) -> Float[Tensor, " inst"]:
    """``m / ||W||_F^2``: hidden dimensions per (unit of) represented feature."""
    return W.shape[1] / (W**2).sum(dim=(1, 2))


def sticky_counts(D: Sequence[float], tol: float = 0.03) -> dict[str, Any]:
    """How many dimensionalities lie within ``tol`` of each sticky fraction (nearest wins), the share that
    does, and the share a uniform spread over [0, 1] would give (the length of the union of the windows)."""
    if not (0 < tol < 0.1):
        raise invalid("tol", "in (0, 0.1)", tol)
    counts = dict.fromkeys(STICKY, 0)
    for d in D:
        name, frac = min(STICKY.items(), key=lambda kv: abs(kv[1] - d))
        if abs(frac - d) <= tol:
            counts[name] += 1
    edges = sorted((max(0.0, f - tol), min(1.0, f + tol)) for f in STICKY.values())
    covered, end = 0.0, 0.0
    for lo, hi in edges:  # union of the windows
        covered += max(0.0, hi - max(lo, end))
        end = max(end, hi)
    n = len(D)
    return {"counts": counts, "n": n, "share": sum(counts.values()) / n if n else float("nan"),
            "null_share": covered, "tol": tol}


def phase_of(W: Float[Tensor, "hidden feat"], extra: int = -1, threshold: float = 0.5) -> str:
    """The phase of one instance for the extra feature ``extra`` (the one whose importance varies).

    "not represented": ``||W_extra|| <= threshold``; "dedicated dimension": represented and within 0.5 cosine of
    orthogonal to every other represented feature (for m=1: the others dropped); "superposition": represented
    and pointing against another represented feature (cosine <= -0.5, antipodal for m=1); else "other"."""
    norms = W.norm(dim=0)
    e = extra % W.shape[1]
    if norms[e] <= threshold:
        return "not represented"
    others = [j for j in range(W.shape[1]) if j != e and norms[j] > threshold]
    cos = [float(W[:, e] @ W[:, j] / (norms[e] * norms[j])) for j in others]
    if all(abs(c) < 0.5 for c in cos):
        return "dedicated dimension"
    return "superposition" if min(cos) <= -0.5 else "other"


# -- results -----------------------------------------------------------------------------------------------------
@dataclass(frozen=True)
class FeatureGeometry(Result):
    """The trained W of every instance with its labels: norms, superposition, Gram, dimensionalities."""

    labels: tuple[str, ...]
    sparsity: tuple[float, ...]
    importance: Float[Tensor, "inst feat"]
    W: Float[Tensor, "inst hidden feat"]
    threshold: float = 0.5  # ||W_i|| above which a feature counts as represented

    @property
    def norms(self) -> Float[Tensor, "inst feat"]:
        return feature_norms(self.W)

    def gram(self) -> Float[Tensor, "inst feat feat2"]:
        return gram(self.W)

    def superposition(self) -> Float[Tensor, "inst feat"]:
        return superposition(self.W)

    def represented(self) -> list[int]:
        """How many features each instance represents (``||W_i|| > threshold``)."""
        return [int(v) for v in (self.norms > self.threshold).sum(-1)]

    def summary(self) -> str:
        n, m = self.W.shape[2], self.W.shape[1]
        parts = [f"{lab}: {k}" for lab, k in zip(self.labels, self.represented(), strict=True)]
        return f"features represented (||W_i|| > {self.threshold:g}) of n={n} in m={m}: " + ", ".join(parts)

    def to_frame(self) -> Any:
        import pandas as pd

        sup, dim, nrm = superposition(self.W), dimensionality(self.W), self.norms
        rows = [{"instance": lab, "sparsity": self.sparsity[i], "feature": f,
                 "importance": float(self.importance[i, f]), "norm": float(nrm[i, f]),
                 "superposition": float(sup[i, f]), "dimensionality": float(dim[i, f])}
                for i, lab in enumerate(self.labels) for f in range(self.W.shape[2])]
        return pd.DataFrame(rows)

    def figure(self) -> Any:
        from mechwork.studies.superfig import norms_figure

        return norms_figure(self)


def geometry(model: ToyModel, threshold: float = 0.5) -> FeatureGeometry:
    """The :class:`FeatureGeometry` of a (trained) model."""
    cfg = model.cfg
    return FeatureGeometry(cfg.labels, tuple(float(s) for s in cfg.sparsity()), cfg.importances(),
                           model.W.detach().clone(), threshold)


@dataclass(frozen=True)
class PhaseDiagram(Result):
    """The phase of the extra feature per (feature density, relative importance) cell: the best of restarts."""

    relative_importance: tuple[float, ...]
    density: tuple[float, ...]
    phases: tuple[tuple[str, ...], ...]  # [density][relative importance]
    W: Float[Tensor, "dens imp hidden feat"]  # the lowest-loss restart of each cell
    restarts: int = 1
    agreement: float = 1.0  # share of cells where the majority of restarts agree with the best one

    def cells(self, phase: str) -> list[tuple[float, float]]:
        """The (relative importance, density) cells in ``phase``."""
        return [(r, d) for a, d in enumerate(self.density) for b, r in enumerate(self.relative_importance)
                if self.phases[a][b] == phase]

    def summary(self) -> str:
        n = len(self.density) * len(self.relative_importance)
        counts = ", ".join(f"{p}: {len(self.cells(p))}" for p in PHASES if self.cells(p))
        return f"{n} cells (best of {self.restarts} restarts each): {counts}"

    def to_frame(self) -> Any:
        import pandas as pd

        nrm = self.W.norm(dim=-2)
        return pd.DataFrame([{"density": d, "relative_importance": r, "phase": self.phases[a][b],
                              "extra_norm": float(nrm[a, b, -1]), "other_norm": float(nrm[a, b, :-1].max())}
                             for a, d in enumerate(self.density) for b, r in enumerate(self.relative_importance)])

    def figure(self) -> Any:
        from mechwork.studies.superfig import phase_figure

        return phase_figure(self)


def phase_diagram(relative_importance: Sequence[float], density: Sequence[float], *, n_features: int = 2,
                  n_hidden: int = 1, restarts: int = 3, steps: int = 10_000, batch_size: int = 1024, lr: float = 1e-3,
                  seed: int = 0, eval_batch: int = 20_000, threshold: float = 0.5) -> PhaseDiagram:
    """Train every cell ``restarts`` times in one batched model (features 0..n-2 importance 1, the extra feature
    ``r``; all at one density), keep the restart with the lowest loss on one shared evaluation batch per cell
    (common random numbers), and name its phase with :func:`phase_of`."""
    check_counts(restarts=restarts, eval_batch=eval_batch)
    R, Dn = [float(r) for r in relative_importance], [float(d) for d in density]
    cells = [(d, r) for d in Dn for r in R]
    cfg = ToyModelConfig(n_features, n_hidden, len(cells) * restarts,
                         [[d] * n_features for d, _ in cells for _ in range(restarts)],
                         [[1.0] * (n_features - 1) + [r] for _, r in cells for _ in range(restarts)],
                         tuple(f"density {d:.3g}, r {r:.3g} #{k}" for d, r in cells for k in range(restarts)))
    model = ToyModel(cfg, seed=seed)
    train_toy(model, steps=steps, batch_size=batch_size, lr=lr, seed=seed, desc="phase diagram")
    one = ToyModelConfig(n_features, n_hidden, len(cells), [[d] * n_features for d, _ in cells])
    x = generate_batch(one, eval_batch, torch.Generator().manual_seed(seed + 1))
    with torch.no_grad():
        loss = instance_loss(model, x.repeat_interleave(restarts, dim=1)).view(len(cells), restarts)
    W = model.W.detach().view(len(cells), restarts, n_hidden, n_features)
    best = loss.argmin(dim=1)
    Wb = W[torch.arange(len(cells)), best]
    names = [phase_of(w, threshold=threshold) for w in Wb]
    agree = [sum(phase_of(W[c, k], threshold=threshold) == names[c] for k in range(restarts)) * 2 > restarts
             for c in range(len(cells))]
    grid = tuple(tuple(names[a * len(R): (a + 1) * len(R)]) for a in range(len(Dn)))
    return PhaseDiagram(tuple(R), tuple(Dn), grid, Wb.view(len(Dn), len(R), n_hidden, n_features), restarts,
                        sum(agree) / len(agree))


@dataclass(frozen=True)
class Dimensionality(Result):
    """Feature dimensionalities against ``1 / (1 - S)``, and how many sit at a sticky fraction."""

    density: tuple[float, ...]  # per instance
    D: Float[Tensor, "inst feat"]
    norms: Float[Tensor, "inst feat"]
    dims_per_feature: Float[Tensor, " inst"]
    threshold: float = 0.5
    tol: float = 0.03
    fractions: ClassVar[dict[str, float]] = STICKY

    def represented_D(self) -> list[float]:
        return [float(v) for v in self.D[self.norms > self.threshold]]

    def sticky(self) -> dict[str, Any]:
        """:func:`sticky_counts` over the represented features."""
        return sticky_counts(self.represented_D(), self.tol)

    def summary(self) -> str:
        s = self.sticky()
        cnt = ", ".join(f"{k} {v}" for k, v in s["counts"].items())
        return (f"{s['n']} represented features; {100 * s['share']:.0f}% within {self.tol:g} of a sticky fraction "
                f"(uniform spread: {100 * s['null_share']:.0f}%): {cnt}")

    def to_frame(self) -> Any:
        import pandas as pd

        return pd.DataFrame([{"density": d, "inv_density": 1 / d, "feature": f, "norm": float(self.norms[i, f]),
                              "dimensionality": float(self.D[i, f]),
                              "dims_per_feature": float(self.dims_per_feature[i])}
                             for i, d in enumerate(self.density) for f in range(self.D.shape[1])])

    def figure(self) -> Any:
        from mechwork.studies.superfig import dimensionality_figure

        return dimensionality_figure(self)


def dimensionalities(model: ToyModel, threshold: float = 0.5, tol: float = 0.03) -> Dimensionality:
    """The :class:`Dimensionality` of a (trained) model whose instances differ in density."""
    W = model.W.detach()
    return Dimensionality(tuple(float(p) for p in model.cfg.probability()[:, 0]), dimensionality(W),
                          feature_norms(W), dims_per_feature(W), threshold, tol)
