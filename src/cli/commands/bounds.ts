import { IdentityError } from '../../errors/identity-error.js'
import { formatDuration, parseDuration } from '../../common/config/duration.js'
import { adminClient, DEFAULT_ADMIN_SOCKET } from '../admin-client.js'
import { outputFormat, parseFlags, printJson } from '../args.js'

export const usage = [
  '  bounds set --prefix P [--x509-svid-ttl 15m] [--jwt-svid-ttl 5m] [--audience A ...] [--no-dns | --dns-suffix S ...]',
  '             [--federates-with TD ...] [--max-instances N] [--require-node-selector type:value ...]',
  '             broker ceiling: [--scope S ...] [--resource URI ...] [--max-token-ttl 10m] [--max-renewals N]',
  '             [--max-delegation-depth N] [--may-delegate-to ID|PREFIX/ ...] [--allow-bearer | --deny-bearer]',
  '  bounds show --prefix P | --signed                        declared and effective bounds, or the signed document',
  '  bounds list                                              every declared prefix',
  '  bounds delete --prefix P',
].join('\n')

type List = { values: string[] } | null | undefined
interface BoundsMsg {
  x509_svid_ttl?: string
  jwt_svid_ttl?: string
  max_instances?: string
  jwt_audiences?: List
  dns_suffixes?: List
  federates_with?: List
  require_node_selectors?: List
  scopes?: List
  resources?: List
  max_token_ttl?: string
  max_renewals?: string
  max_delegation_depth?: string
  may_delegate_to?: List
  allow_bearer?: boolean
}
interface InfoMsg {
  prefix: string
  declared: BoundsMsg | null
  effective: BoundsMsg | null
  effective_from: string[]
  source: string
  sequence: string
}

const FLAGS = {
  prefix: { type: 'string' },
  'x509-svid-ttl': { type: 'string' },
  'jwt-svid-ttl': { type: 'string' },
  audience: { type: 'string', multiple: true },
  'no-dns': { type: 'boolean' },
  'dns-suffix': { type: 'string', multiple: true },
  'federates-with': { type: 'string', multiple: true },
  'max-instances': { type: 'string' },
  'require-node-selector': { type: 'string', multiple: true },
  scope: { type: 'string', multiple: true },
  resource: { type: 'string', multiple: true },
  'max-token-ttl': { type: 'string' },
  'max-renewals': { type: 'string' },
  'max-delegation-depth': { type: 'string' },
  'may-delegate-to': { type: 'string', multiple: true },
  'allow-bearer': { type: 'boolean' },
  'deny-bearer': { type: 'boolean' },
  signed: { type: 'boolean' },
  socket: { type: 'string' },
  output: { type: 'string' },
} as const

function ttlSeconds(flag: string, v: string | undefined): number | undefined {
  if (v === undefined) return undefined
  const ms = /^\d+$/.test(v) ? Number(v) * 1000 : parseDuration(v)
  if (ms === undefined || ms < 1000 || ms % 1000 !== 0)
    throw new IdentityError('ERR_INVALID_ARGUMENT', `--${flag} must be a duration of whole seconds (e.g. 90s, 15m)`)
  return ms / 1000
}

/** The flags of `bounds set` as a NamespaceBounds message. Exported for tests. */
export function boundsFromFlags(values: Record<string, unknown>): Record<string, unknown> {
  const v = values as {
    [K in keyof typeof FLAGS]?: (typeof FLAGS)[K]['type'] extends 'boolean' ? boolean : (typeof FLAGS)[K] extends { multiple: true } ? string[] : string
  }
  if (v['no-dns'] && v['dns-suffix']) throw new IdentityError('ERR_INVALID_ARGUMENT', '--no-dns and --dns-suffix cannot be combined')
  const m: Record<string, unknown> = {}
  const x = ttlSeconds('x509-svid-ttl', v['x509-svid-ttl'])
  if (x !== undefined) m.x509_svid_ttl = x
  const j = ttlSeconds('jwt-svid-ttl', v['jwt-svid-ttl'])
  if (j !== undefined) m.jwt_svid_ttl = j
  if (v['max-instances'] !== undefined) {
    if (!/^\d+$/.test(v['max-instances'])) throw new IdentityError('ERR_INVALID_ARGUMENT', '--max-instances must be a non-negative integer')
    m.max_instances = Number(v['max-instances'])
  }
  if (v.audience) m.jwt_audiences = { values: v.audience }
  if (v['no-dns']) m.dns_suffixes = { values: [] }
  else if (v['dns-suffix']) m.dns_suffixes = { values: v['dns-suffix'] }
  if (v['federates-with']) m.federates_with = { values: v['federates-with'] }
  if (v['require-node-selector']) m.require_node_selectors = { values: v['require-node-selector'] }
  if (v.scope) m.scopes = { values: v.scope }
  if (v.resource) m.resources = { values: v.resource }
  const t = ttlSeconds('max-token-ttl', v['max-token-ttl'])
  if (t !== undefined) m.max_token_ttl = t
  for (const [flag, key] of [
    ['max-renewals', 'max_renewals'],
    ['max-delegation-depth', 'max_delegation_depth'],
  ] as const) {
    const n = v[flag]
    if (n === undefined) continue
    if (!/^\d+$/.test(n)) throw new IdentityError('ERR_INVALID_ARGUMENT', `--${flag} must be a non-negative integer`)
    m[key] = Number(n)
  }
  if (v['may-delegate-to']) m.may_delegate_to = { values: v['may-delegate-to'] }
  if (v['allow-bearer'] && v['deny-bearer']) throw new IdentityError('ERR_INVALID_ARGUMENT', '--allow-bearer and --deny-bearer cannot be combined')
  if (v['allow-bearer']) m.allow_bearer = true
  if (v['deny-bearer']) m.allow_bearer = false
  return m
}

/** A message as the wire JSON of the signed document (numbers, lists; absent = unbounded). */
function toJson(b: BoundsMsg | null): Record<string, unknown> | null {
  if (!b) return null
  const out: Record<string, unknown> = {}
  if (b.x509_svid_ttl !== undefined) out.x509_svid_ttl = Number(b.x509_svid_ttl)
  if (b.jwt_svid_ttl !== undefined) out.jwt_svid_ttl = Number(b.jwt_svid_ttl)
  if (b.jwt_audiences) out.jwt_audiences = b.jwt_audiences.values
  if (b.dns_suffixes) out.dns_suffixes = b.dns_suffixes.values
  if (b.federates_with) out.federates_with = b.federates_with.values
  if (b.max_instances !== undefined) out.max_instances = Number(b.max_instances)
  if (b.require_node_selectors) out.require_node_selectors = b.require_node_selectors.values
  if (b.scopes) out.scopes = b.scopes.values
  if (b.resources) out.resources = b.resources.values
  if (b.max_token_ttl !== undefined) out.max_token_ttl = Number(b.max_token_ttl)
  if (b.max_renewals !== undefined) out.max_renewals = Number(b.max_renewals)
  if (b.max_delegation_depth !== undefined) out.max_delegation_depth = Number(b.max_delegation_depth)
  if (b.may_delegate_to) out.may_delegate_to = b.may_delegate_to.values
  if (b.allow_bearer !== undefined) out.allow_bearer = b.allow_bearer
  return out
}

function infoJson(i: InfoMsg) {
  return {
    prefix: i.prefix,
    source: i.source || null,
    declared: toJson(i.declared),
    effective: toJson(i.effective),
    effective_from: i.effective_from,
    sequence: Number(i.sequence),
  }
}

function describe(b: BoundsMsg | null, indent: string): string {
  const j = toJson(b)
  if (!j || Object.keys(j).length === 0) return `${indent}(no limits)\n`
  const list = (l: unknown) => ((l as string[]).length === 0 ? 'none' : (l as string[]).join(', '))
  const lines: string[] = []
  if (j.x509_svid_ttl !== undefined) lines.push(`X.509-SVID TTL     <= ${formatDuration((j.x509_svid_ttl as number) * 1000)}`)
  if (j.jwt_svid_ttl !== undefined) lines.push(`JWT-SVID TTL       <= ${formatDuration((j.jwt_svid_ttl as number) * 1000)}`)
  if (j.jwt_audiences) lines.push(`JWT audiences      ${list(j.jwt_audiences)}`)
  if (j.dns_suffixes) lines.push(`DNS names under    ${list(j.dns_suffixes)}`)
  if (j.federates_with) lines.push(`Federates with     ${list(j.federates_with)}`)
  if (j.max_instances !== undefined) lines.push(`Max instances      ${Number(j.max_instances)}`)
  if (j.require_node_selectors) lines.push(`Node selectors     ${list(j.require_node_selectors)} (all required)`)
  if (j.scopes) lines.push(`Token scopes       ${list(j.scopes)}`)
  if (j.resources) lines.push(`Token resources    ${list(j.resources)}`)
  if (j.max_token_ttl !== undefined) lines.push(`Token TTL          <= ${formatDuration((j.max_token_ttl as number) * 1000)}`)
  if (j.max_renewals !== undefined) lines.push(`Max renewals       ${Number(j.max_renewals)}`)
  if (j.max_delegation_depth !== undefined) lines.push(`Delegation depth   <= ${Number(j.max_delegation_depth)}`)
  if (j.may_delegate_to) lines.push(`May delegate to    ${list(j.may_delegate_to)}`)
  if (j.allow_bearer !== undefined) lines.push(`Bearer tokens      ${j.allow_bearer ? 'allowed' : 'not allowed'}`)
  return lines.map((l) => `${indent}${l}\n`).join('')
}

function render(i: InfoMsg): string {
  let s = `Prefix        : ${i.prefix}${i.source ? ` (${i.source})` : ''}\n`
  s += i.declared ? `Declared      :\n${describe(i.declared, '  ')}` : 'Declared      : (nothing at this prefix)\n'
  s += i.effective ? `Effective     : from ${i.effective_from.join(', ')}\n${describe(i.effective, '  ')}` : 'Effective     : (unbounded)\n'
  return s
}

function requirePrefix(p: string | undefined): string {
  if (!p) throw new IdentityError('ERR_INVALID_ARGUMENT', '--prefix is required')
  return p
}

export async function run(args: string[]): Promise<number> {
  const [cmd, ...rest] = args
  if (!cmd || !['set', 'show', 'list', 'delete'].includes(cmd)) {
    process.stderr.write(`usage:\n${usage}\n`)
    return 2
  }
  const { values } = parseFlags(rest, FLAGS)
  const fmt = outputFormat(values.output)
  const c = adminClient('Bounds', values.socket ?? DEFAULT_ADMIN_SOCKET)
  try {
    switch (cmd) {
      case 'set': {
        const bounds = boundsFromFlags(values)
        const i = await c.call<InfoMsg>('Set', { prefix: requirePrefix(values.prefix), bounds })
        if (fmt === 'json') printJson(infoJson(i))
        else process.stdout.write(`Bounds set (sequence ${i.sequence}).\n${render(i)}`)
        return 0
      }
      case 'show': {
        if (values.signed) {
          const d = await c.call<{ document: string; trust_domain: string; sequence: string; kid: string }>('GetSigned', {})
          if (fmt === 'json') printJson({ document: d.document, trust_domain: d.trust_domain, sequence: Number(d.sequence), kid: d.kid })
          else process.stdout.write(`${d.document}\n`)
          return 0
        }
        const i = await c.call<InfoMsg>('Get', { prefix: requirePrefix(values.prefix) })
        if (fmt === 'json') printJson(infoJson(i))
        else process.stdout.write(render(i))
        return 0
      }
      case 'list': {
        const r = await c.call<{ bounds: InfoMsg[]; sequence: string }>('List', {})
        if (fmt === 'json') printJson({ sequence: Number(r.sequence), bounds: r.bounds.map(infoJson) })
        else if (r.bounds.length === 0) process.stdout.write('No bounds declared.\n')
        else process.stdout.write(r.bounds.map(render).join('\n'))
        return 0
      }
      default: {
        const i = await c.call<InfoMsg>('Delete', { prefix: requirePrefix(values.prefix) })
        if (fmt === 'json') printJson({ deleted: i.prefix, sequence: Number(i.sequence) })
        else process.stdout.write(`Bounds deleted for ${i.prefix} (sequence ${i.sequence}).\n`)
        return 0
      }
    }
  } finally {
    c.close()
  }
}
