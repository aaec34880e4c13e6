import { describe, expect, it } from 'vitest'
import { attestationReuseMs, attestWorkload, type NamedWorkloadAttestor } from '../../../../src/agent/workload/attest-workload.js'
import { UnixWorkloadAttestor } from '../../../../attestors/workload/unix/unix-attestor.js'
import { NAME_DB_RECHECK_MS } from '../../../../attestors/workload/unix/name-db.js'
import { nullLogger } from '../../../../src/common/log/logger.js'
import { IdentityError } from '../../../../src/errors/index.js'
import { captureLogger } from '../../../helpers/capture-logger.js'

const CALLER = { pid: 42, uid: 1000, gid: 1000, groups: [] }
const ok = (name: string, values: string[]): NamedWorkloadAttestor => ({ name, attestor: { attest: async () => values } })
const fail = (name: string): NamedWorkloadAttestor => ({
  name,
  attestor: {
    attest: async () => {
      throw new IdentityError('ERR_WORKLOAD_ATTESTATION_FAILED', `${name} broke`)
    },
  },
})

describe('attestWorkload', () => {
  it.each([
    { title: 'one attestor', attestors: [ok('unix', ['uid:1', 'gid:2'])], expected: ['unix:uid:1', 'unix:gid:2'], warns: 0 },
    { title: 'one attestor, duplicates dropped', attestors: [ok('unix', ['uid:1', 'gid:2', 'uid:1'])], expected: ['unix:uid:1', 'unix:gid:2'], warns: 0 },
    {
      title: 'one attestor, many values',
      attestors: [ok('unix', [...Array.from({ length: 40 }, (_, i) => `supplementary_gid:${i}`), 'supplementary_gid:3'])],
      expected: Array.from({ length: 40 }, (_, i) => `unix:supplementary_gid:${i}`),
      warns: 0,
    },
    {
      title: 'merged in attestor order, deduplicated',
      attestors: [ok('unix', ['uid:1', 'uid:1']), ok('docker', ['label:a:b'])],
      expected: ['unix:uid:1', 'docker:label:a:b'],
      warns: 0,
    },
    { title: 'one of two fails: the rest still count', attestors: [fail('k8s'), ok('unix', ['uid:1'])], expected: ['unix:uid:1'], warns: 1 },
  ])('$title', async ({ attestors, expected, warns }) => {
    const log = captureLogger()
    expect(await attestWorkload(CALLER, attestors, {}, log)).toEqual(expected)
    expect(log.lines.filter((l) => l.level === 'warn')).toHaveLength(warns)
  })

  it.each([
    { title: 'both of two', attestors: [fail('a'), fail('b')], logged: ['a', 'b'] },
    { title: 'the only one', attestors: [fail('a')], logged: ['a'] },
  ])('fails with ERR_WORKLOAD_ATTESTATION_FAILED when all attestors fail: $title', async ({ attestors, logged }) => {
    const log = captureLogger()
    await expect(attestWorkload(CALLER, attestors, {}, log)).rejects.toMatchObject({
      code: 'ERR_WORKLOAD_ATTESTATION_FAILED',
      cause: { message: 'a broke' },
    })
    expect(log.lines.filter((l) => l.fields.plugin_name !== undefined).map((l) => l.fields.plugin_name)).toEqual(logged)
  })

  it('passes the abort signal to every attestor', async () => {
    const ac = new AbortController()
    const seen: (AbortSignal | undefined)[] = []
    const spy: NamedWorkloadAttestor = { name: 'unix', attestor: { attest: async (_caller, o) => (seen.push(o.signal), []) } }
    await attestWorkload(CALLER, [spy], { signal: ac.signal }, captureLogger())
    expect(seen).toEqual([ac.signal])
  })

  it('throws TypeError with no attestors', async () => {
    await expect(attestWorkload(CALLER, [], {}, captureLogger())).rejects.toBeInstanceOf(TypeError)
  })
})

describe('attestationReuseMs', () => {
  const stable = (name: string, ms: number | undefined): NamedWorkloadAttestor => ({
    name,
    attestor: { attest: async () => [], ...(ms !== undefined ? { selectorsStableForMs: ms } : {}) },
  })
  it.each([
    { title: 'no attestors', attestors: [], ms: 0 },
    { title: 'one that says nothing', attestors: [stable('a', undefined)], ms: 0 },
    { title: 'one stable for 750 ms', attestors: [stable('a', 750)], ms: 750 },
    { title: 'the least of several', attestors: [stable('a', 750), stable('b', 200)], ms: 200 },
    { title: 'any that says nothing wins', attestors: [stable('a', 750), stable('b', undefined)], ms: 0 },
    { title: 'a negative value is 0', attestors: [stable('a', -5)], ms: 0 },
  ])('$title → $ms', ({ attestors, ms }) => {
    expect(attestationReuseMs(attestors)).toBe(ms)
  })

  it("the unix attestor declares its name lookups' own re-read interval", () => {
    const unix = new UnixWorkloadAttestor({ discoverWorkloadPath: true, workloadSizeLimit: -1, log: nullLogger })
    expect(unix.selectorsStableForMs).toBe(NAME_DB_RECHECK_MS)
  })
})
