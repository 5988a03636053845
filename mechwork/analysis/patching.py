"""Activation patching: one generic patcher, many cells per forward pass.

``patch(model, clean, corrupted, metric, site=..., by=...)`` patches one *cell*
at a time -- a layer, a (layer, position), a head, a (layer, position, head) or
a neuron -- and records ``metric`` of the patched run. TransformerLens runs one
forward pass per cell. Here each cell gets its own copy of the base batch: the
copies are stacked along the batch axis, a hook at every involved layer writes
each copy's cell from the source run, and one forward pass evaluates a whole
chunk of cells. Chunks are sized by a memory budget (``memory_mb``). A cell
whose source activation is the base run's own (a position the corruption left
alone) is not rerun: its value is the base run's metric. The
numbers are TransformerLens's (the tests compare them to
``transformer_lens.patching``, run with gradients enabled, to 1e-5); only the
speed differs. The result is a :class:`~mechwork.analysis.patchresult.PatchResult`.

* **Sites**: ``resid_pre``, ``resid_mid``, ``attn_out``, ``mlp_out`` (vectors at
  a position); ``z``, ``q``, ``k``, ``v`` (per head); ``pattern`` (per head,
  by destination position, or by entry); ``mlp_post`` (per neuron). Note that in
  TransformerLens 4.3's bridge ``hook_resid_mid`` is the MLP's input
  (``ln2.hook_in``): mechwork's patched ``resid_mid`` reaches the MLP's input
  only, not the residual sum after it. TransformerLens's
  ``get_act_patch_resid_mid`` gives the same numbers with gradients enabled;
  under ``torch.no_grad()`` its patch also reaches the residual stream, and
  the numbers differ (patch ``attn_out``, or the next layer's ``resid_pre``,
  to move the residual stream itself).
* **Site** ``sae``: an SAE's latents, ``by="latent"`` or ``"latent_pos"``, with
  ``sae=`` (and ``latents=``, a subset): the SAE is spliced in at its hook
  (:mod:`mechwork.analysis.saehook`) and the hook path runs
  (:mod:`mechwork.analysis.saepatch`). Inside ``saehook.spliced(...)`` every site
  runs on the hook path, since the fast engine would bypass the SAE.
* **by**: ``layer`` (all positions), ``layer_pos``, ``head`` (all positions),
  ``head_pos``, ``neuron`` (all positions), ``head_dest_src`` (``pattern`` only:
  one attention-pattern entry per cell; ``positions`` restricts both). Results are
  shaped by :data:`DIMS`: ``head_pos`` is ``[layer, pos, head]`` and ``head_dest_src``
  ``[layer, head, dest, src]``, as in TransformerLens.
* **direction**: ``denoising`` runs the corrupted input and patches in clean
  activations (TransformerLens's convention); ``noising`` runs the clean input
  and patches in corrupted ones.
* **metric**: logits ``[batch, pos, vocab]`` to a scalar, or to a ``[batch]``
  vector (then per-example values are kept and the mean reported). Helpers
  are in :mod:`mechwork.analysis.metrics`.
* **engine**: native toy models (:func:`mechwork.engine.supports`) run on
  :mod:`mechwork.engine`, which reruns only the layers and positions a patch
  can change (:mod:`mechwork.reruns`; with a metric that declares the positions
  it reads, :class:`mechwork.analysis.metrics.Reads`, the last layer and the
  logits at those positions only); any other bridge (a Hugging Face model, rotary, RMSNorm, a gated
  MLP) runs the generic hook path, whole forward passes of the bridge.
  ``engine=False`` forces the hook path. ``PatchResult.engine`` says which ran
  (``"fast"`` or ``"hooks"``); the summary and the figure title name it.
* The model must be in eval mode: a model in training mode is refused with a
  clear error (dropout would make patching noisy; TransformerLens refuses too).

Example::

    >>> import mechwork
    >>> from mechwork.analysis.metrics import logit_diff
    >>> from mechwork.analysis.patching import patch
    >>> model = mechwork.load("modadd-113")
    >>> toks = mechwork.preset("modadd-113").task.tokens
    >>> clean, corrupted = toks[[5, 300]], toks[[6, 301]]
    >>> res = patch(model, clean, corrupted, logit_diff((clean[:, 0] + clean[:, 1]) % 113,
    ...             (corrupted[:, 0] + corrupted[:, 1]) % 113), site="resid_pre", by="layer_pos")
    >>> tuple(res.values.shape), res.dims, res.engine
    ((1, 3), ('layer', 'pos'), 'fast')
"""

from __future__ import annotations

import itertools
from collections import defaultdict
from collections.abc import Callable, Sequence
from typing import TYPE_CHECKING, Any, no_type_check

import torch
from torch import Tensor

from mechwork.analysis.checks import (
    check_head_pairs,
    check_inputs,
    check_pairs,
    check_site,
    check_tokens,
    evaluate_metric,
    pick_coords,
    prepare,
)
from mechwork.analysis.metrics import positions_of
from mechwork.analysis.patchresult import ENGINES, NEGLIGIBLE_GAP, PatchResult
from mechwork.engine import ROW_LOCAL, BaseRun, Site, expand, supports
from mechwork.hooks import BY, DIMS, SITES, Hooks, hook_name
from mechwork.limits import check_fits, finite_positive, patch_bytes
from mechwork.reruns import per_copy, rerun, rerun_resid, rerun_rows

if TYPE_CHECKING:  # pragma: no cover
    from transformer_lens.model_bridge import TransformerBridge

__all__ = ["BY", "DIMS", "ENGINES", "NEGLIGIBLE_GAP", "SITES", "PatchResult", "check_head_pairs", "check_inputs",
           "check_pairs", "check_site", "check_tokens", "evaluate_metric", "hook_name", "patch", "pick_coords",
           "prepare"]


def _setter(kind: str, by: str) -> Callable[[Tensor, slice, tuple[int, ...], Tensor, int], Any]:
    """Writes one cell of the source activation into one copy's slice of the batch.

    ``act`` may hold only positions ``p0:`` (the engine's suffix); ``src`` holds all of them.
    """
    if by == "layer":
        return lambda act, sl, cell, src, p0: act[sl].copy_(src[:, p0:])
    if kind in ("pos", "neuron") and by == "layer_pos":
        return lambda act, sl, cell, src, p0: act[sl, cell[1] - p0].copy_(src[:, cell[1]])
    if kind == "neuron":  # by neuron: (layer, neuron), all positions
        return lambda act, sl, cell, src, p0: act[sl, :, cell[1]].copy_(src[:, p0:, cell[1]])
    if kind == "head":  # activations [batch, pos, head, d_head]
        if by == "head":
            return lambda act, sl, cell, src, p0: act[sl, :, cell[1]].copy_(src[:, p0:, cell[1]])
        return lambda act, sl, cell, src, p0: act[sl, cell[1] - p0, cell[2]].copy_(src[:, cell[1], cell[2]])
    # pattern [batch, head, dest, src]; head_pos cells are (layer, dest_pos, head)
    if by == "head_dest_src":  # cells (layer, head, dest, src)
        return lambda act, sl, cell, src, p0: act[sl, cell[1], cell[2] - p0, cell[3]].copy_(src[:, cell[1], cell[2],
                                                                                                   cell[3]])
    if by == "head":
        return lambda act, sl, cell, src, p0: act[sl, cell[1]].copy_(src[:, cell[1], p0:])
    # a destination row rerun alone holds the sources up to it only; the later ones are masked (zero) in both runs
    return lambda act, sl, cell, src, p0: act[sl, cell[2], cell[1] - p0].copy_(src[:, cell[2], cell[1],
                                                                                  :act.shape[-1]])


def _getter(kind: str, by: str) -> Callable[[Tensor, tuple[int, ...]], Tensor]:
    """One cell of a whole activation (every batch row): what :func:`_setter` copies from the source."""
    if by == "layer":
        return lambda t, cell: t
    if kind in ("pos", "neuron") and by == "layer_pos":
        return lambda t, cell: t[:, cell[1]]
    if kind in ("neuron", "head") and by in ("neuron", "head"):
        return lambda t, cell: t[:, :, cell[1]]
    if kind == "head":
        return lambda t, cell: t[:, cell[1], cell[2]]
    if by == "head_dest_src":
        return lambda t, cell: t[:, cell[1], cell[2], cell[3]]
    if by == "head":
        return lambda t, cell: t[:, cell[1]]
    return lambda t, cell: t[:, cell[2], cell[1]]


def _position(by: str) -> Callable[[tuple[int, ...]], int] | None:
    """The (destination) position a cell patches, or None when it patches every position."""
    if by in ("layer_pos", "head_pos"):
        return lambda cell: cell[1]
    if by == "head_dest_src":
        return lambda cell: cell[2]
    return None


def _chunk(model: TransformerBridge, batch: int, n_pos: int, memory_mb: float) -> int:
    """Copies per forward pass: a generous estimate of one copy's live activations, against the budget."""
    cfg = model.cfg
    floats = n_pos * (int(cfg.n_layers) * (16 * int(cfg.d_model) + 4 * int(cfg.n_heads) * n_pos
                                            + 3 * int(cfg.d_mlp or 0)) + 3 * int(cfg.d_vocab_out))
    return max(1, int(memory_mb * 2**20 // (4 * floats * batch)))


@no_type_check  # validates its own arguments, with one-line messages
@torch.no_grad()
def patch(
    model: TransformerBridge,
    clean: Tensor,
    corrupted: Tensor,
    metric: Callable[[Tensor], Any],
    *,
    site: str = "resid_pre",
    by: str | None = None,  # default: "layer_pos"; for site "sae", "latent"
    direction: str = "denoising",
    layers: Sequence[int] | None = None,
    positions: Sequence[int] | None = None,
    heads: Sequence[int] | None = None,
    neurons: Sequence[int] | None = None,
    memory_mb: float = 512.0,
    engine: bool = True,
    sae: Any = None,  # site "sae": the SAE whose latents are patched
    latents: Sequence[int] | None = None,  # site "sae": a subset of the latents
) -> PatchResult:
    """Patch every cell of ``site`` grouped ``by`` (optionally only some layers/positions/heads/neurons).

    Refuses, before running anything, a sweep whose estimated memory
    (:func:`mechwork.limits.patch_bytes`) exceeds the machine's available memory.
    Site ``sae`` patches ``sae``'s latents (``latents``: a subset): :mod:`mechwork.analysis.saepatch`.
    """
    memory_mb = finite_positive("memory_mb", memory_mb)
    by = by if by is not None else "latent" if site == "sae" else "layer_pos"
    if site == "sae" or sae is not None or latents is not None:
        from mechwork.analysis.saepatch import patch_latents, sae_site_args

        return patch_latents(model, clean, corrupted, metric, **sae_site_args(site, by, sae, latents, locals()))
    pairs = by == "head_dest_src"  # coordinates picked as for head_pos; its positions serve dest and src
    if pairs:
        check_site(model, site, by)
    dims, coords = prepare(model, clean, corrupted, site, "head_pos" if pairs else by, direction, "patching",
                           layers=layers, positions=positions, heads=heads, neurons=neurons)
    if pairs:
        dims, coords = DIMS[by], {"layer": coords["layer"], "head": coords["head"], "dest": coords["pos"],
                                  "src": coords["pos"]}
    cfg = {k: getattr(model.cfg, k, None) for k in ("n_layers", "d_model", "n_heads", "d_head", "d_vocab",
                                                    "d_vocab_out", "n_ctx")}
    cfg["d_mlp"] = None if getattr(model.cfg, "attn_only", False) else getattr(model.cfg, "d_mlp", None)
    check_fits(f"patching {clean.shape[0]:,} prompts of {clean.shape[1]} tokens",
               patch_bytes(cfg, clean.shape[0], clean.shape[1], memory_mb))

    device = next(model.parameters()).device
    clean, corrupted = clean.to(device), corrupted.to(device)
    base, source = (corrupted, clean) if direction == "denoising" else (clean, corrupted)
    b = clean.shape[0]
    cells = list(itertools.product(*coords.values()))
    use_engine = engine and supports(model) and not getattr(model, "spliced_hooks", ())  # SAEs live in hooks
    base_run, (src, src_logits), (base_acts, base_logits) = _unpatched(model, base, source, site, coords["layer"],
                                                                        use_engine)
    clean_logits, corrupt_logits = (src_logits, base_logits)[:: 1 if base is corrupted else -1]
    clean_v = evaluate_metric(metric, clean_logits, b)
    corrupt_v = evaluate_metric(metric, corrupt_logits, b)
    per_example = clean_v.ndim == 1
    values = torch.empty(len(cells), b) if per_example else torch.empty(len(cells))
    # a cell whose source is the base run's own patches nothing; on the engine, neither does one after every read
    get, pos_of = _getter(SITES[site][1], by), _position(by)
    reads = positions_of(metric, clean.shape[1]) if use_engine else None
    same = [torch.equal(get(src[c[0]], c), get(base_acts[c[0]], c))
            or (reads is not None and pos_of is not None and pos_of(c) > reads[-1]) for c in cells]
    values[torch.tensor([i for i, s in enumerate(same) if s], dtype=torch.long)] = \
        corrupt_v if base is corrupted else clean_v
    todo = [i for i, s in enumerate(same) if not s]
    setter = _setter(SITES[site][1], by)
    cap = _chunk(model, b, clean.shape[1], memory_mb)
    if use_engine:
        assert base_run is not None
        _patch_engine(base_run, site, cells, todo, pos_of, src, setter, metric, values, b, cap, reads)
    else:
        _patch_hooks(model, base, site, cells, todo, src, setter, metric, values, b,
                     min(cap, _hook_copies(model, b, clean.shape[1])))
    shape = tuple(len(v) for v in coords.values())
    per = values.reshape(*shape, b) if per_example else None
    vals = per.mean(-1) if per is not None else values.reshape(shape)
    return PatchResult(vals, dims, coords, site, by, direction, float(clean_v.mean()), float(corrupt_v.mean()), per,
                       engine="fast" if use_engine else "hooks")


Cell = tuple[int, ...]
Run = tuple[dict[int, Tensor], Tensor]  # a run's activations at the site, by layer; its logits


def _unpatched(model: TransformerBridge, base: Tensor, source: Tensor, site: str, layers: list[int],
               use_engine: bool) -> tuple[BaseRun | None, Run, Run]:
    """The source and base runs, each with its activations at ``site`` in ``layers``; the engine's base run."""
    if use_engine:
        base_run, src_run = BaseRun(model, base, record={site}), BaseRun(model, source, record={site})
        return (base_run, ({la: src_run.recorded[(site, la)] for la in layers}, src_run.logits),
                ({la: base_run.recorded[(site, la)] for la in layers}, base_run.logits))
    names = {hook_name(site, layer): layer for layer in layers}
    runs = []
    for tokens in (source, base):
        logits, cache = model.run_with_cache(tokens, names_filter=lambda n: n in names)
        runs.append(({la: cache[n] for n, la in names.items()}, logits))
    return None, runs[0], runs[1]


Setter = Callable[[Tensor, slice, Cell, Tensor, int], Any]


def _patch_hooks(model: TransformerBridge, base: Tensor, site: str, cells: list[Cell], todo: list[int],
                 src: dict[int, Tensor], setter: Setter, metric: Callable[[Tensor], Any], values: Tensor, b: int,
                 cap: int) -> None:
    """Any bridge model: copies stacked on the batch, one hook per layer, whole forward passes."""
    for start in range(0, len(todo), cap):
        part = todo[start:start + cap]
        per_layer: dict[int, list[tuple[int, Cell]]] = defaultdict(list)
        for c, i in enumerate(part):
            per_layer[cells[i][0]].append((c, cells[i]))

        def make_hook(todo: list[tuple[int, Cell]], s: Tensor) -> Callable[..., Tensor]:
            def hook(act: Tensor, hook: Any = None) -> Tensor:
                act = act.clone()  # as TransformerLens does: the bridge may keep using the unpatched tensor
                for c, cell in todo:
                    setter(act, slice(c * b, (c + 1) * b), cell, s, 0)
                return act

            return hook

        hooks: Hooks = [(hook_name(site, layer), make_hook(cs, src[layer])) for layer, cs in per_layer.items()]
        logits = model.run_with_hooks(base.repeat(len(part), 1), fwd_hooks=hooks)
        for c, i in enumerate(part):
            values[i] = evaluate_metric(metric, logits[c * b:(c + 1) * b], b)


# floats of one layer's largest activations (residual, MLP, attention scores) per hook-path forward: more copies
# per pass amortise the bridge's per-call cost on small models, fewer keep a big model's activations in cache
HOOK_FLOATS = 1 << 20


def _hook_copies(model: TransformerBridge, batch: int, n_pos: int) -> int:
    cfg = model.cfg
    per_copy = batch * n_pos * (int(cfg.d_model) + int(cfg.d_mlp or 0) + int(cfg.n_heads) * n_pos)
    return max(1, HOOK_FLOATS // per_copy)


# floats of one layer's activations and the logits per engine pass (rows x (d_model + d_mlp + n_heads x positions
# + d_vocab_out)), and at most MAX_ROWS token rows: larger passes cost less per-pass overhead but recompute more
# positions for the later copies and leave the cache (tuned: about 900 token rows on d_model 256 with 128
# positions, 1,900 on a d_model-64 GPT-2 with 64 positions and a vocabulary of 512, 2,000 on induction-2l)
TARGET_FLOATS, MAX_ROWS = 1 << 21, 2048


def _target_rows(run: BaseRun) -> int:
    w = run.w
    width = w["tok_embed.weight"].shape[1] + run.n_heads * run.tokens.shape[1] + w["head.weight"].shape[0]
    if not run.attn_only:
        width += w["layers.0.mlp.fc_in.weight"].shape[0]
    return max(1, min(MAX_ROWS, TARGET_FLOATS // width))


def _patch_engine(run: BaseRun, site: str, cells: list[Cell], todo: list[int],
                  pos_of: Callable[[Cell], int] | None, src: dict[int, Tensor], setter: Setter,
                  metric: Callable[[Tensor], Any], values: Tensor, b: int, cap: int, reads: list[int] | None) -> None:
    """Native toy models: rerun only the patched layer and up, and only positions from the patch on.

    A site that changes only its own position in its layer (:data:`mechwork.engine.ROW_LOCAL`, by a position)
    reruns that layer for that position alone (:func:`mechwork.reruns.rerun_rows`); ``resid_pre`` by position
    computes the patched rows' queries, keys and values alone (:func:`mechwork.reruns.rerun_resid`); in the last
    layer only the positions the metric ``reads`` are computed.
    """
    n_pos, last, target = run.tokens.shape[1], run.n_layers - 1, _target_rows(run)
    rows = pos_of is not None and site in ROW_LOCAL

    def pos(i: int) -> int:
        return pos_of(cells[i]) if pos_of is not None else 0

    order = sorted(todo, key=lambda i: (cells[i][0], -pos(i)))
    chunks: list[list[int]] = []
    for i in order:
        layer = cells[i][0]
        width = 1 if rows and layer == last else n_pos - pos(i)  # positions each copy recomputes
        prev = chunks[-1] if chunks else None
        if prev is not None and cells[prev[0]][0] == layer and len(prev) < cap \
                and (len(prev) + 1) * b * width <= target:
            prev.append(i)
        else:
            chunks.append([i])

    def at_site(chunk: list[int], layer: int, p0: int) -> Site:
        def fn(name: str, act: Tensor) -> Tensor:
            if name != site:
                return act
            act = expand(act, len(chunk))
            for c, i in enumerate(chunk):
                setter(act, slice(c * b, (c + 1) * b), cells[i], src[layer], p0)
            return act

        return fn

    for chunk in chunks:
        layer = cells[chunk[0]][0]
        if rows:
            groups = [list(g) for _, g in itertools.groupby(chunk, key=pos)]
            logits = rerun_rows(run, layer, [(pos(g[0]), len(g), at_site(g, layer, pos(g[0]))) for g in groups],
                                reads)
        elif site == "resid_pre" and pos_of is not None:
            logits = rerun_resid(run, layer, [pos(i) for i in chunk],
                                 torch.cat([src[layer][:, pos(i)] for i in chunk]), reads)
        else:
            p0 = min(pos(i) for i in chunk)
            logits = rerun(run, layer, p0, at_site(chunk, layer, p0), reads)
        for i, copy in zip(chunk, per_copy(run, logits), strict=True):
            values[i] = evaluate_metric(metric, copy, b)
