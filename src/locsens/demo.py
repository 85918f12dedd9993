"""`make demo`: the whole paper on the built-in simulated world, as a user would run it.

    python -m locsens.demo size=demo     # ~100k photos, under 20 minutes on 2 cores
    python -m locsens.demo size=tiny     # ~2k photos, under 3 minutes (make demo-small)

Every step is the user-facing command (prepare.py, train.py, export, evaluate.py) run as a
subprocess, so the demo exercises exactly what a researcher types; each step's run directory lands
under outputs/demo-<size>/. A rerun reuses the prepared world (after checking it), skips training runs
that finished, resumes those that were interrupted (``ckpt_path=last``) and re-exports embeddings
that are not the export of their run's best checkpoint.
"""

from __future__ import annotations

import os
import subprocess
import sys
import time
from pathlib import Path

from locsens.artifacts import EvaluationLayout, RunLayout, WorldLayout, is_export_of
from locsens.checkpointing import checkpoint_record
from locsens.data.store import read_identity

ROOT = Path(__file__).resolve().parents[2]

# Per-size knobs (the experiments' own defaults are the demo's; tiny shortens everything).
SIZES = {
    "tiny": {
        "mcc": ["trainer.max_epochs=3"],
        "her": ["trainer.max_epochs=3"],
        "mlc": ["trainer.max_epochs=3"],
        "locsens": ["trainer.max_epochs=2"],
        "eval": ["shortlist=cascade", "retrieval.max_queries=300", "retrieval.min_query_images=3"],
    },
    "demo": {
        "mcc": [],
        # no run has an lr schedule, so a shorter run ends at the same checkpoint as the longer one picked:
        # HER's best validation of 5 epochs is after epoch 2, raw and zeroed LocSens' of 4 after epoch 2
        # (sigma's schedule spans its run: it keeps 4 epochs, validated once, at the end, where its best is)
        "her": ["trainer.max_epochs=2"],
        "mlc": ["trainer.max_epochs=3"],
        "locsens": [],
        "locsens_raw": ["trainer.max_epochs=2"],
        "locsens_zeroed": ["trainer.max_epochs=2"],
        "locsens_sigma": ["trainer.check_val_every_n_epoch=4"],
        "eval": ["shortlist=cascade"],  # the paper's full protocol: every test image, every query
    },
}
AGNOSTIC = ("mcc", "her", "mlc")
LOCSENS = {  # name -> experiment overlay (conf/experiment/<name>.yaml); raw2d and dropout: `python train.py experiment=...`
    "locsens_raw": "locsens",
    "locsens_zeroed": "locsens_zeroed",
    "locsens_sigma": "locsens_sigma",
}


def run(args: list[str], what: str) -> None:
    print(f"\n=== {what}\n$ {' '.join(args)}", flush=True)
    t0 = time.time()
    subprocess.run([sys.executable, *args], cwd=ROOT, check=True)
    print(f"=== {what}: {time.time() - t0:.0f} s", flush=True)


def main(argv: list[str]) -> None:
    opts = dict(a.split("=", 1) for a in argv)
    size = opts.get("size", "demo")
    if size not in SIZES:
        raise SystemExit(f"size={size!r}: expected one of {sorted(SIZES)}")
    world = opts.get("world", size)
    data_dir = Path(os.environ.get("LOCSENS_DATA_DIR", ROOT / "data"))  # the same variables conf/paths reads
    out = Path(os.environ.get("LOCSENS_LOG_DIR", ROOT / "outputs")) / f"demo-{size}"
    knobs = SIZES[size]
    t0 = time.time()
    run(["prepare.py", f"world={world}", f"source.size={size}"], f"prepare the simulated world '{world}'")
    layout = WorldLayout.of(data_dir, world)
    for name in AGNOSTIC:
        run_dir = out / name
        if not (run_dir / "metrics.json").exists():
            run(
                [
                    "train.py",
                    f"experiment={name}",
                    f"world={world}",
                    f"hydra.run.dir={run_dir}",
                    "ckpt_path=last",
                    *knobs[name],
                ],
                f"train {name.upper()}",
            )
        best = RunLayout(run_dir).best_checkpoint()
        if not is_export_of(layout.embeddings_path(name), best):
            run(
                [
                    "export.py",
                    f"checkpoint={best}",
                    f"world={world}",
                    f"embeddings_path={layout.embeddings_path(name)}",
                    "overwrite=true",
                ],
                f"export {name.upper()} embeddings",
            )
    runs = []
    for name, experiment in LOCSENS.items():
        run_dir = out / name
        if (run_dir / "metrics.json").exists():
            trained_on = (
                checkpoint_record(RunLayout(run_dir).best_checkpoint())["made_from"].get("embeddings") or {}
            ).get("id")
            if trained_on != read_identity(layout.embeddings_path("mcc"))[0]:
                raise SystemExit(
                    f"{run_dir} was trained on embeddings that were re-exported since ({layout.embeddings_path('mcc')}); "
                    f"remove {run_dir} to retrain it"
                )
        else:
            run(
                [
                    "train.py",
                    f"experiment={experiment}",
                    f"world={world}",
                    f"hydra.run.dir={run_dir}",
                    "ckpt_path=last",
                    *knobs.get(name, knobs["locsens"]),
                ],
                f"train {name}",
            )
        runs.append(str(run_dir))
    eval_dir = out / "evaluation"
    run(
        [
            "evaluate.py",
            f"world={world}",
            f"runs=[{','.join(runs)}]",
            f"hydra.run.dir={eval_dir}",
            "overwrite=true",  # the demo's own evaluation: a rerun replaces it (as one set)
            *knobs["eval"],
        ],
        "evaluate every method",
    )
    results = EvaluationLayout(eval_dir).results()
    print(f"\nDemo done in {(time.time() - t0) / 60:.1f} min. Tables: {eval_dir / 'tables.md'}")
    print("Figures:\n  " + "\n  ".join(results["figures"]))
    print(f"Notebook: LOCSENS_EVAL_DIRS={eval_dir} jupyter lab notebooks/analysis.ipynb")
    print(f"Explorer: python explore.py run={runs[0]} eval=[{eval_dir}]   (then open http://127.0.0.1:8765/)")


if __name__ == "__main__":
    main(sys.argv[1:])
