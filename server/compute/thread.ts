// Worker-thread entry: answers {id, op, args} messages with the Jobs' results, one job at a time
// (one wasm instance, and the cores are shared with the workers).
import { parentPort, workerData } from 'node:worker_threads';
import { selectBackend } from '../../node/backend';
import { BlobStoreSpec, openBlobStore } from '../blob-store-spec';
import { InputError, Jobs } from './jobs';

type Op = 'importModel' | 'prepare' | 'evaluate' | 'finalize' | 'merge' | 'angles' | 'soup';

const ready = (async () => {
  await selectBackend('wasm', { threads: 1 });
  return new Jobs(openBlobStore(workerData.blobs as BlobStoreSpec));
})();

let queue: Promise<unknown> = Promise.resolve();
parentPort!.on('message', (msg: { id: number; op: Op; args: never }) => {
  queue = queue.then(async () => {
    try {
      const jobs = await ready;
      const progress = (message: string): void => parentPort!.postMessage({ id: msg.id, progress: message });
      const result = await (jobs[msg.op] as (a: never, p: typeof progress) => Promise<unknown>).call(jobs, msg.args, progress);
      parentPort!.postMessage({ id: msg.id, ok: true, result });
    } catch (e) {
      const error = e instanceof Error ? e.message : String(e);
      parentPort!.postMessage({ id: msg.id, ok: false, error, fault: e instanceof InputError ? 'input' : 'internal' });
    }
  });
});
