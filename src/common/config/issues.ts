import type { z } from 'zod'
import { IdentityError } from '../../errors/identity-error.js'

export interface ConfigIssue {
  path: string
  message: string
}

export function zodIssues(err: z.ZodError, prefix = ''): ConfigIssue[] {
  return err.issues.map((i) => {
    const p = i.path.map(String).join('.')
    return { path: prefix && p ? `${prefix}.${p}` : prefix || p || '(root)', message: i.message }
  })
}

export function configError(issues: ConfigIssue[], what = 'configuration'): IdentityError {
  const lines = issues.map((i) => `  ${i.path}: ${i.message}`).join('\n')
  return new IdentityError('ERR_CONFIG_INVALID', `invalid ${what}:\n${lines}`, { details: { issues } })
}

/** Parses with a zod schema; throws ERR_CONFIG_INVALID listing every issue with its path. */
export function parseWith<T>(schema: z.ZodType<T>, raw: unknown, prefix = '', what?: string): T {
  const r = schema.safeParse(raw)
  if (!r.success) throw configError(zodIssues(r.error, prefix), what)
  return r.data
}
