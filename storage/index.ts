// Object storage: one BlobStore interface, an S3 implementation, and the embedded S3 server.
export * from './blob-store';
export * from './s3';
export * from './embedded';
export * from './keys';
