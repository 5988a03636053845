"""Running ``mechwork`` in-process from a test, and the one check every refused argument gets."""

from __future__ import annotations

from pathlib import Path

from mechwork.cli import main


def run(capsys, *args: str) -> tuple[int, str, str]:
    """Exit code, stdout and stderr of ``mechwork ARGS`` (what was printed before is not the command's)."""
    capsys.readouterr()
    code = main(list(args))
    out, err = capsys.readouterr()
    return code, out, err


def forbid_loading(monkeypatch) -> None:
    """Any model load from here on fails the test: the argument must be refused before it."""
    def no_loading(*a, **k):
        raise AssertionError("the model was loaded before the bad argument was refused")

    monkeypatch.setattr("mechwork.source.open_source", no_loading)


def refused(capsys, args: list[str], needles: list[str]) -> str:
    """Run ``args``; assert exit 2 and one ``mechwork: error:`` line naming every needle; return the line."""
    code, out, err = run(capsys, *args)
    assert code == 2, (out, err)
    lines = err.strip().splitlines()
    assert len(lines) == 1 and lines[0].startswith("mechwork: error:"), err
    assert all(n in lines[0] for n in needles), lines[0]
    return out


def train_small_run(out: Path) -> Path:
    """Train a modadd p=7 run of 20 steps into ``out`` (a few seconds), in this process; returns ``out``."""
    assert main(["train", "modadd", "--p", "7", "--train-frac", "0.5", "--steps", "20", "--eval-every", "10",
                 "--out", str(out), "--quiet"]) == 0
    return out
