// Mutation testing of the verification code: `npm run mutate` (not part of `npm test`).
// One group at a time: `WARRANT_MUTATE_GROUP=tpm npm run mutate`; without it every group runs.
// Each group mutates its files and runs only the unit tests listed for it
// (vitest.mutate.config.ts), and Stryker runs only the tests that cover each mutant.
// Accepted survivors and their reasons: test/mutation-survivors.md.

/** @type {Record<string, { mutate: string[]; tests: string[] }>} */
export const groups = {
  'tpm-verify': {
    mutate: ['src/tpm/verify/**/*.ts'],
    tests: ['test/unit/tpm/verify/**/*.test.ts', 'test/unit/attestors/tpm/server.test.ts'],
  },
  'node-attestors': {
    mutate: ['attestors/node/*/server.ts'],
    tests: ['test/unit/attestors/tpm/server.test.ts', 'test/unit/attestors/x509pop/**/*.test.ts'],
  },
  'spiffe-id': {
    mutate: ['src/spiffe/spiffe-id.ts', 'src/spiffe/trust-domain.ts', 'src/spiffe/match.ts'],
    tests: [
      'test/unit/spiffe/spiffe-id.test.ts',
      'test/unit/spiffe/trust-domain.test.ts',
      'test/unit/spiffe/match.test.ts',
      'test/unit/spiffe/properties.test.ts',
      'test/unit/spiffe/spiffe-id-reasons.test.ts',
    ],
  },
  'x509-svid': {
    mutate: ['src/spiffe/x509-svid/{certificate-fields,csr,der,pem,spki,svid-rules,verify,x509-svid}.ts'],
    tests: ['test/unit/spiffe/x509-svid/**/*.test.ts'],
  },
  'jwt-svid': {
    mutate: ['src/spiffe/jwt-svid/{jwt-svid,parse,validate-jwt-svid}.ts'],
    tests: ['test/unit/spiffe/jwt-svid/**/*.test.ts'],
  },
  bundle: {
    mutate: ['src/spiffe/bundle/{bundle-set,encoding,jwt-bundle,spiffe-bundle,x509-bundle}.ts'],
    tests: ['test/unit/spiffe/bundle/**/*.test.ts', 'test/unit/spiffe/properties.test.ts'],
  },
  bounds: {
    mutate: ['src/spiffe/bounds/{authorize,bounds,bounds-set,ceiling,document}.ts'],
    tests: ['test/unit/spiffe/bounds/**/*.test.ts'],
  },
}

const name = process.env.WARRANT_MUTATE_GROUP
if (name !== undefined && !(name in groups)) {
  throw new Error(`WARRANT_MUTATE_GROUP=${name}: not one of ${Object.keys(groups).join(', ')}`)
}
const selected = name === undefined ? Object.values(groups) : [groups[name]]

/** @type {import('@stryker-mutator/api/core').PartialStrykerOptions} */
export default {
  testRunner: 'vitest',
  vitest: { configFile: 'vitest.mutate.config.ts', related: false },
  coverageAnalysis: 'perTest',
  mutate: [...new Set(selected.flatMap((g) => g.mutate))],
  // Two cores are shared: one test runner beside Stryker's own process.
  concurrency: 1,
  timeoutMS: 20_000,
  // Mutants of module-level constants need every test of the group re-run in a
  // fresh module graph (about half the run time for a sixth of the mutants);
  // WARRANT_MUTATE_STATIC=1 includes them.
  ignoreStatic: process.env.WARRANT_MUTATE_STATIC !== '1',
  // Only what the unit tests import goes into the sandbox; node_modules is symlinked.
  ignorePatterns: ['/build', '/bench', '/native', '/dist', '/coverage', '/.warrant', '/test/e2e', '/test/integration', '/scripts', '/proto', '*.log'],
  // WARRANT_MUTATE_INCREMENTAL=1 reuses the previous run's results for unchanged
  // code and tests. It can keep a stale "survived" for a mutant that a new test
  // kills, so the recorded scores come from full runs.
  incremental: process.env.WARRANT_MUTATE_INCREMENTAL === '1',
  incrementalFile: `reports/mutation/${name ?? 'all'}.incremental.json`,
  reporters: ['clear-text', 'progress', 'html'],
  htmlReporter: { fileName: `reports/mutation/${name ?? 'all'}.html` },
  clearTextReporter: { allowColor: false, logTests: false, maxTestsToLog: 0, reportScoreTable: true, reportMutants: true },
  thresholds: { high: 90, low: 80, break: null },
  tempDirName: '.stryker-tmp',
  cleanTempDir: 'always',
}
