// The edge worker in a real headless Chromium (Debian's /usr/bin/chromium, driven by
// playwright-core): a server with no Node worker, one tab on /worker, a run started over GraphQL.
// On the wasm backend the tab runs the same engine code on the same kernels as a Node worker on
// `--blas engine` (the engine's GEMM, relaxed-SIMD FMA in both), so with one shard per round its
// run must equal `partune finetune` bit for bit.
import { spawnSync } from 'node:child_process';
import { mkdtempSync, readFileSync } from 'node:fs';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import { Browser, chromium } from 'playwright-core';
import { STATE_KEY, parseDelta, parseSafetensors, serializeSafetensors } from '../engine';
import { CLI, RUN_QUERY, ServerProcess, WorkerProcess, cliJson, gql, ok, startServer, startWorker, uploadBytes, waitFor, waitForRun } from '../node/local-platform';
import { describeUnless } from './support/skip';
import { CHROMIUM, CHROMIUM_FLAGS, chromiumMissing } from '../node/chromium';

jest.setTimeout(300_000);

const suite = describeUnless(chromiumMissing());

suite('edge worker in headless Chromium', () => {
  let server: ServerProcess;
  let browser: Browser;
  const tmp = mkdtempSync(join(tmpdir(), 'partune-edge-'));
  const micro = join(tmp, 'micro.safetensors');

  beforeAll(async () => {
    spawnSync(process.execPath, [CLI, 'convert', '--checkpoint', 'random:vit_micro_patch4_28', '--out', micro, '--quiet']);
    // Bit-for-bit comparisons with the browser need Node on the same kernels: the engine's GEMM, not the native BLAS.
    server = await startServer({ PARTUNE_LEASE_SECONDS: '15', PARTUNE_BLAS: 'engine' });
    const uploadId = await uploadBytes(server, 'micro.safetensors', readFileSync(micro));
    await ok(server.url, server.admin, 'mutation($i: RegisterModelInput!) { registerModel(input: $i) { id } }', { i: { name: 'micro', uploadId } });
    await ok(server.url, server.admin, 'mutation($i: ImportDatasetInput!) { importDataset(input: $i) { id } }',
      { i: { name: 'digits', format: 'MNIST_PACKAGE', trainLimit: 1024, testLimit: 400 } });
    browser = await chromium.launch({ executablePath: CHROMIUM, args: CHROMIUM_FLAGS });
  });
  afterAll(async () => {
    await browser?.close();
    await server?.stop();
  });

  it('a tab on the wasm backend trains a run alone, and matches a single process bit for bit', async () => {
    const page = await browser.newPage();
    const console: string[] = [];
    page.on('console', (m) => void console.push(m.text()));
    await page.goto(`${server.url.replace('/graphql', '')}/worker?start=1&backend=wasm&name=tab-1`);
    await page.waitForFunction(() => document.body.dataset.state === 'working' || document.body.dataset.state === 'error', null, { timeout: 60_000 });
    expect(await page.textContent('#state')).toMatch(/^(starting|idle|training)/);
    await page.waitForFunction(() => document.body.dataset.backend !== undefined, null, { timeout: 60_000 }); // chosen once started
    expect(await page.textContent('#backend')).toMatch(/WebAssembly/);
    // The shard protocol runs over graphql-ws; the socket opens as the worker starts.
    await page.waitForFunction(() => document.getElementById('connection')?.textContent === 'connected', null, { timeout: 30_000 });
    expect(await page.textContent('#memory')).toBe('1,024 MiB');

    // Alone, a volunteer has no one to check its results against: the run opts out of verification.
    const { startRun } = await ok(server.url, server.admin, 'mutation($i: StartRunInput!) { startRun(input: $i) { id } }',
      { i: { model: 'micro', dataset: 'digits', strategy: 'attn-only', hyperParameters: { admitVolunteers: true, epochs: 2, stepsPerRound: 8, shardsPerRound: 1, verification: 'NONE' } } });
    const run = await waitForRun(server, startRun.id);
    expect(run.status).toBe('SUCCEEDED');
    const { workers } = await ok(server.url, server.admin, '{ workers { items { name kind backend shardsDone samples imagesPerSecond kernelClass backendChoice { chosen how } } } }');
    expect(workers.items).toEqual([expect.objectContaining({
      name: 'tab-1', kind: 'browser', backend: 'wasm', shardsDone: 8, samples: 64 * 32, kernelClass: expect.stringMatching(/^wasm-gemm-/), backendChoice: { chosen: 'wasm', how: 'forced' },
    })]);
    await waitFor('the page to count its shards', async () => (await page.getAttribute('body', 'data-shards')) === '8', 10_000);
    expect(await page.textContent('#samples')).toMatch(/2,048 images in 8 shards/);

    const reference = join(tmp, 'single.safetensors');
    const single = await cliJson(['finetune', '--checkpoint', micro, '--data', 'mnist', '--strategy', 'attn-only', '--train-limit', '1024',
      '--test-limit', '400', '--epochs', '2', '--backend', 'wasm', '--blas', 'engine', '--out', reference]);
    expect(run.accuracy).toBe(single.accuracy);
    const ours = parseDelta(new Uint8Array(await (await fetch(run.delta.downloadUrl)).arrayBuffer()));
    const theirs = parseDelta(new Uint8Array(readFileSync(reference)));
    let worst = 0;
    for (const [k, t] of theirs.tensors) t.data.forEach((v, i) => (worst = Math.max(worst, Math.abs(v - ours.tensors.get(k)!.data[i]))));
    expect(worst).toBe(0);
    process.stderr.write(`[edge] browser wasm worker: ${workers.items[0].imagesPerSecond.toFixed(1)} img/s; top-1 ${(run.accuracy * 100).toFixed(2)}% = single process\n`);

    await page.click('#toggle');
    await page.waitForFunction(() => document.body.dataset.state === 'stopped', null, { timeout: 30_000 });
    await page.close();
  });

  it("auto: a tab times its backends on the run's model, never takes SwiftShader, shows the timings and remembers them", async () => {
    const context = await browser.newContext(); // one localStorage for both visits
    const origin = server.url.replace('/graphql', '');
    const start = async (): Promise<string> => (await ok(server.url, server.admin, 'mutation($i: StartRunInput!) { startRun(input: $i) { id } }',
      { i: { model: 'micro', dataset: 'digits', strategy: 'attn-only', hyperParameters: { admitVolunteers: true, epochs: 1, stepsPerRound: 16, shardsPerRound: 1, verification: 'NONE' } } })).startRun.id;
    const choice = async (name: string): Promise<any> => (await ok(server.url, server.admin, '{ workers(first: 10) { items { name backend backendChoice { chosen how model timings { backend detail imagesPerSecond note } } } } }'))
      .workers.items.find((w: { name: string }) => w.name === name);
    try {
      for (const [visit, how] of [['tab-auto-1', /^(only one|measured)$/], ['tab-auto-2', /^remembered$/]] as const) {
        const page = await context.newPage();
        await page.goto(`${origin}/worker?start=1&name=${visit}`);
        await page.waitForFunction(() => document.body.dataset.state === 'working', null, { timeout: 60_000 });
        expect((await waitForRun(server, await start())).status).toBe('SUCCEEDED');
        const row = await choice(visit);
        expect(row).toEqual(expect.objectContaining({ backend: 'wasm', backendChoice: expect.objectContaining({ chosen: 'wasm', how: expect.stringMatching(how), model: expect.stringContaining('d64x4h4m128') }) }));
        const timings = Object.fromEntries(row.backendChoice.timings.map((t: { backend: string }) => [t.backend, t]));
        expect(timings.wasm.imagesPerSecond).toBeGreaterThan(0);
        // This machine's only WebGPU adapter is SwiftShader: listed, never timed, never chosen.
        expect(timings.webgpu).toEqual(expect.objectContaining({ imagesPerSecond: null, note: expect.stringMatching(/^never chosen: a (fallback|software) adapter .*swiftshader/i) }));
        expect(await page.getAttribute('body', 'data-backend')).toBe('wasm');
        expect(await page.textContent('#timings tr[data-backend="wasm"]')).toMatch(/^wasm \(chosen\).*GEMM.*\d img\/s$/);
        expect(await page.textContent('#timings tr[data-backend="webgpu"]')).toMatch(/never chosen/);
        process.stderr.write(`[edge] auto (${row.backendChoice.how}): ${row.backendChoice.timings.map((t: any) => `${t.backend} ${t.imagesPerSecond?.toFixed(1) ?? t.note}`).join('; ')}\n`);
        await page.close();
      }
    } finally {
      await context.close();
    }
  });

  it('a mixed fleet (one Node worker, two tabs) survives a tab closed mid-shard, and computes what an uninterrupted fleet does', async () => {
    const node: WorkerProcess = startWorker(server, 'node-1', ['--blas', 'engine']);
    const origin = server.url.replace('/graphql', '');
    const tabs = await Promise.all(['tab-a', 'tab-b'].map(async (name) => {
      const page = await browser.newPage();
      await page.goto(`${origin}/worker?start=1&backend=wasm&name=${name}`);
      await page.waitForFunction(() => document.body.dataset.state === 'working', null, { timeout: 60_000 });
      return page;
    }));
    try {
      const hyper = { epochs: 2, stepsPerRound: 24, shardsPerRound: 3, admitVolunteers: true };
      const start = async (): Promise<string> => (await ok(server.url, server.admin, 'mutation($i: StartRunInput!) { startRun(input: $i) { id } }',
        { i: { model: 'micro', dataset: 'digits', strategy: 'attn-only', hyperParameters: hyper } })).startRun.id;
      const id = await start();
      const ids = async (): Promise<Record<string, string>> =>
        Object.fromEntries((await ok(server.url, server.admin, '{ workers(online: true) { items { id name } } }')).workers.items.map((w: any) => [w.name, w.id]));
      const held = await waitFor('tab-b to hold a shard', async () => {
        const w = await ids();
        const { run } = await ok(server.url, server.admin, RUN_QUERY, { id });
        return run.shards.find((sh: any) => sh.status === 'LEASED' && sh.workerId === w['tab-b'] && sh.round >= 1);
      }, 120_000, 100);
      await tabs[1].close(); // mid-shard: its lease lapses and the shard is re-issued
      const run = await waitForRun(server, id);
      expect(run.status).toBe('SUCCEEDED');
      // Re-issued, or settled by the Node worker's replica that checked the tab.
      const retried = run.shards.find((sh: any) => sh.id === held.id);
      // Re-issued after its lease lapsed, or made moot by the Node worker's result on its sibling.
      if (retried.status === 'CANCELLED') expect(run.shards.some((sh: any) => sh.round === retried.round && sh.index === retried.index && sh.verdict === 'ACCEPTED')).toBe(true);
      else expect([retried.attempt >= 2, retried.rejections.join(' ')]).toEqual([true, expect.stringMatching(/lease expired/)]);
      const { workers } = await ok(server.url, server.admin, '{ workers { items { name kind shardsDone } } }');
      const done = Object.fromEntries(workers.items.map((w: any) => [w.name, w.shardsDone]));
      expect(done['node-1']).toBeGreaterThan(0);
      expect(done['tab-a']).toBeGreaterThan(0);

      const again = await waitForRun(server, await start()); // the remaining fleet, uninterrupted
      expect(again.accuracy).toBe(run.accuracy);
      const [x, y] = await Promise.all([run, again].map(async (r) => parseDelta(new Uint8Array(await (await fetch(r.delta.downloadUrl)).arrayBuffer()))));
      for (const [k, t] of x.tensors) expect(Buffer.compare(Buffer.from(t.data.buffer), Buffer.from(y.tensors.get(k)!.data.buffer))).toBe(0);
    } finally {
      await node.kill();
      await tabs[0].close();
    }
  });

  it('a lying tab (its uploads\' moments forged on the wire) is outvoted under QUORUM; the run equals a single process', async () => {
    const nodes = [startWorker(server, 'node-q1', ['--blas', 'engine']), startWorker(server, 'node-q2', ['--blas', 'engine'])];
    const page = await browser.newPage();
    const forged: string[] = [];
    // Same parameters, first moments zeroed: within every bound, only a replica's digest tells.
    await page.route(/\/blobs\/slots\//, async (route) => {
      if (route.request().method() !== 'PUT') return route.continue();
      const file = parseSafetensors(new Uint8Array(route.request().postDataBuffer()!));
      const tensors = new Map([...file.tensors].map(([k, t]) => [k, { shape: t.shape, data: k.startsWith('exp_avg/') ? new Float32Array(t.data.length) : t.data }]));
      forged.push(JSON.parse(file.metadata[STATE_KEY]).shard);
      await route.continue({ postData: Buffer.from(serializeSafetensors(tensors, { dtype: 'F32', metadata: file.metadata })) });
    });
    try {
      await page.goto(`${server.url.replace('/graphql', '')}/worker?start=1&backend=wasm&name=tab-liar`);
      await page.waitForFunction(() => document.body.dataset.state === 'working', null, { timeout: 60_000 });
      const { startRun } = await ok(server.url, server.admin, 'mutation($i: StartRunInput!) { startRun(input: $i) { id } }',
        { i: { model: 'micro', dataset: 'digits', strategy: 'attn-only', hyperParameters: { admitVolunteers: true, epochs: 2, stepsPerRound: 8, shardsPerRound: 1, verification: 'QUORUM' } } });
      const run = await waitForRun(server, startRun.id);
      expect(run.status).toBe('SUCCEEDED');
      const reference = join(tmp, 'single-quorum.safetensors');
      await cliJson(['finetune', '--checkpoint', micro, '--data', 'mnist', '--strategy', 'attn-only', '--train-limit', '1024', '--test-limit', '400', '--epochs', '2',
        '--backend', 'wasm', '--blas', 'engine', '--out', reference]);
      const ours = parseDelta(new Uint8Array(await (await fetch(run.delta.downloadUrl)).arrayBuffer()));
      for (const [k, t] of parseDelta(new Uint8Array(readFileSync(reference))).tensors) {
        expect(Buffer.compare(Buffer.from(t.data.buffer, t.data.byteOffset, t.data.byteLength), Buffer.from(ours.tensors.get(k)!.data.buffer, ours.tensors.get(k)!.data.byteOffset, ours.tensors.get(k)!.data.byteLength))).toBe(0);
      }
      const { workers } = await ok(server.url, server.admin, '{ workers(first: 100) { items { id name trust agreed disagreed } } }');
      const liar = workers.items.find((w: { name: string }) => w.name === 'tab-liar');
      const { run: detail } = await ok(server.url, server.admin, 'query($id: ID!) { run(id: $id) { shards { id verdict workerId rejections } } }', { id: startRun.id });
      const judged = detail.shards.filter((r: { id: string; verdict: string | null }) => forged.includes(r.id) && r.verdict === 'OUTVOTED');
      expect(judged.length).toBeGreaterThan(0);
      for (const r of judged) expect(r.rejections.join(' ')).toMatch(new RegExp(`by worker ${liar.id}: outvoted: its result differs from worker \\S+'s on the same kernel class \\(wasm-gemm-(fma|relaxed-unfused|simd128)\\)`));
      expect(detail.shards.filter((r: { workerId: string; verdict: string | null }) => r.workerId === liar.id && (r.verdict === 'ACCEPTED' || r.verdict === 'AGREED'))).toEqual([]);
      expect([liar.trust, liar.agreed, liar.disagreed]).toEqual([expect.stringMatching(/UNTRUSTED|QUARANTINED/), 0, judged.length]);
      process.stderr.write(`[edge] lying tab: ${forged.length} forged uploads, ${judged.length} outvoted, the rest refused as late\n`);
    } finally {
      await Promise.all(nodes.map((n) => n.kill()));
      await page.close();
    }
  });

  // WebGPU's step check runs in tests/gpu-check.test.ts (bench/gpu/run.sh), in this Chromium too.
  it.each([['wasm'], ['wasm&products=xnnpack'], ['webgl']])('%s: a training step matches the cpu backend (logits, loss, gradients, updated weights)', async (query) => {
    const backend = query.split('&')[0];
    const page = await browser.newPage();
    await page.goto(`${server.url.replace('/graphql', '')}/worker/selftest.html?backend=${query}`);
    const handle = await page.waitForFunction(() => (window as unknown as { partuneSelfTest?: unknown }).partuneSelfTest, null, { timeout: 240_000 });
    const r = (await handle.jsonValue()) as Record<string, number | string>;
    await page.close();
    process.stderr.write(`[selftest] ${JSON.stringify(r)}\n`);
    expect(r.error).toBeUndefined();
    expect(r.backend).toBe(backend);
    // Relative to each tensor's largest value. Measured here: logits <= 2.3e-7, gradients <= 1.3e-6.
    // The AdamW step divides each gradient by its own magnitude (+ eps 1e-8), so where a gradient
    // is near zero a 1e-7 difference moves the update visibly: measured <= 6.8e-4 of the tensor's
    // largest update; garbage (a wrong sign, a missing term) would be O(1).
    expect(r.logits).toBeLessThan(1e-5);
    expect(r.loss).toBeLessThan(1e-5);
    expect(r.gradients).toBeLessThan(1e-5);
    expect(r.updated).toBeLessThan(3e-3);
  });

  it('dashboard: start a run from the form (counts shown before launch), watch it live, see the final accuracy', async () => {
    const node = startWorker(server, 'node-dash');
    // Without a token the private runs are not listed, and the page says so and how to see them.
    const anonymous = await browser.newPage();
    await anonymous.goto(`${server.url.replace('/graphql', '')}/`);
    await anonymous.waitForSelector('body[data-ready="true"]', { timeout: 30_000 });
    await anonymous.waitForSelector('#runs .no-token', { timeout: 10_000 });
    expect(await anonymous.textContent('#runs')).toMatch(/Runs are private unless made public: enter a read token or the admin token above/);
    await anonymous.close();
    const page = await browser.newPage({ viewport: { width: 1280, height: 900 } });
    try {
      await page.goto(`${server.url.replace('/graphql', '')}/?token=${server.admin}`);
      await page.waitForSelector('body[data-ready="true"]', { timeout: 30_000 });
      await page.selectOption('#model', 'micro');
      await page.selectOption('#dataset', 'digits');
      await page.selectOption('#strategy', 'attn-only');
      await page.waitForFunction(() => document.getElementById('preview')!.textContent!.includes('67,722'), null, { timeout: 10_000 });
      expect(await page.textContent('#preview')).toMatch(/tunes 67,722 of 139,018 parameters \(48\.71%\); delta about/);
      await page.fill('#epochs', '2');
      await page.fill('#stepsPerRound', '8');
      await page.fill('#shardsPerRound', '1');
      const before = await page.locator('.run').count();
      await page.click('#go');
      await page.waitForFunction((n) => document.querySelectorAll('.run').length > n, before, { timeout: 10_000 });
      const card = page.locator('.run').first();
      await card.locator('progress').waitFor();
      await page.waitForFunction(() => document.querySelector('.run')?.getAttribute('data-status') === 'SUCCEEDED', null, { timeout: 180_000 });
      const runId = await card.getAttribute('data-run');
      const { run } = await ok(server.url, server.admin, 'query($id: ID!) { run(id: $id) { accuracy metrics { testAccuracy } } }', { id: runId });
      await page.waitForFunction((a) => document.querySelector('.run .acc')?.getAttribute('data-accuracy') === String(a), run.accuracy, { timeout: 10_000 });
      expect(await card.locator('.acc').textContent()).toBe(`top-1 ${(100 * run.accuracy).toFixed(2)}%`);
      expect(await card.locator('svg[data-chart="test top-1"] circle').count()).toBe(2); // one evaluation per epoch
      expect(await card.locator('a[download]').getAttribute('href')).toMatch(/^http/);
      expect(await page.textContent('#workers')).toMatch(/node-dash/);
      expect(await card.locator('svg[data-chart="train loss"]').count()).toBe(1); // loss and top-1 on axes of their own

      // Two more strategies on the same model and dataset: the chooser lists every finished run as the API does.
      for (const strategy of ['linear-probe', 'full']) {
        const { startRun } = await ok(server.url, server.admin, 'mutation($i: StartRunInput!) { startRun(input: $i) { id } }',
          { i: { model: 'micro', dataset: 'digits', strategy, hyperParameters: { admitVolunteers: true, epochs: 1, maxSteps: 8, stepsPerRound: 8 } } });
        await waitForRun(server, startRun.id);
      }
      const { runs } = await ok(server.url, server.admin, '{ runs(filter: { model: "micro", dataset: "digits", status: SUCCEEDED }, first: 100) { total items { id strategyName tunedParameters accuracy } } }');
      expect(runs.total).toBeGreaterThanOrEqual(3);
      await page.waitForFunction((n) => document.querySelectorAll('#compareRows tr').length === n, runs.total, { timeout: 20_000 });
      // The front computed here, independently: no other run at least as accurate with at most as many tuned parameters.
      const beaten = (r: any): boolean => runs.items.some((o: any) => o.accuracy >= r.accuracy && o.tunedParameters <= r.tunedParameters && (o.accuracy > r.accuracy || o.tunedParameters < r.tunedParameters));
      for (const r of runs.items) {
        const row = page.locator(`#compareRows tr[data-run="${r.id}"]`);
        expect(await row.getAttribute('data-accuracy')).toBe(String(r.accuracy));
        expect(await row.locator('.top1').textContent()).toBe(`${(100 * r.accuracy).toFixed(2)}%`);
        expect(await row.getAttribute('data-tuned')).toBe(String(r.tunedParameters));
        expect({ strategy: r.strategyName, front: await row.getAttribute('data-front') }).toEqual({ strategy: r.strategyName, front: String(!beaten(r)) });
        expect(await page.locator(`svg[data-chart="pareto"] circle[data-run="${r.id}"]`).getAttribute('data-front')).toBe(String(!beaten(r)));
      }
      expect(runs.items.filter((r: any) => !beaten(r)).length).toBeGreaterThanOrEqual(1);

      // A uniform soup of the two new runs, launched from the chooser: its card reports what the API reports.
      const [lp, full] = ['linear-probe', 'full'].map((s) => runs.items.find((r: any) => r.strategyName === s));
      for (const r of [lp, full]) await page.check(`#compareRows tr[data-run="${r.id}"] input.pick`);
      await page.selectOption('#soupMethod', 'UNIFORM');
      await page.click('#soupGo');
      await page.waitForFunction(() => document.querySelector('.run table.soup') !== null, null, { timeout: 120_000 });
      const soupId = await page.locator('.run', { has: page.locator('table.soup') }).first().getAttribute('data-run');
      const { run: souped } = await ok(server.url, server.admin, 'query($id: ID!) { run(id: $id) { kind soup { heldOut test ingredients { runId test } } } }', { id: soupId });
      expect(souped.kind).toBe('SOUP');
      const soupCard = page.locator(`.run[data-run="${soupId}"]`);
      expect((await soupCard.locator('tr[data-ingredient]').evaluateAll((rows) => rows.map((r) => r.getAttribute('data-ingredient')))).sort()).toEqual([lp.id, full.id].sort());
      expect(await soupCard.locator('tr.soupRow').textContent()).toContain(`${(100 * souped.soup.test).toFixed(2)}%`);

      // An angle probe launched from the page: its card draws the profile the API stores, the tuned layers filled.
      await page.fill('#probeSteps', '4');
      await page.fill('#topK', '1');
      await page.click('#probeGo');
      await page.waitForFunction(() => document.querySelector('.run svg[data-chart="angles"]') !== null, null, { timeout: 120_000 });
      const probeId = await page.locator('.run', { has: page.locator('svg[data-chart="angles"]') }).first().getAttribute('data-run');
      const { angleProfile } = await ok(server.url, server.admin, 'query($id: ID!) { angleProfile(id: $id) { layers { kind block selected } } }', { id: probeId });
      const bars = await page.locator(`.run[data-run="${probeId}"] svg[data-chart="angles"] rect`).evaluateAll((rects) => rects.map((r) => `${r.getAttribute('data-kind')}${r.getAttribute('data-block')}:${r.getAttribute('data-selected')}`));
      expect(bars.sort()).toEqual(angleProfile.layers.map((l: any) => `${l.kind}${l.block}:${l.selected}`).sort());
      expect(angleProfile.layers.filter((l: any) => l.selected)).toHaveLength(2); // top-1 of attention and of FFN
      await page.screenshot({ path: process.env.PARTUNE_SCREENSHOT ?? join(tmp, 'dashboard.png'), fullPage: true });

      // Past 20 runs the list pages: cancelled runs fill the first page, the oldest move to the second.
      let total = (await ok(server.url, server.admin, '{ runs { total } }')).runs.total;
      while (total <= 22) {
        const { startRun } = await ok(server.url, server.admin, 'mutation($i: StartRunInput!) { startRun(input: $i) { id } }',
          { i: { model: 'micro', dataset: 'digits', strategy: 'attn-only', hyperParameters: { admitVolunteers: true, epochs: 1 } } });
        await ok(server.url, server.admin, 'mutation($id: ID!) { cancelRun(id: $id) { status } }', { id: startRun.id }).catch(() => undefined);
        total++;
      }
      await page.waitForFunction((t) => document.getElementById('page')!.textContent === `page 1 of ${Math.ceil(t / 20)}`, total, { timeout: 20_000 });
      expect(await page.locator('.run').count()).toBe(20);
      await page.click('#next');
      await page.waitForFunction(() => document.getElementById('page')!.textContent!.startsWith('page 2'), null, { timeout: 10_000 });
      expect(await page.locator('.run').count()).toBe(Math.min(20, total - 20));
    } finally {
      await page.close();
      await node.kill();
    }
  });

  it('a tab on a run that admits no volunteers leases nothing and downloads nothing; its page says no run is open to it', async () => {
    const page = await browser.newPage();
    const blobRequests: string[] = [];
    page.on('request', (r) => void (r.url().includes('/blobs/') && blobRequests.push(r.url())));
    await page.goto(`${server.url.replace('/graphql', '')}/worker?start=1&backend=wasm&name=tab-closed-run`);
    await page.waitForFunction(() => document.getElementById('connection')?.textContent === 'connected', null, { timeout: 60_000 });
    const { startRun } = await ok(server.url, server.admin, 'mutation($i: StartRunInput!) { startRun(input: $i) { id } }',
      { i: { model: 'micro', dataset: 'digits', strategy: 'attn-only', hyperParameters: { epochs: 1, stepsPerRound: 8, verification: 'NONE' } } });
    try {
      await waitFor('the run to be planned', async () => (await ok(server.url, server.admin, RUN_QUERY, { id: startRun.id })).run.status === 'RUNNING');
      await page.reload(); // the page counts the open runs as it starts
      await page.waitForFunction(() => document.body.dataset.open !== undefined, null, { timeout: 30_000 });
      expect(await page.textContent('#open')).toMatch(/^none now/);
      await new Promise((r) => setTimeout(r, 6000));
      const { run } = await ok(server.url, server.admin, 'query($id: ID!) { run(id: $id) { shards { workerId status } } }', { id: startRun.id });
      expect(run.shards.map((x: { workerId: string | null; status: string }) => [x.workerId, x.status])).toEqual([[null, 'PENDING']]);
      expect(blobRequests).toEqual([]);
    } finally {
      await ok(server.url, server.admin, 'mutation($id: ID!) { cancelRun(id: $id) { id } }', { id: startRun.id });
      await page.close();
    }
  });

  it('volunteer tokens: minted for browsers, refused for other kinds and for admin work', async () => {
    const { volunteerToken } = await ok(server.url, undefined, 'mutation { volunteerToken }');
    expect(volunteerToken).toMatch(/^vol_/);
    const node = await gql(server.url, volunteerToken, 'mutation { registerWorker(name: "x", kind: "node", backend: "wasm") { worker { id } } }');
    expect(node.errors?.[0].extensions?.code).toBe('BAD_USER_INPUT');
    const admin = await gql(server.url, volunteerToken, 'mutation { cancelRun(id: "x") { id } }');
    expect(admin.errors?.[0].extensions?.code).toBe('FORBIDDEN');
    const forged = await gql(server.url, `${volunteerToken.slice(0, -2)}xx`, 'mutation { registerWorker(name: "x", kind: "browser", backend: "wasm") { worker { id } } }');
    expect(forged.errors?.[0].extensions?.code).toBe('UNAUTHENTICATED');
  });
});
