import 'reflect-metadata'
import { webcrypto } from 'node:crypto'
import { X509CertificateGenerator } from '@peculiar/x509'
import { beforeAll, describe, expect, it } from 'vitest'
import { createDpopNonces, createDpopProof, MemoryReplayCache, x5tS256 } from '../../../src/tokens/dpop.js'
import { ResourceRequestError, verifyResourceRequest, type ResourceRequest, type ResourceRequestOptions } from '../../../src/tokens/request.js'
import { actChain, AUDIENCE, dpopKey, ISSUER, NOW, testIssuer, type CryptoKeyPair, type TestIssuer } from './token-fixtures.js'

const URL_ = `${AUDIENCE}/tools/search`
let iss: TestIssuer
let holder: { keys: CryptoKeyPair; jkt: string }
let certDer: Uint8Array
let otherCertDer: Uint8Array

async function selfSigned(): Promise<Uint8Array> {
  const alg = { name: 'ECDSA', namedCurve: 'P-256', hash: 'SHA-256' }
  const k = await webcrypto.subtle.generateKey(alg, false, ['sign', 'verify'])
  const c = await X509CertificateGenerator.createSelfSigned({ serialNumber: '01', name: 'CN=agent', keys: k as never, signingAlgorithm: alg }, webcrypto)
  return new Uint8Array(c.rawData)
}

beforeAll(async () => {
  iss = await testIssuer()
  holder = await dpopKey()
  certDer = await selfSigned()
  otherCertDer = await selfSigned()
})

function opts(over: Partial<ResourceRequestOptions> = {}): ResourceRequestOptions {
  return {
    issuer: ISSUER,
    audience: AUDIENCE,
    keys: iss.cache(),
    nowSec: NOW,
    dpop: { replay: new MemoryReplayCache({ nowSec: () => NOW }), algorithms: ['ES256', 'PS256'] },
    ...over,
  }
}

async function dpopRequest(
  token: string,
  over: { method?: string; url?: string; proofKeys?: CryptoKeyPair; nonce?: string; ath?: string } = {},
): Promise<ResourceRequest> {
  const proof = await createDpopProof(over.proofKeys ?? holder.keys, {
    method: over.method ?? 'GET',
    url: over.url ?? URL_,
    accessToken: over.ath ?? token,
    nowSec: NOW,
    ...(over.nonce === undefined ? {} : { nonce: over.nonce }),
  })
  return { authorization: `DPoP ${token}`, dpop: proof, method: 'GET', url: URL_ }
}

async function refused(p: Promise<unknown>): Promise<ResourceRequestError> {
  try {
    await p
  } catch (err) {
    if (err instanceof ResourceRequestError) return err
    throw err
  }
  throw new Error('expected a refusal')
}

describe('verifyResourceRequest accepts', () => {
  it('a DPoP-bound token with its proof', async () => {
    const token = await iss.mint({ claims: { cnf: { jkt: holder.jkt } } })
    const v = await verifyResourceRequest(await dpopRequest(token), opts({ requiredScopes: ['tools:read'] }))
    expect(v.binding).toBe('dpop')
    expect(v.proof?.jkt).toBe(holder.jkt)
    expect(v.chain).toEqual([])
    expect(v.actor).toBeUndefined()
  })

  it('an mTLS-bound token over a connection with that certificate', async () => {
    const token = await iss.mint({ claims: { cnf: { 'x5t#S256': x5tS256(certDer) } } })
    const v = await verifyResourceRequest({ authorization: `Bearer ${token}`, dpop: undefined, method: 'GET', url: URL_, clientCertDer: certDer }, opts())
    expect(v.binding).toBe('mtls')
  })

  it('an unbound token as Bearer only when allowed', async () => {
    const token = await iss.mint()
    const v = await verifyResourceRequest({ authorization: `bearer ${token}`, dpop: undefined, method: 'GET', url: URL_ }, opts({ allowBearer: true }))
    expect(v.binding).toBe('bearer')
  })

  it('a delegated token, naming the actor and the chain', async () => {
    const token = await iss.mint({ claims: { cnf: { jkt: holder.jkt }, act: actChain(3) } })
    const v = await verifyResourceRequest(await dpopRequest(token), opts())
    expect(v.actor).toBe('spiffe://example.org/agent/sub-1')
    expect(v.chain).toEqual([1, 2, 3].map((i) => `spiffe://example.org/agent/sub-${i}`))
  })

  it('with nonces on: a proof carrying a valid nonce, and a fresh nonce for the response', async () => {
    const nonces = createDpopNonces({ windowSec: 60 })
    const token = await iss.mint({ claims: { cnf: { jkt: holder.jkt } } })
    const v = await verifyResourceRequest(await dpopRequest(token, { nonce: nonces.issue(NOW) }), opts({ dpop: { replay: new MemoryReplayCache(), nonces } }))
    expect(nonces.check(v.dpopNonce ?? '', NOW)).toBe(true)
  })
})

describe('verifyResourceRequest refuses, with the wire form', () => {
  it('no credentials: 401 with challenges and no error', async () => {
    for (const authorization of [undefined, '', 'Basic dXNlcjpwYXNz']) {
      const e = await refused(verifyResourceRequest({ authorization, dpop: undefined, method: 'GET', url: URL_ }, opts({ realm: 'rs' })))
      expect(e.status).toBe(401)
      expect(e.details?.['reason']).toBe('no_credentials')
      expect(e.wwwAuthenticate).toBe('DPoP realm="rs", algs="ES256 PS256"')
    }
    const e = await refused(verifyResourceRequest({ authorization: undefined, dpop: undefined, method: 'GET', url: URL_ }, opts({ allowBearer: true })))
    expect(e.wwwAuthenticate).toBe('DPoP algs="ES256 PS256", Bearer')
  })

  it('a malformed Authorization header: 400 invalid_request', async () => {
    for (const authorization of ['DPoP', 'DPoP a b', 'Bearer tok"en']) {
      const e = await refused(verifyResourceRequest({ authorization, dpop: undefined, method: 'GET', url: URL_ }, opts()))
      expect([e.status, e.code, e.error]).toEqual([400, 'ERR_REQUEST_MALFORMED', 'invalid_request'])
    }
  })

  it('an invalid token: 401 invalid_token on the DPoP challenge', async () => {
    const token = await iss.mint({ claims: { cnf: { jkt: holder.jkt }, iss: 'https://evil' } })
    const e = await refused(verifyResourceRequest(await dpopRequest(token), opts()))
    expect([e.status, e.code, e.details?.['reason']]).toEqual([401, 'ERR_ACCESS_TOKEN_INVALID', 'iss'])
    expect(e.wwwAuthenticate).toBe('DPoP error="invalid_token", algs="ES256 PS256"')
  })

  it('a DPoP-bound token without a proof, with two proofs, or with a proof by another key, for another URL, or without ath', async () => {
    const token = await iss.mint({ claims: { cnf: { jkt: holder.jkt } } })
    const good = await dpopRequest(token)
    const other = await dpopKey()
    const cases: [ResourceRequest, string][] = [
      [{ ...good, dpop: undefined }, 'missing'],
      [{ ...good, dpop: [good.dpop as string, good.dpop as string] }, 'multiple'],
      [await dpopRequest(token, { proofKeys: other.keys }), 'jkt'],
      [await dpopRequest(token, { url: `${AUDIENCE}/tools/delete` }), 'htu'],
      [await dpopRequest(token, { method: 'POST' }), 'htm'],
      [await dpopRequest(token, { ath: `${token}x` }), 'ath'],
    ]
    for (const [req, reason] of cases) {
      const e = await refused(verifyResourceRequest(req, opts()))
      expect([e.status, e.code, e.details?.['reason']]).toEqual([401, 'ERR_DPOP_PROOF_INVALID', reason])
      expect(e.wwwAuthenticate).toBe('DPoP error="invalid_dpop_proof", algs="ES256 PS256"')
    }
  })

  it('a replayed proof', async () => {
    const token = await iss.mint({ claims: { cnf: { jkt: holder.jkt } } })
    const req = await dpopRequest(token)
    const o = opts()
    await verifyResourceRequest(req, o)
    expect((await refused(verifyResourceRequest(req, o))).details?.['reason']).toBe('replay')
  })

  it('a DPoP-bound token sent as Bearer, and an unbound token sent as DPoP', async () => {
    const bound = await iss.mint({ claims: { cnf: { jkt: holder.jkt } } })
    const req = await dpopRequest(bound)
    const e = await refused(verifyResourceRequest({ ...req, authorization: `Bearer ${bound}` }, opts({ allowBearer: true })))
    expect([e.code, e.details?.['reason']]).toEqual(['ERR_ACCESS_TOKEN_INVALID', 'dpop_bound_as_bearer'])
    expect(e.wwwAuthenticate).toBe('Bearer error="invalid_token", DPoP algs="ES256 PS256"')
    const unbound = await iss.mint()
    const e2 = await refused(verifyResourceRequest(await dpopRequest(unbound), opts({ allowBearer: true })))
    expect(e2.details?.['reason']).toBe('not_dpop_bound')
  })

  it('an unbound token as Bearer when bearer is not allowed', async () => {
    const e = await refused(verifyResourceRequest({ authorization: `Bearer ${await iss.mint()}`, dpop: undefined, method: 'GET', url: URL_ }, opts()))
    expect([e.status, e.details?.['reason']]).toEqual([401, 'unbound'])
  })

  it('an mTLS-bound token without a client certificate or with another one', async () => {
    const token = await iss.mint({ claims: { cnf: { 'x5t#S256': x5tS256(certDer) } } })
    const base = { authorization: `Bearer ${token}`, dpop: undefined, method: 'GET', url: URL_ }
    expect((await refused(verifyResourceRequest(base, opts()))).details?.['reason']).toBe('mtls_certificate_missing')
    expect((await refused(verifyResourceRequest({ ...base, clientCertDer: otherCertDer }, opts()))).details?.['reason']).toBe('mtls_binding')
    // a token bound to both needs both
    const both = await iss.mint({ claims: { cnf: { jkt: holder.jkt, 'x5t#S256': x5tS256(certDer) } } })
    expect((await refused(verifyResourceRequest(await dpopRequest(both), opts()))).details?.['reason']).toBe('mtls_certificate_missing')
    await expect(verifyResourceRequest({ ...(await dpopRequest(both)), clientCertDer: certDer }, opts())).resolves.toMatchObject({ binding: 'dpop' })
  })

  it('a delegated token on a route that refuses delegation', async () => {
    const token = await iss.mint({ claims: { cnf: { jkt: holder.jkt }, act: actChain(1) } })
    expect((await refused(verifyResourceRequest(await dpopRequest(token), opts({ refuseDelegated: true })))).details?.['reason']).toBe('delegated')
  })

  it('missing scope: 403 insufficient_scope naming the route scopes', async () => {
    const token = await iss.mint({ claims: { cnf: { jkt: holder.jkt }, scope: 'tools:read' } })
    const e = await refused(verifyResourceRequest(await dpopRequest(token), opts({ requiredScopes: ['tools:write'] })))
    expect([e.status, e.code, e.error]).toEqual([403, 'ERR_SCOPE_INSUFFICIENT', 'insufficient_scope'])
    expect(e.wwwAuthenticate).toBe('DPoP error="insufficient_scope", scope="tools:write", algs="ES256 PS256"')
  })

  it('a missing or stale nonce: 401 use_dpop_nonce with a fresh DPoP-Nonce', async () => {
    const nonces = createDpopNonces({ windowSec: 60 })
    const token = await iss.mint({ claims: { cnf: { jkt: holder.jkt } } })
    for (const nonce of [undefined, nonces.issue(NOW - 61)]) {
      const e = await refused(
        verifyResourceRequest(await dpopRequest(token, nonce === undefined ? {} : { nonce }), opts({ dpop: { replay: new MemoryReplayCache(), nonces } })),
      )
      expect([e.status, e.code, e.error]).toEqual([401, 'ERR_DPOP_NONCE_REQUIRED', 'use_dpop_nonce'])
      expect(e.wwwAuthenticate).toContain('DPoP error="use_dpop_nonce"')
      expect(nonces.check(e.dpopNonce ?? '', NOW)).toBe(true)
    }
  })

  it('JWKS unreachable: 503 without a challenge; an unexpected error: 500 server_error', async () => {
    const token = await iss.mint({ claims: { cnf: { jkt: holder.jkt } } })
    const { JwksCache } = await import('../../../src/tokens/jwks-cache.js')
    const down = new JwksCache({
      fetchJwks: async () => {
        throw new Error('refused')
      },
      nowSec: () => NOW,
    })
    const e = await refused(verifyResourceRequest(await dpopRequest(token), opts({ keys: down })))
    expect([e.status, e.code, e.wwwAuthenticate]).toEqual([503, 'ERR_UNAVAILABLE', undefined])
    const broken = {
      remember: () => {
        throw new Error('bug')
      },
    }
    const e2 = await refused(verifyResourceRequest(await dpopRequest(token), opts({ dpop: { replay: broken } })))
    expect([e2.status, e2.code, e2.error]).toEqual([500, 'ERR_INTERNAL', 'server_error'])
  })
})
