// Which storage failures pass: the store unreachable or restarting (refused, reset, timed out,
// undici's "fetch failed" with the reason on `cause`), a 5xx answer, a full or failing disk. Such a
// failure is retried with backoff here, and a run that still meets it waits and tries again; it is
// never the run's failure.

const PASSING_CODES = new Set([
  'ECONNRESET',
  'ECONNREFUSED',
  'ECONNABORTED',
  'EPIPE',
  'ETIMEDOUT',
  'EAI_AGAIN',
  'EHOSTUNREACH',
  'ENETUNREACH',
  'ENOTFOUND',
  'ENOSPC',
  'EDQUOT',
  'EIO',
  'EAGAIN',
  'EBUSY',
  'EMFILE',
  'ENFILE',
  // S3 answers (MinIO's full disk among them).
  'InternalError',
  'ServiceUnavailable',
  'SlowDown',
  'RequestTimeout',
  'XMinioStorageFull',
  'XMinioServerNotInitialized',
  'UND_ERR_SOCKET',
  'UND_ERR_CONNECT_TIMEOUT',
  'UND_ERR_HEADERS_TIMEOUT',
  'UND_ERR_BODY_TIMEOUT',
  'UND_ERR_CLOSED',
]);

/** A store that answered, but with a server-side failure (5xx): worth trying again. */
export class StoreUnavailable extends Error {
  readonly passing = true;
}

/** Whether `e` (or what caused it, a few levels down) is a failure that passes. */
export function isTransient(e: unknown): boolean {
  for (
    let err = e as { code?: unknown; message?: unknown; cause?: unknown; passing?: unknown; name?: unknown } | undefined, depth = 0;
    err && depth < 4;
    depth++
  ) {
    if (err.passing === true) return true;
    if (typeof err.code === 'string' && PASSING_CODES.has(err.code)) return true;
    if (err.name === 'TimeoutError') return true;
    if (typeof err.message === 'string' && /socket hang up|fetch failed|other side closed/i.test(err.message)) return true;
    err = err.cause as typeof err;
  }
  return false;
}

/** Tries `f` again on a passing failure: 5 tries over about 6 s (0.2, 0.4, 0.8, 1.6, 3.2 s apart). */
export async function retrying<T>(f: () => Promise<T>, tries = 5): Promise<T> {
  for (let attempt = 1; ; attempt++) {
    try {
      return await f();
    } catch (e) {
      if (attempt >= tries || !isTransient(e)) throw e;
      await new Promise((r) => setTimeout(r, 200 * 2 ** (attempt - 1)));
    }
  }
}
