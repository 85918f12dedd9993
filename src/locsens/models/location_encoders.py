"""Location encoders: (lat, lon) in degrees -> a fixed feature vector that LocSens' location branch reads.

All encoders are parameter-free, deterministic functions computed in float64 (fine-scale sinusoids
need the precision: at a 1 km period the phase reaches ~6e4 rad) and returned as float32.

- ``latlon``  -- the paper's input: ((lat + 90) / 180, (lon + 180) / 360), via ``locsens.geo``.
  Discontinuous across the antimeridian and blind to the convergence of meridians.
- ``wrap``    -- sin/cos of latitude and of longitude (the "wrap" encoding of Mac Aodha et al., ICCV
  2019). Mac Aodha et al. scale latitude to [-1, 1] and take sin/cos(pi * lat/90), which maps both
  poles to the same vector; we take sin/cos of latitude in radians instead, which is one-to-one on
  the sphere. Longitude is continuous across the antimeridian.
- ``sphere_multiscale`` -- Sphere2Vec "sphereM"-style multi-scale sinusoids (Mai et al., 2023): for each
  of ``num_scales`` periods P_s, geometric from ``min_radius_km`` to ``max_radius_km``, with angular
  frequency f_s = 2 pi R / P_s:
  [sin(f_s phi), cos(f_s phi) cos(lam), cos(f_s phi) sin(lam), cos(phi) cos(f_s lam), cos(phi) sin(f_s lam)],
  plus the 3-D unit vector of the point (the coarsest, exact scale). The ``cos(phi)`` factor on the
  longitude terms makes them vanish at the poles, where longitude is undefined, and shrinks the
  longitude frequencies with the meridians.
"""

from __future__ import annotations

import math

import numpy as np
import torch
from torch import nn

from locsens.geo import EARTH_RADIUS_KM, normalise_location

LOCATION_ENCODERS = ("latlon", "wrap", "sphere_multiscale")


class LatLonEncoder(nn.Module):
    """The paper's normalised 2-d location, (lat', lon') in [0, 1]^2."""

    out_dim = 2

    def forward(self, lat_deg: torch.Tensor, lon_deg: torch.Tensor) -> torch.Tensor:
        return normalise_location(lat_deg.double(), lon_deg.double()).float()


class WrapEncoder(nn.Module):
    """[sin lat, cos lat, sin lon, cos lon] with angles in radians (4-d)."""

    out_dim = 4

    def forward(self, lat_deg: torch.Tensor, lon_deg: torch.Tensor) -> torch.Tensor:
        phi, lam = torch.deg2rad(lat_deg.double()), torch.deg2rad(lon_deg.double())
        return torch.stack([phi.sin(), phi.cos(), lam.sin(), lam.cos()], dim=-1).float()


class SphereMultiScaleEncoder(nn.Module):
    """Sphere2Vec-sphereM-style sinusoids at ``num_scales`` geometric periods plus the 3-D unit vector."""

    def __init__(self, num_scales: int = 16, min_radius_km: float = 1.0, max_radius_km: float = 20000.0):
        super().__init__()
        if num_scales < 1:
            raise ValueError(f"sphere_multiscale: num_scales must be >= 1, got {num_scales}")
        if not 0 < min_radius_km <= max_radius_km:
            raise ValueError(f"sphere_multiscale: need 0 < min_radius_km <= max_radius_km, got {min_radius_km}, {max_radius_km}")
        periods_km = np.geomspace(max_radius_km, min_radius_km, num_scales)
        self.register_buffer("frequencies", torch.from_numpy(2 * math.pi * EARTH_RADIUS_KM / periods_km), persistent=False)
        self.out_dim = 3 + 5 * num_scales

    def forward(self, lat_deg: torch.Tensor, lon_deg: torch.Tensor) -> torch.Tensor:
        phi, lam = torch.deg2rad(lat_deg.double()), torch.deg2rad(lon_deg.double())
        cphi, sphi, clam, slam = phi.cos(), phi.sin(), lam.cos(), lam.sin()
        f = self.frequencies.to(phi.device)
        fphi, flam = phi[..., None] * f, lam[..., None] * f  # [..., S]
        cfphi = fphi.cos()
        feats = [
            fphi.sin(),
            cfphi * clam[..., None],
            cfphi * slam[..., None],
            cphi[..., None] * flam.cos(),
            cphi[..., None] * flam.sin(),
        ]
        unit = torch.stack([cphi * clam, cphi * slam, sphi], dim=-1)
        return torch.cat([unit, *feats], dim=-1).float()


def build_location_encoder(name: str, num_scales: int = 16, min_radius_km: float = 1.0, max_radius_km: float = 20000.0) -> nn.Module:
    """The encoder called ``name`` (one of ``LOCATION_ENCODERS``); it has an ``out_dim`` attribute."""
    if name == "latlon":
        return LatLonEncoder()
    if name == "wrap":
        return WrapEncoder()
    if name == "sphere_multiscale":
        return SphereMultiScaleEncoder(num_scales, min_radius_km, max_radius_km)
    raise ValueError(f"model.location_encoder={name!r}; expected one of {LOCATION_ENCODERS}")
