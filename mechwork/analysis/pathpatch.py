"""Path patching: the effect of sender heads on a metric *only through* receiver heads' queries, keys or values.

:func:`path_patch` follows Wang et al. 2022. Run 1 caches the
clean run. Run 2 runs the clean input with the senders' outputs (``z``) taken
from the corrupted run, every other head's output and every MLP output in
the layers below the receivers frozen to their clean values, and records the
receivers' q/k/v. Run 3 runs the clean input with only those receiver
inputs patched in. The corrupted sender values can come from corrupted
tokens, or be a ``"zero"`` or ``"mean"`` ablation of the clean ones. In the
``denoising`` direction the corrupted input is run and the senders' clean
outputs are routed to the receivers; :func:`direct_path_sweep` does that for
every later head, as TransformerLens's ``get_act_patch_direct_path`` does
(tests/test_own_models.py compares the two on the GPT-2 and Llama bridges, norms
included, to 1e-5; TransformerLens needs a per-head Q/K/V input fork that
mechwork's native models lack, while path patching runs on any bridge).

:func:`path_patches` path patches several receiver components at once: they share the base
run, the run with the senders swapped on every path and the frozen run 2 (which records every
component), so q, k and v take 6 forward passes where three :func:`path_patch` calls take 12.

Example::

    >>> import mechwork, torch
    >>> from mechwork.analysis.attention import repeated_tokens
    >>> from mechwork.analysis.attribution import path_patch
    >>> model = mechwork.load("induction-2l")
    >>> toks = repeated_tokens(64, 20, batch=8)
    >>> def metric(logits):
    ...     return logits[:, 20:-1].log_softmax(-1).gather(-1, toks[:, 21:, None]).mean()
    >>> res = path_patch(model, toks, "mean", metric, senders=[(0, 0)], receivers=[(1, 3)], component="k")
    >>> res.value < res.base_value
    True
"""

from __future__ import annotations

from collections.abc import Callable, Mapping, Sequence
from dataclasses import dataclass
from typing import TYPE_CHECKING, Any, no_type_check

import torch
from jaxtyping import Float
from torch import Tensor

from mechwork.analysis.checks import check_head_pairs, check_inputs, evaluate_metric
from mechwork.errors import ConfigError, invalid
from mechwork.hooks import DIRECTIONS, Hooks, check_eval, hook_name
from mechwork.results import Result

if TYPE_CHECKING:  # pragma: no cover
    import pandas as pd
    from transformer_lens.model_bridge import TransformerBridge

__all__ = ["DirectPathSweep", "PathPatchResult", "base_hooks", "direct_path_sweep", "path_patch", "path_patches"]


# -- path patching ------------------------------------------------------------------------
ABLATIONS = ("zero", "mean")


@dataclass(frozen=True)
class PathPatchResult(Result):
    """Metric when the senders' swapped outputs reach the receivers' ``component`` only."""

    senders: list[tuple[int, int]]
    receivers: list[tuple[int, int]]
    component: str
    direction: str  # noising: base run clean, senders corrupted; denoising: base corrupted, senders clean
    value: float  # senders swapped along the path to the receivers only
    base_value: float  # the base run, nothing swapped
    full_value: float  # senders swapped along every path

    @property
    def fraction(self) -> float:
        """Share of the senders' whole effect that goes through this path."""
        gap = self.full_value - self.base_value
        return float("nan") if gap == 0 else (self.value - self.base_value) / gap

    def summary(self) -> str:
        s = ", ".join(f"L{la}H{h}" for la, h in self.senders)
        r = ", ".join(f"L{la}H{h}" for la, h in self.receivers)
        return (f"path {s} -> {r} ({self.component}, {self.direction}): metric {self.value:.4g} (base run "
                f"{self.base_value:.4g}, senders swapped on every path {self.full_value:.4g}): "
                f"{self.fraction:.0%} of the effect")

    def to_frame(self) -> pd.DataFrame:
        import pandas as pd

        return pd.DataFrame({"run": ["base", "path patched", "senders swapped on every path"],
                             "metric": [self.base_value, self.value, self.full_value]})

    def figure(self) -> Any:
        import plotly.graph_objects as go

        df = self.to_frame()
        fig = go.Figure(go.Bar(x=df["run"].tolist(), y=df["metric"].tolist()))
        return fig.update_layout(title=self.summary(), xaxis_title="run", yaxis_title="metric", height=360)


def _check_heads(model: TransformerBridge, heads: Any, name: str) -> list[tuple[int, int]]:  # any value: one line
    out = check_head_pairs(model, heads, name)
    if not out:
        raise invalid(name, "at least one (layer, head)", "an empty list")
    return out


def _replace_heads(values: dict[int, Tensor], layer: int, heads: list[int]) -> Callable[..., Tensor]:
    def hook(act: Tensor, hook: Any = None) -> Tensor:
        act = act.clone()
        act[:, :, heads] = values[layer][:, :, heads].to(act.dtype)
        return act

    return hook


def _check_path(model: TransformerBridge, clean: Tensor, corrupted: Tensor | str, senders: Any, receivers: Any,
                components: Any, direction: str) -> tuple[list[tuple[int, int]], list[tuple[int, int]], list[str]]:
    """Every argument of :func:`path_patches`, checked; the senders and receivers as (layer, head) lists, and the
    receiver components in order."""
    check_eval(model, "path patching")
    if direction not in DIRECTIONS:  # path patching says noising first: it is its default
        raise invalid("direction", "noising or denoising", direction)
    if isinstance(corrupted, str):
        if corrupted not in ABLATIONS or direction == "denoising":
            valid = f"a token batch or one of {', '.join(ABLATIONS)}" if direction == "noising" else "a token batch"
            raise invalid("corrupted", f"{valid} (direction {direction})", corrupted)
        check_inputs(model, clean, clean, "path patching")
    else:
        check_inputs(model, clean, corrupted, "path patching")
    comps = list(components) if isinstance(components, str | list | tuple) else [components]
    bad = [c for c in comps if c not in ("q", "k", "v")] or [c for i, c in enumerate(comps) if c in comps[:i]]
    if bad or not comps:
        raise invalid("components", "some of q, k and v, each once", bad[0] if bad else "none")
    snd, rcv = _check_heads(model, senders, "senders"), _check_heads(model, receivers, "receivers")
    top = min(la for la, _ in rcv)
    if any(la >= top for la, _ in snd):
        raise ConfigError(f"every sender must sit below every receiver (senders {snd}, receivers {rcv})")
    return snd, rcv, list(comps)


def _by_layer(heads: list[tuple[int, int]]) -> dict[int, list[int]]:
    out: dict[int, list[int]] = {}
    for la, h in heads:
        out.setdefault(la, []).append(h)
    return out


def _recorder(recorded: dict[str, Tensor], name: str) -> Callable[..., Tensor]:
    def hook(act: Tensor, hook: Any = None) -> Tensor:
        recorded[name] = act.detach().clone()
        return act

    return hook


def base_hooks(model: TransformerBridge, receivers: Sequence[tuple[int, int]]) -> set[str]:
    """The hooks a base run must cache for :func:`path_patches` (its ``base_run``): every head output
    (``hook_z``) and MLP output below the lowest receiver."""
    top = min(int(la) for la, _ in receivers)
    mlp = hook_name("mlp_out", 0) in model.hook_dict
    return {hook_name(s, la) for la in range(top) for s in (("z", "mlp_out") if mlp else ("z",))}


@no_type_check  # validates its own arguments, with one-line messages
@torch.no_grad()
def path_patches(
    model: TransformerBridge,
    clean: Tensor,
    corrupted: Tensor | str,
    metric: Callable[[Tensor], Any],
    *,
    senders: Sequence[tuple[int, int]],
    receivers: Sequence[tuple[int, int]],
    components: Sequence[str] = ("q", "k", "v"),
    direction: str = "noising",
    base_run: tuple[Tensor, Mapping[str, Tensor]] | None = None,
) -> dict[str, PathPatchResult]:
    """:func:`path_patch` into each receiver component of ``components``, by name; the components share the
    base run, the run with the senders swapped on every path and the frozen run (which records every component),
    so three components take 3 + 3 forward passes where three :func:`path_patch` calls take 12.

    ``base_run``: ``(logits, cache)`` of the base input (``clean`` when noising) when the caller has it from its
    own run, the cache holding the activations at :func:`base_hooks`; else one cached run here.
    """
    snd, rcv, comps = _check_path(model, clean, corrupted, senders, receivers, components, direction)
    device = next(model.parameters()).device
    clean = clean.to(device)
    b = clean.shape[0]
    base = clean if direction == "noising" or isinstance(corrupted, str) else corrupted.to(device)
    other = None if isinstance(corrupted, str) else (corrupted.to(device) if direction == "noising" else clean)
    wanted = base_hooks(model, rcv)
    if base_run is None:
        base_run = model.run_with_cache(base, names_filter=lambda n: n in wanted)
    if not (isinstance(base_run, tuple) and len(base_run) == 2):
        raise invalid("base_run", "(logits, cache) of the base run", type(base_run).__name__)
    if missing := sorted(wanted - set(base_run[1])):
        raise invalid("base_run", "(logits, cache) of the base run, cached at every hook base_hooks names",
                      f"no {missing[0]}")
    base_logits, cache = base_run
    below = range(min(la for la, _ in rcv))
    z_names = {la: hook_name("z", la) for la in below}
    base_z = {la: cache[n] for la, n in z_names.items()}
    if other is None:
        swap_z = {la: torch.zeros_like(z) if corrupted == "zero" else z.mean(0, keepdim=True).expand_as(z)
                  for la, z in base_z.items()}
    else:
        _, oc = model.run_with_cache(other, names_filter=lambda n: n in set(z_names.values()))
        swap_z = {la: oc[n] for la, n in z_names.items()}
    by_layer = _by_layer(snd)
    # senders swapped on every path
    full_hooks: Hooks = [(z_names[la], _replace_heads(swap_z, la, hs)) for la, hs in by_layer.items()]
    full_v = float(evaluate_metric(metric, model.run_with_hooks(base, fwd_hooks=full_hooks), b).mean())
    # run 2: senders swapped, every other head and MLP below the receivers frozen to the base run; record receivers
    mixed = {la: base_z[la].clone() for la in below}
    for la, hs in by_layer.items():
        mixed[la][:, :, hs] = swap_z[la][:, :, hs]
    n_heads = int(model.cfg.n_heads)
    hooks: Hooks = [(z_names[la], _replace_heads(mixed, la, list(range(n_heads)))) for la in below]
    hooks += [(n, (lambda act, hook=None, v=cache[n]: v.clone())) for n in sorted(wanted - set(z_names.values()))]
    recorded: dict[str, Tensor] = {}
    hooks += [(n, _recorder(recorded, n)) for n in sorted({hook_name(c, la) for c in comps for la, _ in rcv})]
    model.run_with_hooks(base, fwd_hooks=hooks)
    # run 3, per component: the base input, only the receivers' component patched
    base_v = float(evaluate_metric(metric, base_logits, b).mean())
    out = {}
    for c in comps:
        rec = {la: recorded[hook_name(c, la)] for la, _ in rcv}
        final: Hooks = [(hook_name(c, la), _replace_heads(rec, la, hs)) for la, hs in _by_layer(rcv).items()]
        value = evaluate_metric(metric, model.run_with_hooks(base, fwd_hooks=final), b)
        out[c] = PathPatchResult(snd, rcv, c, direction, float(value.mean()), base_v, full_v)
    return out


@no_type_check  # validates its own arguments, with one-line messages
def path_patch(model: TransformerBridge, clean: Tensor, corrupted: Tensor | str, metric: Callable[[Tensor], Any], *,
               senders: Sequence[tuple[int, int]], receivers: Sequence[tuple[int, int]], component: str = "k",
               direction: str = "noising") -> PathPatchResult:
    """Senders' effect through the receivers' ``component`` (``q``, ``k`` or ``v``) only.

    ``noising`` (the default) runs ``clean`` with the senders' outputs from
    ``corrupted``: a token batch shaped like ``clean``, or ``"zero"`` / ``"mean"``
    to ablate them (mean: over the batch, at each position). ``denoising`` runs
    ``corrupted`` tokens with the senders' clean outputs; with one sender and one
    receiver this is TransformerLens's ``get_act_patch_direct_path`` (see
    :func:`direct_path_sweep`): the frozen run 2 gives the receiver exactly the
    corrupted residual plus the sender's clean-minus-corrupted write, normalised
    as the model normalises it. :func:`path_patches` does several components at once.
    """
    if not isinstance(component, str) or component not in ("q", "k", "v"):
        raise invalid("component", "q, k or v", component)
    return path_patches(model, clean, corrupted, metric, senders=senders, receivers=receivers,
                        components=[component], direction=direction)[component]


@dataclass(frozen=True)
class DirectPathSweep(Result):
    """Denoising path patching from one sender into every later head's ``component``.

    ``values`` is ``[n_layers, n_heads]`` (TransformerLens's ``get_act_patch_direct_path``
    layout); rows at or below the sender's layer are NaN. ``sweep[layer, head]`` indexes it.
    """

    values: Float[Tensor, "layer head"]
    sender: tuple[int, int]
    component: str

    def __getitem__(self, idx: Any) -> Tensor:
        return self.values[idx]

    def summary(self) -> str:
        sl, sh = self.sender
        vals = self.values.nan_to_num(float("-inf"))
        if bool(torch.isinf(vals).all()):
            return f"direct paths from L{sl}H{sh}: no later layer to reach"
        la, h = divmod(int(vals.argmax()), self.values.shape[1])
        return (f"direct paths from L{sl}H{sh} into each later head's {self.component}: highest metric at "
                f"L{la}H{h} ({float(self.values[la, h]):.4g})")

    def to_frame(self) -> pd.DataFrame:
        """One row per later head: the metric with the sender's path into its ``component`` patched."""
        import pandas as pd

        n_layers, n_heads = self.values.shape
        rows = [(la, h) for la in range(self.sender[0] + 1, n_layers) for h in range(n_heads)]
        return pd.DataFrame({"layer": [la for la, _ in rows], "head": [h for _, h in rows],
                             "metric": [float(self.values[la, h]) for la, h in rows]})

    def figure(self) -> Any:
        import plotly.graph_objects as go

        sl, sh = self.sender
        v = self.values
        fig = go.Figure(go.Heatmap(z=[[None if x != x else float(x) for x in row] for row in v.tolist()],
                                   x=[f"H{h}" for h in range(v.shape[1])], y=[f"L{la}" for la in range(v.shape[0])],
                                   colorscale="Viridis", colorbar={"title": {"text": "metric"}}))
        fig.update_yaxes(autorange="reversed")
        return fig.update_layout(title=f"Direct paths from L{sl}H{sh} into each later head's {self.component}",
                                 xaxis_title="receiving head", yaxis_title="layer", height=320)


def direct_path_sweep(
    model: TransformerBridge, clean: Tensor, corrupted: Tensor, metric: Callable[[Tensor], Any], *,
    sender: tuple[int, int], component: str = "q",
) -> DirectPathSweep:
    """Denoising path patching from one sender into every later head's ``component``: ``[n_layers, n_heads]``.

    The layout of TransformerLens's ``get_act_patch_direct_path``; rows at or below the
    sender's layer are NaN (TransformerLens fills them with 0.0 placeholders).
    """
    n_layers, n_heads = int(model.cfg.n_layers), int(model.cfg.n_heads)
    (sl, sh), = _check_heads(model, [sender], "sender")
    out = torch.full((n_layers, n_heads), float("nan"))
    for la in range(sl + 1, n_layers):
        for h in range(n_heads):
            out[la, h] = path_patch(model, clean, corrupted, metric, senders=[(sl, sh)], receivers=[(la, h)],
                                    component=component, direction="denoising").value
    return DirectPathSweep(out, (sl, sh), component)
