import { createPublicKey } from 'node:crypto'
import type { Clock } from '../../common/clock.js'
import { newEcPrivateKey } from '../../common/crypto/new-key.js'
import { toPemBlock } from '../../common/crypto/pem.js'
import { F, type Logger } from '../../common/log/logger.js'
import type { SpiffeId } from '../../spiffe/spiffe-id.js'
import type { CaManager } from '../ca/manager.js'

export interface ServerSvidPem {
  certChainPem: string
  keyPem: string
}

/**
 * The server's own X.509-SVID for its TLS listeners: a fresh in-memory key
 * per SVID, renewed at half-life and whenever `renew()` is called (on CA
 * rotation). Each new SVID goes to `onIssued` (the certificate provider).
 */
export class ServerSvid {
  readonly #ca: CaManager
  readonly #id: SpiffeId
  readonly #ttlMs: number
  readonly #clock: Clock
  readonly #log: Logger
  readonly #onIssued: (svid: ServerSvidPem) => void
  #current: ServerSvidPem = { certChainPem: '', keyPem: '' }
  #timer: NodeJS.Timeout | undefined
  #stopped = false

  constructor(o: { ca: CaManager; spiffeId: SpiffeId; ttlMs: number; clock: Clock; log: Logger; onIssued: (svid: ServerSvidPem) => void }) {
    this.#ca = o.ca
    this.#id = o.spiffeId
    this.#ttlMs = o.ttlMs
    this.#clock = o.clock
    this.#log = o.log
    this.#onIssued = o.onIssued
  }

  /** The current SVID (empty strings before the first `renew()`). */
  get current(): ServerSvidPem {
    return this.#current
  }

  /** Issues a new SVID now and schedules the next renewal at its half-life. */
  async renew(): Promise<void> {
    if (this.#stopped) return
    const privateKey = newEcPrivateKey('P-256')
    const svid = await this.#ca.signX509Svid({ spiffeId: this.#id, publicKey: createPublicKey(privateKey), ttlMs: this.#ttlMs })
    this.#current = {
      certChainPem: svid.chain.map((c) => toPemBlock('CERTIFICATE', c)).join(''),
      keyPem: privateKey.export({ type: 'pkcs8', format: 'pem' }) as string,
    }
    this.#onIssued(this.#current)
    clearTimeout(this.#timer)
    if (this.#stopped) return
    const life = svid.notAfter - this.#clock.now()
    this.#timer = setTimeout(() => this.renewInBackground(), Math.max(1000, life / 2))
    this.#timer.unref()
    this.#log.info({ [F.SPIFFE_ID]: this.#id.toString(), [F.SERIAL]: svid.serial }, 'Server SVID issued')
  }

  /** `renew()` whose failure is logged (the current SVID stays until it expires). */
  renewInBackground(): void {
    this.renew().catch((err: unknown) => this.#log.error({ [F.ERR]: String(err) }, 'Server SVID renewal failed'))
  }

  stop(): void {
    this.#stopped = true
    clearTimeout(this.#timer)
  }
}
