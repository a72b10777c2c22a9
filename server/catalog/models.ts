// Models: checkpoints validated on the compute thread, stored canonically (timm names, F32).
import { randomUUID } from 'node:crypto';
import { VitConfig, parseVitConfig } from '../../engine';
import { keys } from '../../storage';
import { ComputeError } from '../compute';
import { badInput } from '../errors';
import type { Platform } from '../platform';
import { ModelRecord, StoredBlob } from '../state/records';
import { NamedCatalog } from './named';
import { readServerFile } from './server-paths';
import { Uploads } from './uploads';

/** The model's architecture with the run's head. */
export const modelConfig = (model: ModelRecord, numClasses: number): VitConfig => parseVitConfig({ ...model.config, numClasses });

export interface CanonicalModel {
  readonly config: unknown;
  readonly params: number;
  readonly weightsSha256: string;
  readonly canonical: Uint8Array;
}

export class Models extends NamedCatalog<ModelRecord> {
  constructor(private readonly p: Platform, private readonly uploads: Uploads) {
    super(p.state.models, 'model');
  }

  async register(input: { name: string; uploadId?: string | null; path?: string | null; config?: unknown }): Promise<ModelRecord> {
    await this.checkNewName(input.name);
    if (Boolean(input.uploadId) === Boolean(input.path)) throw badInput('give exactly one of uploadId or path');
    const uploaded = input.uploadId ? await this.uploads.bytes(input.uploadId) : undefined;
    const { bytes, source } = uploaded
      ? { bytes: uploaded.bytes, source: `${uploaded.filename} (upload ${input.uploadId})` }
      : { bytes: await readServerFile(this.p.config, input.path!), source: input.path! };
    let m: CanonicalModel;
    try {
      m = await this.p.compute.call('importModel', { bytes, config: input.config ?? undefined, source });
    } catch (e) {
      // The reader names its source itself: said once.
      const why = e instanceof Error && e.message.startsWith(`${source}: `) ? e.message.slice(source.length + 2) : (e as Error).message;
      if (e instanceof ComputeError && e.fault === 'input') throw badInput(`checkpoint ${source}: ${why}`);
      throw e;
    }
    const model = await this.add(input.name, m, source);
    if (input.uploadId) await this.uploads.used(input.uploadId);
    return model;
  }

  /** Stores a canonical checkpoint and registers it under `name`. */
  async add(name: string, m: CanonicalModel, source: string): Promise<ModelRecord> {
    const blob: StoredBlob = await this.p.blobs.put(keys.checkpoint(m.weightsSha256), m.canonical);
    const model: ModelRecord = {
      id: randomUUID(), name, config: parseVitConfig(m.config), params: m.params, weightsSha256: m.weightsSha256, blob, source, createdAt: new Date(),
    };
    await this.insert(model);
    this.p.log(`model '${name}' registered: ${m.params.toLocaleString('en-US')} parameters, weights ${m.weightsSha256.slice(0, 12)}`);
    return model;
  }
}
