import * as grpc from '@grpc/grpc-js'
import { readFileSync } from 'node:fs'
import { readTomlFile } from '../../common/config/toml.js'
import { loadProto } from '../../common/grpc/proto.js'
import { IdentityError } from '../../errors/identity-error.js'
import type { UpstreamAuthority } from '../../server/ca/manager.js'
import { upstreamAuthorityFromPem } from '../../server/ca/upstream.js'
import { configDir, toServerConfig, type ServerConfig } from '../../server/config.js'
import { startServer } from '../../server/server.js'
import { outputFormat, parseFlags, printJson } from '../args.js'
import { DEFAULT_ADMIN_SOCKET } from '../admin-client.js'
import { createLogger } from '../logging.js'
import { runUntilSignal } from '../signals.js'
import { reportError } from '../report-error.js'
import { serverPlugins } from '../plugins.js'
import { openServerAuditLog } from '../server-audit.js'

export const usage = [
  '  server run --config server.toml        start the server',
  '  server validate --config server.toml   check the configuration without starting',
  '  server healthcheck [--socket PATH]     ask a running server whether it is serving',
].join('\n')

function load(path: string | undefined) {
  if (!path) throw Object.assign(new Error('--config is required'), { usage: true })
  return toServerConfig(withoutBroker(readTomlFile(path)), configDir(path), serverPlugins)
}

/** server.toml's `[broker]` section belongs to the broker (cli/broker-composition.ts), not to the server's schema. */
function hasBroker(raw: unknown): boolean {
  return typeof raw === 'object' && raw !== null && 'broker' in raw
}
function withoutBroker(raw: unknown): unknown {
  if (!hasBroker(raw)) return raw
  const { broker: _broker, ...rest } = raw as Record<string, unknown>
  return rest
}

/** Reads a file named in configuration (only this layer reads files by path); ERR_CONFIG_INVALID when it cannot. */
function readConfigFile(path: string, what = 'file'): string {
  try {
    return readFileSync(path, 'utf8')
  } catch (cause) {
    throw new IdentityError('ERR_CONFIG_INVALID', `${what}: cannot read ${path} (${(cause as NodeJS.ErrnoException).code ?? 'error'})`, { cause })
  }
}

/** Reads `server.upstream_authority`'s files and builds the CA's upstream. */
function readUpstream(cfg: ServerConfig): UpstreamAuthority | undefined {
  if (!cfg.upstream) return undefined
  const read = (key: string, path: string) => readConfigFile(path, `upstream_authority.${key}`)
  const u = cfg.upstream
  return upstreamAuthorityFromPem({
    certPem: read('cert_file', u.certFile),
    keyPem: read('key_file', u.keyFile),
    bundlePem: u.bundleFile === undefined ? undefined : read('bundle_file', u.bundleFile),
  })
}

export async function run(args: string[]): Promise<number> {
  const [cmd, ...rest] = args
  switch (cmd) {
    case 'run': {
      const { values } = parseFlags(rest, { config: { type: 'string', short: 'c' } })
      const cfg = load(values.config)
      const log = createLogger({ name: 'warrant-server', level: cfg.logLevel })
      for (const n of cfg.notes) log.warn({ note: n }, 'Configuration note')
      const upstream = readUpstream(cfg)
      const server = await startServer(cfg, {
        log,
        readText: (path) => readConfigFile(path),
        openAudit: (a, km) => openServerAuditLog(a, km, cfg.trustDomain, log),
        ...(upstream ? { upstream } : {}),
      })
      // [broker]: the token broker, embedded (see cli/broker-composition.ts; loaded only when configured).
      const raw = readTomlFile(values.config!)
      const broker = hasBroker(raw)
        ? await (
            await import('../broker-composition.js')
          )
            .startBrokerOfServerToml(raw, configDir(values.config!), server, cfg, log)
            .catch(async (err: unknown) => {
              await server.stop()
              throw err
            })
        : undefined
      await runUntilSignal(log, async () => {
        await broker?.stop()
        await server.stop()
      })
      return 0
    }
    case 'validate': {
      const { values } = parseFlags(rest, { config: { type: 'string', short: 'c' }, output: { type: 'string' } })
      const fmt = outputFormat(values.output)
      try {
        // One pass: core keys and every plugin block (toServerConfig), then the upstream authority's files.
        const cfg = load(values.config)
        const raw = readTomlFile(values.config!)
        if (hasBroker(raw)) (await import('../broker-composition.js')).brokerConfigOfServerToml(raw, configDir(values.config!), cfg.dataDir)
        readUpstream(cfg)
        if (fmt === 'json') printJson({ valid: true, notes: cfg.notes })
        else {
          process.stdout.write('Configuration is valid.\n')
          for (const n of cfg.notes) process.stdout.write(`note: ${n}\n`)
        }
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
    case 'healthcheck': {
      const { values } = parseFlags(rest, { socket: { type: 'string' }, output: { type: 'string' } })
      const socket = values.socket ?? DEFAULT_ADMIN_SOCKET
      const proto = loadProto('grpc/health/v1/health.proto') as unknown as { grpc: { health: { v1: { Health: grpc.ServiceClientConstructor } } } }
      const client = new proto.grpc.health.v1.Health(`unix:${socket}`, grpc.credentials.createInsecure())
      try {
        const res = await new Promise<{ status: string }>((resolve, reject) =>
          (client as unknown as { Check: (r: unknown, o: grpc.CallOptions, cb: (e: Error | null, r: { status: string }) => void) => void }).Check(
            { service: '' },
            { deadline: Date.now() + 5000 },
            (e, r) => (e ? reject(e) : resolve(r)),
          ),
        )
        const ok = res.status === 'SERVING'
        if (outputFormat(values.output) === 'json') printJson({ healthy: ok, status: res.status })
        else process.stdout.write(ok ? 'Server is healthy.\n' : `Server is unhealthy: ${res.status}\n`)
        return ok ? 0 : 1
      } catch (err) {
        process.stderr.write(`Server is unhealthy: ${(err as Error).message}\n`)
        return 1
      } finally {
        client.close()
      }
    }
    default:
      process.stderr.write(`usage:\n${usage}\n`)
      return 2
  }
}
