import { generateKeyPair } from 'jose'
import { describe, expect, it } from 'vitest'
import { EVENT_TYPES, type SetEventType } from '../../../src/signals/event-types.js'
import { buildSet, MemorySetReplayCache, setReplayKey, signSet, verifySet, type VerifySetOptions } from '../../../src/signals/set.js'
import { streamSubject, subjectFor } from '../../../src/signals/subject.js'
import { JwksCache } from '../../../src/tokens/jwks-cache.js'
import { AGENT, NOW, RECEIVER, testTransmitter, TRANSMITTER } from './signal-fixtures.js'

const b64 = (v: unknown): string => Buffer.from(JSON.stringify(v)).toString('base64url')

async function setup() {
  const tx = await testTransmitter()
  const replay = new MemorySetReplayCache({ nowSec: () => NOW })
  const verify = (t: string, extra: Partial<VerifySetOptions> = {}) =>
    verifySet(t, { issuer: TRANSMITTER, audience: RECEIVER, keys: tx.cache(), replay, nowSec: NOW, ...extra })
  return { tx, replay, verify }
}

const refusal = async (p: Promise<unknown>): Promise<[string, unknown]> => {
  try {
    await p
  } catch (e) {
    const err = e as { code: string; details?: { reason?: unknown } }
    return [err.code, err.details?.reason]
  }
  throw new Error('expected a refusal')
}

describe('verifySet', () => {
  it('accepts a valid SET and reads its event and subject', async () => {
    const { tx, verify } = await setup()
    const s = await verify(await tx.sign({ claims: { txn: 'cause-1', toe: NOW - 5, unknown_claim: { ignored: true } } }))
    expect(s.eventType).toBe(EVENT_TYPES.credentialCompromise)
    expect(s.event.credential_type).toBe('x509')
    expect(s.agent).toEqual({ spiffeId: AGENT })
    expect(s.kid).toBe(tx.kid)
    expect(s.claims.txn).toBe('cause-1')
  })

  it('accepts an aud array naming this receiver, any of several receiver audiences, and the media-type typ', async () => {
    const { tx, verify } = await setup()
    await expect(verify(await tx.sign({ claims: { aud: ['https://other.example/', RECEIVER] } }))).resolves.toBeDefined()
    await expect(verify(await tx.sign({ claims: { aud: 'rx-2' } }), { audience: ['rx-1', 'rx-2'] })).resolves.toBeDefined()
    await expect(verify(await tx.sign({ header: { typ: 'application/secevent+jwt' } }))).resolves.toBeDefined()
  })

  it("reads warrant's complex subject: SPIFFE ID, instance, task and token", async () => {
    const { tx, verify } = await setup()
    const sub_id = subjectFor({ spiffeId: AGENT, instanceId: 'inst-7', taskId: 'task-3', token: { iss: 'https://broker.example.org', jti: 'j-1' } })
    const s = await verify(await tx.sign({ claims: { sub_id } }))
    expect(s.agent).toEqual({ spiffeId: AGENT, instanceId: 'inst-7', taskId: 'task-3', token: { iss: 'https://broker.example.org', jti: 'j-1' } })
  })

  it('builds, signs and verifies every supported event type', async () => {
    const { tx, verify } = await setup()
    const { privateKey, publicKey } = await generateKeyPair('ES256')
    const jwk = { ...(await (await import('jose')).exportJWK(publicKey)), kid: 'b1', alg: 'ES256' }
    const keys = new JwksCache({ fetchJwks: async () => ({ keys: [jwk] }), nowSec: () => NOW })
    const cases: [SetEventType, Record<string, unknown>, ReturnType<typeof subjectFor>][] = [
      [EVENT_TYPES.sessionRevoked, { initiating_entity: 'policy', reason_admin: { en: 'anomaly' }, event_timestamp: NOW }, subjectFor({ spiffeId: AGENT })],
      [EVENT_TYPES.credentialChange, { credential_type: 'x509', change_type: 'revoke', x509_serial: '0a' }, subjectFor({ spiffeId: AGENT })],
      [EVENT_TYPES.tokenClaimsChange, { claims: { scope: 'repo:read' } }, subjectFor({ spiffeId: AGENT, taskId: 't' })],
      [
        EVENT_TYPES.assuranceLevelChange,
        { namespace: 'warrant-attestation', current_level: 'none', previous_level: 'tpm', change_direction: 'decrease' },
        subjectFor({ spiffeId: AGENT }),
      ],
      [EVENT_TYPES.credentialCompromise, { credential_type: 'x509', confidence: 0.9 }, subjectFor({ spiffeId: AGENT })],
      [EVENT_TYPES.verification, { state: 'abc' }, streamSubject('stream-1')],
      [EVENT_TYPES.streamUpdated, { status: 'paused', reason: 'maintenance' }, streamSubject('stream-1')],
    ]
    for (const [eventType, event, subject] of cases) {
      const claims = buildSet({ issuer: TRANSMITTER, audience: RECEIVER, eventType, event, subject, nowSec: NOW, txn: 'x' })
      const s = await verify(await signSet(claims, { key: privateKey, kid: 'b1', alg: 'ES256' }), { keys })
      expect(s.eventType).toBe(eventType)
      expect(s.claims.jti).toBe(claims.jti)
    }
    const stream = await verify(
      await signSet(buildSet({ issuer: TRANSMITTER, audience: RECEIVER, eventType: EVENT_TYPES.verification, subject: streamSubject('s-9'), nowSec: NOW }), {
        key: privateKey,
        kid: 'b1',
        alg: 'ES256',
      }),
      { keys },
    )
    expect(stream.agent).toEqual({ streamId: 's-9' })
    expect(tx).toBeDefined()
  })

  it('buildSet refuses what verifySet would refuse', () => {
    const base = { issuer: TRANSMITTER, audience: RECEIVER, subject: subjectFor({ spiffeId: AGENT }), nowSec: NOW }
    expect(() => buildSet({ ...base, eventType: EVENT_TYPES.credentialChange, event: { credential_type: 'x509' } })).toThrow(
      expect.objectContaining({ code: 'ERR_SET_INVALID' }),
    )
    expect(() => buildSet({ ...base, eventType: EVENT_TYPES.verification })).toThrow(expect.objectContaining({ code: 'ERR_SET_INVALID' }))
    expect(() => subjectFor({})).toThrow(TypeError)
  })

  type Case = [title: string, make: (tx: Awaited<ReturnType<typeof testTransmitter>>) => Promise<string> | string, code: string, reason: string]
  const future = NOW + 31
  const refused: Case[] = [
    ['empty', () => '', 'ERR_SET_INVALID', 'missing'],
    ['too large', () => `a.${'b'.repeat(20_000)}.c`, 'ERR_SET_INVALID', 'too_large'],
    ['not a compact JWS', () => 'not-a-jws', 'ERR_SET_INVALID', 'malformed'],
    [
      'unsigned (alg none, empty signature)',
      () => `${b64({ alg: 'none', typ: 'secevent+jwt' })}.${b64({ iss: TRANSMITTER })}.`,
      'ERR_SET_INVALID',
      'malformed',
    ],
    [
      'alg none with a signature',
      (tx) => `${b64({ alg: 'none', typ: 'secevent+jwt', kid: tx.kid })}.${b64({ iss: TRANSMITTER })}.AAAA`,
      'ERR_SET_KEY_INVALID',
      'alg',
    ],
    ['undecodable header', () => 'e30x.e30.AAAA', 'ERR_SET_INVALID', 'malformed'],
    ['symmetric alg (HS256)', (tx) => tx.sign({ header: { alg: 'HS256' }, key: new Uint8Array(32) }), 'ERR_SET_KEY_INVALID', 'alg'],
    ['no typ', (tx) => tx.sign({ header: { typ: undefined } }), 'ERR_SET_INVALID', 'typ'],
    ['typ JWT', (tx) => tx.sign({ header: { typ: 'JWT' } }), 'ERR_SET_INVALID', 'typ'],
    ['typ of an access token', (tx) => tx.sign({ header: { typ: 'at+jwt' } }), 'ERR_SET_INVALID', 'typ'],
    ['no kid', (tx) => tx.sign({ header: { kid: undefined } }), 'ERR_SET_KEY_INVALID', 'kid'],
    ['unknown kid', (tx) => tx.sign({ header: { kid: 'nope' } }), 'ERR_SET_KEY_INVALID', 'kid_unknown'],
    ['embedded jwk', async (tx) => tx.sign({ header: { jwk: tx.jwks.keys[0] } }), 'ERR_SET_KEY_INVALID', 'header_key'],
    ['jku', (tx) => tx.sign({ header: { jku: 'https://evil.example/jwks' } }), 'ERR_SET_KEY_INVALID', 'header_key'],
    [
      'signed by another key under the same kid',
      async (tx) => tx.sign({ key: (await generateKeyPair('ES256')).privateKey }),
      'ERR_SET_KEY_INVALID',
      'signature',
    ],
    [
      'payload changed after signing',
      async (tx) => {
        const [h, , s] = (await tx.sign()).split('.')
        return `${h}.${b64({ iss: TRANSMITTER, aud: RECEIVER, iat: NOW, jti: 'x', sub_id: { format: 'uri', uri: AGENT }, events: {} })}.${s}`
      },
      'ERR_SET_KEY_INVALID',
      'signature',
    ],
    ['wrong issuer', (tx) => tx.sign({ claims: { iss: 'https://evil.example' } }), 'ERR_SET_ISSUER_INVALID', 'iss'],
    ['no issuer', (tx) => tx.sign({ claims: { iss: undefined } }), 'ERR_SET_ISSUER_INVALID', 'iss'],
    ['wrong audience', (tx) => tx.sign({ claims: { aud: 'https://other.example/' } }), 'ERR_SET_AUDIENCE_INVALID', 'aud'],
    ['audience array without this receiver', (tx) => tx.sign({ claims: { aud: ['a', 'b'] } }), 'ERR_SET_AUDIENCE_INVALID', 'aud'],
    ['no audience', (tx) => tx.sign({ claims: { aud: undefined } }), 'ERR_SET_AUDIENCE_INVALID', 'aud'],
    ['a sub claim', (tx) => tx.sign({ claims: { sub: AGENT } }), 'ERR_SET_INVALID', 'sub_present'],
    ['an exp claim', (tx) => tx.sign({ claims: { exp: NOW + 60 } }), 'ERR_SET_INVALID', 'exp_present'],
    ['no iat', (tx) => tx.sign({ claims: { iat: undefined } }), 'ERR_SET_INVALID', 'iat'],
    ['iat in the future', (tx) => tx.sign({ claims: { iat: future } }), 'ERR_SET_INVALID', 'iat_future'],
    ['iat older than the window', (tx) => tx.sign({ claims: { iat: NOW - 86_401 } }), 'ERR_SET_INVALID', 'iat_too_old'],
    ['no jti', (tx) => tx.sign({ claims: { jti: undefined } }), 'ERR_SET_INVALID', 'jti'],
    ['txn not a string', (tx) => tx.sign({ claims: { txn: 7 } }), 'ERR_SET_INVALID', 'txn'],
    ['no events', (tx) => tx.sign({ claims: { events: undefined } }), 'ERR_SET_INVALID', 'events'],
    ['empty events', (tx) => tx.sign({ claims: { events: {} } }), 'ERR_SET_INVALID', 'events_count'],
    [
      'two events',
      (tx) => tx.sign({ claims: { events: { [EVENT_TYPES.sessionRevoked]: {}, [EVENT_TYPES.credentialCompromise]: { credential_type: 'x509' } } } }),
      'ERR_SET_INVALID',
      'events_count',
    ],
    ['unknown event type', (tx) => tx.sign({ claims: { events: { 'https://example.com/evil': {} } } }), 'ERR_SET_INVALID', 'event_type'],
    ['event not an object', (tx) => tx.sign({ claims: { events: { [EVENT_TYPES.sessionRevoked]: 'x' } } }), 'ERR_SET_INVALID', 'event'],
    [
      'credential-change without change_type',
      (tx) => tx.sign({ claims: { events: { [EVENT_TYPES.credentialChange]: { credential_type: 'x509' } } } }),
      'ERR_SET_INVALID',
      'event_claim_missing',
    ],
    [
      'credential-change with an unknown change_type',
      (tx) => tx.sign({ claims: { events: { [EVENT_TYPES.credentialChange]: { credential_type: 'x509', change_type: 'explode' } } } }),
      'ERR_SET_INVALID',
      'event_claim',
    ],
    [
      'credential-compromise without credential_type',
      (tx) => tx.sign({ claims: { events: { [EVENT_TYPES.credentialCompromise]: {} } } }),
      'ERR_SET_INVALID',
      'event_claim_missing',
    ],
    [
      'token-claims-change without claims',
      (tx) => tx.sign({ claims: { events: { [EVENT_TYPES.tokenClaimsChange]: {} } } }),
      'ERR_SET_INVALID',
      'event_claim_missing',
    ],
    [
      'assurance-level-change without current_level',
      (tx) => tx.sign({ claims: { events: { [EVENT_TYPES.assuranceLevelChange]: { namespace: 'NIST-AAL' } } } }),
      'ERR_SET_INVALID',
      'event_claim_missing',
    ],
    ['confidence above 1', (tx) => tx.sign({ claims: { events: { [EVENT_TYPES.sessionRevoked]: { confidence: 1.5 } } } }), 'ERR_SET_INVALID', 'event_claim'],
    [
      'unknown initiating_entity',
      (tx) => tx.sign({ claims: { events: { [EVENT_TYPES.sessionRevoked]: { initiating_entity: 'martian' } } } }),
      'ERR_SET_INVALID',
      'event_claim',
    ],
    [
      'stream-updated with an unknown status',
      (tx) => tx.sign({ claims: { sub_id: { format: 'opaque', id: 's' }, events: { [EVENT_TYPES.streamUpdated]: { status: 'gone' } } } }),
      'ERR_SET_INVALID',
      'event_claim',
    ],
    ['no sub_id', (tx) => tx.sign({ claims: { sub_id: undefined } }), 'ERR_SET_INVALID', 'sub_id'],
    ['sub_id without format', (tx) => tx.sign({ claims: { sub_id: { uri: AGENT } } }), 'ERR_SET_INVALID', 'sub_id'],
    ['uri subject that is not a URI', (tx) => tx.sign({ claims: { sub_id: { format: 'uri', uri: 'not a uri' } } }), 'ERR_SET_INVALID', 'sub_id'],
    ['opaque subject without id', (tx) => tx.sign({ claims: { sub_id: { format: 'opaque' } } }), 'ERR_SET_INVALID', 'sub_id'],
    ['jwt_id subject without jti', (tx) => tx.sign({ claims: { sub_id: { format: 'jwt_id', iss: TRANSMITTER } } }), 'ERR_SET_INVALID', 'sub_id'],
    ['complex subject without members', (tx) => tx.sign({ claims: { sub_id: { format: 'complex' } } }), 'ERR_SET_INVALID', 'sub_id'],
    [
      'complex subject nested in a complex subject',
      (tx) => tx.sign({ claims: { sub_id: { format: 'complex', user: { format: 'complex', device: { format: 'opaque', id: 'd' } } } } }),
      'ERR_SET_INVALID',
      'sub_id',
    ],
    [
      'verification event about a non-stream subject',
      (tx) => tx.sign({ claims: { events: { [EVENT_TYPES.verification]: { state: 's' } } } }),
      'ERR_SET_INVALID',
      'sub_id',
    ],
  ]

  it.each(refused)('refuses: %s', async (_title, make, code, reason) => {
    const { tx, verify } = await setup()
    expect(await refusal(verify(await make(tx)))).toEqual([code, reason])
  })

  it('refuses a signed payload that is not a JSON object', async () => {
    const { tx, verify } = await setup()
    expect(await refusal(verify(await tx.sign({ raw: '[1,2]' })))).toEqual(['ERR_SET_INVALID', 'payload'])
    expect(await refusal(verify(await tx.sign({ raw: '{"iss":' })))).toEqual(['ERR_SET_INVALID', 'payload'])
  })

  it('refuses a replayed SET, and a refused SET does not use up its jti', async () => {
    const { tx, verify, replay } = await setup()
    const good = await tx.sign({ claims: { jti: 'once' } })
    const wrongAud = await tx.sign({ claims: { jti: 'once', aud: 'elsewhere' } })
    expect((await refusal(verify(wrongAud)))[0]).toBe('ERR_SET_AUDIENCE_INVALID')
    await expect(verify(good)).resolves.toBeDefined()
    expect(await refusal(verify(good))).toEqual(['ERR_SET_REPLAYED', 'replay'])
    // the same jti re-signed is still a replay
    expect(await refusal(verify(await tx.sign({ claims: { jti: 'once' } })))).toEqual(['ERR_SET_REPLAYED', 'replay'])
    // a receiver that failed to apply it forgets it, and the retransmission is processed
    replay.forget(setReplayKey({ iss: TRANSMITTER, jti: 'once' }))
    await expect(verify(good)).resolves.toBeDefined()
  })

  it('refuses events outside the accepted types and complex subjects with a critical member it cannot process', async () => {
    const { tx, verify } = await setup()
    expect(await refusal(verify(await tx.sign(), { eventTypes: [EVENT_TYPES.sessionRevoked] }))).toEqual(['ERR_SET_INVALID', 'event_type'])
    const sub_id = { format: 'complex', application: { format: 'uri', uri: AGENT }, device: { format: 'email', email: 'x@example.com' } }
    expect(await refusal(verify(await tx.sign({ claims: { sub_id } }), { criticalSubjectMembers: ['device'] }))).toEqual(['ERR_SET_INVALID', 'sub_id_critical'])
    await expect(verify(await tx.sign({ claims: { sub_id } }), { criticalSubjectMembers: ['application'] })).resolves.toBeDefined()
  })

  it('passes ERR_UNAVAILABLE through when the JWKS cannot be fetched (nothing decided, nothing remembered)', async () => {
    const { tx, verify, replay } = await setup()
    const keys = new JwksCache({
      fetchJwks: () => Promise.reject(new Error('down')),
      nowSec: () => NOW,
    })
    expect((await refusal(verify(await tx.sign(), { keys })))[0]).toBe('ERR_UNAVAILABLE')
    expect(replay.size).toBe(0)
  })

  it('refuses a non-asymmetric algorithm list (programmer error)', async () => {
    const { tx, verify } = await setup()
    await expect(verify(await tx.sign(), { algorithms: ['HS256'] })).rejects.toThrow(RangeError)
  })
})

describe('MemorySetReplayCache', () => {
  it('remembers until expiry, refuses when full of live entries, and evicts expired ones', () => {
    let now = NOW
    const c = new MemorySetReplayCache({ maxEntries: 2, nowSec: () => now })
    expect(c.remember('a', NOW + 10)).toBe(true)
    expect(c.remember('a', NOW + 10)).toBe(false)
    expect(c.remember('b', NOW + 20)).toBe(true)
    expect(() => c.remember('c', NOW + 10)).toThrow(expect.objectContaining({ code: 'ERR_RESOURCE_EXHAUSTED' }))
    now = NOW + 11
    expect(c.remember('c', NOW + 30)).toBe(true)
    expect(c.remember('b', NOW + 40)).toBe(false)
    expect(() => new MemorySetReplayCache({ maxEntries: 0 })).toThrow(RangeError)
  })
})
