#!/usr/bin/env bash
# Fine-tunes the shared vit-mnist-500k on Fashion-MNIST with each preset strategy (same budget),
# writing one JSON line per run to bench/results/presets-fashion-mnist.jsonl.
set -euo pipefail
cd "$(dirname "$0")/.."
model=${MODEL:-../shared/data/vit-mnist-500k}
cli=${CLI:-dist/cli/main.js}
out=bench/results/presets-fashion-mnist.jsonl
[ -n "${APPEND:-}" ] || : > "$out"
for s in ${STRATEGIES:-full linear-probe attn-only ffn-only first-half last-half first-half-attn first-half-ffn last-half-attn last-half-ffn}; do
  node "$cli" finetune --checkpoint "$model/model.safetensors" --config "$model/config.json" \
    --data fashion-mnist --strategy "$s" --train-limit "${TRAIN:-5000}" --test-limit "${TEST:-2000}" \
    --epochs "${EPOCHS:-2}" --lr "${LR:-1e-3}" --batch-size 32 --out "/tmp/partune-$s.delta.safetensors" --json --quiet >> "$out"
  tail -n 1 "$out"
done
