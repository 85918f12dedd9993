"""Geodesy: the one home for distances, location normalisation and location sampling.

Distances are great-circle (haversine) distances on a sphere of the mean Earth radius
(IUGG R1 = 6371.0088 km). Against the WGS84 ellipsoid (Vincenty / Karney) the haversine
distance errs by at most about 0.56% (typically < 0.3%); at the paper's thresholds
(1 / 25 / 200 / 750 / 2500 km) that is at most 14 km at 2500 km, and it only matters for
pairs within 0.56% of a threshold. ``tests/test_geo.py`` checks this bound on known pairs.
"""

from __future__ import annotations

import math

import numpy as np
import torch

EARTH_RADIUS_KM = 6371.0088
KM_PER_DEGREE = math.pi * EARTH_RADIUS_KM / 180.0  # ~111.195 km along a meridian
MAX_HAVERSINE_REL_ERROR = 0.0056


def geodesic_km(lat1, lon1, lat2, lon2):
    """Great-circle distance in km between points given in degrees (numpy broadcasting).

    >>> round(float(geodesic_km(48.8584, 2.2945, 40.6892, -74.0445)))     # Eiffel Tower -> Statue of Liberty
    5837
    """
    lat1, lon1, lat2, lon2 = (np.radians(np.asarray(a, dtype=np.float64)) for a in (lat1, lon1, lat2, lon2))
    s = np.sin((lat2 - lat1) / 2.0) ** 2 + np.cos(lat1) * np.cos(lat2) * np.sin((lon2 - lon1) / 2.0) ** 2
    return 2.0 * EARTH_RADIUS_KM * np.arcsin(np.sqrt(np.clip(s, 0.0, 1.0)))


def geodesic_km_torch(lat1: torch.Tensor, lon1: torch.Tensor, lat2: torch.Tensor, lon2: torch.Tensor) -> torch.Tensor:
    """Torch twin of :func:`geodesic_km` (degrees in, km out, broadcasting, float64 inside)."""
    lat1, lon1, lat2, lon2 = (torch.deg2rad(t.double()) for t in (lat1, lon1, lat2, lon2))
    s = torch.sin((lat2 - lat1) / 2) ** 2 + torch.cos(lat1) * torch.cos(lat2) * torch.sin((lon2 - lon1) / 2) ** 2
    return 2.0 * EARTH_RADIUS_KM * torch.arcsin(torch.sqrt(s.clamp(0.0, 1.0)))


def unit_vectors(lat, lon) -> np.ndarray:
    """[..., 3] points on the unit sphere for degrees (the nearest chord is the nearest great circle, so a
    KD-tree over these answers geodesic nearest-neighbour queries exactly)."""
    phi, lam = np.radians(np.asarray(lat, dtype=np.float64)), np.radians(np.asarray(lon, dtype=np.float64))
    cos_phi = np.cos(phi)
    return np.stack([cos_phi * np.cos(lam), cos_phi * np.sin(lam), np.sin(phi)], axis=-1)


def chord_for_km(km: float) -> float:
    """The unit-sphere chord of a great-circle distance (a KD-tree radius over :func:`unit_vectors`)."""
    return 2.0 * math.sin(km / EARTH_RADIUS_KM / 2.0)


def km_to_degrees(km):
    """Degrees of latitude (great circle along a meridian) spanning ``km``."""
    return km / KM_PER_DEGREE


def destination(lat, lon, distance_km, bearing_rad):
    """The point ``distance_km`` away from (lat, lon) (degrees) along the great circle of ``bearing_rad``
    (clockwise from north): degrees, latitude in [-90, 90], longitude wrapped to [-180, 180). numpy arrays
    or torch tensors (float64 inside), broadcasting."""
    xp = torch if isinstance(lat, torch.Tensor) else np
    as64 = (
        (lambda a: torch.as_tensor(a, dtype=torch.float64, device=lat.device))
        if xp is torch
        else (lambda a: np.asarray(a, dtype=np.float64))
    )
    d = as64(distance_km) / EARTH_RADIUS_KM
    b = as64(bearing_rad)
    phi1, lam1 = xp.deg2rad(as64(lat)), xp.deg2rad(as64(lon))
    sin_phi2 = xp.sin(phi1) * xp.cos(d) + xp.cos(phi1) * xp.sin(d) * xp.cos(b)
    phi2 = xp.arcsin(xp.clip(sin_phi2, -1.0, 1.0))
    lam2 = lam1 + xp.arctan2(xp.sin(b) * xp.sin(d) * xp.cos(phi1), xp.cos(d) - xp.sin(phi1) * sin_phi2)
    return xp.rad2deg(phi2), xp.remainder(xp.rad2deg(lam2) + 180.0, 360.0) - 180.0


def normalise_location(lat, lon):
    """The paper's LocSens location input: lat' = (lat + 90) / 180, lon' = (lon + 180) / 360, in [0, 1]."""
    if isinstance(lat, torch.Tensor):
        return torch.stack([(lat + 90.0) / 180.0, (lon + 180.0) / 360.0], dim=-1)
    return np.stack([(np.asarray(lat) + 90.0) / 180.0, (np.asarray(lon) + 180.0) / 360.0], axis=-1)


def sigma_to_km(sigma: float) -> float:
    """A sampling scale in the paper's normalised units expressed in km.

    The paper draws N(0, sigma) in normalised units; one normalised latitude unit is 180 degrees,
    so sigma corresponds to ``sigma * 180 * 111.195`` km along a meridian (sigma = 1 -> 20,015 km,
    half the circumference; sigma = 0.01 -> 200 km).
    """
    return float(sigma) * 180.0 * KM_PER_DEGREE


def sample_around(lat: torch.Tensor, lon: torch.Tensor, sigma_km: float, generator: torch.Generator | None = None):
    """Draw one location around each (lat, lon) (degrees) with an isotropic Gaussian of ``sigma_km``.

    The draw is geodesic: a displacement (dx, dy) ~ N(0, sigma_km^2 I) in the local tangent plane is
    mapped to the point at distance |d| along the great circle with bearing atan2(dx, dy). Latitudes
    therefore stay in [-90, 90] and longitudes wrap to [-180, 180) with no pole-to-pole wrap (the
    released code wrapped latitude modulo 1). sigma_km = 0 returns the input unchanged.
    """
    if sigma_km <= 0:
        return lat, lon
    d = torch.randn((2, *lat.shape), generator=generator, dtype=torch.float64, device=lat.device) * sigma_km
    lat2, lon2 = destination(lat, lon, torch.sqrt(d[0] ** 2 + d[1] ** 2), torch.atan2(d[0], d[1]))
    return lat2.to(lat.dtype), lon2.to(lon.dtype)
