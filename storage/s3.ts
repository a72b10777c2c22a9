// BlobStore over any S3 API (MinIO, AWS, the embedded server) with the minio client.
import { Client } from 'minio';
import { BlobInfo, BlobStore, sha256, verify } from './blob-store';
import { retrying } from './transient';

export interface S3Config {
  readonly endpoint: string; // http(s)://host:port
  readonly accessKey: string;
  readonly secretKey: string;
  readonly bucket: string;
  readonly region: string;
  /** The endpoint as workers and browsers reach it, when it differs (e.g. inside docker compose). */
  readonly publicEndpoint?: string;
}

const SHA_HEADER = 'x-amz-meta-sha256';

function client(endpoint: string, c: S3Config): Client {
  const url = new URL(endpoint);
  return new Client({
    endPoint: url.hostname,
    port: Number(url.port || (url.protocol === 'https:' ? 443 : 80)),
    useSSL: url.protocol === 'https:',
    accessKey: c.accessKey,
    secretKey: c.secretKey,
    region: c.region, // saves a bucket-location request per call
    pathStyle: true,
  });
}

export class S3BlobStore implements BlobStore {
  private readonly client: Client;
  private readonly signer: Client;
  readonly description: string;

  constructor(private readonly config: S3Config) {
    this.client = client(config.endpoint, config);
    this.signer = config.publicEndpoint ? client(config.publicEndpoint, config) : this.client;
    this.description = `s3://${config.bucket} at ${config.endpoint}`;
  }

  async ensureBucket(): Promise<void> {
    if (!(await this.client.bucketExists(this.config.bucket))) await this.client.makeBucket(this.config.bucket, this.config.region);
  }

  async put(key: string, bytes: Uint8Array): Promise<BlobInfo & { sha256: string }> {
    const hash = sha256(bytes);
    await retrying(() => this.client.putObject(this.config.bucket, key, Buffer.from(bytes.buffer, bytes.byteOffset, bytes.byteLength), bytes.byteLength, {
      'Content-Type': 'application/octet-stream', [SHA_HEADER]: hash,
    }));
    return { key, bytes: bytes.byteLength, sha256: hash };
  }

  async get(key: string, expected?: string): Promise<Uint8Array> {
    let recorded: string | undefined;
    if (expected === undefined) recorded = (await this.stat(key))?.sha256;
    const buf = await retrying(async () => {
      const stream = await this.client.getObject(this.config.bucket, key);
      const chunks: Buffer[] = [];
      for await (const chunk of stream) chunks.push(chunk as Buffer);
      return Buffer.concat(chunks);
    });
    return verify(key, new Uint8Array(buf.buffer, buf.byteOffset, buf.byteLength), expected ?? recorded);
  }

  async stat(key: string): Promise<BlobInfo | null> {
    try {
      const s = await retrying(() => this.client.statObject(this.config.bucket, key));
      const meta = s.metaData as Record<string, string>;
      return { key, bytes: s.size, sha256: meta.sha256 ?? meta[SHA_HEADER] };
    } catch (e) {
      if ((e as { code?: string }).code === 'NotFound' || (e as { code?: string }).code === 'NoSuchKey') return null;
      throw e;
    }
  }

  async remove(key: string): Promise<void> {
    await retrying(() => this.client.removeObject(this.config.bucket, key));
  }

  async list(prefix: string): Promise<string[]> {
    return retrying(
      () =>
        new Promise<string[]>((resolve, reject) => {
          const names: string[] = [];
          this.client.listObjectsV2(this.config.bucket, `${prefix}/`, true)
            .on('data', (o: { name?: string }) => o.name && names.push(o.name))
            .on('error', reject)
            .on('end', () => resolve(names));
        }),
    );
  }

  presignGet(key: string, seconds: number, internal = false): Promise<string> {
    return (internal ? this.client : this.signer).presignedGetObject(this.config.bucket, key, seconds);
  }

  /** S3 cannot bind a size to a presigned PUT: the server checks the size after the upload. */
  presignPut(key: string, seconds: number, internal = false): Promise<string> {
    return (internal ? this.client : this.signer).presignedPutObject(this.config.bucket, key, seconds);
  }
}
