// Worker-thread entry: answers {id, op, args} messages with the Jobs' results.
import { parentPort, workerData } from 'node:worker_threads';
import { selectBackend } from '../../cli/backend';
import { S3BlobStore, S3Config } from '../../storage';
import { Jobs } from './jobs';

type Op = 'importModel' | 'prepare' | 'evaluate' | 'finalize' | 'merge' | 'angles' | 'soup';

const ready = (async () => {
  await selectBackend('wasm', { threads: 1 }); // beside workers that may share the cores
  return new Jobs(new S3BlobStore(workerData.s3 as S3Config));
})();

// One job at a time: the thread has one wasm instance and two cores to share with workers.
let queue: Promise<unknown> = Promise.resolve();
parentPort!.on('message', (msg: { id: number; op: Op; args: never }) => {
  queue = queue.then(async () => {
    try {
      const jobs = await ready;
      const progress = (message: string): void => parentPort!.postMessage({ id: msg.id, progress: message });
      const result = await (jobs[msg.op] as (a: never, p: typeof progress) => Promise<unknown>).call(jobs, msg.args, progress);
      parentPort!.postMessage({ id: msg.id, ok: true, result });
    } catch (e) {
      parentPort!.postMessage({ id: msg.id, ok: false, error: (e as Error).message });
    }
  });
});
