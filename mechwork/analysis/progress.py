"""Progress measures over a training run, and the three phases of grokking.

Nanda et al. (2023, Sec. 5) track, at every checkpoint of a run:

* train and test loss (and accuracy);
* **restricted loss** -- the logits projected onto the key-frequency directions
  cos/sin(w_k (a + b)), over all pairs: falls as the Fourier circuit forms;
* **excluded loss** -- those directions removed, on the training pairs: rises
  as the model stops memorising and relies on the circuit;
* the **Gini coefficient** of W_E's Fourier norms: jumps during cleanup;
* the **total squared weight norm**: falls under weight decay during cleanup.

The key frequencies are those of the *final* checkpoint (as in the paper),
unless given. Each checkpoint is one vectorised pass: its weights are loaded
into one model and the last-position logits of all p^2 pairs are computed with
the training fast path (the same numbers as the bridge, to 1e-4).

Phase boundaries, from the measures (steps are checkpoint steps):

* **end of memorisation** -- first checkpoint with train accuracy >= 99%;
* **start of cleanup** -- first checkpoint with test accuracy >= 50%: the
  circuit now beats the lookup table on held-out pairs and test loss is in
  free fall (circuit formation is the stretch between the two). Claimed only
  when the run goes on to generalise (test accuracy >= 99%, :data:`GROKKED`):
  a run stopped at 79% test accuracy has no cleanup;
* **end of cleanup** -- first checkpoint after that whose excluded loss is
  within 90% of its maximum over the rest of the run, with test accuracy >= 99%.

Phases are reported only on evidence (:func:`phase_spans`): memorisation once
train accuracy reaches 99%; circuit formation once the test loss, after
memorisation, falls to half its value then or less (or the run generalises); cleanup
as above. :func:`phase_sentence` says which phases happened and why the others
did not.

A **loss spike** (:func:`loss_spikes`) is an episode after grokking (test
accuracy first >= 99%) in which the test loss rises above both 10 times its
lowest value since grokking and 0.01; consecutive evaluations above that line
are one spike.

Example::

    >>> from mechwork.analysis.progress import progress_measures
    >>> pm = progress_measures("runs/modadd")          # doctest: +SKIP
    >>> pm.phases                                      # doctest: +SKIP
    {'end_memorisation': 50, 'start_cleanup': 350, 'end_cleanup': 1250}
    >>> [s.start for s in loss_spikes([0, 1, 2, 3, 4], [5.0, 1e-3, 1e-4, 0.5, 1e-4], [0.0, 1.0, 1.0, 0.7, 1.0])]
    [3]
"""

from __future__ import annotations

import os
from dataclasses import dataclass, field
from typing import TYPE_CHECKING, Any

import torch
import torch.nn.functional as F
from jaxtyping import Float, Int
from torch import Tensor

from mechwork.analysis.fourier import check_task, fourier_basis, key_frequencies, spectrum_of
from mechwork.analysis.spikes import GROKKED, SMALL_TEST, Spike, held_out_caveat, loss_spikes, spike_sentence
from mechwork.analysis.trig import restricted_loss, trig_directions
from mechwork.bars import track
from mechwork.engine import correct
from mechwork.errors import CheckpointError
from mechwork.fastpath import modadd_logits, supports_fast_path
from mechwork.io import load_tensors
from mechwork.models import build_model, load_weights, weights
from mechwork.results import Result
from mechwork.runs import Run, ckpt_name

if TYPE_CHECKING:  # pragma: no cover
    import pandas as pd

__all__ = [
    "GROKKED", "PHASE_COLOURS", "SMALL_TEST", "PhaseSpan", "ProgressMeasures", "Spike", "detect_phases",
    "held_out_caveat", "loss_spikes", "phase_sentence", "phase_spans", "progress_measures", "spike_sentence",
]

MEASURES = (
    "train_loss", "test_loss", "train_acc", "test_acc", "restricted_loss", "excluded_loss", "gini", "weight_norm",
)


@dataclass(frozen=True)
class ProgressMeasures(Result):
    """One row per checkpoint of a run; ``phases`` maps boundary name -> step (None if not reached)."""

    steps: Int[Tensor, " ckpt"]
    values: dict[str, Float[Tensor, " ckpt"]]
    key_freqs: list[int]
    phases: dict[str, int | None] = field(default_factory=dict)

    def __getitem__(self, name: str) -> Tensor:
        return self.values[name]

    def at(self, name: str, step: int) -> float:
        return float(self.values[name][int((self.steps == step).nonzero()[0, 0])])

    def to_dict(self) -> dict[str, Any]:
        """JSON-ready: ``{"steps": [...], "values": {name: [...]}, "key_freqs": [...], "phases": {...}}``."""
        return {"steps": self.steps.tolist(), "values": {k: v.tolist() for k, v in self.values.items()},
                "key_freqs": list(self.key_freqs), "phases": dict(self.phases)}

    @classmethod
    def from_dict(cls, d: dict[str, Any]) -> ProgressMeasures:
        """Inverse of :meth:`to_dict` (how the embedded model's history is stored)."""
        steps = torch.tensor(d["steps"])
        values = {k: torch.tensor(v, dtype=torch.float32) for k, v in d["values"].items()}
        # the phases follow from the measures: re-detect them, so stored ones never outlive the rules
        phases = detect_phases(steps, values) if {"train_acc", "test_acc", "excluded_loss"} <= set(values) \
            else dict(d["phases"])
        return cls(steps, values, list(d["key_freqs"]), phases)

    def summary(self) -> str:
        ph = ", ".join(f"{k.replace('_', ' ')} " + ("not reached" if v is None else f"at step {v}")
                       for k, v in self.phases.items())
        return f"{len(self.steps)} checkpoints, key frequencies {self.key_freqs}; {ph}"

    def to_frame(self) -> pd.DataFrame:
        import pandas as pd

        return pd.DataFrame({"step": self.steps, **{k: v for k, v in self.values.items()}})

    def figure(self) -> Any:
        import plotly.graph_objects as go

        return go.Figure(self.figure_spec())

    def figure_spec(self) -> dict[str, Any]:
        """:meth:`figure` as a plotly figure dict (:mod:`mechwork.analysis.figspec`), what a page draws."""
        from mechwork.analysis.figspec import subplots

        layout = subplots(1, 2, ("losses (log)", "Gini and weight norm"), specs=[[{}, {"secondary_y": True}]])
        x = self.steps.tolist()

        def line(name: str, label: str, axes: tuple[str, str]) -> dict[str, Any]:
            return {"name": label, "x": x, "y": self.values[name].tolist(), "type": "scatter", "xaxis": axes[0],
                    "yaxis": axes[1]}

        data = [line(name, name, ("x", "y")) for name in ("train_loss", "test_loss", "restricted_loss",
                                                           "excluded_loss")]
        data += [line("gini", "W_E Gini", ("x2", "y2")), line("weight_norm", "sum of squared weights", ("x2", "y3"))]
        layout["yaxis"] |= {"title": {"text": "loss (log scale)"}, "type": "log"}
        layout["yaxis2"] |= {"title": {"text": "Gini coefficient of W_E's Fourier norms"}}
        layout["yaxis3"] |= {"title": {"text": "sum of squared weights"}, "showgrid": False}
        layout["xaxis"] |= {"title": {"text": "step"}}
        layout["xaxis2"] |= {"title": {"text": "step"}}
        spans = phase_spans(self)  # only the phases the run gave evidence for
        spans = [s for s in spans if s.end > s.start]  # a phase over within one checkpoint interval has no width
        if spans:
            layout["shapes"] = [{"fillcolor": PHASE_COLOURS[span.name], "layer": "below", "line": {"width": 0},
                                 "name": span.name, "type": "rect", "x0": span.start, "x1": span.end, "xref": xref,
                                 "y0": 0, "y1": 1, "yref": f"{yref} domain"}
                                for span in spans for xref, yref in (("x", "y"), ("x2", "y2"))]
        title = "Progress measures (phases shaded)" if spans else "Progress measures"
        return {"data": data, "layout": layout | {"title": {"text": title}}}


def detect_phases(steps: Tensor, v: dict[str, Tensor]) -> dict[str, int | None]:
    """Phase boundaries from the measures; see the module docstring for the rules."""

    def first(mask: Tensor, after: int | None = None) -> int | None:
        ok = mask.clone()
        if after is not None:
            ok &= steps >= after
        idx = ok.nonzero()
        return int(steps[idx[0, 0]]) if len(idx) else None

    end_mem = first(v["train_acc"] >= GROKKED)
    # cleanup only when the run generalises after memorising; it starts where test accuracy passes 50%
    grokked = first(v["test_acc"] >= GROKKED, end_mem) if end_mem is not None else None
    start_clean = first(v["test_acc"] >= 0.5, end_mem) if grokked is not None else None
    end_clean = None
    if start_clean is not None:
        later = steps >= start_clean
        ex = v["excluded_loss"].clone()
        ex[~later] = -torch.inf
        # running max of the excluded loss from each checkpoint to the end of the run
        suffix_max = ex.flip(0).cummax(0).values.flip(0)
        end_clean = first(later & (ex >= 0.9 * suffix_max) & (v["test_acc"] >= 0.99), start_clean)
    return {"end_memorisation": end_mem, "start_cleanup": start_clean, "end_cleanup": end_clean}


PHASE_NAMES = ("memorisation", "circuit formation", "cleanup")
# The one palette for phase bands, in every figure that shades phases (red, yellow, green; translucent).
PHASE_COLOURS = {"memorisation": "rgba(232, 93, 93, 0.25)", "circuit formation": "rgba(240, 200, 60, 0.3)",
                 "cleanup": "rgba(90, 180, 90, 0.25)"}


@dataclass(frozen=True)
class PhaseSpan:
    """One phase the run reached: ``finished`` is False when it was still under way at ``end`` (the last step)."""

    name: str
    start: int
    end: int
    finished: bool


def circuit_formed(steps: Tensor, v: dict[str, Tensor], end_mem: int | None) -> bool:
    """Evidence of circuit formation: after memorisation ends, the test loss falls to half its value then or less."""
    if end_mem is None:
        return False
    tl = v["test_loss"][steps >= end_mem]
    return bool((tl[1:] <= 0.5 * tl[0]).any())


def phase_spans(pm: ProgressMeasures, last_step: int | None = None) -> list[PhaseSpan]:
    """The phases ``pm`` gives evidence for, in order; an unfinished phase ends at ``last_step``.

    >>> steps = torch.tensor([0, 10, 20, 30])
    >>> v = {"train_acc": torch.tensor([0.1, 1.0, 1.0, 1.0]), "test_acc": torch.tensor([0.0, 0.1, 0.6, 0.79]),
    ...      "test_loss": torch.tensor([5.0, 9.0, 2.0, 1.0]), "excluded_loss": torch.zeros(4)}
    >>> pm = ProgressMeasures(steps, v, [1], detect_phases(steps, v))
    >>> [(s.name, s.start, s.end, s.finished) for s in phase_spans(pm)]
    [('memorisation', 0, 10, True), ('circuit formation', 10, 30, False)]
    """
    ph = pm.phases
    last = int(pm.steps[-1]) if last_step is None else max(int(last_step), int(pm.steps[-1]))
    end_mem, start_clean, end_clean = ph.get("end_memorisation"), ph.get("start_cleanup"), ph.get("end_cleanup")
    if end_mem is None:
        return []
    spans = [PhaseSpan("memorisation", 0, end_mem, True)]
    if start_clean is None and not circuit_formed(pm.steps, pm.values, end_mem):
        return spans
    spans.append(PhaseSpan("circuit formation", end_mem, last if start_clean is None else start_clean,
                           start_clean is not None))
    if start_clean is not None:
        spans.append(PhaseSpan("cleanup", start_clean, last if end_clean is None else end_clean,
                               end_clean is not None))
    return spans


def phase_sentence(pm: ProgressMeasures, last_step: int | None = None) -> str:
    """Which phases the run went through, and why the others were not reached (one or two sentences)."""
    spans = phase_spans(pm, last_step)
    v = pm.values
    if not spans:
        return (f"Memorisation did not finish: train accuracy peaked at {float(v['train_acc'].max()):.1%} "
                f"(below {GROKKED:.0%}), so no phase is marked.")
    parts = [f"{s.name} (at step {s.start:,}: over within one checkpoint interval)" if s.finished and s.start == s.end
             else f"{s.name} (steps {s.start:,}-{s.end:,}" + ("" if s.finished else ", still under way at the last "
                                                            "checkpoint") + ")" for s in spans]
    text = "Training went through " + (parts[0] if len(parts) == 1 else
                                       ", ".join(parts[:-1]) + " and " + parts[-1]) + "."
    if len(spans) == 1:
        text += (" Circuit formation and cleanup were not reached: after memorisation ended at step "
                 f"{spans[0].end:,}, the test loss never fell to half its value then.")
    elif len(spans) == 2:
        text += (f" Cleanup was not reached: test accuracy peaked at {float(v['test_acc'].max()):.1%} "
                 f"(below {GROKKED:.0%}).")
    return text


@torch.no_grad()
def progress_measures(
    run: Run | str | os.PathLike[str], key_freqs: list[int] | None = None, device: str | None = "cpu"
) -> ProgressMeasures:
    """Every progress measure at every checkpoint of ``run``, and the phase boundaries."""
    run = run if isinstance(run, Run) else Run(run)
    task = check_task(None, run.task, "progress_measures")
    steps = run.steps
    if not steps:
        raise CheckpointError(f"run {run.path} has no checkpoints (looked in {run.path / 'checkpoints'})")
    cfg = run.model_config
    model = build_model(cfg, device)
    check_task(model, task, "progress_measures")
    w = weights(model)

    def load(step: int) -> None:
        path = run.path / "checkpoints" / ckpt_name(step)
        load_weights(model, load_tensors(path)[0], source=str(path))

    if key_freqs is None:
        load(steps[-1])
        key_freqs = key_frequencies(model, task).freqs
    dev = next(iter(w.values())).device
    toks, labels = task.tokens.to(dev), task.labels.to(dev)
    tr, te = task.train_idx.to(dev), task.test_idx.to(dev)
    u = trig_directions(task, key_freqs).to(dev)  # validated and built once, not per checkpoint
    basis = fourier_basis(task.p)
    fast = supports_fast_path(cfg, run.task)
    rows: dict[str, list[float]] = {k: [] for k in MEASURES}
    for step in track(steps, "progress measures", unit="checkpoint"):  # a bar only inside a command
        load(step)
        logits = modadd_logits(w, cfg, toks) if fast else model(toks)[:, -1]
        restricted = u.T @ (u @ logits)  # = split_logits(logits, task, key_freqs)
        excluded = logits - restricted
        # one log_softmax over every pair per checkpoint (not metrics.split_scores: the stored measures were
        # computed this way, and cross_entropy per split differs in the last bits)
        lp = logits.log_softmax(-1).gather(1, labels[:, None])[:, 0]
        ok = correct(logits, labels)
        rows["train_loss"].append(float(-lp[tr].mean()))
        rows["test_loss"].append(float(-lp[te].mean()))
        rows["train_acc"].append(float(ok[tr].mean()))
        rows["test_acc"].append(float(ok[te].mean()))
        rows["restricted_loss"].append(restricted_loss(restricted, excluded, labels))
        rows["excluded_loss"].append(float(F.cross_entropy(excluded[tr], labels[tr])))
        rows["gini"].append(spectrum_of(w["tok_embed.weight"][: task.p].detach(), "W_E", task.p, basis).gini)
        rows["weight_norm"].append(float(sum(p.pow(2).sum() for p in w.values())))
    values = {k: torch.tensor(v) for k, v in rows.items()}
    step_t = torch.tensor(steps)
    return ProgressMeasures(step_t, values, list(key_freqs), detect_phases(step_t, values))



