// `partune storage serve`: the embedded blob store as a process of its own, for server replicas
// that share it (small deployments and the tests; MinIO or any S3 in larger ones).
import { join, resolve } from 'node:path';
import { startBlobServer } from '../storage';
import { Options, num, say, str } from './commands';

export async function storageServeCommand(o: Options): Promise<Record<string, unknown>> {
  const secret = process.env.PARTUNE_SECRET;
  if (!secret) throw new Error('PARTUNE_SECRET must be set: the store checks every URL against it, and each server replica signs with the same one');
  const root = join(resolve(str(o, 'data-dir') ?? 'partune-storage'), 'blobs');
  const server = await startBlobServer({
    root, secret, previousSecrets: (process.env.PARTUNE_PREVIOUS_SECRETS ?? '').split(/[,\s]+/).filter(Boolean),
    host: process.env.HOST ?? '127.0.0.1', port: num(o, 'port', 4100, true),
    allowedOrigins: (process.env.PARTUNE_ALLOWED_ORIGINS ?? '').split(/[,\s]+/).filter(Boolean),
  });
  say(o, `partune storage: ${server.url} (blobs in ${root}); point the servers' PARTUNE_BLOB_URL here`);
  await new Promise<void>((done) => {
    const stop = (): void => void server.close().finally(done);
    process.once('SIGINT', stop);
    process.once('SIGTERM', stop);
  });
  return { stopped: true };
}
