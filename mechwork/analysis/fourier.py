"""Fourier analysis of grokked modular arithmetic (Nanda et al. 2023, Sec. 4-5).

Functions on Z_p have an orthonormal basis of a constant and a cos/sin pair per
frequency k = 1..(p-1)/2. A grokked ``(a + b) mod p`` model is sparse in it:

* :func:`embedding_spectrum` -- W_E (or W_U) in the basis: norm per frequency, Gini.
* :func:`neuron_frequencies` -- each MLP neuron's last-position activation over
  the (a, b) grid, 2D-transformed; the fraction of its variance carried by the
  linear and quadratic terms of one frequency (the 3x3 block {1, cos k, sin k}
  over a times the same over b, as in the reference code).
* :func:`key_frequencies` -- chosen without a count: the gap in the embedding
  spectrum, and the frequencies of the neuron clusters; both reported.
* :func:`logit_trig_fit` -- how much of the logits cos(w_k(a + b - c)) explains.
* :func:`restricted_excluded` -- logits split into the key-frequency directions
  cos/sin(w_k(a + b)) of (a, b)-space and the rest; the restricted and excluded
  losses (progress measures over a run live in :mod:`mechwork.analysis.progress`).

Everything applies to ``op="add"`` and ``op="sub"`` (``a - b`` in place of
``a + b``); other ops raise :class:`NotApplicable`.

Example::

    >>> import mechwork
    >>> from mechwork.analysis.fourier import key_frequencies
    >>> model, task = mechwork.load("modadd-113"), mechwork.preset("modadd-113").task
    >>> kf = key_frequencies(model, task)
    >>> 3 <= len(kf.freqs) <= 8 and set(kf.from_neurons) <= set(kf.freqs)
    True
"""

from __future__ import annotations

import math
from collections.abc import Sequence
from dataclasses import dataclass
from typing import TYPE_CHECKING, Any, Protocol, cast, runtime_checkable

import torch
from jaxtyping import Float, Int
from torch import Tensor

from mechwork.errors import ConfigError, NotApplicable, invalid
from mechwork.hooks import hook_name
from mechwork.results import Result

if TYPE_CHECKING:  # pragma: no cover
    import pandas as pd
    from transformer_lens.model_bridge import TransformerBridge

__all__ = [
    "FourierBasis",
    "KeyFrequencies",
    "ModularTask",
    "NeuronFrequencies",
    "NotApplicable",
    "Spectrum",
    "embedding_spectrum",
    "fourier_basis",
    "gini",
    "grid_pass",
    "key_frequencies",
    "neuron_frequencies",
]

FOURIER_OPS = ("add", "sub")


@runtime_checkable
class ModularTask(Protocol):
    """What the Fourier analyses read of a modular-arithmetic task (any object with these, by duck typing).

    Pairs ``(a, b)`` of Z_p as token rows ``[a, b, =]``, a-major, labelled ``(a op b) mod p``.
    """

    @property
    def p(self) -> int: ...
    @property
    def op(self) -> str: ...
    @property
    def d_vocab(self) -> int: ...
    @property
    def d_vocab_out(self) -> int: ...
    @property
    def n_pairs(self) -> int: ...
    @property
    def tokens(self) -> Int[Tensor, "n_pairs 3"]: ...
    @property
    def labels(self) -> Int[Tensor, " n_pairs"]: ...
    @property
    def train_idx(self) -> Int[Tensor, " n_train"]: ...
    @property
    def test_idx(self) -> Int[Tensor, " n_test"]: ...


_MODULAR = ("p", "op", "d_vocab", "d_vocab_out", "n_pairs")  # read cheaply to recognise a modular task


@dataclass(frozen=True)
class FourierBasis:
    """Rows of ``matrix`` are orthonormal functions on Z_p: const, cos 1, sin 1, ..."""

    p: int
    matrix: Float[Tensor, "basis p"]
    labels: list[str]
    freqs: Int[Tensor, " basis"]

    def transform(self, x: Float[Tensor, "p ..."]) -> Float[Tensor, "basis ..."]:
        """Coefficients of ``x`` (indexed by residue along dim 0) in this basis."""
        return torch.tensordot(self.matrix.to(x), x, dims=([1], [0]))


def fourier_basis(p: int) -> FourierBasis:
    """The orthonormal Fourier basis of Z_p (``p`` odd, >= 3), with labels.

    >>> fourier_basis(5).labels
    ['const', 'cos 1', 'sin 1', 'cos 2', 'sin 2']
    """
    if not isinstance(p, int) or isinstance(p, bool) or p < 3 or p % 2 == 0:
        raise invalid("p", "an odd integer >= 3", p)
    x = torch.arange(p, dtype=torch.float64)
    rows = [torch.full((p,), 1.0 / math.sqrt(p), dtype=torch.float64)]
    labels, freqs = ["const"], [0]
    for k in range(1, (p - 1) // 2 + 1):
        for name, fn in (("cos", torch.cos), ("sin", torch.sin)):
            v = fn(2 * math.pi * k * x / p)
            rows.append(v / v.norm())
            labels.append(f"{name} {k}")
            freqs.append(k)
    return FourierBasis(p, torch.stack(rows).float(), labels, torch.tensor(freqs))


def gini(x: Float[Tensor, " n"]) -> float:
    """Gini coefficient of non-negative values: 0 spread evenly, -> 1 concentrated.

    >>> round(gini(torch.tensor([0.0, 0.0, 0.0, 1.0])), 3), gini(torch.ones(4))
    (0.75, 0.0)
    """
    x = x.double().flatten().sort().values
    n = x.numel()
    if n == 0 or float(x.sum()) == 0.0:
        return 0.0
    i = torch.arange(1, n + 1, dtype=torch.float64)
    return float((2 * (i * x).sum()) / (n * x.sum()) - (n + 1) / n)


# -- checks ---------------------------------------------------------------------
def check_task(model: TransformerBridge | None, task: object, analysis: str) -> ModularTask:
    """Refuse a non-modular task, an op without a Fourier circuit, or a model of another p.

    A modular task is any object with the attributes of :class:`ModularTask` (duck typing).
    """
    if not all(hasattr(task, name) for name in _MODULAR):
        raise NotApplicable(
            f"'{analysis}' needs a ModularArithmetic task (got {type(task).__name__}); "
            "Fourier analysis is for modular arithmetic"
        )
    mt = cast(ModularTask, task)
    if mt.op not in FOURIER_OPS:
        raise NotApplicable(
            f"'{analysis}' applies to op 'add' and 'sub' only (got {mt.op!r}): "
            "key frequencies, neuron clusters, trig-identity logits and restricted/excluded loss "
            "assume a circuit in a +/- b; embedding_spectrum still works"
        )
    if mt.p % 2 == 0:
        raise invalid("p", "odd for a Fourier analysis", mt.p)
    if model is not None:
        cfg = model.cfg
        if cfg.d_vocab != mt.d_vocab or cfg.d_vocab_out != mt.d_vocab_out:
            raise ConfigError(
                f"model vocabulary ({cfg.d_vocab} in, {cfg.d_vocab_out} out) does not match the task's "
                f"p={mt.p} (needs {mt.d_vocab} in, {mt.d_vocab_out} out)"
            )
    return mt


def _p_of(model: TransformerBridge, p: int | None) -> int:
    p = int(model.cfg.d_vocab_out) if p is None else p
    if model.cfg.d_vocab < p:
        raise ConfigError(f"model vocabulary {model.cfg.d_vocab} is smaller than p={p}")
    return p


# -- embedding spectrum -----------------------------------------------------------
@dataclass(frozen=True)
class Spectrum(Result):
    """A weight matrix over Z_p in the Fourier basis: one norm per frequency."""

    matrix: str  # "W_E" or "W_U"
    p: int
    component_norms: Float[Tensor, " basis"]  # norm of each basis row (const, cos 1, sin 1, ...)
    freq_norms: Float[Tensor, " freq"]  # sqrt(cos^2 + sin^2) for k = 1..(p-1)/2
    gini: float  # Gini coefficient of freq_norms

    @property
    def energy(self) -> Float[Tensor, " freq"]:
        """Fraction of the squared Fourier norm at each frequency k (the constant excluded)."""
        sq = self.freq_norms.pow(2)
        return sq / self.component_norms.pow(2).sum()

    def share(self, freqs: list[int]) -> float:
        """Fraction of the squared norm carried by ``freqs``."""
        return float(self.energy[[k - 1 for k in freqs]].sum())

    def summary(self) -> str:
        top = self.energy.argsort(descending=True)[:5]
        tops = ", ".join(f"{int(k) + 1} ({float(self.energy[k]):.1%})" for k in top)
        return f"{self.matrix} spectrum over Z_{self.p}: Gini {self.gini:.3f}; top frequencies {tops}"

    def to_frame(self) -> pd.DataFrame:
        import pandas as pd

        k = torch.arange(1, len(self.freq_norms) + 1)
        return pd.DataFrame({"freq": k, "norm": self.freq_norms, "energy": self.energy})

    def figure(self, key: list[int] | None = None) -> Any:
        import plotly.graph_objects as go

        key = key or []
        k = list(range(1, len(self.freq_norms) + 1))
        colors = ["#d62728" if f in key else "#1f77b4" for f in k]
        fig = go.Figure(go.Bar(x=k, y=self.freq_norms.tolist(), marker_color=colors))
        return fig.update_layout(
            title=f"{self.matrix} norm per Fourier frequency (Gini {self.gini:.3f})",
            xaxis_title="frequency k", yaxis_title="norm",
        )


def embedding_spectrum(
    model: TransformerBridge, matrix: str = "W_E", p: int | None = None
) -> Spectrum:
    """W_E's first ``p`` rows (or W_U's columns) in the Fourier basis of Z_p."""
    p = _p_of(model, p)
    if matrix == "W_E":
        w = model.W_E[:p]
    elif matrix == "W_U":
        w = model.W_U[:, :p].T
    else:
        raise invalid("matrix", "'W_E' or 'W_U'", matrix)
    return spectrum_of(w.detach().float().cpu(), matrix, p)


def spectrum_of(w: Float[Tensor, "p d"], name: str, p: int, basis: FourierBasis | None = None) -> Spectrum:
    """:func:`embedding_spectrum` of a ready matrix (pass ``basis`` to reuse one across calls)."""
    coef = (basis or fourier_basis(p)).transform(w)  # (basis, d)
    comp = coef.norm(dim=-1)
    fn = (comp[1::2].pow(2) + comp[2::2].pow(2)).sqrt()
    return Spectrum(name, p, comp, fn, gini(fn))


# -- running the model over the grid -------------------------------------------------
@torch.no_grad()
def grid_run(
    model: TransformerBridge, task: ModularTask, hook: str | None = hook_name("mlp_post", 0)
) -> tuple[Float[Tensor, "n_pairs d_vocab_out"], Tensor | None]:
    """Last-position logits (and ``hook``'s last-position activation) for every pair, on CPU."""
    if hook is None:
        device = next(model.parameters()).device
        return model(task.tokens.to(device))[:, -1].float().cpu(), None
    logits, acts = grid_pass(model, task, [hook])
    return logits, acts[hook][:, -1]


@torch.no_grad()
def grid_pass(
    model: TransformerBridge, task: ModularTask, hooks: Sequence[str]
) -> tuple[Float[Tensor, "n_pairs d_vocab_out"], dict[str, Tensor]]:
    """Last-position logits for every pair and the whole activation at each of ``hooks``, in one forward pass,
    on CPU (the analyses that need several hooks of the grid share this one pass)."""
    device = next(model.parameters()).device
    wanted = set(hooks)
    logits, cache = model.run_with_cache(task.tokens.to(device), names_filter=lambda name: name in wanted)
    return logits[:, -1].float().cpu(), {h: cache[h].float().cpu() for h in hooks}


# -- neuron clusters ---------------------------------------------------------------
@dataclass(frozen=True)
class NeuronFrequencies(Result):
    """Each MLP neuron's dominant frequency and the variance fraction it explains."""

    p: int
    freq: Int[Tensor, " d_mlp"]  # dominant frequency per neuron (1..(p-1)/2)
    fve: Float[Tensor, " d_mlp"]  # fraction of the neuron's variance that frequency explains
    fve_all: Float[Tensor, "freq d_mlp"]  # fraction explained by every frequency
    threshold: float = 0.85

    @property
    def clustered(self) -> Tensor:
        """Neurons whose dominant frequency explains >= ``threshold`` of their variance."""
        return self.fve >= self.threshold

    def cluster_sizes(self) -> dict[int, int]:
        """Frequency -> number of clustered neurons, largest first."""
        ks, counts = self.freq[self.clustered].unique(return_counts=True)
        pairs = sorted(zip(ks.tolist(), counts.tolist(), strict=True), key=lambda kc: -kc[1])
        return dict(pairs)

    def fraction_clustered(self, freqs: list[int] | None = None) -> float:
        """Fraction of neurons clustered (at one of ``freqs``, if given)."""
        ok = self.clustered
        if freqs is not None:
            ok = ok & torch.isin(self.freq, torch.tensor(freqs))
        return float(ok.float().mean())

    def summary(self) -> str:
        sizes = ", ".join(f"k={k}: {n}" for k, n in self.cluster_sizes().items())
        return (
            f"{int(self.clustered.sum())} of {len(self.fve)} neurons ({self.fraction_clustered():.1%}) have one "
            f"frequency explaining >= {self.threshold:.0%} of their variance; clusters {sizes}"
        )

    def to_frame(self) -> pd.DataFrame:
        import pandas as pd

        return pd.DataFrame({"neuron": range(len(self.fve)), "freq": self.freq, "fve": self.fve})

    def figure(self) -> Any:
        import plotly.graph_objects as go

        fig = go.Figure(go.Scatter(
            x=self.freq.tolist(), y=self.fve.tolist(), mode="markers", marker={"size": 5, "opacity": 0.6},
            text=[f"neuron {i}" for i in range(len(self.fve))],
        ))
        fig.add_hline(y=self.threshold, line_dash="dash")
        return fig.update_layout(title="MLP neurons: dominant frequency and fraction of variance explained",
                                 xaxis_title="dominant frequency k", yaxis_title="fraction explained")


def neuron_frequencies(
    model: TransformerBridge, task: object, threshold: float = 0.85, layer: int = 0
) -> NeuronFrequencies:
    """Cluster MLP neurons by the frequency of their last-position activation over (a, b)."""
    mt = check_task(model, task, "neuron_frequencies")
    _, acts = grid_run(model, mt, hook_name("mlp_post", layer))
    assert acts is not None
    return neuron_frequencies_of(acts, mt.p, threshold)


def neuron_frequencies_of(
    acts: Float[Tensor, "n_pairs d_mlp"], p: int, threshold: float = 0.85
) -> NeuronFrequencies:
    """:func:`neuron_frequencies` on activations already computed (rows ordered a-major)."""
    basis = fourier_basis(p).matrix
    x = acts.reshape(p, p, -1)
    x = x - x.mean(dim=(0, 1), keepdim=True)
    coef = torch.einsum("ia,abn,jb->ijn", basis, x, basis)  # 2D Fourier coefficients per neuron
    total = coef.pow(2).sum(dim=(0, 1)).clamp_min(1e-30)
    k = torch.arange(1, (p - 1) // 2 + 1)
    idx = torch.stack([torch.zeros_like(k), 2 * k - 1, 2 * k], dim=1)  # {const, cos k, sin k}
    block = coef[idx[:, :, None], idx[:, None, :]]  # (freq, 3, 3, neuron)
    fve_all = block.pow(2).sum(dim=(1, 2)) / total
    fve, best = fve_all.max(dim=0)
    return NeuronFrequencies(p, best + 1, fve, fve_all, threshold)


# -- key frequencies ---------------------------------------------------------------
@dataclass(frozen=True)
class KeyFrequencies(Result):
    """Key frequencies, chosen without a count, by two methods; ``freqs`` is their union."""

    freqs: list[int]
    from_embedding: list[int]  # above the largest gap of the sorted embedding energies
    from_neurons: list[int]  # frequencies of clusters holding >= min_cluster of the neurons
    embedding_share: float  # fraction of W_E's squared Fourier norm carried by ``freqs``
    neuron_share: float  # fraction of neurons clustered (fve >= threshold) at one of ``freqs``
    energy: Float[Tensor, " freq"] | None = None  # W_E's energy per frequency, for the figure

    @property
    def agree(self) -> bool:
        return set(self.from_embedding) == set(self.from_neurons)

    def summary(self) -> str:
        how = "agree" if self.agree else "disagree"
        return (
            f"key frequencies {self.freqs}: embedding gap {self.from_embedding}, neuron clusters "
            f"{self.from_neurons} ({how}); they carry {self.embedding_share:.1%} of W_E's Fourier energy, "
            f"and {self.neuron_share:.1%} of neurons are clustered at them"
        )

    def to_frame(self) -> pd.DataFrame:
        import pandas as pd

        return pd.DataFrame({
            "freq": self.freqs,
            "in_embedding_gap": [k in self.from_embedding for k in self.freqs],
            "neuron_cluster": [k in self.from_neurons for k in self.freqs],
        })

    def figure(self) -> Any:
        import plotly.graph_objects as go

        if self.energy is None:
            raise NotImplementedError("this KeyFrequencies carries no spectrum to plot")
        k = list(range(1, len(self.energy) + 1))
        colors = ["#d62728" if f in self.freqs else "#1f77b4" for f in k]
        fig = go.Figure(go.Bar(x=k, y=self.energy.tolist(), marker_color=colors))
        return fig.update_layout(title=f"Key frequencies {self.freqs} (red) in W_E's Fourier energy",
                                 xaxis_title="frequency k", yaxis_title="fraction of squared norm")


def embedding_gap(energy: Float[Tensor, " freq"], max_keys: int = 12) -> list[int]:
    """Frequencies above the largest ratio between consecutive sorted energies (top ``max_keys``)."""
    if isinstance(max_keys, bool) or not isinstance(max_keys, int) or max_keys < 1:
        raise invalid("max_keys", "an integer >= 1", max_keys)
    if energy.ndim != 1 or energy.numel() < 2 or not bool(torch.isfinite(energy).all()):
        raise invalid("energy", "a finite 1-D tensor of at least 2 frequencies",
                      f"shape {tuple(energy.shape)}" if energy.numel() >= 2 else f"{energy.numel()} values")
    order = energy.argsort(descending=True)
    top = energy[order][: max_keys + 1].clamp_min(1e-30).log()
    n = int((top[:-1] - top[1:]).argmax()) + 1
    return sorted((order[:n] + 1).tolist())


def key_frequencies(
    model: TransformerBridge,
    task: object,
    *,
    threshold: float = 0.85,
    min_cluster: float = 0.02,
    neurons: NeuronFrequencies | None = None,
) -> KeyFrequencies:
    """Detect the key frequencies from the embedding spectrum and from the neuron clusters."""
    mt = check_task(model, task, "key_frequencies")
    spec = embedding_spectrum(model, "W_E", mt.p)
    nf = neurons or neuron_frequencies(model, mt, threshold)
    from_emb = embedding_gap(spec.energy)
    n = len(nf.fve)
    from_neu = sorted(k for k, c in nf.cluster_sizes().items() if c >= max(2, min_cluster * n))
    freqs = sorted(set(from_emb) | set(from_neu))
    return KeyFrequencies(freqs, from_emb, from_neu, spec.share(freqs), nf.fraction_clustered(freqs), spec.energy)
