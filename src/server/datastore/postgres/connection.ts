/**
 * The connection settings of the PostgreSQL datastore: the connection string
 * (a `postgres://` or `postgresql://` URL that must carry no password and no
 * TLS parameters: those come from their own settings), and what the `pg`
 * pool is given. Nothing here ever puts the connection string, or a
 * password, into an error message or a log line.
 */
import type { ConnectionOptions } from 'node:tls'
import type { ConfigIssue } from '../../../common/config/issues.js'

/** Query parameters refused in the connection string, and the setting to use instead. */
const REFUSED_PARAMS: Readonly<Record<string, string>> = {
  password: 'put the password in password_file or password_env',
  sslmode: 'configure TLS in the [tls] table of the datastore block',
  ssl: 'configure TLS in the [tls] table of the datastore block',
  sslcert: 'configure TLS in the [tls] table of the datastore block',
  sslkey: 'configure TLS in the [tls] table of the datastore block',
  sslrootcert: 'configure TLS in the [tls] table of the datastore block (ca_file)',
  sslpassword: 'configure TLS in the [tls] table of the datastore block',
}

/** What the connection string names: the `pg` connection fields (never a password). */
export interface ConnectionTarget {
  /** Host name, IP address, or Unix socket directory; '' when left to the driver's default. */
  host: string
  /** '' when left to the default (5432). */
  port: string
  database: string
  user: string
  /** The connection string's `application_name` and `options`, when given. */
  applicationName?: string
  options?: string
  /** A Unix socket or a loopback address: TLS is not required by default. */
  local: boolean
}

/** Query parameters the connection string may carry (besides the refused ones). */
const ACCEPTED_PARAMS = new Set(['host', 'port', 'user', 'dbname', 'application_name', 'options'])

/**
 * Checks a connection string; returns the issues (path `connection_string`)
 * and, when it is usable, what it names. The messages never repeat the string.
 */
export function checkConnectionString(s: unknown): { issues: ConfigIssue[]; target?: ConnectionTarget } {
  const issue = (message: string): { issues: ConfigIssue[] } => ({ issues: [{ path: 'connection_string', message }] })
  if (typeof s !== 'string' || s === '') return issue('must be a non-empty postgres:// or postgresql:// URL')
  let url: URL
  try {
    url = new URL(s)
  } catch {
    return issue('is not a URL (expected postgresql://user@host:port/database; a Unix socket directory goes percent-encoded in the host, or in ?host=)')
  }
  if (url.protocol !== 'postgres:' && url.protocol !== 'postgresql:') return issue('must start with postgres:// or postgresql://')
  if (url.password !== '') return issue('must not contain a password: put it in password_file or password_env')
  for (const key of url.searchParams.keys()) {
    const instead = REFUSED_PARAMS[key.toLowerCase()]
    if (instead !== undefined) return issue(`must not set "${key}": ${instead}`)
    if (!ACCEPTED_PARAMS.has(key)) return issue(`unsupported parameter "${key}" (accepted: ${[...ACCEPTED_PARAMS].join(', ')})`)
  }
  const decode = (v: string): string => {
    try {
      return decodeURIComponent(v)
    } catch {
      return v
    }
  }
  const q = (k: string): string | undefined => url.searchParams.get(k) ?? undefined
  const host = q('host') ?? decode(url.hostname).replace(/^\[(.*)\]$/, '$1')
  const port = q('port') ?? url.port
  if (port !== '' && !/^\d{1,5}$/.test(port)) return issue('has an invalid port')
  const local = host === '' || host.startsWith('/') || host === 'localhost' || host === '::1' || /^127\./.test(host)
  const applicationName = q('application_name')
  const options = q('options')
  return {
    issues: [],
    target: {
      host,
      port,
      database: q('dbname') ?? decode(url.pathname.replace(/^\//, '')),
      user: q('user') ?? decode(url.username),
      ...(applicationName !== undefined ? { applicationName } : {}),
      ...(options !== undefined ? { options } : {}),
      local,
    },
  }
}

/** The TLS settings of the datastore block. */
export interface PostgresTls {
  /** PEM of the CA(s) the server's certificate must chain to; the system roots when absent. */
  ca?: string
  /** TLS is mandatory (and verified); false connects without TLS. Default: required unless the host is local. */
  require?: boolean
}

/**
 * The `ssl` option of the pool: TLS is on when required (explicitly, or by
 * default for a host that is not local), and then always verified (the chain
 * to `ca` or the system roots, and the host name).
 */
export function sslOptions(target: ConnectionTarget, tls: PostgresTls | undefined): false | ConnectionOptions {
  const required = tls?.require ?? (tls?.ca !== undefined || !target.local)
  if (!required) return false
  return { rejectUnauthorized: true, ...(tls?.ca !== undefined ? { ca: tls.ca } : {}) }
}
