/**
 * Node attestation's audit events: an acceptance with the agent SVID's serial
 * and expiry, a refusal with its code (never the evidence: no join token, no
 * CSR, no selector value), both durable before the agent is answered; an
 * acceptance that cannot be audited is refused and records nothing. Agent SVID
 * renewals are `x509_svid.issued` events, durable before the new SVID is used.
 */
import { X509Certificate } from 'node:crypto'
import { beforeEach, describe, expect, it, vi } from 'vitest'
import { joinTokenServer } from '../../../../attestors/node/join-token/server.js'
import { IdentityError } from '../../../../src/errors/identity-error.js'
import { MemoryKeyManager } from '../../../../src/keymanager/memory/index.js'
import { errorPrefixing } from '../../../../src/plugin/catalog.js'
import type { NodeAttestationResult, ServerNodeAttestor } from '../../../../src/plugin/contracts.js'
import { NodeAttestationService } from '../../../../src/server/attestation/service.js'
import { CaManager } from '../../../../src/server/ca/manager.js'
import { createMemoryDataStore } from '../../../../src/server/datastore/memory/index.js'
import type { DataStore } from '../../../../src/server/datastore/types.js'
import { RegistrationService } from '../../../../src/server/registration/service.js'
import { generateKeyPair } from '../../../../src/spiffe/key-signer.js'
import { SpiffeId } from '../../../../src/spiffe/spiffe-id.js'
import { TrustDomain } from '../../../../src/spiffe/trust-domain.js'
import { createCsr } from '../../../../src/spiffe/x509-svid/csr.js'
import { captureLogger } from '../../../helpers/capture-logger.js'
import { FakeClock } from '../../../helpers/fake-clock.js'
import { expectNoSecrets, memoryAudit } from '../audit/memory-sink.js'

const td = TrustDomain.fromString('example.org')
const AGENT = 'spiffe://example.org/warrant/agent/fake/node-1'
const AGENT_TTL = 600_000
const opts = { signal: new AbortController().signal }
const noChallenge = async (): Promise<Uint8Array> => {
  throw new Error('no challenge expected')
}
const labelled = errorPrefixing<ServerNodeAttestor>(['attest'], 'ERR_NODE_ATTESTATION_FAILED')

let clock: FakeClock
let ds: DataStore
let ca: CaManager
let m: ReturnType<typeof memoryAudit>
let svc: NodeAttestationService
let result: () => Promise<NodeAttestationResult>

beforeEach(async () => {
  clock = new FakeClock()
  ds = createMemoryDataStore({ clock })
  const log = captureLogger()
  ca = new CaManager({
    trustDomain: td,
    keyManager: new MemoryKeyManager(),
    ds,
    clock,
    log,
    caTtlMs: 86_400_000,
    caKeyType: 'ec-p256',
    jwtKeyType: 'ec-p256',
    refreshHintSeconds: 60,
  })
  await ca.init()
  const registration = new RegistrationService({ ds, clock, log, limits: { trustDomain: td, maxX509TtlSeconds: 86_400, maxJwtTtlSeconds: 3_600 } })
  result = async () => ({ agentId: SpiffeId.fromString(AGENT), selectorValues: ['serial:SECRET-SELECTOR-VALUE'], canReattest: false })
  const fake: ServerNodeAttestor = { attest: async () => result() }
  const attestors = new Map<string, ServerNodeAttestor>([
    ['join_token', labelled(joinTokenServer({ trustDomain: td, tokens: ds.joinTokens, clock, log }), 'nodeattestor(join_token)')],
    ['fake', labelled(fake, 'nodeattestor(fake)')],
  ])
  m = memoryAudit()
  svc = new NodeAttestationService({ trustDomain: td, ds, ca, registration, attestors, clock, log, agentTtlMs: AGENT_TTL, audit: m.audit })
})

const csr = () => createCsr({ privateKey: generateKeyPair('ec-p256').privateKey })
const attest = async (attestor: string, payload: Uint8Array = Uint8Array.of(0)) => svc.attest({ attestor, payload, csr: await csr() }, noChallenge, opts)

describe('node attestation audit', () => {
  it('accepted: the agent, the attestor, the SVID serial and not_after, the selector count; no evidence', async () => {
    const out = await attest('fake')
    const leaf = new X509Certificate(out.chain[0]!)
    expect(m.sink.events).toEqual([
      {
        type: 'node_attestation.accepted',
        outcome: 'success',
        actor: { spiffe_id: AGENT },
        subject: AGENT,
        node: AGENT,
        attributes: {
          attestor: 'fake',
          serial: leaf.serialNumber.toLowerCase(),
          not_after: new Date(out.node.expiresAt).toISOString(),
          selectors: 1,
          can_reattest: false,
        },
      },
    ])
    expectNoSecrets(m.sink.events, 'SECRET-SELECTOR-VALUE')
  })

  it('refused: the code of the refusal and the attestor, never the join token', async () => {
    const token = 'a-join-token-that-was-never-issued-0123456789'
    await expect(attest('join_token', Buffer.from(token))).rejects.toMatchObject({ code: 'ERR_JOIN_TOKEN_INVALID' })
    expect(m.sink.events).toEqual([
      { type: 'node_attestation.refused', outcome: 'refused', reason: 'ERR_JOIN_TOKEN_INVALID', attributes: { attestor: 'join_token' } },
    ])
    expectNoSecrets(m.sink.events, token)
  })

  it('refused: a plugin failure is ERR_NODE_ATTESTATION_FAILED; an attestor name that is not configured is "unknown"', async () => {
    result = () => Promise.reject(new Error('quote signature invalid'))
    await expect(attest('fake')).rejects.toMatchObject({ code: 'ERR_NODE_ATTESTATION_FAILED' })
    await expect(attest('eyJhbGciOiJub25lIn0.eyJ4IjoxfQ.')).rejects.toMatchObject({ code: 'ERR_NODE_ATTESTATION_FAILED' })
    expect(m.sink.events.map((e) => [e.type, e.outcome, e.reason, e.attributes?.attestor])).toEqual([
      ['node_attestation.refused', 'refused', 'ERR_NODE_ATTESTATION_FAILED', 'fake'],
      ['node_attestation.refused', 'refused', 'ERR_NODE_ATTESTATION_FAILED', 'unknown'],
    ])
    expect(await m.lost()).toBe(0)
  })

  it('refused: a banned agent is named (actor and node); a fault of the server is outcome error', async () => {
    await attest('fake')
    await svc.ban(AGENT)
    await expect(attest('fake')).rejects.toMatchObject({ code: 'ERR_AGENT_BANNED' })
    expect(m.sink.events.at(-1)).toEqual({
      type: 'node_attestation.refused',
      outcome: 'refused',
      reason: 'ERR_AGENT_BANNED',
      actor: { spiffe_id: AGENT },
      node: AGENT,
      attributes: { attestor: 'fake' },
    })
    await svc.evict(AGENT)
    vi.spyOn(ca, 'signX509Svid').mockRejectedValueOnce(new Error('signer gone'))
    await expect(attest('fake')).rejects.toThrow('signer gone')
    expect(m.sink.events.at(-1)).toMatchObject({ type: 'node_attestation.refused', outcome: 'error', reason: 'ERR_INTERNAL', node: AGENT })
  })

  it('the agent is answered only once the event is durable (acceptance and refusal)', async () => {
    for (const fail of [false, true]) {
      if (fail) result = () => Promise.reject(new IdentityError('ERR_NODE_ATTESTATION_FAILED', 'no'))
      m.sink.hold()
      let settled = false
      const p = attest('fake').then(
        () => (settled = true),
        () => (settled = true),
      )
      await new Promise((r) => setTimeout(r, 20))
      expect(settled).toBe(false)
      m.sink.release()
      await p
      expect(settled).toBe(true)
    }
    expect(m.sink.events.map((e) => e.type)).toEqual(['node_attestation.accepted', 'node_attestation.refused'])
  })

  it('an acceptance that cannot be audited is refused with ERR_AUDIT_UNAVAILABLE and records no node', async () => {
    m.sink.failing = true
    await expect(attest('fake')).rejects.toMatchObject({ code: 'ERR_AUDIT_UNAVAILABLE' })
    expect(await ds.nodes.find(AGENT)).toBeUndefined()
    expect(await m.lost()).toBe(1) // the acceptance; no refusal is attempted for the audit's own failure
  })

  it('join_token.created: the expiry and the alias, never the token; not handed out when it cannot be audited', async () => {
    const t = await svc.createJoinToken({ ttlSeconds: 60, spiffeId: 'spiffe://example.org/nodes/edge-1' })
    expect(m.sink.events).toEqual([
      {
        type: 'join_token.created',
        outcome: 'success',
        subject: 'spiffe://example.org/nodes/edge-1',
        attributes: { via: 'admin', expires_at: new Date(t.expiresAt).toISOString() },
      },
    ])
    expectNoSecrets(m.sink.events, t.token)
    m.sink.failing = true
    await expect(svc.createJoinToken({})).rejects.toMatchObject({ code: 'ERR_AUDIT_UNAVAILABLE' })
  })

  it('node.evicted and node.banned: the agent and its attestor, answered once durable', async () => {
    await attest('fake')
    m.sink.events.length = 0
    for (const op of [() => svc.evict(AGENT), () => svc.ban(AGENT)]) {
      m.sink.hold()
      let settled = false
      const p = op()
        .catch(() => undefined)
        .finally(() => (settled = true))
      await new Promise((r) => setTimeout(r, 20))
      expect(settled).toBe(false)
      m.sink.release()
      await p
      await attest('fake').catch(() => undefined)
    }
    expect(m.sink.events.filter((e) => e.type.startsWith('node.'))).toEqual([
      { type: 'node.evicted', outcome: 'success', subject: AGENT, node: AGENT, attributes: { via: 'admin', attestor: 'fake' } },
      { type: 'node.banned', outcome: 'success', subject: AGENT, node: AGENT, attributes: { via: 'admin', attestor: 'fake' } },
    ])
  })

  it('an agent SVID renewal is x509_svid.issued (kind agent), durable before the node takes the new serial', async () => {
    const { node } = await attest('fake')
    const chain = await svc.renew(node, await csr())
    const serial = new X509Certificate(chain[0]!).serialNumber.toLowerCase()
    expect(m.sink.events.at(-1)).toEqual({
      type: 'x509_svid.issued',
      outcome: 'success',
      actor: { spiffe_id: AGENT },
      subject: AGENT,
      node: AGENT,
      attributes: { kind: 'agent', serial, not_after: new Date(clock.now() + AGENT_TTL).toISOString() },
    })
    expect((await ds.nodes.get(AGENT)).serial).toBe(serial)
    m.sink.failing = true
    await expect(svc.renew(await ds.nodes.get(AGENT), await csr())).rejects.toMatchObject({ code: 'ERR_AUDIT_UNAVAILABLE' })
    expect((await ds.nodes.get(AGENT)).serial).toBe(serial)
    expectNoSecrets(m.sink.events)
  })
})
