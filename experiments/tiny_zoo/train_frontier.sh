#!/usr/bin/env bash
# The tiny zoo's sparsity frontier: six recipes (TopK, ReLU+L1, BatchTopK, JumpReLU, Matryoshka
# BatchTopK, Multi-TopK) at L0 about 8, 16 and 32 at layer 2 resid_post_mlp, 256 latents
# (conf/experiment/train/tiny_frontier.yaml). The first run writes a float16 activation cache
# (logs/frontier/cache); every run trains from it, so the model runs once. A run whose
# train.json exists is skipped, so an interrupted script carries on. Then the SAEs are copied
# to the zoo in float16 (ship_frontier.py), evaluated in one sweep and tabulated for the model
# card (frontier_table.py). RECIPES="topk relu_l1" trains only those.
set -euo pipefail
cd "$(dirname "$0")/../.."
SAELAB=${SAELAB:-.venv/bin/saelab}
PYTHON=${PYTHON:-.venv/bin/python}
RECIPES=${RECIPES:-topk relu_l1 jumprelu batchtopk matryoshka multi_topk}

train() {  # name, then overrides
  local name=$1
  shift
  if [ ! -f "logs/train/runs/frontier_$name/train.json" ]; then
    $SAELAB train experiment=train/tiny_frontier seed=0 run_name="frontier_$name" "$@"
  fi
}

# each recipe's sparsity knob for L0 8, 16 and 32: k for the TopK family; for ReLU the L1
# coefficient and for JumpReLU its target_l0, calibrated on this shape (in 98 steps its
# thresholds lag the shrinking pre-activations: targets 16 and 44 ended at L0 13.4 and 31.4)
declare -A L1_COEF=([8]=0.6 [16]=0.4 [32]=0.27)
declare -A TARGET_L0=([8]=8 [16]=20 [32]=45)
for recipe in $RECIPES; do
  for l0 in 8 16 32; do
    case $recipe in
      relu_l1) train "${recipe}_$l0" recipe=relu_l1 recipe.l1_coef="${L1_COEF[$l0]}" ;;
      jumprelu) train "${recipe}_$l0" recipe=jumprelu recipe.target_l0="${TARGET_L0[$l0]}" recipe.l0_coef=1.0 \
        recipe.dead_tokens=25_000 ;;
      # the inference threshold is a running mean over ~1/threshold_lr steps: 0.05 for 98 steps
      batchtopk | matryoshka) train "${recipe}_$l0" recipe="$recipe" recipe.k="$l0" \
        recipe.dead_tokens=25_000 recipe.threshold_lr=0.05 ;;
      *) train "${recipe}_$l0" recipe="$recipe" recipe.k="$l0" recipe.dead_tokens=25_000 ;;
    esac
  done
done
[ "$RECIPES" = "topk relu_l1 jumprelu batchtopk matryoshka multi_topk" ] || exit 0

$PYTHON experiments/tiny_zoo/ship_frontier.py
$SAELAB sweep experiment=tiny_frontier logger=none run_name=tiny_frontier
$PYTHON experiments/tiny_zoo/frontier_table.py logs/sweep/runs/tiny_frontier
