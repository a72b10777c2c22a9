#!/usr/bin/env bash
# The GPU check, in one command: for each WebGPU that this machine offers (Node's Dawn through the
# `webgpu` package, and headless Chromium), (a) the adapter, (b) one training step against the cpu
# backend, (c) training img/s and memory per step of vit_small_patch16_224 and the width-192 ViT,
# full and attn-only, on real GPUs only (a software adapter gets the correctness check alone),
# (d) JSON in bench/results/gpu-DATE.json, or in DIR with --out DIR.
#   bash bench/gpu/run.sh [--out DIR]
# Needs `npm ci` (and `npm run build`, done here when dist/ is missing). On a machine without a
# Vulkan loader or driver, Chromium's own loader and its SwiftShader driver stand in.
set -euo pipefail
cd "$(dirname "$0")/../.."
[ -f dist/bench/gpu-check.js ] || npm run build >&2
if ! ldconfig -p 2>/dev/null | grep -q 'libvulkan.so.1 ' && [ -f /usr/lib/chromium/libvulkan.so.1 ]; then
  export LD_LIBRARY_PATH="/usr/lib/chromium${LD_LIBRARY_PATH:+:$LD_LIBRARY_PATH}"
fi
drivers=$(ls /usr/share/vulkan/icd.d/*.json /etc/vulkan/icd.d/*.json /usr/local/nvidia/share/vulkan/icd.d/*.json 2>/dev/null || true)
if [ -z "${VK_ICD_FILENAMES:-}${VK_DRIVER_FILES:-}" ] && [ -z "$drivers" ] && [ -f /usr/lib/chromium/vk_swiftshader_icd.json ]; then
  export VK_ICD_FILENAMES=/usr/lib/chromium/vk_swiftshader_icd.json
fi
exec node dist/bench/gpu-check.js "$@"
