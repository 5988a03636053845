"""mechwork.prompts: strings through the model's tokenizer, ids checked against vocabulary and context."""

from __future__ import annotations

import os
import sys

import pytest
import torch

from mechwork.errors import ConfigError
from mechwork.prompts import Prompts, has_tokenizer, prompt_pair, read_prompts, tokenize

sys.path.insert(0, os.path.dirname(__file__))
import fourmodels


@pytest.fixture(scope="module")
def gpt2(tmp_path_factory):
    """The tiny GPT-2 of the acceptance tests, with its tokenizer, booted offline."""
    os.environ["HF_HUB_OFFLINE"] = "1"
    from transformer_lens.model_bridge import TransformerBridge

    d = fourmodels.hf_dir("gpt2", tmp_path_factory.mktemp("gpt2"))
    return TransformerBridge.boot_transformers(str(d), device="cpu").eval()


@pytest.fixture(scope="module")
def ind2l():
    import mechwork

    return mechwork.load("induction-2l", device="cpu")


def test_strings_tokenise_as_transformer_lens(gpt2):
    assert has_tokenizer(gpt2)
    texts = ["the cat sat on the mat", "hello world"]
    p = tokenize(gpt2, texts)
    assert p.texts == tuple(texts)
    for text, row, labels in zip(texts, p.rows, p.labels, strict=True):
        assert torch.equal(row, gpt2.to_tokens(text)[0])
        assert labels == tuple(gpt2.to_str_tokens(text))
    assert p.labels[0][0] == "<|endoftext|>" and p.labels[0][1:] == ("the", "cat", "sat", "on", "the", "mat")
    n = len(gpt2.to_tokens("hello world")[0])
    assert p.lengths == (7, n) and n != 7
    with pytest.raises(ConfigError, match=rf"different lengths \(7, {n} tokens\)"):
        p.batch()
    assert tuple(tokenize(gpt2, "the cat").batch().shape) == (1, 3)


def test_ids_are_labelled_by_the_tokenizer_when_there_is_one(gpt2):
    ids = gpt2.to_tokens("the dog sat")[0]
    p = tokenize(gpt2, [ids.tolist()])
    assert torch.equal(p.rows[0], ids) and p.labels[0] == ("<|endoftext|>", "the", "dog", "sat")
    assert p.texts[0] == " ".join(str(i) for i in ids.tolist())


def test_a_model_without_tokenizer_refuses_strings(ind2l):
    assert not has_tokenizer(ind2l)
    with pytest.raises(ConfigError, match=r"^this model has no tokenizer: give token ids \(got the string 'abc'\)$"):
        tokenize(ind2l, "abc")
    with pytest.raises(ConfigError, match="no tokenizer"):
        tokenize(ind2l, [[1, 2], "abc"])


def test_ids_without_tokenizer_label_as_numbers(ind2l):
    p = tokenize(ind2l, torch.tensor([[5, 6, 7], [8, 9, 10]]))
    assert p.labels == (("5", "6", "7"), ("8", "9", "10")) and p.texts == ("5 6 7", "8 9 10")
    assert torch.equal(p.batch(), torch.tensor([[5, 6, 7], [8, 9, 10]]))
    one = tokenize(ind2l, [3, 4])  # a flat list of ids is one prompt
    assert len(one) == 1 and one.lengths == (2,)
    assert isinstance(one, Prompts)


@pytest.mark.parametrize("ids, bad", [([1, 2, 64], 64), ([-1, 2], -1)])
def test_ids_out_of_vocabulary(ind2l, ids, bad):
    assert ind2l.cfg.d_vocab == 64
    with pytest.raises(ConfigError, match=rf"^prompt 1 holds token id {bad}, outside the model's vocabulary "
                                          r"\(ids 0 to 63\)$"):
        tokenize(ind2l, [ids])


def test_float_ids_and_empty_prompts_refused(ind2l):
    with pytest.raises(ConfigError, match="integer token ids"):
        tokenize(ind2l, torch.tensor([1.0, 2.0]))
    with pytest.raises(ConfigError, match="prompt 1 is empty"):
        tokenize(ind2l, [[]])
    with pytest.raises(ConfigError, match="no prompts given"):
        tokenize(ind2l, [])


def test_prompt_longer_than_the_context_names_prompt_length_and_context(gpt2, ind2l):
    long_text = " ".join(["the cat sat on the mat"] * 12)  # 72 words, plus BOS
    with pytest.raises(ConfigError, match=r"^prompt 2 'the cat sat .*\.\.\.' is 73 tokens, longer than the "
                                          r"model's context of 64 tokens$"):
        tokenize(gpt2, ["hello", long_text])
    assert ind2l.cfg.n_ctx == 48
    with pytest.raises(ConfigError, match=r"is 49 tokens, longer than the model's context of 48 tokens"):
        tokenize(ind2l, [list(range(40)) + list(range(9))])
    assert tokenize(ind2l, [list(range(48))]).lengths == (48,)  # exactly the context fits


def test_pair_lengths_differ_names_both(gpt2, ind2l):
    with pytest.raises(ConfigError, match=r"^'--pair' prompts must tokenise to the same length "
                                          r"\(clean 4 tokens, corrupted 6\)$"):
        prompt_pair(gpt2, "the cat sat", "the cat sat on the")
    clean, corrupted = prompt_pair(gpt2, "john gave a drink to mary", "mary gave a drink to john")
    assert clean.lengths == corrupted.lengths == (7,)
    assert not torch.equal(clean.rows[0], corrupted.rows[0])
    clean, corrupted = prompt_pair(ind2l, [1, 2, 3], torch.tensor([4, 5, 6]))
    assert clean.batch().tolist() == [[1, 2, 3]] and corrupted.batch().tolist() == [[4, 5, 6]]
    with pytest.raises(ConfigError, match=r"clean 3 tokens, corrupted 2"):
        prompt_pair(ind2l, [1, 2, 3], [1, 2])


def test_file_of_mixed_text_and_id_lines(gpt2, ind2l, tmp_path):
    f = tmp_path / "prompts.txt"
    f.write_text("the cat sat on the mat\n\n  1, 29, 58\n   \n3 4 5 6\nhello world\n", encoding="utf-8")
    p = read_prompts(gpt2, f)
    assert p.texts == ("the cat sat on the mat", "1 29 58", "3 4 5 6", "hello world")
    assert p.rows[1].tolist() == [1, 29, 58] and p.rows[2].tolist() == [3, 4, 5, 6]
    assert torch.equal(p.rows[3], gpt2.to_tokens("hello world")[0])
    assert p.labels[1] == tuple(gpt2.to_str_tokens(torch.tensor([1, 29, 58])))
    with pytest.raises(ConfigError, match=r"^this model has no tokenizer: give token ids \(got the string 'the cat"):
        read_prompts(ind2l, f)
    g = tmp_path / "ids.txt"
    g.write_text("1 2 3\n4,5,99\n", encoding="utf-8")
    with pytest.raises(ConfigError, match=rf"^line 2 of '{g}' holds token id 99, outside"):
        read_prompts(ind2l, g)


def test_missing_or_empty_file(ind2l, tmp_path):
    missing = tmp_path / "nope.txt"
    with pytest.raises(ConfigError, match=rf"^prompts file '{missing}' does not exist$"):
        read_prompts(ind2l, missing)
    empty = tmp_path / "empty.txt"
    empty.write_text("\n  \n", encoding="utf-8")
    with pytest.raises(ConfigError, match="holds no prompts"):
        read_prompts(ind2l, empty)
    with pytest.raises(ConfigError, match="is not a file"):
        read_prompts(ind2l, tmp_path)


def test_a_file_as_editors_write_it(gpt2, ind2l, tmp_path):
    """A byte-order mark, CRLF line ends, trailing spaces and blank lines change nothing; "1, 2, 3" is ids."""
    f = tmp_path / "p.txt"
    f.write_bytes("\ufeffthe cat sat  \r\n\r\n   \r\n1, 2, 3\r\nthe dog\t\r\n".encode())
    p = read_prompts(gpt2, f)
    assert p.texts == ("the cat sat", "1 2 3", "the dog")
    assert torch.equal(p.rows[0], gpt2.to_tokens("the cat sat")[0]) and p.rows[1].tolist() == [1, 2, 3]
    f.write_bytes("\ufeff1 2 3\r\n4,5,6,\r\n".encode())
    assert [r.tolist() for r in read_prompts(ind2l, f).rows] == [[1, 2, 3], [4, 5, 6]]
    for line, needles in (("1 -2 3", ["line 1", "token id -2", "ids 0 to"]),
                          ("1.5 2", ["no tokenizer", "'1.5 2'", "on line 1 of"])):
        f.write_text(line + "\n")
        with pytest.raises(ConfigError) as e:
            read_prompts(ind2l, f)
        assert "\n" not in str(e.value) and all(n in str(e.value) for n in needles), str(e.value)
    f.write_text(" ".join(["7"] * int(ind2l.cfg.n_ctx)) + "\n")  # exactly the context: fits
    assert read_prompts(ind2l, f).lengths == (int(ind2l.cfg.n_ctx),)


def test_prompts_numpy_arrays_and_prompts_objects_are_taken(gpt2, ind2l):
    import numpy as np

    p = tokenize(ind2l, np.array([[1, 2, 3], [4, 5, 6]]))
    assert [r.tolist() for r in p.rows] == [[1, 2, 3], [4, 5, 6]]
    with pytest.raises(ConfigError, match="integer token ids"):
        tokenize(ind2l, np.array([[1.5, 2.0]]))
    made = tokenize(gpt2, ["the cat", "the dog"])
    again = tokenize(gpt2, made)
    assert again.texts == made.texts and all(torch.equal(a, b) for a, b in zip(again.rows, made.rows, strict=True))
    big = tokenize(gpt2, [[int(gpt2.cfg.d_vocab) - 1]])
    with pytest.raises(ConfigError, match="outside the model's vocabulary"):
        tokenize(ind2l, big)  # checked again against the model it is given to


def test_a_utf16_file_from_a_windows_editor(gpt2, tmp_path):
    f = tmp_path / "p.txt"
    f.write_bytes("the cat sat\r\n1 2 3\r\n".encode("utf-16"))  # with its byte-order mark
    p = read_prompts(gpt2, f)
    assert p.texts == ("the cat sat", "1 2 3") and p.rows[1].tolist() == [1, 2, 3]
