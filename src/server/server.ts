import * as grpc from '@grpc/grpc-js'
import { createPrivateKey, createPublicKey, type KeyObject } from 'node:crypto'
import { newEcPrivateKey } from '../common/crypto/new-key.js'
import { chmodSync, lstatSync, mkdirSync, readFileSync, renameSync, rmSync, writeFileSync } from 'node:fs'
import { dirname, join } from 'node:path'
import { IdentityError } from '../errors/identity-error.js'
import { systemClock, type Clock } from '../common/clock.js'
import { configError, type ConfigIssue } from '../common/config/issues.js'
import { HealthService } from '../common/grpc/health.js'
import { startHealthEndpoint, startMetricsEndpoint } from '../common/http/http-endpoints.js'
import { loadProto } from '../common/grpc/proto.js'
import { F, type Logger } from '../common/log/logger.js'
import { DEFAULT_AGENT_API_LIMITS } from '../common/net/connection-guard.js'
import { listenGuardedTcp } from '../common/net/guarded-listener.js'
import type { KeyManager } from '../keymanager/key-manager.js'
import type { PluginDefinition, ServerNodeAttestor } from '../plugin/contracts.js'
import { X509Bundle } from '../spiffe/bundle/x509-bundle.js'
import { KeyObjectSigner } from '../spiffe/key-signer.js'
import { pemCertificates, toPemBlock } from '../common/crypto/pem.js'
import { NodeAttestationService } from './attestation/service.js'
import { adminServices } from './api/admin-service.js'
import { nodeService, nodeServiceDefinition } from './api/node-service.js'
import { AGENT_API_MAX_MESSAGE_BYTES, agentApiCallLimits } from './api/call-limits.js'
import { FederatedBundles } from './bundle/federated.js'
import { BoundsService } from './bounds/bounds-service.js'
import { boundsAdminService } from './bounds/admin-service.js'
import { InstanceService } from './instances/instance-service.js'
import { FederationRefresher, RelationshipStore, federationAdminService, relationshipsFromConfig, startBundleEndpoint } from './federation/index.js'
import { CsrVerifierPool } from './ca/csr-verifier.js'
import { nativeEcdsaError } from './ca/native-ecdsa.js'
import { CaManager, type UpstreamAuthority } from './ca/manager.js'
import type { ServerConfig } from './config.js'
import { createMemoryDataStore } from './datastore/memory/index.js'
import { openSqliteDataStore } from './datastore/sqlite/index.js'
import type { DataStore } from './datastore/types.js'
import { createServerMetrics, type Metrics } from './metrics.js'
import { RegistrationService } from './registration/service.js'
import { AuthorizedEntries } from './registration/authorized-entries.js'
import { JwtIssuance } from './issuance/jwt-issuance.js'
import { Subjects } from './issuance/subject.js'
import { X509Issuance } from './issuance/x509-issuance.js'
import { SyncStreams } from './sync/sync-stream.js'
import { serverIdOf } from './registration/validate.js'

// eslint-disable-next-line @typescript-eslint/no-explicit-any
type AnyPlugin<I> = PluginDefinition<any, I>

/** Plugins the composition root offers; core code never imports a concrete plugin. */
export interface ServerCatalog {
  keyManagers: readonly AnyPlugin<KeyManager>[]
  nodeAttestors: readonly AnyPlugin<ServerNodeAttestor>[]
}

export interface RunningServer {
  /** Bound TCP address of the agent API. */
  address: { host: string; port: number }
  /** Port of the SPIFFE bundle endpoint, when federation.bundle_endpoint is configured. */
  bundleEndpointPort: number | undefined
  socketPath: string
  ca: CaManager
  registration: RegistrationService
  attestation: NodeAttestationService
  federated: FederatedBundles
  ds: DataStore
  metrics: Metrics
  /** Drains in-flight calls (up to `graceMs`), then closes everything. */
  stop(graceMs?: number): Promise<void>
}

/**
 * Validates every plugin block against its plugin's schema and reports all
 * problems together (used by `server run` and `server validate`).
 */
export function resolvePlugins(cfg: ServerConfig, catalog: ServerCatalog) {
  const issues: ConfigIssue[] = []
  const parse = <I>(kind: string, list: readonly AnyPlugin<I>[], sel: { name: string; raw: unknown }) => {
    const def = list.find((p) => p.name === sel.name)
    if (!def) {
      issues.push({ path: `plugins.${kind}.${sel.name}`, message: `unknown ${kind} "${sel.name}" (known: ${list.map((p) => p.name).join(', ')})` })
      return undefined
    }
    try {
      return { def, config: def.parseConfig(sel.raw) as unknown }
    } catch (err) {
      const e = err as IdentityError
      const sub = (e.details?.issues as ConfigIssue[] | undefined) ?? [{ path: `plugins.${kind}.${sel.name}`, message: e.message }]
      issues.push(...sub)
      return undefined
    }
  }
  const keyManager = parse('key_manager', catalog.keyManagers, cfg.keyManager)
  const nodeAttestors = cfg.nodeAttestors
    .filter((s) => s.name !== 'join_token')
    .map((s) => parse('node_attestor', catalog.nodeAttestors, s))
  for (const s of cfg.nodeAttestors) {
    if (s.name === 'join_token' && s.raw && Object.keys(s.raw as object).length > 0) {
      issues.push({ path: 'plugins.node_attestor.join_token', message: 'join_token takes no settings' })
    }
  }
  if (issues.length > 0) throw configError(issues, 'server configuration')
  return { keyManager: keyManager!, nodeAttestors: nodeAttestors.map((n) => n!), joinToken: cfg.nodeAttestors.some((s) => s.name === 'join_token') }
}

/** A grpc-js CertificateProvider fed by us (server SVID and bundle rotate in place). */
class PushCertificateProvider implements grpc.experimental.CertificateProvider {
  #ca: grpc.experimental.CaCertificateUpdate | null = null
  #id: grpc.experimental.IdentityCertificateUpdate | null = null
  readonly #caL = new Set<grpc.experimental.CaCertificateUpdateListener>()
  readonly #idL = new Set<grpc.experimental.IdentityCertificateUpdateListener>()
  setCa(pem: string) {
    this.#ca = { caCertificate: Buffer.from(pem) }
    for (const l of this.#caL) l(this.#ca)
  }
  setIdentity(certPem: string, keyPem: string) {
    this.#id = { certificate: Buffer.from(certPem), privateKey: Buffer.from(keyPem) }
    for (const l of this.#idL) l(this.#id)
  }
  addCaCertificateListener(l: grpc.experimental.CaCertificateUpdateListener) {
    this.#caL.add(l)
    if (this.#ca) l(this.#ca)
  }
  removeCaCertificateListener(l: grpc.experimental.CaCertificateUpdateListener) {
    this.#caL.delete(l)
  }
  addIdentityCertificateListener(l: grpc.experimental.IdentityCertificateUpdateListener) {
    this.#idL.add(l)
    if (this.#id) l(this.#id)
  }
  removeIdentityCertificateListener(l: grpc.experimental.IdentityCertificateUpdateListener) {
    this.#idL.delete(l)
  }
  /**
   * Re-sends the current CA and identity to every listener. grpc-js (1.14)
   * subscribes to the provider inside `_addWatcher` before it adds the
   * server's watcher, so the first (synchronous) update never reaches the
   * server and every TLS connection is dropped as "unloaded credentials"
   * until the next update: call this once after bindAsync.
   */
  republish() {
    if (this.#ca) for (const l of this.#caL) l(this.#ca)
    if (this.#id) for (const l of this.#idL) l(this.#id)
  }
}

const pem = toPemBlock

function writeAtomic(path: string, data: string, mode = 0o644): void {
  const tmp = `${path}.tmp-${process.pid}`
  writeFileSync(tmp, data, { mode })
  renameSync(tmp, path)
}

/**
 * Creates a private directory (0700). An existing directory is left as it is
 * (it may be shared, e.g. /tmp: the admin socket itself is 0600), but it must
 * be a real directory, not a symlink or a file.
 */
export function ensurePrivateDir(dir: string): void {
  let st
  try {
    st = lstatSync(dir)
  } catch {
    mkdirSync(dir, { recursive: true, mode: 0o700 })
    chmodSync(dir, 0o700)
    return
  }
  if (!st.isDirectory()) throw new IdentityError('ERR_CONFIG_INVALID', `${dir} is not a directory`)
}

function loadUpstream(cfg: NonNullable<ServerConfig['upstream']>): UpstreamAuthority {
  try {
    const certs = pemCertificates(readFileSync(cfg.certFile, 'utf8'))
    const key: KeyObject = createPrivateKey(readFileSync(cfg.keyFile))
    if (certs.length === 0) throw new Error('cert_file holds no certificate')
    const cert = certs[0]!
    if (!cert.checkPrivateKey(key)) throw new Error('key_file does not match cert_file')
    if (!cert.ca) throw new Error('upstream certificate is not a CA')
    const roots = cfg.bundleFile ? pemCertificates(readFileSync(cfg.bundleFile, 'utf8')) : [certs[certs.length - 1]!]
    return {
      certificate: new Uint8Array(cert.raw),
      signer: new KeyObjectSigner(key),
      roots: roots.map((c) => new Uint8Array(c.raw)),
      intermediates: certs.slice(1).map((c) => new Uint8Array(c.raw)),
    }
  } catch (cause) {
    throw new IdentityError('ERR_CONFIG_INVALID', `upstream_authority: ${(cause as Error).message}`, { cause })
  }
}

/** Starts the server: datastore, key manager, CA, agent API (TCP, TLS), admin API (Unix socket), health and metrics. */
export async function startServer(cfg: ServerConfig, opts: { log: Logger; catalog: ServerCatalog; clock?: Clock }): Promise<RunningServer> {
  const clock = opts.clock ?? systemClock
  const log = opts.log
  const plugins = resolvePlugins(cfg, opts.catalog)
  ensurePrivateDir(cfg.dataDir)
  const deps = (name: string, type: string) => ({ log: log.child({ [F.PLUGIN_TYPE]: type, [F.PLUGIN_NAME]: name }), clock, trustDomain: cfg.trustDomain, dataDir: cfg.dataDir })
  const closers: (() => Promise<void>)[] = []
  const closeAll = async () => {
    for (const c of closers.reverse()) await c().catch((err: unknown) => log.warn({ [F.ERR]: String(err) }, 'Close failed'))
  }
  try {
    const km = await plugins.keyManager.def.create(plugins.keyManager.config, deps(plugins.keyManager.def.name, 'key_manager'))
    closers.push(async () => km.close?.())
    const ds = cfg.datastore.kind === 'sqlite' ? await openSqliteDataStore({ path: cfg.datastore.path, log, clock }) : createMemoryDataStore({ clock })
    closers.push(() => ds.close())
    const metrics = createServerMetrics({ defaults: true, countEntries: () => ds.entries.count(), countAgents: () => ds.nodes.count() })
    const attestors = new Map<string, ServerNodeAttestor>()
    for (const a of plugins.nodeAttestors) {
      const inst = await a.def.create(a.config, deps(a.def.name, 'node_attestor'))
      attestors.set(a.def.name, inst)
      closers.push(async () => inst.close?.())
    }

    const ca = new CaManager({
      trustDomain: cfg.trustDomain,
      keyManager: km,
      ds,
      clock,
      log,
      caTtlMs: cfg.caTtlMs,
      caKeyType: cfg.caKeyType,
      jwtKeyType: cfg.jwtKeyType,
      ...(cfg.caSubject ? { caSubject: cfg.caSubject } : {}),
      ...(cfg.jwtIssuer ? { jwtIssuer: cfg.jwtIssuer } : {}),
      refreshHintSeconds: cfg.refreshHintSeconds,
      ...(cfg.upstream ? { upstream: loadUpstream(cfg.upstream) } : {}),
    })
    await ca.init()
    const bounds = new BoundsService({ trustDomain: cfg.trustDomain, ds, config: cfg.bounds, clock, log, jwtSigner: () => ca.jwtSigner() })
    await bounds.init()
    const registration = new RegistrationService({
      ds,
      clock,
      log,
      bounds,
      limits: { trustDomain: cfg.trustDomain, maxX509TtlSeconds: Math.floor(cfg.caTtlMs / 1000), maxJwtTtlSeconds: Math.floor(cfg.caTtlMs / 1000) },
    })
    const instances = new InstanceService({ ds, clock, log })
    const federated = new FederatedBundles({ ds, localTrustDomain: cfg.trustDomain, log })
    const attestation = new NodeAttestationService({ trustDomain: cfg.trustDomain, ds, ca, registration, attestors, clock, log, agentTtlMs: cfg.agentTtlMs, metrics })
    if (!plugins.joinToken) {
      // join_token not configured: refuse it like any unknown attestor.
      log.info({}, 'join_token attestation disabled')
    }
    const attestationGuard = plugins.joinToken ? attestation : withoutJoinToken(attestation)

    // Federation: relationships (config + admin API) and the refresher that polls foreign bundle endpoints.
    const relationships = new RelationshipStore({ kv: ds.kv, localTrustDomain: cfg.trustDomain, clock })
    for (const r of relationshipsFromConfig(cfg.federation ?? { federates_with: {} })) await relationships.upsert(r)
    const refresher = new FederationRefresher({ relationships, federated, clock, log, registry: metrics.registry })

    // The server's own X.509-SVID for TLS: in-memory key, renewed at half-life and on CA rotation.
    const tls = new PushCertificateProvider()
    let serverSvidPem = { certChainPem: '', keyPem: '' }
    const serverId = serverIdOf(cfg.trustDomain)
    let svidTimer: NodeJS.Timeout | undefined
    const renewServerSvid = async () => {
      const privateKey = newEcPrivateKey('P-256')
      const publicKey = createPublicKey(privateKey)
      const svid = await ca.signX509Svid({ spiffeId: serverId, publicKey, ttlMs: cfg.defaultX509TtlMs })
      serverSvidPem = { certChainPem: svid.chain.map((c) => pem('CERTIFICATE', c)).join(''), keyPem: privateKey.export({ type: 'pkcs8', format: 'pem' }) as string }
      tls.setIdentity(serverSvidPem.certChainPem, serverSvidPem.keyPem)
      const life = svid.notAfter - clock.now()
      clearTimeout(svidTimer)
      svidTimer = setTimeout(() => void renewServerSvid().catch((err: unknown) => log.error({ [F.ERR]: String(err) }, 'Server SVID renewal failed')), Math.max(1000, life / 2))
      svidTimer.unref()
      log.info({ [F.SPIFFE_ID]: serverId.toString(), [F.SERIAL]: svid.serial }, 'Server SVID issued')
    }
    const publishBundleFiles = () => {
      const b = ca.bundle()
      const bundlePem = new X509Bundle(cfg.trustDomain, b.x509Authorities).toPem()
      tls.setCa(bundlePem)
      writeAtomic(join(cfg.dataDir, 'bundle.pem'), bundlePem)
      writeAtomic(join(cfg.dataDir, 'bundle.spiffe'), b.marshal({ indent: 2 }))
      metrics.bundleSequence.set(b.sequenceNumber ?? 0)
    }
    publishBundleFiles()
    await renewServerSvid()
    // The signed bounds document, beside the bundle (re-signed when bounds or the JWT key change).
    const publishBounds = () =>
      bounds.signedDocument().then(
        (doc) => writeAtomic(join(cfg.dataDir, 'bounds.jws'), `${doc}\n`),
        (err: unknown) => log.error({ [F.ERR]: String(err) }, 'Signed bounds document not written'),
      )
    await publishBounds()
    const unsubBounds = bounds.onChange(() => void publishBounds())
    const unsubBoundsKey = ca.onBundleChange(() => void publishBounds())
    closers.push(async () => {
      unsubBounds()
      unsubBoundsKey()
    })
    closers.push(async () => clearTimeout(svidTimer))
    const unsubBundle = ca.onBundleChange(() => {
      publishBundleFiles()
      void renewServerSvid().catch((err: unknown) => log.error({ [F.ERR]: String(err) }, 'Server SVID renewal failed'))
    })
    closers.push(async () => unsubBundle())

    const rotTimer = setInterval(() => {
      ca.rotate().catch((err: unknown) => log.error({ [F.ERR]: String(err) }, 'CA rotation failed'))
      ds.joinTokens.pruneExpired(clock.now()).catch(() => undefined)
    }, cfg.rotationCheckIntervalMs)
    rotTimer.unref()
    closers.push(async () => clearInterval(rotTimer))


    // Agent API: TCP + TLS, client certificate requested but optional (Attest has none).
    const health = new HealthService(['warrant.agent.v1.Node'])
    const healthProto = loadProto('grpc/health/v1/health.proto') as unknown as { grpc: { health: { v1: { Health: grpc.ServiceClientConstructor } } } }
    // The server-wide receive limit is what authenticated agents need; Attest and peers without a certificate get
    // far less, per call, before anything is read (api/call-limits.ts).
    const agentApi = new grpc.Server({
      'grpc.max_receive_message_length': AGENT_API_MAX_MESSAGE_BYTES,
      'grpc.keepalive_permit_without_calls': 1,
      interceptors: [agentApiCallLimits({ limits: cfg.attestationLimits, log, metrics })],
    })
    // CSRs of BatchNewX509SVID are verified on a worker pool (one thread fewer than the cores, with this thread taking a
    // share when idle), which also signs their leaves when the CA key is a software key; stopped after the gRPC server.
    const csrVerifier = await CsrVerifierPool.start()
    closers.push(() => csrVerifier.close())
    if (!csrVerifier.nativeEcdsa) log.warn({ [F.ERR]: String(nativeEcdsaError()) }, 'Native ECDSA addon not loaded: CSRs are verified with node:crypto (slower)')
    // The agent API's services; the adapter only decodes, calls them and encodes.
    const authorized = new AuthorizedEntries({ registration, clock })
    closers.push(async () => authorized.close())
    const subjects = new Subjects(instances)
    const x509 = new X509Issuance({ entries: authorized, subjects, bounds, ca, metrics, defaultTtlMs: cfg.defaultX509TtlMs, csrVerifier })
    const jwt = new JwtIssuance({ entries: authorized, subjects, bounds, ca, metrics, log: log.child({ [F.SUBSYSTEM]: 'issuance' }), defaultTtlMs: cfg.defaultJwtTtlMs })
    const sync = new SyncStreams({ registration, bounds, ca, federated, log: log.child({ [F.SUBSYSTEM]: 'sync' }) })
    agentApi.addService(nodeServiceDefinition(), nodeService({ attestation: attestationGuard, x509, jwt, sync, entries: authorized, instances, bounds, ca, log, metrics }))
    agentApi.addService(healthProto.grpc.health.v1.Health.service, health.handlers(log))
    const creds = grpc.experimental.createCertificateProviderServerCredentials(tls, tls, false)
    // Accepted by a guarded listener (per-address cap, TLS handshake/preface and idle timeouts, reaping of sessions
    // Node's HTTP/2 layer gave up on: src/common/net/connection-guard.ts) and injected with the same credentials.
    const agentListener = await listenGuardedTcp({
      grpcServer: agentApi, credentials: creds, host: cfg.bindAddress.host, port: cfg.bindAddress.port,
      limits: { ...DEFAULT_AGENT_API_LIMITS, ...cfg.connectionLimits }, listener: 'agent_api', log, registry: metrics.registry,
    }).catch((err: Error) => Promise.reject(new IdentityError('ERR_CONFIG_INVALID', `cannot listen on ${cfg.bindAddress.host}:${cfg.bindAddress.port}: ${err.message}`, { cause: err })))
    const port = agentListener.port
    tls.republish()
    closers.push(() => agentListener.close())
    closers.push(() => shutdownGrpc(agentApi, 5000))
    closers.push(async () => agentListener.stopAccepting())
    const address = { host: cfg.bindAddress.host, port }

    // Admin API: Unix socket only, directory 0700, socket 0600.
    ensurePrivateDir(dirname(cfg.socketPath))
    rmSync(cfg.socketPath, { force: true })
    const adminProto = loadProto('warrant/admin/v1/admin.proto') as unknown as { warrant: { admin: { v1: Record<string, grpc.ServiceClientConstructor> } } }
    const admin = adminServices({ ds, registration, attestation, ca, federated, instances, log, metrics })
    const adminApi = new grpc.Server()
    adminApi.addService(adminProto.warrant.admin.v1.Entries!.service, admin.entries)
    adminApi.addService(adminProto.warrant.admin.v1.Agents!.service, admin.agents)
    adminApi.addService(adminProto.warrant.admin.v1.Bundles!.service, admin.bundles)
    adminApi.addService(adminProto.warrant.admin.v1.Instances!.service, admin.instances)
    const federationProto = loadProto('warrant/admin/v1/federation.proto') as unknown as { warrant: { admin: { v1: { Federation: grpc.ServiceClientConstructor } } } }
    const boundsProto = loadProto('warrant/admin/v1/bounds.proto') as unknown as { warrant: { admin: { v1: { Bounds: grpc.ServiceClientConstructor } } } }
    adminApi.addService(boundsProto.warrant.admin.v1.Bounds.service, boundsAdminService({ bounds, log }))
    adminApi.addService(federationProto.warrant.admin.v1.Federation.service, federationAdminService({ relationships, refresher, federated, log }))
    adminApi.addService(healthProto.grpc.health.v1.Health.service, health.handlers(log))
    await new Promise<void>((resolve, reject) => {
      adminApi.bindAsync(`unix:${cfg.socketPath}`, grpc.ServerCredentials.createInsecure(), (err) => (err ? reject(new IdentityError('ERR_CONFIG_INVALID', `cannot listen on ${cfg.socketPath}: ${err.message}`, { cause: err })) : resolve()))
    })
    chmodSync(cfg.socketPath, 0o600)
    closers.push(async () => {
      await shutdownGrpc(adminApi, 2000)
      rmSync(cfg.socketPath, { force: true })
    })

    // Health (/live, /ready) and Prometheus metrics over plain HTTP on loopback (or as configured).
    let ready = true
    if (cfg.health) {
      const ep = await startHealthEndpoint(cfg.health, { ready: () => ready })
      closers.push(() => ep.close())
    }
    if (cfg.metrics) {
      const ep = await startMetricsEndpoint(cfg.metrics, metrics.registry)
      closers.push(() => ep.close())
    }

    // SPIFFE bundle endpoint (federation), on its own TCP port.
    let bundleEndpoint: { port: number } | undefined
    const be = cfg.federation?.bundle_endpoint
    if (be) {
      const ep = await startBundleEndpoint({
        address: be.address,
        profile: be.profile === 'https_web' ? { kind: 'https_web', certFile: be.cert_file!, keyFile: be.key_file! } : { kind: 'https_spiffe', getServerSvid: () => serverSvidPem },
        getBundle: () => ca.bundle(),
        log,
        ...(be.refresh_hint !== undefined ? { refreshHintSeconds: Math.max(1, Math.round(be.refresh_hint / 1000)) } : {}),
      })
      bundleEndpoint = { port: ep.port }
      closers.push(() => ep.close())
      writeAtomic(join(cfg.dataDir, 'bundle-endpoint.addr'), `${ep.host}:${ep.port}\n`)
    }
    refresher.start()
    closers.push(async () => refresher.stop())

    writeAtomic(join(cfg.dataDir, 'server.addr'), `${address.host}:${address.port}\n`)
    log.info({ [F.TRUST_DOMAIN]: cfg.trustDomain.name, [F.ADDRESS]: `${address.host}:${address.port}`, [F.PATH]: cfg.socketPath }, 'Server started')

    let stopped = false
    return {
      address,
      bundleEndpointPort: bundleEndpoint?.port,
      socketPath: cfg.socketPath,
      ca,
      registration,
      attestation,
      federated,
      ds,
      metrics,
      async stop() {
        if (stopped) return
        stopped = true
        ready = false
        health.shutdown()
        log.info({}, 'Server stopping')
        await closeAll()
        rmSync(join(cfg.dataDir, 'server.addr'), { force: true })
        log.info({}, 'Server stopped')
      },
    }
  } catch (err) {
    await closeAll()
    throw err
  }
}

function withoutJoinToken(a: NodeAttestationService): NodeAttestationService {
  return new Proxy(a, {
    get(target, prop, recv) {
      if (prop === 'attest') {
        return (params: { attestor: string }, ...rest: unknown[]) => {
          if (params.attestor === 'join_token') return Promise.reject(new IdentityError('ERR_NODE_ATTESTATION_FAILED', 'join_token attestation is not enabled'))
          return (target.attest as (...a: unknown[]) => unknown).call(target, params, ...rest)
        }
      }
      if (prop === 'createJoinToken') return () => Promise.reject(new IdentityError('ERR_NOT_CONFIGURED', 'join_token attestation is not enabled'))
      const v = Reflect.get(target, prop, recv) as unknown
      return typeof v === 'function' ? (v as (...a: unknown[]) => unknown).bind(target) : v
    },
  })
}

function shutdownGrpc(s: grpc.Server, graceMs: number): Promise<void> {
  return new Promise((resolve) => {
    const t = setTimeout(() => {
      s.forceShutdown()
      resolve()
    }, graceMs)
    s.tryShutdown(() => {
      clearTimeout(t)
      resolve()
    })
  })
}
