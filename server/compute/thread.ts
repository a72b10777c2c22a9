// Worker-thread entry: answers {id, op, args} messages with its lane's jobs' results, one job at a
// time (the runs lane: one wasm instance, and the cores are shared with the workers).
import { parentPort, workerData } from 'node:worker_threads';
import { selectBackend } from '../../node/backend';
import { BlobStoreSpec, openBlobStore } from '../blob-store-spec';
import { isTransient } from '../../storage';
import type { Lane } from '.';
import { InputError, Jobs } from './jobs';
import { ShardJobs } from './shard-jobs';

const { lane, blobs } = workerData as { lane: Lane; blobs: BlobStoreSpec };
const ready: Promise<Jobs | ShardJobs> = lane === 'shards' ? Promise.resolve(new ShardJobs(openBlobStore(blobs))) : (async () => {
  await selectBackend('wasm', { threads: 1 });
  return new Jobs(openBlobStore(blobs));
})();

let queue: Promise<unknown> = Promise.resolve();
parentPort!.on('message', (msg: { id: number; op: string; args: never }) => {
  queue = queue.then(async () => {
    try {
      const jobs = await ready;
      const progress = (message: string): void => parentPort!.postMessage({ id: msg.id, progress: message });
      const result = await ((jobs as unknown as Record<string, (a: never, p: typeof progress) => Promise<unknown>>)[msg.op]).call(jobs, msg.args, progress);
      parentPort!.postMessage({ id: msg.id, ok: true, result });
    } catch (e) {
      const error = e instanceof Error ? e.message : String(e);
      parentPort!.postMessage({ id: msg.id, ok: false, error, fault: e instanceof InputError ? 'input' : isTransient(e) ? 'transient' : 'internal' });
    }
  });
});
