// Server settings from the environment, parsed once. With none set: blobs and SQLite under
// ./partune-data, tokens and the signing secret generated and kept there.
import { randomBytes } from 'node:crypto';
import { existsSync, mkdirSync, readFileSync, writeFileSync } from 'node:fs';
import { isIP } from 'node:net';
import { join, resolve } from 'node:path';
import { DEFAULT_PREFIX_BITS, PrefixBits, parsePrefixBits } from './shards/parties';
import { keyId } from './credentials';

export interface ServerConfig {
  readonly dataDir: string;
  /** Where state lives: a postgres:// URL shared by replicas (PARTUNE_STATE), or undefined: SQLite under dataDir. */
  readonly state?: string;
  readonly host: string;
  readonly port: number;
  /** A `partune storage serve` shared by replicas (PARTUNE_BLOB_URL, and as browsers reach it PARTUNE_BLOB_PUBLIC_URL). */
  readonly blobServer?: { readonly url: string; readonly publicUrl?: string };
  /** External S3 (MinIO, AWS); undefined: the embedded server. */
  readonly s3?: { endpoint: string; accessKey: string; secretKey: string; publicEndpoint?: string };
  readonly bucket: string;
  readonly region: string;
  readonly adminToken: string;
  readonly workerToken: string;
  /** Signs blob URLs, worker credentials, volunteer and read tokens. */
  readonly secret: string;
  /** Former secrets whose tokens and URLs still verify (PARTUNE_PREVIOUS_SECRETS): the overlap of a rotation. */
  readonly previousSecrets: readonly string[];
  /** Key ids (credentials.ts keyId) whose tokens are refused even if their secret returns (PARTUNE_REVOKED_KEYS). */
  readonly revokedKeys: readonly string[];
  /** How long worker credentials and volunteer tokens live (PARTUNE_CREDENTIAL_HOURS, 24); read tokens (PARTUNE_READ_TOKEN_DAYS, 30). */
  readonly credentialSeconds: number;
  readonly readTokenSeconds: number;
  /** The server's URL as browsers reach it, when a proxy sits in front (PARTUNE_PUBLIC_URL). */
  readonly publicUrl?: string;
  /** Reverse proxies in front of the server (addresses) whose X-Forwarded-For names the client. */
  readonly trustedProxies: readonly string[];
  /** Origins besides the server's own whose pages may use the API socket and the blob store. */
  readonly allowedOrigins: readonly string[];
  /** Host names besides localhost, IP literals and the public URL's that requests may address (PARTUNE_ALLOWED_HOSTS). */
  readonly allowedHosts: readonly string[];
  /** Directories `registerModel`/`importDataset` may read server paths under; none: uploads only. */
  readonly importRoots: readonly string[];
  /** When set, browser volunteers must present it to get a token. */
  readonly invitation?: string;
  readonly leaseSeconds: number;
  /** A lease whose steps do not advance for this long is revoked. */
  readonly stallSeconds: number;
  /** The longest a shard may be held by a worker whose speed is not known yet. */
  readonly maxShardSeconds: number;
  /** Failures, rejections and revoked leases after which a volunteer may claim no more. */
  readonly quarantineStrikes: number;
  /** Volunteer tokens and registrations per network prefix per minute, and in total. */
  readonly volunteersPerMinute: number;
  readonly volunteersTotalPerMinute: number;
  /** The prefix lengths that group workers' addresses (PARTUNE_PARTY_PREFIX, '24,64'). */
  readonly partyPrefix: PrefixBits;
  /** How long a replica may wait for a worker before it is escalated and the run says it waits. */
  readonly waitSeconds: number;
  /** How long the server may take to check a completed update before its lease counts as lost (the server died checking it). */
  readonly checkSeconds: number;
  readonly urlSeconds: number;
  readonly uploadMaxBytes: number;
  /** Uploads not used within this long are deleted. */
  readonly uploadTtlSeconds: number;
  /** The most optimizer steps one run may plan. */
  readonly maxRunSteps: number;
  readonly maxQueryDepth: number;
  readonly maxQueryComplexity: number;
  /** graphql-ws sockets per network prefix (PARTUNE_PARTY_PREFIX's), in all, and operations running on all of them. */
  readonly socketsPerPrefix: number;
  readonly maxSockets: number;
  readonly maxSocketOperations: number;
  /** Subscriptions on all sockets (PARTUNE_MAX_SUBSCRIPTIONS): each event costs each of them a message. */
  readonly maxSubscriptions: number;
  /** How long a replica's lock on a run lasts unless it renews it (PARTUNE_RUN_LOCK_SECONDS, 10): a frozen replica loses its runs after this. */
  readonly runLockSeconds: number;
  /** What an ended run keeps (PARTUNE_RETENTION): `final`, its delta and last state; `all`, every round's state, pack and update. */
  readonly retention: 'final' | 'all';
}

function number(env: NodeJS.ProcessEnv, key: string, fallback: number): number {
  const raw = env[key];
  if (raw === undefined || raw === '') return fallback;
  const n = Number(raw);
  if (!Number.isFinite(n) || n <= 0) throw new Error(`${key} must be a positive number (got '${raw}')`);
  return n;
}

/** Tokens from the environment, else the ones this data directory was given at its first start. */
function tokens(dataDir: string, env: NodeJS.ProcessEnv): { admin: string; worker: string; secret: string } {
  const file = join(dataDir, 'tokens.json');
  const stored = existsSync(file) ? (JSON.parse(readFileSync(file, 'utf8')) as { admin: string; worker: string; secret?: string }) : undefined;
  const fresh = {
    admin: stored?.admin ?? `adm_${randomBytes(18).toString('base64url')}`, worker: stored?.worker ?? `wrk_${randomBytes(18).toString('base64url')}`,
    secret: stored?.secret ?? randomBytes(32).toString('base64url'),
  };
  if (!stored?.secret) writeFileSync(file, JSON.stringify(fresh), { mode: 0o600 });
  return { admin: env.PARTUNE_ADMIN_TOKEN || fresh.admin, worker: env.PARTUNE_WORKER_TOKEN || fresh.worker, secret: env.PARTUNE_SECRET || fresh.secret };
}

function retentionOf(raw: string | undefined): 'final' | 'all' {
  if (raw === undefined || raw === '' || raw === 'final' || raw === 'all') return (raw || 'final') as 'final' | 'all';
  throw new Error(`PARTUNE_RETENTION must be 'final' (an ended run keeps its delta and last state) or 'all' (got '${raw}')`);
}

function publicUrlOf(raw: string | undefined): string | undefined {
  const url = raw?.replace(/\/+$/, '') || undefined;
  if (url && !/^https?:\/\/[^/]+/.test(url)) throw new Error(`PARTUNE_PUBLIC_URL must be an http(s) URL such as http://mybox:4000 (got '${url}')`);
  return url;
}

/** Names only: a port is dropped (any port is the server's); a wildcard would let DNS-rebinding pages in. */
function hostNames(raw: string | undefined): string[] {
  return list(raw, /[,\s]+/).map((h) => {
    if (h.includes('*')) throw new Error(`PARTUNE_ALLOWED_HOSTS takes host names, not patterns (got '${h}'): a wildcard would admit DNS-rebinding pages`);
    const name = h.replace(/^\[([^\]]+)\](?::\d+)?$/, '$1');
    return (isIP(name) ? name : name.replace(/:\d+$/, '')).toLowerCase();
  });
}

const list = (raw: string | undefined, separator: RegExp): string[] => (raw ?? '').split(separator).map((s) => s.trim()).filter(Boolean);

export function loadConfig(env: NodeJS.ProcessEnv = process.env, overrides: Partial<ServerConfig> = {}): ServerConfig {
  const dataDir = resolve(overrides.dataDir ?? env.PARTUNE_DATA_DIR ?? 'partune-data');
  mkdirSync(dataDir, { recursive: true });
  const external = env.S3_ENDPOINT;
  if (external && !(env.S3_ACCESS_KEY && env.S3_SECRET_KEY)) throw new Error('S3_ENDPOINT is set: S3_ACCESS_KEY and S3_SECRET_KEY are needed too');
  const blobUrl = env.PARTUNE_BLOB_URL?.replace(/\/+$/, '') || undefined;
  if (blobUrl && external) throw new Error('PARTUNE_BLOB_URL and S3_ENDPOINT name two blob stores: set one');
  if (blobUrl && !/^https?:\/\//.test(blobUrl)) throw new Error(`PARTUNE_BLOB_URL must be an http(s) URL (got '${blobUrl}')`);
  const t = tokens(dataDir, env);
  const revoked = list(env.PARTUNE_REVOKED_KEYS, /[,\s]+/);
  if (revoked.includes(keyId(t.secret))) throw new Error(`the signing secret's key ${keyId(t.secret)} is in PARTUNE_REVOKED_KEYS: set a new PARTUNE_SECRET`);
  const state = env.PARTUNE_STATE || undefined;
  if (state && !/^postgres(ql)?:\/\//.test(state)) throw new Error('PARTUNE_STATE must be a postgres:// URL; unset, state is SQLite under the data directory');
  return {
    dataDir,
    state,
    host: env.HOST ?? '127.0.0.1',
    port: number(env, 'PORT', 4000),
    blobServer: blobUrl ? { url: blobUrl, publicUrl: env.PARTUNE_BLOB_PUBLIC_URL?.replace(/\/+$/, '') || undefined } : undefined,
    s3: external ? { endpoint: external, accessKey: env.S3_ACCESS_KEY!, secretKey: env.S3_SECRET_KEY!, publicEndpoint: env.S3_PUBLIC_ENDPOINT || undefined } : undefined,
    bucket: env.S3_BUCKET ?? 'partune',
    region: env.S3_REGION ?? 'us-east-1',
    adminToken: t.admin,
    workerToken: t.worker,
    secret: t.secret,
    previousSecrets: list(env.PARTUNE_PREVIOUS_SECRETS, /[,\s]+/),
    revokedKeys: revoked,
    credentialSeconds: number(env, 'PARTUNE_CREDENTIAL_HOURS', 24) * 3600,
    readTokenSeconds: number(env, 'PARTUNE_READ_TOKEN_DAYS', 30) * 86_400,
    publicUrl: publicUrlOf(env.PARTUNE_PUBLIC_URL),
    allowedOrigins: list(env.PARTUNE_ALLOWED_ORIGINS, /[,\s]+/),
    allowedHosts: hostNames(env.PARTUNE_ALLOWED_HOSTS),
    trustedProxies: list(env.PARTUNE_TRUSTED_PROXIES, /[,\s]+/),
    importRoots: list(env.PARTUNE_IMPORT_ROOTS, /[:,]/).map((p) => resolve(p)),
    invitation: env.PARTUNE_INVITATION || undefined,
    retention: retentionOf(env.PARTUNE_RETENTION),
    leaseSeconds: number(env, 'PARTUNE_LEASE_SECONDS', 60),
    stallSeconds: number(env, 'PARTUNE_STALL_SECONDS', 300),
    maxShardSeconds: number(env, 'PARTUNE_MAX_SHARD_SECONDS', 3600),
    quarantineStrikes: number(env, 'PARTUNE_QUARANTINE_STRIKES', 3),
    volunteersPerMinute: number(env, 'PARTUNE_VOLUNTEERS_PER_MINUTE', 20),
    volunteersTotalPerMinute: number(env, 'PARTUNE_VOLUNTEERS_TOTAL_PER_MINUTE', 200),
    partyPrefix: env.PARTUNE_PARTY_PREFIX ? parsePrefixBits(env.PARTUNE_PARTY_PREFIX) : DEFAULT_PREFIX_BITS,
    waitSeconds: number(env, 'PARTUNE_WAIT_SECONDS', 30),
    checkSeconds: number(env, 'PARTUNE_CHECK_SECONDS', 600),
    urlSeconds: number(env, 'PARTUNE_URL_SECONDS', 900),
    uploadMaxBytes: number(env, 'PARTUNE_UPLOAD_MAX_MB', 1024) * 2 ** 20,
    uploadTtlSeconds: number(env, 'PARTUNE_UPLOAD_TTL_SECONDS', 86_400),
    maxRunSteps: number(env, 'PARTUNE_MAX_RUN_STEPS', 1_000_000),
    maxQueryDepth: number(env, 'PARTUNE_MAX_QUERY_DEPTH', 8),
    maxQueryComplexity: number(env, 'PARTUNE_MAX_QUERY_COMPLEXITY', 2000),
    socketsPerPrefix: number(env, 'PARTUNE_SOCKETS_PER_PREFIX', 32),
    maxSockets: number(env, 'PARTUNE_MAX_SOCKETS', 2000),
    maxSocketOperations: number(env, 'PARTUNE_MAX_SOCKET_OPERATIONS', 4000),
    maxSubscriptions: number(env, 'PARTUNE_MAX_SUBSCRIPTIONS', 500),
    runLockSeconds: number(env, 'PARTUNE_RUN_LOCK_SECONDS', 10),
    ...overrides,
  };
}
