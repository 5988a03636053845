"""PatchResult.top against a brute-force ranking of every cell, and its import cost on a fresh process."""

from __future__ import annotations

import itertools
import subprocess
import sys

import pytest
import torch

from mechwork.analysis.patchresult import PatchResult


def _brute_top(res: PatchResult, k: int) -> list[tuple[str, float, float]]:
    eff = res.effect()
    cells = []
    for idx in itertools.product(*[range(n) for n in res.values.shape]):
        e = float(eff[idx])
        cells.append((-1.0 if e != e else abs(e), idx))
    cells.sort(key=lambda c: -c[0])  # stable: ties keep row-major order, like a stable argsort
    return [(res.label(idx), float(res.values[idx]), float(eff[idx])) for _, idx in cells[:k]]


@pytest.mark.parametrize("dims,shape", [(("layer", "pos"), (3, 7)), (("layer", "pos", "head"), (2, 5, 4)),
                                        (("layer", "head", "dest", "src"), (2, 3, 4, 4))])
def test_top_equals_a_brute_force_ranking(dims: tuple[str, ...], shape: tuple[int, ...]) -> None:
    g = torch.Generator().manual_seed(len(shape))
    values = torch.randn(shape, generator=g)
    coords = {d: list(range(10, 10 + n)) for d, n in zip(dims, shape, strict=True)}  # coords differ from indices
    res = PatchResult(values, dims, coords, "z", "x", "denoising", clean_value=1.5, corrupted_value=-0.5)
    k = min(9, values.numel())
    got, want = res.top(k), _brute_top(res, k)
    assert [v for _, v, _ in got] == [v for _, v, _ in want]
    assert [lab for lab, _, _ in got] == [lab for lab, _, _ in want]


def test_top_does_not_load_sympy() -> None:
    code = ("import sys, torch\n"
            "from mechwork.analysis.patchresult import PatchResult\n"
            "r = PatchResult(torch.arange(24.).reshape(2, 3, 4), ('layer', 'pos', 'head'), "
            "{'layer': [0, 1], 'pos': [0, 1, 2], 'head': [0, 1, 2, 3]}, 'z', 'head_pos', 'denoising', 1.0, 0.0)\n"
            "assert r.top(2)[0][0] == 'L1H3 pos 2', r.top(2)\n"
            "print('sympy' in sys.modules)\n")
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, check=True)
    assert out.stdout.strip() == "False", out.stdout + out.stderr
