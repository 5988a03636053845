"""``mechwork circuit``: each method on induction-2l (edges, counts, faithfulness printed; --json holds the numbers
the library gives; --out a page that opens offline), --pair on a model directory, and every bad argument: one
line, exit 2, nothing written, refused before the model loads (before torch is imported, where it can be)."""

from __future__ import annotations

import json
import subprocess
import sys

import pytest
from clirun import forbid_loading, refused, run

IDS_PAIR = ("3 9 14 22 3 9 14", "3 9 14 22 5 11 40")




BAD = {
    "unknown_method": (["--method", "magic"], ["'--method'", "'magic'", "'eap', 'eap-ig', 'exact', 'acdc'"]),
    "steps_zero": (["--method", "eap-ig", "--steps", "0"], ["'--steps'", "0", "x>=1"]),
    "threshold_zero": (["--method", "acdc", "--threshold", "0"], ["'--threshold'", "in (0, 1)", "got 0"]),
    "threshold_one": (["--method", "acdc", "--threshold", "1"], ["'--threshold'", "in (0, 1)", "got 1"]),
    "threshold_negative": (["--method", "acdc", "--threshold", "-0.5"], ["'--threshold'", "got -0.5"]),
    "top_zero": (["--top", "0"], ["'--top'", "integer >= 1", "fraction of the edges in (0, 1]", "'0'"]),
    "top_negative": (["--top", "-3"], ["'--top'", "'-3'"]),
    "top_fraction_over_one": (["--top", "1.5"], ["'--top'", "'1.5'"]),
    "top_fraction_zero": (["--top", "0.0"], ["'--top'", "'0.0'"]),
    "top_text": (["--top", "many"], ["'--top'", "'many'"]),
    "top_too_many": (["--top", "82"], ["'--top'", "82 edges", "the model has 81"]),
    "steps_without_eap_ig": (["--steps", "3"], ["'--steps'", "eap-ig only", "--method eap"]),
    "on_without_eap_ig": (["--method", "exact", "--on", "activations"], ["'--on'", "eap-ig only"]),
    "threshold_without_acdc": (["--threshold", "0.1"], ["'--threshold'", "acdc only"]),
    "top_with_acdc": (["--method", "acdc", "--top", "5"], ["'--top'", "acdc keeps what its --threshold keeps"]),
    "eap_ig_mean": (["--method", "eap-ig", "--ablation", "mean"], ["'--ablation' mean", "eap-ig"]),
    "unknown_ablation": (["--ablation", "resample"], ["'--ablation'", "'resample'"]),
    "direction_with_acdc": (["--method", "acdc", "--direction", "noising"], ["'--direction'", "acdc keeps"]),
    "denoising_mean": (["--direction", "denoising", "--ablation", "mean"], ["'--direction' denoising",
                                                                          "--ablation corrupted", "got mean"]),
    "unknown_direction": (["--direction", "sideways"], ["'--direction'", "'sideways'"]),
    "out_not_html": (["--out", "{tmp}/page.txt"], ["'--out'", ".html", "page.txt"]),
    "out_missing_dir": (["--out", "{tmp}/nope/page.html"], ["'--out'", "nope"]),
    "text_pair_on_toy": (["--pair", "the cat", "the dog"], ["no tokenizer", "'the cat'"]),
    "pair_lengths": (["--pair", "1 2 3", "1 2"], ["clean 3 tokens", "corrupted 2"]),
    "n_with_pair": (["--pair", "1 2", "3 4", "--n", "4"], ["'--n' 4", "--pair"]),
    "pair_id_outside_vocab": (["--pair", "1 2 3", "1 2 99"], ["the corrupted prompt holds token id 99",
                                                              "vocabulary (ids 0 to 63)"]),
    "out_is_json": (["--out", "{tmp}/same.html", "--json", "{tmp}/same.html"], ["'--out' and '--json'",
                                                                                 "same.html"]),
    "unknown_model": ([], ["'no-such-model'"]),
}


@pytest.mark.parametrize("case", sorted(BAD))
def test_a_bad_argument_is_one_line_exit_2_before_the_model_loads(capsys, tmp_path, monkeypatch, case):
    extra, needles = BAD[case]
    args = ["circuit", "no-such-model" if case == "unknown_model" else "induction-2l",
            *[a.replace("{tmp}", str(tmp_path)) for a in extra]]

    forbid_loading(monkeypatch)
    assert refused(capsys, args, needles) == "" and list(tmp_path.iterdir()) == []


def test_bad_arguments_are_refused_before_torch_is_imported():
    code = ("import sys; from mechwork.cli import main\n"
            "for args in (['--method', 'magic'], ['--steps', '0', '--method', 'eap-ig'], ['--threshold', '2'],\n"
            "             ['--top', '0'], ['--top', '500'], ['--method', 'acdc', '--top', '3']):\n"
            "    assert main(['circuit', 'induction-2l', *args]) == 2, args\n"
            "assert 'torch' not in sys.modules, 'torch was imported'\n")
    r = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, timeout=120)
    assert r.returncode == 0, r.stderr
    assert r.stderr.count("mechwork: error:") == 6


def test_help_names_every_method_and_option(capsys):
    code, out, _ = run(capsys, "circuit", "--help")
    assert code == 0
    for word in ("eap-ig", "acdc", "--steps", "--on", "--threshold", "--top", "--per-position", "--ablation",
                 "--out", "--json", "--pair"):
        assert word in out, word


# -- the command on real models ------------------------------------------------------------------------------------
def test_eap_on_induction_prints_the_circuit_and_its_json_and_page_hold_the_librarys_numbers(capsys, tmp_path):
    from chromium_check import check_page, require_chromium

    import mechwork
    from mechwork.analysis.circuitreport import circuit_report
    from mechwork.tasks import standard_probe

    page, data = tmp_path / "circuit.html", tmp_path / "circuit.json"
    code, out, err = run(capsys, "circuit", "induction-2l", "--json", str(data), "--out", str(page))
    assert code == 0, err
    assert out.startswith("circuit of induction-2l by eap (2 layers x 4 heads, attention only, 81 edges)")
    assert "the smallest top-n circuit on the faithfulness curve that reaches 80%" in out and "Spearman rho =" in out
    d = json.loads(data.read_text())
    p = standard_probe(mechwork.preset("induction-2l").task, n=8)
    want = circuit_report(mechwork.load("induction-2l", device="cpu"), p.clean, p.corrupted, p.metric)
    assert d["kept"] == len(want.circuit.edges) == len(d["edges"]) and d["total"] == 81
    assert abs(d["recovered"] - want.circuit.faithfulness.recovered) < 1e-6
    assert {e["edge"] for e in d["edges"]} == {str(e) for e in want.circuit.edges}
    assert f"{d['kept']} kept edges, largest |score| first (score, exact):" in out
    assert all(e["edge"] in out for e in d["edges"][:40])
    assert d["curve"]["sizes"] == list(want.curve.sizes) and abs(d["spearman"] - want.check.spearman) < 1e-9
    assert d["noising_curve"]["recovered"] == pytest.approx(list(want.noising_curve.recovered), abs=1e-9)
    assert "Ranked by noising exact scores" in out
    require_chromium()
    r = check_page(page, timeout_s=60)
    assert r.plotly_mounts == r.plotly_drawn == 3, r  # the layered graph, the curve, the scatter against exact
    assert r.console_errors == [] and r.page_errors == [] and r.requests == [], r


@pytest.mark.parametrize("method, extra, needles", [
    ("acdc", ["--threshold", "0.02"], ["ACDC (threshold 0.02", "keeps"]),
    ("exact", ["--top", "0.1"], ["The scores are exact", "by exact score", "(score, exact)"]),
    ("eap-ig", ["--steps", "3", "--on", "activations"], ["by EAP-IG score", "EAP-IG", "Spearman rho ="]),
    ("exact", ["--direction", "noising", "--ablation", "mean"], ["by noising exact score", "(mean ablation, noising "
                                                                "scores)"]),
])
def test_each_method_prints_its_circuit(capsys, tmp_path, method, extra, needles):
    data = tmp_path / "c.json"
    code, out, err = run(capsys, "circuit", "induction-2l", "--method", method, *extra, "--json", str(data))
    assert code == 0, err
    d = json.loads(data.read_text())
    assert d["method"] == method and 0 < d["kept"] <= 81 and len(d["edges"]) == d["kept"]
    assert f"recover {d['recovered']:.1%} of the metric" in out
    assert (d["curve"] is None) == (method == "acdc") and (d["spearman"] is None) == (method in ("acdc", "exact"))
    assert d["direction"] == (None if method == "acdc" else "noising" if "noising" in extra else "denoising")
    if "--top" in extra:
        assert d["kept"] == round(0.1 * 81)
    assert all(n in out for n in needles), out


def test_per_position_and_a_pair_on_a_model_directory(capsys, four_models):
    code, out, err = run(capsys, "circuit", "induction-2l", "--per-position", "--top", "20", "--n", "2")
    assert code == 0, err
    assert "at 48 positions" in out and "20 kept edges" in out and "@" in out
    code, out, err = run(capsys, "circuit", four_models["gpt2"], "--pair",
                         "when mary and john went to the store john gave a drink to",
                         "when mary and john went to the store mary gave a drink to")
    assert code == 0, err
    assert "prompts: --pair 'when mary" in out and "kept edges" in out


def test_a_top_beyond_a_per_position_graph_is_one_line_before_any_edge_is_scored(capsys, monkeypatch):
    import mechwork.analysis.edges as edges

    def no_scoring(*a, **k):
        raise AssertionError("edges were scored before --top was refused")

    monkeypatch.setattr(edges, "eap", no_scoring)
    code, out, err = run(capsys, "circuit", "induction-2l", "--per-position", "--top", "100000", "--n", "2")
    assert code == 2 and out == "", (out, err)
    lines = err.strip().splitlines()
    assert len(lines) == 1 and "'top' must be a number of edges in [1, 3,888]" in lines[0] and "100000" in lines[0]
