/**
 * The agent's persisted state in data_dir: its key (PKCS#8 PEM, mode 0600),
 * its SVID chain (PEM) and the last bundle received from the server (SPIFFE
 * bundle document). Every write is atomic (temporary file, then rename).
 * Workload SVID keys are never written anywhere.
 */
import { createPrivateKey, type KeyObject } from 'node:crypto'
import { chmodSync, existsSync, mkdirSync, readFileSync, renameSync, rmSync, writeFileSync } from 'node:fs'
import { join } from 'node:path'
import { IdentityError } from '../errors/identity-error.js'
import { SpiffeBundle } from '../spiffe/bundle/spiffe-bundle.js'
import type { TrustDomain } from '../spiffe/trust-domain.js'
import { X509Svid } from '../spiffe/x509-svid/x509-svid.js'

export const AGENT_KEY_FILE = 'agent_svid.key'
export const AGENT_SVID_FILE = 'agent_svid.pem'
export const BUNDLE_FILE = 'bundle.json'

export interface PersistedAgentState {
  svid: X509Svid
  key: KeyObject
  bundle: SpiffeBundle | undefined
}

export function writeFileAtomic(path: string, data: string | Uint8Array, mode = 0o644): void {
  const tmp = `${path}.${process.pid}.tmp`
  writeFileSync(tmp, data, { mode })
  chmodSync(tmp, mode)
  renameSync(tmp, path)
}

export class AgentStore {
  readonly dir: string
  readonly #td: TrustDomain
  /** False: nothing is written (memory key manager); a restart attests again. */
  readonly persist: boolean

  constructor(opts: { dir: string; trustDomain: TrustDomain; persist: boolean }) {
    this.dir = opts.dir
    this.#td = opts.trustDomain
    this.persist = opts.persist
    mkdirSync(this.dir, { recursive: true, mode: 0o700 })
  }

  /** The persisted SVID, key and bundle, or undefined when absent or unusable (a reason is returned). */
  load(): { state: PersistedAgentState | undefined; reason: string } {
    if (!this.persist) return { state: undefined, reason: 'agent state is not persisted' }
    const keyPath = join(this.dir, AGENT_KEY_FILE)
    const svidPath = join(this.dir, AGENT_SVID_FILE)
    if (!existsSync(keyPath) || !existsSync(svidPath)) return { state: undefined, reason: 'no persisted agent SVID' }
    try {
      const key = createPrivateKey(readFileSync(keyPath))
      const svid = X509Svid.parse(readFileSync(svidPath), undefined)
      X509Svid.fromChain(svid.certificates, key) // key must match the leaf
      if (!svid.id.trustDomain.equals(this.#td)) return { state: undefined, reason: 'persisted agent SVID is for another trust domain' }
      return { state: { svid, key, bundle: this.loadBundle() }, reason: '' }
    } catch (err) {
      return { state: undefined, reason: `persisted agent SVID is unusable: ${(err as Error).message}` }
    }
  }

  loadBundle(): SpiffeBundle | undefined {
    const path = join(this.dir, BUNDLE_FILE)
    if (!existsSync(path)) return undefined
    try {
      return SpiffeBundle.parse(this.#td, readFileSync(path, 'utf8'))
    } catch {
      return undefined
    }
  }

  saveSvid(svid: X509Svid, key: KeyObject): void {
    if (!this.persist) return
    writeFileAtomic(join(this.dir, AGENT_KEY_FILE), key.export({ type: 'pkcs8', format: 'pem' }), 0o600)
    writeFileAtomic(join(this.dir, AGENT_SVID_FILE), svid.certificatesPem(), 0o644)
  }

  saveBundle(bundle: SpiffeBundle): void {
    if (!this.persist) return
    writeFileAtomic(join(this.dir, BUNDLE_FILE), bundle.marshal({ indent: 2 }), 0o644)
  }

  /** Forgets the SVID (after the server rejected it). */
  clearSvid(): void {
    rmSync(join(this.dir, AGENT_SVID_FILE), { force: true })
    rmSync(join(this.dir, AGENT_KEY_FILE), { force: true })
  }
}

/** Reads a bootstrap trust bundle: PEM certificates or a SPIFFE bundle document. */
export function readTrustBundle(path: string, td: TrustDomain): SpiffeBundle {
  let text: string
  try {
    text = readFileSync(path, 'utf8')
  } catch (cause) {
    throw new IdentityError('ERR_CONFIG_INVALID', `cannot read trust_bundle_path ${path}`, { cause })
  }
  if (text.trimStart().startsWith('{')) return SpiffeBundle.parse(td, text)
  const ders: Uint8Array[] = []
  const re = /-----BEGIN CERTIFICATE-----([\s\S]*?)-----END CERTIFICATE-----/g
  for (let m = re.exec(text); m; m = re.exec(text)) ders.push(new Uint8Array(Buffer.from(m[1]!.replace(/\s+/g, ''), 'base64')))
  if (ders.length === 0) throw new IdentityError('ERR_BUNDLE_INVALID', `trust_bundle_path ${path} holds no certificate`)
  return SpiffeBundle.from({ trustDomain: td, x509Authorities: ders })
}
