from __future__ import annotations

import json

import pytest
import torch

import mechwork
from mechwork.errors import CheckpointError, ConfigError, RunDirError
from mechwork.io import atomic_open, load_tensors, save_tensors_atomic
from mechwork.runs import Run
from mechwork.training import train


@pytest.fixture
def run_dir(tmp_path, tiny_task, tiny_train_cfg):
    out = tmp_path / "run"
    train(tiny_task, train_cfg=tiny_train_cfg, out=out, quiet=True, device="cpu")
    return out


def test_run_directory_layout(run_dir):
    cfg = json.loads((run_dir / "config.json").read_text())
    assert {"task", "model", "train", "seed", "versions"} <= set(cfg)
    assert {"torch", "transformer-lens", "mechwork", "python"} <= set(cfg["versions"])
    assert cfg["versions"]["transformer-lens"].startswith("4.3.")
    rows = [json.loads(line) for line in (run_dir / "metrics.jsonl").read_text().splitlines()]
    assert [r["step"] for r in rows] == [0, 10, 20, 30]
    assert {"step", "wall", "train_loss", "train_acc", "test_loss", "test_acc"} <= set(rows[0])
    names = sorted(p.name for p in (run_dir / "checkpoints").iterdir())
    assert names[0] == "step_0000000.safetensors" and names[-1] == "step_0000030.safetensors"
    assert not list(run_dir.rglob(".tmp-*"))  # no leftovers from atomic writes


def test_run_reader(run_dir, tiny_task):
    run = Run(run_dir)
    assert run.steps[0] == 0 and run.steps[-1] == 30
    assert list(run.metrics["step"]) == [0, 10, 20, 30]
    assert run.task == tiny_task
    m0, m30 = run.model_at(0), run.model_at()
    assert not m30.training
    toks = tiny_task.tokens[:5]
    assert not torch.allclose(m0(toks), m30(toks))
    torch.testing.assert_close(mechwork.load(run_dir, step=30)(toks), m30(toks))
    with pytest.raises(ConfigError, match=r"'step' must be a checkpointed step .* \(got 7; nearest"):
        run.model_at(7)


def test_corrupt_and_missing_checkpoints_name_the_file(run_dir):
    ck = run_dir / "checkpoints" / "step_0000010.safetensors"
    ck.write_bytes(ck.read_bytes()[:100])  # truncated
    with pytest.raises(CheckpointError, match="corrupt checkpoint .*step_0000010.safetensors"):
        Run(run_dir).model_at(10)
    with pytest.raises(CheckpointError, match="missing checkpoint: .*nope.safetensors"):
        load_tensors(run_dir / "nope.safetensors")
    (run_dir / "config.json").write_text("{not json")
    with pytest.raises(CheckpointError, match="corrupt JSON in .*config.json"):
        Run(run_dir)


def test_not_a_run_and_bad_names(tmp_path, monkeypatch):
    with pytest.raises(RunDirError, match="not a run directory"):
        Run(tmp_path)
    with pytest.raises(ConfigError, match="'path_or_preset' must be a run directory or one of modadd-113"):
        mechwork.load(tmp_path / "missing")
    from mechwork import runs as runs_module

    monkeypatch.setattr(runs_module, "embedded_path", lambda name: tmp_path / f"{name}.safetensors")
    with pytest.raises(CheckpointError, match="preset 'induction-2l' has no embedded weights"):
        mechwork.load("induction-2l")


def test_atomic_write_keeps_old_file_on_failure(tmp_path):
    target = tmp_path / "w.safetensors"
    save_tensors_atomic({"w": torch.ones(3)}, target)
    with pytest.raises(RuntimeError), atomic_open(target, "wb") as f:
        f.write(b"half a file")
        raise RuntimeError("crash mid-write")
    assert torch.equal(load_tensors(target)[0]["w"], torch.ones(3))
    assert [p.name for p in tmp_path.iterdir()] == ["w.safetensors"]


def test_torn_metrics_line_is_skipped(run_dir):
    with open(run_dir / "metrics.jsonl", "a") as f:
        f.write('{"step": 40, "wa')
    assert list(Run(run_dir).metrics["step"]) == [0, 10, 20, 30]


def test_no_pickle_anywhere(run_dir):
    for path in run_dir.rglob("*"):
        if path.is_file():
            head = path.read_bytes()[:2]
            assert head != b"\x80\x04" and head != b"PK", path  # neither pickle nor torch.save zip
