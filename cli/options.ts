// The command line's spelling of the engine's TrainOptions: each option is the flag of its name in
// kebab case (batchSize: --batch-size). Values are parsed by the engine; its errors get the flag.
import { OptionError, TRAIN_OPTION_NAMES, TRAIN_OPTION_SPECS, TrainOptions, parseTrainOptions } from '../engine';

export type Options = Record<string, string | boolean | undefined>;

/** A usage or value error: the command exits 2 and names the flag. */
export class UsageError extends Error {}

export const flagOf = (option: string): string => `--${option.replace(/[A-Z]/g, (c) => `-${c.toLowerCase()}`)}`;

/** Runs `f`, naming the flag of any option the engine refuses. */
export function withFlags<T>(f: () => T): T {
  try {
    return f();
  } catch (e) {
    if (e instanceof OptionError) throw new UsageError(`${flagOf(e.option)}: ${e.message}`);
    throw e;
  }
}

/** The training options given as flags, as the engine would take them (unparsed; absent ones left out). */
export function givenTrainOptions(o: Options): Record<string, unknown> {
  const given: Record<string, unknown> = {};
  for (const name of TRAIN_OPTION_NAMES) {
    const flag = flagOf(name).slice(2);
    const raw = o[flag];
    if (raw === undefined) continue;
    const kind = TRAIN_OPTION_SPECS[name].kind;
    if (kind === 'bool') given[name] = raw === true;
    else if (kind === 'choice') given[name] = raw;
    else {
      const n = Number(raw);
      if (raw === '' || !Number.isFinite(n)) throw new UsageError(`--${flag} must be a number (got '${raw}')`);
      given[name] = n;
    }
  }
  if (o['no-resized-crop'] === true) {
    if (given.resizedCrop) throw new UsageError('give --resized-crop or --no-resized-crop, not both');
    given.resizedCrop = false;
  }
  return given;
}

/** Parsed training options from the flags, with `overrides` (e.g. a probe's length) taking precedence. */
export function trainOptionsFrom(o: Options, overrides: Partial<Record<keyof TrainOptions, unknown>> = {}): TrainOptions {
  return withFlags(() => parseTrainOptions({ ...givenTrainOptions(o), ...overrides }));
}
