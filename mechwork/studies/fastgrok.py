"""The fewest steps to grok: one modular-addition run as a sweep point, and the per-recipe table over seeds.

:func:`fast_grok_point` trains the modadd-113 preset's architecture (1 layer, d_model 128, 4 heads, d_mlp 512,
ReLU, no LayerNorm) on (a + b) mod p, full batch, with one recipe: learning rate, weight decay, the
initialisation scale (Omnigrok's alpha), the loss (softmax or StableMax), ⊥Grad and Grokfast. It evaluates
every ``eval_every`` steps and records the test accuracy of each evaluation, so the step counts below can be
recomputed from the record:

* **grokked**: the first evaluated step with test accuracy >= ``target`` (None if never within ``steps``);
* **spike**: the first evaluated step after that, within ``window`` steps, where test accuracy falls below
  ``target`` again (None if none). A run stops at that spike, once ``window`` steps past grokking without
  one, or at ``steps``; ``window_seen`` says how many steps after grokking were watched.

:func:`recipe_table` groups the points by recipe (every parameter but the seed): the median over seeds counts
a seed that never grokked as slower than every seed that did (so the median of three exists when two grok).

Example::

    >>> from mechwork.studies.fastgrok import first_at_least, spike_after
    >>> hist = [[0, 0.01], [10, 0.5], [20, 0.995], [30, 0.97], [40, 0.999]]
    >>> first_at_least(hist, 0.99), spike_after(hist, 20, window=100, target=0.99)
    (20, 30)
"""

from __future__ import annotations

import inspect
from collections.abc import Iterable, Mapping, Sequence
from typing import Any

from mechwork.errors import invalid

__all__ = ["RECIPE_KEYS", "fast_grok_point", "first_at_least", "median_steps", "recipe_table", "spike_after"]

RECIPE_KEYS = ("lr", "weight_decay", "init_scale", "loss", "orthograd", "grokfast_alpha", "grokfast_lambda",
               "warmup_steps")


def first_at_least(history: Sequence[Sequence[int | float]], target: float) -> int | None:
    """The first step of ``history`` (rows ``[step, test_acc, ...]``) whose test accuracy is >= ``target``."""
    return next((int(r[0]) for r in history if r[1] >= target), None)


def spike_after(
    history: Sequence[Sequence[int | float]], grokked: int | None, *, window: int, target: float
) -> int | None:
    """The first step in ``(grokked, grokked + window]`` whose test accuracy is below ``target`` (None if none)."""
    if grokked is None:
        return None
    return next((int(r[0]) for r in history if grokked < r[0] <= grokked + window and r[1] < target), None)


def fast_grok_point(
    *,
    seed: int,
    recipe: Mapping[str, Any] | None = None,
    lr: float = 1e-2,
    weight_decay: float = 1.0,
    init_scale: float = 1.0,
    loss: str = "softmax",
    orthograd: bool = False,
    grokfast_alpha: float | None = None,
    grokfast_lambda: float = 2.0,
    warmup_steps: int = 10,
    steps: int = 1500,
    eval_every: int = 10,
    window: int = 100,
    target: float = 0.99,
    p: int = 113,
    train_frac: float = 0.3,
) -> dict[str, Any]:
    """Train one recipe on (a + b) mod ``p``; steps to grok, the first spike after it, and the test history.

    ``recipe`` overrides the recipe's arguments (any of :data:`RECIPE_KEYS`) as one value, so that one sweep grid
    can list recipes that are not a product of values."""
    from mechwork.models import ToyConfig
    from mechwork.tasks import ModularArithmetic
    from mechwork.training import TrainConfig, train

    if recipe:
        bad = sorted(set(recipe) - set(RECIPE_KEYS))
        if bad:
            raise invalid("recipe", f"a dict of {', '.join(RECIPE_KEYS)}", bad[0])
        return fast_grok_point(seed=seed, steps=steps, eval_every=eval_every, window=window, target=target, p=p,
                               train_frac=train_frac, **{**_recipe_args(locals()), **recipe})
    task = ModularArithmetic(p=p, op="add", train_frac=train_frac, seed=seed)
    cfg = TrainConfig(lr=lr, weight_decay=weight_decay, init_scale=init_scale, loss=loss, orthograd=orthograd,
                      grokfast_alpha=grokfast_alpha, grokfast_lambda=grokfast_lambda, warmup_steps=warmup_steps,
                      steps=steps, eval_every=eval_every, seed=seed)
    seen: dict[str, int | None] = {"grokked": None}

    def stop(row: dict[str, Any]) -> bool:  # the window watched, or the first spike in it
        if seen["grokked"] is None and row["test_acc"] >= target:
            seen["grokked"] = int(row["step"])
        g = seen["grokked"]
        return g is not None and (row["step"] >= g + window or row["test_acc"] < target)

    res = train(task, ToyConfig.for_task(task, seed=seed), cfg, quiet=True, device="cpu", stop_when=stop)
    history = [[int(r["step"]), round(float(r["test_acc"]), 5), round(float(r["train_acc"]), 5)] for r in res.rows]
    grokked = first_at_least(history, target)
    last = int(history[-1][0])
    return {
        "grokked": grokked,
        "memorised": next((h[0] for h in history if h[2] >= target), None),
        "spike": spike_after(history, grokked, window=window, target=target),
        "window_seen": None if grokked is None else min(window, last - grokked),
        "steps_run": last,
        "final_test_acc": history[-1][1],
        "ms_per_step": round(1e3 * float(res.rows[-1]["wall"]) / max(1, last), 2),
        "history": history,
    }


def _recipe_args(args: Mapping[str, Any]) -> dict[str, Any]:
    return {k: args[k] for k in RECIPE_KEYS}


def median_steps(steps: Sequence[int | None]) -> float | None:
    """Median over seeds, a seed that never grokked counted as slower than any that did (None if that is it)."""
    if not steps:
        return None
    ranked = sorted(steps, key=lambda s: (s is None, s or 0))
    n = len(ranked)
    mid = ranked[(n - 1) // 2 : n // 2 + 1]
    if any(s is None for s in mid):
        return None
    return sum(float(s) for s in mid if s is not None) / len(mid)


def _defaults() -> dict[str, Any]:
    """The point function's default arguments (a record lists only the parameters its sweep set)."""
    sig = inspect.signature(fast_grok_point)
    return {k: v.default for k, v in sig.parameters.items() if v.default is not inspect.Parameter.empty}


def recipe_table(records: Iterable[Mapping[str, Any]]) -> list[dict[str, Any]]:
    """One row per recipe of the sweep records (``{"params", "result"}``), fastest median first."""
    groups: dict[tuple[Any, ...], list[Mapping[str, Any]]] = {}
    for r in records:
        if "result" not in r:
            continue
        prm = _defaults() | r.get("fixed", {}) | r["params"] | (r["params"].get("recipe") or {})
        key = (*(prm.get(k) for k in RECIPE_KEYS), prm.get("window"), prm.get("steps"))
        groups.setdefault(key, []).append(r)
    rows = []
    for key, rs in groups.items():
        rs = sorted(rs, key=lambda r: r["params"]["seed"])
        per_seed = [r["result"]["grokked"] for r in rs]
        spikes = [r["result"]["spike"] for r in rs]
        seen = [r["result"]["window_seen"] for r in rs]
        rows.append({**dict(zip(RECIPE_KEYS, key[:-2], strict=True)), "window": key[-2], "cap": key[-1],
                     "seeds": [r["params"]["seed"] for r in rs],
                     "steps": per_seed, "median": median_steps(per_seed),
                     "spikes": sum(s is not None for s in spikes), "spike_steps": spikes,
                     "min_window_seen": min((s for s in seen if s is not None), default=None)})
    return sorted(rows, key=lambda r: (r["median"] is None, r["median"] or 0, -len(r["seeds"])))
