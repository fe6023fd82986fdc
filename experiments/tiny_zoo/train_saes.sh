#!/usr/bin/env bash
# Train the tiny zoo's SAEs with `saelab train experiment=train/tiny` (the bundled training
# split; see conf/experiment/train/tiny.yaml) and copy them into
# saelab/zoo/tiny/saes/<family>/<location>/<layer>.pt (OpenAI's format).
#   TopK (k=16, 2048 latents): resid_post_mlp at every layer and resid_delta_mlp at layer 2,
#   all trained from one model forward per batch; ReLU+L1: resid_post_mlp at layer 2.
# Deterministic for a given seed; about 15 minutes on 2 CPU cores.
set -euo pipefail
cd "$(dirname "$0")/../.."
SAELAB=${SAELAB:-.venv/bin/saelab}
common=(experiment=train/tiny seed=0)

$SAELAB train "${common[@]}" run_name=zoo_topk recipe.k=16 recipe.dead_tokens=200_000
$SAELAB train "${common[@]}" run_name=zoo_topk_delta recipe.k=16 recipe.dead_tokens=200_000 \
  layer=2 location=resid_delta_mlp
# OpenAI's 0.01 leaves this 256-wide layer dense (L0 572 of 2048); 0.08 weighs L1 against
# reconstruction as the earlier (variance-scaled MSE) loss did with 0.1: see the model card.
$SAELAB train "${common[@]}" run_name=zoo_relu_0.08 recipe=relu_l1 recipe.l1_coef=0.08 \
  layer=2 location=resid_post_mlp

copy() {  # run family location layer
  mkdir -p "saelab/zoo/tiny/saes/$2/$3"
  cp "logs/train/runs/$1/saes/blocks.$4.$5/sae.pt" "saelab/zoo/tiny/saes/$2/$3/$4.pt"
}
for layer in 0 1 2 3; do copy zoo_topk topk resid_post_mlp "$layer" hook_resid_post; done
copy zoo_topk_delta topk resid_delta_mlp 2 hook_mlp_out
copy zoo_relu_0.08 relu_l1 resid_post_mlp 2 hook_resid_post
