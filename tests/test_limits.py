"""Fast refusals, memory limits and token-id checks (mechwork.limits and the entry points that use it)."""

from __future__ import annotations

import json
import os
import subprocess
import sys
import textwrap
from pathlib import Path

import pytest

from mechwork import limits
from mechwork.errors import ConfigError, MechworkError, OutputError, RunDirError

ROOT = Path(__file__).resolve().parents[1]
CPU_ONLY_TORCH = limits.cuda_unavailable() is not None


def _fake_run(path: Path, steps: tuple[int, ...] = (0, 10)) -> Path:
    """A run directory as the light checks see it: config.json and checkpoint file names."""
    (path / "checkpoints").mkdir(parents=True)
    cfg = json.loads((ROOT / "mechwork" / "data" / "modadd-113.json").read_text())
    (path / "config.json").write_text(json.dumps({k: cfg[k] for k in ("task", "model", "train")}))
    for s in steps:
        (path / "checkpoints" / f"step_{s:07d}.safetensors").write_bytes(b"")
    return path


def _bad_cases(tmp: Path) -> list[tuple[list[str], str]]:
    run = _fake_run(tmp / "run")
    mul = _fake_run(tmp / "mul")
    cfg = json.loads((mul / "config.json").read_text())
    (mul / "config.json").write_text(json.dumps(cfg | {"task": cfg["task"] | {"op": "mul"}}))
    a_file = tmp / "a-file.txt"
    a_file.write_text("x")
    full = tmp / "full"
    full.mkdir()
    (full / "mine.txt").write_text("x")
    (tmp / "plain-dir").mkdir()
    cases = [
        (["info", "no-such-run"], "'path_or_preset' must be a run directory or one of modadd-113, induction-2l"),
        (["info", str(tmp / "plain-dir")], "not a run directory (no config.json)"),
        (["patch", "no-such-run"], "'path_or_preset' must be"),
        (["dashboard", "modadd-113", "--step", "5"], "'step' must be None for preset 'modadd-113' (got 5)"),
        (["dashboard", str(run), "--step", "7"], "'step' must be a checkpointed step of"),
        (["analyze", "fourier", str(run), "--step", "7"], "(got 7; nearest 10)"),
        (["train", "modadd", "--p", "100003", "--out", str(tmp / "r1")], "needs about"),
        (["train", "modadd", "--p", "12", "--op", "div", "--out", str(tmp / "r2")], "'p' must be a prime"),
        (["train", "induction", "--d-vocab", "1e8", "--out", str(tmp / "r3")], "'1e8' is not a valid integer"),
        (["train", "induction", "--d-vocab", "100000000", "--out", str(tmp / "r3")], "needs about"),
        (["train", "induction", "--seq-len", "16", "--max-len", "9", "--out", str(tmp / "r4")],
         "'max_len' must be at most seq_len/2 = 8"),
        (["train", "modadd", "--out", str(a_file)], "'--out' must be a directory"),
        (["train", "modadd", "--out", str(full)], "exists and is not empty"),
        (["train", "modadd", "--out", str(tmp / "none"), "--resume"], "cannot resume"),
        (["train", "modadd", "--out", str(a_file / "run")], "is a file, not a directory"),
        (["patch", "modadd-113", "--n", "1e8"], "'1e8' is not a valid integer"),
        (["patch", "modadd-113", "--n", "100000000"], "patching 100,000,000 prompts"),
        (["train", "modadd", "--device", "tpu", "--out", str(tmp / "r5")], "'device' must be cpu, cuda, cuda:N or mps"),
        (["dashboard", "modadd-113", "--device", "tpu", "--out", str(tmp / "d.html")], "(got 'tpu')"),
        (["analyze", "fourier", "modadd-113", "--device", "npu"], "(got 'npu')"),
        (["patch", "modadd-113", "--json", "/proc/mechwork-test.json"], "not writable"),
        (["patch", "modadd-113", "--json", str(a_file / "x.json")], "is not a directory"),
        (["patch", "modadd-113", "--json", str(tmp)], "must be a file path, not a directory"),
        (["patch", "modadd-113", "--dashboard", str(tmp / "page.txt")], "must end in .html"),
        (["analyze", "fourier", "modadd-113", "--json", "/proc/mechwork-test.json"], "not writable"),
        (["dashboard", "modadd-113", "--out", str(tmp / "missing" / "d.html")], "does not exist"),
        (["demo", "--out", "/proc/mechwork-test/d.html"], "not writable"),
        (["demo", "--out", str(a_file / "sub" / "d.html")], "is a file, not a directory"),
        (["train", "modadd", "--out", "/proc/mechwork-test-run"], "is not writable"),
        (["dashboard", "modadd-113", "--out", "/proc/mechwork-test.html"], "is not writable"),
        (["analyze", "fourier", "induction-2l"], "whose task is induction"),
        (["train", "modadd", "--seed", str(2**64), "--out", str(tmp / "r7")], "'--seed'"),
        (["train", "induction", "--seed", str(2**32), "--out", str(tmp / "r8")], "0<=x<=4294967295"),
        (["patch", "modadd-113", "--seed", str(10**23)], "'--seed'"),
        (["train", "induction", "--seq-len", "8", "--min-len", "9", "--out", str(tmp / "r9")],
         "'min_len' must be at most seq_len/2 = 4 (got 9)"),
        # a Grokfast option that the filter's state would ignore (it used to be stored and silently unused)
        (["train", "modadd", "--grokfast-lambda", "5", "--out", str(tmp / "r10")],
         "'--grokfast-lambda' 5.0 needs the filter on: add --grokfast"),
        (["train", "modadd", "--no-grokfast", "--grokfast-alpha", "0.9", "--out", str(tmp / "r11")],
         "'--no-grokfast' turns the filter off"),
        (["analyze", "fourier", str(mul)], "applies to op 'add' and 'sub' only (got 'mul'"),
    ]
    if CPU_ONLY_TORCH:
        cases.append((["train", "modadd", "--device", "cuda", "--out", str(tmp / "r6")], "is not available"))
        cases.append((["demo", "--device", "cuda:0"], "is not available"))
    return cases


_PROBE = textwrap.dedent("""
    import contextlib, io, json, sys
    from mechwork.cli import main
    out = []
    for args in json.loads(sys.argv[1]):
        err = io.StringIO()
        with contextlib.redirect_stderr(err), contextlib.redirect_stdout(io.StringIO()):
            code = main(args)
        heavy = sorted(m for m in ("torch", "transformer_lens", "plotly") if m in sys.modules)
        out.append({"code": code, "err": err.getvalue(), "heavy": heavy})
    print(json.dumps(out))
""")


def _probe(cases: list[list[str]], cwd: Path) -> list[dict[str, object]]:
    res = subprocess.run([sys.executable, "-c", _PROBE, json.dumps(cases)], capture_output=True, text=True,
                         cwd=cwd, timeout=600)
    assert res.returncode == 0, res.stderr
    return json.loads(res.stdout)


def test_bad_arguments_refused_in_one_line_before_torch_is_imported(tmp_path):
    cases = _bad_cases(tmp_path)
    before = sorted(p.name for p in tmp_path.iterdir())
    results = _probe([a for a, _ in cases], tmp_path)
    for (args, needle), r in zip(cases, results, strict=True):
        lines = str(r["err"]).strip().splitlines()
        assert r["code"] == 2, (args, r)
        assert len(lines) == 1 and lines[0].startswith("mechwork: error: ") and needle in lines[0], (args, r)
        assert r["heavy"] == [], (args, r)  # refused before torch, TransformerLens or plotly were imported
    assert sorted(p.name for p in tmp_path.iterdir()) == before  # no run directory, no dashboards/ folder
    assert not list(tmp_path.glob("**/.mechwork-check-*"))


def test_the_console_entry_point_imports_no_torch_on_a_bad_argument(tmp_path):
    """``python -X importtime -m mechwork.cli``: the modules a refusal imports, as Python reports them."""
    res = subprocess.run([sys.executable, "-X", "importtime", "-m", "mechwork.cli", "train", "modadd", "--p", "100003"],
                         capture_output=True, text=True, cwd=tmp_path, timeout=600)
    imported = {ln.split("|")[-1].strip() for ln in res.stderr.splitlines() if ln.startswith("import time:")}
    errors = [ln for ln in res.stderr.splitlines() if not ln.startswith("import time:")]
    assert res.returncode == 2 and len(errors) == 1 and "needs about" in errors[0], res.stderr[-2000:]
    assert "mechwork.limits" in imported and "click" in imported  # the listing is real
    assert not {"torch", "transformer_lens", "plotly"} & imported
    assert list(tmp_path.iterdir()) == []


def test_the_probe_sees_torch_when_a_command_does_run(tmp_path):
    """The check above could fail: a good argument to a command that computes does import torch.

    (``info`` on a preset no longer does: it reads JSON and the safetensors header only.)
    """
    (r,) = _probe([["analyze", "fourier", "modadd-113"]], tmp_path)
    assert r["code"] == 0 and "torch" in r["heavy"]


def test_step_of_a_run_without_checkpoints_is_a_bad_file(tmp_path):
    run = _fake_run(tmp_path / "run", steps=())
    (r,) = _probe([["dashboard", str(run), "--step", "3"]], tmp_path)
    assert r["code"] == 1 and "no checkpoints in" in str(r["err"]) and r["heavy"] == []


# -- memory -------------------------------------------------------------------------------------
def test_machine_memory_from_meminfo_and_sysconf(monkeypatch):
    avail, total = limits.machine_memory()
    assert 0 < avail <= total
    if Path("/proc/meminfo").is_file():
        text = Path("/proc/meminfo").read_text()
        assert f"{total // 1024} kB" in text
    real_open = open

    def no_proc(path, *a, **k):
        if str(path) == "/proc/meminfo":
            raise OSError("no /proc")
        return real_open(path, *a, **k)

    monkeypatch.setattr("builtins.open", no_proc)
    a2, t2 = limits.machine_memory()
    assert t2 == os.sysconf("SC_PAGE_SIZE") * os.sysconf("SC_PHYS_PAGES")
    assert 0 < a2 <= t2


def test_check_fits_names_estimate_and_machine(monkeypatch):
    monkeypatch.setattr(limits, "machine_memory", lambda: (3 * 2**30, 8 * 2**30))
    limits.check_fits("x", 2 * 2**30)
    with pytest.raises(ConfigError) as e:
        limits.check_fits("patching 5 prompts", 4 * 2**30)
    assert str(e.value) == ("patching 5 prompts needs about 4.0 GB of memory; this machine has 3.0 GB available "
                            "(8.0 GB total)")


def test_python_api_refuses_what_does_not_fit():
    import mechwork

    with pytest.raises(ConfigError, match=r"p = 100003 .* needs about .* of memory; this machine has .* available"):
        mechwork.ModularArithmetic(p=100003)
    with pytest.raises(ConfigError, match=r"a model of 12,800,036,352 parameters .* needs about .* GB of memory"):
        mechwork.build_model(mechwork.ToyConfig(n_layers=2, d_model=64, n_heads=4, d_head=16, d_mlp=None,
                                                d_vocab=10**8, d_vocab_out=10**8, n_ctx=48))


def test_train_and_patch_refuse_before_allocating_or_writing(tmp_path, monkeypatch):
    import mechwork
    from mechwork.analysis.patching import patch
    from mechwork.tasks import standard_probe
    from mechwork.training import train

    task = mechwork.ModularArithmetic(p=11, train_frac=0.5)
    model = mechwork.load("modadd-113")
    probe = standard_probe(mechwork.preset("modadd-113").task, n=4)
    monkeypatch.setattr(limits, "machine_memory", lambda: (2**20, 2**30))  # a 1 MB machine
    with pytest.raises(ConfigError, match=r"^training a model of [\d,]+ parameters on the modadd task needs about"):
        train(task, out=tmp_path / "run", quiet=True)
    assert not (tmp_path / "run").exists()  # nothing half-written blocks a retry
    with pytest.raises(ConfigError, match=r"^patching 4 prompts of 3 tokens needs about .* MB of memory"):
        patch(model, probe.clean, probe.corrupted, probe.metric)
    monkeypatch.setattr(limits, "machine_memory", lambda: (100, 2**30))  # 100 bytes: not even 4 prompts
    with pytest.raises(ConfigError, match=r"^4 standard prompts of 3 tokens needs about 576 B of memory"):
        standard_probe(mechwork.preset("modadd-113").task, n=4)


def test_preset_names_and_fourier_ops_match_their_modules():
    from mechwork.analysis.fourier import FOURIER_OPS
    from mechwork.models import PRESETS
    from mechwork.tasks import OPS

    assert limits.FOURIER_OPS == FOURIER_OPS and limits.OPS == OPS

    assert tuple(PRESETS) == limits.PRESET_NAMES
    for name, pre in PRESETS.items():
        cfg = limits.source_config("preset", name)
        assert cfg is not None and cfg["task"] == pre.task.to_dict()
        assert {k: v for k, v in cfg["model"].items() if k != "attn_rate"} == {
            k: v for k, v in pre.model.to_dict().items() if k != "attn_rate"}


@pytest.mark.parametrize("overrides", [{}, {"n_layers": 2, "d_mlp": None}, {"normalization": "LN", "n_heads": 2}])
def test_model_estimate_is_the_parameter_count(overrides):
    from mechwork.models import ToyConfig, build_model

    cfg = ToyConfig(d_vocab=20, d_vocab_out=19, **overrides)
    model = build_model(cfg, "cpu")
    assert limits.model_params(cfg) == sum(p.numel() for p in model.parameters())
    assert limits.model_bytes(cfg) == sum(p.numel() * p.element_size() for p in model.parameters())


def test_task_estimate_is_the_tensors_it_holds():
    from mechwork.tasks import ModularArithmetic

    for op in ("add", "div"):
        t = ModularArithmetic(p=101, op=op)
        ev = t.eval_batches()
        held = [*t._ab, t.tokens, t.labels, *t._split]
        held += [x for b in (t.train_batch(0), ev["test"]) for x in (b.tokens, b.targets, b.mask)]
        assert limits.modadd_task_bytes(101, op) == sum(x.nbytes for x in held)


_RSS = textwrap.dedent("""
    import gc, json, os, sys
    import mechwork
    from mechwork import limits
    from mechwork.analysis.patching import patch
    from mechwork.tasks import standard_probe
    from mechwork.tasks import ModularArithmetic
    from mechwork.models import ToyConfig
    from mechwork.training import TrainConfig, recipe, train

    def rss():
        with open("/proc/self/statm") as f:
            return int(f.read().split()[1]) * os.sysconf("SC_PAGE_SIZE")

    def peak():
        with open("/proc/self/status") as f:
            return next(int(line.split()[1]) * 1024 for line in f if line.startswith("VmHWM:"))

    def growth(fn):
        # Reset the kernel's high-water mark first: the peak of the imports and warm-up (which varies with
        # what was already compiled or cached) must not hide the run's own growth.
        gc.collect()
        with open("/proc/self/clear_refs", "w") as f:
            f.write("5")
        base = rss()
        fn()
        return peak() - base

    out = {}
    if sys.argv[1] == "patch":
        model, task = mechwork.load("modadd-113"), mechwork.preset("modadd-113").task
        small = standard_probe(task, n=2)
        patch(model, small.clean, small.corrupted, small.metric)  # warm up
        big = standard_probe(task, n=3000)
        out["patch"] = (limits.patch_bytes(limits.source_config("preset", "modadd-113")["model"], 3000, 3),
                        growth(lambda: patch(model, big.clean, big.corrupted, big.metric)))
    elif sys.argv[1] == "model":
        from mechwork.models import build_model
        build_model(ToyConfig(), "cpu")  # warm up
        big = ToyConfig(d_vocab=100_000, d_vocab_out=100_000)
        out["model"] = (limits.build_bytes(big), growth(lambda: build_model(big, "cpu")))
    else:
        cfg = lambda t: TrainConfig.from_dict(recipe(t).to_dict() | {"steps": 2, "eval_every": 1})
        tiny = ModularArithmetic(p=11)
        train(tiny, None, cfg(tiny), quiet=True, device="cpu")  # warm up
        t = ModularArithmetic(p=199)
        out["train"] = (limits.train_bytes(t.to_dict(), ToyConfig.for_task(t)),
                        growth(lambda: train(t, None, cfg(t), quiet=True, device="cpu")))
    print(json.dumps(out))
""")


@pytest.mark.skipif(not Path("/proc/self/clear_refs").exists(), reason="needs /proc to read memory use")
@pytest.mark.parametrize("what", ["patch", "train", "model"])
def test_patch_train_and_model_estimates_are_within_2x_of_the_measured_peak(what):
    """Each in a fresh process: the peak resident memory a real run adds, against the estimate."""
    res = subprocess.run([sys.executable, "-c", _RSS, what], capture_output=True, text=True, timeout=900,
                         env=os.environ | {"OMP_NUM_THREADS": "1"})
    assert res.returncode == 0, res.stderr
    estimate, measured = json.loads(res.stdout.strip().splitlines()[-1])[what]
    assert measured > 50 * 2**20, (what, measured)  # big enough for the data to dominate
    assert 0.5 <= estimate / measured <= 2.0, (what, estimate, measured)


# -- devices ------------------------------------------------------------------------------------
@pytest.mark.parametrize("device", ["tpu", "cuda:x", "CPU", "", "gpu"])
def test_unknown_devices_are_one_line(device):
    from mechwork.models import resolve_device

    with pytest.raises(ConfigError, match=r"^'device' must be cpu, cuda, cuda:N or mps \(got "):
        limits.check_device(device)
    with pytest.raises(ConfigError, match=r"^'device' must be cpu, cuda, cuda:N or mps"):
        resolve_device(device)


def test_cuda_is_refused_exactly_when_torch_cannot_use_it():
    import torch

    from mechwork.models import resolve_device

    assert ("+cpu" in torch.__version__ or not torch.cuda.is_available()) == CPU_ONLY_TORCH
    assert resolve_device("cpu") == torch.device("cpu")
    if torch.cuda.is_available():  # pragma: no cover - a GPU machine
        assert resolve_device("cuda").type == "cuda"
        limits.check_device("cuda")
    else:
        for dev in ("cuda", "cuda:0", torch.device("cuda")):
            with pytest.raises(ConfigError, match=r"is not available: .*; use cpu$"):
                resolve_device(dev)


def test_train_api_refuses_a_bad_device_before_writing(tmp_path):
    import mechwork
    from mechwork.training import train

    with pytest.raises(ConfigError, match="got 'tpu'"):
        train(mechwork.ModularArithmetic(p=11, train_frac=0.5), out=tmp_path / "run", device="tpu", quiet=True)
    assert not (tmp_path / "run").exists()


# -- output paths -------------------------------------------------------------------------------
def test_check_writable(tmp_path):
    limits.check_writable(tmp_path / "ok.json", "--json")
    limits.check_writable(tmp_path / "new" / "deeper" / "ok.html", "--out", make_parents=True)
    assert sorted(p.name for p in tmp_path.iterdir()) == []  # nothing made, nothing left
    f = tmp_path / "f"
    f.write_text("x")
    for path, make, needle in [
        (tmp_path, False, "must be a file path, not a directory"),
        (tmp_path / "missing" / "x.json", False, "does not exist"),
        (f / "x.json", False, "is not a directory"),
        (f / "a" / "x.json", True, "is a file, not a directory"),
        (Path("/proc/mechwork-test.json"), False, "is not writable"),
    ]:
        with pytest.raises(OutputError, match=needle):
            limits.check_writable(path, "--json", make_parents=make)


def test_read_only_file_is_refused_when_it_is_read_only_for_us(tmp_path):
    f = tmp_path / "ro.json"
    f.write_text("{}")
    f.chmod(0o444)
    try:
        if os.access(f, os.W_OK):  # root may write it: then it is writable, and allowed
            limits.check_writable(f, "--json")
        else:
            with pytest.raises(OutputError, match="the file is read-only"):
                limits.check_writable(f, "--json")
    finally:
        f.chmod(0o644)


def test_run_target_light_check_matches_run_writer(tmp_path):
    from mechwork.runs import RunWriter

    full = tmp_path / "full"
    full.mkdir()
    (full / "x").write_text("x")
    for kw in ({"resume": False, "force": False}, {"resume": True, "force": False}):
        for p in (full, tmp_path / "none"):
            errs = []
            for fn in (limits.check_run_target, RunWriter.check_target):
                try:
                    fn(p, **kw)
                    errs.append(None)
                except RunDirError as e:
                    errs.append(str(e))
            assert errs[0] == errs[1], (p, kw, errs)
    limits.check_run_target(full, resume=False, force=True)


# -- token ids, heads, batches, memory_mb ---------------------------------------------------------
@pytest.fixture(scope="module")
def modadd():
    import mechwork
    from mechwork.tasks import standard_probe

    return mechwork.load("modadd-113"), standard_probe(mechwork.preset("modadd-113").task, n=4)


@pytest.fixture(scope="module")
def induction():
    import mechwork
    from mechwork.analysis.attention import repeated_tokens

    return mechwork.load("induction-2l"), repeated_tokens(64, 10, batch=4)


def _entry_points(model, clean, corrupted, metric):
    from mechwork.analysis.ablation import ablate, ablation_hooks
    from mechwork.analysis.attention import attention_patterns
    from mechwork.analysis.attribution import attribute, path_patch
    from mechwork.analysis.patching import patch

    return {
        "patch": lambda c, k: patch(model, c, k, metric),
        "attribute": lambda c, k: attribute(model, c, k, metric),
        "ablate": lambda c, k: ablate(model, c, heads=[(0, 0)]),
        "ablation_hooks reference": lambda c, k: ablation_hooks(model, clean, heads=[(0, 0)], reference=c),
        "attention_patterns": lambda c, k: attention_patterns(model, c),
        "path_patch": lambda c, k: path_patch(model, c, k, metric, senders=[(0, 0)], receivers=[(1, 1)]),
    }


@pytest.mark.parametrize("bad_id", [-1, "d_vocab", 10**6])
def test_out_of_vocabulary_token_ids_are_refused_everywhere(modadd, induction, bad_id):
    model, toks = induction
    d_vocab = int(model.cfg.d_vocab)
    bad_value = d_vocab if bad_id == "d_vocab" else bad_id
    bad = toks.clone()
    bad[2, 5] = bad_value

    def metric(logits):
        return logits[:, -1].mean()

    for name, fn in _entry_points(model, toks, toks.clone(), metric).items():
        with pytest.raises(ConfigError) as e:
            fn(bad, toks)
        msg = str(e.value)
        assert f"token id {bad_value} at [2, 5]" in msg and "[0, 63] (d_vocab 64)" in msg, (name, msg)
        assert "\n" not in msg
    # good ids pass the same check (the entry points run)
    _entry_points(model, toks, toks.clone(), metric)["attention_patterns"](toks, toks)
    m2, probe = modadd
    from mechwork.analysis.patching import patch

    bad2 = probe.corrupted.clone()
    bad2[3, 2] = bad_value if bad_id != "d_vocab" else 114
    with pytest.raises(ConfigError, match=r"'corrupted' has token id .* at \[3, 2\] .* must be in \[0, 113\]"):
        patch(m2, probe.clean, bad2, probe.metric)


def test_empty_batches_are_one_line(induction):
    model, toks = induction
    empty = toks[:0]
    for fn in _entry_points(model, toks, toks.clone(), lambda lg: lg.mean()).values():
        with pytest.raises(ConfigError, match=r"must be a non-empty \[batch, pos\] token batch"):
            fn(empty, empty)
    with pytest.raises(ConfigError, match="non-empty"):
        _entry_points(model, toks, toks, lambda lg: lg.mean())["patch"](toks[:, :0], toks[:, :0])


@pytest.mark.parametrize("heads", [[(0,)], [(9, 9)], "x", [(0, "1")], [(0, 1, 2)], 3, [(True, 0)]])
def test_malformed_heads_are_one_line(modadd, induction, heads):
    from mechwork.analysis.ablation import ablate
    from mechwork.analysis.attribution import path_patch

    model, probe = modadd
    with pytest.raises(ConfigError, match=r"^'heads' must be .*\(layer, head\) pairs with layer in \[0, 1\)"):
        ablate(model, probe.clean, heads=heads)
    m2, toks = induction
    with pytest.raises(ConfigError, match=r"^'senders' must be .*\(layer, head\) pairs"):
        path_patch(m2, toks, "mean", lambda lg: lg.mean(), senders=heads, receivers=[(1, 1)])


@pytest.mark.parametrize("heads", [[(0,)], "x", [0.5], [9], [True]])
def test_malformed_head_indices_in_patch_are_one_line(modadd, heads):
    from mechwork.analysis.patching import patch

    model, probe = modadd
    with pytest.raises(ConfigError, match=r"^'heads' must be .*indices in \[0, 4\)"):
        patch(model, probe.clean, probe.corrupted, probe.metric, site="z", by="head", heads=heads)


@pytest.mark.parametrize("memory_mb", [float("nan"), float("inf"), 0, -1.0, "512", True])
def test_memory_mb_must_be_finite_and_positive(modadd, memory_mb):
    from mechwork.analysis.patching import patch

    model, probe = modadd
    with pytest.raises(ConfigError, match=r"^'memory_mb' must be a finite number > 0 \(got "):
        patch(model, probe.clean, probe.corrupted, probe.metric, memory_mb=memory_mb)


def test_good_heads_and_memory_still_work(modadd):
    import numpy as np

    from mechwork.analysis.ablation import ablate
    from mechwork.analysis.patching import patch

    model, probe = modadd
    res = patch(model, probe.clean, probe.corrupted, probe.metric, site="z", by="head", heads=[np.int64(1), 3],
                memory_mb=1)
    assert res.coords["head"] == [1, 3]
    assert ablate(model, probe.clean, heads=[(0, np.int64(2))]).logits.shape == (4, 3, 113)


def test_errors_are_mechwork_errors():
    assert issubclass(OutputError, MechworkError)
