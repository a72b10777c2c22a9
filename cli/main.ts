#!/usr/bin/env node
// partune: partial fine-tuning of Vision Transformers from the command line.
import { parseArgs } from 'node:util';
import { anglesCommand } from './angles';
import { soupCommand } from './soup';
import { storageServeCommand } from './storage';
import { datasetImportCommand, deltaDownloadCommand, deltaMergeCommand, modelRegisterCommand, runCommand, serveCommand, workerCommand } from './platform';
import { TRAIN_OPTION_NAMES, TRAIN_OPTION_SPECS } from '../engine';
import { flagOf } from './options';
import { Options, convertCommand, deltaApplyCommand, deltaInfoCommand, evalCommand, finetuneCommand, strategiesCommand } from './commands';

const USAGE = `usage:
  partune eval --checkpoint F [--config C | --arch A] --data SPEC [--split test|train|all] [--limit N] [--json]
  partune finetune --checkpoint F [--config C | --arch A] --data SPEC --strategy S --out DELTA
                   [--epochs E] [--lr LR] [--batch-size B] [--train-limit N] [--test-limit N] [--seed S]
                   [--head new|keep] [--crop-padding P] [--flip] [--weight-decay W] [--label-smoothing L]
                   [--warmup-steps N] [--min-lr LR] [--clip-grad G] [--delta-dtype f32|f16]
                   [--merged-out FILE] [--normalize auto|model|dataset] [--adapt]
                   [--prefix-cache off|f32|f16] [--prefix-cache-mib M] [--json]
  partune delta apply --checkpoint F --delta D --out MERGED [--dtype f32|f16]
  partune delta info D [--json]
  partune convert --checkpoint F [--config C | --arch A] --out TIMM.safetensors [--dtype f32|f16]
  partune angles --checkpoint F [--config C | --arch A] --data SPEC [--probe-epochs E | --probe-steps N]
                 [--top-k K | --budget P] [--direction largest|smallest] [--compare-probe-epochs E]
                 [--out STRATEGY.json] [--json]
  partune soup --checkpoint F --deltas D1 D2 ... --method uniform|greedy --data SPEC --out SOUP
               [--val-limit N] [--json]
  partune strategies [--arch NAME | --config C] [--classes K] [--json]

  platform (GraphQL server, workers, blob storage):
  partune serve [--port P] [--data-dir DIR] [--state postgres://...] [--workers N] [--backend B]
  partune storage serve [--port P] [--data-dir DIR]   (blobs for server replicas: PARTUNE_BLOB_URL)
  partune worker --server URL --token WORKER_TOKEN [--name N] [--backend B] [--max-shards N] [--memory-mib M]
  partune model register --name N --checkpoint F [--config C]          (client commands take
  partune dataset import --name N --format idx|cifar10|mnist-package    --server URL, default
                         [--path DIR (uploaded) | --server-path DIR]      http://127.0.0.1:4000/graphql,
                         [--train-limit N] [--test-limit N]
  partune run --model M --dataset D --strategy S [--epochs E] [--lr LR]  and --token, default the
              [--batch-size B] [--steps-per-round N] [--shards-per-round K] local server's admin token)
              [--aggregation fedavg|median|trimmed-mean|centered-clip]
              [--verification none|spot-check|quorum] [--quorum Q] [--spot-check-rate P]
              [--train-limit N] [--test-limit N] [--seed S] [--wait] [--out DELTA] [--json]
  partune delta download --run RUN_ID --out DELTA
  partune delta merge --run RUN_ID --name MODEL       (base + delta, registered as a new model)

  F: a .safetensors file (timm, vit-pytorch or Hugging Face names) or random:PRESET
  SPEC: mnist | fashion-mnist[:DIR] | idx:DIR | cifar10:DIR
  S: full, linear-probe, attn-only, ffn-only, first-half, last-half, first-half-attn,
     first-half-ffn, last-half-attn, last-half-ffn, inline JSON or @strategy.json
  common: --backend auto|tensorflow|webgpu|wasm|cpu  --quiet
          --blas auto|off|PATH  --threads N   (wasm: matrix products on the machine's BLAS, e.g. OpenBLAS;
                                               N threads, default every core, split among serve's workers)`;

// Every training option is a flag of its own name (engine/train/options.ts): --batch-size, --flip, ...
const TRAIN_FLAGS = TRAIN_OPTION_NAMES.map((name) => [flagOf(name).slice(2), TRAIN_OPTION_SPECS[name].kind === 'bool'] as const);
const VALUE_FLAGS = [
  ...TRAIN_FLAGS.filter(([, bool]) => !bool).map(([flag]) => flag),
  'checkpoint', 'config', 'arch', 'data', 'split', 'limit', 'strategy', 'out', 'head', 'delta-dtype', 'merged-out', 'delta', 'dtype', 'classes',
  'backend', 'prefix-cache', 'prefix-cache-mib', 'probe-epochs', 'probe-steps', 'top-k', 'budget', 'direction', 'method', 'deltas', 'val-limit',
  'compare-probe-epochs', 'port', 'data-dir', 'workers', 'server', 'token', 'name', 'max-shards', 'model', 'dataset', 'format', 'path', 'server-path', 'aggregation',
  'steps-per-round', 'shards-per-round', 'verification', 'quorum', 'spot-check-rate', 'run', 'memory-mib', 'blas', 'threads', 'state',
];
const BOOL_FLAGS = [...TRAIN_FLAGS.filter(([, bool]) => bool).map(([flag]) => flag), 'json', 'quiet', 'adapt', 'help', 'wait'];

async function main(argv: string[]): Promise<void> {
  const { values, positionals } = parseArgs({
    args: argv,
    allowPositionals: true,
    options: Object.fromEntries([
      ...VALUE_FLAGS.map((f) => [f, { type: 'string' as const }]),
      ...BOOL_FLAGS.map((f) => [f, { type: 'boolean' as const }]),
    ]),
  });
  const o = values as Options;
  const [command, sub, arg] = positionals;
  if (o.help || !command) {
    process.stdout.write(`${USAGE}\n`);
    return;
  }
  let result: Record<string, unknown>;
  if (command === 'eval') result = await evalCommand(o);
  else if (command === 'finetune') result = await finetuneCommand(o);
  else if (command === 'strategies') result = await strategiesCommand(o);
  else if (command === 'convert') result = await convertCommand(o);
  else if (command === 'angles') result = await anglesCommand(o);
  else if (command === 'soup') result = await soupCommand(o, positionals.slice(1));
  else if (command === 'delta' && sub === 'apply') result = await deltaApplyCommand(o);
  else if (command === 'delta' && sub === 'info' && arg) result = await deltaInfoCommand(arg, o);
  else if (command === 'delta' && sub === 'download') result = await deltaDownloadCommand(o);
  else if (command === 'delta' && sub === 'merge') result = await deltaMergeCommand(o);
  else if (command === 'serve') result = await serveCommand(o);
  else if (command === 'storage' && sub === 'serve') result = await storageServeCommand(o);
  else if (command === 'worker') result = await workerCommand(o);
  else if (command === 'model' && sub === 'register') result = await modelRegisterCommand(o);
  else if (command === 'dataset' && sub === 'import') result = await datasetImportCommand(o);
  else if (command === 'run') result = await runCommand(o);
  else throw new Error(`unknown command '${positionals.join(' ')}'\n${USAGE}`);
  if (o.json) process.stdout.write(`${JSON.stringify(result)}\n`);
}

main(process.argv.slice(2)).catch((e: Error) => {
  process.stderr.write(`partune: ${e.message}\n`);
  process.exit(1);
});
