"""Which place names a method gets wrong (issue 14's diagnosis), from an evaluation's predictions.h5.

    .venv/bin/python docs/wrong_places.py outputs/demo-demo/evaluation locsens_raw mcc data/demo/dataset.h5

Prints the wrong place names of METHOD's top-10 (locsens.metrics.places), the share of them also in
OTHER's top-10 (inherited from the visual model through the similarity skip, or not), the levels they
name and the most frequent ones."""

import sys
from collections import Counter

import h5py
import numpy as np

from locsens.data.store import DatasetStore
from locsens.metrics.places import LEVELS, PlaceGazetteer, Photos, place_consistency

evaluation, method, other, dataset = sys.argv[1:5]
ds = DatasetStore(dataset)
with h5py.File(f"{evaluation}/predictions.h5") as f:
    t = f["tagging"]
    rows = t["rows"][()]
    top, top_other = t[method]["top50"][()][:, :10], t[other]["top50"][()][:, :10]
gaz = PlaceGazetteer.from_dataset(ds)
_, wrong, _ = place_consistency(top, Photos.of_rows(ds, rows), gaz)
in_other = (top[:, :, None] == top_other[:, None, :]).any(-1)
print(
    f"{method}: {wrong.sum()} wrong place names in {len(rows)} top-10s; {100 * (wrong & in_other).sum() / wrong.sum():.1f}% also in {other}'s top-10"
)
for level in LEVELS:
    names = np.diff(gaz.indptr[level]) > 0
    print(f"  naming a {level}: {100 * (wrong & names[np.clip(top, 0, None)]).sum() / wrong.sum():.1f}%")
print("  most frequent:", ", ".join(f"{ds.vocab[t]} {n}" for t, n in Counter(top[wrong].tolist()).most_common(10)))
