"""locsens.data.tagsets: the one home of CSR tag membership, against a dense numpy reference."""

from __future__ import annotations

import numpy as np
import torch

from locsens.data import store
from locsens.data.tagsets import TagSets, padded


def dense(indptr, indices, num_tags, rows):
    """The reference: a dense bool [rows, V] matrix built with a plain loop."""
    out = np.zeros((len(rows), num_tags), bool)
    for i, r in enumerate(rows):
        out[i, indices[indptr[r] : indptr[r + 1]]] = True
    return out


def test_membership_equals_the_dense_reference(tiny_stores):
    ds = store.DatasetStore(tiny_stores["dataset"])
    rows = np.random.default_rng(0).choice(len(ds), 80, replace=False)
    want = dense(ds.tags_indptr, ds.tags_indices, ds.num_tags, rows)
    sets = TagSets.from_csr(ds.tags_indptr, ds.tags_indices, ds.num_tags, rows)
    r, t = np.repeat(np.arange(len(rows)), ds.num_tags), np.tile(np.arange(ds.num_tags), len(rows))
    got = sets.contains(r, t)
    assert isinstance(got, np.ndarray) and np.array_equal(got.reshape(len(rows), -1), want)
    got_t = sets.contains(torch.from_numpy(r), torch.from_numpy(t))
    assert isinstance(got_t, torch.Tensor) and np.array_equal(got_t.numpy().reshape(len(rows), -1), want)
    assert np.array_equal(sets.rows_per_tag().numpy(), want.sum(0))
    ptr, tag_rows = sets.tag_major()
    for tag in range(ds.num_tags):
        assert tag_rows[ptr[tag] : ptr[tag + 1]].tolist() == np.flatnonzero(want[:, tag]).tolist()
    assert not sets.contains(np.array([-1]), np.array([0]))[0]  # a negative row carries nothing


def test_padded_and_from_padded_round_trip():
    indptr = np.array([0, 2, 2, 5, 6])
    indices = np.array([4, 1, 7, 7, 0, 3])
    out = padded(indptr, indices, np.array([2, 0, 1, 3]))
    assert out.tolist() == [[7, 7, 0], [4, 1, -1], [-1, -1, -1], [3, -1, -1]]
    sets = TagSets.from_padded(out, num_tags=8)
    assert np.array_equal(
        sets.contains(np.repeat(np.arange(4), 8), np.tile(np.arange(8), 4)).reshape(4, 8),
        dense(indptr, indices, 8, [2, 0, 1, 3]),
    )


def test_counts_of_pairs():
    sets = TagSets.from_pairs(np.array([0, 0, 1, 0]), np.array([3, 3, 3, 1]), num_rows=2, num_tags=4, count=True)
    assert sets.keys.tolist() == [1, 3, 7] and sets.counts.tolist() == [1, 2, 1]
    assert sets.row_ptr.tolist() == [0, 2, 3]
