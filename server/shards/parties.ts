// Independence: which workers count as one. A stranger can open many connections from one host
// or share one token among many processes, so workers are grouped by the network prefix they
// speak from (IPv4 /24, IPv6 /64 by default: PARTUNE_PARTY_PREFIX) and by the volunteer token
// they registered with; two workers sharing either are one group, and a group counts once in a
// quorum, in the electorate, in the rate limits and wherever workers are counted as distinct.
import { isIPv4, isIPv6 } from 'node:net';

export interface PrefixBits {
  readonly v4: number;
  readonly v6: number;
}

export const DEFAULT_PREFIX_BITS: PrefixBits = { v4: 24, v6: 64 };

/** What ties a worker to others: its network prefix and the token it registered with ('' for none). */
export interface PartyKeys {
  readonly prefix: string;
  readonly origin: string;
}

/** "24,64" -> { v4: 24, v6: 64 }. */
export function parsePrefixBits(raw: string): PrefixBits {
  const m = /^\s*(\d{1,2})\s*,\s*(\d{1,3})\s*$/.exec(raw);
  const v4 = Number(m?.[1]);
  const v6 = Number(m?.[2]);
  if (!m || v4 < 8 || v4 > 32 || v6 < 16 || v6 > 128)
    throw new Error(`PARTUNE_PARTY_PREFIX must be 'V4,V6' prefix lengths (8-32, 16-128), like '24,64' (got '${raw}')`);
  return { v4, v6 };
}

const v4Bytes = (address: string): number[] => address.split('.').map(Number);

/** An IPv6 address as 16 bytes (with an embedded IPv4 tail). */
function v6Bytes(address: string): number[] {
  const [head, tail] = address.split('::');
  const words = (part: string | undefined): number[] => {
    if (!part) return [];
    return part.split(':').flatMap((w) => (w.includes('.') ? ((b) => [(b[0] << 8) | b[1], (b[2] << 8) | b[3]])(v4Bytes(w)) : [parseInt(w, 16)]));
  };
  const left = words(head);
  const right = tail === undefined ? [] : words(tail);
  const all = [...left, ...Array(8 - left.length - right.length).fill(0), ...right];
  return all.flatMap((w) => [w >> 8, w & 255]);
}

function masked(bytes: number[], bits: number): number[] {
  return bytes.map((b, i) => (i * 8 >= bits ? 0 : i * 8 + 8 <= bits ? b : b & (0xff << (8 - (bits - i * 8))) & 0xff));
}

/** The network prefix of an address ('127.0.3.0/24', '2001:db8:0:7::/64'); an unparseable one is its own. */
export function prefixOf(address: string, bits: PrefixBits = DEFAULT_PREFIX_BITS): string {
  const plain = address.replace(/^\[|\]$/g, '').replace(/%.*$/, '');
  const mapped = /^::ffff:(\d+\.\d+\.\d+\.\d+)$/i.exec(plain);
  if (mapped || isIPv4(plain)) return `${masked(v4Bytes(mapped ? mapped[1] : plain), bits.v4).join('.')}/${bits.v4}`;
  if (!isIPv6(plain)) return `host:${plain.slice(0, 64)}`;
  const b = masked(v6Bytes(plain), bits.v6);
  const words = Array.from({ length: 8 }, (_, i) => ((b[2 * i] << 8) | b[2 * i + 1]).toString(16));
  // The shortest form: the longest run of zero words as '::'.
  let best = { at: -1, length: 0 };
  for (let i = 0; i < 8;) {
    let j = i;
    while (j < 8 && words[j] === '0') j++;
    if (j - i > best.length) best = { at: i, length: j - i };
    i = j === i ? i + 1 : j;
  }
  const text = best.length > 1 ? `${words.slice(0, best.at).join(':')}::${words.slice(best.at + best.length).join(':')}` : words.join(':');
  return `${text}/${bits.v6}`;
}

/**
 * Groups of workers that count once: the connected parts of the graph in which two workers are
 * linked when they share a prefix or a (non-empty) origin. Returns one group id per input.
 */
export function groupsOf(keys: readonly PartyKeys[]): number[] {
  const parent = keys.map((_, i) => i);
  const find = (i: number): number => (parent[i] === i ? i : (parent[i] = find(parent[i])));
  const byKey = new Map<string, number>();
  keys.forEach((k, i) => {
    for (const key of [`p:${k.prefix}`, ...(k.origin ? [`o:${k.origin}`] : [])]) {
      const j = byKey.get(key);
      if (j === undefined) byKey.set(key, i);
      else parent[find(i)] = find(j);
    }
  });
  return keys.map((_, i) => find(i));
}

/** How many independent groups these workers form. */
export const countGroups = (keys: readonly PartyKeys[]): number => new Set(groupsOf(keys)).size;
