#!/bin/bash
# The README's LocSens ablation on the demo world (after `make demo`): one training run per row,
# leave-one-out from experiment=locsens, then one evaluation with the demo's raw and zeroed runs.
cd "$(dirname "$0")/.."  # the repository root
mkdir -p outputs/ablation
run() { name=$1; shift; [ -f outputs/ablation/$name/metrics.json ] && return; echo "=== $name $(date +%T)"; .venv/bin/python train.py world=demo hydra.run.dir=outputs/ablation/$name trainer.enable_progress_bar=false "$@" > outputs/ablation/$name.log 2>&1 || echo "FAILED $name"; }
run paper_small experiment=locsens_paper_small
run raw2d experiment=locsens_raw2d
run no_skip experiment=locsens model.scorer.similarity_skip=false
run no_products experiment=locsens model.scorer.pairwise_products=false
run grid_lr_x1 experiment=locsens model.location_encoder.lr_scale=1.0
run latlon experiment=locsens model/location_encoder=latlon
run wrap experiment=locsens model/location_encoder=wrap
run sphere experiment=locsens model/location_encoder=sphere_multiscale
run uniform_negatives experiment=locsens data.tag_negative_power=0.0
run no_location_swap experiment=locsens data.location_swap_prob=0.0
echo "=== evaluate $(date +%T)"
R=outputs/ablation; D=${LOCSENS_LOG_DIR:-outputs}/demo-demo  # make demo's LocSens runs (raw and zeroed)
mkdir -p $R; rm -rf $R/recipe $R/zeroed; cp -r $D/locsens_raw $R/recipe; cp -r $D/locsens_zeroed $R/zeroed
.venv/bin/python evaluate.py world=demo "runs=[$R/recipe,$R/zeroed,$R/paper_small,$R/raw2d,$R/no_skip,$R/no_products,$R/grid_lr_x1,$R/latlon,$R/wrap,$R/sphere,$R/uniform_negatives,$R/no_location_swap]" \
  hydra.run.dir=$R/evaluation limit_test_images=500 retrieval.limit_candidates=3000 retrieval.max_queries=1000 \
  methods.mlc=null methods.her=null methods.global_frequency=null methods.country_frequency=null methods.mcc_x_town_prior=null > $R/evaluation.log 2>&1 || echo "FAILED eval"
echo "=== done $(date +%T)"
