"""The explorer's JSON API over a real server (uvicorn on a free port) and a real LocSens run: its answers
against independent references (the model's plain forward, numpy cosines, geodesics), its errors, its
refusals and that it never writes."""

from __future__ import annotations

import hashlib
import json
import time
import urllib.error
import urllib.request
from pathlib import Path

import numpy as np
import pytest
import torch

pytest.importorskip("starlette", reason="needs the explorer extra (pip install -e '.[explorer]')")
pytest.importorskip("uvicorn", reason="needs the explorer extra (pip install -e '.[explorer]')")

from conftest import build_synthetic_stores, compose, evaluate_overrides, run_cli  # noqa: E402

from locsens.checkpointing import load_model  # noqa: E402
from locsens.data.store import DatasetStore, EmbeddingStore  # noqa: E402
from locsens.explore.server import BackgroundServer, create_app, free_port  # noqa: E402
from locsens.explore.session import Explorer  # noqa: E402
from locsens.geo import geodesic_km  # noqa: E402
from locsens.metrics.tagging import ranked_topk  # noqa: E402

pytestmark = pytest.mark.usefixtures("one_torch_thread")


def get(url: str) -> tuple[int, dict]:
    try:
        with urllib.request.urlopen(url, timeout=30) as r:
            return r.status, json.loads(r.read())
    except urllib.error.HTTPError as e:
        return e.code, json.loads(e.read())


def test_info_and_world(explored):
    status, info = get(f"{explored['url']}/api/info")
    assert status == 200 and info["dtype"] == "fp32" and info["tags"] == DatasetStore(explored["dataset"]).num_tags
    status, world = get(f"{explored['url']}/api/world")
    names = {c["name"] for c in world["countries"]}
    assert {"France", "Japan", "Brazil", "Antarctica"} <= names and len(names) > 170
    for c in world["countries"]:
        for ring in c["rings"]:
            lon, lat = np.asarray(ring).T
            assert len(ring) >= 4 and np.all(np.abs(lat) <= 90) and lon.max() > -180 and lon.min() < 180
            # no edge across the whole map (the antimeridian unwrapped), but along a pole (Antarctica closed)
            wide = np.abs(np.diff(lon)) >= 180
            assert np.all(np.abs(lat[1:][wide]) == 90) and np.all(np.abs(lat[:-1][wide]) == 90)


def reference_tag_ranking(stores, row: int, lat: float, lon: float, k: int):
    """The model's plain forward over every tag (no scoring engine), independently loaded."""
    model, _ = load_model(stores["checkpoint"], expect="locsens")
    model.eval()
    emb = EmbeddingStore(stores["embeddings"])
    tags = torch.from_numpy(emb.tag)
    v = len(tags)
    with torch.no_grad():
        s = model(
            torch.from_numpy(emb.image[[row]]).expand(v, -1),
            tags,
            torch.full((v,), lat, dtype=torch.float64).float(),
            torch.full((v,), lon, dtype=torch.float64).float(),
            tag_ids=torch.arange(v),
        )
    return s, ranked_topk(s[None], k)[0]


def test_tags_equal_the_models_forward_and_change_with_place(explored):
    ds = DatasetStore(explored["dataset"])
    row = int(ds.split_rows("test")[0])
    pid = int(ds.photo_id[row])
    answers = {}
    for lat, lon in ((48.86, 2.35), (35.68, 139.69)):
        status, got = get(f"{explored['url']}/api/tags?photo={pid}&lat={lat}&lon={lon}&k=15")
        assert status == 200
        scores, ids = reference_tag_ranking(explored, row, lat, lon, 15)
        assert [t["id"] for t in got["locsens"]] == ids.tolist()
        np.testing.assert_allclose([t["score"] for t in got["locsens"]], scores[ids].numpy(), atol=2e-5)
        truth = set(ds.tags_of(row).tolist())
        assert [t["true"] for t in got["locsens"]] == [i in truth for i in ids.tolist()]
        assert [t["place"] for t in got["locsens"]] == [ds.vocab[i] in set(ds.place_names) for i in ids.tolist()]
        answers[lat] = got
    assert [t["id"] for t in answers[48.86]["locsens"]] != [t["id"] for t in answers[35.68]["locsens"]]
    # the agnostic model: cosine of the store's embeddings, the same wherever the photo is
    emb = EmbeddingStore(explored["embeddings"])
    image = emb.image[row] / np.linalg.norm(emb.image[row])
    cos = (emb.tag / np.linalg.norm(emb.tag, axis=1, keepdims=True)) @ image
    assert [t["id"] for t in answers[48.86]["agnostic"]] == list(np.argsort(-cos, kind="stable")[:15])
    assert answers[48.86]["agnostic"] == answers[35.68]["agnostic"]


def test_retrieval_equals_exhaustive_forward_with_distances(explored):
    ds = DatasetStore(explored["dataset"])
    test_rows = ds.split_rows("test")
    tag = "paris"
    t = ds.vocab.index(tag)
    lat, lon, km = 48.86, 2.35, 200.0
    status, got = get(f"{explored['url']}/api/retrieve?tag={tag}&lat={lat}&lon={lon}&km={km}&k=10")
    assert status == 200
    model, _ = load_model(explored["checkpoint"], expect="locsens")
    model.eval()
    emb = EmbeddingStore(explored["embeddings"])
    n = len(test_rows)
    with torch.no_grad():
        s = model(
            torch.from_numpy(emb.image[test_rows]),
            torch.from_numpy(emb.tag[[t]]).expand(n, -1),
            torch.full((n,), lat),
            torch.full((n,), lon),
            tag_ids=torch.full((n,), t),
        )
    want = test_rows[ranked_topk(s[None], 10)[0].numpy()]
    assert [r["photo_id"] for r in got["locsens"]["results"]] == ds.photo_id[want].tolist()
    for name in ("locsens", "agnostic"):
        results = got[name]["results"]
        assert len(results) == 10
        for r in results:
            row = int(np.flatnonzero(ds.photo_id == r["photo_id"])[0])
            assert r["km"] == pytest.approx(float(geodesic_km(lat, lon, ds.lat[row], ds.lon[row])), abs=0.06)
            assert r["has_tag"] == (t in ds.tags_of(row))
            assert r["correct"] == (r["has_tag"] and r["km"] <= km)
        assert got[name]["precision"] == pytest.approx(10.0 * sum(r["correct"] for r in results))


def test_heatmaps_locsens_and_prior(explored):
    ds = DatasetStore(explored["dataset"])
    row = int(ds.split_rows("test")[3])
    status, heat = get(f"{explored['url']}/api/heatmap?tag=tokyo&photo={ds.photo_id[row]}&step=10")
    assert status == 200
    values = np.asarray(heat["values"])
    assert values.shape == (18, 36)
    i, j = 5, 20  # one cell, against the model's forward there
    lat, lon = heat["lat0"] + 10 * i, heat["lon0"] + 10 * j
    scores, _ = reference_tag_ranking(explored, row, lat, lon, 1)
    assert values[i, j] == pytest.approx(float(scores[ds.vocab.index("tokyo")]), abs=1e-4)
    status, prior = get(f"{explored['url']}/api/heatmap?tag=kyoto&step=10")
    p = np.asarray(prior["values"])
    from locsens.priors import NeighbourPrior

    dense = NeighbourPrior(ds, "knn", k=100).prior([prior["lat0"] + 10 * 12], [prior["lon0"] + 10 * 31])
    assert p[12, 31] == pytest.approx(float(dense[0, ds.vocab.index("kyoto")]), rel=1e-4)
    # at (35, 135), near Kyoto, the prior of "kyoto" is far above its value in France
    assert p[12, 31] > 10 * p[13, 18]


def test_search_vocab_compare_and_stored_predictions(explored):
    ds = DatasetStore(explored["dataset"])
    status, found = get(f"{explored['url']}/api/search?q=kyoto")
    assert status == 200 and found["count"] > 0
    assert all(
        ds.vocab.index("kyoto") in ds.tags_of(int(np.flatnonzero(ds.photo_id == p["photo_id"])[0]))
        for p in found["photos"]
    )
    pid = str(ds.photo_id[ds.split_rows("test")[0]])
    status, found = get(f"{explored['url']}/api/search?q={pid[:6]}")
    assert status == 200 and all(str(p["photo_id"]).startswith(pid[:6]) for p in found["photos"])
    status, vocab = get(f"{explored['url']}/api/vocab?prefix=ky")
    assert [t["tag"] for t in vocab["tags"]] == ["kyoto"]
    status, compare = get(f"{explored['url']}/api/compare")
    results = json.loads((explored["evaluation"] / "results.json").read_text())
    table = compare["evaluations"][0]["rows"]
    assert set(results["tagging"]) <= set(table)
    for name, r in results["tagging"].items():
        assert table[name]["with_places:A@10"] == r["with_places"]["A@10"]
    figure = compare["evaluations"][0]["figures"][0]
    with urllib.request.urlopen(f"{explored['url']}/figure/0/{figure}") as r:
        assert r.read(8) == b"\x89PNG\r\n\x1a\n"
    status, photo = get(f"{explored['url']}/api/photo?photo={pid}")
    stored = photo["stored_predictions"][0]["methods"]
    import h5py

    with h5py.File(explored["evaluation"] / "predictions.h5", "r") as f:
        at = int(np.flatnonzero(f["tagging/rows"][:] == int(ds.split_rows("test")[0]))[0])
        for name, tags in stored.items():
            assert [t["id"] for t in tags] == [t for t in f[f"tagging/{name}/top50"][at, :10] if t >= 0]


@pytest.mark.parametrize(
    "path, status, message",
    [
        ("/api/tags?photo=1&lat=0&lon=0", 404, "unknown photo id 1"),
        ("/api/tags?photo=abc&lat=0&lon=0", 400, "is not a photo id"),
        ("/api/vocab", 200, ""),
        ("/api/tags?photo={pid}&lat=91&lon=0", 400, "lat=91 is out of range"),
        ("/api/tags?photo={pid}&lat=0&lon=-181", 400, "lon=-181 is out of range"),
        ("/api/tags?photo={pid}&lat=nan&lon=0", 400, "lat=nan is not a finite number"),
        ("/api/tags?photo={pid}&lat=0", 400, "missing parameter 'lon'"),
        ("/api/tags?photo={pid}&lat=0&lng=0", 400, "unknown parameter 'lng' (did you mean 'lon'?)"),
        ("/api/retrieve?tag=kyotoo&lat=0&lon=0", 404, "unknown tag 'kyotoo'"),
        ("/api/retrieve?tag=kyoto&lat=0&lon=0&km=-1", 400, "km=-1 is out of range"),
        ("/api/search?q=zzzz", 404, "unknown tag 'zzzz'"),
        ("/api/heatmap?tag=kyoto&step=0.5", 400, "step=0.5 is out of range"),
        ("/api/tags?photo={pid}&lat=0&lon=0&lat=5", 400, "parameter 'lat' given more than once"),
        ("/api/tags?photo={pid}&lat=%D9%A3&lon=0", 400, "is not a number"),  # an Arabic-Indic digit
        ("/api/tags?photo={pid}&lat=1_0&lon=0", 400, "lat=1_0 is not a number"),
        ("/api/tags?photo={pid}&lat=inf&lon=0", 400, "lat=inf is not a finite number"),
        ("/api/tags?photo=%EF%BC%98&lat=0&lon=0", 400, "is not a photo id"),  # a fullwidth digit
        ("/api/retrieve?tag=%20&lat=0&lon=0", 400, "tag is empty"),
        ("/api/heatmap?tag=kyoto&step=7", 400, "step=7 must divide 180"),
        ("/api/search?q=" + "x" * 5000, 404, "(5000 characters)"),
        ("/api/world?x=1", 400, "unknown parameter 'x'"),
        ("/api/tagz", 404, "unknown API route /api/tagz (did you mean 'tags'?)"),
        ("/api", 404, "no such page /api"),
        ("/figure/0/../../results.json", 404, ""),
        ("/figure/0/nothere.png", 404, "has no figure 'nothere.png'"),
        ("/image/{pid}", 404, "has no image"),
    ],
)
def test_bad_input_is_a_named_4xx(explored, path, status, message):
    pid = int(DatasetStore(explored["dataset"]).photo_id[0])
    try:
        with urllib.request.urlopen(explored["url"] + path.format(pid=pid), timeout=30) as r:
            got, body = r.status, r.read().decode()
    except urllib.error.HTTPError as e:
        got, body = e.code, e.read().decode()
    assert got == status, body
    if message:
        assert message in json.loads(body)["error"]


def test_only_get(explored):
    request = urllib.request.Request(f"{explored['url']}/api/info", method="POST", data=b"")
    with pytest.raises(urllib.error.HTTPError) as e:
        urllib.request.urlopen(request, timeout=10)
    assert e.value.code == 405 and "GET only" in json.loads(e.value.read())["error"]


def test_a_slow_question_does_not_stall_the_page(explored):
    """A heat map runs off the event loop: the page's files are served meanwhile."""
    import threading

    ds = DatasetStore(explored["dataset"])
    took = {}

    def heat_map():
        t0 = time.perf_counter()
        get(f"{explored['url']}/api/heatmap?tag=kyoto&step=1&photo={ds.photo_id[0]}")
        took["heat"] = time.perf_counter() - t0

    slow = threading.Thread(target=heat_map)
    slow.start()
    time.sleep(0.1)
    t0 = time.perf_counter()
    with urllib.request.urlopen(f"{explored['url']}/static/explorer.css", timeout=30) as r:
        assert r.status == 200
    served = time.perf_counter() - t0
    slow.join()
    assert took["heat"] > 0.3, "the heat map is too quick to tell a stalled loop from a free one"
    assert served < took["heat"] / 3, (served, took)


def tree_digest(*roots) -> dict:
    out = {}
    for root in roots:
        root = Path(root)
        for p in sorted(root.rglob("*") if root.is_dir() else [root]):
            if p.is_file():
                out[str(p)] = (p.stat().st_mtime_ns, hashlib.sha256(p.read_bytes()).hexdigest())
    return out


def test_the_server_never_writes(tiny_locsens, tmp_path):
    from locsens.eval.pipeline import evaluate

    out = tmp_path / "evaluation"
    evaluate(compose("evaluate", evaluate_overrides(tiny_locsens, out, f"runs=[{tiny_locsens['run']}]")))
    roots = (tiny_locsens["run"], out, tiny_locsens["dataset"], tiny_locsens["embeddings"])
    before = tree_digest(*roots)
    ds = DatasetStore(tiny_locsens["dataset"])
    pid = int(ds.photo_id[ds.split_rows("test")[0]])
    with BackgroundServer(create_app(Explorer(tiny_locsens["run"], [out]))) as server:
        for path in (
            "/api/info",
            f"/api/photo?photo={pid}",
            f"/api/tags?photo={pid}&lat=10&lon=10",
            "/api/retrieve?tag=paris&lat=48&lon=2",
            "/api/heatmap?tag=paris&step=10",
            f"/api/heatmap?tag=paris&step=10&photo={pid}",
            "/api/compare",
            "/api/tags?photo=1&lat=0&lon=0",
        ):
            get(server.url + path)
    assert tree_digest(*roots) == before


def test_refuses_what_does_not_belong_together(tiny_locsens, tmp_path):
    other = build_synthetic_stores(tmp_path, n_photos=300, seed=5)
    with pytest.raises(ValueError, match="dataset store"):  # photo ids / content ids: the stores differ
        Explorer(tiny_locsens["run"], dataset_path=other["dataset"])
    from locsens.eval.pipeline import evaluate

    out = tmp_path / "other_eval"
    evaluate(compose("evaluate", evaluate_overrides(other, out)))
    with pytest.raises(ValueError, match="made on dataset store"):
        Explorer(tiny_locsens["run"], [out])
    with pytest.raises(ValueError, match="not extracted from image files"):
        Explorer(tiny_locsens["run"], images=tmp_path)


def test_explore_cli_serves_and_refuses_bad_config(tiny_locsens):
    for args, message in (
        ([f"run={tiny_locsens['run']}", "port=0"], "port=0"),
        ([f"run={tiny_locsens['run']}", "host=no.such.host.invalid"], "cannot serve there"),
        ([], "run is required"),
        (["run=/nonexistent/run"], "run=/nonexistent/run: no such directory"),
        ([f"run={tiny_locsens['run']}", "+evals=[x]"], "did you mean 'eval'"),
        ([f"run={tiny_locsens['run']}", "dtype=fp16"], "dtype='fp16'"),
    ):
        proc = run_cli("explore.py", *args, timeout=120)
        assert proc.returncode != 0 and message in proc.stderr + proc.stdout, proc.stderr[-2000:]
    import subprocess
    import sys

    from conftest import ROOT

    port = free_port()
    proc = subprocess.Popen(
        [sys.executable, "explore.py", f"run={tiny_locsens['run']}", f"port={port}"],
        cwd=ROOT,
        stdout=subprocess.PIPE,
        stderr=subprocess.STDOUT,
        text=True,
    )
    try:
        deadline = time.time() + 120
        while True:
            try:
                status, info = get(f"http://127.0.0.1:{port}/api/info")
                break
            except (urllib.error.URLError, ConnectionError):
                assert proc.poll() is None and time.time() < deadline, proc.stdout.read()
                time.sleep(0.3)
        assert status == 200 and info["run"] == str(tiny_locsens["run"])
        with urllib.request.urlopen(f"http://127.0.0.1:{port}/", timeout=10) as r:
            assert b"locsens explorer" in r.read()
    finally:
        proc.terminate()
        proc.wait(timeout=30)
