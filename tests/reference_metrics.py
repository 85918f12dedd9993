"""Independent, deliberately naive reference implementations of the evaluation metrics and baselines.

Plain Python: loops over images / queries, Python sets and sorted(), math-module haversine. They
share no code with ``locsens.metrics`` / ``locsens.eval.baselines`` so that the tests compare two
implementations of the written definitions, not one implementation with itself.
"""

from __future__ import annotations

import math
from collections import Counter

EARTH_RADIUS_KM = 6371.0088


def haversine_km(lat1: float, lon1: float, lat2: float, lon2: float) -> float:
    p1, p2 = math.radians(lat1), math.radians(lat2)
    dp, dl = p2 - p1, math.radians(lon2 - lon1)
    a = math.sin(dp / 2) ** 2 + math.cos(p1) * math.cos(p2) * math.sin(dl / 2) ** 2
    return 2 * EARTH_RADIUS_KM * math.asin(math.sqrt(min(1.0, max(0.0, a))))


def rank(scores: list[float], exclude: set[int] = frozenset()) -> list[int]:
    """All non-excluded ids by descending score, ties by ascending id."""
    return sorted((i for i in range(len(scores)) if i not in exclude), key=lambda i: (-scores[i], i))


def tagging(ranked: list[list[int]], truth: list[list[int]], ks, exclude: set[int] = frozenset()) -> dict:
    """A@k, %pred, %cpred from ranked id lists (may contain -1 padding) and ground-truth lists."""
    hits = {k: 0 for k in ks}
    n = dropped = 0
    predicted, correct, test_tags = set(), set(), set()
    for ranking, tags in zip(ranked, truth):
        gt = {t for t in tags if t >= 0 and t not in exclude}
        if not gt:
            dropped += 1
            continue
        n += 1
        ranking = [t for t in ranking if t >= 0 and t not in exclude]
        test_tags |= gt
        for k in ks:
            if any(t in gt for t in ranking[:k]):
                hits[k] += 1
        if ranking:
            predicted.add(ranking[0])
            if ranking[0] in gt:
                correct.add(ranking[0])
    out = {f"A@{k}": 100.0 * hits[k] / n for k in ks}
    out["%pred"] = 100.0 * len(predicted) / len(test_tags)
    out["%cpred"] = 100.0 * len(correct) / len(test_tags)
    out["n"], out["n_dropped"] = n, dropped
    return out


def first_k(retrieved: list[int], k: int, source: int | None) -> list[int]:
    kept = [c for c in retrieved if source is None or c != source]
    return kept[:k]


def precision(
    retrieved: list[list[int]], query_tags: list[int], cand_tags: list[set[int]], k: int = 10, sources=None
) -> list[float]:
    out = []
    for q, ranking in enumerate(retrieved):
        top = first_k(ranking, k, None if sources is None else sources[q])
        out.append(sum(1 for c in top if c >= 0 and query_tags[q] in cand_tags[c]) / k)
    return out


def location_precision(
    retrieved, query_tags, query_lat, query_lon, cand_tags, cand_lat, cand_lon, thresholds, k=10, sources=None
):
    """[Q][T] location-sensitive precision fractions."""
    out = []
    for q, ranking in enumerate(retrieved):
        top = first_k(ranking, k, None if sources is None else sources[q])
        row = []
        for d in thresholds:
            good = 0
            for c in top:
                if (
                    c >= 0
                    and query_tags[q] in cand_tags[c]
                    and haversine_km(query_lat[q], query_lon[q], cand_lat[c], cand_lon[c]) <= d
                ):
                    good += 1
            row.append(good / k)
        out.append(row)
    return out


def upper_bound(query_tags, query_lat, query_lon, cand_tags, cand_lat, cand_lon, thresholds, k=10, sources=None):
    """Rank the candidates carrying the tag by distance and take the top k: [Q][T] fractions."""
    out = []
    for q in range(len(query_tags)):
        dists = sorted(
            haversine_km(query_lat[q], query_lon[q], cand_lat[c], cand_lon[c])
            for c in range(len(cand_tags))
            if query_tags[q] in cand_tags[c] and (sources is None or c != sources[q])
        )
        out.append([sum(1 for x in dists[:k] if x <= d) / k for d in thresholds])
    return out


def location_queries(cand_tags: list[list[int]], uniforms: list[float], min_query_images: int):
    """(candidate, tag) pairs: the int(u * n)-th smallest distinct tag of each image, frequent tags only."""
    df = Counter(t for tags in cand_tags for t in set(tags))
    out = []
    for c, tags in enumerate(cand_tags):
        distinct = sorted(set(tags))
        if not distinct:
            continue
        tag = distinct[min(int(uniforms[c] * len(distinct)), len(distinct) - 1)]
        if df[tag] >= min_query_images:
            out.append((c, tag))
    return out


def frequency_topk(train_rows, tags_of, place_of: dict, chain, row, k, num_tags) -> list[int]:
    """Most frequent training tags of the row's place at each chain level, then globally, deduplicated."""
    listed: list[int] = []
    levels = [(lvl, place_of[lvl][row]) for lvl in chain] + [("global", None)]
    for lvl, place in levels:
        counts = Counter()
        for r in train_rows:
            if lvl == "global" or (place >= 0 and place_of[lvl][r] == place):
                counts.update(set(tags_of(r)))
        order = sorted(range(num_tags), key=lambda t: (-counts[t], t))
        if lvl != "global":
            order = [t for t in order if counts[t] > 0]
        for t in order:
            if len(listed) == k:
                return listed
            if t not in listed:
                listed.append(t)
    return listed[:k]


def place_consistency(ranked, truth, photo_places, photo_latlon, places, place_names, vocab, town_latlon, town_km, k):
    """The place-consistency percentages (locsens.metrics.places' definitions) by loops over images and tags.

    ``photo_places[i]``: {level: id}; ``places``: {level: [names]}; ``town_latlon[t]``: (lat, lon) or None."""

    def norm(name):
        return "".join(c for c in name.lower() if c.isalnum())

    names_of = {}
    for level, names in places.items():
        for p, name in enumerate(names):
            if norm(name) in place_names:
                names_of.setdefault(norm(name), []).append((level, p))
    n = n_wrong = n_coarse = n_names = n_wrong_names = 0
    gt_p = gt_p_wrong = gt_np = gt_np_wrong = 0
    for ranking, tags, own, (lat, lon) in zip(ranked, truth, photo_places, photo_latlon):
        n += 1
        wrong_here = coarse_here = False
        for t in ranking[:k]:
            if t < 0 or vocab[t] not in names_of:
                continue
            n_names += 1
            meanings = names_of[vocab[t]]
            right = False
            for level, p in meanings:
                if own[level] == p:
                    right = True
                elif level == "town" and town_latlon[p] is not None:
                    right |= haversine_km(lat, lon, *town_latlon[p]) <= town_km
            if not right:
                n_wrong_names += 1
                wrong_here = True
                coarse_here |= any(level in ("country", "continent") for level, _ in meanings)
        n_wrong += wrong_here
        n_coarse += coarse_here
        if any(t >= 0 and vocab[t] in names_of for t in tags):
            gt_p += 1
            gt_p_wrong += wrong_here
        else:
            gt_np += 1
            gt_np_wrong += wrong_here

    def pct(a, b):
        return None if b == 0 else 100.0 * a / b

    return {
        f"wrong_place@{k}": pct(n_wrong, n),
        f"wrong_country@{k}": pct(n_coarse, n),
        "wrong_share": pct(n_wrong_names, n_names),
        f"wrong_place@{k}|gt_places": pct(gt_p_wrong, gt_p),
        f"wrong_place@{k}|gt_no_places": pct(gt_np_wrong, gt_np),
        f"place_names@{k}": n_names / n,
        "n": n,
    }
