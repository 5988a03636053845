"""The prompt analysis: everything mechwork shows of any model on a few prompts, computed once, in one bundle.

:func:`analyse_prompts` runs every analysis of the prompt dashboard
(:mod:`mechwork.dashboard.prompt`) and returns an :class:`~mechwork.results.Analysis`; the page then
renders that bundle alone. It works on any model :func:`mechwork.load` opens (a preset, a run, a
``save_pretrained`` directory, a bridge). For each prompt (at most :data:`MAX_PROMPTS`; prompts may differ
in length, so each runs on its own):

* ``attention``: every head's pattern (:func:`~mechwork.analysis.attention.attention_patterns`);
* ``predictions``: the top two next tokens at the last position, with their probabilities;
* ``dla``: direct logit attribution at the last position of the model's top prediction, and ``dla_diff``
  of the top prediction minus the runner-up (:func:`mechwork.analysis.logit.direct_logit_attribution`,
  per head);
* ``lens``: the logit lens, every layer x position (:func:`mechwork.analysis.lens.logit_lens`);
  a model DLA or the lens cannot split exactly gets a :class:`NotApplicable` result naming why;

then, once for the model, ``detectors``: previous-token, induction and duplicate-token scores
(:func:`~mechwork.analysis.attention.head_detectors` on repeated random tokens of the model's vocabulary, halves
of up to 32 tokens; left out for a context under 4 tokens).
For a ``pair`` (clean, corrupted; same token length), the metric is a logit difference at the last
position, chosen from the model's own predictions (:func:`pair_metric`): the clean prompt's top next token
minus the corrupted prompt's top next token; when both prompts predict the same token, the clean top
token minus the clean runner-up instead. With it: exact activation patching of ``resid_pre`` by layer and
position (``patch_resid``) and of every head's output ``z`` (``patch_heads``), and the attribution-patching
sweeps of the same cells (``attr_resid``, ``attr_heads``), all in the denoising direction; and ``circuit``: the
pair's circuit (:func:`circuit_result`: EAP scores over the position-free edge graph, exact scores, the top-n
circuit and its faithfulness curve), or a :class:`NotApplicable` naming why there is none.

Example::

    >>> import mechwork
    >>> from mechwork.analysis.prompt import analyse_prompts
    >>> model = mechwork.load("induction-2l", device="cpu")
    >>> bundle = analyse_prompts(model, [[1, 2, 3, 1, 2]], pair=([1, 2, 3, 1, 2], [4, 5, 6, 1, 2]))
    >>> sorted(bundle)[:4], bundle["metric"].rule
    (['attention', 'attr_heads', 'attr_resid', 'circuit'], 'clean top vs corrupted top')
"""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass, field
from typing import TYPE_CHECKING, Any

import torch
from jaxtyping import Float, Int
from torch import Tensor

from mechwork.errors import ConfigError
from mechwork.results import Analysis, Result

if TYPE_CHECKING:  # pragma: no cover
    import pandas as pd
    from transformer_lens.model_bridge import TransformerBridge

    from mechwork.analysis.lens import LogitLens
    from mechwork.prompts import Prompts

__all__ = ["MAX_PROMPTS", "NotApplicable", "PairMetric", "PerPrompt", "Predictions", "analyse_prompts",
           "circuit_result", "default_prompts", "model_facts", "pair_metric", "top_two"]

MAX_PROMPTS = 8  # prompts analysed per page (attention, DLA and lens run once per prompt)
SAME_TOP = "clean top vs clean runner-up"
DIFFERENT_TOP = "clean top vs corrupted top"


@dataclass(frozen=True)
class PerPrompt(Result):
    """One result per prompt (prompts may differ in length, so each analysis runs on each prompt alone)."""

    items: tuple[Any, ...]
    texts: tuple[str, ...]
    what: str  # e.g. "attention patterns"

    def __len__(self) -> int:
        return len(self.items)

    def __getitem__(self, i: int) -> Any:
        return self.items[i]

    def summary(self) -> str:
        return f"{self.what} of {len(self.items)} prompt(s): " + "; ".join(
            f"prompt {i + 1}: {r.summary()}" for i, r in enumerate(self.items))

    def to_frame(self) -> pd.DataFrame:
        import pandas as pd

        frames = [r.to_frame().assign(prompt=i + 1) for i, r in enumerate(self.items)]
        return pd.concat(frames, ignore_index=True) if frames else pd.DataFrame()


@dataclass(frozen=True)
class NotApplicable(Result):
    """An analysis this model does not allow, and why (the analysis's own one-line refusal)."""

    what: str
    reason: str

    def summary(self) -> str:
        return f"{self.what} does not apply to this model: {self.reason}"

    def to_frame(self) -> pd.DataFrame:
        import pandas as pd

        return pd.DataFrame({"analysis": [self.what], "reason": [self.reason]})


@dataclass(frozen=True)
class Predictions(Result):
    """The model's two most likely next tokens at each prompt's last position, and its prompts' token strings."""

    texts: tuple[str, ...]
    labels: tuple[tuple[str, ...], ...]  # token strings per prompt
    top: tuple[tuple[int, str, float], ...]  # per prompt: (id, string, probability) of the top next token
    runner_up: tuple[tuple[int, str, float], ...]  # the same for the second
    dla_top: tuple[tuple[str, float], ...] = ()  # per prompt: the largest direct contributor to the top token
    lens_first: tuple[int | None, ...] = ()  # per prompt: first lens layer ranking the final top token first
    lens_layers: tuple[str, ...] = ()  # the lens's layer labels (the last one is the model's output)
    model: dict[str, Any] = field(default_factory=dict)  # the model's facts (model_facts), for the page
    source: str = "given"  # where the prompts came from ("given", or how they were made)
    dropped: int = 0  # prompts beyond MAX_PROMPTS, not analysed

    def summary(self) -> str:
        return "; ".join(f"prompt {i + 1}: {t[1]!r} ({t[2]:.1%}), then {r[1]!r} ({r[2]:.1%})"
                         for i, (t, r) in enumerate(zip(self.top, self.runner_up, strict=True)))

    def to_frame(self) -> pd.DataFrame:
        import pandas as pd

        return pd.DataFrame({
            "prompt": list(range(1, len(self.texts) + 1)), "text": list(self.texts),
            "tokens": [len(lab) for lab in self.labels],
            "top": [t[1] for t in self.top], "p(top)": [t[2] for t in self.top],
            "runner-up": [r[1] for r in self.runner_up], "p(runner-up)": [r[2] for r in self.runner_up],
        })


@dataclass(frozen=True)
class PairMetric(Result):
    """The logit difference a prompt pair's sweeps measure, and why those two tokens."""

    clean: tuple[str, ...]  # token strings of the clean prompt
    corrupted: tuple[str, ...]
    answer: tuple[int, str]  # (id, string): the clean prompt's top next token
    wrong: tuple[int, str]  # the corrupted prompt's top next token, or the clean runner-up (see rule)
    rule: str  # DIFFERENT_TOP or SAME_TOP
    clean_value: float  # the metric on the clean prompt
    corrupted_value: float

    def summary(self) -> str:
        why = ("both prompts predict the same top token, so the clean runner-up" if self.rule == SAME_TOP
               else "the corrupted prompt's top next token")
        return (f"metric: logit of {self.answer[1]!r} (the clean prompt's top next token) minus logit of "
                f"{self.wrong[1]!r} ({why}) at the last position; clean {self.clean_value:.4g}, corrupted "
                f"{self.corrupted_value:.4g}")

    def to_frame(self) -> pd.DataFrame:
        import pandas as pd

        return pd.DataFrame({"prompt": ["clean", "corrupted"], "text": ["".join(self.clean), "".join(self.corrupted)],
                             "tokens": [len(self.clean), len(self.corrupted)],
                             "metric": [self.clean_value, self.corrupted_value]})


def model_facts(model: TransformerBridge) -> dict[str, Any]:
    """What a page says of a model: layers, widths, heads, normalisation, positions, vocabulary, context."""
    from mechwork.prompts import has_tokenizer

    c = model.cfg
    return {"layers": int(c.n_layers), "d_model": int(c.d_model), "heads": f"{int(c.n_heads)} of {int(c.d_head)}",
            "d_mlp": getattr(c, "d_mlp", None) if not getattr(c, "attn_only", False) else "attention-only",
            "normalization": str(getattr(c, "normalization_type", None)),
            "positions": str(getattr(c, "positional_embedding_type", "standard")),
            "d_vocab": int(c.d_vocab), "n_ctx": int(c.n_ctx),
            "architecture": str(getattr(c, "original_architecture", None) or getattr(c, "architecture", "-")),
            "tokenizer": "yes" if has_tokenizer(model) else "no (token ids)"}


def _device(model: TransformerBridge) -> torch.device:
    return next(model.parameters()).device


@torch.no_grad()
def top_two(model: TransformerBridge, row: Int[Tensor, " pos"]) -> tuple[tuple[int, str, float], ...]:
    """(id, string, probability) of the two most likely next tokens after ``row``."""
    with torch.no_grad():
        return _top_two_of(model, model(row[None].to(_device(model)))[0, -1])


def _top_two_of(model: TransformerBridge, logits: Float[Tensor, " vocab"]) -> tuple[tuple[int, str, float], ...]:
    """:func:`top_two` read from the logits at the last position of a run already made."""
    vals, ids = logits.float().softmax(-1).cpu().topk(2)
    return tuple((int(i), _token_str(model, int(i)), float(v)) for v, i in zip(vals, ids, strict=True))


def _token_str(model: TransformerBridge, token: int) -> str:
    from mechwork.prompts import has_tokenizer

    return str(model.to_single_str_token(token)) if has_tokenizer(model) else str(token)


def default_prompts(model: TransformerBridge, *, half: int | None = None, seed: int = 0) -> tuple[Prompts, tuple[
        Prompts, Prompts], str]:
    """Prompts for a model with nothing given: two ``[r, r]`` sequences of random tokens of its vocabulary,
    and a pair: the first of them (clean) against it with its first half replaced by fresh tokens (corrupted).
    """
    from mechwork.analysis.attention import repeated_tokens
    from mechwork.prompts import tokenize

    n_ctx, d_vocab = int(model.cfg.n_ctx), int(model.cfg.d_vocab)
    half = min(n_ctx // 2, 20) if half is None else half
    rep = repeated_tokens(d_vocab, half, batch=2, seed=seed)
    fresh = repeated_tokens(d_vocab, half, batch=1, seed=seed + 1)[0, :half]
    corrupted = torch.cat([fresh, rep[0, half:]])
    how = f"repeated random tokens: {half} tokens of the vocabulary, then the same {half} again"
    return tokenize(model, rep), (tokenize(model, rep[:1]), tokenize(model, corrupted[None])), how


def pair_metric(model: TransformerBridge, clean: Prompts, corrupted: Prompts) -> tuple[PairMetric, Any]:
    """The pair's logit-difference metric (see the module docstring) and the metric function for patching."""
    from mechwork.analysis.metrics import logit_diff

    dev = _device(model)
    with torch.no_grad():  # one run of each prompt: its top two and its metric value
        c_logits, k_logits = model(clean.batch().to(dev)), model(corrupted.batch().to(dev))
    (a, a_s, _), (r, r_s, _) = _top_two_of(model, c_logits[0, -1])
    w, w_s, _ = _top_two_of(model, k_logits[0, -1])[0]
    rule = SAME_TOP if w == a else DIFFERENT_TOP
    wrong = (r, r_s) if rule == SAME_TOP else (w, w_s)
    metric = logit_diff(a, wrong[0])
    cv, kv = float(metric(c_logits)), float(metric(k_logits))
    return PairMetric(clean.labels[0], corrupted.labels[0], (a, a_s), wrong, rule, cv, kv), metric


def _per_prompt(model: TransformerBridge, prompts: Prompts, preds: Predictions) -> dict[str, Result]:
    """Attention, DLA (top; top minus runner-up) and lens on each prompt; DLA or lens on a model they cannot
    split exactly (a one-line ConfigError of theirs) is :class:`NotApplicable`, with that line."""
    from mechwork.analysis.attention import attention_patterns
    from mechwork.analysis.lens import logit_lens
    from mechwork.analysis.logit import direct_logit_attribution

    dev = _device(model)
    rows = [(r[None].to(dev), lab, t[0], s[0]) for r, lab, t, s in
            zip(prompts.rows, prompts.labels, preds.top, preds.runner_up, strict=True)]
    jobs: dict[str, tuple[str, Callable[..., Result]]] = {
        "attention": ("attention patterns", lambda x, lab, a, w: attention_patterns(model, x, [list(lab)])),
        "dla": ("direct logit attribution of the top prediction",
                lambda x, lab, a, w: direct_logit_attribution(model, x, a, unit="head")),
        "dla_diff": ("direct logit attribution of top minus runner-up",
                     lambda x, lab, a, w: direct_logit_attribution(model, x, a, w, unit="head")),
        "lens": ("logit lens", lambda x, lab, a, w: logit_lens(model, x)),
    }
    out: dict[str, Result] = {}
    for key, (what, run) in jobs.items():
        try:
            out[key] = PerPrompt(tuple(run(*row) for row in rows), prompts.texts, what)
        except ConfigError as e:
            if key == "attention":
                raise
            out[key] = NotApplicable(what, str(e))
    return out


def _sweeps(model: TransformerBridge, clean: Prompts, corrupted: Prompts) -> dict[str, Result]:
    from mechwork.analysis.attribution import attribute
    from mechwork.analysis.patching import patch

    info, metric = pair_metric(model, clean, corrupted)
    c, k = clean.batch(), corrupted.batch()
    out: dict[str, Result] = {"metric": info}
    for key, site, by in (("resid", "resid_pre", "layer_pos"), ("heads", "z", "head")):
        out[f"patch_{key}"] = patch(model, c, k, metric, site=site, by=by)
        out[f"attr_{key}"] = attribute(model, c, k, metric, site=site, by=by)
    out["circuit"] = circuit_result(model, c, k, metric, values=(info.clean_value, info.corrupted_value))
    return out


def circuit_result(model: TransformerBridge, clean: Int[Tensor, "batch pos"], corrupted: Int[Tensor, "batch pos"],
                   metric: Callable[[Tensor], Any], *, values: tuple[float, float] | None = None, **kw: Any) -> Result:
    """The circuit of a clean/corrupted pair (:func:`mechwork.analysis.circuitreport.circuit_report`, EAP by default),
    or :class:`NotApplicable` with the one-line reason when there is none: the corruption does not move the metric,
    or the model's graph cannot be built (grouped-query attention). ``values``: the metric's clean and corrupted
    values when the caller has them (else two forward passes measure them)."""
    from mechwork.analysis.circuitreport import circuit_report

    what = "circuit discovery"
    if values is None:
        with torch.no_grad():
            dev = _device(model)
            a, b = (float(torch.as_tensor(metric(model(x.to(dev)))).float().mean()) for x in (clean, corrupted))
    else:
        a, b = values
    if not abs(a - b) >= 1e-3 * max(1.0, abs(a), abs(b)):
        return NotApplicable(what, f"the corruption barely moves the metric (clean {a:.4g}, corrupted {b:.4g}), so "
                                   "no circuit recovers a share of it")
    try:
        return circuit_report(model, clean, corrupted, metric, **kw)
    except ConfigError as e:
        return NotApplicable(what, str(e))


def _as_prompts(model: TransformerBridge, prompts: Any) -> Prompts:
    from mechwork.prompts import Prompts, tokenize

    return prompts if isinstance(prompts, Prompts) else tokenize(model, prompts)


def _as_pair(model: TransformerBridge, pair: Any) -> tuple[Prompts, Prompts]:
    from mechwork.prompts import Prompts, prompt_pair

    if not (isinstance(pair, (tuple, list)) and len(pair) == 2):
        raise ConfigError(f"'pair' must be (clean, corrupted) (got {type(pair).__name__})")
    a, b = pair
    if isinstance(a, Prompts) and isinstance(b, Prompts):
        if a.lengths != b.lengths or len(a) != 1:
            raise ConfigError(f"'pair' must be one clean and one corrupted prompt of one length (clean "
                              f"{', '.join(map(str, a.lengths))} tokens, corrupted {', '.join(map(str, b.lengths))})")
        return a, b
    return prompt_pair(model, a, b)


def analyse_prompts(model: TransformerBridge, prompts: Any = None, pair: Any = None, *, name: str = "model",
                    info: Any = None, source: str = "given") -> Analysis:
    """Every result of the prompt page (see the module docstring), each computed once, as one bundle.

    ``prompts``: a :class:`~mechwork.prompts.Prompts` or anything :func:`mechwork.prompts.tokenize` takes
    (None: the pair's two prompts). ``pair``: (clean, corrupted), each a prompt or :class:`Prompts`.
    ``info``: the source's :class:`~mechwork.source.SourceInfo` (default: one naming ``name``, no task).
    """
    from mechwork.analysis.attention import head_detectors
    from mechwork.hooks import check_eval

    check_eval(model, "the prompt analysis")
    clean_corrupted = _as_pair(model, pair) if pair is not None else None
    if prompts is None and clean_corrupted is None:
        raise ConfigError("give prompts, a pair, or both (default_prompts(model) makes both)")
    if prompts is None:
        assert clean_corrupted is not None
        prompts = _join(*clean_corrupted)
    given = _as_prompts(model, prompts)
    kept = _head(given, MAX_PROMPTS)
    tops = [top_two(model, row) for row in kept.rows]
    preds = Predictions(kept.texts, kept.labels, tuple(t[0] for t in tops), tuple(t[1] for t in tops),
                        model=model_facts(model), source=source, dropped=len(given) - len(kept))
    each = _per_prompt(model, kept, preds)
    results: dict[str, Result] = {"predictions": _digest(preds, each["dla"], each["lens"]), **each}
    if int(model.cfg.n_ctx) >= 4:  # the detectors need two halves of at least 2 tokens
        results["detectors"] = head_detectors(model, half=_half(model))
    if clean_corrupted is not None:
        results.update(_sweeps(model, *clean_corrupted))
    return Analysis(info if info is not None else _info(model, name), results)


def _digest(preds: Predictions, dla: Result, lens: Result) -> Predictions:
    """The predictions with the numbers the page's summary reads from the DLA and the lens (where they ran)."""
    from dataclasses import replace

    if isinstance(dla, PerPrompt):
        preds = replace(preds, dla_top=tuple((str(r.top(1)[0][0]), float(r.top(1)[0][1])) for r in dla.items))
    if isinstance(lens, PerPrompt) and lens.items:
        preds = replace(preds, lens_first=tuple(_lens_first(r) for r in lens.items),
                        lens_layers=tuple(str(x) for x in _lens_layers(lens.items[0])))
    return preds


def _lens_layers(lens: LogitLens) -> list[str]:
    return list(lens.labels)


def _lens_first(lens: LogitLens) -> int | None:
    """The first lens layer at which the model's final top-1 token (the lens's target at the last position of
    its one prompt) ranks first."""
    hits = (lens.ranks[:, 0, -1] == 0).nonzero()
    return int(hits[0, 0]) if len(hits) else None


def _half(model: TransformerBridge) -> int:
    return max(2, min(int(model.cfg.n_ctx) // 2, 32))


def _head(p: Prompts, n: int) -> Prompts:
    from mechwork.prompts import Prompts

    return p if len(p) <= n else Prompts(p.rows[:n], p.labels[:n], p.texts[:n])


def _join(a: Prompts, b: Prompts) -> Prompts:
    from mechwork.prompts import Prompts

    return Prompts(a.rows + b.rows, a.labels + b.labels, a.texts + b.texts)


def _info(model: TransformerBridge, name: str) -> Any:
    from mechwork.source import SourceInfo

    return SourceInfo(name, "bridge", None, None, None, None, {}, None,  # type: ignore[arg-type]
                      tuple(getattr(model, "hook_dict", ())))
