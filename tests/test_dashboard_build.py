"""Building a dashboard: the kit's analysis runs once and the page runs no model; ``--cache`` rebuilds an unchanged
model's page from the result cache without torch, byte for byte, and another checkpoint or other weights miss; a
cold build of a preset imports no TransformerLens (the model is a HookedToy) and writes the bridge's page.

Forward passes are counted at the model's ``hook_embed`` (every pass through the model goes through it).
"""

from __future__ import annotations

import json
import os
import subprocess
import sys
from typing import Any

import pytest
from clirun import train_small_run

from mechwork.cli import main

PROBE = """
import json, sys
from mechwork.cli import main
code = main(json.loads(sys.argv[1]))
print(json.dumps({"code": code, "torch": "torch" in sys.modules}), file=sys.stderr)
"""


def test_the_dashboard_analyses_once_and_its_page_runs_no_model(monkeypatch):
    import mechwork.dashboard as dashboard_pkg
    import mechwork.dashboard.standard as standard
    import mechwork.source as source

    calls: dict[str, int] = {"open": 0, "analyse": 0, "page": 0, "passes": 0, "passes_in_analyse": 0}
    real_open, real_analyse, real_page_for = source.open_source, standard.analyse, dashboard_pkg.page_for
    in_analyse = [False]

    def counted_open(*a: Any, **k: Any) -> Any:
        calls["open"] += 1
        src = real_open(*a, **k)

        def count(*_: Any) -> None:
            calls["passes"] += 1
            calls["passes_in_analyse"] += in_analyse[0]

        src.model.hook_dict["hook_embed"].register_forward_hook(count)
        return src

    def counted_analyse(src: Any) -> Any:
        calls["analyse"] += 1
        in_analyse[0] = True
        try:
            return real_analyse(src)
        finally:
            in_analyse[0] = False

    def counted_page_for(kind: str) -> Any:
        build = real_page_for(kind)

        def page(bundle: Any) -> Any:
            calls["page"] += 1
            return build(bundle)

        return page

    monkeypatch.setattr(source, "open_source", counted_open)
    monkeypatch.setattr(standard, "analyse", counted_analyse)
    monkeypatch.setattr(dashboard_pkg, "page_for", counted_page_for)
    page = standard.dashboard("modadd-113")
    assert page.title == "Grokking dashboard: modadd-113"
    assert calls["open"] == calls["analyse"] == calls["page"] == 1
    assert calls["passes"] == calls["passes_in_analyse"] > 0  # every pass is the analysis's; the page runs none


COLD = """
import json, sys
import torch
torch.set_num_threads(int(sys.argv[2]))  # the parent's: some float32 sums differ in their last bit between counts
from mechwork.cli import main
code = main(json.loads(sys.argv[1]))
heavy = [m for m in ("transformer_lens", "transformers", "datasets") if m in sys.modules]
print(json.dumps({"code": code, "heavy": heavy}), file=sys.stderr)
"""


def test_a_cold_dashboard_imports_no_transformer_lens_and_writes_the_bridges_page(tmp_path):
    """``mechwork dashboard modadd-113`` in a new process opens the preset as a HookedToy; its page is byte for byte
    the page of the same analysis on the TransformerBridge (the bundles agree to the last bit)."""
    import torch

    from mechwork.dashboard import page_for
    from mechwork.dashboard.standard import analyse, save
    from mechwork.source import open_source

    (tmp_path / "dashboards").mkdir()
    args = json.dumps(["dashboard", "modadd-113", "--quiet"])
    res = subprocess.run([sys.executable, "-c", COLD, args, str(torch.get_num_threads())], capture_output=True,
                         text=True, cwd=tmp_path)
    assert json.loads(res.stderr.strip().splitlines()[-1]) == {"code": 0, "heavy": []}, res.stderr[-2000:]
    src = open_source("modadd-113")
    assert type(src.model).__name__ == "TransformerBridge"
    save(page_for("modadd")(analyse(src)), tmp_path / "bridge.html", "inline", None)
    assert (tmp_path / "dashboards" / "modadd-113.html").read_bytes() == (tmp_path / "bridge.html").read_bytes()


def _probe(args: list[str], cache: os.PathLike[str]) -> tuple[dict, str]:
    env = os.environ | {"MECHWORK_CACHE": str(cache)}
    res = subprocess.run([sys.executable, "-c", PROBE, json.dumps(args)], capture_output=True, text=True, env=env)
    return json.loads(res.stderr.strip().splitlines()[-1]), res.stdout


@pytest.fixture(scope="module")
def small_run(tmp_path_factory):
    return train_small_run(tmp_path_factory.mktemp("dash") / "run")


def test_cache_rebuilds_an_unchanged_page_without_torch_and_misses_on_new_weights(small_run, tmp_path):
    cache = tmp_path / "cache"
    first, second = tmp_path / "first.html", tmp_path / "second.html"
    args = ["dashboard", str(small_run), "--cache", "--quiet", "--out"]
    report, out = _probe([*args, str(first)], cache)
    assert report == {"code": 0, "torch": True}, out  # a miss: analysed, and stored
    assert len(list(cache.rglob("*.json"))) == 1
    report, out = _probe([*args, str(second)], cache)
    assert report == {"code": 0, "torch": False}, out  # a hit: the page from the cache, no model
    assert second.read_bytes() == first.read_bytes()
    # another checkpoint as the last one (the same bytes: the page still names another step), or other weights
    # at the same step, or another --step: each a key of its own, so a miss
    from mechwork.cli.pagecache import page_key
    from mechwork.post.cache import ResultCache

    store = ResultCache(cache)
    keys = {page_key(store, str(small_run), None), page_key(store, str(small_run), 10)}
    ckpts = sorted((small_run / "checkpoints").iterdir())
    newer = ckpts[-1].with_name("step_0000030.safetensors")
    newer.write_bytes(ckpts[-1].read_bytes())
    keys.add(page_key(store, str(small_run), None))
    newer.unlink()
    last = ckpts[-1].read_bytes()
    ckpts[-1].write_bytes(last[:-1] + bytes([last[-1] ^ 1]))
    keys.add(page_key(store, str(small_run), None))
    ckpts[-1].write_bytes(last)
    assert len(keys) == 4 and page_key(store, str(small_run), None) in keys


def test_without_cache_nothing_is_stored(small_run, tmp_path, monkeypatch, capsys):
    monkeypatch.setenv("MECHWORK_CACHE", str(tmp_path / "cache"))
    assert main(["dashboard", str(small_run), "--quiet", "--out", str(tmp_path / "page.html")]) == 0
    assert not (tmp_path / "cache").exists() and (tmp_path / "page.html").is_file()


def test_cache_is_refused_for_a_prompt_page(tmp_path, capsys):
    code = main(["dashboard", "induction-2l", "--pair", "1 2 3", "1 2 4", "--cache", "--out", str(tmp_path / "p.html")])
    err = capsys.readouterr().err
    assert code == 2 and "'--cache'" in err and len(err.strip().splitlines()) == 1
    assert list(tmp_path.iterdir()) == []


def test_shared_runs_give_the_numbers_of_separate_runs():
    """An ablation given the unablated run's activations or logits (as the dashboards give them) equals the same
    ablation running its own: the sharing changes how many passes, not what they compute."""
    import torch

    import mechwork
    from mechwork.analysis.ablation import ablate, keep_frequencies
    from mechwork.analysis.fourier import grid_pass

    model = mechwork.load("induction-2l")
    tokens = torch.randint(0, 64, (4, 48), generator=torch.Generator().manual_seed(0))
    _, cache = model.run_with_cache(tokens, names_filter=lambda n: n == "blocks.0.attn.hook_z")
    for how in ("zero", "mean", "resample"):
        own = ablate(model, tokens, heads=[(0, 1)], how=how).logits
        assert torch.equal(own, ablate(model, tokens, heads=[(0, 1)], how=how, reference_cache=cache).logits)
    with pytest.raises(mechwork.MechworkError, match="reference_cache"):
        ablate(model, tokens, heads=[(0, 1)], reference_cache={})
    modadd, task = mechwork.load("modadd-113"), mechwork.preset("modadd-113").task
    logits, _ = grid_pass(modadd, task, [])
    assert keep_frequencies(modadd, task, [1, 5], base_logits=logits) == keep_frequencies(modadd, task, [1, 5])
