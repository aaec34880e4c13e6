import { describe, expect, it } from 'vitest'
import {
  actorsOf,
  entryCovers,
  parseRevocationEntry,
  RevocationSet,
  revocableClaims,
  revocationEntryToWire,
  underPrefix,
  type RevocationEntry,
} from '../../../src/tokens/revocation.js'

const A = 'spiffe://td/agents/a'
const B = 'spiffe://td/agents/b'
const base = { createdAt: 100, expiresAt: 1000 }
const tok = (over: Partial<{ jti: string; sub: string; clientId: string; taskId: string; actors: string[] }> = {}) => ({
  jti: 'j1',
  sub: A,
  clientId: A,
  taskId: 't1',
  actors: [] as string[],
  ...over,
})

describe('what each kind covers', () => {
  it('token and chain by jti: the jtis shipped, nothing else', () => {
    const e: RevocationEntry = { seq: 1, kind: 'token', value: 'j1', jtis: ['j1', 'j2'], ...base }
    expect(entryCovers(e, tok(), 500)).toBe(true)
    expect(entryCovers(e, tok({ jti: 'j2' }), 500)).toBe(true)
    expect(entryCovers(e, tok({ jti: 'j3' }), 500)).toBe(false)
    expect(entryCovers({ ...e, kind: 'chain' }, tok({ jti: 'j2' }), 500)).toBe(true)
  })
  it('chain by actor: only tokens the actor acted on', () => {
    const e: RevocationEntry = { seq: 1, kind: 'chain', value: B, ...base }
    expect(entryCovers(e, tok({ actors: [B] }), 500)).toBe(true)
    expect(entryCovers(e, tok({ actors: ['spiffe://td/agents/c', B] }), 500)).toBe(true)
    expect(entryCovers(e, tok({ sub: B, clientId: B }), 500)).toBe(false)
  })
  it('instance: sub, client or actor', () => {
    const e: RevocationEntry = { seq: 1, kind: 'instance', value: B, ...base }
    expect(entryCovers(e, tok({ sub: B }), 500)).toBe(true)
    expect(entryCovers(e, tok({ clientId: B }), 500)).toBe(true)
    expect(entryCovers(e, tok({ actors: [B] }), 500)).toBe(true)
    expect(entryCovers(e, tok(), 500)).toBe(false)
  })
  it('task: the task id', () => {
    const e: RevocationEntry = { seq: 1, kind: 'task', value: 't1', ...base }
    expect(entryCovers(e, tok(), 500)).toBe(true)
    expect(entryCovers(e, tok({ taskId: 't2' }), 500)).toBe(false)
  })
  it('prefix: path-segment aware, until notAfter (exclusive)', () => {
    const e: RevocationEntry = { seq: 1, kind: 'prefix', value: 'spiffe://td/agents/a', notAfter: 600, ...base }
    expect(entryCovers(e, tok(), 599)).toBe(true)
    expect(entryCovers(e, tok(), 600)).toBe(false)
    expect(entryCovers(e, tok({ sub: 'spiffe://td/agents/a/x', clientId: 'spiffe://td/agents/a/x' }), 500)).toBe(true)
    expect(entryCovers(e, tok({ sub: 'spiffe://td/agents/ab', clientId: 'spiffe://td/agents/ab' }), 500)).toBe(false)
    expect(underPrefix('spiffe://td/a/b', 'spiffe://td/a/')).toBe(true)
    expect(underPrefix('spiffe://td/ab', 'spiffe://td/a')).toBe(false)
  })
  it('an expired entry covers nothing', () => {
    expect(entryCovers({ seq: 1, kind: 'task', value: 't1', createdAt: 1, expiresAt: 500 }, tok(), 500)).toBe(false)
  })
})

describe('RevocationSet', () => {
  it('finds the covering entry by any index, ignores a repeated seq, and sweeps expired entries from every index', () => {
    const s = new RevocationSet()
    const entries: RevocationEntry[] = [
      { seq: 3, kind: 'token', value: 'j9', jtis: ['j9'], createdAt: 1, expiresAt: 50 },
      { seq: 4, kind: 'instance', value: B, createdAt: 1, expiresAt: 50 },
      { seq: 5, kind: 'task', value: 't7', createdAt: 1, expiresAt: 50 },
      { seq: 6, kind: 'chain', value: 'spiffe://td/agents/c', createdAt: 1, expiresAt: 50 },
      { seq: 7, kind: 'prefix', value: 'spiffe://td/tools', createdAt: 1, expiresAt: 50 },
    ]
    for (const e of entries) s.apply(e)
    s.apply({ ...entries[0]!, value: 'other' })
    expect(s.size).toBe(5)
    expect(s.lastSeq).toBe(7)
    expect(s.covering(tok({ jti: 'j9' }), 10)?.seq).toBe(3)
    expect(s.covering(tok({ clientId: B }), 10)?.seq).toBe(4)
    expect(s.covering(tok({ taskId: 't7' }), 10)?.seq).toBe(5)
    expect(s.covering(tok({ actors: ['spiffe://td/agents/c'] }), 10)?.seq).toBe(6)
    expect(s.covering(tok({ sub: 'spiffe://td/tools/x' }), 10)?.seq).toBe(7)
    expect(s.covering(tok(), 10)).toBeUndefined()
    s.sweep(50)
    expect(s.size).toBe(0)
    expect(s.covering(tok({ jti: 'j9' }), 10)).toBeUndefined()
    expect(s.covering(tok({ clientId: B }), 10)).toBeUndefined()
    expect(s.lastSeq).toBe(7)
  })
})

describe('the wire form', () => {
  it('round-trips and refuses malformed entries', () => {
    const e: RevocationEntry = { seq: 2, kind: 'prefix', value: 'spiffe://td/x', createdAt: 1, notAfter: 9, expiresAt: 9 }
    expect(parseRevocationEntry(revocationEntryToWire(e))).toEqual(e)
    const good = revocationEntryToWire({ seq: 1, kind: 'token', value: 'j', jtis: ['j'], createdAt: 1, expiresAt: 2 })
    for (const bad of [
      null,
      [],
      { ...good, seq: -1 },
      { ...good, seq: 1.5 },
      { ...good, kind: 'all' },
      { ...good, value: '' },
      { ...good, jtis: 'j' },
      { ...good, jtis: [1] },
      { ...good, jtis: undefined },
      { ...good, kind: 'chain', value: 'j', jtis: undefined },
      { ...good, created_at: 'x' },
      { ...good, expires_at: undefined },
      { ...good, not_after: -3 },
    ])
      expect(() => parseRevocationEntry(bad), JSON.stringify(bad)).toThrow(expect.objectContaining({ code: 'ERR_REVOCATION_INVALID' }))
    expect(parseRevocationEntry({ ...good, kind: 'chain', value: B, jtis: undefined }).kind).toBe('chain')
  })
  it('reads the revocable claims of a verified token, the act chain current actor first', () => {
    expect(revocableClaims({ jti: 'j', sub: A, client_id: B, task_id: 't', act: { sub: B, act: { sub: 'spiffe://td/c' } } })).toEqual({
      jti: 'j',
      sub: A,
      clientId: B,
      taskId: 't',
      actors: [B, 'spiffe://td/c'],
    })
    expect(actorsOf({ sub: 1 })).toEqual([])
  })
})
