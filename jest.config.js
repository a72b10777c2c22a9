/** Tests run on TypeScript sources; `npm test` type-checks separately (ts-jest only transpiles). */
module.exports = {
  testEnvironment: 'node',
  roots: ['<rootDir>/tests'],
  transform: { '^.+\\.ts$': 'ts-jest' },
  testTimeout: 120000,
  maxWorkers: 2,
  setupFiles: ['<rootDir>/tests/support/production-tfjs.ts'],
};
