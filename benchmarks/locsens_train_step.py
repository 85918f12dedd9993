"""LocSens training-step throughput (triplets/s): each distinct input once vs triplet by triplet, same run.

A step = the three branches + the scorer over B positives x (1 + K) triplets, margin ranking loss,
backward, optimiser step. Batches are drawn as ``locsens.data.triplets`` draws them (tagging negatives:
half keep the positive's image with a new tag, half keep its tag with a new image; with the recipe's
location swap a share keeps both at another training photo's place), from 100,000 images and 5,000 tags.

* "per triplet": every triplet's branches and first layer computed on its own (the step before
  ``Scorer.forward_indexed``; what the batch without its ``image_index`` / ``tag_index`` runs).
* "distinct once": each distinct image, tag and place encoded once per batch and its first-layer term
  gathered (the products and everything after the first layer stay per triplet).
* "bare GEMMs": only the scorer's matmuls of the per-triplet step (forward, grad-of-input,
  grad-of-weight) on tensors of the same shapes, the ceiling of that step.

The demo's paper-size LocSens (900 -> 512 -> 256 -> 1), the recipe (experiment=locsens: products, grid
encoder, skip; 1800 -> 256 -> 128 -> 1) and the paper's size (900 -> 2048 x3 -> 1024 -> 512 -> 1), each at
its experiment's own location sampling (sigma 0: raw locations) and negatives. The losses of the two
paths are printed side by side (they agree to float rounding).

Run: .venv/bin/python benchmarks/locsens_train_step.py [--batch 256] [--repeat 7]
"""

from __future__ import annotations

import argparse

import numpy as np
import torch
from train_step import layer_gemms, timed  # noqa: E402  (benchmarks/ is the script's directory)

from locsens.config import build_model, compose

N_IMAGES, N_TAGS, E = 100_000, 5_000, 300


def triplet_batch(b: int, k: int, data_cfg, seed: int = 0) -> dict:
    """Image / tag ids and places of B groups of 1 + K triplets, shared as the triplet dataset shares them."""
    rng = np.random.default_rng(seed)
    img = np.repeat(rng.integers(0, N_IMAGES, (b, 1)), 1 + k, axis=1)
    tag = np.repeat(rng.integers(0, N_TAGS, (b, 1)), 1 + k, axis=1)
    swap_tag = (
        rng.random((b, k)) < data_cfg.tag_swap_prob if data_cfg.negative_mode == "tagging" else np.zeros((b, k), bool)
    )
    swap_loc = rng.random((b, k)) < data_cfg.location_swap_prob
    new_img, new_tag = rng.integers(0, N_IMAGES, (b, k)), rng.integers(0, N_TAGS, (b, k))
    img[:, 1:] = np.where(swap_tag | swap_loc, img[:, 1:], new_img)
    tag[:, 1:] = np.where(swap_tag & ~swap_loc, new_tag, tag[:, 1:])
    lat = np.repeat(rng.uniform(-90, 90, (b, 1)), 1 + k, axis=1).astype(np.float32)
    lon = np.repeat(rng.uniform(-180, 180, (b, 1)), 1 + k, axis=1).astype(np.float32)
    lat[:, 1:] = np.where(swap_loc, rng.uniform(-90, 90, (b, k)), lat[:, 1:])
    lon[:, 1:] = np.where(swap_loc, rng.uniform(-180, 180, (b, k)), lon[:, 1:])
    g = torch.Generator().manual_seed(seed)
    images, tags = torch.randn(N_IMAGES, E, generator=g), torch.randn(N_TAGS, E, generator=g)
    img_t, tag_t = torch.from_numpy(img), torch.from_numpy(tag)
    return {
        "image": images[img_t],
        "tag": tags[tag_t],
        "image_index": img_t,
        "tag_index": tag_t,
        "lat": torch.from_numpy(lat),
        "lon": torch.from_numpy(lon),
    }


def interleaved_rates(steps: dict, n: int, device: str, repeat: int) -> dict:
    """Triplets/s of each step, timed in alternation (one step of each per round, median over rounds):
    on a shared machine the load drifts within seconds, and back-to-back blocks would give it to one side."""
    for step in steps.values():
        step()  # warm-up
    times: dict = {label: [] for label in steps}
    for _ in range(repeat):
        for label, step in steps.items():
            times[label].append(timed(step, device, 1))
    return {label: n / float(np.median(t)) for label, t in times.items()}


def main() -> None:
    p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    p.add_argument("--batch", type=int, default=None, help="positives per step (default: the experiment's)")
    p.add_argument("--repeat", type=int, default=7)
    p.add_argument("--device", default="cuda" if torch.cuda.is_available() else "cpu")
    a = p.parse_args()
    dev = a.device
    print(f"device {dev} ({torch.get_num_threads()} CPU threads); {N_IMAGES:,} images, {N_TAGS:,} tags")
    print(
        f"\n{'model':8s} {'B x M':>10s} {'distinct img/tag/place':>23s} {'per triplet':>12s} {'distinct once':>14s} "
        f"{'speed-up':>9s} {'bare GEMMs':>11s} {'loss per triplet / distinct once':>34s}"
    )
    for name, experiment in (("small", "locsens_paper_small"), ("recipe", "locsens"), ("paper", "locsens_paper")):
        cfg = compose("train", [f"experiment={experiment}"])
        b = a.batch or int(cfg.data.batch_size)
        k = int(cfg.data.num_negatives)
        batch = {key: t.to(dev) for key, t in triplet_batch(b, k, cfg.data).items()}
        plain = {key: t for key, t in batch.items() if not key.endswith("_index")}
        n = b * (1 + k)
        steps, losses = {}, {}
        for label, data in (("per triplet", plain), ("distinct once", batch)):
            torch.manual_seed(0)
            model = build_model([f"experiment={experiment}"], embed_dim=E).to(dev).train()
            model.log = lambda *args, **kwargs: None  # no trainer attached: logging is not part of the step
            optimizer = model.configure_optimizers()

            def step(model=model, optimizer=optimizer, data=data):
                loss = model.training_step(data, 0)
                optimizer.zero_grad()
                loss.backward()
                optimizer.step()

            with torch.no_grad():
                losses[label] = float(model.training_step(data, 0))
            steps[label] = step
        rates = interleaved_rates(steps, n, dev, a.repeat)
        widths = [layer.in_features for layer in model.scorer.layers if isinstance(layer, torch.nn.Linear)] + [1]
        bare, _ = layer_gemms(n, list(zip(widths[:-1], widths[1:])), dev)
        bare_rate = n / timed(bare, dev, a.repeat)
        places = len(torch.unique(torch.stack([batch["lat"].reshape(-1), batch["lon"].reshape(-1)], 1), dim=0))
        distinct = (
            f"{len(torch.unique(batch['image_index'])) / n:.2f}/{len(torch.unique(batch['tag_index'])) / n:.2f}/"
            f"{places / n:.2f}"
        )
        print(
            f"{name:8s} {f'{b}x{1 + k}':>10s} {distinct:>23s} {rates['per triplet']:12.0f} {rates['distinct once']:14.0f} "
            f"{rates['distinct once'] / rates['per triplet']:8.2f}x {bare_rate:11.0f} "
            f"{losses['per triplet']:>16.7f} / {losses['distinct once']:.7f}"
        )
    print(
        "\n(triplets/s: the two paths timed in alternation, median of --repeat steps each after a warm-up; bare GEMMs: mean of --repeat; distinct = share of the B x M triplets)"
    )


if __name__ == "__main__":
    main()
