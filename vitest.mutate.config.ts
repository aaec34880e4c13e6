import { defineConfig } from 'vitest/config'
import { groups } from './stryker.config.mjs'

/**
 * The unit tests that `npm run mutate` (stryker.config.mjs) runs against
 * mutants: those of WARRANT_MUTATE_GROUP, or of every group.
 */
const name = process.env.WARRANT_MUTATE_GROUP
const selected = name === undefined ? Object.values(groups) : [groups[name as keyof typeof groups]!]

export default defineConfig({
  test: {
    include: [...new Set(selected.flatMap((g) => g.tests))],
    testTimeout: 60_000,
    reporters: ['default'],
  },
})
