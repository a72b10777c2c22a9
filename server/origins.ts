// Which requests a browser may make. A DNS-rebinding page (evil.example resolved to this server's
// address) sends Host and Origin both evil.example, so the Host header is checked against an
// allowlist first, and only then may an Origin equal to it count as the server's own page.
import { isIP } from 'node:net';
import type { ServerConfig } from './config';

/** Host names a browser may address the server by: IP literals (no rebinding names them), localhost, the public URL's host and PARTUNE_ALLOWED_HOSTS. */
export function allowedHosts(config: Pick<ServerConfig, 'publicUrl' | 'allowedHosts' | 'host'>): (host: string | undefined) => boolean {
  const names = new Set(['localhost', ...config.allowedHosts.map((h) => h.toLowerCase())]);
  if (config.publicUrl) names.add(new URL(config.publicUrl).hostname.toLowerCase());
  if (!isIP(config.host)) names.add(config.host.toLowerCase());
  return (host) => {
    const name = hostName(host);
    if (name === undefined) return false;
    return isIP(name) !== 0 || names.has(name) || name.endsWith('.localhost');
  };
}

/** The name in a Host header, without its port or IPv6 brackets; undefined when it is not one. */
function hostName(host: string | undefined): string | undefined {
  const m = /^(?:\[([0-9a-f:.]+)\]|([a-z0-9.-]+))(?::\d{1,5})?$/i.exec(host ?? '');
  return m ? (m[1] ?? m[2]).toLowerCase() : undefined;
}

/** Whether a browser page at `origin` may call: the server's own (same, allowed host) or a configured one. */
export function originAllowed(origin: string | undefined, host: string | undefined, allowed: readonly string[]): boolean {
  if (!origin) return true;
  if (allowed.includes(origin)) return true;
  try {
    return new URL(origin).host === host;
  } catch {
    return false;
  }
}
