import { describe, expect, it } from 'vitest'
import { createMemoryDataStore } from '../../../../src/server/datastore/memory/index.js'
import { FEDERATION_KV_NAMESPACE, RelationshipStore, validateRelationship, type RelationshipInput } from '../../../../src/server/federation/relationships.js'
import { TrustDomain } from '../../../../src/spiffe/trust-domain.js'
import { FakeClock } from '../../../helpers/fake-clock.js'

const LOCAL = TrustDomain.fromString('local.test')
const spiffe: RelationshipInput = {
  trustDomain: 'partner.test',
  bundleEndpointUrl: 'https://bundle.partner.test:8443/',
  profile: 'https_spiffe',
  endpointSpiffeId: 'spiffe://partner.test/warrant/server',
}
const web: RelationshipInput = { trustDomain: 'web.test', bundleEndpointUrl: 'https://web.test/bundle', profile: 'https_web' }

describe('validateRelationship', () => {
  it.each([
    ['https_spiffe', spiffe],
    ['https_web', web],
    ['https_web with CA file and override', { ...web, webCaFile: '/etc/ca.pem', refreshHintSeconds: 60 }],
  ])('accepts %s', (_n, input) => {
    const v = validateRelationship(input, LOCAL)
    expect(v.trustDomain).toBe(input.trustDomain)
  })

  it.each([
    ['the local trust domain', { ...web, trustDomain: 'local.test' }, 'ERR_INVALID_ARGUMENT'],
    ['a bad trust domain', { ...web, trustDomain: 'bad_td!' }, 'ERR_TRUST_DOMAIN_INVALID'],
    ['an upper-case trust domain', { ...web, trustDomain: 'Web.TEST' }, 'ERR_TRUST_DOMAIN_INVALID'],
    ['http', { ...web, bundleEndpointUrl: 'http://web.test/' }, 'ERR_INVALID_ARGUMENT'],
    ['userinfo', { ...web, bundleEndpointUrl: 'https://u:p@web.test/' }, 'ERR_INVALID_ARGUMENT'],
    ['an unknown profile', { ...web, profile: 'https' as never }, 'ERR_INVALID_ARGUMENT'],
    ['https_spiffe without ID', { ...spiffe, endpointSpiffeId: '' }, 'ERR_INVALID_ARGUMENT'],
    ['https_spiffe with a bad ID', { ...spiffe, endpointSpiffeId: 'spiffe://partner.test/a//b' }, 'ERR_SPIFFE_ID_INVALID'],
    ['https_spiffe with a trust-domain ID', { ...spiffe, endpointSpiffeId: 'spiffe://partner.test' }, 'ERR_INVALID_ARGUMENT'],
    ['https_spiffe with a CA file', { ...spiffe, webCaFile: '/ca.pem' }, 'ERR_INVALID_ARGUMENT'],
    ['https_web with an endpoint ID', { ...web, endpointSpiffeId: 'spiffe://web.test/x' }, 'ERR_INVALID_ARGUMENT'],
    ['a refresh hint under 5 s', { ...web, refreshHintSeconds: 4 }, 'ERR_INVALID_ARGUMENT'],
    ['a fractional refresh hint', { ...web, refreshHintSeconds: 7.5 }, 'ERR_INVALID_ARGUMENT'],
  ])('rejects %s', (_n, input, code) => {
    expect(() => validateRelationship(input as RelationshipInput, LOCAL)).toThrow(expect.objectContaining({ code }))
  })
})

describe('RelationshipStore', () => {
  const mk = () => {
    const clock = new FakeClock()
    const ds = createMemoryDataStore({ clock })
    return { clock, ds, store: new RelationshipStore({ kv: ds.kv, localTrustDomain: LOCAL, clock }) }
  }

  it('stores JSON in the "federation" namespace and lists sorted', async () => {
    const { ds, store, clock } = mk()
    const changes: string[] = []
    store.onChange((td) => changes.push(td))
    await store.create(web)
    await store.create(spiffe)
    expect((await store.list()).map((r) => r.trustDomain)).toEqual(['partner.test', 'web.test'])
    const raw = await ds.kv.get(FEDERATION_KV_NAMESPACE, 'partner.test')
    expect(JSON.parse(raw!)).toMatchObject({ profile: 'https_spiffe', createdAt: clock.now() })
    expect(changes).toEqual(['web.test', 'partner.test'])
  })

  it('create twice is ERR_ALREADY_EXISTS; unknown is ERR_NOT_FOUND', async () => {
    const { store } = mk()
    await store.create(web)
    await expect(store.create(web)).rejects.toMatchObject({ code: 'ERR_ALREADY_EXISTS' })
    await expect(store.get('nobody.test')).rejects.toMatchObject({ code: 'ERR_NOT_FOUND' })
    await expect(store.delete('nobody.test')).rejects.toMatchObject({ code: 'ERR_NOT_FOUND' })
    await expect(store.update('nobody.test', { refreshHintSeconds: 10 })).rejects.toMatchObject({ code: 'ERR_NOT_FOUND' })
  })

  it('update keeps createdAt, validates the result, and switching profile drops the other profile’s field', async () => {
    const { store, clock } = mk()
    const created = await store.create(spiffe)
    clock.advance(1000)
    const u = await store.update('partner.test', { refreshHintSeconds: 30 })
    expect(u).toMatchObject({ refreshHintSeconds: 30, createdAt: created.createdAt, updatedAt: created.createdAt + 1000 })
    const w = await store.update('partner.test', { profile: 'https_web' })
    expect(w.endpointSpiffeId).toBe('')
    await expect(store.update('partner.test', { profile: 'https_spiffe' })).rejects.toMatchObject({ code: 'ERR_INVALID_ARGUMENT' })
    expect((await store.get('partner.test')).profile).toBe('https_web')
  })

  it('upsert creates or replaces', async () => {
    const { store } = mk()
    await store.upsert(web)
    const r = await store.upsert({ ...web, refreshHintSeconds: 90 })
    expect(r.refreshHintSeconds).toBe(90)
    expect(await store.list()).toHaveLength(1)
  })
})
