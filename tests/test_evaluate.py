"""The evaluation pipeline end to end on the tiny stores: every number in results.json is recomputed
from predictions.h5 with the independent plain-python reference (tests/reference_metrics.py)."""

from __future__ import annotations

import json
import math

import h5py
import numpy as np
import pytest
import reference_metrics as ref
from conftest import compose, embeddings_lineage

from locsens.data.store import DatasetStore, FeatureStore, write_embedding_store
from locsens.eval.pipeline import evaluate


@pytest.fixture(
    scope="module",
    params=[[], ["limit_test_images=60", "retrieval.limit_candidates=150"]],
    ids=["all_test_images", "separate_candidates"],
)
def evaluation(tiny_stores, tmp_path_factory, request):
    """The whole test split (180 images) for tagging and retrieval, or 60 tagging images and 150 retrieval candidates."""
    out = tmp_path_factory.mktemp("eval")
    ds = DatasetStore(tiny_stores["dataset"])
    fs = FeatureStore(tiny_stores["features"])
    feats = fs.read(fs.rows_for(ds.photo_id))
    rng = np.random.default_rng(0)
    proj = rng.normal(size=(feats.shape[1], 16)).astype(np.float32)
    tag = rng.normal(size=(ds.num_tags, 16)).astype(np.float32)
    emb = out / "mcc.h5"
    write_embedding_store(
        emb,
        photo_id=ds.photo_id,
        image=feats @ proj,
        tag=tag,
        vocab=ds.vocab,
        model="MCC",
        checkpoint_sha256="test",
        similarity="cosine",
        made_from=embeddings_lineage(tiny_stores),
    )
    cfg = compose(
        "evaluate",
        overrides=[
            f"dataset_path={tiny_stores['dataset']}",
            f"output_dir={out}",
            "methods.mlc=null",
            "methods.her=null",
            f"methods.mcc.embeddings_path={emb}",
            "retrieval.min_query_images=3",
            "retrieval.max_queries=100",
            *request.param,
        ],
    )
    results = evaluate(cfg)
    with h5py.File(out / "predictions.h5", "r") as f:  # the sizes asked for
        n_test, n_cand = len(f["tagging/rows"]), len(f["location_sensitive_retrieval/candidate_rows"])
    assert (n_test, n_cand) == ((60, 150) if request.param else (n_test, n_test))
    assert results["n_test_images"] == n_test and results["n_retrieval_candidates"] == n_cand
    return out, results, ds


def test_outputs_exist(evaluation):
    out, results, _ = evaluation
    assert json.loads((out / "results.json").read_text())["tagging"].keys() == results["tagging"].keys()
    assert set(results["tagging"]) == {
        "global_frequency",
        "country_frequency",
        "town_frequency",
        "mcc",
        "mcc_x_town_prior",
    }
    text = (out / "tables.md").read_text()
    for title in (
        "Image tagging",
        "place names omitted",
        "Location-sensitive retrieval",
        "Location-agnostic retrieval",
    ):
        assert title in text
    assert (out / "figures" / "p10_vs_tag_frequency.png").stat().st_size > 1000
    assert (out / "figures" / "continents.png").stat().st_size > 1000


def test_tagging_numbers_recomputed_from_predictions(evaluation):
    out, results, _ = evaluation
    with h5py.File(out / "predictions.h5", "r") as f:
        gt = [[int(t) for t in row if t >= 0] for row in f["tagging/ground_truth"][:]]
        places = set(np.flatnonzero(f["tagging/place_name_mask"][:]).tolist())
        for name in results["tagging"]:
            for key, ds_name, excl in (
                ("with_places", "top50", set()),
                ("places_omitted", "top50_places_omitted", places),
            ):
                ranked = f[f"tagging/{name}/{ds_name}"][:].tolist()
                want = ref.tagging(ranked, gt, (1, 10, 50), exclude=excl)
                got = results["tagging"][name][key]
                for k in ("A@1", "A@10", "A@50", "%pred", "%cpred"):
                    assert got[k] == pytest.approx(want[k], abs=1e-9), (name, key, k)


def test_retrieval_numbers_recomputed_from_predictions(evaluation):
    out, results, ds = evaluation
    with h5py.File(out / "predictions.h5", "r") as f:
        g = f["location_sensitive_retrieval"]
        cand = g["candidate_rows"][:]
        cand_tags = [set(ds.tags_of(r).tolist()) for r in cand]
        qt, qlat, qlon = g["queries/tag"][:].tolist(), g["queries/lat"][:].tolist(), g["queries/lon"][:].tolist()
        pos = {r: i for i, r in enumerate(cand)}
        thresholds = [math.inf, 2500, 750, 200, 25, 1]
        keys = results["threshold_keys"]
        for name in results["location_sensitive_retrieval"]:
            if name == "upper_bound":
                per_q = ref.upper_bound(qt, qlat, qlon, cand_tags, ds.lat[cand], ds.lon[cand], thresholds)
            else:
                top = [[pos[r] if r >= 0 else -1 for r in row] for row in g[f"{name}/top_rows"][:]]
                per_q = ref.location_precision(top, qt, qlat, qlon, cand_tags, ds.lat[cand], ds.lon[cand], thresholds)
            for j, key in enumerate(keys):
                want = 100 * sum(p[j] for p in per_q) / len(per_q)
                assert results["location_sensitive_retrieval"][name][key] == pytest.approx(want, abs=1e-9), (name, key)
        a = f["location_agnostic_retrieval"]
        tags = a["query_tags"][:].tolist()
        for name, value in results["location_agnostic_retrieval"].items():
            top = [[pos[r] for r in row] for row in a[f"{name}/top_rows"][:]]
            assert value == pytest.approx(100 * np.mean(ref.precision(top, tags, cand_tags)), abs=1e-9)


def test_town_frequency_beats_global_and_upper_bound_bounds_all(evaluation):
    _, results, _ = evaluation
    t = results["tagging"]
    assert t["town_frequency"]["with_places"]["A@1"] > t["global_frequency"]["with_places"]["A@1"]
    ret = results["location_sensitive_retrieval"]
    ub = ret["upper_bound"]
    assert ub["1km"] <= ub["25km"] <= ub["200km"] <= ub["750km"] <= ub["2500km"] <= ub["inf"] <= 100.0
    for name, values in ret.items():  # nothing beats the upper bound at any distance
        assert all(values[key] <= ub[key] + 1e-9 for key in results["threshold_keys"]), name


def test_missing_method_file_names_the_key(tiny_stores, tmp_path):
    cfg = compose(
        "evaluate",
        overrides=[
            f"dataset_path={tiny_stores['dataset']}",
            f"output_dir={tmp_path}",
            f"paths.data_dir={tmp_path / 'no_data'}",
        ],
    )  # independent of a local make demo
    with pytest.raises(FileNotFoundError, match="methods.mlc.embeddings_path"):
        evaluate(cfg)


def test_runs_of_agnostic_models_are_exported_and_named(tiny_stores, tmp_path):
    """`evaluate.py runs=[<MCC run>]`: the run is exported once into <run>/embeddings.h5 and named after its directory."""
    from locsens.eval.pipeline import methods_from_runs
    from locsens.train import train

    run = tmp_path / "mcc_run"
    cfg = compose(
        "train",
        overrides=[
            "experiment=mcc",
            "trainer=debug",
            "logger=none",
            f"data.dataset_path={tiny_stores['dataset']}",
            f"data.features_path={tiny_stores['features']}",
            f"paths.output_dir={run}",
            "data.batch_size=64",
        ],
    )
    train(cfg)
    specs = methods_from_runs([run], tiny_stores["dataset"])
    assert specs == {"mcc_run": {"kind": "embeddings", "embeddings_path": str(run / "embeddings.h5")}}
    assert (run / "embeddings.h5").exists()
