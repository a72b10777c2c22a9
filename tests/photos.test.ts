// A user's own photos end to end: an ImageFolder of real CIFAR-10 photos (PNG, JPEG at quality 90,
// a grey, an RGBA and an EXIF-rotated one, a truncated and a non-image file), imported through the
// CLI and through GraphQL, fine-tuned at its own resolution by two Node workers and a browser tab,
// with the delta equal bit for bit to one `partune finetune`; then predictions by the CLI and the API.
import { spawnSync } from 'node:child_process';
import { existsSync, mkdirSync, mkdtempSync, readFileSync, writeFileSync } from 'node:fs';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import { zipSync } from 'fflate';
import { Browser, chromium } from 'playwright-core';
import sharp from 'sharp';
import { parseDelta } from '../engine';
import { listDirectory } from '../node/archive';
import { CHROMIUM, CHROMIUM_FLAGS, chromiumMissing } from '../node/chromium';
import { CLI, ServerProcess, WorkerProcess, cliJson, gql, ok, startServer, startWorker, uploadBytes, waitForRun } from '../node/local-platform';
import { describeUnless } from './support/skip';

jest.setTimeout(600_000);

const CIFAR = join(__dirname, '..', '..', 'shared', 'data', 'cifar10');
const NAMES = ['airplane', 'automobile', 'bird', 'cat', 'deer', 'dog', 'frog', 'horse', 'ship', 'truck'];
const missing = !existsSync(join(CIFAR, 'data_batch_1.bin')) ? `CIFAR-10 is not at ${CIFAR} (../shared/data)` : chromiumMissing();

/** photos/{train,val}/CLASS/*: 10 train and 2 val photos a class, every third a JPEG, plus the odd and the bad files. */
async function makeFolder(root: string): Promise<void> {
  const bytes = readFileSync(join(CIFAR, 'data_batch_1.bin'));
  const seen = new Array(10).fill(0);
  const photo = (r: number): Buffer => {
    const px = Buffer.alloc(3072);
    for (let p = 0; p < 1024; p++) for (let c = 0; c < 3; c++) px[p * 3 + c] = bytes[r + 1 + c * 1024 + p];
    return px;
  };
  const raw = (px: Buffer): sharp.Sharp => sharp(px, { raw: { width: 32, height: 32, channels: 3 } });
  for (let r = 0; r < bytes.length && seen.some((n) => n < 12); r += 3073) {
    const label = bytes[r];
    const i = seen[label]++;
    if (i >= 12) continue;
    const dir = join(root, i < 10 ? 'train' : 'val', NAMES[label]);
    mkdirSync(dir, { recursive: true });
    if (i % 3 === 0)
      await raw(photo(r))
        .jpeg({ quality: 90 })
        .toFile(join(dir, `${i}.jpg`));
    else
      await raw(photo(r))
        .png()
        .toFile(join(dir, `${i}.png`));
  }
  const extra = photo(3073 * 200);
  await raw(extra)
    .toColourspace('b-w')
    .png()
    .toFile(join(root, 'train', NAMES[bytes[3073 * 200]], 'grey.png'));
  const rgba = Buffer.alloc(32 * 32 * 4, 128);
  for (let p = 0; p < 1024; p++) extra.copy(rgba, p * 4, p * 3, p * 3 + 3);
  await sharp(rgba, { raw: { width: 32, height: 32, channels: 4 } })
    .png()
    .toFile(join(root, 'train', NAMES[bytes[3073 * 200]], 'alpha.png'));
  await raw(photo(3073 * 201))
    .jpeg({ quality: 90 })
    .withMetadata({ orientation: 8 })
    .toFile(join(root, 'train', NAMES[bytes[3073 * 201]], 'rotated.jpg'));
  const jpeg = await raw(photo(3073 * 202))
    .jpeg({ quality: 90 })
    .toBuffer();
  writeFileSync(join(root, 'train', 'cat', 'cut.jpg'), jpeg.subarray(0, jpeg.length >> 1));
  writeFileSync(join(root, 'train', 'dog', 'notes.jpg'), 'my notes about dogs, not a photo');
  writeFileSync(join(root, 'README.txt'), 'CIFAR-10 photos');
}

const suite = describeUnless(missing);

suite('your own photos', () => {
  const tmp = mkdtempSync(join(tmpdir(), 'partune-photos-'));
  const photos = join(tmp, 'photos');
  const micro = join(tmp, 'micro32.safetensors');
  const TRAIN = ['--strategy', 'attn-only', '--epochs', '2', '--batch-size', '8', '--lr', '0.002', '--seed', '3'];
  let server: ServerProcess;
  const workers: WorkerProcess[] = [];
  let browser: Browser;

  beforeAll(async () => {
    await makeFolder(photos);
    spawnSync(process.execPath, [CLI, 'convert', '--checkpoint', 'random:vit_micro_patch4_32', '--out', micro, '--quiet']);
    server = await startServer({ PARTUNE_LEASE_SECONDS: '15', PARTUNE_BLAS: 'engine' });
    const uploadId = await uploadBytes(server, 'micro32.safetensors', readFileSync(micro));
    await ok(server.url, server.admin, 'mutation($i: RegisterModelInput!) { registerModel(input: $i) { id } }', { i: { name: 'micro32', uploadId } });
    browser = await chromium.launch({ executablePath: CHROMIUM, args: CHROMIUM_FLAGS });
  });
  afterAll(async () => {
    await browser?.close();
    for (const w of workers) await w.kill();
    await server?.stop();
  });

  it('a bad file fails the local command by name; --skip-bad trains on the rest', async () => {
    const failed = spawnSync(
      process.execPath,
      [CLI, 'finetune', '--checkpoint', micro, '--data', `folder:${photos}`, '--storage-size', '32', ...TRAIN, '--out', join(tmp, 'x.delta')],
      { encoding: 'utf8' },
    );
    expect(failed.status).toBe(1);
    expect(failed.stderr).toMatch(/2 files do not decode as an image: train\/cat\/cut\.jpg \(.*\); train\/dog\/notes\.jpg/);
  });

  it('imports through the CLI (a folder, streamed as a tar) and through GraphQL (a zip): the same pixels, the bad files named', async () => {
    const cli = await cliJson([
      'dataset',
      'import',
      '--server',
      server.url,
      '--token',
      server.admin,
      '--name',
      'photos',
      '--format',
      'folder',
      '--path',
      photos,
      '--storage-size',
      '32',
      '--skip-bad',
    ]);
    expect(cli).toMatchObject({ trainImages: 103, testImages: 20, classes: 10, classNames: NAMES });
    expect(cli.source).toMatch(/skipped 2 undecodable: train\/cat\/cut\.jpg .*train\/dog\/notes\.jpg.*ignored 1 other files/);
    const files: Record<string, Uint8Array> = {};
    for (const e of await listDirectory(photos)) files[`my photos/${e.path}`] = await e.read();
    const uploadId = await uploadBytes(server, 'photos.zip', zipSync(files));
    const { importDataset: api } = await ok(
      server.url,
      server.admin,
      'mutation($i: ImportDatasetInput!) { importDataset(input: $i) { trainImages testImages classNames shards { sha256 } } }',
      { i: { name: 'photos-zip', format: 'FOLDER', uploads: [{ uploadId }], storageSize: 32, skipBad: true } },
    );
    const { dataset } = await ok(server.url, server.admin, '{ dataset(id: "photos") { shards { sha256 } } }');
    expect(api.shards).toEqual(dataset.shards);
    expect(api.classNames).toEqual(NAMES);
    const refused = await uploadBytes(server, 'photos.zip', zipSync(files));
    await expect(
      ok(server.url, server.admin, 'mutation($i: ImportDatasetInput!) { importDataset(input: $i) { id } }', {
        i: { name: 'photos-strict', format: 'FOLDER', uploads: [{ uploadId: refused }], storageSize: 32 },
      }),
    ).rejects.toThrow(/BAD_USER_INPUT: .*cut\.jpg.*notes\.jpg/);
  });

  it('two workers and a tab fine-tune it at its own resolution; the delta equals one process bit for bit; predictions name the classes', async () => {
    workers.push(startWorker(server, 'node-1', ['--blas', 'engine']), startWorker(server, 'node-2', ['--blas', 'engine']));
    const page = await browser.newPage();
    await page.goto(`${server.url.replace('/graphql', '')}/worker?start=1&backend=wasm&name=tab-1`);
    await page.waitForFunction(() => document.body.dataset.state === 'working', null, { timeout: 60_000 });
    const { startRun } = await ok(server.url, server.admin, 'mutation($i: StartRunInput!) { startRun(input: $i) { id } }', {
      i: {
        model: 'micro32',
        dataset: 'photos',
        strategy: 'attn-only',
        hyperParameters: { epochs: 2, batchSize: 8, lr: 0.002, seed: 3, stepsPerRound: 2, shardsPerRound: 1, verification: 'NONE', admitVolunteers: true },
      },
    });
    const run = await waitForRun(server, startRun.id, 400_000);
    expect(run.status).toBe('SUCCEEDED');
    const by = new Set(run.shards.map((s: { workerId: string }) => s.workerId));
    expect(by.size).toBeGreaterThanOrEqual(2);

    const reference = join(tmp, 'single.delta');
    const single = await cliJson([
      'finetune',
      '--checkpoint',
      micro,
      '--data',
      `folder:${photos}`,
      '--storage-size',
      '32',
      '--skip-bad',
      ...TRAIN,
      '--backend',
      'wasm',
      '--blas',
      'engine',
      '--out',
      reference,
    ]);
    expect(run.accuracy).toBe(single.accuracy);
    const ours = parseDelta(new Uint8Array(await (await fetch(run.delta.downloadUrl)).arrayBuffer()));
    const theirs = parseDelta(new Uint8Array(readFileSync(reference)));
    expect(ours.manifest.classNames).toEqual(NAMES);
    expect(theirs.manifest.classNames).toEqual(NAMES);
    for (const [k, t] of theirs.tensors) expect(Buffer.from(ours.tensors.get(k)!.data.buffer).equals(Buffer.from(t.data.buffer))).toBe(true);
    process.stderr.write(`[photos] ${run.shards.length} shards by ${by.size} workers; top-1 ${(run.accuracy * 100).toFixed(2)}% = single process\n`);

    const image = join(photos, 'val', 'cat', '11.png');
    const cli = await cliJson(['predict', '--checkpoint', micro, '--delta', reference, '--backend', 'wasm', '--blas', 'engine', image]);
    expect(cli.predictions[0].top).toHaveLength(5);
    expect(NAMES).toContain(cli.predictions[0].top[0].name);
    const sum = cli.predictions[0].top.reduce((s: number, p: { probability: number }) => s + p.probability, 0);
    expect(sum).toBeLessThanOrEqual(1 + 1e-6);
    const uploadId = await uploadBytes(server, '11.png', readFileSync(image));
    const { predict } = await ok(
      server.url,
      server.admin,
      'query($u: [ID!]!, $d: ID) { predict(uploads: $u, delta: $d) { filename top { label name probability } } }',
      { u: [uploadId], d: startRun.id },
    );
    expect(predict[0].filename).toBe('11.png');
    expect(predict[0].top.map((p: { name: string }) => p.name)).toEqual(cli.predictions[0].top.map((p: { name: string }) => p.name));
    predict[0].top.forEach((p: { probability: number }, i: number) => expect(p.probability).toBeCloseTo(cli.predictions[0].top[i].probability, 5));
    await page.close();

    // The test split's confusion matrix: 20 images, its diagonal the run's top-1.
    const { run: withMatrix } = await ok(server.url, server.admin, 'query($id: ID!) { run(id: $id) { confusion { classNames counts } } }', { id: startRun.id });
    const counts: number[][] = withMatrix.confusion.counts;
    expect(withMatrix.confusion.classNames).toEqual(NAMES);
    expect(counts.flat().reduce((a, b) => a + b, 0)).toBe(20);
    expect(counts.reduce((a, row, i) => a + row[i], 0) / 20).toBe(run.accuracy);
    expect(counts.map((row) => row.reduce((a, b) => a + b, 0))).toEqual(new Array(10).fill(2));

    // The dashboard: a dataset's images per class; a finished run's matrix.
    const dash = await browser.newPage();
    await dash.goto(`${server.url.replace('/graphql', '')}/?token=${server.admin}`);
    await dash.waitForSelector('body[data-ready="true"]', { timeout: 30_000 });
    await dash.click('[data-dataset="photos"]');
    await dash.waitForSelector('#datasetSamples img.sample', { timeout: 30_000 });
    expect(await dash.locator('#datasetSamples .sampleRow').count()).toBe(10);
    expect(await dash.locator('#datasetSamples img.sample').count()).toBe(40);
    expect(await dash.textContent('#datasetSamples')).toContain('automobile');
    await dash.waitForSelector(`[data-report="${startRun.id}"] table.confusion`, { state: 'attached', timeout: 30_000 });
    expect(await dash.locator(`[data-report="${startRun.id}"] table.confusion tbody tr`).count()).toBe(10);
    await dash.close();
  });
  it("a read token's uploads are its own and taken once; samples and predict once a request; a private dataset's class names for readers", async () => {
    const [a, b] = await Promise.all([0, 1].map(async () => (await ok(server.url, server.admin, 'mutation { issueReadToken }')).issueReadToken as string));
    const image = readFileSync(join(photos, 'val', 'cat', '11.png'));
    const PREDICT = 'query($u: [ID!]!) { predict(uploads: $u, model: "micro32") { filename } }';
    const codeOf = async (token: string, query: string, variables: Record<string, unknown> = {}): Promise<string | undefined> =>
      (await gql(server.url, token, query, variables)).errors?.[0]?.extensions?.code;
    const mine = await uploadBytes(server, '11.png', image, a);
    expect(await codeOf(b, PREDICT, { u: [mine] })).toBe('NOT_FOUND'); // another reader's
    expect(await codeOf(a, PREDICT, { u: [mine, mine] })).toBe('BAD_USER_INPUT');
    const raced = await Promise.all([0, 1, 2, 3].map(() => gql(server.url, a, PREDICT, { u: [mine] })));
    expect(raced.filter((r) => !r.errors).length).toBe(1);
    // After use its URL still answers until it expires, but the object stays the one it was: other bytes are refused.
    const CREATE = 'mutation($b: Int!) { createUpload(filename: "again.png", bytes: $b) { id url } }';
    const { createUpload: slot } = await ok(server.url, a, CREATE, { b: image.length });
    expect((await fetch(slot.url, { method: 'PUT', body: image })).status).toBe(200);
    expect((await ok(server.url, a, PREDICT, { u: [slot.id] })).predict).toHaveLength(1);
    expect((await fetch(slot.url, { method: 'PUT', body: Buffer.from(image).reverse() })).status).toBe(409);
    expect((await fetch(slot.url, { method: 'PUT', body: image })).status).toBe(200);
    expect(await codeOf(a, PREDICT, { u: [slot.id] })).toBe('NOT_FOUND');
    const held: string[] = [];
    for (let i = 0; i < 40; i++) {
      const r = await gql(server.url, a, 'mutation { createUpload(filename: "x.png", bytes: 1000) { id maxBytes } }');
      if (r.errors) {
        expect(r.errors[0].extensions?.code).toBe('RATE_LIMITED');
        break;
      }
      held.push((r.data as { createUpload: { id: string } }).createUpload.id);
    }
    expect(held.length).toBe(32);
    expect(await codeOf(a, 'mutation { createUpload(filename: "x.png", bytes: 40000000) { id } }')).toBe('BAD_USER_INPUT');
    const SAMPLES = 'dataset(id: "photos") { samples(perClass: 1) { name } }';
    const twice = await gql(server.url, a, `{ x: ${SAMPLES} y: ${SAMPLES} }`);
    expect(twice.errors?.map((e) => e.message)).toEqual(['samples may be asked for once an operation']);

    const files: Record<string, Uint8Array> = {};
    for (const e of await listDirectory(photos)) files[e.path] = await e.read();
    const uploadId = await uploadBytes(server, 'private.zip', zipSync(files));
    const input = { name: 'photos-private', format: 'FOLDER', uploads: [{ uploadId }], storageSize: 32, skipBad: true, private: true };
    await ok(server.url, server.admin, 'mutation($i: ImportDatasetInput!) { importDataset(input: $i) { id } }', { i: input });
    const NAMES_OF = '{ dataset(id: "photos-private") { classNames } }';
    expect((await ok(server.url, undefined, NAMES_OF)).dataset.classNames).toBeNull();
    expect((await ok(server.url, b, NAMES_OF)).dataset.classNames).toEqual(NAMES);
  });
});
