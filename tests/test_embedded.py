"""The grokked modadd-113 model that ships inside the package."""

from __future__ import annotations

import json
import subprocess
import sys
from pathlib import Path

import pytest
import torch

from mechwork.analysis.grokking import evaluate_modadd
from mechwork.io import load_tensors
from mechwork.models import ToyConfig, build_model, load_weights
from mechwork.runs import embedded_info, embedded_path
from mechwork.tasks import ModularArithmetic

ROOT = Path(__file__).resolve().parents[1]


def test_embedded_files_are_small_and_pickle_free():
    w = embedded_path("modadd-113")
    assert w.is_file() and w.stat().st_size <= 2 * 1024 * 1024
    meta = json.loads(w.with_suffix(".json").read_text())
    assert ToyConfig.from_dict(meta["model"]) == ToyConfig()  # fields added later take their defaults
    assert meta["task"] == {"kind": "modadd", "p": 113, "op": "add", "train_frac": 0.3, "seed": 0}
    assert meta["command"].startswith("python experiments/embed_modadd.py")


def test_embedded_accuracy_on_all_pairs(embedded_model, modadd_preset):
    ev = evaluate_modadd(embedded_model, modadd_preset.task)
    assert ev["all_acc"] >= 0.995
    assert ev["test_acc"] >= 0.99 and ev["train_acc"] >= 0.999
    # the accuracy recorded at export time is what the shipped weights give now
    assert abs(embedded_info("modadd-113")["summary"]["all_acc"] - ev["all_acc"]) < 1e-6


def test_embedded_model_is_past_grokking(modadd_preset):
    s = embedded_info("modadd-113")["summary"]
    # trained well beyond the first step above 99% (through cleanup), not stopped at it
    assert s["steps"] >= 2 * s["grok_step"]
    assert s["memorised_step"] < s["grok_step"]


def test_embedded_model_offline_in_a_fresh_process():
    code = (
        "import os, torch; os.environ['HF_HUB_OFFLINE']='1'; import mechwork; "
        "m = mechwork.load('modadd-113'); print(m.training, m(torch.tensor([[3, 5, 113]]))[0, -1].argmax().item())"
    )
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, check=True)
    assert out.stdout.split() == ["False", "8"]


@pytest.mark.slow
def test_regenerate_at_reduced_scale(tmp_path):
    """The README's regeneration command, at reduced scale: it must grok and export a loadable model."""
    dest = tmp_path / "modadd-113"
    subprocess.run(
        [sys.executable, str(ROOT / "experiments" / "embed_modadd.py"), "--recipe", "default", "--steps", "3000",
         "--run-dir", str(tmp_path / "run"), "--dest", str(dest), "--quiet"],
        check=True, timeout=1800,
    )
    meta = json.loads(dest.with_suffix(".json").read_text())
    model = build_model(ToyConfig.from_dict(meta["model"]), "cpu")
    load_weights(model, load_tensors(dest.with_suffix(".safetensors"))[0])
    ev = evaluate_modadd(model, ModularArithmetic(p=113, train_frac=0.3, seed=0))
    assert ev["test_acc"] >= 0.99 and meta["summary"]["grok_step"] is not None
    assert torch.isfinite(torch.tensor(ev["all_loss"]))
