"""Every study script end to end on its tiny plan: results.json, and a dashboard that draws offline."""

from __future__ import annotations

import importlib.util
import json
import os
import re
from pathlib import Path

import pytest
from chromium_check import check_page, chromium_path
from test_figures import untitled

EXPERIMENTS = Path(__file__).resolve().parents[1] / "experiments"
STUDIES = ["grokking_wd_data", "grokfast", "lottery_tickets", "progress_measures", "clock_pizza", "infinite_width",
           "scaling_laws", "optimisation"]


def page_figures(html: str) -> list[tuple[str, dict]]:
    """(figure id and title, plotly spec) of every figure a saved page holds, read back from its HTML."""
    out = []
    for bid, data in re.findall(r'<script type="application/json" id="([^"]+)-fig-data">(.*?)</script>', html, re.S):
        spec = json.loads(data)
        out.append((f"{bid} {(spec['layout'].get('title') or {}).get('text', '')}", spec))
    return out


def test_page_figures_reads_back_what_the_page_holds():
    """The walk over saved pages sees each figure, and an untitled axis in one."""
    import plotly.graph_objects as go

    from mechwork.dashboard import Page

    fig = go.Figure(go.Bar(x=["a"], y=[1])).update_layout(title="t", yaxis_title="y")
    figs = page_figures(Page("p").plotly(fig).plotly(fig.update_layout(xaxis_title="x")).render(assets="cdn"))
    assert [untitled(f) for _, f in figs] == [["xaxis"], []]


def load_study(name: str):
    spec = importlib.util.spec_from_file_location(f"study_{name}", EXPERIMENTS / f"{name}.py")
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    return module


@pytest.mark.parametrize("name", STUDIES)
def test_study_runs_and_its_dashboard_draws(tmp_path, name):
    study = load_study(name)
    out, page = tmp_path / "study", tmp_path / f"{name}.html"
    assert study.main(["--smoke", "--out", str(out), "--dashboard", str(page), "--workers", "1"]) == 0
    results = json.loads((out / "results.json").read_text())
    verdicts = [v for k, v in results.items() if k.startswith("verdict") and isinstance(v, str)]
    assert verdicts and all(v.split(":")[0] in ("reproduced", "partly reproduced", "not reproduced")
                            for v in verdicts)
    html = page.read_text()
    assert "Result" in html and "claim" in html
    figs = page_figures(html)
    assert figs and {title: untitled(f) for title, f in figs if untitled(f)} == {}
    # resumable: a rerun finds every point done and rewrites the same verdicts
    assert study.main(["--smoke", "--out", str(out), "--dashboard", str(page), "--workers", "1"]) == 0
    again = json.loads((out / "results.json").read_text())
    assert [v for k, v in again.items() if k.startswith("verdict") and isinstance(v, str)] == verdicts
    if chromium_path() is None:
        if os.environ.get("CI"):
            pytest.fail("Debian's chromium is not installed; .ci/run installs it")
        return
    r = check_page(page)
    assert r.plotly_drawn == r.plotly_mounts and r.cv_drawn == r.cv_mounts, r
    assert r.console_errors == [] and r.page_errors == [] and r.requests == [], r


def test_study_command_line_rejects_bad_flags(tmp_path, capsys):
    study = load_study("grokking_wd_data")
    with pytest.raises(SystemExit) as e:
        study.main(["--workers", "0"])
    assert e.value.code == 2 and "--workers must be >= 1" in capsys.readouterr().err
    with pytest.raises(SystemExit) as e:
        study.main(["--smoke", "--dashboard", str(tmp_path / "missing" / "x.html")])
    assert e.value.code == 2 and "does not exist" in capsys.readouterr().err


@pytest.mark.slow  # 5-11 minutes each on a loaded 2-core machine; the smoke plan above runs the same code by default
@pytest.mark.parametrize("name", ["scaling_laws", "infinite_width", "optimisation"])
def test_studies_ii_quick_mode_runs(tmp_path, name):
    """Studies II's --quick modes, as a user runs them (the whole reduced grid, not the smoke plan)."""
    study = load_study(name)
    out, page = tmp_path / "study", tmp_path / f"{name}.html"
    assert study.main(["--quick", "--out", str(out), "--dashboard", str(page), "--workers", "2"]) == 0
    results = json.loads((out / "results.json").read_text())
    assert results["plan"] == json.loads(json.dumps(study.QUICK))  # the quick plan, not the smoke one
    verdicts = [v for k, v in results.items() if k.startswith("verdict") and isinstance(v, str)]
    assert verdicts and all(v.split(":")[0] in ("reproduced", "partly reproduced", "not reproduced")
                            for v in verdicts)
    assert page.stat().st_size > 0


def test_run_sweep_forwards_the_backend_and_stops_on_failed_points(tmp_path, capsys):
    import argparse
    import socket

    from mechwork.errors import ConfigError
    from mechwork.studies.study import run_sweep

    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        port = s.getsockname()[1]
    args = argparse.Namespace(out=tmp_path / "s", workers=1, ray=f"127.0.0.1:{port}")
    with pytest.raises(ConfigError, match="cannot reach a Ray cluster"):  # --ray reaches the sweep
        run_sweep(args, "mechwork.studies.sweep:_demo_point", {"x": [1]}, fixed={"y": 1})
    args.ray = None
    assert run_sweep(args, "mechwork.studies.sweep:_demo_point", {"x": [1, 2]}, fixed={"y": 1}).ran == 2
    with pytest.raises(SystemExit) as e:  # ModularArithmetic refuses p=1: the point fails, the study stops
        run_sweep(args, "mechwork.studies.study:grok_point", {"seed": [0]}, tmp_path / "bad",
                  fixed={"p": 1, "op": "add", "train_frac": 0.5, "weight_decay": 1.0, "lr": 1e-2, "steps": 5})
    err = capsys.readouterr().err.strip()
    assert e.value.code == 1 and err.startswith("error: 1 point(s) of mechwork.studies.study:grok_point failed")
    assert "\n" not in err
