"""Generated tasks: copy, selective copy, adding problem."""

import numpy as np
import pytest
import torch

from su_neuro.datasets import IGNORE_INDEX, get_task, pad_collate

SMALL = {"n_train": 32, "n_test": 8}


def _stack(ds):
    xs, ys = zip(*(ds[i] for i in range(len(ds))), strict=True)
    return torch.stack(xs), torch.stack(ys)


@pytest.mark.parametrize("delay", [0, 1, 37])
def test_copy_layout_and_targets(delay):
    task = get_task("copy", delay=delay, **SMALL)
    assert (task.kind, task.input_size, task.output_size) == ("seq2seq", 10, 10)
    assert task.seq_len == 2 * 10 + delay + 1
    x, y = _stack(task.train)
    assert x.shape == (32, task.seq_len, 10) and x.dtype == torch.float32
    assert y.shape == (32, task.seq_len) and y.dtype == torch.long
    tokens = x.argmax(-1)
    assert torch.all(x.sum(-1) == 1)
    symbols = tokens[:, :10]
    assert torch.all((symbols >= 1) & (symbols <= 8))
    assert torch.all(tokens[:, 10 : 10 + delay] == 0)
    assert torch.all(tokens[:, 10 + delay] == 9)  # delimiter
    assert torch.all(tokens[:, -10:] == 0)
    assert torch.equal(y[:, -10:], symbols)
    assert torch.all(y[:, :-10] == IGNORE_INDEX)


def test_copy_blank_targets_scores_every_step():
    _, y = _stack(get_task("copy", delay=5, blank_targets=True, **SMALL).train)
    assert torch.all(y[:, :-10] == 0)


def test_selective_copy_recalls_in_order():
    task = get_task("selective_copy", length=50, n_memorize=6, n_symbols=5, **SMALL)
    assert task.seq_len == 50 + 1 + 6 and task.input_size == 7
    x, y = _stack(task.test)
    tokens = x.argmax(-1)
    context = tokens[:, :50]
    assert torch.all(tokens[:, 50] == 6)  # delimiter
    for row in range(len(tokens)):
        placed = context[row][context[row] != 0]
        assert torch.equal(placed, y[row, -6:])
    assert torch.all(y[:, :-6] == IGNORE_INDEX)
    assert not torch.equal(tokens[0, :50], tokens[1, :50])  # positions vary


def test_adding_target_is_sum_of_marked_values():
    task = get_task("adding", length=31, **SMALL)
    assert (task.kind, task.input_size, task.output_size, task.seq_len) == ("regress", 2, 1, 31)
    x, y = _stack(task.train)
    assert x.shape == (32, 31, 2) and y.shape == (32, 1)
    markers = x[..., 1]
    assert torch.all(markers.sum(1) == 2)
    assert torch.all(markers[:, :15].sum(1) == 1)  # one in each half
    torch.testing.assert_close(y[:, 0], (x[..., 0] * markers).sum(1))
    assert torch.all((x[..., 0] >= 0) & (x[..., 0] < 1))


@pytest.mark.parametrize("name", ["copy", "selective_copy", "adding"])
def test_generated_tasks_are_deterministic(name):
    a, b = get_task(name, seed=3, **SMALL), get_task(name, seed=3, **SMALL)
    c = get_task(name, seed=4, **SMALL)
    for split in ("train", "test"):
        xa, ya = _stack(getattr(a, split))
        xb, yb = _stack(getattr(b, split))
        assert torch.equal(xa, xb) and torch.equal(ya, yb)
    assert not torch.equal(_stack(a.train)[0], _stack(c.train)[0])
    assert not torch.equal(_stack(a.train)[0][:8], _stack(a.test)[0])
    # The test split does not depend on the train size.
    d = get_task(name, seed=3, n_train=5, n_test=8)
    assert torch.equal(_stack(a.test)[0], _stack(d.test)[0])
    # numpy integers are integers (a seed from a numpy generator, a size from an array)
    e = get_task(name, seed=np.int64(3), **{k: np.int32(v) for k, v in SMALL.items()})
    assert torch.equal(_stack(a.train)[0], _stack(e.train)[0])
    with pytest.raises(TypeError, match="seed must be an int, got bool"):
        get_task(name, seed=True, **SMALL)


def test_blank_targets_must_be_a_bool():
    """The string "False" is truthy: it gave the fully scored variant."""
    with pytest.raises(TypeError, match="blank_targets must be True or False, got 'False'"):
        get_task("copy", blank_targets="False", **SMALL)


def test_pad_collate():
    x, y, lengths = pad_collate([(torch.ones(3, 2), 1), (torch.ones(5, 2), 0)])
    assert x.shape == (2, 5, 2) and torch.equal(lengths, torch.tensor([3, 5]))
    assert torch.equal(y, torch.tensor([1, 0])) and x[0, 3:].abs().sum() == 0
    seq = [(torch.ones(2, 1), torch.tensor([1, 2])), (torch.ones(4, 1), torch.tensor([3, 4, 5, 6]))]
    _, y, _ = pad_collate(seq)
    assert y.tolist() == [[1, 2, IGNORE_INDEX, IGNORE_INDEX], [3, 4, 5, 6]]
    task = get_task("copy", delay=3, **SMALL)
    loader = torch.utils.data.DataLoader(task.train, batch_size=4, collate_fn=pad_collate)
    x, y, lengths = next(iter(loader))
    assert x.shape == (4, task.seq_len, 10) and torch.all(lengths == task.seq_len)


@pytest.mark.parametrize("name", ["copy", "selective_copy", "adding"])
@pytest.mark.parametrize("split", ["n_train", "n_test"])
def test_empty_split_is_an_impossible_size(name, split):
    """docs/datasets.md: an impossible size raises ValueError naming the argument; an empty
    split would otherwise report zero metrics that look measured."""
    with pytest.raises(ValueError, match=f"{split} must be >= 1, got 0"):
        get_task(name, **{**SMALL, split: 0})
    with pytest.raises(ValueError, match=f"{split} must be >= 1, got -1"):
        get_task(name, **{**SMALL, split: -1})
