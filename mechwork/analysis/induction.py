"""Every result the induction dashboard needs, computed once.

:func:`analyse` takes an opened :class:`~mechwork.source.Source` of an induction-task run or preset and
returns an :class:`~mechwork.results.Analysis` bundle. Results, by name:

* ``detectors`` (previous-token, induction and duplicate-token scores of every head), ``composition``;
* ``repeat_accuracy`` (:class:`RepeatAccuracy`: inside and outside the repeated segments of the held-out
  sequences), ``position_loss`` (:class:`PositionLoss` on ``[r, r]`` sequences);
* ``repeated_attention`` (every head on two ``[r, r]`` sequences), ``task_attention`` (on one held-out one);
* ``patching`` (every head at every position, on the task's standard probe) and ``attribution``
  (:class:`AttributionCheck`: attribution patching against it);
* ``ablation`` (:class:`CircuitAblation`), when the detectors name a previous-token head in layer 0 and
  an induction head above it: zero, mean and resample ablation of the former, and path patching from
  them to the induction heads' q, k and v.

Example::

    >>> from mechwork.analysis.induction import analyse
    >>> from mechwork.source import open_source
    >>> bundle = analyse(open_source("induction-2l"))
    >>> bundle["repeat_accuracy"].inside > 0.9
    True
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import TYPE_CHECKING, Any

import torch
from jaxtyping import Float, Int
from torch import Tensor

from mechwork.errors import ConfigError
from mechwork.results import Analysis, Result

if TYPE_CHECKING:  # pragma: no cover
    import pandas as pd

    from mechwork.source import Source

__all__ = ["THRESHOLD", "AttributionCheck", "CircuitAblation", "PositionLoss", "RepeatAccuracy", "analyse",
           "circuit_heads", "position_loss", "repeat_accuracy"]

THRESHOLD = 0.5  # detector score that names a head


@dataclass(frozen=True)
class RepeatAccuracy(Result):
    """Next-token accuracy inside the repeated segments (where copying predicts the token) and elsewhere."""

    inside: float
    outside: float
    chance: float  # 1 / d_vocab

    def summary(self) -> str:
        return (f"{self.inside:.1%} of the tokens inside repeated segments predicted, against {self.outside:.1%} "
                f"elsewhere (chance is {self.chance:.1%})")

    def to_frame(self) -> pd.DataFrame:
        import pandas as pd

        return pd.DataFrame({"where": ["inside repeats", "elsewhere", "chance"],
                             "accuracy": [self.inside, self.outside, self.chance]})


@torch.no_grad()
def repeat_accuracy(model: Any, tokens: Int[Tensor, "batch pos"], targets: Int[Tensor, "batch pos"],
                    mask: Tensor, *, logits: Tensor | None = None) -> RepeatAccuracy:
    """Next-token accuracy inside the repeated segments (``mask``) and elsewhere; ``logits``: the model's on
    ``tokens``, when the caller has them from its own run (else one pass here)."""
    from mechwork.engine import correct

    if logits is None:
        logits = model(tokens.to(next(model.parameters()).device))
    ok = correct(logits.cpu(), targets).bool()
    inside = float(ok[mask].float().mean())
    outside = float(ok[:, :-1][~mask[:, :-1]].float().mean())
    return RepeatAccuracy(inside, outside, 1 / int(model.cfg.d_vocab))


@dataclass(frozen=True)
class PositionLoss(Result):
    """Mean next-token loss at each position of ``[r, r]`` sequences: an induction circuit makes the
    second copy cheap to predict."""

    loss: Float[Tensor, " pos"]  # loss predicting token t, t = 1 .. seq_len - 1
    half: int  # length of r: the second copy starts at position half

    def summary(self) -> str:
        first, second = self.loss[: self.half - 1].mean(), self.loss[self.half - 1:].mean()
        return f"mean loss {float(first):.3g} nats on the first copy, {float(second):.3g} on the second"

    def to_frame(self) -> pd.DataFrame:
        import pandas as pd

        return pd.DataFrame({"position": range(1, len(self.loss) + 1), "loss": self.loss.tolist()})

    def figure(self) -> Any:
        import plotly.graph_objects as go

        fig = go.Figure(go.Scatter(x=list(range(1, len(self.loss) + 1)), y=self.loss.tolist(), mode="lines+markers",
                                   name="loss predicting token t"))
        fig.add_vline(x=self.half - 0.5, line_dash="dash", annotation_text="second copy starts")
        return fig.update_layout(title="Next-token loss by position on repeated random sequences",
                                 xaxis_title="position t of the predicted token", yaxis_title="loss (nats)",
                                 height=380)


@torch.no_grad()
def position_loss(model: Any, tokens: Int[Tensor, "batch pos"]) -> PositionLoss:
    """:class:`PositionLoss` of ``model`` on ``[r, r]`` sequences."""
    device = next(model.parameters()).device
    logits = model(tokens.to(device)).float().cpu()
    lp = logits[:, :-1].log_softmax(-1).gather(-1, tokens[:, 1:, None])[..., 0]
    return PositionLoss((-lp).mean(0), tokens.shape[1] // 2)


@dataclass(frozen=True)
class AttributionCheck(Result):
    """Attribution patching (one forward and one backward pass) against exact activation patching."""

    exact: Any  # PatchResult
    approx: Any  # PatchResult, same cells
    probe: str  # what the clean and corrupted prompts and the metric are

    @property
    def r(self) -> float:
        x, y = self.exact.values.flatten(), self.approx.values.flatten()
        return float(torch.corrcoef(torch.stack([x, y]))[0, 1])

    def summary(self) -> str:
        return f"attribution against exact patching: Pearson r = {self.r:.3f}"

    def to_frame(self) -> pd.DataFrame:
        import pandas as pd

        return pd.DataFrame({"cell": self._labels(), "exact": self.exact.values.flatten().tolist(),
                             "attribution": self.approx.values.flatten().tolist()})

    def _labels(self) -> list[str]:
        cells = torch.cartesian_prod(*[torch.arange(n) for n in self.exact.values.shape]).tolist()
        return [self.exact.label(idx) for idx in cells]

    def figure(self) -> Any:
        import plotly.graph_objects as go

        x, y = self.exact.values.flatten(), self.approx.values.flatten()
        scatter = go.Figure(go.Scatter(x=x.tolist(), y=y.tolist(), mode="markers", text=self._labels(),
                                       marker={"size": 5, "opacity": 0.6}))
        return scatter.update_layout(title=f"Attribution patching against exact patching (Pearson r = {self.r:.3f})",
                                     xaxis_title="exact patched metric", yaxis_title="attribution estimate",
                                     height=400)


@dataclass(frozen=True)
class CircuitAblation(Result):
    """Accuracy inside repeated segments with the previous-token heads ablated, and path patched."""

    rows: list[tuple[str, float]]  # (what was ablated or path patched, accuracy), the unablated run first
    paths: dict[str, Any]  # component (q, k, v) -> PathPatchResult

    def summary(self) -> str:
        return " ".join(p.summary() + "." for p in self.paths.values())

    def to_frame(self) -> pd.DataFrame:
        import pandas as pd

        return pd.DataFrame(self.rows, columns=["run", "accuracy"])

    def figure(self) -> Any:
        import plotly.graph_objects as go

        bars = go.Figure(go.Bar(x=[v for _, v in self.rows], y=[n for n, _ in self.rows], orientation="h"))
        bars.update_yaxes(autorange="reversed")
        return bars.update_layout(title="Accuracy inside repeated segments", xaxis_range=[0, 1], height=360,
                                  xaxis_title="accuracy inside repeated segments",
                                  yaxis_title="heads ablated or path patched", margin={"l": 360})


def circuit_heads(scores: Any) -> tuple[list[tuple[int, int]], list[tuple[int, int]]]:
    """(previous-token heads in layer 0, induction heads above it) that the detectors name."""
    prev, ind = scores.top("previous_token", THRESHOLD), scores.top("induction", THRESHOLD)
    return [(la, h) for la, h, _ in prev if la == 0], [(la, h) for la, h, _ in ind if la >= 1]


def circuit_ablation(model: Any, task: Any, prev: list[tuple[int, int]], ind: list[tuple[int, int]], *,
                     base_run: tuple[Tensor, Any] | None = None) -> CircuitAblation:
    """Ablate the previous-token heads three ways, and path patch them to the induction heads' q, k, v.

    ``base_run``: ``(logits, cache)`` of the unablated run on the held-out sequences, cached at
    :func:`~mechwork.analysis.attribution.base_hooks` of the induction heads, when the caller has it (else one
    run here): it is the unablated row, the run path patching starts from, and the head outputs the resample
    ablation draws from. The mean ablation is path patching's run with the senders swapped on every path."""
    from mechwork.analysis.ablation import ablate
    from mechwork.analysis.attribution import base_hooks, path_patches
    from mechwork.analysis.metrics import accuracy

    ev = task.batch("test")
    acc = accuracy(ev.targets, ev.mask)
    if base_run is None:
        wanted = base_hooks(model, ind)
        with torch.no_grad():
            base_run = model.run_with_cache(ev.tokens.to(next(model.parameters()).device),
                                            names_filter=lambda n: n in wanted)
    paths = path_patches(model, ev.tokens, "mean", acc, senders=prev, receivers=ind, base_run=base_run)
    heads = ", ".join(f"L{la}H{h}" for la, h in prev)

    def ablated(how: str) -> float:
        return float(acc(ablate(model, ev.tokens, heads=prev, how=how, reference_cache=base_run[1]).logits))

    rows = [("unablated", float(acc(base_run[0]))), (f"zero-ablate {heads}", ablated("zero")),
            (f"mean-ablate {heads}", paths["q"].full_value), (f"resample-ablate {heads}", ablated("resample"))]
    rows += [(f"path {c}: mean-ablate only via the induction heads' {c}", paths[c].value) for c in "qkv"]
    return CircuitAblation(rows, paths)


def patching_results(model: Any, task: Any) -> dict[str, Result]:
    """Every head at every position patched on the kit's standard probe, and attribution patching against it."""
    from mechwork.analysis.attribution import attribute
    from mechwork.analysis.patching import patch
    from mechwork.kit import get_kit

    probe = get_kit(task.kind).probe(task, n=8, seed=0)
    exact = patch(model, probe.clean, probe.corrupted, probe.metric, site="z", by="head_pos")
    approx = attribute(model, probe.clean, probe.corrupted, probe.metric, site="z", by="head_pos")
    return {"patching": exact, "attribution": AttributionCheck(exact, approx, probe.description)}


def analyse(src: Source) -> Analysis:
    """Every result of an induction-task run or preset (see the module docstring)."""
    from mechwork.analysis.attention import attention_patterns, composition_scores, head_detectors, repeated_tokens
    from mechwork.analysis.attribution import base_hooks

    task, model = src.task, src.model
    if task.kind != "induction":
        raise ConfigError(f"the induction dashboard needs an induction run (got a {task.kind} run: {src.name!r})")
    scores = head_detectors(model)
    prev, ind = circuit_heads(scores)
    ev = task.batch("test")
    wanted = base_hooks(model, ind) if prev and ind else set()
    with torch.no_grad():  # the held-out run: repeat accuracy's logits, and the ablations' unablated run
        base_run = model.run_with_cache(ev.tokens.to(next(model.parameters()).device),
                                        names_filter=lambda n: n in wanted)
    rep = repeated_tokens(task.d_vocab, task.seq_len // 2, batch=64, seed=1)
    results: dict[str, Result] = {
        "detectors": scores,
        "repeat_accuracy": repeat_accuracy(model, ev.tokens, ev.targets, ev.mask, logits=base_run[0]),
        "composition": composition_scores(model), "position_loss": position_loss(model, rep),
        "repeated_attention": attention_patterns(model, rep[:2]),
        "task_attention": attention_patterns(model, ev.tokens[:1]),
        **patching_results(model, task),
    }
    if prev and ind:
        results["ablation"] = circuit_ablation(model, task, prev, ind, base_run=base_run)
    return Analysis(src.info, results)
