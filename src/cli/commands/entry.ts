import { readFileSync } from 'node:fs'
import { IdentityError } from '../../errors/identity-error.js'
import { parseSelector } from '../../server/registration/selectors.js'
import { adminClient, DEFAULT_ADMIN_SOCKET } from '../admin-client.js'
import { outputFormat, parseFlags, printJson } from '../args.js'
import type { Entry } from '../../gen/warrant/types/v1/Entry.js'

export const usage = [
  '  entry create --spiffe-id ID --parent-id ID --selector T:V [...] [--x509-svid-ttl S] [--jwt-svid-ttl S]',
  '               [--dns NAME] [--federates-with TD] [--hint H] [--admin] [--downstream] [--expires-at EPOCH_S] | --data FILE.json',
  '  entry update --id ID [same flags as create: only the given fields change]',
  '  entry delete --id ID [--id ID ...]',
  '  entry show [--id ID] [--spiffe-id ID] [--parent-id ID] [--selector T:V ...] [--match exact|subset|superset|any]',
  '  entry count [same filters as show]',
].join('\n')

const ENTRY_FLAGS = {
  'spiffe-id': { type: 'string' },
  'parent-id': { type: 'string' },
  selector: { type: 'string', multiple: true, short: 's' },
  'x509-svid-ttl': { type: 'string' },
  'jwt-svid-ttl': { type: 'string' },
  dns: { type: 'string', multiple: true },
  'federates-with': { type: 'string', multiple: true },
  hint: { type: 'string' },
  admin: { type: 'boolean' },
  downstream: { type: 'boolean' },
  'expires-at': { type: 'string' },
  socket: { type: 'string' },
  output: { type: 'string' },
} as const

const int = (v: string | undefined, name: string): number | undefined => {
  if (v === undefined) return undefined
  if (!/^\d+$/.test(v)) throw new IdentityError('ERR_INVALID_ARGUMENT', `--${name} must be a whole number of seconds`)
  return Number(v)
}

interface EntryFlags {
  'spiffe-id'?: string
  'parent-id'?: string
  selector?: string[]
  'x509-svid-ttl'?: string
  'jwt-svid-ttl'?: string
  dns?: string[]
  'federates-with'?: string[]
  hint?: string
  admin?: boolean
  downstream?: boolean
  'expires-at'?: string
}

/** Builds the wire entry from flags and the update mask of the fields given. */
function entryFromFlags(v: EntryFlags): { entry: Entry; mask: string[] } {
  const e: Entry = {}
  const mask: string[] = []
  const set = <K extends keyof Entry>(k: K, val: Entry[K] | undefined) => {
    if (val !== undefined) {
      e[k] = val
      mask.push(k)
    }
  }
  set('spiffe_id', v['spiffe-id'])
  set('parent_id', v['parent-id'])
  set(
    'selectors',
    v.selector?.map((s) => parseSelector(s)),
  )
  set('x509_svid_ttl', int(v['x509-svid-ttl'], 'x509-svid-ttl'))
  set('jwt_svid_ttl', int(v['jwt-svid-ttl'], 'jwt-svid-ttl'))
  set('dns_names', v.dns)
  set('federates_with', v['federates-with'])
  set('hint', v.hint)
  set('admin', v.admin)
  set('downstream', v.downstream)
  const exp = int(v['expires-at'], 'expires-at')
  set('expires_at', exp === undefined ? undefined : String(exp * 1000))
  return { entry: e, mask }
}

function fromJsonFile(path: string): Entry[] {
  let doc: unknown
  try {
    doc = JSON.parse(readFileSync(path, 'utf8'))
  } catch (cause) {
    throw new IdentityError('ERR_INVALID_ARGUMENT', `cannot read --data ${path}: ${(cause as Error).message}`, { cause })
  }
  const list = Array.isArray(doc) ? doc : (doc as { entries?: unknown[] })?.entries
  if (!Array.isArray(list)) throw new IdentityError('ERR_INVALID_ARGUMENT', '--data must hold an array of entries or {"entries": [...]}')
  return list.map((x) => {
    const o = x as Record<string, unknown>
    return {
      spiffe_id: text(o, 'spiffe_id'),
      parent_id: text(o, 'parent_id'),
      selectors: ((o.selectors as unknown[]) ?? []).map((s) => (typeof s === 'string' ? parseSelector(s) : (s as { type: string; value: string }))),
      x509_svid_ttl: Number(o.x509_svid_ttl ?? 0),
      jwt_svid_ttl: Number(o.jwt_svid_ttl ?? 0),
      dns_names: (o.dns_names as string[]) ?? [],
      federates_with: (o.federates_with as string[]) ?? [],
      hint: text(o, 'hint'),
      admin: !!o.admin,
      downstream: !!o.downstream,
      expires_at: String(Number(o.expires_at ?? 0) * 1000),
    }
  })
}

interface EntryOut {
  id: string
  spiffe_id: string
  parent_id: string
  selectors: { type: string; value: string }[]
  x509_svid_ttl: number
  jwt_svid_ttl: number
  dns_names: string[]
  federates_with: string[]
  hint: string
  admin: boolean
  downstream: boolean
  expires_at: string
  revision: string
}

function printEntry(e: EntryOut): void {
  const lines = [
    `Entry ID         : ${e.id}`,
    `SPIFFE ID        : ${e.spiffe_id}`,
    `Parent ID        : ${e.parent_id}`,
    `Revision         : ${e.revision}`,
    `X509-SVID TTL    : ${e.x509_svid_ttl || 'default'}`,
    `JWT-SVID TTL     : ${e.jwt_svid_ttl || 'default'}`,
    `Expiration time  : ${e.expires_at !== '0' ? new Date(Number(e.expires_at)).toISOString() : 'never'}`,
    ...e.selectors.map((s) => `Selector         : ${s.type}:${s.value}`),
    ...e.dns_names.map((d) => `DNS name         : ${d}`),
    ...e.federates_with.map((t) => `FederatesWith    : ${t}`),
    ...(e.hint ? [`Hint             : ${e.hint}`] : []),
    ...(e.admin ? ['Admin            : true'] : []),
    ...(e.downstream ? ['Downstream       : true'] : []),
  ]
  process.stdout.write(`${lines.join('\n')}\n\n`)
}

type BatchRes = { results: { status: { code: number; error_code: string; message: string }; entry?: EntryOut }[] }

function printBatch(res: BatchRes, fmt: 'pretty' | 'json', verb: string): number {
  const failed = res.results.filter((r) => r.status.code !== 0).length
  if (fmt === 'json') printJson(res)
  else
    for (const r of res.results) {
      if (r.status.code === 0 && r.entry) {
        if (verb !== 'deleted') printEntry(r.entry)
        else process.stdout.write(`Deleted entry ${r.entry.id}\n`)
      } else process.stderr.write(`FAILED: ${r.status.message} [${r.status.error_code}]\n`)
    }
  return failed > 0 ? 1 : 0
}

export async function run(args: string[]): Promise<number> {
  const [cmd, ...rest] = args
  switch (cmd) {
    case 'create': {
      const { values } = parseFlags(rest, { ...ENTRY_FLAGS, data: { type: 'string' } })
      const entries = values.data ? fromJsonFile(values.data) : [entryFromFlags(values).entry]
      const c = adminClient('Entries', values.socket ?? DEFAULT_ADMIN_SOCKET)
      try {
        return printBatch(await c.call<BatchRes>('BatchCreate', { entries }), outputFormat(values.output), 'created')
      } finally {
        c.close()
      }
    }
    case 'update': {
      const { values } = parseFlags(rest, { ...ENTRY_FLAGS, id: { type: 'string' } })
      if (!values.id) throw new IdentityError('ERR_INVALID_ARGUMENT', '--id is required')
      const { entry, mask } = entryFromFlags(values)
      if (mask.length === 0) throw new IdentityError('ERR_INVALID_ARGUMENT', 'nothing to update: give at least one field flag')
      const c = adminClient('Entries', values.socket ?? DEFAULT_ADMIN_SOCKET)
      try {
        return printBatch(await c.call<BatchRes>('BatchUpdate', { entries: [{ ...entry, id: values.id }], mask }), outputFormat(values.output), 'updated')
      } finally {
        c.close()
      }
    }
    case 'delete': {
      const { values } = parseFlags(rest, { id: { type: 'string', multiple: true }, socket: { type: 'string' }, output: { type: 'string' } })
      if (!values.id || values.id.length === 0) throw new IdentityError('ERR_INVALID_ARGUMENT', '--id is required')
      const c = adminClient('Entries', values.socket ?? DEFAULT_ADMIN_SOCKET)
      try {
        return printBatch(await c.call<BatchRes>('BatchDelete', { ids: values.id }), outputFormat(values.output), 'deleted')
      } finally {
        c.close()
      }
    }
    case 'show':
    case 'count': {
      const { values } = parseFlags(rest, {
        id: { type: 'string' },
        'spiffe-id': { type: 'string' },
        'parent-id': { type: 'string' },
        selector: { type: 'string', multiple: true, short: 's' },
        match: { type: 'string' },
        'federates-with': { type: 'string' },
        hint: { type: 'string' },
        socket: { type: 'string' },
        output: { type: 'string' },
      })
      const fmt = outputFormat(values.output)
      const c = adminClient('Entries', values.socket ?? DEFAULT_ADMIN_SOCKET)
      try {
        if (values.id && cmd === 'show') {
          const e = await c.call<EntryOut>('Get', { id: values.id })
          if (fmt === 'json') printJson(e)
          else printEntry(e)
          return 0
        }
        const filter = {
          spiffe_id: values['spiffe-id'] ?? '',
          parent_id: values['parent-id'] ?? '',
          selectors: (values.selector ?? []).map((s) => parseSelector(s)),
          selector_match: values.match ?? '',
          federates_with: values['federates-with'] ?? '',
          hint: values.hint ?? '',
        }
        if (cmd === 'count') {
          const r = await c.call<{ count: string }>('Count', filter)
          if (fmt === 'json') printJson({ count: Number(r.count) })
          else process.stdout.write(`${r.count} registration entries\n`)
          return 0
        }
        const all: EntryOut[] = []
        let token = ''
        do {
          const r = await c.call<{ entries: EntryOut[]; next_page_token: string }>('List', { ...filter, page_size: 500, page_token: token })
          all.push(...r.entries)
          token = r.next_page_token
        } while (token)
        if (fmt === 'json') printJson({ entries: all })
        else {
          process.stdout.write(`Found ${all.length} ${all.length === 1 ? 'entry' : 'entries'}\n`)
          for (const e of all) printEntry(e)
        }
        return 0
      } finally {
        c.close()
      }
    }
    default:
      process.stderr.write(`usage:\n${usage}\n`)
      return 2
  }
}

/** A string field of an entry given with --data: absent is empty, anything else but a string is refused. */
function text(o: Record<string, unknown>, key: string): string {
  const v = o[key]
  if (v === undefined || v === null) return ''
  if (typeof v !== 'string') throw new IdentityError('ERR_INVALID_ARGUMENT', `--data: ${key} must be a string`)
  return v
}
