/**
 * Subject identifiers of Security Event Tokens (RFC 9493; SSF 1.0 §3 adds
 * `jwt_id` and `complex`) and how warrant maps its agents onto them. Pure.
 *
 * warrant's mapping (what its transmitter sends, and what its response
 * policies match):
 * - an agent instance or workload: `{"format": "uri", "uri": "spiffe://..."}`;
 * - one broker token: `{"format": "jwt_id", "iss": <broker issuer>, "jti": ...}`;
 * - several of these about one principal: `{"format": "complex", ...}` with
 *   members `application` (the SPIFFE ID as `uri`), `instance` (the server's
 *   instance ID as `opaque`), `task` (the broker task ID as `opaque`) and
 *   `session` (the token as `jwt_id`);
 * - a stream (SSF `verification`, `stream-updated`): `opaque` with the stream ID.
 * Other RFC 9493 formats (`email`, `iss_sub`, ...) are accepted and kept; no
 * policy matches them.
 */
import { invalidSet, isBoundedString, isRecord } from './event-types.js'

export interface UriSubject {
  readonly format: 'uri'
  readonly uri: string
}
export interface OpaqueSubject {
  readonly format: 'opaque'
  readonly id: string
}
export interface JwtIdSubject {
  readonly format: 'jwt_id'
  readonly iss: string
  readonly jti: string
}
/** Any other simple format (RFC 9493 registry or agreed between the parties). */
export interface OtherSubject {
  readonly format: string
  readonly [member: string]: unknown
}
export type SimpleSubject = UriSubject | OpaqueSubject | JwtIdSubject | OtherSubject
export interface ComplexSubject {
  readonly format: 'complex'
  readonly [member: string]: SimpleSubject | 'complex'
}
export type SubjectIdentifier = SimpleSubject | ComplexSubject

/** Complex members warrant defines (SSF 1.0 §3.3 allows additional names). */
export const WARRANT_COMPLEX_MEMBERS = ['application', 'instance', 'task', 'session'] as const

const MAX_MEMBERS = 16
const MAX_STRING = 2048
const FORMAT = /^[A-Za-z0-9_.:-]{1,64}$/

function isAbsoluteUri(v: unknown): v is string {
  if (!isBoundedString(v, MAX_STRING)) return false
  if (!/^[A-Za-z][A-Za-z0-9+.-]*:/.test(v)) return false
  try {
    new URL(v)
    return true
  } catch {
    return false
  }
}

function checkSimple(v: unknown, path: string): SimpleSubject {
  if (!isRecord(v) || typeof v['format'] !== 'string' || !FORMAT.test(v['format'])) throw invalidSet('sub_id', { path })
  switch (v['format']) {
    case 'complex':
      throw invalidSet('sub_id', { path, why: 'nested complex subject' })
    case 'uri':
      if (!isAbsoluteUri(v['uri'])) throw invalidSet('sub_id', { path, why: 'uri' })
      break
    case 'opaque':
      if (!isBoundedString(v['id'], MAX_STRING)) throw invalidSet('sub_id', { path, why: 'id' })
      break
    case 'jwt_id':
      if (!isBoundedString(v['iss'], MAX_STRING) || !isBoundedString(v['jti'], 256)) throw invalidSet('sub_id', { path, why: 'iss/jti' })
      break
    case 'email':
      if (!isBoundedString(v['email'], 320)) throw invalidSet('sub_id', { path, why: 'email' })
      break
    case 'iss_sub':
      if (!isBoundedString(v['iss'], MAX_STRING) || !isBoundedString(v['sub'], MAX_STRING)) throw invalidSet('sub_id', { path, why: 'iss/sub' })
      break
  }
  return v as unknown as SimpleSubject
}

export interface CheckSubjectOptions {
  /**
   * Complex-subject members the transmitter declared critical
   * (`critical_subject_members`): an event with such a member that warrant
   * cannot process is refused (SSF 1.0 §3.7: MUST discard).
   */
  readonly criticalMembers?: readonly string[]
}

/** Which member formats warrant can process, by complex member name. */
const UNDERSTOOD: Readonly<Record<string, readonly string[]>> = {
  application: ['uri'],
  user: ['uri'],
  instance: ['opaque'],
  task: ['opaque'],
  session: ['jwt_id', 'opaque'],
}

/** Checks a `sub_id` claim; throws ERR_SET_INVALID (`details.reason` `sub_id`). */
export function checkSubject(v: unknown, opts: CheckSubjectOptions = {}): SubjectIdentifier {
  if (!isRecord(v)) throw invalidSet('sub_id', { path: 'sub_id' })
  if (v['format'] !== 'complex') return checkSimple(v, 'sub_id')
  const members = Object.entries(v).filter(([k]) => k !== 'format')
  if (members.length === 0 || members.length > MAX_MEMBERS) throw invalidSet('sub_id', { path: 'sub_id', why: 'complex members' })
  for (const [k, m] of members) {
    if (!/^[A-Za-z0-9_-]{1,64}$/.test(k)) throw invalidSet('sub_id', { path: 'sub_id', why: 'member name' })
    const s = checkSimple(m, `sub_id.${k}`)
    if (opts.criticalMembers?.includes(k) && !(UNDERSTOOD[k]?.includes(s.format) ?? false))
      throw invalidSet('sub_id_critical', { path: `sub_id.${k}`, format: s.format })
  }
  return v as unknown as ComplexSubject
}

/** What a subject says about warrant's principals; every field is absent when the subject does not name it. */
export interface AgentSubject {
  /** An agent instance's or workload's SPIFFE ID. */
  readonly spiffeId?: string
  /** The server's per-instance identity ID. */
  readonly instanceId?: string
  /** A broker task ID. */
  readonly taskId?: string
  /** One token, by its issuer and `jti`. */
  readonly token?: { readonly iss: string; readonly jti: string }
  /** A stream ID (the subject of SSF stream events). */
  readonly streamId?: string
}

function spiffeOf(s: SimpleSubject | undefined): string | undefined {
  return s?.format === 'uri' && typeof s['uri'] === 'string' && s['uri'].startsWith('spiffe://') ? s['uri'] : undefined
}

function opaqueOf(s: SimpleSubject | undefined): string | undefined {
  return s?.format === 'opaque' && typeof s['id'] === 'string' ? s['id'] : undefined
}

function tokenOf(s: SimpleSubject | undefined): { iss: string; jti: string } | undefined {
  return s?.format === 'jwt_id' && typeof s['iss'] === 'string' && typeof s['jti'] === 'string' ? { iss: s['iss'], jti: s['jti'] } : undefined
}

/** Reads warrant's mapping out of a checked subject. */
export function agentSubject(s: SubjectIdentifier, streamEvent = false): AgentSubject {
  if (s.format !== 'complex') {
    const simple = s
    const spiffeId = spiffeOf(simple)
    const token = tokenOf(simple)
    const opaque = streamEvent ? opaqueOf(simple) : undefined
    return { ...(spiffeId ? { spiffeId } : {}), ...(token ? { token } : {}), ...(opaque !== undefined ? { streamId: opaque } : {}) }
  }
  const c = s as Readonly<Record<string, SimpleSubject | undefined>>
  const spiffeId = spiffeOf(c['application']) ?? spiffeOf(c['user'])
  const instanceId = opaqueOf(c['instance'])
  const taskId = opaqueOf(c['task'])
  const token = tokenOf(c['session'])
  return {
    ...(spiffeId ? { spiffeId } : {}),
    ...(instanceId !== undefined ? { instanceId } : {}),
    ...(taskId !== undefined ? { taskId } : {}),
    ...(token ? { token } : {}),
  }
}

/** The subject warrant sends for what it knows about a principal: a simple subject when only one thing is known, else `complex`. */
export function subjectFor(a: Omit<AgentSubject, 'streamId'>): SubjectIdentifier {
  const members: Record<string, SimpleSubject> = {}
  if (a.spiffeId !== undefined) members['application'] = { format: 'uri', uri: a.spiffeId }
  if (a.instanceId !== undefined) members['instance'] = { format: 'opaque', id: a.instanceId }
  if (a.taskId !== undefined) members['task'] = { format: 'opaque', id: a.taskId }
  if (a.token !== undefined) members['session'] = { format: 'jwt_id', iss: a.token.iss, jti: a.token.jti }
  const names = Object.keys(members)
  if (names.length === 0) throw new TypeError('a subject needs at least one of spiffeId, instanceId, taskId, token')
  if (names.length === 1 && (a.spiffeId !== undefined || a.token !== undefined)) return members[names[0]!]!
  return { format: 'complex', ...members }
}

/** The subject of a stream event (SSF 1.0 §8.1.4.1, §8.1.5). */
export function streamSubject(streamId: string): OpaqueSubject {
  return { format: 'opaque', id: streamId }
}
