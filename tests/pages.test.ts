// What a newcomer reads and opens first: the README's GraphQL examples against the committed SDL,
// and, in a real headless Chromium, the API explorer (offline: every request stays on the server),
// the volunteer page (nothing runs before Start; idle said as idle; a reload is the same worker)
// and the dashboard's run curves (ticks from the data, every point's value on hover).
import { spawnSync } from 'node:child_process';
import { mkdtempSync, readFileSync, readdirSync } from 'node:fs';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import { buildSchema, parse, validate } from 'graphql';
import { Browser, chromium } from 'playwright-core';
import { CLI, ServerProcess, WorkerProcess, ok, startServer, startWorker, uploadBytes, waitForRun } from '../node/local-platform';
import { CHROMIUM, CHROMIUM_FLAGS, chromiumMissing } from '../node/chromium';
import { describeUnless } from './support/skip';

jest.setTimeout(300_000);
const ROOT = join(__dirname, '..');

/** Each operation of each ```graphql block, as written. */
function graphqlExamples(file: string): { where: string; text: string }[] {
  const out: { where: string; text: string }[] = [];
  const lines = readFileSync(file, 'utf8').split('\n');
  for (let i = 0; i < lines.length; i++) {
    if (lines[i].trim() !== '```graphql') continue;
    let current: { where: string; text: string } | undefined;
    for (i++; i < lines.length && lines[i].trim() !== '```'; i++) {
      // An operation starts at a line's start; continuation lines are indented.
      if (/^(query|mutation|subscription|\{)/.test(lines[i])) out.push((current = { where: `${file.slice(ROOT.length + 1)}:${i + 1}`, text: lines[i] }));
      else if (current) current.text += `\n${lines[i]}`;
    }
  }
  return out;
}

describe('the documents a newcomer copies', () => {
  it('every GraphQL example in the README and docs/ is valid against the committed schema', () => {
    const schema = buildSchema(readFileSync(join(ROOT, 'schema', 'schema.graphql'), 'utf8'));
    const files = [join(ROOT, 'README.md'), ...readdirSync(join(ROOT, 'docs')).filter((f) => f.endsWith('.md')).map((f) => join(ROOT, 'docs', f))];
    const examples = files.flatMap(graphqlExamples);
    expect(examples.length).toBeGreaterThanOrEqual(8);
    const problems = examples.flatMap((e) => validate(schema, parse(e.text)).map((err) => `${e.where}: ${err.message}`));
    expect(problems).toEqual([]);
  });
});

describeUnless(chromiumMissing())('pages in headless Chromium', () => {
  let server: ServerProcess;
  let worker: WorkerProcess | undefined;
  let browser: Browser;
  let origin: string;

  beforeAll(async () => {
    const micro = join(mkdtempSync(join(tmpdir(), 'partune-pages-')), 'micro.safetensors');
    spawnSync(process.execPath, [CLI, 'convert', '--checkpoint', 'random:vit_micro_patch4_28', '--out', micro, '--quiet']);
    server = await startServer({ PARTUNE_LEASE_SECONDS: '15' });
    origin = server.url.replace('/graphql', '');
    const uploadId = await uploadBytes(server, 'micro.safetensors', readFileSync(micro));
    await ok(server.url, server.admin, 'mutation($i: RegisterModelInput!) { registerModel(input: $i) { id } }', { i: { name: 'micro', uploadId } });
    await ok(server.url, server.admin, 'mutation($i: ImportDatasetInput!) { importDataset(input: $i) { id } }',
      { i: { name: 'digits', format: 'MNIST_PACKAGE', trainLimit: 512, testLimit: 200 } });
    browser = await chromium.launch({ executablePath: CHROMIUM, args: CHROMIUM_FLAGS });
  });
  afterAll(async () => {
    await browser?.close();
    await worker?.kill();
    await server?.stop();
  });

  it('the API explorer is GraphiQL served by the server: /graphql opens it, its query answers with the token, nothing loads from elsewhere', async () => {
    const context = await browser.newContext();
    const page = await context.newPage();
    const elsewhere: string[] = [];
    page.on('request', (r) => void (!r.url().startsWith(origin) && !r.url().startsWith('data:') && elsewhere.push(r.url())));
    await page.goto(`${origin}/graphql`);
    expect(page.url()).toBe(`${origin}/graphiql`);
    await page.goto(`${origin}/graphiql?token=${server.admin}`);
    expect(page.url()).toBe(`${origin}/graphiql`); // the token leaves the address bar
    await page.waitForSelector('.graphiql-execute-button', { timeout: 60_000 });
    const answered = page.waitForResponse((r) => r.url() === `${origin}/graphql` && /models/.test(r.request().postData() ?? ''), { timeout: 30_000 });
    await page.click('.graphiql-execute-button');
    const response = await answered;
    expect(response.request().headers().authorization).toBe(`Bearer ${server.admin}`);
    const result = await response.json();
    expect(result.data.models.items).toEqual([{ name: 'micro', parameters: 139_018 }]);
    await page.waitForFunction(() => /139018/.test(document.querySelector('.result-window')?.textContent ?? ''), null, { timeout: 30_000 });
    expect(elsewhere).toEqual([]);
    await context.close();
  });

  it('the volunteer page runs nothing before Start, says idle when there is no shard, and is the same worker after a reload', async () => {
    const context = await browser.newContext(); // one localStorage for both visits
    const page = await context.newPage();
    const minted: string[] = [];
    page.on('request', (r) => void (r.method() === 'POST' && /volunteerToken|registerWorker/.test(r.postData() ?? '') && minted.push(r.postData()!)));
    const named = async (): Promise<{ id: string; name: string }[]> =>
      (await ok(server.url, server.admin, '{ workers(first: 50) { items { id name } } }')).workers.items
        .filter((w: { name: string }) => w.name === 'tab-pages');
    await page.goto(`${origin}/worker?backend=wasm&name=tab-pages`);
    await page.waitForFunction(() => document.body.dataset.open !== undefined, null, { timeout: 30_000 });
    expect(await page.textContent('#state')).toMatch(/^ready: nothing runs until you press Start/);
    expect(await page.textContent('#server')).toBe(origin);
    expect(await page.textContent('#open')).toMatch(/^none now/);
    await new Promise((r) => setTimeout(r, 2000));
    expect([minted, await named()]).toEqual([[], []]); // no token minted, no worker registered

    const startAndWaitIdle = async (): Promise<void> => {
      await page.click('#toggle');
      await page.waitForFunction(() => document.body.dataset.activity === 'idle', null, { timeout: 60_000 });
      expect(await page.textContent('#state')).toMatch(/^idle: started, waiting for a shard/);
      expect(await page.textContent('#run')).toMatch(/^idle: no shard for this tab right now/);
      expect(await page.textContent('#toggle')).toBe('Stop');
    };
    await startAndWaitIdle();
    const [first] = await named();
    expect(await page.textContent('#identity')).toContain(`worker ${first.id.slice(0, 8)}`);
    await page.reload();
    await page.waitForFunction(() => document.body.dataset.open !== undefined, null, { timeout: 30_000 });
    await startAndWaitIdle();
    expect(await named()).toEqual([first]); // renewed, not registered again
    await page.click('#toggle');
    await page.waitForFunction(() => document.body.dataset.state === 'stopped', null, { timeout: 60_000 });
    expect(await page.textContent('#toggle')).toBe('Start');
    await context.close();
  });

  it('the dashboard draws a run\'s curves on axes ticked from its data, every point\'s value on hover', async () => {
    worker = startWorker(server, 'node-pages');
    const { startRun } = await ok(server.url, server.admin, 'mutation($i: StartRunInput!) { startRun(input: $i) { id } }',
      { i: { model: 'micro', dataset: 'digits', strategy: 'attn-only', hyperParameters: { epochs: 2, stepsPerRound: 8, verification: 'NONE' } } });
    const run = await waitForRun(server, startRun.id, 280_000);
    expect(run.status).toBe('SUCCEEDED');
    const page = await browser.newPage();
    await page.goto(`${origin}/?token=${server.admin}`);
    const loss = page.locator(`[data-run="${startRun.id}"] svg[data-chart="train loss"]`).first();
    await loss.waitFor({ timeout: 30_000 });
    const losses = run.metrics.filter((m: { trainLoss: number | null }) => m.trainLoss !== null);
    const titles = await loss.locator('circle title').allTextContents();
    expect(titles).toHaveLength(losses.length);
    expect(titles[0]).toBe(`step ${losses[0].step}: train loss ${losses[0].trainLoss.toFixed(2)}`);
    expect((await loss.locator('text').allTextContents()).filter((t) => /^\d+(\.\d+)?$/.test(t)).length).toBeGreaterThanOrEqual(4); // y and x ticks
    const top1 = page.locator(`[data-run="${startRun.id}"] svg[data-chart="test top-1"]`).first();
    expect(await top1.locator('text').allTextContents()).toEqual(expect.arrayContaining(['0%', '50%', '100%', 'epoch (of 2)']));
    await page.close();
  });
});
