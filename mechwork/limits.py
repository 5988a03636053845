"""Cheap checks that run before any heavy work: memory estimates, devices, output paths, run directories.

This module imports the standard library only (no torch, TransformerLens or
plotly), so the command line can refuse a bad argument in a fraction of a
second, before torch is loaded. The Python API calls the same functions, so a
task, a model or a patching sweep that would not fit in memory is refused
before anything is allocated, with one line naming the estimate and the
machine's memory.

* :func:`machine_memory` -- available and total memory (``/proc/meminfo``, else ``os.sysconf``).
* ``*_bytes`` -- memory estimates, all in this one module: :func:`modadd_task_bytes`,
  :func:`induction_task_bytes`, :func:`model_bytes`, :func:`train_bytes`,
  :func:`patch_bytes`, :func:`probe_bytes`; :func:`check_fits` refuses an
  estimate above the available memory.
* :func:`check_modadd` / :func:`check_induction` -- the task arguments (used by :mod:`mechwork.tasks`).
* :func:`check_device` -- ``cpu``, ``cuda[:N]`` or ``mps``, and whether this torch build can use it.
* :func:`check_writable` -- an output file can be written (its directory exists and takes new files).
* :func:`resolve` / :func:`check_step` / :func:`source_config` -- a run directory, preset or ``save_pretrained``
  model directory (:func:`model_dir_config`), read as JSON.

Example::

    >>> from mechwork.limits import check_fits, modadd_task_bytes
    >>> modadd_task_bytes(113) < 2**21            # the 12,769 pairs of p = 113 take about 1.4 MB
    True
    >>> check_fits("modular arithmetic with p = 100003", modadd_task_bytes(100003))  # doctest: +ELLIPSIS
    Traceback (most recent call last):
    mechwork.errors.ConfigError: modular arithmetic with p = 100003 needs about 997 GB of memory; this machine has ...
"""

from __future__ import annotations

import json
import math
import os
import re
import sys
import tempfile
from collections.abc import Mapping
from pathlib import Path
from typing import Any

from mechwork.errors import CheckpointError, ConfigError, OutputError, RunDirError, invalid
from mechwork.kit import Command, Option, registered_presets

__all__ = [
    "ASSET_MODES",
    "COMMANDS",
    "FOURIER_OPS",
    "OPS",
    "PRESET_NAMES",
    "accepted",
    "build_bytes",
    "check_checkpoints_dir",
    "check_device",
    "check_fits",
    "check_fourier_source",
    "check_induction",
    "check_modadd",
    "check_run_target",
    "check_seed",
    "check_step",
    "check_writable",
    "classify_dir",
    "cuda_unavailable",
    "embedded_file",
    "finite_positive",
    "format_bytes",
    "induction_task_bytes",
    "is_prime",
    "machine_memory",
    "missing_detail",
    "modadd_task_bytes",
    "model_bytes",
    "model_dir_config",
    "model_params",
    "no_config_detail",
    "patch_bytes",
    "patch_check",
    "probe_bytes",
    "resolve",
    "run_steps",
    "source_config",
    "task_bytes",
    "train_bytes",
]

OPS = ("add", "sub", "mul", "div", "x2+y2")
ASSET_MODES = ("inline", "cdn", "site")  # a page's scripts: inline (one offline file), CDN links, or a site's assets/
PRESET_NAMES = ("modadd-113", "induction-2l")  # mechwork.models.PRESETS has these keys (a test checks)
DEVICE_TYPES = ("cpu", "cuda", "mps")
_CKPT = re.compile(r"^step_(\d{7,})\.safetensors$")  # as mechwork.runs names checkpoints
FLOAT = 4  # bytes of a float32
INT = 8  # bytes of an int64 token


# -- memory ---------------------------------------------------------------------------------
def machine_memory() -> tuple[int, int]:
    """``(available, total)`` bytes: ``MemAvailable`` / ``MemTotal`` of ``/proc/meminfo``, else ``os.sysconf``."""
    try:
        fields = {}
        with open("/proc/meminfo") as f:
            for line in f:
                name, _, rest = line.partition(":")
                fields[name] = int(rest.split()[0]) * 1024
        total = fields["MemTotal"]
        return fields.get("MemAvailable", fields.get("MemFree", total)), total
    except (OSError, KeyError, ValueError, IndexError):
        pass
    try:
        page = os.sysconf("SC_PAGE_SIZE")
        total = page * os.sysconf("SC_PHYS_PAGES")
        try:
            avail = page * os.sysconf("SC_AVPHYS_PAGES")
        except (ValueError, OSError):
            avail = total
        return avail, total
    except (ValueError, OSError, AttributeError):  # pragma: no cover - no way to know: assume it fits
        return sys.maxsize, sys.maxsize


def format_bytes(n: int | float) -> str:
    """Bytes in binary units, three significant figures.

    >>> format_bytes(512), format_bytes(3 * 2**30), format_bytes(1.5 * 2**40)
    ('512 B', '3.0 GB', '1.5 TB')
    """
    for unit, size in (("TB", 2**40), ("GB", 2**30), ("MB", 2**20), ("kB", 2**10)):
        if n >= size:
            v = n / size
            return f"{v:.3g} {unit}" if v >= 10 else f"{v:.1f} {unit}"
    return f"{int(n)} B"


def check_fits(what: str, need: int | float) -> None:
    """Refuse ``need`` bytes when the machine has less memory available, naming both."""
    avail, total = machine_memory()
    if need > avail:
        raise ConfigError(
            f"{what} needs about {format_bytes(need)} of memory; this machine has {format_bytes(avail)} "
            f"available ({format_bytes(total)} total)"
        )


def _get(cfg: Mapping[str, Any] | Any, name: str, default: Any = None) -> Any:
    if isinstance(cfg, Mapping):
        return cfg.get(name, default)
    return getattr(cfg, name, default)


def model_params(cfg: Mapping[str, Any] | Any) -> int:
    """Parameters of a toy transformer (a :class:`~mechwork.models.ToyConfig` or its dict).

    The TransformerLens native layout: embeddings, q/k/v/o with biases, MLP with
    biases, LayerNorms when ``normalization`` is ``"LN"``, an unembed without bias.
    """
    n_layers, d_model = int(_get(cfg, "n_layers", 1)), int(_get(cfg, "d_model", 128))
    hd = int(_get(cfg, "n_heads", 4)) * int(_get(cfg, "d_head", 32))
    d_mlp = _get(cfg, "d_mlp", 512)
    d_vocab, d_vocab_out = int(_get(cfg, "d_vocab", 114)), int(_get(cfg, "d_vocab_out", 113))
    n_ctx = int(_get(cfg, "n_ctx", 3))
    attn = 3 * (d_model * hd + hd) + hd * d_model + d_model
    mlp = 0 if d_mlp is None else 2 * d_model * int(d_mlp) + int(d_mlp) + d_model
    ln = (2 * 2 * d_model) * n_layers + 2 * d_model if _get(cfg, "normalization") == "LN" else 0
    return d_vocab * d_model + n_ctx * d_model + n_layers * (attn + mlp) + ln + d_model * d_vocab_out


def model_bytes(cfg: Mapping[str, Any] | Any) -> int:
    """The float32 weights of a model."""
    return FLOAT * model_params(cfg)


def _forward_floats(cfg: Mapping[str, Any] | Any, n_pos: int, vocab_pos: int) -> int:
    """Floats one example's forward keeps live: every layer's activations, and logits at ``vocab_pos`` positions."""
    d_model = int(_get(cfg, "d_model", 128))
    n_heads, hd = int(_get(cfg, "n_heads", 4)), int(_get(cfg, "n_heads", 4)) * int(_get(cfg, "d_head", 32))
    d_mlp = int(_get(cfg, "d_mlp", 512) or 0)
    per_layer = 4 * d_model + 4 * hd + 2 * n_heads * n_pos + 2 * d_mlp
    return n_pos * (2 * d_model + int(_get(cfg, "n_layers", 1)) * per_layer) + vocab_pos * int(
        _get(cfg, "d_vocab_out", 113))


def _n_pairs(p: int, op: str) -> int:
    return p * (p - 1) if op == "div" else p * p


def modadd_task_bytes(p: int, op: str = "add") -> int:
    """Every pair's data as :class:`~mechwork.tasks.ModularArithmetic` holds it once materialised.

    Per pair: ``a`` and ``b`` (16 bytes), tokens (24), labels (8), the split (8),
    and the train and test batches (tokens, targets and mask: 51): 107 bytes.
    """
    return 107 * _n_pairs(p, op)


def induction_task_bytes(seq_len: int, batch_size: int = 64, n_eval: int = 512) -> int:
    """A training batch and the fixed evaluation set (tokens, targets, mask and sampling temporaries)."""
    return (batch_size + n_eval) * seq_len * (6 * INT + 1)


def task_bytes(task: Mapping[str, Any]) -> int:
    """:func:`modadd_task_bytes` or :func:`induction_task_bytes` of a task's ``to_dict()``.

    Another kind is estimated as sequences of ``n_ctx`` tokens (default 48) in batches of ``batch_size``
    (default 64) and ``n_eval`` held-out ones (default 512), as induction's are.
    """
    if task.get("kind") == "modadd":
        return modadd_task_bytes(int(task.get("p", 113)), str(task.get("op", "add")))
    if task.get("kind") != "induction":
        return induction_task_bytes(int(task.get("n_ctx", 48)), int(task.get("batch_size", 64)),
                                    int(task.get("n_eval", 512)))
    return induction_task_bytes(int(task.get("seq_len", 48)), int(task.get("batch_size", 64)),
                                int(task.get("n_eval", 512)))


def _fast_path_floats(cfg: Mapping[str, Any] | Any) -> int:
    """Floats per example of :func:`mechwork.fastpath.modadd_logits` (one-hot rows, last-position activations)."""
    hd = int(_get(cfg, "n_heads", 4)) * int(_get(cfg, "d_head", 32))
    return (2 * int(_get(cfg, "d_vocab", 114)) + 6 * int(_get(cfg, "n_heads", 4)) + 3 * hd
            + 3 * int(_get(cfg, "d_model", 128)) + 2 * int(_get(cfg, "d_mlp", 512) or 0)
            + 3 * int(_get(cfg, "d_vocab_out", 113)))


def train_bytes(task: Mapping[str, Any], model: Mapping[str, Any] | Any, batch_size: int | None = None) -> int:
    """Peak memory of :func:`mechwork.training.train`: task data, weights with AdamW state, and the larger of
    a training step (forward and backward) and an evaluation (forward only, over the larger split).

    The weights count six times (weights, gradients, two AdamW moments and the
    checkpoint copies). Modular arithmetic on a one-layer model with an MLP
    trains on the fast path, which works at the last position only.
    """
    if task.get("kind") == "modadd":
        n = _n_pairs(int(task.get("p", 113)), str(task.get("op", "add")))
        n_train = int(float(task.get("train_frac", 0.3)) * n)
        step = n_train if batch_size is None else min(batch_size, n_train)
        ev = max(n_train, n - n_train)
        fast = (int(_get(model, "n_layers", 1)) == 1 and _get(model, "d_mlp", 512) is not None
                and _get(model, "normalization") is None)
        fwd = FLOAT * (_fast_path_floats(model) if fast else _forward_floats(model, 3, 3))
    else:
        n_pos = int(task.get("seq_len", _get(model, "n_ctx", 48)))
        step, ev = int(task.get("batch_size", 64)), int(task.get("n_eval", 512))
        fwd = FLOAT * _forward_floats(model, n_pos, 3 * n_pos)  # logits, log-softmax and its gradient
    return task_bytes(task) + 6 * model_bytes(model) + max(2 * step * fwd, ev * fwd)


def build_bytes(cfg: Mapping[str, Any] | Any) -> int:
    """Peak memory of :func:`mechwork.models.build_model`: the weights and their freshly drawn initial values."""
    return 2 * model_bytes(cfg)


def probe_bytes(n: int, n_pos: int) -> int:
    """The clean and corrupted prompts of :func:`mechwork.tasks.standard_probe` and their temporaries."""
    return 6 * INT * n * n_pos


def patch_bytes(model: Mapping[str, Any] | Any, n: int, n_pos: int, memory_mb: int | float = 512.0) -> int:
    """Peak memory of :func:`mechwork.analysis.patching.patch` on ``n`` prompts of ``n_pos`` tokens.

    The base and source runs keep every layer's residual stream, keys, values
    and logits; on top, one forward's working activations run at a time (a
    chunk of patched copies is at least one copy; ``memory_mb`` caps how many
    more the chunk holds), and the inputs are copied to the model's device.
    """
    hd = int(_get(model, "n_heads", 4)) * int(_get(model, "d_head", 32))
    kept = FLOAT * n * n_pos * (int(_get(model, "n_layers", 1)) * (int(_get(model, "d_model", 128)) + 2 * hd)
                                + int(_get(model, "d_vocab_out", 113)))
    work = FLOAT * n * _forward_floats(model, n_pos, n_pos)
    return 2 * kept + work + 4 * INT * n * n_pos + model_bytes(model)


# -- task arguments ---------------------------------------------------------------------------
def _check_int(name: str, value: object, lo: int, hi: int | None = None) -> None:
    ok = isinstance(value, int) and not isinstance(value, bool) and value >= lo
    if ok and hi is not None:
        ok = value <= hi  # type: ignore[operator]
    if not ok:
        valid = f"an integer >= {lo}" if hi is None else f"an integer in [{lo}, {hi}]"
        raise invalid(name, valid, value)


def is_prime(n: int) -> bool:
    """Trial division; fine for the p of a toy task.

    >>> [n for n in range(20) if is_prime(n)]
    [2, 3, 5, 7, 11, 13, 17, 19]
    """
    if n < 2:
        return False
    i = 2
    while i * i <= n:
        if n % i == 0:
            return False
        i += 1
    return True


#: The largest seed: every seed mechwork derives (``seed * 1_000_003 + step`` for minibatches)
#: stays inside torch's 64-bit generator state.
SEED_MAX = 2**32 - 1


def check_seed(seed: Any, name: str = "seed") -> None:
    """A seed is an integer in ``[0, SEED_MAX]``.

    >>> check_seed(2**40)
    Traceback (most recent call last):
    mechwork.errors.ConfigError: 'seed' must be an integer in [0, 4294967295] (got 1099511627776)
    """
    _check_int(name, seed, 0, SEED_MAX)


def check_modadd(p: Any, op: Any, train_frac: Any, seed: Any) -> None:
    """Every argument of :class:`~mechwork.tasks.ModularArithmetic`, and that its pairs fit in memory."""
    _check_int("p", p, 3)
    if op not in OPS:
        raise invalid("op", f"one of {', '.join(OPS)}", op)
    check_fits(f"modular arithmetic with p = {p} ({_n_pairs(p, op):,} pairs)", modadd_task_bytes(p, op))
    if op == "div" and not is_prime(p):
        raise invalid("p", "a prime >= 3 for op 'div' (it needs a field)", p)
    if isinstance(train_frac, bool) or not isinstance(train_frac, (int, float)) or not 0.0 < train_frac < 1.0:
        raise invalid("train_frac", "a number in (0, 1)", train_frac)
    n = _n_pairs(p, op)
    if int(train_frac * n) < 1 or int(train_frac * n) >= n:
        raise invalid("train_frac", f"large enough for >= 1 train pair of {n}", train_frac)
    check_seed(seed)


def check_induction(d_vocab: Any, seq_len: Any, min_len: Any, max_len: Any, batch_size: Any, n_eval: Any,
                    seed: Any) -> None:
    """Every argument of :class:`~mechwork.tasks.InductionTask`, and that its batches fit in memory."""
    _check_int("d_vocab", d_vocab, 4)
    _check_int("seq_len", seq_len, 8)
    _check_int("min_len", min_len, 2)
    if 2 * min_len > seq_len:
        raise invalid("min_len", f"at most seq_len/2 = {seq_len // 2}", min_len)
    _check_int("max_len", max_len, min_len)
    if 2 * max_len > seq_len:
        raise invalid("max_len", f"at most seq_len/2 = {seq_len // 2}", max_len)
    _check_int("batch_size", batch_size, 1)
    _check_int("n_eval", n_eval, 1)
    check_seed(seed)
    check_fits(f"an induction task of {batch_size} + {n_eval} sequences of {seq_len} tokens",
               induction_task_bytes(seq_len, batch_size, n_eval))


# -- devices ----------------------------------------------------------------------------------
def cuda_unavailable() -> str | None:
    """Why this machine's torch cannot use CUDA, told without importing torch; None when it may."""
    from importlib.metadata import PackageNotFoundError, version

    try:
        v = version("torch")
    except PackageNotFoundError:  # pragma: no cover - torch is a dependency
        return "torch is not installed"
    if "+cpu" in v:
        return f"torch {v} is a CPU-only build"
    if sys.platform == "darwin":
        return f"torch {v} on macOS has no CUDA (try --device mps)"
    if "+rocm" in v:
        return None if os.path.exists("/dev/kfd") else f"torch {v} is a ROCm build and /dev/kfd is missing"
    if sys.platform.startswith("linux") and not (
        os.path.exists("/proc/driver/nvidia/version") or any(Path("/dev").glob("nvidia[0-9]*"))
    ):
        return "this machine has no NVIDIA GPU driver (no /proc/driver/nvidia, no /dev/nvidia*)"
    return None


def check_device(device: str | None) -> None:
    """Refuse a device string torch would not parse, or CUDA / MPS where this torch cannot use them.

    >>> check_device("cpu")
    >>> check_device("tpu")
    Traceback (most recent call last):
    mechwork.errors.ConfigError: 'device' must be cpu, cuda, cuda:N or mps (got 'tpu')
    """
    if device is None:
        return
    m = re.fullmatch(r"(cpu|cuda|mps)(?::(\d+))?", str(device))
    if m is None:
        raise invalid("device", "cpu, cuda, cuda:N or mps", device)
    if m.group(1) == "cuda":
        why = cuda_unavailable()
        if why is not None:
            raise ConfigError(f"'device' {device!r} is not available: {why}; use cpu")
    if m.group(1) == "mps" and sys.platform != "darwin":
        raise ConfigError(f"'device' {device!r} is not available: mps is Apple silicon's (this is {sys.platform}); "
                          "use cpu")


# -- output paths -----------------------------------------------------------------------------
def _probe_dir(d: Path, what: str) -> None:
    """A new file can be made in the existing directory ``d`` (made and removed again)."""
    try:
        fd, tmp = tempfile.mkstemp(dir=d, prefix=".mechwork-check-")
    except OSError as e:
        raise OutputError(f"cannot write {what}: directory {str(d)!r} is not writable ({e.strerror})") from None
    os.close(fd)
    os.unlink(tmp)


def check_writable(path: str | os.PathLike[str], option: str, *, make_parents: bool = False) -> None:
    """Refuse an output file that cannot be written, before any work is done; writes nothing.

    The path must not be a directory, an existing file must be writable, and its
    directory must exist (or, with ``make_parents``, be creatable) and take new files.
    """
    p = Path(path)
    what = f"{option} {str(p)!r}"
    if p.is_dir():
        raise OutputError(f"{option} must be a file path, not a directory (got {str(p)!r})")
    if p.exists() and not os.access(p, os.W_OK):
        raise OutputError(f"cannot write {what}: the file is read-only")
    d = p.parent
    if not make_parents:
        if not d.is_dir():
            state = "is not a directory" if d.exists() else "does not exist"
            raise OutputError(f"cannot write {what}: directory {str(d)!r} {state}")
        _probe_dir(d, what)
        return
    while not d.exists():
        d = d.parent
    if not d.is_dir():
        raise OutputError(f"cannot write {what}: {str(d)!r} is a file, not a directory")
    _probe_dir(d, what)


def check_checkpoints_dir(run: str | os.PathLike[str]) -> None:
    """``RUN/checkpoints`` is absent or a directory, and no checkpoint name in it is taken by a folder.

    Checked before a resume or a ``--force`` writes into the run, which would
    otherwise fail half-way with a raw ``FileExistsError`` or ``IsADirectoryError``.
    """
    ck = Path(run) / "checkpoints"
    if (ck.exists() or ck.is_symlink()) and not ck.is_dir():
        what = "a broken symlink" if ck.is_symlink() and not ck.exists() else "a file"
        raise CheckpointError(f"{str(ck)!r} must be a directory of checkpoints (got {what})")
    if ck.is_dir():
        for f in sorted(ck.iterdir()):
            if f.name.endswith(".safetensors") and f.is_dir():
                raise CheckpointError(f"{str(f)!r} must be a checkpoint file (got a directory)")


def check_run_target(path: str | os.PathLike[str], *, resume: bool, force: bool) -> None:
    """What :meth:`mechwork.runs.RunWriter.check_target` refuses, plus an unwritable place; writes nothing."""
    p = Path(path)
    if p.exists() and not p.is_dir():
        raise RunDirError(f"'--out' must be a directory (got file {str(p)!r})")
    if resume or force:
        check_checkpoints_dir(p)
    if resume:
        if not (p / "config.json").is_file():
            raise RunDirError(f"cannot resume: {str(p)!r} is not a run directory (no config.json)")
    elif p.is_dir() and any(p.iterdir()) and not force:
        raise RunDirError(f"'--out' {str(p)!r} exists and is not empty; pass --resume to continue it or --force")
    d = p
    while not d.exists():
        d = d.parent
    if not d.is_dir():
        raise OutputError(f"cannot write run directory {str(p)!r}: {str(d)!r} is a file, not a directory")
    _probe_dir(d, f"run directory {str(p)!r}")


# -- runs and presets, read as JSON -----------------------------------------------------------
RUN_SECTIONS = ("task", "model", "train")  # a run's config.json has these; a save_pretrained one has none


def _config_json(path: str | os.PathLike[str]) -> Any:
    """The parsed ``config.json`` of directory ``path``; None when absent or not readable JSON."""
    try:
        return json.loads((Path(path) / "config.json").read_text(encoding="utf-8"))
    except (OSError, ValueError):
        return None


def model_dir_config(path: str | os.PathLike[str]) -> dict[str, Any] | None:
    """The ``config.json`` of a directory saved with ``save_pretrained`` (it names ``model_type`` or
    ``architectures``, and has none of a run's sections); None for anything else."""
    return _as_model_config(_config_json(path))


def _as_model_config(d: Any) -> dict[str, Any] | None:
    """``d`` (a parsed config.json) when it is a save_pretrained model's, else None."""
    if not isinstance(d, dict) or any(k in d for k in RUN_SECTIONS):
        return None
    return d if isinstance(d.get("model_type"), str) or isinstance(d.get("architectures"), list) else None


def accepted(names: list[str] | tuple[str, ...], *, bridge: bool = False) -> str:
    """What a model argument may be, for the one-line error of anything else."""
    return (f"a run directory or one of {', '.join(names)} (a preset), a directory saved with save_pretrained"
            + (", or a TransformerBridge" if bridge else ""))


def classify_dir(key: str) -> str:
    """``"model"`` for a save_pretrained directory, else ``"run"``; one line when config.json is neither's.

    A config.json that cannot be read is left to the run loader, which names the file and the fault.
    """
    d = _config_json(key)  # read once
    if _as_model_config(d) is not None:
        return "model"
    if isinstance(d, dict) and not any(k in d for k in RUN_SECTIONS):
        raise ConfigError(f"{key!r} is neither a run directory (its config.json has no task, model or train "
                          "section) nor a model directory saved with save_pretrained (no model_type or architectures)")
    return "run"


def no_config_detail(key: str) -> str:
    """What a path without config.json is instead, for its one-line refusal (a file, tokenizer files only...)."""
    p = Path(key)
    if p.is_file():
        return " (it is a file: give the directory that holds it)" if p.name == "config.json" else " (it is a file)"
    names = {f.name for f in p.iterdir()} if p.is_dir() else set()
    if not names:
        return " (it is empty)"
    if any("token" in n or n in ("vocab.json", "merges.txt", "vocab.txt") for n in names) and not any(
            n.endswith((".safetensors", ".bin")) for n in names):
        return " (it holds tokenizer files only: save the model there with save_pretrained too)"
    return ""


def missing_detail(key: str) -> str:
    """``': no such file or directory'`` for a key that reads as a path (not a preset name), else ``''``."""
    return ": no such file or directory" if os.sep in key or "/" in key or key.startswith((".", "~")) else ""


def resolve(path_or_preset: str | os.PathLike[str]) -> tuple[str, str]:
    """``("preset", name)``, ``("run", path)`` or ``("model", path)`` as :func:`mechwork.runs.resolve`, read as
    JSON; a directory must have a config.json. A leading ``~`` is the home directory."""
    key = os.fspath(path_or_preset)
    key = os.path.expanduser(key) if key.startswith("~") else key
    names = [*PRESET_NAMES, *(n for n in registered_presets() if n not in PRESET_NAMES)]  # and users' kits'
    if Path(key).exists():
        if not (Path(key) / "config.json").is_file():
            raise RunDirError(f"not a run directory (no config.json): {key!r}{no_config_detail(key)}; give "
                              f"{accepted(names)}")
        return classify_dir(key), key
    if key in names:
        return "preset", key
    raise ConfigError(f"'path_or_preset' must be {accepted(names)} (got {key!r}{missing_detail(key)})")


def run_steps(path: str | os.PathLike[str]) -> list[int]:
    """The checkpointed steps of a run directory, from its file names."""
    d = Path(path) / "checkpoints"
    found = (_CKPT.match(f.name) for f in d.iterdir()) if d.is_dir() else iter(())
    return sorted(int(m.group(1)) for m in found if m)


def check_step(kind: str, key: str, step: int | None) -> None:
    """A preset takes no step; a run's step must be one of its checkpoints."""
    if step is None:
        return
    if kind == "preset":
        raise ConfigError(f"'step' must be None for preset {key!r} (got {step})")
    if kind == "model":
        raise ConfigError(f"'step' must be None for model directory {key!r}: it holds one set of weights (got {step})")
    steps = run_steps(key)
    if not steps:
        raise CheckpointError(f"no checkpoints in {Path(key) / 'checkpoints'}")
    if step not in steps:
        near = min(steps, key=lambda s: abs(s - step))
        raise ConfigError(f"'step' must be a checkpointed step of {key} (got {step}; nearest {near})")


def embedded_file(name: str, suffix: str = ".safetensors") -> Path:
    """Where preset ``name``'s embedded weights (or, with ``suffix=".json"``, their metadata) lie in the package."""
    return Path(__file__).parent / "data" / f"{name}{suffix}"


def source_config(kind: str, key: str) -> dict[str, Any] | None:
    """The ``task`` and ``model`` dicts of a preset (its embedded JSON) or a run (config.json); None if unreadable
    (and for a model directory, which has neither)."""
    if kind not in ("preset", "run"):
        return None
    f = embedded_file(key, ".json") if kind == "preset" else Path(key) / "config.json"
    try:
        d = json.loads(f.read_text())
    except (OSError, ValueError):
        return None  # the full load reports it, with its file name
    if not isinstance(d, dict) or not isinstance(d.get("task"), dict) or not isinstance(d.get("model"), dict):
        return None
    if not all(_size_or_absent(d["model"], k) for k in _MODEL_SIZES) \
            or not all(_size_or_absent(d["task"], k) for k in _TASK_SIZES):
        return None  # a size that is not an integer: the full load names it, with its file
    return d


_MODEL_SIZES = ("n_layers", "d_model", "n_heads", "d_head", "d_mlp", "d_vocab", "d_vocab_out", "n_ctx")
_TASK_SIZES = ("p", "d_vocab", "seq_len", "batch_size", "n_eval")


def _size_or_absent(cfg: Mapping[str, Any], key: str) -> bool:
    v = cfg.get(key)
    return v is None or (isinstance(v, int) and not isinstance(v, bool) and v >= 0)


def patch_check(kind: str, key: str, n: int, memory_mb: int | float = 512.0) -> None:
    """Refuse a patching sweep over ``n`` standard prompts of a run or preset that would not fit."""
    cfg = source_config(kind, key)
    if cfg is None:
        return
    task = cfg["task"]
    n_pos = 3 if task.get("kind") == "modadd" else 2 * (int(task.get("seq_len", cfg["model"].get("n_ctx", 48))) // 2)
    need = probe_bytes(n, n_pos) + patch_bytes(cfg["model"], n, n_pos, memory_mb)
    check_fits(f"patching {n:,} prompts of {n_pos} tokens on {key}", need)


FOURIER_OPS = ("add", "sub")  # as mechwork.analysis.fourier.FOURIER_OPS (a test checks)


def check_fourier_source(kind: str, key: str) -> None:
    """Refuse, from its JSON, a run or preset whose task has no Fourier circuit (as analysis.fourier.check_task)."""
    if kind == "model":
        raise ConfigError(f"'analyze fourier' needs a modular-arithmetic run or preset (got {key!r}, a model "
                          "directory with no task); Fourier analysis is for modular arithmetic")
    cfg = source_config(kind, key)
    if cfg is None:
        return
    task = cfg["task"]
    if task.get("kind") != "modadd":
        raise ConfigError(f"'analyze fourier' needs a modular-arithmetic run or preset (got {key!r}, whose task is "
                          f"{task.get('kind')}); Fourier analysis is for modular arithmetic")
    if task.get("op", "add") not in FOURIER_OPS:
        raise ConfigError(f"'analyze fourier' applies to op 'add' and 'sub' only (got {task.get('op')!r} in {key!r})")


def finite_positive(name: str, value: Any) -> float:
    """A finite number > 0 (rejects NaN, inf, bools and non-numbers).

    >>> finite_positive("memory_mb", float("nan"))
    Traceback (most recent call last):
    mechwork.errors.ConfigError: 'memory_mb' must be a finite number > 0 (got nan)
    """
    if isinstance(value, bool) or not isinstance(value, (int, float)) or not math.isfinite(value) or value <= 0:
        raise invalid(name, "a finite number > 0", value)
    return float(value)


# -- the options of `mechwork train modadd` and `mechwork train induction` ---------------------------
# (here, not in the kits, so that the command line builds and checks them before torch is imported)
def _induction_fields(v: dict[str, Any]) -> dict[str, Any]:
    max_len = v["max_len"] or min(12, v["seq_len"] // 2)
    return {"d_vocab": v["d_vocab"], "seq_len": v["seq_len"], "min_len": v["min_len"] or min(4, max_len),
            "max_len": max_len, "seed": v["seed"]}


COMMANDS: dict[str, Command] = {
    "modadd": Command(
        "Train the 1-layer modular-arithmetic model (Nanda et al. 2023).",
        (Option("p", int, 113, "modulus", min=3),
         Option("op", OPS, "add"),
         Option("train_frac", float, 0.3, "fraction of the p^2 pairs used for training", 0.0, 1.0, True, True)),
        check=lambda f: check_modadd(f["p"], f["op"], f["train_frac"], f["seed"]),
        vocab=lambda f: {"d_vocab": f["p"] + 1, "d_vocab_out": f["p"], "n_ctx": 3},
        preset="modadd-113",
        out="runs/modadd-p{p}-{op}-s{seed}",
        train_options=("grokfast", "batch_size"),
    ),
    "induction": Command(
        "Train the 2-layer attention-only model on repeated random sequences.",
        (Option("d_vocab", int, 64, min=4),
         Option("seq_len", int, 48, min=8),
         Option("min_len", int, None, "shortest repeat (default min(4, max-len))", min=2),
         Option("max_len", int, None, "longest repeat (default min(12, seq-len/2))", min=2)),
        fields=_induction_fields,
        check=lambda f: check_induction(f["d_vocab"], f["seq_len"], f["min_len"], f["max_len"], 64, 512, f["seed"]),
        vocab=lambda f: {"d_vocab": f["d_vocab"], "d_vocab_out": f["d_vocab"], "n_ctx": f["seq_len"]},
        preset="induction-2l",
        out="runs/induction-s{seed}",
    ),
}
