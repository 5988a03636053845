from __future__ import annotations

import pytest
import torch
from hypothesis import given, settings
from hypothesis import strategies as st

from mechwork.errors import ConfigError, MechworkError
from mechwork.tasks import OPS, InductionTask, ModularArithmetic, is_prime, task_from_dict

PRIMES = [11, 13, 17, 23, 29, 31, 37, 53, 59, 97, 113]


def brute_label(a: int, b: int, op: str, p: int) -> int:
    if op == "add":
        return (a + b) % p
    if op == "sub":
        return (a - b) % p
    if op == "mul":
        return (a * b) % p
    if op == "x2+y2":
        return (a * a + b * b) % p
    inv = next(x for x in range(1, p) if (b * x) % p == 1)  # brute-force inverse
    return (a * inv) % p


@settings(max_examples=40, deadline=None)
@given(p=st.sampled_from(PRIMES), op=st.sampled_from(OPS), frac=st.floats(0.2, 0.8))
def test_labels_match_brute_force(p, op, frac):
    task = ModularArithmetic(p=p, op=op, train_frac=frac, seed=1)
    toks, labels = task.tokens, task.labels
    assert toks.shape == (task.n_pairs, 3)
    assert bool((toks[:, 2] == p).all())
    for i in torch.randint(0, task.n_pairs, (25,)).tolist():
        a, b = toks[i, :2].tolist()
        assert labels[i].item() == brute_label(a, b, op, p)


def test_every_pair_once():
    task = ModularArithmetic(p=13, op="add")
    pairs = {tuple(r) for r in task.tokens[:, :2].tolist()}
    assert len(pairs) == 13 * 13 == task.n_pairs
    div = ModularArithmetic(p=13, op="div")
    assert div.n_pairs == 13 * 12 and bool((div.tokens[:, 1] != 0).all())


def test_split_sizes_and_nanda_count():
    task = ModularArithmetic(p=113, train_frac=0.3, seed=0)
    assert len(task.train_idx) == 3830  # Nanda et al.: int(0.3 * 113**2)
    assert len(task.test_idx) == 113**2 - 3830
    both = torch.cat([task.train_idx, task.test_idx]).sort().values
    assert torch.equal(both, torch.arange(113**2))


def test_split_deterministic_and_seeded():
    a = ModularArithmetic(p=31, seed=4)
    b = ModularArithmetic(p=31, seed=4)
    c = ModularArithmetic(p=31, seed=5)
    assert torch.equal(a.train_idx, b.train_idx)
    assert not torch.equal(a.train_idx, c.train_idx)


def test_batch_marks_last_position_only():
    task = ModularArithmetic(p=7, train_frac=0.5)
    b = task.eval_batches()["train"]
    assert b.mask[:, -1].all() and not b.mask[:, :-1].any()
    assert torch.equal(b.targets[:, -1], task.labels[task.train_idx])


@pytest.mark.parametrize(
    ("kwargs", "message"),
    [
        ({"p": 2}, "'p' must be an integer >= 3 (got 2)"),
        ({"p": 12, "op": "div"}, "'p' must be a prime >= 3 for op 'div' (it needs a field) (got 12)"),
        ({"op": "pow"}, "'op' must be one of add, sub, mul, div, x2+y2 (got 'pow')"),
        ({"train_frac": 0.0}, "'train_frac' must be a number in (0, 1) (got 0.0)"),
        ({"train_frac": 1.0}, "'train_frac' must be a number in (0, 1) (got 1.0)"),
        ({"train_frac": "half"}, "'train_frac' must be a number in (0, 1) (got 'half')"),
        ({"p": 3, "train_frac": 0.05}, "'train_frac' must be large enough for >= 1 train pair of 9 (got 0.05)"),
        ({"seed": -1}, "'seed' must be an integer in [0, 4294967295] (got -1)"),
    ],
)
def test_bad_modular_arguments(kwargs, message):
    with pytest.raises(ConfigError) as e:
        ModularArithmetic(**kwargs)
    assert str(e.value) == message
    assert isinstance(e.value, MechworkError) and isinstance(e.value, ValueError)


def test_composite_p_is_fine_for_add():
    assert ModularArithmetic(p=12, op="add").n_pairs == 144
    assert [n for n in range(2, 30) if is_prime(n)] == [2, 3, 5, 7, 11, 13, 17, 19, 23, 29]


# -- induction ---------------------------------------------------------------
def test_induction_targets_are_copies_inside_the_repeat():
    task = InductionTask(d_vocab=50, seq_len=40, min_len=3, max_len=10, seed=3)
    b = task.train_batch(0)
    assert b.tokens.shape == (task.batch_size, 40) and b.mask.any(dim=1).all()
    for row in range(len(b)):
        toks, mask = b.tokens[row].tolist(), b.mask[row]
        pos = mask.nonzero().flatten().tolist()
        # every masked position t predicts toks[t+1], and some earlier position s has
        # toks[s] == toks[t] followed by toks[s+1] == toks[t+1] (an induction pattern)
        for t in pos:
            assert b.targets[row, t].item() == toks[t + 1]
            assert any(toks[s] == toks[t] and toks[s + 1] == toks[t + 1] for s in range(t - 1))
        assert pos == list(range(pos[0], pos[-1] + 1))  # one contiguous repeat


def test_induction_offsets_and_lengths_vary():
    task = InductionTask(d_vocab=64, seq_len=48, batch_size=256, seed=0)
    b = task.train_batch(0)
    starts = b.mask.float().argmax(dim=1)
    lengths = b.mask.sum(dim=1)
    assert len(set(starts.tolist())) > 15
    assert len(set(lengths.tolist())) == task.max_len - task.min_len + 1
    # distance back to the first copy varies: no fixed-offset shortcut
    dists = set()
    for row in range(64):
        t = int(starts[row])
        toks = b.tokens[row].tolist()
        dists.add(min(t - s for s in range(t) if toks[s] == toks[t] and toks[s + 1] == toks[t + 1]))
    assert len(dists) > 10


def test_induction_determinism_and_fixed_eval_set():
    a, b = InductionTask(seed=1), InductionTask(seed=1)
    assert torch.equal(a.train_batch(7).tokens, b.train_batch(7).tokens)
    assert not torch.equal(a.train_batch(7).tokens, a.train_batch(8).tokens)
    assert torch.equal(a.eval_batches()["test"].tokens, b.eval_batches()["test"].tokens)


@pytest.mark.parametrize(
    ("kwargs", "message"),
    [
        ({"d_vocab": 2}, "'d_vocab' must be an integer >= 4 (got 2)"),
        ({"seq_len": 20, "max_len": 12}, "'max_len' must be at most seq_len/2 = 10 (got 12)"),
        ({"min_len": 5, "max_len": 4}, "'max_len' must be an integer >= 5 (got 4)"),
    ],
)
def test_bad_induction_arguments(kwargs, message):
    with pytest.raises(ConfigError, match=None) as e:
        InductionTask(**kwargs)
    assert str(e.value) == message


def test_task_round_trip_and_bad_kind():
    for t in (ModularArithmetic(p=7, op="sub", train_frac=0.4, seed=2), InductionTask(seed=3)):
        assert task_from_dict(t.to_dict()) == t
    with pytest.raises(ConfigError, match=r"'task\.kind' must be one of modadd, induction"):
        task_from_dict({"kind": "sorting"})
