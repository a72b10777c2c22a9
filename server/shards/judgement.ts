// Which result of a shard a round may use, decided from the results in, the replicas still open
// and who is online: a pure function, so the rules read in one place and are tested on literal
// cases. The rules:
// - A REGISTERED worker's bytes are usable; registered workers are settled among themselves (a
//   strict majority of at least two of their results), never outvoted by untrusted ones.
// - Otherwise bytes are usable only when results that agree bit for bit (one digest over tensors,
//   moments, step and reported loss) come from enough independent groups (parties.ts): at least the
//   index's need (the quorum) and a majority of the untrusted groups online, up to VOTE_CAP. So
//   colluders spanning fewer groups than that never get a lie used, and a fleet split in half waits
//   instead of guessing. Agreement across kernel classes within the tolerance counts for nothing
//   here; it only spares an honest worker of another class a strike.
// - A replica nobody takes within the wait window is escalated: a registered check that no other
//   registered worker took is dropped (the registered result stands), a replica reserved for one
//   kernel class is opened to every class; what still cannot move says why (the run is WAITING).
import type { UpdateDistance } from '../../engine';
import type { Verification } from '../../protocol/run-options';
import { PartyKeys, countGroups } from './parties';

/** Independent groups an untrusted result needs at most (a majority of the electorate, capped). */
export const VOTE_CAP = 5;
/** Replicas of an index any worker may take; beyond them only registered workers may settle it. */
export const MAX_OPEN_REPLICAS = 10;
export const MAX_REGISTERED_REPLICAS = 4;

export interface Ballot {
  readonly id: string;
  readonly workerId: string;
  /** REGISTERED now (not demoted, not quarantined). */
  readonly registered: boolean;
  /** False for a worker that may no longer vote (quarantined): its result is judged, not counted. */
  readonly counts: boolean;
  readonly keys: PartyKeys;
  readonly kernelClass: string;
  readonly digest: string;
  readonly loss: number;
  readonly need: number;
  readonly verdict: 'ACCEPTED' | 'AGREED' | null;
  readonly completedAt: number;
}

export interface OpenReplica {
  readonly id: string;
  readonly leased: boolean;
  readonly registeredOnly: boolean;
  readonly needClass: string | null;
  /** Pending longer than the wait window (nobody eligible took it), or leased past what the run's shards take (overdue). */
  readonly stale: boolean;
}

export interface Case {
  readonly mode: Verification;
  readonly quorum: number;
  /** The index's results not outvoted or voided. */
  readonly ballots: readonly Ballot[];
  readonly open: readonly OpenReplica[];
  readonly replicas: { readonly open: number; readonly registeredOnly: number };
  /** Independent groups of untrusted workers online. */
  readonly electorate: number;
  /** A registered worker other than this index's is online. */
  readonly registeredOnline: boolean;
  /** Between results of different kernel classes (every such pair is given). */
  readonly distance: (a: Ballot, b: Ballot) => UpdateDistance;
  readonly tolerance: number;
  readonly lossTolerance: number;
  readonly waitSeconds: number;
}

export interface Outvote {
  readonly ballot: Ballot;
  readonly why: string;
}

export interface Verdicts {
  /** Bit-identical to the accepted bytes. */
  readonly agreed: readonly Ballot[];
  /** Another kernel class, within the tolerance: neither credited nor struck. */
  readonly close: readonly Ballot[];
  readonly outvoted: readonly Outvote[];
  /** Workers whose agreement counts toward their trust (first time agreed). */
  readonly credit: readonly Ballot[];
}

export type Judgement =
  | ({ readonly kind: 'accept'; readonly accept: Ballot; readonly votes: number; readonly required: number; readonly because: string } & Verdicts)
  /** Results that came after the index was settled. */
  | ({ readonly kind: 'late' } & Verdicts)
  /** A registered result contradicts untrusted ones already accepted: they were a lie. */
  | { readonly kind: 'overturn'; readonly caught: readonly Ballot[]; readonly because: string }
  | { readonly kind: 'replica'; readonly registeredOnly: boolean; readonly needClass: string | null; readonly need: number; readonly because: string }
  | { readonly kind: 'relax'; readonly replicaId: string; readonly because: string }
  /** Nothing to do now; `waiting` says why it cannot move when its replicas wait for anyone eligible. */
  | { readonly kind: 'wait'; readonly waiting: string | null }
  | { readonly kind: 'stuck'; readonly because: string };

const majority = (n: number): number => Math.floor(n / 2) + 1;

/** Groups the untrusted, counting ballots among these stand for. */
const votesOf = (ballots: readonly Ballot[]): number => countGroups(ballots.filter((b) => b.counts && !b.registered).map((b) => b.keys));

const byTime = (a: Ballot, b: Ballot): number => a.completedAt - b.completedAt;

export function judge(c: Case): Judgement {
  const accepted = c.ballots.find((b) => b.verdict === 'ACCEPTED');
  if (accepted) return late(c, accepted);
  const counting = c.ballots.filter((b) => b.counts);
  if (!counting.length) {
    if (c.open.some((o) => !o.leased) || c.open.some((o) => !o.stale)) return { kind: 'wait', waiting: staleWaiting(c) };
    // Only overdue leases: another group computes it meanwhile.
    if (c.open.length && c.replicas.open >= MAX_OPEN_REPLICAS)
      return { kind: 'wait', waiting: `waits for a first result: its leases are overdue and it has ${MAX_OPEN_REPLICAS} replicas` };
    return {
      kind: 'replica',
      registeredOnly: false,
      needClass: null,
      need: c.mode === 'QUORUM' ? c.quorum : 1,
      because: c.open.length ? 'its leases are overdue' : 'no result that counts yet',
    };
  }
  const registered = counting.filter((b) => b.registered).sort(byTime);
  return registered.length ? anchored(c, registered) : untrusted(c, counting);
}

/** Whether b may stand for a's bytes: the same digest, or another class within the tolerance. */
function agrees(c: Case, a: Ballot, b: Ballot): boolean {
  if (a.digest === b.digest) return true;
  if (a.kernelClass === b.kernelClass) return false;
  return c.distance(a, b).relative <= c.tolerance && lossGap(a, b) <= c.lossTolerance;
}

const lossGap = (a: Ballot, b: Ballot): number => Math.abs(a.loss - b.loss) / Math.max(Math.abs(a.loss), Math.abs(b.loss), 1e-6);

/** Groups of ballots that agree with each group's first, in time order. */
function cluster(ballots: readonly Ballot[], same: (a: Ballot, b: Ballot) => boolean): Ballot[][] {
  const groups: Ballot[][] = [];
  for (const b of [...ballots].sort(byTime)) {
    const home = groups.find((g) => same(g[0], b));
    if (home) home.push(b);
    else groups.push([b]);
  }
  return groups;
}

/** Registered results decide; untrusted ones may confirm them (bit for bit, or within the tolerance across classes). */
function anchored(c: Case, registered: Ballot[]): Judgement {
  const groups = cluster(registered, (a, b) => agrees(c, a, b)).sort((a, b) => b.length - a.length);
  let anchorGroup = groups[0];
  if (groups.length > 1) {
    const rest = registered.length - anchorGroup.length;
    if (!(anchorGroup.length >= 2 && anchorGroup.length > rest)) {
      const names = registered.map((b) => b.workerId).join(', ');
      const because = `registered workers ${names} disagree; another registered worker settles it`;
      const waiting = c.open.filter((o) => o.registeredOnly);
      if (waiting.some((o) => !o.stale)) return { kind: 'wait', waiting: null };
      if (waiting.length) return { kind: 'wait', waiting: `${because}, and none took the replica within ${c.waitSeconds} s` };
      if (c.replicas.registeredOnly >= MAX_REGISTERED_REPLICAS)
        return { kind: 'stuck', because: `registered workers ${names} still disagree after ${registered.length} results` };
      return { kind: 'replica', registeredOnly: true, needClass: null, need: 2, because };
    }
  }
  const anchor = anchorGroup[0];
  const supporters = c.ballots.filter((b) => !b.registered && b.counts && agrees(c, anchor, b));
  const votes = anchorGroup.length + votesOf(supporters);
  const need = c.mode === 'NONE' ? 1 : Math.max(...anchorGroup.map((b) => b.need));
  const accept = (because: string): Judgement => ({ kind: 'accept', accept: anchor, votes, required: need, because, ...verdictsAgainst(c, anchor, c.ballots) });
  if (votes >= need) return accept(`${votes} agreeing result(s), registered worker ${anchor.workerId}'s used`);
  if (c.open.some((o) => !o.stale)) return { kind: 'wait', waiting: null };
  if (c.open.length) return accept(`registered worker ${anchor.workerId}'s result stands: no other worker confirmed it within ${c.waitSeconds} s`);
  const checkedByRegistered = c.mode === 'SPOT_CHECK';
  if (checkedByRegistered && !c.registeredOnline)
    return accept(`registered worker ${anchor.workerId}'s result stands: no other registered worker is online to check it`);
  if (checkedByRegistered ? c.replicas.registeredOnly >= MAX_REGISTERED_REPLICAS : c.replicas.open >= MAX_OPEN_REPLICAS) {
    return accept(`registered worker ${anchor.workerId}'s result stands after ${c.ballots.length} results`);
  }
  return { kind: 'replica', registeredOnly: checkedByRegistered, needClass: null, need, because: `registered worker ${anchor.workerId}'s result is checked` };
}

/** No registered result: bytes are used once enough independent groups return them bit for bit. */
function untrusted(c: Case, counting: Ballot[]): Judgement {
  const need = c.mode === 'NONE' ? 1 : Math.max(...counting.map((b) => b.need));
  const required = c.mode === 'NONE' ? 1 : Math.max(need, Math.min(majority(c.electorate), VOTE_CAP));
  const groups = cluster(counting, (a, b) => a.digest === b.digest)
    .map((g) => ({ g, votes: votesOf(g) }))
    .sort((a, b) => b.votes - a.votes || a.g[0].completedAt - b.g[0].completedAt);
  const [lead, second] = groups;
  if (lead.votes >= required && !(second && second.votes >= lead.votes)) {
    const accept = lead.g[0];
    return {
      kind: 'accept',
      accept,
      votes: lead.votes,
      required,
      because: `${lead.votes} independent groups returned it bit for bit (${required} needed)`,
      ...verdictsAgainst(c, accept, c.ballots),
    };
  }
  if (c.open.some((o) => !o.stale)) return { kind: 'wait', waiting: null };
  const pending = c.open.filter((o) => !o.leased); // the rest are overdue leases: counted as absent
  const reserved = pending.find((o) => o.needClass !== null && !o.registeredOnly);
  if (reserved)
    return {
      kind: 'relax',
      replicaId: reserved.id,
      because: `no worker of kernel class ${reserved.needClass} took its replica within ${c.waitSeconds} s: a worker of any class may take it`,
    };
  const has = `has ${lead.votes}: ${[...new Set(lead.g.map((b) => b.keys.prefix))].join(', ')}`;
  const want = `needs ${required} results that agree bit for bit from independent groups (${has}${groups.length > 1 ? `; ${groups.length} different results` : ''})`;
  if (pending.length) return { kind: 'wait', waiting: `${want}; no worker outside those groups took its replica within ${c.waitSeconds} s` };
  if (c.replicas.open < MAX_OPEN_REPLICAS) return { kind: 'replica', registeredOnly: false, needClass: lead.g[0].kernelClass, need, because: want };
  if (c.replicas.registeredOnly < MAX_REGISTERED_REPLICAS)
    return { kind: 'replica', registeredOnly: true, needClass: null, need, because: `${want}; only a registered worker may settle it now` };
  return { kind: 'wait', waiting: `${want}; only a registered worker may settle it` };
}

/** What every other result is, against the accepted bytes. */
function verdictsAgainst(c: Case, accepted: Ballot, ballots: readonly Ballot[]): Verdicts {
  const agreed: Ballot[] = [];
  const close: Ballot[] = [];
  const outvoted: Outvote[] = [];
  for (const b of ballots) {
    if (b.id === accepted.id) continue;
    if (b.digest === accepted.digest) agreed.push(b);
    else if (b.kernelClass !== accepted.kernelClass && agrees(c, accepted, b)) close.push(b);
    else outvoted.push({ ballot: b, why: difference(c, b, accepted) });
  }
  const group = [accepted, ...agreed];
  const credit = group.length >= 2 ? group.filter((b) => b.verdict === null) : [];
  return { agreed, close, outvoted, credit };
}

/** Results that came after the index was settled; a registered one that contradicts untrusted bytes overturns them. */
function late(c: Case, accepted: Ballot): Judgement {
  const supporters = c.ballots.filter((b) => b.verdict !== null);
  const pending = c.ballots.filter((b) => b.verdict === null);
  if (!pending.length) return { kind: 'wait', waiting: null };
  const anchoredByRegistered = supporters.some((b) => b.registered && b.digest === accepted.digest);
  const contradicting = pending.find((b) => b.registered && b.counts && !agrees(c, accepted, b));
  if (contradicting && !anchoredByRegistered) {
    return {
      kind: 'overturn',
      caught: supporters.filter((b) => b.digest === accepted.digest),
      because: `registered worker ${contradicting.workerId} contradicts the accepted result: ${difference(c, accepted, contradicting)}`,
    };
  }
  const v = verdictsAgainst(c, accepted, pending);
  return { kind: 'late', ...v, credit: v.agreed.filter((b) => b.verdict === null) };
}

/** Why b cannot be the accepted result a. */
function difference(c: Case, b: Ballot, a: Ballot): string {
  if (b.kernelClass === a.kernelClass) {
    return `its result differs from worker ${a.workerId}'s on the same kernel class (${a.kernelClass}), where they must be bit-identical`;
  }
  const d = c.distance(a, b);
  if (d.relative > c.tolerance) {
    return `it differs from worker ${a.workerId}'s (${a.kernelClass}) by ${d.relative.toPrecision(3)} relative L2 (most in ${d.tensor}), over the ${c.tolerance} allowed across kernel classes`;
  }
  return `it reports loss ${b.loss.toFixed(4)} where worker ${a.workerId}'s (${a.kernelClass}) reports ${a.loss.toFixed(4)}, over ${(100 * c.lossTolerance).toFixed(0)}% apart`;
}

/** Why no result has come, when every replica waited past the window for anyone eligible. */
function staleWaiting(c: Case): string | null {
  if (c.open.some((o) => !o.stale)) return null;
  const online = `${c.electorate} untrusted group${c.electorate === 1 ? '' : 's'} and ${c.registeredOnline ? 'a' : 'no'} registered worker online`;
  return `waits for a first result: no eligible worker took its replica within ${c.waitSeconds} s (${online})`;
}
