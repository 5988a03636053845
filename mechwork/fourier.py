"""Fourier analysis of modular-arithmetic models: the basis of functions on Z_p.

Functions on Z_p (a vector indexed by residues 0..p-1) have an orthonormal
basis of a constant and a cosine/sine pair per frequency k = 1..(p-1)/2
(Nanda et al. 2023, Sec. 4). Grokked modular-addition models are sparse in it.

This module starts with the basis itself; the spectrum, key-frequency,
neuron-cluster and progress-measure analyses build on it.

Example::

    >>> from mechwork.fourier import fourier_basis
    >>> basis = fourier_basis(7)
    >>> basis.matrix.shape, basis.labels[:3]
    (torch.Size([7, 7]), ['const', 'cos 1', 'sin 1'])
    >>> bool(torch.allclose(basis.matrix @ basis.matrix.T, torch.eye(7), atol=1e-6))
    True
"""

from __future__ import annotations

import math
from dataclasses import dataclass

import torch
from jaxtyping import Float, Int
from torch import Tensor

from mechwork.errors import invalid

__all__ = ["FourierBasis", "fourier_basis"]


@dataclass(frozen=True)
class FourierBasis:
    """Rows of ``matrix`` are orthonormal basis functions on Z_p.

    Row 0 is the constant; rows ``2k-1`` and ``2k`` are cos and sin of
    frequency ``k``. ``freqs[i]`` is the frequency of row ``i`` (0 for the constant).
    """

    p: int
    matrix: Float[Tensor, "basis p"]
    labels: list[str]
    freqs: Int[Tensor, " basis"]

    def transform(self, x: Float[Tensor, "p ..."]) -> Float[Tensor, "basis ..."]:
        """Coefficients of ``x`` (indexed by residue along dim 0) in this basis."""
        return torch.tensordot(self.matrix.to(x), x, dims=([1], [0]))


def fourier_basis(p: int) -> FourierBasis:
    """The orthonormal Fourier basis of Z_p (``p`` odd, >= 3), with labels."""
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
