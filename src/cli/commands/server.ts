import * as grpc from '@grpc/grpc-js'
import { serverNodeAttestors } from '../../../attestors/index.js'
import { readTomlFile } from '../../common/config/toml.js'
import { loadProto } from '../../common/grpc/proto.js'
import { keyManagerPlugins } from '../../keymanager/index.js'
import { configDir, toServerConfig } from '../../server/config.js'
import { resolvePlugins, startServer } from '../../server/server.js'
import { outputFormat, parseFlags, printJson } from '../args.js'
import { DEFAULT_ADMIN_SOCKET } from '../admin-client.js'
import { createLogger } from '../logging.js'
import { runUntilSignal } from '../signals.js'
import { reportError } from '../report-error.js'


export const usage = [
  '  server run --config server.toml        start the server',
  '  server validate --config server.toml   check the configuration without starting',
  '  server healthcheck [--socket PATH]     ask a running server whether it is serving',
].join('\n')

const catalog = { keyManagers: keyManagerPlugins, nodeAttestors: serverNodeAttestors }

function load(path: string | undefined) {
  if (!path) throw Object.assign(new Error('--config is required'), { usage: true })
  return toServerConfig(readTomlFile(path), configDir(path))
}

export async function run(args: string[]): Promise<number> {
  const [cmd, ...rest] = args
  switch (cmd) {
    case 'run': {
      const { values } = parseFlags(rest, { config: { type: 'string', short: 'c' } })
      const cfg = load(values.config)
      const log = createLogger({ name: 'warrant-server', level: cfg.logLevel })
      for (const n of cfg.notes) log.warn({ note: n }, 'Configuration note')
      const server = await startServer(cfg, { log, catalog })
      await runUntilSignal(log, () => server.stop())
      return 0
    }
    case 'validate': {
      const { values } = parseFlags(rest, { config: { type: 'string', short: 'c' }, output: { type: 'string' } })
      const fmt = outputFormat(values.output)
      try {
        const cfg = load(values.config)
        resolvePlugins(cfg, catalog)
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
          (client as unknown as { Check: (r: unknown, o: grpc.CallOptions, cb: (e: Error | null, r: { status: string }) => void) => void }).Check({ service: '' }, { deadline: Date.now() + 5000 }, (e, r) => (e ? reject(e) : resolve(r))),
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
