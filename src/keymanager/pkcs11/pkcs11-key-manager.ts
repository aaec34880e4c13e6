/**
 * KeyManager over a PKCS#11 token (an HSM, or SoftHSM2), through pkcs11js.
 * Keys are generated inside the token, are sensitive and non-extractable, and
 * are found again by label (`<key_label_prefix><id>`) after a restart; a key
 * found that way is refused unless the token has always kept it secret.
 * Sealing keys are AES-256 secret keys generated in the token under
 * `<key_label_prefix>sealing-<id>`, used with CKM_AES_GCM, held to the same rule.
 */
import { createHash, createPublicKey, randomBytes, type KeyObject } from 'node:crypto'
import { IdentityError } from '../../errors/index.js'
import { F, nullLogger, type Logger } from '../../common/log/logger.js'
import type { SignatureAlgorithm } from '../../spiffe/signer.js'
import type { KeyManager, KeyType, ManagedKey, SealingKey } from '../key-manager.js'
import { assertKeyId, assertKeyType, hashForAlgorithm, HASH_LENGTH, type HashName } from '../memory/software-key.js'
import { assertOpenArgs, assertSealArgs, buildEnvelope, parseEnvelope, sealedDataInvalid, SEALED_IV_BYTES, SEALED_TAG_BYTES } from '../sealed-envelope.js'
import { acquireModule, ckrName, isCkr, isLastReference, pkcs11js, releaseModule, type Handle, type Pkcs11 } from './module.js'
import { SessionPool } from './session-pool.js'

/** Typed configuration (the file config's `pin_file` / `pin_env` already resolved to `pin`). */
export interface Pkcs11Config {
  module_path: string
  /** Token label; exactly one of token_label and slot. */
  token_label?: string
  /** Slot id; exactly one of token_label and slot. */
  slot?: number
  /** Label prefix of our objects; default `warrant-`. */
  key_label_prefix?: string
  /** User PIN. Never logged, never put in an error. */
  pin: string
  /** Logged-in sessions kept open; default 4. */
  session_pool_size?: number
  /**
   * How C_Sign is called. `async`: on the libuv thread pool, so sessions sign in
   * parallel and a slow (network) HSM never blocks the event loop. `sync`: on
   * the calling thread, cheapest for a fast local token. `auto` (default): sync
   * while the token answers a key type in under 1 ms on average, async from the
   * first time it does not (per key type, one way).
   */
  sign_mode?: SignMode
}

export type SignMode = 'auto' | 'sync' | 'async'

/** Average synchronous C_SignInit + C_Sign time above which `auto` switches a key type to async calls. */
const AUTO_ASYNC_THRESHOLD_MS = 1

class SignTimer {
  #avg = 0
  #n = 0
  readonly #adaptive: boolean
  async: boolean
  constructor(mode: SignMode) {
    this.async = mode === 'async'
    this.#adaptive = mode === 'auto'
  }
  record(ms: number): void {
    if (!this.#adaptive) return
    this.#n += 1
    this.#avg += (ms - this.#avg) / Math.min(this.#n, 16)
    if (this.#avg > AUTO_ASYNC_THRESHOLD_MS) this.async = true
  }
}

export const DEFAULT_KEY_LABEL_PREFIX = 'warrant-'
export const DEFAULT_SESSION_POOL_SIZE = 4

const EC_PARAMS: Record<'ec-p256' | 'ec-p384', { oid: Buffer; crv: string; size: number }> = {
  'ec-p256': { oid: Buffer.from('06082a8648ce3d030107', 'hex'), crv: 'P-256', size: 32 },
  'ec-p384': { oid: Buffer.from('06052b81040022', 'hex'), crv: 'P-384', size: 48 },
}

const HASH_MECHS: Record<HashName, { hash: number; rsa: number; pss: number; mgf: number }> = {
  sha256: { hash: pkcs11js.CKM_SHA256, rsa: pkcs11js.CKM_SHA256_RSA_PKCS, pss: pkcs11js.CKM_SHA256_RSA_PKCS_PSS, mgf: pkcs11js.CKG_MGF1_SHA256 },
  sha384: { hash: pkcs11js.CKM_SHA384, rsa: pkcs11js.CKM_SHA384_RSA_PKCS, pss: pkcs11js.CKM_SHA384_RSA_PKCS_PSS, mgf: pkcs11js.CKG_MGF1_SHA384 },
  sha512: { hash: pkcs11js.CKM_SHA512, rsa: pkcs11js.CKM_SHA512_RSA_PKCS, pss: pkcs11js.CKM_SHA512_RSA_PKCS_PSS, mgf: pkcs11js.CKG_MGF1_SHA512 },
}

function notFound(id: string): IdentityError {
  return new IdentityError('ERR_KEY_NOT_FOUND', `key "${id}" not found`, { details: { key_id: id } })
}

function hsmError(op: string, cause: unknown): unknown {
  if (cause instanceof IdentityError || cause instanceof TypeError || cause instanceof RangeError) return cause
  const name = ckrName(cause)
  return new IdentityError('ERR_HSM_UNAVAILABLE', `PKCS#11 ${op} failed: ${name ?? 'error'}`, { cause, details: { reason: name } })
}

function ulong(buf: Buffer): number {
  if (buf.length >= 8) return Number(buf.readBigUInt64LE(0))
  if (buf.length >= 4) return buf.readUInt32LE(0)
  return buf.readUIntLE(0, buf.length)
}

function slotId(handle: Handle): bigint {
  let v = 0n
  for (let i = handle.length - 1; i >= 0; i--) v = (v << 8n) | BigInt(handle[i]!)
  return v
}

function b64u(buf: Buffer): string {
  return buf.toString('base64url')
}

/** Unwraps a DER OCTET STRING around an EC point (CKA_EC_POINT); accepts a bare point too. */
function unwrapEcPoint(raw: Buffer, size: number): Buffer {
  const pointLen = 1 + 2 * size
  if (raw.length === pointLen && raw[0] === 0x04) return raw
  if (raw[0] === 0x04) {
    let off = 2
    let len = raw[1]!
    if (len & 0x80) {
      const n = len & 0x7f
      len = raw.readUIntBE(2, n)
      off = 2 + n
    }
    const inner = raw.subarray(off, off + len)
    if (inner.length === pointLen && inner[0] === 0x04) return inner
  }
  throw new IdentityError('ERR_HSM_UNAVAILABLE', 'PKCS#11 token returned an EC point that is not an uncompressed point')
}

function ecTypeFromParams(params: Buffer): 'ec-p256' | 'ec-p384' | undefined {
  if (params.equals(EC_PARAMS['ec-p256'].oid)) return 'ec-p256'
  if (params.equals(EC_PARAMS['ec-p384'].oid)) return 'ec-p384'
  return undefined
}

interface KeyInfo {
  type: KeyType
  publicKey: KeyObject
}

/** A key held in the token. Signing runs C_Sign on a pooled session; the private key never leaves the token. */
export class Pkcs11Key implements ManagedKey {
  readonly id: string
  readonly type: KeyType
  readonly publicKey: KeyObject
  #handle: Handle
  readonly #km: Pkcs11KeyManager
  readonly #modulusBytes: number

  /** @internal created by Pkcs11KeyManager */
  constructor(km: Pkcs11KeyManager, id: string, info: KeyInfo, handle: Handle) {
    this.#km = km
    this.id = id
    this.type = info.type
    this.publicKey = info.publicKey
    this.#handle = handle
    this.#modulusBytes = info.type.startsWith('rsa-') ? Number(info.type.slice(4)) / 8 : 0
  }

  async sign(data: Uint8Array, alg: SignatureAlgorithm): Promise<Uint8Array> {
    const hash = hashForAlgorithm(this.type, alg)
    let mechanism: { mechanism: number; parameter?: { type: number; hashAlg: number; mgf: number; saltLen: number } }
    let input: Buffer
    let outLen: number
    if (this.type === 'ec-p256' || this.type === 'ec-p384') {
      // SoftHSM2 2.6 has no CKM_ECDSA_SHA*: hash here, sign the digest in the token. The result is raw r||s.
      mechanism = { mechanism: pkcs11js.CKM_ECDSA }
      input = createHash(hash).update(data).digest()
      outLen = 2 * EC_PARAMS[this.type].size
    } else if (alg.startsWith('PS')) {
      const m = HASH_MECHS[hash]
      mechanism = { mechanism: m.pss, parameter: { type: pkcs11js.CK_PARAMS_RSA_PSS, hashAlg: m.hash, mgf: m.mgf, saltLen: HASH_LENGTH[hash] } }
      input = Buffer.from(data.buffer, data.byteOffset, data.byteLength)
      outLen = this.#modulusBytes
    } else {
      mechanism = { mechanism: HASH_MECHS[hash].rsa }
      input = Buffer.from(data.buffer, data.byteOffset, data.byteLength)
      outLen = this.#modulusBytes
    }
    const timer = this.#km._signTimer(this.type)
    const run = (handle: Handle) =>
      this.#km._withSession((p, session) => {
        if (timer === undefined || timer.async) {
          p.C_SignInit(session, mechanism, handle)
          return p.C_SignAsync(session, input, Buffer.alloc(outLen))
        }
        const t0 = performance.now()
        p.C_SignInit(session, mechanism, handle)
        const sig = p.C_Sign(session, input, Buffer.alloc(outLen))
        timer.record(performance.now() - t0)
        return sig
      })
    try {
      return await run(this.#handle)
    } catch (err) {
      if (!isCkr(err, 'CKR_KEY_HANDLE_INVALID', 'CKR_OBJECT_HANDLE_INVALID')) throw hsmError('C_Sign', err)
      // Handle gone: the key was deleted, replaced, or the token re-indexed its objects. Look it up again by
      // label, but only sign with it if it is still the same key pair.
      this.#handle = await this.#km._findSameKey(this)
      try {
        return await run(this.#handle)
      } catch (err2) {
        throw hsmError('C_Sign', err2)
      }
    }
  }

  toJSON(): { id: string; type: KeyType } {
    return { id: this.id, type: this.type }
  }
}

/**
 * What a token answers C_Decrypt with when the GCM tag does not verify: PKCS#11 3.0 says
 * CKR_AEAD_DECRYPT_FAILED, 2.40 tokens say CKR_ENCRYPTED_DATA_INVALID, and SoftHSM2 2.6
 * says CKR_GENERAL_ERROR (the envelope's shape has been checked before, so nothing else
 * about the input is wrong by then).
 */
const TAG_REFUSED = ['CKR_AEAD_DECRYPT_FAILED', 'CKR_ENCRYPTED_DATA_INVALID', 'CKR_ENCRYPTED_DATA_LEN_RANGE', 'CKR_GENERAL_ERROR']

function gcmMechanism(iv: Buffer, aad: Uint8Array): { mechanism: number; parameter: pkcs11js.GcmParams } {
  return {
    mechanism: pkcs11js.CKM_AES_GCM,
    parameter: {
      type: pkcs11js.CK_PARAMS_GCM,
      iv,
      ivBits: SEALED_IV_BYTES * 8,
      aad: Buffer.from(aad.buffer, aad.byteOffset, aad.byteLength),
      tagBits: SEALED_TAG_BYTES * 8,
    },
  }
}

/**
 * An AES-256 key held in the token. seal and open run CKM_AES_GCM on a pooled
 * session (C_EncryptAsync / C_DecryptAsync, off the event loop); the key value
 * never leaves the token. `ckaId` (random, set at generation) tells this key
 * from another one later put under the same label.
 */
export class Pkcs11SealingKey implements SealingKey {
  readonly id: string
  readonly #km: Pkcs11KeyManager
  readonly #ckaId: Buffer
  #handle: Handle

  /** @internal created by Pkcs11KeyManager */
  constructor(km: Pkcs11KeyManager, id: string, handle: Handle, ckaId: Buffer) {
    this.#km = km
    this.id = id
    this.#handle = handle
    this.#ckaId = ckaId
  }

  async seal(plaintext: Uint8Array, aad: Uint8Array): Promise<Uint8Array> {
    assertSealArgs(plaintext, aad)
    const iv = randomBytes(SEALED_IV_BYTES)
    const input = Buffer.from(plaintext.buffer, plaintext.byteOffset, plaintext.byteLength)
    const ct = await this.#run('C_Encrypt', (p, session, handle) => {
      p.C_EncryptInit(session, gcmMechanism(iv, aad), handle)
      return p.C_EncryptAsync(session, input, Buffer.alloc(input.length + SEALED_TAG_BYTES))
    })
    if (ct.length !== input.length + SEALED_TAG_BYTES) throw new IdentityError('ERR_HSM_UNAVAILABLE', 'PKCS#11 C_Encrypt returned an unexpected length')
    return buildEnvelope(iv, ct)
  }

  async open(sealed: Uint8Array, aad: Uint8Array): Promise<Uint8Array> {
    assertOpenArgs(sealed, aad)
    const { iv, ciphertextAndTag } = parseEnvelope(this.id, sealed)
    // Room for ciphertext and tag: some tokens want the input's length even though the tag is not returned.
    const out = Buffer.alloc(ciphertextAndTag.length)
    let pt: Buffer
    try {
      pt = await this.#run('C_Decrypt', (p, session, handle) => {
        p.C_DecryptInit(session, gcmMechanism(iv, aad), handle)
        return p.C_DecryptAsync(session, ciphertextAndTag, out)
      })
    } catch (err) {
      out.fill(0) // whatever the token wrote before refusing never leaves this function
      if (err instanceof IdentityError && isCkr(err.cause, ...TAG_REFUSED)) throw sealedDataInvalid(this.id, 'authentication_failed', err.cause)
      throw err
    }
    if (pt.length !== ciphertextAndTag.length - SEALED_TAG_BYTES) {
      out.fill(0)
      throw new IdentityError('ERR_HSM_UNAVAILABLE', 'PKCS#11 C_Decrypt returned an unexpected length')
    }
    return new Uint8Array(pt.buffer, pt.byteOffset, pt.byteLength)
  }

  async #run(op: string, fn: (p: Pkcs11, session: Handle, handle: Handle) => Promise<Buffer>): Promise<Buffer> {
    try {
      return await this.#km._withSession((p, session) => fn(p, session, this.#handle))
    } catch (err) {
      if (!isCkr(err, 'CKR_KEY_HANDLE_INVALID', 'CKR_OBJECT_HANDLE_INVALID')) throw hsmError(op, err)
      // Handle gone (key deleted, or the token re-indexed its objects): use the key under the label only if it is this one.
      this.#handle = await this.#km._findSameSealingKey(this.id, this.#ckaId)
      try {
        return await this.#km._withSession((p, session) => fn(p, session, this.#handle))
      } catch (err2) {
        throw hsmError(op, err2)
      }
    }
  }

  toJSON(): { id: string } {
    return { id: this.id }
  }
}

/**
 * PKCS#11 KeyManager. Open with `Pkcs11KeyManager.open(config)`; close it to
 * log out, close its sessions and (when it is the module's last user) C_Finalize.
 */
export class Pkcs11KeyManager implements KeyManager {
  readonly #p: Pkcs11
  readonly #modulePath: string
  readonly #pool: SessionPool
  readonly #prefix: string
  readonly #log: Logger
  readonly #tokenLabel: string
  readonly #signMode: SignMode
  readonly #timers = new Map<KeyType, SignTimer>()
  /** sealingKey calls in flight, so that one process creates a sealing key once. */
  readonly #sealingInFlight = new Map<string, Promise<SealingKey>>()
  #closed = false

  private constructor(p: Pkcs11, modulePath: string, pool: SessionPool, prefix: string, tokenLabel: string, signMode: SignMode, log: Logger) {
    this.#p = p
    this.#signMode = signMode
    this.#modulePath = modulePath
    this.#pool = pool
    this.#prefix = prefix
    this.#tokenLabel = tokenLabel
    this.#log = log
  }

  /**
   * Loads the module, finds the token, opens the session pool and logs in.
   * Errors: ERR_HSM_UNAVAILABLE (module cannot be loaded, no such token),
   * ERR_HSM_LOGIN_FAILED (wrong or locked PIN).
   */
  static async open(config: Pkcs11Config, opts: { log?: Logger } = {}): Promise<Pkcs11KeyManager> {
    if (typeof config?.module_path !== 'string' || config.module_path === '') throw new TypeError('pkcs11: module_path is required')
    if (typeof config.pin !== 'string') throw new TypeError('pkcs11: pin must be a string')
    if ((config.token_label === undefined) === (config.slot === undefined)) {
      throw new TypeError('pkcs11: set exactly one of token_label and slot')
    }
    const size = config.session_pool_size ?? DEFAULT_SESSION_POOL_SIZE
    if (!Number.isInteger(size) || size < 1 || size > 256) throw new RangeError('pkcs11: session_pool_size must be an integer in 1..256')
    const prefix = config.key_label_prefix ?? DEFAULT_KEY_LABEL_PREFIX
    const signMode = config.sign_mode ?? 'auto'
    if (signMode !== 'auto' && signMode !== 'sync' && signMode !== 'async') throw new TypeError('pkcs11: sign_mode must be auto, sync or async')
    const log = opts.log ?? nullLogger

    const p = acquireModule(config.module_path)
    try {
      const { slot, label } = findSlot(p, config)
      const pool = SessionPool.open(p, slot, { pin: config.pin, size, log })
      log.info({ token_label: label, slot: slotId(slot).toString(), session_pool_size: size }, 'PKCS#11 key manager ready')
      return new Pkcs11KeyManager(p, config.module_path, pool, prefix, label, signMode, log)
    } catch (err) {
      releaseModule(config.module_path)
      throw err
    }
  }

  get tokenLabel(): string {
    return this.#tokenLabel
  }

  #label(id: string): string {
    return this.#prefix + id
  }

  /** @internal runs `fn` on a pooled session */
  _withSession<T>(fn: (p: Pkcs11, session: Handle) => T | Promise<T>): Promise<T> {
    return this.#pool.use((s) => fn(this.#p, s))
  }

  /** @internal the sync/async decision for a key type; undefined means always async */
  _signTimer(type: KeyType): SignTimer | undefined {
    if (this.#signMode === 'async') return undefined
    let t = this.#timers.get(type)
    if (t === undefined) {
      t = new SignTimer(this.#signMode)
      this.#timers.set(type, t)
    }
    return t
  }

  /** @internal re-finds `key` by label; ERR_KEY_NOT_FOUND unless it is still the same key pair */
  async _findSameKey(key: Pkcs11Key): Promise<Handle> {
    const found = await this.#pool.use((s) => this.#lookup(s, key.id))
    if (found === undefined) throw notFound(key.id)
    const a = found.info.publicKey.export({ format: 'der', type: 'spki' })
    const b = key.publicKey.export({ format: 'der', type: 'spki' })
    if (!a.equals(b)) throw notFound(key.id)
    return found.handle
  }

  async generateKey(id: string, type: KeyType): Promise<ManagedKey> {
    assertKeyId(id)
    assertKeyType(type)
    try {
      return await this.#pool.use(async (s) => {
        const label = this.#label(id)
        const old = [
          ...this.#find(s, [
            { type: pkcs11js.CKA_CLASS, value: pkcs11js.CKO_PRIVATE_KEY },
            { type: pkcs11js.CKA_LABEL, value: label },
          ]),
          ...this.#find(s, [
            { type: pkcs11js.CKA_CLASS, value: pkcs11js.CKO_PUBLIC_KEY },
            { type: pkcs11js.CKA_LABEL, value: label },
          ]),
        ]
        const { mechanism, pub, priv } = templates(type, label, Buffer.from(id, 'utf8'))
        const kp = await this.#p.C_GenerateKeyPairAsync(s, mechanism, pub, priv)
        // The new pair exists before the old one is destroyed: there is never a moment with no key under this id.
        for (const h of old) {
          try {
            this.#p.C_DestroyObject(s, h)
          } catch (err) {
            this.#log.warn({ [F.KEY_ID]: id, [F.REASON]: ckrName(err) }, 'PKCS#11: could not destroy a replaced key object')
          }
        }
        const info = this.#readKeyInfo(s, kp.privateKey, kp.publicKey)
        this.#log.info({ [F.KEY_ID]: id, key_type: type }, 'PKCS#11 key generated')
        return new Pkcs11Key(this, id, info, kp.privateKey)
      })
    } catch (err) {
      throw hsmError('C_GenerateKeyPair', err)
    }
  }

  /** ERR_KEY_NOT_FOUND; ERR_KEY_INVALID for a key under our label that the token does not keep secret. */
  async getKey(id: string): Promise<ManagedKey> {
    assertKeyId(id)
    let found: { handle: Handle; info: KeyInfo } | undefined
    try {
      found = await this.#pool.use((s) => this.#lookup(s, id))
    } catch (err) {
      throw hsmError('C_FindObjects', err)
    }
    if (found === undefined) throw notFound(id)
    return new Pkcs11Key(this, id, found.info, found.handle)
  }

  async listKeys(): Promise<ManagedKey[]> {
    try {
      return await this.#pool.use((s) => {
        const keys: ManagedKey[] = []
        const seen = new Set<string>()
        for (const h of this.#find(s, [{ type: pkcs11js.CKA_CLASS, value: pkcs11js.CKO_PRIVATE_KEY }])) {
          const [labelAttr] = this.#p.C_GetAttributeValue(s, h, [{ type: pkcs11js.CKA_LABEL }])
          const label = labelAttr?.value.toString('utf8') ?? ''
          if (!label.startsWith(this.#prefix)) continue
          const id = label.slice(this.#prefix.length)
          if (seen.has(id) || !/^[A-Za-z0-9._-]{1,64}$/.test(id)) continue
          let found: { handle: Handle; info: KeyInfo } | undefined
          try {
            found = this.#lookup(s, id)
          } catch (err) {
            if (err instanceof IdentityError && err.details?.reason === 'key_not_protected') continue // logged; never listed
            throw err
          }
          if (found === undefined) continue
          seen.add(id)
          keys.push(new Pkcs11Key(this, id, found.info, found.handle))
        }
        return keys.sort((a, b) => (a.id < b.id ? -1 : a.id > b.id ? 1 : 0))
      })
    } catch (err) {
      throw hsmError('C_FindObjects', err)
    }
  }

  async deleteKey(id: string): Promise<void> {
    assertKeyId(id)
    try {
      await this.#pool.use((s) => {
        const label = this.#label(id)
        for (const cls of [pkcs11js.CKO_PRIVATE_KEY, pkcs11js.CKO_PUBLIC_KEY]) {
          for (const h of this.#find(s, [
            { type: pkcs11js.CKA_CLASS, value: cls },
            { type: pkcs11js.CKA_LABEL, value: label },
          ])) {
            this.#p.C_DestroyObject(s, h)
          }
        }
      })
    } catch (err) {
      throw hsmError('C_DestroyObject', err)
    }
    this.#log.info({ [F.KEY_ID]: id }, 'PKCS#11 key deleted')
  }

  #sealingLabel(id: string): string {
    return `${this.#prefix}sealing-${id}`
  }

  /**
   * The sealing key `id`, generated in the token on first use (CKM_AES_KEY_GEN,
   * 256 bits, token, private, sensitive, never extractable, encrypt/decrypt
   * only). ERR_KEY_INVALID when the object under the label is not such a key.
   */
  async sealingKey(id: string): Promise<SealingKey> {
    assertKeyId(id)
    let p = this.#sealingInFlight.get(id)
    if (p === undefined) {
      p = this.#loadOrGenerateSealingKey(id).finally(() => this.#sealingInFlight.delete(id))
      this.#sealingInFlight.set(id, p)
    }
    return p
  }

  async #loadOrGenerateSealingKey(id: string): Promise<SealingKey> {
    let op = 'C_FindObjects'
    try {
      return await this.#pool.use(async (s) => {
        const existing = this.#lookupSealing(s, id)
        if (existing !== undefined) return new Pkcs11SealingKey(this, id, existing.handle, existing.ckaId)
        op = 'C_GenerateKey'
        const ckaId = randomBytes(16)
        const handle = await this.#p.C_GenerateKeyAsync(s, { mechanism: pkcs11js.CKM_AES_KEY_GEN }, sealingTemplate(this.#sealingLabel(id), ckaId))
        // Another process may have generated one at the same moment: every process keeps the key with the smallest
        // CKA_ID, and a process whose own key lost destroys it before anything was sealed under it.
        const chosen = this.#lookupSealing(s, id)
        if (chosen === undefined) throw notFound(id)
        if (!chosen.ckaId.equals(ckaId)) {
          try {
            this.#p.C_DestroyObject(s, handle)
          } catch (err) {
            this.#log.warn({ [F.KEY_ID]: id, [F.REASON]: ckrName(err) }, 'PKCS#11: could not destroy a sealing key that lost a creation race')
          }
        }
        this.#log.info({ [F.KEY_ID]: id }, 'PKCS#11 sealing key generated')
        return new Pkcs11SealingKey(this, id, chosen.handle, chosen.ckaId)
      })
    } catch (err) {
      throw hsmError(op, err)
    }
  }

  /** Destroys every secret key under the sealing key's label; a no-op when there is none. */
  async deleteSealingKey(id: string): Promise<void> {
    assertKeyId(id)
    try {
      await this.#pool.use((s) => {
        for (const h of this.#find(s, this.#sealingTemplate(id))) this.#p.C_DestroyObject(s, h)
      })
    } catch (err) {
      throw hsmError('C_DestroyObject', err)
    }
    this.#log.info({ [F.KEY_ID]: id }, 'PKCS#11 sealing key deleted')
  }

  /** @internal re-finds the sealing key by label; ERR_KEY_NOT_FOUND unless it is still the key with `ckaId` */
  async _findSameSealingKey(id: string, ckaId: Buffer): Promise<Handle> {
    const found = await this.#pool.use((s) => this.#lookupSealing(s, id))
    if (found === undefined || !found.ckaId.equals(ckaId)) throw notFound(id)
    return found.handle
  }

  #sealingTemplate(id: string): Array<{ type: number; value: number | string }> {
    return [
      { type: pkcs11js.CKA_CLASS, value: pkcs11js.CKO_SECRET_KEY },
      { type: pkcs11js.CKA_LABEL, value: this.#sealingLabel(id) },
    ]
  }

  /**
   * The secret key under the sealing label (the smallest CKA_ID when there are
   * several), after checking every one of them: an AES-256 key for encrypt and
   * decrypt that the token has always kept secret and that needs a login.
   * Anything else under the label fails with ERR_KEY_INVALID.
   */
  #lookupSealing(session: Handle, id: string): { handle: Handle; ckaId: Buffer } | undefined {
    const handles = this.#find(session, this.#sealingTemplate(id))
    if (handles.length === 0) return undefined
    if (handles.length > 1)
      this.#log.warn({ [F.KEY_ID]: id, [F.COUNT]: handles.length }, 'PKCS#11: several sealing keys carry this label; using the smallest CKA_ID')
    let best: { handle: Handle; ckaId: Buffer } | undefined
    for (const handle of handles) {
      const ckaId = this.#assertSealingKeyProtected(session, handle, id)
      if (best === undefined || Buffer.compare(ckaId, best.ckaId) < 0) best = { handle, ckaId }
    }
    return best
  }

  #assertSealingKeyProtected(session: Handle, handle: Handle, id: string): Buffer {
    const a = this.#p.C_GetAttributeValue(session, handle, [
      { type: pkcs11js.CKA_KEY_TYPE },
      { type: pkcs11js.CKA_VALUE_LEN },
      { type: pkcs11js.CKA_ID },
      { type: pkcs11js.CKA_SENSITIVE },
      { type: pkcs11js.CKA_EXTRACTABLE },
      { type: pkcs11js.CKA_ALWAYS_SENSITIVE },
      { type: pkcs11js.CKA_NEVER_EXTRACTABLE },
      { type: pkcs11js.CKA_PRIVATE },
      { type: pkcs11js.CKA_ENCRYPT },
      { type: pkcs11js.CKA_DECRYPT },
    ])
    const isTrue = (i: number): boolean => (a[i]?.value.length ?? 0) > 0 && a[i]!.value[0] !== 0
    const keyType = a[0] === undefined ? -1 : ulong(a[0].value)
    const valueLen = a[1] === undefined ? -1 : ulong(a[1].value)
    if (keyType !== pkcs11js.CKK_AES || valueLen !== 32 || !isTrue(8) || !isTrue(9)) {
      this.#log.error({ [F.KEY_ID]: id }, 'PKCS#11: refusing a sealing key that is not an AES-256 encrypt/decrypt key')
      throw new IdentityError('ERR_KEY_INVALID', `PKCS#11 sealing key "${id}" is not an AES-256 key for encryption and decryption`, {
        details: { key_id: id, reason: 'key_malformed' },
      })
    }
    const problems: string[] = []
    if (!isTrue(3)) problems.push('CKA_SENSITIVE is false')
    if (isTrue(4)) problems.push('CKA_EXTRACTABLE is true')
    if (!isTrue(5)) problems.push('CKA_ALWAYS_SENSITIVE is false')
    if (!isTrue(6)) problems.push('CKA_NEVER_EXTRACTABLE is false')
    if (!isTrue(7)) problems.push('CKA_PRIVATE is false')
    if (problems.length > 0) {
      this.#log.error({ [F.KEY_ID]: id, [F.REASON]: problems.join(', ') }, 'PKCS#11: refusing a sealing key the token does not keep secret')
      throw new IdentityError('ERR_KEY_INVALID', `PKCS#11 sealing key "${id}" is not protected by the token: ${problems.join(', ')}`, {
        details: { key_id: id, reason: 'key_not_protected', problems },
      })
    }
    return a[2]?.value ?? Buffer.alloc(0)
  }

  /** Logs out (when no other manager shares the module), closes the sessions, C_Finalize. Idempotent. */
  async close(): Promise<void> {
    if (this.#closed) return
    this.#closed = true
    try {
      await this.#pool.close({ logout: isLastReference(this.#modulePath) })
    } finally {
      releaseModule(this.#modulePath)
    }
  }

  #find(session: Handle, template: Array<{ type: number; value: number | string | boolean | Buffer }>): Handle[] {
    this.#p.C_FindObjectsInit(session, template)
    try {
      const out: Handle[] = []
      for (;;) {
        const batch = this.#p.C_FindObjects(session, 64)
        if (batch.length === 0) break
        out.push(...batch)
      }
      return out
    } finally {
      this.#p.C_FindObjectsFinal(session)
    }
  }

  #lookup(session: Handle, id: string): { handle: Handle; info: KeyInfo } | undefined {
    const label = this.#label(id)
    const privs = this.#find(session, [
      { type: pkcs11js.CKA_CLASS, value: pkcs11js.CKO_PRIVATE_KEY },
      { type: pkcs11js.CKA_LABEL, value: label },
    ])
    const priv = privs[0]
    if (priv === undefined) return undefined
    if (privs.length > 1) {
      // Only a crash between C_GenerateKeyPair and destroying the replaced pair leaves two; generateKey again to repair.
      this.#log.warn({ [F.KEY_ID]: id, [F.COUNT]: privs.length }, 'PKCS#11: several private keys carry this label; using the first')
    }
    const [pub] = this.#find(session, [
      { type: pkcs11js.CKA_CLASS, value: pkcs11js.CKO_PUBLIC_KEY },
      { type: pkcs11js.CKA_LABEL, value: label },
    ])
    let info: KeyInfo
    try {
      info = this.#readKeyInfo(session, priv, pub)
    } catch (err) {
      if (err instanceof IdentityError && err.code === 'ERR_KEY_INVALID') {
        this.#log.warn({ [F.KEY_ID]: id, [F.REASON]: err.message }, 'PKCS#11: ignoring an unusable key object')
        return undefined
      }
      throw err
    }
    this.#assertProtected(session, priv, id)
    return { handle: priv, info }
  }

  /**
   * A key found again by label is used only if the token has always kept it
   * secret: CKA_SENSITIVE true, CKA_EXTRACTABLE false, and it never was
   * otherwise (CKA_ALWAYS_SENSITIVE, CKA_NEVER_EXTRACTABLE). A key planted under
   * our label, or imported from outside, fails with ERR_KEY_INVALID
   * (`details.reason = 'key_not_protected'`).
   */
  #assertProtected(session: Handle, priv: Handle, id: string): void {
    const a = this.#p.C_GetAttributeValue(session, priv, [
      { type: pkcs11js.CKA_SENSITIVE },
      { type: pkcs11js.CKA_EXTRACTABLE },
      { type: pkcs11js.CKA_ALWAYS_SENSITIVE },
      { type: pkcs11js.CKA_NEVER_EXTRACTABLE },
    ])
    const isTrue = (i: number): boolean => (a[i]?.value.length ?? 0) > 0 && a[i]!.value[0] !== 0
    const problems: string[] = []
    if (!isTrue(0)) problems.push('CKA_SENSITIVE is false')
    if (isTrue(1)) problems.push('CKA_EXTRACTABLE is true')
    if (!isTrue(2)) problems.push('CKA_ALWAYS_SENSITIVE is false')
    if (!isTrue(3)) problems.push('CKA_NEVER_EXTRACTABLE is false')
    if (problems.length === 0) return
    this.#log.error({ [F.KEY_ID]: id, [F.REASON]: problems.join(', ') }, 'PKCS#11: refusing a private key the token does not keep secret')
    throw new IdentityError('ERR_KEY_INVALID', `PKCS#11 key "${id}" is not protected by the token: ${problems.join(', ')}`, {
      details: { key_id: id, reason: 'key_not_protected', problems },
    })
  }

  /** Reads the key type and public key back from the token. */
  #readKeyInfo(session: Handle, priv: Handle, pub: Handle | undefined): KeyInfo {
    const [kt] = this.#p.C_GetAttributeValue(session, priv, [{ type: pkcs11js.CKA_KEY_TYPE }])
    const keyType = kt === undefined ? -1 : ulong(kt.value)
    if (keyType === pkcs11js.CKK_RSA) {
      // Modulus and public exponent are public attributes of the private key object as well.
      const attrs = this.#p.C_GetAttributeValue(session, priv, [{ type: pkcs11js.CKA_MODULUS }, { type: pkcs11js.CKA_PUBLIC_EXPONENT }])
      const n = stripZeros(attrs[0]!.value)
      const e = stripZeros(attrs[1]!.value)
      const bits = n.length * 8
      const type = bits === 2048 ? 'rsa-2048' : bits === 3072 ? 'rsa-3072' : bits === 4096 ? 'rsa-4096' : undefined
      if (type === undefined) throw new IdentityError('ERR_KEY_INVALID', `unsupported RSA modulus size ${bits}`)
      return { type, publicKey: createPublicKey({ key: { kty: 'RSA', n: b64u(n), e: b64u(e) }, format: 'jwk' }) }
    }
    if (keyType === pkcs11js.CKK_EC) {
      if (pub === undefined) throw new IdentityError('ERR_KEY_INVALID', 'EC key has no public key object')
      const attrs = this.#p.C_GetAttributeValue(session, pub, [{ type: pkcs11js.CKA_EC_PARAMS }, { type: pkcs11js.CKA_EC_POINT }])
      const type = ecTypeFromParams(attrs[0]!.value)
      if (type === undefined) throw new IdentityError('ERR_KEY_INVALID', 'unsupported EC curve')
      const { crv, size } = EC_PARAMS[type]
      const point = unwrapEcPoint(attrs[1]!.value, size)
      const x = point.subarray(1, 1 + size)
      const y = point.subarray(1 + size)
      return { type, publicKey: createPublicKey({ key: { kty: 'EC', crv, x: b64u(x), y: b64u(y) }, format: 'jwk' }) }
    }
    throw new IdentityError('ERR_KEY_INVALID', 'unsupported PKCS#11 key type')
  }
}

function stripZeros(b: Buffer): Buffer {
  let i = 0
  while (i < b.length - 1 && b[i] === 0) i++
  return b.subarray(i)
}

function templates(type: KeyType, label: string, ckaId: Buffer) {
  const common = [
    { type: pkcs11js.CKA_TOKEN, value: true },
    { type: pkcs11js.CKA_LABEL, value: label },
    { type: pkcs11js.CKA_ID, value: ckaId },
  ]
  const priv = [
    ...common,
    { type: pkcs11js.CKA_CLASS, value: pkcs11js.CKO_PRIVATE_KEY },
    { type: pkcs11js.CKA_PRIVATE, value: true },
    { type: pkcs11js.CKA_SENSITIVE, value: true },
    { type: pkcs11js.CKA_EXTRACTABLE, value: false },
    { type: pkcs11js.CKA_SIGN, value: true },
    { type: pkcs11js.CKA_DECRYPT, value: false },
    { type: pkcs11js.CKA_DERIVE, value: false },
  ]
  const pubBase = [
    ...common,
    { type: pkcs11js.CKA_CLASS, value: pkcs11js.CKO_PUBLIC_KEY },
    { type: pkcs11js.CKA_PRIVATE, value: false },
    { type: pkcs11js.CKA_VERIFY, value: true },
    { type: pkcs11js.CKA_ENCRYPT, value: false },
  ]
  if (type === 'ec-p256' || type === 'ec-p384') {
    return {
      mechanism: { mechanism: pkcs11js.CKM_EC_KEY_PAIR_GEN },
      pub: [...pubBase, { type: pkcs11js.CKA_KEY_TYPE, value: pkcs11js.CKK_EC }, { type: pkcs11js.CKA_EC_PARAMS, value: EC_PARAMS[type].oid }],
      priv: [...priv, { type: pkcs11js.CKA_KEY_TYPE, value: pkcs11js.CKK_EC }],
    }
  }
  return {
    mechanism: { mechanism: pkcs11js.CKM_RSA_PKCS_KEY_PAIR_GEN },
    pub: [
      ...pubBase,
      { type: pkcs11js.CKA_KEY_TYPE, value: pkcs11js.CKK_RSA },
      { type: pkcs11js.CKA_MODULUS_BITS, value: Number(type.slice(4)) },
      { type: pkcs11js.CKA_PUBLIC_EXPONENT, value: Buffer.from([1, 0, 1]) },
    ],
    priv: [...priv, { type: pkcs11js.CKA_KEY_TYPE, value: pkcs11js.CKK_RSA }],
  }
}

function sealingTemplate(label: string, ckaId: Buffer) {
  return [
    { type: pkcs11js.CKA_CLASS, value: pkcs11js.CKO_SECRET_KEY },
    { type: pkcs11js.CKA_KEY_TYPE, value: pkcs11js.CKK_AES },
    { type: pkcs11js.CKA_VALUE_LEN, value: 32 },
    { type: pkcs11js.CKA_TOKEN, value: true },
    { type: pkcs11js.CKA_PRIVATE, value: true },
    { type: pkcs11js.CKA_SENSITIVE, value: true },
    { type: pkcs11js.CKA_EXTRACTABLE, value: false },
    { type: pkcs11js.CKA_ENCRYPT, value: true },
    { type: pkcs11js.CKA_DECRYPT, value: true },
    { type: pkcs11js.CKA_WRAP, value: false },
    { type: pkcs11js.CKA_UNWRAP, value: false },
    { type: pkcs11js.CKA_SIGN, value: false },
    { type: pkcs11js.CKA_VERIFY, value: false },
    { type: pkcs11js.CKA_DERIVE, value: false },
    { type: pkcs11js.CKA_LABEL, value: label },
    { type: pkcs11js.CKA_ID, value: ckaId },
  ]
}

function findSlot(p: Pkcs11, config: Pkcs11Config): { slot: Handle; label: string } {
  let slots: Handle[]
  try {
    slots = p.C_GetSlotList(true)
  } catch (cause) {
    throw new IdentityError('ERR_HSM_UNAVAILABLE', `cannot list PKCS#11 slots: ${ckrName(cause) ?? 'error'}`, { cause })
  }
  for (const slot of slots) {
    let label: string
    try {
      label = p.C_GetTokenInfo(slot).label.replace(/[\s\0]+$/, '')
    } catch {
      continue
    }
    if (config.token_label !== undefined ? label === config.token_label : slotId(slot) === BigInt(config.slot ?? -1)) {
      return { slot, label }
    }
  }
  const what = config.token_label !== undefined ? `label "${config.token_label}"` : `slot ${String(config.slot)}`
  throw new IdentityError('ERR_HSM_UNAVAILABLE', `no PKCS#11 token with ${what}`, {
    details: config.token_label !== undefined ? { token_label: config.token_label } : { slot: config.slot },
  })
}
