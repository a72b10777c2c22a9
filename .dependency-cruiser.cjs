// The rooms and their one-way arrows (docs/ARCHITECTURE.md), checked by `npm test`:
//   engine <- native <- node <- {server, cli, study, bench};  engine <- protocol <- {worker, server, schema, bench}
//   worker <- {edge-worker, bench};  storage <- {server, cli, bench};  nothing imports cli/ or tests/.
// Each room lists the rooms it may import; an import of any other room fails the check.
const ROOMS = ['engine', 'native', 'node', 'protocol', 'storage', 'schema', 'worker', 'edge-worker', 'server', 'cli', 'study', 'bench', 'tests'];
const MAY_IMPORT = {
  engine: [],
  native: ['engine'],
  node: ['engine', 'native'],
  protocol: ['engine'],
  storage: [],
  schema: ['engine', 'protocol'],
  worker: ['engine', 'protocol'],
  'edge-worker': ['engine', 'protocol', 'worker'],
  server: ['engine', 'native', 'node', 'protocol', 'schema', 'storage'],
  cli: ['engine', 'native', 'node', 'protocol', 'schema', 'storage', 'server', 'worker'],
  study: ['engine', 'native', 'node'],
  bench: ['engine', 'native', 'node', 'protocol', 'storage', 'server', 'worker'],
  tests: ROOMS.filter((r) => r !== 'tests'),
};
/** Code that runs in browsers too: no Node built-ins. */
const PORTABLE = ['engine', 'protocol', 'worker', 'edge-worker'];

module.exports = {
  forbidden: [
    ...ROOMS.map((room) => ({
      name: `${room}-imports`,
      severity: 'error',
      comment: `${room}/ may import only ${MAY_IMPORT[room].join(', ') || 'itself'} (see docs/ARCHITECTURE.md)`,
      from: { path: `^${room}/` },
      to: { path: `^(${ROOMS.filter((r) => r !== room && !MAY_IMPORT[room].includes(r)).join('|')})/` },
    })),
    {
      name: 'portable-code-has-no-node-builtins',
      severity: 'error',
      comment: `${PORTABLE.join(', ')} run in browsers: no Node built-in modules`,
      from: { path: `^(${PORTABLE.join('|')})/`, pathNot: '^edge-worker/build\\.js$' },
      to: { dependencyTypes: ['core'] },
    },
    {
      name: 'no-unresolvable',
      severity: 'error',
      comment: 'every import resolves, but the optional backends loaded only when installed',
      from: {},
      to: { couldNotResolve: true, pathNot: '^(webgpu|@tensorflow/tfjs-node(-gpu)?)$' },
    },
  ],
  options: {
    doNotFollow: { path: 'node_modules' },
    exclude: { path: '^(dist|node_modules)/' },
    tsConfig: { fileName: 'tsconfig.json' },
    tsPreCompilationDeps: true,
    enhancedResolveOptions: { extensions: ['.ts', '.js', '.json', '.node'], exportsFields: ['exports'], conditionNames: ['require', 'node', 'default'] },
  },
};
