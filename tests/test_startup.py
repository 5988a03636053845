"""The read-only commands start without torch, TransformerLens or plotly, and ``mechwork info`` prints the numbers
the loaded model has.

Each read-only command runs in its own Python process (as a user types it), which reports the heavy packages it
imported. ``info``'s parameter counts (read from the safetensors header, without torch) are checked against the
model :func:`mechwork.load` returns; its training-split size against the task's own split.
"""

from __future__ import annotations

import json
import re
import subprocess
import sys

import pytest
from clirun import train_small_run

from mechwork.cli import main

HEAVY = ("torch", "transformer_lens", "plotly", "transformers")
READ_ONLY = [
    ["info", "modadd-113"],
    ["info", "induction-2l"],
    ["info", "RUN"],
    ["--help"],
    ["--version"],
    ["info", "--help"],
    ["train", "--help"],
    ["train", "modadd", "--help"],
    ["train", "induction", "--help"],
    ["analyze", "fourier", "--help"],
    ["patch", "--help"],
    ["circuit", "--help"],
    ["dashboard", "--help"],
    ["demo", "--help"],
    ["post", "--help"],
    ["post", "--list"],
    ["sae", "--help"],
    ["sae", "train", "--help"],
    ["sae", "info", "--help"],
]
PROBE = """
import json, sys
from mechwork.cli import main
for args in json.loads(sys.argv[1]):  # one after another: what one imports, the next ones would show too
    code = main(args)
    print(json.dumps({"code": code, "heavy": [m for m in HEAVY if m in sys.modules]}), file=sys.stderr)
""".replace("HEAVY", repr(HEAVY))


@pytest.fixture(scope="module")
def run_dir(tmp_path_factory):
    """A run directory of a few steps (trained in this process: the commands under test run in their own)."""
    return train_small_run(tmp_path_factory.mktemp("startup") / "run")


def _probe(commands: list[list[str]]) -> tuple[list[dict], str]:
    """Run ``commands`` in order in one new Python process: each one's exit code and the heavy packages loaded
    by then, and everything they printed."""
    res = subprocess.run([sys.executable, "-c", PROBE, json.dumps(commands)], capture_output=True, text=True)
    reports = [json.loads(line) for line in res.stderr.splitlines() if line.startswith('{"code"')]
    assert len(reports) == len(commands), res.stderr
    return reports, res.stdout


def test_read_only_commands_import_no_torch(run_dir):
    commands = [[str(run_dir) if a == "RUN" else a for a in args] for args in READ_ONLY]
    reports, out = _probe(commands)
    for args, report in zip(commands, reports, strict=True):
        assert report["code"] == 0, (args, out)
        assert report["heavy"] == [], f"mechwork {' '.join(args)} imported {report['heavy']}"
    for needle in ("preset modadd-113", "preset induction-2l", f"run {run_dir}", "Usage: mechwork [OPTIONS]"):
        assert needle in out


def test_the_probe_sees_torch_when_a_command_loads_a_model():
    """The check above can fail: a command that loads the model reports torch (and the commands before it none)."""
    reports, out = _probe([["--version"], ["patch", "induction-2l", "--n", "1", "--quiet"]])
    assert reports[0] == {"code": 0, "heavy": []}
    assert reports[1]["code"] == 0 and {"torch", "transformer_lens"} <= set(reports[1]["heavy"]), out


@pytest.mark.parametrize("name", ["modadd-113", "induction-2l"])
def test_info_numbers_are_those_of_the_loaded_model(name, capsys):
    import mechwork
    from mechwork.runs import embedded_path

    assert main(["info", name, "--quiet"]) == 0
    text = capsys.readouterr().out
    total, trained = (int(x.replace(",", "")) for x in re.search(r"parameters: ([\d,]+) \(([\d,]+) trained\)",
                                                                  text).groups())
    ps = list(mechwork.load(name).parameters())
    assert total == sum(p.numel() for p in ps)
    assert trained == sum(p.numel() for p in ps if p.requires_grad)
    pre = mechwork.preset(name)
    size = embedded_path(name).stat().st_size
    assert f"({size:,} bytes)" in text
    if pre.task.kind == "modadd":
        n_train = int(re.search(r"(\d+) train \(", text).group(1))
        assert n_train == len(pre.task.train_idx) and pre.task.n_test == len(pre.task.test_idx)


def test_header_count_equals_a_built_model_for_other_bias_settings(tmp_path):
    """Trained biases (attn_bias) and untrained MLP biases, and a LayerNorm: the header count matches the model."""
    from mechwork.io import save_tensors_atomic
    from mechwork.models import ToyConfig, build_model, save_tensors
    from mechwork.source import count_parameters

    for cfg in (ToyConfig(d_model=16, n_heads=2, d_head=8, d_mlp=32, attn_bias=True, mlp_bias=False),
                ToyConfig(n_layers=2, d_model=16, n_heads=2, d_head=8, d_mlp=None, normalization="LN")):
        model = build_model(cfg, "cpu")
        save_tensors_atomic(save_tensors(model), tmp_path / "w.safetensors")
        ps = list(model.parameters())
        want = (sum(p.numel() for p in ps), sum(p.numel() for p in ps if p.requires_grad))
        assert count_parameters(cfg, tmp_path / "w.safetensors") == want == count_parameters(cfg)


def test_unreadable_header_falls_back_to_building_the_model(tmp_path):
    from mechwork.models import ToyConfig
    from mechwork.source import count_parameters, safetensors_shapes

    bad = tmp_path / "bad.safetensors"
    bad.write_bytes((10**12).to_bytes(8, "little") + b"{}")
    assert safetensors_shapes(bad) is None and safetensors_shapes(tmp_path / "missing") is None
    cfg = ToyConfig(d_model=16, n_heads=2, d_head=8, d_mlp=32)
    assert count_parameters(cfg, bad) == count_parameters(cfg)
