"""Training-step throughput of MLC, MCC and HER at the paper's scale vs bare matmuls of the same FLOPs.

For each model at V = 100,000 tags and D = 2048 features (random data of the right shapes), time a
full training step (forward, loss, backward, SGD-momentum step) and, in the same run, the bare
GEMMs that step must do (forward, grad-of-input where needed, grad-of-weight: the same shapes and
FLOPs, no autograd, loss or optimiser). Prints samples/s of both, the achieved GFLOP/s and the
ratio step / bare (1.0 = the step runs at the speed of its matmuls).

Run: .venv/bin/python benchmarks/train_step.py [--batch 128] [--tags 100000] [--dim 2048] [--device cpu]
"""

from __future__ import annotations

import argparse
import functools
import time

import torch

from locsens.models.her import HER
from locsens.models.mcc import MCC
from locsens.models.mlc import MLC


def timed(fn, device: str, repeat: int) -> float:
    fn()  # warm-up (allocations, kernels)
    if device == "cuda":
        torch.cuda.synchronize()
    t0 = time.perf_counter()
    for _ in range(repeat):
        fn()
    if device == "cuda":
        torch.cuda.synchronize()
    return (time.perf_counter() - t0) / repeat


def layer_gemms(b: int, shapes: list[tuple[int, int]], device: str):
    """The GEMMs of training a chain of Linear(i, o) layers on a batch of b: y = x W^T, dX = dY W
    (all but the first layer), dW = dY^T x. Returns (a callable doing them, FLOPs per call)."""
    mats = [
        (torch.randn(b, i, device=device), torch.randn(o, i, device=device), torch.randn(b, o, device=device))
        for i, o in shapes
    ]
    flops = sum(2 * b * i * o * (3 if k else 2) for k, (i, o) in enumerate(shapes))

    def run():
        for k, (x, w, dy) in enumerate(mats):
            x @ w.T
            if k:
                dy @ w
            dy.T @ x

    return run, flops


def main() -> None:
    p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    p.add_argument("--batch", type=int, default=128)
    p.add_argument("--tags", type=int, default=100_000)
    p.add_argument("--dim", type=int, default=2048)
    p.add_argument("--repeat", type=int, default=3)
    p.add_argument("--device", default="cuda" if torch.cuda.is_available() else "cpu")
    a = p.parse_args()
    b, v, d, dev = a.batch, a.tags, a.dim, a.device
    sgd = functools.partial(torch.optim.SGD, lr=0.01, momentum=0.9, weight_decay=1e-4)
    her = HER(d, v, word_dim=50, optimizer=sgd)
    her.tag_vectors.normal_()
    her.has_vector.fill_(True)
    models = {
        "MLC": (MLC(d, v, optimizer=sgd), [(d, v)]),
        "MCC": (MCC(d, v, optimizer=sgd), [(d, 300), (300, v)]),
        "HER": (her, [(d, 50)]),
    }
    gen = torch.Generator().manual_seed(0)
    n_tags = torch.randint(1, 16, (b,), generator=gen)
    tags = torch.randint(0, v, (b, 15), generator=gen)
    tags[torch.arange(15)[None, :] >= n_tags[:, None]] = -1
    batch = {
        "features": torch.randn(b, d, generator=gen),
        "tags": tags,
        "draw": torch.rand(b, generator=gen, dtype=torch.float64),
    }
    batch = {k: t.to(dev) for k, t in batch.items()}
    print(f"device {dev} ({torch.get_num_threads()} CPU threads), batch {b}, D={d}, V={v}")
    for name, (model, shapes) in models.items():
        model = model.to(dev)
        optimizer = model.configure_optimizers()

        def step(model=model, optimizer=optimizer):
            loss = model.training_loss(batch)
            optimizer.zero_grad()
            loss.backward()
            optimizer.step()

        t_step = timed(step, dev, a.repeat)
        bare, flops = layer_gemms(b, shapes, dev)
        t_bare = timed(bare, dev, a.repeat)
        print(
            f"{name}: step {b / t_step:9.0f} samples/s ({flops / t_step / 1e9:7.1f} GFLOP/s) | bare matmuls "
            f"{b / t_bare:9.0f} samples/s ({flops / t_bare / 1e9:7.1f} GFLOP/s) | ratio step/bare {t_bare / t_step:5.2f}"
        )
        del model, optimizer


if __name__ == "__main__":
    main()
