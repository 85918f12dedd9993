#!/bin/bash
# Issue 14's tables on the demo world (after `make demo`): the learned prior, LocSens + prior skip, the
# location-encoder rows, one evaluation with every prior; then the same methods on a spatial-block split
# (whole H3 cells in test: places never seen in training). Each step is skipped when its run finished.
cd "$(dirname "$0")/.."  # the repository root
O=outputs/location; D=${LOCSENS_LOG_DIR:-outputs}/demo-demo; mkdir -p $O
PY=.venv/bin/python
run() { dir=$1; shift; [ -f $dir/metrics.json ] && return; echo "=== $dir $(date +%T)"; $PY train.py hydra.run.dir=$dir trainer.enable_progress_bar=false "$@" > $dir.log 2>&1 || echo "FAILED $dir"; }
best() { echo $1/$($PY -c "import json; print(json.load(open('$1/metrics.json'))['best_checkpoint'])"); }
PRIORS='+methods.knn_prior={kind:prior,prior:knn,k:100} +methods.kde_prior={kind:prior,prior:kde,bandwidth_km:25}
 +methods.mcc_x_knn_prior={kind:product_of_experts,visual:mcc,prior:knn_prior}
 +methods.mcc_x_kde_prior={kind:product_of_experts,visual:mcc,prior:kde_prior}'

# --- demo world (random split) -------------------------------------------------------------------------
W=demo
run $O/geo_prior experiment=geo_prior world=$W
GP=$(best $O/geo_prior)
EPOCHS=trainer.max_epochs=2   # as make demo's raw LocSens: its best checkpoint of 4 epochs is after epoch 2
run $O/prior_skip experiment=locsens world=$W $EPOCHS "model.prior_skip={checkpoint:$GP}"
for enc in latlon wrap sphere_multiscale spherical_harmonics geoclip; do
  run $O/enc_$enc experiment=locsens world=$W $EPOCHS model/location_encoder=$enc
done
run $O/enc_geoclip_finetuned experiment=locsens world=$W $EPOCHS model/location_encoder=geoclip model.location_encoder.frozen=false
# the diagnosis: every negative a tag swap (or a location swap), so more absent tags are contrasted at a place
run $O/all_tag_negatives experiment=locsens world=$W $EPOCHS data.tag_swap_prob=1.0
echo "=== evaluate $W $(date +%T)"
rm -rf $O/recipe; cp -r $D/locsens_raw $O/recipe
$PY evaluate.py world=$W hydra.run.dir=$O/evaluation overwrite=true shortlist=cascade \
  "runs=[$O/geo_prior,$O/recipe,$O/prior_skip,$O/enc_latlon,$O/enc_wrap,$O/enc_sphere_multiscale,$O/enc_spherical_harmonics,$O/enc_geoclip,$O/enc_geoclip_finetuned,$O/all_tag_negatives]" \
  $PRIORS "+methods.mcc_x_learned_prior={kind:product_of_experts,visual:mcc,prior:geo_prior}" \
  methods.mlc=null methods.her=null methods.global_frequency=null > $O/evaluation.log 2>&1 || echo "FAILED eval $W"

# --- spatial-block split: whole H3 cells (resolution 2, ~87,000 km^2) in test ------------------------------
W=demo_cell; C=$O/cell; mkdir -p $C
$PY prepare.py world=$W source.size=demo ingest.split.by=cell > $C/prepare.log 2>&1 || echo "FAILED prepare $W"
run $C/mcc experiment=mcc world=$W trainer.max_epochs=3
[ -f data/$W/embeddings/mcc.h5 ] || $PY export.py checkpoint=$(best $C/mcc) world=$W embeddings_path=data/$W/embeddings/mcc.h5 > $C/export.log 2>&1
run $C/geo_prior experiment=geo_prior world=$W
run $C/recipe experiment=locsens world=$W $EPOCHS
run $C/prior_skip experiment=locsens world=$W $EPOCHS "model.prior_skip={checkpoint:$(best $C/geo_prior)}"
echo "=== evaluate $W $(date +%T)"
$PY evaluate.py world=$W hydra.run.dir=$C/evaluation overwrite=true shortlist=cascade \
  "runs=[$C/geo_prior,$C/recipe,$C/prior_skip]" $PRIORS "+methods.mcc_x_learned_prior={kind:product_of_experts,visual:mcc,prior:geo_prior}" \
  methods.mlc=null methods.her=null methods.global_frequency=null > $C/evaluation.log 2>&1 || echo "FAILED eval $W"
echo "=== done $(date +%T)"
