// Decoding at the boundaries (wire messages, stored rows): zod schemas, engine parsers inside them,
// and one error that names where the value went wrong. A value is decoded once, then trusted.
import { z } from 'zod';

export class DecodeError extends Error {}

/** A schema that runs an engine parser (one that throws with a message) on the value. */
export function parsedBy<T>(parse: (raw: unknown) => T): z.ZodType<T, unknown> {
  return z.unknown().transform((v, ctx): T => {
    try {
      return parse(v);
    } catch (e) {
      ctx.addIssue({ code: 'custom', message: (e as Error).message });
      return z.NEVER;
    }
  });
}

/** The decoded value, or a DecodeError naming `what` and the path of the first problem. */
export function decode<T>(schema: z.ZodType<T, unknown>, raw: unknown, what: string): T {
  const r = schema.safeParse(raw);
  if (r.success) return r.data;
  const issue = r.error.issues[0];
  throw new DecodeError(`${what}: ${issue.path.length ? `${issue.path.join('.')}: ` : ''}${issue.message}`);
}

export const normalizationSchema = z.object({
  mean: z.array(z.number().finite()).min(1),
  std: z.array(z.number().finite().positive()).min(1),
}).refine((n) => n.mean.length === n.std.length, 'normalization needs one std per mean');
