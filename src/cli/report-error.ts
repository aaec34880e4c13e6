import { IdentityError } from '../errors/index.js'

/** Prints an error for a human (or JSON with --output json handled by commands) and picks the exit code. */
export function reportError(err: unknown): number {
  if (err instanceof IdentityError) {
    process.stderr.write(`warrant: ${err.message} [${err.code}]\n`)
    return 1
  }
  const e = err as { code?: number; details?: string; message?: string }
  if (typeof e?.code === 'number' && typeof e.details === 'string') {
    const code = (err as { metadata?: { get(k: string): unknown[] } }).metadata?.get('x-error-code')?.[0]
    process.stderr.write(`warrant: ${e.details}${typeof code === 'string' ? ` [${code}]` : ''}\n`)
    return 1
  }
  process.stderr.write(`warrant: ${e?.message ?? String(err)}\n`)
  return 1
}
