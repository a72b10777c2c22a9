// `partune predict`: what is in these photos, by a checkpoint (and a delta on top of it), through the
// model's own eval transform (timm's: shorter side to size / crop_pct, centre crop, normalise).
import { existsSync, readFileSync } from 'node:fs';
import { Checkpoint, VitConfig, applyDelta, inputTransform, parseDelta } from '../engine';
import { Prediction, predictImages } from '../node/predict';
import { decodeOriginal } from '../node/image-folder';
import { Options, backend, baseConfigOf, checkpointFrom, configFrom, num, say, str } from './commands';

export async function predictCommand(o: Options, images: string[]): Promise<Record<string, unknown>> {
  await backend(o);
  const deltaPath = str(o, 'delta');
  const delta = deltaPath ? parseDelta(new Uint8Array(readFileSync(deltaPath)), deltaPath) : undefined;
  const base = await checkpointFrom(o, configFrom(o) ?? (delta && baseConfigOf(delta.manifest)));
  const model: { config: VitConfig; weights: Checkpoint['weights']; classNames?: readonly string[] } = delta
    ? { config: delta.manifest.architecture, weights: applyDelta(base, delta), classNames: delta.manifest.classNames }
    : base;
  const top = num(o, 'top', 5, true);
  if (top < 1) throw new Error('--top must be at least 1');
  const decoded = [];
  for (const path of images) {
    if (!existsSync(path)) throw new Error(`${path} not found`);
    try {
      decoded.push(await decodeOriginal(new Uint8Array(readFileSync(path)), model.config.channels === 1 ? 1 : 3));
    } catch (e) {
      throw new Error(`${path}: not a decodable image (${(e as Error).message.split('\n')[0]})`);
    }
  }
  const t = inputTransform(model.config);
  say(
    o,
    `model: ${model.config.imageSize}x${model.config.imageSize}, ${model.config.numClasses} classes; eval transform: ${t.interpolation}, crop ${t.cropPct}`,
  );
  const results: Prediction[][] = await predictImages(model, decoded, top);
  results.forEach((r, i) => say(o, `${images[i]}: ${r.map((p) => `${p.name} ${(p.probability * 100).toFixed(1)}%`).join(', ')}`));
  return { command: 'predict', predictions: results.map((top5, i) => ({ image: images[i], top: top5 })) };
}
