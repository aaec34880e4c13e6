/**
 * The agent, wired: node attestation (or the persisted SVID), the server
 * client, the cache manager, the Sync loop with reconnect backoff, agent SVID
 * renewal at half-life, and the Workload API socket.
 */
import type { KeyObject } from 'node:crypto'
import { newEcPrivateKey } from '../common/crypto/new-key.js'
import { systemClock, type Clock } from '../common/clock.js'
import { F, type Logger } from '../common/log/logger.js'
import { IdentityError } from '../errors/identity-error.js'
import { PluginSet } from '../plugin/catalog.js'
import type { AgentNodeAttestor, WorkloadAttestor } from '../plugin/contracts.js'
import type { SpiffeBundle } from '../spiffe/bundle/spiffe-bundle.js'
import { SpiffeBundle as Bundle } from '../spiffe/bundle/spiffe-bundle.js'
import { createCsr } from '../spiffe/x509-svid/csr.js'
import { X509Svid } from '../spiffe/x509-svid/x509-svid.js'
import { attestationReuseMs, attestWorkload, type NamedWorkloadAttestor } from './workload/attest-workload.js'
import { startWorkloadApi, type WorkloadApiServer } from './workload-api/start-workload-api.js'
import { AgentStore, readTrustBundle } from './agent-store.js'
import type { AgentConfig } from './config.js'
import { AgentManager } from './manager/manager.js'
import { AgentObservability } from './observability.js'
import { Backoff } from './manager/backoff.js'
import { renewalTime } from './manager/rotation.js'
import { attestNode } from './node-attestation.js'
import { GrpcServerClient, isAgentRejected, type BundleDoc, type ClientCredentials, type SyncMessage } from './server-client.js'
import { ServerEndpoints, type LookupAll } from './server-endpoints.js'
import { watchUnavailable } from './unavailable-watch.js'

export interface StartAgentOptions {
  config: AgentConfig<AgentNodeAttestor, WorkloadAttestor, unknown>
  log: Logger
  clock?: Clock
  random?: () => number
  /** Tests: start without the Workload API socket. */
  workloadApi?: boolean
  /** Tests: resolves server host names (default: the system resolver). */
  lookup?: LookupAll
}

export interface RunningAgent {
  readonly manager: AgentManager
  readonly agentId: string
  /** The server the agent talks to now (one of `server_address`, after failover). */
  readonly serverAddress: string
  readonly workloadApi: WorkloadApiServer | undefined
  /** Health and metrics endpoints (ports, metrics registry, readiness). */
  readonly observability: AgentObservability
  close(): Promise<void>
}

function sleep(ms: number, signal: AbortSignal): Promise<void> {
  return new Promise((resolve) => {
    if (signal.aborted) return resolve()
    const t = setTimeout(done, ms)
    function done() {
      clearTimeout(t)
      signal.removeEventListener('abort', done)
      resolve()
    }
    signal.addEventListener('abort', done, { once: true })
  })
}

function newKey(): KeyObject {
  return newEcPrivateKey('P-256')
}

export async function startAgent(opts: StartAgentOptions): Promise<RunningAgent> {
  // Health and metrics first: /live answers and /ready says no while the node attests.
  const obs = await AgentObservability.start({
    health: opts.config.health,
    metrics: opts.config.metrics,
    clock: opts.clock ?? systemClock,
    log: opts.log.child({ [F.SUBSYSTEM]: 'agent' }),
    workloadApiRequired: opts.workloadApi ?? true,
  })
  try {
    return await startAgentWith(opts, obs)
  } catch (err) {
    await obs.close()
    throw err
  }
}

async function startAgentWith(opts: StartAgentOptions, obs: AgentObservability): Promise<RunningAgent> {
  const cfg = opts.config
  const clock = opts.clock ?? systemClock
  const random = opts.random ?? Math.random
  const log = opts.log.child({ [F.SUBSYSTEM]: 'agent' })
  const td = cfg.trustDomain
  // The agent key and SVID stay in memory only when the key manager keeps nothing across restarts.
  const store = new AgentStore({ dir: cfg.dataDir, trustDomain: td, persist: cfg.keyManager?.definition.volatile !== true })
  const plugins = new PluginSet({ log: opts.log, clock, trustDomain: td, dataDir: cfg.dataDir })
  const nodeAttestor = await plugins.create(cfg.nodeAttestor, {})
  const workloadAttestors: NamedWorkloadAttestor[] = []
  for (const w of cfg.workloadAttestors) workloadAttestors.push({ name: w.name, attestor: await plugins.create(w, {}) })
  // A single-use proof (a join token) cannot be presented again: the agent renews its SVID instead.
  const canReattest = nodeAttestor.canReattest !== false

  // Trust: the persisted bundle, else the bootstrap bundle, else (insecure) none.
  let bundle: SpiffeBundle | undefined = store.loadBundle()
  if (!bundle && cfg.trustBundlePath) bundle = readTrustBundle(cfg.trustBundlePath, td)
  if (!bundle && !cfg.insecureBootstrap) throw new IdentityError('ERR_CONFIG_INVALID', 'no trust bundle: set trust_bundle_path or insecure_bootstrap')
  const rootsPem = () => (bundle ? bundle.x509Bundle().toPem() : undefined)

  let svid!: X509Svid
  let key!: KeyObject
  const attestorName = cfg.nodeAttestor.name
  // The servers of the trust domain: the agent stays on one and fails over to the next when it fails.
  const endpoints = new ServerEndpoints({ addresses: cfg.serverAddresses, log, ...(opts.lookup ? { lookup: opts.lookup } : {}) })
  await endpoints.resolve()
  let client: GrpcServerClient | undefined

  /**
   * Attests at the current server; a server that cannot be reached (UNAVAILABLE) is
   * skipped for the next, once around the list. Any other refusal is final (a join
   * token the server refused is not offered to another).
   */
  async function attest(signal?: AbortSignal): Promise<void> {
    for (let tried = 1; ; tried++) {
      try {
        await attestAt(endpoints.current, signal)
        client?.setAddress(endpoints.current)
        return
      } catch (err) {
        if (signal?.aborted || !(err instanceof IdentityError) || err.code !== 'ERR_UNAVAILABLE' || tried >= endpoints.size) throw err
        log.warn({ [F.ADDRESS]: endpoints.current, [F.ERR]: err }, 'Server unavailable for node attestation')
        await endpoints.failover()
      }
    }
  }

  async function attestAt(address: string, signal?: AbortSignal): Promise<void> {
    const k = newKey()
    const boot = new GrpcServerClient({ address, trustDomain: td, credentials: { rootsPem: rootsPem() } })
    try {
      const out = await attestNode({
        client: boot,
        attestorName,
        attestor: nodeAttestor,
        privateKey: k,
        trustDomain: td,
        log,
        ...(signal ? { signal } : {}),
      }).catch((err: unknown) => {
        obs.nodeAttestation('failure')
        throw err
      })
      obs.nodeAttestation('success')
      svid = X509Svid.fromChain(out.svidChain, k)
      key = k
      store.saveSvid(svid, key)
      if (out.bundle) updateBundle(out.bundle)
    } finally {
      boot.close()
    }
  }

  function updateBundle(doc: BundleDoc): boolean {
    let b: SpiffeBundle
    try {
      b = Bundle.parse(td, doc.document)
    } catch (err) {
      log.warn({ [F.ERR]: err }, 'Ignoring invalid bundle from the server')
      return false
    }
    if (b.x509Authorities.length === 0) return false
    const changed = !bundle || bundle.x509Bundle().toPem() !== b.x509Bundle().toPem()
    bundle = b
    store.saveBundle(b)
    return changed
  }

  const loaded = store.load()
  if (loaded.state && loaded.state.svid.notAfter.getTime() > clock.now() + 1000) {
    svid = loaded.state.svid
    key = loaded.state.key
    log.info({ [F.AGENT_ID]: svid.id.toString(), not_after: svid.notAfter.toISOString() }, 'Reusing persisted agent SVID; skipping node attestation')
  } else {
    log.info({ [F.REASON]: loaded.state ? 'persisted agent SVID expired' : loaded.reason }, 'Attesting node')
    await attest()
  }

  const creds = (): ClientCredentials => ({
    rootsPem: rootsPem(),
    keyPem: key.export({ type: 'pkcs8', format: 'pem' }) as string,
    chainPem: svid.certificatesPem(),
  })
  client = new GrpcServerClient({ address: endpoints.current, trustDomain: td, credentials: creds() })
  const server = client
  // A call the server answers UNAVAILABLE (going down, its datastore unreachable) moves the agent on, like a broken
  // Sync stream: the Sync loop fails over before it reconnects.
  let failoverWanted = false
  let syncAbort = new AbortController()
  const calls = watchUnavailable(server, (address) => {
    if (failoverWanted || endpoints.size < 2) return // with one server, reconnecting the Sync stream would not help
    log.warn({ [F.ADDRESS]: address }, 'Server unavailable for calls; failing over')
    failoverWanted = true
    syncAbort.abort()
  })

  const manager = new AgentManager({
    trustDomain: td,
    signer: calls,
    clock,
    log: opts.log,
    random,
    x509SvidCacheMaxSize: cfg.x509SvidCacheMaxSize,
    jwtSvidCacheMaxSize: cfg.jwtSvidCacheMaxSize,
    attestWorkload: (peer, o) => attestWorkload(peer, workloadAttestors, o, opts.log),
    instances: calls,
  })
  // Instances of a previous run belong to processes this run cannot know: end them before registering new ones.
  void manager.endPreviousInstances()
  if (bundle) manager.setBundle({ trustDomain: td.name, document: bundle.marshal(), sequence: bundle.sequenceNumber ?? 0 })
  obs.attach({
    cacheStats: () => manager.cacheStats,
    synced: () => manager.ready,
    svidNotAfter: () => svid.notAfter.getTime(),
    hasBundle: () => bundle !== undefined,
  })

  const stop = new AbortController()
  let rejected = false

  /** The server no longer accepts our SVID: attest again when the attestor can, else stop asking. */
  async function onRejected(err: unknown): Promise<void> {
    if (!canReattest) {
      if (!rejected) {
        log.error(
          { [F.ERR]: err, [F.PLUGIN_NAME]: attestorName },
          'The server rejected the agent SVID; its node attestor cannot attest again (single-use proof): a new one is needed',
        )
      }
      rejected = true
      return
    }
    log.warn({ [F.ERR]: err }, 'The server rejected the agent SVID; attesting again')
    await attest(stop.signal)
    server.setCredentials(creds())
    scheduleRenewal()
  }

  // ---- Sync loop ----
  // A broken stream moves the agent to the next server (failover); the Workload API keeps serving from the caches
  // meanwhile. The backoff grows while no server answers and resets at the first message.
  const syncBackoff = new Backoff({ initialMs: 250, maxMs: 15_000, random })
  const syncLoop = (async () => {
    while (!stop.signal.aborted) {
      if (failoverWanted) {
        failoverWanted = false
        server.setAddress(await endpoints.failover())
      }
      syncAbort = new AbortController()
      const signal = AbortSignal.any([stop.signal, syncAbort.signal])
      let connected = false
      try {
        await server.sync(
          (msg: SyncMessage) => {
            obs.syncMessage()
            syncBackoff.reset()
            rejected = false
            if (!connected) {
              connected = true
              log.info({ [F.ADDRESS]: server.address }, 'Sync stream connected')
            }
            if (msg.bundle && updateBundle(msg.bundle)) {
              log.info({ [F.TRUST_DOMAIN]: td.name }, 'Trust bundle changed')
              queueMicrotask(() => server.setCredentials(creds()))
            }
            manager.applySync(msg).catch((err: unknown) => log.warn({ [F.ERR]: err }, 'Applying a sync message failed'))
          },
          { signal },
        )
        obs.syncDown()
        if (syncAbort.signal.aborted && !stop.signal.aborted) continue // restart on the new channel at once
      } catch (err) {
        obs.syncDown()
        if (stop.signal.aborted) break
        if (isAgentRejected(err)) {
          try {
            await onRejected(err)
          } catch (e) {
            log.warn({ [F.ERR]: e }, 'Re-attestation failed')
          }
        } else {
          log.warn({ [F.ERR]: err, [F.ADDRESS]: server.address }, 'Sync stream failed; reconnecting')
          // Any other server of the trust domain serves the same entries: try the next one (with one server, its
          // name is resolved again, so a server that moved is found).
          failoverWanted = false
          server.setAddress(await endpoints.failover())
        }
      }
      await sleep(syncBackoff.next(), stop.signal)
    }
  })()

  // ---- agent SVID renewal ----
  let renewTimer: NodeJS.Timeout | undefined
  const renewBackoff = new Backoff({ initialMs: 1000, maxMs: 30_000, random })
  function scheduleRenewal(delayOverride?: number): void {
    if (renewTimer) clearTimeout(renewTimer)
    if (stop.signal.aborted) return
    const at = renewalTime(svid.notBefore.getTime(), svid.notAfter.getTime(), random)
    const delay = delayOverride ?? Math.max(0, at - clock.now())
    renewTimer = setTimeout(() => void renew(), Math.min(delay, 2 ** 31 - 1))
  }
  async function renew(): Promise<void> {
    try {
      if (canReattest) {
        // Re-attestation is the renewal (a TPM agent sends a fresh quote; the server refuses RenewAgent for it).
        await attest(stop.signal)
        server.setCredentials(creds())
        renewBackoff.reset()
        log.info({ [F.AGENT_ID]: svid.id.toString(), not_after: svid.notAfter.toISOString() }, 'Agent re-attested')
        syncAbort.abort()
        scheduleRenewal()
        return
      }
      const k = newKey()
      const chain = await server.renewAgent(await createCsr({ privateKey: k }), { signal: stop.signal })
      const next = X509Svid.fromChain(chain, k)
      svid = next
      key = k
      store.saveSvid(svid, key)
      server.setCredentials(creds())
      renewBackoff.reset()
      log.info({ [F.AGENT_ID]: svid.id.toString(), not_after: svid.notAfter.toISOString() }, 'Agent SVID renewed')
      syncAbort.abort() // the Sync stream moves to the new certificate
      scheduleRenewal()
    } catch (err) {
      if (stop.signal.aborted) return
      if (isAgentRejected(err)) {
        try {
          await onRejected(err)
          return
        } catch (e) {
          log.warn({ [F.ERR]: e }, 'Re-attestation failed')
        }
      }
      const delay = renewBackoff.next()
      log.warn({ [F.ERR]: err, retry_in_ms: delay }, 'Agent SVID renewal failed')
      scheduleRenewal(delay)
    }
  }
  scheduleRenewal()

  let api: WorkloadApiServer | undefined
  if (opts.workloadApi ?? true) {
    api = await startWorkloadApi({
      socketPath: cfg.socketPath,
      manager,
      log: opts.log,
      connectionLimits: cfg.connectionLimits,
      attestationReuseMs: attestationReuseMs(workloadAttestors),
      ...(obs.onCallEnd ? { onCallEnd: obs.onCallEnd } : {}),
      ...(obs.metrics ? { registry: obs.metrics.registry } : {}),
    })
    const listening = api
    obs.workloadApiListening(() => listening.connectionCount)
  }
  log.info({ [F.AGENT_ID]: svid.id.toString(), [F.ADDRESS]: server.address }, 'Agent started')

  let closing: Promise<void> | undefined
  return {
    manager,
    get agentId() {
      return svid.id.toString()
    },
    get serverAddress() {
      return server.address
    },
    workloadApi: api,
    observability: obs,
    close() {
      closing ??= (async () => {
        obs.stopping()
        stop.abort()
        if (renewTimer) clearTimeout(renewTimer)
        await api?.close()
        manager.close()
        await syncLoop
        server.close()
        await plugins.close()
        await obs.close()
        log.info({}, 'Agent stopped')
      })()
      return closing
    },
  }
}
