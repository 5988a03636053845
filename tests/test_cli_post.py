"""``mechwork post``: one line per page written and a summary; a second run takes its results from the cache.

Bad input, one test each (exit 2, one ``mechwork: error:`` line naming FILE:LINE where there is one, no page
written, no model loaded): an unknown result name, a model that does not exist, a malformed YAML block, an
``--out`` inside the source folder, a site whose assets folder cannot be written. Bad options are refused
before torch is imported.
"""

from __future__ import annotations

import os
import re
import subprocess
import sys
from pathlib import Path

import pytest
from clirun import forbid_loading, refused, run

BLOCK = "```mechwork\nhead-detectors: induction-2l\ntitle: Head scores\n```\n"


def line_of(text: str, needle: str) -> int:
    """The 1-based line of ``text`` that holds ``needle`` (found here, not by the parser)."""
    return next(i for i, line in enumerate(text.splitlines(), 1) if needle in line)


def html_files(root: Path) -> list[Path]:
    return sorted(root.rglob("*.html"))


def refused_post(capsys, monkeypatch, tmp_path: Path, text: str, needles: list[str]) -> None:
    """A post holding ``text`` is refused: exit 2, one line naming every needle, nothing written, no model."""
    src = tmp_path / "src"
    src.mkdir(exist_ok=True)
    (src / "post.md").write_text(text)
    forbid_loading(monkeypatch)
    assert refused(capsys, ["post", str(src / "post.md"), "--out", str(tmp_path / "site"),
                            "--cache", str(tmp_path / "cache")], needles) == ""
    assert html_files(tmp_path) == [] and not (tmp_path / "site").exists()


def test_an_unknown_result_name_is_one_line_naming_file_and_line(capsys, monkeypatch, tmp_path):
    text = "# Post\n\nProse first.\n\n" + BLOCK + "\nMore prose.\n\n```mechwork\natention: induction-2l\n```\n"
    refused_post(capsys, monkeypatch, tmp_path, text,
                 [f"post.md:{line_of(text, 'atention:') - 1}:", "atention", "'attention'"])


def test_a_model_that_does_not_exist_is_one_line_naming_file_and_line(capsys, monkeypatch, tmp_path):
    text = "# Post\n\n" + BLOCK + "\n```mechwork\nattention: no-such-model\n```\n"
    refused_post(capsys, monkeypatch, tmp_path, text,
                 [f"post.md:{line_of(text, 'no-such-model') - 1}:", "'no-such-model'", "induction-2l"])


def test_a_malformed_yaml_block_names_the_line_of_the_fault(capsys, monkeypatch, tmp_path):
    text = "# Post\n\nSome prose.\n\n```mechwork\nhead-detectors: induction-2l\ntitle: a: b\n```\n"
    refused_post(capsys, monkeypatch, tmp_path, text, [f"post.md:{line_of(text, 'title: a: b')}:", "YAML"])


def test_an_out_inside_the_source_folder_is_refused(capsys, monkeypatch, tmp_path):
    src = tmp_path / "posts"
    src.mkdir()
    (src / "a.md").write_text("# A\n\n" + BLOCK)
    (tmp_path / "link").symlink_to(src, target_is_directory=True)
    forbid_loading(monkeypatch)
    for out in (src / "site", src, src / ".." / "posts" / "deep" / "site", tmp_path / "link" / "site"):
        assert refused(capsys, ["post", str(src), "--out", str(out)], ["'--out'", str(src), "source folder"]) == ""
    assert html_files(tmp_path) == [] and sorted(p.name for p in src.iterdir()) == ["a.md"]


@pytest.mark.parametrize("how", ["a file", "a dangling symlink", "read-only"])
def test_a_site_whose_assets_folder_cannot_be_written_is_refused(capsys, monkeypatch, tmp_path, how):
    src = tmp_path / "posts"
    src.mkdir()
    (src / "a.md").write_text("# A\n\n" + BLOCK)
    assets = tmp_path / "site" / "assets"
    if how == "a file":
        assets.parent.mkdir()
        assets.write_text("not a folder")
    elif how == "a dangling symlink":
        assets.parent.mkdir()
        assets.symlink_to(tmp_path / "nowhere")
    else:
        assets.mkdir(parents=True)
        assets.chmod(0o555)
        if os.access(assets, os.W_OK):  # root ignores the mode: a read-only folder is not possible here
            assets.chmod(0o755)
            pytest.skip("running as root: file modes do not bind")
    forbid_loading(monkeypatch)
    try:
        assert refused(capsys, ["post", str(src), "--out", str(tmp_path / "site"), "--cache",
                                str(tmp_path / "cache")], ["assets", str(assets)]) == ""
    finally:
        if not assets.is_symlink():
            assets.chmod(0o755)
    assert html_files(tmp_path) == [] and sorted(p.name for p in (tmp_path / "site").iterdir()) == ["assets"]


def test_a_post_prints_a_line_per_page_and_a_summary_and_hits_the_cache_again(capsys, tmp_path):
    src = tmp_path / "posts"
    src.mkdir()
    (src / "a.md").write_text("# A\n\nProse.\n\n" + BLOCK)
    (src / "b.md").write_text("# B\n\nOnly prose, with $x^2$.\n")
    args = ["post", str(src), "--out", str(tmp_path / "site"), "--cache", str(tmp_path / "cache"), "--quiet"]
    outs = []
    for _ in range(2):
        code, out, err = run(capsys, *args)
        assert code == 0, err
        outs.append(out.strip().splitlines())
    for lines, hits in zip(outs, (0, 1), strict=True):
        assert len(lines) == 4
        for line, name in zip(lines[:3], ("a.html", "b.html", "index.html"), strict=True):
            path = tmp_path / "site" / name
            assert line == f"wrote {path} ({path.stat().st_size:,} bytes)"
        assert re.fullmatch(rf"3 pages, 1 result block \({hits} from the cache\), \d+\.\d s", lines[3]), lines[3]


def test_list_names_every_result_with_its_arguments(capsys):
    from mechwork.post.blocks import BLOCKS

    code, out, _ = run(capsys, "post", "--list")
    assert code == 0
    names = [line.split(":", 1)[0] for line in out.splitlines() if not line.startswith(" ")]
    assert names == sorted(BLOCKS)
    for name, kind in BLOCKS.items():
        listed = out.split(f"{name}: ", 1)[1].split("\n", 2)[1]
        assert all(arg in listed for arg in kind.args)


def test_bad_options_and_posts_are_refused_before_torch_is_imported(tmp_path):
    post, bad = tmp_path / "p.md", tmp_path / "bad.md"
    post.write_text("# P\n\n" + BLOCK)
    bad.write_text("# Bad\n\n" + BLOCK.replace("head-detectors", "head-detector"))
    cases = [[str(post), "--out", "o", "--cache", "c", "--no-cache"], [str(post), "--out", "o", "--figures", "jpg"],
             [str(post), "--out", "o", "--device", "tpu"], [str(post)], ["--out", "o"],
             [str(tmp_path / "missing.md"), "--out", "o"], [str(bad), "--out", "o", "--figures", "svg"]]
    code = ("import sys; from mechwork.cli import main\n"
            f"for args in {cases!r}:\n"
            "    assert main(['post', *args]) == 2, args\n"
            "assert 'torch' not in sys.modules, 'torch was imported'\n")
    r = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, timeout=120, cwd=tmp_path)
    assert r.returncode == 0, r.stderr
    lines = r.stderr.strip().splitlines()
    assert len(lines) == len(cases) and all(line.startswith("mechwork: error:") for line in lines), lines
    assert "'--figures'" in lines[1] and "'jpg'" in lines[1] and "missing.md" in lines[5]
    assert "bad.md:3: unknown result 'head-detector'" in lines[6]
    assert not (tmp_path / "o").exists()


def test_a_cache_that_cannot_be_written_warns_once_and_the_page_is_still_written(capsys, tmp_path):
    (tmp_path / "file").write_text("a file where the cache's parent folder should be")
    (tmp_path / "p.md").write_text("# P\n\n" + BLOCK + "\n" + BLOCK.replace("Head scores", "Again"))
    code, out, err = run(capsys, "post", str(tmp_path / "p.md"), "--out", str(tmp_path / "site"),
                         "--cache", str(tmp_path / "file" / "cache"), "--quiet")
    assert code == 0, err
    warned = [line for line in err.splitlines() if line.startswith("mechwork: warning: result cache")]
    assert len(warned) == 1 and "cannot be written" in warned[0], err
    assert out.splitlines()[-1].startswith("1 page, 2 result blocks (0 from the cache)")
    assert (tmp_path / "site" / "p.html").is_file()


def test_a_rebuild_from_the_cache_never_imports_torch(tmp_path):
    """Every block a cache hit: the page is written without torch (so a prose edit re-renders in well under the
    time torch takes to import)."""
    post = tmp_path / "src" / "post.md"
    post.parent.mkdir()
    post.write_text("# Heads\n\n" + BLOCK)
    args = ["post", str(post), "--out", str(tmp_path / "site"), "--cache", str(tmp_path / "cache")]
    code = ("import sys; from mechwork.cli import main; rc = main(%r); "
            "print('torch' in sys.modules); sys.exit(rc)")
    first = subprocess.run([sys.executable, "-c", code % args], capture_output=True, text=True)
    assert first.returncode == 0 and first.stdout.strip().endswith("True"), first.stderr
    post.write_text("# Heads\n\nA new sentence.\n\n" + BLOCK)
    again = subprocess.run([sys.executable, "-c", code % args], capture_output=True, text=True)
    assert again.returncode == 0, again.stderr
    assert "(1 from the cache)" in again.stdout and again.stdout.strip().endswith("False"), again.stdout
    assert "A new sentence." in (tmp_path / "site" / "post.html").read_text()


def test_a_dashboard_as_a_site_page_with_its_figures(capsys, tmp_path):
    """``mechwork dashboard --assets site --figures svg``: the bundles in assets/ beside the page, loaded by
    relative path, and one SVG per figure, linked under it."""
    import xml.etree.ElementTree as ET

    out = tmp_path / "modadd.html"
    code, _, err = run(capsys, "dashboard", "modadd-113", "--out", str(out), "--assets", "site",
                            "--figures", "svg")
    assert code == 0, err
    text = out.read_text()
    scripts = re.findall(r'<script src="([^"]+)"', text)
    assert scripts and all((tmp_path / s).is_file() for s in scripts) and all(s.startswith("assets/") for s in scripts)
    assert "var Plotly" not in text  # no bundle inlined
    links = re.findall(r'href="(modadd-figures/[^"]+\.svg)"', text)
    assert len(links) == text.count('class="mw-fig"') > 0
    for link in links:
        ET.parse(tmp_path / link)  # parses as XML
    assert sorted(p.name for p in (tmp_path / "modadd-figures").iterdir()) == sorted(Path(x).name for x in links)


def test_dashboard_figures_and_site_assets_are_checked_before_any_work(capsys, monkeypatch, tmp_path):
    forbid_loading(monkeypatch)
    refused(capsys, ["dashboard", "modadd-113", "--out", str(tmp_path / "a.html"), "--figures", "svg,jpg"],
            ["'jpg'", "svg, png"])
    (tmp_path / "assets").write_text("not a folder")
    refused(capsys, ["dashboard", "modadd-113", "--out", str(tmp_path / "a.html"), "--assets", "site"],
            [str(tmp_path / "assets")])
    assert sorted(p.name for p in tmp_path.iterdir()) == ["assets"]


def test_figures_without_chromium_are_refused_before_any_work(capsys, monkeypatch, tmp_path):
    """No Chromium to draw with: ``--figures`` is one line naming where it looked, before a model is opened,
    for a post and for a dashboard alike; nothing is written."""
    missing = tmp_path / "no-chromium"
    monkeypatch.setenv("MECHWORK_CHROMIUM", str(missing))
    post = tmp_path / "src" / "post.md"
    post.parent.mkdir()
    post.write_text("# Heads\n\n" + BLOCK)
    forbid_loading(monkeypatch)
    refused(capsys, ["post", str(post), "--out", str(tmp_path / "site"), "--figures", "svg"],
            [str(missing), "apt-get install chromium"])
    refused(capsys, ["dashboard", "modadd-113", "--out", str(tmp_path / "d.html"), "--figures", "png"],
            [str(missing), "apt-get install chromium"])
    assert sorted(p.name for p in tmp_path.iterdir()) == ["src"]
