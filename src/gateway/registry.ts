/**
 * The tool registry: tool names resolve to endpoints, audiences and required
 * scopes through documents in the OAuth Client ID Metadata Document shape
 * (`client_id` an https URL naming the tool, `client_name`, other client
 * metadata members allowed) with a `warrant_tool` member:
 *
 * ```json
 * { "client_id": "https://tools.example/search", "client_name": "Search",
 *   "warrant_tool": { "name": "search", "endpoint": "https://search.internal:9443/api",
 *     "audience": "https://search.example/", "scopes": ["search:read"],
 *     "allowed_agents": ["spiffe://example.org/agents/"] } }
 * ```
 *
 * Agents call `https://<gateway>/tools/<name>/<path>` and never see the
 * endpoint. Parsing is pure (the CLI reads the directory); a bad document is
 * refused with its path and every issue.
 */
import { z } from 'zod'
import { configError, type ConfigIssue } from '../common/config/issues.js'
import { SpiffeId } from '../spiffe/spiffe-id.js'

/** A tool name: a URL path segment, lower case. */
export const TOOL_NAME_RE = /^[a-z0-9][a-z0-9._-]{0,63}$/
const SCOPE_RE = /^[\x21\x23-\x5b\x5d-\x7e]{1,128}$/

export interface Tool {
  readonly name: string
  /** The document's `client_id`. */
  readonly clientId: string
  readonly clientName: string
  /** The tool server's base URL (https, no query or fragment, no trailing slash). */
  readonly endpoint: string
  /** The resource URI (RFC 8707) the tool is: must be in the caller's ceiling. */
  readonly audience: string
  /** Scopes a call needs: all in the caller's ceiling (and token). */
  readonly scopes: readonly string[]
  /** SPIFFE IDs, or prefixes ending in `/`. */
  readonly allowedAgents: readonly string[]
  /** Call-chain requirements the tool declares (recorded; the tool enforces them on the Txn-Token). */
  readonly chain?: ToolChainPolicy
  /** An MCP server: the gateway is its OAuth resource server (mcp.ts). */
  readonly mcp?: boolean
  /** The tool takes only a static credential: the broker holds it sealed and the gateway injects it (credential shielding). */
  readonly credential?: boolean
  /** The file the document came from. */
  readonly source: string
}

export interface ToolChainPolicy {
  readonly require?: readonly string[]
  readonly forbid?: readonly string[]
  readonly purposes?: readonly string[]
  readonly max_hops?: number
}

const httpsUrl = (what: string) =>
  z
    .string()
    .max(2048)
    .refine((v) => {
      try {
        const u = new URL(v)
        return u.protocol === 'https:' && u.username === '' && u.password === '' && u.search === '' && u.hash === '' && !v.includes('#') && !v.includes('?')
      } catch {
        return false
      }
    }, `${what} must be an https URL without credentials, query or fragment`)

const agentPattern = z.string().refine((v) => {
  const id = v.endsWith('/') ? v.slice(0, -1) : v
  if (!SpiffeId.isValid(id)) return false
  return !v.endsWith('/') || SpiffeId.fromString(id).path !== ''
}, 'must be a SPIFFE ID, or a prefix with a path ending in "/"')

const WarrantToolSchema = z.strictObject({
  name: z.string().regex(TOOL_NAME_RE, 'must be 1-64 characters of a-z 0-9 . _ - (starting with a letter or digit)'),
  endpoint: httpsUrl('endpoint'),
  audience: z.string().min(1).max(2048),
  scopes: z.array(z.string().regex(SCOPE_RE, 'must be an OAuth scope token')).min(1, 'at least one scope').max(32),
  allowed_agents: z.array(agentPattern).min(1, 'at least one agent or prefix').max(256),
  chain: z
    .strictObject({
      require: z.array(agentPattern).max(32).optional(),
      forbid: z.array(agentPattern).max(32).optional(),
      purposes: z.array(z.string().min(1).max(256)).max(32).optional(),
      max_hops: z.number().int().min(1).max(32).optional(),
    })
    .optional(),
  mcp: z.boolean().optional(),
  credential: z.boolean().optional(),
})

/** The document: client metadata members are allowed (the Client ID Metadata Document is open), `warrant_tool` is strict. */
const ToolDocumentSchema = z.looseObject({
  client_id: httpsUrl('client_id'),
  client_name: z.string().min(1).max(256),
  warrant_tool: WarrantToolSchema,
})

/** One document (its file path for messages, its text); throws ERR_CONFIG_INVALID with `<path>: <member>: <problem>` for each issue. */
export function parseToolDocument(source: string, text: string): Tool {
  let raw: unknown
  try {
    raw = JSON.parse(text)
  } catch (err) {
    throw configError([{ path: source, message: `not JSON: ${(err as Error).message}` }], 'tool document')
  }
  const r = ToolDocumentSchema.safeParse(raw)
  if (!r.success) {
    const issues = r.error.issues.map((i) => ({ path: `${source}: ${i.path.map(String).join('.') || '(root)'}`, message: i.message }))
    throw configError(issues, 'tool document')
  }
  const t = r.data.warrant_tool
  const chain = t.chain
  return Object.freeze({
    name: t.name,
    clientId: r.data.client_id,
    clientName: r.data.client_name,
    endpoint: t.endpoint.replace(/\/+$/, ''),
    audience: t.audience,
    scopes: Object.freeze([...new Set(t.scopes)]),
    allowedAgents: Object.freeze([...t.allowed_agents]),
    ...(chain ? { chain: Object.freeze({ ...chain }) as ToolChainPolicy } : {}),
    ...(t.mcp === true ? { mcp: true } : {}),
    ...(t.credential === true ? { credential: true } : {}),
    source,
  })
}

export class ToolRegistry {
  readonly #tools: ReadonlyMap<string, Tool>

  private constructor(tools: Map<string, Tool>) {
    this.#tools = tools
  }

  /** Every document parsed; any bad document or duplicate name refuses the whole registry, naming each file. */
  static fromDocuments(docs: readonly { source: string; text: string }[]): ToolRegistry {
    const tools = new Map<string, Tool>()
    const issues: ConfigIssue[] = []
    for (const d of docs) {
      let t: Tool
      try {
        t = parseToolDocument(d.source, d.text)
      } catch (err) {
        const more = (err as { details?: { issues?: ConfigIssue[] } }).details?.issues
        issues.push(...(more ?? [{ path: d.source, message: String(err) }]))
        continue
      }
      const dup = tools.get(t.name)
      if (dup) issues.push({ path: `${d.source}: warrant_tool.name`, message: `"${t.name}" is already defined by ${dup.source}` })
      else tools.set(t.name, t)
    }
    if (issues.length > 0) throw configError(issues, 'tool registry')
    return new ToolRegistry(tools)
  }

  get(name: string): Tool | undefined {
    return this.#tools.get(name)
  }

  get size(): number {
    return this.#tools.size
  }

  names(): string[] {
    return [...this.#tools.keys()].sort()
  }
}

/**
 * The tool and the rest of the path of an agent's request target
 * (`/tools/<name>/<rest>?<query>`), or undefined when the target is not
 * under `/tools/` or its path has a dot segment (`.`, `..`, encoded or not).
 * The rest keeps its query.
 */
export function routeOf(target: string): { name: string; rest: string } | undefined {
  const m = /^\/tools\/([^/?#]+)(\/[^#]*|\?[^#]*)?$/.exec(target)
  if (!m) return undefined
  const rest = m[2] ?? ''
  // dot segments (plain or percent-encoded) could climb out of the tool's endpoint path at the tool server
  const path = rest.split('?')[0]!
  if (path.split('/').some((seg) => /^(\.|%2e){1,2}$/i.test(seg))) return undefined
  return { name: m[1]!, rest: rest.startsWith('?') ? `/${rest}` : rest === '' ? '/' : rest }
}
