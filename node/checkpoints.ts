// Node adapter: checkpoint files -> engine checkpoints.
//   FILE.safetensors, with a config file or an architecture preset when it carries none
//   random:PRESET   (timm-style random init, seed 0: reproducible, so deltas can name it)
import { readFileSync, existsSync } from 'node:fs';
import { Checkpoint, VitConfig, exportCheckpoint, initParams, loadCheckpoint, parseVitConfig, preset, toHost } from '../engine';
import * as tf from '@tensorflow/tfjs';

export function readConfig(opts: { config?: string; arch?: string }): VitConfig | undefined {
  if (opts.config && opts.arch) throw new Error('give either a config file or an architecture preset, not both');
  if (opts.arch) return preset(opts.arch);
  if (!opts.config) return undefined;
  if (!existsSync(opts.config)) throw new Error(`config file ${opts.config} not found`);
  try {
    return parseVitConfig(JSON.parse(readFileSync(opts.config, 'utf8')));
  } catch (e) {
    throw new Error(`${opts.config}: ${(e as Error).message}`);
  }
}

export async function openCheckpoint(
  spec: string,
  opts: { config?: VitConfig },
): Promise<Checkpoint> {
  const load = { config: opts.config, source: spec };
  if (spec.startsWith('random:')) {
    const config = preset(spec.slice('random:'.length));
    const params = initParams(config, 0);
    const weights = await toHost(params);
    tf.dispose([...params.values()]);
    return loadCheckpoint(exportCheckpoint(weights, config), { ...load, config });
  }
  if (!existsSync(spec)) throw new Error(`checkpoint ${spec} not found`);
  return loadCheckpoint(new Uint8Array(readFileSync(spec)), load);
}
