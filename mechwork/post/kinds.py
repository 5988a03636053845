"""How each result block renders: the analysis the dashboards call, drawn by the dashboards' own adders and sections.

Each renderer takes the model's :class:`~mechwork.post.blocks.BlockContext` and the block's checked arguments,
calls the analysis directly (cheaper than the kit's whole bundle; ``result`` alone reads the bundle), adds it
to a scratch :class:`~mechwork.dashboard.page.Page` and returns that page's blocks. Prompts default to the
task's standard probe (:func:`mechwork.tasks.standard_probe`), or repeated random tokens for a model directory.
Torch and plotly are imported inside the functions, so importing this module is cheap.

Example::

    >>> from mechwork.post.blocks import BLOCKS
    >>> BLOCKS["fourier"].render is fourier, BLOCKS["neuron-clusters"].render is neuron_clusters
    (True, True)
"""

from __future__ import annotations

from collections.abc import Mapping
from typing import TYPE_CHECKING, Any

from mechwork.errors import ConfigError, invalid

if TYPE_CHECKING:  # pragma: no cover
    from mechwork.dashboard.page import Block, Page

Args = Mapping[str, Any]
BlockContext = Any  # a mechwork.post.blocks.BlockContext (which imports this module)


def _page() -> Page:
    from mechwork.dashboard.page import Page

    return Page("result", toc=False)


def _bundle(ctx: BlockContext, **results: Any) -> Any:
    from mechwork.results import Analysis

    return Analysis(ctx.source.info, {k: v for k, v in results.items() if v is not None})


def probe(ctx: BlockContext, n: int = 8, seed: int = 0) -> Any:
    """The clean/corrupted prompts and metric: the task's standard probe, else (a model directory) one pair of
    repeated random tokens with the pair metric (as ``mechwork patch``)."""
    key = ("probe", n, seed)
    if key not in ctx.memo:
        if ctx.task is not None:
            from mechwork.tasks import standard_probe

            ctx.memo[key] = standard_probe(ctx.task, n=n, seed=seed)
        else:
            from types import SimpleNamespace

            from mechwork.analysis.prompt import default_prompts, pair_metric

            _, (clean, corrupted), how = default_prompts(ctx.model, seed=seed)
            info, metric = pair_metric(ctx.model, clean, corrupted)
            ctx.memo[key] = SimpleNamespace(clean=clean.batch(), corrupted=corrupted.batch(), metric=metric,
                                            description=f"one pair of {how}; {info.summary()}")
    return ctx.memo[key]


def token_batch(ctx: BlockContext, spec: Any, seed: int = 0) -> tuple[Any, list[list[str]] | None]:
    """One prompt ``[1, pos]`` and its labels (None: the analysis labels it): ``spec`` None (the probe's first
    clean prompt), ``repeated N``, a list of ids or text."""
    import torch

    if spec is None:
        return probe(ctx).clean[:1], None
    if isinstance(spec, str) and spec.startswith("repeated "):
        from mechwork.analysis.attention import repeated_tokens

        n = int(spec.split()[1])
        return repeated_tokens(int(ctx.model.cfg.d_vocab), n, batch=1, seed=seed), None
    from mechwork.analysis.lens import as_tokens

    toks, labels = as_tokens(ctx.model, torch.tensor([spec]) if isinstance(spec, list) else spec)
    return toks[:1].cpu(), labels[:1]


def _blocks(page: Page) -> list[Block]:
    return list(page.blocks)


def attention(ctx: BlockContext, args: Args) -> list[Block]:
    """Every head's pattern (or one layer's, or some heads) on one sequence, as a circuitsvis view."""
    from mechwork.analysis.attention import attention_patterns

    toks, labels = token_batch(ctx, args["tokens"], args["seed"])
    pats = attention_patterns(ctx.model, toks, labels)
    n_layers, n_heads = pats.patterns.shape[1:3]
    layers = range(n_layers) if args["layer"] == "all" else [args["layer"]]
    heads = range(n_heads) if args["heads"] == "all" else args["heads"]
    for name, got, top in (("layer", list(layers), n_layers), ("heads", list(heads), n_heads)):
        if any(v >= top for v in got):
            raise ConfigError(f"'{name}' must be below {top} for this model (got {args[name]})")
    import torch

    att = torch.stack([pats.patterns[0, la, h] for la in layers for h in heads])
    names = [f"L{la}H{h}" for la in layers for h in heads]
    seq = " ".join(pats.labels[0])
    return _blocks(_page().attention(att, pats.labels[0], head_names=names, title="Attention patterns",
                                     caption=f"Rows are destinations, columns sources; on: {seq[:200]}"))


def _grid(ctx: BlockContext) -> tuple[Any, Any]:
    """Neuron frequencies and key frequencies of a modular-arithmetic model, from one grid pass (memoised)."""
    if "fourier" not in ctx.memo:
        from mechwork.analysis.fourier import grid_run, key_frequencies, neuron_frequencies_of
        from mechwork.hooks import hook_name

        _, acts = grid_run(ctx.model, ctx.task, hook_name("mlp_post", 0))
        assert acts is not None
        nf = neuron_frequencies_of(acts, ctx.task.p)
        ctx.memo["fourier"] = (nf, key_frequencies(ctx.model, ctx.task, neurons=nf))
    return ctx.memo["fourier"]


def _check_fourier(ctx: BlockContext) -> None:
    from mechwork.analysis.grokking import fourier_reason

    reason = fourier_reason(ctx.task, ctx.source.model_config)
    if reason is not None:
        raise ConfigError(f"the Fourier analyses do not apply: {reason}")


def fourier(ctx: BlockContext, args: Args) -> list[Block]:
    """The Fourier spectrum of W_E or W_U, its key frequencies in red."""
    from mechwork.analysis.fourier import embedding_spectrum

    _check_fourier(ctx)
    _, kf = _grid(ctx)
    spec = embedding_spectrum(ctx.model, args["matrix"], ctx.task.p)
    return _blocks(_page().result(spec, title=f"Fourier spectrum of {args['matrix']}", key=kf.freqs,
                                  caption=f"Key frequencies in red: {kf.freqs}."))


def key_frequencies(ctx: BlockContext, args: Args) -> list[Block]:
    """The key frequencies: their figure and table (as the grokking dashboard)."""
    _check_fourier(ctx)
    _, kf = _grid(ctx)
    page = _page().result(kf, title="Key frequencies", caption=kf.summary())
    return _blocks(page.table(kf.to_frame(), title="Key frequencies"))


def neuron_clusters(ctx: BlockContext, args: Args) -> list[Block]:
    """Each neuron's best frequency and its share, then the cluster sizes."""
    from mechwork.analysis.grokking import ClusterSizes

    _check_fourier(ctx)
    nf, kf = _grid(ctx)
    page = _page().result(nf, title="Neuron clusters", caption=nf.summary())
    return _blocks(page.result(ClusterSizes(nf.cluster_sizes(), kf.freqs), summary=False))


def progress(ctx: BlockContext, args: Args) -> list[Block]:
    """The stored progress measures (a preset's, or measured over a run's checkpoints)."""
    from mechwork.analysis.grokking import stored_progress

    pm = stored_progress(ctx.source)
    if pm is None:
        raise ConfigError("this model has no progress measures; valid: a modadd preset, or a run with at least two "
                          "checkpoints")
    caption = f"Measured at every checkpoint with the final key frequencies {pm.key_freqs}."
    return _blocks(_page().result(pm, title="Progress measures", summary=False, caption=caption))


def head_detectors(ctx: BlockContext, args: Args) -> list[Block]:
    """Previous-token, induction and duplicate-token scores of every head: figure and table."""
    from mechwork.analysis.attention import head_detectors as detect

    spec = args["tokens"]
    if spec is not None and not (isinstance(spec, str) and spec.startswith("repeated ")):
        raise ConfigError(f"'tokens' must be 'repeated N' for head detectors (got {spec!r})")
    det = detect(ctx.model, half=None if spec is None else int(spec.split()[1]), seed=args["seed"])
    page = _page().result(det, title="Head detectors", caption=det.summary())
    return _blocks(page.table(det.to_frame(), title="Head detector scores"))


def _pair(ctx: BlockContext, args: Args) -> Any:
    """The probe, or the block's own clean/corrupted pair with the pair metric."""
    if args["clean"] is None and args["corrupted"] is None:
        return probe(ctx, args["n"], args["seed"])
    if args["clean"] is None or args["corrupted"] is None:
        raise ConfigError("'clean' and 'corrupted' must be given together (got one of them)")
    from types import SimpleNamespace

    from mechwork.analysis.prompt import pair_metric
    from mechwork.prompts import tokenize

    clean, corrupted = (tokenize(ctx.model, [v] if isinstance(v, list) else v) for v in (args["clean"],
                                                                                           args["corrupted"]))
    info, metric = pair_metric(ctx.model, clean, corrupted)
    return SimpleNamespace(clean=clean.batch(), corrupted=corrupted.batch(), metric=metric,
                           description=info.summary())


def patching(ctx: BlockContext, args: Args) -> list[Block]:
    """Activation patching of one site over the probe (or the given pair), metric: logit difference."""
    from mechwork.analysis.patching import patch

    pr = _pair(ctx, args)
    by = None if args["by"] == "auto" else args["by"]
    res = patch(ctx.model, pr.clean, pr.corrupted, pr.metric, site=args["site"], by=by)
    return _blocks(_page().result(res, title=f"Activation patching of {args['site']}", summary=True))


def _answer(ctx: BlockContext, toks: Any) -> int:
    import torch

    with torch.no_grad():
        logits = ctx.model(toks.to(next(ctx.model.parameters()).device))
    return int(logits[0, -1].argmax())


def dla(ctx: BlockContext, args: Args) -> list[Block]:
    """Each head's direct share of the top prediction's logit at the last position."""
    from mechwork.analysis.logit import direct_logit_attribution

    toks, _ = token_batch(ctx, args["tokens"])
    res = direct_logit_attribution(ctx.model, toks, _answer(ctx, toks), unit="head")
    return _blocks(_page().result(res, title="Direct logit attribution", summary=True))


def logit_lens(ctx: BlockContext, args: Args) -> list[Block]:
    """The final prediction read off the residual stream after every layer."""
    from mechwork.analysis.lens import logit_lens as lens

    toks, _ = token_batch(ctx, args["tokens"])
    return _blocks(_page().result(lens(ctx.model, toks), title="Logit lens", summary=True))


def circuit(ctx: BlockContext, args: Args) -> list[Block]:
    """The circuit of the probe (:func:`mechwork.analysis.prompt.circuit_result`), drawn by the circuit section."""
    from mechwork.analysis.prompt import circuit_result
    from mechwork.dashboard.circuit import circuit_section

    check_circuit_args(ctx, args)
    pr = probe(ctx, args["n"], 0)
    report = circuit_result(ctx.model, pr.clean, pr.corrupted, pr.metric, method=args["method"], top=args["top"])
    reason = getattr(report, "reason", "")
    if any(reason.startswith(f"'{name}' ") for name in args):  # a bad argument of the block, not the model's
        raise ConfigError(reason)
    return _blocks(circuit_section(_page(), _bundle(ctx, circuit=report), title="Circuit"))


def check_circuit_args(ctx: BlockContext, args: Args) -> None:
    """A circuit block's ``top`` fits its method and its model's edge graph (one line), before anything runs; a
    model whose graph cannot be built is left to the circuit section's note."""
    top = args.get("top")
    if top is None:
        return
    if args.get("method") == "acdc":
        raise ConfigError(f"'top' does not apply to method acdc, which keeps the edges its threshold keeps; valid: "
                          f"leave 'top' out, or method eap, eap-ig or exact (got top: {top!r})")
    from mechwork.graph import Graph

    try:
        total = Graph.of_model(ctx.model).n_edges
    except ConfigError:
        return
    if isinstance(top, bool) or not isinstance(top, int) or not 1 <= top <= total:
        raise invalid("top", f"a number of edges in [1, {total:,}]", top)


def sae_features(ctx: BlockContext, args: Args) -> list[Block]:
    """A shipped (or a run's) SAE: metrics and a feature page per latent (:func:`~mechwork.dashboard.features.
    feature_section`), read as the kit's dashboard reads it."""
    import torch

    from mechwork.analysis.features import sae_result
    from mechwork.analysis.saestore import saes_for
    from mechwork.dashboard.features import feature_section

    src, task = ctx.source, ctx.task
    found = saes_for(src.name) if src.kind in ("preset", "run") else {}
    if not found:
        raise ConfigError(f"{src.name!r} has no SAE; valid: a preset with shipped SAEs or a run with saes/")
    hook = args["hook"] if args["hook"] is not None else sorted(found)[0]
    if hook not in found:
        raise ConfigError(f"'hook' must be one of {', '.join(sorted(found))} (got {hook!r})")
    kw: dict[str, Any] = {"latents": args["latents"]}
    if task.kind == "modadd":
        batch = task.batch("all")
        fourier_grid = task.op in ("add", "sub") and task.n_pairs == task.p * task.p and task.p % 2 == 1
        kw |= {"labels": [str(j) for j in range(task.p)] + ["="], "metric_rows": 2048,
               "grid": (task.p, task.tokens) if fourier_grid else None}
    else:
        batch = task.batch("test")
        kw["positions"] = torch.ones(batch.tokens.shape, dtype=torch.bool)
    res = sae_result(src, hook, batch, **kw)
    return _blocks(feature_section(_page(), _bundle(ctx, sae=res), title="SAE features"))


def training_curves(ctx: BlockContext, args: Args) -> list[Block]:
    """Loss and accuracy by step, from the run's or preset's stored history."""
    from mechwork.dashboard.sections import training_curves as curves

    if ctx.source.metrics is None:
        raise ConfigError(f"{ctx.source.name!r} has no training history; valid: a run or a preset with a history")
    return _blocks(curves(_page(), _bundle(ctx)))


def result(ctx: BlockContext, args: Args) -> list[Block]:
    """Any named result of the kit's analysis bundle."""
    bundle = ctx.analysis()
    if args["name"] not in bundle:
        raise ConfigError(f"'name' must be one of {', '.join(sorted(bundle))} (got {args['name']!r})")
    return _blocks(_page().result(bundle[args["name"]], title=args["name"], summary=True))
