"""The results a post can name: each a :class:`BlockKind` (its arguments, the models it applies to, how it renders).

:data:`BLOCKS` maps a block's first key (``attention``, ``fourier``, ...) to its kind. The parser
(:mod:`mechwork.post.parse`) checks names, arguments and models against it before anything runs;
:func:`render_block` then computes the result with the model's :class:`BlockContext` (one per model per build:
the model is opened once, lazily, and the kit's analysis bundle is computed at most once) and returns the page
blocks (:class:`mechwork.dashboard.page.Block`) that the dashboard's own sections draw. The renderers live in
:mod:`mechwork.post.kinds`. Importing this module imports no torch.

Example::

    >>> sorted(BLOCKS)[:4]
    ['attention', 'circuit', 'dla', 'fourier']
    >>> BLOCKS["fourier"].applies("induction")
    'Fourier analysis is for modular arithmetic (modadd); this model was trained on induction'
    >>> BLOCKS["fourier"].args["matrix"].default, COMMON_ARGS
    ('W_E', ('title', 'caption'))
"""

from __future__ import annotations

from collections.abc import Callable, Mapping
from dataclasses import dataclass
from pathlib import Path
from typing import TYPE_CHECKING, Any

from mechwork.errors import MechworkError, PostError
from mechwork.post import kinds
from mechwork.post.blockargs import COMMON, ArgSpec, choice, heads, integer, latents, layer, text, tokens

if TYPE_CHECKING:  # pragma: no cover
    from mechwork.dashboard.page import Block
    from mechwork.source import Source

__all__ = ["BLOCKS", "COMMON_ARGS", "ArgSpec", "BlockContext", "BlockKind", "render_block", "unlabelled",
           "with_labels"]

COMMON_ARGS = ("title", "caption")  # every kind takes these (and ``step``, a run's checkpoint)
SITES = ("resid_pre", "resid_mid", "attn_out", "mlp_out", "z", "q", "k", "v", "pattern", "mlp_post")  # hooks.SITES
CIRCUIT_METHODS = ("eap", "eap-ig", "exact", "acdc")  # analysis.circuitreport.METHODS (a test checks both)


@dataclass(frozen=True)
class BlockKind:
    """One result a block can name: ``doc`` (one line), ``args`` (besides the common ones), ``applies`` (the
    model's task kind, or None for a model directory -> None if it applies, else why not), ``render``."""

    name: str
    doc: str
    args: Mapping[str, ArgSpec]
    applies: Callable[[str | None], str | None]
    render: Callable[[BlockContext, Mapping[str, Any]], list[Block]]

    @property
    def all_args(self) -> dict[str, ArgSpec]:
        """Its own arguments and the common ones."""
        return {**self.args, **COMMON}


def _any(kind: str | None) -> str | None:
    return None


def _modadd(what: str) -> Callable[[str | None], str | None]:
    def applies(kind: str | None) -> str | None:
        if kind == "modadd":
            return None
        trained = f"this model was trained on {kind}" if kind else "a model directory has no task"
        return f"{what} is for modular arithmetic (modadd); {trained}"

    return applies


def _has_task(what: str) -> Callable[[str | None], str | None]:
    def applies(kind: str | None) -> str | None:
        return None if kind is not None else f"{what} needs a run or preset (a model directory has no task)"

    return applies


def _repeats(kind: str | None) -> str | None:
    if kind == "modadd":
        return "head detectors need two repeated halves of at least 2 tokens; modular arithmetic prompts have 3"
    return None


def _kind(kind_name: str, kind_doc: str, kind_applies: Callable[[str | None], str | None],
          kind_render: Callable[[BlockContext, Mapping[str, Any]], list[Block]], /, **args: ArgSpec) -> BlockKind:
    return BlockKind(kind_name, kind_doc, args, kind_applies, kind_render)


_PROMPT = tokens(default=None)  # None: the task's standard probe (kinds.probe), 'repeated N', ids or text
BLOCKS: dict[str, BlockKind] = {k.name: k for k in [
    _kind("attention", "attention patterns of every head on one sequence (circuitsvis)", _any, kinds.attention,
          tokens=_PROMPT, seed=integer(0, 2**31 - 1), layer=layer(), heads=heads()),
    _kind("fourier", "the Fourier spectrum of the embedding or unembedding", _modadd("Fourier analysis"),
          kinds.fourier, matrix=choice("W_E", "W_U")),
    _kind("key-frequencies", "the key frequencies and each one's share of the logits",
          _modadd("Key-frequency analysis"), kinds.key_frequencies),
    _kind("neuron-clusters", "MLP neurons grouped by their frequency", _modadd("Neuron clustering"),
          kinds.neuron_clusters),
    _kind("progress", "the progress measures over training", _modadd("Progress measures"), kinds.progress),
    _kind("head-detectors", "previous-token, induction and duplicate-token scores of every head", _repeats,
          kinds.head_detectors, tokens=_PROMPT, seed=integer(0, 2**31 - 1)),
    _kind("patching", "activation patching from a corrupted prompt into a clean one", _any, kinds.patching,
          site=choice(*SITES), by=choice("auto", "layer", "layer_pos", "head", "head_pos", "head_dest_src", "neuron"),
          clean=_PROMPT, corrupted=_PROMPT, n=integer(1, 64, default=8), seed=integer(0, 2**31 - 1),
          metric=choice("logit_diff")),
    _kind("dla", "direct logit attribution of the answer to every component", _any, kinds.dla, tokens=_PROMPT),
    _kind("logit-lens", "the answer read off the residual stream after every layer", _any, kinds.logit_lens,
          tokens=_PROMPT),
    _kind("circuit", "the circuit of the standard probe as a graph, with its faithfulness", _any, kinds.circuit,
          method=choice(*CIRCUIT_METHODS), top=integer(1, None, default=None), n=integer(1, 64, default=8)),
    _kind("sae-features", "the features of a shipped sparse autoencoder", _has_task("An SAE feature page"),
          kinds.sae_features, hook=text(default=None, valid="a hook with a shipped SAE"), latents=latents()),
    _kind("training-curves", "train and test loss (and accuracy) by step", _has_task("Training curves"),
          kinds.training_curves),
    _kind("result", "any named result of the kit's analysis bundle", _has_task("A kit result"), kinds.result,
          name=text(valid="the name of a result in the model's analysis bundle")),
]}


class BlockContext:
    """One model of a build: opened once, lazily (``source``), its kit analysis computed at most once."""

    def __init__(self, model: str, base: Path | None = None, device: str | None = None, step: int | None = None):
        self._model_arg, self.base, self.device, self.step = model, base, device, step
        self._source: Source | None = None
        self._analysis: Any = None
        self.memo: dict[Any, Any] = {}  # renderers keep shared intermediate results here

    @property
    def model_ref(self) -> str:
        """The model as a path (relative to ``base`` where it exists) or a preset name."""
        p = Path(self._model_arg).expanduser()
        for cand in ([p] if p.is_absolute() else [*([Path(self.base) / p] if self.base is not None else []), p]):
            if cand.exists():
                return str(cand)
        return self._model_arg

    @property
    def source(self) -> Source:
        """The opened run, preset or model directory (eval mode)."""
        if self._source is None:
            from mechwork.source import open_source

            self._source = open_source(self.model_ref, step=self.step, device=self.device)
            self._source.model.eval()
        return self._source

    @property
    def model(self) -> Any:
        return self.source.model

    @property
    def task(self) -> Any:
        return self.source.task

    def at(self, step: int | None) -> BlockContext:
        """This model at checkpoint ``step`` (None or this context's own step: this context), opened once."""
        if step is None or step == self.step:
            return self
        key = ("step", step)
        if key not in self.memo:
            self.memo[key] = BlockContext(self._model_arg, self.base, self.device, step)
        ctx: BlockContext = self.memo[key]
        return ctx

    def analysis(self) -> Any:
        """The kit's analysis bundle of this model (computed once)."""
        if self._analysis is None:
            from mechwork.kit import kit_of

            if self.task is None:
                raise PostError(f"{self.model_ref} has no task, so no kit analysis; valid: a run or a preset")
            self._analysis = kit_of(self.task).analyse(self.source)
        return self._analysis


def render_block(block: Any, ctx: BlockContext) -> list[Block]:
    """The page blocks of ``block`` (a :class:`mechwork.post.parse.ResultBlock`); any failure is one
    :class:`PostError` line naming its file and line."""
    kind = BLOCKS[block.kind]
    try:
        blocks = kind.render(ctx.at(block.args.get("step")), block.args)
    except PostError as e:
        msg = str(e)
        if msg.startswith(f"{block.path}:"):
            raise
        raise PostError(f"{block.path}:{block.line}: {block.kind}: {_one_line(msg)}") from e
    except (MechworkError, ValueError) as e:
        raise PostError(f"{block.path}:{block.line}: {block.kind}: {_one_line(str(e))}") from e
    return with_labels(blocks, block.args)


def unlabelled(block: Any) -> Any:
    """``block`` without its ``title`` and ``caption`` (they only relabel the first page block, so a result
    cached without them serves every label): its arguments with both None."""
    from dataclasses import replace

    return replace(block, args={**block.args, **dict.fromkeys(COMMON_ARGS)})


def with_labels(blocks: list[Block], args: Mapping[str, Any]) -> list[Block]:
    """``blocks`` with the first one's title and caption replaced by the block's ``title``/``caption`` if given."""
    title, caption = args.get("title"), args.get("caption")
    if not blocks or not (title or caption):
        return blocks
    from dataclasses import replace

    first = blocks[0]
    return [replace(first, title=title or first.title, caption=caption or first.caption), *blocks[1:]]


def _one_line(msg: str) -> str:
    return " ".join(msg.split())
