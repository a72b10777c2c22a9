#!/usr/bin/env node
// partune: partial fine-tuning of Vision Transformers from the command line. Exit status: 0 done,
// 1 failed, 2 usage error (an unknown command or flag, a missing argument, a value a flag refuses).
import { existsSync, readFileSync, statSync } from 'node:fs';
import { dirname, join, resolve } from 'node:path';
import { parseArgs } from 'node:util';
import { BOOLEAN_FLAGS, COMMANDS, COMMON, Command, usage } from './command-table';
import { Options, UsageError } from './options';

/** The command named by the leading words ('delta apply', 'eval'), longest name first. */
function commandOf(words: readonly string[]): { command: Command; rest: string[] } | undefined {
  for (const command of [...COMMANDS].sort((a, b) => b.name.length - a.name.length)) {
    const parts = command.name.split(' ');
    if (parts.every((p, i) => words[i] === p)) return { command, rest: words.slice(parts.length) };
  }
  return undefined;
}

/** `--lr -1` is a value, not a flag: joined as `--lr=-1` so that the engine says what is wrong with it. */
function joinNegativeValues(argv: string[]): string[] {
  const out: string[] = [];
  for (let i = 0; i < argv.length; i++) {
    const flag = argv[i];
    const next = argv[i + 1];
    const takesValue = /^--[a-z][a-z0-9-]*$/.test(flag) && !BOOLEAN_FLAGS.has(flag.slice(2));
    if (takesValue && next !== undefined && /^-(\d|\.\d|Infinity)/.test(next)) out.push(`${flag}=${argv[++i]}`);
    else out.push(flag);
  }
  return out;
}

function parse(command: Command, argv: string[]): { options: Options; args: string[] } {
  const flags = new Set([...COMMON, ...command.flags]);
  let parsed;
  try {
    parsed = parseArgs({
      args: joinNegativeValues(argv), allowPositionals: true, strict: true,
      options: Object.fromEntries([...flags].map((f) => [f, { type: BOOLEAN_FLAGS.has(f) ? ('boolean' as const) : ('string' as const) }])),
    });
  } catch (e) {
    throw new UsageError(`${(e as Error).message.split('. ')[0]}\n${usage([command])}`);
  }
  return { options: parsed.values as Options, args: parsed.positionals };
}

/** Flags naming a file the command writes. */
const OUTPUT_FLAGS = ['out', 'merged-out'];

/** A file the command will write: its folder must exist, and it must be a regular file if it exists (said before any work). */
function checkOutput(flag: string, path: string): void {
  const folder = dirname(resolve(path));
  if (!existsSync(folder)) throw new UsageError(`--${flag}: the folder ${folder} does not exist (create it first)`);
  if (!statSync(folder).isDirectory()) throw new UsageError(`--${flag}: ${folder} is not a folder`);
  if (existsSync(path) && statSync(path).isDirectory()) throw new UsageError(`--${flag}: ${path} is a folder; name a file in it`);
  // A device or FIFO would be replaced by the finished file (written beside it, then renamed), or block the write.
  if (existsSync(path) && !statSync(path).isFile()) throw new UsageError(`--${flag}: ${path} is not a regular file (a device, FIFO or socket); name a file`);
}

async function main(argv: string[]): Promise<void> {
  const words: string[] = [];
  for (const a of argv) {
    if (a.startsWith('-')) break;
    words.push(a);
  }
  if (words.length === 0 && argv[0] === '--version') {
    process.stdout.write(`partune ${(JSON.parse(readFileSync(join(__dirname, '..', '..', 'package.json'), 'utf8')) as { version: string }).version}\n`);
    return;
  }
  const found = commandOf(words.slice(0, 2));
  if (!found) {
    const group = COMMANDS.filter((c) => words.length === 1 && c.name.startsWith(`${words[0]} `));
    if (argv.includes('--help') && (words.length === 0 || group.length)) {
      process.stdout.write(`${usage(group.length ? group : COMMANDS)}\n`);
      return;
    }
    if (group.length) throw new UsageError(`'${words[0]}' needs one of: ${group.map((c) => c.name.split(' ')[1]).join(', ')}\n${usage(group)}`);
    throw new UsageError(words.length ? `unknown command '${words.slice(0, 2).join(' ')}'\n${usage()}` : usage());
  }
  const { command } = found;
  const { options, args } = parse(command, argv);
  if (options.help) {
    process.stdout.write(`usage:\n  ${command.usage.replace(/\n/g, '\n  ')}\n`);
    return;
  }
  const positionals = args.slice(command.name.split(' ').length);
  const allowed = command.positionals ?? { min: 0, max: 0, name: '' };
  if (positionals.length < allowed.min || positionals.length > allowed.max) {
    throw new UsageError(`${allowed.max ? `expected ${allowed.name}` : `unexpected argument '${positionals[0]}'`}\n${usage([command])}`);
  }
  const missing = (command.required ?? []).filter((f) => options[f] === undefined || options[f] === '');
  if (missing.length) throw new UsageError(`${missing.map((f) => `--${f}`).join(', ')} ${missing.length > 1 ? 'are' : 'is'} required\n${usage([command])}`);
  for (const flag of OUTPUT_FLAGS) if (typeof options[flag] === 'string') checkOutput(flag, options[flag] as string);
  const result = await command.run(options, positionals);
  if (options.json) process.stdout.write(`${JSON.stringify(result)}\n`);
}

main(process.argv.slice(2)).catch((e: Error) => {
  process.stderr.write(`partune: ${e.message}\n`);
  process.exit(e instanceof UsageError ? 2 : 1);
});
