"""Location encoders: shapes, the sphere's topology (antimeridian, poles) and the learned grid's lookups."""

from __future__ import annotations

import math

import numpy as np
import pytest
import torch
from conftest import CONF, compose
from hydra.utils import instantiate

from locsens.geo import KM_PER_DEGREE
from locsens.models.location_encoders import MultiResolutionGridEncoder

ENCODERS = sorted(p.stem for p in (CONF / "model" / "location_encoder").glob("*.yaml"))  # every shipped encoder config


@pytest.mark.parametrize("name", ENCODERS)
def test_shape_and_antimeridian_continuity(name):
    if name == "geoclip" and not _geoclip_installed():
        pytest.skip("the optional geoclip wheel is not installed")
    torch.manual_seed(0)
    enc = instantiate(
        compose("train", ["experiment=locsens_paper", f"model/location_encoder={name}"]).model.location_encoder
    )
    if name == "multiresolution_grid":
        with torch.no_grad():
            enc.tables.normal_()  # trained-like features, not the near-zero init
    lat = torch.tensor([[10.0, -33.9], [89.999, -90.0]])
    out = enc(lat, torch.tensor([[179.9999, -179.9999], [0.0, 45.0]]))
    assert out.shape == (2, 2, enc.out_dim) and out.dtype == torch.float32 and torch.isfinite(out).all()
    # the paper's normalised lat/lon and GeoCLIP's Equal Earth projection are planar: discontinuous there
    if name not in ("latlon", "geoclip"):
        a, b = enc(torch.tensor([10.0]), torch.tensor([180.0])), enc(torch.tensor([10.0]), torch.tensor([-180.0]))
        torch.testing.assert_close(a, b, rtol=0, atol=1e-5)  # one meridian, one encoding


def test_grid_interpolates_its_vertices_and_wraps():
    enc = MultiResolutionGridEncoder(num_levels=2, min_cell_km=1000.0, max_cell_km=2000.0, table_size=2**20, features=3)
    with torch.no_grad():
        enc.tables.copy_(torch.randn_like(enc.tables))
    assert enc.hashed == [False, False] and enc.out_dim == 6
    n_lat, n_lon = enc.n_lat[0], enc.n_lon[0]
    # a vertex: exactly its row of the table
    i, j = 3, 5
    lat, lon = torch.tensor([-90.0 + 180.0 * i / n_lat]), torch.tensor([-180.0 + 360.0 * j / n_lon])
    torch.testing.assert_close(enc(lat, lon)[0, :3], enc.tables[0, i * n_lon + j])
    # the middle of a cell: the mean of its 4 vertices; the cell next to the antimeridian uses column 0
    lat = torch.tensor([-90.0 + 180.0 * (i + 0.5) / n_lat])
    lon = torch.tensor([-180.0 + 360.0 * (n_lon - 0.5) / n_lon])
    rows = [i * n_lon + n_lon - 1, i * n_lon, (i + 1) * n_lon + n_lon - 1, (i + 1) * n_lon]
    torch.testing.assert_close(enc(lat, lon)[0, :3], enc.tables[0, rows].mean(0))


def test_grid_hashes_fine_levels_into_the_table_and_learns():
    enc = MultiResolutionGridEncoder(num_levels=4, min_cell_km=2.0, max_cell_km=2000.0, table_size=4096, features=2)
    assert enc.hashed[0] is False and enc.hashed[-1] is True
    assert enc.n_lon[-1] == pytest.approx(360 * KM_PER_DEGREE / 2.0, rel=1e-3)  # 2 km cells along the equator
    g = torch.Generator().manual_seed(0)
    lat, lon = torch.rand(500, generator=g) * 180 - 90, torch.rand(500, generator=g) * 360 - 180
    for level in range(4):
        y = ((lat.double() + 90) / 180 * enc.n_lat[level]).floor().long()
        x = ((lon.double() + 180) / 360 * enc.n_lon[level]).floor().long()
        rows = enc._rows(level, y, x)
        assert rows.min() >= 0 and rows.max() < 4096
    out = enc(lat, lon)
    out.pow(2).sum().backward()
    assert enc.tables.grad is not None and (enc.tables.grad != 0).any()
    with pytest.raises(ValueError, match="min_cell_km"):
        MultiResolutionGridEncoder(min_cell_km=0.0)


def test_spherical_harmonics_are_orthonormal_at_high_degree():
    """Gauss-Legendre nodes in cos(colatitude) x uniform longitudes integrate products of degree <= 2L exactly."""
    from locsens.models.location_encoders import real_spherical_harmonics

    big_l = 44
    x, w = np.polynomial.legendre.leggauss(big_l + 1)
    n_lon = 2 * big_l + 2
    lat = np.degrees(np.arcsin(x))  # cos(colatitude) = sin(latitude)
    lon = np.arange(n_lon) * 360.0 / n_lon - 180.0
    lat_g, lon_g = np.meshgrid(lat, lon, indexing="ij")
    weights = np.repeat(w, n_lon) * (2 * np.pi / n_lon)
    y = real_spherical_harmonics(torch.from_numpy(lat_g.ravel()), torch.from_numpy(lon_g.ravel()), big_l).numpy()
    assert y.shape == (len(weights), (big_l + 1) ** 2)
    assert np.isfinite(y).all()
    gram = (y * weights[:, None]).T @ y
    assert np.abs(gram - np.eye(len(gram))).max() < 1e-9


def test_spherical_harmonics_units_and_low_degrees_by_hand():
    """Inputs are degrees: Y_1^0 = sqrt(3 / 4 pi) cos(colatitude) = sqrt(3 / 4 pi) sin(lat); Y_1^1 ~ cos(lat) cos(lon)."""
    from locsens.models.location_encoders import SphericalHarmonicsEncoder, real_spherical_harmonics

    lat, lon = torch.tensor([30.0, -60.0, 89.0]), torch.tensor([45.0, -120.0, 179.0])
    y = real_spherical_harmonics(lat, lon, 1)
    c = math.sqrt(3 / (4 * math.pi))
    phi, lam = np.radians(lat.numpy()), np.radians(lon.numpy())
    assert np.allclose(y[:, 0].numpy(), 1 / math.sqrt(4 * math.pi))
    assert np.allclose(y[:, 2].numpy(), c * np.sin(phi))
    assert np.allclose(np.abs(y[:, 3].numpy()), c * np.cos(phi) * np.abs(np.cos(lam)))  # sign: Condon-Shortley
    assert np.allclose(np.abs(y[:, 1].numpy()), c * np.cos(phi) * np.abs(np.sin(lam)))
    enc = SphericalHarmonicsEncoder(degree=40, siren_width=32, siren_depth=2)
    out = enc(torch.tensor([0.0, 90.0, -90.0]), torch.tensor([180.0, 0.0, -180.0]))
    assert out.shape == (3, 32) and torch.isfinite(out).all()
    assert SphericalHarmonicsEncoder(degree=40).out_dim == 41**2
    # continuous across the antimeridian
    a = enc(torch.tensor([10.0]), torch.tensor([180.0]))
    b = enc(torch.tensor([10.0]), torch.tensor([-180.0]))
    assert torch.allclose(a, b, atol=1e-5)


def _geoclip_installed() -> bool:
    import importlib.util

    return importlib.util.find_spec("geoclip") is not None


@pytest.mark.skipif(not _geoclip_installed(), reason="the optional geoclip wheel is not installed (make setup)")
def test_geoclip_encoder_matches_its_weights_by_hand_and_orders_distances():
    """The pretrained encoder, loaded strictly from the wheel's file: equal to a numpy evaluation of the same
    weights (Equal Earth -> random Fourier features -> 3 MLPs, summed), without importing geoclip; nearby
    places closer than distant ones."""
    import sys

    import torch.nn.functional as F

    from locsens.models.location_encoders import GeoCLIPLocationEncoder, geoclip_weights_path

    enc = GeoCLIPLocationEncoder()
    assert "geoclip" not in sys.modules and all(not p.requires_grad for p in enc.parameters())
    w = {k: v.double().numpy() for k, v in torch.load(geoclip_weights_path(), weights_only=True).items()}
    lat, lon = np.array([40.71, -33.87, 64.1]), np.array([-74.0, 151.2, -21.9])
    a1, a2, a3, a4 = 1.340264, -0.081106, 0.000893, 0.003796
    theta = np.arcsin(np.sqrt(3) / 2 * np.sin(np.radians(lat)))
    x = (
        2
        * np.sqrt(3)
        * np.radians(lon)
        * np.cos(theta)
        / (3 * (9 * a4 * theta**8 + 7 * a3 * theta**6 + 3 * a2 * theta**2 + a1))
    )
    y = a4 * theta**9 + a3 * theta**7 + a2 * theta**3 + a1 * theta
    v = np.stack([x, y], 1) * 66.50336 / 180
    want = 0
    for i in range(3):
        p = f"LocEnc{i}."
        h = 2 * np.pi * v @ w[p + "capsule.0.b"].T
        h = np.concatenate([np.cos(h), np.sin(h)], 1)
        for layer in (1, 3, 5):
            h = np.maximum(h @ w[f"{p}capsule.{layer}.weight"].T + w[f"{p}capsule.{layer}.bias"], 0)
        want = want + h @ w[p + "head.0.weight"].T + w[p + "head.0.bias"]
    with torch.no_grad():
        got = enc(torch.tensor(lat), torch.tensor(lon)).double().numpy()
    assert got.shape == (3, 512)
    assert np.allclose(got, want, rtol=1e-4, atol=1e-4 * np.abs(want).max())
    g = torch.Generator().manual_seed(0)
    lat_t, lon_t = torch.rand(100, generator=g) * 100 - 50, torch.rand(100, generator=g) * 300 - 150
    with torch.no_grad():
        here = F.normalize(enc(lat_t, lon_t), dim=-1)
        near = F.normalize(enc(lat_t + 0.1, lon_t + 0.1), dim=-1)  # ~12 km
        far = F.normalize(enc(-lat_t, lon_t + 120), dim=-1)  # thousands of km
    assert ((here * near).sum(-1) > (here * far).sum(-1)).float().mean() > 0.9
    fine_tuned = GeoCLIPLocationEncoder(frozen=False)
    assert all(p.requires_grad for n, p in fine_tuned.named_parameters() if not n.endswith(".b"))
