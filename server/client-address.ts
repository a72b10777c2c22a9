// A client's address: the connection's peer, unless that peer is one of the configured reverse
// proxies (PARTUNE_TRUSTED_PROXIES), whose X-Forwarded-For is then read from the right past every
// trusted hop. Volunteer rate limits and the one-address rules of verification count by it, so an
// address a client writes into the header itself is never believed.
import type { IncomingHttpHeaders } from 'node:http';

const plain = (address: string): string => address.replace(/^::ffff:/, '');

export function clientAddress(peer: string | undefined, headers: IncomingHttpHeaders, trustedProxies: readonly string[]): string {
  let address = plain(peer ?? 'unknown');
  if (!trustedProxies.includes(address)) return address;
  const forwarded = ([] as string[]).concat(headers['x-forwarded-for'] ?? []).join(',').split(',').map((s) => plain(s.trim())).filter(Boolean);
  while (forwarded.length && trustedProxies.includes(address)) address = forwarded.pop()!;
  return address;
}
