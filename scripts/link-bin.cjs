// `npx partune` in the checkout: with the bin linked here, npx runs it at once instead of
// installing the whole project into its cache (40 s, and broken if interrupted).
const fs = require('node:fs');
const path = require('node:path');

const bin = path.join(__dirname, '..', 'node_modules', '.bin');
fs.mkdirSync(bin, { recursive: true });
const link = path.join(bin, 'partune');
fs.rmSync(link, { force: true });
fs.symlinkSync(path.join('..', '..', 'dist', 'cli', 'main.js'), link);
