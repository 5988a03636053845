"""``mechwork circuit``: score every residual-stream edge of a MODEL, keep a circuit, say how faithful it is.

MODEL is what ``mechwork patch`` takes (a preset, a run directory, a ``save_pretrained`` directory). The prompts
are ``--pair CLEAN CORRUPTED`` (the metric: clean top next token minus corrupted top next token), else the task's
standard probe (a preset or run), else one pair of repeated random tokens (a model directory). The method scores
the edges (EAP, EAP-IG, exact patching) and the circuit is the top ``--top`` of them (default: the smallest top-n
that recovers 80% of the metric), or ACDC keeps what its ``--threshold`` keeps
(:func:`mechwork.analysis.circuitreport.circuit_report`). It prints the circuit's edges, counts and
faithfulness; ``--json FILE`` writes every number, ``--out PAGE.html`` the one-section page
(:func:`mechwork.dashboard.circuit.circuit_page`). Bad arguments are one line and exit 2, before torch loads
where they can be.

Example::

    mechwork circuit induction-2l --method eap --out circuit.html
    mechwork circuit induction-2l --method acdc --threshold 0.02
    mechwork circuit induction-2l --method exact --direction noising --ablation mean
    mechwork circuit path/to/hf_model --pair "the cat sat" "the dog sat" --method eap-ig --steps 10 --top 0.05
"""

from __future__ import annotations

from pathlib import Path
from typing import Any

import click

from mechwork import bars, limits
from mechwork.cli.args import (
    CIRCUIT_METHODS,
    PAIR_HELP,
    check_page_out,
    check_source,
    check_threshold,
    check_writable,
    config_edges,
    explicit,
    prompt_inputs,
    top_arg,
)

__all__ = ["circuit_cmd"]

SHOWN = 40  # kept edges printed (every one goes to --json and --out)


def _check_combinations(method: str, given: set[str], top: int | float | None, ablation: str,
                        direction: str | None) -> None:
    """Options that belong to another method are refused, in one line, rather than ignored."""
    only = {"steps": ("--steps", "eap-ig"), "ig_on": ("--on", "eap-ig"), "threshold": ("--threshold", "acdc")}
    for name, (flag, owner) in only.items():
        if name in given and method != owner:
            raise click.UsageError(f"'{flag}' applies to --method {owner} only (got --method {method})")
    if method == "acdc" and (top is not None or direction is not None):
        flag = "--top" if top is not None else "--direction"
        raise click.UsageError(f"'{flag}' applies to eap, eap-ig and exact; acdc keeps what its --threshold keeps")
    if direction == "denoising" and ablation != "corrupted":
        raise click.UsageError(f"'--direction' denoising patches the corrupted run toward clean: it needs "
                               f"--ablation corrupted (got {ablation}; use --direction noising)")
    if method == "eap-ig" and ablation != "corrupted":
        raise click.UsageError(f"'--ablation' {ablation} does not apply to eap-ig, which interpolates between the "
                               "corrupted and the clean input (use eap or exact)")


@click.command("circuit")
@click.argument("model", metavar="MODEL")
@click.option("--pair", nargs=2, metavar="CLEAN CORRUPTED", default=None,
              help=PAIR_HELP + " (default: the task's standard prompts; repeated random tokens for a model directory)")
@click.option("--method", type=click.Choice(CIRCUIT_METHODS), default="eap", show_default=True,
              help="eap: one forward + one backward; eap-ig: integrated gradients; exact: every edge patched alone; "
                   "acdc: the greedy pass")
@click.option("--steps", type=click.IntRange(min=1), default=5, show_default=True,
              help="eap-ig: interpolation steps")
@click.option("--on", "ig_on", type=click.Choice(("inputs", "activations")), default="inputs", show_default=True,
              help="eap-ig: interpolate the inputs or every sender's activation")
@click.option("--threshold", type=float, default=0.01, show_default=True,
              help="acdc: drop an edge costing less than this fraction of the clean-corrupted gap, in (0, 1)")
@click.option("--top", "top_text", default=None, metavar="N|FRACTION",
              help="circuit size: N edges, or a fraction in (0, 1] (default: the smallest top-n recovering 80%%)")
@click.option("--per-position", is_flag=True, help="one edge per position (default: edges over every position)")
@click.option("--ablation", type=click.Choice(("corrupted", "mean", "zero")), default="corrupted",
              show_default=True, help="what an edge outside the circuit carries")
@click.option("--direction", type=click.Choice(("denoising", "noising")), default=None,
              help="the scores' direction (default: denoising with --ablation corrupted, else noising)")
@click.option("--n", "n_prompts", type=click.IntRange(min=1), default=8, show_default=True,
              help="standard prompts (a preset or run without --pair)")
@click.option("--seed", type=click.IntRange(0, limits.SEED_MAX), default=0, show_default=True)
@click.option("--step", type=click.IntRange(min=0), default=None, help="checkpoint (default: the last)")
@click.option("--device", default=None, help="torch device (default: cuda if available, else cpu)")
@click.option("--out", type=click.Path(path_type=Path), default=None, help="write the circuit's page (.html)")
@click.option("--json", "json_out", type=click.Path(path_type=Path), default=None, help="write every number as JSON")
@bars.quiet_option
def circuit_cmd(model: str, pair: tuple[str, str] | None, method: str, steps: int, ig_on: str, threshold: float,
                top_text: str | None, per_position: bool, ablation: str, direction: str | None, n_prompts: int,
                seed: int, step: int | None, device: str | None, out: Path | None, json_out: Path | None) -> None:
    """Find a circuit: score every edge, keep the best, measure how much of the metric it recovers."""
    given = explicit(click.get_current_context())
    top = top_arg(top_text)
    check_threshold(threshold)
    _check_combinations(method, given, top, ablation, direction)
    check_writable(out, "--out", html=True)
    check_writable(json_out, "--json")
    if out is not None and json_out is not None and out.resolve() == json_out.resolve():
        raise click.UsageError(f"'--out' and '--json' name the same file ({str(out)!r}): give each its own")
    kind, key = check_source(model, step, device)
    prompts = prompt_inputs(None, pair, kind, key)
    if (prompts is not None or kind == "model") and "n_prompts" in given:
        raise click.UsageError(f"'--n' {n_prompts} counts a task's standard prompts; --pair gives one pair, and a "
                               "model directory has none (drop --n)")
    edges = config_edges(kind, key)
    if isinstance(top, int) and edges is not None and not per_position and top > edges:
        raise click.BadParameter(f"{top} edges, but the model has {edges} (give at most {edges}, or a fraction)",
                                 param_hint="'--top'")
    if prompts is None and kind != "model":
        limits.patch_check(kind, key, n_prompts)
    from mechwork.analysis.circuitreport import circuit_report
    from mechwork.cli.prompt_commands import _probe
    from mechwork.source import open_source

    if out is not None:
        check_page_out(out, "--out")
    bars.stage("loading the model")
    src = open_source(model, step=step, device=device, history=False)
    probe = _probe(src, prompts, n_prompts, seed)
    bars.stage(f"{method} over the edges of {src.name}")
    report = circuit_report(src.model, probe.clean, probe.corrupted, probe.metric, method=method, steps=steps,
                            on=ig_on, threshold=threshold, top=top, per_position=per_position, ablation=ablation,
                            direction=direction)
    _print(report, src.name, probe.description)
    if json_out is not None:
        from mechwork.io import write_json_atomic

        write_json_atomic(_json(report, src.name, probe.description), json_out)
        click.echo(f"wrote {json_out}")
    if out is not None:
        from mechwork.dashboard.circuit import circuit_page

        circuit_page(report, src.name, probe.description).save(out)
        click.echo(f"wrote {out} ({out.stat().st_size:,} bytes)")


def _kept(report: Any) -> list[tuple[str, float, float | None]]:
    """(edge, score, exact score or None) of every kept edge, largest |score| first."""
    import math

    scores = dict(report.circuit.scores)
    exact = dict(zip(report.graph.edges, report.exact.values.tolist(), strict=True)) if report.exact is not None \
        else {}
    rows = [(str(e), float(scores.get(e, math.nan)), exact.get(e)) for e in report.circuit.edges]
    return sorted(rows, key=lambda r: -abs(r[1]) if math.isfinite(r[1]) else math.inf)


def _print(report: Any, name: str, description: str) -> None:
    from mechwork.analysis.circuitreport import percent
    from mechwork.dashboard.circuit import circuit_lines

    f = report.circuit.faithfulness
    click.echo(f"circuit of {name} by {report.method} ({report.graph.describe()})")
    click.echo(f"  prompts: {description}")
    scored = f", {report.scores.direction} scores" if report.scores is not None else ""
    click.echo(f"  metric: clean {f.clean_value:.4g}, corrupted {f.corrupted_value:.4g} "
               f"({f.ablation} ablation{scored})")
    for line in circuit_lines(report):
        click.echo("  " + line.replace("**", "").replace("ρ", "rho"))
    if report.curve is not None:
        c = report.curve
        pairs = zip(c.sizes, c.recovered, strict=True)
        pts = ", ".join(f"{n}: {percent(r, 0)}" for n, r in pairs)
        click.echo(f"  faithfulness curve (edges: recovered): {pts}")
    rows = _kept(report)
    click.echo(f"  {len(rows)} kept edges, largest |score| first" + (" (score, exact)" if report.exact is not None
                                                                      else " (score)") + ":")
    for edge, score, exact in rows[:SHOWN]:
        click.echo(f"    {edge:<24} {score:>+10.4g}" + ("" if exact is None else f"  {exact:>+10.4g}"))
    if len(rows) > SHOWN:
        click.echo(f"    ... {len(rows) - SHOWN} more (--json or --out for all)")


def _json(report: Any, name: str, description: str) -> dict[str, Any]:
    f, c, v = report.circuit.faithfulness, report.curve, report.check
    return {"source": name, "method": report.method, "graph": report.graph.describe(), "prompts": description,
            "clean": f.clean_value, "corrupted": f.corrupted_value, "ablation": f.ablation, "rule": report.rule,
            "direction": None if report.scores is None else report.scores.direction,
            "kept": len(report.circuit.edges), "total": report.graph.n_edges, "recovered": f.recovered,
            "edges": [{"edge": e, "score": s, "exact": x} for e, s, x in _kept(report)],
            "curve": None if c is None else {"sizes": list(c.sizes), "recovered": list(c.recovered)},
            **{key: None if e is None else {"sizes": list(e.sizes), "recovered": list(e.recovered)}
               for key, e in (("exact_curve", report.exact_curve), ("noising_curve", report.noising_curve))},
            "spearman": None if v is None else v.spearman, "topk_overlap": None if v is None else v.topk_overlap}
