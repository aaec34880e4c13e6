/**
 * Composition of the operator console (src/console) with a running broker:
 * the `ConsoleBackend` adapter over the broker's real objects, and
 * `startBrokerConsole`, which `startBroker` calls when `[broker.console]`
 * is enabled.
 *
 * - approvals: the intents' `ApprovalQueue`, when the broker has one;
 * - live instances and their tokens: the broker store's `tokens` table read
 *   through a read-only connection of its own (WAL: never blocks the
 *   broker), unexpired, unrevoked and not covered by a revocation, grouped
 *   by the instance holding them (`client_id`); never a token value;
 * - revocations: `BrokerService.revokeAt` (as `admin`, with the operator and
 *   the method in the reason and as the audit event's `operator` and `method`);
 * - the audit log: its file read-only (`AuditLogReader`), verified with the
 *   checkpoint key's verifier key (re-verified at most every 30 s);
 * - received signals: the SSF store;
 * - rates: a `RateCounter` fed by `observeTokenEndpoint`, which wraps the
 *   service the HTTPS wire calls;
 * - TOTP secrets set up in the console: sealed under the key manager's
 *   `console-totp-secrets` key (memory, disk or PKCS#11: in an HSM).
 */
import { readFileSync } from 'node:fs'
import Database from 'better-sqlite3'
import { parseVerifierKey, verifierKey } from '../audit/checkpoint.js'
import { AuditLogReader } from '../audit/store/log-reader.js'
import { F, type Logger } from '../common/log/logger.js'
import type { BrokerConfig } from '../broker/config.js'
import type { BrokerService } from '../broker/contract.js'
import type { TlsIdentity } from '../broker/http/broker-http-server.js'
import type { ApprovalQueue } from '../broker/intents/contract.js'
import type { BrokerServiceImpl } from '../broker/service.js'
import type { SsfStore } from '../broker/store/ssf-store.js'
import { IdentityError, isIdentityError } from '../errors/identity-error.js'
import type { KeyManager } from '../keymanager/key-manager.js'
import { parseConsoleConfig } from '../console/config.js'
import { startConsoleServer, type ConsoleServer } from '../console/console-server.js'
import type { AuditEntryView, AuditStatus, ConsoleBackend, LiveInstance, LiveToken, SecretSealer, SignalView } from '../console/ports.js'
import { RateCounter } from '../console/rates.js'

export { RateCounter }

/** Wraps a broker service so every token endpoint decision is counted (issued, or refused with a coded error). */
export function observeTokenEndpoint<S extends BrokerService>(service: S, rates: RateCounter): S {
  const token: BrokerService['token'] = async (req, client, binding) => {
    try {
      const r = await service.token(req, client, binding)
      rates.issued()
      return r
    } catch (err) {
      if (isIdentityError(err)) rates.refused()
      throw err
    }
  }
  return new Proxy(service, {
    get(target, prop, receiver) {
      if (prop === 'token') return token
      const v = Reflect.get(target, prop, receiver) as unknown
      return typeof v === 'function' ? (v as (...a: unknown[]) => unknown).bind(target) : v
    },
  })
}

interface TokenRow {
  jti: string
  kind: 'access' | 'grant'
  sub: string
  client_id: string
  task_id: string | null
  parent_jti: string | null
  root_jti: string
  actors: string
  scopes: string
  audiences: string
  cnf_jkt: string | null
  cnf_x5t: string | null
  iat: number
  exp: number
}

/** What the adapter reads from the broker. */
export interface ConsoleBrokerParts {
  service: BrokerServiceImpl
  storePath: string
  rates: RateCounter
  approvals?: ApprovalQueue
  audit?: { path: string; verifierKey: string }
  ssfStore?: SsfStore
  now?: () => number
}

const AUDIT_VERIFY_CACHE_MS = 30_000

/** The console's view of a running broker (see the module comment). */
export function brokerConsoleBackend(p: ConsoleBrokerParts): ConsoleBackend & { close(): void } {
  const nowSec = () => Math.floor((p.now ?? Date.now)() / 1000)
  let db: Database.Database | undefined
  const tokensDb = () => (db ??= new Database(p.storePath, { readonly: true, fileMustExist: true }))

  const instances = async (): Promise<LiveInstance[]> => {
    const now = nowSec()
    const rows = tokensDb().prepare('SELECT * FROM tokens WHERE revoked_at IS NULL AND exp > ? ORDER BY iat DESC LIMIT 2000').all(now) as TokenRow[]
    const by = new Map<string, LiveToken[]>()
    for (const r of rows) {
      const actors = JSON.parse(r.actors) as string[]
      if (p.service.revocations.covering({ jti: r.jti, sub: r.sub, clientId: r.client_id, taskId: r.task_id ?? undefined, actors })) continue
      const t: LiveToken = {
        jti: r.jti,
        kind: r.kind,
        sub: r.sub,
        clientId: r.client_id,
        ...(r.task_id !== null ? { taskId: r.task_id } : {}),
        ...(r.parent_jti !== null ? { parentJti: r.parent_jti } : {}),
        rootJti: r.root_jti,
        scopes: JSON.parse(r.scopes) as string[],
        audiences: JSON.parse(r.audiences) as string[],
        actors,
        binding: r.cnf_jkt !== null ? 'dpop' : r.cnf_x5t !== null ? 'mtls' : 'bearer',
        iat: r.iat,
        exp: r.exp,
      }
      // the instance is who holds the token (its client): a delegated token's `sub` is whom it acts for
      const list = by.get(r.client_id) ?? []
      list.push(t)
      by.set(r.client_id, list)
    }
    return [...by.entries()].sort(([a], [b]) => a.localeCompare(b)).map(([spiffeId, tokens]) => ({ spiffeId, tokens }))
  }

  let auditReader: AuditLogReader | undefined
  let verified: { at: number; status: AuditStatus } | undefined
  const audit = p.audit
    ? {
        async recent(limit: number): Promise<AuditEntryView[]> {
          auditReader ??= AuditLogReader.open(p.audit!.path)
          return auditReader.tail(limit).map((r) => {
            const e = JSON.parse(r.event) as Record<string, unknown> & { actor?: { spiffe_id?: string } }
            const str = (k: string) => (typeof e[k] === 'string' ? { [k]: e[k] } : {})
            return {
              seq: r.seq,
              time: String(e.time),
              type: String(e.type),
              outcome: String(e.outcome),
              ...(e.actor?.spiffe_id !== undefined ? { actor: e.actor.spiffe_id } : {}),
              ...str('subject'),
              ...str('reason'),
              ...(typeof e.token_id === 'string' ? { tokenId: e.token_id } : {}),
              ...(typeof e.task_id === 'string' ? { taskId: e.task_id } : {}),
            }
          })
        },
        async status(): Promise<AuditStatus> {
          const at = Date.now()
          if (verified && at - verified.at < AUDIT_VERIFY_CACHE_MS) return verified.status
          auditReader ??= AuditLogReader.open(p.audit!.path)
          const report = auditReader.verify({ verifier: parseVerifierKey(p.audit!.verifierKey) })
          const last = auditReader.checkpoints().at(-1)
          const unsigned = !report.ok && report.problem?.kind === 'no_checkpoint'
          const status: AuditStatus = {
            size: report.events,
            verification: report.ok ? 'ok' : unsigned ? 'unsigned' : 'failed',
            problems: report.ok || unsigned ? [] : [`${report.problem?.kind ?? 'unknown'}: ${report.problem?.message ?? ''}`],
            verifiedAt: at,
            ...(last ? { checkpoint: last } : {}),
            verifierKey: p.audit!.verifierKey,
          }
          verified = { at, status }
          return status
        },
      }
    : undefined

  const signals = p.ssfStore
    ? {
        async received(limit: number): Promise<SignalView[]> {
          const all = p.ssfStore!.listReceived(0, 100_000)
          return all.slice(-limit).map((s) => {
            const d = s.decision as { action?: string; level?: string; value?: string; prefix?: string; reason?: string } | null
            const action =
              d === null
                ? 'refused'
                : d.action === 'revoke'
                  ? `revoke ${d.level ?? ''} ${d.value ?? ''}`
                  : d.action === 'quarantine'
                    ? `quarantine ${d.prefix ?? ''}`
                    : `record (${d.reason ?? ''})`
            return {
              id: s.id,
              issuer: s.issuer,
              jti: s.jti,
              eventType: s.eventType,
              subject: JSON.stringify(s.subject),
              action,
              outcome: s.outcome,
              receivedAt: s.receivedAt,
            }
          })
        },
      }
    : undefined

  return {
    ...(p.approvals ? { approvals: p.approvals } : {}),
    instances,
    async revoke(req, by) {
      const r = await p.service.revokeAt(
        { kind: req.level, value: req.value, reason: `console ${by.id} (${by.method}): ${req.reason}`.slice(0, 512) },
        'admin',
        { id: by.id, method: `console-${by.method}` },
      )
      return { seq: r.entry.seq, created: r.created, tokens: r.tokens }
    },
    async revocations() {
      return (await p.service.listRevocations(0)).map((r) => ({
        seq: r.seq,
        kind: r.kind,
        value: r.value,
        ...(r.reason !== undefined ? { reason: r.reason } : {}),
        createdBy: r.createdBy,
        createdAt: r.createdAt,
        expiresAt: r.expiresAt,
      }))
    },
    ...(audit ? { audit } : {}),
    ...(signals ? { signals } : {}),
    rates: () => p.rates.buckets(),
    close() {
      db?.close()
      auditReader?.close()
    },
  }
}

/** Key id of the broker's audit checkpoint key (as broker-composition.ts creates it). */
const AUDIT_CHECKPOINT_KEY_ID = 'broker-audit-checkpoint'

/**
 * Starts the console when `[broker.console]` is enabled (undefined otherwise).
 * The bootstrap login token, when one is issued, goes to standard output
 * only (never to the log).
 */
export async function startBrokerConsole(o: {
  config: BrokerConfig
  service: BrokerServiceImpl
  rates: RateCounter
  identity: TlsIdentity
  keyManager: KeyManager
  approvals?: ApprovalQueue
  ssfStore?: SsfStore
  log: Logger
  /** Where the bootstrap token goes; default standard output. */
  print?: (line: string) => void
}): Promise<ConsoleServer | undefined> {
  const cfg = parseConsoleConfig(o.config.sections)
  if (!cfg) return undefined
  const log = o.log.child({ [F.SUBSYSTEM]: 'console' })
  let audit: { path: string; verifierKey: string } | undefined
  if (o.config.audit) {
    const key = await o.keyManager.getKey(AUDIT_CHECKPOINT_KEY_ID)
    const origin = auditOrigin(o.config.audit.path)
    audit = { path: o.config.audit.path, verifierKey: verifierKey(origin, key.publicKey) }
  }
  const backend = brokerConsoleBackend({
    service: o.service,
    storePath: o.config.storePath,
    rates: o.rates,
    ...(o.approvals ? { approvals: o.approvals } : {}),
    ...(audit ? { audit } : {}),
    ...(o.ssfStore ? { ssfStore: o.ssfStore } : {}),
  })
  const tls = cfg.tls
    ? { current: () => ({ certChainPem: readFileSync(cfg.tls!.certFile, 'utf8'), keyPem: readFileSync(cfg.tls!.keyFile, 'utf8') }) }
    : o.identity
  const print = o.print ?? ((line: string) => process.stdout.write(`${line}\n`))
  try {
    const sealing = o.keyManager as KeyManager & { sealingKey?: (id: string) => Promise<SecretSealer> }
    const sealer = typeof sealing.sealingKey === 'function' ? await sealing.sealingKey(CONSOLE_TOTP_SEALING_KEY_ID) : undefined
    if (!sealer) log.warn({}, 'Console TOTP secrets are stored unsealed: the key manager cannot seal')
    const server = await startConsoleServer({
      config: cfg,
      backend,
      tls,
      log,
      ...(sealer ? { sealer } : {}),
      onBootstrapToken: (token, url) =>
        print(`warrant console: sign in at ${url} with the one-time bootstrap token for operator "${cfg.bootstrapOperator}": ${token}`),
    })
    if (!o.approvals) log.info({}, 'Console approvals not configured (no intent approval queue)')
    return {
      ...server,
      async close() {
        await server.close()
        backend.close()
      },
    }
  } catch (err) {
    backend.close()
    throw err
  }
}

/** Key id of the key that seals operators' TOTP secrets in the broker's key manager (AES-256-GCM; in an HSM, never extractable). */
const CONSOLE_TOTP_SEALING_KEY_ID = 'console-totp-secrets'

/** The audit log's origin line (its checkpoint key's name), read from the file. */
function auditOrigin(path: string): string {
  const r = AuditLogReader.open(path)
  try {
    const origin = r.origin()
    if (origin === undefined) throw new IdentityError('ERR_AUDIT_UNAVAILABLE', `audit log ${path} has no origin`)
    return origin
  } finally {
    r.close()
  }
}
