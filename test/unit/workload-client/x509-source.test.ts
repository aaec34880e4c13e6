import * as grpc from '@grpc/grpc-js'
import { afterAll, beforeAll, describe, expect, it } from 'vitest'
import { TrustDomain } from '../../../src/spiffe/trust-domain.js'
import { WorkloadApiClient, X509Source, type X509Context } from '../../../src/workload-client/index.js'
import { FakeWorkloadApi, makeLeaf, makeRoot, x509Response, type TestCa } from './fake-workload-api.js'

const A = 'spiffe://a.test/web'
let fake: FakeWorkloadApi
let caA: TestCa
let caB: TestCa
const opts = () => ({ socketPath: fake.socketPath, backoff: { initialMs: 10, maxMs: 40 } })

beforeAll(async () => {
  fake = await FakeWorkloadApi.start()
  caA = await makeRoot('a.test')
  caB = await makeRoot('b.test')
})
afterAll(async () => fake.stop())

describe('X509Source', () => {
  it('waits through PermissionDenied for the first context, then follows rotation and bundle changes, emitting update', async () => {
    const l1 = await makeLeaf(caA, A)
    const l2 = await makeLeaf(caA, A)
    fake.x509 = x509Response([l1], [caA.certificate])
    fake.x509Script.push({ code: grpc.status.PERMISSION_DENIED, details: 'no identity issued' })
    const src = await X509Source.create(opts())
    try {
      expect(Buffer.compare(src.getX509Svid().leaf, l1.chain[0]!)).toBe(0)
      expect(src.privateKey.type).toBe('private')
      expect(() => src.getX509BundleForTrustDomain(TrustDomain.fromString('b.test'))).toThrow(expect.objectContaining({ code: 'ERR_BUNDLE_NOT_FOUND' }))
      const updated = new Promise<X509Context>((r) => src.once('update', r))
      fake.push(x509Response([l2], [caA.certificate], { 'spiffe://b.test': [caB.certificate] }))
      const ctx = await updated
      expect(ctx).toBe(src.context)
      expect(Buffer.compare(src.getX509Svid().leaf, l2.chain[0]!)).toBe(0)
      expect(src.getX509BundleForTrustDomain(TrustDomain.fromString('b.test')).authorities).toEqual([caB.certificate])
      expect(src.getX509BundleForTrustDomain(TrustDomain.fromString('a.test')).authorities).toEqual([caA.certificate])
    } finally {
      await src.close()
    }
    expect(() => src.getX509Svid()).toThrow(expect.objectContaining({ code: 'ERR_UNAVAILABLE' }))
    await src.close() // idempotent
  })

  it('keeps the last context across a broken stream and reports the error to listeners', async () => {
    const l1 = await makeLeaf(caA, A)
    fake.x509 = x509Response([l1], [caA.certificate])
    const src = await X509Source.create(opts())
    try {
      const errs: string[] = []
      src.on('error', (e) => errs.push(e.code))
      const again = new Promise((r) => src.once('update', r))
      fake.fail(grpc.status.UNAVAILABLE, 'restart')
      await again
      expect(errs).toEqual(['ERR_UNAVAILABLE'])
      expect(src.getX509Svid().id.toString()).toBe(A)
    } finally {
      await src.close()
    }
  })

  it('an update the picker refuses is not applied', async () => {
    const l1 = await makeLeaf(caA, A)
    const other = await makeLeaf(caA, 'spiffe://a.test/other')
    fake.x509 = x509Response([l1], [caA.certificate])
    const picker = (svids: readonly { id: { toString(): string } }[]) => {
      const s = svids.find((x) => x.id.toString() === A)
      if (!s) throw new Error('not there')
      return s as never
    }
    const src = await X509Source.create({ ...opts(), picker })
    try {
      const errs: string[] = []
      const gotErr = new Promise<void>((r) => src.on('error', (e) => (errs.push(e.code), r())))
      fake.push(x509Response([other], [caA.certificate]))
      await gotErr
      expect(errs).toEqual(['ERR_X509_SVID_INVALID'])
      expect(src.getX509Svid().id.toString()).toBe(A)
    } finally {
      await src.close()
    }
  })

  it('create rejects on a final error, and when aborted before any context (with the last error as cause)', async () => {
    fake.x509Script.push({ code: grpc.status.INVALID_ARGUMENT, details: 'security header missing from request' })
    await expect(X509Source.create(opts())).rejects.toMatchObject({ code: 'ERR_INVALID_ARGUMENT' })

    for (let i = 0; i < 200; i++) fake.x509Script.push({ code: grpc.status.PERMISSION_DENIED, details: 'no identity issued' })
    const ac = new AbortController()
    setTimeout(() => ac.abort(), 150)
    const err = await X509Source.create({ ...opts(), signal: ac.signal }).catch((e: unknown) => e)
    expect(err).toMatchObject({ code: 'ERR_UNAVAILABLE', cause: { code: 'ERR_NO_IDENTITY_ISSUED' } })
    fake.x509Script.length = 0
  })

  it('uses a given client and leaves it open on close', async () => {
    const l1 = await makeLeaf(caA, A)
    fake.x509 = x509Response([l1], [caA.certificate])
    const client = new WorkloadApiClient(opts())
    try {
      const src = await X509Source.create({ client })
      await src.close()
      await expect(client.fetchX509Context()).resolves.toMatchObject({ svids: [expect.anything()] })
    } finally {
      client.close()
    }
  })
})
