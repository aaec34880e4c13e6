import type * as grpc from '@grpc/grpc-js'
import { describe, expect, it } from 'vitest'
import { fromStruct, toStruct, toValue } from '../../../../src/agent/workload-api/struct.js'
import type { WorkloadUpdate } from '../../../../src/agent/workload-api/manager.js'
import {
  X509ResponseCache,
  jwtBundlesResponse,
  uniqueHints,
  workloadApiService,
  x509BundlesResponse,
  x509SvidResponse,
} from '../../../../src/agent/workload-api/workload-api.js'
import { loadProto } from '../../../../src/common/grpc/proto.js'

const u8 = (...b: number[]) => new Uint8Array(b)
const update: WorkloadUpdate = {
  identities: [
    { spiffeId: 'spiffe://a.test/one', x509Svid: [u8(1, 2), u8(3)], x509SvidKey: u8(9), hint: 'h' },
    { spiffeId: 'spiffe://a.test/two', x509Svid: [u8(4)], x509SvidKey: u8(8), hint: 'h' },
    { spiffeId: 'spiffe://a.test/three', x509Svid: [u8(5)], x509SvidKey: u8(7), hint: '' },
  ],
  trustDomainId: 'spiffe://a.test',
  bundle: { x509: u8(0xaa), jwks: '{"keys":[]}' },
  federatedBundles: new Map([['spiffe://b.test', { x509: u8(0xbb), jwks: '{"keys":[{"kty":"EC"}]}' }]]),
}

describe('Workload API response builders', () => {
  it('X509SVIDResponse: concatenated chain, first duplicate hint wins, local bundle per SVID, federated map', () => {
    const r = x509SvidResponse(update)
    expect(r.svids.map((s) => s.spiffe_id)).toEqual(['spiffe://a.test/one', 'spiffe://a.test/three'])
    expect([...r.svids[0]!.x509_svid]).toEqual([1, 2, 3])
    expect([...r.svids[0]!.x509_svid_key]).toEqual([9])
    expect([...r.svids[1]!.bundle]).toEqual([0xaa])
    expect(Object.fromEntries(Object.entries(r.federated_bundles).map(([k, v]) => [k, [...v]]))).toEqual({ 'spiffe://b.test': [0xbb] })
  })

  it('X509BundlesResponse and JWTBundlesResponse hold the local and federated trust domains', () => {
    expect(Object.keys(x509BundlesResponse(update).bundles).sort()).toEqual(['spiffe://a.test', 'spiffe://b.test'])
    const j = jwtBundlesResponse(update).bundles
    expect(j['spiffe://a.test']!.toString()).toBe('{"keys":[]}')
    expect(JSON.parse(j['spiffe://b.test']!.toString())).toEqual({ keys: [{ kty: 'EC' }] })
  })

  it.each([
    { title: 'no hints', hints: ['', ''], kept: 2 },
    { title: 'distinct', hints: ['a', 'b'], kept: 2 },
    { title: 'duplicates', hints: ['a', 'a', '', 'b', 'b'], kept: 3 },
  ])('uniqueHints: $title', ({ hints, kept }) => {
    expect(uniqueHints(hints.map((hint) => ({ hint })))).toHaveLength(kept)
  })
})

describe('X509ResponseCache and workloadApiService', () => {
  const svc = () => (loadProto('spiffe/workload/workload.proto').SpiffeWorkloadAPI as unknown as { service: grpc.ServiceDefinition }).service
  /** A fresh update sharing nothing with `update` but what `change` keeps. */
  const copy = (u: WorkloadUpdate): WorkloadUpdate => ({ ...u, identities: [...u.identities], federatedBundles: new Map(u.federatedBundles) })

  it('gives the same message while the sources are the same objects, a new one when any changes', () => {
    const cache = new X509ResponseCache()
    const first = cache.get(update)
    expect(cache.get(copy(update))).toBe(first) // a new update object, same identities and bundles
    expect(first).toEqual(x509SvidResponse(update))
    const id0 = update.identities[0]!
    const changes: { title: string; u: () => WorkloadUpdate }[] = [
      { title: 'hint changed in place', u: () => copy(update) },
      { title: 'new local bundle', u: () => ({ ...copy(update), bundle: { x509: u8(0xcc), jwks: '{}' } }) },
      { title: 'new key', u: () => ({ ...copy(update), identities: [{ ...id0, x509SvidKey: u8(1) }, ...update.identities.slice(1)] }) },
      { title: 'one identity fewer', u: () => ({ ...copy(update), identities: update.identities.slice(0, 2) }) },
      { title: 'no federated bundle', u: () => ({ ...copy(update), federatedBundles: new Map() }) },
      { title: 'new chain element', u: () => ({ ...copy(update), identities: [{ ...id0, x509Svid: [u8(1, 2), u8(4)] }, ...update.identities.slice(1)] }) },
    ]
    const savedHint = id0.hint
    try {
      for (const { title, u } of changes) {
        const before = cache.get(copy(update))
        if (title === 'hint changed in place') id0.hint = 'other'
        const next = u()
        const got = cache.get(next)
        expect(got, title).not.toBe(before)
        expect(got, title).toEqual(x509SvidResponse(next))
        id0.hint = savedHint
      }
    } finally {
      id0.hint = savedHint
    }
  })

  it('serializes a cached message once, to the same bytes as the plain serializer; other messages as before', () => {
    const plain = svc().FetchX509SVID!.responseSerialize
    const wrapped = workloadApiService(svc()).FetchX509SVID!.responseSerialize
    const msg = new X509ResponseCache().get(update)
    const a = wrapped(msg)
    expect(wrapped(msg)).toBe(a)
    expect(Buffer.compare(a, plain(x509SvidResponse(update)))).toBe(0)
    const other = x509SvidResponse(update)
    expect(wrapped(other)).not.toBe(wrapped(other))
    expect(Buffer.compare(wrapped(other), a)).toBe(0)
    expect(workloadApiService(svc()).FetchJWTSVID).toBe(svc().FetchJWTSVID)
  })
})

describe('google.protobuf.Struct conversion', () => {
  it.each([
    { title: 'scalars', claims: { sub: 'spiffe://a.test/x', exp: 1700000000, ok: true, none: null } },
    { title: 'nested lists and objects', claims: { aud: ['a', 'b'], x: { y: [1, { z: 'w' }] } } },
    { title: 'empty', claims: {} },
  ])('round-trips $title through the wire encoding', ({ claims }) => {
    const svc = loadProto('spiffe/workload/workload.proto').SpiffeWorkloadAPI as unknown as {
      service: { ValidateJWTSVID: { responseSerialize(v: unknown): Buffer; responseDeserialize(b: Buffer): { claims: unknown } } }
    }
    const m = svc.service.ValidateJWTSVID
    const decoded = m.responseDeserialize(m.responseSerialize({ spiffe_id: 'x', claims: toStruct(claims) }))
    expect(fromStruct(decoded.claims as { fields: Record<string, unknown> })).toEqual(claims)
  })

  it.each([
    { v: undefined, expected: { nullValue: 'NULL_VALUE' } },
    { v: 10n, expected: { numberValue: 10 } },
    { v: () => 1, expected: { nullValue: 'NULL_VALUE' } },
  ])('toValue($v)', ({ v, expected }) => {
    expect(toValue(v)).toEqual(expected)
  })
})
