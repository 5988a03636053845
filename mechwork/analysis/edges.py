"""Edge scores: how much each residual-stream edge matters, exactly (edge patching) or to first order (EAP, EAP-IG).

Every score is one use of the edge runner's primitive (:func:`mechwork.analysis.edgerun.runner`), in
TransformerLens's ``attribution_patch`` sign convention (denoising: the base run is the corrupted input, an edge
is patched toward clean; the score is the metric's change):

* :func:`edge_patch` -- exact: one copy of the base run per edge, in which only that edge's receiver reads the
  sender's clean write (denoising) or its corrupted / mean / zero write (noising, base run clean). Many copies
  go through one forward pass, chunked by ``memory_mb``. ``values = metric(copy) - metric(base run)``.
* :func:`eap` -- Syed et al. (2023): one forward pass of the base run with a zero probe on every receiver's
  input, one backward pass; ``score(u -> v, p) = sum_{batch, d} (clean_u - corrupted_u) * d metric / d input_v``
  (``metric`` averaged over the batch, so this is the mean over examples, as TransformerLens averages them).
* :func:`eap_ig` -- Hanna et al. (2024): the same dot product with the gradient averaged over ``steps`` points
  ``alpha_k = k / steps`` (k = 0 .. steps-1) on the line from corrupted to clean, on the input embedding
  (``on="inputs"``) or on every sender's write (``on="activations"``); all steps are copies of one pass, so
  ``steps=1`` is EAP exactly.
* :func:`verify` (in :mod:`mechwork.analysis.verify`) -- approximate scores against exact patching on the top-k
  and a random sample of the rest: Spearman rho, the largest miss, the top-k overlap.

Under ``ablation="mean"`` or ``"zero"`` an ablated edge reads the sender's mean write over ``mean_tokens`` (default
the clean prompts, per position) or zero. These score by noising (the base run is clean, one edge ablated per
copy; ``direction=None`` picks it); the bottom of the gap, ``corrupted_value``, is the corrupted run if given (as
TransformerLens's ``faithfulness``), else the clean run with every edge ablated. (Denoising from an all-ablated
run would credit only the edges into the logits: every other restored edge feeds receivers whose out-edges stay
ablated.)

Example::

    >>> import mechwork
    >>> from mechwork.analysis.edges import eap, edge_patch, verify
    >>> from mechwork.tasks import standard_probe
    >>> model = mechwork.load("induction-2l", device="cpu")
    >>> pr = standard_probe(mechwork.preset("induction-2l").task, n=4)
    >>> approx = eap(model, pr.clean, pr.corrupted, pr.metric)
    >>> exact = edge_patch(model, pr.clean, pr.corrupted, pr.metric)
    >>> approx.graph.n_edges, exact.values.shape
    (81, torch.Size([81]))
    >>> verify(approx, exact, sample=None).spearman > 0.5
    True
"""

from __future__ import annotations

import dataclasses
import math
from collections.abc import Callable, Sequence
from dataclasses import dataclass
from typing import TYPE_CHECKING, Any, no_type_check

import torch
from jaxtyping import Float
from torch import Tensor

from mechwork.analysis.checks import evaluate_metric
from mechwork.analysis.edgesetup import ABLATIONS, DIRECTIONS, MEMORY_MB, Setup, metric_value, setup
from mechwork.analysis.verify import Verification, spearman, verify
from mechwork.errors import ConfigError, invalid
from mechwork.graph import Edge, Graph
from mechwork.results import Result

if TYPE_CHECKING:  # pragma: no cover
    import pandas as pd

__all__ = ["ABLATIONS", "DIRECTIONS", "IG_ON", "EdgeScores", "Verification", "eap", "eap_ig", "edge_patch",
           "exact_patcher", "spearman", "verify"]

IG_ON = ("inputs", "activations")
GRAD_COST = 3  # a copy that is also differentiated holds about this many times a forward copy's memory


@dataclass(frozen=True)
class EdgeScores(Result):
    """One score per edge of ``graph`` (flat order of ``graph.edges``; NaN = not computed)."""

    graph: Graph
    values: Float[Tensor, " edge"]
    method: str  # "exact" | "eap" | "eap-ig"
    direction: str
    ablation: str
    clean_value: float  # metric of the clean run
    corrupted_value: float  # metric of the corrupted run (or of the run with every edge ablated)
    steps: int = 1
    ig_on: str | None = None
    engine: str = "fast"

    @no_type_check  # checks k itself, in one line
    def top(self, k: int = 10) -> list[tuple[Edge, float]]:
        """The ``k`` edges with the largest |value| (NaN skipped; graph order among ties)."""
        if isinstance(k, bool) or not isinstance(k, int) or k < 0:
            raise invalid("k", "a number of edges >= 0", k)
        v = self.values.detach().double().cpu()
        ok = torch.nonzero(~torch.isnan(v))[:, 0]
        order = ok[torch.sort(v[ok].abs(), descending=True, stable=True).indices][:k]
        return [(self.graph.edges[i], float(v[i])) for i in order.tolist()]

    def by_pair(self) -> Float[Tensor, " pair"]:
        """Scores summed over positions: one per (sender, receiver) pair (the position-free view)."""
        v = self.values.detach()
        return v if self.graph.n_pos is None else v.reshape(len(self.graph.pairs), self.graph.n_pos).sum(-1)

    def node_totals(self) -> dict[str, float]:
        """Each sender's total over its out-edges (and positions), NaN skipped: TransformerLens's node score."""
        out = dict.fromkeys(self.graph.senders, 0.0)
        v = self.values.detach().double().cpu().nan_to_num(0.0).reshape(len(self.graph.pairs), -1).sum(-1)
        for (u, _), x in zip(self.graph.pairs, v.tolist(), strict=True):
            out[self.graph.senders[u]] += x
        return out

    def _label(self) -> str:
        extra = f", {self.steps} steps on {self.ig_on}" if self.method == "eap-ig" else ""
        return f"{self.method} ({self.direction}, {self.ablation}{extra})"

    def summary(self) -> str:
        n = int((~torch.isnan(self.values)).sum())
        top = ", ".join(f"{e} {v:+.3g}" for e, v in self.top(5))
        return (f"{self._label()} scores of {n:,} of {self.graph.n_edges:,} edges; metric clean "
                f"{self.clean_value:.4g}, corrupted {self.corrupted_value:.4g}; strongest: {top or 'none'}")

    def to_frame(self) -> pd.DataFrame:
        import pandas as pd

        e = self.graph.edges
        return pd.DataFrame({"edge": [str(x) for x in e], "sender": [x.sender for x in e],
                             "receiver": [x.receiver for x in e], "pos": [x.pos for x in e],
                             "score": self.values.detach().double().cpu().tolist()})

    def figure(self) -> Any:
        """The scored edges as a layered graph (:func:`mechwork.analysis.circuitfig.layered_graph`)."""
        from mechwork.analysis.circuitfig import layered_graph

        scores = {e: v for e, v in zip(self.graph.edges, self.values.tolist(), strict=True) if not math.isnan(v)}
        return layered_graph(self.graph, scores, title=f"{self._label()} edge scores")


def _scores(s: Setup, graph: Graph, values: Tensor, method: str, **kw: Any) -> EdgeScores:
    return EdgeScores(graph, values, method, s.direction, s.ablation, s.clean_value, s.corrupted_value,
                      engine=s.runner.engine, **kw)


# -- exact edge patching -------------------------------------------------------------------------------------------
def _flat(graph: Graph, edges: Any) -> list[int]:
    if edges is None:
        return list(range(graph.n_edges))
    edges = [edges] if isinstance(edges, (str, Edge)) else edges
    return list(dict.fromkeys(graph.index(e) for e in edges))


@torch.no_grad()
def _patch(s: Setup, graph: Graph, flat: Sequence[int]) -> Tensor:
    """Exact scores of the edges ``flat`` of ``graph`` (NaN elsewhere): one copy per edge, chunked.

    Copies go in order of (receiver layer, position): a chunk then holds copies that start at the same layer and
    position, which the engine runs as one group (3x faster per position than pair-major order)."""
    values = torch.full((graph.n_edges,), math.nan, dtype=torch.float64)
    b, n_pos = (int(n) for n in s.tokens.shape)
    n_pairs = len(graph.pairs)
    per = graph.n_pos or 1
    flat = sorted(flat, key=lambda f: (graph.layer_of(graph.receivers[graph.pairs[f // per][1]]), f % per, f))
    for start in range(0, len(flat), s.cap):
        part = flat[start:start + s.cap]
        keep = torch.ones(len(part), n_pairs, n_pos)
        for c, f in enumerate(part):
            if graph.n_pos is None:
                keep[c, f] = 0.0
            else:
                keep[c, f // n_pos, f % n_pos] = 0.0
        logits = s.runner.run(s.tokens, keep=keep.to(s.tokens.device), replacement=s.replacement)
        for c, f in enumerate(part):
            values[f] = metric_value(s.metric, logits[c], b) - s.base_value
    return values


@no_type_check  # checks its own arguments, with one-line messages
def edge_patch(model: Any, clean: Any, corrupted: Any, metric: Callable[[Tensor], Any], *,
               direction: str | None = None, ablation: str = "corrupted", per_position: bool = False,
               edges: Sequence[Edge | str] | None = None, mean_tokens: Any = None,
               memory_mb: float = MEMORY_MB) -> EdgeScores:
    """Exact edge patching: the metric's change when only that edge is patched, for every edge (or ``edges``).

    ``direction``: "denoising" (base run corrupted, the edge reads the clean write) or "noising" (base run clean,
    the edge reads the corrupted / mean / zero write); None picks denoising for ``ablation="corrupted"``, else
    noising. ``per_position``: one score per (edge, position). Edges not in ``edges`` are NaN.
    """
    s = setup(model, clean, corrupted, metric, direction, ablation, per_position, mean_tokens, memory_mb)
    graph = s.graph(per_position)
    return _scores(s, graph, _patch(s, graph, _flat(graph, edges)), "exact")


@no_type_check  # checks its own arguments, with one-line messages
def exact_patcher(model: Any, clean: Any, corrupted: Any, metric: Callable[[Tensor], Any],
                  **kw: Any) -> Callable[[Sequence[Edge]], EdgeScores]:
    """``edges -> EdgeScores`` computing exact scores of just those edges (set up once): what :func:`verify` takes.

    ``kw``: ``direction``, ``ablation``, ``per_position``, ``mean_tokens``, ``memory_mb`` as :func:`edge_patch`.
    """
    per_position = kw.pop("per_position", False)
    s = setup(model, clean, corrupted, metric, kw.pop("direction", None), kw.pop("ablation", "corrupted"),
               per_position, kw.pop("mean_tokens", None), kw.pop("memory_mb", MEMORY_MB))
    if kw:
        raise ConfigError(f"exact_patcher got unknown arguments {sorted(kw)} (valid: direction, ablation, "
                          "per_position, mean_tokens, memory_mb)")
    graph = s.graph(per_position)
    return lambda edges: _scores(s, graph, _patch(s, graph, _flat(graph, edges)), "exact")


# -- EAP and EAP-IG --------------------------------------------------------------------------------------------------
def _grads(s: Setup, alphas: Sequence[float] | None, pinned: Sequence[int]) -> Tensor:
    """d metric / d input of every receiver, [receiver, batch, pos, d_model], averaged over the points ``alphas``
    on the line base + alpha (replacement - base) where the ``pinned`` senders sit (None: the base run itself);
    outside a caller's ``torch.inference_mode`` (as in a notebook), on copies of its inference tensors."""
    with torch.inference_mode(False):
        if any(torch.is_inference(x) for x in (s.tokens, s.base, s.replacement)):
            s = dataclasses.replace(s, tokens=s.tokens.clone(), base=s.base.clone(), replacement=s.replacement.clone())
        return _grads_at(s, alphas, pinned)


def _grads_at(s: Setup, alphas: Sequence[float] | None, pinned: Sequence[int]) -> Tensor:
    b, n_pos = (int(n) for n in s.tokens.shape)
    n_r, d = len(s.runner.graph.receivers), int(s.base.shape[-1])
    points: Sequence[float | None] = [None] if alphas is None else alphas
    total = torch.zeros(n_r, b, n_pos, d, dtype=s.base.dtype, device=s.base.device)
    cap = max(1, s.cap // GRAD_COST)
    for start in range(0, len(points), cap):
        part = points[start:start + cap]
        probe = torch.zeros(len(part), n_r, b, n_pos, d, dtype=s.base.dtype, device=s.base.device,
                            requires_grad=True)
        kw: dict[str, Any] = {}
        if part[0] is not None:
            a = torch.tensor(part, dtype=s.base.dtype, device=s.base.device).view(-1, 1, 1, 1, 1)
            kw = {"pin": s.base[None] + a * (s.replacement - s.base)[None], "pinned": tuple(pinned)}
        with torch.enable_grad():
            logits = s.runner.run(s.tokens, probe=probe, **kw)
            loss = torch.stack([_scalar(s.metric, logits[c], b) for c in range(len(part))]).sum()
            (grad,) = torch.autograd.grad(loss, probe)
        total += grad.sum(0)
    return total / len(points)


def _scalar(metric: Callable[[Tensor], Any], logits: Tensor, batch: int) -> Tensor:
    out = metric(logits)
    if not isinstance(out, Tensor) or not out.requires_grad:
        raise ConfigError("'metric' must return a tensor computed from the logits (differentiable) for EAP")
    evaluate_metric(lambda _: out, logits, batch)  # shape and finiteness, one line
    return out.mean() if out.ndim == 1 else out


def _contract(s: Setup, graph: Graph, grad: Tensor) -> Tensor:
    """score(u -> v, p) = sum over batch and d_model of delta_u * grad_v; summed over p unless per position."""
    per = torch.einsum("sbpd,rbpd->srp", s.delta.to(grad), grad).double()
    pairs = torch.tensor(graph.pairs, dtype=torch.long, device=per.device)
    v = per[pairs[:, 0], pairs[:, 1]]  # [pair, pos]
    return (v.flatten() if graph.n_pos is not None else v.sum(-1)).cpu()


@no_type_check  # checks its own arguments, with one-line messages
def eap(model: Any, clean: Any, corrupted: Any, metric: Callable[[Tensor], Any], *, direction: str | None = None,
        ablation: str = "corrupted", per_position: bool = False, mean_tokens: Any = None,
        memory_mb: float = MEMORY_MB) -> EdgeScores:
    """Edge attribution patching: one forward and one backward pass of the base run (see the module)."""
    s = setup(model, clean, corrupted, metric, direction, ablation, per_position, mean_tokens, memory_mb)
    graph = s.graph(per_position)
    return _scores(s, graph, _contract(s, graph, _grads(s, None, ())), "eap")


@no_type_check  # checks its own arguments, with one-line messages
def eap_ig(model: Any, clean: Any, corrupted: Any, metric: Callable[[Tensor], Any], *, steps: int = 5,
           on: str = "inputs", direction: str = "denoising", per_position: bool = False,
           memory_mb: float = MEMORY_MB) -> EdgeScores:
    """EAP with integrated gradients (Hanna et al. 2024): the gradient averaged over ``steps`` points from the
    base run toward the other input, ``alpha = k / steps`` for k = 0 .. steps-1, on the input embedding
    (``on="inputs"``) or on every sender's write (``"activations"``). ``steps=1`` is :func:`eap`."""
    if isinstance(steps, bool) or not isinstance(steps, int) or steps < 1:
        raise invalid("steps", "a positive number of interpolation steps (1 = EAP)", steps)
    if on not in IG_ON:
        raise invalid("on", " or ".join(IG_ON), on)
    s = setup(model, clean, corrupted, metric, direction, "corrupted", per_position, None, memory_mb)
    graph = s.graph(per_position)
    pinned = (0,) if on == "inputs" else tuple(range(len(graph.senders)))
    grad = _grads(s, [k / steps for k in range(steps)], pinned)
    return _scores(s, graph, _contract(s, graph, grad), "eap-ig", steps=steps, ig_on=on)
