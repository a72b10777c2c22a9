// s3rver ships no types: the part Partune uses.
declare module 's3rver' {
  import type { AddressInfo } from 'node:net';
  import type { IncomingMessage, ServerResponse } from 'node:http';
  interface S3rverOptions {
    address?: string;
    port?: number;
    directory: string;
    silent?: boolean;
    configureBuckets?: { name: string; configs?: (string | Buffer)[] }[];
  }
  export default class S3rver {
    constructor(options: S3rverOptions);
    callback(): (req: IncomingMessage, res: ServerResponse) => void | Promise<void>;
    run(): Promise<AddressInfo>;
    close(): Promise<void>;
  }
}
