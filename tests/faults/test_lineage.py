"""Class 2, lineage: every artefact knows what it was made from, and a consumer refuses a mismatch.

Real training runs (train()), real exports and real evaluations on the tiny stores."""

from __future__ import annotations

import json

import pytest
from conftest import compose, evaluate_overrides, train_overrides, write_tiny_embeddings

from locsens.artifacts import LineageError, RunLayout
from locsens.data.store import EmbeddingStore, read_identity
from locsens.eval.pipeline import evaluate
from locsens.export import export_embeddings
from locsens.files import file_sha256
from locsens.train import train

pytestmark = pytest.mark.usefixtures("one_torch_thread")
QUICK = ["trainer=debug", "logger=none"]


def evaluation_cfg(stores, out, *extra):
    return compose("evaluate", evaluate_overrides(stores, out, "methods.country_frequency=null", *extra))


def test_run_embeddings_cache_follows_the_best_checkpoint(tiny_stores, tmp_path):
    """Evaluated while training ran, then after: the cached export is redone for the new best checkpoint."""
    run = tmp_path / "mcc"
    monitor = [
        "callbacks.model_checkpoint.monitor=val/loss",
        "callbacks.model_checkpoint.mode=min",
    ]  # improves every epoch
    train(
        compose("train", train_overrides(tiny_stores, run, "experiment=mcc", *QUICK, *monitor, "trainer.max_epochs=1"))
    )
    first = evaluate(evaluation_cfg(tiny_stores, tmp_path / "eval1", f"runs=[{run}]"))
    cache = RunLayout(run).embeddings_cache
    assert read_identity(cache)[1]["checkpoint"]["sha256"] == file_sha256(RunLayout(run).best_checkpoint())

    train(
        compose(
            "train",
            train_overrides(
                tiny_stores, run, "experiment=mcc", *QUICK, *monitor, "trainer.max_epochs=3", f"ckpt_path={run}"
            ),
        )
    )
    best = RunLayout(run).best_checkpoint()
    assert json.loads((run / "metrics.json").read_text())["best_epoch"] == 2
    second = evaluate(evaluation_cfg(tiny_stores, tmp_path / "eval2", f"runs=[{run}]"))
    assert read_identity(cache)[1]["checkpoint"]["sha256"] == file_sha256(best)  # re-exported, not frozen at epoch 0
    fresh = export_embeddings(best, tiny_stores["dataset"], tiny_stores["features"], tmp_path / "fresh.h5")
    third = evaluate(
        evaluation_cfg(
            tiny_stores, tmp_path / "eval3", f"+methods.fresh={{kind: embeddings, embeddings_path: {fresh}}}"
        )
    )
    assert second["tagging"]["mcc"] == third["tagging"]["fresh"] != first["tagging"]["mcc"]
    assert second["inputs"]["methods"]["mcc"]["checkpoint"]["sha256"] == file_sha256(best)


@pytest.fixture(scope="module")
def locsens_on_reexported_embeddings(tiny_stores, tmp_path_factory):
    """MCC runs with seeds 0 and 1; LocSens trained on seed 0's export; then seed 1 exported over the same file."""
    root = tmp_path_factory.mktemp("reexport")
    best = {}
    for seed in (0, 1):
        metrics = train(
            compose(
                "train", train_overrides(tiny_stores, root / f"mcc{seed}", "experiment=mcc", *QUICK, f"seed={seed}")
            )
        )
        best[seed] = metrics["best_checkpoint"]
    emb = root / "embeddings" / "mcc.h5"
    export_embeddings(best[0], tiny_stores["dataset"], tiny_stores["features"], emb)
    trained_on = EmbeddingStore(emb).content_id
    locsens = root / "locsens"
    train(
        compose(
            "train",
            train_overrides(
                tiny_stores, locsens, "experiment=locsens", *QUICK, "data.val_tagging_images=40", embeddings=emb
            ),
        )
    )
    export_embeddings(best[1], tiny_stores["dataset"], tiny_stores["features"], emb, overwrite=True)
    return {
        "root": root,
        "emb": emb,
        "locsens": locsens,
        "trained_on": trained_on,
        "now": EmbeddingStore(emb).content_id,
        "mcc1": best[1],
    }


def test_evaluating_locsens_on_reexported_embeddings_is_refused(
    tiny_stores, locsens_on_reexported_embeddings, tmp_path
):
    r = locsens_on_reexported_embeddings
    assert r["trained_on"] != r["now"]
    with pytest.raises(LineageError) as err:
        evaluate(evaluation_cfg(tiny_stores, tmp_path / "eval", f"runs=[{r['locsens']}]"))
    message = str(err.value)
    for part in (r["trained_on"][:12], r["now"][:12], str(r["emb"]), "retrain LocSens", str(r["mcc1"])):
        assert part in message, part


def test_resuming_locsens_on_reexported_embeddings_is_refused(tiny_stores, locsens_on_reexported_embeddings):
    r = locsens_on_reexported_embeddings
    cfg = compose(
        "train",
        train_overrides(
            tiny_stores,
            r["root"] / "resumed",
            "experiment=locsens",
            *QUICK,
            f"ckpt_path={r['locsens']}",
            "trainer.max_epochs=2",
            embeddings=r["emb"],
        ),
    )
    with pytest.raises(
        LineageError, match=rf"was trained on embeddings {r['trained_on'][:12]}.*store is {r['now'][:12]}"
    ):
        train(cfg)


def test_locsens_refuses_embeddings_of_another_dataset_store(tiny_stores, tmp_path_factory, tmp_path):
    from conftest import build_synthetic_stores

    other = build_synthetic_stores(tmp_path_factory.mktemp("other"), seed=5)
    emb = write_tiny_embeddings(other, tmp_path / "mcc.h5", dim=16)
    cfg = compose("train", train_overrides(tiny_stores, tmp_path / "run", "experiment=locsens", *QUICK, embeddings=emb))
    with pytest.raises(Exception, match=r"photo ids do not match|was made from dataset store"):
        train(cfg)


def test_results_record_every_input_and_the_commit(tiny_stores, locsens_on_reexported_embeddings, tmp_path):
    r = locsens_on_reexported_embeddings
    emb = tmp_path / "mcc.h5"
    export_embeddings(r["mcc1"], tiny_stores["dataset"], tiny_stores["features"], emb)
    results = evaluate(
        evaluation_cfg(tiny_stores, tmp_path / "eval", f"methods.mcc={{kind: embeddings, embeddings_path: {emb}}}")
    )
    saved = json.loads((tmp_path / "eval" / "results.json").read_text())
    assert saved["inputs"] == results["inputs"]
    assert saved["inputs"]["dataset"]["id"] == read_identity(tiny_stores["dataset"])[0]
    assert saved["inputs"]["methods"]["mcc"]["embeddings"]["id"] == read_identity(emb)[0]
    assert saved["inputs"]["methods"]["mcc"]["checkpoint"]["sha256"] == file_sha256(r["mcc1"])
    assert len(saved["git_commit"].split("-")[0]) == 40 or saved["git_commit"].startswith("unknown")
