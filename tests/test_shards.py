"""Sharded evaluation: shards merged are exactly one process's evaluation (results.json and every
dataset of predictions.h5), whether the shards run in one process one after the other or as two
processes of a Hydra multirun; shards of another evaluation are refused."""

from __future__ import annotations

import json

import h5py
import numpy as np
import pytest
from conftest import compose, evaluate_overrides, run_cli

from locsens.config import ConfigError
from locsens.eval.pipeline import evaluate
from locsens.eval.shards import ShardError, share

pytestmark = pytest.mark.usefixtures("one_torch_thread")


@pytest.mark.parametrize("n, block, count", [(0, 4, 3), (10, 3, 2), (100, 7, 5), (5, 10, 3), (64, 64, 2)])
def test_shares_cover_everything_once_in_whole_blocks(n, block, count):
    slices = [share(n, block, i, count) for i in range(count)]
    covered = np.concatenate([np.arange(n)[s] for s in slices])
    assert covered.tolist() == list(range(n))
    assert all(s.start % block == 0 for s in slices)


def overrides(stores, out, *extra):
    """Every kind of method: frequency, embeddings (agnostic retrieval), product of experts, LocSens
    (fp32, so that two processes cannot time bf16 differently), small chunks so the shards split them."""
    return evaluate_overrides(
        stores,
        out,
        f"methods.mcc={{kind:embeddings,embeddings_path:{stores['embeddings']},model:test-projection}}",
        "methods.mcc_x_town_prior={kind:product_of_experts,visual:mcc,level:town}",
        f"runs=[{stores['run']}]",
        "locsens_dtype=fp32",
        "chunk_images=16",
        "retrieval.chunk_queries=8",
        "retrieval.max_queries=null",
        *extra,
    )


def without_paths(results: dict) -> dict:
    return {k: v for k, v in results.items() if k not in ("config", "shards", "figures", "evaluation_id")}


def tables_text(path) -> str:
    """tables.md without its evaluation id line (each evaluation has its own)."""
    return "\n".join(line for line in path.read_text().splitlines() if not line.startswith("<!-- evaluation "))


def assert_same_predictions(a, b) -> None:
    with h5py.File(a, "r") as fa, h5py.File(b, "r") as fb:
        names_a, names_b = [], []
        fa.visit(names_a.append)
        fb.visit(names_b.append)
        assert names_a == names_b
        for name in names_a:
            if isinstance(fa[name], h5py.Dataset):
                assert np.array_equal(fa[name][()], fb[name][()]), name
        assert {k: v for k, v in fa.attrs.items() if k != "evaluation_id"} == {
            k: v for k, v in fb.attrs.items() if k != "evaluation_id"
        }


@pytest.fixture(scope="module")
def one_process(tiny_locsens, tmp_path_factory):
    out = tmp_path_factory.mktemp("one")
    return out, evaluate(compose("evaluate", overrides(tiny_locsens, out)))


def test_shards_in_turn_merge_to_the_one_process_evaluation(tiny_locsens, one_process, tmp_path):
    out, whole = one_process
    shard_dir = tmp_path / "shards"
    for index in (2, 0, 1):  # any order; the one that completes the set merges
        shard = ["shard.count=3", f"shard.index={index}", f"shard.dir={shard_dir}"]
        got = evaluate(compose("evaluate", overrides(tiny_locsens, tmp_path / f"job{index}", *shard)))
        assert (got == {}) == (index != 1)
    merged = json.loads((shard_dir / "results.json").read_text())
    assert without_paths(merged) == without_paths(json.loads((out / "results.json").read_text()))
    assert merged["shards"]["count"] == 3 and whole["n_location_queries"] > 8
    assert_same_predictions(out / "predictions.h5", shard_dir / "predictions.h5")
    assert tables_text(shard_dir / "tables.md") == tables_text(out / "tables.md")


def test_shards_of_another_evaluation_are_refused(tiny_locsens, tmp_path):
    shard_dir = tmp_path / "shards"
    shard = ["shard.count=2", f"shard.dir={shard_dir}"]
    evaluate(compose("evaluate", overrides(tiny_locsens, tmp_path / "a", *shard, "shard.index=0")))
    with pytest.raises(ShardError, match="shard-0000-of-0002.h5 belongs to another evaluation"):
        evaluate(compose("evaluate", overrides(tiny_locsens, tmp_path / "b", *shard, "shard.index=1", "seed=1")))
    assert not (shard_dir / "results.json").exists()


@pytest.mark.parametrize(
    "shard, message",
    [
        (["shard.count=2", "shard.index=0"], "set shard.dir"),
        (["shard.count=2", "shard.index=2", "shard.dir=x"], "expected 0 <= index < count"),
        (["shard.count=0"], "expected 0 <= index < count"),
    ],
)
def test_bad_shard_settings_are_named(tiny_locsens, tmp_path, shard, message):
    with pytest.raises(ConfigError, match=message):
        evaluate(compose("evaluate", overrides(tiny_locsens, tmp_path, *shard)))


@pytest.mark.slow
def test_two_processes_of_a_multirun_give_the_one_process_files(tiny_locsens, one_process, tmp_path):
    out, _ = one_process
    shard_dir = tmp_path / "shards"
    args = [o for o in overrides(tiny_locsens, "unused") if not o.startswith("output_dir=")]
    proc = run_cli(
        "evaluate.py",
        "-m",
        *args,
        "shard.count=2",
        "shard.index=0,1",
        f"shard.dir={shard_dir}",
        "hydra/launcher=joblib",
        "hydra.launcher.n_jobs=2",
        f"hydra.sweep.dir={tmp_path / 'sweep'}",
        timeout=900,
    )
    assert proc.returncode == 0, proc.stderr[-3000:]
    merged = json.loads((shard_dir / "results.json").read_text())
    assert without_paths(merged) == without_paths(json.loads((out / "results.json").read_text()))
    assert_same_predictions(out / "predictions.h5", shard_dir / "predictions.h5")
