"""The command line on your own models: ``info``, ``patch --pair`` and ``dashboard`` (the prompt page) on a
Hugging Face directory and on the custom3l run, and the bad inputs: exit 2, one line naming the values,
nothing written."""

from __future__ import annotations

import json

import pytest
import torch

from mechwork.cli import main

GPT2_PAIR = ("when mary and john went to the store john gave a drink to",
             "when mary and john went to the store mary gave a drink to")
IDS_PAIR = ("3 9 14 22 3 9 14", "3 9 14 22 5 11 40")


def run(capsys, *args: str) -> tuple[int, str, str]:
    capsys.readouterr()  # what came before (e.g. transformers saving a model) is not the command's
    code = main(list(args))
    out, err = capsys.readouterr()
    return code, out, err


def test_info_describes_a_model_directory_and_a_run(capsys, four_models):
    code, out, _ = run(capsys, "info", four_models["gpt2"])
    assert code == 0 and "2 layer" in out and "tokenizer" in out.lower()
    code, out, _ = run(capsys, "info", four_models["custom3l"])
    assert code == 0 and "3 layer(s)" in out and "induction" in out


def test_patch_pair_on_a_model_directory_matches_the_pair_metric(capsys, tmp_path, four_models):
    import mechwork
    from mechwork.analysis.patching import patch
    from mechwork.analysis.prompt import pair_metric
    from mechwork.prompts import prompt_pair

    out = tmp_path / "z.json"
    code, text, err = run(capsys, "patch", four_models["gpt2"], "--pair", *GPT2_PAIR, "--site", "z", "--by", "head",
                          "--json", str(out))
    assert code == 0, err
    assert "(the clean prompt's top next token)" in text and "top 10 cells" in text
    data = json.loads(out.read_text())
    model = mechwork.load(four_models["gpt2"], device="cpu")
    clean, corrupted = prompt_pair(model, *GPT2_PAIR)
    info, metric = pair_metric(model, clean, corrupted)
    assert abs(data["clean"] - info.clean_value) < 1e-4 and abs(data["corrupted"] - info.corrupted_value) < 1e-4
    want = patch(model, clean.batch(), corrupted.batch(), metric, site="z", by="head")
    assert torch.allclose(torch.tensor(data["values"]), want.values, atol=1e-5)


def test_patch_on_a_model_directory_without_a_pair_uses_repeated_random_tokens(capsys, four_models):
    code, text, err = run(capsys, "patch", four_models["llama"], "--top", "3")
    assert code == 0, err
    assert "repeated random tokens" in text and "top 3 cells" in text


def test_patch_pair_overrides_a_runs_standard_prompts(capsys, four_models):
    code, text, err = run(capsys, "patch", four_models["custom3l"], "--pair", *IDS_PAIR)
    assert code == 0, err
    assert "--pair '3 9 14 22 3 9 14' / '3 9 14 22 5 11 40' (7 tokens)" in text
    code, text, err = run(capsys, "patch", four_models["custom3l"], "--n", "2")  # the task's own prompts
    assert code == 0 and "--pair" not in text, err


def test_dashboard_of_a_model_directory_is_the_prompt_page(capsys, tmp_path, four_models):
    out = tmp_path / "gpt2.html"
    code, _, err = run(capsys, "dashboard", four_models["gpt2"], "--out", str(out))
    assert code == 0, err
    html = out.read_text()
    assert "<title>Prompt dashboard:" in html and "repeated random tokens" in html
    assert "Activation patching of each head" in html  # the default pair made from the repeated tokens
    prompts = tmp_path / "p.txt"
    prompts.write_text("the cat sat on the mat\n\none two three\n")
    code, _, err = run(capsys, "dashboard", four_models["gpt2"], "--prompts", str(prompts), "--pair", *GPT2_PAIR,
                       "--out", str(out))
    assert code == 0, err
    html = out.read_text()
    assert "Attention on prompt 2" in html and "Attention on prompt 3" not in html and "the cat sat" in html


def test_dashboard_of_a_run_keeps_its_kit_page_unless_prompts_are_given(capsys, tmp_path, four_models):
    kit = tmp_path / "kit.html"
    code, _, err = run(capsys, "dashboard", four_models["custom3l"], "--out", str(kit))
    assert code == 0, err
    assert "<title>Induction dashboard:" in kit.read_text()
    prompt = tmp_path / "prompt.html"
    code, _, err = run(capsys, "dashboard", four_models["custom3l"], "--pair", *IDS_PAIR, "--out", str(prompt))
    assert code == 0, err
    assert "<title>Prompt dashboard:" in prompt.read_text()


BEFORE_LOADING = {"missing_file", "text_no_tokenizer_run", "ids_too_long_run", "ids_pair_lengths", "n_with_pair",
                  "text_file_run", "ids_file_too_long_run"}


@pytest.mark.parametrize("case", ["too_long", "pair_lengths", "missing_file", "text_no_tokenizer_run",
                                  "text_no_tokenizer_dir", "ids_too_long_run", "ids_pair_lengths", "n_with_pair",
                                  "text_file_run", "ids_file_too_long_run"])
def test_bad_prompt_input_is_one_line_exit_2_nothing_written(capsys, tmp_path, monkeypatch, four_models, case):
    from fourmodels import hf_dir

    out = tmp_path / "page.html"
    if case == "text_no_tokenizer_dir":
        hf_dir("gpt2", tmp_path / "bare", with_tokenizer=False)
    long_file = tmp_path / "long.txt"
    long_file.write_text(" ".join(["the cat sat on the mat"] * 12) + "\n")  # 72 tokens + BOS: n_ctx is 64
    text_file, long_ids = tmp_path / "text.txt", tmp_path / "ids.txt"
    text_file.write_text("1 2 3\nthe cat sat\n")
    long_ids.write_text(" ".join(["5"] * 49) + "\n")
    args, needles = {
        "too_long": (["dashboard", four_models["gpt2"], "--prompts", str(long_file)], ["73 tokens", "64"]),
        "pair_lengths": (["dashboard", four_models["gpt2"], "--pair", "the cat sat", "the cat sat on the mat"],
                         ["clean 4 tokens", "corrupted 7"]),
        "missing_file": (["dashboard", four_models["custom3l"], "--prompts", str(tmp_path / "nope.txt")],
                         ["nope.txt", "does not exist"]),
        "text_no_tokenizer_run": (["patch", four_models["custom3l"], "--pair", "the cat", "the dog"],
                                  ["no tokenizer", "'the cat'"]),
        "text_no_tokenizer_dir": (["dashboard", str(tmp_path / "bare"), "--pair", "the cat", "the dog"],
                                  ["no tokenizer", "'the cat'"]),
        # refused from the config alone, before the model loads
        "ids_too_long_run": (["dashboard", four_models["custom3l"], "--pair", " ".join(["1"] * 65),
                              " ".join(["2"] * 65)], ["65 tokens", "context of 64"]),
        "ids_pair_lengths": (["patch", four_models["gpt2"], "--pair", "1 2 3", "1 2"],
                             ["clean 3 tokens", "corrupted 2"]),
        "n_with_pair": (["patch", four_models["custom3l"], "--pair", "1 2", "3 4", "--n", "4"], ["'--n' 4", "--pair"]),
        "text_file_run": (["dashboard", four_models["custom3l"], "--prompts", str(text_file)],
                          ["no tokenizer", "'the cat sat'", "line 2 of"]),
        "ids_file_too_long_run": (["dashboard", "induction-2l", "--prompts", str(long_ids)],
                                  ["line 1 of", "49 tokens", "context of 48"]),
    }[case]
    if args[0] == "dashboard":
        args += ["--out", str(out)]
    if case in BEFORE_LOADING:
        def no_loading(*a, **k):
            raise AssertionError("the model was loaded before the bad input was refused")

        monkeypatch.setattr("mechwork.source.open_source", no_loading)
    code, text, err = run(capsys, *args)
    assert code == 2, (text, err)
    lines = err.strip().splitlines()
    assert len(lines) == 1 and lines[0].startswith("mechwork: error:"), err
    assert all(n in lines[0] for n in needles), lines[0]
    assert not out.exists()


@pytest.mark.parametrize("encoding", ["utf-8-sig", "utf-16"])
def test_a_prompts_file_with_a_byte_order_mark_is_read_as_text_before_loading(capsys, tmp_path, encoding):
    """The check before torch reads the file as read_prompts does: the mark is not part of line 1."""
    f = tmp_path / "p.txt"
    f.write_text("the cat sat\r\n\r\n1 2 3\r\n", encoding=encoding)
    code, _, err = run(capsys, "dashboard", "induction-2l", "--prompts", str(f), "--out", str(tmp_path / "a.html"))
    assert code == 2 and "(got the string 'the cat sat' in line 1 of" in err and len(err.strip().splitlines()) == 1
    assert sorted(p.name for p in tmp_path.iterdir()) == ["p.txt"]
