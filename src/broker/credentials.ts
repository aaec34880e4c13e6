/**
 * Credential shielding: the static credential of a tool that accepts nothing
 * better (an API key) is held by the broker, sealed (AES-256-GCM) under a key
 * its key manager holds (in an HSM: generated in the token, never
 * extractable), and released in clear only to the workloads on
 * `credential_readers` (the gateway), which inject it into the request they
 * forward and never hand it to an agent. Admins put, list and delete
 * credentials; a listing never shows a value. The sealed blob is bound to its
 * tool and header (the AAD), so a blob copied to another tool's row does not
 * open. Every put, delete and release is an audit event without the value.
 */
import type { AuditEventInput } from '../audit/event.js'
import { F, nullLogger, type Logger } from '../common/log/logger.js'
import { IdentityError } from '../errors/identity-error.js'
import type { AuthenticatedClient } from './contract.js'
import type { CredentialSealer } from './ports.js'
import type { BrokerStore, StoredCredential } from './store/broker-store.js'

const TOOL = /^[a-z0-9][a-z0-9._-]{0,63}$/
/** RFC 9110 field-name token. */
const HEADER = /^[!#$%&'*+.^_`|~0-9A-Za-z-]{1,64}$/
const SCHEME = /^[!#$%&'*+.^_`|~0-9A-Za-z-]{1,32}$/
const MAX_VALUE = 4096
/** Headers a stored credential may never replace: the gateway's own and the transport's. */
const FORBIDDEN_HEADERS = new Set(['txn-token', 'host', 'content-length', 'transfer-encoding', 'connection', 'dpop', 'cookie', 'te', 'upgrade'])

export interface ToolCredentialSpec {
  readonly tool: string
  /** The request header the credential goes in (e.g. `x-api-key`, `authorization`). */
  readonly header: string
  /** Optional auth scheme prefix (`Bearer` → `authorization: Bearer <value>`). */
  readonly scheme?: string
  readonly value: string
}

/** What a listing shows: never the value. */
export interface ToolCredentialInfo {
  readonly tool: string
  readonly header: string
  readonly scheme?: string
  readonly version: number
  readonly createdBy: string
  readonly createdAt: number
}

/** What a reader gets: the header and its full value. */
export interface ReleasedCredential {
  readonly tool: string
  readonly header: string
  readonly value: string
  readonly version: number
}

export interface CredentialVaultOptions {
  /** Workloads that may have credentials released (IDs, or prefixes ending in `/`). */
  readers: readonly string[]
  now: () => number
  log?: Logger
  audit?: (e: AuditEventInput) => void
}

const aadOf = (tool: string, header: string): Uint8Array => Buffer.from(`warrant-tool-credential-v1\0${tool}\0${header.toLowerCase()}`, 'utf8')

function invalid(message: string): IdentityError {
  return new IdentityError('ERR_INVALID_ARGUMENT', message)
}

function info(c: StoredCredential): ToolCredentialInfo {
  return {
    tool: c.tool,
    header: c.header,
    ...(c.scheme !== undefined ? { scheme: c.scheme } : {}),
    version: c.version,
    createdBy: c.createdBy,
    createdAt: c.createdAt,
  }
}

function matches(list: readonly string[], id: string): boolean {
  return list.some((p) => (p.endsWith('/') ? id.startsWith(p) && id.length > p.length : id === p))
}

export class CredentialVault {
  readonly #store: BrokerStore
  readonly #sealer: CredentialSealer
  readonly #o: CredentialVaultOptions
  readonly #log: Logger

  constructor(store: BrokerStore, sealer: CredentialSealer, opts: CredentialVaultOptions) {
    this.#store = store
    this.#sealer = sealer
    this.#o = opts
    this.#log = (opts.log ?? nullLogger).child({ [F.SUBSYSTEM]: 'broker_credentials' })
  }

  /** Seals and stores (replacing any previous one); ERR_INVALID_ARGUMENT for a bad spec, which stores nothing. */
  async put(spec: ToolCredentialSpec, by: string): Promise<ToolCredentialInfo> {
    if (typeof spec.tool !== 'string' || !TOOL.test(spec.tool)) throw invalid('tool must be 1-64 of a-z 0-9 . _ - (starting alphanumeric)')
    if (typeof spec.header !== 'string' || !HEADER.test(spec.header)) throw invalid('header must be an HTTP field name')
    if (FORBIDDEN_HEADERS.has(spec.header.toLowerCase())) throw invalid(`header ${spec.header} cannot carry a tool credential`)
    if (spec.scheme !== undefined && (typeof spec.scheme !== 'string' || !SCHEME.test(spec.scheme))) throw invalid('scheme must be a token')
    if (typeof spec.value !== 'string' || spec.value.length === 0 || spec.value.length > MAX_VALUE) throw invalid(`value must be 1-${MAX_VALUE} characters`)
    // eslint-disable-next-line no-control-regex
    if (/[\x00-\x1f\x7f]/.test(spec.value)) throw invalid('value must not contain control characters (it goes into a header)')
    const sealed = await this.#sealer.seal(Buffer.from(spec.value, 'utf8'), aadOf(spec.tool, spec.header))
    const rec = this.#store.putCredential({
      tool: spec.tool,
      header: spec.header.toLowerCase(),
      ...(spec.scheme !== undefined ? { scheme: spec.scheme } : {}),
      sealed,
      version: 0,
      createdBy: by,
      createdAt: this.#o.now(),
    })
    this.#log.info({ tool: rec.tool, header: rec.header, version: rec.version, by }, 'Tool credential stored')
    this.#o.audit?.({
      type: 'credential.stored',
      outcome: 'success',
      ...(by.startsWith('spiffe://') ? { actor: { spiffe_id: by } } : {}),
      attributes: { tool: rec.tool, header: rec.header, version: rec.version },
    })
    return info(rec)
  }

  list(): ToolCredentialInfo[] {
    return this.#store.listCredentials().map(info)
  }

  delete(tool: string, by: string): boolean {
    if (typeof tool !== 'string' || !TOOL.test(tool)) throw invalid('malformed tool name')
    const gone = this.#store.deleteCredential(tool)
    if (gone) {
      this.#log.info({ tool, by }, 'Tool credential deleted')
      this.#o.audit?.({
        type: 'credential.deleted',
        outcome: 'success',
        ...(by.startsWith('spiffe://') ? { actor: { spiffe_id: by } } : {}),
        attributes: { tool },
      })
    }
    return gone
  }

  /**
   * The credential in clear, for a reader only. Refusals tell the caller little: an unknown tool and a caller that
   * may not read are both ERR_CLIENT_UNAUTHORIZED on the wire; the log says which.
   */
  async release(tool: string, caller: AuthenticatedClient): Promise<ReleasedCredential> {
    const log = this.#log.child({ client_id: caller.spiffeId, tool: typeof tool === 'string' ? tool.slice(0, 64) : undefined })
    const refuse = (code: string, reason: string): never => {
      log.warn({ [F.REASON]: reason }, 'Tool credential refused')
      this.#o.audit?.({
        type: 'credential.released',
        outcome: 'refused',
        reason: code,
        actor: { spiffe_id: caller.spiffeId },
        ...(typeof tool === 'string' && TOOL.test(tool) ? { attributes: { tool } } : {}),
      })
      throw new IdentityError('ERR_CLIENT_UNAUTHORIZED', 'credential not available')
    }
    if (!matches(this.#o.readers, caller.spiffeId)) return refuse('not_a_reader', 'caller is not a credential reader')
    if (typeof tool !== 'string' || !TOOL.test(tool)) return refuse('malformed_tool', 'malformed tool name')
    const rec = this.#store.getCredential(tool)
    if (!rec) return refuse('unknown_tool', 'no credential for this tool')
    let plain: Uint8Array
    try {
      plain = await this.#sealer.open(rec.sealed, aadOf(rec.tool, rec.header))
    } catch {
      log.error({ [F.REASON]: 'sealed credential does not open (tampered, or another key)' }, 'Tool credential unusable')
      throw new IdentityError('ERR_INTERNAL', 'credential not available')
    }
    const value = Buffer.from(plain).toString('utf8')
    this.#o.audit?.({
      type: 'credential.released',
      outcome: 'success',
      actor: { spiffe_id: caller.spiffeId },
      attributes: { tool: rec.tool, version: rec.version },
    })
    log.info({ version: rec.version }, 'Tool credential released')
    return { tool: rec.tool, header: rec.header, value: rec.scheme !== undefined ? `${rec.scheme} ${value}` : value, version: rec.version }
  }
}
