import { describe, expect, it } from 'vitest'
import { procOf, Subscribers, type DeliverySources, type EntryStatus, type ServedIdentity } from '../../../../src/agent/manager/subscribers.js'
import type { WorkloadUpdate } from '../../../../src/agent/workload-api/manager.js'
import { captureLogger } from '../../../helpers/capture-logger.js'

const flushed = () => new Promise((r) => setImmediate(r))
const EMPTY = { x509: new Uint8Array(0), jwks: '{"keys":[]}' }

function setup() {
  const status = new Map<string, EntryStatus>()
  const svids = new Map<string, ServedIdentity>()
  const minted: string[][] = []
  const state = { ready: true }
  const sources: DeliverySources = {
    ready: () => state.ready,
    now: () => 0,
    status: (_proc, id) => status.get(id) ?? 'ready',
    mintMissing: (_proc, ids) => void minted.push(ids),
    served: (_proc, id) => svids.get(id),
    federatesWith: (id) => (id === 'b' ? ['partner.test'] : []),
    trustDomainId: () => 'spiffe://example.org',
    localBundle: () => EMPTY,
    federatedBundle: (name) => ({ trustDomainId: `spiffe://${name}`, workload: EMPTY }),
  }
  const log = captureLogger()
  const subs = new Subscribers({ sources, log })
  const svid = (id: string): ServedIdentity => ({ entryId: id, spiffeId: `spiffe://example.org/${id}`, x509Svid: [], x509SvidKey: new Uint8Array(0), hint: '' })
  return { subs, status, svids, minted, state, log, svid }
}

describe('Subscribers', () => {
  it('delivers at once when everything is at hand, sorted by SPIFFE ID, with the federated bundles of the entries', () => {
    const { subs, svids, svid } = setup()
    svids.set('b', svid('b'))
    svids.set('a', svid('a'))
    const got: WorkloadUpdate[] = []
    subs.add(new Set(['s:1']), new Set(['b', 'a']), (u) => got.push(u), undefined)
    expect(got).toHaveLength(1)
    expect(got[0]!.identities.map((i) => i.spiffeId)).toEqual(['spiffe://example.org/a', 'spiffe://example.org/b'])
    expect([...got[0]!.federatedBundles.keys()]).toEqual(['spiffe://partner.test'])
    expect(got[0]!.identities[0]).toBe(svids.get('a')) // the cached object itself: the Workload API reuses its built message
  })

  it('waits while an SVID is minted, asks once for all the missing ones, and delivers on the next flush', async () => {
    const { subs, status, svids, minted, svid } = setup()
    status.set('a', 'missing')
    status.set('b', 'missing')
    status.set('c', 'waiting')
    const got: WorkloadUpdate[] = []
    subs.add(new Set(['s:1']), new Set(['a', 'b', 'c']), (u) => got.push(u), undefined)
    expect(got).toHaveLength(0)
    expect(minted).toEqual([['a', 'b']])
    status.clear()
    svids.set('a', svid('a'))
    subs.markEntry('a')
    subs.queueFlush()
    await flushed()
    expect(got).toHaveLength(1)
  })

  it('delivers nothing before the manager is ready', async () => {
    const { subs, state } = setup()
    state.ready = false
    const got: WorkloadUpdate[] = []
    subs.add(new Set(), new Set(), (u) => got.push(u), undefined)
    expect(got).toHaveLength(0)
    state.ready = true
    subs.queueFlush()
    await flushed()
    expect(got).toHaveLength(1)
  })

  it('re-matching marks only the subscribers concerned; an unsubscribed one hears nothing more', async () => {
    const { subs } = setup()
    const one: WorkloadUpdate[] = []
    const two: WorkloadUpdate[] = []
    const matches = new Map([
      ['s:1', new Set(['a'])],
      ['s:2', new Set(['b'])],
    ])
    const off = subs.add(new Set(['s:1']), new Set(['a']), (u) => one.push(u), undefined)
    subs.add(new Set(['s:2']), new Set(['b']), (u) => two.push(u), undefined)
    expect(subs.pinned('a') && subs.pinned('b')).toBe(true)
    subs.rematch(
      (sel) => matches.get([...sel][0]!) ?? new Set(),
      new Set(['b']),
      () => true,
    )
    subs.queueFlush()
    await flushed()
    expect([one.length, two.length]).toEqual([1, 2])
    off()
    expect(subs.pinned('a')).toBe(false)
    subs.markAll()
    subs.queueFlush()
    await flushed()
    expect([one.length, two.length, subs.size]).toEqual([1, 3, 1])
  })

  it('marks the subscribers of a process for an instance of an entry they match', async () => {
    const { subs } = setup()
    const peer = { pid: 7, uid: 0, gid: 0, groups: [], startTime: '99' }
    const proc = procOf(peer)!
    expect(proc.key).toBe('7:99')
    expect(procOf({ pid: 7, uid: 0, gid: 0, groups: [] })).toBeUndefined()
    const mine: WorkloadUpdate[] = []
    const other: WorkloadUpdate[] = []
    subs.add(new Set(['s:1']), new Set(['tpl']), (u) => mine.push(u), proc)
    subs.add(new Set(['s:1']), new Set(['tpl']), (u) => other.push(u), procOf({ ...peer, pid: 8 }))
    subs.markInstance(proc.key, 'tpl')
    subs.markInstance(proc.key, 'unmatched')
    subs.queueFlush()
    await flushed()
    expect([mine.length, other.length]).toEqual([2, 1])
  })

  it('a subscriber that throws is logged and does not stop delivery to others', async () => {
    const { subs, log } = setup()
    const got: WorkloadUpdate[] = []
    subs.add(
      new Set(),
      new Set(),
      () => {
        throw new Error('boom')
      },
      undefined,
    )
    subs.add(new Set(), new Set(), (u) => got.push(u), undefined)
    expect(got).toHaveLength(1)
    expect(log.lines.some((l) => l.msg === 'Subscriber failed to take an update')).toBe(true)
  })
})
