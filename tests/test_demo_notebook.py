"""Slow end-to-end checks: `make demo-small`'s pipeline on the tiny world, then the analysis notebook
executed for real on its evaluation directory (so neither rots)."""

from __future__ import annotations

import json
import os
import subprocess
import sys

import nbformat
import pytest
from conftest import ROOT
from nbclient import NotebookClient


@pytest.fixture(scope="module")
def demo_tiny(tmp_path_factory):
    base = tmp_path_factory.mktemp("demo")
    env = {
        **os.environ,
        "LOCSENS_DATA_DIR": str(base / "data"),
        "LOCSENS_LOG_DIR": str(base / "outputs"),
        "WANDB_MODE": "offline",
    }
    subprocess.run([sys.executable, "-m", "locsens.demo", "size=tiny"], cwd=ROOT, env=env, check=True, timeout=900)
    return base / "outputs" / "demo-tiny" / "evaluation"


@pytest.mark.slow
def test_demo_small_produces_every_table_and_figure(demo_tiny):
    results = json.loads((demo_tiny / "results.json").read_text())
    assert {"town_frequency", "mlc", "mcc", "her", "locsens_raw", "locsens_zeroed", "locsens_sigma"} <= set(
        results["tagging"]
    )
    assert "upper_bound" in results["location_sensitive_retrieval"]
    assert {"mlc", "mcc", "her"} == set(results["location_agnostic_retrieval"])
    for png in ("p10_vs_tag_frequency.png", "continents.png", "qualitative_tagging.png", "qualitative_retrieval.png"):
        assert (demo_tiny / "figures" / png).stat().st_size > 1000, png


@pytest.mark.slow
def test_analysis_notebook_executes(demo_tiny, monkeypatch):
    nb = nbformat.read(ROOT / "notebooks" / "analysis.ipynb", as_version=4)
    assert not any(c.get("outputs") for c in nb.cells if c.cell_type == "code"), "commit the notebook without outputs"
    monkeypatch.setenv("LOCSENS_EVAL_DIRS", str(demo_tiny))
    NotebookClient(nb, timeout=300, kernel_name="python3", resources={"metadata": {"path": str(ROOT)}}).execute()
    outputs = [o for c in nb.cells if c.cell_type == "code" for o in c.outputs]
    assert not [o for o in outputs if o.output_type == "error"]
    assert sum(1 for o in outputs if "image/png" in o.get("data", {})) >= 4  # plots and the evaluation's figures
    text = "".join(o.get("text", "") for o in outputs)
    assert "mcc" in text  # the browse cell printed every method's top-10


@pytest.mark.slow
def test_cascade_reproduces_exhaustive_top10_on_the_tiny_world(demo_tiny, tmp_path, monkeypatch):
    """The demo's LocSens runs evaluated exhaustively and through the cascade at generous sizes: the same
    top-10 tags (with and without place names) and the same top-10 retrieved images, and the same tables."""
    import h5py
    import numpy as np
    from conftest import compose

    from locsens.eval.pipeline import evaluate

    monkeypatch.setenv("LOCSENS_DATA_DIR", str(demo_tiny.parents[2] / "data"))  # the demo's world, as it ran
    demo = json.loads((demo_tiny / "results.json").read_text())
    assert demo["locsens_scoring"]["tagging"] != "exhaustive"  # the demo itself runs the cascade
    runs = [f"{demo_tiny.parent / name}" for name in ("locsens_raw", "locsens_zeroed", "locsens_sigma")]
    methods = [f"methods.{m}=null" for m in ("global_frequency", "country_frequency", "mlc", "her", "mcc_x_town_prior")]
    common = [
        "world=tiny",
        f"dataset_path={demo['config']['dataset_path']}",
        f"runs=[{','.join(runs)}]",
        "locsens_dtype=fp32",
        "retrieval.min_query_images=3",
        *methods,
    ]
    generous = ["tagging.shortlist.agnostic=150", "tagging.shortlist.prior=100"]
    generous += ["retrieval.shortlist.agnostic=400", "retrieval.shortlist.nearest=400"]
    out = {}
    for mode, extra in (("exhaustive", []), ("cascade", generous)):
        cfg = compose("evaluate", [*common, f"shortlist={mode}", f"output_dir={tmp_path / mode}", *extra])
        out[mode] = evaluate(cfg)
    with (
        h5py.File(tmp_path / "exhaustive" / "predictions.h5") as a,
        h5py.File(tmp_path / "cascade" / "predictions.h5") as b,
    ):
        for name in (f"locsens_{v}" for v in ("raw", "zeroed", "sigma")):
            for key in ("top50", "top50_places_omitted"):
                x, y = a[f"tagging/{name}/{key}"][:, :10], b[f"tagging/{name}/{key}"][:, :10]
                same = np.mean([set(p) == set(q) for p, q in zip(x, y)])
                assert same >= 0.99, (name, key, same)
            x, y = (
                a[f"location_sensitive_retrieval/{name}/top_rows"][()],
                b[f"location_sensitive_retrieval/{name}/top_rows"][()],
            )
            assert np.mean([set(p) == set(q) for p, q in zip(x, y)]) >= 0.99, name
    for name in out["exhaustive"]["tagging"]:
        for key in ("with_places", "places_omitted"):
            for k in ("A@1", "A@10", "A@50"):
                assert abs(out["exhaustive"]["tagging"][name][key][k] - out["cascade"]["tagging"][name][key][k]) <= 0.3
    for name, row in out["exhaustive"]["location_sensitive_retrieval"].items():
        for key, value in row.items():
            assert abs(value - out["cascade"]["location_sensitive_retrieval"][name][key]) <= 0.2, (name, key)
