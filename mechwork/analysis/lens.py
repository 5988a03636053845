"""The logit lens: what the model would predict if it stopped after each layer (and the arguments it shares
with :mod:`mechwork.analysis.logit`: prompts, target tokens, positions).

Every accumulated residual stream (before each layer, and the final one) is
read through the model's own final norm (its statistics recomputed for that
stream, as TransformerLens's ``apply_ln_to_stack(recompute_ln=True)`` does),
unembedding (``W_U``, ``b_U``) and post-unembedding step (a Gemma soft cap, a
logit scale), as TransformerLens's ``logit_lens`` reads it. :func:`logit_lens`
follows one target token per prompt and position through the layers: its logit, log-probability and
rank (0 = top-1; only strictly larger logits count, as in TransformerLens), and
records each layer's top-1 token. The default target at position ``t`` is the
prompt's next token ``t + 1``, and at the last position the model's own final
top-1 (also wherever the next token is no output of the model, such as an
input-only ``=`` token). The last row (``final_post``) is the model's own
output: a model for which it is not (a step the cache does not show) is
refused in one line rather than misread.

Example::

    >>> import mechwork, torch
    >>> from mechwork.analysis.lens import logit_lens
    >>> model = mechwork.load("induction-2l", device="cpu")
    >>> lens = logit_lens(model, torch.tensor([[5, 9, 3, 5, 9, 3]]))
    >>> lens.labels, tuple(lens.ranks.shape)
    (('0_pre', '1_pre', 'final_post'), (3, 1, 6))
    >>> int(lens.ranks[-1, 0, -1])  # the final top-1 is, by definition, rank 0 at the last position
    0
"""

from __future__ import annotations

import operator
from dataclasses import dataclass
from typing import TYPE_CHECKING, Any

import torch
from jaxtyping import Float, Int
from torch import Tensor

from mechwork.errors import ConfigError, invalid
from mechwork.hooks import check_eval
from mechwork.models import output_transform
from mechwork.prompts import check_model, has_tokenizer
from mechwork.results import Result

if TYPE_CHECKING:  # pragma: no cover
    import pandas as pd
    from transformer_lens.model_bridge import TransformerBridge

__all__ = ["VALUES", "LogitLens", "as_tokens", "check_exact", "check_readout", "logit_lens", "position",
           "token_ids"]

VALUES = ("log_prob", "logit", "rank")


# -- arguments (the logit lens's and direct logit attribution's) --------------------------------------------------
def as_tokens(model: TransformerBridge, tokens: Any) -> tuple[Int[Tensor, "batch pos"], list[list[str]]]:
    """``tokens`` (a ``[batch, pos]`` or ``[pos]`` id tensor, a string, strings, or lists of ids) as one batch
    on the model's device, with each prompt's token labels (:func:`mechwork.prompts.tokenize`)."""
    from mechwork.prompts import tokenize

    prompts = tokenize(model, tokens)
    return prompts.batch(), [list(row) for row in prompts.labels]


def token_ids(model: TransformerBridge, value: Any, batch: int, name: str) -> Int[Tensor, " batch"]:
    """An answer argument (an id, a single-token string, a ``[batch]`` / 0-d tensor, or a list of ids or
    one-token strings, one per prompt) as ``[batch]`` ids."""
    d_out = int(model.W_U.shape[-1])
    if isinstance(value, (list, tuple)) and len(value) in (1, batch) and all(
            isinstance(v, str) or _integer(v) is not None for v in value):
        out = torch.cat([token_ids(model, v, 1, name) for v in value]).expand(batch)
    elif isinstance(value, str):
        if not has_tokenizer(model):
            raise ConfigError(f"this model has no tokenizer: give '{name}' as a token id (got {value!r})")
        ids = model.to_tokens(value, prepend_bos=False, truncate=False, move_to_device=False)[0]
        if ids.numel() != 1:
            toks = [str(t) for t in model.to_str_tokens(ids)] if ids.numel() else []
            raise ConfigError(f"'{name}' must be a string that is one token (got {value!r}: {ids.numel()} tokens"
                              f"{', ' + repr(toks) if toks else ''}); give one token, or its id")
        out = ids.to(torch.int64).expand(batch)
    elif (one := _integer(value)) is not None:
        out = torch.full((batch,), one, dtype=torch.int64)
    elif isinstance(value, Tensor) and not value.is_floating_point() and value.dtype != torch.bool \
            and value.numel() in (1, batch) and sum(n > 1 for n in value.shape) <= 1:  # [batch], [batch, 1], 0-d
        out = value.detach().reshape(-1).to(torch.int64).cpu().expand(batch)
    else:
        got = f"shape {tuple(value.shape)}, {value.dtype}" if isinstance(value, Tensor) else value
        raise invalid(name, f"a token id, a one-token string, or {batch} of them (a list or a [{batch}] integer "
                            "tensor, one per prompt)", got)
    bad = (out < 0) | (out >= d_out)
    if bool(bad.any()):
        raise invalid(name, f"a token id in [0, {d_out - 1}] (the model's output vocabulary)", int(out[bad][0]))
    return out.clone()


def _integer(value: Any) -> int | None:
    """``value`` as an int when it is one (a Python or numpy integer; not a bool, a float or a tensor)."""
    if isinstance(value, (bool, Tensor, float)) or type(value).__name__ == "bool_":
        return None
    try:
        return operator.index(value)
    except TypeError:
        return None


def check_readout(
    model: TransformerBridge, operation: str, readout: bool = True, linear: bool = True, split: bool = True
) -> None:
    """Refuse, before running, a model whose logits are not ``final norm -> W_U + b_U`` (then a scale, or with
    ``linear=False`` any elementwise step) of a residual stream its components sum to (with ``split``: hybrid
    blocks; a task head, soft-capping: :func:`mechwork.models.readout_problem`)."""
    from mechwork.models import readout_problem

    problem = readout_problem(model, readout, linear, split)
    if problem is not None and not readout:
        raise ConfigError(f"{operation} splits the residual stream into attention and MLP outputs, and this "
                          f"model's is not: {problem}")
    if problem is not None:
        raise ConfigError(f"{operation} reads the logits as final norm -> W_U + b_U of the residual stream, and "
                          f"this model does not: {problem}")


_RTOL = {torch.float16: 4e-3, torch.bfloat16: 3e-2}
_SCALES = ("logits_scaling", "logit_scale", "embedding_multiplier", "residual_multiplier", "attention_multiplier")


def check_exact(operation: str, got: Tensor, own: Tensor, size: Tensor, what: str, model: TransformerBridge) -> None:
    """Refuse a result whose parts do not add up to the model's own value (``got`` against ``own``, to 1e-4 of
    ``1 + size``; 4e-3 in float16 and 3e-2 in bfloat16, which round every part): a model whose stream or readout
    has a step the analysis does not model (a logit scale, an embedding scale or norm) would otherwise be
    attributed wrong without a word."""
    err = (got.float() - own.float()).abs()
    tol = _RTOL.get(model.W_U.dtype, 1e-4) * (1 + size.float().abs())
    if bool((err > tol).any()):
        i = int((err - tol).flatten().argmax())
        scales = [f"{k} {float(v):g}" for k in _SCALES
                  if isinstance(v := getattr(model.cfg, k, None), (int, float)) and float(v) not in (0.0, 1.0)]
        cause = f" (its config has {', '.join(scales)})" if scales else ""
        raise ConfigError(f"{operation} cannot split this model exactly: the parts sum to "
                          f"{float(got.flatten()[i]):.5g} but {what} is {float(own.flatten()[i]):.5g}; its "
                          f"residual stream or readout has a step TransformerLens's cache does not show{cause}")


def position(pos: Any, n_pos: int) -> int:
    """``pos`` (an integer, or a 0-d integer tensor; negative counts from the end) as an index into ``n_pos``."""
    p = None
    if not isinstance(pos, bool) and not (isinstance(pos, Tensor) and (
            pos.is_floating_point() or pos.dtype == torch.bool or pos.numel() != 1)):
        try:
            p = operator.index(pos)
        except TypeError:
            p = None
    if p is None or not -n_pos <= p < n_pos:
        raise invalid("pos", f"a position in [{-n_pos}, {n_pos - 1}] (the prompts have {n_pos} tokens)", pos)
    return p % n_pos


@dataclass(frozen=True)
class LogitLens(Result):
    """The target token's logit, log-probability and rank after each layer, at every position of every prompt."""

    logits: Float[Tensor, "layer batch pos"]
    log_probs: Float[Tensor, "layer batch pos"]
    ranks: Int[Tensor, "layer batch pos"]
    top: Int[Tensor, "layer batch pos"]  # each layer's top-1 token
    targets: Int[Tensor, "batch pos"]
    labels: tuple[str, ...]  # the stack entries: "0_pre", "1_pre", ..., "final_post"
    tokens: tuple[tuple[str, ...], ...]  # each prompt's token labels
    target_labels: tuple[tuple[str, ...], ...]  # the target's label at each position
    top_labels: tuple[tuple[tuple[str, ...], ...], ...]  # [layer][prompt][pos] label of each layer's top-1
    own_last: bool = False  # the default targets: the next token, and the output's own top-1 at the last position

    def first_top(self) -> Int[Tensor, "batch pos"]:
        """At each position, the first layer from which on the target stays top-1 (``len(labels)``: never)."""
        n = len(self.labels)
        at_top = self.ranks == 0
        stays = at_top.flip(0).cumprod(0).flip(0).bool()  # top-1 here and at every later layer
        first = torch.where(stays, torch.arange(n)[:, None, None], torch.full_like(self.ranks, n))
        return first.min(0).values

    def summary(self) -> str:
        n, b, t = self.ranks.shape
        cut = t - 1 if self.own_last and t > 1 else t  # the last position's default target is the output's top-1
        if self.own_last and t == 1:  # one token: its only target is the output's own top-1
            return (f"logit lens on {b} prompt(s) of 1 token through {n} residual streams: the target is the "
                    f"output's own top-1; its mean rank goes from {float(self.ranks[0].float().mean()):.3g} at "
                    f"{self.labels[0]} to 0 at {self.labels[-1]}")
        rank, lp = self.ranks[:, :, :cut].float().mean((1, 2)), self.log_probs[:, :, :cut].float().mean((1, 2))
        hits, jump = int((self.ranks[-1, :, :cut] == 0).sum()), lp[1:] - lp[:-1]
        k, first, last = int(jump.argmax()), self.labels[0], self.labels[-1]
        left = " (the last position, whose target is the output's own top-1, left out)" if cut < t else ""
        return (f"logit lens on {b} prompt(s) of {t} tokens through {n} residual streams ({first} to {last}): the "
                f"{'next' if self.own_last else 'target'} token is the model's top-1 at {hits} of {b * cut} "
                f"positions{left}; its mean rank goes from {float(rank[0]):.3g} at {first} to {float(rank[-1]):.3g} "
                f"at {last}, its mean log-probability from {float(lp[0]):.3g} to {float(lp[-1]):.3g}; the largest "
                f"rise is into {self.labels[k + 1]} ({float(jump[k]):+.3g})")

    def to_frame(self) -> pd.DataFrame:
        import pandas as pd

        n, b, t = self.ranks.shape
        rows = [(self.labels[i], j, p, self.tokens[j][p], self.target_labels[j][p], float(self.logits[i, j, p]),
                 float(self.log_probs[i, j, p]), int(self.ranks[i, j, p]), self.top_labels[i][j][p])
                for i in range(n) for j in range(b) for p in range(t)]
        return pd.DataFrame(rows, columns=["layer", "prompt", "pos", "token", "target", "logit", "log_prob", "rank",
                                           "top"])

    def figure(self, i: int = 0, value: str = "log_prob") -> Any:
        """A heatmap, stack entry x position, of the target's ``value`` (log_prob, logit or rank) on prompt ``i``."""
        import plotly.graph_objects as go

        b = self.ranks.shape[1]
        if isinstance(i, bool) or not isinstance(i, int) or not 0 <= i < b:
            raise invalid("i", f"a prompt index in [0, {b - 1}]", i)
        if value not in VALUES:
            raise invalid("value", f"one of {', '.join(VALUES)}", value)
        z = {"log_prob": self.log_probs, "logit": self.logits, "rank": self.ranks}[value][:, i].float()
        x = [f"{p}:{tok}" for p, tok in enumerate(self.tokens[i])]
        text = [[f"target {self.target_labels[i][p]!r}<br>top-1 {self.top_labels[la][i][p]!r}"
                 for p in range(z.shape[1])] for la in range(z.shape[0])]
        heat = go.Heatmap(z=z.tolist(), x=x, y=list(self.labels), text=text, colorbar={"title": {"text": value}},
                          colorscale="Viridis" if value != "rank" else "Viridis_r",
                          hovertemplate="%{y} at %{x}<br>%{text}<br>" + value + " %{z:.3g}<extra></extra>")
        return go.Figure(heat).update_layout(
            title=f"Logit lens, prompt {i}: the target token's {value.replace('_', '-')} after each layer",
            xaxis_title="position: token (the target is the next token)", yaxis_title="residual stream",
            height=160 + 40 * z.shape[0])


def _targets(model: TransformerBridge, targets: Any, batch: Tensor, final_top: Tensor) -> Tensor:
    """``[batch, pos]`` target ids: the next token, and the final top-1 at the last position, by default (and
    wherever the next token is no output of the model: an input-only token, id >= ``d_vocab_out``)."""
    b, t = batch.shape
    if targets is None:
        nxt, top = batch[:, 1:].cpu(), final_top.cpu()
        nxt = torch.where(nxt < int(model.W_U.shape[-1]), nxt, top[:, :-1])
        return torch.cat([nxt, top[:, -1:]], dim=1)
    if isinstance(targets, (list, tuple)) and targets and all(isinstance(r, (list, tuple, Tensor)) for r in targets):
        try:  # one row of ids per prompt
            targets = torch.as_tensor([list(map(int, r)) for r in targets])
        except (TypeError, ValueError) as e:
            raise invalid("targets", f"a [{b}, {t}] list of token ids (one per prompt and position)", e) from None
    if isinstance(targets, Tensor) and targets.dim() == 2 and tuple(targets.shape) != (b, 1):
        if tuple(targets.shape) != (b, t):
            raise invalid("targets", f"a [{b}, {t}] id tensor (one target per prompt and position)",
                          f"shape {tuple(targets.shape)}")
        cols = [token_ids(model, targets[:, p], b, "targets") for p in range(t)]
        return torch.stack(cols, dim=1)
    return token_ids(model, targets, b, "targets")[:, None].expand(b, t).clone()


def _label(model: TransformerBridge, ids: Tensor) -> tuple[str, ...]:
    if has_tokenizer(model):
        return tuple(str(model.to_string(i[None])) for i in ids)
    return tuple(str(int(i)) for i in ids)


@torch.no_grad()
def logit_lens(model: TransformerBridge, tokens: Any, *, targets: Any = None) -> LogitLens:
    """The logit lens on ``tokens`` (ids or, with a tokenizer, strings) for one target per prompt and position.

    ``targets``: None (next token; the model's final top-1 at the last position), one id or one-token string
    for every position, a ``[batch]`` / ``[batch, 1]`` tensor or a list (one per prompt), or a ``[batch, pos]``
    tensor or list of lists (one per prompt and position).
    """
    check_model(model, "logit_lens")
    check_eval(model, "logit_lens")
    check_readout(model, "the logit lens", linear=False, split=False)
    batch, labels = as_tokens(model, tokens)
    n_layers = int(model.cfg.n_layers)
    names = {f"blocks.{la}.hook_resid_pre" for la in range(n_layers)} | {f"blocks.{n_layers - 1}.hook_resid_post"}
    logits, cache = model.run_with_cache(batch, names_filter=lambda n: n in names)
    target = _targets(model, targets, batch, logits.argmax(-1))
    stack, entries = cache.accumulated_resid(apply_ln=True, return_labels=True)  # layer batch pos d_model
    W_U, b_U = model.W_U, getattr(model, "b_U", None)
    idx = target.to(W_U.device)[..., None]
    out: dict[str, list[Tensor]] = {"logit": [], "log_prob": [], "rank": [], "top": []}
    for layer in stack:
        lg = output_transform(model, layer @ W_U + (b_U if isinstance(b_U, Tensor) else 0.0))
        mine = lg.gather(-1, idx)
        out["logit"].append(mine[..., 0])
        out["log_prob"].append(torch.log_softmax(lg.float(), -1).gather(-1, idx)[..., 0])
        out["rank"].append((lg > mine).sum(-1))
        out["top"].append(lg.argmax(-1))
    got = {k: torch.stack(v).cpu() for k, v in out.items()}
    own = logits.gather(-1, idx.to(logits.device))[..., 0].detach().cpu()
    check_exact("the logit lens", got["logit"][-1], own, own, "the model's own logit", model)
    tops = tuple(tuple(_label(model, row) for row in layer) for layer in got["top"])
    return LogitLens(got["logit"].float(), got["log_prob"], got["rank"], got["top"], target,
                     tuple(entries), tuple(tuple(r) for r in labels), tuple(_label(model, row) for row in target),
                     tops, targets is None)
