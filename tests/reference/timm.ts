/** Real timm 1.0.x on Debian's PyTorch, as an independent reference for the tests (see timm_ref.py). */
import { execFile, spawnSync } from 'node:child_process';
import { existsSync, promises as fs, readdirSync } from 'node:fs';
import os from 'node:os';
import path from 'node:path';
import { promisify } from 'node:util';

const run = promisify(execFile);
const PYTHON = '/usr/bin/python3';
const SCRIPT = path.join(__dirname, 'timm_ref.py');
// Where this image keeps its wheel folder (measured: /opt/pypi/files); a full-disk find takes ~30 s, so it is the last resort.
const WHEEL_DIRS = [
  process.env.PARTUNE_WHEEL_DIR,
  '/opt/pypi/files',
  '/opt/pypi',
  '/opt/wheels',
  '/usr/share/python-wheels',
  path.join(os.homedir(), 'wheels'),
];
const APT = { torch: 'python3-torch', torchvision: 'python3-torchvision', PIL: 'python3-pil' } as const;

export interface TimmReference {
  /** Runs timm_ref.py with the given arguments; resolves to its stdout. */
  run(args: string[], opts?: { timeoutMs?: number }): Promise<string>;
  /** e.g. "timm 1.0.29, safetensors 0.8.0, torch 1.13.0a0, torchvision 0.14.1a0, Pillow 9.4.0" */
  version: string;
}

async function python(code: string, env: NodeJS.ProcessEnv = process.env): Promise<string> {
  return (await run(PYTHON, ['-c', code], { env, timeout: 120_000 })).stdout.trim();
}

async function findWheel(prefix: string): Promise<string | undefined> {
  const match = (name: string) => name.startsWith(prefix) && name.endsWith('.whl');
  for (const dir of WHEEL_DIRS) {
    const names = dir ? await fs.readdir(dir).catch(() => [] as string[]) : [];
    const hit = names.filter(match).sort().pop();
    if (hit) return path.join(dir!, hit);
  }
  const found = await run('find', ['/', '-xdev', '-name', `${prefix}*.whl`], { timeout: 120_000, maxBuffer: 16 << 20 }).catch((e) => ({
    stdout: String(e.stdout ?? ''),
  }));
  return found.stdout.split('\n').filter(Boolean).sort().pop();
}

const VERSION =
  'import timm, safetensors, torch, torchvision, PIL; ' +
  "print(f'timm {timm.__version__}, safetensors {safetensors.__version__}, torch {torch.__version__}, " +
  "torchvision {torchvision.__version__}, Pillow {PIL.__version__}')";
/** The version line when timm imports from `dir`, else undefined (one import: torch alone takes ~2 s). */
const versionIn = (dir: string) => python(VERSION, { ...process.env, PYTHONPATH: dir }).catch(() => undefined);

/** pip-installs the wheels into a dir named by their versions, once per machine: a temp dir renamed into place (no jest worker sees half an install). */
async function installWheels(wheels: string[]): Promise<{ dir: string; version: string } | { skip: string }> {
  const tag = wheels.map((w) => path.basename(w).split('-').slice(0, 2).join('-')).join('_');
  const dir = path.join(os.tmpdir(), `partune-timm-ref-${tag}`);
  if (existsSync(dir)) {
    const version = await versionIn(dir);
    if (version) return { dir, version };
    await fs.rm(dir, { recursive: true, force: true }); // a broken earlier install
  }
  if (
    !(await python('import pip').then(
      () => true,
      () => false,
    ))
  )
    return { skip: 'python3-pip is not installed (it unpacks the timm wheel): apt-get install python3-pip' };
  const tmp = `${dir}.tmp-${process.pid}-${Date.now()}`;
  await run(PYTHON, ['-m', 'pip', 'install', '--quiet', '--no-index', '--no-deps', '--disable-pip-version-check', '--target', tmp, ...wheels], {
    timeout: 300_000,
  });
  await fs.rename(tmp, dir).catch(() => fs.rm(tmp, { recursive: true, force: true })); // lost the race: the winner's copy is as good
  const version = await versionIn(dir);
  return version ? { dir, version } : { skip: `timm was installed into ${dir} but does not import` };
}

async function probe(): Promise<TimmReference | { skip: string }> {
  if (!existsSync(PYTHON)) return { skip: `${PYTHON} is missing: apt-get install python3 python3-pip ${Object.values(APT).join(' ')}` };
  const missing = (await python(`import importlib.util as u; print(' '.join(m for m in ${JSON.stringify(Object.keys(APT))} if u.find_spec(m) is None))`))
    .split(' ')
    .filter(Boolean) as (keyof typeof APT)[];
  if (missing.length) {
    const pkgs = missing.map((m) => APT[m]).join(', ');
    return { skip: `${pkgs} ${missing.length > 1 ? 'are' : 'is'} not installed: apt-get install ${Object.values(APT).join(' ')}` };
  }
  const wheels = await Promise.all(['timm-', 'safetensors-'].map(findWheel));
  const absent = ['timm', 'safetensors'].filter((_, i) => !wheels[i]);
  if (absent.length)
    return { skip: `no ${absent.join(' or ')} wheel found (looked in ${WHEEL_DIRS.filter(Boolean).join(', ')}, then find / -xdev); set PARTUNE_WHEEL_DIR` };
  const installed = await installWheels(wheels as string[]);
  if ('skip' in installed) return installed;
  // One thread: the suites beside it (some of them timing /healthz) keep their core.
  const env = { ...process.env, PYTHONPATH: installed.dir, PYTHONDONTWRITEBYTECODE: '1', OMP_NUM_THREADS: '1', MKL_NUM_THREADS: '1' };
  return {
    version: installed.version,
    run: async (args, opts = {}) => (await run(PYTHON, [SCRIPT, ...args], { env, timeout: opts.timeoutMs ?? 300_000, maxBuffer: 256 << 20 })).stdout,
  };
}

/** Why the reference cannot run here, decided at collection time (so that a suite is skipped visibly, not passed empty); undefined when it can. */
export function timmMissingSync(): string | undefined {
  if (!existsSync(PYTHON)) return `${PYTHON} is missing: apt-get install python3 python3-pip ${Object.values(APT).join(' ')}`;
  const probeModules = spawnSync(PYTHON, ['-c', 'import torch, torchvision, PIL, pip'], { stdio: 'ignore', timeout: 120_000 });
  if (probeModules.status !== 0) return `python3 cannot import torch, torchvision, PIL and pip: apt-get install python3-pip ${Object.values(APT).join(' ')}`;
  const has = (prefix: string): boolean =>
    WHEEL_DIRS.some((d) => d && existsSync(d) && readdirSync(d).some((n) => n.startsWith(prefix) && n.endsWith('.whl'))) ||
    spawnSync('find', ['/', '-xdev', '-name', `${prefix}*.whl`], { encoding: 'utf8', timeout: 120_000 }).stdout?.trim() !== '';
  const absent = ['timm-', 'safetensors-'].filter((p) => !has(p));
  return absent.length ? `no ${absent.map((p) => p.slice(0, -1)).join(' or ')} wheel on this machine (set PARTUNE_WHEEL_DIR)` : undefined;
}

let cached: Promise<TimmReference | { skip: string }> | undefined;

/** The reference, or why it cannot run here; probed and installed once per jest worker. */
export function timmReference(): Promise<TimmReference | { skip: string }> {
  cached ??= probe().catch((e: Error) => ({ skip: `timm reference failed to start: ${e.message}` }));
  return cached;
}
