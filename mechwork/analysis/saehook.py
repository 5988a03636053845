"""SAE latents as hook points: splice an SAE into a model, cache its latents, ablate them.

Inside ``with spliced(model, sae):`` the activation at ``sae.cfg.hook_name`` is replaced by the SAE's
reconstruction, and the SAE's hook points are hook points of the model, named as SAELens names them
(``HookedSAETransformer``)::

    {hook}.hook_sae_input       the activation the SAE reads         [..., d_in]
    {hook}.hook_sae_acts_pre    the latents' pre-activations         [..., d_sae]
    {hook}.hook_sae_acts_post   the latents                          [..., d_sae]
    {hook}.hook_sae_recons      the reconstruction from the latents  [..., d_in]
    {hook}.hook_sae_error       activation - reconstruction (only with error=True)
    {hook}.hook_sae_output      what flows on from the hook          [..., d_in]

so ``model.run_with_cache`` (``names_filter`` too), ``model.run_with_hooks`` and ``model.hooks`` see them.
``{hook}`` itself then carries what flows downstream (``hook_sae_output``); hooks already on it run
before the SAE, hooks added inside the block after it.

* ``error=False``: the model runs on the reconstruction, so its logits move by what the SAE misses.
* ``error=True`` (SAELens's ``use_error_term``): ``hook_sae_error`` is ``x - sae(x)``, computed from the
  original activation by the SAE without hooks, and added back: the output is the original activation (bit
  for bit when no hook edits anything), yet the latents are live, and a hook that edits them changes the
  output by exactly the decoder's share of the edit. Its gradient to the activation is the identity, as the
  model's own.

:func:`run_with_saes` is SAELens's ``run_with_cache_with_saes``; :func:`ablate_latents` ablates latents one at a
time (many per forward pass: one copy of the batch per latent); patching by latent is ``patch(...,
site="sae", by="latent", sae=sae)`` (:mod:`mechwork.analysis.saepatch`). The SAE reads the activation's last
dimension, so its ``d_in`` must be that width. Everything is restored on exit, also after an exception.
The fast engine bypasses hooks, so analyses run on the hook path while an SAE is spliced.

Example::

    >>> import mechwork, torch
    >>> from mechwork.analysis.sae import SAE, SAEConfig
    >>> from mechwork.analysis.saehook import spliced
    >>> model = mechwork.load("modadd-113")
    >>> sae = SAE(SAEConfig(d_in=512, d_sae=1024, hook_name="blocks.0.mlp.hook_post"))
    >>> toks = mechwork.preset("modadd-113").task.tokens[:4]
    >>> with spliced(model, sae, error=True):
    ...     logits, cache = model.run_with_cache(toks, names_filter=lambda n: "hook_sae" in n)
    >>> tuple(cache["blocks.0.mlp.hook_post.hook_sae_acts_post"].shape)
    (4, 3, 1024)
    >>> torch.equal(logits, model(toks)), "blocks.0.mlp.hook_post.hook_sae_input" in model.hook_dict
    (True, False)
"""

from __future__ import annotations

from collections.abc import Callable, Iterator, Sequence
from contextlib import ExitStack, contextmanager
from dataclasses import dataclass
from typing import TYPE_CHECKING, Any, no_type_check

import torch
from jaxtyping import Float
from torch import Tensor, nn

from mechwork.analysis.checks import check_tokens, evaluate_metric
from mechwork.analysis.sae import SAE
from mechwork.errors import ConfigError, invalid
from mechwork.hooks import Hooks, check_eval, check_hook_name
from mechwork.models import attach_hook_module
from mechwork.results import Result

if TYPE_CHECKING:  # pragma: no cover
    import pandas as pd
    from transformer_lens.hook_points import HookPoint
    from transformer_lens.model_bridge import TransformerBridge

__all__ = ["HOOK_SUFFIXES", "HOW", "LatentAblation", "SAEHooks", "ablate_latents", "latents_hook", "run_with_saes",
           "spliced"]

HOOK_SUFFIXES = ("hook_sae_input", "hook_sae_acts_pre", "hook_sae_acts_post", "hook_sae_recons", "hook_sae_error",
                 "hook_sae_output")
HOW = ("zero", "mean")  # what replaces an ablated latent


class SAEHooks(nn.Module):
    """An SAE's forward with its six hook points (SAELens's ``SAE.forward`` under ``HookedSAETransformer``)."""

    hook_sae_input: HookPoint
    hook_sae_acts_pre: HookPoint
    hook_sae_acts_post: HookPoint
    hook_sae_recons: HookPoint
    hook_sae_error: HookPoint
    hook_sae_output: HookPoint

    def __init__(self, sae: SAE, error: bool = False) -> None:
        from transformer_lens.hook_points import HookPoint

        super().__init__()
        self.sae, self.error = sae, error
        for name in HOOK_SUFFIXES:
            setattr(self, name, HookPoint())

    def forward(self, x: Float[Tensor, "*batch d_in"]) -> Float[Tensor, "*batch d_in"]:
        sae = self.sae
        x_sae = x.to(sae.W_enc)
        sae_in = self.hook_sae_input(x_sae)
        pre = self.hook_sae_acts_pre(sae.encode_pre(sae_in))
        acts = self.hook_sae_acts_post(sae.activate(pre))
        out = self.hook_sae_recons(sae.decode(acts))
        if self.error:  # from the original activation, by the SAE without hooks: a patched latent stays patched
            clean = sae(x_sae)
            err = x_sae - clean
            # = out + error, written so that with nothing patched it is x itself, bit for bit
            out = x_sae + (out - clean) + (self.hook_sae_error(err) - err)
        return self.hook_sae_output(out).to(x.dtype)


def latents_hook(sae: SAE) -> str:
    """The hook point of ``sae``'s latents while it is spliced: ``{cfg.hook_name}.hook_sae_acts_post``."""
    return f"{sae.cfg.hook_name}.hook_sae_acts_post"


def _hook_widths(model: TransformerBridge, names: Sequence[str]) -> dict[str, int]:
    """The last dimension of each hook's activation, from a one-token forward pass."""
    toks = torch.zeros((1, 1), dtype=torch.long, device=next(model.parameters()).device)
    with torch.no_grad():
        _, cache = model.run_with_cache(toks, names_filter=lambda n: n in names)
    return {n: int(cache[n].shape[-1]) for n in names}


def _check_saes(model: TransformerBridge, saes: Sequence[Any]) -> list[SAE]:
    check_eval(model, "splicing an SAE")
    if not saes:
        raise invalid("saes", "at least one SAE", "none")
    hook_dict = model.hook_dict
    seen: dict[int, str] = {}
    for h in getattr(model, "spliced_hooks", ()):
        seen[id(hook_dict[h])] = h
    for sae in saes:
        if not isinstance(sae, SAE):
            raise invalid("saes", "SAE objects (mechwork.analysis.sae.SAE)", type(sae).__name__)
        hook = sae.cfg.hook_name
        if not hook:
            raise invalid("sae.cfg.hook_name", "the hook the SAE reads, e.g. 'blocks.0.mlp.hook_post'", hook)
        check_hook_name(hook, hook_dict)
        point = id(hook_dict[hook])
        if point in seen:
            same = "" if seen[point] == hook else f" (as {seen[point]!r}, the same hook point)"
            raise ConfigError(f"two SAEs at hook {hook!r}{same}: splice one SAE per hook")
        seen[point] = hook
    widths = _hook_widths(model, [s.cfg.hook_name for s in saes])
    for sae in saes:
        w = widths[sae.cfg.hook_name]
        if sae.d_in != w:
            raise ConfigError(f"the SAE's d_in {sae.d_in} does not match the width {w} of the activation at hook "
                              f"{sae.cfg.hook_name!r}")
    return list(saes)


@contextmanager
def spliced(model: TransformerBridge, *saes: SAE, error: bool = False) -> Iterator[TransformerBridge]:
    """Splice ``saes`` (one per hook, each at its ``cfg.hook_name``) into ``model`` for the block; yields the model.

    Refused in one line: a model in training mode, an unknown hook (the nearest is named), an SAE whose
    ``d_in`` is not the hook's width (both named), two SAEs at one hook point (also one already spliced).
    """
    checked = _check_saes(model, saes)
    with ExitStack() as stack:
        for sae in checked:
            stack.enter_context(attach_hook_module(model, sae.cfg.hook_name, SAEHooks(sae, error=bool(error))))
        yield model


def _as_saes(saes: SAE | Sequence[SAE]) -> list[SAE]:
    return [saes] if isinstance(saes, SAE) else list(saes)


@no_type_check  # validates its own arguments
def run_with_saes(
    model: TransformerBridge,
    tokens: Tensor,
    saes: SAE | Sequence[SAE],
    *,
    error: bool = False,
    cache: bool = False,
    names_filter: str | list[str] | Callable[[str], bool] | None = None,
    fwd_hooks: Hooks | None = None,
) -> Any:
    """The logits with ``saes`` spliced in; ``(logits, ActivationCache)`` when ``cache`` or ``names_filter``
    is given (every hook point, the SAEs' included, unless filtered). ``fwd_hooks`` run too (not with a cache)."""
    check_tokens(model, tokens)
    with spliced(model, *_as_saes(saes), error=error), torch.no_grad():
        if cache or names_filter is not None:
            if fwd_hooks:
                raise ConfigError("run_with_saes takes fwd_hooks or a cache, not both: add the hooks with "
                                  "model.hooks(...) around model.run_with_cache inside spliced(...)")
            return model.run_with_cache(tokens, names_filter=names_filter)
        return model.run_with_hooks(tokens, fwd_hooks=list(fwd_hooks or []))


@dataclass(frozen=True)
class LatentAblation(Result):
    """The metric with each latent ablated alone (``values[i]`` for ``latents[i]``) and, optionally, all together.

    ``base_value`` is the metric of the spliced run with no latent ablated (with ``error=True``: the model's own
    run). Without a metric, values are the mean absolute change of the logits from that run, and base 0.
    """

    latents: list[int]
    values: Tensor  # [n_latents]
    base_value: float
    together_value: float | None
    how: str
    hook_name: str
    error: bool
    metric_name: str

    def effect(self) -> Tensor:
        """The change each ablation makes: ``values - base_value``."""
        return self.values - self.base_value

    def top(self, k: int = 5) -> list[tuple[int, float]]:
        """The ``k`` latents whose ablation changes the metric most: ``(latent, change)``."""
        eff = self.effect()
        order = eff.abs().argsort(descending=True)[:k].tolist()
        return [(self.latents[i], float(eff[i])) for i in order]

    def summary(self) -> str:
        tops = ", ".join(f"{j} {e:+.3g}" for j, e in self.top(3))
        both = "" if self.together_value is None else f"; all {len(self.latents)} together {self.together_value:.4g}"
        return (f"{self.how} ablation of {len(self.latents)} SAE latent(s) at {self.hook_name} "
                f"({'error term kept' if self.error else 'reconstruction only'}), {self.metric_name}: "
                f"base {self.base_value:.4g}{both}; largest changes: {tops}")

    def to_frame(self) -> pd.DataFrame:
        import pandas as pd

        return pd.DataFrame({"latent": self.latents, "value": self.values.tolist(),
                             "effect": self.effect().tolist()})

    def figure(self) -> Any:
        import plotly.graph_objects as go

        fig = go.Figure(go.Bar(x=[str(j) for j in self.latents], y=self.effect().tolist()))
        return fig.update_layout(title=f"{self.how} ablation of SAE latents at {self.hook_name}",
                                 xaxis_title="latent", yaxis_title=f"change of {self.metric_name}")


def _check_latents(latents: Any, d_sae: int) -> list[int]:
    if latents is None:
        return list(range(d_sae))
    if isinstance(latents, Tensor):
        latents = latents.tolist()
    if isinstance(latents, int) and not isinstance(latents, bool):
        latents = [latents]
    if isinstance(latents, (str, bytes)) or not isinstance(latents, Sequence) or not latents:
        raise invalid("latents", f"a non-empty list of latent indices in [0, d_sae={d_sae})", latents)
    for j in latents:
        if isinstance(j, bool) or not isinstance(j, int) or not 0 <= j < d_sae:
            raise invalid("latents", f"latent indices in [0, d_sae={d_sae})", j)
    return list(latents)


def copies_per_pass(model: TransformerBridge, rows: int, d_sae: int, memory_mb: float) -> int:
    """Copies of a batch of ``rows`` token rows per forward pass: a generous activation estimate, against the budget."""
    c = model.cfg
    per_row = int(c.n_layers) * (16 * int(c.d_model) + 4 * int(c.n_heads) * int(c.n_ctx)
                                 + 3 * int(getattr(c, "d_mlp", 0) or 0)) + 3 * int(c.d_vocab_out) + 4 * d_sae
    return max(1, int(memory_mb * 2**20 // (4 * per_row * rows)))


def set_latents(acts: Tensor, mask: Tensor, value: Tensor) -> Tensor:
    """``acts`` ``[C*b, pos, ..., d_sae]`` with copy ``c``'s entries where ``mask[c]`` (``[C, pos, d_sae]``, or
    ``[C, 1, d_sae]`` for every position) taken from ``value`` (broadcast to ``[b, pos, ..., d_sae]``)."""
    n, d = mask.shape[0], acts.shape[-1]
    shaped = acts.reshape(n, acts.shape[0] // n, acts.shape[1], -1, d)
    v = value.expand(shaped.shape[1], acts.shape[1], *acts.shape[2:]).reshape(1, *shaped.shape[1:])
    return torch.where(mask[:, None, :, None, :], v.to(acts), shaped).reshape(acts.shape)


@no_type_check  # validates its own arguments, with one-line messages
@torch.no_grad()
def ablate_latents(
    model: TransformerBridge,
    sae: SAE,
    tokens: Tensor,
    latents: int | Sequence[int] | None = None,
    *,
    how: str = "zero",
    metric: Callable[[Tensor], Any] | None = None,
    mean_tokens: Tensor | None = None,
    error: bool = True,
    together: bool = False,
    memory_mb: float = 512.0,
) -> LatentAblation:
    """Ablate each of ``latents`` (default: every latent) alone, at every position, and record ``metric``.

    ``how="zero"`` sets the latent to 0; ``"mean"`` to its mean at each position over ``mean_tokens`` (default:
    ``tokens``). With ``error=True`` (the default) the error term is kept, so the unablated run is the model's own
    and an ablation removes only that latent's decoder contribution; with ``error=False`` everything is measured
    on the reconstruction. ``together=True`` also ablates all of ``latents`` at once.
    """
    if how not in HOW:
        raise invalid("how", " or ".join(HOW), how)
    check_tokens(model, tokens)
    lat = _check_latents(latents, sae.d_sae) if isinstance(sae, SAE) else []
    name = latents_hook(sae) if isinstance(sae, SAE) else ""
    b = tokens.shape[0]
    with spliced(model, sae, error=error):
        device = next(model.parameters()).device
        tokens = tokens.to(device)
        base_logits, cache = model.run_with_cache(tokens, names_filter=[name])
        if how == "mean":
            ref = cache[name] if mean_tokens is None else _mean_acts(model, mean_tokens, name, tokens.shape[1])
            fill = ref.mean(0, keepdim=True)
        else:
            fill = torch.zeros_like(cache[name][:1])
        measure = metric if metric is not None else (lambda lg: (lg - base_logits).abs().mean())
        base = float(evaluate_metric(measure, base_logits, b).mean())

        def run(masks: Tensor) -> list[float]:
            def hook(acts: Tensor, hook: Any = None) -> Tensor:
                return set_latents(acts, masks, fill)

            logits = model.run_with_hooks(tokens.repeat(masks.shape[0], 1), fwd_hooks=[(name, hook)])
            return [float(evaluate_metric(measure, logits[c * b:(c + 1) * b], b).mean())
                    for c in range(masks.shape[0])]

        cap = copies_per_pass(model, b * tokens.shape[1], sae.d_sae, memory_mb)
        values: list[float] = []
        for start in range(0, len(lat), cap):
            part = lat[start:start + cap]
            masks = torch.zeros(len(part), 1, sae.d_sae, dtype=torch.bool, device=device)
            masks[torch.arange(len(part)), 0, torch.tensor(part)] = True
            values += run(masks)
        together_v = None
        if together:
            masks = torch.zeros(1, 1, sae.d_sae, dtype=torch.bool, device=device)
            masks[0, 0, torch.tensor(lat)] = True
            together_v = run(masks)[0]
    return LatentAblation(lat, torch.tensor(values), base, together_v, how, sae.cfg.hook_name, bool(error),
                          "metric" if metric is not None else "mean |logit change|")


def _mean_acts(model: TransformerBridge, mean_tokens: Tensor, name: str, n_pos: int) -> Tensor:
    check_tokens(model, mean_tokens, "mean_tokens")
    if mean_tokens.shape[1] != n_pos:
        raise invalid("mean_tokens", f"token rows of the same length as tokens ({n_pos})",
                      f"shape {tuple(mean_tokens.shape)}")
    _, cache = model.run_with_cache(mean_tokens.to(next(model.parameters()).device), names_filter=[name])
    return cache[name]
