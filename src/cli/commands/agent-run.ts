/**
 * `warrant agent run --config agent.toml`, `warrant agent validate --config
 * agent.toml`, `warrant agent healthcheck [--socket PATH]`.
 */
import * as grpc from '@grpc/grpc-js'
import { loadProto } from '../../common/grpc/proto.js'
import { startAgent } from '../../agent/agent.js'
import { loadAgentConfig } from '../../agent/config.js'
import { IdentityError } from '../../errors/identity-error.js'
import { outputFormat, parseFlags, printJson } from '../args.js'
import { createLogger } from '../logging.js'
import { reportError } from '../report-error.js'
import { resolveSocket } from './api.js'
import { runUntilSignal } from '../signals.js'
import { agentPlugins } from '../plugins.js'

export const usage = [
  '  agent run --config agent.toml          start the agent',
  '  agent validate --config agent.toml     check the configuration without starting',
  '  agent healthcheck [--socket PATH]      ask a running agent (Workload API socket) whether it is serving',
].join('\n')

function load(path: string | undefined) {
  if (!path) throw new IdentityError('ERR_INVALID_ARGUMENT', '--config is required')
  return loadAgentConfig(path, agentPlugins)
}

export async function runAgentCommand(args: string[]): Promise<number> {
  const [cmd, ...rest] = args
  switch (cmd) {
    case 'run': {
      const { values } = parseFlags(rest, { config: { type: 'string', short: 'c' } })
      const cfg = load(values.config)
      const log = createLogger({ name: 'warrant-agent', level: cfg.logLevel })
      const agent = await startAgent({ config: cfg, log })
      await runUntilSignal(log, () => agent.close())
      return 0
    }
    case 'validate': {
      const { values } = parseFlags(rest, { config: { type: 'string', short: 'c' }, output: { type: 'string' } })
      const fmt = outputFormat(values.output)
      try {
        load(values.config)
        if (fmt === 'json') printJson({ valid: true })
        else process.stdout.write('Agent configuration file is valid.\n')
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
      const { values } = parseFlags(rest, { socket: { type: 'string' }, output: { type: 'string' }, shallow: { type: 'boolean' } })
      const fmt = outputFormat(values.output)
      const target = resolveSocket(values.socket)
      const proto = loadProto('grpc/health/v1/health.proto') as unknown as { grpc: { health: { v1: { Health: grpc.ServiceClientConstructor } } } }
      const client = new proto.grpc.health.v1.Health(target, grpc.credentials.createInsecure())
      try {
        const res = await new Promise<{ status: string }>((resolve, reject) =>
          (client as unknown as { Check: (r: unknown, o: grpc.CallOptions, cb: (e: Error | null, r: { status: string }) => void) => void }).Check(
            { service: '' },
            { deadline: Date.now() + 5000 },
            (e, r) => (e ? reject(e) : resolve(r)),
          ),
        )
        const ok = res.status === 'SERVING'
        if (fmt === 'json') printJson({ healthy: ok, status: res.status })
        else process.stdout.write(ok ? 'Agent is healthy.\n' : `Agent is unhealthy: ${res.status}\n`)
        return ok ? 0 : 1
      } catch (err) {
        const details = (err as { details?: string }).details ?? (err as Error).message
        if (fmt === 'json') printJson({ healthy: false, error: details })
        else process.stderr.write(`Agent is unhealthy: unable to determine health (${details})\n`)
        return 1
      } finally {
        client.close()
      }
    }
    default:
      process.stderr.write(`warrant agent: unknown command "${cmd ?? ''}"\n${usage}\n`)
      return 2
  }
}

export const run = runAgentCommand
