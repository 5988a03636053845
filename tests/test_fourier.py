"""The Fourier basis of Z_p, checked against torch.fft (an independent computation)."""

from __future__ import annotations

import pytest
import torch

from mechwork.errors import ConfigError
from mechwork.fourier import fourier_basis


@pytest.mark.parametrize("p", [3, 7, 23, 113])
def test_orthonormal_and_labelled(p):
    b = fourier_basis(p)
    torch.testing.assert_close(b.matrix @ b.matrix.T, torch.eye(p), atol=1e-5, rtol=0)
    assert len(b.labels) == p and b.labels[0] == "const" and b.labels[-1] == f"sin {(p - 1) // 2}"
    assert b.freqs.tolist() == [0] + [k for k in range(1, (p - 1) // 2 + 1) for _ in (0, 1)]


@pytest.mark.parametrize("p", [7, 113])
def test_coefficients_match_fft(p):
    x = torch.randn(p, 5, dtype=torch.float64)
    coef = fourier_basis(p).transform(x.float()).double()
    spec = torch.fft.rfft(x, dim=0)  # spec[k] = sum_n x_n exp(-2 pi i k n / p)
    # |coef of cos k|^2 + |coef of sin k|^2 = 2 |spec[k]|^2 / p ; const coef = spec[0] / sqrt(p)
    torch.testing.assert_close(coef[0], spec[0].real / p**0.5, atol=1e-4, rtol=1e-4)
    for k in range(1, (p - 1) // 2 + 1):
        power = coef[2 * k - 1] ** 2 + coef[2 * k] ** 2
        torch.testing.assert_close(power, 2 * spec[k].abs() ** 2 / p, atol=1e-4, rtol=1e-4)
        torch.testing.assert_close(coef[2 * k - 1], spec[k].real * (2 / p) ** 0.5, atol=1e-4, rtol=1e-4)
        torch.testing.assert_close(coef[2 * k], -spec[k].imag * (2 / p) ** 0.5, atol=1e-4, rtol=1e-4)


@pytest.mark.parametrize("p", [1, 2, 12])
def test_bad_p(p):
    with pytest.raises(ConfigError, match=r"'p' must be an odd integer >= 3 \(got "):
        fourier_basis(p)
