"""Geodesy: haversine distances against the ellipsoid, location normalisation, geodesic sampling."""

from __future__ import annotations

import math

import numpy as np
import pytest
import torch

from locsens.geo import (
    EARTH_RADIUS_KM,
    MAX_HAVERSINE_REL_ERROR,
    geodesic_km,
    geodesic_km_torch,
    normalise_location,
    sample_around,
    sigma_to_km,
)


def vincenty_km(lat1, lon1, lat2, lon2) -> float:
    """WGS84 ellipsoidal distance (Vincenty's inverse formula; converges for non-antipodal pairs)."""
    a, f = 6378.137, 1 / 298.257223563
    b = (1 - f) * a
    L = math.radians(lon2 - lon1)
    U1, U2 = math.atan((1 - f) * math.tan(math.radians(lat1))), math.atan((1 - f) * math.tan(math.radians(lat2)))
    sinU1, cosU1, sinU2, cosU2 = math.sin(U1), math.cos(U1), math.sin(U2), math.cos(U2)
    lam = L
    for _ in range(200):
        sin_lam, cos_lam = math.sin(lam), math.cos(lam)
        sin_sigma = math.hypot(cosU2 * sin_lam, cosU1 * sinU2 - sinU1 * cosU2 * cos_lam)
        if sin_sigma == 0:
            return 0.0
        cos_sigma = sinU1 * sinU2 + cosU1 * cosU2 * cos_lam
        sigma = math.atan2(sin_sigma, cos_sigma)
        sin_alpha = cosU1 * cosU2 * sin_lam / sin_sigma
        cos2_alpha = 1 - sin_alpha**2
        cos_2sm = cos_sigma - 2 * sinU1 * sinU2 / cos2_alpha if cos2_alpha else 0.0
        C = f / 16 * cos2_alpha * (4 + f * (4 - 3 * cos2_alpha))
        lam_prev = lam
        lam = L + (1 - C) * f * sin_alpha * (sigma + C * sin_sigma * (cos_2sm + C * cos_sigma * (-1 + 2 * cos_2sm**2)))
        if abs(lam - lam_prev) < 1e-12:
            break
    u2 = cos2_alpha * (a * a - b * b) / (b * b)
    A = 1 + u2 / 16384 * (4096 + u2 * (-768 + u2 * (320 - 175 * u2)))
    B = u2 / 1024 * (256 + u2 * (-128 + u2 * (74 - 47 * u2)))
    d_sigma = (
        B
        * sin_sigma
        * (
            cos_2sm
            + B
            / 4
            * (cos_sigma * (-1 + 2 * cos_2sm**2) - B / 6 * cos_2sm * (-3 + 4 * sin_sigma**2) * (-3 + 4 * cos_2sm**2))
        )
    )
    return b * A * (sigma - d_sigma)


PAIRS = [
    ((48.8566, 2.3522), (51.5074, -0.1278)),  # Paris - London
    ((40.7128, -74.0060), (34.0522, -118.2437)),  # New York - Los Angeles
    ((-33.8688, 151.2093), (35.6762, 139.6503)),  # Sydney - Tokyo (north-south: the worst case)
    ((0.0, 0.0), (0.0, 90.0)),  # along the equator
    ((89.0, 0.0), (-89.0, 0.0)),  # meridian, pole to pole
    ((64.1466, -21.9426), (-54.8019, -68.3030)),  # Reykjavik - Ushuaia
]


def test_paris_london():
    assert geodesic_km(48.8566, 2.3522, 51.5074, -0.1278) == pytest.approx(343.5, abs=0.5)


@pytest.mark.parametrize("a, b", PAIRS)
def test_haversine_within_stated_bound_of_ellipsoid(a, b):
    h = float(geodesic_km(*a, *b))
    v = vincenty_km(*a, *b)
    assert abs(h - v) / v <= MAX_HAVERSINE_REL_ERROR
    assert float(geodesic_km(*b, *a)) == pytest.approx(h, rel=1e-12)  # symmetric


def test_antipodes_and_zero():
    assert geodesic_km(0.0, 0.0, 0.0, 180.0) == pytest.approx(math.pi * EARTH_RADIUS_KM, rel=1e-9)
    assert geodesic_km(0.0, 0.0, 0.0, 180.0) == pytest.approx(20015.1, abs=0.2)
    assert geodesic_km(90.0, 0.0, -90.0, 0.0) == pytest.approx(20015.1, abs=0.2)
    assert geodesic_km(12.3, 45.6, 12.3, 45.6) == 0.0
    assert geodesic_km(10.0, 179.9, 10.0, -179.9) == pytest.approx(21.9, abs=0.1)  # across the meridian


def test_torch_agrees_with_numpy():
    rng = np.random.default_rng(0)
    lat1, lat2 = rng.uniform(-90, 90, (2, 50))
    lon1, lon2 = rng.uniform(-180, 180, (2, 50))
    want = geodesic_km(lat1, lon1, lat2, lon2)
    got = geodesic_km_torch(*(torch.tensor(x) for x in (lat1, lon1, lat2, lon2))).numpy()
    np.testing.assert_allclose(got, want, rtol=1e-9)


def test_normalise_location_and_sigma_units():
    np.testing.assert_allclose(
        normalise_location(np.array([-90.0, 90.0, 0.0]), np.array([-180.0, 180.0, 0.0])), [[0, 0], [1, 1], [0.5, 0.5]]
    )
    t = normalise_location(torch.tensor([45.0]), torch.tensor([90.0]))
    assert torch.allclose(t, torch.tensor([[0.75, 0.75]]))
    assert sigma_to_km(1.0) == pytest.approx(20015.1, abs=0.2)
    assert sigma_to_km(0.01) == pytest.approx(200.15, abs=0.01)


def _draw(lat0, lon0, sigma_km, n=20000, seed=0):
    lat = torch.full((n,), float(lat0), dtype=torch.float64)
    lon = torch.full((n,), float(lon0), dtype=torch.float64)
    g = torch.Generator().manual_seed(seed)
    return lat, lon, *sample_around(lat, lon, sigma_km, generator=g)


@pytest.mark.parametrize("lat0, lon0", [(48.85, 2.29), (0.0, 179.95), (-33.9, -179.99), (89.95, 10.0), (-89.9, -120.0)])
def test_sample_around_ranges_and_spread(lat0, lon0):
    sigma = 150.0
    lat, lon, lat2, lon2 = _draw(lat0, lon0, sigma)
    assert torch.all(lat2.abs() <= 90.0)
    assert torch.all((lon2 >= -180.0) & (lon2 < 180.0))
    d = geodesic_km(lat.numpy(), lon.numpy(), lat2.numpy(), lon2.numpy())
    # a 2-d isotropic Gaussian of sigma per axis: E[d^2] = 2 sigma^2 (1/sqrt(20000) = 0.7% sampling error)
    assert np.mean(d**2) == pytest.approx(2 * sigma**2, rel=0.04)
    assert np.median(d) == pytest.approx(sigma * math.sqrt(2 * math.log(2)), rel=0.04)  # Rayleigh median


def test_sample_around_no_pole_to_pole_wrap():
    lat, lon, lat2, lon2 = _draw(89.9, 0.0, 100.0)
    assert torch.all(lat2 > 80.0)  # crossing the pole continues down the other side, never to -90
    lat, lon, lat2, lon2 = _draw(-89.9, 0.0, 100.0)
    assert torch.all(lat2 < -80.0)


def test_sample_around_zero_sigma_and_seed():
    lat, lon = torch.tensor([10.0, -20.0]), torch.tensor([30.0, 40.0])
    same = sample_around(lat, lon, 0.0)
    assert torch.equal(same[0], lat) and torch.equal(same[1], lon)
    a = sample_around(lat, lon, 50.0, generator=torch.Generator().manual_seed(3))
    b = sample_around(lat, lon, 50.0, generator=torch.Generator().manual_seed(3))
    assert torch.equal(a[0], b[0]) and torch.equal(a[1], b[1])
    assert a[0].dtype == lat.dtype


def test_destination_is_at_the_distance_and_bearing_in_numpy_and_torch():
    """The great-circle destination formula (one home for the world's offsets and the sigma sampling):
    the haversine distance back to the origin is the distance asked, north goes up in latitude, and the
    numpy and torch versions agree."""
    import math

    import torch

    from locsens.geo import chord_for_km, destination, unit_vectors

    rng = np.random.default_rng(0)
    lat, lon = rng.uniform(-80, 80, 200), rng.uniform(-180, 180, 200)
    km, bearing = rng.uniform(1, 5000, 200), rng.uniform(0, 2 * math.pi, 200)
    lat2, lon2 = destination(lat, lon, km, bearing)
    np.testing.assert_allclose(geodesic_km(lat, lon, lat2, lon2), km, rtol=1e-9)
    assert np.all((lon2 >= -180) & (lon2 < 180)) and np.all(np.abs(lat2) <= 90)
    north, _ = destination(lat, lon, 100.0, 0.0)
    np.testing.assert_allclose(north - lat, 100.0 / (math.pi * 6371.0088 / 180), rtol=1e-9)
    t_lat, t_lon = destination(
        torch.from_numpy(lat), torch.from_numpy(lon), torch.from_numpy(km), torch.from_numpy(bearing)
    )
    np.testing.assert_allclose(t_lat.numpy(), lat2, atol=1e-9)
    np.testing.assert_allclose(t_lon.numpy(), lon2, atol=1e-9)
    a, b = unit_vectors(lat, lon), unit_vectors(lat2, lon2)  # the chord of a great-circle distance
    np.testing.assert_allclose(np.linalg.norm(a - b, axis=1), [chord_for_km(k) for k in km], rtol=1e-9)
