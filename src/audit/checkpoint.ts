/**
 * Checkpoints: the C2SP `tlog-checkpoint` signed note
 * (https://c2sp.org/tlog-checkpoint, https://c2sp.org/signed-note):
 *
 *     <origin>\n<tree size, decimal>\n<base64 root hash>\n[extension lines\n]
 *     \n
 *     — <key name> <base64(4-byte big-endian key ID || signature)>\n
 *
 * Signature type: C2SP signed-note assigns `0x02` to "ECDSA signatures as
 * implemented by github.com/transparency-dev/witness" (P-256 recommended):
 * ECDSA over SHA-256(note text), the signature ASN.1 DER (Go's
 * `ecdsa.VerifyASN1`), key ID = SHA-256(DER SPKI public key)[:4], and the
 * verifier key `<name>+<8 hex key ID>+<base64(0x02 || DER SPKI)>`. We use
 * exactly that, because our KeyManagers hold ECDSA P-256 keys (no Ed25519
 * in PKCS#11 today): the key stays in the HSM, its `Signer` returns IEEE
 * P1363 r||s, which we re-encode as DER. Anyone with the verifier key (and
 * witness software that speaks type 0x02) can check a checkpoint.
 */
import { createHash, createPublicKey, verify as cryptoVerify, type KeyObject } from 'node:crypto'
import { IdentityError } from '../errors/identity-error.js'
import type { Signer } from '../spiffe/signer.js'
import { HASH_SIZE } from './merkle.js'

export const SIG_TYPE_ECDSA = 0x02

export interface Checkpoint {
  readonly origin: string
  readonly size: number
  readonly rootHash: Uint8Array
  /** Opaque extension lines (we write none). */
  readonly extensions: readonly string[]
}

/** Signs note texts under one key name. */
export interface NoteSigner {
  readonly name: string
  readonly keyId: number
  sign(text: Uint8Array): Promise<Uint8Array>
}

/** Checks signatures of one key name and key ID. */
export interface NoteVerifier {
  readonly name: string
  readonly keyId: number
  verify(text: Uint8Array, signature: Uint8Array): boolean
}

const bad = (message: string, details?: Record<string, unknown>): IdentityError =>
  new IdentityError('ERR_AUDIT_CHECKPOINT_INVALID', message, details === undefined ? undefined : { details })

/** True when `s` has a character below U+0020 other than those `allowed`, or DEL. */
function hasControl(s: string, allowed = ''): boolean {
  for (let i = 0; i < s.length; i++) {
    const c = s.charCodeAt(i)
    if ((c < 0x20 || c === 0x7f) && !allowed.includes(s[i]!)) return true
  }
  return false
}

/** Key names and origins: non-empty, no Unicode space, no `+`, no control character. */
function checkName(name: string, what: string): void {
  if (name === '' || /[\s+]/u.test(name) || hasControl(name)) throw new TypeError(`${what} must be non-empty, without spaces, '+' or control characters`)
}

/** The note text of a checkpoint (ends in a newline). */
export function checkpointText(c: Checkpoint): string {
  if (c.origin === '' || hasControl(c.origin)) throw new TypeError('checkpoint origin must be a non-empty line')
  if (!Number.isSafeInteger(c.size) || c.size < 0) throw new RangeError('checkpoint size must be a non-negative integer')
  if (c.rootHash.byteLength !== HASH_SIZE) throw new RangeError('checkpoint root hash must be 32 bytes')
  for (const e of c.extensions) if (e === '' || hasControl(e)) throw new TypeError('checkpoint extension lines must be non-empty lines')
  return [c.origin, String(c.size), Buffer.from(c.rootHash).toString('base64'), ...c.extensions].map((l) => `${l}\n`).join('')
}

/** DER SPKI of an EC P-256 public key; TypeError for anything else. */
function p256Spki(publicKey: KeyObject): Buffer {
  if (publicKey.asymmetricKeyType !== 'ec' || publicKey.asymmetricKeyDetails?.namedCurve !== 'prime256v1') {
    throw new TypeError('checkpoint keys are ECDSA P-256 (signed-note type 0x02)')
  }
  return publicKey.export({ type: 'spki', format: 'der' })
}

/** Key ID of signature type 0x02: the first four bytes of SHA-256(DER SPKI), big-endian. */
export function ecdsaKeyId(spki: Uint8Array): number {
  return createHash('sha256').update(spki).digest().readUInt32BE(0)
}

/** The verifier key string: `<name>+<8 hex key ID>+<base64(0x02 || DER SPKI)>`. */
export function verifierKey(name: string, publicKey: KeyObject): string {
  checkName(name, 'key name')
  const spki = p256Spki(publicKey)
  return `${name}+${ecdsaKeyId(spki).toString(16).padStart(8, '0')}+${Buffer.concat([Buffer.from([SIG_TYPE_ECDSA]), spki]).toString('base64')}`
}

/** Parses a verifier key; IdentityError ERR_AUDIT_CHECKPOINT_INVALID when malformed, of another type, or its key ID does not match. */
export function parseVerifierKey(vkey: string): NoteVerifier {
  // split at the first two '+' only: base64 has '+' of its own
  const v = vkey.trim()
  const i = v.indexOf('+')
  const j = i < 0 ? -1 : v.indexOf('+', i + 1)
  if (i < 0 || j < 0) throw bad('a verifier key is <name>+<key id>+<base64 key>')
  const [name, hash, b64] = [v.slice(0, i), v.slice(i + 1, j), v.slice(j + 1)]
  if (name === '' || /\s/u.test(name)) throw bad('verifier key name is empty or has spaces')
  if (!/^[0-9a-f]{8}$/.test(hash)) throw bad('verifier key id must be 8 hex digits')
  if (!/^[A-Za-z0-9+/]+={0,2}$/.test(b64)) throw bad('verifier key is not base64')
  const bytes = Buffer.from(b64, 'base64')
  if (bytes[0] !== SIG_TYPE_ECDSA) throw bad(`verifier key type 0x${(bytes[0] ?? 0).toString(16).padStart(2, '0')} is not supported (ECDSA, 0x02, only)`)
  const spki = bytes.subarray(1)
  const keyId = ecdsaKeyId(spki)
  if (keyId !== Number.parseInt(hash, 16)) throw bad('verifier key id does not match its key')
  let publicKey: KeyObject
  try {
    publicKey = createPublicKey({ key: spki, format: 'der', type: 'spki' })
    p256Spki(publicKey)
  } catch (cause) {
    throw new IdentityError('ERR_AUDIT_CHECKPOINT_INVALID', 'verifier key is not an ECDSA P-256 public key', { cause })
  }
  return {
    name,
    keyId,
    verify: (text, signature) => {
      try {
        return cryptoVerify('sha256', text, { key: publicKey, dsaEncoding: 'der' }, signature)
      } catch {
        return false
      }
    },
  }
}

/** IEEE P1363 r||s (what a `Signer` returns) to ASN.1 DER `SEQUENCE { r INTEGER, s INTEGER }`. */
export function p1363ToDer(sig: Uint8Array): Buffer {
  if (sig.byteLength === 0 || sig.byteLength % 2 !== 0) throw new RangeError('an IEEE P1363 signature has two equal halves')
  const half = sig.byteLength / 2
  const int = (b: Uint8Array): Buffer => {
    let i = 0
    while (i < b.byteLength - 1 && b[i] === 0) i++
    const v = Buffer.from(b.subarray(i))
    const body = (v[0]! & 0x80) !== 0 ? Buffer.concat([Buffer.from([0]), v]) : v
    return Buffer.concat([Buffer.from([0x02]), derLength(body.byteLength), body])
  }
  const seq = Buffer.concat([int(sig.subarray(0, half)), int(sig.subarray(half))])
  return Buffer.concat([Buffer.from([0x30]), derLength(seq.byteLength), seq])
}

function derLength(n: number): Buffer {
  if (n < 0x80) return Buffer.from([n])
  if (n < 0x100) return Buffer.from([0x81, n])
  return Buffer.from([0x82, n >> 8, n & 0xff])
}

/** A note signer over a KeyManager key (or any `Signer`) holding an ECDSA P-256 key: the private key never leaves it. */
export function ecdsaNoteSigner(name: string, signer: Signer): NoteSigner {
  checkName(name, 'key name')
  const keyId = ecdsaKeyId(p256Spki(signer.publicKey))
  return { name, keyId, sign: async (text) => p1363ToDer(await signer.sign(text, 'ES256')) }
}

/** Signs `c` with each signer: the complete signed note. */
export async function signCheckpoint(c: Checkpoint, signers: readonly NoteSigner[]): Promise<string> {
  if (signers.length === 0) throw new TypeError('signCheckpoint needs a signer')
  const text = checkpointText(c)
  const bytes = Buffer.from(text, 'utf8')
  const lines: string[] = []
  for (const s of signers) {
    const id = Buffer.alloc(4)
    id.writeUInt32BE(s.keyId)
    lines.push(`— ${s.name} ${Buffer.concat([id, await s.sign(bytes)]).toString('base64')}\n`)
  }
  return `${text}\n${lines.join('')}`
}

/** Adds signature lines (e.g. a witness's cosignature) to a signed note. */
export function addSignatures(note: string, lines: readonly string[]): string {
  return note + lines.map((l) => (l.endsWith('\n') ? l : `${l}\n`)).join('')
}

const MAX_NOTE_BYTES = 1 << 20
const MAX_SIGNATURES = 100

interface SplitNote {
  text: string
  signatures: { name: string; keyId: number; signature: Buffer }[]
}

function splitNote(note: string): SplitNote {
  if (note.length > MAX_NOTE_BYTES) throw bad('checkpoint note is too large')
  if (hasControl(note, '\n')) throw bad('checkpoint note has a control character')
  if (!note.endsWith('\n')) throw bad('checkpoint note does not end in a newline')
  const sep = note.lastIndexOf('\n\n')
  if (sep < 0) throw bad('checkpoint note has no signature block')
  const text = note.slice(0, sep + 1)
  const sigLines = note.slice(sep + 2, -1).split('\n')
  if (sigLines.length > MAX_SIGNATURES) throw bad('checkpoint note has too many signatures')
  const signatures = sigLines.map((l) => {
    const m = /^— (\S+) ([A-Za-z0-9+/]+={0,2})$/u.exec(l)
    if (!m) throw bad('checkpoint note has a malformed signature line')
    const raw = Buffer.from(m[2]!, 'base64')
    if (raw.byteLength < 5) throw bad('checkpoint note has a signature too short')
    return { name: m[1]!, keyId: raw.readUInt32BE(0), signature: raw.subarray(4) }
  })
  return { text, signatures }
}

function parseText(text: string): Checkpoint {
  const lines = text.slice(0, -1).split('\n')
  if (lines.length < 3) throw bad('checkpoint text has fewer than three lines')
  const [origin, size, root, ...extensions] = lines as [string, string, string, ...string[]]
  if (origin === '') throw bad('checkpoint origin is empty')
  if (!/^(0|[1-9][0-9]{0,15})$/.test(size) || !Number.isSafeInteger(Number(size))) throw bad('checkpoint tree size is not a decimal without leading zeroes')
  if (!/^[A-Za-z0-9+/]{43}=$/.test(root)) throw bad('checkpoint root hash is not 32 bytes of base64')
  if (extensions.some((e) => e === '')) throw bad('checkpoint has an empty extension line')
  return { origin, size: Number(size), rootHash: Buffer.from(root, 'base64'), extensions }
}

/**
 * Parses a checkpoint WITHOUT checking any signature: for listing and
 * locating only. Use `openCheckpoint` to trust it.
 */
export function parseCheckpointInsecure(note: string): Checkpoint {
  return parseText(splitNote(note).text)
}

/**
 * Verifies a checkpoint note against `verifier` (signed-note rules: lines of
 * other keys are ignored; a line of this key that fails rejects the note; at
 * least one must verify) and returns its parsed text. Throws IdentityError
 * ERR_AUDIT_CHECKPOINT_INVALID.
 */
export function openCheckpoint(note: string, verifier: NoteVerifier): Checkpoint {
  const { text, signatures } = splitNote(note)
  const bytes = Buffer.from(text, 'utf8')
  let ok = false
  for (const s of signatures) {
    if (s.name !== verifier.name || s.keyId !== verifier.keyId) continue
    if (!verifier.verify(bytes, s.signature)) throw bad(`checkpoint signature by ${verifier.name} does not verify`, { kind: 'signature_invalid' })
    ok = true
  }
  if (!ok) throw bad(`checkpoint is not signed by ${verifier.name}+${verifier.keyId.toString(16).padStart(8, '0')}`, { kind: 'signature_missing' })
  return parseText(text)
}
