"""Progress bars: every long command draws one on stderr by default, and ``--quiet`` silences it."""

from __future__ import annotations

import argparse
import os
import re
import subprocess
import sys

import pytest

from mechwork import bars
from mechwork.cli import main


@pytest.fixture
def bars_on(monkeypatch):
    """Bars as a user gets them (conftest turns them off for the rest of the suite), drawn at once."""
    monkeypatch.delenv(bars.ENV, raising=False)
    monkeypatch.setattr(bars, "DELAY", 0.0)


def _mechwork(*args: str) -> subprocess.CompletedProcess[str]:
    env = {k: v for k, v in os.environ.items() if k != bars.ENV}
    return subprocess.run([sys.executable, "-m", "mechwork.cli", *args], capture_output=True, text=True, env=env)


def test_a_command_draws_a_bar_on_stderr_and_quiet_silences_it():
    """As a user runs it: a bar on stderr (stdout keeps only the report), and nothing at all with --quiet.

    ``analyze fourier`` loads torch and a model, so it runs past the bar's delay on any machine
    (``info`` on a preset no longer does: it reads JSON only, and may finish before a bar is due).
    """
    loud = _mechwork("analyze", "fourier", "modadd-113")
    assert loud.returncode == 0, loud.stderr
    assert re.search(r"analyze fourier: (starting|loading the model) \[\d\d:\d\d\]", loud.stderr)  # stage, time
    assert re.search(r"analyze fourier: done \[\d\d:\d\d\]\s*$", loud.stderr)
    assert "Fourier analysis of modadd-113" in loud.stdout and "analyze fourier:" not in loud.stdout
    quiet = _mechwork("analyze", "fourier", "modadd-113", "--quiet")
    assert quiet.returncode == 0 and quiet.stderr == ""
    assert quiet.stdout == loud.stdout  # the report itself is the same


@pytest.mark.parametrize("command", [["info"], ["analyze", "fourier"], ["patch"], ["dashboard"], ["demo"]])
def test_every_long_command_takes_quiet(command, capsys):
    assert main([*command, "--help"]) == 0
    assert "--quiet" in capsys.readouterr().out


def test_bar_names_the_command_and_its_stages(bars_on, capsys):
    with bars.command("work"):
        bars.stage("first half")
        assert list(bars.track(range(3), "items")) == [0, 1, 2]
    err = capsys.readouterr().err
    assert "work: first half [" in err and "items:" in err and "/3 [" in err  # the loop's own bar, under it
    assert re.search(r"work: done \[\d\d:\d\d\]\s*$", err)  # the bar stays, reading done


def test_quiet_and_the_environment_switch_bars_off(bars_on, capsys, monkeypatch):
    with bars.command("work", quiet=True):
        bars.stage("busy")
        assert sum(bars.track(range(3), "items")) == 3
        assert not bars.active()
    monkeypatch.setenv(bars.ENV, "1")
    with bars.command("work"):
        bars.stage("busy")
    assert capsys.readouterr().err == ""


def test_outside_a_command_nothing_is_drawn(bars_on, capsys):
    bars.stage("nobody is listening")
    assert list(bars.track([1, 2], "items")) == [1, 2]
    with bars.counter("points", 2) as tick:
        tick()
    assert capsys.readouterr().err == ""


def test_an_error_clears_the_bar(bars_on, capsys):
    with pytest.raises(ValueError, match="boom"), bars.command("work"):
        bars.stage("busy")
        raise ValueError("boom")
    err = capsys.readouterr().err
    assert "work: busy" in err and "done" not in err and not bars.active()


def test_a_quick_command_shows_no_bar(monkeypatch, capsys):
    """A command over within DELAY seconds (a refused argument, say) prints no bar at all."""
    monkeypatch.delenv(bars.ENV, raising=False)
    monkeypatch.setattr(bars, "DELAY", 3600.0)
    with bars.command("work"):
        bars.stage("busy")
    assert capsys.readouterr().err == ""


def test_analyze_draws_a_bar_over_the_checkpoints(tmp_path, bars_on, capsys):
    out = tmp_path / "r"
    assert main(["train", "modadd", "--p", "11", "--train-frac", "0.6", "--steps", "20", "--eval-every", "10",
                 "--out", str(out), "--quiet"]) == 0
    capsys.readouterr()
    assert main(["analyze", "fourier", str(out)]) == 0
    err = capsys.readouterr().err
    assert "analyze fourier: loading the model" in err and "progress measures" in err and "checkpoint" in err
    assert main(["analyze", "fourier", str(out), "--quiet"]) == 0
    assert capsys.readouterr().err == ""


def _sweep_args(tmp_path, quiet: bool) -> argparse.Namespace:
    return argparse.Namespace(out=tmp_path / ("q" if quiet else "loud"), workers=1, ray=None, quiet=quiet,
                              study="demo_study")


def test_a_study_sweep_counts_its_points_and_quiet_silences_it(tmp_path, bars_on, capsys):
    from mechwork.studies.study import run_sweep, study_args

    res = run_sweep(_sweep_args(tmp_path, False), "mechwork.studies.sweep:_demo_point", {"x": [1, 2, 3]},
                    fixed={"y": 1})
    cap = capsys.readouterr()
    assert res.ran == 3 and "demo_study: sweeping mechwork.studies.sweep:_demo_point" in cap.err
    assert "sweep points:" in cap.err and "/3 [" in cap.err
    assert cap.out.count('{"x": ') == 3  # a line per finished point, on stdout
    res = run_sweep(_sweep_args(tmp_path, True), "mechwork.studies.sweep:_demo_point", {"x": [1, 2, 3]}, fixed={"y": 1})
    cap = capsys.readouterr()
    assert res.ran == 3 and cap.err == "" and cap.out == ""
    assert study_args("demo_study", "A study.", ["--smoke", "--quiet", "--out", str(tmp_path / "s"),
                                                 "--dashboard", str(tmp_path / "d.html")]).quiet


def test_train_bar_follows_quiet_and_the_environment(tmp_path, bars_on, capsys, monkeypatch):
    args = ["train", "modadd", "--p", "11", "--steps", "5", "--eval-every", "5"]
    assert main([*args, "--out", str(tmp_path / "a")]) == 0
    assert "train" in capsys.readouterr().err  # its per-step bar
    monkeypatch.setenv(bars.ENV, "1")
    assert main([*args, "--out", str(tmp_path / "b")]) == 0
    assert capsys.readouterr().err == ""
