"""Offline reverse geocoding on known landmarks, mid-ocean points, place names and fallbacks."""

from __future__ import annotations

import numpy as np
import pytest

from locsens.data.geography import UNKNOWN_CONTINENT, Geography, default_geography, place_names, reverse_geocode

LANDMARKS = [
    # (lat, lon), town, region, country, continent
    ((48.8584, 2.2945), "Paris", "Ile-de-France", "France", "Europe"),  # Eiffel Tower
    ((-33.8568, 151.2153), "Sydney", "New South Wales", "Australia", "Oceania"),  # Sydney Opera House
    ((40.7484, -73.9857), "New York City", "New York", "United States", "North America"),  # Empire State
    ((51.5007, -0.1246), "London", "England", "United Kingdom", "Europe"),  # Big Ben
    ((-22.9519, -43.2105), "Rio de Janeiro", "Rio de Janeiro", "Brazil", "South America"),  # Christ the Redeemer
    ((40.7357, -74.1724), "Newark", "New Jersey", "United States", "North America"),  # not swallowed by NYC
]


@pytest.fixture(scope="module")
def geography():
    return default_geography()


@pytest.mark.parametrize("point, town, region, country, continent", LANDMARKS)
def test_landmarks(geography, point, town, region, country, continent):
    p = reverse_geocode([point[0]], [point[1]], geography)
    got = tuple(p.name(level, 0) for level in ("town", "region", "country", "continent"))
    assert got == (town, region, country, continent)
    assert p.distance_km[0] < 15.0
    assert not p.far_from_town()[0]


def test_batch_equals_one_by_one(geography):
    lat = np.array([pt[0] for pt, *_ in LANDMARKS])
    lon = np.array([pt[1] for pt, *_ in LANDMARKS])
    batch = reverse_geocode(lat, lon, geography)
    for i, (_pt, town, *_rest) in enumerate(LANDMARKS):
        assert batch.name("town", i) == town
    # compact tables: only the places present, every id in range
    assert len(batch.places["town"]) == len(LANDMARKS)
    assert batch.places["continent"] == sorted(set(batch.places["continent"]))
    for level, idx in batch.place_index.items():
        assert idx.dtype == np.int32 and idx.min() >= 0 and idx.max() < len(batch.places[level])


def test_mid_ocean_point_is_far_from_its_town(geography):
    # South Atlantic, ~1000 km from Tristan da Cunha, the nearest settlement
    p = reverse_geocode([-30.0], [-20.0], geography)
    assert p.name("town", 0)  # still some town
    assert p.distance_km[0] > 500.0
    assert p.far_from_town()[0]


def test_nearest_is_on_the_sphere_not_in_degrees(geography):
    # just west of the 180th meridian in Fiji: the nearest town is across the meridian, not 300 degrees away
    rows, km = geography.nearest_town([-16.8], [179.99])
    assert km[0] < 200.0


def test_place_names_are_normalised_whole_names(geography):
    p = reverse_geocode([40.7484, 48.8584], [-73.9857, 2.2945], geography)
    names = p.place_names()
    for want in (
        "newyorkcity",
        "newyork",
        "unitedstates",
        "northamerica",
        "paris",
        "ile-de-france",
        "france",
        "europe",
    ):
        assert want in names
    assert "york" not in names and "city" not in names  # whole names only, no single words
    assert names == sorted(set(names))
    assert place_names({"town": ["Route 66", "São Paulo"], "region": [], "country": [], "continent": []}) == [
        "sãopaulo"
    ]


def test_unknown_country_code_falls_back():
    towns = [
        {"lat": "10.0", "lon": "10.0", "name": "Nowhere Town", "admin1": "", "cc": "ZZ"},
        {"lat": "42.66", "lon": "21.16", "name": "Pristina", "admin1": "Pristina", "cc": "XK"},
    ]
    g = Geography(towns, big_cities=[])
    p = g.locate([10.01, 42.67], [10.01, 21.17])
    assert [p.name("country", i) for i in range(2)] == ["Country ZZ", "Kosovo"]
    assert [p.name("continent", i) for i in range(2)] == [UNKNOWN_CONTINENT, "Europe"]
    assert p.name("region", 0) == ""
    names = p.place_names()
    assert "countryzz" not in names and "unknowncontinent" not in names
    assert {"kosovo", "pristina", "europe", "nowheretown"} <= set(names)
