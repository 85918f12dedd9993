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
- ``spherical_harmonics`` -- real spherical harmonics up to degree L ((L + 1)^2 features, orthonormal on
  the sphere; Russwurm et al., ICLR 2024), by the normalised Legendre recurrences (stable at L >= 40,
  where closed forms overflow), optionally with a SIREN head. Degree L resolves ~20,000 km / L.
- ``geoclip`` -- GeoCLIP's PRETRAINED location encoder (512-d), its weights read from the geoclip wheel
  (an optional extra: ``pip install --no-deps geoclip``), frozen or fine-tuned.
"""

from __future__ import annotations

import math
from pathlib import Path

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
        rows, weights = [], []
        for level, (n_lat, n_lon) in enumerate(zip(self.n_lat, self.n_lon)):
            y = ((lat + 90.0) / 180.0 * n_lat).clamp(0.0, n_lat)
            x = torch.remainder((lon + 180.0) / 360.0 * n_lon, n_lon)
            i0 = y.floor().clamp(max=n_lat - 1).long()
            j0 = x.floor().long().clamp(max=n_lon - 1)
            wy, wx = (y - i0).float(), (x - j0).float()
            i1, j1 = i0 + 1, torch.remainder(j0 + 1, n_lon)
            base = level * self.table_size
            for i, j, w in (
                (i0, j0, (1 - wy) * (1 - wx)),
                (i0, j1, (1 - wy) * wx),
                (i1, j0, wy * (1 - wx)),
                (i1, j1, wy * wx),
            ):
                rows.append(base + self._rows(level, i, j))
                weights.append(w)
        # one gather over every level's four corners: indexing each level's table apart made its backward
        # zero-fill a gradient of the whole [levels, table, features] parameter once per level
        flat = self.tables.reshape(-1, self.tables.shape[-1])
        n, levels = len(lat), len(self.n_lat)
        corners = torch.index_select(flat, 0, torch.stack(rows, 1).reshape(-1)).view(n, levels, 4, -1)
        out = (corners * torch.stack(weights, 1).view(n, levels, 4, 1)).sum(2)
        return out.reshape(*shape, self.out_dim)


def real_spherical_harmonics(lat_deg: torch.Tensor, lon_deg: torch.Tensor, degree: int) -> torch.Tensor:
    """Orthonormal real spherical harmonics ``Y_l^m``, ``0 <= l <= degree``, ``-l <= m <= l``, at points given
    in degrees: ``[..., (degree + 1)^2]`` float64, ordered by l then m (``-l .. l``); integrate to
    ``delta`` over the unit sphere (``int Y_a Y_b dOmega``).

    The associated Legendre functions come normalised from the start, by the standard three-term
    recurrences (no factorials, no closed forms), stable to high degree::

        P_0^0 = 1 / sqrt(4 pi);  P_m^m = -sqrt((2m + 1) / 2m) sin(theta) P_{m-1}^{m-1}
        P_{m+1}^m = sqrt(2m + 3) cos(theta) P_m^m
        P_l^m = a_lm (cos(theta) P_{l-1}^m - b_lm P_{l-2}^m),
        a_lm = sqrt((4l^2 - 1) / (l^2 - m^2)),  b_lm = sqrt(((l - 1)^2 - m^2) / (4 (l - 1)^2 - 1))

    with theta the colatitude; ``Y_l^m = sqrt(2) P_l^|m| cos(m lon)`` (m > 0), ``sqrt(2) P_l^|m| sin(|m| lon)``
    (m < 0), ``P_l^0`` (m = 0). Each P_m^m shrinks like sin^m(theta): at degree 40 near a pole that is
    ~1e-80, far inside float64."""
    if degree < 0:
        raise ValueError(f"spherical harmonics degree must be >= 0, got {degree}")
    theta = torch.deg2rad(90.0 - lat_deg.double())
    lam = torch.deg2rad(lon_deg.double())
    x, y = theta.cos(), theta.sin()
    big_l = degree
    p = {}  # (l, m) -> P_l^m(cos theta), normalised
    p[(0, 0)] = torch.full_like(x, 1.0 / math.sqrt(4 * math.pi))
    for m in range(1, big_l + 1):
        p[(m, m)] = -math.sqrt((2 * m + 1) / (2 * m)) * y * p[(m - 1, m - 1)]
    for m in range(0, big_l):
        p[(m + 1, m)] = math.sqrt(2 * m + 3) * x * p[(m, m)]
    for m in range(0, big_l + 1):
        for l in range(m + 2, big_l + 1):  # noqa: E741 (l is the degree, as everywhere in the literature)
            a = math.sqrt((4 * l * l - 1) / (l * l - m * m))
            b = math.sqrt(((l - 1) ** 2 - m * m) / (4 * (l - 1) ** 2 - 1))
            p[(l, m)] = a * (x * p[(l - 1, m)] - b * p[(l - 2, m)])
    cos_m = [torch.cos(m * lam) for m in range(big_l + 1)]
    sin_m = [torch.sin(m * lam) for m in range(big_l + 1)]
    out = []
    root2 = math.sqrt(2.0)
    for l in range(big_l + 1):  # noqa: E741
        for m in range(-l, l + 1):
            if m < 0:
                out.append(root2 * p[(l, -m)] * sin_m[-m])
            elif m == 0:
                out.append(p[(l, 0)])
            else:
                out.append(root2 * p[(l, m)] * cos_m[m])
    return torch.stack(out, dim=-1)


class SphericalHarmonicsEncoder(nn.Module):
    """Real spherical harmonics up to ``degree`` (``(degree + 1)^2`` features; Russwurm et al., ICLR 2024),
    by recurrence (:func:`real_spherical_harmonics`), optionally followed by a SIREN head (``siren_width``
    > 0: ``siren_depth`` layers ``sin(w0 (W x + b))``, SIREN's init) that makes them a learned encoder."""

    def __init__(self, degree: int = 20, siren_width: int = 0, siren_depth: int = 1, w0: float = 1.0):
        super().__init__()
        if degree < 0 or siren_width < 0 or siren_depth < 1:
            raise ValueError(
                f"spherical_harmonics: degree ({degree}) and siren_width ({siren_width}) must be >= 0, siren_depth >= 1"
            )
        self.degree, self.w0 = int(degree), float(w0)
        width = (self.degree + 1) ** 2
        self.siren = nn.ModuleList()
        for i in range(siren_depth if siren_width else 0):
            layer = nn.Linear(width, siren_width)
            bound = 1.0 / width if i == 0 else math.sqrt(6.0 / width) / self.w0  # SIREN's init
            nn.init.uniform_(layer.weight, -bound, bound)
            self.siren.append(layer)
            width = siren_width
        self.out_dim = width

    def forward(self, lat_deg: torch.Tensor, lon_deg: torch.Tensor) -> torch.Tensor:
        h = real_spherical_harmonics(lat_deg, lon_deg, self.degree).float()
        for layer in self.siren:
            h = torch.sin(self.w0 * layer(h))
        return h


# --------------------------------------------------------------------------------------------
# GeoCLIP's pretrained location encoder (Vivanco Cepeda et al., NeurIPS 2023), from the geoclip wheel's
# weights file, in a module of our own (importing geoclip pulls transformers and its image encoder
# downloads CLIP at run time)
# --------------------------------------------------------------------------------------------
GEOCLIP_WEIGHTS = ("model", "weights", "location_encoder_weights.pth")
GEOCLIP_SIGMAS = (2.0**0, 2.0**4, 2.0**8)
# Equal Earth projection constants (Savric et al. 2018), as GeoCLIP uses them
_EE = (1.340264, -0.081106, 0.000893, 0.003796)
_EE_SCALE = 66.50336


def geoclip_weights_path() -> Path:
    """The location encoder weights shipped in the ``geoclip`` wheel, found without importing geoclip."""
    import importlib.util

    spec = importlib.util.find_spec("geoclip")  # a top-level spec: its __init__ is not run
    if spec is None or not spec.submodule_search_locations:
        raise ImportError(
            "model/location_encoder=geoclip reads the weights of the geoclip wheel: install it without its "
            "dependencies (they would move the pinned torch): pip install --no-deps geoclip (make setup-geo)"
        )
    path = Path(list(spec.submodule_search_locations)[0]).joinpath(*GEOCLIP_WEIGHTS)
    if not path.is_file():
        raise FileNotFoundError(f"{path}: the geoclip wheel's location encoder weights are missing")
    return path


def equal_earth(lat_deg: torch.Tensor, lon_deg: torch.Tensor) -> torch.Tensor:
    """GeoCLIP's input: the Equal Earth projection of (lat, lon) degrees, scaled by ``66.50336 / 180``: [N, 2]."""
    a1, a2, a3, a4 = _EE
    lat, lon = torch.deg2rad(lat_deg.double()), torch.deg2rad(lon_deg.double())
    theta = torch.asin(math.sqrt(3.0) / 2 * torch.sin(lat))
    x = (
        2
        * math.sqrt(3.0)
        * lon
        * torch.cos(theta)
        / (3 * (9 * a4 * theta**8 + 7 * a3 * theta**6 + 3 * a2 * theta**2 + a1))
    )
    y = a4 * theta**9 + a3 * theta**7 + a2 * theta**3 + a1 * theta
    return torch.stack([x, y], dim=-1) * _EE_SCALE / 180


class _FourierFeatures(nn.Module):
    def __init__(self, encoded: int = 256):
        super().__init__()
        self.b = nn.Parameter(torch.zeros(encoded, 2), requires_grad=False)  # GeoCLIP's fixed random matrix

    def forward(self, v: torch.Tensor) -> torch.Tensor:
        vp = 2 * math.pi * v.double() @ self.b.double().T  # phases reach ~1e3 rad at sigma 256: float64
        return torch.cat([torch.cos(vp), torch.sin(vp)], dim=-1).float()


class _Capsule(nn.Module):
    def __init__(self):
        super().__init__()
        self.capsule = nn.Sequential(
            _FourierFeatures(), nn.Linear(512, 1024), nn.ReLU(), nn.Linear(1024, 1024), nn.ReLU(),
            nn.Linear(1024, 1024), nn.ReLU(),
        )  # fmt: skip
        self.head = nn.Sequential(nn.Linear(1024, 512))

    def forward(self, v: torch.Tensor) -> torch.Tensor:
        return self.head(self.capsule(v))


class GeoCLIPLocationEncoder(nn.Module):
    """GeoCLIP's location encoder: random Fourier features of the Equal Earth projection at three scales
    (sigma 1, 16, 256), each through its own 3-layer MLP, summed: 512-d. Weights loaded strictly from the
    geoclip wheel (``weights``: ``wheel`` or a path to the same file). ``frozen``: no gradient reaches
    it (a fixed pretrained encoder); else it is fine-tuned at ``lr * lr_scale``.

    GeoCLIP was trained on MP-16, a subset of YFCC100M: at full scale its encoder may have seen test photos."""

    out_dim = 512

    def __init__(self, weights: str = "wheel", frozen: bool = True, lr_scale: float = 0.1):
        super().__init__()
        for i in range(len(GEOCLIP_SIGMAS)):
            self.add_module(f"LocEnc{i}", _Capsule())
        self.frozen, self.lr_scale = bool(frozen), float(lr_scale)
        if not self.LocEnc0.head[0].weight.is_meta:  # on the meta device (shape checks) nothing is read
            path = geoclip_weights_path() if weights == "wheel" else Path(weights)
            self.load_state_dict(torch.load(path, map_location="cpu", weights_only=True), strict=True)
        if self.frozen:
            self.requires_grad_(False)

    def forward(self, lat_deg: torch.Tensor, lon_deg: torch.Tensor) -> torch.Tensor:
        shape = lat_deg.shape
        v = equal_earth(lat_deg.reshape(-1), lon_deg.reshape(-1))
        out = sum(self._modules[f"LocEnc{i}"](v) for i in range(len(GEOCLIP_SIGMAS)))
        return out.reshape(*shape, self.out_dim)


__all__ = [
    "GeoCLIPLocationEncoder",
    "LatLonEncoder",
    "MultiResolutionGridEncoder",
    "SphereMultiScaleEncoder",
    "SphericalHarmonicsEncoder",
    "WrapEncoder",
    "real_spherical_harmonics",
]
