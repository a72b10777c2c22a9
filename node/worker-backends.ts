// A Node worker's backend, chosen as a browser tab chooses its own: with `--backend auto`, every
// backend this process can load (libtensorflow, WebGPU on a real GPU through Dawn, WebAssembly)
// is timed on each new model shape for a few real training steps, and the fastest takes the
// shard. A software GPU adapter is listed, never chosen. With one usable backend (forced, or
// the only one) there is nothing to compare and nothing is timed: its shards report its speed.
import * as tf from '@tensorflow/tfjs';
import { spawnSync } from 'node:child_process';
import { existsSync } from 'node:fs';
import { join } from 'node:path';
import { BackendTiming, Strategy, VitConfig, fastestBackend, modelShapeKey, timeBackends } from '../engine';
import { BackendChoice, BackendInfo, loadWebgpu, probeWebgpu, selectBackend, webgpuInfo } from './backend';
import type { NativeBlasOptions } from '../native';

/** The backend choice as a worker reports it with its claims (the API's BackendChoiceInput). */
export interface BackendReport {
  readonly chosen: string;
  readonly detail: string;
  readonly how: 'forced' | 'measured' | 'remembered' | 'only one';
  readonly model: string | null;
  readonly timings: BackendTiming[];
}

interface Candidate extends BackendInfo {
  /** Why `auto` never takes it, or null. */
  readonly software: string | null;
}

export class NodeBackends {
  private choice: BackendReport;
  private readonly remembered = new Map<string, BackendTiming[]>();

  private constructor(private readonly forced: boolean, private readonly candidates: Candidate[], private current: Candidate) {
    this.choice = { chosen: current.name, detail: current.detail, how: forced ? 'forced' : 'measured', model: null, timings: this.untimed() };
  }

  static async open(choice: BackendChoice, native: NativeBlasOptions): Promise<NodeBackends> {
    if (choice !== 'auto') {
      const only = { ...(await selectBackend(choice, native)), software: null };
      return new NodeBackends(true, [only], only);
    }
    const candidates: Candidate[] = [];
    // Dawn is loaded into this process only for a hardware adapter: a software one is listed, never loaded.
    const probed = vulkanLoader() ? probeWebgpu() : null;
    if (probed?.software) candidates.push({ ...(await webgpuInfo(probed)), software: `a software adapter (${probed.name})` });
    else if (probed) try {
      const adapter = await loadWebgpu();
      candidates.push({ ...(await webgpuInfo(adapter)), software: adapter.software ? `a software adapter (${adapter.name})` : null });
    } catch {
      // The adapter the probe saw did not start here: nothing to list.
    }
    const cpuSide = { ...(await selectBackend('auto', native)), software: null }; // libtensorflow when installed, else wasm
    candidates.push(cpuSide);
    return new NodeBackends(false, candidates, cpuSide);
  }

  get info(): BackendInfo {
    return this.current;
  }

  /** What the claims send: the choice and every timing. */
  get report(): BackendReport {
    return this.choice;
  }

  /** The backend for a model: timed once per shape in this process; switches tfjs to it. */
  async forModel(config: VitConfig, strategy: Strategy, batchSize: number): Promise<BackendInfo> {
    const model = modelShapeKey(config, strategy, batchSize);
    if (this.choice.model === model) return this.current;
    const usable = this.candidates.filter((c) => !c.software);
    let timings = this.remembered.get(model);
    const how = this.forced ? 'forced' : timings ? 'remembered' : usable.length === 1 ? 'only one' : 'measured';
    const names = usable.map((c) => c.name);
    if (!timings) {
      timings = await timeBackends(this.untimed(), names.length > 1 ? names : [], async (name) => void (await tf.setBackend(name)), config, strategy, batchSize);
      this.remembered.set(model, timings);
    }
    this.current = usable.find((c) => c.name === fastestBackend(timings!, names))!;
    await tf.setBackend(this.current.name);
    this.choice = { chosen: this.current.name, detail: this.current.detail, how, model, timings };
    return this.current;
  }

  private untimed(): BackendTiming[] {
    const alone = this.candidates.filter((c) => !c.software).length === 1;
    return this.candidates.map((c) => ({
      backend: c.name, detail: c.detail, imagesPerSecond: null,
      note: c.software ? `never chosen: ${c.software}` : this.forced ? 'not timed: forced' : alone ? 'not timed: the only backend' : 'not measured yet',
    }));
  }
}

/** Dawn needs a Vulkan loader on Linux; without one it only prints a warning, so do not try. */
function vulkanLoader(): boolean {
  if (process.platform !== 'linux') return true;
  const dirs = (process.env.LD_LIBRARY_PATH ?? '').split(':').filter(Boolean);
  if (dirs.some((d) => existsSync(join(d, 'libvulkan.so.1')))) return true;
  return /libvulkan\.so\.1 /.test(spawnSync('ldconfig', ['-p'], { encoding: 'utf8' }).stdout ?? '');
}
