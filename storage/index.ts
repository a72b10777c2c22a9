// Object storage: one BlobStore interface; blobs on the local disk behind signed URLs (the
// embedded default) and any S3 API (MinIO, AWS) for deployments.
export * from './blob-store';
export * from './transient';
export * from './s3';
export * from './local';
export * from './signed-url';
export * from './keys';
export * from './blob-http';
export * from './legacy';
export * from './remote';
export * from './blob-server';
