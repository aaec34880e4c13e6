/**
 * `warrant federation create|list|show|update|delete|refresh`: federation
 * relationships over the server's admin socket (warrant.admin.v1.Federation).
 */
import { readFileSync } from 'node:fs'
import * as grpc from '@grpc/grpc-js'
import { loadProto } from '../../common/grpc/proto.js'
import { IdentityError } from '../../errors/identity-error.js'
import type { FederationRelationship, FederationRelationship__Output } from '../../gen/warrant/admin/v1/FederationRelationship.js'
import { outputFormat, parseFlags, printJson, type OutputFormat } from '../args.js'

export const DEFAULT_ADMIN_SOCKET = './.warrant/server/private/admin.sock'

export const usage = [
  'warrant federation create  --trust-domain TD --url URL --profile https_spiffe|https_web [--endpoint-spiffe-id ID]',
  '                           [--bootstrap-bundle FILE [--bootstrap-format spiffe|pem]] [--web-ca-file FILE] [--refresh-hint SECONDS]',
  'warrant federation update  --trust-domain TD [the create flags to change]',
  'warrant federation list | show --trust-domain TD | delete --trust-domain TD | refresh --trust-domain TD',
  '                           [--socket PATH (default ./.warrant/server/private/admin.sock)] [--output pretty|json]',
].join('\n')

const COMMON = {
  socket: { type: 'string' },
  output: { type: 'string' },
  'trust-domain': { type: 'string' },
} as const

const EDIT = {
  ...COMMON,
  url: { type: 'string' },
  profile: { type: 'string' },
  'endpoint-spiffe-id': { type: 'string' },
  'bootstrap-bundle': { type: 'string' },
  'bootstrap-format': { type: 'string' },
  'web-ca-file': { type: 'string' },
  'refresh-hint': { type: 'string' },
} as const

type Call = <Req, Res>(method: string, req: Req) => Promise<Res>

export async function run(args: string[]): Promise<number> {
  const [cmd, ...rest] = args
  switch (cmd) {
    case 'create':
    case 'update': {
      const { values: v } = parseFlags(rest, EDIT)
      const out = outputFormat(v.output)
      const td = requireFlag(v['trust-domain'], '--trust-domain')
      const rel: FederationRelationship = { trust_domain: td }
      const mask: string[] = []
      const set = <K extends keyof FederationRelationship>(k: K, val: FederationRelationship[K] | undefined) => {
        if (val === undefined) return
        rel[k] = val
        mask.push(k)
      }
      set('bundle_endpoint_url', v.url)
      set('profile', v.profile)
      set('endpoint_spiffe_id', v['endpoint-spiffe-id'])
      set('web_ca_file', v['web-ca-file'])
      set('refresh_hint_seconds', v['refresh-hint'] === undefined ? undefined : seconds(v['refresh-hint']))
      if (v['bootstrap-bundle'] !== undefined) {
        const text = readText(v['bootstrap-bundle'])
        set('bootstrap_bundle', text)
        set('bootstrap_format', bootstrapFormat(v['bootstrap-format'], text))
      } else if (v['bootstrap-format'] !== undefined) {
        throw new IdentityError('ERR_INVALID_ARGUMENT', '--bootstrap-format needs --bootstrap-bundle')
      }
      if (cmd === 'create') {
        requireFlag(v.url, '--url')
        requireFlag(v.profile, '--profile')
      } else if (mask.length === 0) {
        throw new IdentityError('ERR_INVALID_ARGUMENT', 'nothing to update')
      }
      const res = await withClient(v.socket, (call) =>
        cmd === 'create'
          ? call<unknown, FederationRelationship__Output>('Create', { relationship: rel })
          : call<unknown, FederationRelationship__Output>('Update', { relationship: rel, mask }),
      )
      print(out, res, cmd === 'create' ? 'Federation relationship created.' : 'Federation relationship updated.')
      return 0
    }
    case 'list': {
      const { values: v } = parseFlags(rest, COMMON)
      const out = outputFormat(v.output)
      const res = await withClient(v.socket, (call) => call<unknown, { relationships: FederationRelationship__Output[] }>('List', {}))
      if (out === 'json') printJson(res.relationships.map(toJson))
      else {
        const lines = [`Found ${res.relationships.length} federation relationship${res.relationships.length === 1 ? '' : 's'}`]
        for (const r of res.relationships) lines.push('', ...describe(r))
        process.stdout.write(`${lines.join('\n')}\n`)
      }
      return 0
    }
    case 'show':
    case 'delete':
    case 'refresh': {
      const { values: v } = parseFlags(rest, COMMON)
      const out = outputFormat(v.output)
      const td = requireFlag(v['trust-domain'], '--trust-domain')
      const method = cmd === 'show' ? 'Get' : cmd === 'delete' ? 'Delete' : 'Refresh'
      const res = await withClient(v.socket, (call) => call<unknown, FederationRelationship__Output>(method, { trust_domain: td }))
      print(out, res, cmd === 'delete' ? 'Federation relationship deleted (the stored bundle is kept).' : cmd === 'refresh' ? 'Bundle refreshed.' : undefined)
      return 0
    }
    default:
      process.stderr.write(`${cmd ? `warrant federation: unknown command "${cmd}"\n` : ''}usage:\n${usage}\n`)
      return 2
  }
}

function print(out: OutputFormat, r: FederationRelationship__Output, headline: string | undefined): void {
  if (out === 'json') printJson(toJson(r))
  else process.stdout.write(`${[...(headline ? [headline, ''] : []), ...describe(r)].join('\n')}\n`)
}

/** JSON output: numbers as numbers, times as ISO strings (absent when never). */
export function toJson(r: FederationRelationship__Output): Record<string, unknown> {
  const time = (v: string) => (Number(v) > 0 ? new Date(Number(v)).toISOString() : null)
  return {
    trust_domain: r.trust_domain,
    bundle_endpoint_url: r.bundle_endpoint_url,
    profile: r.profile,
    endpoint_spiffe_id: r.endpoint_spiffe_id,
    web_ca_file: r.web_ca_file,
    refresh_hint_seconds: r.refresh_hint_seconds,
    created_at: time(r.created_at),
    updated_at: time(r.updated_at),
    last_attempt_at: time(r.last_attempt_at),
    last_success_at: time(r.last_success_at),
    next_attempt_at: time(r.next_attempt_at),
    last_error: r.last_error,
    last_error_code: r.last_error_code,
    consecutive_failures: r.consecutive_failures,
    last_sequence: Number(r.last_sequence) >= 0 ? Number(r.last_sequence) : null,
  }
}

function describe(r: FederationRelationship__Output): string[] {
  const time = (v: string) => (Number(v) > 0 ? new Date(Number(v)).toISOString() : 'never')
  const lines = [
    `Trust domain              : ${r.trust_domain}`,
    `Bundle endpoint URL       : ${r.bundle_endpoint_url}`,
    `Bundle endpoint profile   : ${r.profile}`,
  ]
  if (r.profile === 'https_spiffe') lines.push(`Endpoint SPIFFE ID        : ${r.endpoint_spiffe_id}`)
  if (r.profile === 'https_web') lines.push(`CA file                   : ${r.web_ca_file || 'system roots'}`)
  lines.push(
    `Refresh interval          : ${r.refresh_hint_seconds ? `${r.refresh_hint_seconds}s` : 'bundle refresh hint'}`,
    `Last refresh              : ${time(r.last_attempt_at)}${r.last_error ? ` (failed: ${r.last_error} [${r.last_error_code}], ${r.consecutive_failures} in a row)` : Number(r.last_attempt_at) > 0 ? ' (ok)' : ''}`,
    `Last success              : ${time(r.last_success_at)}${Number(r.last_sequence) >= 0 ? `, sequence ${r.last_sequence}` : ''}`,
    `Next refresh              : ${Number(r.next_attempt_at) > 0 ? time(r.next_attempt_at) : 'not scheduled'}`,
  )
  return lines
}

async function withClient<T>(socket: string | undefined, fn: (call: Call) => Promise<T>): Promise<T> {
  const pkg = loadProto('warrant/admin/v1/federation.proto') as unknown as { warrant: { admin: { v1: { Federation: grpc.ServiceClientConstructor } } } }
  const Client = pkg.warrant.admin.v1.Federation
  const client = new Client(`unix:${socket ?? DEFAULT_ADMIN_SOCKET}`, grpc.credentials.createInsecure())
  const call: Call = <Req, Res>(method: string, req: Req) =>
    new Promise<Res>((resolve, reject) => {
      const fnc = (
        client as unknown as Record<string, (r: Req, m: grpc.Metadata, o: grpc.CallOptions, cb: (e: grpc.ServiceError | null, v: Res) => void) => void>
      )[method]!
      // Refresh waits for a fetch (up to its own timeout); give it room.
      fnc.call(client, req, new grpc.Metadata(), { deadline: Date.now() + (method === 'Refresh' ? 60_000 : 15_000) }, (e, v) => (e ? reject(e) : resolve(v)))
    })
  try {
    return await fn(call)
  } finally {
    client.close()
  }
}

function requireFlag(v: string | undefined, name: string): string {
  if (!v) throw new IdentityError('ERR_INVALID_ARGUMENT', `${name} is required`)
  return v
}

function seconds(v: string): number {
  const n = Number(v.endsWith('s') ? v.slice(0, -1) : v)
  if (!Number.isSafeInteger(n) || n < 0) throw new IdentityError('ERR_INVALID_ARGUMENT', '--refresh-hint must be a whole number of seconds')
  return n
}

function readText(path: string): string {
  try {
    return readFileSync(path, 'utf8')
  } catch (cause) {
    throw new IdentityError('ERR_INVALID_ARGUMENT', `cannot read "${path}"`, { cause })
  }
}

function bootstrapFormat(flag: string | undefined, text: string): 'spiffe' | 'pem' {
  if (flag === undefined) return text.trimStart().startsWith('-----BEGIN') ? 'pem' : 'spiffe'
  if (flag !== 'spiffe' && flag !== 'pem') throw new IdentityError('ERR_INVALID_ARGUMENT', '--bootstrap-format must be "spiffe" or "pem"')
  return flag
}
