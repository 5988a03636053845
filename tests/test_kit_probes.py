"""User kits written from the docs alone, one per class of kit, through the whole CLI and the Python API.

tests/kits/: ``prevtok`` (loaded by module name; its held-out split is ``"valid"``; a result without a
figure and a plain value), ``digitsum`` (a finite dataset: full batch or ``--batch-size``; a page of its own),
``typed_fields`` (bool, float, Literal and tuple fields as ``train`` options) and ``minimal`` (no presets,
an empty analysis). Then broken kits: a syntax error, one that raises, a missing file, a built-in kind,
a file named twice, two files in MECHWORK_KITS, and a kit's run opened without its kit.
Every refusal is one line, exit 2 for bad input (1 for a run that cannot be opened), nothing written.
"""

from __future__ import annotations

import json
import os
import re
from dataclasses import dataclass
from pathlib import Path
from typing import ClassVar

import pytest

from mechwork import kit as kitmod
from mechwork.cli import main
from mechwork.errors import CheckpointError, ConfigError

KITS = Path(__file__).resolve().parent / "kits"
MINIMAL = (KITS / "minimal.py").read_text()  # variants of the least a kit needs
STEPS = ["--steps", "12", "--eval-every", "4", "--quiet"]


@pytest.fixture(autouse=True)
def registry(monkeypatch):
    """Each test starts from the built-in kits and leaves no user kit behind."""
    monkeypatch.delenv("MECHWORK_KITS", raising=False)
    kitmod.get_kit("modadd"), kitmod.get_kit("induction")
    from mechwork.dashboard import PAGES

    saved = dict(kitmod._REGISTRY), dict(kitmod._FILES), list(kitmod._ENV_LOADED), dict(PAGES)
    yield
    for store, old in zip((kitmod._REGISTRY, kitmod._FILES, kitmod._ENV_LOADED, PAGES), saved, strict=True):
        store.clear()
        store.update(old) if isinstance(store, dict) else store.extend(old)  # type: ignore[attr-defined]


def run(capsys, *args: str) -> tuple[int, str, str]:
    code = main(list(args))
    out, err = capsys.readouterr()
    return code, out, err


def refused(capsys, *args: str, code: int = 2) -> str:
    got, _, err = run(capsys, *args)
    assert got == code and len(err.strip().splitlines()) == 1 and err.startswith("mechwork: error: "), err
    return err


# -- (a) a kit named by module (MECHWORK_KITS=prevtok), whose held-out split is "valid" --------------------------
def test_module_kit_trains_resumes_and_renders(tmp_path, capsys, monkeypatch):
    monkeypatch.syspath_prepend(str(KITS))
    monkeypatch.setenv("MECHWORK_KITS", "prevtok")
    out = tmp_path / "prev"
    code, stdout, err = run(capsys, "train", "prevtok", "--out", str(out), *STEPS)
    assert code == 0, err
    assert f"{out}: step 12" in stdout and "valid acc" in stdout and "test acc" not in stdout
    code, stdout, err = run(capsys, "train", "prevtok", "--out", str(out), "--resume", "--steps", "16", "--quiet")
    assert code == 0 and f"{out}: step 16" in stdout, err
    code, stdout, _ = run(capsys, "info", str(out))
    assert code == 0 and "previous token of 5 tokens of 10" in stdout and "valid acc" in stdout, stdout
    for site, by in [("z", "head_pos"), ("resid_pre", "layer_pos"), ("pattern", "head")]:
        code, stdout, err = run(capsys, "patch", str(out), "--site", site, "--by", by, "--top", "3")
        assert code == 0 and f"{site} by {by}" in stdout and "corrupt the second-last token" in stdout, err
    page = tmp_path / "prev.html"
    code, _, err = run(capsys, "dashboard", str(out), "--out", str(page))
    assert code == 0, err
    html = page.read_text()
    assert "prevtok dashboard" in html and "prevtok accuracy" in html  # a result without figure(): its summary
    assert "plain_value" in html and "<table" in html  # a plain float, and the result's table
    assert "analyze fourier" in refused(capsys, "analyze", "fourier", str(out))


# -- (b) a finite dataset: full batch, or --batch-size minibatches ------------------------------------------------
def test_finite_kit_full_batch_and_minibatches(tmp_path, capsys):
    kit = ["--kit", str(KITS / "digitsum.py")]
    code, stdout, _ = run(capsys, *kit, "train", "digitsum", "--help")
    assert code == 0 and "--batch-size" in stdout and "--train-frac FLOAT" in stdout, stdout
    full, mini = tmp_path / "full", tmp_path / "mini"
    assert run(capsys, *kit, "train", "digitsum", "--out", str(full), *STEPS)[0] == 0
    assert run(capsys, *kit, "train", "digitsum", "--out", str(mini), "--batch-size", "16", *STEPS)[0] == 0
    assert json.loads((mini / "config.json").read_text())["train"]["batch_size"] == 16
    assert json.loads((full / "config.json").read_text())["train"]["batch_size"] is None
    assert "full batch," in run(capsys, *kit, "info", str(full))[1]
    assert "minibatches of 16" in run(capsys, *kit, "info", str(mini))[1]
    assert "--batch-size cannot change" in refused(capsys, *kit, "train", "digitsum", "--out", str(mini),
                                                   "--resume", "--steps", "20", "--batch-size", "8")
    code, stdout, _ = run(capsys, *kit, "patch", str(full), "--site", "mlp_out", "--by", "layer")
    assert code == 0 and "b -> b + 1" in stdout
    code, _, err = run(capsys, *kit, "dashboard", str(full), "--out", str(tmp_path / "ds.html"))
    html = (tmp_path / "ds.html").read_text()
    assert code == 0 and "Digit sums: " in html and "Accuracy by split" in html and "digitsum train" in html, err

    import mechwork
    from mechwork.runs import Run

    task = Run(full).task
    assert task == kitmod.get_kit("digitsum").task() and type(mechwork.load(str(full))).__name__ != "NoneType"
    assert kitmod.find_preset("digitsum-small").task == task


# -- (c) fields of many types become typed options --------------------------------------------------------------
def test_typed_fields_help(capsys):
    code, stdout, _ = run(capsys, "--kit", str(KITS / "typed_fields.py"), "train", "typed", "--help")
    assert code == 0
    for needle in ("--noise FLOAT", "--reverse BOOLEAN", "--mode [copy|shift]", "--weights FLOATS",
                   "[default: 1.0, 2.0]", "[default: copy]"):
        assert needle in stdout, (needle, stdout)


@pytest.mark.parametrize(("args", "needle"), [
    (["--mode", "bogus"], "'bogus' is not one of 'copy', 'shift'"),
    (["--noise", "nan"], "'noise' must be a finite number (got nan)"),
    (["--noise", "2"], "bad typed task: ValueError: noise must be in [0, 1] (got 2.0)"),  # the task's own check
    (["--reverse", "maybe"], "'maybe' is not a valid boolean"),
    (["--weights", "1,x"], "could not convert string to float: 'x'"),
    (["--d-vocab", "abc"], "'abc' is not a valid integer"),
])
def test_typed_fields_bad_values_one_line_nothing_written(args, needle, tmp_path, capsys):
    err = refused(capsys, "--kit", str(KITS / "typed_fields.py"), "train", "typed", "--out", str(tmp_path / "r"),
                  *args, *STEPS)
    assert needle in err and list(tmp_path.iterdir()) == []


def test_typed_fields_round_trip(tmp_path, capsys):
    kit, out = ["--kit", str(KITS / "typed_fields.py")], tmp_path / "t"
    code, _, err = run(capsys, *kit, "train", "typed", "--out", str(out), "--reverse", "true", "--mode", "shift",
                       "--weights", "3,4", *STEPS)
    assert code == 0, err
    stored = json.loads((out / "config.json").read_text())["task"]
    assert (stored["reverse"], stored["mode"], stored["weights"]) == (True, "shift", [3.0, 4.0])
    from mechwork.runs import Run

    assert Run(out).task.weights == (3.0, 4.0)  # a tuple again, so the task equals the one trained
    assert run(capsys, *kit, "train", "typed", "--out", str(out), "--resume", "--steps", "14", "--weights", "3,4",
               "--quiet")[0] == 0
    assert "--weights cannot change" in refused(capsys, *kit, "train", "typed", "--out", str(out), "--resume",
                                                "--steps", "16", "--weights", "3")


def test_fields_named_like_training_options_and_required_fields(tmp_path):
    @dataclass(frozen=True)
    class T:
        size: int
        steps: int = 3
        lr: float = 0.5
        seed: int = 0
        kind: ClassVar[str] = "t"

    cmd = kitmod.command_from_fields(T)
    assert [o.name for o in cmd.options] == ["size"]  # --steps, --lr and --seed are training's
    with pytest.raises(ConfigError, match="'--size' is required by the T task"):
        assert cmd.check is not None
        cmd.check(cmd.fields({"size": None, "seed": 0}))
    assert cmd.fields({"size": 4, "seed": 1}) == {"size": 4, "seed": 1}


def test_a_required_field_is_a_required_option(tmp_path, capsys):
    (tmp_path / "k.py").write_text(MINIMAL.replace("    d_vocab: int = 6\n", "    d_vocab: int\n"))
    kit, out = ["--kit", str(tmp_path / "k.py")], tmp_path / "run"
    assert "'--d-vocab' is required by the Minimal task" in refused(capsys, *kit, "train", "minimal", "--out", str(out))
    assert not out.exists()
    assert run(capsys, *kit, "train", "minimal", "--out", str(out), "--d-vocab", "6", "--quiet")[0] == 0
    code, stdout, err = run(capsys, *kit, "train", "minimal", "--out", str(out), "--resume", "--steps", "7",
                            "--d-vocab", "6", "--quiet")
    assert code == 0 and "step 7" in stdout, err


# -- (d) a minimal kit: no presets, an empty analysis -------------------------------------------------------------
def test_minimal_kit(tmp_path, capsys, monkeypatch):
    monkeypatch.chdir(tmp_path)
    kit = ["--kit", str(KITS / "minimal.py")]
    code, stdout, err = run(capsys, *kit, "train", "minimal", "--quiet")
    assert code == 0 and "runs/minimal-s0: step 5" in stdout, err
    assert "minimal identity task" in run(capsys, *kit, "info", "runs/minimal-s0")[1]
    code, stdout, _ = run(capsys, *kit, "patch", "runs/minimal-s0", "--site", "q", "--by", "head",
                          "--direction", "noising")
    assert code == 0 and "q by head, noising" in stdout
    code, _, err = run(capsys, *kit, "dashboard", "runs/minimal-s0", "--out", "m.html")
    assert code == 0, err
    assert "The kit's analysis has no results." in Path("m.html").read_text()


def test_generic_page_refuses_what_is_not_an_analysis():
    from mechwork.dashboard.sections import generic_page

    with pytest.raises(ConfigError, match=r"must return a mechwork.results.Analysis \(got dict\)"):
        generic_page({"acc": 1.0})  # type: ignore[arg-type]


# -- broken kits and missing kits ---------------------------------------------------------------------------------
@pytest.mark.parametrize(("source", "name", "needle"), [
    ("def f(:\n    pass\n", "syntax.py", "cannot load kit '{path}': SyntaxError: invalid syntax"),
    ("raise RuntimeError('boom\\nsecond line')\n", "raises.py", "RuntimeError: boom second line"),
    (None, "absent.py", "'kit' must be a .py file or a module name (got '{path}': no such file)"),
    (None, "a_dir/", "'kit' must be a .py file or a module name (got '{path}': a directory)"),
    ((KITS / "minimal.py").read_text().replace('"minimal"', '"modadd"'), "collide.py",
     "kit kind 'modadd' is built in; give your kit (and its task's kind) another name"),
])
def test_a_broken_kit_is_one_line(source, name, needle, tmp_path, capsys):
    path = tmp_path / "kits" / name
    path.parent.mkdir()
    if source is not None:
        path.write_text(source)
    elif name.endswith("/"):
        path.mkdir()
    err = refused(capsys, "--kit", str(path), "info", "modadd-113")
    assert needle.format(path=path) in err, err
    assert kitmod.get_kit("modadd").task.__name__ == "ModularArithmetic"  # the built-in kit is untouched
    left = sorted(p.name for p in tmp_path.rglob("*"))
    assert left == sorted(([name.strip("/")] if path.exists() else []) + ["kits"])  # nothing written


@pytest.mark.parametrize(("old", "new", "needle"), [
    ("    def to_dict(self):", "    def as_dict(self):", "task class Minimal lacks to_dict (see mechwork.kit.Task)"),
    ("@dataclass(frozen=True)\n", "", "its task class Minimal must be a dataclass"),
    ("    n_ctx: ClassVar[int] = 3\n", "", "task class Minimal lacks n_ctx (see mechwork.kit.Task)"),
])
def test_a_kit_that_breaks_the_protocol_is_refused_on_load(old, new, needle, tmp_path, capsys):
    (tmp_path / "k.py").write_text(MINIMAL.replace(old, new))
    assert needle in refused(capsys, "--kit", str(tmp_path / "k.py"), "train", "minimal", "--out",
                             str(tmp_path / "run"))
    assert sorted(p.name for p in tmp_path.iterdir()) == ["k.py"]


@pytest.mark.parametrize(("old", "new", "needle"), [
    ("model=lambda task: ToyConfig(", "model=lambda task: None and ToyConfig(",
     "model(task) must return a mechwork.models.ToyConfig (got NoneType)"),
    ("recipe=lambda task: TrainConfig(", "recipe=lambda task: dict(",
     "recipe(task) must return a mechwork.training.TrainConfig (got dict)"),
    ("d_vocab=task.d_vocab,", "d_vocab=3,", "model(task) has d_vocab 3, less than the task's 6"),
    ("Batch(t, t.clone(),", "Batch(t, t[:, :2].clone(),", "task.batch('train') targets must be integers of the "
     "tokens' shape [16, 3] (got [16, 2] torch.int64)"),
    ("Batch(t, t.clone(), torch.ones_like(t, dtype=torch.bool))", "Batch(t, t.clone(), torch.zeros_like(t, dtype="
     "torch.bool))", "task.batch('train') mask scores no position"),
    ("Batch(t, t.clone(),", "Batch(t + 1, t.clone(),", "task.batch('train') tokens must be in [0, d_vocab = 6)"),
    ("        g = torch.Generator()", "        assert split == 'train', split\n        g = torch.Generator()",
     "task.batch('test') raised AssertionError: test"),
])
def test_a_kit_whose_task_hands_out_what_training_cannot_use(old, new, needle, tmp_path, capsys):
    assert old in MINIMAL
    (tmp_path / "k.py").write_text(MINIMAL.replace(old, new))
    err = refused(capsys, "--kit", str(tmp_path / "k.py"), "train", "minimal", "--out", str(tmp_path / "run"))
    assert f"kit 'minimal': {needle}" in err, err
    assert sorted(p.name for p in tmp_path.iterdir()) == ["k.py"]  # no run directory
    # from Python too: train() tries the kit's task before it writes the run directory
    from mechwork.kit import get_kit
    from mechwork.training import train

    with pytest.raises(ConfigError, match=re.escape(f"kit 'minimal': {needle}")):
        train(get_kit("minimal").task(), out=tmp_path / "run", quiet=True)  # the kit --kit loaded above
    assert sorted(p.name for p in tmp_path.iterdir()) == ["k.py"]


def test_a_kit_with_no_held_out_split(tmp_path, capsys):
    source = MINIMAL.replace("    n_ctx: ClassVar[int] = 3\n", "    n_ctx: ClassVar[int] = 3\n    eval_splits = ()\n")
    (tmp_path / "k.py").write_text(source)
    kit, out = ["--kit", str(tmp_path / "k.py")], tmp_path / "run"
    code, stdout, err = run(capsys, *kit, "train", "minimal", "--out", str(out), "--quiet")
    assert code == 0 and stdout.count("train acc") == 2 and "train loss" in stdout and "test acc" not in stdout, err
    assert "train acc never reached 99%" in stdout
    code, stdout, _ = run(capsys, *kit, "info", str(out))
    assert code == 0 and "  train acc " in stdout and "test_acc" not in stdout, stdout


def test_a_user_analyse_or_probe_that_raises_is_one_line_naming_where(tmp_path, capsys):
    source = MINIMAL.replace("analyse=lambda source: Analysis(source.info, {}),", "analyse=lambda source: 1 / 0,")
    source = source.replace("    clean = task.batch(\"test\").tokens[:n]\n", "    raise KeyError(n)\n")
    assert source.count("1 / 0") == 1 and source.count("raise KeyError(n)") == 1
    (tmp_path / "k.py").write_text(source)
    kit, out, page = ["--kit", str(tmp_path / "k.py")], tmp_path / "run", tmp_path / "p.html"
    assert run(capsys, *kit, "train", "minimal", "--out", str(out), "--quiet")[0] == 0
    err = refused(capsys, *kit, "dashboard", str(out), "--out", str(page))
    assert "kit 'minimal': analyse() raised ZeroDivisionError: division by zero (at k.py:" in err
    assert not page.exists()
    err = refused(capsys, *kit, "patch", str(out))
    assert "kit 'minimal': probe() raised KeyError: 8 (at k.py:" in err
    from mechwork.source import open_source

    with pytest.raises(ConfigError) as caught:  # from Python, the original error is chained
        kitmod.get_kit("minimal").analyse(open_source(str(out)))
    assert isinstance(caught.value.__cause__, ZeroDivisionError)


def test_a_file_named_twice_loads_once_and_two_files_in_the_variable(tmp_path, capsys, monkeypatch):
    first = kitmod.load_kits(str(KITS / "minimal.py"))
    kit = kitmod.get_kit("minimal")
    relative = Path("tests/kits/minimal.py")
    monkeypatch.chdir(KITS.parent.parent)
    assert first == ["minimal"] and kitmod.load_kits(f"{relative}{os.pathsep}{relative}") == []
    assert kitmod.get_kit("minimal") is kit  # not executed again: a task built before is still its kit's
    assert kitmod.kit_of(kit.task()) is kit
    monkeypatch.setenv("MECHWORK_KITS", f"{KITS / 'minimal.py'}:{KITS / 'typed_fields.py'}")
    code, stdout, _ = run(capsys, "train", "--help")
    assert code == 0 and "minimal" in stdout and "typed" in stdout


def test_a_kits_run_without_its_kit(tmp_path, capsys, monkeypatch):
    out = tmp_path / "m"
    assert run(capsys, "--kit", str(KITS / "minimal.py"), "train", "minimal", "--out", str(out), "--quiet")[0] == 0
    kitmod._REGISTRY.pop("minimal")
    kitmod._FILES.clear()
    how = ("a kit loaded with --kit FILE or --task FILE.py:KIT (before the command), MECHWORK_KITS=FILE or "
           "mechwork.kit.load_kits(FILE)")
    for args in (["info", str(out)], ["dashboard", str(out), "--out", str(tmp_path / "x.html")],
                 ["patch", str(out)]):
        err = refused(capsys, *args, code=2)  # the run is fine: the command lacks its kit
        assert how in err and "(got 'minimal')" in err and "bad run config" not in err, err
    err = refused(capsys, "train", "minimal", "--out", str(out), "--resume")
    assert "No such command 'minimal': KIND must be one of induction, modadd, or the kind of " + how in err
    assert sorted(p.name for p in tmp_path.iterdir()) == ["m"]

    from mechwork.runs import Run

    with pytest.raises(ConfigError, match="or the kind of a kit loaded with --kit FILE"):
        _ = Run(out).task
    monkeypatch.setenv("MECHWORK_KITS", str(tmp_path / "no_such_kit.py"))
    for _ in range(2):  # a broken variable is named each time it is needed
        with pytest.raises(ConfigError, match="MECHWORK_KITS: 'kit' must be a .py file or a module name"):
            _ = Run(out).task
    monkeypatch.setenv("MECHWORK_KITS", str(KITS / "minimal.py"))  # the variable works from Python too
    assert Run(out).task == kitmod.get_kit("minimal").task()


def test_the_variable_names_presets_to_python_too(monkeypatch):
    import mechwork

    monkeypatch.setenv("MECHWORK_KITS", str(KITS / "digitsum.py"))
    with pytest.raises(CheckpointError, match="preset 'digitsum-small' has no embedded weights"):
        mechwork.load("digitsum-small")  # found (a user kit's preset ships no weights), not an unknown name
    assert "digitsum-small" in mechwork.models.PRESETS
