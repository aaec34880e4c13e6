/**
 * `warrant api ...`: a Workload API client for people, as `spire-agent api`.
 * The socket is `--socket`, else SPIFFE_ENDPOINT_SOCKET, else the default.
 */
import * as grpc from '@grpc/grpc-js'
import { X509Certificate } from 'node:crypto'
import { mkdirSync } from 'node:fs'
import { join } from 'node:path'
import { writeFileAtomic } from '../../agent/agent-store.js'
import { loadProto } from '../../common/grpc/proto.js'
import { IdentityError } from '../../errors/identity-error.js'
import { toPem } from '../../spiffe/x509-svid/pem.js'
import { outputFormat, parseFlags, printJson, type OutputFormat } from '../args.js'

export const DEFAULT_WORKLOAD_SOCKET = '/tmp/warrant-agent/public/api.sock'

export const usage = [
  '  api fetch x509 [--write DIR]           fetch X.509-SVIDs (writes svid.N.pem, svid.N.key, bundle.N.pem, federated_bundle.N.M.pem)',
  '  api fetch jwt --audience A[,B] [--spiffe-id ID]   fetch JWT-SVIDs and JWT bundles',
  '  api validate jwt --audience A --svid TOKEN        validate a JWT-SVID',
  '  api watch                              print X.509-SVID and JWT bundle updates until interrupted',
  '                                         (--output json: one object per line, "kind" x509_svids or jwt_bundles)',
  '  (all: [--socket PATH] [--timeout 5s] [--output json]; SPIFFE_ENDPOINT_SOCKET is honored)',
].join('\n')

/** The gRPC target of the Workload API: `--socket`, else SPIFFE_ENDPOINT_SOCKET (`unix:///path` or `unix:path`), else the default. */
export function resolveSocket(flag: string | undefined, env: NodeJS.ProcessEnv = process.env): string {
  const raw = flag ?? env.SPIFFE_ENDPOINT_SOCKET ?? DEFAULT_WORKLOAD_SOCKET
  if (raw.startsWith('unix://')) return `unix://${raw.slice('unix://'.length)}`
  if (raw.startsWith('unix:')) return `unix:${raw.slice('unix:'.length)}`
  if (raw.startsWith('tcp://')) return raw.slice('tcp://'.length)
  return `unix:${raw}`
}

export interface X509SvidMsg {
  spiffe_id: string
  x509_svid: Buffer
  x509_svid_key: Buffer
  bundle: Buffer
  hint: string
}
export interface X509SvidResponseMsg {
  svids: X509SvidMsg[]
  federated_bundles: Record<string, Buffer>
}

type WorkloadClient = grpc.Client & Record<string, (...args: unknown[]) => unknown>

export function workloadClient(target: string): WorkloadClient {
  const ctor = (loadProto('spiffe/workload/workload.proto') as unknown as { SpiffeWorkloadAPI: grpc.ServiceClientConstructor }).SpiffeWorkloadAPI
  return new ctor(target, grpc.credentials.createInsecure()) as unknown as WorkloadClient
}

export function securityHeader(): grpc.Metadata {
  const md = new grpc.Metadata()
  md.set('workload.spiffe.io', 'true')
  return md
}

function unaryCall<Res>(client: WorkloadClient, method: string, req: unknown, timeoutMs: number): Promise<Res> {
  return new Promise<Res>((resolve, reject) => {
    client[method]!(req, securityHeader(), { deadline: Date.now() + timeoutMs }, (err: grpc.ServiceError | null, res: Res) =>
      err ? reject(err) : resolve(res),
    )
  })
}

function firstMessage<Res>(client: WorkloadClient, method: string, timeoutMs: number): Promise<Res> {
  return new Promise<Res>((resolve, reject) => {
    const call = client[method]!({}, securityHeader(), { deadline: Date.now() + timeoutMs }) as grpc.ClientReadableStream<Res>
    let done = false
    call.on('data', (m: Res) => {
      if (done) return
      done = true
      resolve(m)
      call.cancel()
    })
    call.on('error', (err: grpc.ServiceError) => {
      if (!done) {
        done = true
        reject(err)
      }
    })
    call.on('end', () => {
      if (!done) {
        done = true
        reject(new IdentityError('ERR_UNAVAILABLE', 'stream ended without a message'))
      }
    })
  })
}

/** Splits concatenated DER certificates. */
export function splitDer(buf: Uint8Array): Uint8Array[] {
  const out: Uint8Array[] = []
  let i = 0
  while (i < buf.length) {
    if (buf[i] !== 0x30) throw new IdentityError('ERR_X509_SVID_INVALID', 'malformed DER certificate list')
    let len = buf[i + 1]!
    let hdr = 2
    if (len & 0x80) {
      const n = len & 0x7f
      len = 0
      for (let k = 0; k < n; k++) len = len * 256 + buf[i + 2 + k]!
      hdr = 2 + n
    }
    out.push(buf.subarray(i, i + hdr + len))
    i += hdr + len
  }
  return out
}

function pemChain(der: Uint8Array): string {
  return splitDer(der)
    .map((d) => toPem('CERTIFICATE', d))
    .join('')
}

function certTimes(der: Uint8Array): { notBefore: string; notAfter: string } {
  const c = new X509Certificate(der)
  return { notBefore: new Date(c.validFrom).toISOString(), notAfter: new Date(c.validTo).toISOString() }
}

function fmtElapsed(ms: number): string {
  return ms < 1000 ? `${ms.toFixed(3)}ms` : `${(ms / 1000).toFixed(3)}s`
}

function timeoutMs(v: string | undefined): number {
  if (v === undefined) return 5000
  const m = /^(\d+(?:\.\d+)?)(ms|s|m)?$/.exec(v)
  if (!m) throw new IdentityError('ERR_INVALID_ARGUMENT', '--timeout must be a duration such as 5s')
  const n = Number(m[1])
  return m[2] === 'ms' ? n : m[2] === 'm' ? n * 60_000 : n * 1000
}

function describeX509(resp: X509SvidResponseMsg, elapsedMs: number, fmt: OutputFormat, json: (v: Record<string, unknown>) => void = printJson): void {
  const svids = resp.svids.map((s) => {
    const chain = splitDer(s.x509_svid)
    const bundle = splitDer(s.bundle)
    return {
      spiffe_id: s.spiffe_id,
      hint: s.hint,
      ...certTimes(chain[0]!),
      intermediates: chain.slice(1).map(certTimes),
      bundle: bundle.map(certTimes),
    }
  })
  const federated = Object.entries(resp.federated_bundles ?? {}).map(([td, der]) => ({ trust_domain: td, authorities: splitDer(der).map(certTimes) }))
  if (fmt === 'json') {
    json({ svids: svids.map(({ notBefore, notAfter, ...rest }) => ({ ...rest, not_before: notBefore, not_after: notAfter })), federated_bundles: federated })
    return
  }
  const lines = [`Received ${svids.length} svid${svids.length === 1 ? '' : 's'} after ${fmtElapsed(elapsedMs)}`, '']
  for (const s of svids) {
    lines.push(`SPIFFE ID:\t\t${s.spiffe_id}`)
    if (s.hint) lines.push(`Hint:\t\t\t${s.hint}`)
    lines.push(`SVID Valid After:\t${s.notBefore}`, `SVID Valid Until:\t${s.notAfter}`)
    s.intermediates.forEach((c, i) => lines.push(`Intermediate #${i + 1} Valid After:\t${c.notBefore}`, `Intermediate #${i + 1} Valid Until:\t${c.notAfter}`))
    s.bundle.forEach((c, i) => lines.push(`CA #${i + 1} Valid After:\t${c.notBefore}`, `CA #${i + 1} Valid Until:\t${c.notAfter}`))
    lines.push('')
  }
  for (const f of federated) {
    f.authorities.forEach((c, i) =>
      lines.push(`[${f.trust_domain}] CA #${i + 1} Valid After:\t${c.notBefore}`, `[${f.trust_domain}] CA #${i + 1} Valid Until:\t${c.notAfter}`),
    )
  }
  process.stdout.write(`${lines.join('\n')}\n`)
}

export interface JwtBundlesResponseMsg {
  bundles: Record<string, Buffer>
}

/** One FetchJWTBundles message: the JWKS of each trust domain, keyed as the agent sends it. */
function describeJwtBundles(resp: JwtBundlesResponseMsg, elapsedMs: number, fmt: OutputFormat, json: (v: Record<string, unknown>) => void = printJson): void {
  const bundles = Object.entries(resp.bundles ?? {}).map(([td, b]) => {
    let jwks: { keys?: { kid?: string; kty?: string; crv?: string }[] } = {}
    try {
      jwks = JSON.parse(Buffer.from(b).toString('utf8')) as typeof jwks
    } catch {
      // shown as a bundle without keys
    }
    return { td, jwks, keys: (jwks.keys ?? []).map((k) => ({ kid: k.kid ?? '', kty: k.kty ?? '', ...(k.crv ? { crv: k.crv } : {}) })) }
  })
  if (fmt === 'json') {
    json({ bundles: Object.fromEntries(bundles.map((b) => [b.td, b.jwks])) })
    return
  }
  const lines = [`Received JWT bundles for ${bundles.length} trust domain${bundles.length === 1 ? '' : 's'} after ${fmtElapsed(elapsedMs)}`, '']
  for (const b of bundles) {
    lines.push(`[${b.td}] ${b.keys.length} JWT authorit${b.keys.length === 1 ? 'y' : 'ies'}`)
    for (const k of b.keys) lines.push(`\tkid ${k.kid} (${k.kty}${k.crv ? ` ${k.crv}` : ''})`)
  }
  process.stdout.write(`${lines.join('\n')}\n\n`)
}

/** Writes svid.N.pem, svid.N.key (0600), bundle.N.pem and federated_bundle.N.M.pem into `dir`. */
export function writeX509(dir: string, resp: X509SvidResponseMsg): string[] {
  mkdirSync(dir, { recursive: true })
  const written: string[] = []
  const put = (name: string, data: string, mode = 0o644) => {
    writeFileAtomic(join(dir, name), data, mode)
    written.push(join(dir, name))
  }
  const federated = Object.values(resp.federated_bundles ?? {})
  resp.svids.forEach((s, n) => {
    put(`svid.${n}.pem`, pemChain(s.x509_svid))
    put(`svid.${n}.key`, toPem('PRIVATE KEY', s.x509_svid_key), 0o600)
    put(`bundle.${n}.pem`, pemChain(s.bundle))
    federated.forEach((der, m) => put(`federated_bundle.${n}.${m}.pem`, pemChain(der)))
  })
  return written
}

type StructValue = { kind?: string; [k: string]: unknown }
/** google.protobuf.Struct (proto-loader object form) → plain JSON. */
export function fromStruct(s: { fields?: Record<string, StructValue> } | null | undefined): Record<string, unknown> {
  const out: Record<string, unknown> = {}
  for (const [k, v] of Object.entries(s?.fields ?? {})) out[k] = fromValue(v)
  return out
}
function fromValue(v: StructValue): unknown {
  switch (v.kind) {
    case 'nullValue':
      return null
    case 'numberValue':
      return v.numberValue
    case 'stringValue':
      return v.stringValue
    case 'boolValue':
      return v.boolValue
    case 'structValue':
      return fromStruct(v.structValue as { fields?: Record<string, StructValue> })
    case 'listValue':
      return ((v.listValue as { values?: StructValue[] }).values ?? []).map(fromValue)
    default:
      return undefined
  }
}

const common = {
  socket: { type: 'string' },
  output: { type: 'string' },
  timeout: { type: 'string' },
} as const

export async function run(args: string[]): Promise<number> {
  const [cmd, sub, ...rest] = args
  const key = cmd === 'watch' ? 'watch' : `${cmd ?? ''} ${sub ?? ''}`
  const restArgs = cmd === 'watch' ? [sub, ...rest].filter((a): a is string => a !== undefined) : rest
  switch (key) {
    case 'fetch x509': {
      const { values } = parseFlags(restArgs, { ...common, write: { type: 'string' } })
      const fmt = outputFormat(values.output)
      const client = workloadClient(resolveSocket(values.socket))
      try {
        const t0 = performance.now()
        const resp = await firstMessage<X509SvidResponseMsg>(client, 'FetchX509SVID', timeoutMs(values.timeout))
        const elapsed = performance.now() - t0
        describeX509(resp, elapsed, fmt)
        if (values.write !== undefined) {
          const files = writeX509(values.write, resp)
          if (fmt !== 'json') process.stdout.write(`Wrote ${files.length} files to ${values.write}\n`)
        }
        return 0
      } finally {
        client.close()
      }
    }
    case 'fetch jwt': {
      const { values } = parseFlags(restArgs, { ...common, audience: { type: 'string', short: 'a' }, 'spiffe-id': { type: 'string' } })
      const fmt = outputFormat(values.output)
      const audience = (values.audience ?? '')
        .split(',')
        .map((a) => a.trim())
        .filter((a) => a !== '')
      if (audience.length === 0) throw new IdentityError('ERR_INVALID_ARGUMENT', '--audience is required')
      const client = workloadClient(resolveSocket(values.socket))
      try {
        const t = timeoutMs(values.timeout)
        const req: Record<string, unknown> = { audience }
        if (values['spiffe-id']) req.spiffe_id = values['spiffe-id']
        const svids = await unaryCall<{ svids: { spiffe_id: string; svid: string; hint: string }[] }>(client, 'FetchJWTSVID', req, t)
        const bundles = await firstMessage<{ bundles: Record<string, Buffer> }>(client, 'FetchJWTBundles', t)
        if (fmt === 'json') {
          printJson({
            svids: svids.svids.map((s) => ({ spiffe_id: s.spiffe_id, token: s.svid, hint: s.hint })),
            bundles: Object.fromEntries(Object.entries(bundles.bundles ?? {}).map(([td, b]) => [td, JSON.parse(b.toString('utf8')) as unknown])),
          })
        } else {
          const lines: string[] = []
          for (const s of svids.svids) lines.push(`token(${s.spiffe_id}):`, `\t${s.svid}`)
          for (const [td, b] of Object.entries(bundles.bundles ?? {})) lines.push(`bundle(${td}):`, `\t${b.toString('utf8')}`)
          process.stdout.write(`${lines.join('\n')}\n`)
        }
        return 0
      } finally {
        client.close()
      }
    }
    case 'validate jwt': {
      const { values } = parseFlags(restArgs, { ...common, audience: { type: 'string', short: 'a' }, svid: { type: 'string' } })
      const fmt = outputFormat(values.output)
      if (!values.audience) throw new IdentityError('ERR_INVALID_ARGUMENT', '--audience is required')
      if (!values.svid) throw new IdentityError('ERR_INVALID_ARGUMENT', '--svid is required')
      const client = workloadClient(resolveSocket(values.socket))
      try {
        const res = await unaryCall<{ spiffe_id: string; claims: { fields?: Record<string, StructValue> } }>(
          client,
          'ValidateJWTSVID',
          { audience: values.audience, svid: values.svid },
          timeoutMs(values.timeout),
        )
        const claims = fromStruct(res.claims)
        if (fmt === 'json') printJson({ valid: true, spiffe_id: res.spiffe_id, claims })
        else process.stdout.write(`SVID is valid.\nSPIFFE ID : ${res.spiffe_id}\nClaims    : ${JSON.stringify(claims)}\n`)
        return 0
      } finally {
        client.close()
      }
    }
    case 'watch': {
      const { values } = parseFlags(restArgs, { socket: common.socket, output: common.output })
      const fmt = outputFormat(values.output)
      const client = workloadClient(resolveSocket(values.socket))
      // In a watch, JSON is one compact object per line, tagged with the stream it came from.
      const line = (kind: string) => (v: Record<string, unknown>) => process.stdout.write(`${JSON.stringify({ kind, ...v })}\n`)
      const t0 = performance.now()
      return new Promise<number>((resolve) => {
        const x509 = client.FetchX509SVID!({}, securityHeader()) as grpc.ClientReadableStream<X509SvidResponseMsg>
        const jwt = client.FetchJWTBundles!({}, securityHeader()) as grpc.ClientReadableStream<JwtBundlesResponseMsg>
        let lastX509 = t0
        let lastJwt = t0
        x509.on('data', (m: X509SvidResponseMsg) => {
          const now = performance.now()
          describeX509(m, now - lastX509, fmt, line('x509_svids'))
          lastX509 = now
        })
        jwt.on('data', (m: JwtBundlesResponseMsg) => {
          const now = performance.now()
          describeJwtBundles(m, now - lastJwt, fmt, line('jwt_bundles'))
          lastJwt = now
        })
        let finished = false
        const finish = (code: number) => {
          if (finished) return
          finished = true
          process.removeListener('SIGINT', stop)
          process.removeListener('SIGTERM', stop)
          x509.cancel()
          jwt.cancel()
          client.close()
          resolve(code)
        }
        const stop = () => finish(0)
        process.once('SIGINT', stop)
        process.once('SIGTERM', stop)
        // Either stream failing ends the watch (a workload without an identity gets PermissionDenied on both).
        const onError = (err: grpc.ServiceError) => {
          if (finished) return
          if (err.code === grpc.status.CANCELLED) return finish(0)
          process.stderr.write(`warrant: ${err.details}\n`)
          finish(1)
        }
        x509.on('error', onError)
        jwt.on('error', onError)
      })
    }
    default:
      process.stderr.write(`warrant api: unknown command "${key.trim()}"\n${usage}\n`)
      return 2
  }
}
