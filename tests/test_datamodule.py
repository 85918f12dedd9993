"""The agnostic DataModule: join by photo id, splits, batch contents, determinism, worker independence."""

import logging

import numpy as np
import pytest
import torch

from locsens.data.datamodule import AgnosticDataModule
from locsens.data.store import DatasetStore, FeatureStore, write_feature_store


def collect(loader) -> list[dict]:
    return [{k: v.clone() for k, v in batch.items()} for batch in loader]


def test_batches_carry_the_stores_contents(tiny_stores):
    dm = AgnosticDataModule(tiny_stores["dataset"], tiny_stores["features"], batch_size=37, seed=3)
    dm.setup("fit")
    ds, fs = DatasetStore(tiny_stores["dataset"]), FeatureStore(tiny_stores["features"])
    assert dm.model_kwargs() == {"input_dim": fs.dim, "num_tags": ds.num_tags}
    assert sum(len(dm.splits[s]) for s in ("train", "val", "test")) == len(ds)
    batch = next(iter(dm.train_dataloader()))
    rows = batch["row"].numpy()
    assert batch["features"].shape == (37, fs.dim) and batch["features"].dtype == torch.float32
    assert (ds.split[rows] == 0).all()
    np.testing.assert_array_equal(batch["features"].numpy(), fs.read(fs.rows_for(ds.photo_id[rows])))
    for i, r in enumerate(rows):
        tags = batch["tags"][i]
        assert tags[tags >= 0].tolist() == ds.tags_of(r).tolist()
    np.testing.assert_allclose(batch["lat"].numpy(), ds.lat[rows], atol=1e-4)
    assert ((batch["draw"] >= 0) & (batch["draw"] < 1)).all()


def test_val_covers_the_split_once_in_order(tiny_stores):
    dm = AgnosticDataModule(tiny_stores["dataset"], tiny_stores["features"], batch_size=64, eval_batch_size=50)
    dm.setup("fit")
    rows = torch.cat([b["row"] for b in dm.val_dataloader()]).numpy()
    np.testing.assert_array_equal(rows, dm.dataset.split_rows("val"))


def test_photos_without_features_are_dropped_and_counted(tiny_stores, tmp_path, caplog):
    fs = FeatureStore(tiny_stores["features"])
    keep = np.arange(len(fs.photo_id)) >= 25  # 25 photos lose their features
    valid = np.ones(len(fs.photo_id), bool)
    valid[25:30] = False  # 5 more have a row but failed extraction
    partial = write_feature_store(
        tmp_path / "partial.h5",
        photo_id=fs.photo_id[keep],
        features=fs.read_all()[keep],
        valid=valid[keep],
        extractor="test",
    )
    dm = AgnosticDataModule(tiny_stores["dataset"], partial)
    with caplog.at_level(logging.WARNING):
        dm.setup("fit")
    assert dm.n_without_features == 30
    assert "30 of" in caplog.text
    assert sum(len(d) for d in dm.splits.values()) == len(fs.photo_id) - 30


def test_preloaded_and_hdf5_batches_are_identical(tiny_stores):
    batches = []
    for budget in (10**9, 0):
        dm = AgnosticDataModule(
            tiny_stores["dataset"], tiny_stores["features"], batch_size=64, preload_max_bytes=budget
        )
        dm.setup("fit")
        assert (dm.splits["train"].features_in_memory is not None) == (budget > 0)
        batches.append(collect(dm.train_dataloader()))
    for a, b in zip(*batches, strict=True):
        for key in a:
            assert torch.equal(a[key], b[key]), key


def test_batches_do_not_depend_on_the_number_of_workers(tiny_stores):
    runs = []
    for workers in (0, 2):
        dm = AgnosticDataModule(
            tiny_stores["dataset"],
            tiny_stores["features"],
            batch_size=100,
            num_workers=workers,
            preload_max_bytes=0,
            persistent_workers=False,
            seed=11,
        )
        dm.setup("fit")
        loader = dm.train_dataloader()
        loader.sampler.set_epoch(2)
        runs.append(collect(loader))
    assert len(runs[0]) == len(runs[1])
    for a, b in zip(*runs):
        for key in a:
            assert torch.equal(a[key], b[key]), key


def test_missing_store_names_the_file(tmp_path, tiny_stores):
    dm = AgnosticDataModule(tmp_path / "nope.h5", tiny_stores["features"])
    with pytest.raises(Exception, match="nope.h5"):
        dm.setup("fit")
