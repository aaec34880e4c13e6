/**
 * `warrant gateway run|validate --config gateway.toml`: the composition root of
 * the agentic gateway (src/gateway). The gateway is a SPIFFE workload: its TLS
 * certificate (towards agents, the broker and tools) and its bundles come
 * from the Workload API through an X509Source, the JWT bundles that verify
 * the server's signed bounds document from a watch (as `warrant broker run`
 * gets them), and the ceilings from that document (BoundsDocumentFile,
 * re-read on change). The tool registry is read from its directory once at
 * start; a bad document refuses the start. Every call is one `gateway.call`
 * event in the gateway's own audit log, its checkpoints signed by a key of
 * its key manager (default: a disk key manager beside the log).
 */
import { readdirSync, readFileSync } from 'node:fs'
import { dirname, join } from 'node:path'
import type { AuditLog } from '../../audit/store/audit-log.js'
import { openSignedAuditLog } from '../audit-composition.js'
import { httpsTransport } from '../../broker-client/transport.js'
import { systemClock } from '../../common/clock.js'
import { configError, type ConfigIssue } from '../../common/config/issues.js'
import { readTomlFile } from '../../common/config/toml.js'
import { toPemBlock } from '../../common/crypto/pem.js'
import { F, type Logger } from '../../common/log/logger.js'
import type { IdentityError } from '../../errors/identity-error.js'
import { toGatewayConfig, type GatewayConfig } from '../../gateway/config.js'
import { startGatewayServer, type GatewayIdentity } from '../../gateway/gateway-server.js'
import { ToolRegistry } from '../../gateway/registry.js'
import { TxnTokenClient } from '../../gateway/txn-token-client.js'
import { diskKeyManagerPlugin, keyManagerPlugins, type KeyManager } from '../../keymanager/index.js'
import { configDir } from '../../server/config.js'
import { ceilingFor, type Ceiling } from '../../spiffe/bounds/ceiling.js'
import { BundleSet } from '../../spiffe/bundle/bundle-set.js'
import type { SpiffeId } from '../../spiffe/spiffe-id.js'
import type { TrustDomain } from '../../spiffe/trust-domain.js'
import type { X509Svid } from '../../spiffe/x509-svid/x509-svid.js'
import { MemoryReplayCache } from '../../tokens/dpop.js'
import { JwksCache } from '../../tokens/jwks-cache.js'
import { WorkloadApiClient } from '../../workload-client/workload-api-client.js'
import { X509Source, type SvidPicker } from '../../workload-client/x509-source.js'
import { outputFormat, parseFlags, printJson } from '../args.js'
import { BoundsDocumentFile } from '../broker-composition.js'
import { createLogger } from '../logging.js'
import { reportError } from '../report-error.js'
import { runUntilSignal } from '../signals.js'

export const usage = [
  '  gateway run --config gateway.toml        start the agentic gateway (SVID and bundles from a warrant agent)',
  '  gateway validate --config gateway.toml   check the configuration and the tool registry without starting',
].join('\n')

function load(path: string | undefined): GatewayConfig {
  if (!path) throw Object.assign(new Error('--config is required'), { usage: true })
  return toGatewayConfig(readTomlFile(path), configDir(path))
}

/** The tool documents (`*.json`) of the registry directory, parsed together. */
export function loadToolRegistry(dir: string): ToolRegistry {
  let names: string[]
  try {
    names = readdirSync(dir)
      .filter((n) => n.endsWith('.json'))
      .sort()
  } catch (err) {
    throw configError(
      [{ path: 'gateway.tools_dir', message: `cannot be read (${(err as NodeJS.ErrnoException).code ?? String(err)})` }],
      'gateway configuration',
    )
  }
  const docs = names.map((n) => {
    const source = join(dir, n)
    return { source, text: readFileSync(source, 'utf8') }
  })
  return ToolRegistry.fromDocuments(docs)
}

const AUDIT_CHECKPOINT_KEY_ID = 'gateway-audit-checkpoint'

async function openAuditKeyManager(cfg: GatewayConfig, log: Logger, trustDomain: TrustDomain): Promise<KeyManager & { close?(): Promise<void> }> {
  const sel = cfg.audit.keyManager ?? { name: diskKeyManagerPlugin.name, raw: { keys_path: 'keys' } }
  const def = keyManagerPlugins.find((p) => p.name === sel.name)
  if (!def)
    throw configError(
      [{ path: `gateway.audit.key_manager.${sel.name}`, message: `unknown key manager (known: ${keyManagerPlugins.map((p) => p.name).join(', ')})` }],
      'gateway configuration',
    )
  let config: unknown
  try {
    config = def.parseConfig(sel.raw)
  } catch (err) {
    const issues = (err as IdentityError).details?.issues as ConfigIssue[] | undefined
    throw configError(
      (issues ?? [{ path: '', message: String(err) }]).map((i) => ({ ...i, path: `gateway.audit.key_manager.${sel.name}.${i.path}` })),
      'gateway configuration',
    )
  }
  return def.create(config, {
    log: log.child({ [F.PLUGIN_TYPE]: 'key_manager', [F.PLUGIN_NAME]: def.name, [F.SUBSYSTEM]: 'gateway' }),
    clock: systemClock,
    trustDomain,
    dataDir: dirname(cfg.audit.path),
  })
}

function openAuditLog(cfg: GatewayConfig, km: KeyManager, origin: string, log: Logger): Promise<AuditLog> {
  const { path, checkpointIntervalMs } = cfg.audit
  return openSignedAuditLog({ path, checkpointIntervalMs, origin, keyId: AUDIT_CHECKPOINT_KEY_ID, keyManager: km, owner: 'gateway', log })
}

function bundlePem(b: BundleSet): string {
  return b
    .trustDomains()
    .map((td) => b.getX509BundleForTrustDomain(td).toPem())
    .join('')
}

export interface RunningGateway {
  readonly port: number
  stop(): Promise<void>
}

/** The gateway's X.509-SVID and bundles: an X509Source of the Workload API, or anything with the same getters (a benchmark's static SVID). */
export interface GatewaySvidSource {
  getX509Svid(): X509Svid
  getBundles(): BundleSet
  on(event: 'update', fn: () => void): unknown
}

/** Starts the gateway (see the module comment): its SVID, bundles and bounds document from the Workload API, then `startGatewayWith`. */
export async function startGateway(cfg: GatewayConfig, log: Logger): Promise<RunningGateway> {
  const client = new WorkloadApiClient({ socketPath: cfg.workloadApiSocket, log })
  const want = cfg.spiffeId
  const picker: SvidPicker | undefined =
    want === undefined
      ? undefined
      : (svids) => {
          const s = svids.find((v) => v.id.toString() === want)
          if (!s) throw new Error(`no SVID for ${want} from the Workload API`)
          return s
        }
  const source = await X509Source.create({ client, log, ...(picker ? { picker } : {}) })
  const cleanups: (() => Promise<void> | void)[] = [() => source.close()]
  const stopAll = async () => {
    for (const c of cleanups.reverse()) await Promise.resolve(c()).catch((err: unknown) => log.warn({ [F.ERR]: String(err) }, 'Gateway shutdown step failed'))
  }
  try {
    const td = source.getX509Svid().id.trustDomain
    log.info({ [F.SPIFFE_ID]: source.getX509Svid().id.toString() }, 'Gateway SVID ready')

    // JWT bundles (they verify the bounds document), watched as the standalone broker does
    const abort = new AbortController()
    cleanups.push(() => abort.abort())
    let jwtBundles = new BundleSet()
    const gotJwt = new Promise<void>((resolve) => {
      void client.watchJwtBundles(
        {
          onUpdate: (b) => {
            jwtBundles = b
            resolve()
          },
          onError: (err) => log.warn({ [F.ERROR_CODE]: err.code }, 'JWT bundle watch error'),
        },
        { signal: abort.signal },
      )
    })
    await Promise.race([gotJwt, new Promise((r) => setTimeout(r, 10_000).unref())])
    const bounds = new BoundsDocumentFile({ path: cfg.boundsDocumentPath, bundles: () => jwtBundles, trustDomain: td, log })
    await bounds.reload()
    cleanups.push(bounds.watch())

    const gw = await startGatewayWith({ cfg, source, ceilingFor: (id) => ceilingFor(bounds.current(), id), log })
    cleanups.push(() => gw.stop())
    return {
      port: gw.port,
      async stop() {
        await stopAll()
        log.info({}, 'Gateway stopped')
      },
    }
  } catch (err) {
    await stopAll()
    throw err
  }
}

/**
 * The gateway once its SVID and ceilings are at hand: the tool registry read
 * from `tools_dir`, its audit log, the broker's Txn-Token client over mutual
 * TLS with the SVID, and the HTTPS server. `warrant gateway run` and the
 * gateway benchmark both start it here.
 */
export async function startGatewayWith(o: {
  cfg: GatewayConfig
  source: GatewaySvidSource
  ceilingFor: (id: SpiffeId) => Ceiling
  log: Logger
}): Promise<RunningGateway> {
  const { cfg, source, log } = o
  const registry = loadToolRegistry(cfg.toolsDir)
  log.info({ [F.PATH]: cfg.toolsDir, [F.COUNT]: registry.size, tools: registry.names() }, 'Tool registry loaded')
  const cleanups: (() => Promise<void> | void)[] = []
  const stopAll = async () => {
    for (const c of cleanups.reverse()) await Promise.resolve(c()).catch((err: unknown) => log.warn({ [F.ERR]: String(err) }, 'Gateway shutdown step failed'))
  }
  try {
    const td = source.getX509Svid().id.trustDomain

    // the audit log
    const km = await openAuditKeyManager(cfg, log, td)
    cleanups.push(() => km.close?.())
    const audit = await openAuditLog(cfg, km, `${td.name}/warrant/gateway-audit`, log)
    cleanups.push(() => audit.close())

    // the broker: Txn-Tokens over mTLS with our SVID, its JWKS for agents' access tokens
    const transport = httpsTransport({
      source,
      ...(cfg.broker.caFile !== undefined ? { ca: readFileSync(cfg.broker.caFile, 'utf8') } : {}),
      timeoutMs: cfg.limits.upstreamTimeoutMs,
    })
    cleanups.push(() => transport.close())
    const txn = new TxnTokenClient({
      issuer: cfg.broker.issuer,
      trustDomain: () => td.idString(),
      transport: transport.request,
      cache: cfg.txnTokenCache,
      timeoutMs: cfg.limits.upstreamTimeoutMs,
    })
    const keys = new JwksCache({ fetchJwks: () => txn.fetchJwks() })

    // our TLS identity, following rotation
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
    const identity: GatewayIdentity = { current: () => current, onChange: (fn) => (listeners.add(fn), () => listeners.delete(fn)) }

    let authorities: { bundles: BundleSet; pem: string } | undefined
    const server = await startGatewayServer({
      host: cfg.bindAddress.host,
      port: cfg.bindAddress.port,
      url: cfg.url,
      identity,
      trust: {
        localTrustDomain: () => td,
        bundles: () => source.getBundles(),
        authoritiesPem: () => {
          // once per bundle change, not per call
          const b = source.getBundles()
          if (authorities?.bundles !== b) authorities = { bundles: b, pem: bundlePem(b) }
          return authorities.pem
        },
      },
      federatedTrustDomains: cfg.federatedTrustDomains,
      registry: () => registry,
      ceilingFor: o.ceilingFor,
      broker: {
        issuer: cfg.broker.issuer,
        keys,
        replay: new MemoryReplayCache(),
        allowBearer: cfg.allowBearer,
        txnToken: (r) => txn.issue(r),
        releaseCredential: (t) => txn.releaseCredential(t),
      },
      ...(cfg.toolCaFile !== undefined ? { toolCa: readFileSync(cfg.toolCaFile, 'utf8') } : {}),
      audit,
      limits: cfg.limits,
      log,
    })
    cleanups.push(() => server.close())
    log.info({ url: cfg.url, issuer: cfg.broker.issuer }, 'Gateway started')
    return { port: server.port, stop: stopAll }
  } catch (err) {
    await stopAll()
    throw err
  }
}

export async function run(args: string[]): Promise<number> {
  const [cmd, ...rest] = args
  switch (cmd) {
    case 'run': {
      const { values } = parseFlags(rest, { config: { type: 'string', short: 'c' } })
      const cfg = load(values.config)
      const log = createLogger({ name: 'warrant-gateway', level: cfg.logLevel })
      const gw = await startGateway(cfg, log)
      process.stdout.write(`WARRANT_GATEWAY_URL=${cfg.url}\n`)
      await runUntilSignal(log, () => gw.stop())
      return 0
    }
    case 'validate': {
      const { values } = parseFlags(rest, { config: { type: 'string', short: 'c' }, output: { type: 'string' } })
      const fmt = outputFormat(values.output)
      try {
        const cfg = load(values.config)
        const registry = loadToolRegistry(cfg.toolsDir)
        if (fmt === 'json') printJson({ valid: true, tools: registry.names() })
        else process.stdout.write(`Configuration is valid (${registry.size} tools).\n`)
        return 0
      } catch (err) {
        const e = err as { details?: { issues?: unknown }; message?: string }
        if (fmt === 'json') {
          printJson({ valid: false, error: e.message, issues: e.details?.issues ?? [] })
          return 1
        }
        return reportError(err)
      }
    }
    default:
      process.stderr.write(`usage:\n${usage}\n`)
      return 2
  }
}
