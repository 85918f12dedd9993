"""The shared tiny stores are valid and join by photo id (guards every test that builds on them)."""

import numpy as np

from locsens.data.store import DatasetStore, FeatureStore


def test_tiny_stores_validate_and_join(tiny_stores):
    ds = DatasetStore(tiny_stores["dataset"])
    fs = FeatureStore(tiny_stores["features"])
    rows = fs.rows_for(ds.photo_id)
    assert (rows >= 0).all()
    assert np.array_equal(fs.photo_id[rows], ds.photo_id)
    assert sorted(np.unique(ds.split)) == [0, 1, 2]
    assert fs.read(rows[:5]).shape == (5, fs.dim)
