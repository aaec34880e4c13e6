/**
 * A node already attested here attests again and is refused: the server tells
 * its listeners (agent ID, attestor, the internal reason), once until the node
 * attests again, when the attestor named the node in its refusal (after a
 * proof that showed it). A refusal of a node never seen, an attempt that broke
 * off, a banned node's attempt or a claim that is not one of our agents is not
 * announced.
 */
import { beforeEach, describe, expect, it } from 'vitest'
import { IdentityError } from '../../../../src/errors/identity-error.js'
import { MemoryKeyManager } from '../../../../src/keymanager/memory/index.js'
import { errorPrefixing } from '../../../../src/plugin/catalog.js'
import type { NodeAttestationResult, ServerNodeAttestor } from '../../../../src/plugin/contracts.js'
import { NodeAttestationService, type ReattestationRefusal } from '../../../../src/server/attestation/service.js'
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
import { memoryAudit } from '../audit/memory-sink.js'

const td = TrustDomain.fromString('example.org')
const NODE = 'spiffe://example.org/warrant/agent/fake/node-1'
const NEVER_SEEN = 'spiffe://example.org/warrant/agent/fake/node-2'
const labelled = errorPrefixing<ServerNodeAttestor>(['attest'], 'ERR_NODE_ATTESTATION_FAILED')
const noChallenge = async (): Promise<Uint8Array> => {
  throw new Error('no challenge expected')
}

let ds: DataStore
let svc: NodeAttestationService
let m: ReturnType<typeof memoryAudit>
let result: (challenge: (c: Uint8Array) => Promise<Uint8Array>) => Promise<NodeAttestationResult>
let heard: ReattestationRefusal[]

const ok = async (): Promise<NodeAttestationResult> => ({ agentId: SpiffeId.fromString(NODE), selectorValues: ['pcr_policy:boot'], canReattest: true })
/** The attestor's refusal; naming `agentId` as the TPM attestor does once the proof showed the node. */
const refuse = (agentId?: string) => async (): Promise<NodeAttestationResult> => {
  throw new IdentityError('ERR_NODE_ATTESTATION_FAILED', 'quoted PCR values do not satisfy the required PCR policy', {
    ...(agentId !== undefined ? { details: { agent_id: agentId } } : {}),
  })
}

beforeEach(async () => {
  const clock = new FakeClock()
  ds = createMemoryDataStore({ clock })
  const log = captureLogger()
  const ca = new CaManager({
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
  result = ok
  const fake: ServerNodeAttestor = { attest: async (_p, challenge) => result(challenge) }
  m = memoryAudit()
  svc = new NodeAttestationService({
    trustDomain: td,
    ds,
    ca,
    registration,
    attestors: new Map([['fake', labelled(fake, 'nodeattestor(fake)')]]),
    clock,
    log,
    agentTtlMs: 600_000,
    audit: m.audit,
  })
  heard = []
  svc.onReattestationRefused((r) => heard.push(r))
})

const attest = async (o: { challenge?: (c: Uint8Array) => Promise<Uint8Array>; signal?: AbortSignal } = {}) =>
  svc.attest(
    { attestor: 'fake', payload: Uint8Array.of(0), csr: await createCsr({ privateKey: generateKeyPair('ec-p256').privateKey }) },
    o.challenge ?? noChallenge,
    { signal: o.signal ?? new AbortController().signal },
  )

describe('re-attestation refused', () => {
  it('an attested node the attestor names: announced once (agent ID, attestor, reason), again after it attested anew; the refusal audited with the node', async () => {
    await attest()
    result = refuse(NODE)
    await expect(attest()).rejects.toMatchObject({ code: 'ERR_NODE_ATTESTATION_FAILED' })
    expect(heard).toEqual([
      {
        agentId: NODE,
        attestor: 'fake',
        nodeAttestor: 'fake',
        code: 'ERR_NODE_ATTESTATION_FAILED',
        reason: 'nodeattestor(fake): quoted PCR values do not satisfy the required PCR policy',
      },
    ])
    // an agent retrying is not announced again
    await expect(attest()).rejects.toMatchObject({ code: 'ERR_NODE_ATTESTATION_FAILED' })
    expect(heard).toHaveLength(1)
    expect(m.sink.events.filter((e) => e.type === 'node_attestation.refused')).toEqual([
      {
        type: 'node_attestation.refused',
        outcome: 'refused',
        reason: 'ERR_NODE_ATTESTATION_FAILED',
        actor: { spiffe_id: NODE },
        node: NODE,
        attributes: { attestor: 'fake', reattestation: true },
      },
      expect.objectContaining({ node: NODE }),
    ])
    // the node attests again (its state restored): a later refusal is news again
    result = ok
    await attest()
    result = refuse(NODE)
    await expect(attest()).rejects.toMatchObject({ code: 'ERR_NODE_ATTESTATION_FAILED' })
    expect(heard).toHaveLength(2)
  })

  it('a node never seen here is not announced, whatever the attestor names; nor one whose claim cannot be one of our agents', async () => {
    result = refuse(NEVER_SEEN)
    await expect(attest()).rejects.toMatchObject({ code: 'ERR_NODE_ATTESTATION_FAILED' })
    await attest().catch(() => undefined)
    result = ok
    await attest()
    for (const claim of ['spiffe://other.org/warrant/agent/fake/node-1', 'spiffe://example.org/ns/web', 'not an id']) {
      result = refuse(claim)
      await expect(attest()).rejects.toMatchObject({ code: 'ERR_NODE_ATTESTATION_FAILED' })
    }
    // no claim at all: the server cannot tell whose attempt it was
    result = refuse()
    await expect(attest()).rejects.toMatchObject({ code: 'ERR_NODE_ATTESTATION_FAILED' })
    expect(heard).toEqual([])
    expect(m.sink.events.filter((e) => e.type === 'node_attestation.refused').every((e) => e.node === undefined)).toBe(true)
  })

  it('an attempt that broke off (the challenge round trip failed, the call was cancelled) or a banned node is not announced', async () => {
    await attest()
    // an attestor naming the node whatever happened: the service still tells a verdict from a broken exchange
    result = async (challenge) => {
      try {
        await challenge(Uint8Array.of(1))
      } catch (e) {
        throw new IdentityError('ERR_NODE_ATTESTATION_FAILED', 'no answer', { cause: e, details: { agent_id: NODE } })
      }
      return ok()
    }
    const gone = async (): Promise<Uint8Array> => {
      throw new IdentityError('ERR_NODE_ATTESTATION_FAILED', 'challenge response timed out')
    }
    await expect(attest({ challenge: gone })).rejects.toMatchObject({ code: 'ERR_NODE_ATTESTATION_FAILED' })
    const ac = new AbortController()
    result = async () => {
      ac.abort()
      return refuse(NODE)()
    }
    await expect(attest({ signal: ac.signal })).rejects.toMatchObject({ code: 'ERR_NODE_ATTESTATION_FAILED' })
    // a malformed proof is the caller's input, not a verdict on the node
    result = async () => {
      throw new IdentityError('ERR_ATTESTATION_PAYLOAD_INVALID', 'truncated', { details: { agent_id: NODE } })
    }
    await expect(attest()).rejects.toMatchObject({ code: 'ERR_ATTESTATION_PAYLOAD_INVALID' })
    expect(heard).toEqual([])
    await svc.ban(NODE)
    result = refuse(NODE)
    await expect(attest()).rejects.toMatchObject({ code: 'ERR_NODE_ATTESTATION_FAILED' })
    expect(heard).toEqual([])
  })

  it('a listener that throws does not change the refusal; unsubscribed listeners hear nothing', async () => {
    await attest()
    svc.onReattestationRefused(() => {
      throw new Error('listener bug')
    })
    const other: ReattestationRefusal[] = []
    const off = svc.onReattestationRefused((r) => other.push(r))
    off()
    result = refuse(NODE)
    await expect(attest()).rejects.toMatchObject({ code: 'ERR_NODE_ATTESTATION_FAILED', message: expect.stringContaining('PCR policy') })
    expect(heard).toHaveLength(1)
    expect(other).toEqual([])
    expect(await ds.nodes.find(NODE)).toMatchObject({ banned: false })
  })
})
