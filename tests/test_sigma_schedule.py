"""SigmaSchedule: exact endpoints for every kind, monotone decay, and it drives a real Trainer run."""

from __future__ import annotations

import lightning as L
import pytest
import torch

from locsens.callbacks import SCHEDULE_KINDS, SigmaSchedule
from locsens.geo import sigma_to_km


@pytest.mark.parametrize("end", [0.0, 0.01, 0.3])
@pytest.mark.parametrize("kind", SCHEDULE_KINDS)
@pytest.mark.parametrize("total", [2, 7, 50])
def test_endpoints_exact_and_monotone(kind, end, total):
    s = SigmaSchedule(kind=kind, sigma_start=1.0, sigma_end=end, num_steps=4)
    values = [s.sigma_at(u, total) for u in range(total + 3)]
    assert values[0] == 1.0
    if kind == "constant":
        assert set(values) == {1.0}
        return
    assert values[total - 1] == end and values[-1] == end  # last unit and beyond: exactly sigma_end
    assert all(a >= b for a, b in zip(values, values[1:]))  # never increases
    assert all(end <= v <= 1.0 for v in values)


def test_shapes_of_the_paths():
    lin = SigmaSchedule("linear", 1.0, 0.0)
    assert lin.sigma_at(2, 5) == pytest.approx(0.5)
    exp = SigmaSchedule("exponential", 1.0, 0.01)
    assert exp.sigma_at(2, 5) == pytest.approx(0.1)  # geometric midpoint of 1 and 0.01
    exp0 = SigmaSchedule("exponential", 1.0, 0.0, sigma_floor=0.01)
    assert exp0.sigma_at(3, 5) == pytest.approx(0.01**0.75) and exp0.sigma_at(4, 5) == 0.0
    step = SigmaSchedule("step", 1.0, 0.001, num_steps=4)
    assert [round(step.sigma_at(u, 8), 6) for u in range(8)] == [1.0, 1.0, 0.1, 0.1, 0.01, 0.01, 0.001, 0.001]
    lin_step = SigmaSchedule("step", 1.0, 0.0, num_steps=2, step_spacing="linear")
    assert [lin_step.sigma_at(u, 4) for u in range(4)] == [1.0, 1.0, 0.0, 0.0]


def test_invalid_settings_fail_clearly():
    with pytest.raises(ValueError, match="kind"):
        SigmaSchedule(kind="cosine")
    with pytest.raises(ValueError, match=">= 0"):
        SigmaSchedule(sigma_start=-1.0)
    with pytest.raises(ValueError, match="unit"):
        SigmaSchedule(unit="batch")
    with pytest.raises(ValueError, match="num_steps"):
        SigmaSchedule(kind="step", num_steps=1)


class SigmaProbe(L.LightningModule):
    """A minimal module with a ``sigma`` attribute that records the sigma each step trained with."""

    def __init__(self):
        super().__init__()
        self.sigma = -1.0
        self.layer = torch.nn.Linear(1, 1)
        self.seen: list[tuple[int, float]] = []

    def training_step(self, batch, batch_idx):
        self.seen.append((self.current_epoch, self.sigma))
        return self.layer(batch[0]).sum()

    def configure_optimizers(self):
        return torch.optim.SGD(self.parameters(), lr=0.0)


def fit(schedule: SigmaSchedule, epochs: int, batches: int) -> SigmaProbe:
    model = SigmaProbe()
    data = torch.utils.data.DataLoader(torch.utils.data.TensorDataset(torch.zeros(batches, 1)), batch_size=1)
    trainer = L.Trainer(
        max_epochs=epochs,
        callbacks=[schedule],
        logger=False,
        enable_checkpointing=False,
        enable_progress_bar=False,
        enable_model_summary=False,
        accelerator="cpu",
    )
    trainer.fit(model, data)
    model.logged = {k: float(v) for k, v in trainer.callback_metrics.items()}
    return model


def test_drives_a_trainer_per_epoch_and_logs_sigma_km():
    model = fit(SigmaSchedule("linear", 1.0, 0.0, unit="epoch"), epochs=3, batches=2)
    assert model.seen == [(0, 1.0), (0, 1.0), (1, 0.5), (1, 0.5), (2, 0.0), (2, 0.0)]
    assert model.logged["sigma"] == 0.0 and model.logged["sigma_km"] == 0.0


def test_drives_a_trainer_per_step():
    model = fit(SigmaSchedule("exponential", 1.0, 0.01, unit="step"), epochs=2, batches=3)
    sigmas = [s for _, s in model.seen]
    assert sigmas[0] == 1.0 and sigmas[-1] == 0.01 and len(sigmas) == 6
    assert model.logged["sigma_km"] == pytest.approx(sigma_to_km(0.01))
