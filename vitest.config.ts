import { defineConfig } from 'vitest/config'

/**
 * Two projects: unit and conformance tests run in parallel; integration and
 * end-to-end files (real server/agent processes, swtpm, SoftHSM) run one file
 * at a time, so they never compete for the CI runner's two cores.
 */
export default defineConfig({
  test: {
    testTimeout: 60_000,
    hookTimeout: 120_000,
    pool: 'forks',
    reporters: ['default'],
    projects: [
      { extends: true, test: { name: 'unit', include: ['test/unit/**/*.test.ts', 'test/conformance/**/*.test.ts'] } },
      { extends: true, test: { name: 'process', include: ['test/integration/**/*.test.ts', 'test/e2e/**/*.test.ts'], fileParallelism: false } },
    ],
  },
})
