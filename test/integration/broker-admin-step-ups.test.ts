import { join } from 'node:path'
import { afterAll, beforeAll, describe, expect, it } from 'vitest'
import { startBrokerAdminServer, type BrokerAdminServer } from '../../src/broker/admin/admin-server.js'
import { StepUps } from '../../src/broker/step-ups.js'
import { captureLogger } from '../helpers/capture-logger.js'
import { warrant } from '../helpers/e2e-cluster.js'
import { fakeService } from '../helpers/broker-http-fixtures.js'
import { tempDir } from '../helpers/temp.js'

/** The step-ups on the broker's admin socket, driven by `warrant signal step-ups` and `warrant signal clear-step-up` as a separate process. */

const tmp = tempDir('wbs-')
const stepUps = new StepUps({ log: captureLogger() })
let admin: BrokerAdminServer
let socket: string
const AGENT = 'spiffe://example.org/agents/a1'

beforeAll(async () => {
  socket = join(tmp.dir, 'private', 'broker-admin.sock')
  admin = await startBrokerAdminServer({ service: fakeService(), socketPath: socket, log: captureLogger(), stepUps })
})
afterAll(async () => {
  await admin?.close()
  tmp.cleanup()
})

describe('warrant signal step-ups and clear-step-up', () => {
  it('lists the step-ups standing, clears one as cli:<uid> with the reason, and refuses what is not there', async () => {
    const s = stepUps.add({
      target: 'prefix',
      value: 'spiffe://example.org/agents',
      clearOnApproval: true,
      notAfter: Math.floor(Date.now() / 1000) + 3600,
      signal: { issuer: 'https://idp.example', jti: 'jti-1', eventType: 'credential-change' },
      reason: 'signal credential-change jti-1 from https://idp.example (rule 0)',
    })
    stepUps.satisfy(AGENT, [s.id], { intentId: 'int-1', approver: 'alice' })
    const text = await warrant(['signal', 'step-ups', '--socket', socket])
    expect(text.code, text.stderr).toBe(0)
    expect(text.stdout).toContain('Found 1 step-up')
    expect(text.stdout).toContain('Target           : prefix spiffe://example.org/agents')
    expect(text.stdout).toContain('Signal           : credential-change jti-1 from https://idp.example')
    expect(text.stdout).toContain(`Satisfied        : ${AGENT} by intent int-1 (alice,`)

    expect((await warrant(['signal', 'clear-step-up', '--id', 'x1', '--socket', socket])).code).not.toBe(0)
    const unknown = await warrant(['signal', 'clear-step-up', '--id', '99', '--socket', socket])
    expect(unknown.code).not.toBe(0)
    expect(unknown.stderr).toContain('no step-up 99 in force')

    const cleared = await warrant(['signal', 'clear-step-up', '--id', String(s.id), '--reason', 'false positive', '--socket', socket, '--output', 'json'])
    expect(cleared.code, cleared.stderr).toBe(0)
    expect(JSON.parse(cleared.stdout)).toMatchObject({ id: s.id, cleared: { by: `cli:${process.getuid!()}`, reason: 'false positive' } })
    expect(stepUps.covering(['spiffe://example.org/agents/b2'])).toBeUndefined()
    const left = JSON.parse((await warrant(['signal', 'step-ups', '--socket', socket, '--output', 'json'])).stdout) as { step_ups: unknown[] }
    expect(left.step_ups).toEqual([])
    const all = JSON.parse((await warrant(['signal', 'step-ups', '--all', '--socket', socket, '--output', 'json'])).stdout) as { step_ups: { id: number }[] }
    expect(all.step_ups.map((x) => x.id)).toEqual([s.id])
  })
})
