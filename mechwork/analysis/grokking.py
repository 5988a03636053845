"""Every result the grokking dashboard, ``mechwork analyze fourier`` and ``mechwork info`` need, computed once.

:func:`analyse` takes an opened :class:`~mechwork.source.Source` of a modular-arithmetic run or preset and
returns an :class:`~mechwork.results.Analysis` bundle. One pass over all p^2 pairs (logits, MLP activations
and layer 0's attention patterns together, :func:`~mechwork.analysis.fourier.grid_pass`) feeds every Fourier
analysis and the attention results, and is the unablated run the Fourier ablations compare with; those run
the model once more for each projection of the embedding. Results, by name:

* ``accuracy`` (:class:`GridAccuracy`), ``attention`` (:class:`EqualsAttention`, with a few example inputs);
* when a Fourier circuit can apply (add or sub, odd p, a model with an MLP; see :func:`fourier_reason`):
  ``embedding`` and ``unembedding`` (W_E's and W_U's spectra), ``neurons``, ``key_frequencies``,
  ``cluster_sizes``, ``neuron_grids`` (one neuron per key frequency), ``trig_fit``, ``losses``
  (restricted and excluded) and ``ablation`` (:class:`EmbeddingAblation`);
* ``progress``: the progress measures, from a preset's stored history or over a run's checkpoints.

Example::

    >>> from mechwork.analysis.grokking import analyse
    >>> from mechwork.source import open_source
    >>> bundle = analyse(open_source("modadd-113"))
    >>> bundle["key_frequencies"].freqs, f"{bundle['accuracy'].all:.2%}"
    ([1, 5, 10, 19, 47], '100.00%')
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import TYPE_CHECKING, Any

import torch
from jaxtyping import Float
from torch import Tensor

from mechwork.analysis.fourier import FOURIER_OPS, embedding_spectrum, grid_pass, key_frequencies, neuron_frequencies_of
from mechwork.analysis.metrics import split_scores
from mechwork.errors import ConfigError, invalid
from mechwork.hooks import hook_name
from mechwork.results import Analysis, Result

if TYPE_CHECKING:  # pragma: no cover
    import pandas as pd

    from mechwork.analysis.fourier import KeyFrequencies, NeuronFrequencies
    from mechwork.analysis.progress import ProgressMeasures
    from mechwork.source import Source

__all__ = [
    "ClusterSizes", "EmbeddingAblation", "EqualsAttention", "GridAccuracy", "NeuronGrids", "accuracy_of", "analyse",
    "evaluate", "evaluate_modadd", "fourier_applies", "fourier_reason", "grid_hooks", "grid_logits",
]

KEY, OTHER, GREY, GREEN = "#d62728", "#1f77b4", "#7f7f7f", "#2ca02c"


def fourier_reason(task: Any, cfg: Any) -> str | None:
    """Why the Fourier analyses do not apply to this task and model config, or None when they do."""
    if task.op not in FOURIER_OPS:
        return (f"they assume a Fourier circuit for a + b or a - b, and this task's op is {task.op!r} "
                "(they apply to add and sub only)")
    if task.p % 2 == 0:
        return f"p={task.p} is even (the Fourier analyses need an odd p)"
    if cfg.attn_only:
        return "the model has no MLP (the neuron and key-frequency analyses need one)"
    return None


def fourier_applies(task: Any, cfg: Any) -> bool:
    """Whether the Fourier analyses (and so the progress measures) apply: add or sub, odd p, a model with an MLP."""
    return getattr(task, "op", None) in FOURIER_OPS and getattr(task, "p", 0) % 2 == 1 and not cfg.attn_only


# -- results --------------------------------------------------------------------------------------
@dataclass(frozen=True)
class GridAccuracy(Result):
    """Accuracy (and loss) on every pair, on the training pairs and on the held-out ones."""

    all: float
    train: float
    test: float
    n_all: int
    n_train: int
    n_test: int
    all_loss: float = float("nan")
    train_loss: float = float("nan")
    test_loss: float = float("nan")

    def summary(self) -> str:
        return (f"{self.all:.2%} of all {self.n_all:,} pairs right ({self.train:.2%} on the {self.n_train:,} "
                f"training pairs, {self.test:.2%} on the {self.n_test:,} held out)")

    def to_frame(self) -> pd.DataFrame:
        import pandas as pd

        return pd.DataFrame({"pairs": ["all", "train", "test"], "n": [self.n_all, self.n_train, self.n_test],
                             "accuracy": [self.all, self.train, self.test],
                             "loss": [self.all_loss, self.train_loss, self.test_loss]})

    def to_dict(self) -> dict[str, float]:
        """``{all,train,test}_{loss,acc}``, as :func:`evaluate_modadd` returns them."""
        return {f"{name}_{what}": getattr(self, f"{name}_loss" if what == "loss" else name)
                for name in ("all", "train", "test") for what in ("loss", "acc")}


@dataclass(frozen=True)
class AttentionExample:
    """One input ``a op b =``: every head's pattern, the model's answer and the right one."""

    a: int
    b: int
    pattern: Float[Tensor, "head dest src"]
    predicted: int
    correct: int


@dataclass(frozen=True)
class EqualsAttention(Result):
    """Attention from ``=`` over the (a, b) grid, per head (NaN where the task leaves a pair out)."""

    p: int
    grid: Float[Tensor, "pairs head src"]  # row a * p + b
    examples: list[AttentionExample]

    def summary(self) -> str:
        to_a = self.grid[:, :, 0].nanmean(0)
        return "mean attention from '=' to 'a' per head: " + ", ".join(f"{float(v):.2f}" for v in to_a)

    def to_frame(self) -> pd.DataFrame:
        import pandas as pd

        pairs = torch.arange(self.p * self.p)
        return pd.DataFrame({"a": (pairs // self.p).repeat_interleave(self.grid.shape[1]),
                             "b": (pairs % self.p).repeat_interleave(self.grid.shape[1]),
                             "head": torch.arange(self.grid.shape[1]).repeat(len(pairs)),
                             **{f"to_{s}": self.grid[:, :, i].flatten() for i, s in enumerate(("a", "b", "eq"))}})

    def figure(self) -> Any:
        import plotly.graph_objects as go

        return go.Figure(self.figure_spec())

    def figure_spec(self) -> dict[str, Any]:
        """:meth:`figure` as a plotly figure dict (:mod:`mechwork.analysis.figspec`), what a page draws."""
        from mechwork.analysis.figspec import colorscale

        n_heads, p = self.grid.shape[1], self.p
        heats = [{"coloraxis": "coloraxis", "hovertemplate": "a=%{y}, b=%{x}: to a %{z:.2f}<extra></extra>",
                  "z": self.grid[:, h, 0].reshape(p, p).numpy(), "zmax": 1, "zmin": 0, "type": "heatmap"}
                 for h in range(n_heads)]
        fig = _heatmap_grid(heats, [f"head {h}" for h in range(n_heads)], 0.04, None)
        fig["layout"] |= {"coloraxis": {"colorbar": {"title": {"text": "attention to a"}},
                                        "colorscale": colorscale("Viridis")},
                          "title": {"text": "Attention from '=' to 'a' over (a, b)"},
                          "height": 320 * -(-n_heads // min(n_heads, 4)) + 60}
        return fig


def _heatmap_grid(heats: list[dict[str, Any]], titles: list[str], h_spacing: float, v_spacing: float | None
                  ) -> dict[str, Any]:
    """(a, b) heatmaps in a grid at most 4 wide (a down, b across, no tick labels), as a plotly figure dict."""
    from mechwork.analysis.figspec import on, subplots, typed

    cols = min(len(heats), 4)
    rows = -(-len(heats) // cols)
    spacing = {"horizontal_spacing": h_spacing} | ({} if v_spacing is None else {"vertical_spacing": v_spacing})
    layout = subplots(rows, cols, tuple(titles), **spacing)
    data = [on(j // cols + 1, j % cols + 1, cols, {**t, "z": typed(t["z"])}) for j, t in enumerate(heats)]
    for key in [k for k in layout if k.startswith(("xaxis", "yaxis"))]:
        layout[key] |= ({"title": {"text": "b"}, "showticklabels": False} if key.startswith("x") else
                        {"title": {"text": "a"}, "showticklabels": False, "autorange": "reversed"})
    return {"data": data, "layout": layout}


@dataclass(frozen=True)
class ClusterSizes(Result):
    """Clustered neurons per frequency, the key frequencies marked."""

    sizes: dict[int, int]
    key: list[int]

    def summary(self) -> str:
        return "clustered neurons per frequency: " + (", ".join(f"k={k}: {n}" for k, n in self.sizes.items())
                                                      or "none")

    def to_frame(self) -> pd.DataFrame:
        import pandas as pd

        ks = sorted(self.sizes)
        return pd.DataFrame({"freq": ks, "neurons": [self.sizes[k] for k in ks], "key": [k in self.key for k in ks]})

    def figure(self) -> Any:
        import plotly.graph_objects as go

        ks = sorted(self.sizes)
        bar = go.Figure(go.Bar(x=[str(k) for k in ks], y=[self.sizes[k] for k in ks],
                               marker_color=[KEY if k in self.key else OTHER for k in ks]))
        return bar.update_layout(title="Clustered neurons per frequency (key frequencies in red)",
                                 xaxis_title="frequency k", yaxis_title="neurons", height=360)


@dataclass(frozen=True)
class NeuronGrids(Result):
    """One neuron per key frequency (the best explained one): its activation over the (a, b) grid."""

    p: int
    neurons: list[tuple[int, int, float]]  # (frequency, neuron, fve)
    acts: Float[Tensor, "pairs n"]  # column j: neuron neurons[j][1], rows a-major

    def summary(self) -> str:
        return "; ".join(f"k={k}: neuron {n} (FVE {f:.0%})" for k, n, f in self.neurons) or "no clustered neuron"

    def to_frame(self) -> pd.DataFrame:
        import pandas as pd

        return pd.DataFrame(self.neurons, columns=["freq", "neuron", "fve"])

    def figure(self) -> Any:
        import plotly.graph_objects as go

        return go.Figure(self.figure_spec())

    def figure_spec(self) -> dict[str, Any]:
        """:meth:`figure` as a plotly figure dict (:mod:`mechwork.analysis.figspec`), what a page draws."""
        from mechwork.analysis.figspec import colorscale

        heats = [{"colorscale": colorscale("RdBu"), "hovertemplate": "a=%{y}, b=%{x}: %{z:.3g}<extra></extra>",
                  "showscale": False, "z": self.acts[:, j].reshape(self.p, self.p).numpy(), "zmid": 0,
                  "type": "heatmap"} for j in range(len(self.neurons))]
        fig = _heatmap_grid(heats, [f"k={k}: neuron {n} (FVE {f:.0%})" for k, n, f in self.neurons], 0.04, 0.12)
        rows = -(-len(self.neurons) // min(len(self.neurons), 4))
        fig["layout"] |= {"title": {"text": "One neuron per key frequency: activation over (a, b)"},
                          "height": 300 * rows + 80}
        return fig


@dataclass(frozen=True)
class EmbeddingAblation(Result):
    """The Fourier hypothesis tested: the embedding with only the key frequencies kept, and with them removed."""

    kept: Any  # FourierAblation (keep=True)
    removed: Any  # FourierAblation (keep=False)

    def summary(self) -> str:
        return f"{self.kept.summary()}. {self.removed.summary()}."

    def to_frame(self) -> pd.DataFrame:
        import pandas as pd

        return pd.DataFrame({"embedding": ["unablated", "key frequencies only", "key frequencies removed"],
                             "accuracy": [self.kept.base_accuracy, self.kept.accuracy, self.removed.accuracy],
                             "loss": [self.kept.base_loss, self.kept.loss, self.removed.loss]})

    def figure(self) -> Any:
        import plotly.graph_objects as go

        df = self.to_frame()
        abl = go.Figure(go.Bar(x=df["embedding"].tolist(), y=df["accuracy"].tolist(),
                               marker_color=[GREY, GREEN, KEY]))
        return abl.update_layout(title="Accuracy on all pairs with the embedding projected", yaxis_range=[0, 1],
                                 height=360, xaxis_title="embedding", yaxis_title="accuracy on all pairs")


# -- the analysis -----------------------------------------------------------------------------------
def _examples(p: int) -> list[tuple[int, int]]:
    return [(1, 2), (p // 3, p // 2), (p - 1, p - 2)]


def accuracy_of(logits: Float[Tensor, "pairs d_vocab_out"], task: Any) -> GridAccuracy:
    """:class:`GridAccuracy` of the last-position logits of every pair (rows in ``task.tokens`` order)."""
    out = {}
    for name, (loss, acc) in split_scores(logits, task).items():
        out[name], out[f"{name}_loss"] = acc, loss
    return GridAccuracy(n_all=task.n_pairs, n_train=len(task.train_idx), n_test=len(task.test_idx), **out)


def grid_logits(model: Any, task: Any, batch_size: int = 4096) -> Float[Tensor, "pairs d_vocab_out"]:
    """Last-position logits of every pair through the model's hooked forward, in batches, on the CPU."""
    device = next(model.parameters()).device
    with torch.no_grad():
        return torch.cat([model(task.tokens[i : i + batch_size].to(device))[:, -1]
                          for i in range(0, task.n_pairs, batch_size)]).cpu()


def evaluate_modadd(model: Any, task: Any, batch_size: int = 4096) -> dict[str, float]:
    """Loss and accuracy of ``model`` (through its hooked forward) on all pairs, train and test.

    >>> import mechwork
    >>> acc = evaluate_modadd(mechwork.load("modadd-113"), mechwork.preset("modadd-113").task)
    >>> acc["all_acc"] > 0.995
    True
    """
    return accuracy_of(grid_logits(model, task, batch_size), task).to_dict()


def _attention(task: Any, logits: Tensor, pats: Tensor) -> EqualsAttention:
    """``pats``: layer 0's attention pattern of every pair, ``[n_pairs, head, dest, src]``."""
    p = task.p
    a_tok, b_tok = task.tokens[:, 0], task.tokens[:, 1]
    row_of = {(int(a), int(b)): i for i, (a, b) in enumerate(zip(a_tok, b_tok, strict=True))}
    grid = torch.full((p * p, *pats.shape[1:2], pats.shape[-1]), float("nan"))  # a pair left out stays blank
    grid[a_tok * p + b_tok] = pats[:, :, 2, :]
    examples = [AttentionExample(a, b, pats[i], int(logits[i].argmax()), int(task.labels[i]))
                for a, b in _examples(p) if (i := row_of.get((a, b))) is not None]
    return EqualsAttention(p, grid, examples)


def _neuron_grids(acts: Tensor, p: int, nf: NeuronFrequencies, kf: KeyFrequencies) -> NeuronGrids | None:
    best = []
    for k in kf.freqs:
        members = ((nf.freq == k) & nf.clustered).nonzero()[:, 0]
        if len(members):
            n = int(members[nf.fve[members].argmax()])
            best.append((k, n, float(nf.fve[n])))
    return NeuronGrids(p, best, acts[:, [n for _, n, _ in best]]) if best else None


def fourier_results(model: Any, task: Any, logits: Tensor, acts: Tensor) -> dict[str, Result | None]:
    """The Fourier analyses of one grid pass (``logits`` and MLP ``acts`` of every pair)."""
    from mechwork.analysis import trig
    from mechwork.analysis.ablation import keep_frequencies, remove_frequencies

    nf = neuron_frequencies_of(acts, task.p)
    kf = key_frequencies(model, task, neurons=nf)
    return {
        "embedding": embedding_spectrum(model, "W_E", task.p),
        "unembedding": embedding_spectrum(model, "W_U", task.p),
        "neurons": nf, "key_frequencies": kf,
        "cluster_sizes": ClusterSizes(nf.cluster_sizes(), kf.freqs),
        "neuron_grids": _neuron_grids(acts, task.p, nf, kf),
        "trig_fit": trig.logit_trig_fit_of(logits, task, kf.freqs),
        "losses": trig.restricted_excluded_of(logits, task, kf.freqs),
        "ablation": EmbeddingAblation(keep_frequencies(model, task, kf.freqs, base_logits=logits),
                                      remove_frequencies(model, task, kf.freqs, base_logits=logits)),
    }


def stored_progress(src: Source) -> ProgressMeasures | None:
    """The progress measures: a preset's stored ones, or measured over a run's checkpoints (at least two)."""
    if src.kind == "preset":
        from mechwork.runs import embedded_info, embedded_path

        if not embedded_path(src.name).with_suffix(".json").is_file():
            return None
        history = embedded_info(src.name).get("history") or {}
        if "progress" not in history:
            return None
        from mechwork.analysis.progress import ProgressMeasures

        return ProgressMeasures.from_dict(history["progress"])
    from mechwork.runs import Run

    run = Run(src.name)
    if len(run.steps) < 2 or not fourier_applies(run.task, run.model_config):
        return None
    from mechwork.analysis.progress import progress_measures

    return progress_measures(run)


def grid_hooks(src: Source) -> list[str]:
    """The hooks :func:`analyse`'s pass over the grid caches: layer 0's attention pattern, and its MLP activations
    when the Fourier analyses apply; a ConfigError when ``src`` is not a modular-arithmetic run that fits its
    model."""
    task, cfg = src.task, src.model.cfg
    if task.kind != "modadd":
        raise ConfigError(f"the grokking dashboard needs a modular-arithmetic run (got a {task.kind} run: "
                          f"{src.name!r})")
    if cfg.d_vocab != task.d_vocab or cfg.d_vocab_out != task.d_vocab_out:
        raise ConfigError(f"model vocabulary ({cfg.d_vocab} in, {cfg.d_vocab_out} out) does not match the task's "
                          f"p={task.p} (needs {task.d_vocab} in, {task.d_vocab_out} out)")
    pattern = hook_name("pattern", 0)
    return [pattern] if fourier_reason(task, src.model_config) else [pattern, hook_name("mlp_post", 0)]


def analyse(src: Source, *, progress: bool = True, grid: tuple[Tensor, dict[str, Tensor]] | None = None) -> Analysis:
    """Every result of a modular-arithmetic run or preset (see the module docstring); ``progress=False`` skips
    the progress measures (a pass over every checkpoint of a run). ``grid``: ``grid_pass(model, task,
    grid_hooks(src))``, when the caller has it (else that pass is made here)."""
    task, model = src.task, src.model
    hooks = grid_hooks(src)
    reason = fourier_reason(task, src.model_config)
    if grid is None:
        grid = grid_pass(model, task, hooks)  # the one pass over the grid
    elif not set(hooks) <= set(grid[1]) or grid[0].shape[0] != task.n_pairs:
        raise invalid("grid", f"grid_pass's (logits, cache) over the {task.n_pairs} pairs, cached at {hooks}",
                      f"{grid[0].shape[0]} rows cached at {sorted(grid[1])}")
    logits, cache = grid
    results: dict[str, Result | None] = {"accuracy": accuracy_of(logits, task),
                                         "attention": _attention(task, logits, cache[hooks[0]])}
    if reason is None:
        results |= fourier_results(model, task, logits, cache[hooks[1]][:, -1])
    if progress:
        results["progress"] = stored_progress(src)
    return Analysis(src.info, {k: v for k, v in results.items() if v is not None})


def evaluate(src: Source) -> Analysis:
    """The quick bundle: only ``accuracy`` (with losses), through the model's hooked forward in batches."""
    return Analysis(src.info, {"accuracy": accuracy_of(grid_logits(src.model, src.task), src.task)})
