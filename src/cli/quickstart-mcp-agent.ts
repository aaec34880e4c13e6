/**
 * The quickstart's MCP agent: the official MCP TypeScript SDK's `Client`
 * and `StreamableHTTPClientTransport`, with its OAuth flow, calling an MCP
 * tool through the gateway with the workload's X.509-SVID:
 *
 * 1. the first request to `<gateway>/tools/<name>` is 401 with
 *    `WWW-Authenticate: Bearer resource_metadata="..."`;
 * 2. the SDK reads the RFC 9728 metadata the gateway serves and asks the
 *    broker for a token with client_credentials, `resource` = the tool URL
 *    (RFC 8707) and the agent's task, authenticated by the SVID over mutual
 *    TLS (`tls_client_auth`), so the token is bound to that certificate;
 * 3. the SDK sends it as `Authorization: Bearer` over the same mutual TLS;
 *    the gateway checks it, gets a Txn-Token and forwards.
 *
 * The broker's metadata has no `authorization_endpoint` (it has none; RFC
 * 8414 §2 makes it optional then), which the SDK's metadata schema requires,
 * so the agent pins its authorization server: the broker's metadata, fetched
 * and checked (`issuer`, RFC 8414 §3.3), is the SDK's discovery state, and a
 * resource whose metadata names another authorization server is refused
 * before any token request.
 */
import https from 'node:https'
import { Readable } from 'node:stream'
import { Client } from '@modelcontextprotocol/sdk/client/index.js'
import type { OAuthClientProvider, OAuthDiscoveryState } from '@modelcontextprotocol/sdk/client/auth.js'
import { StreamableHTTPClientTransport } from '@modelcontextprotocol/sdk/client/streamableHttp.js'
import type { OAuthClientInformationMixed, OAuthClientMetadata, OAuthTokens } from '@modelcontextprotocol/sdk/shared/auth.js'
import type { FetchLike } from '@modelcontextprotocol/sdk/shared/transport.js'

/** One HTTP exchange of the agent (no token in it). */
export interface McpExchange {
  method: string
  url: string
  status: number
  /** Did the request carry an `Authorization` header? */
  authorized: boolean
  /** The OAuth `error` of a refusal's JSON body, if any. */
  error?: string
  wwwAuthenticate?: string
}

/**
 * A `fetch` over node:https with the workload's current X.509-SVID as client
 * certificate (mutual TLS to the gateway and the broker), `ca` the trust
 * bundle; bodies stream back. Every exchange is recorded in `sent`.
 */
export function mtlsFetch(creds: () => { cert: string; key: string }, ca: string, sent: McpExchange[]): FetchLike {
  return (input, init) => {
    const url = new URL(typeof input === 'string' ? input : input.href)
    const headers = new Headers(init?.headers)
    const b = init?.body
    const body = b === undefined || b === null ? undefined : typeof b === 'string' ? b : b instanceof URLSearchParams ? b.toString() : undefined
    if (b !== undefined && b !== null && body === undefined) return Promise.reject(new TypeError('unsupported body'))
    if (b instanceof URLSearchParams && !headers.has('content-type')) headers.set('content-type', 'application/x-www-form-urlencoded')
    const method = init?.method ?? 'GET'
    const { cert, key } = creds()
    return new Promise<Response>((resolve, reject) => {
      const req = https.request(
        url,
        { method, headers: Object.fromEntries(headers), ca, cert, key, agent: false, ...(init?.signal ? { signal: init.signal } : {}) },
        (res) => {
          const h = new Headers()
          for (const [k, v] of Object.entries(res.headers)) if (v !== undefined) for (const x of Array.isArray(v) ? v : [v]) h.append(k, x)
          const status = res.statusCode ?? 502
          const e: McpExchange = { method, url: url.href, status, authorized: headers.has('authorization') }
          const www = h.get('www-authenticate')
          if (www !== null) e.wwwAuthenticate = www
          sent.push(e)
          const empty = status === 204 || status === 304 || method === 'HEAD'
          if (empty) {
            res.resume()
            resolve(new Response(null, { status, headers: h }))
            return
          }
          if (status < 400) {
            resolve(new Response(Readable.toWeb(res) as ReadableStream<Uint8Array>, { status, headers: h }))
            return
          }
          // a refusal: small; its OAuth error is recorded
          const chunks: Buffer[] = []
          res.on('data', (c: Buffer) => chunks.push(c))
          res.on('error', reject)
          res.on('end', () => {
            const text = Buffer.concat(chunks).toString('utf8')
            try {
              const err = (JSON.parse(text) as { error?: unknown }).error
              if (typeof err === 'string') e.error = err
            } catch {
              // not JSON
            }
            resolve(new Response(text, { status, headers: h }))
          })
        },
      )
      req.on('error', reject)
      req.end(body)
    })
  }
}

export interface SvidProviderOptions {
  /** The agent's SPIFFE ID (its `client_id`). */
  spiffeId: string
  /** The broker's issuer: the one authorization server. */
  issuer: string
  scope: string
  /** The orchestrator's task for the agent (client_credentials needs one). */
  taskId: string
}

/**
 * The agent's OAuth client for the SDK: client_credentials with its task,
 * `tls_client_auth` (the mutual-TLS fetch carries the SVID; `client_id`
 * names it), the broker pinned as authorization server.
 */
export class SvidClientCredentialsProvider implements OAuthClientProvider {
  readonly #o: SvidProviderOptions
  #tokens: OAuthTokens | undefined
  #discovery: OAuthDiscoveryState | undefined
  constructor(o: SvidProviderOptions) {
    this.#o = o
  }
  /** Fetches the broker's RFC 8414 metadata; its issuer must be the one pinned (RFC 8414 §3.3). */
  async pin(fetchFn: FetchLike): Promise<void> {
    const res = await fetchFn(`${this.#o.issuer}/.well-known/oauth-authorization-server`, { headers: { accept: 'application/json' } })
    const metadata = (await res.json()) as Record<string, unknown>
    if (res.status !== 200 || metadata['issuer'] !== this.#o.issuer) throw new Error('authorization server metadata names another issuer')
    this.#discovery = {
      authorizationServerUrl: this.#o.issuer,
      authorizationServerMetadata: metadata as unknown as NonNullable<OAuthDiscoveryState['authorizationServerMetadata']>,
    }
  }
  get redirectUrl(): undefined {
    return undefined
  }
  get clientMetadata(): OAuthClientMetadata {
    return {
      client_name: 'warrant agent',
      redirect_uris: [],
      grant_types: ['client_credentials'],
      token_endpoint_auth_method: 'tls_client_auth',
      scope: this.#o.scope,
    }
  }
  clientInformation(): OAuthClientInformationMixed {
    return { client_id: this.#o.spiffeId, issuer: this.#o.issuer }
  }
  tokens(): OAuthTokens | undefined {
    return this.#tokens
  }
  saveTokens(tokens: OAuthTokens): void {
    this.#tokens = tokens
  }
  redirectToAuthorization(): void {
    throw new Error('no authorization endpoint: client_credentials only')
  }
  saveCodeVerifier(): void {}
  codeVerifier(): string {
    throw new Error('no authorization code flow')
  }
  prepareTokenRequest(scope?: string): URLSearchParams {
    const p = new URLSearchParams({ grant_type: 'client_credentials', task_id: this.#o.taskId })
    if (scope) p.set('scope', scope)
    return p
  }
  /** tls_client_auth (RFC 8705 §2.1): the certificate authenticates, client_id names the client. */
  addClientAuthentication = (_headers: Headers, params: URLSearchParams): void => {
    params.set('client_id', this.#o.spiffeId)
  }
  discoveryState(): OAuthDiscoveryState | undefined {
    return this.#discovery
  }
  saveDiscoveryState(state: OAuthDiscoveryState): void {
    // the resource must name the pinned authorization server (else nothing is sent to the broker for it)
    if (state.resourceMetadata && !(state.resourceMetadata.authorization_servers ?? []).includes(this.#o.issuer))
      throw new Error('the resource names another authorization server')
    if (String(state.authorizationServerUrl) !== this.#o.issuer) throw new Error('another authorization server')
    this.#discovery = state
  }
}

export interface McpToolCallOptions extends SvidProviderOptions {
  /** The tool's URL at the gateway (its resource URI). */
  url: string
  ca: string
  /** The workload's current SVID as PEM (read at every connection, so a rotation is picked up). */
  creds: () => { cert: string; key: string }
  tool: string
  arguments: Record<string, unknown>
}

export interface McpToolCallResult {
  /** The tools `tools/list` named. */
  tools: string[]
  /** The called tool's text content. */
  text: string
  /** Every HTTP exchange, in order. */
  sent: McpExchange[]
}

/** Connects (initialize), lists the tools and calls one; throws with the exchanges when anything fails. */
export async function callMcpTool(o: McpToolCallOptions): Promise<McpToolCallResult> {
  const sent: McpExchange[] = []
  const fetchFn = mtlsFetch(o.creds, o.ca, sent)
  const provider = new SvidClientCredentialsProvider(o)
  const client = new Client({ name: 'warrant-quickstart-agent', version: '1.0.0' })
  try {
    await provider.pin(fetchFn)
    await client.connect(new StreamableHTTPClientTransport(new URL(o.url), { authProvider: provider, fetch: fetchFn }))
    const listed = await client.listTools()
    const r = await client.callTool({ name: o.tool, arguments: o.arguments })
    const content = r.content as { type: string; text?: string }[]
    const text = content.find((c) => c.type === 'text')?.text
    if (r.isError === true || text === undefined) throw new Error(`tools/call ${o.tool} answered no result${text ? `: ${text.slice(0, 200)}` : ''}`)
    return { tools: listed.tools.map((t) => t.name), text, sent }
  } catch (err) {
    throw new McpCallError(err instanceof Error ? err.message : String(err), sent)
  } finally {
    await client.close()
  }
}

/** A failed MCP call (`code` ERR_MCP_CALL_FAILED), with what was exchanged until then. */
export class McpCallError extends Error {
  readonly code = 'ERR_MCP_CALL_FAILED'
  readonly sent: readonly McpExchange[]
  constructor(message: string, sent: readonly McpExchange[]) {
    super(message)
    this.name = 'McpCallError'
    this.sent = sent
  }
}
