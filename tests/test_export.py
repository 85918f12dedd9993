"""Export round trip: the store's embeddings and scores equal the module's; mismatches and gaps refused."""

from pathlib import Path

import h5py
import numpy as np
import pytest
import torch
from conftest import compose, reseal
from hydra.utils import instantiate

from locsens.artifacts import LineageError
from locsens.data.store import DatasetStore, EmbeddingStore, FeatureStore, StoreError, write_feature_store
from locsens.export import export_embeddings, load_tagger
from locsens.files import file_sha256
from locsens.train import fill_data_dims, train

pytestmark = pytest.mark.usefixtures("one_torch_thread")  # conftest.py


@pytest.fixture(scope="module")
def checkpoints(tiny_stores, tmp_path_factory) -> dict[str, Path]:
    """One briefly trained checkpoint per model (saved by a real Trainer, as train() does)."""
    out = tmp_path_factory.mktemp("export_ckpts")
    paths = {}
    for name in ("mlc", "mcc", "her"):
        cfg = compose(
            "train",
            overrides=[
                f"model={name}",
                f"data.dataset_path={tiny_stores['dataset']}",
                f"data.features_path={tiny_stores['features']}",
                f"paths.output_dir={out}",
                f"model.cache_dir={out}" if name == "her" else "seed=0",
                "trainer=debug",
                "data.batch_size=64",
            ],
        )
        dm = instantiate(cfg.data)
        dm.setup("fit")
        model = instantiate(fill_data_dims(cfg.model, dm.model_kwargs(), dm.describe()))
        trainer = instantiate(cfg.trainer, logger=False, callbacks=[], limit_val_batches=0)
        trainer.fit(model, datamodule=dm)
        paths[name] = out / f"{name}.ckpt"
        trainer.save_checkpoint(paths[name])
    return paths


@pytest.mark.parametrize("name", ["mlc", "mcc", "her"])
def test_export_round_trip(tiny_stores, checkpoints, tmp_path, name):
    out = export_embeddings(checkpoints[name], tiny_stores["dataset"], tiny_stores["features"], tmp_path / f"{name}.h5")
    ds, fs = DatasetStore(tiny_stores["dataset"]), FeatureStore(tiny_stores["features"])
    emb = EmbeddingStore(out, dataset=ds)  # validates photo order and vocabulary against the dataset store
    model = load_tagger(checkpoints[name])
    assert emb.attrs["model"] == name and emb.attrs["checkpoint_sha256"] == file_sha256(checkpoints[name])
    assert emb.similarity == model.similarity == {"mlc": "dot", "mcc": "cosine", "her": "dot"}[name]
    rows = np.array([0, 17, len(ds) - 1])  # photos of any split, in dataset order
    features = torch.from_numpy(fs.read(fs.rows_for(ds.photo_id[rows])))
    with torch.no_grad():
        np.testing.assert_allclose(emb.image[rows], model.image_embedding(features).numpy(), rtol=1e-5, atol=1e-6)
        image, tag = torch.from_numpy(emb.image[rows]), torch.from_numpy(emb.tag)
        if emb.similarity == "cosine":
            image, tag = torch.nn.functional.normalize(image, dim=1), torch.nn.functional.normalize(tag, dim=1)
        np.testing.assert_allclose((image @ tag.T).numpy(), model.tag_scores(features).numpy(), rtol=1e-4, atol=1e-5)
        if name == "mlc":  # dot of [x, 1] and [W, b] is exactly the classifier's logits
            np.testing.assert_allclose((image @ tag.T).numpy(), model(features).numpy(), rtol=1e-4, atol=1e-5)
        if name == "mcc":
            np.testing.assert_allclose(emb.image[rows], model.embed(features).numpy(), rtol=1e-5, atol=1e-6)
            np.testing.assert_array_equal(emb.tag, model.classifier.weight.numpy())
    with pytest.raises(FileExistsError):
        export_embeddings(checkpoints[name], tiny_stores["dataset"], tiny_stores["features"], out)


def test_export_refuses_stores_the_checkpoint_was_not_trained_on(tiny_stores, checkpoints, tmp_path):
    """Another feature store or a changed dataset store (two tags swapped) is refused with both ids."""
    fs = FeatureStore(tiny_stores["features"])
    narrow = write_feature_store(
        tmp_path / "narrow.h5", photo_id=fs.photo_id, features=fs.read_all()[:, :16], extractor="test"
    )
    with pytest.raises(
        LineageError,
        match=rf"made from feature store {fs.content_id[:12]} .* given is {FeatureStore(narrow).content_id[:12]}",
    ):
        export_embeddings(checkpoints["mcc"], tiny_stores["dataset"], narrow, tmp_path / "x.h5")
    other_vocab = tmp_path / "dataset.h5"
    other_vocab.write_bytes(Path(tiny_stores["dataset"]).read_bytes())
    with h5py.File(other_vocab, "a") as f:  # same size, two tags swapped, content id recomputed as a writer would
        vocab = [v.decode() for v in f["vocab"][:]]
        vocab[0], vocab[1] = vocab[1], vocab[0]
        f["vocab"][:] = vocab
    reseal(other_vocab)
    with pytest.raises(LineageError, match=r"made from dataset store .* given is [0-9a-f]{12}"):
        export_embeddings(checkpoints["mcc"], other_vocab, tiny_stores["features"], tmp_path / "x.h5")
    assert not (tmp_path / "x.h5").exists()


def test_export_refuses_photos_without_features(tiny_stores, tmp_path):
    """A model trained where 3 photos lack features cannot export an embedding for every photo: refused."""
    fs = FeatureStore(tiny_stores["features"])
    partial = write_feature_store(
        tmp_path / "partial.h5", photo_id=fs.photo_id[3:], features=fs.read_all()[3:], extractor="test"
    )
    cfg = compose(
        "train",
        overrides=[
            "experiment=mcc",
            f"data.dataset_path={tiny_stores['dataset']}",
            f"data.features_path={partial}",
            f"paths.output_dir={tmp_path / 'run'}",
            "trainer=debug",
            "logger=none",
            "data.batch_size=64",
        ],
    )
    best = train(cfg)["best_checkpoint"]
    with pytest.raises(StoreError, match=r"3 of 1200 photos .* have no valid features"):
        export_embeddings(best, tiny_stores["dataset"], partial, tmp_path / "x.h5")
    assert not (tmp_path / "x.h5").exists()
