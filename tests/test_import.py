"""``import mechwork`` stays cheap: no torch, TransformerLens, plotly or browser code."""

from __future__ import annotations

import subprocess
import sys


def test_import_is_cheap():
    code = (
        "import sys, mechwork; "
        "heavy = [m for m in ('torch', 'transformer_lens', 'plotly', 'circuitsvis', 'pandas') if m in sys.modules]; "
        "print(','.join(heavy))"
    )
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, check=True)
    assert out.stdout.strip() == ""


def test_lazy_attributes_resolve():
    import mechwork

    assert callable(mechwork.load) and callable(mechwork.train)
    assert mechwork.ModularArithmetic(p=5).n_pairs == 25
    assert issubclass(mechwork.MechworkError, RuntimeError)
    assert set(mechwork.__all__) <= set(dir(mechwork))
