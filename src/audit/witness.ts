/**
 * Witnessing checkpoints: C2SP `tlog-cosignature` (Ed25519 `cosignature/v1`,
 * signature type 0x04) and the `add-checkpoint` step of C2SP `tlog-witness`.
 *
 * A witness is configured with the verifier keys of the logs it follows (a
 * log's origin line is its key name). For each origin it remembers only the
 * latest checkpoint it cosigned. `add-checkpoint` takes the old size, a
 * consistency proof from it, and a new checkpoint; it checks the log's
 * signature, the old size against its record, the proof, and only then
 * records the new checkpoint (durably, before answering) and returns a
 * timestamped cosignature: the statement that, at that time, this is the
 * largest consistent tree it has seen for that log. A log that forked, rolled
 * back or rewrote its history cannot get a cosignature for it, so a verifier
 * that requires a witness's cosignature catches a split view.
 *
 * Pure apart from node:crypto; the record of what was cosigned is a port.
 */
import { createHash, createPublicKey, sign as cryptoSign, verify as cryptoVerify, type KeyObject } from 'node:crypto'
import { IdentityError } from '../errors/identity-error.js'
import { openCheckpoint, parseCheckpointInsecure, type Checkpoint, type NoteVerifier } from './checkpoint.js'
import { HASH_SIZE, verifyConsistency } from './merkle.js'

export const SIG_TYPE_COSIGNATURE_V1 = 0x04
const MAX_PROOF_LINES = 63
const MAX_BODY = 64 * 1024

const bad = (message: string): IdentityError => new IdentityError('ERR_AUDIT_CHECKPOINT_INVALID', message)

function ed25519Raw(publicKey: KeyObject): Buffer {
  if (publicKey.asymmetricKeyType !== 'ed25519') throw new TypeError('a witness key is Ed25519')
  const jwk = publicKey.export({ format: 'jwk' })
  return Buffer.from(jwk.x!, 'base64url')
}

/** SHA-256(name || "\n" || 0x04 || public key)[:4], big-endian. */
export function cosignatureKeyId(name: string, rawPublicKey: Uint8Array): number {
  return createHash('sha256')
    .update(`${name}\n`)
    .update(Buffer.from([SIG_TYPE_COSIGNATURE_V1]))
    .update(rawPublicKey)
    .digest()
    .readUInt32BE(0)
}

/** The witness's verifier key: `<name>+<8 hex key ID>+<base64(0x04 || 32-byte Ed25519 key)>`. */
export function witnessVerifierKey(name: string, publicKey: KeyObject): string {
  if (name === '' || /[\s+]/u.test(name)) throw new TypeError('a witness name has no spaces or +')
  const raw = ed25519Raw(publicKey)
  return `${name}+${cosignatureKeyId(name, raw).toString(16).padStart(8, '0')}+${Buffer.concat([Buffer.from([SIG_TYPE_COSIGNATURE_V1]), raw]).toString('base64')}`
}

/** The message a cosignature/v1 signs: the header line, the time line, and the checkpoint's note text. */
export function cosignedMessage(text: string, timestamp: number): Buffer {
  return Buffer.from(`cosignature/v1\ntime ${timestamp}\n${text}`, 'utf8')
}

/** A cosignature verifier, usable with openCheckpoint; `lastTimestamp` is the time of the last cosignature it verified. */
export interface CosignatureVerifier extends NoteVerifier {
  lastTimestamp: number | undefined
}

/** Parses a witness verifier key (type 0x04). */
export function parseWitnessVerifierKey(vkey: string, opts: { maxFutureSec?: number; now?: () => number } = {}): CosignatureVerifier {
  const v = vkey.trim()
  const i = v.indexOf('+')
  const j = i < 0 ? -1 : v.indexOf('+', i + 1)
  if (i < 0 || j < 0) throw bad('a verifier key is <name>+<key id>+<base64 key>')
  const [name, hash, b64] = [v.slice(0, i), v.slice(i + 1, j), v.slice(j + 1)]
  if (name === '' || /\s/u.test(name)) throw bad('verifier key name is empty or has spaces')
  if (!/^[0-9a-f]{8}$/.test(hash) || !/^[A-Za-z0-9+/]+={0,2}$/.test(b64)) throw bad('malformed witness verifier key')
  const bytes = Buffer.from(b64, 'base64')
  if (bytes[0] !== SIG_TYPE_COSIGNATURE_V1 || bytes.byteLength !== 33) throw bad('not an Ed25519 cosignature/v1 verifier key (type 0x04)')
  const raw = bytes.subarray(1)
  const keyId = cosignatureKeyId(name, raw)
  if (keyId !== Number.parseInt(hash, 16)) throw bad('verifier key id does not match its key')
  const key = createPublicKey({ key: { kty: 'OKP', crv: 'Ed25519', x: raw.toString('base64url') }, format: 'jwk' })
  const now = opts.now ?? (() => Math.floor(Date.now() / 1000))
  const maxFuture = opts.maxFutureSec ?? 300
  const out: CosignatureVerifier = {
    name,
    keyId,
    lastTimestamp: undefined,
    verify(text, signature) {
      if (signature.byteLength !== 72) return false
      const ts = Buffer.from(signature.buffer, signature.byteOffset, 8).readBigUInt64BE(0)
      if (ts > BigInt(Number.MAX_SAFE_INTEGER) || Number(ts) > now() + maxFuture) return false
      const msg = cosignedMessage(Buffer.from(text).toString('utf8'), Number(ts))
      try {
        if (!cryptoVerify(null, msg, key, signature.subarray(8))) return false
      } catch {
        return false
      }
      out.lastTimestamp = Number(ts)
      return true
    },
  }
  return out
}

/** A cosignature line `— <name> <base64(key ID || timestamp || signature)>` over a checkpoint's note text. */
export function cosign(text: string, name: string, privateKey: KeyObject, timestamp: number): string {
  const raw = ed25519Raw(createPublicKey(privateKey))
  const sig = cryptoSign(null, cosignedMessage(text, timestamp), privateKey)
  const head = Buffer.alloc(12)
  head.writeUInt32BE(cosignatureKeyId(name, raw), 0)
  head.writeBigUInt64BE(BigInt(timestamp), 4)
  return `— ${name} ${Buffer.concat([head, sig]).toString('base64')}\n`
}

/** The latest checkpoint a witness cosigned for one origin. */
export interface WitnessRecord {
  readonly size: number
  readonly rootHash: string
}

/** Where a witness keeps its records; `put` is durable when it resolves. */
export interface WitnessState {
  get(origin: string): WitnessRecord | undefined
  put(origin: string, record: WitnessRecord): Promise<void>
}

export interface WitnessOptions {
  name: string
  privateKey: KeyObject
  /** The logs followed: their checkpoint verifier keys, by origin (the key's name). */
  logs: readonly NoteVerifier[]
  state: WitnessState
  now?: () => number
}

/** An HTTP answer of add-checkpoint. */
export interface WitnessAnswer {
  status: 200 | 400 | 403 | 404 | 409 | 422
  contentType: string
  body: string
  /** What the log should be told (never a secret). */
  reason: string
}

const answer = (status: WitnessAnswer['status'], reason: string, body = '', contentType = 'text/plain; charset=utf-8'): WitnessAnswer => ({
  status,
  contentType,
  body,
  reason,
})

/** The C2SP tlog-witness `add-checkpoint` step, serialised so that checking the old size and recording the new one are atomic. */
export class Witness {
  readonly name: string
  readonly #key: KeyObject
  readonly #logs = new Map<string, NoteVerifier[]>()
  readonly #state: WitnessState
  readonly #now: () => number
  #queue: Promise<unknown> = Promise.resolve()

  constructor(o: WitnessOptions) {
    ed25519Raw(createPublicKey(o.privateKey))
    this.name = o.name
    this.#key = o.privateKey
    for (const l of o.logs) this.#logs.set(l.name, [...(this.#logs.get(l.name) ?? []), l])
    this.#state = o.state
    this.#now = o.now ?? (() => Math.floor(Date.now() / 1000))
  }

  /** This witness's verifier key. */
  verifierKey(): string {
    return witnessVerifierKey(this.name, createPublicKey(this.#key))
  }

  addCheckpoint(body: string): Promise<WitnessAnswer> {
    const run = this.#queue.then(() => this.#add(body))
    this.#queue = run.catch(() => undefined)
    return run
  }

  async #add(body: string): Promise<WitnessAnswer> {
    if (typeof body !== 'string' || body.length > MAX_BODY) return answer(400, 'body too large')
    const blank = body.indexOf('\n\n')
    if (blank < 0) return answer(400, 'no empty line before the checkpoint')
    const head = body.slice(0, blank).split('\n')
    const note = body.slice(blank + 2)
    const m = /^old (0|[1-9][0-9]{0,15})$/.exec(head[0] ?? '')
    if (!m) return answer(400, 'malformed old size line')
    const oldSize = Number(m[1])
    const proofLines = head.slice(1)
    if (proofLines.length > MAX_PROOF_LINES) return answer(400, 'too many proof lines')
    const proof: Buffer[] = []
    for (const l of proofLines) {
      if (!/^[A-Za-z0-9+/]{43}=$/.test(l)) return answer(400, 'malformed proof line')
      proof.push(Buffer.from(l, 'base64'))
    }
    let origin: string
    try {
      origin = parseCheckpointInsecure(note).origin
    } catch {
      return answer(400, 'malformed checkpoint')
    }
    const verifiers = this.#logs.get(origin)
    if (!verifiers) return answer(404, 'unknown log origin')
    let cp: Checkpoint | undefined
    for (const v of verifiers) {
      try {
        cp = openCheckpoint(note, v)
        break
      } catch {
        // a line of this key that fails, or none: try the log's other keys
      }
    }
    if (!cp) return answer(403, 'no valid signature by a known key of the log')
    if (oldSize > cp.size) return answer(400, 'old size is larger than the checkpoint size')
    const rec = this.#state.get(origin)
    const latest = rec?.size ?? 0
    if (oldSize !== latest) return answer(409, 'old size is not the latest cosigned size', `${latest}\n`, 'text/x.tlog.size')
    const root = Buffer.from(cp.rootHash).toString('base64')
    if (oldSize === 0) {
      if (proof.length !== 0) return answer(400, 'a proof from size 0 must be empty')
    } else if (oldSize === cp.size) {
      if (rec!.rootHash !== root) return answer(409, 'same size, another root hash: the log forked', `${latest}\n`, 'text/x.tlog.size')
    } else {
      const oldRoot = Buffer.from(rec!.rootHash, 'base64')
      if (oldRoot.byteLength !== HASH_SIZE || !verifyConsistency(oldSize, cp.size, oldRoot, cp.rootHash, proof))
        return answer(422, 'the consistency proof does not verify')
    }
    await this.#state.put(origin, { size: cp.size, rootHash: root })
    const text = note.slice(0, note.lastIndexOf('\n\n') + 1)
    return answer(200, 'cosigned', cosign(text, this.name, this.#key, this.#now()))
  }
}
