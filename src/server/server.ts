import * as grpc from '@grpc/grpc-js'
import { chmodSync, rmSync } from 'node:fs'
import { dirname, join } from 'node:path'
import { IdentityError } from '../errors/identity-error.js'
import { systemClock, type Clock } from '../common/clock.js'
import { ensurePrivateDir } from '../common/fs/private-dir.js'
import { writeFileAtomic } from '../common/fs/write-atomic.js'
import { HealthService } from '../common/grpc/health.js'
import { loadProto } from '../common/grpc/proto.js'
import { shutdownGrpc } from '../common/grpc/shutdown.js'
import { F, type Logger } from '../common/log/logger.js'
import { DEFAULT_AGENT_API_LIMITS } from '../common/net/connection-guard.js'
import { listenGuardedTcp } from '../common/net/guarded-listener.js'
import type { KeyManager } from '../keymanager/key-manager.js'
import { PluginSet } from '../plugin/catalog.js'
import { ServerAudit, type ServerAuditSink } from './audit/server-audit.js'
import { NodeAttestationService } from './attestation/service.js'
import { adminServices } from './api/admin-service.js'
import { nodeService, nodeServiceDefinition } from './api/node-service.js'
import { AGENT_API_MAX_MESSAGE_BYTES, agentApiCallLimits } from './api/call-limits.js'
import { FederatedBundles } from './bundle/federated.js'
import { followChanges } from './changes/follower.js'
import { BoundsService } from './bounds/bounds-service.js'
import { boundsAdminService } from './bounds/admin-service.js'
import { InstanceService } from './instances/instance-service.js'
import {
  FederationRefresher,
  RelationshipStore,
  federationAdminService,
  relationshipsFromConfig,
  startBundleEndpoint,
  type ReadText,
} from './federation/index.js'
import { publishBoundsDocument, publishBundleFiles } from './ca/bundle-files.js'
import { CsrVerifierPool } from './ca/csr-verifier.js'
import { nativeEcdsaError } from './ca/native-ecdsa.js'
import { CaManager, type UpstreamAuthority } from './ca/manager.js'
import { serverIdFor } from './ca/server-id.js'
import type { ServerConfig } from './config.js'
import type { DataStore } from './datastore/types.js'
import { startServerHttp } from './http/observability.js'
import { createServerMetrics, type Metrics } from './metrics.js'
import { RegistrationService } from './registration/service.js'
import { AuthorizedEntries } from './registration/authorized-entries.js'
import { JwtIssuance } from './issuance/jwt-issuance.js'
import { Subjects } from './issuance/subject.js'
import { X509Issuance } from './issuance/x509-issuance.js'
import { SyncStreams } from './sync/sync-stream.js'
import { RevocationService } from './revocation/revocation-service.js'
import { revocationsAdminService } from './api/revocations-admin.js'
import { serverIdOf } from './registration/validate.js'
import { PushCertificateProvider } from './tls/push-certificate-provider.js'
import { ServerSvid } from './tls/server-svid.js'

/** How often an agent's open Sync stream re-authenticates when node changes are pushed (change feed); else 30 s. */
const SYNC_RECHECK_WITH_FEED_MS = 300_000

export interface RunningServer {
  /** Bound TCP address of the agent API. */
  address: { host: string; port: number }
  /** This server's ID among the servers sharing its datastore (`server_id`, or kept in the data directory). */
  serverId: string
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

export interface StartServerOptions {
  log: Logger
  clock?: Clock
  /** `server.upstream_authority`, built by the caller from the files it read (ca/upstream.ts). */
  upstream?: UpstreamAuthority
  /**
   * Reads the files that configuration and the admin API name and that are
   * read again while the server runs (the bundle endpoint's web certificate
   * and key per connection, a relationship's web CA per fetch). Supplied by
   * the CLI, the only layer that touches files by path.
   */
  readText: ReadText
  /**
   * Opens the audit log `[audit]` configures (the CLI's: src/audit's AuditLog, checkpoints signed by a key of
   * `keyManager`); called once the key manager exists, closed after everything else. Absent (or `[audit]
   * enabled = false`), nothing is audited.
   */
  openAudit?: (cfg: NonNullable<ServerConfig['audit']>, keyManager: KeyManager) => Promise<ServerAuditSink & { close(): Promise<void> }>
}

/**
 * Starts the server: the plugins of its config (key manager, datastore, node
 * attestors, through the catalog), the CA, the agent API (TCP, mutual TLS),
 * the admin API (Unix socket), health and metrics. Wiring only: each part
 * lives in its own module.
 */
export async function startServer(cfg: ServerConfig, opts: StartServerOptions): Promise<RunningServer> {
  const clock = opts.clock ?? systemClock
  const log = opts.log
  ensurePrivateDir(cfg.dataDir)
  const closers: (() => Promise<void>)[] = []
  const closeAll = async () => {
    for (const c of closers.reverse()) await c().catch((err: unknown) => log.warn({ [F.ERR]: String(err) }, 'Close failed'))
  }
  // Plugins close last, in reverse order of creation.
  const plugins = new PluginSet({ log, clock, trustDomain: cfg.trustDomain, dataDir: cfg.dataDir })
  closers.push(() => plugins.close())
  try {
    const km = await plugins.create(cfg.plugins.keyManager, {})
    const ds = await plugins.create(cfg.plugins.datastore, {})
    const metrics = createServerMetrics({ defaults: true, countEntries: () => ds.entries.count(), countAgents: () => ds.nodes.count() })
    // The audit log closes after every service that appends to it (closers run in reverse).
    const auditSink = cfg.audit && opts.openAudit ? await opts.openAudit(cfg.audit, km) : undefined
    if (auditSink) closers.push(() => auditSink.close())
    const audit = auditSink ? new ServerAudit({ sink: auditSink, log, registry: metrics.registry }) : undefined
    const withAudit = audit ? { audit } : {}
    const attestors = await plugins.createAll(cfg.plugins.nodeAttestors, { joinTokens: ds.joinTokens })

    // Several servers may share the datastore: each has its own CA journal and keys, named by its ID.
    const serverId = serverIdFor(cfg.dataDir, cfg.serverId)
    const ca = new CaManager({
      serverId,
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
      ...(opts.upstream ? { upstream: opts.upstream } : {}),
    })
    await ca.init()
    const bounds = new BoundsService({ trustDomain: cfg.trustDomain, ds, config: cfg.bounds, clock, log, jwtSigner: () => ca.jwtSigner(), ...withAudit })
    await bounds.init()
    const registration = new RegistrationService({
      ds,
      clock,
      log,
      bounds,
      limits: { trustDomain: cfg.trustDomain, maxX509TtlSeconds: Math.floor(cfg.caTtlMs / 1000), maxJwtTtlSeconds: Math.floor(cfg.caTtlMs / 1000) },
      ...withAudit,
    })
    const instances = new InstanceService({ ds, clock, log, ...withAudit })
    const revocations = new RevocationService({
      ds,
      instances,
      trustDomain: cfg.trustDomain,
      clock,
      log,
      defaultX509TtlMs: cfg.defaultX509TtlMs,
      defaultJwtTtlMs: cfg.defaultJwtTtlMs,
      ...withAudit,
    })
    await revocations.start()
    closers.push(async () => revocations.stop())
    const federated = new FederatedBundles({ ds, localTrustDomain: cfg.trustDomain, log })
    const attestation = new NodeAttestationService({
      trustDomain: cfg.trustDomain,
      ds,
      ca,
      registration,
      attestors,
      clock,
      log,
      agentTtlMs: cfg.agentTtlMs,
      metrics,
      ...withAudit,
    })

    // Federation: relationships (config + admin API) and the refresher that polls foreign bundle endpoints.
    const relationships = new RelationshipStore({ kv: ds.kv, localTrustDomain: cfg.trustDomain, clock })
    for (const r of relationshipsFromConfig(cfg.federation ?? { federates_with: {} })) await relationships.upsert(r)
    const refresher = new FederationRefresher({ relationships, federated, clock, log, registry: metrics.registry, readText: opts.readText })
    // Changes written through any server sharing the datastore (PostgreSQL's change feed) reach this one's services at once.
    // Other servers' CA changes reach this one's CA through the same subscription (else at each rotation check).
    const localBundle = { trustDomain: cfg.trustDomain.name, refresh: () => ca.refreshBundle() }
    const follower = await followChanges(ds, { registration, revocations, bounds, federated, nodes: attestation, federation: refresher, localBundle }, log)
    if (follower) closers.push(() => follower.close())

    // The server's own X.509-SVID for TLS (tls/), and the bundle it trusts, published beside its state (ca/bundle-files.ts).
    const tls = new PushCertificateProvider()
    const serverSvid = new ServerSvid({
      ca,
      spiffeId: serverIdOf(cfg.trustDomain),
      ttlMs: cfg.defaultX509TtlMs,
      clock,
      log,
      onIssued: (p) => tls.setIdentity(p.certChainPem, p.keyPem),
    })
    closers.push(async () => serverSvid.stop())
    const publishBundle = () => {
      const b = ca.bundle()
      tls.setCa(publishBundleFiles(cfg.dataDir, b))
      metrics.bundleSequence.set(b.sequenceNumber ?? 0)
    }
    publishBundle()
    await serverSvid.renew()
    // The signed bounds document, beside the bundle (re-signed when bounds or the JWT key change).
    const publishBounds = () =>
      bounds.signedDocument().then(
        (doc) => publishBoundsDocument(cfg.dataDir, doc),
        (err: unknown) => log.error({ [F.ERR]: String(err) }, 'Signed bounds document not written'),
      )
    await publishBounds()
    const unsubBounds = bounds.onChange(() => void publishBounds())
    const unsubBoundsKey = ca.onBundleChange(() => void publishBounds())
    closers.push(async () => {
      unsubBounds()
      unsubBoundsKey()
    })
    const unsubBundle = ca.onBundleChange(() => {
      publishBundle()
      serverSvid.renewInBackground()
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
    if (!csrVerifier.nativeEcdsa)
      log.warn({ [F.ERR]: String(nativeEcdsaError()) }, 'Native ECDSA addon not loaded: CSRs are verified with node:crypto (slower)')
    // The agent API's services; the adapter only decodes, calls them and encodes.
    const authorized = new AuthorizedEntries({ registration, clock })
    closers.push(async () => authorized.close())
    const subjects = new Subjects(instances)
    const x509 = new X509Issuance({
      entries: authorized,
      subjects,
      bounds,
      ca,
      metrics,
      defaultTtlMs: cfg.defaultX509TtlMs,
      csrVerifier,
      revocations,
      ...withAudit,
    })
    const jwt = new JwtIssuance({
      entries: authorized,
      subjects,
      bounds,
      ca,
      metrics,
      log: log.child({ [F.SUBSYSTEM]: 'issuance' }),
      defaultTtlMs: cfg.defaultJwtTtlMs,
      revocations,
      ...withAudit,
    })
    // With a change feed, a ban, eviction or re-attestation anywhere reaches the agent's stream at once (nodes), so the
    // periodic re-authentication (a datastore read per agent) is only a backstop (an expired agent SVID, a dropped CA).
    const sync = new SyncStreams({
      registration,
      bounds,
      ca,
      federated,
      revocations,
      nodes: attestation,
      ...(follower ? { recheckMs: SYNC_RECHECK_WITH_FEED_MS } : {}),
      log: log.child({ [F.SUBSYSTEM]: 'sync' }),
    })
    agentApi.addService(nodeServiceDefinition(), nodeService({ attestation, x509, jwt, sync, entries: authorized, instances, bounds, ca, log, metrics }))
    agentApi.addService(healthProto.grpc.health.v1.Health.service, health.handlers(log))
    const creds = grpc.experimental.createCertificateProviderServerCredentials(tls, tls, false)
    // Accepted by a guarded listener (per-address cap, TLS handshake/preface and idle timeouts, reaping of sessions
    // Node's HTTP/2 layer gave up on: src/common/net/connection-guard.ts) and injected with the same credentials.
    const agentListener = await listenGuardedTcp({
      grpcServer: agentApi,
      credentials: creds,
      host: cfg.bindAddress.host,
      port: cfg.bindAddress.port,
      limits: { ...DEFAULT_AGENT_API_LIMITS, ...cfg.connectionLimits },
      listener: 'agent_api',
      log,
      registry: metrics.registry,
    }).catch((err: Error) =>
      Promise.reject(
        new IdentityError('ERR_CONFIG_INVALID', `cannot listen on ${cfg.bindAddress.host}:${cfg.bindAddress.port}: ${err.message}`, { cause: err }),
      ),
    )
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
    adminApi.addService(adminProto.warrant.admin.v1.Revocations!.service, revocationsAdminService({ revocations, log }))
    const federationProto = loadProto('warrant/admin/v1/federation.proto') as unknown as {
      warrant: { admin: { v1: { Federation: grpc.ServiceClientConstructor } } }
    }
    const boundsProto = loadProto('warrant/admin/v1/bounds.proto') as unknown as { warrant: { admin: { v1: { Bounds: grpc.ServiceClientConstructor } } } }
    adminApi.addService(boundsProto.warrant.admin.v1.Bounds.service, boundsAdminService({ bounds, log }))
    adminApi.addService(federationProto.warrant.admin.v1.Federation.service, federationAdminService({ relationships, refresher, federated, log }))
    adminApi.addService(healthProto.grpc.health.v1.Health.service, health.handlers(log))
    await new Promise<void>((resolve, reject) => {
      adminApi.bindAsync(`unix:${cfg.socketPath}`, grpc.ServerCredentials.createInsecure(), (err) =>
        err ? reject(new IdentityError('ERR_CONFIG_INVALID', `cannot listen on ${cfg.socketPath}: ${err.message}`, { cause: err })) : resolve(),
      )
    })
    chmodSync(cfg.socketPath, 0o600)
    closers.push(async () => {
      await shutdownGrpc(adminApi, 2000)
      rmSync(cfg.socketPath, { force: true })
    })

    // Health (/live, /ready) and Prometheus metrics over plain HTTP on loopback (or as configured).
    let ready = true
    for (const ep of await startServerHttp(cfg, { ready: () => ready, registry: metrics.registry })) closers.push(() => ep.close())

    // SPIFFE bundle endpoint (federation), on its own TCP port.
    let bundleEndpoint: { port: number } | undefined
    const be = cfg.federation?.bundle_endpoint
    if (be) {
      const ep = await startBundleEndpoint({
        address: be.address,
        profile:
          be.profile === 'https_web'
            ? { kind: 'https_web', loadCredentials: () => ({ certChainPem: opts.readText(be.cert_file!), keyPem: opts.readText(be.key_file!) }) }
            : { kind: 'https_spiffe', getServerSvid: () => serverSvid.current },
        getBundle: () => ca.bundle(),
        log,
        ...(be.refresh_hint !== undefined ? { refreshHintSeconds: Math.max(1, Math.round(be.refresh_hint / 1000)) } : {}),
      })
      bundleEndpoint = { port: ep.port }
      closers.push(() => ep.close())
      writeFileAtomic(join(cfg.dataDir, 'bundle-endpoint.addr'), `${ep.host}:${ep.port}\n`)
    }
    refresher.start().catch((err: unknown) => log.error({ [F.ERR]: String(err) }, 'Federation refresher did not start'))
    closers.push(async () => refresher.stop())

    writeFileAtomic(join(cfg.dataDir, 'server.addr'), `${address.host}:${address.port}\n`)
    log.info(
      { [F.TRUST_DOMAIN]: cfg.trustDomain.name, server_id: serverId, [F.ADDRESS]: `${address.host}:${address.port}`, [F.PATH]: cfg.socketPath },
      'Server started',
    )

    let stopped = false
    return {
      address,
      serverId,
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
