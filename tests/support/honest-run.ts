// What every abuse test measures an attack against: a real `partune serve`, one honest (trusted)
// Node worker process, and an honest run whose delta must come out bit for bit as `partune
// finetune` makes it in a single process, whatever the attacker did meanwhile.
import { mkdtempSync, readFileSync } from 'node:fs';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import { deltaTensors, sameDelta } from '../../bench/trust-fleet';
import { ServerProcess, WorkerProcess, cliJson, ok, startServer, startWorker, uploadBytes, waitForRun } from '../../node/local-platform';

// One shard per round: bit-identical to one process whatever the round's length; short rounds
// leave attackers rounds to claim.
export const HYPER = { epochs: 2, batchSize: 32, stepsPerRound: 4, shardsPerRound: 1, seed: 0, admitVolunteers: true };

export interface HonestRun {
  readonly server: ServerProcess;
  readonly worker: WorkerProcess;
  readonly runId: string;
  readonly tmp: string;
  /** Waits for the run (through `via`, by default the server it started on) and checks it against the single-process reference. */
  /** The run's end beside the single-process reference; `error` is the run's own, where it did not succeed. */
  finish(via?: ServerProcess): Promise<{ status: string; identical: boolean; accuracy: number; reference: number; error?: string }>;
  close(): Promise<void>;
}


export async function startHonestRun(env: NodeJS.ProcessEnv = {}): Promise<HonestRun> {
  const tmp = mkdtempSync(join(tmpdir(), 'partune-abuse-'));
  const micro = join(tmp, 'micro.safetensors');
  await cliJson(['convert', '--checkpoint', 'random:vit_micro_patch4_28', '--out', micro]);
  const referencePath = join(tmp, 'reference.safetensors');
  const reference = cliJson(['finetune', '--checkpoint', micro, '--data', 'mnist', '--strategy', 'attn-only', '--train-limit', '1024', '--test-limit', '400',
    '--epochs', '2', '--batch-size', '32', '--seed', '0', '--backend', 'wasm', '--out', referencePath]);
  const server = await startServer({ PARTUNE_LEASE_SECONDS: '15', PARTUNE_STALL_SECONDS: '30', PARTUNE_IMPORT_ROOTS: tmp, ...env });
  const uploadId = await uploadBytes(server, 'micro.safetensors', readFileSync(micro));
  await ok(server.url, server.admin, 'mutation($i: RegisterModelInput!) { registerModel(input: $i) { id } }', { i: { name: 'micro', uploadId } });
  await ok(server.url, server.admin, 'mutation($i: ImportDatasetInput!) { importDataset(input: $i) { id } }',
    { i: { name: 'digits', format: 'MNIST_PACKAGE', trainLimit: 1024, testLimit: 400 } });
  const worker = startWorker(server, 'honest');
  const { startRun } = await ok(server.url, server.admin, 'mutation($i: StartRunInput!) { startRun(input: $i) { id } }',
    { i: { model: 'micro', dataset: 'digits', strategy: 'attn-only', hyperParameters: HYPER } });
  return {
    server, worker, runId: startRun.id, tmp,
    async finish(via = server) {
      const run = await waitForRun(via, startRun.id, 300_000);
      const ref = await reference;
      if (run.status !== 'SUCCEEDED') return { status: run.status, identical: false, accuracy: NaN, reference: ref.accuracy, error: run.error };
      const ours = deltaTensors(new Uint8Array(await (await fetch(run.delta.downloadUrl)).arrayBuffer()));
      const identical = sameDelta(ours, deltaTensors(new Uint8Array(readFileSync(referencePath))));
      return { status: run.status, identical, accuracy: run.accuracy, reference: ref.accuracy };
    },
    async close() {
      await worker.kill();
      await server.stop();
    },
  };
}

/** The server process's resident memory in MiB (Linux). */
export function residentMiB(server: ServerProcess): number {
  const status = readFileSync(`/proc/${server.proc.pid}/status`, 'utf8');
  return Number(/VmRSS:\s+(\d+) kB/.exec(status)![1]) / 1024;
}
