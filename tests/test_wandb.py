"""W&B: real offline runs (no mocks, no network) of train() and evaluate(), read back from their run files."""

import json
from pathlib import Path

import pytest
import torch
from conftest import compose
from wandb_offline import read_offline_run

from locsens.eval.pipeline import evaluate
from locsens.tracking import wandb_credentials_configured, wandb_logger
from locsens.train import train


@pytest.fixture
def no_credentials(monkeypatch, tmp_path):
    """A home without ~/.netrc, no API key, offline and quiet: nothing can reach the network."""
    home = tmp_path / "home"
    home.mkdir()
    monkeypatch.setenv("HOME", str(home))
    monkeypatch.delenv("WANDB_API_KEY", raising=False)
    monkeypatch.delenv("NETRC", raising=False)
    monkeypatch.delenv("WANDB_BASE_URL", raising=False)
    monkeypatch.setenv("WANDB_MODE", "offline")
    monkeypatch.setenv("WANDB_SILENT", "true")
    monkeypatch.setenv("WANDB_DIR", str(tmp_path / "wandb_dir"))  # wandb's own scratch files, not the run
    monkeypatch.setenv("WANDB_CONFIG_DIR", str(tmp_path / "wandb_config"))
    monkeypatch.setenv("WANDB_CACHE_DIR", str(tmp_path / "wandb_cache"))
    return home


def read_single_run(out: Path) -> tuple[dict, Path]:
    """The one offline run under ``out``, read after W&B's service process has exited: run.finish()
    returns before the service has necessarily flushed every record to the .wandb file."""
    import wandb

    wandb.teardown()
    run_files = list(out.glob("wandb/offline-run-*/run-*.wandb"))
    assert len(run_files) == 1, list(out.rglob("*"))
    return read_offline_run(run_files[0]), run_files[0]


def test_offline_unless_credentials_are_configured(no_credentials, monkeypatch):
    assert not wandb_credentials_configured()
    assert wandb_logger(save_dir=str(no_credentials))._offline
    (no_credentials / ".netrc").write_text("machine api.wandb.ai\n  login user\n  password " + "k" * 40 + "\n")
    (no_credentials / ".netrc").chmod(0o600)
    assert wandb_credentials_configured()
    assert not wandb_logger(save_dir=str(no_credentials))._offline
    assert wandb_logger(save_dir=str(no_credentials), offline=True)._offline  # forced
    (no_credentials / ".netrc").unlink()
    monkeypatch.setenv("WANDB_API_KEY", "k" * 40)
    assert wandb_credentials_configured()
    monkeypatch.setenv("WANDB_BASE_URL", "https://wandb.example.org")  # a netrc entry must be for this host
    monkeypatch.delenv("WANDB_API_KEY")
    (no_credentials / ".netrc").write_text("machine api.wandb.ai login user password " + "k" * 40 + "\n")
    (no_credentials / ".netrc").chmod(0o600)
    assert not wandb_credentials_configured()


def test_train_logs_config_and_curves_to_an_offline_run(tiny_stores, tmp_path, no_credentials):
    torch.set_num_threads(1)
    out = tmp_path / "run"
    cfg = compose(
        "train",
        overrides=[
            f"data.dataset_path={tiny_stores['dataset']}",
            f"data.features_path={tiny_stores['features']}",
            f"paths.output_dir={out}",
            "trainer=debug",
            "trainer.max_epochs=2",
            "data.batch_size=64",
            "logger=wandb",
            "logger.wandb.project=locsens-test",
            "task_name=wandb_test",
        ],
    )
    metrics = train(cfg)
    run, _ = read_single_run(out)

    assert run["config"]["model"]["_target_"] == "locsens.models.mcc.MCC"  # the resolved config
    assert run["config"]["data"]["batch_size"] == 64 and run["config"]["seed"] == 0
    assert run["config"]["num_tags"] == metrics_num_tags(tiny_stores)  # the model's own hparams too

    rows = run["history"]
    losses = [r["train/loss"] for r in rows if "train/loss" in r]
    a10 = [(r["epoch"], r["val/A@10"]) for r in rows if "val/A@10" in r]
    assert len(losses) == 2 * 4  # trainer=debug: 4 batches an epoch, logged every step
    assert all(isinstance(v, float) and v > 0 for v in losses)
    assert [e for e, _ in a10] == [0, 1]  # one validation per epoch
    assert a10[-1][1] == pytest.approx(metrics["val/A@10"], rel=1e-6)  # the same number metrics.json holds
    assert any("val/loss" in r for r in rows) and all("trainer/global_step" in r for r in rows if "train/loss" in r)
    assert run["summary"]["val/A@10"] == pytest.approx(metrics["val/A@10"], rel=1e-6)


def metrics_num_tags(stores) -> int:
    from locsens.data.store import DatasetStore

    return DatasetStore(stores["dataset"]).num_tags


def test_evaluate_logs_tables_figures_and_scalars(tiny_stores, tmp_path, no_credentials):
    from conftest import write_tiny_embeddings

    out = tmp_path / "eval"
    emb = write_tiny_embeddings(tiny_stores, tmp_path / "mcc.h5", dim=16)  # a stand-in MCC export: retrieval figures
    cfg = compose(
        "evaluate",
        overrides=[
            f"dataset_path={tiny_stores['dataset']}",
            f"output_dir={out}",
            "methods.mlc=null",
            "methods.her=null",
            f"methods.mcc.embeddings_path={emb}",
            "methods.mcc.model=test-projection",  # a stand-in for MCC
            "retrieval.min_query_images=3",
            "retrieval.max_queries=50",
            "wandb.enabled=true",
            "wandb.project=locsens-test",
        ],
    )
    results = evaluate(cfg)
    run, run_file = read_single_run(out)
    logged = {k: v for row in run["history"] for k, v in row.items()}
    a1 = results["tagging"]["town_frequency"]["places_omitted"]["A@1"]
    assert logged["tagging/town_frequency/places_omitted/A@1"] == pytest.approx(float(a1))
    assert logged["n_test_images"] == results["n_test_images"]
    assert run["config"]["retrieval"]["k"] == 10
    for name in ("tagging", "location_sensitive_retrieval"):
        assert logged[f"table/{name}/_type"] == "table-file"
        table = json.loads((run_file.parent / "files" / logged[f"table/{name}/path"]).read_text())
        assert table["columns"][0] == "method"
    tagging = json.loads((run_file.parent / "files" / logged["table/tagging/path"]).read_text())
    rows = {(r[0], r[1]): dict(zip(tagging["columns"], r)) for r in tagging["data"]}
    assert rows[("town_frequency", "places_omitted")]["A@1"] == pytest.approx(float(a1))
    assert len(rows) == 5 * 2  # three frequency methods, mcc, mcc x town prior; with and without place names
    figures = [k for k in logged if k.startswith("figure/") and k.endswith("/_type")]
    assert results["figures"]
    assert len(figures) == len(results["figures"]) and all(logged[k] == "image-file" for k in figures)


def test_the_sigma_schedule_reaches_wandb(tiny_stores, tmp_path, no_credentials):
    """LocSens' SigmaSchedule logs sigma / sigma_km through self.log: both arrive in the W&B history."""
    from conftest import write_tiny_embeddings

    torch.set_num_threads(1)
    emb = write_tiny_embeddings(tiny_stores, tmp_path / "mcc.h5", dim=16)
    out = tmp_path / "run"
    cfg = compose(
        "train",
        overrides=[
            "experiment=locsens_sigma",
            f"data.dataset_path={tiny_stores['dataset']}",
            f"data.embeddings_path={emb}",
            f"paths.output_dir={out}",
            "trainer=debug",
            "trainer.max_epochs=3",
            "trainer.limit_train_batches=2",
            "data.batch_size=32",
            "data.val_tagging_images=40",
            "data.val_retrieval_queries=10",
            "model.scorer.hidden=[32,32]",
            "model.image_branch.out_dim=32",
            "model.tag_branch.out_dim=32",
            "logger=wandb",
        ],
    )
    train(cfg)
    run, _ = read_single_run(out)
    sigma = [(r["epoch"], r["sigma"], r["sigma_km"]) for r in run["history"] if "sigma" in r]
    assert [e for e, _, _ in sigma] == [0, 1, 2]
    assert sigma[0][1] == pytest.approx(1.0) and sigma[-1][1] == 0.0  # exponential 1 -> 0 over the run
    assert 0.0 < sigma[1][1] < 1.0
    assert sigma[0][2] == pytest.approx(20015.0, rel=1e-3)  # sigma_km = sigma * 20015 km
    assert run["config"]["callbacks"]["sigma_schedule"]["kind"] == "exponential"
