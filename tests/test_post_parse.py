"""Parsing posts: result blocks found by the Markdown parser (in lists, any fence), prose kept, front matter, title and
description; every bad block is one line naming the file, the line and what is valid."""

from __future__ import annotations

import json
from pathlib import Path

import pytest

from mechwork.errors import PostError
from mechwork.post.blocks import BLOCKS
from mechwork.post.parse import Prose, ResultBlock, parse_post, parse_text


def line_of(text: str, needle: str) -> int:
    """The 1-based line of ``text`` holding ``needle`` (found here, not by the parser)."""
    return next(i for i, line in enumerate(text.splitlines(), 1) if needle in line)


def refused(text: str, path: str = "posts/p.md", **kw) -> str:
    with pytest.raises(PostError) as info:
        parse_text(text, path, **kw)
    msg = str(info.value)
    assert "\n" not in msg, msg
    return msg


PRELUDE = "# A post\n\nSome prose.\n\n"


def test_an_unknown_result_names_file_line_every_valid_name_and_the_closest():
    text = PRELUDE + "```mechwork\natention: induction-2l\n```\n"
    msg = refused(text)
    assert msg.startswith(f"posts/p.md:{line_of(text, '```mechwork')}: unknown result 'atention'")
    assert all(name in msg for name in BLOCKS) and "did you mean 'attention'?" in msg


def test_a_block_that_is_not_a_mapping_is_refused():
    text = PRELUDE + "```mechwork\n- attention\n- induction-2l\n```\n"
    msg = refused(text)
    assert msg.startswith(f"posts/p.md:{line_of(text, '```mechwork')}:") and "YAML mapping" in msg
    assert "attention" in msg and "head-detectors" in msg


def test_an_empty_block_is_refused():
    text = PRELUDE + "~~~mechwork\n\n~~~\n"
    msg = refused(text)
    assert msg.startswith(f"posts/p.md:{line_of(text, '~~~mechwork')}: empty mechwork block")
    assert "RESULT: MODEL" in msg and "logit-lens" in msg


def test_malformed_yaml_names_the_line_of_the_fault_in_the_file():
    text = "---\ntitle: T\n---\n" + PRELUDE + "```mechwork\nhead-detectors: induction-2l\ntitle: a: b\n```\n"
    msg = refused(text)
    assert msg.startswith(f"posts/p.md:{line_of(text, 'title: a: b')}: malformed YAML")
    assert "mapping values are not allowed here" in msg


def test_an_unknown_argument_lists_the_valid_ones():
    text = PRELUDE + "```mechwork\nfourier: modadd-113\nmatrx: W_U\n```\n"
    msg = refused(text)
    assert msg.startswith(f"posts/p.md:{line_of(text, 'matrx:')}: unknown argument 'matrx' for fourier")
    assert all(a in msg for a in ("matrix", "title", "caption")) and "did you mean 'matrix'?" in msg


@pytest.mark.parametrize(("arg", "value", "valid"), [("matrix", "W_Q", "one of W_E, W_U"),
                                                      ("tokens", "repeated 1", "'repeated N'"),
                                                      ("layer", -1, "'all' or a layer index")])
def test_a_bad_argument_value_names_argument_value_and_what_is_valid(arg, value, valid):
    kind = "fourier: modadd-113" if arg == "matrix" else "attention: induction-2l"
    text = PRELUDE + f"```mechwork\n{kind}\n{arg}: {value}\n```\n"
    msg = refused(text)
    assert msg.startswith(f"posts/p.md:{line_of(text, f'{arg}: ')}: argument '{arg}'")
    assert repr(value) in msg and valid in msg


def test_a_model_that_does_not_exist_is_refused_naming_what_is_valid(tmp_path):
    text = PRELUDE + "```mechwork\nattention: nope\n```\n"
    msg = refused(text, str(tmp_path / "p.md"))
    assert msg.startswith(f"{tmp_path / 'p.md'}:{line_of(text, '```mechwork')}: model 'nope' does not exist")
    assert "modadd-113" in msg and "induction-2l" in msg and "run directory" in msg
    assert parse_text(text, "p.md", check_models=False).blocks[0].model == "nope"  # only checked when asked


def test_a_result_that_does_not_apply_to_the_models_task_says_why():
    text = PRELUDE + "```mechwork\nfourier: induction-2l\n```\n"
    msg = refused(text)
    assert msg.startswith(f"posts/p.md:{line_of(text, '```mechwork')}: fourier does not apply to 'induction-2l'")
    assert "modular arithmetic" in msg and "induction" in msg


def test_bad_front_matter_is_one_line():
    assert refused("---\ntitle: [a\n---\n# x\n").startswith("posts/p.md:2: malformed YAML in the front matter")
    msg = refused("---\ntitle: T\nauthor: me\n---\n# x\n")
    assert msg.startswith("posts/p.md:3: unknown front matter key 'author'") and "title, description, date" in msg


def test_fences_in_lists_any_fence_and_other_languages_stay_prose():
    text = ("# Fences\n\n- first item\n\n  ```mechwork\n  dla: induction-2l\n  ```\n\n"
            "````mechwork\nlogit-lens: induction-2l\n````\n\n"
            "```python\nmechwork: not a block\n```\n\n"
            "```mechwork-like\nattention: induction-2l\n```\n\n"
            "    ```mechwork\n    indented code, not a fence\n    ```\n\n"
            "~~~ mechwork \nhead-detectors: induction-2l\n~~~\n")
    post = parse_text(text, "f.md")
    assert [(b.kind, b.line) for b in post.blocks] == [
        ("dla", line_of(text, "  ```mechwork")), ("logit-lens", line_of(text, "````mechwork")),
        ("head-detectors", line_of(text, "~~~ mechwork"))]
    prose = "".join(s.text for s in post.segments if isinstance(s, Prose))
    for kept in ("```python", "mechwork: not a block", "```mechwork-like", "indented code, not a fence"):
        assert kept in prose
    assert "dla:" not in prose and "logit-lens:" not in prose and "head-detectors:" not in prose


def test_segments_keep_prose_and_blocks_in_order_with_their_lines():
    text = (PRELUDE + "```mechwork\ndla: induction-2l\n```\n\nBetween.\n\n"
            "```mechwork\nlogit-lens: induction-2l\n```\nEnd.\n")
    post = parse_text(text, "s.md")
    kinds = [type(s).__name__ for s in post.segments]
    assert kinds == ["Prose", "ResultBlock", "Prose", "ResultBlock", "Prose"]
    assert [s.line for s in post.segments] == [1, line_of(text, "```mechwork"), line_of(text, "Between."),
                                               line_of(text, "logit-lens") - 1, line_of(text, "End.")]
    assert post.segments[2].text.strip() == "Between."


def test_args_are_checked_with_defaults_filled_and_the_key_is_canonical():
    a = parse_text("```mechwork\nattention: induction-2l\ntokens: repeated   12\nheads: 1\n```\n").blocks[0]
    b = parse_text("```mechwork\nattention: induction-2l\nheads: [1]\ntokens: repeated 12\n```\n").blocks[0]
    assert isinstance(a, ResultBlock) and a.args == b.args
    assert a.args["tokens"] == "repeated 12" and a.args["heads"] == [1] and a.args["layer"] == "all"
    assert set(a.args) == set(BLOCKS["attention"].all_args)
    assert json.dumps(a.key(), sort_keys=True) == json.dumps(b.key(), sort_keys=True)
    assert a.key()["kind"] == "attention" and a.key()["args"]["title"] is None


def test_title_and_description_come_from_front_matter_else_the_prose_else_the_file():
    fm = parse_text("---\ntitle: Given\ndescription: Said here.\ndate: 2026-12-01\n---\n# Heading\n\nFirst para.\n")
    assert (fm.title, fm.description, fm.date) == ("Given", "Said here.", "2026-12-01")
    prose = parse_text("Intro with `code` and\na break.\n\n# The Heading\n\nMore.\n", "x/my-post.md")
    assert (prose.title, prose.description, prose.date) == ("The Heading", "Intro with code and a break.", None)
    math = parse_text("Basis of $\\mathbb{Z}_{113}$: $x \\cdot W_U$ costs $5 and $6.\n")
    assert math.description == "Basis of Z_113: x · W_U costs $5 and $6."  # plain text: no '$' math left
    bare = parse_text("## Only a subheading\n", "x/my-post.md")
    assert (bare.title, bare.description) == ("my-post", None)


def test_parse_post_reads_a_file_and_resolves_models_beside_it(tmp_path):
    post = tmp_path / "posts" / "a.md"
    post.parent.mkdir()
    post.write_text("# A\n\n```mechwork\ntraining-curves: modadd-113\n```\n")
    got = parse_post(post)
    assert got.path == str(post) and got.blocks[0].path == str(post) and got.blocks[0].line == 3
    (tmp_path / "posts" / "run").mkdir()  # a folder beside the post, but not a run: refused naming it
    post.write_text("# A\n\n```mechwork\ntraining-curves: run\n```\n")
    with pytest.raises(PostError) as info:
        parse_post(post)
    msg = str(info.value)
    assert msg.startswith(f"{post}:3: model 'run'") and "config.json" in msg
    with pytest.raises(PostError, match="no such post file"):
        parse_post(Path(tmp_path / "missing.md"))


def test_every_example_post_parses():
    root = Path(__file__).parent / "posts"
    posts = sorted(root.glob("*.md"))
    for p in posts:
        post = parse_post(p)
        assert post.blocks and post.title


def test_a_missing_required_argument_names_it_and_what_is_valid():
    text = PRELUDE + "```mechwork\nresult: modadd-113\n```\n"
    msg = refused(text)
    assert msg.startswith(f"posts/p.md:{line_of(text, '```mechwork')}: result needs the argument 'name'")
    assert "analysis bundle" in msg


def test_parsing_every_example_post_imports_no_torch():
    import subprocess
    import sys

    root = Path(__file__).parent / "posts"
    code = ("import sys\nfrom pathlib import Path\nfrom mechwork.post.parse import parse_post\n"
            f"n = sum(len(parse_post(p).blocks) for p in sorted(Path({str(root)!r}).glob('*.md')))\n"
            "assert n > 10 and 'torch' not in sys.modules, n\n")
    r = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, timeout=300)
    assert r.returncode == 0, r.stderr


@pytest.mark.parametrize("where", ["front", "block"])
@pytest.mark.parametrize("date", ["2026-13-45", "2026-02-30"])
def test_an_invalid_date_is_text_and_a_date_is_shown_as_written(where, date):
    head = f"---\ndate: {date}\n---\n" if where == "front" else ""
    post = parse_text(head + "```mechwork\nattention: induction-2l\n" + (f"title: {date}\n" if where == "block" else "")
                      + "```\n", "p.md")
    assert (post.date if where == "front" else post.blocks[0].args["title"]) == date
    assert parse_text("---\ndate: 2026-01-05\n---\n# x\n").date == "2026-01-05"


@pytest.mark.parametrize(("text", "key"), [
    (PRELUDE + "```mechwork\nattention: induction-2l\nseed: 1\nlayer: 0\nseed: 2\n```\n", "seed"),
    (PRELUDE + "```mechwork\nattention: induction-2l\nattention: modadd-113\n```\n", "attention"),
    ("---\ntitle: A\ndescription: d\ntitle: B\n---\n# x\n", "title")])
def test_a_duplicate_key_is_refused_at_the_second_ones_line(text, key):
    second = [i for i, line in enumerate(text.splitlines(), 1) if line.startswith(f"{key}:")][1]
    msg = refused(text)
    assert msg.startswith(f"posts/p.md:{second}: duplicate key {key!r} in the ")


@pytest.mark.parametrize("newline", ["\n", "\r\n"])
@pytest.mark.parametrize(("bad", "said"), [('title: "unclosed', "quoted scalar"), ("heads: [0, 1", "flow sequence"),
                                           ("heads: {0: 1", "flow mapping")])
def test_an_unclosed_quote_or_bracket_is_reported_at_its_own_line(newline, bad, said):
    text = PRELUDE + f"```mechwork\nattention: induction-2l\n{bad}\nseed: 1\n\n```\n"
    msg = refused(text.replace("\n", newline))
    assert msg.startswith(f"posts/p.md:{line_of(text, bad)}: malformed YAML in the mechwork block") and said in msg


def test_a_utf8_bom_does_not_hide_the_front_matter(tmp_path):
    text = "---\ntitle: Marked\n---\n\nBody.\n"
    (tmp_path / "p.md").write_bytes(b"\xef\xbb\xbf" + text.encode())
    assert parse_post(tmp_path / "p.md").title == "Marked"
    assert parse_text("\ufeff" + text).title == "Marked"
    msg = refused("\ufeff" + text.replace("title: Marked", "title: Marked\nauthor: me"))
    assert msg.startswith(f"posts/p.md:{line_of(text, 'title: Marked') + 1}: unknown front matter key 'author'")


def test_html_comments_are_not_there_and_later_lines_keep_their_numbers():
    text = ("# C\n\nVisible <!-- inline note --> text.\n\n<!-- TODO: hidden -->\n\n<!--\n```mechwork\n"
            "atention: x\n```\n-->\n\n`<!-- shown -->` kept\n\n```md\n<!-- in code -->\n```\n\n```mechwork\n"
            "attention: induction-2l\n```\n\nAfter.\n")
    post = parse_text(text, "c.md")
    prose = "".join(s.text for s in post.segments if isinstance(s, Prose))
    assert "inline note" not in prose and "TODO" not in prose and "atention" not in prose and "\n-->" not in prose
    assert "Visible" in prose and "`<!-- shown -->` kept" in prose and "<!-- in code -->" in prose
    assert [b.line for b in post.blocks] == [line_of(text, "attention: induction-2l") - 1]
    assert [s.line for s in post.segments if isinstance(s, Prose)][-1] == line_of(text, "After.")
    assert parse_text("a <!-- never closed\n\nb\n").segments[0].text == "a <!-- never closed\n\nb\n"


def test_an_argument_error_is_at_the_arguments_line_and_a_whole_block_error_at_the_fence():
    text = PRELUDE + "```mechwork\nattention: induction-2l\nlayer: 0\nseed: -1\n```\n"
    assert refused(text).startswith(f"posts/p.md:{line_of(text, 'seed: -1')}: argument 'seed'")
    text = PRELUDE + "```mechwork\nresult: modadd-113\ntitle: t\n```\n"
    assert refused(text).startswith(f"posts/p.md:{line_of(text, '```mechwork')}: result needs the argument 'name'")
    text = "---\ntitle: T\ndescription: [1, 2]\n---\n# x\n"
    assert refused(text).startswith(f"posts/p.md:{line_of(text, 'description:')}: front matter 'description'")


def test_a_model_path_too_long_for_the_file_system_is_one_line(tmp_path):
    model = "y" * 300 + "/" + "z" * 300
    msg = refused(f"```mechwork\nattention: {model}\n```\n", str(tmp_path / "p.md"))
    assert msg.startswith(f"{tmp_path / 'p.md'}:1: model 'yyyy") and "does not exist; give a preset" in msg
    assert "...'" in msg and len(msg) < len(model)


def test_a_model_case_a_result_key_second_and_the_info_strings_case():
    msg = refused("```mechwork\nattention: MODADD-113\n```\n")
    assert "does not exist" in msg and "(did you mean 'modadd-113'?)" in msg
    msg = refused("```mechwork\ntitle: T\nattention: induction-2l\n```\n")
    assert msg.startswith("posts/p.md:1: the first key must name the result (one of ") and "attention" in msg
    blocks = parse_text("```Mechwork\nattention: induction-2l\n```\n\n``` mechwork {.x}\ndla: induction-2l\n```\n"
                        "\n```mechworks\ndla: x\n```\n").blocks
    assert [(b.kind, b.line) for b in blocks] == [("attention", 1), ("dla", 5)]
