// An S3-protocol peer for tests (s3rver, in-process on 127.0.0.1 over a directory): the S3
// BlobStore's code paths without a MinIO. It checks no signatures, so it is never the server's store.
import type { AddressInfo } from 'node:net';
import type { IncomingMessage, ServerResponse } from 'node:http';
import S3rver from 's3rver';

export interface EmbeddedS3 {
  readonly endpoint: string;
  close(): Promise<void>;
}

const corsXml = `<CORSConfiguration><CORSRule><AllowedOrigin>*</AllowedOrigin>
<AllowedMethod>GET</AllowedMethod><AllowedMethod>PUT</AllowedMethod><AllowedMethod>HEAD</AllowedMethod>
<AllowedHeader>*</AllowedHeader><ExposeHeader>ETag</ExposeHeader><MaxAgeSeconds>3000</MaxAgeSeconds></CORSRule></CORSConfiguration>`;

export async function startEmbeddedS3(directory: string, bucket: string, port = 0): Promise<EmbeddedS3> {
  const server = new S3rver({
    address: '127.0.0.1', port, directory, silent: true,
    configureBuckets: [{ name: bucket, configs: [corsXml] }],
  });
  // s3rver answers NotImplemented to ListMultipartUploads, which the minio client sends before
  // any upload over 5 MiB: answer "no uploads in progress".
  const handle = server.callback();
  server.callback = () => (req: IncomingMessage, res: ServerResponse) => {
    if (req.method === 'GET' && /[?&]uploads(=|&|$)/.test(req.url ?? '')) {
      res.writeHead(200, { 'Content-Type': 'application/xml' });
      res.end(`<?xml version="1.0" encoding="UTF-8"?><ListMultipartUploadsResult><Bucket>${bucket}</Bucket><IsTruncated>false</IsTruncated></ListMultipartUploadsResult>`);
      return;
    }
    void handle(req, res);
  };
  const address = (await server.run()) as AddressInfo;
  // Idle keep-alive sockets outlive the clients' reuse of them, so no request meets a closing socket.
  const http = (server as unknown as { httpServer: { keepAliveTimeout: number; headersTimeout: number } }).httpServer;
  http.keepAliveTimeout = 65_000;
  http.headersTimeout = 66_000;
  return { endpoint: `http://127.0.0.1:${address.port}`, close: () => server.close() };
}
