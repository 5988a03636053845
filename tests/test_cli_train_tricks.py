"""``mechwork train``'s ``--init-scale``, ``--loss`` and ``--orthograd``: each value reaches config.json and the
training itself; a bad one is one line, exit 2, before torch, with nothing written."""

from __future__ import annotations

import json
import subprocess
import sys
from dataclasses import dataclass

import pytest
import torch
from clirun import refused, run
from test_training_tricks import count_tricks

import mechwork.training as training
from mechwork.kitcommand import command_from_fields
from mechwork.models import ToyConfig, build_model, weights
from mechwork.runs import Run
from mechwork.tasks import ModularArithmetic
from mechwork.trainconfig import TrainConfig

SMALL = ["modadd", "--p", "7", "--train-frac", "0.5", "--steps", "3", "--eval-every", "3", "--seed", "2", "--quiet"]


def _trained(capsys, out, *flags: str) -> TrainConfig:
    """Train the small run with ``flags`` into ``out``; its config.json's train section."""
    code, _, err = run(capsys, "train", *SMALL, *flags, "--out", str(out))
    assert code == 0, err
    return TrainConfig.from_dict(json.loads((out / "config.json").read_text())["train"])


def test_the_flags_reach_config_json_and_the_training(tmp_path, capsys, monkeypatch):
    calls, out = count_tricks(monkeypatch), tmp_path / "tricks"
    stored = _trained(capsys, out, "--init-scale", "0.5", "--loss", "stablemax", "--orthograd")
    assert (stored.init_scale, stored.loss, stored.orthograd) == (0.5, "stablemax", True)
    assert calls == {"stablemax": 3, "orthograd": 3}  # one of each per update
    # step 0's checkpoint is the seed's init, halved (built here on its own, not read from the run)
    task = ModularArithmetic(p=7, train_frac=0.5, seed=2)
    seeded = weights(build_model(ToyConfig.for_task(task, seed=2)))
    at0 = Run(out).weights_at(0)
    assert set(at0) == set(seeded)
    for name, w in at0.items():
        assert torch.equal(w, seeded[name].detach() * 0.5), name

    # the options cannot change on --resume (only --steps may), and nothing is trained
    for flag, value, old in (("--init-scale", "0.25", "0.5"), ("--loss", "softmax", "'stablemax'"),
                             ("--no-orthograd", None, "True")):
        refused(capsys, ["train", "modadd", "--out", str(out), "--resume", flag, *([value] if value else [])],
                [f"{flag.replace('no-', '')} cannot change on --resume", f"the run has {old}"])
    assert calls == {"stablemax": 3, "orthograd": 3}


def test_the_flags_written_out_as_the_defaults(tmp_path, capsys, monkeypatch):
    calls = count_tricks(monkeypatch)
    stored = _trained(capsys, tmp_path / "plain", "--init-scale", "1", "--loss", "softmax", "--no-orthograd")
    assert (stored.init_scale, stored.loss, stored.orthograd) == (1.0, "softmax", False)
    assert stored == TrainConfig(steps=3, eval_every=3, seed=2)  # the recipe, as if none were given
    assert calls == {"stablemax": 0, "orthograd": 0}


BAD = [
    (["--init-scale", "0"], ["'--init-scale'", "0.0", "x>0.0"]),
    (["--init-scale", "-1"], ["'--init-scale'", "-1.0", "x>0.0"]),
    (["--init-scale", "nan"], ["'--init-scale'", "nan is not a finite number", "x>0.0"]),
    (["--init-scale", "inf"], ["'--init-scale'", "inf is not a finite number", "x>0.0"]),
    (["--init-scale", "half"], ["'--init-scale'", "'half' is not a valid float"]),
    (["--loss", "foo"], ["'--loss'", "'foo'", "'softmax', 'stablemax'"]),
    (["--orthograd", "yes"], ["unexpected extra argument (yes)"]),
    (["--lr", "nan"], ["'--lr'", "nan is not a finite number", "x>0.0"]),
    (["--wd", "inf"], ["'--wd'", "inf is not a finite number", "x>=0.0"]),
    (["--grokfast-alpha", "nan"], ["'--grokfast-alpha'", "nan", "0.0<=x<1.0"]),
    (["--grokfast-lambda", "inf"], ["'--grokfast-lambda'", "inf", "x>=0.0"]),
]


@pytest.mark.parametrize(("args", "needles"), BAD, ids=[" ".join(a) for a, _ in BAD])
def test_a_bad_value_is_one_line_exit_2_and_nothing_is_written(tmp_path, capsys, monkeypatch, args, needles):
    def no_training(*a, **k):
        raise AssertionError("training started before the bad value was refused")

    monkeypatch.setattr(training, "train", no_training)
    monkeypatch.chdir(tmp_path)
    refused(capsys, ["train", *SMALL, *args, "--out", str(tmp_path / "out")], needles)
    refused(capsys, ["train", *SMALL, *args], needles)  # nor the default run directory under runs/
    assert list(tmp_path.iterdir()) == []


def test_bad_values_are_refused_before_torch_is_imported(tmp_path):
    """The refusals above come from the argument parser: a fresh process imports no torch to make them."""
    probe = ("import json, sys\nfrom mechwork.cli import main\n"
             "codes = [main(a) for a in json.loads(sys.argv[1])]\n"
             "print(json.dumps({'codes': codes, 'torch': 'torch' in sys.modules}))")
    commands = [["train", *SMALL, *args, "--out", str(tmp_path / "out")] for args, _ in BAD]
    res = subprocess.run([sys.executable, "-c", probe, json.dumps(commands)], capture_output=True, text=True)
    report = json.loads(res.stdout.strip().splitlines()[-1])
    assert report == {"codes": [2] * len(BAD), "torch": False}, res.stderr
    assert not (tmp_path / "out").exists()


def test_a_user_kits_field_named_like_a_new_option_stays_a_task_field():
    @dataclass(frozen=True)
    class Weighted:
        length: int = 4
        loss: str = "mean"
        init_scale: float = 2.0
        orthograd: bool = False

    assert [o.name for o in command_from_fields(Weighted).options] == ["length"]
