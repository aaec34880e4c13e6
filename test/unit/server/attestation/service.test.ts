import { X509Certificate } from 'node:crypto'
import { beforeEach, describe, expect, it } from 'vitest'
import { IdentityError } from '../../../../src/errors/identity-error.js'
import { MemoryKeyManager } from '../../../../src/keymanager/memory/index.js'
import type { NodeAttestationResult, ServerNodeAttestor } from '../../../../src/plugin/contracts.js'
import { hashToken, joinTokenServer, tokenId } from '../../../../attestors/node/join-token/server.js'
import { errorPrefixing } from '../../../../src/plugin/catalog.js'
import { NodeAttestationService } from '../../../../src/server/attestation/service.js'
import { CaManager } from '../../../../src/server/ca/manager.js'
import { createMemoryDataStore } from '../../../../src/server/datastore/memory/index.js'
import type { DataStore, JoinToken } from '../../../../src/server/datastore/types.js'
import { RegistrationService } from '../../../../src/server/registration/service.js'
import { generateKeyPair, KeyObjectSigner } from '../../../../src/spiffe/key-signer.js'
import { SpiffeId } from '../../../../src/spiffe/spiffe-id.js'
import { TrustDomain } from '../../../../src/spiffe/trust-domain.js'
import { createCaCertificate, createX509Svid } from '../../../../src/spiffe/x509-svid/certificate-builder.js'
import { createCsr } from '../../../../src/spiffe/x509-svid/csr.js'
import { captureLogger } from '../../../helpers/capture-logger.js'
import { FakeClock } from '../../../helpers/fake-clock.js'
import { newEntry } from '../../../helpers/entries.js'

const td = TrustDomain.fromString('example.org')
const JOIN_TOKEN = 'join_token'
// As the catalog creates them: failures labelled nodeattestor(<name>).
const labelled = errorPrefixing<ServerNodeAttestor>(['attest'], 'ERR_NODE_ATTESTATION_FAILED')
const attestorsOver = (store: DataStore) =>
  new Map<string, ServerNodeAttestor>([
    [JOIN_TOKEN, labelled(joinTokenServer({ trustDomain: td, tokens: store.joinTokens, clock, log }), 'nodeattestor(join_token)')],
    ['fake', labelled(fake, 'nodeattestor(fake)')],
  ])
const MIN = 60_000
const AGENT_TTL = 10 * MIN
const opts = { signal: new AbortController().signal }
const noChallenge = async (): Promise<Uint8Array> => {
  throw new Error('no challenge expected')
}

let clock: FakeClock
let ds: DataStore
let log: ReturnType<typeof captureLogger>
let ca: CaManager
let reg: RegistrationService
let plugin: { result: () => Promise<NodeAttestationResult> }
let svc: NodeAttestationService

const fake: ServerNodeAttestor = {
  attest: async (payload, challenge) => {
    // echoes one challenge round to check the loop is wired through
    if (payload.length > 0 && payload[0] === 1) {
      const answer = await challenge(Uint8Array.of(42))
      if (answer[0] !== 43) throw new IdentityError('ERR_NODE_ATTESTATION_FAILED', 'wrong answer')
    }
    return plugin.result()
  },
}

const csr = async () => createCsr({ privateKey: generateKeyPair('ec-p256').privateKey })
const agentResult = (path = '/warrant/agent/fake/node-1', values = ['model:x', 'ek:1']): NodeAttestationResult => ({
  agentId: SpiffeId.fromString(`spiffe://example.org${path}`),
  selectorValues: values,
  canReattest: true,
})

beforeEach(async () => {
  clock = new FakeClock()
  ds = createMemoryDataStore({ clock })
  log = captureLogger()
  ca = new CaManager({
    trustDomain: td,
    keyManager: new MemoryKeyManager(),
    ds,
    clock,
    log,
    caTtlMs: 24 * 60 * MIN,
    caKeyType: 'ec-p256',
    jwtKeyType: 'ec-p256',
    refreshHintSeconds: 60,
  })
  await ca.init()
  reg = new RegistrationService({ ds, clock, log, limits: { trustDomain: td, maxX509TtlSeconds: 86_400, maxJwtTtlSeconds: 3_600 } })
  plugin = { result: async () => agentResult() }
  svc = new NodeAttestationService({ trustDomain: td, ds, ca, registration: reg, attestors: attestorsOver(ds), clock, log, agentTtlMs: AGENT_TTL })
})

async function attestJoin(token: string) {
  return svc.attest({ attestor: JOIN_TOKEN, payload: Buffer.from(token), csr: await csr() }, noChallenge, opts)
}
async function attestFake(payload: Uint8Array = Uint8Array.of(0), challenge: (c: Uint8Array) => Promise<Uint8Array> = noChallenge) {
  return svc.attest({ attestor: 'fake', payload, csr: await csr() }, challenge, opts)
}

describe('createJoinToken', () => {
  it('stores only the SHA-256 of the token, never the token', async () => {
    // the store is frozen: record what the service writes through a wrapping store
    const written: Omit<JoinToken, 'createdAt'>[] = []
    const inner = ds.joinTokens
    const recording: DataStore = {
      ...ds,
      joinTokens: {
        create: (t) => {
          written.push(structuredClone(t))
          return inner.create(t)
        },
        consume: (h) => inner.consume(h),
        pruneExpired: (n) => inner.pruneExpired(n),
        count: () => inner.count(),
      },
    }
    svc = new NodeAttestationService({
      trustDomain: td,
      ds: recording,
      ca,
      registration: reg,
      attestors: attestorsOver(recording),
      clock,
      log,
      agentTtlMs: AGENT_TTL,
    })
    const { token, expiresAt } = await svc.createJoinToken({})
    expect(token.length).toBeGreaterThanOrEqual(32)
    expect(expiresAt).toBe(clock.now() + 600_000)
    expect(written).toHaveLength(1)
    const stored = written[0]!
    expect(stored).toEqual({ tokenHash: hashToken(token), expiresAt, spiffeId: '' })
    expect(stored.tokenHash).toMatch(/^[0-9a-f]{64}$/)
    expect(JSON.stringify(stored)).not.toContain(token)
    expect(await ds.joinTokens.consume(token)).toBeUndefined()
    const rec = await ds.joinTokens.consume(hashToken(token))
    expect(rec?.tokenHash).toBe(hashToken(token))
    expect(JSON.stringify(rec)).not.toContain(token)
    expect(JSON.stringify(log.lines)).not.toContain(token)
  })

  it.each([
    { ttlSeconds: undefined, expected: 600 },
    { ttlSeconds: 0, expected: 600 },
    { ttlSeconds: 1, expected: 1 },
    { ttlSeconds: 30 * 86_400, expected: 30 * 86_400 },
  ])('TTL $ttlSeconds → $expected s', async ({ ttlSeconds, expected }) => {
    const { expiresAt } = await svc.createJoinToken(ttlSeconds === undefined ? {} : { ttlSeconds })
    expect(expiresAt).toBe(clock.now() + expected * 1000)
  })

  it.each([30 * 86_400 + 1, 1.5, -1, -600, Number.NaN, Number.POSITIVE_INFINITY])('refuses TTL %s with ERR_INVALID_ARGUMENT', async (ttlSeconds) => {
    await expect(svc.createJoinToken({ ttlSeconds })).rejects.toMatchObject({ code: 'ERR_INVALID_ARGUMENT' })
    expect(await ds.joinTokens.count()).toBe(0)
  })

  it.each([
    ['another trust domain', 'spiffe://other.org/ns/node', 'ERR_INVALID_ARGUMENT'],
    ['the trust domain ID', 'spiffe://example.org', 'ERR_INVALID_ARGUMENT'],
    ['a reserved /warrant/ path', 'spiffe://example.org/warrant/agent/x', 'ERR_INVALID_ARGUMENT'],
    ['not a SPIFFE ID', 'https://example.org/x', 'ERR_SPIFFE_ID_INVALID'],
  ])('refuses an alias spiffe_id in %s', async (_t, spiffeId, code) => {
    await expect(svc.createJoinToken({ spiffeId })).rejects.toMatchObject({ code })
    expect(await ds.joinTokens.count()).toBe(0)
  })
})

describe('attest with a join token', () => {
  it('issues an agent SVID for /warrant/agent/join_token/<32 hex>, records the node, single use', async () => {
    const { token } = await svc.createJoinToken({})
    const { node, chain } = await attestJoin(token)
    const id = tokenId(token)
    expect(id).toMatch(/^[0-9a-f]{32}$/)
    expect(node.agentId).toBe(`spiffe://example.org/warrant/agent/join_token/${id}`)
    expect(node.agentId).not.toContain(token)
    expect(node).toMatchObject({ attestor: JOIN_TOKEN, selectors: [{ type: 'join_token', value: id }], banned: false, canReattest: false, previousSerial: '' })
    const leaf = new X509Certificate(chain[0]!)
    expect(leaf.subjectAltName).toBe(`URI:${node.agentId}`)
    expect(node.serial).toBe(leaf.serialNumber.toLowerCase())
    expect(node.expiresAt).toBe(clock.now() + AGENT_TTL)
    expect(await ds.nodes.get(node.agentId)).toMatchObject({ serial: node.serial })
    expect(await reg.count({})).toBe(0) // no alias asked for
    await expect(attestJoin(token)).rejects.toMatchObject({ code: 'ERR_JOIN_TOKEN_INVALID' })
    expect(JSON.stringify(log.lines)).not.toContain(token)
  })

  it('creates the alias entry (parent: server, selector: the token ID)', async () => {
    const { token } = await svc.createJoinToken({ spiffeId: 'spiffe://example.org/nodes/edge-1' })
    const { node } = await attestJoin(token)
    const { entries } = await reg.list({}, {})
    expect(entries).toHaveLength(1)
    expect(entries[0]).toMatchObject({
      spiffeId: 'spiffe://example.org/nodes/edge-1',
      parentId: 'spiffe://example.org/warrant/server',
      selectors: node.selectors,
    })
    // workloads registered under the alias are authorized for the agent
    await reg.createEntries([
      newEntry({ spiffeId: 'spiffe://example.org/ns/w', parentId: 'spiffe://example.org/nodes/edge-1', selectors: [{ type: 'unix', value: 'uid:1' }] }),
    ])
    expect((await reg.authorizedEntries(node)).map((e) => e.spiffeId)).toEqual(['spiffe://example.org/ns/w'])
  })

  it.each([
    [
      'an expired token',
      async () => {
        const { token } = await svc.createJoinToken({ ttlSeconds: 60 })
        clock.advance(60_000)
        return token
      },
    ],
    ['a token never issued', async () => 'never-issued-token'],
    ['an empty token', async () => ''],
    ['an oversized token', async () => 'x'.repeat(257)],
  ])('refuses %s with ERR_JOIN_TOKEN_INVALID and records nothing', async (_t, make) => {
    const token = await make()
    await expect(attestJoin(token)).rejects.toMatchObject({ code: 'ERR_JOIN_TOKEN_INVALID', message: expect.stringMatching(/^nodeattestor\(join_token\): /) })
    expect(await ds.nodes.count()).toBe(0)
  })

  it('without a token-issuing attestor: CreateJoinToken is not configured and a join token is refused like any unknown attestor', async () => {
    svc = new NodeAttestationService({ trustDomain: td, ds, ca, registration: reg, attestors: new Map([['fake', fake]]), clock, log, agentTtlMs: AGENT_TTL })
    await expect(svc.createJoinToken({})).rejects.toMatchObject({ code: 'ERR_NOT_CONFIGURED' })
    const token = await joinTokenServer({ trustDomain: td, tokens: ds.joinTokens, clock, log }).issueToken({})
    await expect(attestJoin(token.token)).rejects.toMatchObject({ code: 'ERR_NODE_ATTESTATION_FAILED' })
    expect(await ds.nodes.count()).toBe(0)
    expect(await ds.joinTokens.count()).toBe(1) // not consumed
  })

  it('refuses two token-issuing attestors', () => {
    const jt = () => joinTokenServer({ trustDomain: td, tokens: ds.joinTokens, clock, log })
    expect(
      () =>
        new NodeAttestationService({
          trustDomain: td,
          ds,
          ca,
          registration: reg,
          attestors: new Map([
            ['a', jt()],
            ['b', jt()],
          ]),
          clock,
          log,
          agentTtlMs: AGENT_TTL,
        }),
    ).toThrow(expect.objectContaining({ code: 'ERR_CONFIG_INVALID' }))
  })

  it('a malformed CSR → ERR_CSR_INVALID, nothing recorded, the token not spent', async () => {
    const { token } = await svc.createJoinToken({})
    await expect(
      svc.attest({ attestor: JOIN_TOKEN, payload: Buffer.from(token), csr: Uint8Array.of(0x30, 0x03, 1, 2, 3) }, noChallenge, opts),
    ).rejects.toMatchObject({ code: 'ERR_CSR_INVALID' })
    await expect(svc.attest({ attestor: 'fake', payload: Uint8Array.of(0), csr: new Uint8Array(0) }, noChallenge, opts)).rejects.toMatchObject({
      code: 'ERR_CSR_INVALID',
    })
    expect(await ds.nodes.count()).toBe(0)
    expect(await ds.joinTokens.count()).toBe(1)
    await expect(attestJoin(token)).resolves.toBeDefined()
  })
})

describe('attest with a plugin', () => {
  it('prefixes selectors with the plugin name and runs the challenge loop', async () => {
    const sent: number[] = []
    const { node } = await attestFake(Uint8Array.of(1), async (c) => {
      sent.push(c[0]!)
      return Uint8Array.of(c[0]! + 1)
    })
    expect(sent).toEqual([42])
    expect(node).toMatchObject({
      agentId: 'spiffe://example.org/warrant/agent/fake/node-1',
      attestor: 'fake',
      canReattest: true,
    })
    expect(node.selectors).toHaveLength(2)
    expect(node.selectors).toEqual(
      expect.arrayContaining([
        { type: 'fake', value: 'model:x' },
        { type: 'fake', value: 'ek:1' },
      ]),
    )
  })

  it.each<{ title: string; thrown: unknown; code: string; message: string }>([
    {
      title: 'a coded verification failure',
      thrown: new IdentityError('ERR_TPM_VERIFICATION_FAILED', 'quote does not verify'),
      code: 'ERR_NODE_ATTESTATION_FAILED',
      message: 'nodeattestor(fake): quote does not verify',
    },
    { title: 'a plain Error', thrown: new Error('socket closed'), code: 'ERR_NODE_ATTESTATION_FAILED', message: 'nodeattestor(fake): socket closed' },
    {
      title: 'a payload error (keeps its code)',
      thrown: new IdentityError('ERR_ATTESTATION_PAYLOAD_INVALID', 'truncated'),
      code: 'ERR_ATTESTATION_PAYLOAD_INVALID',
      message: 'nodeattestor(fake): truncated',
    },
    {
      title: 'a TPM payload error (keeps its code)',
      thrown: new IdentityError('ERR_TPM_PAYLOAD_INVALID', 'bad TPMS_ATTEST'),
      code: 'ERR_TPM_PAYLOAD_INVALID',
      message: 'nodeattestor(fake): bad TPMS_ATTEST',
    },
  ])('wraps $title', async ({ thrown, code, message }) => {
    plugin.result = async () => {
      throw thrown
    }
    const err = await attestFake().catch((e: unknown) => e)
    expect(err).toBeInstanceOf(IdentityError)
    expect(err).toMatchObject({ code, message })
    const causes: unknown[] = []
    for (let c: unknown = (err as IdentityError).cause; c !== undefined; c = (c as Error).cause) causes.push(c)
    expect(causes).toContain(thrown)
    expect(await ds.nodes.count()).toBe(0)
  })

  it.each([
    ['outside /warrant/agent/', 'spiffe://example.org/ns/not-an-agent'],
    ['the server ID', 'spiffe://example.org/warrant/server'],
    ['another trust domain', 'spiffe://other.org/warrant/agent/fake/x'],
  ])('refuses an agent ID %s', async (_t, id) => {
    plugin.result = async () => ({ agentId: SpiffeId.fromString(id), selectorValues: [], canReattest: true })
    await expect(attestFake()).rejects.toMatchObject({ code: 'ERR_NODE_ATTESTATION_FAILED', message: expect.stringMatching(/^nodeattestor\(fake\): /) })
    expect(await ds.nodes.count()).toBe(0)
  })

  it.each([
    ['another trust domain', 'spiffe://other.org/nodes/x'],
    ['the trust domain ID', 'spiffe://example.org'],
    ['a reserved /warrant/ path', 'spiffe://example.org/warrant/server'],
  ])('refuses a node alias in %s and records nothing', async (_t, alias) => {
    plugin.result = async () => ({ ...agentResult(), nodeAlias: SpiffeId.fromString(alias) })
    await expect(attestFake()).rejects.toMatchObject({ code: 'ERR_NODE_ATTESTATION_FAILED', message: expect.stringMatching(/node alias/) })
    expect(await ds.nodes.count()).toBe(0)
    expect(await reg.count({})).toBe(0)
  })

  it('refuses an attestor that is not configured', async () => {
    await expect(svc.attest({ attestor: 'tpm', payload: Uint8Array.of(0), csr: await csr() }, noChallenge, opts)).rejects.toMatchObject({
      code: 'ERR_NODE_ATTESTATION_FAILED',
    })
    expect(svc.attestorNames()).toEqual([JOIN_TOKEN, 'fake'])
  })

  it('re-attestation replaces the node record; a banned node cannot re-attest', async () => {
    const first = await attestFake()
    const second = await attestFake()
    expect(second.node.serial).not.toBe(first.node.serial)
    expect(await ds.nodes.count()).toBe(1)
    await svc.ban(second.node.agentId)
    await expect(attestFake()).rejects.toMatchObject({ code: 'ERR_AGENT_BANNED' })
    expect(await ds.nodes.get(second.node.agentId)).toMatchObject({ banned: true, serial: '' })
  })
})

describe('authenticate', () => {
  async function foreignAgentSvid(): Promise<Uint8Array[]> {
    const kp = generateKeyPair('ec-p256')
    const signer = new KeyObjectSigner(kp.privateKey)
    const now = clock.now()
    const root = await createCaCertificate({
      trustDomain: td,
      publicKey: kp.publicKey,
      signer,
      notBefore: new Date(now - MIN),
      notAfter: new Date(now + 60 * MIN),
    })
    const leaf = await createX509Svid({
      spiffeId: SpiffeId.fromString('spiffe://example.org/warrant/agent/fake/node-1'),
      publicKey: generateKeyPair('ec-p256').publicKey,
      signer,
      issuer: { certificate: root },
      notBefore: new Date(now - MIN),
      notAfter: new Date(now + 10 * MIN),
    })
    return [leaf]
  }

  it.each<{ title: string; chain: () => Promise<Uint8Array[] | undefined>; code: string }>([
    { title: 'no certificate', chain: async () => undefined, code: 'ERR_UNAUTHENTICATED' },
    { title: 'an empty chain', chain: async () => [], code: 'ERR_UNAUTHENTICATED' },
    { title: 'garbage', chain: async () => [Uint8Array.of(1, 2, 3)], code: 'ERR_UNAUTHENTICATED' },
    { title: 'an agent SVID from another CA', chain: foreignAgentSvid, code: 'ERR_UNAUTHENTICATED' },
    {
      title: 'a workload (non-agent) SVID of our CA',
      chain: async () =>
        (await ca.signX509Svid({ spiffeId: SpiffeId.fromString('spiffe://example.org/ns/web'), publicKey: generateKeyPair('ec-p256').publicKey, ttlMs: MIN }))
          .chain,
      code: 'ERR_UNAUTHENTICATED',
    },
    {
      title: 'an agent SVID of our CA with no node record (evicted)',
      chain: async () =>
        (
          await ca.signX509Svid({
            spiffeId: SpiffeId.fromString('spiffe://example.org/warrant/agent/fake/ghost'),
            publicKey: generateKeyPair('ec-p256').publicKey,
            ttlMs: MIN,
          })
        ).chain,
      code: 'ERR_AGENT_EVICTED',
    },
  ])('rejects $title → $code', async ({ chain, code }) => {
    await attestFake() // a real node exists
    await expect(svc.authenticate(await chain())).rejects.toMatchObject({ code })
  })

  it('refuses RenewAgent for an agent whose attestor can attest again: it must re-attest (fresh TPM quote)', async () => {
    const a = await attestFake()
    const node = await svc.authenticate(a.chain)
    await expect(svc.renew(node, await csr())).rejects.toMatchObject({ code: 'ERR_REATTESTATION_REQUIRED' })
    expect((await ds.nodes.get(a.node.agentId)).serial).toBe(a.node.serial)
  })

  it('accepts the current SVID; after renew the current and previous ones; an older one is superseded', async () => {
    const { token } = await svc.createJoinToken({})
    const a = await attestJoin(token)
    expect((await svc.authenticate(a.chain)).agentId).toBe(a.node.agentId)
    const node1 = await svc.authenticate(a.chain)
    const b = await svc.renew(node1, await csr())
    const node2 = await svc.authenticate(b)
    expect(node2).toMatchObject({ serial: new X509Certificate(b[0]!).serialNumber.toLowerCase(), previousSerial: a.node.serial })
    await expect(svc.authenticate(a.chain)).resolves.toMatchObject({ agentId: a.node.agentId })
    await svc.renew(node2, await csr())
    await expect(svc.authenticate(a.chain)).rejects.toMatchObject({ code: 'ERR_AGENT_EVICTED' })
    await expect(svc.authenticate(b)).resolves.toBeDefined()
  })

  it('rejects an SVID from before a re-attestation', async () => {
    const a = await attestFake()
    await attestFake()
    await expect(svc.authenticate(a.chain)).rejects.toMatchObject({ code: 'ERR_AGENT_EVICTED' })
  })

  it('rejects an evicted agent and a banned one', async () => {
    const a = await attestFake()
    await svc.evict(a.node.agentId)
    await expect(svc.authenticate(a.chain)).rejects.toMatchObject({ code: 'ERR_AGENT_EVICTED' })
    const b = await attestFake()
    await svc.ban(b.node.agentId)
    await expect(svc.authenticate(b.chain)).rejects.toMatchObject({ code: 'ERR_AGENT_BANNED' })
  })

  it('rejects an expired agent SVID', async () => {
    const a = await attestFake()
    clock.advance(AGENT_TTL + 1000)
    await expect(svc.authenticate(a.chain)).rejects.toMatchObject({ code: 'ERR_UNAUTHENTICATED' })
  })

  it.each(['spiffe://example.org/ns/web', 'spiffe://other.org/warrant/agent/x'])('evict/ban refuse %s with ERR_INVALID_ARGUMENT', async (id) => {
    await expect(svc.evict(id)).rejects.toMatchObject({ code: 'ERR_INVALID_ARGUMENT' })
    await expect(svc.ban(id)).rejects.toMatchObject({ code: 'ERR_INVALID_ARGUMENT' })
  })
})
