"""A functional forward for 1-layer modular-arithmetic models: only what the loss needs.

The loss of a modular-arithmetic model is read at the last position of
``[a, b, =]``. In a 1-layer model with no LayerNorm that logit depends on
``a`` and ``b`` only through per-token tables, so the expensive parts can be
computed once per *vocabulary entry* instead of once per *example*:

* the residual at positions 0 and 1 is ``W_E[tok] + W_pos[pos]``, so their keys
  and values are tables of ``d_vocab`` rows (not ``n`` rows);
* position 2 always holds ``=``, so its query, key and value are constants;
* the query at position 2 dotted with the key tables gives two score tables.

Per example only a 3-way softmax, a ``(n, heads, d_head)`` mix of value rows,
``W_O``, the MLP and the unembed remain; positions 0 and 1 never run through
the MLP. It reads the same :class:`torch.nn.Parameter` objects as the bridge
(from :func:`mechwork.models.weights`), so gradients land on the bridge's
weights and the bridge's own forward gives the same logits afterwards (a test
holds this to 1e-4).

Example::

    >>> from mechwork.models import build_model, preset, weights
    >>> from mechwork.fastpath import modadd_logits
    >>> pre = preset("modadd-113")
    >>> model = build_model(pre.model)
    >>> logits = modadd_logits(weights(model), pre.model, pre.task.tokens[:5])
    >>> tuple(logits.shape)
    (5, 113)
"""

from __future__ import annotations

import math
from collections.abc import Callable, Mapping
from typing import TYPE_CHECKING

import torch
import torch.nn.functional as F
from jaxtyping import Float, Int
from torch import Tensor

from mechwork.models import ToyConfig

if TYPE_CHECKING:  # pragma: no cover
    from mechwork.kit import Task

__all__ = ["ACTIVATIONS", "modadd_logits", "supports_fast_path"]

ACTIVATIONS: dict[str, Callable[[Tensor], Tensor]] = {  # every nonlinearity by name, mechwork's one table
    "relu": F.relu,
    "gelu": F.gelu,
    "gelu_new": lambda x: F.gelu(x, approximate="tanh"),
    "silu": F.silu,
    "tanh": torch.tanh,  # the study MLPs' (mechwork.studies.digits); models take mechwork.models.ACT_FNS
}


def supports_fast_path(cfg: ToyConfig, task: Task) -> bool:
    """True for 1-layer, LayerNorm-free models with an MLP on tasks whose inputs are ``[a, b, =]``.

    A task says so with ``fast_path = True`` (a class attribute: a constant last token, and the
    loss read at the last position only); no task type is named here.
    """
    return (
        bool(getattr(task, "fast_path", False))
        and cfg.n_layers == 1
        and cfg.normalization is None
        and not cfg.attn_only
        and cfg.n_ctx == 3
    )


def modadd_logits(
    w: Mapping[str, Tensor], cfg: ToyConfig, tokens: Int[Tensor, "batch 3"]
) -> Float[Tensor, "batch d_vocab_out"]:
    """Last-position logits of the model whose weights are ``w``.

    ``tokens[:, 2]`` must be one constant token (``=``).
    """
    H, dh = cfg.n_heads, cfg.d_head
    E, P = w["tok_embed.weight"], w["pos.weight"]
    pre = "layers.0."

    def lin(x: Tensor, name: str) -> Tensor:
        return F.linear(x, w[pre + name + ".weight"], w[pre + name + ".bias"])

    eq = tokens[0, 2]
    x01 = torch.stack([E + P[0], E + P[1]])  # (2, d_vocab, d_model)
    x2 = E[eq] + P[2]  # (d_model,)
    q2 = lin(x2, "attn.q").view(H, dh)
    k01 = lin(x01, "attn.k").view(2, -1, H, dh)
    v01 = lin(x01, "attn.v").view(2, -1, H, dh)
    k2 = lin(x2, "attn.k").view(H, dh)
    v2 = lin(x2, "attn.v").view(H, dh)
    scale = 1.0 / math.sqrt(dh)
    s01 = torch.einsum("svhe,he->svh", k01, q2) * scale  # (2, d_vocab, H)
    s2 = (k2 * q2).sum(-1) * scale  # (H,)

    # Rows are picked with one-hot matmuls, not indexing: the backward of indexing is a
    # multi-threaded index_add whose summation order (so the float result) varies run to
    # run, while a matmul's does not. It costs little: the tables have d_vocab rows.
    n, V = len(tokens), E.shape[0]
    oh_a = F.one_hot(tokens[:, 0], V).to(E.dtype)  # (n, d_vocab)
    oh_b = F.one_hot(tokens[:, 1], V).to(E.dtype)
    scores = torch.stack([oh_a @ s01[0], oh_b @ s01[1], s2.expand(n, H)], dim=-1)  # (n, H, 3)
    pattern = scores.softmax(dim=-1)
    if cfg.attn_rate < 1.0:  # constant attention mixed in (see models._add_attention_rate)
        pattern = cfg.attn_rate * pattern + (1 - cfg.attn_rate) / 3
    z = (
        pattern[..., 0:1] * (oh_a @ v01[0].reshape(V, H * dh)).view(n, H, dh)
        + pattern[..., 1:2] * (oh_b @ v01[1].reshape(V, H * dh)).view(n, H, dh)
        + pattern[..., 2:3] * v2
    )  # (n, H, dh)
    resid = x2 + lin(z.reshape(n, H * dh), "attn.o")
    post = ACTIVATIONS[cfg.act_fn](lin(resid, "mlp.fc_in"))
    resid = resid + lin(post, "mlp.fc_out")
    return F.linear(resid, w["head.weight"])
