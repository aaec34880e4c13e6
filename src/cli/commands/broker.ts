import { readTomlFile } from '../../common/config/toml.js'
import { configDir } from '../../server/config.js'
import { toStandaloneBrokerConfig } from '../../broker/config.js'
import { outputFormat, parseFlags, printJson } from '../args.js'
import { startStandaloneBroker } from '../broker-composition.js'
import { createLogger } from '../logging.js'
import { reportError } from '../report-error.js'
import { runUntilSignal } from '../signals.js'

export const usage = [
  '  broker run --config broker.toml        start a standalone broker (TLS identity and bundles from a warrant agent)',
  '  broker validate --config broker.toml   check the configuration without starting',
].join('\n')

function load(path: string | undefined) {
  if (!path) throw Object.assign(new Error('--config is required'), { usage: true })
  return toStandaloneBrokerConfig(readTomlFile(path), configDir(path))
}

export async function run(args: string[]): Promise<number> {
  const [cmd, ...rest] = args
  switch (cmd) {
    case 'run': {
      const { values } = parseFlags(rest, { config: { type: 'string', short: 'c' } })
      const cfg = load(values.config)
      const log = createLogger({ name: 'warrant-broker', level: cfg.logLevel })
      const broker = await startStandaloneBroker({ config: cfg, log })
      process.stdout.write(`WARRANT_BROKER_URL=${cfg.issuer}\n`)
      await runUntilSignal(log, () => broker.stop())
      return 0
    }
    case 'validate': {
      const { values } = parseFlags(rest, { config: { type: 'string', short: 'c' }, output: { type: 'string' } })
      const fmt = outputFormat(values.output)
      try {
        load(values.config)
        if (fmt === 'json') printJson({ valid: true })
        else process.stdout.write('Configuration is valid.\n')
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
