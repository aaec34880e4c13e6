/**
 * The fast path of the per-event check of `verify` (and of nothing else):
 * one scan over the stored bytes that says "certainly a valid audit event in
 * its own RFC 8785 form" for the events a log holds in practice, without
 * JSON.parse, the zod schema or re-serializing (together about 20 µs an
 * event, where this takes about 1).
 *
 * It accepts only a subset of what the full check (`checkEventBytes`:
 * JSON.parse, `parseAuditEvent`, `canonicalJson` compared with the text)
 * accepts, and answers false for everything else, which then takes the full
 * check, so the verdict and its message are the full check's:
 *
 * - printable ASCII strings without escapes (anything else: false);
 * - integers without sign, fraction or exponent (plus a minus sign in
 *   attributes), at most 15 digits, so their text is their ECMAScript form;
 * - members in strictly ascending order (JCS orders by UTF-16 code units,
 *   which for ASCII is byte order), no whitespace;
 * - the schema of event.ts, strict, with the same patterns, the same SPIFFE
 *   ID check and the same cross-field rules;
 * - no `eyJ` and no `-----BEGIN` anywhere in the text (where `assertNoSecrets`
 *   would look closer) and no attribute named like a secret.
 *
 * test/unit/audit/canonical-event.test.ts checks that on generated and
 * mutated events it never accepts what the full check refuses.
 */
import { ACT_CHAIN_HASH_RE, ATTR_NAME_RE, AUDIT_EVENT_TYPES, AUDIT_OUTCOMES, ID_RE, isSpiffeId, REASON_RE, SCOPE_RE, TIME_RE } from './event.js'
import { HASHED_ID_RE, SECRET_NAME_RE } from './redact.js'

const TYPES: ReadonlySet<string> = new Set(AUDIT_EVENT_TYPES)
const OUTCOMES: ReadonlySet<string> = new Set(AUDIT_OUTCOMES)

/** The top-level members, in JCS order: a canonical event names a subsequence of them. */
const KEYS = [
  'act_chain_hash',
  'actor',
  'attributes',
  'delegation_depth',
  'key_id',
  'node',
  'on_behalf_of',
  'orchestration_id',
  'outcome',
  'reason',
  'resource',
  'scope',
  'subject',
  'task_id',
  'time',
  'token_id',
  'type',
  'v',
] as const
type Key = (typeof KEYS)[number]
const KEY_TEXT = KEYS.map((k) => `"${k}":`)
/** By a member's first character: the index of the first member of KEYS starting with it. */
const BY_FIRST: (number | undefined)[] = []
KEYS.forEach((k, i) => (BY_FIRST[k.charCodeAt(0)] ??= i))

/*
 * Whole JSON strings at the scan position (sticky), quotes included. Each
 * class holds only printable ASCII without `"` and `\`: a match is a string
 * written without escapes, as JCS writes it. The patterns are event.ts's.
 */
const ID = sticky(ID_RE)
const REASON = sticky(REASON_RE)
const SCOPE = sticky(SCOPE_RE)
const ACT_CHAIN_HASH = sticky(ACT_CHAIN_HASH_RE)
const HASHED_ID = sticky(HASHED_ID_RE)
const TIME = sticky(TIME_RE)
/** Any string of printable ASCII without escapes, of 1 to 2048 characters (a resource). */
const RESOURCE = /"[\x20\x21\x23-\x5b\x5d-\x7e]{1,2048}"/y
/** The same, of at most 256 characters (an attribute value). */
const ATTR_VALUE = /"[\x20\x21\x23-\x5b\x5d-\x7e]{0,256}"/y
/** A string without spaces or escapes: a SPIFFE ID candidate (SpiffeId decides), a type, an outcome. */
const WORD = /"[\x21\x23-\x5b\x5d-\x7e]{1,2048}"/y
const ATTR_NAME = sticky(ATTR_NAME_RE)

/** `/^X$/` of event.ts as `/"X"/y`. */
function sticky(re: RegExp): RegExp {
  const src = re.source
  if (!src.startsWith('^') || !src.endsWith('$') || re.flags !== '') throw new TypeError(`canonical-event: ${src} is not an anchored pattern`)
  return new RegExp(`"${src.slice(1, -1)}"`, 'y')
}

const COMMA = 0x2c
const COLON = 0x3a
const LBRACE = 0x7b
const RBRACE = 0x7d
const LBRACKET = 0x5b
const RBRACKET = 0x5d
const MINUS = 0x2d
const D0 = 0x30
const D9 = 0x39

/** A scan's text and position (module state: one scan at a time, synchronous). */
let text = ''
let pos = 0

/** A failed scan: answered false, never thrown out of `isCanonicalAuditEvent`. */
const NO = new Error('not on the fast path')

function expect(c: number): void {
  if (text.charCodeAt(pos) !== c) throw NO
  pos++
}

/** A JSON string matching `re` (a sticky pattern of whole strings) at the position; passes it. */
function skip(re: RegExp): void {
  re.lastIndex = pos
  if (!re.test(text)) throw NO
  pos = re.lastIndex
}

/** The content of the JSON string matching `re` at the position; passes it. */
function take(re: RegExp): string {
  const start = pos
  skip(re)
  return text.slice(start + 1, pos - 1)
}

/** An integer in its ECMAScript form (0, or 1-15 digits not starting with 0; `-` first when `signed`). */
function int(signed: boolean): number {
  const start = pos
  if (signed && text.charCodeAt(pos) === MINUS) pos++
  const first = pos
  let c = text.charCodeAt(pos)
  if (c === D0) {
    if (first !== start) throw NO // -0 is written 0
    pos++
  } else {
    while (c >= D0 && c <= D9) c = text.charCodeAt(++pos)
    if (pos === first || pos - first > 15) throw NO
  }
  return Number(text.slice(start, pos))
}

/** An array of strings, each a match of `re`, at most `max` of them. */
function strings(re: RegExp, max: number): void {
  expect(LBRACKET)
  if (text.charCodeAt(pos) === RBRACKET) {
    pos++
    return
  }
  for (let n = 1; ; n++) {
    if (n > max) throw NO
    skip(re)
    const c = text.charCodeAt(pos++)
    if (c === RBRACKET) return
    if (c !== COMMA) throw NO
  }
}

function spiffeId(): void {
  if (!isSpiffeId(take(WORD))) throw NO
}

function actor(): void {
  expect(LBRACE)
  if (text.startsWith('"instance":', pos)) {
    pos += 11
    skip(ID)
    expect(COMMA)
  }
  if (!text.startsWith('"spiffe_id":', pos)) throw NO
  pos += 12
  spiffeId()
  expect(RBRACE)
}

function attributes(): void {
  expect(LBRACE)
  if (text.charCodeAt(pos) === RBRACE) {
    pos++
    return
  }
  let prev = ''
  for (let n = 1; ; n++) {
    const key = take(ATTR_NAME)
    if (n > 16 || key <= prev || SECRET_NAME_RE.test(key)) throw NO
    prev = key
    expect(COLON)
    if (text.startsWith('true', pos)) pos += 4
    else if (text.startsWith('false', pos)) pos += 5
    else if (text.charCodeAt(pos) === 0x22) skip(ATTR_VALUE)
    else int(true)
    const c = text.charCodeAt(pos++)
    if (c === RBRACE) return
    if (c !== COMMA) throw NO
  }
}

/** Two digits at `at` as a number (TIME has checked they are digits). */
const two = (at: number): number => (text.charCodeAt(at) - D0) * 10 + text.charCodeAt(at + 1) - D0

/** The time as TIME_RE and Date.parse accept it; when its fields are plainly in range, without a Date.parse. */
function time(): void {
  const at = pos + 1 // after the quote: YYYY-MM-DDTHH:MM:SS
  const s = take(TIME)
  const month = two(at + 5)
  const day = two(at + 8)
  if (month >= 1 && month <= 12 && day >= 1 && day <= 28 && two(at + 11) < 24 && two(at + 14) < 60 && two(at + 17) < 60) return
  if (Number.isNaN(Date.parse(s))) throw NO
}

function scan(): void {
  expect(LBRACE)
  let k = 0
  let v = false
  let hasTime = false
  let type = ''
  let outcome = ''
  let reason = false
  for (;;) {
    // members strictly ascending: the next one is further on in KEYS, and (by its first letter) one of few
    const first = BY_FIRST[text.charCodeAt(pos + 1)]
    if (first === undefined) throw NO
    let i = first
    while (i < KEYS.length && KEYS[i]!.charCodeAt(0) === text.charCodeAt(pos + 1) && (i < k || !text.startsWith(KEY_TEXT[i]!, pos))) i++
    if (i === KEYS.length || KEYS[i]!.charCodeAt(0) !== text.charCodeAt(pos + 1)) throw NO
    const key: Key = KEYS[i]!
    pos += KEY_TEXT[i]!.length
    k = i + 1
    switch (key) {
      case 'v':
        if (int(false) !== 1) throw NO
        v = true
        break
      case 'time':
        time()
        hasTime = true
        break
      case 'type':
        type = take(WORD)
        if (!TYPES.has(type)) throw NO
        break
      case 'outcome':
        outcome = take(WORD)
        if (!OUTCOMES.has(outcome)) throw NO
        break
      case 'reason':
        skip(REASON)
        reason = true
        break
      case 'actor':
        actor()
        break
      case 'subject':
      case 'node':
        spiffeId()
        break
      case 'task_id':
      case 'orchestration_id':
      case 'token_id':
      case 'key_id':
        skip(ID)
        break
      case 'resource':
        strings(RESOURCE, 32)
        break
      case 'scope':
        strings(SCOPE, 64)
        break
      case 'delegation_depth':
        if (int(false) > 64) throw NO
        break
      case 'act_chain_hash':
        skip(ACT_CHAIN_HASH)
        break
      case 'on_behalf_of':
        skip(HASHED_ID)
        break
      case 'attributes':
        attributes()
        break
    }
    const c = text.charCodeAt(pos++)
    if (c === RBRACE) break
    if (c !== COMMA) throw NO
  }
  if (pos !== text.length || !v || !hasTime || type === '' || outcome === '') throw NO
  if (outcome !== 'success' && !reason) throw NO
  if (type === 'node_attestation.refused' && outcome === 'success') throw NO
  if (type === 'node_attestation.accepted' && outcome !== 'success') throw NO
}

const latin1Slice = (Buffer.prototype as unknown as { latin1Slice: (this: Uint8Array, start: number, end: number) => string }).latin1Slice

/** The bytes as a one-byte string, one character per byte (Buffer's own slicer, without a Buffer object per call). */
function latin1(bytes: Uint8Array): string {
  return latin1Slice.call(bytes, 0, bytes.byteLength)
}

/**
 * True when `bytes` are certainly a valid audit event (event.ts, with the
 * secret guard) written in its RFC 8785 form; false when that is not known
 * here (the full check decides).
 */
export function isCanonicalAuditEvent(bytes: Uint8Array): boolean {
  if (bytes.byteLength < 2 || bytes.byteLength > 1 << 20) return false
  // latin1: one character per byte, so a byte above 0x7e is a character no pattern here admits
  text = latin1(bytes)
  pos = 0
  try {
    // a JWT starts `eyJ`, a PEM block `-----BEGIN`; the one-character search first is several times cheaper
    if ((text.includes('J') && text.includes('eyJ')) || (text.includes('BEGIN') && text.includes('-----BEGIN'))) return false
    scan()
    return true
  } catch (err) {
    if (err === NO) return false
    throw err
  } finally {
    text = ''
  }
}
