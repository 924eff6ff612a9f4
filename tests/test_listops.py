"""ListOps: grammar, values checked by an independent evaluator, lengths, split, tokens."""

import statistics

import numpy as np
import pytest
import torch

from su_neuro.datasets import get_task, pad_collate
from su_neuro.datasets import listops as lo


def _parse(tokens: list[int]):
    """Independent recursive evaluator over the token ids: (value, depth, end index, argument counts)."""

    counts, op_depths = [], []  # every operator's argument count and depth (root: 1)

    def node_counting(i, depth):
        tok = tokens[i]
        if tok < lo.OP0:
            return tok - lo.DIGIT0, depth, i + 1
        name = lo.OPERATORS[tok - lo.OP0]
        args, deepest, i = [], depth, i + 1
        while tokens[i] != lo.END:
            value, d, i = node_counting(i, depth + 1)
            args.append(value)
            deepest = max(deepest, d)
        counts.append(len(args))
        op_depths.append(depth)
        if name == "MIN":
            value = min(args)
        elif name == "MAX":
            value = max(args)
        elif name == "MED":
            value = int(statistics.median(args))
        else:
            value = sum(args) % 10
        return value, deepest, i + 1

    value, depth, end = node_counting(0, 1)
    return value, depth, end, counts, op_depths


def _check_split(ds, min_length, max_length, max_depth, max_args):
    lengths, labels, all_counts = [], [], []
    for i in range(len(ds)):
        x, y = ds[i]
        assert x.dtype == torch.long and x.dim() == 1
        seq = x.tolist()
        value, depth, end, counts, op_depths = _parse(seq)
        assert end == len(seq), "trailing tokens after the expression"
        assert value == y
        # operators only below max_depth, digits down to max_depth
        assert depth <= max_depth and max(op_depths) <= max_depth - 1
        assert min_length < len(seq) < max_length
        assert all(2 <= c <= max_args for c in counts)
        assert lo.PAD not in seq
        lengths.append(len(seq))
        labels.append(y)
        all_counts.extend(counts)
    return np.array(lengths), np.array(labels), np.array(all_counts)


def test_short_values_lengths_and_label_distribution(capsys):
    task = get_task("listops_short", n_train=1500, n_valid=100, n_test=200, seed=3)
    assert (task.kind, task.vocab_size, task.pad_id, task.output_size) == ("classify", 16, 0, 10)
    assert (len(task.train), len(task.valid), len(task.test)) == (1500, 100, 200)
    lengths, labels, counts = _check_split(task.train, 10, 500, 5, 10)
    # operators take 2..10 arguments (randint's both bounds reached), roughly uniform
    assert counts.min() == 2 and counts.max() == 10
    freq = np.bincount(counts, minlength=11)[2:] / len(counts)
    assert np.all(np.abs(freq - 1 / 9) < 0.03), freq
    dist = np.bincount(labels, minlength=10) / len(labels)
    with capsys.disabled():
        print(f"\nlistops_short lengths min {lengths.min()} median {np.median(lengths):.0f} max {lengths.max()};"
              f" labels {np.round(dist, 3).tolist()}")
    assert set(labels.tolist()) == set(range(10))
    # all ten classes occur, none above a quarter (the majority class is ~17 % in LRA)
    assert dist.max() < 0.25


@pytest.mark.slow
def test_full_length_sample_and_timing(capsys):
    import time

    t0 = time.perf_counter()
    task = get_task("listops", n_train=2000, n_valid=100, n_test=100, seed=0)
    took = time.perf_counter() - t0
    lengths, labels, _ = _check_split(task.test, 500, 2000, 10, 10)
    tr_len, tr_lab, _ = _check_split(task.train, 500, 2000, 10, 10)
    dist = np.bincount(tr_lab, minlength=10) / len(tr_lab)
    with capsys.disabled():
        print(f"\nlistops (2200 seqs in {took:.1f} s) train lengths min {tr_len.min()} median "
              f"{np.median(tr_len):.0f} max {tr_len.max()}; labels {np.round(dist, 3).tolist()}")
    assert tr_len.min() > 500 and tr_len.max() < 2000
    assert dist.max() < 0.25 and dist.min() > 0.03


def test_deterministic_distinct_and_split_in_order():
    a = lo.generate_listops(300, min_length=10, max_length=200, max_depth=5, seed=7)
    b = lo.generate_listops(300, min_length=10, max_length=200, max_depth=5, seed=7)
    c = lo.generate_listops(300, min_length=10, max_length=200, max_depth=5, seed=8)
    for u, v in zip(a, b, strict=True):
        assert np.array_equal(u, v)
    assert not np.array_equal(a[0][:100], c[0][:100])
    tokens, offsets, _ = a
    seqs = {tokens[offsets[i]:offsets[i + 1]].tobytes() for i in range(300)}
    assert len(seqs) == 300
    task = get_task("listops_short", n_train=200, n_valid=50, n_test=50, min_length=10, max_length=200, seed=7)
    tokens, offsets, labels = lo.generate_listops(300, min_length=10, max_length=200, max_depth=5, seed=7)
    x, y = task.valid[0]
    assert np.array_equal(x.numpy(), tokens[offsets[200]:offsets[201]]) and y == labels[200]
    x, y = task.test[49]
    assert np.array_equal(x.numpy(), tokens[offsets[299]:offsets[300]]) and y == labels[299]


def test_duplicates_are_dropped():
    # depth 2 and 2..3 arguments: few distinct trees, so the generator must skip repeats
    tokens, offsets, _ = lo.generate_listops(200, min_length=3, max_length=6, max_depth=2, max_args=3, seed=0)
    seqs = [tokens[offsets[i]:offsets[i + 1]].tobytes() for i in range(200)]
    assert len(set(seqs)) == 200


def test_collate_pads_tokens_on_the_right():
    task = get_task("listops_short", n_train=8, n_valid=0, n_test=0, seed=1)
    items = [task.train[i] for i in range(8)]
    x, y, lengths = pad_collate(items, pad_id=task.pad_id)
    assert x.dtype == torch.long and x.shape == (8, int(lengths.max()))
    for i, (seq, label) in enumerate(items):
        assert torch.equal(x[i, : len(seq)], seq)
        assert torch.all(x[i, len(seq):] == task.pad_id)
        assert y[i] == label and lengths[i] == len(seq)


def test_bad_options():
    with pytest.raises(ValueError, match="max_length"):
        lo.generate_listops(10, min_length=100, max_length=50)
    with pytest.raises(TypeError, match="unknown option"):
        get_task("listops", max_len=100)
    with pytest.raises(ValueError, match="n_train"):
        get_task("listops_short", n_train=-1)


def test_lengths_no_tree_reaches_are_refused_at_once():
    """Depth-3 trees have at most 1 + 10 * 12 + 1 = 122 tokens: with the full task's
    min_length 500 the generator drew forever (in compiled code, deaf to Ctrl-C)."""
    assert lo._longest_tree(3, 10) == 122 and lo._longest_tree(2, 4) == 6 and lo._longest_tree(1, 9) == 1
    with pytest.raises(ValueError, match="max_depth 3 and max_args 10 has 122 tokens"):
        get_task("listops", max_depth=3, n_train=10, n_valid=0, n_test=10)
    with pytest.raises(ValueError, match="min_length 6"):
        lo.generate_listops(5, min_length=6, max_length=20, max_depth=2, max_args=4)


def test_short_bounds_that_trees_meet_are_served():
    # [OP d d ] has 4 tokens: (3, 5) holds only trees of length 4, (0, 2) only single digits
    tokens, offsets, labels = lo.generate_listops(3, min_length=3, max_length=5, max_depth=2, max_args=2)
    assert np.diff(offsets).tolist() == [4, 4, 4] and len(set(labels.tolist())) <= 3
    tokens, offsets, labels = lo.generate_listops(4, min_length=0, max_length=2, max_depth=3)
    assert np.diff(offsets).tolist() == [1, 1, 1, 1]
    assert sorted(labels.tolist()) == sorted((tokens - lo.DIGIT0).tolist())


def test_bounds_no_tree_meets_end_after_the_draw_budget(monkeypatch):
    """Lengths 2 and 3 cannot be built (a digit has 1 token, an operator at least 4): the
    generator stops after its budget of candidates, in calls of at most DRAWS_PER_CALL."""
    monkeypatch.setattr(lo, "MIN_DRAWS", 5_000)
    monkeypatch.setattr(lo, "DRAWS_PER_TREE", 10)
    monkeypatch.setattr(lo, "DRAWS_PER_CALL", 1_000)
    with pytest.raises(ValueError, match=r"0 of 2 trees with 1 < length < 4 after 5020 candidates"):
        lo.generate_listops(2, min_length=1, max_length=4, max_depth=2, max_args=2)
    # more distinct trees asked for than the grammar holds (10 digits): the budget ends it too
    with pytest.raises(ValueError, match="10 of 11 trees"):
        lo.generate_listops(11, min_length=0, max_length=2, max_depth=2)


def test_calls_of_bounded_draws_give_the_same_trees(monkeypatch):
    whole = lo.generate_listops(40, min_length=10, max_length=200, max_depth=4, seed=3)
    monkeypatch.setattr(lo, "DRAWS_PER_CALL", 7)
    pieces = lo.generate_listops(40, min_length=10, max_length=200, max_depth=4, seed=3)
    for a, b in zip(whole, pieces, strict=True):
        assert np.array_equal(a, b)
