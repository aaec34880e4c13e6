/**
 * Push delivery (RFC 8935) between the broker's SSF transmitter and receiver,
 * wired in memory: the transmitter's push transport hands each POST to the
 * receiver's `receivePush`, as the HTTPS route does.
 */
import { afterEach, describe, expect, it } from 'vitest'
import type { RevocationRequest, StoredRevocation } from '../../../src/broker/contract.js'
import { signJwt } from '../../../src/broker/mint.js'
import { configurationUrl, SsfReceiver, type SsfTransport } from '../../../src/broker/ssf-receiver.js'
import { POLL_DELIVERY, PUSH_DELIVERY, SsfTransmitter, type SetPushTransport } from '../../../src/broker/ssf-transmitter.js'
import { SsfStore } from '../../../src/broker/store/ssf-store.js'
import { isIdentityError } from '../../../src/errors/identity-error.js'
import { MemoryKeyManager } from '../../../src/keymanager/memory/index.js'
import { parseSignalPolicy } from '../../../src/signals/policy.js'
import { buildSet, SET_TYP } from '../../../src/signals/set.js'
import { EVENT_TYPES } from '../../../src/signals/event-types.js'
import { captureLogger } from '../../helpers/capture-logger.js'
import type { Narrowing } from '../../../src/broker/narrowings.js'

const TX = 'https://tx-broker.example.org'
const ME = 'spiffe://example.org/warrant/broker'
const MY_ISSUER = 'https://rx-broker.example.org'
const A1 = 'spiffe://example.org/agents/ci/i-1'
const A2 = 'spiffe://example.org/agents/ci/i-2'
const NOW = 1_800_000_000

const POLICY = parseSignalPolicy([{ event: ['credential-change'], match: { prefix: 'spiffe://example.org/agents/' }, action: 'revoke', level: 'instance' }])

const cleanups: (() => unknown)[] = []
afterEach(async () => {
  for (const c of cleanups.splice(0).reverse()) await c()
})

const until = async (what: string, cond: () => boolean) => {
  for (let i = 0; i < 300; i++) {
    if (cond()) return
    await new Promise((r) => setTimeout(r, 10))
  }
  throw new Error(`timed out waiting for ${what}`)
}

async function setup(
  o: {
    failPushes?: number
    authorization?: (given: string | undefined) => string | undefined
    push?: boolean
    policy?: ReturnType<typeof parseSignalPolicy>
    narrow?: (n: Narrowing) => Promise<void>
  } = {},
) {
  const key = await new MemoryKeyManager().generateKey('tx', 'ec-p256')
  const jwks = { keys: [{ ...key.publicKey.export({ format: 'jwk' }), kid: 'k1', alg: 'ES256' }] }
  const entries: StoredRevocation[] = []
  const subs = new Set<(e: StoredRevocation) => void>()
  const revokeAtTx = (value: string) => {
    const e: StoredRevocation = { seq: entries.length + 1, kind: 'instance', value, createdAt: NOW, expiresAt: NOW + 3600, createdBy: 'admin' }
    entries.push(e)
    for (const f of subs) f(e)
  }
  let rx: SsfReceiver | undefined
  let failures = o.failPushes ?? 0
  const pushed: { url: string; receiver: string; status: number }[] = []
  const pushTransport: SetPushTransport = {
    push: async (url, set, target) => {
      if (failures > 0) {
        failures--
        throw new Error('connection refused')
      }
      const path = url.slice(`${MY_ISSUER}/ssf/push/`.length)
      const auth = o.authorization ? o.authorization(target.authorization) : target.authorization
      const r = await rx!.receivePush(path, auth, set)
      pushed.push({ url, receiver: target.receiver, status: r.status })
      return { status: r.status, body: r.body }
    },
  }
  const txStore = SsfStore.open(':memory:')
  const tx = await SsfTransmitter.start({
    issuer: TX,
    store: txStore,
    signingKey: () => ({ key, kid: 'k1', alg: 'ES256' }),
    receivers: { ids: [ME], prefixes: [] },
    revocations: {
      onRevocation: (fn: (e: StoredRevocation) => void) => (subs.add(fn), () => subs.delete(fn)),
      listRevocations: (since = 0) => Promise.resolve(entries.filter((e) => e.seq > since)),
    },
    log: captureLogger(),
    now: () => NOW * 1000,
    pollWaitMs: 50,
    pushRetryMs: 5,
    ...(o.push === false ? {} : { push: pushTransport }),
  })
  cleanups.push(() => tx.close())
  const transport: SsfTransport = {
    getJson: async (url) => {
      if (url === configurationUrl(TX)) return tx.configuration()
      if (url === `${TX}/jwks`) return jwks
      throw new Error(`unexpected GET ${url}`)
    },
    getJsonStatus: async (url) => {
      const id = new URL(url).searchParams.get('stream_id')
      try {
        return { status: 200, body: tx.getStream(ME, id) }
      } catch (err) {
        if (isIdentityError(err, 'ERR_NOT_FOUND')) return { status: 404, body: undefined }
        throw err
      }
    },
    postJson: async (url, body) => {
      if (url === `${TX}/ssf/streams`) return { status: 201, body: tx.createStream(ME, body) }
      throw new Error(`unexpected POST ${url}`)
    },
  }
  const revoked: RevocationRequest[] = []
  const rxStore = SsfStore.open(':memory:')
  const log = captureLogger()
  rx = new SsfReceiver({
    transmitters: [{ issuer: TX, delivery: 'push' }],
    audience: ME,
    tokenIssuer: MY_ISSUER,
    policy: o.policy ?? POLICY,
    revoke: async (r) => void revoked.push(r),
    ...(o.narrow ? { narrow: o.narrow } : {}),
    store: rxStore,
    transport,
    log,
    now: () => NOW * 1000,
    retryMs: 5,
  })
  cleanups.push(() => rx.close())
  const sign = (claims: Record<string, unknown>) => signJwt(claims, { signer: key, kid: 'k1', alg: 'ES256', typ: SET_TYP })
  return { tx, txStore, rx, rxStore, revokeAtTx, revoked, pushed, sign, log }
}

describe('SSF push delivery (RFC 8935)', () => {
  it('the receiver creates a push stream to its own endpoint with a bearer secret it keeps only hashed; a revocation at the transmitter is pushed and applied here', async () => {
    const { tx, txStore, rx, rxStore, revokeAtTx, revoked, pushed } = await setup()
    expect(tx.configuration()['delivery_methods_supported']).toEqual([POLL_DELIVERY, PUSH_DELIVERY])
    rx.start()
    await until('the push stream', () => rxStore.getSubscription(TX) !== undefined)
    const sub = rxStore.getSubscription(TX)!
    expect(sub.pollUrl).toBe('')
    expect(sub.pushPath).toMatch(/^[0-9a-f]{32}$/)
    const stream = tx.getStream(ME, sub.streamId)
    expect(stream.delivery).toEqual({ method: PUSH_DELIVERY, endpoint_url: `${MY_ISSUER}/ssf/push/${sub.pushPath}` })
    // the secret is not in the receiver's store nor in the stream configuration handed back
    expect(JSON.stringify(stream)).not.toMatch(/Bearer/)
    const held = txStore.getStream(sub.streamId)!.pushAuthorization!
    expect(held).toMatch(/^Bearer [A-Za-z0-9_-]{43}$/)
    expect(JSON.stringify(sub)).not.toContain(held.slice('Bearer '.length))

    revokeAtTx(A1)
    await until('the push', () => revoked.length === 1)
    expect(revoked[0]).toEqual({ kind: 'instance', value: A1, reason: expect.stringMatching(/^signal credential-change /) })
    await until('the acknowledgement', () => txStore.queued(sub.streamId) === 0)
    expect(pushed).toEqual([{ url: `${MY_ISSUER}/ssf/push/${sub.pushPath}`, receiver: ME, status: 202 }])
    // a poll of a push stream is refused: its events have one way out
    await expect(tx.poll(ME, sub.streamId, {})).rejects.toMatchObject({ code: 'ERR_REQUEST_MALFORMED' })
  })

  it('retries a push that fails, in order, until the receiver accepts each', async () => {
    const { rx, rxStore, txStore, revokeAtTx, revoked } = await setup({ failPushes: 3 })
    rx.start()
    await until('the push stream', () => rxStore.getSubscription(TX) !== undefined)
    revokeAtTx(A1)
    revokeAtTx(A2)
    await until('both pushes', () => revoked.length === 2)
    expect(revoked.map((r) => r.value)).toEqual([A1, A2])
    expect(txStore.queued(rxStore.getSubscription(TX)!.streamId)).toBe(0)
  })

  it('refuses a push without the stream secret (401) and changes nothing; the event stays queued', async () => {
    const { rx, rxStore, txStore, revokeAtTx, revoked, pushed } = await setup({ authorization: (a) => (a === undefined ? undefined : `${a}x`) })
    rx.start()
    await until('the push stream', () => rxStore.getSubscription(TX) !== undefined)
    revokeAtTx(A1)
    await until('a refused push', () => pushed.length >= 2)
    expect(pushed.every((p) => p.status === 401)).toBe(true)
    expect(revoked).toEqual([])
    expect(txStore.queued(rxStore.getSubscription(TX)!.streamId)).toBe(1)
    expect(rxStore.listReceived()).toEqual([])
  })

  it('answers 404 for an unknown path and 401 without the secret, and does nothing', async () => {
    const { rx, rxStore, revoked } = await setup()
    rx.start()
    await until('the push stream', () => rxStore.getSubscription(TX) !== undefined)
    const sub = rxStore.getSubscription(TX)!
    expect((await rx.receivePush('0'.repeat(32), undefined, 'x')).status).toBe(404)
    expect((await rx.receivePush(sub.pushPath!, 'Bearer wrong', 'a.b.c')).status).toBe(401)
    expect((await rx.receivePush(sub.pushPath!, undefined, 'a.b.c')).status).toBe(401)
    expect(revoked).toEqual([])
  })

  it('handles pushed SETs with the same checks as polled ones: forged signature and wrong audience refused with their err, a replay acknowledged once', async () => {
    const { rx, rxStore, txStore, sign, revoked } = await setup({ push: true })
    rx.start()
    await until('the push stream', () => rxStore.getSubscription(TX) !== undefined)
    const sub = rxStore.getSubscription(TX)!
    const auth = txStore.getStream(sub.streamId)!.pushAuthorization!
    const claims = (aud: string) =>
      buildSet({
        issuer: TX,
        audience: aud,
        eventType: EVENT_TYPES.credentialChange,
        event: { event_timestamp: NOW, credential_type: 'x509', change_type: 'revoke' },
        subject: { format: 'uri', uri: A2 },
        nowSec: NOW,
      }) as unknown as Record<string, unknown>
    const good = await sign(claims(ME))
    expect(await rx.receivePush(sub.pushPath!, auth, good)).toEqual({ status: 202 })
    expect(await rx.receivePush(sub.pushPath!, auth, good)).toEqual({ status: 202 })
    expect(revoked.map((r) => r.value)).toEqual([A2])
    const other = await new MemoryKeyManager().generateKey('evil', 'ec-p256')
    const forged = await signJwt(claims(ME), { signer: other, kid: 'k1', alg: 'ES256', typ: SET_TYP })
    expect(await rx.receivePush(sub.pushPath!, auth, forged)).toMatchObject({ status: 400, body: { err: 'invalid_key' } })
    const elsewhere = await sign(claims('spiffe://example.org/someone-else'))
    expect(await rx.receivePush(sub.pushPath!, auth, elsewhere)).toMatchObject({ status: 400, body: { err: 'invalid_audience' } })
    expect(await rx.receivePush(sub.pushPath!, auth, 'not-a-jwt')).toMatchObject({ status: 400, body: { err: 'invalid_request' } })
    expect(revoked.map((r) => r.value)).toEqual([A2])
  })

  it('refuses push streams without a push transport, to a non-https endpoint, or with a multi-line authorization header', async () => {
    const { tx } = await setup({ push: false })
    expect(tx.configuration()['delivery_methods_supported']).toEqual([POLL_DELIVERY])
    expect(() => tx.createStream(ME, { delivery: { method: PUSH_DELIVERY, endpoint_url: `${MY_ISSUER}/ssf/push/x` } })).toThrow(/delivery method/)
    const { tx: tx2 } = await setup()
    expect(() => tx2.createStream(ME, { delivery: { method: PUSH_DELIVERY, endpoint_url: 'http://rx.example.org/push' } })).toThrow(/https/)
    expect(() => tx2.createStream(ME, { delivery: { method: PUSH_DELIVERY, endpoint_url: 'https://u:p@rx.example.org/push' } })).toThrow(/https/)
    expect(() =>
      tx2.createStream(ME, { delivery: { method: PUSH_DELIVERY, endpoint_url: 'https://rx.example.org/push', authorization_header: 'Bearer a\r\nX-Evil: 1' } }),
    ).toThrow(/authorization_header/)
    expect(() => tx2.createStream(ME, { delivery: { method: 'urn:example:carrier-pigeon' } })).toThrow(/delivery method/)
  })

  it("a narrow rule records a narrowing for the subject's prefix, for the rule's duration; without a narrowing sink the signal is recorded as failed", async () => {
    const policy = parseSignalPolicy([
      { event: 'credential-change', match: { prefix: 'spiffe://example.org/agents/' }, action: 'narrow', scopes: ['read'], duration: '1h' },
    ])
    const got: Narrowing[] = []
    const { rx, rxStore, revokeAtTx, revoked } = await setup({ policy, narrow: async (n) => void got.push(n) })
    rx.start()
    await until('the push stream', () => rxStore.getSubscription(TX) !== undefined)
    revokeAtTx(A1)
    await until('the narrowing', () => got.length === 1)
    expect(got[0]).toEqual({ prefix: A1, scopes: ['read'], notAfter: NOW + 3600, reason: expect.stringMatching(/^signal credential-change /) })
    expect(revoked).toEqual([])
    await until('the record', () => rxStore.listReceived().length === 1)
    expect(rxStore.listReceived()[0]).toMatchObject({ outcome: 'applied', decision: { action: 'narrow', prefix: A1, scopes: ['read'] } })

    const { rx: rx2, rxStore: rxStore2, revokeAtTx: revoke2 } = await setup({ policy })
    rx2.start()
    await until('the push stream', () => rxStore2.getSubscription(TX) !== undefined)
    revoke2(A2)
    await until('the record', () => rxStore2.listReceived().length === 1)
    expect(rxStore2.listReceived()[0]!.outcome).toBe('failed: ERR_REVOCATION_INVALID')
  })

  it('ceilingNarrowed queues a CAEP token-claims-change about the prefix on streams that asked for it, with the scopes left', async () => {
    const { tx, txStore, rx, rxStore } = await setup()
    rx.start()
    await until('the push stream', () => rxStore.getSubscription(TX) !== undefined)
    const streamId = rxStore.getSubscription(TX)!.streamId
    expect(tx.getStream(ME, streamId).events_delivered).toContain(EVENT_TYPES.tokenClaimsChange)
    tx.close() // stop pushing, so the event stays queued to be read
    const streams = tx.ceilingNarrowed({ prefix: A1, scopes: ['read', 'list'], notAfter: NOW + 60, reason: 'signal x' })
    expect(streams).toEqual([streamId])
    const [e] = txStore.pending(streamId, 10)
    const claims = JSON.parse(e!.claims) as { sub_id: unknown; events: Record<string, Record<string, unknown>> }
    expect(claims.sub_id).toEqual({ format: 'uri', uri: A1 })
    expect(claims.events[EVENT_TYPES.tokenClaimsChange]).toMatchObject({
      initiating_entity: 'policy',
      claims: { scope: 'read list' },
      warrant_narrowing: { prefix: A1, not_after: NOW + 60 },
    })
  })
})
