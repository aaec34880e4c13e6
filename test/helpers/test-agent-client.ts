/**
 * A minimal client of the server's agent API (`warrant.agent.v1.Node`) for
 * tests and benchmarks: attests over real TLS (join token or x509pop), then
 * makes mutual-TLS calls with the issued agent SVID. Errors are the raw gRPC
 * ServiceErrors, so tests can assert status codes and messages.
 */
import * as grpc from '@grpc/grpc-js'
import { generateKeyPairSync, type KeyObject, type X509Certificate } from 'node:crypto'
import type { PeerCertificate } from 'node:tls'
import { encodePayload } from '../../attestors/node/x509pop/payload.js'
import { x509popAgent } from '../../attestors/node/x509pop/agent.js'
import { loadProto } from '../../src/common/grpc/proto.js'
import { createCsr } from '../../src/spiffe/x509-svid/csr.js'

export const pemOf = (label: string, der: Uint8Array): string =>
  `-----BEGIN ${label}-----\n${Buffer.from(der)
    .toString('base64')
    .replace(/.{1,64}/g, '$&\n')}-----END ${label}-----\n`

type NodeCtor = grpc.ServiceClientConstructor
type Cb<T> = (err: grpc.ServiceError | null, res: T) => void
type UnaryFn = (req: unknown, md: grpc.Metadata, opts: grpc.CallOptions, cb: Cb<unknown>) => grpc.ClientUnaryCall

export interface Status {
  code: number
  error_code: string
  message: string
}
export interface X509SvidResult {
  entry_id: string
  status: Status
  svid_chain: Buffer[]
  expires_at: string
}
export interface WireEntry {
  id: string
  spiffe_id: string
  parent_id: string
  selectors: { type: string; value: string }[]
  revision: string
}
export interface WireBundle {
  trust_domain: string
  document: string
  sequence: string
}
export interface SyncMsg {
  full: boolean
  entries: WireEntry[]
  deleted_entry_ids: string[]
  bundle: WireBundle | null
  federated_bundles: WireBundle[]
  federated_bundles_changed: boolean
}

/** An agent's credential: the key and the SVID chain (DER, leaf first) the server issued. */
export interface AgentCredential {
  agentId: string
  key: KeyObject
  chain: Uint8Array[]
  bundle: WireBundle | null
}

export function newP256(): { privateKey: KeyObject; publicKey: KeyObject } {
  return generateKeyPairSync('ec', { namedCurve: 'P-256' })
}

export class TestAgentClient {
  readonly address: string
  readonly trustDomain: string
  readonly bundlePem: string
  #anon: grpc.Client
  #mtls: grpc.Client | undefined
  #cred: AgentCredential | undefined
  readonly #ctor: NodeCtor

  constructor(o: { address: string; bundlePem: string; trustDomain?: string }) {
    this.address = o.address
    this.bundlePem = o.bundlePem
    this.trustDomain = o.trustDomain ?? 'example.org'
    const pkg = loadProto('warrant/agent/v1/node.proto') as unknown as { warrant: { agent: { v1: { Node: NodeCtor } } } }
    this.#ctor = pkg.warrant.agent.v1.Node
    this.#anon = this.#build(undefined)
  }

  get credential(): AgentCredential | undefined {
    return this.#cred
  }

  #build(cred: AgentCredential | undefined): grpc.Client {
    const serverId = `spiffe://${this.trustDomain}/warrant/server`
    const checkServerIdentity = (_host: string, cert: PeerCertificate): Error | undefined => {
      const uris = (cert.subjectaltname ?? '')
        .split(', ')
        .filter((s) => s.startsWith('URI:'))
        .map((s) => s.slice(4))
      return uris.length === 1 && uris[0] === serverId ? undefined : new Error(`server certificate is not for ${serverId}`)
    }
    const creds = grpc.credentials.createSsl(
      Buffer.from(this.bundlePem),
      cred ? Buffer.from(cred.key.export({ type: 'pkcs8', format: 'pem' }) as string) : null,
      cred ? Buffer.from(cred.chain.map((d) => pemOf('CERTIFICATE', d)).join('')) : null,
      { checkServerIdentity },
    )
    return new this.#ctor(this.address, creds, {
      'grpc.ssl_target_name_override': this.trustDomain,
      'grpc.default_authority': this.trustDomain,
      'grpc.max_receive_message_length': 64 * 1024 * 1024,
    })
  }

  /** Uses `cred` as the client certificate for the mTLS calls from now on. */
  useCredential(cred: AgentCredential): void {
    this.#mtls?.close()
    this.#cred = cred
    this.#mtls = this.#build(cred)
  }

  /** Runs Attest: params first, then answers each challenge. On success, the issued SVID becomes the client certificate. */
  attest(attestor: string, payload: Uint8Array, answer?: (challenge: Uint8Array) => Promise<Uint8Array>, key = newP256().privateKey): Promise<AgentCredential> {
    return createCsr({ privateKey: key }).then(
      (csr) =>
        new Promise<AgentCredential>((resolve, reject) => {
          const call = (this.#anon as unknown as { Attest: (md: grpc.Metadata, o: grpc.CallOptions) => grpc.ClientDuplexStream<unknown, unknown> }).Attest(
            new grpc.Metadata(),
            { deadline: Date.now() + 60_000 },
          )
          let done = false
          call.on('data', (m: { challenge?: Buffer; result?: { agent_id: string; svid_chain: Buffer[]; bundle: WireBundle | null } }) => {
            if (m.result) {
              done = true
              const cred: AgentCredential = {
                agentId: m.result.agent_id,
                key,
                chain: m.result.svid_chain.map((b) => new Uint8Array(b)),
                bundle: m.result.bundle,
              }
              call.end()
              this.useCredential(cred)
              resolve(cred)
            } else if (m.challenge) {
              if (!answer) {
                call.cancel()
                reject(new Error('unexpected challenge'))
                return
              }
              answer(new Uint8Array(m.challenge)).then(
                (r) => call.write({ challenge_response: Buffer.from(r) }),
                (err: unknown) => {
                  call.cancel()
                  reject(err)
                },
              )
            }
          })
          call.on('error', (err) => {
            if (!done) reject(err)
          })
          call.on('end', () => {
            if (!done) reject(new Error('Attest stream ended without a result'))
          })
          call.write({ params: { attestor, payload: Buffer.from(payload), csr: Buffer.from(csr) } })
        }),
    )
  }

  attestJoinToken(token: string): Promise<AgentCredential> {
    return this.attest('join_token', Buffer.from(token, 'utf8'))
  }

  attestX509Pop(chain: X509Certificate[], key: KeyObject): Promise<AgentCredential> {
    const a = x509popAgent(chain, key)
    const ac = new AbortController()
    return this.attest('x509pop', encodePayload({ chain: chain.map((c) => new Uint8Array(c.raw)) }), (c) => a.answer(c, { signal: ac.signal }))
  }

  #unary<T>(method: string, req: unknown, useMtls = true): Promise<T> {
    const client = useMtls ? (this.#mtls ?? this.#anon) : this.#anon
    const fn = (client as unknown as Record<string, UnaryFn>)[method]!.bind(client)
    return new Promise((resolve, reject) => {
      fn(req, new grpc.Metadata(), { deadline: Date.now() + 60_000 }, (err, res) => (err ? reject(err) : resolve(res as T)))
    })
  }

  /** Any unary RPC of the Node service over mTLS (for RPCs without a dedicated helper). */
  call<T>(method: string, req: unknown): Promise<T> {
    return this.#unary<T>(method, req)
  }

  /** BatchNewX509SVID; `anonymous` sends no client certificate. */
  batchNewX509Svid(params: { entryId: string; csr: Uint8Array; instanceId?: string }[], o: { anonymous?: boolean } = {}): Promise<X509SvidResult[]> {
    return this.#unary<{ results: X509SvidResult[] }>(
      'BatchNewX509SVID',
      { params: params.map((p) => ({ entry_id: p.entryId, csr: Buffer.from(p.csr), instance_id: p.instanceId ?? '' })) },
      !o.anonymous,
    ).then((r) => r.results)
  }

  newJwtSvid(entryId: string, audience: string[], o: { anonymous?: boolean } = {}): Promise<{ token: string; expires_at: string; issued_at: string }> {
    return this.#unary('NewJWTSVID', { entry_id: entryId, audience }, !o.anonymous)
  }

  renewAgent(csr: Uint8Array, o: { anonymous?: boolean } = {}): Promise<{ svid_chain: Buffer[] }> {
    return this.#unary('RenewAgent', { csr: Buffer.from(csr) }, !o.anonymous)
  }

  /** Opens Sync; messages are queued and read with `next()`. */
  sync(o: { anonymous?: boolean } = {}): SyncStream {
    const client = o.anonymous ? this.#anon : (this.#mtls ?? this.#anon)
    const call = (client as unknown as { Sync: (req: unknown, md: grpc.Metadata, o: grpc.CallOptions) => grpc.ClientReadableStream<SyncMsg> }).Sync(
      {},
      new grpc.Metadata(),
      {},
    )
    return new SyncStream(call)
  }

  close(): void {
    this.#anon.close()
    this.#mtls?.close()
  }
}

/** Queue over a Sync stream: `next()` resolves with the next message or rejects with the stream's error. */
export class SyncStream {
  readonly #call: grpc.ClientReadableStream<SyncMsg>
  readonly #queue: SyncMsg[] = []
  readonly #waiters: { resolve: (m: SyncMsg) => void; reject: (e: Error) => void }[] = []
  #error: Error | undefined

  constructor(call: grpc.ClientReadableStream<SyncMsg>) {
    this.#call = call
    call.on('data', (m: SyncMsg) => {
      const w = this.#waiters.shift()
      if (w) w.resolve(m)
      else this.#queue.push(m)
    })
    const fail = (e: Error) => {
      this.#error ??= e
      for (const w of this.#waiters.splice(0)) w.reject(this.#error)
    }
    call.on('error', fail)
    call.on('end', () => fail(new Error('Sync stream ended')))
  }

  next(timeoutMs = 20_000): Promise<SyncMsg> {
    const m = this.#queue.shift()
    if (m) return Promise.resolve(m)
    if (this.#error) return Promise.reject(this.#error)
    return new Promise((resolve, reject) => {
      const w = {
        resolve: (v: SyncMsg) => {
          clearTimeout(t)
          resolve(v)
        },
        reject: (e: Error) => {
          clearTimeout(t)
          reject(e)
        },
      }
      const t = setTimeout(() => {
        const i = this.#waiters.indexOf(w)
        if (i >= 0) this.#waiters.splice(i, 1)
        reject(new Error(`no Sync message within ${timeoutMs} ms`))
      }, timeoutMs)
      this.#waiters.push(w)
    })
  }

  cancel(): void {
    this.#call.cancel()
  }
}
