import { describe, expect, it } from 'vitest'
import { EntryIndex, isTemplateEntry, templateCovers } from '../../../../src/agent/manager/entry-index.js'
import type { AgentEntry } from '../../../../src/agent/manager/ports.js'

function entry(id: string, selectors: string[], extra: Partial<AgentEntry> = {}): AgentEntry {
  const base = { id, spiffeId: `spiffe://example.org/${id}`, parentId: 'spiffe://example.org/agent', selectors }
  return { ...base, x509SvidTtl: 0, jwtSvidTtl: 0, dnsNames: [], federatesWith: [], hint: '', revision: 1, ...extra }
}

describe('EntryIndex', () => {
  it('matches entries whose selectors are all among the caller selectors, never an entry without selectors', () => {
    const idx = new EntryIndex()
    idx.put(entry('a', ['unix:uid:1']))
    idx.put(entry('b', ['unix:uid:1', 'unix:gid:2']))
    idx.put(entry('c', ['unix:uid:3']))
    idx.put(entry('none', []))
    expect([...idx.match(new Set(['unix:uid:1']))]).toEqual(['a'])
    expect([...idx.match(new Set(['unix:uid:1', 'unix:gid:2', 'x:y']))].sort()).toEqual(['a', 'b'])
    expect(idx.match(new Set())).toEqual(new Set())
  })

  it('ignores the same revision of the same identity, and re-indexes a changed entry', () => {
    const idx = new EntryIndex()
    expect(idx.put(entry('a', ['s:1']))).toEqual({ changed: true, prev: undefined })
    expect(idx.put(entry('a', ['s:2']))).toEqual({ changed: false })
    const next = entry('a', ['s:2'], { revision: 2 })
    expect(idx.put(next)).toMatchObject({ changed: true, prev: { revision: 1 } })
    expect(idx.match(new Set(['s:1']))).toEqual(new Set())
    expect(idx.match(new Set(['s:2']))).toEqual(new Set(['a']))
  })

  it('removes an entry from the index', () => {
    const idx = new EntryIndex()
    idx.put(entry('a', ['s:1']))
    expect(idx.remove('a')?.id).toBe('a')
    expect(idx.remove('a')).toBeUndefined()
    expect(idx.match(new Set(['s:1']))).toEqual(new Set())
    expect(idx.size).toBe(0)
  })

  it('knows template entries and which IDs a template covers (one path segment)', () => {
    expect(isTemplateEntry({ spiffeId: 'spiffe://example.org/w/{instance}' })).toBe(true)
    expect(isTemplateEntry({ spiffeId: 'spiffe://example.org/w' })).toBe(false)
    const t = 'spiffe://example.org/w/{instance}/x'
    expect(templateCovers(t, 'spiffe://example.org/w/abc/x')).toBe(true)
    expect(templateCovers(t, 'spiffe://example.org/w//x')).toBe(false)
    expect(templateCovers(t, 'spiffe://example.org/w/a/b/x')).toBe(false)
    expect(templateCovers(t, 'spiffe://example.org/v/abc/x')).toBe(false)
  })
})
