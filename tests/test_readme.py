"""README.md runs: every ``python`` and ``bash``/``sh``/``shell`` block, in order, in one directory.

The blocks run as a new user would run them from the root of a clone: one
temporary working directory for all of them (with ``experiments/`` linked in
and an empty ``dashboards/``, as in a clone), python blocks in one shared
namespace, shell blocks under ``bash -e`` with the venv's ``bin`` first on
``PATH``, so ``mechwork ...`` and ``python ...`` are the installed ones.

A block can carry markers, HTML comments (invisible on the rendered page,
plain in the source) right before it:

* ``<!-- readme-test: skip: REASON -->`` -- the block is not run (the set of
  skipped blocks is pinned below, so a new skip cannot slip in unnoticed);
* ``<!-- readme-test: replace "OLD" "NEW" -->`` -- run with OLD replaced by
  NEW (small settings for a block that would train for long); OLD must occur
  in the block, so a marker cannot go stale;
* ``<!-- readme-test: env NAME=VALUE -->`` -- an environment variable for
  that block;
* ``<!-- readme-test: file NAME -->`` -- the block is not run but written to
  NAME in the working directory, for the blocks after it to use (a task file).

Outputs shown in comments are not asserted; every block must run without
error.
"""

from __future__ import annotations

import os
import re
import resource
import shlex
import subprocess
import sys
import time
from dataclasses import dataclass, field
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parents[1]
README = ROOT / "README.md"
RUN_LANGS = {"python": "python", "bash": "shell", "sh": "shell", "shell": "shell"}
MARKER = re.compile(r"^\s*<!--\s*readme-test:\s*(.*?)\s*-->\s*$")
FENCE = re.compile(r"^```\s*([\w+-]*)\s*$")
# the blocks the README test does not run, by their first line, and why that is all right
SKIPPED = {
    "make demo   # creates .venv, installs CPU torch 2.13.0, mechwork and its pinned deps, runs the main job",
    "pip install -e '.[ray]'        # make already installs it; every node of the cluster needs mechwork too",
    "mechwork dashboard induction-2l --out web/ind.html --assets site --figures svg,png",
}


class MarkerError(ValueError):
    pass


@dataclass
class Block:
    lang: str  # "python" or "shell"
    code: str
    line: int  # 1-based line of the opening fence
    skip: str | None = None
    replace: list[tuple[str, str]] = field(default_factory=list)
    env: dict[str, str] = field(default_factory=dict)
    file: str | None = None  # a 'file NAME' marker: the block is written to NAME, not run

    def runnable(self) -> str:
        code = self.code
        for old, new in self.replace:
            if old not in code:
                raise MarkerError(f"README.md:{self.line}: replace marker: {old!r} is not in the block")
            code = code.replace(old, new)
        return code


def parse(text: str) -> list[Block]:
    """The runnable blocks of a markdown text, with their markers applied as data."""
    blocks: list[Block] = []
    pending: list[tuple[int, str]] = []
    lines = text.splitlines()
    i = 0
    while i < len(lines):
        m = MARKER.match(lines[i])
        f = FENCE.match(lines[i])
        if m:
            pending.append((i + 1, m.group(1)))
        elif f:
            start, lang = i + 1, f.group(1).lower()
            i += 1
            body = []
            while i < len(lines) and not lines[i].startswith("```"):
                body.append(lines[i])
                i += 1
            if i == len(lines):
                raise MarkerError(f"README.md:{start}: unclosed code block")
            if lang in RUN_LANGS:
                block = Block(RUN_LANGS[lang], "\n".join(body) + "\n", start)
                for at, directive in pending:
                    apply_marker(block, directive, at)
                blocks.append(block)
            elif pending:
                raise MarkerError(f"README.md:{pending[0][0]}: marker before a {lang or 'plain'} block, which is "
                                  "not run")
            pending = []
        elif lines[i].strip() and pending:
            raise MarkerError(f"README.md:{pending[0][0]}: marker not directly before a code block")
        i += 1
    if pending:
        raise MarkerError(f"README.md:{pending[0][0]}: marker after the last code block")
    return blocks


def apply_marker(block: Block, directive: str, at: int) -> None:
    if directive.startswith("skip:") and directive[5:].strip():
        block.skip = directive[5:].strip()
        return
    words = shlex.split(directive)
    if words and words[0] == "replace" and len(words) == 3:
        block.replace.append((words[1], words[2]))
    elif words and words[0] == "file" and len(words) == 2 and "/" not in words[1]:
        block.file = words[1]
    elif words and words[0] == "env" and len(words) == 2 and "=" in words[1]:
        name, value = words[1].split("=", 1)
        block.env[name] = value
    else:
        raise MarkerError(f"README.md:{at}: unknown marker {directive!r} (valid: 'skip: REASON', "
                          "'replace \"OLD\" \"NEW\"', 'env NAME=VALUE', 'file NAME')")


# -- the parser itself ---------------------------------------------------------------------
def test_markers_attach_to_the_next_block_and_refuse_strays():
    text = ("intro\n<!-- readme-test: replace \"--steps 3000\" \"--steps 40\" -->\n<!-- readme-test: env A=1 -->\n"
            "```bash\nmechwork train induction --steps 3000\n```\n"
            "<!-- readme-test: skip: needs a cluster -->\n\n```sh\nray start\n```\n"
            "```\nnot run\n```\n```python\nx = 1\n```\n")
    blocks = parse(text)
    assert [b.lang for b in blocks] == ["shell", "shell", "python"]
    assert blocks[0].runnable() == "mechwork train induction --steps 40\n" and blocks[0].env == {"A": "1"}
    assert blocks[1].skip == "needs a cluster" and blocks[2].skip is None and not blocks[2].replace
    with pytest.raises(MarkerError, match="not directly before"):
        parse("<!-- readme-test: skip: x -->\ntext\n```bash\nls\n```\n")
    with pytest.raises(MarkerError, match="plain block"):
        parse("<!-- readme-test: skip: x -->\n```\nls\n```\n")
    with pytest.raises(MarkerError, match="unknown marker"):
        parse("<!-- readme-test: skipp -->\n```bash\nls\n```\n")
    with pytest.raises(MarkerError, match="is not in the block"):
        parse("<!-- readme-test: replace \"a\" \"b\" -->\n```bash\nls\n```\n")[0].runnable()
    assert parse("<!-- readme-test: file task.py -->\n```python\nx = 1\n```\n")[0].file == "task.py"
    with pytest.raises(MarkerError, match="unknown marker"):  # a file goes in the working directory itself
        parse("<!-- readme-test: file ../task.py -->\n```python\nx = 1\n```\n")


def test_readme_markers_are_current():
    blocks = parse(README.read_text())
    assert {b.code.splitlines()[0] for b in blocks if b.skip} == SKIPPED
    assert all(b.skip for b in blocks if b.code.splitlines()[0] in SKIPPED)
    for b in blocks:
        b.runnable()  # every replace marker still matches its block
    assert sum(b.lang == "python" for b in blocks) >= 5 and sum(b.lang == "shell" for b in blocks) >= 5


# -- the README, run ----------------------------------------------------------------------
def _cpu() -> float:
    """CPU seconds of this process and its finished children."""
    own, kids = resource.getrusage(resource.RUSAGE_SELF), resource.getrusage(resource.RUSAGE_CHILDREN)
    return own.ru_utime + own.ru_stime + kids.ru_utime + kids.ru_stime


def test_every_readme_block_runs(tmp_path, monkeypatch):
    """Every python and shell block of README.md, in order, with the README's small-settings markers."""
    blocks = parse(README.read_text())
    (tmp_path / "dashboards").mkdir()
    (tmp_path / "experiments").symlink_to(ROOT / "experiments", target_is_directory=True)
    (tmp_path / "tests").symlink_to(ROOT / "tests", target_is_directory=True)  # the example kit
    monkeypatch.chdir(tmp_path)
    env = dict(os.environ)
    env["PATH"] = f"{Path(sys.executable).parent}{os.pathsep}{env.get('PATH', '')}"
    env.setdefault("OMP_NUM_THREADS", "1")
    namespace: dict[str, object] = {"__name__": "__readme__"}
    ran = 0
    seconds: list[tuple[int, float, float]] = []
    shell_out = []
    for block in blocks:
        if block.skip:
            continue
        code = block.runnable()
        if block.file:  # a file the next blocks use (e.g. a task kit), written where they run
            (tmp_path / block.file).write_text(code)
            continue
        t0, c0 = time.perf_counter(), _cpu()
        where = f"README.md block at line {block.line}"
        if block.lang == "python":
            with monkeypatch.context() as m:
                for k, v in block.env.items():
                    m.setenv(k, v)
                exec(compile(code, where, "exec"), namespace)  # the README's own code
        else:
            proc = subprocess.run(["bash", "-e", "-o", "pipefail", "-c", code], cwd=tmp_path,
                                  env={**env, **block.env}, capture_output=True, text=True)
            shell_out.append(proc.stdout)
            assert proc.returncode == 0, f"{where} failed (exit {proc.returncode}):\n{code}\n" \
                                         f"stdout:\n{proc.stdout[-3000:]}\nstderr:\n{proc.stderr[-3000:]}"
        ran += 1
        seconds.append((block.line, time.perf_counter() - t0, _cpu() - c0))
    print("README blocks by line, wall / CPU seconds: " + ", ".join(f"{line}: {t:.0f} / {c:.0f}"
                                                                    for line, t, c in seconds))
    assert ran == len([b for b in blocks if not b.skip and not b.file]) and ran >= 10
    # what the README says the blocks leave behind
    assert (tmp_path / "dashboards" / "modadd-113.html").stat().st_size > 1_000_000
    assert (tmp_path / "runs" / "mine" / "config.json").is_file()
    # the demo's output shown under "The main job" is what `mechwork demo` printed (bar the dashboard's path)
    shown = re.search(r"^```\n(mechwork demo: .*?)^```", README.read_text(), re.M | re.S)
    assert shown is not None
    printed = "\n".join(shell_out)
    for line in shown.group(1).splitlines():
        assert line.startswith("dashboard: ") or line in printed, f"README shows a line demo no longer prints: {line}"
    # the cdn page sits beside the inline one, much smaller (the README says so)
    inline, cdn = tmp_path / "dashboards" / "mine.html", tmp_path / "dashboards" / "mine.cdn.html"
    assert cdn.stat().st_size * 5 < inline.stat().st_size
    assert (tmp_path / "dashboards" / "div97.html").is_file()
    assert "first-token accuracy by position" in (tmp_path / "dashboards" / "first.html").read_text()  # the kit


# -- experiments/README.md: the study figures are what the results files say ------------------
def _tables():
    import importlib.util

    spec = importlib.util.spec_from_file_location("experiments_tables", ROOT / "experiments" / "tables.py")
    assert spec is not None and spec.loader is not None
    mod = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(mod)
    return mod


def test_experiments_readme_quotes_the_figures_computed_from_the_results():
    """Every figure experiments/tables.py computes from experiments/results/*.json is on the page, verbatim."""
    page = (ROOT / "experiments" / "README.md").read_text()
    figures = _tables().figures()
    assert set(figures) >= {"grokking_wd_data", "grokfast", "progress_measures", "clock_pizza", "lottery_tickets",
                            "scaling_laws", "infinite_width", "optimisation"}
    missing = [f"{study}.{key}: {text}" for study, figs in figures.items() for key, text in figs.items()
               if text not in page]
    assert not missing, "experiments/README.md does not quote:\n" + "\n".join(missing)


def test_tables_spread_is_median_min_max():
    t = _tables()
    assert t.spread([1400, 650], t.steps) == "1,025 [650, 1,400]"
    assert t.spread([0.12, 0.39, 0.10], t.two) == "0.12 [0.10, 0.39]"
    assert not t.ok(float("nan")) and not t.ok(None) and t.ok(0)


def test_single_seed_studies_say_so():
    page = (ROOT / "experiments" / "README.md").read_text()
    rows = {line.split("|")[1].strip(): line for line in page.splitlines() if line.startswith("| `")}
    for study in ("`progress_measures.py`", "`scaling_laws.py`", "`optimisation.py` (a)"):
        assert "1 seed, spread" in rows[study] and "not measured" in rows[study], study
    assert "seed 0 (1 seed, spread not measured)" in rows["`grokfast.py`"]


def test_readme_reports_the_embedded_models_loss_spikes():
    """The README's spike sentence is what loss_spikes finds in the shipped model's own history."""
    from mechwork.analysis.progress import loss_spikes
    from mechwork.runs import embedded_info

    m = embedded_info("modadd-113")["history"]["metrics"]
    spikes = loss_spikes(m["step"], m["test_loss"], m["test_acc"])
    text = " ".join(README.read_text().split())
    assert f"after grokking its test loss spiked {len(spikes)} times" in text
    for sp in spikes:
        assert f"{sp.start:,}-{sp.end:,}" in text
    low = min(spikes, key=lambda sp: sp.min_acc)
    assert f"down to {100 * low.min_acc:.1f}%" in text
