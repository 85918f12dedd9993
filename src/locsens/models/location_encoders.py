"""Location encoders: (lat, lon) in degrees -> a feature vector that LocSens' location branch reads.

Each is an ``nn.Module`` with an ``out_dim`` attribute, built from its own config node
(``conf/model/location_encoder/*.yaml``: ``model.location_encoder: {_target_: ..., <its parameters>}``).
The fixed encoders are deterministic functions computed in float64 (fine-scale sinusoids need the
precision: at a 1 km period the phase reaches ~6e4 rad) and returned as float32. An encoder with
trainable parameters may set ``lr_scale``: LocSens trains them at ``lr * lr_scale`` without weight decay.


- ``latlon``  -- the paper's input: ((lat + 90) / 180, (lon + 180) / 360), via ``locsens.geo``.
  Discontinuous across the antimeridian and blind to the convergence of meridians.
- ``wrap``    -- sin/cos of latitude and of longitude (the "wrap" encoding of Mac Aodha et al., ICCV
  2019). Mac Aodha et al. scale latitude to [-1, 1] and take sin/cos(pi * lat/90), which maps both
  poles to the same vector; we take sin/cos of latitude in radians instead, which is one-to-one on
  the sphere. Longitude is continuous across the antimeridian.
- ``sphere_multiscale`` -- Sphere2Vec "sphereM"-style multi-scale sinusoids (Mai et al., 2023): for each
  of ``num_scales`` periods P_s, geometric from ``min_radius_km`` to ``max_radius_km``, with angular
  frequency f_s = 2 pi R / P_s (rounded to an integer >= 1 on longitude, so that the encoding is
  continuous across the antimeridian; Sphere2Vec's real-valued f_s there makes it jump):
  [sin(f_s phi), cos(f_s phi) cos(lam), cos(f_s phi) sin(lam), cos(phi) cos(f_s lam), cos(phi) sin(f_s lam)],
  plus the 3-D unit vector of the point (the coarsest, exact scale). The ``cos(phi)`` factor on the
  longitude terms makes them vanish at the poles, where longitude is undefined, and shrinks the
  longitude frequencies with the meridians.
- ``multiresolution_grid`` -- a LEARNED encoder (the others are fixed functions): ``num_levels`` levels
  of latitude/longitude grids with cells from ``max_cell_km`` down to ``min_cell_km`` on a side,
  each grid vertex owning a trainable feature vector (``features`` wide) in a per-level table of
  ``table_size`` rows, bilinearly interpolated between the 4 vertices around the point and
  concatenated over levels (Instant-NGP's multi-resolution hash encoding, Mueller et al. 2022, on a
  lat/lon grid). Coarse levels index their vertices directly; levels with more vertices than table
  rows share rows through a spatial hash (collisions are rare where photos are sparse and are
  resolved by the coarser levels). Longitude wraps at the antimeridian, latitude is clamped at the
  poles. It can memorise place-specific tags town by town, which a few hundred sinusoids cannot.
"""

from __future__ import annotations

import math

import numpy as np
import torch
from torch import nn

from locsens.geo import EARTH_RADIUS_KM, KM_PER_DEGREE, normalise_location


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
            raise ValueError(
                f"sphere_multiscale: need 0 < min_radius_km <= max_radius_km, got {min_radius_km}, {max_radius_km}"
            )
        periods_km = np.geomspace(max_radius_km, min_radius_km, num_scales)
        freqs = 2 * math.pi * EARTH_RADIUS_KM / periods_km
        self.register_buffer("frequencies", torch.from_numpy(freqs), persistent=False)
        # longitude frequencies rounded to integers >= 1: sin/cos(f lam) must be 2 pi-periodic, or the
        # encoding jumps at the antimeridian (lam = pi and -pi are one meridian)
        self.register_buffer("lon_frequencies", torch.from_numpy(np.maximum(1.0, np.round(freqs))), persistent=False)
        self.out_dim = 3 + 5 * num_scales

    def forward(self, lat_deg: torch.Tensor, lon_deg: torch.Tensor) -> torch.Tensor:
        phi, lam = torch.deg2rad(lat_deg.double()), torch.deg2rad(lon_deg.double())
        cphi, sphi, clam, slam = phi.cos(), phi.sin(), lam.cos(), lam.sin()
        f = self.frequencies.to(phi.device)
        fphi, flam = phi[..., None] * f, lam[..., None] * self.lon_frequencies.to(lam.device)  # [..., S]
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


class MultiResolutionGridEncoder(nn.Module):
    """Trainable features at the vertices of ``num_levels`` lat/lon grids, bilinearly interpolated."""

    PRIMES = (1, 2654435761)  # Instant-NGP's spatial hash: (i * 1) xor (j * 2654435761) mod table size

    def __init__(
        self,
        num_levels: int = 12,
        min_cell_km: float = 2.0,
        max_cell_km: float = 4000.0,
        table_size: int = 2**14,
        features: int = 4,
        lr_scale: float = 30.0,
    ):
        super().__init__()
        if num_levels < 1 or table_size < 1 or features < 1:
            raise ValueError(
                f"multiresolution_grid: num_levels ({num_levels}), table_size ({table_size}) and features ({features}) must be >= 1"
            )
        if not 0 < min_cell_km <= max_cell_km:
            raise ValueError(
                f"multiresolution_grid: need 0 < min_cell_km <= max_cell_km, got {min_cell_km}, {max_cell_km}"
            )
        if not lr_scale > 0:
            raise ValueError(f"multiresolution_grid: lr_scale={lr_scale} must be > 0")
        # a vertex only gets a gradient when a photo falls in its cell, so at the scorer's lr its features
        # barely leave their near-zero init (Instant-NGP trains its tables at 1e-2 for the same reason)
        self.lr_scale = float(lr_scale)
        cell_deg = np.geomspace(max_cell_km, min_cell_km, num_levels) / KM_PER_DEGREE
        self.n_lat = [max(1, math.ceil(180.0 / c)) for c in cell_deg]  # cells; vertex rows = n_lat + 1
        self.n_lon = [max(1, math.ceil(360.0 / c)) for c in cell_deg]  # cells = vertex columns (wraps)
        self.hashed = [(a + 1) * b > table_size for a, b in zip(self.n_lat, self.n_lon)]
        self.table_size = table_size
        self.tables = nn.Parameter(
            torch.empty(num_levels, table_size, features).uniform_(-1e-4, 1e-4)
        )  # Instant-NGP's init
        self.out_dim = num_levels * features

    def _rows(self, level: int, i: torch.Tensor, j: torch.Tensor) -> torch.Tensor:
        if self.hashed[level]:
            return torch.bitwise_xor(i * self.PRIMES[0], j * self.PRIMES[1]) % self.table_size
        return i * self.n_lon[level] + j

    def forward(self, lat_deg: torch.Tensor, lon_deg: torch.Tensor) -> torch.Tensor:
        shape = lat_deg.shape
        lat, lon = lat_deg.reshape(-1).double(), lon_deg.reshape(-1).double()
        out = []
        for level, (n_lat, n_lon) in enumerate(zip(self.n_lat, self.n_lon)):
            y = ((lat + 90.0) / 180.0 * n_lat).clamp(0.0, n_lat)
            x = torch.remainder((lon + 180.0) / 360.0 * n_lon, n_lon)
            i0 = y.floor().clamp(max=n_lat - 1).long()
            j0 = x.floor().long().clamp(max=n_lon - 1)
            wy, wx = (y - i0).float()[:, None], (x - j0).float()[:, None]
            i1, j1 = i0 + 1, torch.remainder(j0 + 1, n_lon)
            t = self.tables[level]
            out.append(
                t[self._rows(level, i0, j0)] * (1 - wy) * (1 - wx)
                + t[self._rows(level, i0, j1)] * (1 - wy) * wx
                + t[self._rows(level, i1, j0)] * wy * (1 - wx)
                + t[self._rows(level, i1, j1)] * wy * wx
            )
        return torch.cat(out, dim=-1).reshape(*shape, self.out_dim)


__all__ = ["LatLonEncoder", "MultiResolutionGridEncoder", "SphereMultiScaleEncoder", "WrapEncoder"]
