// Runs: start, cancel, list, and the scheduler that drives each through its rounds. Every
// transition is persisted before the next begins, so after a restart `resumeAll` picks up each
// unfinished run where its rows say it stands.
import { randomUUID } from 'node:crypto';
import {
  LayerAngle, PRESET_NAMES, Strategy, TrainingState, VitConfig, fedAvg, inspect, parseState, parseStrategy, parseVitConfig, selectByAngle, serializeState,
  topKForBudget, tunedShapes,
} from '../../engine';
import { isTransient, keys } from '../../storage';
import { ACTIVE, AngleProfileRow, DatasetRow, DatasetShard, DeltaRow, ModelRow, RunKind, RunRow, RunStatus, ShardRow, StrategyRow, nowIso, parseJson } from '../db';
import { badInput, conflict, notFound } from '../errors';
import { RUN_EVENTS, RunEventKind } from '../events';
import { Platform } from '../platform';
import { Catalog, Page, page } from './catalog';
import { HYPER_DEFAULTS, Hyper, Plan, checkHyper, evaluatesAfter, makePlan, shardWindows } from './plan';

export interface MetricPoint {
  readonly step: number;
  readonly epoch: number;
  readonly round: number;
  readonly trainLoss?: number;
  readonly testAccuracy?: number;
  readonly testLoss?: number;
  readonly at: string;
}

export interface StartRunInput {
  readonly model: string;
  readonly dataset: string;
  readonly strategy: string;
  readonly hyper: Partial<Hyper>;
}

export class Runs {
  private readonly chains = new Map<string, Promise<void>>();

  constructor(private readonly p: Platform, private readonly catalog: Catalog, private readonly onlineWorkers: () => number) {}

  get(id: string): RunRow {
    const row = this.p.db.prepare('SELECT * FROM runs WHERE id = ?').get(id) as RunRow | undefined;
    if (!row) throw notFound(`run '${id}' not found`);
    return row;
  }

  list(filter: { status?: RunStatus; kind?: RunKind; modelId?: string; datasetId?: string }, first: number, offset: number): Page<RunRow> {
    const where: string[] = [];
    const args: unknown[] = [];
    if (filter.status) (where.push('status = ?'), args.push(filter.status));
    if (filter.kind) (where.push('kind = ?'), args.push(filter.kind));
    if (filter.modelId) (where.push('model_id = ?'), args.push(filter.modelId));
    if (filter.datasetId) (where.push('dataset_id = ?'), args.push(filter.datasetId));
    const w = where.length ? `WHERE ${where.join(' AND ')}` : '';
    const rows = this.p.db.prepare(`SELECT * FROM runs ${w} ORDER BY created_at DESC LIMIT ? OFFSET ?`).all(...args, first, offset) as RunRow[];
    const total = (this.p.db.prepare(`SELECT COUNT(*) AS n FROM runs ${w}`).get(...args) as { n: number }).n;
    return page(rows, total, offset);
  }

  /** A preset, a custom strategy as JSON, or the name of a stored one (e.g. from an angle probe). */
  resolveStrategy(raw: string): Strategy {
    const stored = this.p.db.prepare('SELECT spec FROM strategies WHERE name = ?').get(raw.trim()) as { spec: string } | undefined;
    return stored ? (JSON.parse(stored.spec) as Strategy) : parseStrategyInput(raw);
  }

  start(input: StartRunInput, kind: RunKind = 'FINETUNE', spec?: Record<string, unknown>): RunRow {
    const model = this.catalog.model(input.model);
    const dataset = this.catalog.dataset(input.dataset);
    const strategy = this.resolveStrategy(input.strategy);
    const config = modelConfig(model, dataset.classes);
    if (dataset.height !== config.imageSize || dataset.width !== config.imageSize || dataset.channels !== config.channels) {
      throw badInput(`dataset '${dataset.name}' has ${dataset.height}x${dataset.width}x${dataset.channels} images; model '${model.name}' takes ${config.imageSize}x${config.imageSize}x${config.channels}`);
    }
    let tuned;
    try {
      tuned = inspect(strategy, config);
    } catch (e) {
      throw badInput(`strategy: ${(e as Error).message}`);
    }
    const hyper = checkHyper({ ...HYPER_DEFAULTS, shardsPerRound: Math.max(1, this.onlineWorkers()), ...stripNulls(input.hyper) } as Hyper);
    makePlan(hyper, dataset.train_count); // refuses a split smaller than one batch now, not later
    const at = nowIso();
    const row: RunRow = {
      id: randomUUID(), model_id: model.id, dataset_id: dataset.id, strategy: JSON.stringify(strategy), strategy_name: tuned.strategy,
      hyper: JSON.stringify(hyper), plan: null, status: 'PREPARING', round: 0, step: 0, state_key: null, state_sha256: null,
      normalization: null, num_classes: dataset.classes, tuned_params: tuned.tunedParams, total_params: tuned.totalParams,
      metrics: '[]', accuracy: null, loss: null, delta_id: null, error: null, created_at: at, updated_at: at, finished_at: null,
      kind, spec: spec ? JSON.stringify(spec) : null, report: null,
    };
    this.insert(row);
    this.p.log(`run ${row.id} (${kind.toLowerCase()}): ${tuned.strategy} on ${model.name} -> ${dataset.name}, ${tuned.tunedParams.toLocaleString('en-US')} tuned parameters`);
    this.emit(row, 'STATUS', { message: 'run created' });
    this.advance(row.id);
    return row;
  }

  private insert(row: RunRow): void {
    const cols = Object.keys(row);
    this.p.db.prepare(`INSERT INTO runs (${cols.join(', ')}) VALUES (${cols.map((c) => `@${c}`).join(', ')})`).run(row);
  }

  /**
   * An angle probe: full fine-tuning for a short budget, run by workers like any run; at the end
   * the angle of every layer and the strategy of the top-K layers per group, stored by name.
   */
  startAngleProbe(input: { model: string; dataset: string; probeSteps?: number; probeEpochs?: number; hyper: Partial<Hyper>; direction: string; topK?: number; budget?: number; name?: string }): RunRow {
    if (!['largest', 'smallest'].includes(input.direction)) throw badInput("direction must be 'largest' or 'smallest'");
    if (input.topK !== undefined && input.budget !== undefined) throw badInput('give topK or budget, not both');
    if (input.name !== undefined) checkStrategyName(input.name, this.p);
    const config = modelConfig(this.catalog.model(input.model), this.catalog.dataset(input.dataset).classes);
    if (input.topK !== undefined && (!Number.isInteger(input.topK) || input.topK < 0 || input.topK > config.depth)) throw badInput(`topK must be 0..${config.depth}`);
    const hyper = { ...input.hyper, epochs: input.probeEpochs ?? input.hyper.epochs ?? 1, maxSteps: input.probeSteps ?? input.hyper.maxSteps };
    return this.start({ model: input.model, dataset: input.dataset, strategy: 'full', hyper }, 'ANGLE_PROBE',
      { direction: input.direction, topK: input.topK, budget: input.budget, name: input.name });
  }

  /** A soup of finished runs' deltas (one model, one dataset): uniform, or greedy on a held-out half. */
  createSoup(input: { runs: string[]; method: string; heldOut?: number; name?: string }): RunRow {
    if (!['uniform', 'greedy'].includes(input.method)) throw badInput("method must be 'uniform' or 'greedy'");
    if (input.runs.length === 0) throw badInput('a soup needs at least one ingredient run');
    if (new Set(input.runs).size !== input.runs.length) throw badInput('an ingredient run is listed twice');
    const runs = input.runs.map((id) => this.get(id));
    for (const r of runs) {
      if (r.status !== 'SUCCEEDED' || !r.delta_id) throw badInput(`run ${r.id} is ${r.status}: only finished runs with a delta can be ingredients`);
    }
    const [first] = runs;
    for (const r of runs) {
      if (r.model_id !== first.model_id) throw badInput(`run ${r.id} fine-tuned another model than run ${first.id}: soups mix deltas of one base`);
      if (r.dataset_id !== first.dataset_id) throw badInput(`run ${r.id} trained on another dataset than run ${first.id}: its head has other classes`);
      if (r.normalization !== first.normalization) throw badInput(`run ${r.id} normalised its inputs differently from run ${first.id}`);
    }
    const at = nowIso();
    const row: RunRow = {
      id: randomUUID(), model_id: first.model_id, dataset_id: first.dataset_id, strategy: JSON.stringify({ kind: 'custom', name: 'soup' }),
      strategy_name: input.name ?? `${input.method}-soup`, hyper: JSON.stringify({ seed: 0 }), plan: null, status: 'PREPARING', round: 0, step: 0,
      state_key: null, state_sha256: null, normalization: first.normalization, num_classes: first.num_classes, tuned_params: null,
      total_params: first.total_params, metrics: '[]', accuracy: null, loss: null, delta_id: null, error: null, created_at: at, updated_at: at,
      finished_at: null, kind: 'SOUP', spec: JSON.stringify({ method: input.method, runs: input.runs, heldOut: input.heldOut }), report: null,
    };
    this.insert(row);
    this.p.log(`run ${row.id} (soup): ${input.method} of ${runs.length} deltas`);
    this.emit(row, 'STATUS', { message: `${input.method} soup of ${runs.length} ingredients` });
    this.advance(row.id);
    return row;
  }

  cancel(id: string): RunRow {
    const run = this.get(id);
    if (!ACTIVE.includes(run.status)) throw conflict(`run ${id} is ${run.status}; only a running run can be cancelled`);
    this.p.db.transaction(() => {
      this.p.db.prepare("UPDATE runs SET status = 'CANCELLED', updated_at = ?, finished_at = ? WHERE id = ?").run(nowIso(), nowIso(), id);
      this.p.db.prepare("UPDATE shards SET status = 'CANCELLED' WHERE run_id = ? AND status IN ('PENDING', 'LEASED')").run(id);
    })();
    const row = this.get(id);
    this.emit(row, 'STATUS', { message: 'cancelled' });
    return row;
  }

  /** Picks up every unfinished run (at start, after a restart). */
  resumeAll(): number {
    const rows = this.p.db.prepare(`SELECT id FROM runs WHERE status IN ('PREPARING', 'RUNNING', 'FINALIZING')`).all() as { id: string }[];
    for (const r of rows) this.advance(r.id);
    return rows.length;
  }

  /** Moves a run on as far as its stored state allows; one advance at a time per run. */
  advance(id: string): Promise<void> {
    const next = (this.chains.get(id) ?? Promise.resolve()).then(() => this.drive(id)).catch((e: Error) => {
      if (!isTransient(e)) return this.fail(id, e.message);
      // Storage hiccup: the run's rows are unchanged, so the same step is simply tried again.
      this.p.log(`run ${id}: ${e.message}; retrying in 2 s`);
      setTimeout(() => void this.advance(id), 2000).unref();
    });
    this.chains.set(id, next);
    return next;
  }

  /** Resolves once every advance queued so far has finished (for an orderly shutdown). */
  async idle(): Promise<void> {
    await Promise.all(this.chains.values());
  }

  private async drive(id: string): Promise<void> {
    for (;;) {
      const run = this.get(id);
      const before = `${run.status}/${run.round}`;
      if (run.status === 'PREPARING') await this.prepare(run);
      else if (run.status === 'RUNNING') await this.finishRound(run);
      else if (run.status === 'FINALIZING') await this.finalize(run);
      else return;
      const after = this.get(id);
      if (`${after.status}/${after.round}` === before) return;
    }
  }

  private spec(run: RunRow) {
    const model = this.catalog.model(run.model_id);
    const hyper = parseJson<Hyper>(run.hyper, {} as Hyper);
    return {
      runId: run.id, model: { key: model.blob_key, sha256: model.blob_sha256 }, numClasses: run.num_classes!,
      strategy: parseJson<Strategy>(run.strategy, {} as Strategy), seed: hyper.seed,
    };
  }

  private shardsOf(run: RunRow, split: 'train' | 'test'): DatasetShard[] {
    return parseJson<DatasetShard[]>(this.catalog.dataset(run.dataset_id).shards, []).filter((s) => s.split === split);
  }

  private async prepare(run: RunRow): Promise<void> {
    if (run.kind === 'SOUP') {
      this.p.db.prepare("UPDATE runs SET status = 'FINALIZING', updated_at = ? WHERE id = ? AND status = 'PREPARING'").run(nowIso(), run.id);
      return;
    }
    const hyper = parseJson<Hyper>(run.hyper, {} as Hyper);
    const plan = makePlan(hyper, this.catalog.dataset(run.dataset_id).train_count);
    const prepared = await this.p.compute.call('prepare', { ...this.spec(run), train: this.shardsOf(run, 'train'), trainLimit: hyper.trainLimit, normalize: hyper.normalize });
    const state = await this.p.store.put(keys.runState(run.id, 0), prepared.state);
    // A run cancelled while it was being prepared stays cancelled, with no shards to lease.
    const started = this.p.db.transaction(() => {
      const changed = this.p.db.prepare(`UPDATE runs SET status = 'RUNNING', plan = ?, state_key = ?, state_sha256 = ?, normalization = ?, round = 0, step = 0, updated_at = ?
        WHERE id = ? AND status = 'PREPARING'`).run(JSON.stringify(plan), state.key, state.sha256, JSON.stringify(prepared.normalization), nowIso(), run.id);
      if (changed.changes) this.createShards(run.id, 0, plan);
      return changed.changes > 0;
    })();
    if (!started) return;
    const row = this.get(run.id);
    this.emit(row, 'STATUS', { message: `${plan.rounds.length} rounds of up to ${hyper.stepsPerRound} steps, ${plan.shardsPerRound} shards each` });
  }

  private createShards(runId: string, round: number, plan: Plan): void {
    const insert = this.p.db.prepare(`INSERT OR IGNORE INTO shards (id, run_id, round, idx, from_step, to_step, status, created_at)
      VALUES (?, ?, ?, ?, ?, ?, 'PENDING', ?)`);
    shardWindows(plan.rounds[round], plan.shardsPerRound).forEach(([from, to], idx) => insert.run(randomUUID(), runId, round, idx, from, to, nowIso()));
  }

  /** When every shard of the current round is done: FedAvg, evaluate at epoch ends, next round. */
  private async finishRound(run: RunRow): Promise<void> {
    const shards = this.p.db.prepare('SELECT * FROM shards WHERE run_id = ? AND round = ? ORDER BY idx').all(run.id, run.round) as ShardRow[];
    if (shards.length === 0 || shards.some((s) => s.status !== 'DONE')) return;
    const plan = parseJson<Plan>(run.plan, {} as Plan);
    const spec = this.spec(run);
    const config = modelConfig(this.catalog.model(run.model_id), run.num_classes!);
    const expected = tunedShapes(config, inspect(spec.strategy, config).tuned);
    const updates: TrainingState[] = [];
    for (const s of shards) updates.push(parseState(await this.p.store.get(s.result_key!, s.result_sha256!), expected, s.result_key!));
    const next = fedAvg(updates, { run: run.id, round: run.round + 1 });
    const state = await this.p.store.put(keys.runState(run.id, run.round + 1), serializeState(next));
    const [, to] = plan.rounds[run.round];
    const trainLoss = weightedLoss(shards);
    const point: MetricPoint = { step: to, epoch: to / plan.stepsPerEpoch, round: run.round, trainLoss, at: nowIso() };
    if (evaluatesAfter(plan, run.round)) {
      const hyper = parseJson<Hyper>(run.hyper, {} as Hyper);
      const r = await this.p.compute.call('evaluate', {
        ...spec, state: { key: state.key, sha256: state.sha256 }, test: this.shardsOf(run, 'test'), normalization: parseJson(run.normalization, { mean: [], std: [] }), limit: hyper.evalLimit,
      });
      Object.assign(point, { testAccuracy: r.accuracy, testLoss: r.loss });
    }
    const last = run.round + 1 >= plan.rounds.length;
    this.p.db.transaction(() => {
      const metrics = [...parseJson<MetricPoint[]>(run.metrics, []), point];
      const changed = this.p.db.prepare(`UPDATE runs SET round = ?, step = ?, state_key = ?, state_sha256 = ?, metrics = ?, status = ?, updated_at = ?
        WHERE id = ? AND status = 'RUNNING' AND round = ?`).run(run.round + 1, to, state.key, state.sha256, JSON.stringify(metrics), last ? 'FINALIZING' : 'RUNNING', nowIso(), run.id, run.round);
      if (changed.changes && !last) this.createShards(run.id, run.round + 1, plan);
    })();
    const row = this.get(run.id);
    const acc = point.testAccuracy === undefined ? '' : `, test top-1 ${(point.testAccuracy * 100).toFixed(2)}%`;
    this.emit(row, point.testAccuracy === undefined ? 'ROUND' : 'EVALUATION', {
      trainLoss, testAccuracy: point.testAccuracy, testLoss: point.testLoss, message: `round ${run.round + 1}/${plan.rounds.length} aggregated from ${shards.length} shards${acc}`,
    });
  }

  private async finalize(run: RunRow): Promise<void> {
    if (run.kind === 'SOUP') return this.finalizeSoup(run);
    const hyper = parseJson<Hyper>(run.hyper, {} as Hyper);
    const dataset = this.catalog.dataset(run.dataset_id);
    const plan = parseJson<Plan>(run.plan, {} as Plan);
    const r = await this.p.compute.call('finalize', {
      ...this.spec(run), state: { key: run.state_key!, sha256: run.state_sha256! }, test: this.shardsOf(run, 'test'),
      normalization: parseJson(run.normalization, { mean: [], std: [] }), limit: hyper.evalLimit,
      training: { run: run.id, data: dataset.name, trainImages: plan.trainImages, ...hyper, steps: plan.totalSteps, rounds: plan.rounds.length },
    });
    const blob = await this.p.store.put(keys.delta(run.id), r.delta);
    const delta: DeltaRow = {
      id: randomUUID(), run_id: run.id, key: blob.key, sha256: blob.sha256, bytes: blob.bytes, tensors: r.tensors, tuned_params: r.tunedParams,
      dtype: 'F32', merged_model_id: null, created_at: nowIso(),
    };
    const profile = run.kind === 'ANGLE_PROBE' ? await this.angleProfile(run) : undefined;
    // A run cancelled while finalizing stays cancelled: no delta, profile or strategy is recorded.
    const succeeded = this.p.db.transaction(() => {
      const changed = this.p.db.prepare(`UPDATE runs SET status = 'SUCCEEDED', accuracy = ?, loss = ?, delta_id = ?, updated_at = ?, finished_at = ? WHERE id = ? AND status = 'FINALIZING'`)
        .run(r.accuracy, r.loss, delta.id, nowIso(), nowIso(), run.id);
      if (!changed.changes) return false;
      if (profile) {
        this.p.db.prepare('INSERT OR REPLACE INTO strategies VALUES (@name, @spec, @model_id, @source, @created_at)').run(profile.strategy);
        this.p.db.prepare(`INSERT OR REPLACE INTO angle_profiles VALUES (@id, @run_id, @model_id, @dataset_id, @probe, @angles, @tensor_angles,
          @direction, @top_k, @strategy_name, @created_at)`).run(profile.row);
      }
      this.p.db.prepare('INSERT OR REPLACE INTO deltas VALUES (@id, @run_id, @key, @sha256, @bytes, @tensors, @tuned_params, @dtype, @merged_model_id, @created_at)').run(delta);
      return true;
    })();
    if (!succeeded) return this.p.store.remove(blob.key);
    const row = this.get(run.id);
    this.p.log(`run ${run.id} succeeded: top-1 ${(r.accuracy * 100).toFixed(2)}%, delta ${(blob.bytes / 1024).toFixed(1)} KiB`);
    this.emit(row, 'STATUS', { testAccuracy: r.accuracy, testLoss: r.loss, message: `delta ${(blob.bytes / 1024).toFixed(1)} KiB, ${r.tensors} tensors` });
  }

  private async angleProfile(run: RunRow): Promise<{ row: AngleProfileRow; strategy: StrategyRow }> {
    const spec = parseJson<{ direction: 'largest' | 'smallest'; topK?: number; budget?: number; name?: string }>(run.spec, { direction: 'largest' });
    const plan = parseJson<Plan>(run.plan, {} as Plan);
    const hyper = parseJson<Hyper>(run.hyper, {} as Hyper);
    const name = spec.name ?? `angle-${spec.direction}-${run.id.slice(0, 8)}`;
    const a = await this.p.compute.call('angles', { ...this.spec(run), state: { key: run.state_key!, sha256: run.state_sha256! }, direction: spec.direction, topK: spec.topK, budget: spec.budget, name });
    const at = nowIso();
    const probe = { steps: plan.totalSteps, epochs: plan.totalSteps / plan.stepsPerEpoch, batchSize: hyper.batchSize, lr: hyper.lr, trainImages: plan.trainImages, budget: spec.budget };
    const layers = a.strategy as { attnLayers?: readonly number[]; ffnLayers?: readonly number[] };
    this.p.log(`angle probe ${run.id}: ${name} tunes attention ${JSON.stringify(layers.attnLayers)}, FFN ${JSON.stringify(layers.ffnLayers)}`);
    return {
      row: {
        id: randomUUID(), run_id: run.id, model_id: run.model_id, dataset_id: run.dataset_id, probe: JSON.stringify(probe), angles: JSON.stringify(a.angles),
        tensor_angles: JSON.stringify(a.tensorAngles), direction: spec.direction, top_k: a.topK, strategy_name: name, created_at: at,
      },
      strategy: { name, spec: JSON.stringify(a.strategy), model_id: run.model_id, source: `angle probe ${run.id}`, created_at: at },
    };
  }

  private async finalizeSoup(run: RunRow): Promise<void> {
    const spec = parseJson<{ method: 'uniform' | 'greedy'; runs: string[]; heldOut?: number }>(run.spec, { method: 'uniform', runs: [] });
    const model = this.catalog.model(run.model_id);
    const ingredients = spec.runs.map((id) => {
      const d = this.delta(id);
      if (!d) throw new Error(`ingredient run ${id} has no delta`);
      return { label: id, delta: { key: d.key, sha256: d.sha256 } };
    });
    const r = await this.p.compute.call('soup', {
      model: { key: model.blob_key, sha256: model.blob_sha256 }, ingredients, test: this.shardsOf(run, 'test'),
      normalization: parseJson(run.normalization, { mean: [], std: [] }), method: spec.method, heldOut: spec.heldOut,
    }, (message) => this.emit(this.get(run.id), 'ROUND', { message }));
    const blob = await this.p.store.put(keys.delta(run.id), r.delta);
    const delta: DeltaRow = {
      id: randomUUID(), run_id: run.id, key: blob.key, sha256: blob.sha256, bytes: blob.bytes, tensors: r.tensors, tuned_params: r.tunedParams,
      dtype: 'F32', merged_model_id: null, created_at: nowIso(),
    };
    const report = { method: spec.method, heldOutImages: r.heldOutImages, testImages: r.testImages, heldOut: r.heldOut, test: r.test, ingredients: r.ingredients, steps: r.steps };
    const succeeded = this.p.db.transaction(() => {
      const changed = this.p.db.prepare(`UPDATE runs SET status = 'SUCCEEDED', accuracy = ?, tuned_params = ?, report = ?, delta_id = ?, updated_at = ?, finished_at = ? WHERE id = ? AND status = 'FINALIZING'`)
        .run(r.test, r.tunedParams, JSON.stringify(report), delta.id, nowIso(), nowIso(), run.id);
      if (changed.changes) this.p.db.prepare('INSERT OR REPLACE INTO deltas VALUES (@id, @run_id, @key, @sha256, @bytes, @tensors, @tuned_params, @dtype, @merged_model_id, @created_at)').run(delta);
      return changed.changes > 0;
    })();
    if (!succeeded) return this.p.store.remove(blob.key); // cancelled meanwhile
    this.p.log(`soup ${run.id}: ${spec.method}, held-out ${(100 * r.heldOut).toFixed(2)}%, test ${(100 * r.test).toFixed(2)}%`);
    this.emit(this.get(run.id), 'STATUS', { testAccuracy: r.test, message: `${spec.method} soup: held-out ${(100 * r.heldOut).toFixed(2)}%, test ${(100 * r.test).toFixed(2)}%` });
  }

  angleProfiles(filter: { modelId?: string; datasetId?: string }): AngleProfileRow[] {
    const where: string[] = [];
    const args: string[] = [];
    if (filter.modelId) (where.push('model_id = ?'), args.push(filter.modelId));
    if (filter.datasetId) (where.push('dataset_id = ?'), args.push(filter.datasetId));
    return this.p.db.prepare(`SELECT * FROM angle_profiles ${where.length ? `WHERE ${where.join(' AND ')}` : ''} ORDER BY created_at DESC`).all(...args) as AngleProfileRow[];
  }

  angleProfileById(id: string): AngleProfileRow {
    const row = this.p.db.prepare('SELECT * FROM angle_profiles WHERE id = ? OR run_id = ?').get(id, id) as AngleProfileRow | undefined;
    if (!row) throw notFound(`angle profile '${id}' not found (a probe has one once it has SUCCEEDED)`);
    return row;
  }

  /** Another selection from a stored profile (no new probe), stored as a named strategy. */
  deriveStrategy(profileId: string, direction: string, topK: number | undefined, budget: number | undefined, name: string): StrategyRow {
    const profile = this.angleProfileById(profileId);
    checkStrategyName(name, this.p);
    if (!['largest', 'smallest'].includes(direction)) throw badInput("direction must be 'largest' or 'smallest'");
    const run = this.get(profile.run_id);
    const config = modelConfig(this.catalog.model(profile.model_id), run.num_classes!);
    const angles = JSON.parse(profile.angles) as LayerAngle[];
    let strategy: Strategy;
    try {
      const k = budget !== undefined ? topKForBudget(angles, config, direction as 'largest', budget) : topK ?? Math.ceil(config.depth / 2);
      strategy = selectByAngle(angles, { direction: direction as 'largest', topK: { attn: k, ffn: k } }, name);
    } catch (e) {
      throw badInput((e as Error).message);
    }
    const row: StrategyRow = { name, spec: JSON.stringify(strategy), model_id: profile.model_id, source: `angle profile ${profile.id}`, created_at: nowIso() };
    this.p.db.prepare('INSERT INTO strategies VALUES (@name, @spec, @model_id, @source, @created_at)').run(row);
    return row;
  }

  storedStrategy(name: string): StrategyRow | undefined {
    return this.p.db.prepare('SELECT * FROM strategies WHERE name = ?').get(name) as StrategyRow | undefined;
  }

  storedStrategies(modelId?: string): StrategyRow[] {
    return (modelId
      ? this.p.db.prepare('SELECT * FROM strategies WHERE model_id = ? ORDER BY created_at DESC').all(modelId)
      : this.p.db.prepare('SELECT * FROM strategies ORDER BY created_at DESC').all()) as StrategyRow[];
  }

  fail(id: string, message: string): void {
    const changed = this.p.db.prepare(`UPDATE runs SET status = 'FAILED', error = ?, updated_at = ?, finished_at = ? WHERE id = ? AND status IN ('PREPARING', 'RUNNING', 'FINALIZING')`)
      .run(message, nowIso(), nowIso(), id);
    if (!changed.changes) return;
    this.p.db.prepare("UPDATE shards SET status = 'CANCELLED' WHERE run_id = ? AND status IN ('PENDING', 'LEASED')").run(id);
    this.p.log(`run ${id} failed: ${message}`);
    this.emit(this.get(id), 'STATUS', { message });
  }

  /** Steps done: finished rounds plus what the current round's shards have reported. */
  progress(run: RunRow): { step: number; totalSteps: number; progress: number } {
    const plan = parseJson<Plan | null>(run.plan, null);
    if (run.status === 'SUCCEEDED') return { step: plan?.totalSteps ?? 0, totalSteps: plan?.totalSteps ?? 0, progress: 1 };
    if (!plan) return { step: 0, totalSteps: 0, progress: 0 };
    const inRound = (this.p.db.prepare("SELECT COALESCE(SUM(CASE WHEN status = 'DONE' THEN to_step - from_step ELSE steps_done END), 0) AS n FROM shards WHERE run_id = ? AND round = ?")
      .get(run.id, run.round) as { n: number }).n;
    const step = Math.min(plan.totalSteps, run.step + inRound);
    return { step, totalSteps: plan.totalSteps, progress: step / plan.totalSteps };
  }

  emit(run: RunRow, kind: RunEventKind, extra: { trainLoss?: number; testAccuracy?: number; testLoss?: number; message?: string } = {}): void {
    const { step, totalSteps, progress } = this.progress(run);
    this.p.pubSub.publish(RUN_EVENTS, { runId: run.id, kind, status: run.status, round: run.round, step, totalSteps, progress, ...extra, at: new Date() });
  }

  delta(runId: string): DeltaRow | undefined {
    return this.p.db.prepare('SELECT * FROM deltas WHERE run_id = ?').get(runId) as DeltaRow | undefined;
  }

  deltaById(id: string): DeltaRow {
    const row = this.p.db.prepare('SELECT * FROM deltas WHERE id = ? OR run_id = ?').get(id, id) as DeltaRow | undefined;
    if (!row) throw notFound(`delta '${id}' not found (a run has one once it has SUCCEEDED)`);
    return row;
  }

  /** Base + delta as a full checkpoint, registered as a model of its own. */
  async merge(deltaId: string, name: string): Promise<ModelRow> {
    const delta = this.deltaById(deltaId);
    const run = this.get(delta.run_id);
    const model = this.catalog.model(run.model_id);
    const merged = await this.p.compute.call('merge', { model: { key: model.blob_key, sha256: model.blob_sha256 }, delta: { key: delta.key, sha256: delta.sha256 } });
    const blob = await this.p.store.put(keys.checkpoint(merged.weightsSha256), merged.canonical);
    const row = this.catalog.insertModel(name, merged, blob, `merge of delta ${delta.id} into ${model.name}`);
    this.p.db.prepare('UPDATE deltas SET merged_model_id = ? WHERE id = ?').run(row.id, delta.id);
    return row;
  }
}

export function modelConfig(model: ModelRow, numClasses: number): VitConfig {
  return parseVitConfig({ ...JSON.parse(model.config), numClasses });
}

/** A preset name or a custom strategy as JSON. */
export function parseStrategyInput(raw: string): Strategy {
  const text = raw.trim();
  try {
    return parseStrategy(text.startsWith('{') ? JSON.parse(text) : text);
  } catch (e) {
    throw badInput(`strategy: ${(e as Error).message}`);
  }
}

function checkStrategyName(name: string, p: Platform): void {
  if (!/^[A-Za-z0-9][A-Za-z0-9._-]{0,63}$/.test(name)) throw badInput(`strategy name '${name}' must be 1-64 letters, digits, '.', '_' or '-'`);
  if ((PRESET_NAMES as readonly string[]).includes(name)) throw badInput(`'${name}' is a preset's name`);
  if (p.db.prepare('SELECT 1 FROM strategies WHERE name = ?').get(name)) throw conflict(`a strategy named '${name}' exists`);
}

function weightedLoss(shards: ShardRow[]): number | undefined {
  const with_ = shards.filter((s) => s.loss !== null);
  if (!with_.length) return undefined;
  const steps = with_.reduce((n, s) => n + (s.to_step - s.from_step), 0);
  return with_.reduce((a, s) => a + s.loss! * (s.to_step - s.from_step), 0) / steps;
}

function stripNulls<T extends object>(o: T): Partial<T> {
  return Object.fromEntries(Object.entries(o).filter(([, v]) => v !== null && v !== undefined)) as Partial<T>;
}

export type { DatasetRow };
