import { describe, expect, it } from 'vitest'
import { canonicalJson } from '../../../src/audit/canonical.js'
import { isCanonicalAuditEvent } from '../../../src/audit/canonical-event.js'
import { AUDIT_EVENT_TYPES, parseAuditEvent } from '../../../src/audit/event.js'
import { checkEventBytes } from '../../../src/audit/verify.js'

/** The full check, as verify did it before the fast path: parse, schema (with the secret guard), canonical form. */
function fullCheck(bytes: Uint8Array): boolean {
  const text = Buffer.from(bytes).toString('utf8')
  try {
    const parsed: unknown = JSON.parse(text)
    parseAuditEvent(parsed)
    return canonicalJson(parsed) === text
  } catch {
    return false
  }
}

/** A small deterministic PRNG, so a failure can be replayed. */
function rng(seed: number): () => number {
  let s = seed >>> 0
  return () => {
    s = (s + 0x6d2b79f5) >>> 0
    let t = s
    t = Math.imul(t ^ (t >>> 15), t | 1)
    t ^= t + Math.imul(t ^ (t >>> 7), t | 61)
    return ((t ^ (t >>> 14)) >>> 0) / 4294967296
  }
}

function randomEvent(r: () => number, i: number): Record<string, unknown> {
  const pick = <T>(xs: readonly T[]): T => xs[Math.floor(r() * xs.length)]!
  const type = pick(AUDIT_EVENT_TYPES)
  const outcome =
    type === 'node_attestation.accepted' ? 'success' : type === 'node_attestation.refused' ? 'refused' : pick(['success', 'refused', 'error'] as const)
  const e: Record<string, unknown> = { v: 1, time: new Date(Date.UTC(2020, 0, 1) + Math.floor(r() * 4e11)).toISOString(), type, outcome }
  if (outcome !== 'success' || r() < 0.2) e.reason = pick(['ERR_JOIN_TOKEN_INVALID', 'ceiling.scope', 'a/b:c'])
  if (r() < 0.8) e.actor = r() < 0.5 ? { spiffe_id: `spiffe://example.org/agents/a${i % 7}` } : { spiffe_id: 'spiffe://example.org/x', instance: `i-${i}` }
  if (r() < 0.5) e.subject = `spiffe://example.org/s/${i % 5}`
  if (r() < 0.3) e.node = 'spiffe://example.org/spire/agent/join_token/abc'
  if (r() < 0.5) e.task_id = `task-${i}`
  if (r() < 0.3) e.orchestration_id = 'orch:1@x'
  if (r() < 0.4) e.resource = r() < 0.2 ? [] : ['https://api.example.org/', 'https://b.example.org/x y']
  if (r() < 0.4) e.scope = ['read', 'tools:write']
  if (r() < 0.5) e.delegation_depth = Math.floor(r() * 65)
  if (r() < 0.2) e.act_chain_hash = 'ab'.repeat(32)
  if (r() < 0.4) e.token_id = `jti-${i.toString(36)}`
  if (r() < 0.2) e.key_id = 'kid-1'
  if (r() < 0.1) e.on_behalf_of = `h1:${'A'.repeat(43)}`
  if (r() < 0.3) e.attributes = r() < 0.2 ? {} : { count: Math.floor(r() * 2000) - 1000, flag: r() < 0.5, note: 'x y', z_9: 0 }
  return e
}

const bytesOf = (v: unknown): Buffer => Buffer.from(canonicalJson(v), 'utf8')

describe('isCanonicalAuditEvent (the fast path of the per-event check)', () => {
  it('vouches for canonical, valid events of every shape the generator makes', () => {
    const r = rng(1)
    for (let i = 0; i < 3000; i++) {
      const b = bytesOf(randomEvent(r, i))
      expect(fullCheck(b)).toBe(true)
      expect(isCanonicalAuditEvent(b)).toBe(true)
    }
  })

  it('never vouches for bytes the full check refuses (random edits of valid events)', () => {
    const r = rng(2)
    let refused = 0
    for (let i = 0; i < 20000; i++) {
      const b = bytesOf(randomEvent(r, i))
      const m = Buffer.from(b)
      const at = Math.floor(r() * m.length)
      let edited: Buffer
      const op = r()
      if (op < 0.4) {
        m[at] = r() < 0.7 ? 0x20 + Math.floor(r() * 95) : Math.floor(r() * 256)
        edited = m
      } else if (op < 0.6) edited = Buffer.concat([m.subarray(0, at), m.subarray(at + 1)])
      else if (op < 0.8) edited = Buffer.concat([m.subarray(0, at), Buffer.from([0x20 + Math.floor(r() * 95)]), m.subarray(at)])
      else {
        // a whole token moved: digits, quotes, brackets
        const tokens = ['"', ',', '{', '}', '[', ']', ':', '0', '-', '1.0', '\\u0041', ' ', '"v":1', 'true', 'null']
        edited = Buffer.concat([m.subarray(0, at), Buffer.from(tokens[Math.floor(r() * tokens.length)]!), m.subarray(at)])
      }
      const fast = isCanonicalAuditEvent(edited)
      if (fast) expect(fullCheck(edited), edited.toString('latin1')).toBe(true)
      if (!fullCheck(edited)) refused++
    }
    expect(refused).toBeGreaterThan(10000)
  })

  const base = {
    v: 1,
    time: '2026-12-05T12:00:00.000Z',
    type: 'token.exchanged',
    outcome: 'success',
    actor: { spiffe_id: 'spiffe://example.org/a', instance: 'i-1' },
    token_id: 'jti-1',
  }
  const text = canonicalJson(base)
  const cases: { title: string; text: string }[] = [
    {
      title: 'members out of order',
      text: text.replace('"outcome":"success","time":"2026-12-05T12:00:00.000Z"', '"time":"2026-12-05T12:00:00.000Z","outcome":"success"'),
    },
    { title: 'whitespace', text: text.replace('"v":1', '"v": 1') },
    { title: 'a number not in its shortest form', text: text.replace('"v":1', '"v":1.0') },
    { title: 'an escape JCS would not write', text: text.replace('jti-1', 'jti\\u002d1') },
    { title: 'a duplicate member', text: text.replace('"v":1', '"v":1,"v":1') },
    { title: 'an unknown member', text: text.replace('"v":1', '"v":1,"w":1') },
    { title: 'an unknown actor member', text: text.replace('"instance":"i-1"', '"instance":"i-1","x":"y"') },
    { title: 'a leap second', text: text.replace('12:00:00.000', '23:59:60.000') },
    { title: 'a 32nd day', text: text.replace('12-05', '01-32') },
    { title: 'a 25th hour', text: text.replace('T12', 'T25') },
    { title: 'a JWT in an identifier', text: text.replace('jti-1', 'eyJhbGciOiJFUzI1NiJ9.eyJzdWIiOiJ4In0.abc') },
    { title: 'a refusal without a reason', text: text.replace('"outcome":"success"', '"outcome":"refused"') },
    { title: 'a secret-named attribute', text: text.replace('"time"', '"attributes":{"password":"x"},"time"').replace('"actor":{', '"actor":{') },
    { title: 'negative zero', text: text.replace('"time"', '"attributes":{"n":-0},"time"') },
    { title: 'a leading zero', text: text.replace('"time"', '"attributes":{"n":01},"time"') },
    { title: 'a version 2', text: text.replace('"v":1', '"v":2') },
    { title: 'trailing bytes', text: `${text} ` },
    { title: 'not a SPIFFE ID', text: text.replace('spiffe://example.org/a', 'https://example.org/a') },
  ]
  it.each(cases)('leaves $title to the full check, which refuses it', ({ text: t }) => {
    const b = Buffer.from(t, 'utf8')
    expect(isCanonicalAuditEvent(b)).toBe(false)
    expect(fullCheck(b)).toBe(false)
    expect(checkEventBytes(b)).toBeDefined()
  })

  it('leaves non-ASCII and escaped text to the full check, which decides', () => {
    for (const v of [
      { ...base, token_id: 'jti-é' },
      { ...base, attributes: { note: 'a"b' } },
      { ...base, attributes: { note: 'café' } },
    ]) {
      const b = bytesOf(v)
      expect(isCanonicalAuditEvent(b)).toBe(false)
      expect(checkEventBytes(b) === undefined).toBe(fullCheck(b))
    }
  })
})
