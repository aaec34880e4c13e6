import { readFileSync } from 'node:fs'
import { describe, expect, it } from 'vitest'
import { ERROR_CODES } from '../../src/errors/codes.js'

const readme = readFileSync(new URL('../../README.md', import.meta.url), 'utf8')
const pkg = JSON.parse(readFileSync(new URL('../../package.json', import.meta.url), 'utf8')) as { scripts: Record<string, string> }

describe('README', () => {
  it('lists every error code', () => {
    const missing = Object.keys(ERROR_CODES).filter((c) => !readme.includes(`\`${c}\``))
    expect(missing).toEqual([])
  })

  it('names only npm scripts that exist', () => {
    const used = [...readme.matchAll(/npm run ([a-z:-]+)/g)].map((m) => m[1]!)
    expect(used.length).toBeGreaterThan(0)
    expect(used.filter((s) => !(s in pkg.scripts))).toEqual([])
  })

  it('names only benchmarks that exist', () => {
    const benches = [...readme.matchAll(/^\| `([a-z0-9-]+)` \| `[a-z0-9_]+`/gm)].map((m) => m[1]!)
    expect(benches.length).toBeGreaterThanOrEqual(5)
    for (const b of benches) expect(() => readFileSync(new URL(`../../bench/${b}.ts`, import.meta.url))).not.toThrow()
  })
})
