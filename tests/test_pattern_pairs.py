"""Patching each attention-pattern entry (``site="pattern", by="head_dest_src"``) against TransformerLens.

``patch()`` with one cell per (layer, head, destination, source) must equal
``transformer_lens.patching.get_act_patch_attn_head_pattern_dest_src_pos`` to 1e-5 on each of the four
own-model acceptance models (tests/fourmodels.py), on the fast engine where it takes the model and on the hook
path; selections restrict the cells; the result's frame, labels and figure work; a bad combination is one line.
Prompts are 6 tokens: TransformerLens runs one forward pass per cell (layers * heads * 36).
"""

from __future__ import annotations

import os
from typing import Any

import pytest
import torch
import transformer_lens.patching as tlp
from fourmodels import NAMES  # type: ignore[import-not-found]

import mechwork
from mechwork.analysis.patching import patch
from mechwork.engine import supports
from mechwork.errors import ConfigError
from mechwork.hooks import BY, BY_NAMES, DIMS

os.environ.setdefault("HF_HUB_OFFLINE", "1")
TOL = 1e-5
N_POS = 6
_MODELS: dict[str, Any] = {}


@pytest.fixture(scope="module")
def models(four_models):
    def get(name: str) -> Any:
        if name not in _MODELS:
            _MODELS[name] = mechwork.load(four_models[name], device="cpu")
        return _MODELS[name]

    yield get
    _MODELS.clear()


def _inputs(model: Any, batch: int = 2) -> tuple[torch.Tensor, torch.Tensor, Any]:
    """Clean tokens, corrupted ones (the first two positions redrawn), and a log-prob metric at the last position."""
    g = torch.Generator().manual_seed(0)
    clean = torch.randint(0, int(model.cfg.d_vocab), (batch, N_POS), generator=g)
    corrupted = clean.clone()
    corrupted[:, :2] = torch.randint(0, int(model.cfg.d_vocab), (batch, 2), generator=g)
    answer = clean[:, -1]

    def metric(logits: torch.Tensor) -> torch.Tensor:
        return logits[:, -2].log_softmax(-1).gather(-1, answer[:, None]).mean()

    return clean, corrupted, metric


def test_the_grouping_is_in_the_shared_tables():
    assert "head_dest_src" in BY["pattern"] and "head_dest_src" in BY_NAMES
    assert "head_dest_src" not in BY["head"] and "head_dest_src" not in BY["pos"]
    assert DIMS["head_dest_src"] == ("layer", "head", "dest", "src")


@pytest.mark.parametrize("name", NAMES)
def test_every_pattern_entry_equals_transformer_lens(models, name):
    model = models(name)
    clean, corrupted, metric = _inputs(model)
    _, cache = model.run_with_cache(clean)
    ref = tlp.get_act_patch_attn_head_pattern_dest_src_pos(model, corrupted, cache, metric).cpu()
    cfg = model.cfg
    assert ref.shape == (cfg.n_layers, cfg.n_heads, N_POS, N_POS)
    assert float(ref.std()) > 0  # not a degenerate sweep
    diffs = {}
    for engine in (True, False):
        res = patch(model, clean, corrupted, metric, site="pattern", by="head_dest_src", engine=engine)
        assert res.engine == ("fast" if engine and supports(model) else "hooks")
        assert res.dims == ("layer", "head", "dest", "src") and res.values.shape == ref.shape
        diffs[res.engine if engine else "hooks"] = float((res.values - ref).abs().max())
        # an entry above the diagonal is masked (zero in both runs): patching it leaves the corrupted run
        upper = torch.ones(N_POS, N_POS, dtype=torch.bool).triu(1)
        assert torch.allclose(res.values[..., upper], torch.tensor(res.corrupted_value), atol=TOL)
        assert float((res.values[..., ~upper] - res.corrupted_value).abs().max()) > 1e-6  # some entry matters
    print(f"\n{name}: max |mechwork - TL| over {ref.numel()} cells: {diffs}")
    assert max(diffs.values()) <= TOL, diffs


@pytest.mark.parametrize("engine", [True, False])
def test_selections_restrict_the_cells(models, engine):
    model = models("induction-2l")
    clean, corrupted, metric = _inputs(model)
    full = patch(model, clean, corrupted, metric, site="pattern", by="head_dest_src", engine=engine)
    part = patch(model, clean, corrupted, metric, site="pattern", by="head_dest_src", engine=engine,
                 layers=[1], heads=[0, 2], positions=[1, 3, 5])
    assert part.coords == {"layer": [1], "head": [0, 2], "dest": [1, 3, 5], "src": [1, 3, 5]}
    want = full.values[1:2][:, [0, 2]][:, :, [1, 3, 5]][..., [1, 3, 5]]
    assert part.values.shape == (1, 2, 3, 3)
    assert float((part.values - want).abs().max()) <= TOL


def test_frame_labels_summary_and_figure(models):
    model = models("induction-2l")
    clean, corrupted, metric = _inputs(model)
    res = patch(model, clean, corrupted, metric, site="pattern", by="head_dest_src", layers=[1], heads=[0, 1],
                positions=[2, 4, 5])
    frame = res.to_frame()
    assert list(frame.columns) == ["layer", "head", "dest", "src", "value", "effect"] and len(frame) == 18
    row = frame[(frame["head"] == 1) & (frame["dest"] == 5) & (frame["src"] == 2)]
    assert float(row["value"].iloc[0]) == pytest.approx(float(res.values[0, 1, 2, 0]))
    assert res.label([0, 1, 2, 0]) == "L1H1 dest 5 src 2"
    assert "pattern by head_dest_src" in res.summary()
    fig = res.figure()
    assert len(fig.data) == 2 and [t.name for t in fig.data] == ["L1H0", "L1H1"]
    assert [t.visible for t in fig.data] == [True, False]
    assert fig.layout.xaxis.title.text == "source position" and fig.layout.yaxis.title.text == "destination position"
    assert [b.label for b in fig.layout.updatemenus[0].buttons] == ["L1H0", "L1H1"]
    assert list(fig.data[1].z[2]) == res.values[0, 1, 2].tolist()


@pytest.mark.parametrize("site, by, message", [
    ("z", "head_dest_src", "'by' must be one of head, head_pos for site 'z'"),
    ("resid_pre", "head_dest_src", "'by' must be one of layer, layer_pos for site 'resid_pre'"),
    ("pattern", "layer_pos", "'by' must be one of head, head_pos, head_dest_src for site 'pattern'"),
])
def test_a_bad_combination_is_one_line(models, site, by, message):
    model = models("induction-2l")
    clean, corrupted, metric = _inputs(model)
    with pytest.raises(ConfigError) as e:
        patch(model, clean, corrupted, metric, site=site, by=by)
    assert message in str(e.value) and "\n" not in str(e.value)
    with pytest.raises(ConfigError, match="'neurons' does not apply"):
        patch(model, clean, corrupted, metric, site="pattern", by="head_dest_src", neurons=[0])


def test_attribution_refuses_it_in_one_line(models):
    from mechwork.analysis.attribution import attribute

    model = models("induction-2l")
    clean, corrupted, metric = _inputs(model)
    with pytest.raises(ConfigError) as e:
        attribute(model, clean, corrupted, metric, site="pattern", by="head_dest_src")
    assert "attribution patching has no by='head_dest_src'" in str(e.value) and "\n" not in str(e.value)


PAIR = ["--pair", "3 9 14 22 3 9", "3 9 14 22 5 11"]


def test_cli_patches_each_pattern_entry(tmp_path, capsys):
    import json

    from mechwork.cli import main

    js = tmp_path / "p.json"
    assert main(["patch", "induction-2l", *PAIR, "--site", "pattern", "--by", "head_dest_src", "--top", "3",
                 "--json", str(js)]) == 0
    out = capsys.readouterr().out
    assert "top 3 cells" in out and out.count(" dest ") >= 3
    data = json.loads(js.read_text())
    assert data["dims"] == ["layer", "head", "dest", "src"]
    assert torch.tensor(data["values"]).shape == (2, len(data["coords"]["head"]), 6, 6)


@pytest.mark.parametrize("args, message", [
    (["--site", "z", "--by", "head_dest_src"], "'by' must be one of head, head_pos for site 'z'"),
    (["--site", "pattern", "--by", "layer"], "'by' must be one of head, head_pos, head_dest_src for site 'pattern'"),
    (["--site", "pattern", "--by", "head_dest_src", "--method", "attribution"],
     "attribution patching has no by='head_dest_src'"),
])
def test_cli_bad_combination_is_one_line(tmp_path, monkeypatch, capsys, args, message):
    from mechwork.cli import main

    monkeypatch.chdir(tmp_path)
    assert main(["patch", "induction-2l", *PAIR, *args]) == 2
    err = capsys.readouterr().err
    assert message in err and err.count("\n") == 1
