// Models: checkpoints validated on the compute thread, stored canonically (timm names, F32).
import { randomUUID } from 'node:crypto';
import { existsSync, readFileSync } from 'node:fs';
import { VitConfig, parseVitConfig } from '../../engine';
import { keys } from '../../storage';
import { ComputeError } from '../compute';
import { badInput, conflict, notFound } from '../errors';
import type { Platform } from '../platform';
import { ModelRecord, Page, StoredBlob } from '../state/records';
import { Uploads, checkName } from './uploads';

/** The model's architecture with the run's head. */
export const modelConfig = (model: ModelRecord, numClasses: number): VitConfig => parseVitConfig({ ...model.config, numClasses });

export interface CanonicalModel {
  readonly config: unknown;
  readonly params: number;
  readonly weightsSha256: string;
  readonly canonical: Uint8Array;
}

export class Models {
  constructor(private readonly p: Platform, private readonly uploads: Uploads) {}

  async get(idOrName: string): Promise<ModelRecord> {
    const model = await this.p.state.models.byIdOrName(idOrName);
    if (!model) throw notFound(`model '${idOrName}' not found`);
    return model;
  }

  list(search: string | undefined, first: number, offset: number): Promise<Page<ModelRecord>> {
    return this.p.state.models.list(search, first, offset);
  }

  /** A name a new model may take: well formed and free. */
  async checkNewName(name: string): Promise<void> {
    checkName(name);
    if (await this.p.state.models.byIdOrName(name)) throw conflict(`a model named '${name}' exists`);
  }

  async register(input: { name: string; uploadId?: string | null; path?: string | null; config?: unknown }): Promise<ModelRecord> {
    await this.checkNewName(input.name);
    if (Boolean(input.uploadId) === Boolean(input.path)) throw badInput('give exactly one of uploadId or path');
    const { bytes, source } = input.uploadId
      ? { bytes: (await this.uploads.bytes(input.uploadId)).bytes, source: `upload ${input.uploadId}` }
      : { bytes: readServerFile(input.path!), source: input.path! };
    let m: CanonicalModel;
    try {
      m = await this.p.compute.call('importModel', { bytes, config: input.config ?? undefined, source });
    } catch (e) {
      if (e instanceof ComputeError && e.cause === 'input') throw badInput(`checkpoint ${source}: ${e.message}`);
      throw e;
    }
    return this.add(input.name, m, source);
  }

  /** Stores a canonical checkpoint and registers it under `name`. */
  async add(name: string, m: CanonicalModel, source: string): Promise<ModelRecord> {
    const blob: StoredBlob = await this.p.blobs.put(keys.checkpoint(m.weightsSha256), m.canonical);
    const model: ModelRecord = {
      id: randomUUID(), name, config: parseVitConfig(m.config), params: m.params, weightsSha256: m.weightsSha256, blob, source, createdAt: new Date(),
    };
    if (!(await this.p.state.models.insert(model))) throw conflict(`a model named '${name}' exists`);
    this.p.log(`model '${name}' registered: ${m.params.toLocaleString('en-US')} parameters, weights ${m.weightsSha256.slice(0, 12)}`);
    return model;
  }
}

function readServerFile(path: string): Uint8Array {
  if (!existsSync(path)) throw badInput(`path ${path} does not exist on the server`);
  return new Uint8Array(readFileSync(path));
}
