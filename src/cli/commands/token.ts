/**
 * `warrant token`: join tokens for node attestation (`generate`, on the
 * server's admin socket) and the agent side of the broker (`exchange`,
 * `renew`, `delegate`, `introspect`, `revoke`), which authenticate to the
 * broker with the caller's X.509-SVID from the Workload API over mutual TLS.
 *
 * A DPoP key lives only in the memory of the process that made it, and every
 * CLI command is its own process. So the CLI binds tokens in one of two ways:
 *
 *   --key-file PATH   (DPoP) `exchange` generates the key, and writes it with
 *                     the token to PATH (mode 0600, replaced atomically);
 *                     `renew`, `delegate`, `introspect` and `revoke` read both
 *                     from there, and `renew` writes the successor back. The
 *                     file is a credential: a key file readable by group or
 *                     others is refused.
 *   (no key file)     the token is bound to the caller's X.509-SVID
 *                     (RFC 8705 `cnf.x5t#S256`) and printed; later commands
 *                     take it with --token and prove it with the same SVID
 *                     (until the agent rotates that SVID).
 */
import { readFileSync, statSync } from 'node:fs'
import { AccessToken, type IssuedTokenType } from '../../broker-client/access-token.js'
import { BrokerClient, type NarrowParams, type TokenParams } from '../../broker-client/broker-client.js'
import { DpopKey } from '../../broker-client/dpop-key.js'
import { writeFileAtomic } from '../../common/fs/write-atomic.js'
import { IdentityError } from '../../errors/identity-error.js'
import type { AuthorizationDetail } from '../../tokens/claims.js'
import type { X509Svid } from '../../spiffe/x509-svid/x509-svid.js'
import { WorkloadApiClient } from '../../workload-client/workload-api-client.js'
import { X509Source } from '../../workload-client/x509-source.js'
import { adminClient, DEFAULT_ADMIN_SOCKET } from '../admin-client.js'
import { outputFormat, parseFlags, printJson, type OutputFormat } from '../args.js'
import { DEFAULT_WORKLOAD_SOCKET } from './api.js'

export const usage = [
  '  token generate [--ttl SECONDS] [--spiffe-id ID]   create a one-use join token',
  '  token exchange [--task ID] [--scope S]... [--resource URI]... [--audience A]... [--authorization-details JSON]',
  '                 [--grant GRANT|@FILE | --jwt-svid] [--key-file PATH]   get a broker token (client_credentials; a delegation grant',
  "                 redeemed; or the caller's JWT-SVID as RFC 8693 subject_token)",
  '  token renew    (--key-file PATH | --token T) [--scope S]... [--resource URI]...   renew (same key, never wider)',
  '  token delegate --to SPIFFE_ID (--key-file PATH | --token T) [--scope S]... [--resource URI]...   one-time grant for a sub-agent',
  '  token introspect|revoke (--key-file PATH | --token T)',
  '    (broker commands: [--broker URL] (WARRANT_BROKER_URL) [--ca FILE] (WARRANT_BROKER_CA, default: the Workload API bundles)',
  '     [--socket ADDR] (SPIFFE_ENDPOINT_SOCKET) [--spiffe-id ID] (which SVID, when several) [--timeout 10s] [--output json]; with --key-file the token is DPoP-bound and its key is kept',
  "     in that 0600 file between commands; without it the token is bound to the caller's X.509-SVID)",
].join('\n')

const KEY_FILE_VERSION = 1

type PrivateJwk = Parameters<typeof DpopKey.importPrivateJwk>[0]

/** The 0600 file that carries a DPoP-bound token and its key between CLI invocations. */
interface KeyFile {
  version: number
  issuer: string
  dpop_jwk: PrivateJwk
  access_token: string
  token_type: IssuedTokenType
  issued_token_type: string
  scope: string
  received_at: number
  expires_at: number
}

const BROKER_FLAGS = {
  broker: { type: 'string' },
  ca: { type: 'string' },
  socket: { type: 'string' },
  output: { type: 'string' },
  timeout: { type: 'string' },
  'spiffe-id': { type: 'string' },
} as const

const NARROW_FLAGS = {
  scope: { type: 'string', multiple: true },
  resource: { type: 'string', multiple: true },
  audience: { type: 'string', multiple: true },
  'authorization-details': { type: 'string' },
} as const

const TOKEN_FLAGS = { 'key-file': { type: 'string' }, token: { type: 'string' } } as const

function invalidArg(message: string): IdentityError {
  return new IdentityError('ERR_INVALID_ARGUMENT', message)
}

function readText(path: string, what: string): string {
  try {
    return readFileSync(path, 'utf8')
  } catch (err) {
    throw new IdentityError('ERR_CONFIG_INVALID', `cannot read ${what} ${path}: ${(err as NodeJS.ErrnoException).code ?? 'error'}`, { cause: err })
  }
}

function narrowParams(v: {
  scope?: string[] | undefined
  resource?: string[] | undefined
  audience?: string[] | undefined
  'authorization-details'?: string | undefined
}): NarrowParams {
  let details: AuthorizationDetail[] | undefined
  if (v['authorization-details'] !== undefined) {
    try {
      details = JSON.parse(v['authorization-details']) as AuthorizationDetail[]
    } catch {
      throw invalidArg('--authorization-details must be a JSON array')
    }
    if (!Array.isArray(details)) throw invalidArg('--authorization-details must be a JSON array')
  }
  // `--scope "a b"` and `--scope a --scope b` both work.
  const scopes = v.scope?.flatMap((s) => s.split(' ')).filter((s) => s !== '')
  return {
    ...(scopes && scopes.length > 0 ? { scopes } : {}),
    ...(v.resource ? { resources: v.resource } : {}),
    ...(v.audience ? { audiences: v.audience } : {}),
    ...(details ? { authorizationDetails: details } : {}),
  }
}

function timeoutMs(v: string | undefined): number {
  if (v === undefined) return 10_000
  const m = /^(\d+)(ms|s)?$/.exec(v)
  if (!m) throw invalidArg('--timeout must be a duration such as 5s or 500ms')
  return Number(m[1]) * (m[2] === 'ms' ? 1 : 1000)
}

function readKeyFile(path: string): KeyFile {
  let mode: number
  try {
    mode = statSync(path).mode
  } catch (err) {
    throw new IdentityError('ERR_CONFIG_INVALID', `cannot read key file ${path}: ${(err as NodeJS.ErrnoException).code ?? 'error'}`, { cause: err })
  }
  if ((mode & 0o077) !== 0)
    throw new IdentityError('ERR_CONFIG_INVALID', `key file ${path} is readable by others (mode ${(mode & 0o777).toString(8)}); it must be 0600`)
  let f: KeyFile
  try {
    f = JSON.parse(readText(path, 'key file')) as KeyFile
  } catch (err) {
    if (err instanceof IdentityError) throw err
    throw new IdentityError('ERR_CONFIG_INVALID', `key file ${path} is not JSON`)
  }
  if (
    f === null ||
    typeof f !== 'object' ||
    f.version !== KEY_FILE_VERSION ||
    typeof f.access_token !== 'string' ||
    typeof f.issuer !== 'string' ||
    typeof f.dpop_jwk !== 'object'
  ) {
    throw new IdentityError('ERR_CONFIG_INVALID', `key file ${path} is not a warrant token key file`)
  }
  return f
}

function tokenOfKeyFile(f: KeyFile): AccessToken {
  return new AccessToken(f.access_token, {
    tokenType: f.token_type,
    issuedTokenType: f.issued_token_type,
    scopes: f.scope.split(' ').filter((s) => s !== ''),
    receivedAt: f.received_at,
    expiresAt: f.expires_at,
  })
}

async function writeKeyFile(path: string, issuer: string, key: DpopKey, jwk: PrivateJwk | undefined, t: AccessToken): Promise<void> {
  const f: KeyFile = {
    version: KEY_FILE_VERSION,
    issuer,
    dpop_jwk: jwk ?? (await key.exportPrivateJwk()),
    access_token: t.value,
    token_type: t.tokenType,
    issued_token_type: t.issuedTokenType,
    scope: t.scopes.join(' '),
    received_at: t.receivedAt,
    expires_at: t.expiresAt,
  }
  try {
    writeFileAtomic(path, `${JSON.stringify(f, null, 2)}\n`, 0o600)
  } catch (err) {
    throw new IdentityError('ERR_CONFIG_INVALID', `cannot write key file ${path}: ${(err as NodeJS.ErrnoException).code ?? 'error'}`, { cause: err })
  }
}

/** The token as the JSON output shows it (the token itself included: that is what `--output json` is for). */
function tokenJson(t: AccessToken, keyFile?: string): Record<string, unknown> {
  return {
    access_token: t.value,
    token_type: t.tokenType,
    issued_token_type: t.issuedTokenType,
    expires_in: Math.round(t.ttlMs / 1000),
    expires_at: t.expiresAt,
    scope: t.scopes.join(' '),
    ...(t.jti !== undefined ? { jti: t.jti } : {}),
    ...(typeof t.claims.sub === 'string' ? { sub: t.claims.sub } : {}),
    ...(typeof t.claims.task_id === 'string' ? { task_id: t.claims.task_id } : {}),
    ...(t.claims.act !== undefined ? { act: t.claims.act } : {}),
    ...(keyFile !== undefined ? { key_file: keyFile } : {}),
  }
}

function printToken(fmt: OutputFormat, t: AccessToken, keyFile?: string): void {
  if (fmt === 'json') {
    printJson(tokenJson(t, keyFile))
    return
  }
  const lines = [
    ...(keyFile !== undefined ? [`Token:   written with its DPoP key to ${keyFile}`] : [`Token:   ${t.value}`]),
    `Type:    ${t.tokenType}${t.isGrant ? ' (delegation grant)' : ''}`,
    `ID:      ${t.jti ?? '?'}`,
    `Scope:   ${t.scopes.join(' ') || '(none)'}`,
    `Expires: ${new Date(t.expiresAt).toISOString()}`,
  ]
  process.stdout.write(`${lines.join('\n')}\n`)
}

interface Session {
  client: BrokerClient
  /** The caller's JWT-SVID for the broker (audience: the issuer), from the same Workload API. */
  jwtSvid(): Promise<string>
  close(): Promise<void>
}

/** The caller's X.509-SVID from the Workload API, and a broker client on it. */
async function session(
  v: { broker?: string | undefined; ca?: string | undefined; socket?: string | undefined; timeout?: string | undefined; 'spiffe-id'?: string | undefined },
  o: { dpopKey?: DpopKey; binding: 'dpop' | 'mtls'; issuer?: string },
): Promise<Session> {
  const issuer = v.broker ?? process.env.WARRANT_BROKER_URL ?? o.issuer
  if (!issuer) throw invalidArg('the broker URL is needed: --broker URL or WARRANT_BROKER_URL')
  if (o.issuer !== undefined && issuer !== o.issuer) throw invalidArg('the key file belongs to another broker')
  const caPath = v.ca ?? process.env.WARRANT_BROKER_CA
  const ca = caPath ? readText(caPath, 'CA file') : undefined
  const ms = timeoutMs(v.timeout)
  const socketPath = v.socket ?? process.env.SPIFFE_ENDPOINT_SOCKET ?? DEFAULT_WORKLOAD_SOCKET
  const want = v['spiffe-id']
  // With several SVIDs for the caller, --spiffe-id picks one (default: the Workload API's first).
  const picker =
    want === undefined
      ? undefined
      : (svids: readonly X509Svid[]): X509Svid => {
          const s = svids.find((x) => x.id.toString() === want)
          if (!s) throw new IdentityError('ERR_NO_IDENTITY_ISSUED', `the Workload API has no X.509-SVID for ${want}`)
          return s
        }
  const api = new WorkloadApiClient({ socketPath, timeoutMs: ms })
  let source: X509Source
  try {
    // Fail fast, and plainly, when the caller has no SVID with the asked-for ID.
    if (picker) picker((await api.fetchX509Context({ signal: AbortSignal.timeout(ms) })).svids)
    source = await X509Source.create({ client: api, signal: AbortSignal.timeout(ms), ...(picker ? { picker } : {}) })
  } catch (err) {
    api.close()
    throw err
  }
  try {
    const client = await BrokerClient.create({
      issuer,
      source,
      binding: o.binding,
      timeoutMs: ms,
      ...(ca !== undefined ? { ca } : {}),
      ...(o.dpopKey ? { dpopKey: o.dpopKey } : {}),
    })
    return {
      client,
      async jwtSvid() {
        return (await api.fetchJwtSvid({ audience: issuer, spiffeId: source.getX509Svid().id })).token
      },
      async close() {
        await client.close()
        await source.close()
        api.close()
      },
    }
  } catch (err) {
    await source.close()
    api.close()
    throw err
  }
}

/** The token a command works on: from --key-file (DPoP, with its key) or --token (certificate-bound). */
async function heldToken(v: { 'key-file'?: string | undefined; token?: string | undefined }): Promise<{ token: AccessToken; key?: DpopKey; file?: KeyFile }> {
  if ((v['key-file'] === undefined) === (v.token === undefined)) throw invalidArg('give the token with exactly one of --key-file PATH or --token T')
  if (v.token !== undefined) {
    const token = new AccessToken(v.token, {
      tokenType: 'Bearer',
      issuedTokenType: 'urn:ietf:params:oauth:token-type:access_token',
      scopes: [],
      receivedAt: 0,
      expiresAt: 0,
    })
    return { token }
  }
  const file = readKeyFile(v['key-file']!)
  return { token: tokenOfKeyFile(file), key: await DpopKey.importPrivateJwk(file.dpop_jwk), file }
}

async function exchange(rest: string[]): Promise<number> {
  const { values: v } = parseFlags(rest, {
    ...BROKER_FLAGS,
    ...NARROW_FLAGS,
    task: { type: 'string' },
    grant: { type: 'string' },
    'jwt-svid': { type: 'boolean' },
    'key-file': { type: 'string' },
    binding: { type: 'string' },
  })
  const fmt = outputFormat(v.output)
  const binding = v.binding ?? (v['key-file'] !== undefined ? 'dpop' : 'mtls')
  if (binding !== 'dpop' && binding !== 'mtls') throw invalidArg('--binding must be "dpop" or "mtls"')
  if (binding === 'dpop' && v['key-file'] === undefined) throw invalidArg('a DPoP-bound token needs --key-file PATH to keep its key for later commands')
  if (binding === 'mtls' && v['key-file'] !== undefined) throw invalidArg('--key-file holds a DPoP key; it does not go with --binding mtls')
  if (v.grant !== undefined && v.task !== undefined) throw invalidArg('--task does not go with --grant (the grant names its task)')
  if (v.grant !== undefined && v['jwt-svid'] === true) throw invalidArg('--jwt-svid does not go with --grant')
  const grant = v.grant === undefined ? undefined : v.grant.startsWith('@') ? readText(v.grant.slice(1), 'grant file').trim() : v.grant
  // The one place a DPoP key is made extractable: it must reach the key file.
  const key = binding === 'dpop' ? await DpopKey.generate({ extractable: true }) : undefined
  const s = await session(v, { binding, ...(key ? { dpopKey: key } : {}) })
  try {
    const p: TokenParams = { ...narrowParams(v), ...(v.task !== undefined ? { taskId: v.task } : {}) }
    const t =
      grant !== undefined
        ? await s.client.redeemGrant(grant, p)
        : v['jwt-svid'] === true
          ? await s.client.exchangeJwtSvid(await s.jwtSvid(), p)
          : await s.client.requestToken(p)
    if (key) await writeKeyFile(v['key-file']!, s.client.issuer, key, undefined, t)
    printToken(fmt, t, v['key-file'])
    return 0
  } finally {
    await s.close()
  }
}

async function renew(rest: string[]): Promise<number> {
  const { values: v } = parseFlags(rest, { ...BROKER_FLAGS, ...NARROW_FLAGS, ...TOKEN_FLAGS })
  const fmt = outputFormat(v.output)
  const held = await heldToken(v)
  const s = await session(v, {
    binding: held.key ? 'dpop' : 'mtls',
    ...(held.key ? { dpopKey: held.key } : {}),
    ...(held.file ? { issuer: held.file.issuer } : {}),
  })
  try {
    const t = await s.client.renew(held.token, narrowParams(v))
    if (held.file) await writeKeyFile(v['key-file']!, held.file.issuer, held.key!, held.file.dpop_jwk, t)
    printToken(fmt, t, v['key-file'])
    return 0
  } finally {
    await s.close()
  }
}

async function delegate(rest: string[]): Promise<number> {
  const { values: v } = parseFlags(rest, { ...BROKER_FLAGS, ...NARROW_FLAGS, ...TOKEN_FLAGS, to: { type: 'string' } })
  const fmt = outputFormat(v.output)
  if (v.to === undefined) throw invalidArg('--to SPIFFE_ID (the sub-agent) is required')
  if (!v.to.startsWith('spiffe://')) throw invalidArg('--to must be a SPIFFE ID')
  const held = await heldToken(v)
  const s = await session(v, {
    binding: held.key ? 'dpop' : 'mtls',
    ...(held.key ? { dpopKey: held.key } : {}),
    ...(held.file ? { issuer: held.file.issuer } : {}),
  })
  try {
    const g = await s.client.delegate(held.token, { to: v.to, ...narrowParams(v) })
    if (fmt === 'json')
      printJson({
        grant: g.value,
        issued_token_type: g.issuedTokenType,
        token_type: g.tokenType,
        may_act: v.to,
        expires_in: Math.round(g.ttlMs / 1000),
        expires_at: g.expiresAt,
        scope: g.scopes.join(' '),
      })
    else {
      process.stdout.write(
        `Grant:   ${g.value}\nFor:     ${v.to} (one use: warrant token exchange --grant GRANT)\nScope:   ${g.scopes.join(' ')}\nExpires: ${new Date(g.expiresAt).toISOString()}\n`,
      )
    }
    return 0
  } finally {
    await s.close()
  }
}

async function introspectOrRevoke(cmd: 'introspect' | 'revoke', rest: string[]): Promise<number> {
  const { values: v } = parseFlags(rest, { ...BROKER_FLAGS, ...TOKEN_FLAGS })
  const fmt = outputFormat(v.output)
  if ((v['key-file'] === undefined) === (v.token === undefined)) throw invalidArg('give the token with exactly one of --key-file PATH or --token T')
  // Only the token is needed (these endpoints take no proof): the key stays in its file.
  const file = v['key-file'] !== undefined ? readKeyFile(v['key-file']) : undefined
  const token = file?.access_token ?? v.token!
  const s = await session(v, { binding: 'mtls', ...(file ? { issuer: file.issuer } : {}) })
  try {
    if (cmd === 'introspect') {
      const r = await s.client.introspect(token)
      if (fmt === 'json') printJson(r)
      else if (!r.active) process.stdout.write('Active:  false\n')
      else {
        const exp = typeof r.exp === 'number' ? new Date(r.exp * 1000).toISOString() : '?'
        process.stdout.write(`Active:  true\nSubject: ${String(r.sub)}\nClient:  ${String(r.client_id)}\nScope:   ${String(r.scope)}\nExpires: ${exp}\n`)
      }
    } else {
      await s.client.revoke(token)
      if (fmt === 'json') printJson({ revoked: true })
      else process.stdout.write('Revoked (with every token derived from it).\n')
    }
    return 0
  } finally {
    await s.close()
  }
}

async function generate(rest: string[]): Promise<number> {
  const { values } = parseFlags(rest, { ttl: { type: 'string' }, 'spiffe-id': { type: 'string' }, socket: { type: 'string' }, output: { type: 'string' } })
  const fmt = outputFormat(values.output)
  if (values.ttl !== undefined && !/^\d+$/.test(values.ttl)) throw new IdentityError('ERR_INVALID_ARGUMENT', '--ttl must be a whole number of seconds')
  const c = adminClient('Agents', values.socket ?? DEFAULT_ADMIN_SOCKET)
  try {
    const r = await c.call<{ token: string; expires_at: string }>('CreateJoinToken', { ttl: Number(values.ttl ?? 0), spiffe_id: values['spiffe-id'] ?? '' })
    if (fmt === 'json') printJson({ token: r.token, expires_at: Number(r.expires_at) })
    else process.stdout.write(`Token: ${r.token}\nExpires: ${new Date(Number(r.expires_at)).toISOString()}\n`)
    return 0
  } finally {
    c.close()
  }
}

export async function run(args: string[]): Promise<number> {
  const [cmd, ...rest] = args
  switch (cmd) {
    case 'generate':
      return generate(rest)
    case 'exchange':
      return exchange(rest)
    case 'renew':
      return renew(rest)
    case 'delegate':
      return delegate(rest)
    case 'introspect':
    case 'revoke':
      return introspectOrRevoke(cmd, rest)
    default:
      process.stderr.write(`usage:\n${usage}\n`)
      return 2
  }
}
