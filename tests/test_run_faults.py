"""Run directories under faults and bad files: the writer lock, NaN/inf, optimiser state,
malformed run files, content hashes, unwritable or cluttered ``--out``.

Every refusal is one line naming the file (exit 1 in the CLI) or the argument (exit 2),
and leaves the run's own files as they were.
"""

from __future__ import annotations

import json
import os
import shutil
import signal
import subprocess
import sys
import tempfile
import time
from pathlib import Path

import pytest
import torch

import mechwork
from mechwork.cli import main
from mechwork.errors import CheckpointError, ConfigError, NonFiniteError, RunBusyError, RunDirError
from mechwork.io import HASH_KEY, load_tensors, save_tensors_atomic, tensors_digest
from mechwork.models import save_tensors
from mechwork.runs import LOCK_INFO, Run, RunLock, embedded_path, export, read_metrics_rows
from mechwork.tasks import ModularArithmetic
from mechwork.training import TrainConfig, train

TASK = ModularArithmetic(p=11, op="add", train_frac=0.5, seed=0)
CFG = TrainConfig(steps=30, eval_every=10, ckpt_every=10, ckpt_log=4)
OWN = ("config.json", "metrics.jsonl", "resume.safetensors")


def snapshot(run: Path) -> dict[str, bytes]:
    """The bytes of every file mechwork owns in ``run``."""
    files = [run / n for n in OWN] + sorted((run / "checkpoints").glob("step_*.safetensors"))
    return {str(f.relative_to(run)): f.read_bytes() for f in files if f.is_file()}


def one_error_line(err: str) -> str:
    lines = err.strip().splitlines()
    assert len(lines) == 1, err
    assert lines[0].startswith("mechwork: error: ") and "Traceback" not in err, err
    return lines[0]


@pytest.fixture(scope="module")
def base_run(tmp_path_factory) -> Path:
    out = tmp_path_factory.mktemp("base") / "run"
    train(TASK, train_cfg=CFG, out=out, quiet=True, device="cpu")
    return out


@pytest.fixture
def run(base_run, tmp_path) -> Path:
    out = tmp_path / "run"
    shutil.copytree(base_run, out)
    return out


def cli(*args: str, **kw) -> subprocess.Popen[str]:
    env = os.environ | {"OMP_NUM_THREADS": "1", "OMP_WAIT_POLICY": "PASSIVE"}
    return subprocess.Popen([sys.executable, "-m", "mechwork.cli", *args], stdout=subprocess.PIPE,
                            stderr=subprocess.PIPE, text=True, env=env, **kw)


# -- 3. one writer at a time --------------------------------------------------------------


def test_second_writer_process_is_refused_naming_the_holder(tmp_path):
    run = tmp_path / "run"  # checkpoints only at its ends, so the holder below writes metrics rows only
    train(TASK, train_cfg=TrainConfig(steps=20, eval_every=10, ckpt_every=10**6, ckpt_log=0), out=run,
          quiet=True, device="cpu")
    holder = cli("train", "modadd", "--out", str(run), "--resume", "--steps", "1000000", "--quiet")
    try:
        deadline = time.monotonic() + 600  # the holder imports torch first; machines are loaded
        info: dict = {}
        while time.monotonic() < deadline and holder.poll() is None:
            try:
                info = json.loads((run / LOCK_INFO).read_text())
            except (OSError, ValueError):
                info = {}
            if info.get("pid") == holder.pid:
                break
            time.sleep(0.2)
        assert info.get("pid") == holder.pid, holder.stderr.read() if holder.poll() is not None else info
        assert "train modadd" in info["command"] and info["host"]

        second = cli("train", "modadd", "--out", str(run), "--resume", "--steps", "40", "--quiet")
        _, err = second.communicate(timeout=900)
        assert second.returncode == 1, err
        line = one_error_line(err)
        assert f"is in use by pid {holder.pid} on {info['host']}" in line and "train modadd" in line
        assert holder.poll() is None  # the refusal came from the lock, not from a finished holder

        # in-process writers are refused too, before they touch anything
        before = snapshot(run)
        with pytest.raises(RunBusyError, match=f"pid {holder.pid}"):
            train(TASK, train_cfg=CFG, out=run, force=True, quiet=True, device="cpu")
        with pytest.raises(RunBusyError, match=f"pid {holder.pid}"):
            export(Run(run), tmp_path / "exported")
        assert not (tmp_path / "exported.safetensors").exists()
        assert set(snapshot(run)) >= set(before)  # --force deleted nothing
    finally:
        holder.send_signal(signal.SIGKILL)
        holder.wait(timeout=300)

    # the OS freed the lock with the killed holder; the run is consistent and resumes
    r = Run(run)
    steps = [row["step"] for row in read_metrics_rows(run / "metrics.jsonl")]
    assert steps == sorted(set(steps))
    last = r.steps[-1]
    res = train(TASK, train_cfg=TrainConfig.from_dict(r.train_config.to_dict() | {"steps": last + 20}), out=run,
                resume=True, quiet=True, device="cpu")
    rows = [row["step"] for row in res.run.metrics.to_dict("records")]
    assert rows == sorted(set(rows)) and rows[-1] == last + 20
    assert json.loads((run / "config.json").read_text())["train"]["steps"] == last + 20 == res.run.steps[-1]
    for s in res.run.steps:
        res.run.weights_at(s)  # every checkpoint loads: hash and finiteness hold


def test_sigkill_mid_run_then_resume_is_bit_identical(tmp_path):
    """The lock dies with a SIGKILLed writer; resuming reaches exactly the uninterrupted weights."""
    out = tmp_path / "k"
    args = ["train", "modadd", "--p", "11", "--train-frac", "0.5", "--steps", "600", "--eval-every", "10",
            "--out", str(out), "--quiet"]
    env_threads = {"OMP_NUM_THREADS": str(torch.get_num_threads())}
    proc = subprocess.Popen([sys.executable, "-m", "mechwork.cli", *args], stdout=subprocess.PIPE,
                            stderr=subprocess.PIPE, text=True, env=os.environ | env_threads)
    deadline = time.monotonic() + 600
    while time.monotonic() < deadline and proc.poll() is None:
        if any(int(f.name[5:12]) >= 100 for f in (out / "checkpoints").glob("step_*.safetensors")):
            break
        time.sleep(0.05)
    proc.send_signal(signal.SIGKILL)
    proc.wait(timeout=300)
    assert proc.returncode == -signal.SIGKILL, proc.stderr.read()
    killed_at = Run(out).steps[-1]
    assert 100 <= killed_at < 600
    cfg = Run(out).train_config
    resumed = train(TASK, out=out, resume=True, quiet=True, device="cpu")  # the stored configs, as they are
    assert resumed.run.train_config == cfg
    from mechwork.models import ToyConfig

    full = train(TASK, ToyConfig.for_task(TASK, seed=0), cfg, quiet=True, device="cpu")
    for k, v in save_tensors(full.model).items():
        assert torch.equal(v, save_tensors(resumed.model)[k]), k
    strip = [{k: v for k, v in r.items() if k != "wall"} for r in resumed.run.metrics.to_dict("records")]
    assert strip == [{k: v for k, v in r.items() if k != "wall"} for r in full.rows]


def test_lock_records_the_holder_and_releases(tmp_path):
    d = tmp_path / "r"
    with RunLock(d, "mechwork train modadd --out r") as lock:
        info = json.loads((d / LOCK_INFO).read_text())
        assert info["pid"] == os.getpid() and info["command"] == "mechwork train modadd --out r"
        with pytest.raises(RunBusyError) as e:
            RunLock(d, "other").acquire()
        assert f"by pid {os.getpid()}" in str(e.value) and "'mechwork train modadd --out r'" in str(e.value)
        assert "\n" not in str(e.value)
        (d / "keep.txt").write_text("x")
    assert not (d / LOCK_INFO).exists() and (d / "keep.txt").exists()
    RunLock(d).acquire().release()  # free again
    assert lock.path == d


def test_export_holds_the_lock_and_writes_a_hashed_file(run, tmp_path):
    w, meta = export(Run(run), tmp_path / "exp")
    tensors, smeta = load_tensors(w)
    assert smeta[HASH_KEY] == tensors_digest(tensors) and json.loads(meta.read_text())["step"] == 30
    assert not (run / LOCK_INFO).exists()  # released
    with RunLock(run, "a trainer"), pytest.raises(RunBusyError, match="'a trainer'"):
        export(Run(run), tmp_path / "exp2")


def test_failed_fresh_run_leaves_no_directory(tmp_path):
    from mechwork.models import ToyConfig

    out = tmp_path / "new"
    with pytest.raises(ConfigError, match="model 'd_vocab' is 114"):
        train(TASK, ToyConfig(), TrainConfig(steps=1), out=out, quiet=True)
    assert not out.exists()  # the lock's directory is removed again: a retry is not blocked


def test_lock_files_alone_do_not_make_out_non_empty(tmp_path):
    out = tmp_path / "r"
    out.mkdir()
    (out / ".lock").write_text("")
    res = train(TASK, train_cfg=TrainConfig(steps=2, eval_every=1), out=out, quiet=True, device="cpu")
    assert res.run.steps[-1] == 2


# -- 4. NaN / inf --------------------------------------------------------------------------

DIVERGE = TrainConfig(lr=1e6, steps=40, eval_every=5, ckpt_every=5, ckpt_log=0)


def test_divergence_stops_at_first_non_finite_and_keeps_last_finite_checkpoint(tmp_path):
    out = tmp_path / "nan"
    with pytest.raises(NonFiniteError) as e:
        train(TASK, train_cfg=DIVERGE, out=out, quiet=True, device="cpu")
    msg = str(e.value)
    assert "\n" not in msg and msg.startswith(f"training stopped at step {e.value.step}: ")
    assert f"keeps its last finite checkpoint, step {e.value.last_checkpoint}" in msg
    assert e.value.step < DIVERGE.steps
    import pickle  # a sweep worker sends it to its parent

    back = pickle.loads(pickle.dumps(e.value))
    assert (str(back), back.step, back.last_checkpoint) == (msg, e.value.step, e.value.last_checkpoint)
    run = Run(out)
    assert run.steps[-1] == e.value.last_checkpoint <= e.value.step
    for s in run.steps:  # nothing non-finite was written
        assert all(bool(t.isfinite().all()) for t in run.weights_at(s).values())
    assert all(bool(t.isfinite().all()) for t in load_tensors(out / "resume.safetensors")[0].values())
    assert run.model_at() is not None
    # resumable from the last finite checkpoint: the same recipe diverges at the same step again
    with pytest.raises(NonFiniteError) as again:
        train(TASK, out=out, resume=True, quiet=True, device="cpu")
    assert again.value.step == e.value.step and again.value.last_checkpoint == e.value.last_checkpoint
    # a finite recipe never trips the check
    ok = train(TASK, train_cfg=TrainConfig(steps=40, eval_every=5), quiet=True, device="cpu")
    assert ok.rows[-1]["step"] == 40


def test_divergence_without_run_directory_says_so():
    with pytest.raises(NonFiniteError, match="no run directory was written"):
        train(TASK, train_cfg=DIVERGE, quiet=True, device="cpu")


def test_cli_divergence_is_one_line_exit_1(tmp_path, capsys):
    out = tmp_path / "nan"
    code = main(["train", "modadd", "--p", "11", "--train-frac", "0.5", "--lr", "1e6", "--steps", "40",
                 "--eval-every", "5", "--out", str(out), "--quiet"])
    line = one_error_line(capsys.readouterr().err)
    assert code == 1 and "training stopped at step" in line
    assert "is inf" in line or "is nan" in line or "holds NaN or inf" in line
    assert Run(out).steps  # a valid run directory remains


def nan_checkpoint(run: Path) -> tuple[Path, str]:
    """Overwrite the last checkpoint with a NaN in one tensor, under a correct content hash."""
    r = Run(run)
    step = r.steps[-1]
    path = run / "checkpoints" / f"step_{step:07d}.safetensors"
    w = r.weights_at(step)
    bad = sorted(w)[len(w) // 2]
    w[bad].view(-1)[0] = float("nan")
    save_tensors_atomic(w, path, {"step": str(step)})
    return path, bad


def test_analyses_refuse_non_finite_weights(run, capsys):
    path, bad = nan_checkpoint(run)
    with pytest.raises(CheckpointError) as e:
        mechwork.load(run)
    assert str(path) in str(e.value) and repr(bad) in str(e.value) and "\n" not in str(e.value)
    assert main(["analyze", "fourier", str(run), "--no-progress"]) == 1
    line = one_error_line(capsys.readouterr().err)
    assert "non-finite checkpoint" in line and str(path) in line
    # the finite checkpoints of the same run still load
    Run(run).model_at(Run(run).steps[0])


def test_resume_from_nan_weights_is_refused(run, capsys):
    tensors, meta = load_tensors(run / "resume.safetensors")
    tensors[sorted(tensors)[-1]].fill_(float("inf"))  # a weight ("w.*" sorts last)
    save_tensors_atomic(tensors, run / "resume.safetensors", meta)
    before = snapshot(run)
    assert main(["train", "modadd", "--out", str(run), "--resume", "--steps", "40", "--quiet"]) == 1
    line = one_error_line(capsys.readouterr().err)
    assert "non-finite checkpoint" in line and "resume.safetensors" in line
    assert snapshot(run) == before


# -- 5. resume needs the whole optimiser state -----------------------------------------------


def strip_state(run: Path, prefix: str | tuple[str, ...]) -> None:
    tensors, meta = load_tensors(run / "resume.safetensors")
    kept = {k: v for k, v in tensors.items() if not k.startswith(prefix)}
    assert len(kept) < len(tensors)
    save_tensors_atomic(kept, run / "resume.safetensors", meta)


@pytest.mark.parametrize("prefix", ["opt.", "opt.exp_avg_sq.", "opt.step.head."])
def test_resume_without_optimiser_state_is_refused(run, prefix, capsys):
    strip_state(run, prefix)
    before = snapshot(run)
    with pytest.raises(CheckpointError, match=r"cannot resume from .*resume.safetensors: it lacks \d+ of the"):
        train(TASK, train_cfg=TrainConfig.from_dict(CFG.to_dict() | {"steps": 40}), out=run, resume=True,
              quiet=True, device="cpu")
    assert main(["train", "modadd", "--out", str(run), "--resume", "--steps", "40", "--quiet"]) == 1
    line = one_error_line(capsys.readouterr().err)
    assert "optimiser state tensors (opt." in line
    assert snapshot(run) == before


def test_resume_without_grokfast_ema_is_refused(tmp_path):
    cfg = TrainConfig(steps=6, eval_every=3, ckpt_every=3, ckpt_log=0, grokfast_alpha=0.9)
    train(TASK, train_cfg=cfg, out=tmp_path / "g", quiet=True, device="cpu")
    strip_state(tmp_path / "g", "ema.")
    with pytest.raises(CheckpointError, match=r"lacks \d+ of the \d+ optimiser state tensors \(ema\."):
        train(TASK, train_cfg=TrainConfig.from_dict(cfg.to_dict() | {"steps": 9}), out=tmp_path / "g",
              resume=True, quiet=True, device="cpu")


def test_resume_with_full_state_and_from_step_0_is_exact(tmp_path):
    """The other way: complete state resumes bit-identically, and step 0 needs no optimiser state."""
    cfg = TrainConfig(steps=12, eval_every=3, ckpt_every=6, ckpt_log=0)
    full = train(TASK, train_cfg=cfg, quiet=True, device="cpu")
    train(TASK, train_cfg=cfg, out=tmp_path / "z", quiet=True, device="cpu", stop_when=lambda row: True)
    state = load_tensors(tmp_path / "z" / "resume.safetensors")[0]
    assert Run(tmp_path / "z").steps == [0] and not any(k.startswith("opt.") for k in state)
    res = train(TASK, train_cfg=cfg, out=tmp_path / "z", resume=True, quiet=True, device="cpu")
    for k, v in save_tensors(full.model).items():
        assert torch.equal(v, save_tensors(res.model)[k]), k


# -- 9. malformed run files --------------------------------------------------------------------


def edit_config(run: Path, section: str, key: str, value: object = ...) -> None:
    cfg = json.loads((run / "config.json").read_text())
    if value is ...:
        del cfg[section][key]
    else:
        cfg[section][key] = value
    (run / "config.json").write_text(json.dumps(cfg))


def edit_metrics(run: Path, line: int, text: str) -> None:
    lines = (run / "metrics.jsonl").read_text().splitlines()
    lines[line] = text
    (run / "metrics.jsonl").write_text("\n".join(lines) + "\n")


MALFORMED = {
    "row not an object": (lambda r: edit_metrics(r, 1, "[1, 2]"), "line 2: a row must be a JSON object (got list)"),
    "row without step": (lambda r: edit_metrics(r, 1, '{"wall": 1.0, "test_acc": 0.5}'),
                         "line 2: 'step' must be an integer >= 0 (got None)"),
    "string step": (lambda r: edit_metrics(r, 1, '{"step": "10", "test_acc": 0.5}'),
                    "line 2: 'step' must be an integer >= 0 (got '10')"),
    "rows out of order": (lambda r: edit_metrics(r, 2, '{"step": 0, "test_acc": 0.5}'),
                          "line 3: step 0 follows step 10"),
    "string value": (lambda r: edit_metrics(r, 1, '{"step": 10, "test_acc": "high"}'),
                     "'test_acc' must be a number (got 'high')"),
    "missing train.lr": (lambda r: edit_config(r, "train", "lr"), "'train' lacks ['lr']"),
    "string train.lr": (lambda r: edit_config(r, "train", "lr", "0.01"),
                        "train: 'lr' must be a finite number > 0.0 (got '0.01')"),
    "string train.steps": (lambda r: edit_config(r, "train", "steps", "30"),
                           "train: 'steps' must be an integer >= 1 (got '30')"),
    "missing train.betas": (lambda r: edit_config(r, "train", "betas"), "'train' lacks ['betas']"),
    "missing task.p": (lambda r: edit_config(r, "task", "p"), "'task' lacks ['p']"),
    "missing model.d_model": (lambda r: edit_config(r, "model", "d_model"), "'model' lacks ['d_model']"),
    "string model.d_mlp": (lambda r: edit_config(r, "model", "d_mlp", "512"), "model: 'd_mlp' must be"),
    # the light memory checks before torch read these sizes too; they used to crash on int('big')
    "string model.d_model": (lambda r: edit_config(r, "model", "d_model", "big"), "model: 'd_model' must be"),
    "list model.n_heads": (lambda r: edit_config(r, "model", "n_heads", [4]), "model: 'n_heads' must be"),
}


@pytest.mark.parametrize("case", list(MALFORMED))
def test_malformed_run_files_one_line_exit_1(run, tmp_path, case, capsys):
    corrupt, needle = MALFORMED[case]
    corrupt(run)
    before = snapshot(run)
    html = tmp_path / "d.html"
    commands = [["info", str(run)],
                ["dashboard", str(run), "--out", str(html)],
                ["train", "modadd", "--out", str(run), "--resume", "--steps", "40", "--quiet"]]
    if case.split()[-1].startswith(("model.", "task.")):  # patch reads the model and task, not the metrics
        commands.append(["patch", str(run), "--n", "2", "--quiet"])
    for args in commands:
        code = main(args)
        line = one_error_line(capsys.readouterr().err)
        assert code == 1 and needle in line, (args, line)
        assert str(run) in line
    assert snapshot(run) == before and not html.exists()


def test_complete_config_is_used_as_stored(run):
    r = Run(run)
    assert r.task == TASK and r.train_config == CFG
    edit_config(run, "train", "lr", 0.02)  # a changed, valid value is what the run reports (not a default)
    assert Run(run).train_config.lr == 0.02


def test_torn_last_metrics_line_is_still_skipped(run):
    with open(run / "metrics.jsonl", "a") as f:
        f.write('{"step": 40, "wa')
    assert [r["step"] for r in read_metrics_rows(run / "metrics.jsonl")] == [0, 10, 20, 30]
    edit_metrics(run, 1, '{"step": 10, "wa')  # the same tear mid-file is corruption
    with pytest.raises(CheckpointError, match="line 2: not JSON"):
        read_metrics_rows(run / "metrics.jsonl")


# -- 10. content hashes --------------------------------------------------------------------------


def flip_a_byte(path: Path) -> None:
    data = bytearray(path.read_bytes())
    data[-5] ^= 0x01  # inside the last tensor's bytes, far from the header
    path.write_bytes(bytes(data))


def test_flipped_bytes_are_refused_naming_the_file(run, capsys):
    ck = run / "checkpoints" / "step_0000010.safetensors"
    load_tensors(ck)  # intact: loads
    flip_a_byte(ck)
    with pytest.raises(CheckpointError, match="corrupt checkpoint .*step_0000010.safetensors: its tensors do not"):
        Run(run).model_at(10)
    flip_a_byte(run / "resume.safetensors")
    assert main(["train", "modadd", "--out", str(run), "--resume", "--steps", "40", "--quiet"]) == 1
    line = one_error_line(capsys.readouterr().err)
    assert "resume.safetensors: its tensors do not match their content hash" in line


def test_missing_hash_is_refused(run):
    from safetensors.torch import save_file

    ck = run / "checkpoints" / "step_0000020.safetensors"
    save_file(load_tensors(ck)[0], str(ck), metadata={"step": "20"})  # another writer: no hash
    with pytest.raises(CheckpointError, match=r"step_0000020.safetensors: no content hash in its metadata"):
        Run(run).weights_at(20)


def test_saver_writes_the_hash_of_names_dtypes_shapes_and_bytes(tmp_path):
    t = {"a": torch.arange(6, dtype=torch.float32).reshape(2, 3), "b": torch.tensor(3, dtype=torch.int64)}
    save_tensors_atomic(t, tmp_path / "t.safetensors", {"step": "1"})
    back, meta = load_tensors(tmp_path / "t.safetensors")
    assert meta[HASH_KEY] == tensors_digest(t) == tensors_digest(back) and meta["step"] == "1"
    variants = [{"a": t["a"].reshape(3, 2), "b": t["b"]}, {"a": t["a"].double(), "b": t["b"]},
                {"c": t["a"], "b": t["b"]}, {"a": t["a"] + 1, "b": t["b"]}]
    assert len({tensors_digest(v) for v in variants} | {tensors_digest(t)}) == 5


@pytest.mark.parametrize("name", ["modadd-113", "induction-2l"])
def test_embedded_weights_carry_their_hash(name):
    tensors, meta = load_tensors(embedded_path(name))  # checks the hash and finiteness
    assert meta[HASH_KEY] == tensors_digest(tensors)


# -- 11. unwritable --out, --force on a cluttered run, load(None) ----------------------------


def _writable(d: Path) -> bool:
    try:
        with tempfile.TemporaryFile(dir=d):
            return True
    except OSError:
        return False


@pytest.mark.parametrize("where", ["proc", "read-only dir", "inside read-only dir"])
def test_unwritable_out_is_one_line_and_writes_nothing(tmp_path, monkeypatch, where, capsys):
    monkeypatch.chdir(tmp_path)
    if where == "proc":
        out = Path("/proc/mechwork-no-such/run")  # not writable for any user, root included
    else:
        ro = tmp_path / "ro"
        ro.mkdir()
        ro.chmod(0o555)
        if _writable(ro):
            ro.chmod(0o755)
            pytest.skip("this user can write into a 0555 directory (root)")
        out = ro if where == "read-only dir" else ro / "run"
    try:
        code = main(["train", "modadd", "--p", "11", "--steps", "5", "--out", str(out), "--quiet"])
        line = one_error_line(capsys.readouterr().err)
        assert code == 2 and repr(str(out)) in line and "not writable" in line
        with pytest.raises(RunDirError, match=f"'--out' {str(out)!r} .*not writable"):
            train(TASK, train_cfg=TrainConfig(steps=5), out=out, quiet=True)
        assert not out.exists() or list(out.iterdir()) == []
        assert [p.name for p in tmp_path.iterdir() if p.name != "ro"] == []
    finally:
        if where != "proc":
            (tmp_path / "ro").chmod(0o755)


def test_force_deletes_only_mechworks_files_and_says_what_it_keeps(run, capsys):
    (run / "notes.txt").write_text("mine")
    (run / "checkpoints" / "sub").mkdir()
    (run / "checkpoints" / "sub" / "keep.safetensors").write_text("mine too")
    (run / "checkpoints" / "best.pt").write_text("and this")
    (run / "checkpoints" / ".tmp-step_0000099.safetensors.abc").write_text("a torn atomic write")
    code = main(["train", "modadd", "--p", "11", "--train-frac", "0.5", "--steps", "10", "--eval-every", "5",
                 "--out", str(run), "--force", "--quiet"])
    err = capsys.readouterr().err
    assert code == 0 and "Traceback" not in err, err
    assert "removed only mechwork's own files" in err
    assert "kept 3 other entries: notes.txt, checkpoints/best.pt, checkpoints/sub/" in err
    assert (run / "notes.txt").read_text() == "mine"
    assert (run / "checkpoints" / "sub" / "keep.safetensors").read_text() == "mine too"
    assert (run / "checkpoints" / "best.pt").exists()
    assert not (run / "checkpoints" / ".tmp-step_0000099.safetensors.abc").exists()
    assert Run(run).steps[-1] == 10 and not (run / "checkpoints" / "step_0000030.safetensors").exists()
    assert [r["step"] for r in read_metrics_rows(run / "metrics.jsonl")] == [0, 5, 10]


def test_load_of_a_non_path_names_what_is_accepted():
    # a fresh process: the suite's runtime type checker would refuse None before mechwork's own check does
    code = (
        "import mechwork, mechwork.errors\n"
        "for bad in (None, 3, b'runs/x'):\n"
        "    try:\n"
        "        mechwork.load(bad)\n"
        "    except mechwork.errors.ConfigError as e:\n"
        "        print(e)\n"
    )
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, timeout=600)
    assert out.returncode == 0, out.stderr
    valid = ("'path_or_preset' must be a run directory or one of modadd-113, induction-2l (a preset), a directory "
             "saved with save_pretrained, or a TransformerBridge")
    assert out.stdout.splitlines() == [f"{valid} (got None)", f"{valid} (got 3)", f"{valid} (got b'runs/x')"]
