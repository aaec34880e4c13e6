import { isAbsolute } from 'node:path'
import { isIP } from 'node:net'
import { IdentityError } from '../errors/identity-error.js'

/** The environment variable naming the Workload API endpoint (SPIFFE Workload Endpoint §4). */
export const ENDPOINT_SOCKET_ENV = 'SPIFFE_ENDPOINT_SOCKET'

function invalid(message: string): IdentityError {
  return new IdentityError('ERR_CONFIG_INVALID', `workloadapi: ${message}`)
}

/**
 * Turns a Workload API address into a gRPC target. Accepted, as go-spiffe's
 * `TargetFromAddress`: `unix:///abs/path` (no authority, query or fragment),
 * `unix:/abs/path`, `tcp://IP:port` (no path), and, for convenience, a bare
 * absolute socket path. Anything else throws ERR_CONFIG_INVALID.
 */
export function workloadApiTarget(address: string): string {
  if (typeof address !== 'string') throw new TypeError('address must be a string')
  if (address === '') throw invalid('workload endpoint address is empty')
  if (isAbsolute(address)) return `unix:${address}`
  let url: URL
  try {
    url = new URL(address)
  } catch {
    throw invalid('workload endpoint address is not a URI or an absolute path')
  }
  if (url.search !== '' || url.hash !== '' || address.includes('?') || address.includes('#'))
    throw invalid('workload endpoint URI must not have a query or fragment')
  if (url.username !== '' || url.password !== '') throw invalid('workload endpoint URI must not have user info')
  switch (url.protocol) {
    case 'unix:': {
      if (url.host !== '') throw invalid('workload endpoint unix socket URI must not include an authority component')
      const path = decodeURIComponent(url.pathname)
      if (!path.startsWith('/') || path === '/') throw invalid('workload endpoint unix socket path must be absolute')
      return `unix:${path}`
    }
    case 'tcp:': {
      if (url.pathname !== '' && url.pathname !== '/') throw invalid('workload endpoint tcp socket URI must not include a path')
      const host = url.hostname.replace(/^\[|\]$/g, '')
      if (isIP(host) === 0) throw invalid('workload endpoint tcp socket URI host component must be an IP:port')
      if (url.port === '') throw invalid('workload endpoint tcp socket URI must include a port')
      return isIP(host) === 6 ? `ipv6:[${host}]:${url.port}` : `ipv4:${host}:${url.port}`
    }
    default:
      throw invalid(`workload endpoint socket URI must have a "tcp" or "unix" scheme`)
  }
}

/**
 * The gRPC target from `socketPath` (an address as above), else from
 * SPIFFE_ENDPOINT_SOCKET in `env`; ERR_NOT_CONFIGURED when neither is set.
 */
export function resolveWorkloadApiTarget(socketPath: string | undefined, env: NodeJS.ProcessEnv = process.env): string {
  const raw = socketPath ?? env[ENDPOINT_SOCKET_ENV]
  if (raw === undefined || raw === '') {
    throw new IdentityError('ERR_NOT_CONFIGURED', `workloadapi: no socket path given and ${ENDPOINT_SOCKET_ENV} is not set`)
  }
  return workloadApiTarget(raw)
}
