"""What the explorer shows, as plain functions over a trained LocSens run: no web framework here.

:class:`Explorer` opens a LocSens run (its best checkpoint, the dataset and embeddings stores it was
trained on, checked by content id), optionally evaluation directories (refused when made on another
dataset store) and the image files the features were extracted from (refused unless they are the
inputs the feature store records). Every answer is a JSON-ready dict; bad input raises
:class:`ExplorerError` with the HTTP status the server answers and a message naming the problem.
Nothing here writes a file: stores are read into memory, ``predictions.h5`` is opened read-only.
"""

from __future__ import annotations

import difflib
import math
import re
import time
from pathlib import Path

import numpy as np
import torch

from locsens.artifacts import EvaluationLayout
from locsens.data.store import SPLIT_NAMES, EmbeddingStore, FeatureStore
from locsens.eval.methods import open_locsens_run
from locsens.geo import geodesic_km
from locsens.metrics.tagging import place_name_mask, ranked_topk

DISTANCES_KM = (2500.0, 750.0, 200.0, 25.0, 1.0)  # the paper's location-sensitive thresholds
PLACE_LEVELS = ("town", "region", "country", "continent")


class ExplorerError(ValueError):
    """Bad input to the explorer: ``status`` is the HTTP status the server answers (400, 404, 422)."""

    def __init__(self, message: str, status: int = 400):
        super().__init__(message)
        self.status = status


def _did_you_mean(word: str, choices) -> str:
    close = difflib.get_close_matches(word, choices, n=3)
    return f" (did you mean {', '.join(repr(c) for c in close)}?)" if close else ""


NUMBER = re.compile(r"[+-]?([0-9]+(\.[0-9]*)?|\.[0-9]+)([eE][+-]?[0-9]+)?")  # ASCII digits only: no "1_0", no "٣"
INTEGER = re.compile(r"[+-]?[0-9]+")


def _shown(value, limit: int = 60) -> str:
    text = str(value)
    return text if len(text) <= limit else text[:limit] + f"... ({len(text)} characters)"


def parse_float(name: str, value, low: float, high: float) -> float:
    """A query parameter as a finite float in [low, high], or a 400 naming it."""
    text = str(value).strip()
    if text.lower() in ("nan", "+nan", "-nan", "inf", "+inf", "-inf", "infinity", "+infinity", "-infinity"):
        raise ExplorerError(f"{name}={_shown(value)} is not a finite number")
    if not NUMBER.fullmatch(text):
        raise ExplorerError(f"{name}={_shown(value)} is not a number")
    x = float(text)
    if not math.isfinite(x) or not low <= x <= high:
        raise ExplorerError(f"{name}={_shown(value)} is out of range: expected a number in [{low:g}, {high:g}]")
    return x


def parse_int(name: str, value, low: int, high: int) -> int:
    text = str(value).strip()
    if not INTEGER.fullmatch(text):
        raise ExplorerError(f"{name}={_shown(value)} is not an integer")
    x = int(text)
    if not low <= x <= high:
        raise ExplorerError(f"{name}={_shown(value)} is out of range: expected an integer in [{low}, {high}]")
    return x


class Explorer:
    """One LocSens run, its stores and optional evaluations, answering the explorer's questions."""

    def __init__(
        self,
        run: str | Path,
        evaluations=(),
        dataset_path: str | Path | None = None,
        images: str | Path | None = None,
        dtype: str = "auto",
    ):
        opened = open_locsens_run(run, dataset_path, dtype)
        self.run, self.ds, self.locsens, self.agnostic = opened.layout, opened.dataset, opened.locsens, opened.agnostic
        ds = self.ds
        self.is_place = place_name_mask(ds.vocab, ds.place_names).numpy()
        self.tag_id = {t: i for i, t in enumerate(ds.vocab)}
        self.row_of = {int(p): r for r, p in enumerate(ds.photo_id)}
        self.test_rows = ds.split_rows("test")
        if len(self.test_rows) == 0:
            raise ValueError(f"{ds.path}: the test split is empty; the explorer shows test photos")
        self.test_count = ds.tag_counts("test")
        self.evaluations = [self._open_evaluation(Path(e)) for e in evaluations]
        self.image_paths = self._open_images(Path(images), self.locsens.store) if images else {}
        self._prior = None
        self._exact = self.locsens.engine if self.locsens.engine.dtype_used == "fp32" else None
        self.rank_tags(int(ds.photo_id[self.test_rows[0]]), 0.0, 0.0, 1)  # warm: the engine's vocabulary block

    # ------------------------------------------------------------------------------------------
    # inputs
    # ------------------------------------------------------------------------------------------
    def _open_evaluation(self, path: Path) -> dict:
        layout = EvaluationLayout(path)
        results = layout.results()  # refuses a half-replaced set
        made_on = ((results.get("inputs") or {}).get("dataset") or {}).get("id")
        if made_on != self.ds.content_id:
            raise ValueError(
                f"eval={path}: that evaluation was made on dataset store {str(made_on)[:12]}, the run's is "
                f"{self.ds.content_id[:12]} ({self.ds.path}); give an evaluation of this dataset"
            )
        figures = {Path(p).name: layout.figures_dir / Path(p).name for p in results.get("figures", [])}
        predictions, rows = layout.predictions_path, np.zeros(0, np.int64)
        if predictions.is_file():
            import h5py

            with h5py.File(predictions, "r") as f:
                rows = f["tagging/rows"][:]  # read once: each photo's answer reads only its own predictions
        return {"path": path, "results": results, "predictions": predictions, "rows": rows, "figures": figures}

    def _open_images(self, images: Path, store: EmbeddingStore) -> dict:
        from locsens.features.extract import inputs_sha256, read_inputs

        features_path = (store.made_from.get("features") or {}).get("path")
        # extraction records the sha256 of its inputs (photo ids and paths) as the store's made_from "images"
        recorded = FeatureStore(features_path).made_from.get("images") if features_path else None
        if not recorded:
            raise ValueError(
                f"images={images}: the run's features ({features_path}) were not extracted from image files "
                "(a simulated world has no pixels); leave images unset"
            )
        photo_id, paths = read_inputs(images)
        if inputs_sha256(photo_id, paths) != recorded:
            raise ValueError(
                f"images={images}: these are not the images the feature store {features_path} was extracted from "
                "(its recorded inputs differ); give the folder or list file given to extract_features.py"
            )
        return {int(p): Path(f) for p, f in zip(photo_id, paths)}

    def row(self, photo_id) -> int:
        text = str(photo_id).strip()
        if not text.isascii() or not text.isdigit():
            raise ExplorerError(f"photo={_shown(photo_id)} is not a photo id (digits)")
        pid = int(text)
        if pid not in self.row_of:
            raise ExplorerError(f"unknown photo id {pid}: not in the dataset store {self.ds.path}", 404)
        return self.row_of[pid]

    def tag(self, name) -> int:
        name = str(name).strip().lower()
        if not name:
            raise ExplorerError("tag is empty: type a tag of the vocabulary")
        if name not in self.tag_id:
            raise ExplorerError(
                f"unknown tag {_shown(name)!r}: not in the vocabulary of {self.ds.num_tags} tags"
                + _did_you_mean(name, self.ds.vocab),
                404,
            )
        return self.tag_id[name]

    # ------------------------------------------------------------------------------------------
    # answers
    # ------------------------------------------------------------------------------------------
    def info(self) -> dict:
        return {
            "run": str(self.run.path),
            "method": self.locsens.name,
            "agnostic": self.agnostic.name,
            "dataset": str(self.ds.path),
            "photos": len(self.ds),
            "test_photos": len(self.test_rows),
            "tags": self.ds.num_tags,
            "dtype": self.locsens.engine.dtype_used,
            "distances_km": list(DISTANCES_KM),
            "evaluations": [str(e["path"]) for e in self.evaluations],
            "images": bool(self.image_paths),
        }

    def photo(self, photo_id) -> dict:
        r = self.row(photo_id)
        ds = self.ds
        out = {
            "photo_id": int(ds.photo_id[r]),
            "split": SPLIT_NAMES[int(ds.split[r])],
            "lat": float(ds.lat[r]),
            "lon": float(ds.lon[r]),
            "tags": [self._tag_entry(t) for t in ds.tags_of(r)],
            "place": {lvl: ds.places[lvl][ds.place_index[lvl][r]] for lvl in PLACE_LEVELS},
            "image": int(ds.photo_id[r]) in self.image_paths,
        }
        out["stored_predictions"] = self._stored_predictions(r)
        return out

    def _tag_entry(self, t: int, score: float | None = None, truth=None) -> dict:
        entry = {"tag": self.ds.vocab[t], "id": int(t), "place": bool(self.is_place[t])}
        if score is not None:
            entry["score"] = round(float(score), 5)
        if truth is not None:
            entry["true"] = int(t) in truth
        return entry

    def _stored_predictions(self, r: int, k: int = 10) -> list[dict]:
        """Each evaluation's recorded top-k (with place names) of this photo at its true place."""
        import h5py

        out = []
        for e in self.evaluations:
            at = np.searchsorted(e["rows"], r)
            if at >= len(e["rows"]) or e["rows"][at] != r:
                continue
            with h5py.File(e["predictions"], "r") as f:
                truth = set(self.ds.tags_of(r).tolist())
                methods = {
                    name: [self._tag_entry(int(t), truth=truth) for t in f[f"tagging/{name}/top50"][at, :k] if t >= 0]
                    for name in f["tagging"]
                    if isinstance(f[f"tagging/{name}"], h5py.Group)
                }
            out.append({"evaluation": str(e["path"]), "methods": methods})
        return out

    def search(self, query, limit: int = 20) -> dict:
        """Test photos by id prefix (digits) or carrying a tag; the first ``limit``."""
        query = str(query or "").strip().lower()
        if not query:
            raise ExplorerError("q is empty: type a photo id or a tag")
        ids = self.ds.photo_id[self.test_rows]
        if query.isascii() and query.isdigit():
            hits = self.test_rows[np.char.startswith(ids.astype(str), query)]
            if len(hits) == 0:
                raise ExplorerError(f"no test photo id starts with {_shown(query)!r}", 404)
        else:
            t = self.tag(query)
            hits = self.test_rows[self.ds.rows_with_any(np.arange(self.ds.num_tags) == t)[self.test_rows]]
            if len(hits) == 0:
                raise ExplorerError(f"no test photo carries the tag {_shown(query)!r}", 404)
        return {"query": query, "count": len(hits), "photos": [self._brief(r) for r in hits[:limit]]}

    def _brief(self, r: int) -> dict:
        return {
            "photo_id": int(self.ds.photo_id[r]),
            "lat": float(self.ds.lat[r]),
            "lon": float(self.ds.lon[r]),
            "town": self.ds.places["town"][self.ds.place_index["town"][r]],
            "country": self.ds.places["country"][self.ds.place_index["country"][r]],
        }

    def random_photo(self, seed) -> dict:
        seed = parse_int("seed", seed, 0, 2**63 - 1)
        r = int(np.random.default_rng(seed).choice(self.test_rows))
        return self.photo(self.ds.photo_id[r])

    def vocabulary(self, prefix="", limit: int = 20) -> dict:
        """Autocomplete: tags starting with ``prefix``, those on most test photos first."""
        prefix = str(prefix or "").strip().lower()
        hits = [t for t, name in enumerate(self.ds.vocab) if name.startswith(prefix)]
        hits.sort(key=lambda t: -self.test_count[t])
        return {
            "prefix": prefix,
            "tags": [{**self._tag_entry(t), "test_photos": int(self.test_count[t])} for t in hits[:limit]],
        }

    def rank_tags(self, photo_id, lat, lon, k=20) -> dict:
        """The photo's top-k tags by LocSens at (lat, lon), through the scoring engine (exact top-k), and
        by the location-agnostic model (the same wherever the photo is)."""
        r = self.row(photo_id)
        lat = parse_float("lat", lat, -90.0, 90.0)
        lon = parse_float("lon", lon, -180.0, 180.0)
        k = parse_int("k", k, 1, self.ds.num_tags)
        t0 = time.perf_counter()
        image = self.locsens.image[[r]]
        with torch.no_grad():
            scores, ids = self.locsens.engine.score_tags(
                image, torch.tensor([lat], dtype=torch.float64), torch.tensor([lon], dtype=torch.float64), k=k
            )
        ms = 1000 * (time.perf_counter() - t0)
        agnostic_scores = self.agnostic.tag_scores(np.array([r]))
        agnostic_ids = ranked_topk(agnostic_scores, k)[0]
        truth = set(self.ds.tags_of(r).tolist())
        return {
            "photo_id": int(self.ds.photo_id[r]),
            "lat": lat,
            "lon": lon,
            "locsens": [self._tag_entry(t, s, truth) for t, s in zip(ids[0].tolist(), scores[0].tolist())],
            "agnostic": [self._tag_entry(t, agnostic_scores[0, t], truth) for t in agnostic_ids.tolist()],
            "scoring_ms": round(ms, 2),
        }

    def retrieve(self, tag, lat, lon, km=DISTANCES_KM[2], k=10) -> dict:
        """The top-k test photos for (tag, place) by LocSens and by the agnostic model, each with its
        distance to the place and whether it carries the tag; P@k at ``km`` (the paper's rule: a result
        counts when it carries the tag and lies within km)."""
        t = self.tag(tag)
        lat = parse_float("lat", lat, -90.0, 90.0)
        lon = parse_float("lon", lon, -180.0, 180.0)
        km = parse_float("km", km, 0.0, 20040.0)
        k = parse_int("k", k, 1, 100)
        cand = self.test_rows
        ranked = {
            "locsens": self.locsens.retrieve(torch.tensor([t]), torch.tensor([lat]), torch.tensor([lon]), cand, k)[0],
            "agnostic": self.agnostic.retrieve(torch.tensor([t]), None, None, cand, k)[0],
        }
        out = {"tag": self.ds.vocab[t], "lat": lat, "lon": lon, "km": km, "k": k}
        for name, positions in ranked.items():
            rows = cand[positions[positions >= 0].numpy()]
            d = geodesic_km(lat, lon, self.ds.lat[rows], self.ds.lon[rows])
            results = []
            for r, dist in zip(rows, np.atleast_1d(d)):
                carries = bool(t in self.ds.tags_of(r))
                results.append(
                    {
                        **self._brief(r),
                        "km": round(float(dist), 1),
                        "has_tag": carries,
                        "correct": bool(carries and dist <= km),
                    }
                )
            out[name] = {"results": results, "precision": 100.0 * sum(x["correct"] for x in results) / k}
        return out

    def heatmap(self, tag, photo_id=None, step=3.0) -> dict:
        """A tag's score over a lat/lon grid of ``step`` degree cells (a divisor of 180; at least 1: 64,800
        cells): LocSens with the photo's image fixed, or (no photo) the training photos'
        k-nearest-neighbour prior p(tag | location) (locsens.priors)."""
        t = self.tag(tag)
        step = parse_float("step", step, 1.0, 30.0)
        rows = 180 / step
        if abs(rows - round(rows)) > 1e-9:
            raise ExplorerError(f"step={step:g} must divide 180 degrees (e.g. 1, 2, 3, 5, 10)")
        lat = -90 + step * (np.arange(round(rows)) + 0.5)  # cell centres: the grid covers the whole globe
        lon = -180 + step * (np.arange(2 * round(rows)) + 0.5)
        glat, glon = np.meshgrid(lat, lon, indexing="ij")
        flat_lat, flat_lon = torch.from_numpy(glat.ravel()), torch.from_numpy(glon.ravel())
        if photo_id not in (None, ""):
            r = self.row(photo_id)
            image = self.locsens.image[[r]].expand(len(flat_lat), -1)
            if self._exact is None:  # a map shows small differences between places: fp32, not bf16's rounding
                from locsens.scoring import ScoringEngine

                self._exact = ScoringEngine(self.locsens.model, dtype="fp32", tag_embeddings=self.locsens.tag)
            with torch.no_grad():
                values = self._exact.score_tags(
                    image, flat_lat, flat_lon, candidates=torch.full((len(flat_lat), 1), t)
                )[:, 0]
            source = f"{self.locsens.name}: score of tag {self.ds.vocab[t]!r} for photo {int(self.ds.photo_id[r])}"
        else:
            if self._prior is None:
                from locsens.priors import NeighbourPrior

                self._prior = NeighbourPrior(self.ds, "knn", k=100)
            values = torch.from_numpy(self._prior.prior_of(glat.ravel(), glon.ravel(), t))
            source = f"prior p({self.ds.vocab[t]!r} | location): the 100 nearest training photos"
        values = values.float().reshape(glat.shape)
        return {
            "tag": self.ds.vocab[t],
            "source": source,
            "step": step,
            "extent": [-180.0, -90.0, 180.0, 90.0],  # west, south, east, north: rows south to north
            "lat0": float(lat[0]),
            "lon0": float(lon[0]),
            "min": float(values.min()),
            "max": float(values.max()),
            "values": values.numpy().tolist(),
        }

    def compare(self) -> dict:
        """The evaluations' tables (tagging with / without place names, location-sensitive retrieval)."""
        out = []
        for e in self.evaluations:
            res = e["results"]
            rows = {}
            for name, r in res["tagging"].items():
                rows[name] = {
                    f"{key}:{c}": r[key].get(c)
                    for key in ("with_places", "places_omitted")
                    for c in r[key]
                    if c.startswith(("A@", "%"))
                }
            for name, v in res["location_sensitive_retrieval"].items():
                rows.setdefault(name, {}).update({f"P@10:{key}": x for key, x in v.items()})
            out.append(
                {
                    "evaluation": str(e["path"]),
                    "n_test_images": res.get("n_test_images"),
                    "n_location_queries": res.get("n_location_queries"),
                    "commit": str(res.get("git_commit", ""))[:10],
                    "rows": rows,
                    "figures": sorted(e["figures"]),
                }
            )
        return {"evaluations": out}

    def figure(self, index, name) -> Path:
        i = parse_int("evaluation", index, 0, max(len(self.evaluations) - 1, 0))
        if not self.evaluations:
            raise ExplorerError("no evaluation was given (explore.py eval=<evaluation dir>)", 404)
        figures = self.evaluations[i]["figures"]
        if name not in figures or not figures[name].is_file():
            raise ExplorerError(f"evaluation {i} has no figure {name!r}" + _did_you_mean(str(name), figures), 404)
        return figures[name]

    def image(self, photo_id) -> Path:
        r = self.row(photo_id)
        pid = int(self.ds.photo_id[r])
        if pid not in self.image_paths:
            raise ExplorerError(
                f"photo {pid} has no image: "
                + ("not among the images given" if self.image_paths else "start the explorer with images=<folder>"),
                404,
            )
        return self.image_paths[pid]
