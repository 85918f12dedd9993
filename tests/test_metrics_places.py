"""The place-consistency measure against a plain-Python reference, on the synthetic stores."""

import math

import numpy as np
import pytest
import reference_metrics as ref
import torch

from locsens.data.store import DatasetStore
from locsens.metrics.places import Photos, PlaceConsistency, PlaceGazetteer
from locsens.metrics.tagging import ground_truth_from_csr


def _town_centres(ds):
    out = []
    for t in range(len(ds.places["town"])):
        rows = np.flatnonzero(ds.place_index["town"] == t)
        if not len(rows):
            out.append(None)
            continue
        x = y = z = 0.0
        for r in rows:
            la, lo = math.radians(ds.lat[r]), math.radians(ds.lon[r])
            x, y, z = x + math.cos(la) * math.cos(lo), y + math.cos(la) * math.sin(lo), z + math.sin(la)
        out.append((math.degrees(math.atan2(z, math.hypot(x, y))), math.degrees(math.atan2(y, x))))
    return out


@pytest.mark.parametrize("town_km", [50.0, 400.0])
def test_place_consistency_matches_reference(tiny_stores, town_km):
    ds = DatasetStore(tiny_stores["dataset"])
    rows = ds.split_rows("test")[:150]
    rng = np.random.default_rng(1)
    place_ids = [i for i, t in enumerate(ds.vocab) if t in set(ds.place_names)]
    # top-10 lists mixing place names (right and wrong) and concepts, some -1 padded
    concept_ids = [i for i in range(ds.num_tags) if i not in set(place_ids)]
    top = rng.choice(concept_ids, size=(len(rows), 10))
    top[::2, :3] = rng.choice(place_ids, size=(len(rows[::2]), 3))  # random place names: some wrong
    own = [ds.vocab.index(ds.places["town"][ds.place_index["town"][r]].lower()) for r in rows[1::2]]
    top[1::2, 0] = own  # the photo's own town: right
    top[::7, 8:] = -1
    target = ground_truth_from_csr(ds.tags_indptr, ds.tags_indices, rows)
    metric = PlaceConsistency(PlaceGazetteer.from_dataset(ds), k=10, town_km=town_km)
    for s in range(0, len(rows), 40):  # in batches: sum states
        metric.update(torch.from_numpy(top[s : s + 40]), target[s : s + 40], Photos.of_rows(ds, rows[s : s + 40]))
    got = metric.compute()
    want = ref.place_consistency(
        top.tolist(),
        target.tolist(),
        [{lvl: int(ds.place_index[lvl][r]) for lvl in ds.places} for r in rows],
        [(float(ds.lat[r]), float(ds.lon[r])) for r in rows],
        ds.places,
        set(ds.place_names),
        ds.vocab,
        _town_centres(ds),
        town_km,
        10,
    )
    assert got.keys() == want.keys()
    for key in want:
        assert got[key] == pytest.approx(want[key], abs=1e-9), key
    assert 0 < got["wrong_place@10"] < 100  # the draw has both kinds: the test can fail either way


def test_place_consistency_cases(tiny_stores):
    """Hand-made cases: own town, a town within / beyond the distance, a wrong country, no place name."""
    ds = DatasetStore(tiny_stores["dataset"])
    tag = {t: i for i, t in enumerate(ds.vocab)}
    paris_row = int(np.flatnonzero(ds.place_index["town"] == ds.places["town"].index("Paris"))[0])
    photos = Photos.of_rows(ds, [paris_row] * 4)
    top = torch.tensor(
        [
            [tag["paris"], tag["france"], tag["conceptab"]],  # all right
            [tag["lyon"], -1, -1],  # another town ~390 km away
            [tag["japan"], tag["paris"], -1],  # a wrong country
            [tag["conceptaa"], -1, -1],  # no place name
        ]
    )
    target = torch.full((4, 1), -1)
    for km, lyon_wrong in ((100.0, True), (500.0, False)):
        m = PlaceConsistency(PlaceGazetteer.from_dataset(ds), k=3, town_km=km)
        m.update(top, target, photos)
        got = m.compute()
        assert got["wrong_place@3"] == pytest.approx(100 * (1 + lyon_wrong) / 4)
        assert got["wrong_country@3"] == pytest.approx(25.0)
        assert got["place_names@3"] == pytest.approx(5 / 4)
        assert got["wrong_share"] == pytest.approx(100 * (1 + lyon_wrong) / 5)
        assert got["wrong_place@3|gt_places"] is None  # no image has a place name in its truth
