// Which result of a shard a round may use (server/shards/judgement.ts), on literal cases: registered
// results decide and are never outvoted by untrusted ones; untrusted bytes need bit-identical
// results from enough independent groups (a majority of the untrusted groups online); sybils of
// one network or one token count once; a false kernel class buys nothing; what cannot move says why.
import { Ballot, Case, MAX_OPEN_REPLICAS, judge } from '../server/shards/judgement';
import { countGroups, prefixOf } from '../server/shards/parties';

const K = 'wasm-gemm-fma';
let clock = 0;
/** A result: `worker` names it; prefixes 10.0.N.0/24 from the worker's number unless given. */
const ballot = (worker: string, digest: string, o: Partial<Ballot> = {}): Ballot => ({
  id: `r-${worker}`,
  workerId: worker,
  registered: worker.startsWith('reg'),
  counts: true,
  keys: { prefix: `10.0.${worker.replace(/\D/g, '') || 0}.0/24`, origin: `token:${worker}` },
  kernelClass: K,
  digest,
  loss: 1,
  need: 2,
  verdict: null,
  completedAt: ++clock,
  ...o,
});

const spread = (d: string, relative: number) => ({ relative, tensor: d });
const base = (ballots: Ballot[], o: Partial<Case> = {}): Case => ({
  mode: 'SPOT_CHECK',
  quorum: 2,
  ballots,
  open: [],
  replicas: { open: ballots.length, registeredOnly: 0 },
  electorate: 4,
  registeredOnline: false,
  distance: () => spread('x', 0.5),
  tolerance: 0.01,
  lossTolerance: 0.02,
  waitSeconds: 30,
  ...o,
});
const open = (id: string, o: { stale?: boolean; leased?: boolean; registeredOnly?: boolean; needClass?: string | null } = {}) => ({
  id,
  leased: o.leased ?? false,
  registeredOnly: o.registeredOnly ?? false,
  needClass: o.needClass ?? null,
  stale: o.stale ?? false,
});

describe('parties', () => {
  it('are network prefixes (IPv4 /24, IPv6 /64) and tokens; workers sharing either are one group', () => {
    expect(prefixOf('127.0.3.17')).toBe('127.0.3.0/24');
    expect(prefixOf('::ffff:192.168.1.9')).toBe('192.168.1.0/24');
    expect(prefixOf('2001:db8:0:7:1:2:3:4')).toBe('2001:db8:0:7::/64');
    expect(prefixOf('2001:db8::1')).toBe('2001:db8::/64');
    expect(prefixOf('10.1.2.3', { v4: 16, v6: 48 })).toBe('10.1.0.0/16');
    expect(
      countGroups([
        { prefix: 'a', origin: 't1' },
        { prefix: 'b', origin: 't1' },
        { prefix: 'b', origin: 't2' },
        { prefix: 'c', origin: '' },
      ]),
    ).toBe(2);
    expect(
      countGroups([
        { prefix: 'a', origin: '' },
        { prefix: 'b', origin: '' },
      ]),
    ).toBe(2); // no token links nothing
  });
});

describe('judgement', () => {
  it('uses a registered result alone when it needs no check; a volunteer that disagrees is outvoted', () => {
    const reg = ballot('reg1', 'honest', { need: 1 });
    const liar = ballot('v1', 'lie');
    const j = judge(base([reg, liar]));
    expect(j.kind === 'accept' && [j.accept.id, j.outvoted.map((o) => o.ballot.id)]).toEqual([reg.id, [liar.id]]);
  });

  it('three sybils of one network that agree are one vote and never outvote a registered worker', () => {
    const reg = ballot('reg1', 'honest', { need: 2 });
    const sybils = ['v7', 'v8', 'v9'].map((w) => ballot(w, 'zero-work', { keys: { prefix: '10.0.5.0/24', origin: `token:${w}` } }));
    // The registered result waits for its registered check, then stands: the sybils lose.
    expect(judge(base([reg, ...sybils], { open: [open('check', { registeredOnly: true })] }))).toEqual({ kind: 'wait', waiting: null });
    const j = judge(base([reg, ...sybils], { open: [open('check', { registeredOnly: true, stale: true })] }));
    expect(j.kind === 'accept' && [j.accept.id, j.outvoted.length, j.because]).toEqual([
      reg.id,
      3,
      expect.stringMatching(/stands: no other worker confirmed it/),
    ]);
  });

  it('registered workers that disagree are settled by another registered worker, never by volunteers', () => {
    const [a, b] = [ballot('reg1', 'x', { need: 1 }), ballot('reg2', 'y', { need: 1 })];
    const volunteers = [ballot('v1', 'y'), ballot('v2', 'y'), ballot('v3', 'y')];
    expect(judge(base([a, b, ...volunteers]))).toMatchObject({ kind: 'replica', registeredOnly: true });
    expect(judge(base([a, b], { open: [open('third', { registeredOnly: true, stale: true })] }))).toEqual({
      kind: 'wait',
      waiting: expect.stringMatching(/registered workers reg1, reg2 disagree; another registered worker settles it/),
    });
    const j = judge(base([a, b, ballot('reg3', 'x', { need: 1 })]));
    expect(j.kind === 'accept' && [j.accept.id, j.outvoted.map((o) => o.ballot.workerId)]).toEqual([a.id, ['reg2']]);
  });

  it('an untrusted result needs a majority of the untrusted groups online, at least the quorum: two of four is not enough', () => {
    const [h1, h2, h3] = [ballot('v1', 'honest'), ballot('v2', 'honest'), ballot('v3', 'honest')];
    expect(judge(base([h1, h2]))).toMatchObject({ kind: 'replica', registeredOnly: false, needClass: K });
    const j = judge(base([h1, h2, h3]));
    expect(j.kind === 'accept' && [j.votes, j.required, j.credit.length]).toEqual([3, 3, 3]);
    // The quorum is a floor: QUORUM 3 with two groups online still needs three.
    expect(
      judge(
        base(
          [
            { ...h1, need: 3 },
            { ...h2, need: 3 },
          ],
          { mode: 'QUORUM', quorum: 3, electorate: 2 },
        ),
      ),
    ).toMatchObject({ kind: 'replica' });
    // At most VOTE_CAP groups, however many are online.
    const many = ['v1', 'v2', 'v3', 'v4', 'v5'].map((w) => ballot(w, 'honest'));
    expect(judge(base(many, { electorate: 40 }))).toMatchObject({ kind: 'accept', votes: 5, required: 5 });
  });

  it('colluders holding half the groups cannot win, nor can the honest half: the index waits and says why', () => {
    const ballots = [ballot('v1', 'honest'), ballot('v2', 'honest'), ballot('v3', 'lie'), ballot('v4', 'lie')];
    expect(judge(base(ballots))).toMatchObject({ kind: 'replica', needClass: K });
    const j = judge(base(ballots, { open: [open('next', { stale: true })] }));
    expect(j).toEqual({
      kind: 'wait',
      waiting: expect.stringMatching(
        /needs 3 results that agree bit for bit from independent groups \(has 2: 10\.0\.1\.0\/24, 10\.0\.2\.0\/24; 2 different results\); no worker outside those groups took its replica within 30 s/,
      ),
    });
  });

  it('workers linked by a shared token are one group, whatever their networks', () => {
    const ballots = ['v1', 'v2', 'v3'].map((w) => ballot(w, 'lie', { keys: { prefix: `10.0.${w.slice(1)}.0/24`, origin: 'token:shared' } }));
    expect(judge(base(ballots, { electorate: 3 }))).toMatchObject({ kind: 'replica' });
  });

  it('a kernel class nobody else reports buys nothing: its results never make a majority of the groups online', () => {
    const fake = ['v5', 'v6'].map((w) => ballot(w, 'noise', { kernelClass: 'webgl2-f32:fake_gpu' }));
    const j = judge(base(fake, { electorate: 6 }));
    expect(j).toMatchObject({ kind: 'replica', needClass: 'webgl2-f32:fake_gpu' });
    // Its replica, untaken by any honest worker of that class, is opened to every class.
    expect(judge(base(fake, { electorate: 6, open: [open('r', { stale: true, needClass: 'webgl2-f32:fake_gpu' })] }))).toMatchObject({
      kind: 'relax',
      replicaId: 'r',
    });
  });

  it('across kernel classes, agreement within the tolerance spares a strike and earns no credit; beyond it is outvoted', () => {
    const reg = ballot('reg1', 'honest', { need: 1 });
    const near = ballot('v1', 'near', { kernelClass: 'wasm-blas:x' });
    const far = ballot('v2', 'far', { kernelClass: 'wasm-blas:x' });
    const j = judge(base([reg, near, far], { distance: (a, b) => spread('attn.qkv.weight', a.id === far.id || b.id === far.id ? 0.8 : 0.002) }));
    expect(j.kind === 'accept' && [j.close.map((b) => b.id), j.outvoted.map((o) => o.ballot.id), j.credit]).toEqual([[near.id], [far.id], []]);
    expect(j.kind === 'accept' && j.outvoted[0].why).toMatch(
      /differs from worker reg1's \(wasm-gemm-fma\) by 0\.800 relative L2 \(most in attn\.qkv\.weight\)/,
    );
    // A registered result confirmed across classes meets a quorum of two.
    expect(judge(base([{ ...reg, need: 2 }, near], { mode: 'QUORUM', distance: () => spread('x', 0.002) }))).toMatchObject({ kind: 'accept', votes: 2 });
  });

  it('a registered result that contradicts accepted untrusted bytes overturns them', () => {
    const accepted = [ballot('v1', 'lie', { verdict: 'ACCEPTED' }), ballot('v2', 'lie', { verdict: 'AGREED' })];
    const j = judge(base([...accepted, ballot('reg1', 'honest', { need: 1 })]));
    expect(j.kind === 'overturn' && j.caught.map((b) => b.workerId)).toEqual(['v1', 'v2']);
    // A late result that agrees is credited; one that does not is outvoted.
    const late = judge(base([...accepted, ballot('v3', 'lie'), ballot('v4', 'other')]));
    expect(late.kind === 'late' && [late.agreed.map((b) => b.workerId), late.outvoted.map((o) => o.ballot.workerId)]).toEqual([['v3'], ['v4']]);
  });

  it('an overdue lease (fake progress, a stalled worker) counts as absent: another group gets a replica meanwhile', () => {
    const waiting = [ballot('v1', 'honest'), ballot('v2', 'honest')];
    // A lease still within the run's pace holds the index.
    expect(judge(base(waiting, { open: [open('o', { leased: true })] }))).toEqual({ kind: 'wait', waiting: null });
    // Overdue: judged as if nobody held it (electorate 4 needs 3 groups).
    expect(judge(base(waiting, { open: [open('o', { leased: true, stale: true })] }))).toMatchObject({ kind: 'replica', registeredOnly: false, needClass: K });
    expect(judge(base([], { open: [open('o', { leased: true, stale: true })], replicas: { open: 1, registeredOnly: 0 } }))).toMatchObject({
      kind: 'replica',
      because: 'its leases are overdue',
    });
    // A registered result does not wait on an overdue lease to confirm it.
    expect(judge(base([ballot('reg1', 'honest', { need: 2 })], { open: [open('o', { leased: true, stale: true })] }))).toMatchObject({ kind: 'accept' });
  });

  it("a quarantined worker's result counts for nothing; NONE takes one result as it is", () => {
    expect(judge(base([ballot('v1', 'x', { counts: false })]))).toMatchObject({ kind: 'replica', because: 'no result that counts yet' });
    expect(judge(base([ballot('v1', 'x', { counts: false })], { open: [open('o')] }))).toEqual({ kind: 'wait', waiting: null });
    expect(judge(base([ballot('v1', 'x', { counts: false })], { open: [open('o', { stale: true })] }))).toEqual({
      kind: 'wait',
      waiting: expect.stringMatching(/waits for a first result: .* \(\d+ untrusted groups? and (a|no) registered worker online\)$/),
    });
    expect(judge(base([ballot('v1', 'x', { need: 1 })], { mode: 'NONE' }))).toMatchObject({ kind: 'accept', votes: 1, required: 1 });
  });

  it('past the open replicas, only a registered worker may settle an index', () => {
    const ballots = [ballot('v1', 'a'), ballot('v2', 'b')];
    expect(judge(base(ballots, { replicas: { open: MAX_OPEN_REPLICAS, registeredOnly: 0 } }))).toMatchObject({ kind: 'replica', registeredOnly: true });
  });
});
