"""Benchmark: photos -> feature store, images/s per backbone, against its two parts timed in the same run.

Writes N JPEGs (scikit-image's real photos, rescaled to Flickr's 640-px "medium" size, named by photo
id) to a temp dir, then for each backbone times:

    decode    DataLoader over the files with PIL decoding + preprocessing in worker processes
    forward   the backbone's ``features`` on an already-decoded batch (no I/O)
    extract   locsens.features.extract.extract_features: the whole pipeline (Lightning predict loop,
              decoding workers, shard writes, merge, final store), timed end to end

and prints images/s of each, plus extract's ratio to the slower of decode and forward (the pipeline's
bound when the two overlap perfectly; 1.0 = no overhead). EfficientNet-Lite0 runs with its bundled
weights, ResNet-50 with random weights (same cost; its real file is the user's). On a GPU
(torch.cuda.is_available()) the same is repeated with accelerator="gpu".

    python benchmarks/extract.py [--images 48] [--workers 2] [--batch 16] [--threads N]
"""

from __future__ import annotations

import argparse
import tempfile
import time
from pathlib import Path

import numpy as np
import torch
from PIL import Image
from skimage import data as skimage_data
from torch.utils.data import DataLoader

from locsens.features.backbones import BACKBONES, ResNet50, load_backbone
from locsens.features.extract import ImageFiles, extract_features, list_image_folder


def write_photos(folder: Path, n: int) -> None:
    sources = [skimage_data.chelsea(), skimage_data.coffee(), skimage_data.astronaut(), skimage_data.rocket()]
    for i in range(n):
        image = Image.fromarray(sources[i % len(sources)])
        scale = 640 / max(image.size)
        image = image.resize((round(image.width * scale), round(image.height * scale)), Image.BICUBIC)
        image.save(folder / f"{1000 + i}.jpg", quality=85 + i % 10)


def decode_rate(folder: Path, preprocessing, batch: int, workers: int) -> float:
    ids, paths = list_image_folder(folder)
    loader = DataLoader(ImageFiles(np.arange(len(ids)), paths, preprocessing), batch_size=batch, num_workers=workers)
    start = time.perf_counter()
    n = sum(len(b["row"]) for b in loader)
    return n / (time.perf_counter() - start)


def forward_rate(net: torch.nn.Module, batch: int, device: str, seconds: float = 3.0) -> float:
    net = net.to(device).eval()
    x = torch.randn(batch, 3, 224, 224, device=device)
    with torch.inference_mode():
        net.features(x)  # warm-up (oneDNN / cuDNN algorithm choice)
        if device == "cuda":
            torch.cuda.synchronize()
        n, start = 0, time.perf_counter()
        while time.perf_counter() - start < seconds or n == 0:
            net.features(x)
            n += batch
        if device == "cuda":
            torch.cuda.synchronize()
    return n / (time.perf_counter() - start)


def extract_rate(folder: Path, out: Path, backbone: str, weights, batch: int, workers: int, accelerator: str) -> float:
    start = time.perf_counter()
    summary = extract_features(
        folder,
        out,
        backbone=backbone,
        weights=weights,
        batch_size=batch,
        num_workers=workers,
        accelerator=accelerator,
        progress=False,
        overwrite=True,
    )
    return summary["n_photos"] / (time.perf_counter() - start)


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--images", type=int, default=48)
    ap.add_argument("--workers", type=int, default=2)
    ap.add_argument("--batch", type=int, default=16)
    ap.add_argument("--threads", type=int, default=None, help="torch intra-op threads (default: torch's)")
    args = ap.parse_args()
    if args.threads:
        torch.set_num_threads(args.threads)
    devices = ["cpu"] + (["cuda"] if torch.cuda.is_available() else [])
    print(
        f"{args.images} JPEGs (640 px), batch {args.batch}, {args.workers} decoding workers, "
        f"{torch.get_num_threads()} torch threads; devices: {devices}"
    )
    with tempfile.TemporaryDirectory() as tmp:
        tmp = Path(tmp)
        photos = tmp / "photos"
        photos.mkdir()
        write_photos(photos, args.images)
        resnet_weights = tmp / "resnet50-random.pth"
        torch.save(ResNet50().state_dict(), resnet_weights)
        weights = {"efficientnet_lite0": None, "resnet50": resnet_weights}
        print(f"{'backbone':<20}{'device':<8}{'decode/s':>10}{'forward/s':>11}{'extract/s':>11}{'extract/bound':>15}")
        for name, spec in BACKBONES.items():
            decode = decode_rate(photos, spec.preprocessing, args.batch, args.workers)
            for device in devices:
                net = load_backbone(name, weights[name])[0]
                forward = forward_rate(net, args.batch, device)
                extract = extract_rate(
                    photos,
                    tmp / f"{name}.h5",
                    name,
                    weights[name],
                    args.batch,
                    args.workers,
                    "gpu" if device == "cuda" else "cpu",
                )
                print(
                    f"{name:<20}{device:<8}{decode:>10.1f}{forward:>11.1f}{extract:>11.1f}"
                    f"{extract / min(decode, forward):>15.2f}"
                )


if __name__ == "__main__":
    main()
