/**
 * The authorized-entries cache over the real registration service and memory
 * datastore: answers are reused until an entry is written, until the first
 * entry (or node alias) that led to them expires, and for 30 s at most; a
 * lookup that started before a write never fills the cache.
 */
import { afterEach, describe, expect, it, vi } from 'vitest'
import { createMemoryDataStore } from '../../../../src/server/datastore/memory/index.js'
import type { NewEntry, RegistrationEntry } from '../../../../src/server/datastore/types.js'
import { AuthorizedEntries } from '../../../../src/server/registration/authorized-entries.js'
import { RegistrationService } from '../../../../src/server/registration/service.js'
import { TrustDomain } from '../../../../src/spiffe/trust-domain.js'
import { captureLogger } from '../../../helpers/capture-logger.js'
import { FakeClock } from '../../../helpers/fake-clock.js'
import { newEntry as baseEntry } from '../../../helpers/entries.js'

const td = TrustDomain.fromString('example.org')
const AGENT = 'spiffe://example.org/warrant/agent/join_token/n1'
const node = { agentId: AGENT, selectors: [{ type: 'join_token', value: 'n1' }] }

const newEntry = (path: string, o: Partial<NewEntry> = {}): NewEntry => baseEntry({ spiffeId: `spiffe://example.org${path}`, parentId: AGENT, ...o })

function setup() {
  const clock = new FakeClock()
  const registration = new RegistrationService({
    ds: createMemoryDataStore({ clock }),
    clock,
    log: captureLogger(),
    limits: { trustDomain: td, maxX509TtlSeconds: 86_400, maxJwtTtlSeconds: 3_600 },
  })
  const queries = vi.spyOn(registration, 'authorizedSet')
  const cache = new AuthorizedEntries({ registration, clock })
  const create = async (e: NewEntry): Promise<RegistrationEntry> => {
    const [r] = await registration.createEntries([e])
    if (!r!.ok) throw r!.error
    return r!.value
  }
  return { clock, registration, queries, cache, create }
}

const ids = async (cache: AuthorizedEntries) => [...(await cache.of(node)).keys()].sort()

afterEach(() => {
  vi.restoreAllMocks()
})

describe('AuthorizedEntries', () => {
  it('answers from the cache until an entry is written, then looks again', async () => {
    const { queries, cache, create, registration } = setup()
    const a = await create(newEntry('/a'))
    expect(await ids(cache)).toEqual([a.id])
    expect(await ids(cache)).toEqual([a.id])
    expect(queries).toHaveBeenCalledTimes(1)
    const b = await create(newEntry('/b'))
    expect(await ids(cache)).toEqual([a.id, b.id].sort())
    expect(queries).toHaveBeenCalledTimes(2)
    await registration.deleteEntries([a.id])
    expect(await ids(cache)).toEqual([b.id])
    await expect(cache.entry(node, a.id)).rejects.toMatchObject({ code: 'ERR_ID_NOT_AUTHORIZED' })
    expect((await cache.entry(node, b.id)).spiffeId).toBe('spiffe://example.org/b')
  })

  it('keeps an answer per agent and selector set', async () => {
    const { queries, cache, create } = setup()
    await create(newEntry('/a'))
    await cache.of(node)
    await cache.of({ ...node, selectors: [...node.selectors, { type: 'tpm', value: 'x' }] })
    await cache.of({ agentId: 'spiffe://example.org/warrant/agent/join_token/n2', selectors: node.selectors })
    await cache.of(node)
    expect(queries).toHaveBeenCalledTimes(3)
  })

  it('drops an answer when an entry in it expires, and after 30 s in any case', async () => {
    const { clock, queries, cache, create } = setup()
    const a = await create(newEntry('/a'))
    const b = await create(newEntry('/b', { expiresAt: clock.now() + 10_000 }))
    expect(await ids(cache)).toEqual([a.id, b.id].sort())
    clock.advance(10_000)
    expect(await ids(cache)).toEqual([a.id])
    await expect(cache.entry(node, b.id)).rejects.toMatchObject({ code: 'ERR_ID_NOT_AUTHORIZED' })
    expect(queries).toHaveBeenCalledTimes(2)
    clock.advance(29_999)
    await cache.of(node)
    expect(queries).toHaveBeenCalledTimes(2)
    clock.advance(1)
    await cache.of(node)
    expect(queries).toHaveBeenCalledTimes(3)
  })

  it('does not keep an answer looked up while an entry was written (it may predate the write)', async () => {
    const { queries, cache, create, registration } = setup()
    const a = await create(newEntry('/a'))
    const real = registration.authorizedSet.bind(registration)
    let release!: () => void
    const gate = new Promise<void>((r) => (release = r))
    queries.mockImplementationOnce(async (n) => {
      const answer = await real(n) // read before the write below
      await gate
      return answer
    })
    const first = cache.of(node)
    await new Promise((r) => setImmediate(r))
    await registration.deleteEntries([a.id])
    release()
    expect([...(await first).keys()]).toEqual([a.id]) // that caller got the old answer...
    await expect(cache.entry(node, a.id)).rejects.toMatchObject({ code: 'ERR_ID_NOT_AUTHORIZED' }) // ...but it was not kept
  })

  it('stops following entry writes once closed', () => {
    const { registration } = setup()
    const unsub = vi.fn()
    const cache = new AuthorizedEntries({
      registration: { authorizedSet: registration.authorizedSet.bind(registration), onChange: () => unsub },
      clock: new FakeClock(),
    })
    cache.close()
    expect(unsub).toHaveBeenCalledTimes(1)
  })
})
