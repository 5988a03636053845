"""The README's worked example: the post it shows is the one shipped in the package, and ``mechwork demo`` writes
it as a small site beside the grokking dashboard.

The example post lives at ``mechwork/data/posts/grokking.md`` (package data, so the installed ``mechwork demo``
finds it); README.md shows it verbatim in its "Publishing posts" section, in a ````` ````markdown ````` fence
(four backticks, because the post holds ```` ``` ```` fences of its own).
"""

from __future__ import annotations

import re
from importlib.resources import files
from pathlib import Path

from mechwork.post.blocks import BLOCKS
from mechwork.post.parse import parse_post

ROOT = Path(__file__).resolve().parents[1]
README = ROOT / "README.md"
EXAMPLE = Path(str(files("mechwork") / "data" / "posts" / "grokking.md"))


def section(text: str, heading: str) -> str:
    """The body of the README section ``## heading``, up to the next ``## `` heading outside a code fence."""
    lines, fence, start = text.splitlines(keepends=True), "", None
    for i, line in enumerate(lines):
        m = re.match(r"(`{3,})(.*)$", line.rstrip("\n"))
        if m and not fence:
            fence = m.group(1)
        elif m and line.strip() == "`" * len(line.strip()) and len(m.group(1)) >= len(fence):
            fence = ""  # a closing fence: at least as long as the opening one, no info string
        elif not fence and line.startswith("## "):
            if start is not None:
                return "".join(lines[start:i])
            if line.rstrip("\n") == f"## {heading}":
                start = i + 1
    assert start is not None, f"README.md has no '## {heading}' section"
    return "".join(lines[start:])


def shown_post(text: str) -> str:
    blocks = re.findall(r"^````markdown\n(.*?)^````$", section(text, "Publishing posts"), re.M | re.S)
    assert len(blocks) == 1, "the Publishing posts section shows one example post (a ````markdown block)"
    return blocks[0]


def test_readme_shows_the_shipped_example_post_verbatim():
    assert EXAMPLE.is_file() and EXAMPLE.is_relative_to(Path(str(files("mechwork"))))
    assert shown_post(README.read_text()) == EXAMPLE.read_text()
    assert not (ROOT / "experiments" / "posts").exists()  # one copy, the shipped one
    assert 35 <= len(EXAMPLE.read_text().splitlines()) <= 45


def test_the_comparison_can_fail():
    text = README.read_text()
    post = shown_post(text)
    edited = text.replace(post, post.replace("Fourier", "Fourrier", 1))
    assert shown_post(edited) != EXAMPLE.read_text()


def test_example_post_parses_with_math_a_table_and_results():
    post = parse_post(EXAMPLE)
    assert post.title == "Grokking modular addition"
    assert len(post.blocks) >= 3 and {b.model for b in post.blocks} == {"modadd-113"}
    text = EXAMPLE.read_text()
    assert "$$" in text and "| --- |" in text and "](https://" in text


def test_readme_lists_every_block_kind_and_both_command_forms():
    sec = section(README.read_text(), "Publishing posts")
    listed = set(re.findall(r"^\| `([a-z-]+)` \|", sec, re.M))
    assert listed == set(BLOCKS)
    assert "mechwork post posts/grokking.md --out site/" in sec
    assert "mechwork post posts/ --out site/ --site --figures svg,png" in sec


def test_demo_writes_the_example_post_as_a_site_beside_the_dashboard(tmp_path, monkeypatch, capsys):
    from mechwork.cli import main

    monkeypatch.setenv("MECHWORK_CACHE", str(tmp_path / "cache"))
    out = tmp_path / "dashboards" / "modadd-113.html"
    assert main(["demo", "--out", str(out)]) == 0
    printed = capsys.readouterr().out
    site = tmp_path / "dashboards" / "site"
    assert out.is_file() and (site / "index.html").is_file()
    assert sorted(p.name for p in (site / "assets").iterdir()) == ["circuitsvis.js", "plotly.min.js"]
    page = (site / "grokking.html").read_text()
    assert '<title>Grokking modular addition</title>' in page and 'src="assets/plotly.min.js"' in page
    assert f"site: {site / 'index.html'}" in printed
    assert 'href="grokking.html"' in (site / "index.html").read_text()
