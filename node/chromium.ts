// Debian's Chromium, headless, for the browser tests and benches (driven by playwright-core, which
// adds --headless, --no-sandbox and a fresh profile). These flags keep it off the network and give
// it a WebGPU adapter: SwiftShader where the machine has no GPU.
import { existsSync } from 'node:fs';

export const CHROMIUM = process.env.PARTUNE_CHROMIUM ?? '/usr/bin/chromium';

export const CHROMIUM_FLAGS = [
  '--disable-dev-shm-usage', '--disable-quic', '--no-first-run', '--disable-background-networking',
  '--disable-component-update', '--disable-sync', '--enable-unsafe-webgpu', '--enable-unsafe-swiftshader',
];

/** Why Chromium cannot run here, or undefined. */
export const chromiumMissing = (): string | undefined => (existsSync(CHROMIUM) ? undefined : `${CHROMIUM} is not installed (apt install chromium)`);
