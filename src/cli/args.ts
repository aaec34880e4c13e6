import { parseArgs, type ParseArgsConfig } from 'node:util'
import { IdentityError } from '../errors/identity-error.js'

export type OutputFormat = 'pretty' | 'json'

/** node:util parseArgs with strict flags; unknown flags are a usage error (exit 2 upstream). */
export function parseFlags<T extends NonNullable<ParseArgsConfig['options']>>(args: string[], options: T, opts: { positionals?: boolean } = {}) {
  try {
    return parseArgs({ args, options, strict: true, allowPositionals: opts.positionals ?? false })
  } catch (err) {
    throw new IdentityError('ERR_INVALID_ARGUMENT', (err as Error).message.split('\n')[0] ?? 'invalid flags')
  }
}

export function outputFormat(v: unknown): OutputFormat {
  if (v === undefined || v === 'pretty') return 'pretty'
  if (v === 'json') return 'json'
  throw new IdentityError('ERR_INVALID_ARGUMENT', '--output must be "pretty" or "json"')
}

export function printJson(v: unknown): void {
  process.stdout.write(`${JSON.stringify(v, null, 2)}\n`)
}
