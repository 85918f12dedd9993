"""Place consistency of a tagger's top-k: does it name places the photo was not taken in?

A predicted tag is a **wrong place name** when it is a place name (a town, region, country or continent
of the dataset, normalised like tags) and none of the places it names is the photo's: a region,
country or continent is the photo's when its id is the photo's at that level; a town when it is the
photo's town or its centre lies within ``town_km`` of the photo (a neighbouring town's name is not an
error a user would call wrong). A name shared by several places (``georgia``: a country and a US state)
is right when any of them is. Town centres are the mean position of the dataset's photos of the town
(a gazetteer fact, not a label: the dataset stores the geocoder's town of every photo).

Per evaluated image (``k`` = 10 by default), in percent:

* ``wrong_place@k``: images whose top-k holds a wrong place name;
* ``wrong_country@k``: images whose top-k holds a wrong place name that names a country or continent
  (the LocSens failure "australia at New York");
* ``wrong_share``: wrong place names among the place names predicted in the top-k;
* ``wrong_place@k|gt_places`` / ``|gt_no_places``: ``wrong_place@k`` over the images whose ground truth
  holds a place name / holds none (there any place name the tagger adds is a guess);
* ``place_names@k``: mean number of place names in the top-k.

``place_consistency(top, photo, gazetteer)`` is the functional core (per-prediction flags);
:class:`PlaceConsistency` a torchmetrics ``Metric`` with sum states (exact under DDP and shard merges).
"""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np
import torch
from torch import Tensor
from torchmetrics import Metric

from locsens.data.tags import normalise_tag
from locsens.geo import geodesic_km, unit_vectors

LEVELS = ("town", "region", "country", "continent")
COARSE = ("country", "continent")
DEFAULT_TOWN_KM = 100.0


@dataclass
class PlaceGazetteer:
    """Which places each vocabulary tag names (per level, CSR: ``indptr[level] [V + 1]`` into
    ``places[level]``) and where the towns are (``town_lat`` / ``town_lon`` [n_towns], NaN when no photo)."""

    num_tags: int
    indptr: dict[str, np.ndarray]
    places: dict[str, np.ndarray]
    town_lat: np.ndarray
    town_lon: np.ndarray

    @classmethod
    def from_dataset(cls, ds) -> PlaceGazetteer:
        """From a ``DatasetStore``: its place names per level matched to its vocabulary."""
        tag_id = {t: i for i, t in enumerate(ds.vocab)}
        names = set(ds.place_names)  # fallback labels are no place names
        indptr, places = {}, {}
        for level in LEVELS:
            pairs = sorted(
                (tag_id[t], p)
                for p, name in enumerate(ds.places[level])
                if (t := normalise_tag(name)) in names and t in tag_id
            )
            tags = np.array([t for t, _ in pairs], dtype=np.int64)
            indptr[level] = np.searchsorted(tags, np.arange(ds.num_tags + 1)).astype(np.int64)
            places[level] = np.array([p for _, p in pairs], dtype=np.int64)
        town = ds.place_index["town"].astype(np.int64)
        n_towns = len(ds.places["town"])
        known = town >= 0
        xyz = np.zeros((n_towns, 3))
        np.add.at(xyz, town[known], unit_vectors(ds.lat[known], ds.lon[known]))
        norm = np.linalg.norm(xyz, axis=1)
        with np.errstate(invalid="ignore", divide="ignore"):
            xyz = xyz / norm[:, None]
        lat = np.degrees(np.arcsin(np.clip(xyz[:, 2], -1, 1)))
        lon = np.degrees(np.arctan2(xyz[:, 1], xyz[:, 0]))
        lat[norm == 0], lon[norm == 0] = np.nan, np.nan
        return cls(ds.num_tags, indptr, places, lat, lon)

    def is_place_name(self) -> np.ndarray:
        """Bool ``[V]``: tags that name at least one place."""
        return np.any([np.diff(self.indptr[lvl]) > 0 for lvl in LEVELS], axis=0)


@dataclass
class Photos:
    """The evaluated photos' own places (``place[level]`` ids [N], -1 unknown) and positions (degrees)."""

    place: dict[str, np.ndarray]
    lat: np.ndarray
    lon: np.ndarray

    @classmethod
    def of_rows(cls, ds, rows) -> Photos:
        rows = np.asarray(rows, dtype=np.int64)
        return cls({lvl: ds.place_index[lvl][rows].astype(np.int64) for lvl in LEVELS}, ds.lat[rows], ds.lon[rows])


def place_consistency(
    top: Tensor | np.ndarray, photos: Photos, gazetteer: PlaceGazetteer, town_km: float = DEFAULT_TOWN_KM
) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    """Flags of each prediction of ``top [N, k]`` (tag ids, -1 = none): ``(is_place, wrong, wrong_coarse)``,
    bool ``[N, k]``: a place name; a wrong one; a wrong one that names a country or continent."""
    top = np.asarray(top, dtype=np.int64)
    n, k = top.shape
    flat = top.reshape(-1)
    valid = flat >= 0
    safe = np.where(valid, flat, 0)
    image = np.repeat(np.arange(n), k)
    is_place = np.zeros(n * k, bool)
    names_coarse = np.zeros(n * k, bool)
    right = np.zeros(n * k, bool)
    for level in LEVELS:
        ptr, places = gazetteer.indptr[level], gazetteer.places[level]
        start, length = ptr[safe], np.where(valid, ptr[safe + 1] - ptr[safe], 0)
        is_place |= length > 0
        if level in COARSE:
            names_coarse |= length > 0
        which = np.repeat(np.arange(n * k), length)  # one entry per (prediction, place it names)
        place = places[
            np.repeat(start, length) + np.arange(length.sum()) - np.repeat(np.cumsum(length) - length, length)
        ]
        own = photos.place[level][image[which]]
        match = place == own
        if level == "town" and len(which):
            d = geodesic_km(
                photos.lat[image[which]], photos.lon[image[which]], gazetteer.town_lat[place], gazetteer.town_lon[place]
            )
            match |= np.nan_to_num(d, nan=np.inf) <= town_km
        right[which[match]] = True
    wrong = is_place & ~right
    return is_place.reshape(n, k), wrong.reshape(n, k), (wrong & names_coarse).reshape(n, k)


STATE_NAMES = (
    "n",
    "n_wrong",
    "n_wrong_coarse",
    "place_names",
    "wrong_names",
    "n_gt_places",
    "n_gt_places_wrong",
    "n_gt_no_places",
    "n_gt_no_places_wrong",
)


class PlaceConsistency(Metric):
    """``update(top [N, >= k] tag ids, target [N, T] ground truth (-1 padded), photos)``; ``compute()`` ->
    the module docstring's percentages. Every state is a count reduced by sum."""

    full_state_update = False
    is_differentiable = False
    higher_is_better = False

    def __init__(self, gazetteer: PlaceGazetteer, k: int = 10, town_km: float = DEFAULT_TOWN_KM, **kwargs):
        super().__init__(**kwargs)
        if k < 1:
            raise ValueError(f"PlaceConsistency k={k} must be >= 1")
        self.gazetteer, self.k, self.town_km = gazetteer, int(k), float(town_km)
        self._place_tag = torch.from_numpy(gazetteer.is_place_name())
        for name in STATE_NAMES:
            self.add_state(name, default=torch.tensor(0, dtype=torch.long), dist_reduce_fx="sum")

    def update(self, top: Tensor, target: Tensor, photos: Photos) -> None:
        top = torch.as_tensor(top)[:, : self.k]
        target = torch.as_tensor(target)
        is_place, wrong, wrong_coarse = place_consistency(top.cpu().numpy(), photos, self.gazetteer, self.town_km)
        any_wrong = torch.from_numpy(wrong.any(1))
        gt_places = (self._place_tag[target.clamp_min(0)] & (target >= 0)).any(1).cpu()
        add = {
            "n": len(top),
            "n_wrong": int(any_wrong.sum()),
            "n_wrong_coarse": int(wrong_coarse.any(1).sum()),
            "place_names": int(is_place.sum()),
            "wrong_names": int(wrong.sum()),
            "n_gt_places": int(gt_places.sum()),
            "n_gt_places_wrong": int((any_wrong & gt_places).sum()),
            "n_gt_no_places": int((~gt_places).sum()),
            "n_gt_no_places_wrong": int((any_wrong & ~gt_places).sum()),
        }
        for name, value in add.items():
            setattr(self, name, getattr(self, name) + value)

    def compute(self) -> dict[str, float]:
        s = {name: int(getattr(self, name)) for name in STATE_NAMES}
        return place_consistency_from_counts(s, self.k)


def place_consistency_from_counts(s: dict[str, int], k: int) -> dict[str, float | None]:
    def pct(a, b):
        return None if b == 0 else 100.0 * a / b

    return {
        f"wrong_place@{k}": pct(s["n_wrong"], s["n"]),
        f"wrong_country@{k}": pct(s["n_wrong_coarse"], s["n"]),
        "wrong_share": pct(s["wrong_names"], s["place_names"]),
        f"wrong_place@{k}|gt_places": pct(s["n_gt_places_wrong"], s["n_gt_places"]),
        f"wrong_place@{k}|gt_no_places": pct(s["n_gt_no_places_wrong"], s["n_gt_no_places"]),
        f"place_names@{k}": None if s["n"] == 0 else s["place_names"] / s["n"],
        "n": s["n"],
    }


__all__ = ["PlaceConsistency", "PlaceGazetteer", "Photos", "place_consistency", "place_consistency_from_counts"]
