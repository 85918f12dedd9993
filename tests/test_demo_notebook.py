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
