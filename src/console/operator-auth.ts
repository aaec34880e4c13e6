/**
 * How operators prove who they are: WebAuthn passkeys (discoverable
 * credentials, user verification required, so no operator name is asked
 * and none is revealed), TOTP where passkeys are not possible (a secret
 * file per operator from config, or one set up once in the console; each
 * code accepted once), and a one-time bootstrap token for the first local
 * operator, which only lets them set up a credential. Every failure is one
 * ERR_OPERATOR_AUTH_FAILED with a generic message; the reason goes to the
 * caller's log line only.
 */
import { createHash, randomBytes, timingSafeEqual } from 'node:crypto'
import { readFileSync, statSync } from 'node:fs'
import {
  generateAuthenticationOptions,
  generateRegistrationOptions,
  verifyAuthenticationResponse,
  verifyRegistrationResponse,
  type AuthenticationResponseJSON,
  type PublicKeyCredentialCreationOptionsJSON,
  type PublicKeyCredentialRequestOptionsJSON,
  type RegistrationResponseJSON,
} from '@simplewebauthn/server'
import { Secret, TOTP } from 'otpauth'
import { IdentityError } from '../errors/identity-error.js'
import type { ConsoleConfig } from './config.js'
import type { OperatorStore } from './operator-store.js'
import type { SecretSealer } from './ports.js'

/** A refusal: generic to the client, `reason` for the log. */
export class OperatorAuthError extends IdentityError {
  readonly reason: string
  constructor(reason: string) {
    super('ERR_OPERATOR_AUTH_FAILED', 'login failed')
    this.reason = reason
  }
}

const CHALLENGE_TTL_MS = 5 * 60_000
const TOTP_PERIOD = 30
/** A stored TOTP secret sealed by the SecretSealer: this prefix, then the sealed bytes in base64url. */
const SEALED_PREFIX = 'sealed:'
/** The AAD of an operator's sealed secret: a sealed value moved to another operator's row does not open. */
const totpAad = (operator: string): Buffer => Buffer.from(`warrant console totp\u0000${operator}`, 'utf8')

export class OperatorAuth {
  readonly #cfg: ConsoleConfig
  readonly #store: OperatorStore
  readonly #now: () => number
  /** SHA-256 of the bootstrap token, until used. */
  #bootstrapHash: Buffer | undefined

  readonly #sealer: SecretSealer | undefined

  /**
   * With a `sealer`, secrets set up in the console are stored sealed (a
   * plaintext one left by an earlier version is sealed at its next use);
   * without one they are stored as they are (the store file is 0600).
   */
  constructor(cfg: ConsoleConfig, store: OperatorStore, now: () => number = Date.now, sealer?: SecretSealer) {
    this.#cfg = cfg
    this.#store = store
    this.#now = now
    this.#sealer = sealer
  }

  isOperator(name: string): boolean {
    return this.#cfg.operators.some((o) => o.name === name)
  }

  /**
   * A fresh one-time bootstrap token for the bootstrap operator when they have
   * no credential yet (else undefined). Only its hash is kept.
   */
  issueBootstrapToken(): string | undefined {
    const op = this.#cfg.bootstrapOperator
    const fromFile = this.#cfg.operators.find((o) => o.name === op)?.totpSecretFile !== undefined
    if (fromFile || this.#store.hasCredential(op)) return undefined
    const t = randomBytes(24).toString('base64url')
    this.#bootstrapHash = createHash('sha256').update(t).digest()
    return t
  }

  bootstrapOutstanding(): boolean {
    return this.#bootstrapHash !== undefined
  }

  /** Uses the bootstrap token (once); returns the bootstrap operator's name. */
  useBootstrapToken(presented: unknown): string {
    if (this.#bootstrapHash === undefined) throw new OperatorAuthError('no bootstrap token is outstanding')
    if (typeof presented !== 'string' || presented.length === 0 || presented.length > 128) throw new OperatorAuthError('malformed bootstrap token')
    const h = createHash('sha256').update(presented.trim()).digest()
    if (!timingSafeEqual(h, this.#bootstrapHash)) throw new OperatorAuthError('wrong bootstrap token')
    this.#bootstrapHash = undefined
    return this.#cfg.bootstrapOperator
  }

  // WebAuthn

  async registrationOptions(operator: string): Promise<PublicKeyCredentialCreationOptionsJSON> {
    return generateRegistrationOptions({
      rpName: 'warrant console',
      rpID: this.#cfg.rpId,
      userName: operator,
      userID: createHash('sha256').update(`warrant-console-operator:${operator}`).digest(),
      attestationType: 'none',
      excludeCredentials: this.#store.passkeysOf(operator),
      authenticatorSelection: { residentKey: 'required', userVerification: 'required' },
      timeout: 120_000,
    })
  }

  async register(operator: string, response: unknown, challenge: { value: string; purpose: string; at: number } | undefined): Promise<string> {
    const expected = this.#challenge(challenge, 'register')
    let r
    try {
      r = await verifyRegistrationResponse({
        response: response as RegistrationResponseJSON,
        expectedChallenge: expected,
        expectedOrigin: this.#cfg.origin,
        expectedRPID: this.#cfg.rpId,
        requireUserVerification: true,
      })
    } catch (err) {
      throw new OperatorAuthError(`registration not verified: ${err instanceof Error ? err.message : String(err)}`)
    }
    if (!r.verified) throw new OperatorAuthError('registration not verified')
    const c = r.registrationInfo.credential
    if (this.#store.passkey(c.id)) throw new OperatorAuthError('credential already registered')
    this.#store.addPasskey({ id: c.id, operator, publicKey: c.publicKey, counter: c.counter, transports: c.transports ?? [], createdAt: this.#now() })
    return c.id
  }

  async loginOptions(): Promise<PublicKeyCredentialRequestOptionsJSON> {
    return generateAuthenticationOptions({ rpID: this.#cfg.rpId, userVerification: 'required', timeout: 120_000 })
  }

  /** Verifies an assertion of a registered passkey; returns its operator. */
  async login(response: unknown, challenge: { value: string; purpose: string; at: number } | undefined): Promise<string> {
    const expected = this.#challenge(challenge, 'login')
    const id = (response as { id?: unknown } | null)?.id
    if (typeof id !== 'string' || id.length === 0 || id.length > 1024) throw new OperatorAuthError('malformed assertion')
    const pk = this.#store.passkey(id)
    if (!pk) throw new OperatorAuthError('unknown credential')
    if (!this.isOperator(pk.operator)) throw new OperatorAuthError(`credential of ${pk.operator}, no longer an operator`)
    let r
    try {
      r = await verifyAuthenticationResponse({
        response: response as AuthenticationResponseJSON,
        expectedChallenge: expected,
        expectedOrigin: this.#cfg.origin,
        expectedRPID: this.#cfg.rpId,
        credential: { id: pk.id, publicKey: pk.publicKey as Uint8Array<ArrayBuffer>, counter: pk.counter, transports: pk.transports as never },
        requireUserVerification: true,
      })
    } catch (err) {
      throw new OperatorAuthError(`assertion not verified: ${err instanceof Error ? err.message : String(err)}`)
    }
    if (!r.verified) throw new OperatorAuthError('assertion not verified')
    if (!this.#store.advanceCounter(pk.id, r.authenticationInfo.newCounter))
      throw new OperatorAuthError('signature counter did not advance (cloned authenticator?)')
    return pk.operator
  }

  #challenge(c: { value: string; purpose: string; at: number } | undefined, purpose: 'register' | 'login'): string {
    if (!c || c.purpose !== purpose) throw new OperatorAuthError(`no ${purpose} challenge in this session`)
    if (this.#now() - c.at > CHALLENGE_TTL_MS) throw new OperatorAuthError('challenge expired')
    return c.value
  }

  // TOTP

  /** A new random secret (base32), to be shown once and confirmed with a code. */
  newTotpSecret(): string {
    return new Secret({ size: 20 }).base32
  }

  /** The otpauth:// URI of a secret, for authenticator apps. */
  totpUri(operator: string, secret: string): string {
    return new TOTP({ issuer: 'warrant console', label: operator, secret: Secret.fromBase32(secret), period: TOTP_PERIOD }).toString()
  }

  /** Confirms a secret offered during setup with a first code, then stores it (sealed, with a sealer). */
  async confirmTotp(operator: string, secret: string, code: unknown): Promise<void> {
    const step = this.#checkCode(secret, code)
    this.#store.setTotp(operator, await this.#stored(operator, secret), this.#now())
    this.#store.useTotpStep(operator, step)
  }

  /** Checks an operator's TOTP code (accepted once: its time step is recorded). */
  async loginTotp(operator: unknown, code: unknown): Promise<string> {
    if (typeof operator !== 'string' || !this.isOperator(operator)) throw new OperatorAuthError('unknown operator')
    const secret = await this.#secretOf(operator)
    if (secret === undefined) throw new OperatorAuthError('operator has no TOTP secret')
    const step = this.#checkCode(secret, code)
    if (!this.#store.useTotpStep(operator, step)) throw new OperatorAuthError('TOTP code already used')
    return operator
  }

  #checkCode(secret: string, code: unknown): number {
    if (typeof code !== 'string' || !/^\d{6}$/.test(code.trim())) throw new OperatorAuthError('malformed TOTP code')
    const timestamp = this.#now()
    const delta = TOTP.validate({ token: code.trim(), secret: Secret.fromBase32(secret), period: TOTP_PERIOD, timestamp, window: 1 })
    if (delta === null) throw new OperatorAuthError('wrong TOTP code')
    return TOTP.counter({ period: TOTP_PERIOD, timestamp }) + delta
  }

  /** What the store keeps for `secret`: sealed to the operator with a sealer, else the secret. */
  async #stored(operator: string, secret: string): Promise<string> {
    if (this.#sealer === undefined) return secret
    const sealed = await this.#sealer.seal(Buffer.from(secret, 'utf8'), totpAad(operator))
    return SEALED_PREFIX + Buffer.from(sealed).toString('base64url')
  }

  async #secretOf(operator: string): Promise<string | undefined> {
    const file = this.#cfg.operators.find((o) => o.name === operator)?.totpSecretFile
    if (file !== undefined) {
      if ((statSync(file).mode & 0o077) !== 0) throw new OperatorAuthError(`TOTP secret file ${file} is readable by others`)
      return readFileSync(file, 'utf8').trim().replace(/\s+/g, '').toUpperCase()
    }
    const stored = this.#store.totpSecret(operator) || undefined
    if (stored === undefined) return undefined
    if (!stored.startsWith(SEALED_PREFIX)) {
      // a secret stored before sealing was configured: sealed now, kept as it is if that fails
      if (this.#sealer !== undefined) this.#store.replaceTotpSecret(operator, stored, await this.#stored(operator, stored).catch(() => stored))
      return stored
    }
    if (this.#sealer === undefined) throw new OperatorAuthError('TOTP secret is sealed and no sealer is configured')
    try {
      const plain = await this.#sealer.open(Buffer.from(stored.slice(SEALED_PREFIX.length), 'base64url'), totpAad(operator))
      return Buffer.from(plain).toString('utf8')
    } catch {
      throw new OperatorAuthError('TOTP secret does not open (changed, or sealed for another operator or key)')
    }
  }
}
