// Strategies by name: the presets, custom ones as JSON, and those stored by angle probes or
// derived from their profiles (another top-K or budget, no new probe).
import { MAX_STRATEGY_TEXT, PRESET_NAMES, Strategy, parseStrategy, selectByAngle, topKForBudget } from '../../engine';
import { checkName } from '../catalog/uploads';
import { Models, modelConfig } from '../catalog/models';
import { badInput, conflict, notFound } from '../errors';
import type { Platform } from '../platform';
import { AngleProfileRecord, StoredStrategy } from '../state/records';
import { RunQueries } from './queries';

/** A preset name or a custom strategy as JSON. */
export function parseStrategyInput(raw: string): Strategy {
  if (raw.length > MAX_STRATEGY_TEXT) throw badInput(`strategy: at most ${MAX_STRATEGY_TEXT} characters (this one has ${raw.length})`);
  const text = raw.trim();
  try {
    return parseStrategy(text.startsWith('{') ? JSON.parse(text) : text);
  } catch (e) {
    throw badInput(`strategy: ${(e as Error).message}`);
  }
}

export class Strategies {
  constructor(private readonly p: Platform, private readonly models: Models, private readonly runs: RunQueries) {}

  /** A preset, a custom strategy as JSON, or the name of a stored one. */
  async resolve(raw: string): Promise<Strategy> {
    if (raw.length > MAX_STRATEGY_TEXT) return parseStrategyInput(raw);
    const stored = await this.p.state.results.strategy(raw.trim());
    return stored ? stored.strategy : parseStrategyInput(raw);
  }

  stored(name: string): Promise<StoredStrategy | undefined> {
    return this.p.state.results.strategy(name);
  }

  storedFor(modelId?: string): Promise<StoredStrategy[]> {
    return this.p.state.results.strategies(modelId);
  }

  /** A name a new strategy may take: well formed, not a preset's, not stored yet. */
  async checkNewName(name: string): Promise<void> {
    checkName(name, 'strategy name');
    if ((PRESET_NAMES as readonly string[]).includes(name)) throw badInput(`'${name}' is a preset's name`);
    if (await this.p.state.results.strategy(name)) throw conflict(`a strategy named '${name}' exists`);
  }

  profiles(filter: { modelId?: string; datasetId?: string }): Promise<AngleProfileRecord[]> {
    return this.p.state.results.profiles(filter);
  }

  async profile(id: string): Promise<AngleProfileRecord> {
    const profile = await this.p.state.results.profile(id);
    if (!profile) throw notFound(`angle profile '${id}' not found (a probe has one once it has SUCCEEDED)`);
    return profile;
  }

  /** Another selection from a stored profile, stored under `name`. */
  async derive(profileId: string, direction: 'largest' | 'smallest', topK: number | undefined, budget: number | undefined, name: string): Promise<StoredStrategy> {
    const profile = await this.profile(profileId);
    await this.checkNewName(name);
    const run = await this.runs.get(profile.runId);
    const config = modelConfig(await this.models.get(profile.modelId), run.numClasses);
    let strategy: Strategy;
    try {
      const k = budget !== undefined ? topKForBudget(profile.angles, config, direction, budget) : topK ?? Math.ceil(config.depth / 2);
      strategy = selectByAngle(profile.angles, { direction, topK: { attn: k, ffn: k } }, name);
    } catch (e) {
      throw badInput((e as Error).message);
    }
    const stored: StoredStrategy = { name, strategy, modelId: profile.modelId, source: `angle profile ${profile.id}`, createdAt: new Date() };
    if (!(await this.p.state.results.insertStrategy(stored))) throw conflict(`a strategy named '${name}' exists`);
    return stored;
  }
}
