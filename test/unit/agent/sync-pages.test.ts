/**
 * A Sync update too large for one message: the server's pages
 * (pageSyncUpdate) each stay far under gRPC's 4 MB message limit, and the
 * agent's client (SyncPages) applies them as the one update they were.
 */
import type * as grpc from '@grpc/grpc-js'
import { describe, expect, it } from 'vitest'
import { SyncPages, syncFromMsg } from '../../../src/agent/server-client.js'
import { loadProto } from '../../../src/common/grpc/proto.js'
import type { SyncResponse, SyncResponse__Output } from '../../../src/gen/warrant/agent/v1/SyncResponse.js'
import { entryToMsg } from '../../../src/server/api/convert.js'
import type { RegistrationEntry } from '../../../src/server/datastore/types.js'
import { pageSyncUpdate, type SyncUpdate } from '../../../src/server/sync/sync-stream.js'

const pkg = loadProto('warrant/agent/v1/node.proto') as unknown as {
  warrant: { agent: { v1: { Node: { service: Record<string, grpc.MethodDefinition<SyncResponse, SyncResponse__Output>> } } } }
}
const wire = pkg.warrant.agent.v1.Node.service.Sync!
// The server writes the input shape (SyncResponse), the agent reads the output shape.
const serialize = wire.responseSerialize as unknown as (m: SyncResponse) => Buffer

function entry(i: number, selectors = 2): RegistrationEntry {
  return {
    id: `00000000-0000-4000-8000-${String(i).padStart(12, '0')}`,
    spiffeId: `spiffe://example.org/ns/team-${i % 50}/sa/workload-${i}`,
    parentId: 'spiffe://example.org/warrant/agent/join_token/0123456789abcdef0123456789abcdef',
    selectors: Array.from({ length: selectors }, (_, k) => ({ type: 'k8s', value: `pod-label:app.kubernetes.io/name-${k}:value-${i}` })),
    x509SvidTtl: 0,
    jwtSvidTtl: 0,
    dnsNames: [`w${i}.svc.cluster.local`],
    federatesWith: [],
    hint: '',
    admin: false,
    downstream: false,
    expiresAt: null,
    createdAt: 1,
    updatedAt: 1,
    revision: 1,
  }
}

/** As node-service.ts encodes an update (entries, full, more), through the real protobuf codec. */
function encode(u: SyncUpdate): Buffer {
  return serialize({ full: u.full, entries: (u.entries ?? []).map(entryToMsg), deleted_entry_ids: u.deletedEntryIds ?? [], more: u.more ?? false })
}

describe('Sync pages', () => {
  it('sends 30,000 entries with long selectors as pages each under 1.5 MB, applied by the agent as one full update', () => {
    const entries = Array.from({ length: 30_000 }, (_, i) => entry(i, 4))
    const pages = pageSyncUpdate({ full: true, entries, deletedEntryIds: [] })
    expect(pages.length).toBeGreaterThan(5)
    const encoded = pages.map(encode)
    expect(encoded.reduce((n, b) => n + b.byteLength, 0)).toBeGreaterThan(4 * 1024 * 1024) // one message would pass the 4 MB limit
    for (const b of encoded) expect(b.byteLength).toBeLessThan(1.5 * 1024 * 1024)
    expect(pages[0]!.full).toBe(true)
    expect(pages.slice(1).every((p) => !p.full)).toBe(true)
    expect(pages.slice(0, -1).every((p) => p.more === true)).toBe(true)
    expect(pages.at(-1)!.more).toBeUndefined()

    const agent = new SyncPages()
    const applied = encoded.map((b) => agent.accept(wire.responseDeserialize(b)))
    expect(applied.slice(0, -1).every((x) => x === undefined)).toBe(true)
    const whole = syncFromMsg(applied.at(-1)!)
    expect(whole.full).toBe(true)
    expect(whole.entries.map((e) => e.id)).toEqual(entries.map((e) => e.id))
  })

  it('leaves an update that fits as one message, and a later update is applied on its own', () => {
    const u: SyncUpdate = { full: true, entries: [entry(1)], deletedEntryIds: [] }
    expect(pageSyncUpdate(u)).toEqual([u])
    const agent = new SyncPages()
    const first = agent.accept(wire.responseDeserialize(encode(u)))
    expect(first?.entries).toHaveLength(1)
    const next = agent.accept(wire.responseDeserialize(encode({ full: false, entries: [entry(2)], deletedEntryIds: ['x'] })))
    expect(next?.entries.map((e) => e.id)).toEqual([entry(2).id])
    expect(next?.deleted_entry_ids).toEqual(['x'])
  })

  it('keeps the bundle, deletions and revocations in the first page only', () => {
    const pages = pageSyncUpdate({ full: false, entries: Array.from({ length: 50 }, (_, i) => entry(i)), deletedEntryIds: ['gone'], revocations: [] }, 2000)
    expect(pages.length).toBeGreaterThan(2)
    expect(pages[0]!.deletedEntryIds).toEqual(['gone'])
    expect(pages[0]!.revocations).toEqual([])
    for (const p of pages.slice(1)) expect(Object.keys(p).sort()).toEqual(p.more ? ['entries', 'full', 'more'] : ['entries', 'full'])
    expect(pages.flatMap((p) => p.entries!.map((e) => e.id))).toEqual(Array.from({ length: 50 }, (_, i) => entry(i).id))
  })

  it('ends the stream when one update brings more entries than the agent holds (a server that never ends its pages)', () => {
    const agent = new SyncPages(100)
    const page = (n: number, more: boolean) =>
      wire.responseDeserialize(encode({ full: false, entries: Array.from({ length: n }, (_, i) => entry(i)), deletedEntryIds: [], more }))
    expect(agent.accept(page(60, true))).toBeUndefined()
    expect(() => agent.accept(page(60, true))).toThrow(expect.objectContaining({ code: 'ERR_INTERNAL' }) as Error)
  })
})
