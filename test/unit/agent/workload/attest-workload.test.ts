import { describe, expect, it } from 'vitest'
import { attestWorkload, type NamedWorkloadAttestor } from '../../../../src/agent/workload/attest-workload.js'
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
