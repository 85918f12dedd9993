"""The second hostile round: each class of silent wrong result, data loss or raw crash it found, by its
mechanism (a refused command rewrites nothing, runs never follow paths into other runs, resume continues
only the same run, a diverged run is not finished, an evaluation directory is one set, inputs are
checked before the long work and named when bad).

Real training runs, real Hydra commands, real evaluations on the tiny stores."""

from __future__ import annotations

import json
import shutil

import h5py
import numpy as np
import pytest
import torch
from conftest import compose, evaluate_overrides, read_yfcc, run_cli, train_overrides, yfcc_line

from locsens.artifacts import EvaluationLayout, LineageError, RunLayout
from locsens.checkpointing import CheckpointError, TrainingDiverged, load_model
from locsens.config import ConfigError
from locsens.data import store
from locsens.data.ingest import IngestError, read_wordlist
from locsens.eval.pipeline import EvaluationError, evaluate
from locsens.train import train

pytestmark = pytest.mark.usefixtures("one_torch_thread")
QUICK = ["experiment=mcc", "trainer=debug", "logger=none", "trainer.check_val_every_n_epoch=1"]


def mcc_cfg(stores, run, *extra):
    return compose("train", train_overrides(stores, run, *QUICK, *extra))


def snapshot(run) -> dict:
    """Every file of a run directory (but its lock and Hydra's job log) -> its bytes."""
    return {
        str(p.relative_to(run)): p.read_bytes()
        for p in sorted(run.rglob("*"))
        if p.is_file() and p.name not in (".locsens.lock", "train.log")
    }


@pytest.fixture(scope="module")
def finished(tiny_stores, tmp_path_factory):
    """A finished 2-epoch MCC run (kept read-only by the tests: each copies it first)."""
    run = tmp_path_factory.mktemp("finished") / "run"
    train(mcc_cfg(tiny_stores, run, "trainer.max_epochs=2"))
    return run


def test_a_refused_command_rewrites_nothing_of_the_run(tiny_stores, finished, tmp_path):
    run = tmp_path / "run"
    shutil.copytree(finished, run)
    before = snapshot(run)
    proc = run_cli(
        "train.py",
        *train_overrides(tiny_stores, run, "experiment=her", "trainer=debug", "logger=none"),
        f"hydra.run.dir={run}",
    )
    assert proc.returncode != 0 and "already holds a training run" in proc.stderr
    assert snapshot(run) == before  # .hydra/config.yaml still describes the MCC run (tables name runs from it)


def test_resuming_into_another_runs_directory_is_refused(tiny_stores, finished, tmp_path):
    other = tmp_path / "other"
    shutil.copytree(finished, other)
    before = snapshot(other)
    elsewhere = tmp_path / "elsewhere"
    shutil.copytree(finished, elsewhere)
    with pytest.raises(FileExistsError, match=r"already holds another training run"):
        train(mcc_cfg(tiny_stores, other, "trainer.max_epochs=3", f"ckpt_path={elsewhere}"))
    assert snapshot(other) == before


def test_resume_refuses_other_settings(tiny_stores, finished, tmp_path):
    run = tmp_path / "run"
    shutil.copytree(finished, run)
    for change, key in (("seed=7", "seed"), ("data.batch_size=32", "data.batch_size")):
        with pytest.raises(ConfigError, match=rf"trained with other settings.*{key}"):
            train(mcc_cfg(tiny_stores, run, "trainer.max_epochs=3", f"ckpt_path={run}", change))


def test_a_copied_or_moved_run_uses_its_own_checkpoints(tiny_stores, finished, tmp_path):
    copy = tmp_path / "copy"
    shutil.copytree(finished, copy)
    metrics = json.loads((copy / "metrics.json").read_text())
    assert not metrics["best_checkpoint"].startswith("/")  # relative to the run
    assert RunLayout(copy).best_checkpoint().parent == copy / "checkpoints"
    # the original is then overwritten by another run: the copy still resumes from, and keeps, its own best
    moved = tmp_path / "moved"
    shutil.move(copy, moved)
    best = RunLayout(moved).best_checkpoint()
    best_bytes = best.read_bytes()
    again = train(mcc_cfg(tiny_stores, moved, "trainer.max_epochs=2", "ckpt_path=last"))  # nothing left to train
    assert again["best_epoch"] == metrics["best_epoch"] and again["best_score"] == metrics["best_score"]
    assert best.read_bytes() == best_bytes


def test_a_diverged_run_is_not_finished(tiny_stores, tmp_path):
    run = tmp_path / "run"
    with pytest.raises(TrainingDiverged, match=r"training diverged: the loss is (nan|inf)"):
        train(mcc_cfg(tiny_stores, run, "trainer.max_epochs=2", "model.optimizer.lr=1e30"))
    assert not (run / "metrics.json").exists()
    with pytest.raises(FileNotFoundError, match=r"no metrics.json"):
        RunLayout(run).metrics()


def test_an_unbounded_run_is_refused(tiny_stores, tmp_path):
    with pytest.raises(ConfigError, match=r"max_epochs=-1 \(unlimited\) needs a bound"):
        train(mcc_cfg(tiny_stores, tmp_path / "run", "trainer.max_epochs=-1"))


def test_training_on_a_dataset_with_another_feature_store_is_refused(tiny_stores, tmp_path):
    dataset = tmp_path / "dataset.h5"  # a world's dataset store records the feature store it was prepared with
    shutil.copy(tiny_stores["dataset"], dataset)
    with h5py.File(dataset, "a") as f:
        f.attrs["made_from"] = json.dumps({"features": {"id": store.read_identity(tiny_stores["features"])[0]}})
    fs = store.FeatureStore(tiny_stores["features"])
    other = tmp_path / "features.h5"
    store.write_feature_store(other, photo_id=fs.photo_id, features=fs.read_all() * 2, extractor="other")
    stores = {**tiny_stores, "dataset": dataset}
    train(mcc_cfg(stores, tmp_path / "paired"))  # its own pair trains
    with pytest.raises(store.StoreError, match=r"was prepared with feature store .* they are not one world"):
        train(mcc_cfg(stores, tmp_path / "run", f"data.features_path={other}"))


def test_a_checkpoint_with_edited_dimensions_is_refused_without_building_it(finished, tmp_path):
    ckpt = torch.load(RunLayout(finished).best_checkpoint(), map_location="cpu", weights_only=True)
    ckpt["hyper_parameters"]["num_tags"] = 10**9  # 1e9 x d weights: would exhaust the machine if built
    path = tmp_path / "huge.ckpt"
    torch.save(ckpt, path)
    with pytest.raises(CheckpointError, match=r"huge.ckpt: its weights do not fit MCC .* from the hyperparameters"):
        load_model(path)


# ---- evaluation directories ---------------------------------------------------------------------
def eval_cfg(stores, out, *extra):
    return compose("evaluate", evaluate_overrides(stores, out, *extra))


def test_an_evaluation_directory_is_one_set(tiny_stores, tmp_path):
    out = tmp_path / "eval"
    first = evaluate(eval_cfg(tiny_stores, out))
    (out / "figures" / "stale.png").write_bytes(b"an earlier evaluation's figure")
    before = {p.name: p.read_bytes() for p in out.iterdir() if p.is_file()}
    with pytest.raises(EvaluationError, match=r"already holds an evaluation .* overwrite=true"):
        evaluate(eval_cfg(tiny_stores, out, "methods.global_frequency=null"))
    assert {p.name: p.read_bytes() for p in out.iterdir() if p.is_file()} == before
    second = evaluate(eval_cfg(tiny_stores, out, "methods.global_frequency=null", "overwrite=true"))
    assert "global_frequency" in first["tagging"] and "global_frequency" not in second["tagging"]
    assert not (out / "figures" / "stale.png").exists()
    assert EvaluationLayout(out).results()["evaluation_id"] == second["evaluation_id"]
    # a set mixed by a kill between two renames: the consumer refuses it, naming the file
    with h5py.File(out / "predictions.h5", "a") as f:
        f.attrs["evaluation_id"] = first["evaluation_id"]
    with pytest.raises(LineageError, match=r"results.json is evaluation .* but predictions.h5 is of another"):
        EvaluationLayout(out).results()


def test_impossible_ks_are_refused_and_asked_ks_are_tabled(tiny_stores, tmp_path):
    with pytest.raises(EvaluationError, match=r"tagging.ks: k=5000 is more than the \d+ tags"):
        evaluate(eval_cfg(tiny_stores, tmp_path / "a", "tagging.ks=[1,5000]"))
    with pytest.raises(EvaluationError, match=r"retrieval.k: 5000 images per query need 5000 retrieval candidates"):
        evaluate(eval_cfg(tiny_stores, tmp_path / "b", "retrieval.k=5000"))
    evaluate(eval_cfg(tiny_stores, tmp_path / "c", "tagging.ks=[2,5]"))
    header = next(
        line for line in (tmp_path / "c" / "tables.md").read_text().splitlines() if line.startswith("| method")
    )
    assert header == "| method | A@2 | A@5 | %pred | %cpred |"


def test_runs_that_share_a_name_get_a_row_each(tiny_stores, finished, tmp_path):
    for parent in ("a", "b"):
        shutil.copytree(finished, tmp_path / parent / "run")
    results = evaluate(
        eval_cfg(tiny_stores, tmp_path / "eval", f"runs=[{tmp_path / 'a' / 'run'},{tmp_path / 'b' / 'run'}]")
    )
    assert {"run@a/run", "run@b/run"} <= set(results["tagging"])


def test_an_embeddings_store_of_another_model_is_refused(tiny_stores, finished, tmp_path):
    from locsens.export import export_embeddings

    emb = export_embeddings(
        RunLayout(finished).best_checkpoint(), tiny_stores["dataset"], tiny_stores["features"], tmp_path / "her.h5"
    )
    with pytest.raises(
        ValueError, match=r"methods.her.embeddings_path: .*her.h5 holds embeddings of model '(?i:mcc)', expected 'her'"
    ):
        evaluate(eval_cfg(tiny_stores, tmp_path / "eval", f"methods.her={{kind: embeddings, embeddings_path: {emb}}}"))


def test_bad_method_values_name_their_key(tiny_stores, finished, tmp_path):
    from locsens.export import export_embeddings

    emb = export_embeddings(
        RunLayout(finished).best_checkpoint(), tiny_stores["dataset"], tiny_stores["features"], tmp_path / "mcc.h5"
    )
    with pytest.raises(ValueError, match=r"methods.mcc_x_town_prior.weight: 'abc' is not a number"):
        evaluate(
            eval_cfg(
                tiny_stores,
                tmp_path / "eval",
                f"methods.mcc={{kind: embeddings, embeddings_path: {emb}}}",
                "methods.mcc_x_town_prior={kind: product_of_experts, visual: mcc, level: town, weight: abc}",
            )
        )


# ---- inputs ----------------------------------------------------------------------------------------
def test_tags_and_users_that_do_not_decode_are_counted_as_bad_encoding(tmp_path):
    path = tmp_path / "yfcc.tsv"
    lines = [
        yfcc_line(0, 10, "u@N01", ["beach"], 48.8, 2.3),
        yfcc_line(1, 11, "u@N01", ["beach"], 48.8, 2.3).replace("beach", "caf%E9"),  # latin-1 percent-encoding
        yfcc_line(2, 12, "u@N01", ["beach"], 48.8, 2.3).replace("beach", "wei%00rd"),  # an encoded NUL
        yfcc_line(3, 13, "u\0@N01", ["beach"], 48.8, 2.3),  # a raw NUL in the user column
        yfcc_line(4, 14, "u@N01", ["sea"], 48.8, 2.3).replace("sea", "se\0a"),  # a raw NUL in a tag
    ]
    path.write_text("".join(lines))
    photos, stats = read_yfcc(path, progress=False)
    assert [p.photo_id for p in photos] == [10]
    assert stats.reasons["bad_encoding"] == 4 and sum(stats.reasons.values()) == 5
    from locsens.data.yfcc import YfccFormatError

    with pytest.raises(YfccFormatError, match=r"line 2: field 'user_tags' .*'caf%E9' is not percent-encoded UTF-8"):
        read_yfcc(path, progress=False, strict=True)


def test_a_binary_wordlist_is_named(tmp_path):
    path = tmp_path / "words.bin"
    path.write_bytes(b"\xff\xfe\x00beach\n")
    with pytest.raises(IngestError, match=r"ingest.wordlist: .*words.bin line 1 is not UTF-8 text"):
        read_wordlist(path)
    with pytest.raises(IsADirectoryError, match=r"ingest.wordlist: .* is a directory"):
        read_wordlist(tmp_path)


def test_a_store_edited_in_place_is_refused(tiny_stores, tmp_path):
    edited = tmp_path / "features.h5"
    shutil.copy(tiny_stores["features"], edited)
    with h5py.File(edited, "a") as f:
        f["features"][0] = np.asarray(f["features"][0]) * 2 + 0.5  # finite, plausible: only the id can tell
    with pytest.raises(
        store.StoreError, match=r"features.h5: its data gives content id .* modified after it was written"
    ):
        store.FeatureStore(edited)


def test_write_errors_are_named_by_their_cause(tmp_path, capsys):
    import errno
    import logging

    from locsens.files import JobLogHandler, describe_os_error, os_errno

    # HDF5 says the OS error only in words: a read-only folder is not "no space left on device"
    assert os_errno(RuntimeError("Unable to create file (Read-only file system)")) == errno.EROFS
    assert describe_os_error(RuntimeError("... No space left on device ...")) == "no space left on device"
    blocker = tmp_path / "a-file"
    blocker.write_text("")
    handler = JobLogHandler(blocker / "job.log")  # its folder cannot exist: console only, with one note
    handler.emit(logging.makeLogRecord({"msg": "hello"}))
    handler.close()
    assert "cannot be written" in capsys.readouterr().err
