"""Retrieval metrics against the naive reference (tests/reference_metrics.py) and on hand-made cases."""

from __future__ import annotations

import math

import numpy as np
import pytest
import reference_metrics as ref
import torch

from locsens.metrics.retrieval import (
    DEFAULT_THRESHOLDS_KM,
    LocationQueries,
    LocationSensitivePrecision,
    RetrievalCandidates,
    RetrievalPrecision,
    build_location_queries,
    location_sensitive_precision,
    location_sensitive_upper_bound,
    precision_at_k,
    precision_table,
)
from locsens.metrics.tagging import ranked_topk


def random_world(seed: int, c: int = 150, v: int = 12):
    """Candidates clustered around a few cities (so every threshold matters), 0-4 tags each."""
    rng = np.random.default_rng(seed)
    n_tags = rng.integers(0, 5, c)
    indptr = np.concatenate([[0], np.cumsum(n_tags)])
    indices = rng.integers(0, v, indptr[-1])
    cities = np.array([[48.86, 2.35], [48.9, 2.5], [40.42, -3.70], [35.68, 139.69], [-33.9, 151.2]])
    home = rng.integers(0, len(cities), c)
    lat = cities[home, 0] + rng.normal(scale=0.1, size=c)
    lon = cities[home, 1] + rng.normal(scale=0.1, size=c)
    cand = RetrievalCandidates.from_csr(indptr, indices, v, lat, lon)
    tag_lists = [list(indices[indptr[i] : indptr[i + 1]]) for i in range(c)]
    return cand, tag_lists, lat, lon, rng


def random_retrieved(rng, q: int, c: int, width: int) -> torch.Tensor:
    out = np.stack([rng.permutation(c)[:width] for _ in range(q)])
    out[rng.random(q) < 0.2, -2:] = -1  # some lists padded (fewer candidates than asked)
    return torch.from_numpy(out)


@pytest.mark.parametrize("seed", range(4))
@pytest.mark.parametrize("exclude", [False, True])
def test_location_sensitive_precision_matches_reference(seed, exclude):
    cand, tag_lists, lat, lon, rng = random_world(seed)
    queries = build_location_queries(cand, min_query_images=3, seed=seed)
    retrieved = random_retrieved(rng, len(queries), cand.num_candidates, 11)
    # make the source image appear in some lists so exclusion matters
    retrieved[::3, 0] = queries.candidate[::3]
    retrieved[::3, 1:] = torch.where(retrieved[::3, 1:] == queries.candidate[::3, None], -1, retrieved[::3, 1:])
    got = location_sensitive_precision(retrieved, queries, cand, DEFAULT_THRESHOLDS_KM, 10, exclude_query_image=exclude)
    sets = [set(int(t) for t in tags) for tags in tag_lists]
    want = ref.location_precision(
        retrieved.tolist(),
        queries.tag.tolist(),
        queries.lat.tolist(),
        queries.lon.tolist(),
        sets,
        list(lat),
        list(lon),
        DEFAULT_THRESHOLDS_KM,
        10,
        queries.candidate.tolist() if exclude else None,
    )
    np.testing.assert_allclose(got.numpy(), np.array(want))
    assert got[:, 0].sum() > 0 and got[:, -2].sum() > 0  # the case is not trivially zero


@pytest.mark.parametrize("seed", range(3))
def test_agnostic_precision_matches_reference_and_equals_infinite_threshold(seed):
    cand, tag_lists, _, _, rng = random_world(seed)
    tags = cand.query_tags(min_query_images=5)
    retrieved = random_retrieved(rng, len(tags), cand.num_candidates, 10)
    got = precision_at_k(retrieved, tags, cand, 10)
    want = ref.precision(retrieved.tolist(), tags.tolist(), [set(int(t) for t in x) for x in tag_lists], 10)
    np.testing.assert_allclose(got.numpy(), want)
    # the same lists as location queries anywhere on Earth: threshold inf is location-agnostic relevance
    far = LocationQueries(
        tags,
        torch.full((len(tags),), -80.0, dtype=torch.float64),
        torch.zeros(len(tags), dtype=torch.float64),
        torch.zeros(len(tags), dtype=torch.long),
        torch.zeros(len(tags), dtype=torch.long),
    )
    ls = location_sensitive_precision(retrieved, far, cand, (math.inf, 1.0), 10)
    np.testing.assert_allclose(ls[:, 0].numpy(), got.numpy())
    assert (ls[:, 1] == 0).all()


def test_candidates_from_padded_equal_from_csr():
    cand, tag_lists, lat, lon, _ = random_world(0)
    width = max(len(t) for t in tag_lists)
    padded = torch.tensor([list(t) + [-1] * (width - len(t)) for t in tag_lists])
    other = RetrievalCandidates.from_padded(padded, cand.num_tags, lat, lon)
    assert torch.equal(other.keys, cand.keys) and torch.equal(other.tag_ptr, cand.tag_ptr)
    assert torch.equal(other.tag_candidates, cand.tag_candidates)


def test_candidate_rows_subset():
    indptr = np.array([0, 1, 3, 4, 6])
    indices = np.array([0, 1, 2, 2, 0, 0])  # row 3 has tag 0 twice: counts once
    cand = RetrievalCandidates.from_csr(indptr, indices, 3, np.zeros(4), np.zeros(4), rows=np.array([1, 3]))
    assert cand.images_per_tag().tolist() == [1, 1, 1]
    assert cand.carries(torch.tensor([0, 0, 1, 1, -1]), torch.tensor([1, 0, 0, 1, 0])).tolist() == [
        True,
        False,
        True,
        False,
        False,
    ]
    assert cand.rows.tolist() == [1, 3]


@pytest.mark.parametrize("seed", range(3))
@pytest.mark.parametrize("exclude", [False, True])
def test_upper_bound_matches_reference_in_any_chunking(seed, exclude):
    cand, tag_lists, lat, lon, _ = random_world(seed)
    queries = build_location_queries(cand, min_query_images=3, seed=seed)
    want = ref.upper_bound(
        queries.tag.tolist(),
        queries.lat.tolist(),
        queries.lon.tolist(),
        [set(int(t) for t in x) for x in tag_lists],
        list(lat),
        list(lon),
        DEFAULT_THRESHOLDS_KM,
        10,
        queries.candidate.tolist() if exclude else None,
    )
    for chunk in (1, 37, 1 << 22):
        got = location_sensitive_upper_bound(queries, cand, DEFAULT_THRESHOLDS_KM, 10, exclude, chunk_pairs=chunk)
        np.testing.assert_allclose(got.numpy(), np.array(want))


def test_distance_ranking_reaches_upper_bound_and_bounds_any_ranking():
    cand, _, lat, lon, rng = random_world(5)
    queries = build_location_queries(cand, min_query_images=3, seed=1)
    bound = location_sensitive_upper_bound(queries, cand)
    # rank every candidate: carriers of the tag by distance, then the rest; negative scores throughout
    dist = torch.from_numpy(ref_distances(queries, lat, lon))
    carries = cand.carries(torch.arange(cand.num_candidates)[None, :], queries.tag[:, None])
    scores = torch.where(carries, -dist, -1e9 - dist)
    best = ranked_topk(scores, 10)
    np.testing.assert_allclose(location_sensitive_precision(best, queries, cand).numpy(), bound.numpy())
    other = random_retrieved(rng, len(queries), cand.num_candidates, 10)
    assert (location_sensitive_precision(other, queries, cand) <= bound + 1e-12).all()


def ref_distances(queries, lat, lon) -> np.ndarray:
    return np.array(
        [
            [ref.haversine_km(a, b, c, d) for c, d in zip(lat, lon)]
            for a, b in zip(queries.lat.tolist(), queries.lon.tolist())
        ]
    )


def test_negative_and_zero_scores_rank_correctly_for_retrieval():
    # candidate 2 carries the tag; its score is the largest although every score is <= 0
    cand = RetrievalCandidates.from_csr(np.array([0, 1, 2, 3, 4]), np.array([1, 1, 0, 1]), 2)
    scores = torch.tensor([[-5.0, -4.0, 0.0, -1.0], [-0.3, -0.2, -0.1, -0.4]])
    top = ranked_topk(scores, 2)
    assert top.tolist() == [[2, 3], [2, 1]]
    assert precision_at_k(top, torch.tensor([0, 1]), cand, k=2).tolist() == [0.5, 0.5]


def test_no_relevant_item_and_k_larger_than_candidates():
    cand = RetrievalCandidates.from_csr(np.array([0, 1, 2, 3]), np.array([0, 0, 1]), 3, np.zeros(3), np.zeros(3))
    padded = torch.tensor([[0, 1, 2] + [-1] * 7, [2, 0, 1] + [-1] * 7])
    assert precision_at_k(padded, torch.tensor([0, 2]), cand, 10).tolist() == [0.2, 0.0]
    q = LocationQueries(
        torch.tensor([0, 2]),
        torch.zeros(2, dtype=torch.float64),
        torch.zeros(2, dtype=torch.float64),
        torch.tensor([0, 2]),
        torch.tensor([0, 2]),
    )
    assert location_sensitive_upper_bound(q, cand, (math.inf, 1.0)).tolist() == [[0.2, 0.2], [0.0, 0.0]]
    assert location_sensitive_upper_bound(q, cand, (math.inf,), exclude_query_image=True).tolist() == [[0.1], [0.0]]


def test_exclude_query_image_skips_source_and_needs_k_plus_one():
    cand = RetrievalCandidates.from_csr(np.arange(13), np.array([0] * 10 + [1, 1]), 2)  # 10 and 11 lack tag 0
    retrieved = torch.arange(11)[None, :]
    tag = torch.tensor([0])
    assert precision_at_k(retrieved, tag, cand, 10).tolist() == [1.0]  # the query image 3 counts
    assert precision_at_k(retrieved, tag, cand, 10, source=torch.tensor([3])).tolist() == [0.9]  # 3 out, 10 in
    assert precision_at_k(retrieved, tag, cand, 10, source=torch.tensor([11])).tolist() == [1.0]  # not listed
    with pytest.raises(ValueError, match="plus one"):
        precision_at_k(retrieved[:, :10], tag, cand, 10, source=torch.tensor([3]))
    metric = RetrievalPrecision(cand, k=10, exclude_query_image=True)
    with pytest.raises(ValueError, match="source"):
        metric.update(retrieved, tag)


def test_bad_retrieved_lists_raise():
    cand = RetrievalCandidates.from_csr(np.arange(13), np.zeros(12, dtype=int), 1)
    tag = torch.tensor([0])
    with pytest.raises(ValueError, match="twice"):
        precision_at_k(torch.tensor([[1, 2, 1]]), tag, cand, 3)
    with pytest.raises(ValueError, match="need >= 10"):
        precision_at_k(torch.tensor([[1, 2, 3]]), tag, cand, 10)
    with pytest.raises(ValueError, match="integer"):
        precision_at_k(torch.tensor([[1.0, 2.0]]), tag, cand, 2)
    with pytest.raises(ValueError, match=r"\[-1, 12\)"):
        precision_at_k(torch.tensor([[1, 12]]), tag, cand, 2)


@pytest.mark.parametrize("seed", range(3))
def test_build_location_queries_matches_reference_and_is_seeded(seed):
    cand, tag_lists, lat, lon, _ = random_world(seed)
    queries = build_location_queries(cand, min_query_images=8, seed=seed)
    uniforms = np.random.default_rng(seed).random(cand.num_candidates)
    want = ref.location_queries([[int(t) for t in x] for x in tag_lists], list(uniforms), 8)
    assert list(zip(queries.candidate.tolist(), queries.tag.tolist())) == want
    np.testing.assert_array_equal(queries.lat.numpy(), lat[queries.candidate.numpy()])
    again = build_location_queries(cand, min_query_images=8, seed=seed)
    assert torch.equal(again.tag, queries.tag)
    other = build_location_queries(cand, min_query_images=8, seed=seed + 100)
    assert not torch.equal(other.tag, queries.tag) or not torch.equal(other.candidate, queries.candidate)
    assert (cand.images_per_tag()[queries.tag] >= 8).all()


@pytest.mark.parametrize("exclude", [False, True])
def test_metric_classes_batches_and_ddp_merge_equal_one_call(exclude):
    cand, _, _, _, rng = random_world(7, c=300)
    queries = build_location_queries(cand, min_query_images=3, seed=7)
    retrieved = random_retrieved(rng, len(queries), cand.num_candidates, 11)
    want = precision_table(location_sensitive_precision(retrieved, queries, cand, exclude_query_image=exclude))
    m = LocationSensitivePrecision(cand, exclude_query_image=exclude)
    for a in range(0, len(queries), 64):
        m.update(retrieved[a : a + 64], queries[a : a + 64])
    assert m.compute() == pytest.approx(want)
    half = len(queries) // 2
    r0, r1 = (
        LocationSensitivePrecision(cand, exclude_query_image=exclude),
        LocationSensitivePrecision(cand, exclude_query_image=exclude),
    )
    r0.update(retrieved[:half], queries[:half])
    r1.update(retrieved[half:], queries[half:])
    r0.merge_state(r1)
    assert r0.compute() == pytest.approx(want)
    assert list(want) == ["inf", "2500km", "750km", "200km", "25km", "1km"]

    tags = cand.query_tags(3)
    ret = random_retrieved(rng, len(tags), cand.num_candidates, 11)
    src = torch.from_numpy(rng.integers(0, cand.num_candidates, len(tags)))
    one = 100.0 * precision_at_k(ret, tags, cand, 10, src if exclude else None).mean().item()
    a0, a1 = (
        RetrievalPrecision(cand, exclude_query_image=exclude),
        RetrievalPrecision(cand, exclude_query_image=exclude),
    )
    a0.update(ret[:5], tags[:5], src[:5])
    a1.update(ret[5:], tags[5:], src[5:])
    a0.merge_state(a1)
    assert a0.compute() == pytest.approx(one)


def _ddp_worker(rank: int, out_dir: str) -> None:
    """One of two gloo ranks: each scores its share of the queries; compute() all-reduces the states."""
    import json

    cand, _, _, _, rng = random_world(3, c=300)
    queries = build_location_queries(cand, min_query_images=3, seed=3)
    retrieved = random_retrieved(rng, len(queries), cand.num_candidates, 11)
    m = LocationSensitivePrecision(cand, exclude_query_image=True)
    share = slice(0, 50) if rank == 0 else slice(50, None)
    m.update(retrieved[share], queries[share])
    with open(f"{out_dir}/rank{rank}.json", "w") as fh:
        json.dump(m.compute(), fh)


@pytest.mark.slow
def test_real_two_process_ddp_equals_single_process(tmp_path):
    import json

    from conftest import gloo_ranks

    gloo_ranks(_ddp_worker, tmp_path)
    cand, _, _, _, rng = random_world(3, c=300)
    queries = build_location_queries(cand, min_query_images=3, seed=3)
    retrieved = random_retrieved(rng, len(queries), cand.num_candidates, 11)
    want = precision_table(location_sensitive_precision(retrieved, queries, cand, exclude_query_image=True))
    for rank in (0, 1):
        assert json.loads((tmp_path / f"rank{rank}.json").read_text()) == pytest.approx(want)
