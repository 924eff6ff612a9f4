"""The task registry: names, options, argument errors, cheap import."""

import subprocess
import sys

import pytest

from su_neuro.datasets import Task, get_task, list_tasks, task_options

EXPECTED = [
    "copy",
    "selective_copy",
    "adding",
    "smnist",
    "psmnist",
    "listops",
    "listops_short",
    "shd",
    "ssc",
    "nmnist",
    "dvsgesture",
    "tonic_smnist",
]


def test_list_tasks():
    assert list_tasks() == EXPECTED


def test_unknown_task_lists_valid_names():
    with pytest.raises(ValueError, match="unknown task 'cpy'") as err:
        get_task("cpy")
    for name in EXPECTED:
        assert name in str(err.value)


def test_unknown_option_is_named():
    with pytest.raises(TypeError, match="'dealy'") as err:
        get_task("copy", dealy=3)
    assert "delay" in str(err.value)  # the valid options are listed
    with pytest.raises(TypeError, match="'n_time_bins'"):
        get_task("adding", n_time_bins=3)


@pytest.mark.parametrize(
    ("name", "options", "argument"),
    [
        ("copy", {"delay": -1}, "delay"),
        ("copy", {"n_memorize": 0}, "n_memorize"),
        ("copy", {"n_symbols": 0}, "n_symbols"),
        ("copy", {"n_train": -5}, "n_train"),
        ("copy", {"seed": -1}, "seed"),
        ("selective_copy", {"length": 5, "n_memorize": 6}, "length"),
        ("adding", {"length": 1}, "length"),
        ("psmnist", {"downsample": 5}, "downsample"),
        ("nmnist", {"n_time_bins": 0}, "n_time_bins"),
    ],
)
def test_impossible_sizes_name_the_argument(name, options, argument):
    with pytest.raises(ValueError, match=argument):
        get_task(name, **options)


def test_non_integer_size():
    with pytest.raises(TypeError, match="delay"):
        get_task("copy", delay=2.5)


def test_task_options_and_kind():
    assert task_options("copy")["delay"] == 100
    assert "root" in task_options("shd")
    with pytest.raises(ValueError, match="kind"):
        Task("x", "cluster", [], [], 1, 1, 1)


def test_import_is_cheap():
    code = (
        "import sys, su_neuro.datasets as d; d.get_task('copy', n_train=2, n_test=2); "
        "print(sorted(m for m in ('tonic', 'mlxtend', 'h5py', 'torchvision') if m in sys.modules))"
    )
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, check=True)
    assert out.stdout.strip() == "[]"
