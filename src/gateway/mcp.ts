/**
 * The gateway as an OAuth 2.1 resource server in front of MCP servers (the
 * MCP authorization specification, 2025-06-18 and later), pure. A tool whose
 * document says `"mcp": true` is an MCP server: its resource URI (RFC 8707)
 * is the gateway URL agents use for it, `<origin>/tools/<name>`, and
 *
 * - its RFC 9728 protected resource metadata is served without
 *   authentication at `<origin>/.well-known/oauth-protected-resource/tools/<name>`
 *   (the well-known path inserted before the resource's path, §3.1):
 *   `resource`, `authorization_servers` = [the broker's issuer],
 *   `scopes_supported` = the tool's scopes, `bearer_methods_supported`
 *   ["header"], the DPoP algorithms, `dpop_bound_access_tokens_required`
 *   false and `tls_client_certificate_bound_access_tokens` true (a bound
 *   token is required: DPoP, or mutual TLS with the certificate it is bound to);
 * - every call needs a broker access token whose `aud` holds that resource
 *   URI (a token for another resource, the gateway's origin included, is
 *   refused); an X.509-SVID alone is not enough for an MCP tool;
 * - a call without valid credentials is 401 with
 *   `WWW-Authenticate: Bearer resource_metadata="...", scope="..."` and a
 *   DPoP challenge with `algs` (RFC 9728 §5.1, RFC 6750 §3, RFC 9449 §7.1);
 *   a token without the tool's scopes is 403 `error="insufficient_scope"`
 *   with `scope` (the Bearer challenge first: MCP clients read that one).
 *
 * RFC 9207 (`iss` in the authorization response) has nothing to check for
 * client_credentials and token exchange, which have no authorization
 * response; what applies is the client's check that the authorization
 * server's metadata names the issuer the resource pointed to (RFC 8414 §3.3).
 */
import type { Tool } from './registry.js'

export const PROTECTED_RESOURCE_WELL_KNOWN = '/.well-known/oauth-protected-resource'

export interface McpContext {
  /** The gateway's origin, as agents address it (`https://gateway:8444`). */
  readonly origin: string
  /** The broker's issuer: the one authorization server. */
  readonly issuer: string
  /** DPoP proof algorithms accepted. */
  readonly dpopAlgorithms: readonly string[]
}

/** RFC 9728 §2 protected resource metadata (the members the gateway sets). */
export interface ProtectedResourceMetadata {
  resource: string
  authorization_servers: string[]
  scopes_supported: string[]
  bearer_methods_supported: ['header']
  resource_name: string
  dpop_signing_alg_values_supported: string[]
  dpop_bound_access_tokens_required: boolean
  tls_client_certificate_bound_access_tokens: boolean
}

/** The tool's resource URI (RFC 8707): the gateway URL of the tool. */
export function mcpResource(origin: string, tool: Pick<Tool, 'name'>): string {
  return `${origin}/tools/${tool.name}`
}

/** Where the tool's protected resource metadata is (RFC 9728 §3.1). */
export function mcpMetadataUrl(origin: string, tool: Pick<Tool, 'name'>): string {
  return `${origin}${PROTECTED_RESOURCE_WELL_KNOWN}/tools/${tool.name}`
}

export function protectedResourceMetadata(tool: Tool, ctx: McpContext): ProtectedResourceMetadata {
  return {
    resource: mcpResource(ctx.origin, tool),
    authorization_servers: [ctx.issuer],
    scopes_supported: [...tool.scopes],
    bearer_methods_supported: ['header'],
    resource_name: tool.clientName,
    dpop_signing_alg_values_supported: [...ctx.dpopAlgorithms],
    dpop_bound_access_tokens_required: false,
    tls_client_certificate_bound_access_tokens: true,
  }
}

/** Is this request path under the protected resource metadata's well-known prefix? */
export function isMetadataPath(path: string): boolean {
  return path === PROTECTED_RESOURCE_WELL_KNOWN || path.startsWith(`${PROTECTED_RESOURCE_WELL_KNOWN}/`)
}

export interface MetadataAnswer {
  status: number
  headers: Record<string, string>
  body: string
}

/**
 * The answer to a request under `/.well-known/oauth-protected-resource`:
 * the metadata of an MCP tool at exactly `.../tools/<name>`, 404 for
 * anything else (other tools, the bare well-known path: the gateway itself
 * is no resource), 405 for methods other than GET and HEAD.
 */
export function metadataAnswer(method: string, path: string, lookup: (name: string) => Tool | undefined, ctx: McpContext): MetadataAnswer {
  const json = (status: number, body: unknown, extra: Record<string, string> = {}): MetadataAnswer => ({
    status,
    headers: { 'content-type': 'application/json', ...extra },
    body: JSON.stringify(body),
  })
  const m = /^\/tools\/([^/]+)$/.exec(path.slice(PROTECTED_RESOURCE_WELL_KNOWN.length))
  const tool = m ? lookup(m[1]!) : undefined
  if (!tool || tool.mcp !== true) return json(404, { error: 'not_found' }, { 'cache-control': 'no-store' })
  if (method !== 'GET' && method !== 'HEAD') return json(405, { error: 'invalid_request' }, { allow: 'GET, HEAD', 'cache-control': 'no-store' })
  return json(200, protectedResourceMetadata(tool, ctx), { 'cache-control': 'max-age=300' })
}

function quote(v: string): string {
  return `"${v.replace(/[\\"]/g, (c) => `\\${c}`)}"`
}

/**
 * The `WWW-Authenticate` value for a refused call to an MCP tool: a Bearer
 * challenge (first; with the error when the request used Bearer or no
 * scheme) and a DPoP challenge with `algs` (with the error when the request
 * used DPoP), both with `resource_metadata` and the tool's `scope`. No
 * `error` when the request carried no credentials (RFC 6750 §3.1).
 */
export function mcpChallenge(
  tool: Pick<Tool, 'name' | 'scopes'>,
  ctx: McpContext,
  o: { error?: string | undefined; scheme?: 'bearer' | 'dpop' | undefined } = {},
): string {
  const attrs = (withError: boolean, extra: string[]): string => {
    const a: string[] = []
    if (withError && o.error !== undefined) a.push(`error=${quote(o.error)}`)
    a.push(`scope=${quote(tool.scopes.join(' '))}`, `resource_metadata=${quote(mcpMetadataUrl(ctx.origin, tool))}`, ...extra)
    return a.join(', ')
  }
  const bearer = `Bearer ${attrs(o.scheme !== 'dpop', [])}`
  const dpop = `DPoP ${attrs(o.scheme === 'dpop', [`algs=${quote(ctx.dpopAlgorithms.join(' '))}`])}`
  return `${bearer}, ${dpop}`
}

/** The scheme of an `Authorization` value, for the challenge. */
export function schemeOf(authorization: string | undefined): 'bearer' | 'dpop' | undefined {
  const s = authorization?.split(' ', 1)[0]?.toLowerCase()
  return s === 'bearer' ? 'bearer' : s === 'dpop' ? 'dpop' : undefined
}
