/**
 * Which headers cross the gateway. Towards the tool: none of the agent's
 * credentials (`Authorization`, `DPoP`), no `Txn-Token` of its own (only the
 * one the broker just issued), no hop-by-hop header (RFC 9110 §7.6.1: the
 * fixed list plus every header `Connection` names), no `Host` (the tool's
 * own is set); the gateway's `Txn-Token` and `Forwarded` added. Back to the
 * agent: no hop-by-hop header and no `Txn-Token`, so a tool that echoes it
 * does not hand the agent a token.
 */
import type { IncomingHttpHeaders, OutgoingHttpHeaders } from 'node:http'

/** RFC 9110 §7.6.1 and the usual extras (RFC 2616's list, `proxy-connection`). */
export const HOP_BY_HOP: ReadonlySet<string> = new Set([
  'connection',
  'keep-alive',
  'proxy-authenticate',
  'proxy-authorization',
  'proxy-connection',
  'te',
  'trailer',
  'transfer-encoding',
  'upgrade',
])

/** Credentials of the caller and tokens that only the gateway sets. */
export const CREDENTIAL_HEADERS: ReadonlySet<string> = new Set(['authorization', 'dpop', 'txn-token'])

function connectionNamed(h: IncomingHttpHeaders): Set<string> {
  const c = h['connection']
  const v = Array.isArray(c) ? c.join(',') : (c ?? '')
  return new Set(
    v
      .split(',')
      .map((s) => s.trim().toLowerCase())
      .filter((s) => s !== ''),
  )
}

function copy(h: IncomingHttpHeaders, drop: (name: string) => boolean): OutgoingHttpHeaders {
  const named = connectionNamed(h)
  const out: OutgoingHttpHeaders = {}
  for (const [k, v] of Object.entries(h)) {
    const name = k.toLowerCase()
    if (v === undefined || HOP_BY_HOP.has(name) || named.has(name) || drop(name)) continue
    out[name] = v
  }
  return out
}

/** Headers of the request forwarded to the tool. */
export function toolRequestHeaders(
  inbound: IncomingHttpHeaders,
  o: { txnToken: string; host: string; forwardedFor?: string; credential?: { header: string; value: string } },
): OutgoingHttpHeaders {
  const out = copy(inbound, (n) => CREDENTIAL_HEADERS.has(n) || n === 'host' || n === 'forwarded' || n === 'txn-purpose')
  out['host'] = o.host
  out['txn-token'] = o.txnToken
  // the tool's own credential replaces whatever the agent sent under that (lower-cased) name
  if (o.credential !== undefined) out[o.credential.header.toLowerCase()] = o.credential.value
  if (o.forwardedFor !== undefined) out['forwarded'] = `for="${o.forwardedFor.replace(/["\\]/g, '')}"`
  return out
}

/** Headers of the tool's response passed back to the agent. */
export function agentResponseHeaders(fromTool: IncomingHttpHeaders): OutgoingHttpHeaders {
  return copy(fromTool, (n) => n === 'txn-token')
}
