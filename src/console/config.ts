/**
 * `[broker.console]`: the operator console's own HTTPS listener, its
 * operators and their sessions. Two layers as elsewhere: a strict zod schema
 * of the raw section (every problem with its path), then the typed runtime
 * config with durations in ms and paths resolved against the config file's
 * directory (the store defaults under the data directory).
 *
 *   [broker.console]
 *   enabled = true
 *   bind_address = "127.0.0.1:8444"
 *   public_url = "https://localhost:8444"     # the origin browsers use (WebAuthn RP ID = its host)
 *   session_idle = "10m"                      # a session unused this long ends
 *   session_ttl = "1h"                        # and every session ends this long after its login
 *   bootstrap_operator = "admin"              # gets a one-time login token while it has no credential
 *   [[broker.console.operators]]
 *   name = "alice"
 *   totp_secret_file = "alice.totp"           # optional: base32 secret, 0600, provisioned out of band
 */
import { isAbsolute, resolve } from 'node:path'
import { z } from 'zod'
import { duration } from '../common/config/duration.js'
import { configError, zodIssues, type ConfigIssue } from '../common/config/issues.js'
import { hostPort } from '../common/config/refinements.js'

const OPERATOR_NAME = /^[a-z][a-z0-9._-]{0,63}$/

const ConsoleSection = z
  .object({
    enabled: z.boolean().default(false),
    bind_address: hostPort().default('127.0.0.1:8444'),
    /** The URL operators open: https, no path; its origin is checked on every POST and is the WebAuthn origin. */
    public_url: z.string().url().optional(),
    session_idle: duration().default(600_000),
    session_ttl: duration().default(3_600_000),
    /** Operators' passkeys and TOTP secrets set up in the console. Default `<data_dir>/console.sqlite3`. */
    store_path: z.string().min(1).optional(),
    /** Own certificate and key (PEM); default: the broker's TLS identity. */
    tls_cert_file: z.string().min(1).optional(),
    tls_key_file: z.string().min(1).optional(),
    bootstrap_operator: z.string().regex(OPERATOR_NAME, 'must be a lowercase name').default('admin'),
    operators: z
      .array(
        z
          .object({
            name: z.string().regex(OPERATOR_NAME, 'must be a lowercase name'),
            totp_secret_file: z.string().min(1).optional(),
          })
          .strict(),
      )
      .max(256)
      .default([]),
    /** Failed logins allowed per client address (and per operator) within `login_window`. */
    login_attempts: z.number().int().min(1).max(1000).default(5),
    login_window: duration().default(300_000),
  })
  .strict()

export interface ConsoleOperatorConfig {
  readonly name: string
  readonly totpSecretFile?: string
}

export interface ConsoleConfig {
  readonly bindAddress: { host: string; port: number }
  /** `https://host[:port]`, no trailing slash. */
  readonly origin: string
  /** The WebAuthn relying party ID: the public URL's host name. */
  readonly rpId: string
  readonly sessionIdleMs: number
  readonly sessionTtlMs: number
  readonly storePath: string
  readonly tls?: { readonly certFile: string; readonly keyFile: string }
  readonly bootstrapOperator: string
  readonly operators: readonly ConsoleOperatorConfig[]
  readonly loginAttempts: number
  readonly loginWindowMs: number
}

function splitHostPort(s: string): { host: string; port: number } {
  const i = s.lastIndexOf(':')
  return { host: s.slice(0, i).replace(/^\[|\]$/g, ''), port: Number(s.slice(i + 1)) }
}

/**
 * The console's config from the raw `[broker.console]` section, or undefined
 * when there is none or `enabled` is false. Throws ERR_CONFIG_INVALID with
 * every problem and its path (`broker.console.<key>`).
 */
export function parseConsoleConfig(s: { console: Record<string, unknown> | undefined; baseDir: string; dataDir: string }): ConsoleConfig | undefined {
  if (s.console === undefined) return undefined
  const prefix = 'broker.console'
  const r = ConsoleSection.safeParse(s.console)
  if (!r.success) throw configError(zodIssues(r.error, prefix), 'console configuration')
  const c = r.data
  if (!c.enabled) return undefined
  const issues: ConfigIssue[] = []
  const abs = (p: string) => (isAbsolute(p) ? p : resolve(s.baseDir, p))
  const bind = splitHostPort(c.bind_address)
  let origin = `https://${bind.host.includes(':') ? `[${bind.host}]` : bind.host}:${bind.port}`
  if (c.public_url !== undefined) {
    const u = new URL(c.public_url)
    if (u.protocol !== 'https:') issues.push({ path: `${prefix}.public_url`, message: 'must be an https URL' })
    if (u.pathname !== '/' || u.search !== '' || u.hash !== '' || u.username !== '' || u.password !== '')
      issues.push({ path: `${prefix}.public_url`, message: 'must be an origin (no path, query, fragment or credentials)' })
    origin = u.origin
  }
  if (c.session_idle < 30_000 || c.session_idle > 3_600_000) issues.push({ path: `${prefix}.session_idle`, message: 'must be between 30s and 1h' })
  if (c.session_ttl < c.session_idle || c.session_ttl > 12 * 3_600_000)
    issues.push({ path: `${prefix}.session_ttl`, message: 'must be at least session_idle and at most 12h' })
  if ((c.tls_cert_file === undefined) !== (c.tls_key_file === undefined))
    issues.push({ path: `${prefix}.tls_cert_file`, message: 'tls_cert_file and tls_key_file go together' })
  const names = new Set<string>()
  c.operators.forEach((o, i) => {
    if (names.has(o.name)) issues.push({ path: `${prefix}.operators.${i}.name`, message: `operator "${o.name}" is listed twice` })
    names.add(o.name)
  })
  if (c.login_window < 1000 || c.login_window > 86_400_000) issues.push({ path: `${prefix}.login_window`, message: 'must be between 1s and 1d' })
  if (issues.length > 0) throw configError(issues, 'console configuration')
  const operators: ConsoleOperatorConfig[] = c.operators.map((o) => ({
    name: o.name,
    ...(o.totp_secret_file !== undefined ? { totpSecretFile: abs(o.totp_secret_file) } : {}),
  }))
  if (!names.has(c.bootstrap_operator)) operators.unshift({ name: c.bootstrap_operator })
  return {
    bindAddress: bind,
    origin,
    rpId: new URL(origin).hostname.replace(/^\[|\]$/g, ''),
    sessionIdleMs: c.session_idle,
    sessionTtlMs: c.session_ttl,
    storePath: abs(c.store_path ?? resolve(s.dataDir, 'console.sqlite3')),
    ...(c.tls_cert_file !== undefined && c.tls_key_file !== undefined ? { tls: { certFile: abs(c.tls_cert_file), keyFile: abs(c.tls_key_file) } } : {}),
    bootstrapOperator: c.bootstrap_operator,
    operators,
    loginAttempts: c.login_attempts,
    loginWindowMs: c.login_window,
  }
}
