/**
 * What an audit event must never carry: a token, a key, a PIN, a prompt or
 * personal data. Identifiers that could be personal (a human on whose behalf
 * an agent acts, an email, a user name) are stored only as keyed hashes
 * (`hashIdentifier`), and `assertNoSecrets` refuses any string that looks
 * like a JWT/JWS/JWE or a PEM block, and any field named like a secret.
 */
import { createHmac } from 'node:crypto'
import { IdentityError } from '../errors/identity-error.js'

/** Prefix of a hashed identifier: version 1 = HMAC-SHA-256 with the log's salt, base64url without padding. */
export const HASHED_ID_PREFIX = 'h1:'
export const HASHED_ID_RE = /^h1:[A-Za-z0-9_-]{43}$/

/**
 * A keyed hash of an identifier that could be personal: HMAC-SHA-256(salt,
 * utf8(value)), as `h1:<base64url>`. The salt is per log and secret (kept
 * with the log's operator, not in the log): the same value hashes the same
 * within a log, so events can be correlated, but a reader of the log cannot
 * test guesses without the salt.
 */
export function hashIdentifier(salt: Uint8Array, value: string): string {
  if (salt.byteLength < 16) throw new RangeError('hashIdentifier: the salt must have at least 16 bytes')
  return `${HASHED_ID_PREFIX}${createHmac('sha256', salt).update(value, 'utf8').digest('base64url')}`
}

/** Three base64url segments starting with a JSON header (`eyJ`): a compact JWS (or, with five, a JWE). */
export const JWT_RE = /eyJ[A-Za-z0-9_-]{2,}\.[A-Za-z0-9_-]*\.?/
export const PEM_RE = /-----BEGIN [A-Z0-9 ]+-----/
/** Field names that would hold a secret or a prompt. */
export const SECRET_NAME_RE =
  /(^|_)(token|access_token|refresh_token|id_token|assertion|jwt|password|passwd|pin|secret|private_key|key_material|prompt|authorization|cookie)$/i

/**
 * Throws IdentityError ERR_AUDIT_EVENT_INVALID when `value` (walked
 * recursively) has a string that looks like a JWT or PEM, or a member named
 * like a secret. `path` names the place in the message (never the value).
 */
export function assertNoSecrets(value: unknown, path = '$'): void {
  if (typeof value === 'string') {
    if (JWT_RE.test(value)) throw refusal(path, 'looks like a JWT')
    if (PEM_RE.test(value)) throw refusal(path, 'looks like a PEM block')
    return
  }
  if (Array.isArray(value)) {
    value.forEach((v, i) => assertNoSecrets(v, `${path}[${i}]`))
    return
  }
  if (value !== null && typeof value === 'object') {
    for (const [k, v] of Object.entries(value)) {
      if (SECRET_NAME_RE.test(k)) throw refusal(`${path}.${k}`, 'is named like a secret')
      assertNoSecrets(k, `${path}.<key>`)
      assertNoSecrets(v, `${path}.${k}`)
    }
  }
}

function refusal(path: string, why: string): IdentityError {
  return new IdentityError('ERR_AUDIT_EVENT_INVALID', `audit event field ${path} ${why}; audit events never carry tokens, keys or secrets`, {
    details: { path },
  })
}
