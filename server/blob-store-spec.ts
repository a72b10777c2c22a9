// How to open the server's blob store, as data: the compute thread opens its own from this.
import { join } from 'node:path';
import { BlobStore, LocalBlobStore, RemoteBlobStore, RemoteStoreOptions, S3BlobStore, S3Config } from '../storage';
import type { ServerConfig } from './config';

export type BlobStoreSpec =
  | { readonly kind: 's3'; readonly s3: S3Config }
  | ({ readonly kind: 'remote' } & RemoteStoreOptions)
  | { readonly kind: 'local'; readonly root: string; readonly secret: string; readonly baseUrl: string };

export function blobStoreSpec(config: ServerConfig, serverUrl: string): BlobStoreSpec {
  if (config.s3) return { kind: 's3', s3: { ...config.s3, bucket: config.bucket, region: config.region } };
  if (config.blobServer) {
    const { url, publicUrl } = config.blobServer;
    return { kind: 'remote', baseUrl: `${url}/blobs`, publicBaseUrl: publicUrl && `${publicUrl}/blobs`, secret: config.secret };
  }
  // One address for every worker: the public one when a proxy sits in front.
  return { kind: 'local', root: join(config.dataDir, 'blobs'), secret: config.secret, baseUrl: `${config.publicUrl ?? serverUrl}/blobs` };
}

export function openBlobStore(spec: BlobStoreSpec): BlobStore {
  if (spec.kind === 's3') return new S3BlobStore(spec.s3);
  if (spec.kind === 'remote') return new RemoteBlobStore(spec);
  return new LocalBlobStore({ root: spec.root, secret: spec.secret, baseUrl: spec.baseUrl });
}
