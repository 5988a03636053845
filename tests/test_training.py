from __future__ import annotations

import pytest
import torch

from mechwork.errors import ConfigError, RunDirError
from mechwork.models import save_tensors
from mechwork.tasks import InductionTask, ModularArithmetic
from mechwork.training import GrokfastEMA, TrainConfig, checkpoint_steps, recipe, train

# A small-p setting that groks well inside its budget: p=31, half the data, AdamW lr 1e-2,
# wd 1 memorises by step ~25 and generalises between steps ~500 and ~1300 across seeds 0-2.
SMALL = ModularArithmetic(p=31, op="add", train_frac=0.5, seed=0)
SMALL_CFG = TrainConfig(lr=1e-2, weight_decay=1.0, steps=3000, eval_every=25, grokfast_alpha=None)


def test_small_p_groks():
    res = train(SMALL, train_cfg=SMALL_CFG, quiet=True, device="cpu", stop_when=lambda r: r["test_acc"] >= 0.99)
    hist = res.history
    grok = res.first_step("test_acc", 0.99)
    assert grok is not None, hist.tail()
    # grokking, not just learning: the train set is memorised long before the test set generalises
    memorised = res.first_step("train_acc", 0.99)
    assert memorised is not None and 5 * memorised <= grok
    assert hist[hist["step"] == memorised].iloc[0]["test_acc"] < 0.6


def test_training_is_deterministic(tiny_task, tiny_train_cfg):
    a = train(tiny_task, train_cfg=tiny_train_cfg, quiet=True, device="cpu")
    b = train(tiny_task, train_cfg=tiny_train_cfg, quiet=True, device="cpu")
    for k, v in save_tensors(a.model).items():
        assert torch.equal(v, save_tensors(b.model)[k]), k
    assert [r["test_loss"] for r in a.rows] == [r["test_loss"] for r in b.rows]


@pytest.mark.parametrize("batch_size", [None, 16])
def test_resume_equals_uninterrupted(tmp_path, tiny_task, batch_size):
    cfg = TrainConfig(steps=40, eval_every=5, ckpt_every=10, ckpt_log=0, batch_size=batch_size)
    full = train(tiny_task, train_cfg=cfg, out=tmp_path / "full", quiet=True, device="cpu")
    half = TrainConfig.from_dict(cfg.to_dict() | {"steps": 20})
    train(tiny_task, train_cfg=half, out=tmp_path / "split", quiet=True, device="cpu")
    resumed = train(tiny_task, train_cfg=cfg, out=tmp_path / "split", resume=True, quiet=True, device="cpu")
    for k, v in save_tensors(full.model).items():
        assert torch.equal(v, save_tensors(resumed.model)[k]), k
    strip = lambda rows: [{k: v for k, v in r.items() if k != "wall"} for r in rows]
    assert strip(resumed.run.metrics.to_dict("records")) == strip(full.run.metrics.to_dict("records"))
    assert resumed.run.steps == full.run.steps


def test_resume_of_induction_is_exact(tmp_path):
    task = InductionTask(d_vocab=16, seq_len=16, min_len=2, max_len=6, batch_size=8, n_eval=16)
    cfg = TrainConfig(steps=12, eval_every=4, ckpt_every=6, ckpt_log=0, grokfast_alpha=None)
    full = train(task, train_cfg=cfg, out=tmp_path / "a", quiet=True, device="cpu")
    train(task, train_cfg=TrainConfig.from_dict(cfg.to_dict() | {"steps": 6}), out=tmp_path / "b", quiet=True)
    res = train(task, train_cfg=cfg, out=tmp_path / "b", resume=True, quiet=True, device="cpu")
    for k, v in save_tensors(full.model).items():
        assert torch.equal(v, save_tensors(res.model)[k]), k


def test_resume_refuses_changed_recipe(tmp_path, tiny_task, tiny_train_cfg):
    train(tiny_task, train_cfg=tiny_train_cfg, out=tmp_path / "r", quiet=True, device="cpu")
    changed = TrainConfig.from_dict(tiny_train_cfg.to_dict() | {"lr": 0.5})
    with pytest.raises(ConfigError, match=r"cannot change \['lr'\] on resume"):
        train(tiny_task, train_cfg=changed, out=tmp_path / "r", resume=True, quiet=True)


def test_existing_out_is_refused_and_force_overwrites(tmp_path, tiny_task, tiny_train_cfg):
    out = tmp_path / "r"
    train(tiny_task, train_cfg=tiny_train_cfg, out=out, quiet=True, device="cpu")
    before = sorted(p.name for p in (out / "checkpoints").iterdir())
    with pytest.raises(RunDirError, match="exists and is not empty"):
        train(tiny_task, train_cfg=tiny_train_cfg, out=out, quiet=True)
    assert sorted(p.name for p in (out / "checkpoints").iterdir()) == before
    short = TrainConfig.from_dict(tiny_train_cfg.to_dict() | {"steps": 10})
    res = train(tiny_task, train_cfg=short, out=out, force=True, quiet=True, device="cpu")
    assert res.run.steps[-1] == 10


def test_grokfast_filter_matches_reference_formula():
    p = torch.nn.Parameter(torch.zeros(3))
    gf = GrokfastEMA({"p": p}, alpha=0.9, lamb=2.0)
    grads = [torch.tensor([1.0, 0.0, -1.0]), torch.tensor([0.0, 2.0, 1.0]), torch.tensor([3.0, 1.0, 0.0])]
    ema = None
    for g in grads:
        ema = g.clone() if ema is None else 0.9 * ema + 0.1 * g  # ironjr/grokfast gradfilter_ema
        p.grad = g.clone()
        gf()
        torch.testing.assert_close(p.grad, g + 2.0 * ema)


def test_checkpoint_schedule_dense_early_sparse_late():
    steps = checkpoint_steps(10_000, ckpt_every=1000, ckpt_log=20)
    assert steps[0] == 0 and steps[-1] == 10_000
    early = [s for s in steps if s < 100]
    late = [s for s in steps if s >= 5000]
    assert len(early) >= 8 and len(late) <= 7
    assert all(s in steps for s in range(0, 10_001, 1000))


@pytest.mark.parametrize(
    ("kwargs", "message"),
    [
        ({"lr": 0}, "'lr' must be a finite number > 0.0 (got 0)"),
        ({"lr": float("nan")}, "'lr' must be a finite number > 0.0 (got nan)"),
        ({"weight_decay": -1.0}, "'weight_decay' must be a finite number >= 0.0 (got -1.0)"),
        ({"betas": (0.9, 1.0)}, "'betas' must be two numbers in [0, 1) (got (0.9, 1.0))"),
        ({"steps": 0}, "'steps' must be an integer >= 1 (got 0)"),
        ({"batch_size": 0}, "'batch_size' must be an integer >= 1, or None (got 0)"),
        ({"grokfast_alpha": 1.0}, "'grokfast_alpha' must be a finite number >= 0.0 and < 1.0 (got 1.0)"),
        ({"steps": 10, "decay_steps": 11}, "'decay_steps' must be an integer in [0, steps=10] (got 11)"),
    ],
)
def test_bad_train_config(kwargs, message):
    with pytest.raises(ConfigError) as e:
        TrainConfig(**kwargs)
    assert str(e.value) == message


def test_model_must_fit_task(tiny_task):
    from mechwork.models import ToyConfig

    with pytest.raises(ConfigError, match="model 'd_vocab' is 114 but the task needs 12"):
        train(tiny_task, ToyConfig(), TrainConfig(steps=1), quiet=True)


def test_recipes():
    assert recipe(ModularArithmetic()) == TrainConfig()
    assert recipe(InductionTask()).weight_decay == 0.01


def test_early_stop_is_checkpointed(tmp_path, tiny_task):
    cfg = TrainConfig(steps=100, eval_every=7, ckpt_every=50, ckpt_log=0)
    res = train(tiny_task, train_cfg=cfg, out=tmp_path / "r", quiet=True, device="cpu",
                stop_when=lambda row: row["step"] >= 20)
    assert res.rows[-1]["step"] == 21
    assert res.run.steps == [0, 21]
    for k, v in save_tensors(res.model).items():
        assert torch.equal(v, res.run.weights_at(21)[k])


def test_deterministic_with_two_threads(tmp_path):
    """Bit-identical weights from two separate 2-thread processes (no racy index_add in backward)."""
    import subprocess
    import sys

    code = (
        "import hashlib, torch; torch.set_num_threads(2)\n"
        "from mechwork.tasks import ModularArithmetic\n"
        "from mechwork.training import TrainConfig, train\n"
        "from mechwork.models import save_tensors\n"
        "m = train(ModularArithmetic(p=23, train_frac=0.5), train_cfg=TrainConfig(steps=60, eval_every=30),"
        " quiet=True, device='cpu').model\n"
        "print(hashlib.sha1(b''.join(v.numpy().tobytes() for _, v in sorted(save_tensors(m).items()))).hexdigest())\n"
    )
    runs = [subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, check=True)
            for _ in range(2)]
    assert runs[0].stdout.strip() == runs[1].stdout.strip() != ""
