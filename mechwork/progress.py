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
  free fall (circuit formation is the stretch between the two);
* **end of cleanup** -- first checkpoint after that whose excluded loss is
  within 90% of its maximum over the rest of the run, with test accuracy >= 99%.

Example::

    >>> from mechwork.progress import progress_measures
    >>> pm = progress_measures("runs/modadd")          # doctest: +SKIP
    >>> pm.phases                                      # doctest: +SKIP
    {'end_memorisation': 50, 'start_cleanup': 350, 'end_cleanup': 1250}
"""

from __future__ import annotations

import os
from dataclasses import dataclass, field
from typing import TYPE_CHECKING, Any

import torch
import torch.nn.functional as F
from jaxtyping import Float, Int
from torch import Tensor

from mechwork.errors import CheckpointError
from mechwork.fastpath import modadd_logits, supports_fast_path
from mechwork.fourier import check_task, fourier_basis, key_frequencies, spectrum_of
from mechwork.io import load_tensors
from mechwork.models import build_model, load_weights, weights
from mechwork.results import Result
from mechwork.runs import Run, ckpt_name
from mechwork.trig import restricted_loss, trig_directions

if TYPE_CHECKING:  # pragma: no cover
    import pandas as pd

__all__ = ["ProgressMeasures", "detect_phases", "progress_measures"]

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
        return cls(torch.tensor(d["steps"]), {k: torch.tensor(v, dtype=torch.float32) for k, v in d["values"].items()},
                   list(d["key_freqs"]), dict(d["phases"]))

    def summary(self) -> str:
        ph = ", ".join(f"{k.replace('_', ' ')} at step {v}" for k, v in self.phases.items())
        return f"{len(self.steps)} checkpoints, key frequencies {self.key_freqs}; {ph}"

    def to_frame(self) -> pd.DataFrame:
        import pandas as pd

        return pd.DataFrame({"step": self.steps, **{k: v for k, v in self.values.items()}})

    def figure(self) -> Any:
        from plotly.subplots import make_subplots

        fig = make_subplots(rows=1, cols=2, subplot_titles=("losses (log)", "Gini and weight norm"),
                            specs=[[{}, {"secondary_y": True}]])
        x = self.steps.tolist()
        for name in ("train_loss", "test_loss", "restricted_loss", "excluded_loss"):
            fig.add_scatter(x=x, y=self.values[name].tolist(), name=name, row=1, col=1)
        fig.add_scatter(x=x, y=self.values["gini"].tolist(), name="W_E Gini", row=1, col=2)
        fig.add_scatter(x=x, y=self.values["weight_norm"].tolist(), name="sum of squared weights",
                        row=1, col=2, secondary_y=True)
        fig.update_yaxes(type="log", row=1, col=1)
        bounds = [s for s in self.phases.values() if s is not None]
        for lo, hi, color in zip([0, *bounds], [*bounds, x[-1]], ["#eee", "#dde", "#ded", "#fff"], strict=False):
            fig.add_vrect(x0=lo, x1=hi, fillcolor=color, opacity=0.5, line_width=0, layer="below", row=1, col="all")
        return fig.update_layout(title="Progress measures (phases shaded)")


def detect_phases(steps: Tensor, v: dict[str, Tensor]) -> dict[str, int | None]:
    """Phase boundaries from the measures; see the module docstring for the rules."""

    def first(mask: Tensor, after: int | None = None) -> int | None:
        ok = mask.clone()
        if after is not None:
            ok &= steps >= after
        idx = ok.nonzero()
        return int(steps[idx[0, 0]]) if len(idx) else None

    end_mem = first(v["train_acc"] >= 0.99)
    start_clean = first(v["test_acc"] >= 0.5, end_mem)
    end_clean = None
    if start_clean is not None:
        later = steps >= start_clean
        ex = v["excluded_loss"].clone()
        ex[~later] = -torch.inf
        # running max of the excluded loss from each checkpoint to the end of the run
        suffix_max = ex.flip(0).cummax(0).values.flip(0)
        end_clean = first(later & (ex >= 0.9 * suffix_max) & (v["test_acc"] >= 0.99), start_clean)
    return {"end_memorisation": end_mem, "start_cleanup": start_clean, "end_cleanup": end_clean}


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
    fast = supports_fast_path(cfg, task)
    rows: dict[str, list[float]] = {k: [] for k in MEASURES}
    for step in steps:
        load(step)
        logits = modadd_logits(w, cfg, toks) if fast else model(toks)[:, -1]
        restricted = u.T @ (u @ logits)  # = split_logits(logits, task, key_freqs)
        excluded = logits - restricted
        lp = logits.log_softmax(-1).gather(1, labels[:, None])[:, 0]
        correct = (logits.argmax(-1) == labels).float()
        rows["train_loss"].append(float(-lp[tr].mean()))
        rows["test_loss"].append(float(-lp[te].mean()))
        rows["train_acc"].append(float(correct[tr].mean()))
        rows["test_acc"].append(float(correct[te].mean()))
        rows["restricted_loss"].append(restricted_loss(restricted, excluded, labels))
        rows["excluded_loss"].append(float(F.cross_entropy(excluded[tr], labels[tr])))
        rows["gini"].append(spectrum_of(w["tok_embed.weight"][: task.p].detach(), "W_E", task.p, basis).gini)
        rows["weight_norm"].append(float(sum(p.pow(2).sum() for p in w.values())))
    values = {k: torch.tensor(v) for k, v in rows.items()}
    step_t = torch.tensor(steps)
    return ProgressMeasures(step_t, values, list(key_freqs), detect_phases(step_t, values))



