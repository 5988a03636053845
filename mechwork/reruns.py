"""Patched reruns on the fast engine's base run: only the rows a patch can change and the metric reads.

A group of patched copies of the base batch (:class:`mechwork.engine.BaseRun`)
is rerun from the patched layer up, for the positions from the earliest
patched one on; the earlier positions' keys and values come from the base run.
Three more rows are left out:

* **A residual-stream patch** (``resid_pre`` at a position ``p``) changes one
  row of its layer's input. That row's queries, keys and values are computed
  alone; every other position's come from the base run (:func:`rerun_resid`).
  The later positions' attention is then recomputed against the keys and
  values with row ``p`` replaced, and their MLPs rerun: they see the new
  column ``p`` of the attention pattern.
* **A position-local patch** (``z``, ``attn_out``, ``resid_mid``, ``mlp_post``,
  ``mlp_out``, ``q``: :data:`mechwork.engine.ROW_LOCAL`) changes only its own
  position in its layer, which is rerun for that position alone
  (:func:`rerun_rows`).
* **A metric that reads some positions only** (``rows``; see
  :func:`mechwork.analysis.metrics.positions_of`): in the last layer only those
  positions' queries, MLPs and logits are computed, and the positions before
  them give their keys and values only. The logits the metric does not read are
  the base run's. A cell whose earliest changed position is after every read
  one is not rerun at all (the patcher gives it the base run's value).

The arithmetic is :class:`~mechwork.engine.BaseRun`'s; the tests hold the
patching results to ``transformer_lens.patching``'s to 1e-5.

Example::

    >>> import mechwork, torch
    >>> from mechwork.engine import BaseRun
    >>> from mechwork.reruns import rerun_resid
    >>> model = mechwork.load("induction-2l")
    >>> toks = torch.randint(0, 64, (2, 10))
    >>> run, other = BaseRun(model, toks), BaseRun(model, toks.flip(1))
    >>> logits = rerun_resid(run, 1, [7], other.resid[1][:, 7])  # layer 1's residual stream at position 7
    >>> bool((logits[:, :7] == run.logits[:, :7]).all()), bool((logits[:, 7:] != run.logits[:, 7:]).any())
    (True, True)
"""

from __future__ import annotations

from collections.abc import Iterator
from typing import NamedTuple

import torch
from jaxtyping import Float
from torch import Tensor

from mechwork.engine import BaseRun, Site, expand

__all__ = ["Logits", "Partial", "per_copy", "rerun", "rerun_resid", "rerun_rows"]

Rows = list[int] | None  # the positions whose logits the metric reads (None: all)


def _tile(x: Tensor, n: int) -> Tensor:
    return x if x.shape[0] == n else x.repeat(n // x.shape[0], *([1] * (x.ndim - 1)))


def _attend(run: BaseRun, q: Tensor, k: Tensor, v: Tensor, at: Tensor | slice) -> Tensor:
    """``z`` ``[N, r, head, d_head]`` of queries ``q`` at positions ``at`` against keys/values from position 0."""
    return torch.matmul(run.pattern(q, k, at), v).transpose(1, 2)


def _finish(run: BaseRun, layer: int, x: Tensor, z: Tensor) -> Tensor:
    """The rest of layer ``layer`` after attention: ``x`` plus the attention output, plus the MLP's."""
    pre = f"layers.{layer}"
    x = x + run._linear(f"{pre}.attn.o", z.reshape(*z.shape[:2], -1))
    if not run.attn_only:
        post = run.act(run._linear(f"{pre}.mlp.fc_in", run._norm(f"{pre}.ln2", x)))
        x = x + run._linear(f"{pre}.mlp.fc_out", post)
    return x


def block(run: BaseRun, layer: int, x: Float[Tensor, "n s d"], p0: int, out: list[int] | None = None) -> Tensor:
    """Layer ``layer`` (no sites) for positions ``p0:`` of ``x``, earlier keys/values from the base run.

    ``out`` (positions relative to ``p0``, ascending): only those rows' outputs are computed, and keys and
    values only up to the last of them.
    """
    pre = f"layers.{layer}"
    m = x.shape[1] if out is None else out[-1] + 1
    a = run._norm(f"{pre}.ln1", x[:, :m])
    k, v = (_prefixed(base, new, p0) for base, new in zip(run.kv[layer], run.qkv(layer, a, "kv"), strict=True))
    if out is not None:
        a, x = a[:, out], x[:, out]
    q = run.qkv(layer, a, "q")[0].transpose(1, 2)
    at = slice(p0, p0 + m) if out is None else torch.tensor(out, device=x.device) + p0
    return _finish(run, layer, x, _attend(run, q, k, v, at))


def _prefixed(base: Tensor, new: Tensor, p0: int) -> Tensor:
    """Keys or values ``[N, head, p0 + m, d_head]``, contiguous: the base run's (``[B, head, P, d_head]``) at
    the first ``p0`` positions in every copy, then ``new`` (``[N, m, head, d_head]``)."""
    n, m, h, dh = new.shape
    out = new.new_empty(n, h, p0 + m, dh)
    out.view(n // base.shape[0], base.shape[0], h, p0 + m, dh)[..., :p0, :] = base[:, :, :p0]
    out[:, :, p0:] = new.transpose(1, 2)
    return out


def _read(rows: Rows, p0: int) -> list[int] | None:
    return None if rows is None else [r - p0 for r in rows if r >= p0]


def _up(run: BaseRun, layer: int, x: Tensor, p0: int, rows: Rows) -> Logits:
    """Logits from layer ``layer``'s output ``x`` (positions ``p0:``): the layers above, then
    :func:`_logits`."""
    last, out = run.n_layers - 1, _read(rows, p0)
    if out == []:  # nothing the metric reads can change
        return expand(run.logits, x.shape[0] // run.tokens.shape[0])
    for later in range(layer + 1, run.n_layers):
        x = block(run, later, x, p0, out if later == last else None)
    return _logits(run, x if out is None or layer < last else x[:, out], p0, out)


class Partial(NamedTuple):
    """The copies' logits at positions ``at`` only (``rows``: ``[N, len(at), vocab]``); the base run's elsewhere."""

    at: list[int]
    rows: Tensor


Logits = Tensor | Partial  # every copy's logits [N, P, vocab], or those at some positions


def per_copy(run: BaseRun, logits: Logits) -> Iterator[Tensor]:
    """Each copy's logits ``[B, P, vocab]`` in turn; of a :class:`Partial`, one buffer holding the base run's
    logits with the copy's rows written in (valid until the next copy's)."""
    b = run.tokens.shape[0]
    if isinstance(logits, Tensor):
        yield from logits.split(b)
        return
    buf = run.logits.clone()
    for rows in logits.rows.split(b):
        buf[:, logits.at] = rows
        yield buf


def _logits(run: BaseRun, x: Tensor, p0: int, out: list[int] | None) -> Logits:
    """Logits from the last layer's output ``x`` at positions ``p0:`` (``[N, P, vocab]``, the base run's
    before ``p0``), or at ``p0 + out`` only (a :class:`Partial`)."""
    if out is None:
        return torch.cat([_tile(run.logits[:, :p0], x.shape[0]), run.unembed(x)], dim=1)
    return Partial([p0 + r for r in out], run.unembed(x))


def rerun(run: BaseRun, layer: int, p0: int, site: Site, rows: Rows = None) -> Logits:
    """Logits ``[C*B, P, vocab]`` (with ``rows``: a :class:`Partial`) with ``site`` applied in ``layer``,
    recomputing positions ``p0:`` only.

    ``site`` tiles the batch out to the C copies where it patches; the positions before ``p0`` keep the base
    run's logits, and so do the positions ``rows`` leaves out.
    """
    with torch.no_grad():
        x, _ = run.block(layer, run.resid[layer][:, p0:], p0, site)
        return _up(run, layer, x, p0, rows)


def rerun_rows(run: BaseRun, layer: int, groups: list[tuple[int, int, Site]], rows: Rows = None) -> Logits:
    """Logits ``[C*B, P, vocab]`` (or a :class:`Partial`) for a site whose patch changes one position only in
    ``layer``.

    ``groups`` are ``(position, copies, site)``, in copy order. A patch of
    ``z``, ``attn_out``, ``resid_mid``, ``mlp_post``, ``mlp_out`` or ``q``
    at one position leaves that layer's other positions as they
    were (its keys and values come from the unpatched stream, everything after
    attention is per position), so ``layer`` is rerun for that position alone
    and the copies diverge from the base run from the next layer on. In the
    last layer only that position's logits are new.
    """
    b = run.tokens.shape[0]
    with torch.no_grad():
        new = [run.block(layer, run.resid[layer][:, p:p + 1], p, site)[0] for p, _, site in groups]
        starts = [p for p, n, _ in groups for _ in range(n)]
        last = layer + 1 == run.n_layers  # only the patched positions' logits change
        p0 = min(starts)
        x, c = expand(run.logits if last else run.resid[layer + 1][:, p0:], len(starts)), 0
        for (p, n, _), row in zip(groups, new, strict=True):
            if last:
                x[c * b:(c + n) * b, p] = run.unembed(_tile(row[:, 0], n * b))
            else:
                x[c * b:(c + n) * b, p - p0] = _tile(row[:, 0], n * b)
            c += n
        return x if last else _up(run, layer, x, p0, rows)


def rerun_resid(run: BaseRun, layer: int, positions: list[int], new: Float[Tensor, "cb d"],
                rows: Rows = None) -> Logits:
    """Logits ``[C*B, P, vocab]`` (or a :class:`Partial`) with ``resid_pre`` of ``layer`` at ``positions[c]`` set
    to copy c's rows of ``new`` (copy c: rows ``[c*B, (c+1)*B)``).

    Only the patched rows' queries, keys and values are computed; the other positions' come from the base run.
    """
    b, pre = run.tokens.shape[0], f"layers.{layer}"
    p0, n = min(positions), len(positions) * b
    with torch.no_grad():
        at = torch.tensor(positions, device=new.device).repeat_interleave(b)
        i = torch.arange(n, device=new.device)
        x = expand(run.resid[layer][:, p0:], len(positions))
        x[i, at - p0] = new
        a = run._norm(f"{pre}.ln1", new)
        q = expand(run.q[layer][:, :, p0:], len(positions))
        k, v = (expand(t, len(positions)) for t in run.kv[layer])
        q[i, :, at - p0], k[i, :, at], v[i, :, at] = run.qkv(layer, a)
        out = _read(rows, p0) if layer == run.n_layers - 1 else None
        if not out:  # every position (or none: then _up gives the base run's logits)
            return _up(run, layer, _finish(run, layer, x, _attend(run, q, k, v, slice(p0, None))), p0, rows)
        z = _attend(run, q[:, :, out], k, v, torch.tensor(out, device=x.device) + p0)
        return _logits(run, _finish(run, layer, x[:, out], z), p0, out)
