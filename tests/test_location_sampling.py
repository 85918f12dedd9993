"""LocSens' use of geodesic location sampling: latitudes stay in range, the spread matches sigma."""

from __future__ import annotations

import pytest
import torch
from conftest import build_locsens

from locsens.geo import geodesic_km_torch, sigma_to_km
from locsens.models.locsens import LocSens


def model_with_sigma(sigma: float) -> LocSens:
    m = build_locsens(embed_dim=16, width=32, hidden=(32,))
    m.sigma = sigma  # what the SigmaSchedule callback sets each epoch
    m.log = lambda *a, **k: None
    return m


@pytest.mark.parametrize("sigma", [1.0, 0.1])
def test_latitudes_stay_in_range_even_at_the_poles(sigma):
    model = model_with_sigma(sigma)
    lat = torch.tensor([89.9, -89.9, 0.0, 60.0]).repeat(5000)
    lon = torch.tensor([179.9, -179.9, 0.0, 10.0]).repeat(5000)
    s_lat, s_lon = model.sample_locations(lat, lon)
    assert s_lat.min() >= -90 and s_lat.max() <= 90
    assert s_lon.min() >= -180 and s_lon.max() < 180
    if (
        sigma == 0.1
    ):  # 2,000 km: draws from 89.9N stay in the north (a latitude wrap modulo 1 sends half to the south pole)
        assert (s_lat[0::4] > 0).float().mean() > 0.999 and (s_lat[1::4] < 0).float().mean() > 0.999


@pytest.mark.parametrize("sigma", [0.01, 0.002])
def test_empirical_spread_matches_sigma(sigma):
    model = model_with_sigma(sigma)
    n = 20000
    lat, lon = torch.full((n,), 41.39), torch.full((n,), 2.17)
    s_lat, s_lon = model.sample_locations(lat, lon)
    d = geodesic_km_torch(lat, lon, s_lat, s_lon)
    sigma_km = sigma_to_km(sigma)  # 0.01 -> ~200 km
    # an isotropic 2-d Gaussian of scale sigma_km: E[d^2] = 2 sigma_km^2, median d = sigma_km sqrt(2 ln 2)
    assert (d.pow(2).mean() / 2).sqrt().item() == pytest.approx(sigma_km, rel=0.03)
    assert d.median().item() == pytest.approx(sigma_km * (2 * torch.log(torch.tensor(2.0))).sqrt().item(), rel=0.03)
    north_km = (s_lat - lat).double() * 111.195
    assert north_km.std().item() == pytest.approx(sigma_km, rel=0.03)


def test_sigma_zero_is_raw_and_group_members_draw_independently():
    lat, lon = torch.full((4, 4), 10.0), torch.full((4, 4), 20.0)
    s_lat, s_lon = model_with_sigma(0.0).sample_locations(lat, lon)
    assert torch.equal(s_lat, lat) and torch.equal(s_lon, lon)
    s_lat, _ = model_with_sigma(0.01).sample_locations(lat, lon)
    assert len(torch.unique(s_lat)) == 16  # positive and each negative get their own draw


def test_training_uses_sampling_but_eval_forward_does_not():
    b, m = 16, 4
    g = torch.Generator().manual_seed(0)
    batch = {
        "image": torch.randn(b, m, 16, generator=g),
        "tag": torch.randn(b, m, 16, generator=g),
        "lat": torch.rand(b, generator=g) * 100 - 50,
        "lon": torch.rand(b, generator=g) * 300 - 150,
        "tag_index": torch.zeros(b, m, dtype=torch.long),
    }
    raw, sampled = model_with_sigma(0.0), model_with_sigma(0.5)
    torch.manual_seed(1)
    loss_raw = raw.training_step(batch, 0)
    torch.manual_seed(1)
    loss_sampled = sampled.training_step(batch, 0)
    assert loss_raw.item() != loss_sampled.item()
    torch.manual_seed(1)
    assert sampled.training_step(batch, 0).item() == loss_sampled.item()  # seeded: reproducible
    args = (batch["image"][:, 0], batch["tag"][:, 0], batch["lat"], batch["lon"])  # per-group [B] locations
    with torch.no_grad():
        assert torch.equal(raw.eval()(*args), sampled.eval()(*args))  # same weights, sigma ignored at eval
