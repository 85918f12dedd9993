"""Shared fixtures and helpers: the real config (``CONF``, ``compose``), the shared store builders
(``tiny_stores``, ``write_tiny_embeddings``) and running the entry points as a user would (``run_cli``)."""

from __future__ import annotations

import os
import subprocess
import sys
from pathlib import Path
from urllib.parse import quote_plus

import numpy as np
import pytest

from locsens.data import store

ROOT = Path(__file__).resolve().parents[1]
CONF = ROOT / "conf"


def compose(config_name: str, overrides=(), **kwargs):
    """The repository's real Hydra config ``config_name`` with ``overrides`` (as the entry point composes it);
    ``config_dir=`` another tree, ``return_hydra_config=True`` with the ``hydra`` node."""
    from locsens.config import compose as compose_config

    return compose_config(config_name, overrides, **kwargs)


def gloo_ranks(worker, out_dir, world_size: int = 2) -> None:
    """Run ``worker(rank, out_dir)`` in ``world_size`` real processes joined by a gloo process group on
    127.0.0.1 (the one DDP harness of the tests; ``worker`` must be a module-level function)."""
    import socket

    import torch.multiprocessing as mp

    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        port = s.getsockname()[1]
    mp.spawn(_gloo_rank, args=(worker, port, world_size, str(out_dir)), nprocs=world_size, join=True)


def _gloo_rank(rank: int, worker, port: int, world_size: int, out_dir: str) -> None:
    import torch.distributed as dist

    dist.init_process_group("gloo", init_method=f"tcp://127.0.0.1:{port}", rank=rank, world_size=world_size)
    try:
        worker(rank, out_dir)
    finally:
        dist.destroy_process_group()


def yfcc_line(
    n: int, photo_id: int, user: str, tags: list[str], lat: float | None, lon: float | None, video: bool = False
) -> str:
    """One line in the real yfcc100m_dataset format (25 tab-separated columns); tags are URL-encoded as Flickr writes them."""
    geo = ("", "", "") if lat is None else (f"{lon:.6f}", f"{lat:.6f}", "16")
    cols = [
        str(n),
        str(photo_id),
        "0" * 32,
        user,
        "nick",
        "2012-02-16 09:56:37.0",
        "1331840483",
        "Canon",
        "title",
        "",
        ",".join(quote_plus(t) for t in tags),
        "",
        *geo,
        f"http://www.flickr.com/photos/{user}/{photo_id}/",
        "http://farm8.staticflickr.com/1/1_x.jpg",
        "Attribution License",
        "http://creativecommons.org/licenses/by/2.0/",
        "1",
        "8",
        "abc",
        "def",
        "jpg",
        "1" if video else "0",
    ]
    assert len(cols) == 25
    return "\t".join(cols) + "\n"


def read_yfcc(path, **kwargs):
    """(every kept photo of a small YFCC100M-format file, the parse's stats)."""
    from locsens.data.yfcc import YfccReader

    reader = YfccReader(path, **kwargs)
    photos = list(reader)
    return photos, reader.stats


def build_locsens(*overrides, embed_dim: int = 32, width: int = 64, hidden=(64, 32), groups: int = 8, seed: int = 0):
    """A small LocSens from the REAL config (the paper's experiment at test size) with ``overrides``, e.g.
    ``"model/fusion=raw2d"``, ``"model/location_encoder=wrap"``, ``"model.scorer.pairwise_products=true"``."""
    import torch

    from locsens.config import build_model

    torch.manual_seed(seed)
    return build_model(
        [
            "experiment=locsens_paper",
            f"model.image_branch.out_dim={width}",
            f"model.tag_branch.out_dim={width}",
            f"model.scorer.hidden=[{','.join(map(str, hidden))}]",
            f"model.scorer.groups={groups}",
            "model.num_negatives=3",
            *overrides,
        ],
        embed_dim=embed_dim,
    )


def evaluate_overrides(stores: dict, out_dir, *extra) -> list[str]:
    """Overrides of conf/evaluate.yaml for a quick evaluation of the frequency baselines on ``stores``."""
    return [
        f"dataset_path={stores['dataset']}",
        f"output_dir={out_dir}",
        "methods.mlc=null",
        "methods.her=null",
        "methods.mcc=null",
        "methods.mcc_x_town_prior=null",
        "retrieval.min_query_images=3",
        "retrieval.max_queries=30",
        *extra,
    ]


def train_overrides(stores: dict, out_dir, *extra, embeddings=None) -> list[str]:
    """Overrides of conf/train.yaml for a quick CPU run on ``stores`` into ``out_dir``."""
    base = [
        f"data.dataset_path={stores['dataset']}",
        f"paths.output_dir={out_dir}",
        "trainer.accelerator=cpu",
        "trainer.enable_progress_bar=false",
        "data.batch_size=64",
    ]
    base.append(f"data.embeddings_path={embeddings}" if embeddings else f"data.features_path={stores['features']}")
    return base + list(extra)


def run_cli(
    script: str, *args: str, env: dict | None = None, timeout: float = 600, check: bool = False
) -> subprocess.CompletedProcess:
    """``python <script> <args>`` from the repository root, as a user types it (tests/faults on the path
    for the fault-injecting callbacks); returns the finished process (stdout and stderr captured)."""
    full_env = {**os.environ, "PYTHONPATH": str(ROOT / "tests" / "faults"), "HYDRA_FULL_ERROR": "1", **(env or {})}
    proc = subprocess.run(
        [sys.executable, script, *args], cwd=ROOT, env=full_env, capture_output=True, text=True, timeout=timeout
    )
    if check and proc.returncode != 0:
        raise AssertionError(f"{script} {' '.join(args)} exited {proc.returncode}:\n{proc.stderr[-4000:]}")
    return proc


def build_synthetic_stores(out_dir, n_photos: int = 1200, n_concepts: int = 42, dim: int = 32, seed: int = 0) -> dict:
    """A small dataset + feature store pair with real signal: tags depend on visual concepts and on place.

    Six towns in three countries on two continents; each photo has 1-2 visual concepts (whose
    frequency depends on the town) plus, usually, its town and country name as tags.
    """
    rng = np.random.default_rng(seed)
    towns = [
        ("Paris", "Ile-de-France", "France", "Europe", 48.86, 2.35),
        ("Lyon", "Auvergne-Rhone-Alpes", "France", "Europe", 45.76, 4.84),
        ("Madrid", "Madrid", "Spain", "Europe", 40.42, -3.70),
        ("Seville", "Andalusia", "Spain", "Europe", 37.39, -5.98),
        ("Kyoto", "Kyoto", "Japan", "Asia", 35.01, 135.77),
        ("Tokyo", "Tokyo", "Japan", "Asia", 35.68, 139.69),
    ]
    concept_names = [f"concept{chr(97 + i // 26)}{chr(97 + i % 26)}" for i in range(n_concepts)]
    place_tags = ["paris", "lyon", "madrid", "seville", "kyoto", "tokyo", "france", "spain", "japan"]
    vocab = concept_names + place_tags
    v = len(vocab)
    town_of = rng.integers(0, len(towns), n_photos)
    concept_pref = rng.dirichlet(np.full(n_concepts, 0.3), size=len(towns))  # location-dependent concepts
    prototypes = rng.normal(size=(n_concepts, dim))
    indptr, indices, feats = [0], [], np.zeros((n_photos, dim), np.float32)
    for i in range(n_photos):
        k = rng.integers(1, 3)
        concepts = rng.choice(n_concepts, size=k, replace=False, p=concept_pref[town_of[i]])
        tags = list(concepts)
        if rng.random() < 0.75:
            tags.append(n_concepts + town_of[i])
            tags.append(n_concepts + 6 + ["France", "Spain", "Japan"].index(towns[town_of[i]][2]))
        indices.extend(tags)
        indptr.append(len(indices))
        feats[i] = prototypes[concepts].sum(0) + 0.5 * rng.normal(size=dim)
    counts = np.bincount(np.asarray(indices), minlength=v)
    order = np.argsort(-counts, kind="stable")  # frequency-ordered vocabulary, as the real store
    remap = np.empty(v, np.int64)
    remap[order] = np.arange(v)
    split = rng.choice(3, size=n_photos, p=[0.7, 0.15, 0.15])
    lat = np.array([towns[t][4] for t in town_of]) + rng.normal(scale=0.05, size=n_photos)
    lon = np.array([towns[t][5] for t in town_of]) + rng.normal(scale=0.05, size=n_photos)
    places = {
        "town": [t[0] for t in towns],
        "region": [t[1] for t in towns],
        "country": ["France", "Spain", "Japan"],
        "continent": ["Europe", "Asia"],
    }
    place_index = {
        "town": town_of,
        "region": town_of,
        "country": np.array([places["country"].index(towns[t][2]) for t in town_of]),
        "continent": np.array([places["continent"].index(towns[t][3]) for t in town_of]),
    }
    photo_id = rng.choice(10**11, size=n_photos, replace=False).astype(np.int64)
    user_index = rng.integers(0, 50, n_photos)
    paths = {"dataset": out_dir / "dataset.h5", "features": out_dir / "features.h5"}
    store.write_dataset_store(
        paths["dataset"],
        photo_id=photo_id,
        user_index=user_index,
        users=[f"{u}@N00" for u in range(50)],
        lat=lat,
        lon=lon,
        tags_indptr=np.asarray(indptr),
        tags_indices=remap[np.asarray(indices)],
        places=places,
        place_index=place_index,
        place_names=[
            "europe",
            "asia",
            "france",
            "spain",
            "japan",
            "paris",
            "lyon",
            "madrid",
            "seville",
            "kyoto",
            "tokyo",
            "iledefrance",
            "auvergnerhonealpes",
            "andalusia",
        ],
        split=split,
        vocab=[vocab[j] for j in order],
        vocab_count=counts[order],
        source="synthetic-fixture",
    )
    shuffle = rng.permutation(n_photos)  # feature store rows in another order: joined by photo id
    store.write_feature_store(
        paths["features"], photo_id=photo_id[shuffle], features=feats[shuffle], extractor="synthetic-fixture"
    )
    return paths


def write_tiny_embeddings(tiny_stores: dict, path, dim: int = 300, seed: int = 0):
    """An embeddings store for the tiny dataset: features randomly projected to ``dim``; tag = mean of its images.
    It records the dataset store it was made from (as export does), so LocSens trains on it."""
    ds = store.DatasetStore(tiny_stores["dataset"])
    fs = store.FeatureStore(tiny_stores["features"])
    feats = fs.read(fs.rows_for(ds.photo_id))
    image = feats @ np.random.default_rng(seed).normal(size=(feats.shape[1], dim)).astype(np.float32)
    multi_hot = ds.multi_hot(np.arange(len(ds))).astype(np.float32)
    tag = multi_hot.T @ image / np.maximum(multi_hot.sum(0)[:, None], 1.0)
    return store.write_embedding_store(
        path,
        photo_id=ds.photo_id,
        image=image,
        tag=tag,
        vocab=ds.vocab,
        model="test-projection",
        checkpoint_sha256="none",
        similarity="cosine",
        made_from=embeddings_lineage(tiny_stores, f"test-projection-{dim}-{seed}"),
    )


def embeddings_lineage(stores: dict, checkpoint: str = "test") -> dict:
    """The ``made_from`` an exported embeddings store records, for stand-in exports made by tests."""
    return {
        "checkpoint": {"sha256": checkpoint, "path": "none"},
        "dataset": {"id": store.read_identity(stores["dataset"])[0], "path": str(stores["dataset"])},
        "features": {"id": store.read_identity(stores["features"])[0], "path": str(stores["features"])},
    }


def reseal(path) -> None:
    """Give a store edited in place the content id of its new data, as if a writer had written it that way
    (tests of checks that come after the content-id check: a store above VERIFY_MAX_BYTES is not re-hashed)."""
    import h5py

    from locsens.data.store import recompute_content_id

    content_id = recompute_content_id(path)
    with h5py.File(path, "a") as f:
        f.attrs["content_id"] = content_id


@pytest.fixture(scope="session")
def tiny_stores(tmp_path_factory) -> dict:
    return build_synthetic_stores(tmp_path_factory.mktemp("tiny_stores"))


@pytest.fixture(scope="session")
def tiny_locsens(tiny_stores, tmp_path_factory) -> dict:
    """A short LocSens run (trainer=debug) on the tiny stores and a 24-d stand-in MCC export: the stores
    plus ``embeddings``, ``run`` (its directory) and ``checkpoint`` (its best)."""
    from locsens.train import train

    root = tmp_path_factory.mktemp("tiny_locsens")
    emb = write_tiny_embeddings(tiny_stores, root / "mcc.h5", dim=24)
    stores = {**tiny_stores, "embeddings": emb}
    overrides = ["experiment=locsens", "trainer=debug", "logger=none", "data.val_tagging_images=40"]
    metrics = train(compose("train", train_overrides(stores, root / "run", *overrides, embeddings=emb)))
    return {**stores, "run": root / "run", "checkpoint": metrics["best_checkpoint"]}


@pytest.fixture(scope="module")
def one_torch_thread():
    """Tiny matmuls on a busy 2-core machine: intra-op threads only add synchronisation stalls.
    Use with ``pytestmark = pytest.mark.usefixtures("one_torch_thread")``."""
    import torch

    before = torch.get_num_threads()
    torch.set_num_threads(1)
    yield
    torch.set_num_threads(before)


@pytest.fixture(scope="session")
def explored(tiny_locsens, tmp_path_factory):
    """The tiny LocSens run, an evaluation of it, and the explorer serving both on a free port (fp32: exact):
    the stores plus ``evaluation``, ``explorer`` and ``url``."""
    pytest.importorskip("starlette", reason="needs the explorer extra (pip install -e '.[explorer]')")
    pytest.importorskip("uvicorn", reason="needs the explorer extra (pip install -e '.[explorer]')")
    from locsens.eval.pipeline import evaluate
    from locsens.explore.server import BackgroundServer, create_app
    from locsens.explore.session import Explorer

    out = tmp_path_factory.mktemp("explorer_eval") / "evaluation"
    evaluate(compose("evaluate", evaluate_overrides(tiny_locsens, out, f"runs=[{tiny_locsens['run']}]")))
    explorer = Explorer(tiny_locsens["run"], [out], dtype="fp32")
    with BackgroundServer(create_app(explorer)) as server:
        yield {**tiny_locsens, "evaluation": out, "explorer": explorer, "url": server.url}
