"""Class 5, nothing usable left is an error: empty inputs, empty vocabularies and splits, no batches, no
checkpoint, non-finite features and duplicate ids are named, never an empty store with exit 0."""

from __future__ import annotations

import h5py
import numpy as np
import pytest
from conftest import build_synthetic_stores, compose, reseal, run_cli, train_overrides, yfcc_line

from locsens.config import ConfigError
from locsens.data import store
from locsens.data.ingest import IngestError, ingest
from locsens.eval.pipeline import EvaluationError, evaluate
from locsens.train import TrainingError, train

pytestmark = pytest.mark.usefixtures("one_torch_thread")


def write_tsv(path, lines) -> str:
    path.write_text("".join(lines))
    return str(path)


def test_an_empty_file_is_an_error(tmp_path):
    empty = write_tsv(tmp_path / "empty.tsv", [])
    with pytest.raises(IngestError, match="empty.tsv is empty"):
        ingest(empty, tmp_path / "d.h5", print_report=False)
    proc = run_cli(
        "prepare.py",
        f"paths.data_dir={tmp_path}",
        "world=real",
        "source=yfcc",
        f"source.tsv=[{empty}]",
        f"source.features={tmp_path / 'none.h5'}",
    )
    assert proc.returncode == 1 and "empty.tsv is empty (0 bytes)" in proc.stderr
    assert not (tmp_path / "real" / "dataset.h5").exists()


def test_no_kept_photo_is_an_error_with_the_reason_table(tmp_path):
    tsv = write_tsv(tmp_path / "untagged.tsv", [yfcc_line(i, 1000 + i, "1@N00", [], 48.86, 2.29) for i in range(20)])
    with pytest.raises(IngestError, match=r"no photo of .* was kept[\s\S]*untagged\s+20"):
        ingest(tsv, tmp_path / "d.h5", print_report=False)
    assert not (tmp_path / "d.h5").exists()


def test_all_digit_tags_leave_an_empty_vocabulary(tmp_path):
    tsv = write_tsv(
        tmp_path / "digits.tsv",
        [yfcc_line(i, 1000 + i, "1@N00", ["2012", "100", "42"], 48.86, 2.29) for i in range(30)],
    )
    with pytest.raises(IngestError, match="the vocabulary is empty"):
        ingest(tsv, tmp_path / "d.h5", drop_top=0, print_report=False)


@pytest.mark.parametrize(
    "override,named",
    [
        ("ingest.drop_top=-1", r"ingest.drop_top=-1: expected an integer >= 0"),
        ("ingest.vocab_size=0", r"ingest.vocab_size=0: expected a positive integer"),
        ("ingest.split.test=0.95", r"fractions add up to 1, leaving no training photos"),
        ("ingest.split.test=1.5", r"ingest.split=.*'test': 1.5.*fraction in \(0, 1\)"),
        ("ingest.split.val=0", r"no split may be empty"),
        ("ingest.min_tags=0", r"ingest.min_tags=0: expected an integer >= 1"),
    ],
)
def test_impossible_ingest_settings_are_named_before_any_work(tmp_path, override, named):
    cfg = compose("prepare", [f"paths.data_dir={tmp_path}", "world=w", "source.size=tiny", override])
    from locsens.prepare import prepare

    with pytest.raises(ConfigError, match=named):
        prepare(cfg)
    assert not (tmp_path / "w").exists() or not list((tmp_path / "w").iterdir())


def test_a_split_that_rounds_to_nothing_is_an_error(tmp_path):
    tsv = write_tsv(
        tmp_path / "few.tsv", [yfcc_line(i, 1000 + i, "1@N00", ["paris", "eiffel"], 48.86, 2.29) for i in range(6)]
    )
    with pytest.raises(IngestError, match=r"the val split is empty"):
        ingest(tsv, tmp_path / "d.h5", drop_top=0, split={"test": 2, "val": 0.01}, print_report=False)


def test_non_finite_features_are_refused_naming_the_photos(tiny_stores, tmp_path):
    fs = store.FeatureStore(tiny_stores["features"])
    feats = fs.read_all()
    feats[7, 3] = np.nan
    with pytest.raises(
        store.StoreError, match=rf"NaN or inf in 1 rows, first rows \[7\] \(photo ids \[{fs.photo_id[7]}\]\)"
    ):
        store.write_feature_store(tmp_path / "nan.h5", photo_id=fs.photo_id, features=feats, extractor="test")
    assert not (tmp_path / "nan.h5").exists()
    # a store damaged after it was written: refused when read, naming the photo (not "scores contain NaN" epochs later)
    damaged = tmp_path / "damaged.h5"
    damaged.write_bytes(open(tiny_stores["features"], "rb").read())
    with h5py.File(damaged, "a") as f:
        f["features"][11, 0] = np.inf
    with pytest.raises(
        store.StoreError, match=r"damaged.h5: its data gives content id .* modified after it was written"
    ):
        store.FeatureStore(damaged)
    reseal(damaged)  # as a store too large to re-hash: its reads still refuse the row
    with pytest.raises(
        store.StoreError, match=rf"damaged.h5: 'features' holds NaN or inf .*photo ids \[{fs.photo_id[11]}\]"
    ):
        store.FeatureStore(damaged).read_all()
    cfg = compose(
        "train",
        train_overrides({**tiny_stores, "features": damaged}, tmp_path / "run", "experiment=mcc", "trainer=debug"),
    )
    with pytest.raises(store.StoreError, match="damaged.h5"):
        train(cfg)
    image = np.zeros((len(fs.photo_id), 4), np.float32)
    image[2, 1] = np.nan
    with pytest.raises(store.StoreError, match="image embeddings holds NaN"):
        store.write_embedding_store(
            tmp_path / "e.h5",
            photo_id=fs.photo_id,
            image=image,
            tag=np.ones((3, 4)),
            vocab=["a", "b", "c"],
            model="x",
            checkpoint_sha256="x",
            similarity="cosine",
        )


def test_duplicate_photo_ids_are_refused(tiny_stores, tmp_path):
    fs = store.FeatureStore(tiny_stores["features"])
    ids = fs.photo_id.copy()
    ids[5] = ids[9]
    with pytest.raises(store.StoreError, match=rf"photo ids must be unique; duplicated: \[{ids[9]}\]"):
        store.write_feature_store(tmp_path / "dup.h5", photo_id=ids, features=fs.read_all(), extractor="test")
    damaged = tmp_path / "dataset.h5"
    damaged.write_bytes(open(tiny_stores["dataset"], "rb").read())
    with h5py.File(damaged, "a") as f:
        f["photo_id"][3] = f["photo_id"][4]
    with pytest.raises(store.StoreError, match=r"dataset.h5: photo ids must be unique; duplicated"):
        store.DatasetStore(damaged)


def test_no_training_batches_and_no_checkpoint_are_errors(tiny_stores, tmp_path):
    cfg = compose(
        "train",
        train_overrides(
            tiny_stores, tmp_path / "a", "experiment=mcc", "trainer=debug", "logger=none", "data.batch_size=5000"
        ),
    )
    with pytest.raises(ValueError, match=r"no training batch of data.batch_size=5000 .*train \d+, val \d+, test \d+"):
        train(cfg)
    cfg = compose(
        "train",
        train_overrides(
            tiny_stores, tmp_path / "b", "experiment=mcc", "trainer=debug", "logger=none", "trainer.limit_val_batches=0"
        ),
    )
    with pytest.raises(TrainingError, match=r"no best checkpoint: the monitored metric val/A@10 was never logged"):
        train(cfg)
    assert not (tmp_path / "b" / "metrics.json").exists()


def test_evaluating_an_empty_test_split_is_an_error(tmp_path):
    stores = build_synthetic_stores(tmp_path, n_photos=200)
    with h5py.File(stores["dataset"], "a") as f:  # a store ingested with test=0: all test photos moved to train
        split = f["split"][:]
        f["split"][:] = np.where(split == 2, 0, split)
    reseal(stores["dataset"])
    cfg = compose(
        "evaluate",
        [
            f"dataset_path={stores['dataset']}",
            f"output_dir={tmp_path / 'eval'}",
            "methods.mlc=null",
            "methods.mcc=null",
            "methods.her=null",
            "methods.mcc_x_town_prior=null",
        ],
    )
    with pytest.raises(EvaluationError, match="the test split is empty"):
        evaluate(cfg)
