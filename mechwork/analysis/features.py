"""Feature pages for SAE latents: what each chosen latent fires on and what it writes (after sae-vis and
Anthropic's feature pages).

:func:`feature_report` runs the model once over ``tokens``, encodes the SAE's hook activations at the positions in
``mask`` and keeps, per chosen latent, everything a page draws (a :class:`FeatureReport`: no model inside):

* its **density** (the fraction of the activations where it fires, > 0) and the **histogram** of its nonzero
  activations (``n_bins`` equal bins from 0 to its maximum);
* its **top activations**: the ``n_top`` largest (input, position) activations, each with the input's token
  labels and the latent's activation at every position of that input (positions outside ``mask``, which the
  SAE does not read, are set to 0);
* its **logit effect**: the decoder row through the linear path to the logits, where there is one: for a
  residual-stream hook ``W_dec[i] @ W_U``, for an MLP's ``hook_post`` ``W_dec[i] @ W_out[l] @ W_U``. It is the
  *direct* path: it skips the layers after the hook and a final LayerNorm (``logit_path`` says which);
* for modular arithmetic (``grid=(p, tokens of all pairs, a-major)``): its activation over the (a, b) grid at
  the last position, the grid in the 2D real Fourier basis of Z_p x Z_p (:func:`mechwork.analysis.fourier.
  fourier_basis`) and its energy per frequency (:func:`frequency_energy`), for every latent.

**One key frequency.** The energy of frequency k is that of the DFT cells (u, v) in {0, k, -k}^2 other than
(0, 0): the cos/sin terms of a alone, of b alone and the products, which are the cos/sin of k(a + b) and k(a - b).
Its share is that energy over all the non-constant energy. A latent is *dominated by one key frequency* when
one k holds at least :data:`DOMINANT` (80%) of it.

Example::

    >>> import torch
    >>> p = 7; a, b = torch.meshgrid(torch.arange(p), torch.arange(p), indexing="ij")
    >>> e = frequency_energy(torch.cos(2 * torch.pi * 2 * (a + b) / p) + 3.0)
    >>> [round(float(x), 3) for x in e]
    [0.0, 1.0, 0.0]
"""

from __future__ import annotations

import re
from collections.abc import Mapping
from dataclasses import dataclass
from typing import TYPE_CHECKING, Any

import torch
from jaxtyping import Bool, Float, Int
from torch import Tensor

from mechwork.errors import ConfigError, invalid
from mechwork.results import Result

if TYPE_CHECKING:  # pragma: no cover
    import pandas as pd
    from transformer_lens.model_bridge import TransformerBridge

    from mechwork.analysis.sae import SAE

__all__ = ["BY", "DOMINANT", "FeatureGrid", "FeatureReport", "SAEBundle", "feature_report", "frequency_energy",
           "logit_effect", "sae_result"]

DOMINANT = 0.8  # share of the non-constant Fourier energy in one frequency from which a latent is "dominated"
BY = ("density", "max")  # how an integer `latents` picks latents: most often firing, or largest activation
_RESID = re.compile(r"^blocks\.(\d+)\.hook_resid_(pre|mid|post)$")
_MLP_POST = re.compile(r"^blocks\.(\d+)\.mlp\.hook_post$")


def frequency_energy(grid: Float[Tensor, "*batch p p"]) -> Float[Tensor, "*batch freq"]:
    """The share of each frequency k = 1..(p-1)/2 in the grid's non-constant Fourier energy (see the module
    docstring); a constant grid has none (all 0). ``p`` must be odd.

    The 8 DFT cells of k lie on the axes and the diagonals, so they are 1D DFTs of four sums of the grid: over b
    (cells (k, 0)), over a ((0, k)), along a + b = c ((k, k)) and along a - b = c ((k, -k)); Parseval gives the total.
    """
    p = grid.shape[-1]
    if grid.shape[-2] != p or p < 3 or p % 2 == 0:
        raise invalid("grid", "a [..., p, p] grid with p odd and >= 3", f"shape {tuple(grid.shape)}")
    x = grid if grid.dtype == torch.float64 else grid.float()
    a, c = torch.arange(p)[:, None], torch.arange(p)[None, :]
    sums = torch.stack([x.sum(-1), x.sum(-2), x[..., a, (c - a) % p].sum(-2), x[..., a, (a - c) % p].sum(-2)]).double()
    power = torch.fft.rfft(sums, dim=-1).abs().pow(2)  # [4, ..., (p+1)/2]: k = 0..(p-1)/2
    per_k = 2 * power[..., 1:].sum(0)  # +-k of each of the four
    energy = p * p * x.double().pow(2).sum((-2, -1))  # Parseval: the sum of |F|^2 over every cell
    total = energy - power[0, ..., 0]  # less |F(0, 0)|^2 = (sum x)^2
    ok = total > 1e-9 * energy.clamp_min(1e-300)  # else constant up to rounding
    return torch.where(ok[..., None], per_k / total.clamp_min(1e-300)[..., None], torch.zeros_like(per_k))


@dataclass(frozen=True)
class FeatureGrid:
    """Chosen latents over the (a, b) grid, and every latent's top frequency."""

    p: int
    acts: Float[Tensor, "n p p"]  # activation at the last position of [a, b, =], a down, b across
    coef: Float[Tensor, "n p p"]  # acts in the 2D real Fourier basis (const, cos 1, sin 1, ...) of a and of b
    energy: Float[Tensor, "n freq"]  # frequency_energy of acts
    top_freq_all: Int[Tensor, " d_sae"]  # every latent's frequency with the largest share
    top_share_all: Float[Tensor, " d_sae"]  # and that share (0 for a latent constant over the grid)


@dataclass(frozen=True)
class FeatureReport(Result):
    """Everything a feature page shows of the chosen latents of one SAE (see the module docstring)."""

    hook_name: str
    latents: list[int]
    by: str  # how the latents were chosen: "density", "max" or "given"
    n_acts: int  # activations (input, position) the statistics are over
    density_all: Float[Tensor, " d_sae"]  # fraction of those where each latent fires
    max_all: Float[Tensor, " d_sae"]
    hist_edges: Float[Tensor, "n edges"]
    hist_counts: Int[Tensor, "n bins"]  # nonzero activations per bin (sums to the firing count)
    top_values: Float[Tensor, "n k"]  # largest activations, descending (0 where fewer fire)
    top_input: Int[Tensor, "n k"]  # the input (row of tokens) of each
    top_pos: Int[Tensor, "n k"]  # and its position
    top_tokens: list[list[list[str]]]  # [latent][top][position] token labels of that input
    top_acts: Float[Tensor, "n k T"]  # the latent's activation at every position of that input
    vocab: list[str]  # output token labels
    logit_effect: Float[Tensor, "n d_vocab_out"] | None
    logit_path: str  # which linear path the logit effect follows (or why there is none)
    grid: FeatureGrid | None = None

    @property
    def d_sae(self) -> int:
        return int(self.density_all.numel())

    @property
    def density(self) -> Float[Tensor, " n"]:
        return self.density_all[self.latents]

    @property
    def live(self) -> Bool[Tensor, " d_sae"]:
        return self.density_all > 0

    def firing(self, i: int) -> int:
        """How many of the activations latent ``self.latents[i]`` fires on."""
        return round(float(self.density_all[self.latents[i]]) * self.n_acts)

    def tokens(self, i: int, k: int = 10, *, bottom: bool = False) -> list[tuple[str, float]]:
        """The ``k`` output tokens latent ``self.latents[i]`` raises most (``bottom``: lowers most), with values."""
        if self.logit_effect is None:
            return []
        row = self.logit_effect[i]
        idx = row.argsort(descending=not bottom)[: min(k, row.numel())]
        return [(self.vocab[j], float(row[j])) for j in idx.tolist()]

    def dominated(self, threshold: float = DOMINANT) -> Bool[Tensor, " d_sae"]:
        """Live latents with at least ``threshold`` of their non-constant grid energy in one frequency."""
        if self.grid is None:
            raise ConfigError("this feature report has no (a, b) grid: pass grid=(p, tokens) to feature_report")
        return self.live & (self.grid.top_share_all >= threshold)

    def summary(self) -> str:
        n_live = int(self.live.sum())
        line = (f"SAE at {self.hook_name}: {n_live} of {self.d_sae} latents fire on the {self.n_acts:,} activations; "
                f"pages for latents {self.latents} (by {self.by})")
        if self.grid is not None:
            line += (f"; {int(self.dominated().sum())} of the {n_live} live latents are dominated by one key "
                     f"frequency (>= {DOMINANT:.0%} of their non-constant grid energy)")
        return line

    def to_frame(self) -> pd.DataFrame:
        import pandas as pd

        rows = []
        for i, lat in enumerate(self.latents):
            row: dict[str, Any] = {"latent": lat, "density": float(self.density_all[lat]),
                                   "max": float(self.max_all[lat])}
            if self.logit_effect is not None:
                (up, v_up), (down, v_down) = self.tokens(i, 1)[0], self.tokens(i, 1, bottom=True)[0]
                row |= {"top token": up, "top logit": v_up, "bottom token": down, "bottom logit": v_down}
            if self.grid is not None:
                e = self.grid.energy[i]
                row |= {"key frequency": int(e.argmax()) + 1, "share": float(e.max())}
            rows.append(row)
        return pd.DataFrame(rows)

    # -- figures ---------------------------------------------------------------------------------------
    def figure_spec(self, i: int = 0, part: str = "all") -> dict[str, Any]:
        """:meth:`figure` as a plotly figure dict: a part straight from :mod:`mechwork.analysis.featurefigs` (what a
        page draws, without plotly validating it property by property), ``"all"`` through :meth:`figure`."""
        from mechwork.analysis import featurefigs

        parts = {"histogram": featurefigs.histogram, "logits": featurefigs.logits, "grid": featurefigs.grid}
        if part not in parts:
            return dict(self.figure(i, part).to_dict())
        return parts[part](self, i)

    def figure(self, i: int = 0, part: str = "all") -> Any:
        """Latent ``self.latents[i]``: its ``"histogram"``, ``"logits"``, ``"grid"`` (heatmap and spectrum) or
        ``"all"`` of them as subplots."""
        import plotly.graph_objects as go

        parts = ("histogram", "logits", "grid")
        if part in parts:
            return go.Figure(self.figure_spec(i, part))
        if part != "all":
            raise invalid("part", "'histogram', 'logits', 'grid' or 'all'", part)
        from plotly.subplots import make_subplots

        shown = [n for n in parts if n != "logits" or self.logit_effect is not None]
        shown = [n for n in shown if n != "grid" or self.grid is not None]
        cols = len(shown) + (1 if "grid" in shown else 0)
        fig = make_subplots(rows=1, cols=cols)
        col = 1
        for name in shown:
            part_fig = go.Figure(self.figure_spec(i, name))
            for trace in part_fig.data:
                fig.add_trace(trace, row=1, col=col + (1 if trace.type == "bar" and name == "grid" else 0))
            for j in range(2 if name == "grid" else 1):  # each part's axis titles onto its subplot's axes
                src, dst = ("" if j == 0 else str(j + 1)), ("" if col + j == 1 else str(col + j))
                for axis in ("xaxis", "yaxis"):
                    title = part_fig.layout[axis + src].title.text
                    fig.layout[axis + dst].title = {"text": title}
            col += 2 if name == "grid" else 1
        return fig.update_layout(title=f"Latent {self.latents[i]}", showlegend=False, height=380)


# -- computing it --------------------------------------------------------------------------------------------
def logit_effect(model: TransformerBridge, sae: SAE, latents: list[int]) -> tuple[Tensor | None, str]:
    """The chosen decoder rows through the direct linear path to the logits, and the path in words (None and
    why, for a hook with no such path here)."""
    hook, cfg = sae.cfg.hook_name, model.cfg
    n_layers = int(cfg.n_layers)
    norm = "" if getattr(cfg, "normalization_type", None) is None else "; the final LayerNorm is ignored"
    w_dec = sae.W_dec.detach()[latents].float().cpu()
    w_u = model.W_U.detach().float().cpu()
    if (m := _MLP_POST.match(hook)) is not None:
        layer = int(m.group(1))
        w_out = model.W_out.detach()[layer].float().cpu()
        later = f"; the layers after {layer} are skipped" if layer < n_layers - 1 else ""
        return w_dec @ w_out @ w_u, (f"W_dec @ W_out[{layer}] @ W_U: the direct path through the MLP's output and "
                                     f"the unembedding{later}{norm}")
    if (m := _RESID.match(hook)) is not None:
        layer, where = int(m.group(1)), m.group(2)
        first = layer + (where == "post")  # the first block whose attention comes after the hook
        skipped = [f"the MLP of block {layer}"] if where == "mid" and not getattr(cfg, "attn_only", False) else []
        skipped += [f"blocks {first}-{n_layers - 1}" if first < n_layers - 1 else f"block {first}"] \
            if first < n_layers else []
        exact = not skipped
        tail = "" if exact else f"; skips {' and '.join(skipped)}"
        return w_dec @ w_u, f"W_dec @ W_U: the direct path from the residual stream to the unembedding{tail}{norm}"
    return None, f"no linear path from {hook} to the logits is defined here (residual stream or MLP hook_post only)"


@torch.no_grad()
def _hook_acts(model: TransformerBridge, hook: str, tokens: Tensor, batch_size: int) -> Float[Tensor, "n T d"]:
    device = next(model.parameters()).device
    out = []
    for lo in range(0, tokens.shape[0], batch_size):
        _, cache = model.run_with_cache(tokens[lo:lo + batch_size].to(device), names_filter=lambda n: n == hook)
        out.append(cache[hook].float().cpu())
    return torch.cat(out)


@torch.no_grad()
def _encode(sae: SAE, x: Float[Tensor, "m d_in"], batch_size: int) -> Float[Tensor, "m d_sae"]:
    dev, dtype = sae.W_enc.device, sae.W_enc.dtype
    return torch.cat([sae.encode(x[lo:lo + batch_size].to(dev, dtype)).float().cpu()
                      for lo in range(0, max(1, x.shape[0]), batch_size)]) if x.shape[0] else x.new_zeros(0, sae.d_sae)


def _choose(latents: int | list[int] | None, by: str, density: Tensor, peak: Tensor) -> tuple[list[int], str]:
    d_sae = int(density.numel())
    if isinstance(latents, list | tuple):
        bad = [j for j in latents if isinstance(j, bool) or not isinstance(j, int) or not 0 <= j < d_sae]
        if bad or not latents:
            raise invalid("latents", f"a non-empty list of latent indices in [0, {d_sae})", list(latents))
        return list(latents), "given"
    n = 5 if latents is None else latents
    if isinstance(n, bool) or not isinstance(n, int) or n < 1:
        raise invalid("latents", "None, a positive number of latents, or a list of indices", latents)
    if by not in BY:
        raise invalid("by", "'density' or 'max'", by)
    key = density if by == "density" else peak
    order = [j for j in key.argsort(descending=True, stable=True).tolist() if density[j] > 0]
    return order[:n] or [0], by


def _histogram(v: Float[Tensor, " m"], n_bins: int) -> tuple[Tensor, Tensor]:
    nz = v[v > 0].double()
    top = float(nz.max()) if nz.numel() else 1.0
    edges = torch.linspace(0.0, top, n_bins + 1, dtype=torch.float64)
    idx = (nz / top * n_bins).floor().long().clamp(0, n_bins - 1)
    return edges.float(), torch.bincount(idx, minlength=n_bins)


def _grid(p: int, grid_acts: Float[Tensor, "pp d_sae"], latents: list[int]) -> FeatureGrid:
    from mechwork.analysis.fourier import fourier_basis

    d_sae = grid_acts.shape[1]
    grids = grid_acts.T.reshape(d_sae, p, p)
    top_freq, top_share = torch.ones(d_sae, dtype=torch.long), torch.zeros(d_sae)
    live = (grid_acts > 0).any(0).nonzero()[:, 0]  # a latent silent over the grid has no energy
    for lo in range(0, len(live), 256):
        ids = live[lo:lo + 256]
        share, k = frequency_energy(grids[ids]).max(-1)
        top_freq[ids], top_share[ids] = k + 1, share.float()
    chosen = grids[latents]
    basis = fourier_basis(p).matrix.double()
    coef = (basis @ chosen.double() @ basis.T).float()
    return FeatureGrid(p, chosen.clone(), coef, frequency_energy(chosen).float(), top_freq, top_share)


def feature_report(
    model: TransformerBridge, sae: SAE, tokens: Int[Tensor, "n T"], *, latents: int | list[int] | None = None,
    by: str = "density", mask: Bool[Tensor, "n T"] | None = None, n_top: int = 8, n_bins: int = 30,
    labels: list[str] | None = None, grid: tuple[int, Int[Tensor, "pp T2"]] | None = None, batch_size: int = 2048,
    acts: Float[Tensor, "n T d"] | None = None,
) -> FeatureReport:
    """The feature pages of ``sae``'s latents on ``tokens`` (see the module docstring).

    ``latents``: indices, or how many to pick (None: 5) ``by`` density or maximum activation among the live ones;
    ``labels``: a label per token id (default: decimal ids); ``grid``: ``(p, tokens of every pair, a-major)`` for
    modular arithmetic, read at the last position; ``acts``: the model's activations at the SAE's hook on
    ``tokens``, when the caller has them (else one run here).
    """
    from mechwork.hooks import check_hook_name

    hook = check_hook_name(sae.cfg.hook_name, getattr(model, "hook_dict", {}))
    for name, v in (("n_top", n_top), ("n_bins", n_bins), ("batch_size", batch_size)):
        if isinstance(v, bool) or not isinstance(v, int) or v < 1:
            raise invalid(name, "a positive integer", v)
    tokens = tokens.cpu()
    mask = torch.ones(tokens.shape, dtype=torch.bool) if mask is None else mask.cpu().bool()
    if mask.shape != tokens.shape or not mask.any():
        raise invalid("mask", f"a boolean [n, T] = {tuple(tokens.shape)} mask with a True", tuple(mask.shape))
    x = _hook_acts(model, hook, tokens, batch_size) if acts is None else acts.float().cpu()
    acts = _encode(sae, x[mask], batch_size)  # [m, d_sae]
    density, peak = (acts > 0).float().mean(0), acts.max(0).values
    chosen, how = _choose(latents, by, density, peak)
    where = mask.nonzero()  # [m, 2]: (input, position) of each row of acts
    k = min(n_top, acts.shape[0])
    top = acts[:, chosen].T.topk(k, dim=-1)  # [n, k]
    t_in, t_pos = where[top.indices, 0], where[top.indices, 1]
    rows = t_in.unique()
    row_acts = _encode(sae, x[rows].reshape(-1, x.shape[-1]), batch_size).reshape(len(rows), x.shape[1], -1)
    row_acts = row_acts * mask[rows][..., None]  # positions the SAE does not read: 0
    slot = {int(r): j for j, r in enumerate(rows.tolist())}
    top_acts = torch.stack([torch.stack([row_acts[slot[int(r)], :, lat] for r in t_in[i]])
                            for i, lat in enumerate(chosen)])
    vocab = labels if labels is not None else [str(j) for j in range(int(model.cfg.d_vocab))]
    top_tokens = [[[vocab[int(t)] if int(t) < len(vocab) else str(int(t)) for t in tokens[int(r)]] for r in t_in[i]]
                  for i in range(len(chosen))]
    hists = [_histogram(acts[:, lat], n_bins) for lat in chosen]
    effect, path = logit_effect(model, sae, chosen)
    fgrid = None
    if grid is not None:
        p, g_tokens = grid
        if g_tokens.ndim != 2 or g_tokens.shape[0] != p * p:
            raise invalid("grid", f"(p, tokens of all p^2 = {p * p} pairs, a-major)", f"{tuple(g_tokens.shape)} tokens")
        same = g_tokens.shape == tokens.shape and torch.equal(g_tokens.cpu(), tokens) and bool(
            mask[:, -1].all()) and int(mask.sum()) == tokens.shape[0]
        g_acts = acts if same else _encode(sae, _hook_acts(model, hook, g_tokens.cpu(), batch_size)[:, -1], batch_size)
        fgrid = _grid(p, g_acts, chosen)
    n_out = int(getattr(model.cfg, "d_vocab_out", None) or len(vocab))
    return FeatureReport(
        hook, chosen, how, int(acts.shape[0]), density, peak,
        torch.stack([h[0] for h in hists]), torch.stack([h[1] for h in hists]),
        top.values, t_in, t_pos, top_tokens, top_acts, [vocab[j] if j < len(vocab) else str(j) for j in range(n_out)],
        effect, path, fgrid)


# -- a kit's SAE result --------------------------------------------------------------------------------------
@dataclass(frozen=True)
class SAEBundle(Result):
    """What a dashboard shows of one SAE: where it came from, its metrics, and its feature report."""

    hook_name: str
    where: str  # where the SAE was read from, in words
    cfg: Any  # its SAEConfig
    metrics: Any  # a mechwork.analysis.saemetrics.SAEMetrics, or None when not measured
    features: FeatureReport

    def summary(self) -> str:
        head = f"SAE at {self.hook_name} ({self.where})"
        return f"{head}: {self.metrics.summary()}" if self.metrics is not None else head

    def to_frame(self) -> pd.DataFrame:
        return self.features.to_frame()

    def figure(self, i: int = 0, part: str = "all") -> Any:
        return self.features.figure(i, part)


def sae_result(
    source: Any, hook: str, batch: Any, *, positions: Bool[Tensor, "n T"] | None = None,
    latents: int | list[int] | None = 5, labels: list[str] | None = None,
    grid: tuple[int, Int[Tensor, "pp T2"]] | None = None, metric_rows: int | None = None,
    acts: Mapping[str, Tensor] | None = None,
) -> SAEBundle | None:
    """The SAE of ``source`` (a preset's shipped one or a run's ``saes/``) at ``hook`` (else the first it has),
    measured on ``batch`` (a :class:`~mechwork.kit.Batch`: :func:`mechwork.analysis.saemetrics.evaluate_sae`, the
    loss over its mask; on ``metric_rows`` of its rows drawn with seed 0 when given, to keep a page fast) and paged
    on all its tokens, both at ``positions`` (default: the batch's mask); None when the source has no SAE. When the
    metrics read every input, their clean run also gives the feature report its activations; ``acts``: the model's
    activations on the batch's tokens by hook name, when the caller has them."""
    from mechwork.analysis.saestore import saes_for

    found = saes_for(source.name) if source.kind in ("preset", "run") else {}
    if not found:
        return None
    hook = hook if hook in found else sorted(found)[0]  # the kit's standard hook first, else a run's other one
    from mechwork.analysis.saeio import load_sae
    from mechwork.analysis.saemetrics import clean_run, evaluate_sae

    sae = load_sae(found[hook], device=str(next(source.model.parameters()).device))
    where = f"shipped with the {source.name} preset" if source.kind == "preset" else f"read from {found[hook]}"
    pos = batch.mask if positions is None else positions
    rows = torch.arange(len(batch.tokens))
    if metric_rows is not None and metric_rows < len(rows):
        rows = torch.randperm(len(rows), generator=torch.Generator().manual_seed(0))[:metric_rows].sort().values
        where += f"; metrics on {metric_rows:,} of the {len(batch.tokens):,} inputs, drawn with seed 0"
    part = type(batch)(batch.tokens[rows], batch.targets[rows], batch.mask[rows])
    run = clean_run(source.model, hook, batch.tokens) if len(rows) == len(batch.tokens) else None  # serves both
    metrics = evaluate_sae(source.model, sae, part, positions=pos[rows], clean=run)
    given = (acts or {}).get(hook, None if run is None else run[1])
    if given is not None and tuple(given.shape[:2]) != tuple(batch.tokens.shape):
        raise invalid("acts", f"activations of the batch's {tuple(batch.tokens.shape)} tokens at {hook}",
                      f"shape {tuple(given.shape)}")
    report = feature_report(source.model, sae, batch.tokens, latents=latents, mask=pos, labels=labels, grid=grid,
                            acts=given)
    return SAEBundle(hook, where, sae.cfg, metrics, report)
