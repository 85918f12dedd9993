"""LocSens training-step throughput (triplets/s) vs the bare matmuls of the same step, same run.

A step = location sampling + the three branches + the scorer over B positives x (1 + K) triplets,
margin ranking loss, backward, optimiser step. The baseline does only the step's GEMMs (scorer layers:
forward, grad-of-input, grad-of-weight) on tensors of the same shapes. Ratio step/bare = 1.0 means the
step runs at the speed of its matmuls. The paper's LocSens at demo size (900 -> 512 -> 256 -> 1), the
recipe of experiment=locsens (1800 -> 256 -> 128 -> 1 with products, grid encoder and similarity skip)
and the paper's size (900 -> 2048 x3 -> 1024 -> 512 -> 1).

Run: .venv/bin/python benchmarks/locsens_train_step.py [--batch 256] [--negatives 6] [--repeat 3]
"""

from __future__ import annotations

import argparse

import torch
from train_step import layer_gemms, timed  # noqa: E402  (benchmarks/ is the script's directory)

from locsens.config import build_model


def main() -> None:
    p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    p.add_argument("--batch", type=int, default=256)
    p.add_argument("--negatives", type=int, default=6)
    p.add_argument("--repeat", type=int, default=3)
    p.add_argument("--device", default="cuda" if torch.cuda.is_available() else "cpu")
    a = p.parse_args()
    b, k, dev, e = a.batch, a.negatives, a.device, 300
    m = 1 + k
    gen = torch.Generator().manual_seed(0)
    batch = {
        "image": torch.randn(b, m, e, generator=gen),
        "tag": torch.randn(b, m, e, generator=gen),
        "lat": torch.rand(b, generator=gen, dtype=torch.float64) * 180 - 90,
        "lon": torch.rand(b, generator=gen, dtype=torch.float64) * 360 - 180,
    }
    batch = {key: t.to(dev) for key, t in batch.items()}
    print(f"device {dev} ({torch.get_num_threads()} CPU threads), {b} positives x {m} triplets per step")
    for name, experiment in (("small", "locsens_paper_small"), ("recipe", "locsens"), ("paper", "locsens_paper")):
        torch.manual_seed(0)
        model = build_model([f"experiment={experiment}", f"model.num_negatives={k}"], embed_dim=e).to(dev)
        model.sigma = 0.01  # location sampling on, as in a sigma schedule
        model.train()
        optimizer = model.configure_optimizers()

        def step(model=model, optimizer=optimizer):
            loss = model.training_step(batch, 0)
            optimizer.zero_grad()
            loss.backward()
            optimizer.step()

        model.log = lambda *args, **kwargs: None  # no trainer attached: logging is not part of the step
        t_step = timed(step, dev, a.repeat)
        widths = [layer.in_features for layer in model.scorer.layers if isinstance(layer, torch.nn.Linear)] + [1]
        bare, flops = layer_gemms(b * m, list(zip(widths[:-1], widths[1:])), dev)
        t_bare = timed(bare, dev, a.repeat)
        n = b * m
        print(
            f"{name:8s}: step {n / t_step:9.0f} triplets/s ({flops / t_step / 1e9:6.1f} GFLOP/s of scorer GEMMs) | "
            f"bare {n / t_bare:9.0f} triplets/s | ratio step/bare {t_bare / t_step:5.2f}"
        )


if __name__ == "__main__":
    main()
