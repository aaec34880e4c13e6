import { readFileSync, statSync } from 'node:fs'
import { z } from 'zod'
import { duration } from '../../../common/config/duration.js'
import { configError, zodIssues, type ConfigIssue } from '../../../common/config/issues.js'
import { F } from '../../../common/log/logger.js'
import { IdentityError } from '../../../errors/index.js'
import type { PluginDefinition } from '../../../plugin/contracts.js'
import type { DataStore } from '../types.js'
import { checkConnectionString, sslOptions } from './connection.js'
import { openPostgresDataStore } from './postgres-data-store.js'

const ENV_NAME = /^[A-Za-z_][A-Za-z0-9_]*$/

const ConfigSchema = z.strictObject({
  connection_string: z.string().min(1, 'must not be empty'),
  password_file: z.string().min(1, 'must not be empty').optional(),
  password_env: z.string().regex(ENV_NAME, 'must be an environment variable name').optional(),
  pool_size: z.number().int('must be an integer').min(1, 'must be at least 1').max(1000, 'must be at most 1000').optional(),
  connect_timeout: duration().optional(),
  change_retention: duration().optional(),
  tls: z
    .strictObject({
      ca_file: z.string().min(1, 'must not be empty').optional(),
      require: z.boolean().optional(),
    })
    .optional(),
})
export type PostgresFileConfig = z.infer<typeof ConfigSchema>

function parseConfig(raw: unknown): PostgresFileConfig {
  const block = (raw ?? {}) as Record<string, unknown>
  const issues: ConfigIssue[] = []
  if (typeof block === 'object' && block !== null && 'password' in block) {
    issues.push({ path: 'password', message: 'the password is never written inline: use password_file or password_env' })
  }
  const rest = typeof block === 'object' && block !== null ? Object.fromEntries(Object.entries(block).filter(([k]) => k !== 'password')) : block
  const r = ConfigSchema.safeParse(rest)
  if (!r.success) issues.push(...zodIssues(r.error))
  else {
    const c = r.data
    issues.push(...checkConnectionString(c.connection_string).issues)
    if (c.password_file !== undefined && c.password_env !== undefined) {
      issues.push({ path: 'password_file', message: 'set at most one of password_file and password_env' })
    }
    if (c.tls?.require === false && c.tls.ca_file !== undefined) {
      issues.push({ path: 'tls.require', message: 'is false, so tls.ca_file would be unused: remove one of them' })
    }
  }
  if (issues.length > 0 || !r.success) throw configError(issues, 'datastore "postgres" configuration')
  return r.data
}

function fileIssue(key: string, path: string, message: string): IdentityError {
  return new IdentityError('ERR_CONFIG_INVALID', `${key} ${path} ${message}`, { details: { issues: [{ path: key, message }] } })
}

/** Reads a file named by the config (absolute by now: the catalog resolved it); errors name the file, never its content. */
function readConfigFile(key: string, path: string, warnMode?: (path: string) => void): string {
  try {
    const st = statSync(path)
    if (!st.isFile()) throw fileIssue(key, path, 'is not a file')
    if (warnMode !== undefined && (st.mode & 0o077) !== 0) warnMode(path)
    return readFileSync(path, 'utf8')
  } catch (cause) {
    if (cause instanceof IdentityError) throw cause
    const code = (cause as NodeJS.ErrnoException).code
    throw fileIssue(key, path, code === 'ENOENT' ? 'does not exist' : `cannot be read (${code ?? 'error'})`)
  }
}

/** The password from `password_file` (trailing newlines dropped) or `password_env`; undefined when neither is set. */
export function resolvePassword(c: Pick<PostgresFileConfig, 'password_file' | 'password_env'>, warnMode: (path: string) => void): string | undefined {
  if (c.password_file !== undefined) {
    const pw = readConfigFile('password_file', c.password_file, warnMode).replace(/[\r\n]+$/, '')
    if (pw === '') throw fileIssue('password_file', c.password_file, 'is empty')
    return pw
  }
  if (c.password_env !== undefined) {
    const pw = process.env[c.password_env]
    if (pw === undefined || pw === '') {
      throw new IdentityError('ERR_CONFIG_INVALID', `environment variable ${c.password_env} (password_env) is not set`, {
        details: { issues: [{ path: 'password_env', message: 'variable is not set' }] },
      })
    }
    return pw
  }
  return undefined
}

/**
 * `[plugins.datastore.postgres]`: the server's state in a PostgreSQL
 * database, which several servers of one trust domain may share.
 * `connection_string` (`postgresql://user@host:port/database`, never with a
 * password), the password from `password_file` or `password_env`,
 * `pool_size` (default 10), `connect_timeout` (default 5s), `change_retention`
 * (how long the change feed's log keeps a change, default 24h), and `[tls]`:
 * `ca_file` to verify the server against, `require` (default: TLS for any
 * host but a Unix socket or loopback; false allows plain TCP).
 */
export const postgresDataStorePlugin: PluginDefinition<PostgresFileConfig, DataStore> = {
  type: 'datastore',
  name: 'postgres',
  parseConfig,
  create: async (config, deps) => {
    const log = deps.log.child({ [F.PLUGIN_TYPE]: 'datastore', [F.PLUGIN_NAME]: 'postgres' })
    const { target } = checkConnectionString(config.connection_string)
    if (target === undefined) throw new TypeError('connection_string was not checked')
    const password = resolvePassword(config, (path) => log.warn({ [F.PATH]: path }, 'Password file is readable or writable by group or others; chmod 600 it'))
    const ca = config.tls?.ca_file !== undefined ? readConfigFile('tls.ca_file', config.tls.ca_file) : undefined
    const ssl = sslOptions(
      target,
      config.tls === undefined
        ? undefined
        : { ...(ca !== undefined ? { ca } : {}), ...(config.tls.require !== undefined ? { require: config.tls.require } : {}) },
    )
    if (ssl === false && !target.local) log.warn({ host: target.host }, 'Connecting to PostgreSQL without TLS (tls.require = false)')
    return openPostgresDataStore({
      connectionString: config.connection_string,
      ...(password !== undefined ? { password } : {}),
      ssl,
      ...(config.pool_size !== undefined ? { poolSize: config.pool_size } : {}),
      ...(config.connect_timeout !== undefined ? { connectTimeoutMs: config.connect_timeout } : {}),
      ...(config.change_retention !== undefined ? { changeRetentionMs: config.change_retention } : {}),
      log,
      clock: deps.clock,
    })
  },
}
