import { afterEach, describe, expect, it } from 'vitest'
import type { StoredRevocation } from '../../../src/broker/contract.js'
import { NODE_ATTESTATION_NAMESPACE, SsfTransmitter } from '../../../src/broker/ssf-transmitter.js'
import { SsfStore } from '../../../src/broker/store/ssf-store.js'
import { announceNodeAssurance, announceReattestationRefused } from '../../../src/cli/broker-composition.js'
import { MemoryKeyManager } from '../../../src/keymanager/memory/index.js'
import { checkEvent, EVENT_TYPES } from '../../../src/signals/event-types.js'
import { captureLogger } from '../../helpers/capture-logger.js'

const RX = 'spiffe://example.org/secops/receiver'
const NODE = 'spiffe://example.org/warrant/agent/join_token/abc'
const cleanups: (() => unknown)[] = []
afterEach(async () => {
  for (const c of cleanups.splice(0).reverse()) await c()
})

async function transmitter() {
  const key = await new MemoryKeyManager().generateKey('tx', 'ec-p256')
  const store = SsfStore.open(':memory:')
  const tx = await SsfTransmitter.start({
    issuer: 'https://broker.example.org',
    store,
    signingKey: () => ({ key, kid: 'k1', alg: 'ES256' }),
    receivers: { ids: [RX], prefixes: [] },
    revocations: { onRevocation: () => () => undefined, listRevocations: () => Promise.resolve([] as StoredRevocation[]) },
    log: captureLogger(),
  })
  cleanups.push(
    () => tx.close(),
    () => store.close(),
  )
  const { stream_id } = tx.createStream(RX, { events_requested: [EVENT_TYPES.assuranceLevelChange] })
  const queued = () => store.pending(stream_id, 10).map((e) => JSON.parse(e.claims) as { sub_id: unknown; events: Record<string, Record<string, unknown>> })
  return { tx, queued }
}

describe('assurance-level-change for nodes', () => {
  it('a banned node: current none, previous its attestor, decrease, about the node (uri); a valid CAEP event', async () => {
    const { tx, queued } = await transmitter()
    await announceNodeAssurance({ find: async () => ({ banned: true, attestor: 'tpm' }) }, tx, NODE, captureLogger())
    const [set] = queued()
    expect(set!.sub_id).toEqual({ format: 'uri', uri: NODE })
    const e = set!.events[EVENT_TYPES.assuranceLevelChange]!
    expect(e).toMatchObject({ namespace: NODE_ATTESTATION_NAMESPACE, current_level: 'none', previous_level: 'tpm', change_direction: 'decrease' })
    expect(() => checkEvent(EVENT_TYPES.assuranceLevelChange, e)).not.toThrow()
  })

  it('an evicted node (gone): current none without a previous level; a node attested or changed otherwise: nothing', async () => {
    const { tx, queued } = await transmitter()
    await announceNodeAssurance({ find: async () => ({ banned: false, attestor: 'tpm' }) }, tx, NODE, captureLogger())
    expect(queued()).toEqual([])
    await announceNodeAssurance({ find: async () => undefined }, tx, NODE, captureLogger())
    const e = queued()[0]!.events[EVENT_TYPES.assuranceLevelChange]!
    expect(e).toMatchObject({ current_level: 'none', change_direction: 'decrease', reason_admin: { en: 'node evicted' } })
    expect(e).not.toHaveProperty('previous_level')
  })

  it('a datastore failure is logged, not thrown', async () => {
    const { tx, queued } = await transmitter()
    const log = captureLogger()
    await announceNodeAssurance(
      {
        find: async () => {
          throw new Error('db down')
        },
      },
      tx,
      NODE,
      log,
    )
    expect(queued()).toEqual([])
  })

  it('a refused re-attestation: current none, previous its attestor, decrease, initiated by the system, the reason naming the failed re-attestation', async () => {
    const { tx, queued } = await transmitter()
    announceReattestationRefused(
      tx,
      { agentId: NODE, attestor: 'tpm', nodeAttestor: 'tpm', reason: 'nodeattestor(tpm): quoted PCR values do not satisfy the required PCR policy' },
      captureLogger(),
    )
    const [set] = queued()
    expect(set!.sub_id).toEqual({ format: 'uri', uri: NODE })
    const e = set!.events[EVENT_TYPES.assuranceLevelChange]!
    expect(e).toMatchObject({
      namespace: NODE_ATTESTATION_NAMESPACE,
      current_level: 'none',
      previous_level: 'tpm',
      change_direction: 'decrease',
      initiating_entity: 'system',
      reason_admin: { en: 'node re-attestation refused (tpm): nodeattestor(tpm): quoted PCR values do not satisfy the required PCR policy' },
    })
    expect(() => checkEvent(EVENT_TYPES.assuranceLevelChange, e)).not.toThrow()
  })

  it('a transmitter that fails is logged, not thrown', () => {
    const log = captureLogger()
    announceReattestationRefused(
      {
        assuranceChanged: () => {
          throw new Error('store busy')
        },
      },
      { agentId: NODE, attestor: 'tpm', nodeAttestor: 'tpm', reason: 'x' },
      log,
    )
    expect(log.lines).toContainEqual(expect.objectContaining({ level: 'error', msg: 'Assurance level change not sent' }))
  })
})
