// Every command with the flags it takes, what it requires and its usage lines: parsed strictly per
// command, so a flag a command does not take is refused rather than silently ignored.
import { PRESETS, TRAIN_OPTION_NAMES, TRAIN_OPTION_SPECS } from '../engine';
import { anglesCommand } from './angles';
import { Options, convertCommand, deltaApplyCommand, deltaInfoCommand, evalCommand, finetuneCommand, strategiesCommand } from './commands';
import { datasetImportCommand, deltaDownloadCommand, deltaMergeCommand, modelRegisterCommand, runCommand, serveCommand, workerCommand } from './platform';
import { flagOf } from './options';
import { predictCommand } from './predict';
import { runsCancelCommand, runsListCommand, runsShowCommand } from './runs';
import { soupCommand } from './soup';
import { storageServeCommand } from './storage';

export interface Command {
  readonly name: string;
  readonly usage: string;
  readonly flags: readonly string[];
  readonly required?: readonly string[];
  /** Positional arguments after the command's name: none unless said. */
  readonly positionals?: { readonly min: number; readonly max: number; readonly name: string };
  readonly run: (o: Options, args: string[]) => Promise<Record<string, unknown>>;
}

/** Every training option is a flag of its own name (engine/train/options.ts): --batch-size, --flip, ... */
const TRAIN = [...TRAIN_OPTION_NAMES.map((name) => flagOf(name).slice(2)), 'no-resized-crop'];
export const BOOLEAN_FLAGS = new Set([
  ...TRAIN_OPTION_NAMES.filter((n) => TRAIN_OPTION_SPECS[n].kind === 'bool').map((n) => flagOf(n).slice(2)), 'json', 'quiet', 'adapt', 'help', 'wait',
  'admit-volunteers', 'private', 'skip-bad', 'no-resized-crop',
]);
/** Taken by every command. */
export const COMMON = ['json', 'quiet', 'help'];
const ENGINE = ['backend', 'blas', 'threads'];
const MODEL = ['checkpoint', 'config', 'arch'];
/** The seeded subsets of --data a command evaluates or normalises with: the same images in every command. */
const DATA = ['data', 'adapt', 'train-limit', 'test-limit', 'seed', 'normalize', 'storage-size', 'skip-bad'];
const CLIENT = ['server', 'token', 'data-dir'];

export const COMMANDS: readonly Command[] = [
  {
    name: 'eval', flags: [...ENGINE, ...MODEL, ...DATA, 'split', 'batch-size'], required: ['checkpoint', 'data'], run: evalCommand,
    usage: 'partune eval --checkpoint F [--config C | --arch A] --data SPEC [--split test|train] [--test-limit N] [--train-limit N] [--seed S]\n'
      + '             [--normalize auto|model|dataset] [--batch-size B] [--adapt] [--storage-size S] [--skip-bad] [--json]',
  },
  {
    name: 'finetune', required: ['checkpoint', 'data', 'strategy', 'out'], run: finetuneCommand,
    flags: [...ENGINE, ...MODEL, ...DATA, ...TRAIN, 'strategy', 'out', 'head', 'delta-dtype', 'merged-out', 'prefix-cache', 'prefix-cache-mib', 'image-size'],
    usage: 'partune finetune --checkpoint F [--config C | --arch A] --data SPEC --strategy S --out DELTA\n'
      + '                 [--epochs E] [--lr LR] [--batch-size B] [--train-limit N] [--test-limit N] [--seed S]\n'
      + '                 [--head new|keep] [--crop-padding P] [--flip] [--weight-decay W] [--label-smoothing L]\n'
      + '                 [--warmup-steps N] [--min-lr LR] [--clip-grad G] [--max-steps N] [--delta-dtype f32|f16]\n'
      + '                 [--merged-out FILE] [--normalize auto|model|dataset] [--adapt] [--image-size N (resamples pos_embed)]\n'
      + '                 [--resized-crop | --no-resized-crop] [--micro-batch M] [--storage-size S] [--skip-bad]\n'
      + '                 [--prefix-cache off|f32|f16] [--prefix-cache-mib M] [--json]',
  },
  {
    name: 'predict', flags: [...ENGINE, ...MODEL, 'delta', 'top'], required: ['checkpoint'], positionals: { min: 1, max: 10_000, name: 'IMAGE' },
    run: (o, images) => predictCommand(o, images),
    usage: 'partune predict --checkpoint F [--delta D] [--top K] [--json] IMAGE...   (top-5 classes by the model\'s eval transform)',
  },
  {
    name: 'delta apply', flags: [...ENGINE, ...MODEL, 'delta', 'out', 'dtype'], required: ['checkpoint', 'delta', 'out'], run: deltaApplyCommand,
    usage: 'partune delta apply --checkpoint F --delta D --out MERGED [--dtype f32|f16]   (the merged file carries the normalisation trained with)',
  },
  {
    name: 'delta info', flags: [], positionals: { min: 1, max: 1, name: 'DELTA' }, run: (o, [path]) => deltaInfoCommand(path, o),
    usage: 'partune delta info DELTA [--json]',
  },
  {
    name: 'convert', flags: [...ENGINE, ...MODEL, 'out', 'dtype', 'image-size'], required: ['checkpoint', 'out'], run: convertCommand,
    usage: 'partune convert --checkpoint F [--config C | --arch A] --out TIMM.safetensors [--dtype f32|f16] [--image-size N (resamples pos_embed)]',
  },
  {
    name: 'angles', required: ['checkpoint', 'data'], run: anglesCommand,
    flags: [...ENGINE, ...MODEL, ...DATA, ...TRAIN, 'probe-epochs', 'probe-steps', 'top-k', 'budget', 'direction', 'compare-probe-epochs', 'out'],
    usage: 'partune angles --checkpoint F [--config C | --arch A] --data SPEC [--probe-epochs E | --probe-steps N]\n'
      + '               [--top-k K | --budget P] [--direction largest|smallest] [--compare-probe-epochs E]\n'
      + '               [training options as finetune\'s] [--out STRATEGY.json] [--json]',
  },
  {
    name: 'soup', flags: [...ENGINE, ...MODEL, ...DATA, 'deltas', 'method', 'out', 'val-limit'], required: ['checkpoint', 'deltas', 'data', 'out'],
    positionals: { min: 0, max: 1000, name: 'DELTA' }, run: soupCommand,
    usage: 'partune soup --checkpoint F --deltas D1 D2 ... --method uniform|greedy --data SPEC --out SOUP\n'
      + '             [--val-limit N] [--test-limit N] [--seed S] [--json]',
  },
  {
    name: 'strategies', flags: ['arch', 'config', 'classes'], run: strategiesCommand,
    usage: 'partune strategies [--arch NAME | --config C] [--classes K] [--json]',
  },
  {
    name: 'serve', flags: [...ENGINE, 'port', 'data-dir', 'state', 'workers'], run: serveCommand,
    usage: 'partune serve [--port P] [--data-dir DIR] [--state postgres://...] [--workers N] [--backend B]',
  },
  {
    name: 'storage serve', flags: ['port', 'data-dir'], run: storageServeCommand,
    usage: 'partune storage serve [--port P] [--data-dir DIR]   (blobs for server replicas: PARTUNE_BLOB_URL)',
  },
  {
    name: 'worker', flags: [...ENGINE, 'server', 'token', 'name', 'max-shards', 'memory-mib'], required: ['server', 'token'], run: workerCommand,
    usage: 'partune worker --server URL --token WORKER_TOKEN [--name N] [--backend B] [--max-shards N] [--memory-mib M]',
  },
  {
    name: 'model register', flags: [...CLIENT, 'name', 'checkpoint', 'config', 'arch'], required: ['name', 'checkpoint'], run: modelRegisterCommand,
    usage: 'partune model register --name N --checkpoint F [--config C | --arch A]   (F may be random:PRESET)',
  },
  {
    name: 'dataset import',
    flags: [...CLIENT, 'name', 'format', 'path', 'server-path', 'train-limit', 'test-limit', 'private', 'storage-size', 'skip-bad', 'test-fraction'],
    required: ['name', 'format'], run: datasetImportCommand,
    usage: 'partune dataset import --name N --format idx|cifar10|mnist-package|folder [--path DIR (uploaded) | --server-path DIR]\n'
      + '                       [--train-limit N] [--test-limit N] [--private (its runs never admit volunteers)]\n'
      + '                       folder: [--storage-size S (default 256)] [--skip-bad] [--test-fraction F (default 0.2)]',
  },
  {
    name: 'run', required: ['model', 'dataset', 'strategy'], run: runCommand,
    flags: [...CLIENT, ...TRAIN, 'model', 'dataset', 'strategy', 'steps-per-round', 'shards-per-round', 'aggregation', 'verification', 'quorum', 'spot-check-rate',
      'admit-volunteers', 'wait', 'out'],
    usage: 'partune run --model M --dataset D --strategy S [--epochs E] [--lr LR] [--batch-size B] [training options as finetune\'s]\n'
      + '            [--steps-per-round N] [--shards-per-round K|auto] [--aggregation fedavg|median|trimmed-mean|centered-clip]\n'
      + '            [--verification none|spot-check|quorum] [--quorum Q] [--spot-check-rate P] [--admit-volunteers] [--wait] [--out DELTA] [--json]',
  },
  {
    name: 'runs list', flags: [...CLIENT, 'status', 'model', 'dataset', 'first'], run: runsListCommand,
    usage: 'partune runs list [--status running|succeeded|failed|...] [--model M] [--dataset D] [--first N (default 20)]',
  },
  { name: 'runs show', flags: CLIENT, positionals: { min: 1, max: 1, name: 'RUN_ID' }, run: runsShowCommand, usage: 'partune runs show RUN_ID' },
  { name: 'runs cancel', flags: CLIENT, positionals: { min: 1, max: 1, name: 'RUN_ID' }, run: runsCancelCommand, usage: 'partune runs cancel RUN_ID' },
  { name: 'delta download', flags: [...CLIENT, 'run', 'out'], required: ['run', 'out'], run: deltaDownloadCommand, usage: 'partune delta download --run RUN_ID --out DELTA' },
  {
    name: 'delta merge', flags: [...CLIENT, 'run', 'name'], required: ['run', 'name'], run: deltaMergeCommand,
    usage: 'partune delta merge --run RUN_ID --name MODEL   (base + delta, registered as a new model)',
  },
];

export const FOOTER = `  F: a .safetensors file (timm, vit-pytorch or Hugging Face names) or random:PRESET
  PRESET: ${Object.keys(PRESETS).join(', ')}
  SPEC: mnist | fashion-mnist[:DIR] | idx:DIR | cifar10:DIR | folder:PATH (class folders, .zip, .tar, .csv/.jsonl manifest, WebDataset shards)
  S: full, linear-probe, attn-only, ffn-only, first-half, last-half, first-half-attn,
     first-half-ffn, last-half-attn, last-half-ffn, inline JSON or @strategy.json
  --test-limit N / --train-limit N: the same seeded images (--seed) in every command
  engine commands: --backend auto|tensorflow|webgpu|wasm|cpu  --blas auto|off|engine|PATH  --threads N
  client commands: --server URL (default $PARTUNE_SERVER or http://127.0.0.1:4000/graphql) --token T (default the local server's admin token)
  every command: --json (one line of JSON on stdout)  --quiet  --help
  exit status: 0 done, 1 failed, 2 a usage or value error (the flag named)  --version`;

export const usage = (commands: readonly Command[] = COMMANDS): string => `usage:\n${commands.map((c) => `  ${c.usage.replace(/\n/g, '\n  ')}`).join('\n')}\n\n${FOOTER}`;
