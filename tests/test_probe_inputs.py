"""Bad input found by probing the Python API and the command line with whole classes of values."""

from __future__ import annotations

import os
import subprocess
import sys

import pytest

from mechwork.errors import ConfigError
from mechwork.limits import SEED_MAX


@pytest.mark.parametrize("seed", [SEED_MAX + 1, 2**63, 10**23, -1])
def test_seeds_outside_the_generator_range_are_one_line_everywhere(seed):
    """A seed past 64 bits used to reach torch's generator as a raw ``Overflow when unpacking long long``."""
    from mechwork.models import ToyConfig
    from mechwork.tasks import InductionTask, ModularArithmetic, standard_probe
    from mechwork.training import TrainConfig

    makers = [
        lambda: ModularArithmetic(p=11, seed=seed),
        lambda: InductionTask(d_vocab=8, seq_len=8, min_len=2, max_len=4, seed=seed),
        lambda: ToyConfig(seed=seed),
        lambda: TrainConfig(seed=seed),
        lambda: standard_probe(ModularArithmetic(p=11), n=2, seed=seed),
    ]
    for make in makers:
        with pytest.raises(ConfigError) as e:
            make()
        assert "'seed' must be an integer" in str(e.value) and "\n" not in str(e.value)


def test_the_largest_seed_still_trains_and_probes():
    """The bound is not too tight: SEED_MAX reaches torch's generators (init, minibatch, probe) without error."""
    from mechwork.models import ToyConfig, build_model
    from mechwork.tasks import ModularArithmetic, standard_probe
    from mechwork.training import TrainConfig, train

    task = ModularArithmetic(p=5, train_frac=0.5, seed=SEED_MAX)
    cfg = ToyConfig.for_task(task, seed=SEED_MAX)
    build_model(cfg)
    tc = TrainConfig(steps=2, seed=SEED_MAX, batch_size=4, eval_every=1)
    train(task, cfg, tc, quiet=True)
    assert standard_probe(task, n=2, seed=SEED_MAX).clean.shape == (2, 3)


@pytest.fixture(scope="module")
def tiny_run(tmp_path_factory):
    from mechwork import train
    from mechwork.tasks import ModularArithmetic
    from mechwork.training import TrainConfig

    out = tmp_path_factory.mktemp("probe") / "run"
    train(ModularArithmetic(p=5, train_frac=0.5), None, TrainConfig(steps=2, eval_every=1), out=out, quiet=True,
          device="cpu")
    return out


def test_run_of_a_non_path_and_non_integer_steps_are_one_line(tiny_run):
    """``Run(None)`` and ``weights_at('2')`` raised raw TypeErrors; ``weights_at(True)`` loaded step 1.

    A fresh process: the suite's runtime type checker would refuse these before mechwork's own checks do.
    """
    code = (
        "import sys\n"
        "from mechwork import Run\n"
        "from mechwork.errors import ConfigError\n"
        "for bad in (None, 123, b'runs/x', 1.5):\n"
        "    try:\n"
        "        Run(bad)\n"
        "    except ConfigError as e:\n"
        "        print(e)\n"
        "run = Run(sys.argv[1])\n"
        "for bad in ('2', 1.5, True, [2]):\n"
        "    try:\n"
        "        run.weights_at(bad)\n"
        "    except ConfigError as e:\n"
        "        print(e)\n"
        "print(sorted(run.weights_at(2)) == sorted(run.weights_at(None)))\n"
    )
    out = subprocess.run([sys.executable, "-c", code, str(tiny_run)], capture_output=True, text=True, timeout=600,
                         env=os.environ | {"OMP_NUM_THREADS": "1"})
    assert out.returncode == 0, out.stderr
    lines = out.stdout.splitlines()
    assert len(lines) == 9, out.stdout
    assert all(ln.startswith("'path' must be a run directory (a str or path; got ") for ln in lines[:4]), lines
    assert all(ln.startswith("'step' must be an integer checkpointed step") for ln in lines[4:8]), lines
    assert lines[8] == "True"  # a good step still loads


def test_tokens_longer_than_n_ctx_or_without_data_are_one_line_everywhere(tiny_run):
    """Sequences past n_ctx reached TransformerLens (a raw ValueError in ablate); meta tensors a raw RuntimeError."""
    import torch

    from mechwork import load
    from mechwork.analysis.ablation import ablate
    from mechwork.analysis.attention import attention_patterns
    from mechwork.analysis.attribution import attribute
    from mechwork.analysis.patching import patch

    model = load(tiny_run)
    good = torch.tensor([[1, 2, 5], [0, 4, 5]])

    def metric(logits):
        return logits[:, -1, 0].mean()

    for bad, needle in ((torch.zeros(2, 10, dtype=torch.long), "at most n_ctx = 3 positions"),
                        (good.to("meta"), "device 'meta'")):
        calls = [lambda b=bad: patch(model, b, good, metric), lambda b=bad: patch(model, good, b, metric),
                 lambda b=bad: attribute(model, b, good, metric), lambda b=bad: ablate(model, b, heads=[(0, 0)]),
                 lambda b=bad: attention_patterns(model, b)]
        for call in calls:
            with pytest.raises(ConfigError) as e:
                call()
            assert needle in str(e.value) and "\n" not in str(e.value)
    assert ablate(model, good, heads=[(0, 0)]).logits.shape[0] == 2  # a batch that fits still runs


def _file_where_checkpoints_are(run):
    import shutil

    shutil.rmtree(run / "checkpoints")
    (run / "checkpoints").write_text("mine")


def _checkpoints_symlink_loop(run):
    import shutil

    shutil.rmtree(run / "checkpoints")
    (run / "checkpoints").symlink_to("checkpoints")


def _folder_named_like_a_checkpoint(run):
    last = sorted((run / "checkpoints").iterdir())[-1]
    last.unlink()
    last.mkdir()


@pytest.mark.parametrize("corrupt, needle", [
    (_file_where_checkpoints_are, "must be a directory of checkpoints (got a file)"),
    (_checkpoints_symlink_loop, "must be a directory of checkpoints (got a broken symlink)"),
    (_folder_named_like_a_checkpoint, "must be a checkpoint file (got a directory)"),
])
def test_resume_and_force_on_a_broken_checkpoints_layout_are_one_line_exit_1(tiny_run, tmp_path, corrupt, needle,
                                                                               capsys):
    """These crashed half-way with raw FileExistsError / IsADirectoryError tracebacks from the atomic writer."""
    import shutil

    from mechwork.cli import main
    from mechwork.errors import CheckpointError
    from mechwork.runs import RunWriter

    run = tmp_path / "run"
    shutil.copytree(tiny_run, run)
    corrupt(run)

    def snapshot():
        return {str(f.relative_to(run)): (f.is_symlink(), f.is_dir()) for f in run.rglob("*")} if not (
            run / "checkpoints").is_symlink() else sorted(f.name for f in run.iterdir())

    before = snapshot()
    for args in (["train", "modadd", "--out", str(run), "--resume", "--steps", "4", "--quiet"],
                 ["train", "modadd", "--p", "5", "--out", str(run), "--force", "--steps", "2", "--quiet"]):
        assert main(args) == 1, args
        lines = capsys.readouterr().err.strip().splitlines()
        assert len(lines) == 1 and lines[0].startswith("mechwork: error: ") and needle in lines[0], (args, lines)
    with pytest.raises(CheckpointError, match="checkpoint"):
        RunWriter.check_target(run, resume=True, force=False)
    assert snapshot() == before  # nothing written, nothing of the user's deleted


def test_ablation_directions_of_the_wrong_shape_or_not_finite_are_one_line(tiny_run):
    """A 7-vector for a 128-wide residual raised a raw reshape RuntimeError; NaN directions ran silently."""
    import torch

    from mechwork import load
    from mechwork.analysis.ablation import ablate

    model = load(tiny_run)
    tokens = torch.tensor([[1, 2, 5], [0, 4, 5]])
    name, width = "blocks.0.hook_resid_pre", int(model.cfg.d_model)
    for bad, needle in ((torch.zeros(7), "(got 'shape (7,)')"), (torch.zeros(2, 3, width), "(got 'shape (2, 3,"),
                        (torch.full((width,), float("nan")), "finite numbers"), ("x", "(got 'str')")):
        with pytest.raises(ConfigError) as e:
            ablate(model, tokens, directions={name: bad})
        assert "'directions' must be for 'blocks.0.hook_resid_pre', " in str(e.value) and needle in str(e.value)
    u = torch.zeros(width)
    u[0] = 1.0
    assert ablate(model, tokens, directions={name: u}).logits.shape[0] == 2  # a good direction still runs


def test_train_of_things_that_are_not_a_task_or_configs_is_one_line(tmp_path):
    """``train(None)`` raised a raw AttributeError deep inside (a fresh process: the suite's type checker
    would refuse None first)."""
    code = (
        "import sys\n"
        "from mechwork import ModularArithmetic, train\n"
        "from mechwork.errors import ConfigError\n"
        "task = ModularArithmetic(p=5, train_frac=0.5)\n"
        "for args in ((None,), ({'p': 5},), (task, {'d_model': 8}), (task, None, {'steps': 1})):\n"
        "    try:\n"
        "        train(*args, out=sys.argv[1], quiet=True)\n"
        "    except ConfigError as e:\n"
        "        print(e)\n"
    )
    out = subprocess.run([sys.executable, "-c", code, str(tmp_path / "run")], capture_output=True, text=True,
                         timeout=600, env=os.environ | {"OMP_NUM_THREADS": "1"})
    assert out.returncode == 0, out.stderr
    assert out.stdout.splitlines() == [
        "'task' must be a ModularArithmetic or InductionTask (got 'NoneType')",
        "'task' must be a ModularArithmetic or InductionTask (got 'dict')",
        "'model_cfg' must be a ToyConfig or None (got 'dict')",
        "'train_cfg' must be a TrainConfig or None (got 'dict')",
    ]
    assert not (tmp_path / "run").exists()


@pytest.mark.parametrize("kind", ["directory", "broken symlink"])
def test_metrics_that_are_not_a_file_are_one_line_exit_1(tiny_run, tmp_path, kind, capsys):
    """A folder (or dangling link) named metrics.jsonl was read as 'no metrics', and info printed a clean run."""
    import shutil

    from mechwork.cli import main

    run = tmp_path / "run"
    shutil.copytree(tiny_run, run)
    (run / "metrics.jsonl").unlink()
    if kind == "directory":
        (run / "metrics.jsonl").mkdir()
    else:
        (run / "metrics.jsonl").symlink_to(tmp_path / "gone.jsonl")
    for args in (["info", str(run), "--quiet"],
                 ["train", "modadd", "--out", str(run), "--resume", "--steps", "4", "--quiet"]):
        assert main(args) == 1, args
        lines = capsys.readouterr().err.strip().splitlines()
        assert len(lines) == 1 and f"must be a metrics file (got a {kind})" in lines[0], (args, lines)
    assert (run / "metrics.jsonl").is_symlink() == (kind != "directory")  # nothing replaced


def test_missing_metrics_file_is_still_no_rows(tiny_run, tmp_path):
    """The check above is not too wide: an absent metrics.jsonl still reads as no rows."""
    from mechwork.runs import read_metrics_rows

    assert read_metrics_rows(tmp_path / "metrics.jsonl") == []
    assert read_metrics_rows(tiny_run / "metrics.jsonl")  # and the real file has rows


@pytest.mark.parametrize("energy, max_keys, needle", [
    ([3.0, 2.0, 1.0], 0, "'max_keys' must be an integer >= 1 (got 0)"),
    ([3.0, 2.0, 1.0], -1, "'max_keys' must be an integer >= 1 (got -1)"),
    ([], 12, "'energy' must be a finite 1-D tensor of at least 2 frequencies (got '0 values')"),
    ([float("nan"), 1.0], 12, "'energy' must be a finite 1-D tensor"),
])
def test_embedding_gap_bad_input_is_one_line(energy, max_keys, needle):
    """max_keys=-1 and an empty spectrum raised a raw IndexError from argmax; NaN energies gave a silent answer."""
    import torch

    from mechwork.analysis.fourier import embedding_gap

    with pytest.raises(ConfigError) as e:
        embedding_gap(torch.tensor(energy), max_keys=max_keys)
    assert needle in str(e.value)
    assert embedding_gap(torch.tensor([9.0, 8.0, 0.1, 0.05]), max_keys=1) == [1]  # good input still works


@pytest.mark.parametrize("value", [float("nan"), float("inf")])
def test_a_non_finite_metric_is_one_line_in_patch_and_attribute(tiny_run, value):
    """A metric returning NaN gave a patch result full of NaN effects, without a word."""
    import torch

    from mechwork import load
    from mechwork.analysis.attribution import attribute
    from mechwork.analysis.patching import patch

    model = load(tiny_run)
    clean, corrupted = torch.tensor([[1, 2, 5], [0, 4, 5]]), torch.tensor([[1, 3, 5], [0, 1, 5]])

    def metric(logits):
        return logits[:, -1, 0].mean() * value

    for run_it in (patch, attribute):
        with pytest.raises(ConfigError, match=r"^'metric' must return finite values \(got -?(nan|inf)\)"):
            run_it(model, clean, corrupted, metric)
    assert torch.isfinite(patch(model, clean, corrupted, lambda lg: lg[:, -1, 0].mean()).effect()).all()
