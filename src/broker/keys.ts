import { randomBytes, type JsonWebKey } from 'node:crypto'
import { calculateJwkThumbprint } from 'jose'
import { F, type Logger } from '../common/log/logger.js'
import { isIdentityError } from '../errors/identity-error.js'
import type { KeyManager, KeyType, ManagedKey } from '../keymanager/key-manager.js'
import type { SignatureAlgorithm } from '../spiffe/signer.js'
import type { BrokerStore, SigningKeyRecord } from './store/broker-store.js'

/** Key types the broker signs with, and their JOSE algorithm. */
export const SIGNING_KEY_ALGORITHMS: Readonly<Partial<Record<KeyType, SignatureAlgorithm>>> = { 'ec-p256': 'ES256', 'ec-p384': 'ES384' }

export interface SigningKeysOptions {
  /** Default 'ec-p256' (ES256). */
  keyType?: 'ec-p256' | 'ec-p384'
  /** How long a key signs before the next one takes over, seconds. Default 1 day. */
  rotationPeriodSeconds?: number
  /** Prefix of the KeyManager ids of the broker's keys. Default 'broker-jwt-'. */
  keyIdPrefix?: string
  /** Longest token lifetime the broker issues, seconds: how long a retired key stays published at least. Default 1 hour. */
  maxTokenLifetimeSeconds?: number
}

export interface ActiveKey {
  readonly key: ManagedKey
  readonly kid: string
  readonly alg: SignatureAlgorithm
}

interface Loaded {
  record: SigningKeyRecord
  key: ManagedKey
  jwk: JsonWebKey
}

/**
 * The broker's token signing keys, held by a KeyManager (never extractable
 * with PKCS#11), rotated with overlap through three states recorded in the
 * store:
 *
 * - `next`: generated and published in the JWKS one rotation period before it
 *   signs, so verifiers that cache the JWKS already know it when it does;
 * - `current`: signs every token;
 * - `previous`: no longer signs; published until the last token it signed
 *   expires, then deleted from the KeyManager.
 *
 * `kid` is the RFC 7638 JWK thumbprint of the public key.
 */
export class SigningKeys {
  readonly #km: KeyManager
  readonly #store: BrokerStore
  readonly #log: Logger
  readonly #type: 'ec-p256' | 'ec-p384'
  readonly #alg: SignatureAlgorithm
  readonly #period: number
  readonly #prefix: string
  readonly #maxLife: number
  #keys: Loaded[] = []
  #rotating: Promise<void> | undefined

  private constructor(km: KeyManager, store: BrokerStore, log: Logger, opts: SigningKeysOptions) {
    this.#km = km
    this.#store = store
    this.#log = log
    this.#type = opts.keyType ?? 'ec-p256'
    const alg = SIGNING_KEY_ALGORITHMS[this.#type]
    if (!alg) throw new TypeError(`unsupported broker signing key type ${String(opts.keyType)}`)
    this.#alg = alg
    this.#period = opts.rotationPeriodSeconds ?? 86_400
    if (!Number.isSafeInteger(this.#period) || this.#period < 60) throw new RangeError('rotationPeriodSeconds must be an integer of at least 60')
    this.#prefix = opts.keyIdPrefix ?? 'broker-jwt-'
    this.#maxLife = opts.maxTokenLifetimeSeconds ?? 3600
  }

  /** Loads the recorded keys (dropping those the KeyManager lost, e.g. a memory one after a restart) and makes sure a current and a next key exist. */
  static async open(km: KeyManager, store: BrokerStore, log: Logger, nowSeconds: number, opts: SigningKeysOptions = {}): Promise<SigningKeys> {
    const keys = new SigningKeys(km, store, log, opts)
    await keys.#load()
    await keys.#ensure(nowSeconds)
    return keys
  }

  async #load(): Promise<void> {
    const loaded: Loaded[] = []
    for (const record of this.#store.listSigningKeys()) {
      let key: ManagedKey
      try {
        key = await this.#km.getKey(record.keyId)
      } catch (err) {
        if (!isIdentityError(err, 'ERR_KEY_NOT_FOUND')) throw err
        this.#log.warn({ [F.KEY_ID]: record.keyId, [F.KID]: record.kid }, 'Broker signing key is gone from the key manager; forgetting it')
        this.#store.deleteSigningKey(record.keyId)
        continue
      }
      const jwk = key.publicKey.export({ format: 'jwk' })
      if ((await calculateJwkThumbprint(jwk, 'sha256')) !== record.kid) {
        this.#log.error({ [F.KEY_ID]: record.keyId, [F.KID]: record.kid }, 'Broker signing key no longer matches its recorded kid; forgetting it')
        this.#store.deleteSigningKey(record.keyId)
        continue
      }
      loaded.push({ record, key, jwk })
    }
    this.#keys = loaded
  }

  async #generate(state: 'next' | 'current', now: number): Promise<void> {
    const keyId = `${this.#prefix}${randomBytes(8).toString('hex')}`
    const key = await this.#km.generateKey(keyId, this.#type)
    const jwk = key.publicKey.export({ format: 'jwk' })
    const kid = await calculateJwkThumbprint(jwk, 'sha256')
    const record: SigningKeyRecord = {
      keyId,
      kid,
      alg: this.#alg,
      state,
      createdAt: now,
      activatedAt: state === 'current' ? now : undefined,
      publishUntil: undefined,
    }
    this.#store.insertSigningKey(record)
    this.#keys.push({ record, key, jwk })
    this.#log.info({ [F.KEY_ID]: keyId, [F.KID]: kid, state }, 'Generated broker signing key')
  }

  async #ensure(now: number): Promise<void> {
    if (!this.#keys.some((k) => k.record.state === 'current')) {
      const next = this.#keys.find((k) => k.record.state === 'next')
      if (next) this.#promote(next, now)
      else await this.#generate('current', now)
    }
    if (!this.#keys.some((k) => k.record.state === 'next')) await this.#generate('next', now)
  }

  #promote(k: Loaded, now: number): void {
    this.#store.updateSigningKey(k.record.keyId, 'current', { activatedAt: now })
    k.record = { ...k.record, state: 'current', activatedAt: now }
    this.#log.info({ [F.KEY_ID]: k.record.keyId, [F.KID]: k.record.kid }, 'Broker signing key is now current')
  }

  /**
   * Rotates when the current key is older than the period (the next key
   * becomes current, the old one previous, a new next is generated) and
   * deletes previous keys whose last token has expired. Cheap when nothing is due.
   */
  async maintain(now: number): Promise<void> {
    const current = this.#keys.find((k) => k.record.state === 'current')
    const due = !current || now - (current.record.activatedAt ?? current.record.createdAt) >= this.#period
    const expired = this.#keys.some((k) => k.record.state === 'previous' && (k.record.publishUntil ?? 0) < now)
    if (!due && !expired) return
    if (this.#rotating) return this.#rotating
    // cleared in a .finally (always after this assignment; a try/finally inside could run first when nothing awaits)
    this.#rotating = (async () => {
      {
        if (due) await this.rotate(now)
        for (const k of this.#keys.filter((x) => x.record.state === 'previous')) {
          const until = Math.max(k.record.publishUntil ?? 0, this.#store.lastExpiryForKid(k.record.kid))
          if (until >= now) {
            // a token signed just before the rotation outlives the recorded bound: remember its expiry (no rescan per token)
            this.#store.updateSigningKey(k.record.keyId, 'previous', { publishUntil: until })
            k.record = { ...k.record, publishUntil: until }
            continue
          }
          await this.#km.deleteKey(k.record.keyId)
          this.#store.deleteSigningKey(k.record.keyId)
          this.#keys = this.#keys.filter((x) => x !== k)
          this.#log.info({ [F.KEY_ID]: k.record.keyId, [F.KID]: k.record.kid }, 'Retired broker signing key')
        }
      }
    })().finally(() => {
      this.#rotating = undefined
    })
    return this.#rotating
  }

  /** Makes the next key current now; the old current key stays published until its last token expires, and at least `maxTokenLifetimeSeconds` (a token signed just before may be stored just after). */
  async rotate(now: number, maxTokenLifetimeSeconds = this.#maxLife): Promise<void> {
    const current = this.#keys.find((k) => k.record.state === 'current')
    if (current) {
      const until = Math.max(this.#store.lastExpiryForKid(current.record.kid), now + maxTokenLifetimeSeconds)
      this.#store.updateSigningKey(current.record.keyId, 'previous', { publishUntil: until })
      current.record = { ...current.record, state: 'previous', publishUntil: until }
    }
    const next = this.#keys.find((k) => k.record.state === 'next')
    if (next) this.#promote(next, now)
    await this.#ensure(now)
  }

  /** The key that signs now. */
  active(): ActiveKey {
    const k = this.#keys.find((x) => x.record.state === 'current')
    if (!k) throw new Error('broker signing keys: no current key (open() not awaited?)')
    return { key: k.key, kid: k.record.kid, alg: k.record.alg as SignatureAlgorithm }
  }

  /** The public key that verifies tokens signed with `kid` (current, next or previous), if published. */
  publicKeyFor(kid: string): { key: ManagedKey['publicKey']; alg: SignatureAlgorithm } | undefined {
    const k = this.#keys.find((x) => x.record.kid === kid)
    return k ? { key: k.key.publicKey, alg: k.record.alg as SignatureAlgorithm } : undefined
  }

  /** The JWKS: every published public key with `kid`, `alg` and `use: "sig"`. */
  jwks(): { keys: Record<string, unknown>[] } {
    const order = { current: 0, next: 1, previous: 2 } as const
    return {
      keys: [...this.#keys]
        .sort((a, b) => order[a.record.state] - order[b.record.state])
        .map((k) => ({ ...(k.jwk as Record<string, unknown>), kid: k.record.kid, alg: k.record.alg, use: 'sig' })),
    }
  }

  /** The recorded keys and their states (for status output and tests). */
  records(): SigningKeyRecord[] {
    return this.#keys.map((k) => k.record)
  }
}
