// The server: GraphQL over HTTP and graphql-ws on one port, object storage (embedded S3 unless
// configured), the state store (SQLite), the compute thread, and the lease clock. `startServer`
// wires them and returns a handle.
import 'reflect-metadata';
import { createServer } from 'node:http';
import { dirname, join } from 'node:path';
import express from 'express';
import { ApolloServer } from '@apollo/server';
import { expressMiddleware } from '@as-integrations/express5';
import { ApolloServerPluginDrainHttpServer } from '@apollo/server/plugin/drainHttpServer';
import { WebSocketServer } from 'ws';
import { useServer } from 'graphql-ws/use/ws';
import { EmbeddedS3, S3BlobStore, S3Config, startEmbeddedS3 } from '../storage';
import { ServerConfig } from './config';
import { Compute } from './compute';
import { formatError } from './errors';
import { Platform } from './platform';
import { Services, createServices } from './services';
import { openSqliteState } from './state/sqlite';
import { Context, roleOf } from './resolvers/context';
import { partuneSchema } from './schema';
import { limitsPlugin } from './limits';

export interface RunningServer {
  readonly url: string;
  readonly wsUrl: string;
  readonly s3Endpoint: string;
  readonly services: Services;
  close(): Promise<void>;
}

export async function startServer(config: ServerConfig, log: (line: string) => void = (l) => process.stderr.write(`${l}\n`)): Promise<RunningServer> {
  let embedded: EmbeddedS3 | undefined;
  let s3: S3Config;
  if (config.s3) {
    s3 = { ...config.s3, bucket: config.bucket, region: config.region };
  } else {
    embedded = await startEmbeddedS3(join(config.dataDir, 's3'), config.bucket, embeddedPort(config.port));
    s3 = { endpoint: embedded.endpoint, accessKey: 'S3RVER', secretKey: 'S3RVER', bucket: config.bucket, region: config.region };
  }
  const blobs = new S3BlobStore(s3);
  await blobs.ensureBucket();
  const state = openSqliteState(config.dataDir);
  const compute = new Compute(s3, log);
  const platform: Platform = { config, state, blobs, compute, log };
  const services = createServices(platform);

  const schema = partuneSchema();
  const app = express();
  const http = createServer(app);
  const wss = new WebSocketServer({ server: http, path: '/graphql' });
  const wsCleanup = useServer({
    schema,
    context: (ctx): Context => ({ role: roleOf(ctx.connectionParams?.authorization as string | undefined, platform), services }),
    onNext: (_ctx, _id, _payload, _args, result) => (result.errors ? { ...result, errors: result.errors.map((e) => formatError(e.toJSON(), e, log)) } : undefined),
  }, wss);
  const apollo = new ApolloServer<Context>({
    schema,
    introspection: true,
    includeStacktraceInErrorResponses: false,
    formatError: (formatted, error) => formatError(formatted, error, log),
    plugins: [
      ApolloServerPluginDrainHttpServer({ httpServer: http }),
      { async serverWillStart() { return { async drainServer() { await wsCleanup.dispose(); } }; } },
      limitsPlugin(schema, config.maxQueryDepth, config.maxQueryComplexity),
    ],
  });
  await apollo.start();
  app.get('/healthz', (_req, res) => void res.json({ ok: true }));
  // The edge-worker page; cross-origin isolated so the wasm backend may use threads.
  const isolate: express.RequestHandler = (_req, res, next) => {
    res.setHeader('Cross-Origin-Opener-Policy', 'same-origin');
    res.setHeader('Cross-Origin-Embedder-Policy', 'require-corp');
    next();
  };
  const edgeDir = join(__dirname, '..', 'edge-worker');
  app.get('/worker', isolate, (_req, res) => res.sendFile(join(edgeDir, 'index.html')));
  app.use('/worker/wasm', isolate, express.static(dirname(require.resolve('@tensorflow/tfjs-backend-wasm/dist/tfjs-backend-wasm.wasm'))));
  app.use('/worker', isolate, express.static(edgeDir, { index: false }));
  app.get('/', (_req, res) => res.sendFile(join(edgeDir, 'dashboard.html')));
  app.get('/dashboard.js', (_req, res) => res.sendFile(join(edgeDir, 'dashboard.js')));
  app.use('/graphql', express.json({ limit: '1mb' }), expressMiddleware(apollo, {
    context: async ({ req }) => ({ role: roleOf(req.headers.authorization, platform), services }),
  }));
  await new Promise<void>((resolve, reject) => http.listen(config.port, config.host, resolve).once('error', reject));
  const port = (http.address() as { port: number }).port;
  const url = `http://${config.host === '0.0.0.0' ? '127.0.0.1' : config.host}:${port}/graphql`;

  const leaseClock = setInterval(() => void services.leases.expire().catch((e: Error) => log(`lease clock: ${e.message}`)), 1000);
  const resumed = await services.scheduler.resumeAll();
  log(`partune server: ${url} (storage ${blobs.description}${embedded ? ', embedded' : ''}; data ${config.dataDir})`);
  if (resumed) log(`resuming ${resumed} unfinished run(s)`);

  return {
    url, wsUrl: url.replace(/^http/, 'ws'), s3Endpoint: s3.endpoint, services,
    async close() {
      clearInterval(leaseClock);
      await apollo.stop();
      await compute.close();
      await services.scheduler.idle().catch(() => undefined);
      await state.close();
      await embedded?.close();
    },
  };
}

/** The embedded S3 port: stable across restarts (presigned URLs held by workers stay valid). */
function embeddedPort(serverPort: number): number {
  const fromEnv = process.env.PARTUNE_S3_PORT;
  if (fromEnv) return Number(fromEnv);
  return serverPort ? serverPort + 1 : 0;
}
