/**
 * Composition of the broker (only the CLI layer wires rooms together):
 *
 * - `startBroker`: the domain (createBrokerService), its HTTPS wire and its
 *   admin socket, from a key manager, trust, a TLS identity and ceilings;
 * - `startEmbeddedBroker`: inside `warrant server run` — the TLS certificate
 *   is an X.509-SVID (spiffe://<td>/warrant/broker) the server's CA issues,
 *   renewed at half-life and on CA rotation; trust bundles come from the CA
 *   and the server's federated bundle store; ceilings from the signed bounds
 *   document the server writes (verified with its JWT authorities);
 * - `startStandaloneBroker`: `warrant broker run` — the broker is a SPIFFE
 *   workload: its certificate and bundles come from the Workload API through
 *   an X509Source (rotation followed), JWT bundles from a watch, and ceilings
 *   from a signed bounds document file.
 */
import { AuditLog } from '../audit/store/audit-log.js'
import { openSignedAuditLog } from './audit-composition.js'
import { nodeAttestationFromEntries, startIntents, type RunningIntents } from './intents-composition.js'
import type { IntentService } from '../broker/intents/intent-service.js'
import { observeTokenEndpoint, RateCounter, startBrokerConsole } from './console-composition.js'
import { createPublicKey, X509Certificate } from 'node:crypto'
import { readFileSync, unwatchFile, watchFile } from 'node:fs'
import { isIP } from 'node:net'
import { join } from 'node:path'
import { toPemBlock } from '../common/crypto/pem.js'
import { newEcPrivateKey } from '../common/crypto/new-key.js'
import { systemClock } from '../common/clock.js'
import { F, type Logger } from '../common/log/logger.js'
import { configError, type ConfigIssue } from '../common/config/issues.js'
import { resolvePluginBlockPaths } from '../common/config/plugin-paths.js'
import { IdentityError } from '../errors/identity-error.js'
import { startBrokerAdminServer, type BrokerAdminServer } from '../broker/admin/admin-server.js'
import { toEmbeddedBrokerConfig, type BrokerConfig } from '../broker/config.js'
import { startBrokerHttpServer, type BrokerHttpServer, type TlsIdentity } from '../broker/http/broker-http-server.js'
import type { TrustSource } from '../broker/http/client-auth.js'
import { boundsCeilingSource, type CredentialSealer } from '../broker/ports.js'
import { narrowedCeilingSource, Narrowings } from '../broker/narrowings.js'
import { StepUps } from '../broker/step-ups.js'
import { CredentialVault } from '../broker/credentials.js'
import { createBrokerService, type BrokerServiceImpl } from '../broker/service.js'
import { SsfTransmitter } from '../broker/ssf-transmitter.js'
import { SsfReceiver, type PushAnswer } from '../broker/ssf-receiver.js'
import { httpsSsfTransport } from '../broker/http/ssf-client.js'
import { httpsSetPushTransport } from '../broker/http/ssf-push-client.js'
import { SsfStore } from '../broker/store/ssf-store.js'
import { SsfClients } from '../broker/ssf-clients.js'
import { diskKeyManagerPlugin, memoryKeyManagerPlugin, pkcs11KeyManagerPlugin } from '../keymanager/index.js'
import type { KeyManager } from '../keymanager/key-manager.js'
import type { RunningServer } from '../server/server.js'
import type { ReattestationRefusal } from '../server/attestation/service.js'
import { BoundsSet } from '../spiffe/bounds/bounds-set.js'
import { verifyBoundsDocument } from '../spiffe/bounds/document.js'
import { BundleSet } from '../spiffe/bundle/bundle-set.js'
import { SpiffeBundle } from '../spiffe/bundle/spiffe-bundle.js'
import { SpiffeId } from '../spiffe/spiffe-id.js'
import { TrustDomain } from '../spiffe/trust-domain.js'
import type { JwtBundleSource } from '../spiffe/bundle/sources.js'
import { WorkloadApiClient } from '../workload-client/workload-api-client.js'
import { X509Source } from '../workload-client/x509-source.js'
import { httpsJwksFetcher } from '../resource-server/jwks-fetcher.js'
import { JwksCache } from '../tokens/jwks-cache.js'
import { unverifiedIssuer, verifyUserToken, type UserToken } from '../tokens/user-token.js'

/**
 * After a node change: an `assurance-level-change` (current `none`, previous
 * its attestor) when the node is banned or gone (evicted); nothing for an
 * attestation or a selector change. Failures are logged.
 */
export async function announceNodeAssurance(
  nodes: { find(agentId: string): Promise<{ banned: boolean; attestor: string } | undefined> },
  signals: Pick<SsfTransmitter, 'assuranceChanged'>,
  agentId: string,
  log: Logger,
): Promise<void> {
  try {
    const n = await nodes.find(agentId)
    if (n !== undefined && !n.banned) return
    signals.assuranceChanged({
      subject: agentId,
      current: 'none',
      ...(n !== undefined ? { previous: n.attestor } : {}),
      direction: 'decrease',
      reason: n === undefined ? 'node evicted' : 'node banned',
    })
  } catch (err) {
    log.error({ [F.AGENT_ID]: agentId, [F.ERR]: err instanceof Error ? err.message : String(err) }, 'Assurance level change not sent')
  }
}

/**
 * A node attested here attested again and was refused (NodeAttestationService.onReattestationRefused): an
 * `assurance-level-change` about it, current `none`, previous its attestor, decrease, initiated by the system, the
 * reason naming the failed re-attestation and the server's own reason. Sent by the server that saw the refusal
 * only (nothing of it is in the shared datastore). Failures are logged.
 */
export function announceReattestationRefused(
  signals: Pick<SsfTransmitter, 'assuranceChanged'>,
  r: Pick<ReattestationRefusal, 'agentId' | 'attestor' | 'nodeAttestor' | 'reason'>,
  log: Logger,
): void {
  try {
    signals.assuranceChanged({
      subject: r.agentId,
      current: 'none',
      previous: r.nodeAttestor,
      direction: 'decrease',
      reason: `node re-attestation refused (${r.attestor}): ${r.reason}`,
      initiatingEntity: 'system',
    })
  } catch (err) {
    log.error({ [F.AGENT_ID]: r.agentId, [F.ERR]: err instanceof Error ? err.message : String(err) }, 'Assurance level change not sent')
  }
}

/**
 * The prefixes whose scopes a new bounds set narrowed (some removed, or the
 * prefix gone: none left), as SPIFFE IDs with the scopes left; each becomes a
 * CAEP `token-claims-change` on the broker's transmitter.
 */
export function boundsNarrowings(prev: BoundsSet, next: BoundsSet, td: TrustDomain): { prefix: string; scopes: string[] }[] {
  const out: { prefix: string; scopes: string[] }[] = []
  for (const [prefix, b] of prev.entries()) {
    const before = b.scopes ?? []
    const after = next.get(prefix)?.scopes ?? []
    if (before.some((x) => !after.includes(x))) out.push({ prefix: `${td.idString()}${prefix.replace(/\/+$/, '')}`, scopes: [...after] })
  }
  return out
}

function announceBoundsNarrowing(doc: BoundsDocumentFile, broker: RunningBroker, td: TrustDomain, log: Logger): () => void {
  return doc.onChange((prev, next) => {
    for (const n of boundsNarrowings(prev, next, td)) {
      log.info({ prefix: n.prefix, scopes: n.scopes }, 'Ceiling narrowed by the bounds document')
      broker.signals?.ceilingNarrowed({ ...n, reason: 'bounds document narrowed' })
    }
  })
}

/** A pushed SET goes to the receiver holding the subscription its path names (404 when none does). */
function pushToReceivers(receivers: readonly SsfReceiver[]) {
  return async (path: string, authorization: string | undefined, set: string): Promise<PushAnswer> => {
    for (const r of receivers) {
      const a = await r.receivePush(path, authorization, set)
      if (a.status !== 404) return a
    }
    return { status: 404 }
  }
}

export interface RunningBroker {
  readonly http: BrokerHttpServer
  readonly admin: BrokerAdminServer
  readonly service: BrokerServiceImpl
  /** Intents and the approval queue, with `[broker.intents]`. */
  readonly intents?: IntentService
  /** The Shared Signals transmitter, with `[broker.signals] receivers`. */
  readonly signals?: SsfTransmitter
  /** Agents a signal stepped up (`[broker.signals]` policy `step_up`). */
  readonly stepUps: StepUps
  stop(): Promise<void>
}

const KEY_MANAGERS = [memoryKeyManagerPlugin, diskKeyManagerPlugin, pkcs11KeyManagerPlugin]

/** Creates the broker's key manager from its `[broker.key_manager.<name>]` block. */
export async function createBrokerKeyManager(
  sel: { name: string; raw: unknown },
  o: { log: Logger; trustDomain: TrustDomain; dataDir: string },
): Promise<KeyManager & { close?(): Promise<void> }> {
  const def = KEY_MANAGERS.find((p) => p.name === sel.name)
  if (!def)
    throw configError(
      [{ path: `broker.key_manager.${sel.name}`, message: `unknown key manager "${sel.name}" (known: ${KEY_MANAGERS.map((p) => p.name).join(', ')})` }],
      'broker configuration',
    )
  let config: unknown
  try {
    config = def.parseConfig(sel.raw)
  } catch (err) {
    const e = err as IdentityError
    const issues = (e.details?.issues as ConfigIssue[] | undefined)?.map((i) => ({ ...i, path: `broker.key_manager.${sel.name}.${i.path}` })) ?? [
      { path: `broker.key_manager.${sel.name}`, message: e.message },
    ]
    throw configError(issues, 'broker configuration')
  }
  // eslint-disable-next-line @typescript-eslint/no-explicit-any
  return (def.create as (c: any, d: any) => Promise<KeyManager & { close?(): Promise<void> }>)(config, {
    log: o.log.child({ [F.PLUGIN_TYPE]: 'key_manager', [F.PLUGIN_NAME]: def.name, [F.SUBSYSTEM]: 'broker' }),
    clock: systemClock,
    trustDomain: o.trustDomain,
    dataDir: o.dataDir,
  })
}

/**
 * Ceilings from a signed bounds document on disk, re-read when the file
 * changes; a document that fails verification (or rolls back) is refused and
 * the last good one kept. Before the first good one, nothing is allowed.
 */
export class BoundsDocumentFile {
  #set: BoundsSet
  #sequence = -1
  readonly #path: string
  readonly #bundles: () => JwtBundleSource
  readonly #td: TrustDomain
  readonly #log: Logger
  readonly #listeners = new Set<(prev: BoundsSet, next: BoundsSet) => void>()

  constructor(o: { path: string; bundles: () => JwtBundleSource; trustDomain: TrustDomain; log: Logger }) {
    this.#path = o.path
    this.#bundles = o.bundles
    this.#td = o.trustDomain
    this.#log = o.log
    this.#set = BoundsSet.empty(o.trustDomain)
  }

  current(): BoundsSet {
    return this.#set
  }

  async reload(): Promise<void> {
    let doc: string
    try {
      doc = readFileSync(this.#path, 'utf8')
    } catch (err) {
      this.#log.warn({ [F.PATH]: this.#path, [F.ERR]: (err as NodeJS.ErrnoException).code ?? String(err) }, 'Bounds document not readable: ceilings unchanged')
      return
    }
    try {
      const d = await verifyBoundsDocument(doc, this.#bundles(), { trustDomain: this.#td, minSequence: this.#sequence })
      if (d.sequence === this.#sequence) return
      const prev = this.#set
      const first = this.#sequence < 0
      this.#set = d.set
      this.#sequence = d.sequence
      if (!first) for (const l of this.#listeners) l(prev, d.set)
      this.#log.info({ [F.PATH]: this.#path, sequence: d.sequence }, 'Broker ceilings loaded from the bounds document')
    } catch (err) {
      this.#log.error({ [F.PATH]: this.#path, [F.ERR]: String(err) }, 'Bounds document refused: ceilings unchanged')
    }
  }

  /** Called with the previous and the new set at each new document after the first; returns the unsubscribe function. */
  onChange(fn: (prev: BoundsSet, next: BoundsSet) => void): () => void {
    this.#listeners.add(fn)
    return () => this.#listeners.delete(fn)
  }

  /** Re-reads on change (stat polling: works across atomic renames). Returns the stop function. */
  watch(intervalMs = 1000): () => void {
    const onChange = () => void this.reload()
    watchFile(this.#path, { interval: intervalMs, persistent: false }, onChange)
    return () => unwatchFile(this.#path, onChange)
  }
}

export async function startBroker(o: {
  config: BrokerConfig
  keyManager: KeyManager
  trust: TrustSource
  jwtBundles: JwtBundleSource
  identity: TlsIdentity
  bounds: () => BoundsSet
  log: Logger
  /** Embedded: how the node serving an agent was attested (intents' risk). */
  nodeAttestation?: (agent: string) => Promise<string | undefined>
}): Promise<RunningBroker> {
  const cfg = o.config
  const log = o.log.child({ [F.SUBSYSTEM]: 'broker' })
  const list = (m: { ids: readonly string[]; prefixes: readonly string[] }) => [...m.ids, ...m.prefixes]
  const audit = cfg.audit ? await openBrokerAuditLog(cfg.audit, o.keyManager, `${o.trust.localTrustDomain().name}/warrant/broker-audit`, log) : undefined
  // ceilings narrowed by signals ([broker.signals] policy `narrow`), kept in the SSF store
  const narrowings = new Narrowings()
  // agents a signal stepped up ([broker.signals] policy `step_up`), kept in the SSF store: no plain token, their next intent to a human
  const stepUps = new StepUps({ log: log.child({ [F.SUBSYSTEM]: 'ssf_receiver' }), audit: (e) => service.auditQuietly(e) })
  const service = await createBrokerService(
    {
      keyManager: o.keyManager,
      ceilings: narrowedCeilingSource(boundsCeilingSource(o.bounds), narrowings),
      stepUps,
      jwtBundles: o.jwtBundles,
      log,
      ...(audit ? { audit } : {}),
      ...(cfg.txnTokenUserIssuers.length > 0 ? { userTokens: userTokenVerifier(cfg.txnTokenUserIssuers, cfg.issuer) } : {}),
    },
    {
      issuer: cfg.issuer,
      storePath: cfg.storePath,
      defaultTokenTtlSeconds: cfg.defaultTokenTtlSeconds,
      orchestrators: list(cfg.orchestrators),
      introspectors: list(cfg.introspectors),
      revocationAdmins: list(cfg.revocationAdmins),
      authorizationDetailsTypes: cfg.authorizationDetailsTypes,
      trustDomain: o.trust.localTrustDomain().idString(),
      txnTokenRequesters: list(cfg.txnTokenRequesters),
      txnTokenTtlSeconds: cfg.txnTokenTtlSeconds,
    },
  )
  let http: BrokerHttpServer | undefined
  let ssfStore: SsfStore | undefined
  let ssf: SsfTransmitter | undefined
  let ssfClients: SsfClients | undefined
  const receivers: SsfReceiver[] = []
  let intents: RunningIntents | undefined
  // The operator console ([broker.console]): token endpoint decisions counted for its chart.
  const rates = cfg.sections.console ? new RateCounter() : undefined
  let consoleServer: Awaited<ReturnType<typeof startBrokerConsole>>
  try {
    const sig = cfg.signals
    if (sig) ssfStore = SsfStore.open(sig.storePath)
    if (sig && ssfStore)
      ssfClients = new SsfClients({
        issuer: cfg.issuer,
        store: ssfStore,
        signingKey: () => service.keys.active(),
        publicKeyFor: (kid) => service.keys.publicKeyFor(kid),
        log: log.child({ [F.SUBSYSTEM]: 'ssf' }),
        audit: (e) => service.auditQuietly(e),
      })
    // the transmitter runs for SVID receivers, or for SSF clients registered already (the first one takes effect at restart)
    if (sig && ssfStore && (sig.receivers.ids.length > 0 || sig.receivers.prefixes.length > 0 || ssfStore.listClients().length > 0)) {
      ssf = await SsfTransmitter.start({
        issuer: cfg.issuer,
        store: ssfStore,
        signingKey: () => service.keys.active(),
        receivers: sig.receivers,
        ...(ssfClients ? { clients: ssfClients } : {}),
        revocations: service,
        log: log.child({ [F.SUBSYSTEM]: 'ssf' }),
        pollWaitMs: sig.pollWaitMs,
        maxStreamsPerReceiver: sig.maxStreamsPerReceiver,
        maxQueuedPerStream: sig.maxQueuedPerStream,
        push: httpsSetPushTransport({ identity: () => o.identity.current(), bundles: () => o.trust.bundles() }),
      })
    }
    if (sig && ssfStore) {
      for (const n of ssfStore.listNarrowings(Math.floor(Date.now() / 1000))) narrowings.add(n)
      stepUps.attach(ssfStore)
      const audience = svidIdOf(o.identity.current().certChainPem)
      for (const t of sig.transmitters) {
        const caPem = t.caFile !== undefined ? readFileSync(t.caFile, 'utf8') : undefined
        const r = new SsfReceiver({
          transmitters: [{ issuer: t.issuer, delivery: t.delivery, ...(t.defaultConfidence !== undefined ? { defaultConfidence: t.defaultConfidence } : {}) }],
          audience,
          tokenIssuer: cfg.issuer,
          policy: sig.policy,
          revoke: (req) => service.revokeAt(req, 'admin'),
          narrow: async (n) => {
            ssfStore!.addNarrowing(n, Math.floor(Date.now() / 1000))
            narrowings.add(n)
            log.warn({ prefix: n.prefix, scopes: n.scopes, not_after: n.notAfter, reason: n.reason }, 'Ceiling narrowed by a signal')
            ssf?.ceilingNarrowed(n)
          },
          stepUp: async (s) => void stepUps.add(s),
          store: ssfStore,
          transport: httpsSsfTransport({ identity: () => o.identity.current(), ...(caPem !== undefined ? { caPem } : {}) }),
          log: log.child({ [F.SUBSYSTEM]: 'ssf_receiver' }),
          audit: (e) => service.auditQuietly(e),
        })
        r.start()
        receivers.push(r)
      }
    }
    const credentials = await credentialVault(cfg, o.keyManager, service, log)
    intents = startIntents({
      config: cfg,
      service,
      ceilings: boundsCeilingSource(o.bounds),
      audit,
      ssf,
      ssfStore,
      stepUps,
      nodeAttestation: o.nodeAttestation,
      log,
    })
    http = await startBrokerHttpServer({
      service: rates ? observeTokenEndpoint(service, rates) : service,
      config: cfg,
      trust: o.trust,
      identity: o.identity,
      log,
      authorizationDetailsTypes: cfg.authorizationDetailsTypes,
      ...(ssf ? { ssf } : {}),
      ...(ssf && ssfClients ? { ssfClients } : {}),
      ...(receivers.length > 0 ? { ssfPush: pushToReceivers(receivers) } : {}),
      ...(credentials ? { credentials } : {}),
      ...(intents ? { intents: intents.service } : {}),
    })
    if (rates)
      consoleServer = await startBrokerConsole({
        config: cfg,
        service,
        rates,
        identity: o.identity,
        keyManager: o.keyManager,
        ...(ssfStore ? { ssfStore } : {}),
        ...(intents ? { approvals: intents.service } : {}),
        log,
      })
    const admin = await startBrokerAdminServer({
      service,
      socketPath: cfg.adminSocketPath,
      log,
      ...(credentials ? { credentials } : {}),
      ...(ssf ? { signals: ssf } : {}),
      ...(ssfClients ? { ssfClients } : {}),
      ...(intents ? { approvals: intents.service } : {}),
      stepUps,
    })
    log.info({ issuer: cfg.issuer, [F.PATH]: cfg.adminSocketPath }, 'Broker started')
    return {
      http,
      admin,
      service,
      ...(intents ? { intents: intents.service } : {}),
      ...(ssf ? { signals: ssf } : {}),
      stepUps,
      async stop() {
        intents?.stop()
        ssf?.close()
        await Promise.all(receivers.map((r) => r.close()))
        await consoleServer?.close().catch((err: unknown) => log.warn({ [F.ERR]: String(err) }, 'Console close failed'))
        await http!.close().catch((err: unknown) => log.warn({ [F.ERR]: String(err) }, 'Broker HTTPS close failed'))
        await admin.close().catch((err: unknown) => log.warn({ [F.ERR]: String(err) }, 'Broker admin close failed'))
        ssfStore?.close()
        await service.close()
        await audit?.close()
        log.info({}, 'Broker stopped')
      },
    }
  } catch (err) {
    intents?.stop()
    ssf?.close()
    await Promise.all(receivers.map((r) => r.close()))
    await consoleServer?.close().catch(() => undefined)
    await http?.close().catch(() => undefined)
    ssfStore?.close()
    await service.close().catch(() => undefined)
    await audit?.close().catch(() => undefined)
    throw err
  }
}

/** The SPIFFE ID of the leaf of a PEM chain (this broker's SVID): the `aud` its SSF streams carry. */
function svidIdOf(certChainPem: string): string {
  const san = new X509Certificate(certChainPem).subjectAltName ?? ''
  const uri = san
    .split(',')
    .map((s) => s.trim())
    .find((s) => s.startsWith('URI:spiffe://'))
  if (uri === undefined) throw new IdentityError('ERR_CONFIG_INVALID', "the broker's certificate has no SPIFFE ID")
  return SpiffeId.fromString(uri.slice(4)).toString()
}

/** Users' access tokens from the configured IdPs (their JWKS over HTTPS, cached by kid), for on-behalf-of Txn-Tokens. */
function userTokenVerifier(list: BrokerConfig['txnTokenUserIssuers'], audience: string): (token: string) => Promise<UserToken | undefined> {
  const issuers = new Map(
    list.map((u) => [u.issuer, new JwksCache({ fetchJwks: httpsJwksFetcher({ url: u.jwksUri, ...(u.caFile ? { caFile: u.caFile } : {}) }) })]),
  )
  return async (token) => {
    const iss = unverifiedIssuer(token)
    if (iss === undefined || !issuers.has(iss)) return undefined
    return verifyUserToken(token, { issuers, audience }, Math.floor(Date.now() / 1000))
  }
}

/** Key id of the sealing key of tools' static credentials in the broker's key manager. */
const CREDENTIAL_SEALING_KEY_ID = 'broker-tool-credentials'

/** The credential vault when `credential_readers` names someone and the key manager can seal (memory, disk, PKCS#11). */
async function credentialVault(cfg: BrokerConfig, km: KeyManager, service: BrokerServiceImpl, log: Logger): Promise<CredentialVault | undefined> {
  if (cfg.credentialReaders.ids.length + cfg.credentialReaders.prefixes.length === 0) return undefined
  const sealing = km as KeyManager & { sealingKey?: (id: string) => Promise<CredentialSealer> }
  if (typeof sealing.sealingKey !== 'function')
    throw new IdentityError('ERR_CONFIG_INVALID', 'credential_readers needs a key manager that seals (memory, disk or pkcs11)')
  const sealer = await sealing.sealingKey(CREDENTIAL_SEALING_KEY_ID)
  return new CredentialVault(service.store, sealer, {
    readers: [...cfg.credentialReaders.ids, ...cfg.credentialReaders.prefixes],
    now: () => Math.floor(Date.now() / 1000),
    log,
    audit: (e) => service.auditQuietly(e),
  })
}

/** Key id of the broker's audit checkpoint key in its key manager (in the quickstart: SoftHSM, never extractable). */
const AUDIT_CHECKPOINT_KEY_ID = 'broker-audit-checkpoint'

/** Opens the broker's audit log, its checkpoints signed by a P-256 key the key manager holds (created on first use). */
function openBrokerAuditLog(cfg: { path: string; checkpointIntervalMs: number }, km: KeyManager, origin: string, log: Logger): Promise<AuditLog> {
  return openSignedAuditLog({ ...cfg, origin, keyId: AUDIT_CHECKPOINT_KEY_ID, keyManager: km, owner: 'broker', log })
}

/** `server.toml`'s raw `[broker]` section, and the rest of the file for the server's own config. */
export function splitBrokerSection(raw: unknown): { server: unknown; broker: unknown } {
  if (typeof raw !== 'object' || raw === null || !('broker' in raw)) return { server: raw, broker: undefined }
  const { broker, ...server } = raw as Record<string, unknown>
  return { server, broker }
}

/**
 * The `[broker]` section of a server.toml (raw TOML, the file's directory),
 * or undefined when there is none. Without `[broker.key_manager]`, the
 * server's `[plugins.key_manager.<name>]` block is used (a second instance of
 * the same plugin: the same HSM token, the broker's own key ids).
 */
export function brokerConfigOfServerToml(raw: unknown, baseDir: string, serverDataDir: string): BrokerConfig | undefined {
  const { broker } = splitBrokerSection(raw)
  const cfg = toEmbeddedBrokerConfig(broker, baseDir, serverDataDir)
  if (!cfg || cfg.keyManager) return cfg
  const blocks = (raw as { plugins?: { key_manager?: Record<string, unknown> } }).plugins?.key_manager ?? {}
  const names = Object.keys(blocks)
  if (names.length !== 1)
    throw configError(
      [{ path: 'broker.key_manager', message: 'required unless the server has exactly one [plugins.key_manager.<name>] block' }],
      'broker configuration',
    )
  return { ...cfg, keyManager: { name: names[0]!, raw: resolvePluginBlockPaths('key_manager', names[0]!, blocks[names[0]!], baseDir) } }
}

/** `warrant server run`: starts the broker when server.toml has `[broker]`; undefined otherwise. */
export async function startBrokerOfServerToml(
  raw: unknown,
  baseDir: string,
  server: RunningServer,
  s: { trustDomain: TrustDomain; dataDir: string; defaultX509TtlMs: number },
  log: Logger,
): Promise<RunningBroker | undefined> {
  const cfg = brokerConfigOfServerToml(raw, baseDir, s.dataDir)
  if (!cfg) return undefined
  const keyManager = await createBrokerKeyManager(cfg.keyManager!, { log, trustDomain: s.trustDomain, dataDir: s.dataDir })
  try {
    const broker = await startEmbeddedBroker(server, {
      config: cfg,
      trustDomain: s.trustDomain,
      dataDir: s.dataDir,
      svidTtlMs: s.defaultX509TtlMs,
      log,
      keyManager,
    })
    return {
      ...broker,
      async stop() {
        await broker.stop()
        await keyManager.close?.()
      },
    }
  } catch (err) {
    await keyManager.close?.()
    throw err
  }
}

/** The broker embedded in a running server (see the module comment). */
export async function startEmbeddedBroker(
  server: RunningServer,
  o: { config: BrokerConfig; trustDomain: TrustDomain; dataDir: string; svidTtlMs: number; log: Logger; keyManager: KeyManager },
): Promise<RunningBroker> {
  const log = o.log.child({ [F.SUBSYSTEM]: 'broker' })
  const td = o.trustDomain
  // Trust: the CA's bundle plus every federated bundle the server holds (config decides which are admitted).
  let bundles = new BundleSet([server.ca.bundle()])
  const refreshBundles = async () => {
    const next = new BundleSet([server.ca.bundle()])
    for (const r of await server.federated.list()) {
      try {
        next.set(SpiffeBundle.parse(TrustDomain.fromString(r.trustDomain), r.document))
      } catch (err) {
        log.warn({ [F.TRUST_DOMAIN]: r.trustDomain, [F.ERR]: String(err) }, 'Federated bundle unusable for the broker')
      }
    }
    bundles = next
  }
  await refreshBundles()

  // TLS identity: an X.509-SVID from the server's CA, with the issuer's host as DNS name so any OAuth client verifies it.
  const brokerId = SpiffeId.fromString(`spiffe://${td.name}/warrant/broker`)
  const host = new URL(o.config.issuer).hostname
  const dnsNames = isIP(host) === 0 ? [host] : []
  let current = { certChainPem: '', keyPem: '' }
  const listeners = new Set<() => void>()
  let timer: NodeJS.Timeout | undefined
  let stopped = false
  const renew = async (): Promise<void> => {
    const privateKey = newEcPrivateKey('P-256')
    const svid = await server.ca.signX509Svid({ spiffeId: brokerId, publicKey: createPublicKey(privateKey), ttlMs: o.svidTtlMs, dnsNames })
    current = {
      certChainPem: svid.chain.map((c) => toPemBlock('CERTIFICATE', c)).join(''),
      keyPem: privateKey.export({ type: 'pkcs8', format: 'pem' }) as string,
    }
    for (const l of listeners) l()
    clearTimeout(timer)
    if (!stopped) {
      timer = setTimeout(
        () => void renew().catch((err: unknown) => log.error({ [F.ERR]: String(err) }, 'Broker SVID renewal failed')),
        Math.max(1000, (svid.notAfter - Date.now()) / 2),
      )
      timer.unref()
    }
    log.info({ [F.SPIFFE_ID]: brokerId.toString(), [F.SERIAL]: svid.serial }, 'Broker SVID issued')
  }
  await renew()
  const identity: TlsIdentity = {
    current: () => current,
    onChange: (fn) => {
      listeners.add(fn)
      return () => listeners.delete(fn)
    },
  }
  // Ceilings: the signed bounds document the server publishes beside its bundle.
  const boundsDoc = new BoundsDocumentFile({ path: join(o.dataDir, 'bounds.jws'), bundles: () => server.ca.bundle(), trustDomain: td, log })
  await boundsDoc.reload()
  const unwatch = boundsDoc.watch()
  const unsubCa = server.ca.onBundleChange(() => {
    void refreshBundles()
    void renew().catch((err: unknown) => log.error({ [F.ERR]: String(err) }, 'Broker SVID renewal failed'))
  })
  const unsubFed = server.federated.onChange(() => void refreshBundles())
  const cleanup = () => {
    stopped = true
    clearTimeout(timer)
    unwatch()
    unsubCa()
    unsubFed()
  }
  try {
    const broker = await startBroker({
      config: o.config,
      keyManager: o.keyManager,
      trust: { localTrustDomain: () => td, bundles: () => bundles, version: () => bundles },
      jwtBundles: { getJwtBundleForTrustDomain: (t) => bundles.getJwtBundleForTrustDomain(t) },
      identity,
      bounds: () => boundsDoc.current(),
      log: o.log,
      nodeAttestation: nodeAttestationFromEntries(server),
    })
    const unsubNarrowing = announceBoundsNarrowing(boundsDoc, broker, td, log)
    // A node banned or evicted (here, or at another server through the change feed): its assurance drops to none.
    const unsubNodes = broker.signals
      ? server.attestation.onNodeChange((agentId) => void announceNodeAssurance(server.ds.nodes, broker.signals!, agentId, log))
      : () => undefined
    // A node attested here whose re-attestation this server refused (a PCR policy no longer met, ...): the same, at once.
    const unsubRefused = broker.signals
      ? server.attestation.onReattestationRefused((r) => announceReattestationRefused(broker.signals!, r, log))
      : () => undefined
    return {
      ...broker,
      async stop() {
        unsubRefused()
        unsubNodes()
        unsubNarrowing()
        cleanup()
        await broker.stop()
      },
    }
  } catch (err) {
    cleanup()
    throw err
  }
}

/** The standalone broker: a SPIFFE workload of a warrant agent (see the module comment). */
export async function startStandaloneBroker(o: { config: BrokerConfig; log: Logger; signal?: AbortSignal }): Promise<RunningBroker & { source: X509Source }> {
  const cfg = o.config
  const log = o.log.child({ [F.SUBSYSTEM]: 'broker' })
  if (!cfg.workloadApiSocket || !cfg.keyManager)
    throw new IdentityError('ERR_CONFIG_INVALID', 'standalone broker needs [workload_api] socket_path and [broker.key_manager]')
  const client = new WorkloadApiClient({ socketPath: cfg.workloadApiSocket, log })
  const source = await X509Source.create({ client, log, ...(o.signal ? { signal: o.signal } : {}) })
  const abort = new AbortController()
  let jwtBundles = new BundleSet()
  // Replaced (by identity) whenever the X.509 context or the JWT bundles change: see TrustSource.version.
  let trustVersion = {}
  source.on('update', () => (trustVersion = {}))
  const gotJwt = new Promise<void>((resolve) => {
    void client.watchJwtBundles(
      {
        onUpdate: (b) => {
          jwtBundles = b
          trustVersion = {}
          resolve()
        },
        onError: (err) => log.warn({ [F.ERROR_CODE]: err.code }, 'JWT bundle watch error'),
      },
      { signal: abort.signal },
    )
  })
  await Promise.race([gotJwt, new Promise((r) => setTimeout(r, 10_000).unref())])
  const td = () => source.getX509Svid().id.trustDomain
  // Bundles for client authentication: X.509 from the source (local and federated), JWT from the watch.
  const bundles = {
    getX509BundleForTrustDomain: (t: TrustDomain) => source.getX509BundleForTrustDomain(t),
    getJwtBundleForTrustDomain: (t: TrustDomain) => jwtBundles.getJwtBundleForTrustDomain(t),
  }
  const pemOf = () => {
    const svid = source.getX509Svid()
    return {
      certChainPem: svid.certificates.map((c) => toPemBlock('CERTIFICATE', c)).join(''),
      keyPem: svid.privateKey!.export({ type: 'pkcs8', format: 'pem' }) as string,
    }
  }
  let current = pemOf()
  const listeners = new Set<() => void>()
  source.on('update', () => {
    current = pemOf()
    for (const l of listeners) l()
  })
  const identity: TlsIdentity = { current: () => current, onChange: (fn) => (listeners.add(fn), () => listeners.delete(fn)) }
  let boundsDoc: BoundsDocumentFile | undefined
  let unwatch = () => {}
  if (cfg.boundsDocumentPath) {
    boundsDoc = new BoundsDocumentFile({ path: cfg.boundsDocumentPath, bundles: () => jwtBundles, trustDomain: td(), log })
    await boundsDoc.reload()
    unwatch = boundsDoc.watch()
  } else log.warn({}, 'No bounds document configured: every agent has the empty ceiling')
  const keyManager = await createBrokerKeyManager(cfg.keyManager, { log, trustDomain: td(), dataDir: join(cfg.storePath, '..') })
  try {
    const broker = await startBroker({
      config: cfg,
      keyManager,
      trust: { localTrustDomain: td, bundles: () => bundles, version: () => trustVersion },
      jwtBundles: bundles,
      identity,
      bounds: () => boundsDoc?.current() ?? BoundsSet.empty(td()),
      log: o.log,
    })
    const unsubNarrowing = boundsDoc ? announceBoundsNarrowing(boundsDoc, broker, td(), log) : () => undefined
    return {
      ...broker,
      source,
      async stop() {
        unsubNarrowing()
        unwatch()
        abort.abort()
        await broker.stop()
        await keyManager.close?.()
        await source.close()
      },
    }
  } catch (err) {
    unwatch()
    abort.abort()
    await keyManager.close?.()
    await source.close()
    throw err
  }
}
