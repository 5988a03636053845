"""Figure export: real mechwork figures drawn as SVG and PNG by plotly.js in headless Chromium.

Each file is checked on its own terms: every SVG parses as XML and one of its ``<text>`` elements reads the
figure's title; every PNG's IHDR chunk holds the figure's width and height, and its pixels are not blank;
the marks drawn match the data (one bar per frequency, one point per neuron).
"""

from __future__ import annotations

import base64
import json
import struct
import sys
import xml.etree.ElementTree as ET
import zlib
from pathlib import Path

import pytest
from chromium_check import require_chromium

from mechwork.dashboard.export import (
    DEFAULT_HEIGHT,
    DEFAULT_WIDTH,
    Exporter,
    FigureSpec,
    chromium_executable,
    export_figures,
    export_layout,
    parse_formats,
)
from mechwork.errors import ConfigError, ExportError

SVG = "{http://www.w3.org/2000/svg}"
ODD_TITLE = 'Logits <&> "résumé" — Δ ≥ 1 ✓ 模型'
N_FREQ = 56  # frequencies 1..(113-1)/2


def _json(fig) -> dict:
    import plotly.io as pio

    return json.loads(pio.to_json(fig, validate=False, remove_uids=True))  # the template comes resolved in


def _spec(n: int, fig, title: str | None = None) -> FigureSpec:
    d = _json(fig)
    return FigureSpec(f"mw-{n}", title or d["layout"]["title"]["text"], d)


def _figures() -> tuple[list[FigureSpec], list[FigureSpec], int]:
    """Two pages' figures from the shipped modular-addition model, and its MLP width."""
    import pandas as pd
    import plotly.graph_objects as go

    import mechwork
    from mechwork.analysis.fourier import embedding_spectrum, fourier_basis, neuron_frequencies
    from mechwork.dashboard.figures import TrainingCurves
    from mechwork.models import preset

    model = mechwork.load("modadd-113", device="cpu")
    spectrum = embedding_spectrum(model)
    coef = fourier_basis(113).transform(model.W_E[:113].detach().float().cpu()).abs()  # (basis, d_model)
    heat = go.Figure(go.Heatmap(z=coef[:, :64].tolist(), colorscale="Viridis"))
    heat.update_layout(title={"text": "W_E in the Fourier basis", "x": 0.5, "font": {"size": 23}})
    nf = neuron_frequencies(model, preset("modadd-113").task)
    metrics = pd.DataFrame({"step": [1, 10, 100, 1000], "train_loss": [4.7, 2.0, 0.1, 0.01],
                            "test_loss": [4.7, 4.6, 3.0, 0.02], "train_acc": [0.0, 0.4, 1.0, 1.0],
                            "test_acc": [0.0, 0.0, 0.3, 1.0]})
    curves = TrainingCurves(metrics, [("memorisation", 1, 100), ("cleanup", 100, 1000)]).figure()  # height 420
    odd = go.Figure(go.Scatter(x=[0, 1, 2], y=[1, 0, 1], mode="lines+markers")).update_layout(width=640, height=360)
    markup = go.Figure(go.Bar(x=["a", "b"], y=[1, 2])).update_layout(title="Circuit<br><sup>key heads</sup>")
    page1 = [_spec(1, heat), _spec(2, spectrum.figure()), _spec(4, nf.figure()), _spec(5, curves)]
    page2 = [_spec(1, odd, ODD_TITLE), _spec(3, markup)]
    return page1, page2, int(model.cfg.d_mlp)


@pytest.fixture(scope="module")
def exported(tmp_path_factory):
    """Both pages exported through one browser: [(spec, [svg, png])], the MLP width, and the two folders."""
    require_chromium()
    page1, page2, d_mlp = _figures()
    root = tmp_path_factory.mktemp("export")
    with Exporter() as ex:
        got1 = ex.export(page1, root / "page1-figures", "svg,png")
        got2 = ex.export(page2, root / "page2-figures", ["svg", "png"])
    pairs = [(s, got1[s.id]) for s in page1] + [(s, got2[s.id]) for s in page2]
    return pairs, d_mlp, [root / "page1-figures", root / "page2-figures"]


def _title_texts(svg: Path) -> list[str]:
    return ["".join(t.itertext()) for t in ET.parse(svg).getroot().iter(f"{SVG}text")]


def test_files_are_named_and_returned(exported):
    pairs, _, dirs = exported
    for spec, paths in pairs:
        assert [p.name for p in paths] == [f"{spec.stem}.svg", f"{spec.stem}.png"]
        assert spec.stem.startswith(spec.id.removeprefix("mw-").zfill(2) + "-")
    # exactly the files asked for: no temporary file left behind
    assert sorted(p.name for d in dirs for p in d.iterdir()) == sorted(p.name for _, ps in pairs for p in ps)
    assert pairs[1][0].stem.startswith("02-w-e-norm-per-fourier-frequency-gini-0-")


def test_every_svg_parses_and_names_the_title(exported):
    pairs, _, _ = exported
    for spec, (svg, _png) in pairs:
        root = ET.parse(svg).getroot()  # raises on anything that is not well-formed XML
        assert root.tag == f"{SVG}svg"
        assert (int(float(root.get("width"))), int(float(root.get("height")))) == (spec.width, spec.height)
        texts = _title_texts(svg)
        if "<br>" in spec.title:  # the figure's own plotly markup is drawn as the page draws it: two lines
            assert any(t.replace("\u200b", "") == "Circuitkey heads" for t in texts), texts
            assert not any("<br>" in t for t in texts)
        else:
            assert spec.title in texts, (spec.title, texts)


def test_the_other_title_attributes_are_kept(exported):
    pairs, _, _ = exported
    heat_svg = pairs[0][1][0]
    title = next(t for t in ET.parse(heat_svg).getroot().iter(f"{SVG}text") if t.get("class") == "gtitle")
    assert "font-size: 23px" in title.get("style", "")
    assert float(title.get("x")) == pytest.approx(DEFAULT_WIDTH / 2, abs=2)  # centred: x = 0.5


def _png_size_and_pixels(png: Path) -> tuple[int, int, bytes]:
    data = png.read_bytes()
    assert data[:8] == b"\x89PNG\r\n\x1a\n"
    length, kind = struct.unpack(">I4s", data[8:16])
    assert kind == b"IHDR" and length == 13
    width, height = struct.unpack(">II", data[16:24])
    idat, pos = b"", 8
    while pos < len(data):
        n, k = struct.unpack(">I4s", data[pos:pos + 8])
        if k == b"IDAT":
            idat += data[pos + 8:pos + 8 + n]
        pos += 12 + n
    return width, height, zlib.decompress(idat)


def test_every_png_has_the_figure_size(exported):
    pairs, _, _ = exported
    sizes = []
    for spec, (_svg, png) in pairs:
        width, height, raw = _png_size_and_pixels(png)
        assert (width, height) == (spec.width, spec.height)
        assert len(set(raw)) > 20  # drawn, not a blank canvas
        sizes.append((width, height))
    # the sizes come from each figure: the default, the curves' layout.height, the odd one's width and height
    assert sizes[0] == (DEFAULT_WIDTH, DEFAULT_HEIGHT) and sizes[3] == (DEFAULT_WIDTH, 420)
    assert sizes[4] == (640, 360)


def test_the_marks_match_the_data(exported):
    pairs, d_mlp, _ = exported
    def points(svg: Path) -> int:
        return sum(1 for g in ET.parse(svg).getroot().iter(f"{SVG}g") if "point" in (g.get("class") or "").split())

    def paths(svg: Path) -> int:
        return sum(1 for g in ET.parse(svg).getroot().iter(f"{SVG}path") if "point" in (g.get("class") or "").split())

    assert points(pairs[1][1][0]) == N_FREQ  # one bar per Fourier frequency
    assert paths(pairs[2][1][0]) == d_mlp  # one marker per MLP neuron
    # the heatmap is one raster of one pixel per cell: 64 columns (model dims) by 113 rows (basis vectors)
    heat = ET.parse(pairs[0][1][0]).getroot()
    group = next(g for g in heat.iter(f"{SVG}g") if g.get("class") == "hm")
    href = next(group.iter(f"{SVG}image")).get("{http://www.w3.org/1999/xlink}href")
    assert href.startswith("data:image/png;base64,")
    raster = base64.b64decode(href.partition(",")[2])
    assert struct.unpack(">II", raster[16:24]) == (64, 113)


def test_svg_export_is_byte_identical_and_every_reference_resolves(exported, tmp_path):
    import re

    pairs, _, _ = exported
    specs = [s for s, _ in pairs[:4]]  # the first page's figures: a heatmap's colour bar, bars, points, curves
    a, b = (export_figures(specs, tmp_path / d, "svg") for d in ("one", "two"))  # two browsers, two folders
    for spec in specs:
        first, second = a[spec.id][0].read_bytes(), b[spec.id][0].read_bytes()
        assert first == second, spec.stem
        root = ET.fromstring(first)
        ids = {el.get("id") for el in root.iter() if el.get("id")}
        refs = set(re.findall(r"url\(['\"]?#([^'\")]+)", first.decode()))
        assert refs and refs <= ids, refs - ids  # every clip-path and gradient reference has its element
        uid = re.search(r'id="defs-([0-9a-f]+)"', first.decode()).group(1)
        assert all(uid in i for i in refs if i.startswith("clip"))  # the one figure uid, replaced everywhere


def test_export_figures_writes_only_the_formats_asked(tmp_path):
    require_chromium()
    spec = FigureSpec("mw-7", "Only PNG", {"data": [{"type": "bar", "x": [1, 2], "y": [2, 1]}],
                                           "layout": {"width": 320, "height": 200}})
    got = export_figures([spec], tmp_path / "figs", "png")
    assert got == {"mw-7": [tmp_path / "figs" / "07-only-png.png"]}
    assert [p.name for p in (tmp_path / "figs").iterdir()] == ["07-only-png.png"]
    assert _png_size_and_pixels(got["mw-7"][0])[:2] == (320, 200)
    assert export_figures([spec], tmp_path / "none", None) == {"mw-7": []}  # nothing asked: no browser, no folder
    assert not (tmp_path / "none").exists()


def test_parse_formats():
    assert parse_formats("svg,png") == ("svg", "png")
    assert parse_formats(" PNG , svg ,png") == ("png", "svg")
    assert parse_formats(["svg"]) == ("svg",)
    assert parse_formats(None) == parse_formats([]) == ()
    for bad, named in (("jpg", "'jpg'"), ("svg,gif", "'gif'"), (["svg", "pdf"], "'pdf'"), ("svg;png", "'svg;png'"),
                       ("", "''"), (",", "','"), ("svg,,png", "'svg,,png'"), (" ", "' '"), (["svg", ""], "''"),
                       (5, "5"), (b"svg", "b'svg'"), ({"svg": 1}, "{'svg': 1}")):
        with pytest.raises(ConfigError) as e:
            parse_formats(bad)
        msg = str(e.value)
        assert "\n" not in msg and named in msg and "svg, png" in msg and msg.startswith("'figures' must be")


def test_a_page_refuses_empty_or_non_string_formats_and_writes_nothing(tmp_path):
    from mechwork.dashboard.page import Page

    page = Page("p").note("x")
    for bad in ("", ",", "svg,,png", ["svg", " "]):
        with pytest.raises(ConfigError, match="'figures' must be"):
            page.save(tmp_path / "p.html", figures=bad)
    assert list(tmp_path.iterdir()) == []


def test_figure_spec_size_stem_and_layout():
    spec = FigureSpec("mw-12", "A/B: ../etc <x>", {"data": [], "layout": {"width": 500.4, "title": "old"}})
    assert (spec.width, spec.height, spec.stem) == (500, DEFAULT_HEIGHT, "12-a-b-etc-x")
    assert FigureSpec("mw-2", "——", {}).stem == "02"  # a title with no letters still names a file
    layout = export_layout(spec)
    assert layout["title"] == {"text": "A/B: ../etc &lt;x&gt;"} and (layout["width"], layout["height"]) == (500, 450)
    assert spec.figure["layout"]["title"] == "old"  # the spec itself is untouched
    with pytest.raises(ConfigError, match="distinct"):
        export_figures([spec, spec], "/nonexistent", "svg")


def test_missing_chromium_is_one_line(tmp_path, monkeypatch):
    missing = tmp_path / "no-chromium"
    monkeypatch.setenv("MECHWORK_CHROMIUM", str(missing))
    assert chromium_executable() is None
    spec = FigureSpec("mw-1", "t", {"data": [], "layout": {}})
    with pytest.raises(ExportError) as e:
        export_figures([spec], tmp_path / "out", "svg,png")
    msg = str(e.value)
    assert "\n" not in msg and str(missing) in msg and "apt-get install chromium" in msg
    assert not (tmp_path / "out").exists()  # nothing written


def test_missing_playwright_is_one_line(tmp_path, monkeypatch):
    monkeypatch.setenv("MECHWORK_CHROMIUM", sys.executable)  # any executable: the check reaches playwright
    monkeypatch.setitem(sys.modules, "playwright.sync_api", None)  # import fails as if not installed
    with pytest.raises(ExportError) as e:
        export_figures([FigureSpec("mw-1", "t", {})], tmp_path / "out", "svg")
    assert str(e.value) == "figure export needs playwright: pip install 'mechwork[figures]'"
    assert not (tmp_path / "out").exists()

