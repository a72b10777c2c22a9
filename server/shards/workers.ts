// Workers: Node processes (registered with the admin's or the shared worker token: trusted) and
// browser tabs (volunteer tokens: untrusted, rate-limited per network prefix and in total,
// quarantined after too many strikes). Registering returns the worker's own credential; the shard
// protocol speaks only with it. Untrusted workers are counted by independent group (parties.ts).
import { randomUUID } from 'node:crypto';
import { badInput, forbidden, notFound, rateLimited } from '../errors';
import type { Platform } from '../platform';
import { BackendChoice, FailureBudget, Page, WorkerRecord } from '../state/records';
import { MAX_CLAIM_WAIT_SECONDS } from './claim-waiters';
import { countGroups, prefixOf } from './parties';

/** A worker's last-seen time is written at most this often: every request reads it, few need to write it. */
const SEEN_PRECISION_MS = 5_000;

/** How a worker may say it chose its backend (edge-worker/backend.ts, node/worker-backends.ts). */
const BACKEND_CHOICE_HOW = ['forced', 'measured', 'remembered', 'only one'];

export class Workers {
  constructor(private readonly p: Platform) {}

  private electorateCache: { at: number; groups: number } | undefined;

  get budget(): FailureBudget {
    return { registeredFailures: 5, quarantineStrikes: this.p.config.quarantineStrikes };
  }

  /** The network prefix an address counts under. */
  prefixOf(address: string): string {
    return prefixOf(address, this.p.config.partyPrefix);
  }

  /**
   * A volunteer token or registration from `client`; refused past the rate limits, per network
   * prefix and in total (counted across every server replica).
   */
  async admitVolunteer(client: string): Promise<void> {
    const now = new Date();
    const { volunteersPerMinute, volunteersTotalPerMinute } = this.p.config;
    if (!(await this.p.state.admissions.take(`prefix:${this.prefixOf(client)}`, volunteersPerMinute, now))) {
      throw rateLimited(`more than ${volunteersPerMinute} volunteer tokens or registrations a minute from this network (${this.prefixOf(client)}); try again later`);
    }
    if (!(await this.p.state.admissions.take('all', volunteersTotalPerMinute, now))) {
      throw rateLimited(`more than ${volunteersTotalPerMinute} volunteer tokens or registrations a minute on this server; try again later`);
    }
  }

  /** `origin`: the volunteer token it registered with (workers sharing one count as one group); '' for registered workers. */
  async register(name: string, kind: string, backend: string, trusted: boolean, address: string, origin = ''): Promise<WorkerRecord> {
    if (kind !== 'node' && kind !== 'browser') throw badInput("kind must be 'node' or 'browser'");
    for (const [what, text] of [['name', name], ['backend', backend]]) {
      if (/[\p{Cc}\p{Cf}\u2028\u2029]/u.test(text)) throw badInput(`a worker's ${what} may not hold control or format characters`);
    }
    const worker: WorkerRecord = {
      id: randomUUID(), name: name.slice(0, 80), kind, backend: backend.slice(0, 80), lastSeen: new Date(), shardsDone: 0, samples: 0,
      imagesPerSecond: null, currentShard: null, trusted, strikes: 0, quarantinedAt: null, address: address.slice(0, 64), party: this.prefixOf(address),
      origin: origin.slice(0, 80), agreed: 0, disagreed: 0, streak: 0, demoted: false, kernelClass: null, classes: [], backendChoice: null, createdAt: new Date(),
    };
    await this.p.state.workers.insert(worker);
    this.p.log(`worker ${worker.name} (${kind}, ${worker.backend}${trusted ? '' : ', volunteer'}) joined`);
    return worker;
  }

  /** The worker, marked seen now (to within SEEN_PRECISION_MS). */
  async seen(id: string): Promise<WorkerRecord> {
    const now = new Date();
    const known = await this.p.state.workers.get(id);
    const worker = known && now.getTime() - known.lastSeen.getTime() < SEEN_PRECISION_MS ? known : await this.p.state.workers.touch(id, now);
    if (!worker) throw notFound(`worker ${id} is not registered (register again)`);
    return worker;
  }

  /** The worker, if it may still claim work. */
  async active(id: string): Promise<WorkerRecord> {
    const worker = await this.seen(id);
    if (worker.quarantinedAt) throw forbidden(`worker ${id} is quarantined after ${worker.strikes} failed, rejected or revoked leases; it may claim no more shards`);
    return worker;
  }

  /** What a worker says of its backend choice with a claim; stored when it changed. */
  async reportBackend(id: string, choice: BackendChoice): Promise<void> {
    const tooLong = (what: string, s: string | null): void => {
      if (s !== null && s.length > 300) throw badInput(`backend.${what} is longer than 300 characters`);
      if (s !== null && /[\p{Cc}\p{Cf}\u2028\u2029]/u.test(s)) throw badInput(`backend.${what} may not hold control or format characters`);
    };
    if (!BACKEND_CHOICE_HOW.includes(choice.how)) throw badInput(`backend.how must be one of ${BACKEND_CHOICE_HOW.join(', ')}; got '${choice.how.slice(0, 40)}'`);
    tooLong('chosen', choice.chosen);
    tooLong('detail', choice.detail);
    tooLong('model', choice.model);
    if (choice.timings.length > 8) throw badInput(`backend.timings has ${choice.timings.length} entries; at most 8`);
    for (const t of choice.timings) {
      tooLong('timings.backend', t.backend);
      tooLong('timings.detail', t.detail);
      tooLong('timings.note', t.note);
      if (t.imagesPerSecond !== null && !(Number.isFinite(t.imagesPerSecond) && t.imagesPerSecond >= 0 && t.imagesPerSecond < 1e7)) {
        throw badInput(`backend.timings.imagesPerSecond must be a finite number in [0, 1e7), got ${t.imagesPerSecond}`);
      }
    }
    const worker = await this.p.state.workers.get(id);
    if (!worker) throw notFound(`worker ${id} is not registered (register again)`);
    if (JSON.stringify(worker.backendChoice) !== JSON.stringify(choice)) await this.p.state.workers.setBackendChoice(id, choice);
  }

  /** An admin's ban: the worker is quarantined now, whatever its strikes. */
  async ban(id: string): Promise<WorkerRecord> {
    const worker = await this.p.state.workers.quarantine(id, new Date());
    if (!worker) throw notFound(`worker ${id} not found`);
    this.p.log(`worker ${worker.name} (${id}) banned`);
    return worker;
  }

  /**
   * A worker is online while seen within the lease time (one silent longer has lost any lease it
   * held), or within a waiting claim and a little more: an idle worker's claim is its heartbeat.
   */
  onlineSince(): Date {
    return new Date(Date.now() - Math.max(this.p.config.leaseSeconds, MAX_CLAIM_WAIT_SECONDS + 5) * 1000);
  }

  list(onlineOnly: boolean, first: number, offset: number): Promise<Page<WorkerRecord>> {
    return this.p.state.workers.list(onlineOnly ? this.onlineSince() : undefined, first, offset);
  }

  /** Workers online that a plan may count on: registered ones, and groups of volunteers that have done a shard. */
  async provenCount(): Promise<number> {
    const proven = await this.p.state.workers.provenSince(this.onlineSince());
    return proven.registered + countGroups(proven.untrusted.map((w) => ({ prefix: w.party, origin: w.origin })));
  }

  /** Independent groups of untrusted workers online: what an untrusted result needs a majority of (cached for a second). */
  async electorate(): Promise<number> {
    const now = Date.now();
    if (this.electorateCache && now - this.electorateCache.at < 1000) return this.electorateCache.groups;
    const groups = countGroups((await this.p.state.workers.untrustedSince(this.onlineSince())).map((w) => ({ prefix: w.party, origin: w.origin })));
    this.electorateCache = { at: now, groups };
    return groups;
  }

  /** Registered workers online other than these. */
  registeredOnline(except: readonly string[]): Promise<number> {
    return this.p.state.workers.registeredSince(this.onlineSince(), except);
  }

  isOnline(w: WorkerRecord): boolean {
    return w.lastSeen > this.onlineSince();
  }
}
