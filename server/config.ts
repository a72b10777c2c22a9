// Server settings from the environment, parsed once. With none set: the embedded S3 server and
// SQLite under ./partune-data, tokens generated and kept there.
import { randomBytes } from 'node:crypto';
import { existsSync, mkdirSync, readFileSync, writeFileSync } from 'node:fs';
import { join, resolve } from 'node:path';

export interface ServerConfig {
  readonly dataDir: string;
  readonly host: string;
  readonly port: number;
  /** External S3 (MinIO, AWS); undefined: the embedded server. */
  readonly s3?: { endpoint: string; accessKey: string; secretKey: string; publicEndpoint?: string };
  readonly bucket: string;
  readonly region: string;
  readonly adminToken: string;
  readonly workerToken: string;
  /** When set, browser volunteers must present it to get a token. */
  readonly invitation?: string;
  readonly leaseSeconds: number;
  readonly urlSeconds: number;
  readonly uploadMaxBytes: number;
  readonly maxQueryDepth: number;
  readonly maxQueryComplexity: number;
}

function number(env: NodeJS.ProcessEnv, key: string, fallback: number): number {
  const raw = env[key];
  if (raw === undefined || raw === '') return fallback;
  const n = Number(raw);
  if (!Number.isFinite(n) || n <= 0) throw new Error(`${key} must be a positive number (got '${raw}')`);
  return n;
}

/** Tokens from the environment, else the ones this data directory was given at its first start. */
function tokens(dataDir: string, env: NodeJS.ProcessEnv): { admin: string; worker: string } {
  const file = join(dataDir, 'tokens.json');
  const stored = existsSync(file) ? (JSON.parse(readFileSync(file, 'utf8')) as { admin: string; worker: string }) : undefined;
  const fresh = stored ?? { admin: `adm_${randomBytes(18).toString('base64url')}`, worker: `wrk_${randomBytes(18).toString('base64url')}` };
  if (!stored) writeFileSync(file, JSON.stringify(fresh), { mode: 0o600 });
  return { admin: env.PARTUNE_ADMIN_TOKEN || fresh.admin, worker: env.PARTUNE_WORKER_TOKEN || fresh.worker };
}

export function loadConfig(env: NodeJS.ProcessEnv = process.env, overrides: Partial<ServerConfig> = {}): ServerConfig {
  const dataDir = resolve(overrides.dataDir ?? env.PARTUNE_DATA_DIR ?? 'partune-data');
  mkdirSync(dataDir, { recursive: true });
  const external = env.S3_ENDPOINT;
  if (external && !(env.S3_ACCESS_KEY && env.S3_SECRET_KEY)) throw new Error('S3_ENDPOINT is set: S3_ACCESS_KEY and S3_SECRET_KEY are needed too');
  const t = tokens(dataDir, env);
  return {
    dataDir,
    host: env.HOST ?? '127.0.0.1',
    port: number(env, 'PORT', 4000),
    s3: external ? { endpoint: external, accessKey: env.S3_ACCESS_KEY!, secretKey: env.S3_SECRET_KEY!, publicEndpoint: env.S3_PUBLIC_ENDPOINT || undefined } : undefined,
    bucket: env.S3_BUCKET ?? 'partune',
    region: env.S3_REGION ?? 'us-east-1',
    adminToken: t.admin,
    workerToken: t.worker,
    invitation: env.PARTUNE_INVITATION || undefined,
    leaseSeconds: number(env, 'PARTUNE_LEASE_SECONDS', 60),
    urlSeconds: number(env, 'PARTUNE_URL_SECONDS', 900),
    uploadMaxBytes: number(env, 'PARTUNE_UPLOAD_MAX_MB', 1024) * 2 ** 20,
    maxQueryDepth: number(env, 'PARTUNE_MAX_QUERY_DEPTH', 8),
    maxQueryComplexity: number(env, 'PARTUNE_MAX_QUERY_COMPLEXITY', 2000),
    ...overrides,
  };
}
