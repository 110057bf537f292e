"""Cached phase inputs hold their arrays once: the same batches as shuffling the rows, no copy per epoch."""

import sys

import numpy as np
import pytest
import tensorflow as tf

from finetune.data import epoch_batches
from finetune.training.inputs import _gathered_epochs


def _batches(ds):
    return [[np.asarray(t) for t in tf.nest.flatten(batch)] for batch in ds]


def _same(a, b):
    return len(a) == len(b) and all(len(x) == len(y) and all(np.array_equal(p, q) for p, q in zip(x, y))
                                    for x, y in zip(a, b))


def test_gathered_epochs_are_the_batches_of_shuffled_rows():
    rng = np.random.default_rng(0)
    x, y, w = rng.random((203, 5), np.float32), rng.integers(0, 4, 203).astype(np.int32), rng.random(203, np.float32)
    rows = epoch_batches(tf.data.Dataset.from_tensor_slices((x, y, w)), 3, 9, batch_size=32, seed=42, buffer=203)
    gathered = _gathered_epochs([(x, y, w)], 3, 9, batch_size=32, seed=42)
    assert gathered.element_spec == rows.element_spec
    assert _same(_batches(gathered), _batches(rows))


def test_epoch_e_gathers_copy_e_mod_copies_in_its_own_order():
    rng = np.random.default_rng(1)
    n, y = 70, np.arange(70, dtype=np.int32)
    copies = [(rng.random((n, 2, 2, 3), np.float32), y) for _ in range(3)]
    gathered = _batches(_gathered_epochs(copies, 2, 7, batch_size=16, seed=5))
    per_epoch = -(-n // 16)
    for e in range(2, 7):
        epoch = gathered[(e - 2) * per_epoch:(e - 1) * per_epoch]
        order = np.concatenate([labels for _, labels in epoch])
        expected = np.fromiter(tf.data.Dataset.range(n).shuffle(n, seed=5 + e, reshuffle_each_iteration=False)
                               .as_numpy_iterator(), np.int64)
        np.testing.assert_array_equal(order, expected)
        np.testing.assert_array_equal(np.concatenate([a for a, _ in epoch]), copies[e % 3][0][expected])


@pytest.mark.skipif(not sys.platform.startswith("linux"), reason="reads VmRSS from /proc")
def test_many_epochs_do_not_copy_the_arrays_per_epoch():
    def rss_mb():
        with open("/proc/self/status") as status:
            return next(int(line.split()[1]) for line in status if line.startswith("VmRSS")) / 1024

    x = np.ones((2048, 1024), np.float32)  # 8 MB: one copy per epoch branch would be 480 MB for 60 epochs
    ds = _gathered_epochs([(x, np.zeros(2048, np.int32))], 0, 60, batch_size=32, seed=0)
    before = rss_mb()
    next(iter(ds))
    assert rss_mb() - before < 100
