// The server: GraphQL over HTTP and graphql-ws on one port, the blob store (local files behind
// signed URLs on the same port, unless S3 is configured), the state store (SQLite, or PostgreSQL
// shared by any number of replicas), the compute threads, and the clocks (leases, runs no replica
// drives, unused uploads). `startServer` wires them and returns a handle.
import 'reflect-metadata';
import { GraphQLError } from 'graphql';
import { IncomingMessage, createServer } from 'node:http';
import { dirname, join } from 'node:path';
import express from 'express';
import { ApolloServer } from '@apollo/server';
import { expressMiddleware } from '@as-integrations/express5';
import { ApolloServerPluginLandingPageDisabled } from '@apollo/server/plugin/disabled';
import { ApolloServerPluginDrainHttpServer } from '@apollo/server/plugin/drainHttpServer';
import { WebSocketServer } from 'ws';
import { LocalBlobStore, S3BlobStore, adoptS3rverObjects, blobHandler, isTransient } from '../storage';
import { ServerConfig } from './config';
import { Compute } from './compute';
import { blobStoreSpec, openBlobStore } from './blob-store-spec';
import { clientAddress } from './client-address';
import { AnswerError, formatError } from './errors';
import { Platform } from './platform';
import { Services, createServices } from './services';
import { openState } from './state/open';
import { deliver } from './runs/events';
import { Context, REFUSED_TOKEN, callerOf } from './resolvers/context';
import { partuneSchema } from './schema';
import { QueryLimits, limitsPlugin } from './limits';
import { SocketBudget, serveSocket } from './socket';
import { allowedHosts, originAllowed } from './origins';

export interface RunningServer {
  readonly url: string;
  readonly wsUrl: string;
  readonly services: Services;
  close(): Promise<void>;
}

/** Request bodies (queries and variables) larger than this are refused before parsing. */
const MAX_BODY = '256kb';
/** How often ended runs' folders are pruned again (what a crash or a late write left). */
const RETENTION_SWEEP_MS = 10 * 60_000;

/**
 * Log records start at column 0 and their continuation lines (stacks) are indented, other control
 * characters escaped: a name or message a worker sent cannot forge a record.
 */
export const recordLog = (sink: (line: string) => void) => (line: string): void =>
  sink(line.replace(/(?![\n\t])[\p{Cc}\p{Cf}\u2028\u2029]/gu, (c) => `\\u${c.charCodeAt(0).toString(16).padStart(4, '0')}`).replace(/\n(?!\s)/g, '\n  '));

export async function startServer(config: ServerConfig, sink: (line: string) => void = (l) => process.stderr.write(`${l}\n`)): Promise<RunningServer> {
  const log = recordLog(sink);
  const state = await openState(config);
  let services: Services | undefined;
  try {
    await state.coordination.start({
      message: (m) => deliver(m, (shards) => services?.leases.wake(shards)),
      nudge: (runId) => services?.scheduler.nudged(runId),
      // Its runs may be driven by another replica now; this one takes up again whichever are free when it is back.
      lost: (why) => log(`coordination: ${why}`),
      back: () => log('coordination: the connection to PostgreSQL is back'),
      tookOver: (runId, why) => log(`coordination: took run ${runId} over from another server: ${why}`),
    });
  } catch (e) {
    await state.close();
    throw e;
  }
  const app = express();
  app.disable('x-powered-by');
  const http = createServer(app);
  // Idle keep-alive sockets live longer than clients keep them (undici: the server's hint less 1 s), so that a
  // client on a loaded machine seldom reuses one the server has just closed ("other side closed").
  http.keepAliveTimeout = 30_000;
  http.headersTimeout = 31_000;
  try {
    await new Promise<void>((resolve, reject) => http.listen(config.port, config.host, resolve).once('error', reject));
  } catch (e) {
    await state.close();
    throw e;
  }
  const port = (http.address() as { port: number }).port;
  const origin = `http://${config.host === '0.0.0.0' ? '127.0.0.1' : config.host}:${port}`;
  const url = `${origin}/graphql`;

  const spec = blobStoreSpec(config, origin);
  const blobs = openBlobStore(spec);
  if (blobs instanceof S3BlobStore) await blobs.ensureBucket();
  if (blobs instanceof LocalBlobStore) {
    const adopted = await adoptS3rverObjects(join(config.dataDir, 's3', config.bucket), blobs);
    if (adopted) log(`moved ${adopted} object(s) from the former embedded S3 directory into ${blobs.description}`);
  }
  const compute = new Compute('runs', spec, log);
  const shardCompute = new Compute('shards', spec, log);
  const platform: Platform = { config, state, blobs, compute, shardCompute, log };
  services = createServices(platform);
  const { scheduler } = services;
  const limits: QueryLimits = { maxDepth: config.maxQueryDepth, maxComplexity: config.maxQueryComplexity, maxTokens: 4000, maxFragments: 64 };
  const hostAllowed = allowedHosts(config);
  const allowed = (o: string | undefined, host: string | undefined): boolean => hostAllowed(host) && originAllowed(o, host, config.allowedOrigins);
  const contextOf = (authorization: string | undefined, request: IncomingMessage, gone: AbortSignal): Context => ({
    ...callerOf(authorization, config), client: clientAddress(request.socket.remoteAddress, request.headers, config.trustedProxies), gone, services: services!,
    costly: new Set(),
  });

  const schema = partuneSchema();
  const wss = new WebSocketServer({
    server: http, path: '/graphql', maxPayload: 256 * 1024,
    verifyClient: ({ origin, req }: { origin?: string; req: { headers: { host?: string } } }, done: (ok: boolean, code?: number, reason?: string) => void) =>
      !hostAllowed(req.headers.host) ? done(false, 421, 'unknown host') : done(allowed(origin, req.headers.host), 403, 'origin not allowed'),
  });
  const budget = new SocketBudget({
    socketsPerPrefix: config.socketsPerPrefix, sockets: config.maxSockets, operations: config.maxSocketOperations, subscriptions: config.maxSubscriptions,
  });
  const prefixOfRequest = (request: IncomingMessage): string =>
    services!.workers.prefixOf(clientAddress(request.socket.remoteAddress, request.headers, config.trustedProxies));
  // An authorization that is not a string is a token that does not verify.
  const socketContext = (params: Record<string, unknown> | undefined, request: IncomingMessage, gone: AbortSignal): Context => {
    const given = params?.authorization;
    return contextOf(typeof given === 'string' || given === undefined || given === null ? (given ?? undefined) : 'not a string', request, gone);
  };
  const answer: AnswerError = (formatted, error) => formatError(formatted, error, log, (e) => isTransient(e) || state.transient(e));
  const socket = serveSocket(wss, schema, limits, budget, prefixOfRequest, socketContext, answer);
  const apollo = new ApolloServer<Context>({
    schema,
    introspection: true,
    includeStacktraceInErrorResponses: false,
    parseOptions: { maxTokens: limits.maxTokens },
    formatError: answer,
    plugins: [
      ApolloServerPluginDrainHttpServer({ httpServer: http }),
      ApolloServerPluginLandingPageDisabled(),
      { async serverWillStart() { return { async drainServer() { await socket.dispose(); } }; } },
      limitsPlugin(schema, limits),
      // A token that does not verify is refused for every operation, public ones too: never read as anonymous.
      {
        async requestDidStart() {
          return {
            async didResolveOperation({ contextValue }) {
              if (contextValue.refused) throw new GraphQLError(REFUSED_TOKEN, { extensions: { code: 'UNAUTHENTICATED', http: { status: 401 } } });
            },
          };
        },
      },
    ],
  });
  await apollo.start();
  app.get('/healthz', (_req, res) => void res.json({ ok: true }));
  // Before any route: a name this server is not known by is a DNS-rebinding page, or a mistake.
  app.use((req, res, next) => (hostAllowed(req.headers.host) ? next() : void res.status(421).json({
    errors: [{
      message: `this server is not known as ${JSON.stringify(req.headers.host ?? '')}: ` +
        'set PARTUNE_PUBLIC_URL to the address browsers and workers use, or add the name to PARTUNE_ALLOWED_HOSTS',
      extensions: { code: 'FORBIDDEN' },
    }],
  })));
  if (blobs instanceof LocalBlobStore) {
    app.use('/blobs', blobHandler({ store: blobs, secret: [config.secret, ...config.previousSecrets], allowOrigin: allowed }));
  }
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
  // The API explorer: GraphiQL and React from npm, so that it works offline.
  const explorerFiles = new Map([
    ['graphiql.min.js', require.resolve('graphiql/graphiql.min.js')], ['graphiql.min.css', require.resolve('graphiql/graphiql.min.css')],
    ['react.production.min.js', join(dirname(require.resolve('react/package.json')), 'umd', 'react.production.min.js')],
    ['react-dom.production.min.js', join(dirname(require.resolve('react-dom/package.json')), 'umd', 'react-dom.production.min.js')],
    ['explorer.js', join(edgeDir, 'explorer.js')],
  ]);
  app.get('/graphiql', (_req, res) => res.sendFile(join(edgeDir, 'explorer.html')));
  app.get('/graphiql/:file', (req, res) => {
    const file = explorerFiles.get(req.params.file);
    return file ? res.sendFile(file) : void res.sendStatus(404);
  });
  // A browser opening /graphql gets the explorer (Apollo's own landing page loads from a CDN).
  app.get('/graphql', (req, res, next) => {
    if (req.query.query || req.accepts(['json', 'html']) !== 'html') return next();
    const token = typeof req.query.token === 'string' ? `?token=${encodeURIComponent(req.query.token)}` : '';
    res.redirect(302, `/graphiql${token}`);
  });
  // Browsers may call the API only from the server's own pages and the configured origins.
  app.use('/graphql', (req, res, next) => (allowed(req.headers.origin, req.headers.host) ? next() : void res.status(403).json({
    errors: [{ message: `origin ${req.headers.origin} may not call this API (PARTUNE_ALLOWED_ORIGINS)`, extensions: { code: 'FORBIDDEN' } }],
  })));
  app.use('/graphql', express.json({ limit: MAX_BODY }), expressMiddleware(apollo, {
    context: async ({ req, res }) => {
      const gone = new AbortController();
      res.once('close', () => gone.abort());
      return contextOf(req.headers.authorization, req, gone.signal);
    },
  }));
  // A body too large or not JSON: a GraphQL error, not an HTML page.
  app.use('/graphql', ((err, _req, res, next) => {
    const status = (err as { status?: number }).status;
    if (!status || status >= 500) return next(err);
    res.status(status).json({ errors: [{ message: status === 413 ? `request body over ${MAX_BODY}` : `malformed request: ${(err as Error).message}`, extensions: { code: status === 413 ? 'PAYLOAD_TOO_LARGE' : 'BAD_REQUEST' } }] });
  }) as express.ErrorRequestHandler);
  // Whatever else a route threw (a path with a malformed %-escape): a short answer, never a stack; the server's faults logged.
  app.use(((err, req, res, _next) => {
    const status = (err as { status?: number }).status ?? 500;
    if (status >= 500) log(`${req.method} ${req.path.slice(0, 200)}: ${(err as Error).message}`);
    res.status(status).type('text/plain').send(status >= 500 ? 'internal error (logged)' : `bad request: ${(err as Error).message.slice(0, 200)}`);
  }) as express.ErrorRequestHandler);

  let adopting: Promise<void> | undefined;
  const adopt = (): Promise<void> => (adopting ??= scheduler.adopt().then((adopted) => {
    if (adopted) log(`driving ${adopted} unfinished run(s) no server was driving`);
  }).finally(() => (adopting = undefined)));
  const clock = setInterval(() => {
    void services.leases.expire().catch((e: Error) => log(`lease clock: ${e.message}`));
    void services.verification.clock().catch((e: Error) => log(`verification clock: ${e.message}`));
    void adopt().catch((e: Error) => log(`run clock: ${e.message}`));
  }, 1000);
  const sweep = async (): Promise<void> => {
    await services.uploads.expire().catch((e: Error) => log(`upload clock: ${e.message}`));
    await services.slots.sweep().catch((e: Error) => log(`slot sweep: ${e.message}`));
  };
  const uploadClock = setInterval(() => void sweep(), Math.min(60, config.uploadTtlSeconds) * 1000);
  await sweep();
  const retain = (): Promise<unknown> => services.retention.sweep().catch((e: Error) => log(`retention sweep: ${e.message}`));
  const retentionClock = setInterval(() => void retain(), RETENTION_SWEEP_MS);
  void retain();
  const stateDescription = config.state ? `PostgreSQL ${config.state.replace(/\/\/([^:@/]+):[^@/]*@/, '//$1:***@')}` : `SQLite in ${config.dataDir}`;
  if (config.host === '0.0.0.0' && !config.publicUrl) {
    log(`note: HOST is 0.0.0.0 but PARTUNE_PUBLIC_URL is not set: signed blob URLs name ${origin}, which other machines cannot reach; ` +
      `set PARTUNE_PUBLIC_URL=http://NAME:${port}`);
  }
  log(`partune server: ${url} (storage ${blobs.description}; state ${stateDescription}; data ${config.dataDir})`);
  await adopt();

  return {
    url, wsUrl: url.replace(/^http/, 'ws'), services,
    async close() {
      clearInterval(clock);
      clearInterval(uploadClock);
      clearInterval(retentionClock);
      services!.leases.stopWaiting();
      await apollo.stop();
      await Promise.all([compute.close(), shardCompute.close()]);
      await adopting?.catch(() => undefined);
      await scheduler.idle().catch(() => undefined);
      await state.close();
    },
  };
}
