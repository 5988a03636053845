"""The probe notebook runs end to end on a real kernel."""

from __future__ import annotations

from pathlib import Path

import nbformat
from nbclient import NotebookClient

NB = Path(__file__).resolve().parents[1] / "experiments" / "notebooks" / "probe_modadd.ipynb"


def test_probe_notebook_executes(tmp_path):
    nb = nbformat.read(NB, as_version=4)
    # no per-cell time limit and a generous kernel start: a loaded machine is slow, not wrong
    NotebookClient(nb, timeout=None, startup_timeout=1800, kernel_name="python3",
                   resources={"metadata": {"path": str(tmp_path)}}).execute()
    outputs = [o for c in nb.cells if c.cell_type == "code" for o in c.get("outputs", [])]
    assert not [o for o in outputs if o.get("output_type") == "error"]
    text = "".join(o.get("text", "") for o in outputs)
    assert "W_E spectrum over Z_113" in text and "restricted loss" in text
    html = "".join(o.get("data", {}).get("text/html", "") for o in outputs)
    assert "KeyFrequencies" in html and "TrigFit" in html
    # every .figure() in the notebook renders as plotly's own notebook output
    figures = [o for o in outputs if "application/vnd.plotly.v1+json" in o.get("data", {})]
    assert len(figures) == sum(".figure(" in c.source for c in nb.cells if c.cell_type == "code") >= 4
    # the circuitsvis view carries its bundle (works offline) and mounts itself
    assert "CircuitsVis.render(" in html and html.count("var CircuitsVis=") == 1
