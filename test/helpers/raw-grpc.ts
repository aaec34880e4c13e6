/**
 * A gRPC client at the HTTP/2 frame level, for tests that must send what a
 * well-behaved client never would: a message frame whose declared length is
 * not what follows, a body that stops half-way, a stream that never sends a
 * message, a source address of their choosing (any 127.x.y.z on Linux).
 */
import { connect, constants, type ClientHttp2Session, type ClientHttp2Stream, type IncomingHttpHeaders } from 'node:http2'

export interface RawStatus {
  /** grpc-status (from trailers, or from the headers of a trailers-only answer). */
  code: number
  message: string
  /** The x-error-code trailer, when the server set one. */
  errorCode: string | undefined
  /** Response messages (without their 5-byte prefix). */
  messages: Buffer[]
}

/** One message frame: compressed flag 0, the declared length (default: the body's), then the body. */
export function grpcFrame(body: Uint8Array, declaredLength = body.length): Buffer {
  const head = Buffer.alloc(5)
  head.writeUInt32BE(declaredLength, 1)
  return Buffer.concat([head, body])
}

export interface RawSessionOptions {
  /** host:port of a TLS gRPC server. */
  address: string
  /** PEM roots that verify the server; its name is not checked (SPIFFE servers have URI SANs only). */
  caPem: string
  /** Source address of the TCP connection (e.g. 127.0.0.2). */
  localAddress?: string
  /** Client certificate and key (PEM), for an authenticated peer. */
  certPem?: string
  keyPem?: string
}

/** An HTTP/2 session to a gRPC server over TLS; each `call` is one stream. */
export class RawGrpcSession {
  readonly session: ClientHttp2Session

  private constructor(session: ClientHttp2Session) {
    this.session = session
    session.on('error', () => undefined)
  }

  static open(o: RawSessionOptions): Promise<RawGrpcSession> {
    const i = o.address.lastIndexOf(':')
    const host = o.address.slice(0, i)
    const port = Number(o.address.slice(i + 1))
    return new Promise((resolve, reject) => {
      const session = connect(`https://${host}:${port}`, {
        ca: o.caPem,
        checkServerIdentity: () => undefined,
        // Node's default (10 MB of queued outgoing data per session) would make this client reset its own large streams.
        maxSessionMemory: 4096,
        ...(o.localAddress ? { localAddress: o.localAddress } : {}),
        ...(o.certPem && o.keyPem ? { cert: o.certPem, key: o.keyPem } : {}),
      })
      session.once('connect', () => resolve(new RawGrpcSession(session)))
      session.once('error', reject)
    })
  }

  /** Opens a stream on `path` (sends HEADERS only; write frames with `stream.write`). `keepSending`: see RawCall. */
  open(path: string, o: { keepSending?: boolean } = {}): RawCall {
    const stream = this.session.request({
      [constants.HTTP2_HEADER_METHOD]: 'POST',
      [constants.HTTP2_HEADER_PATH]: path,
      [constants.HTTP2_HEADER_CONTENT_TYPE]: 'application/grpc',
      [constants.HTTP2_HEADER_TE]: 'trailers',
    })
    return new RawCall(stream, o)
  }

  /** One call: sends `body` (raw bytes, already framed) then half-closes unless `keepOpen`; resolves with the status. */
  call(path: string, body: Uint8Array, o: { keepOpen?: boolean; keepSending?: boolean } = {}): Promise<RawStatus> {
    const c = this.open(path, o.keepSending ? { keepSending: true } : {})
    c.stream.write(body)
    if (!o.keepOpen) c.stream.end()
    return c.status
  }

  close(): Promise<void> {
    return new Promise((resolve) => {
      if (this.session.closed || this.session.destroyed) return resolve()
      this.session.close(() => resolve())
      setTimeout(() => {
        this.session.destroy()
        resolve()
      }, 2000).unref()
    })
  }
}

export class RawCall {
  readonly stream: ClientHttp2Stream
  /** Resolves once the server ends the call with a status (rejects when the stream closes without one). */
  readonly status: Promise<RawStatus>

  /** `keepSending`: a hostile client that goes on sending its body after the server's status (default: it stops, as grpc-js does). */
  constructor(stream: ClientHttp2Stream, o: { keepSending?: boolean } = {}) {
    this.stream = stream
    stream.on('error', () => undefined)
    this.status = new Promise((resolve, reject) => {
      const messages: Buffer[] = []
      let buf = Buffer.alloc(0)
      let settled = false
      const settle = (h: IncomingHttpHeaders) => {
        const s = h['grpc-status']
        if (settled || s === undefined) return false
        settled = true
        const raw = h['grpc-message']
        const ec = h['x-error-code']
        resolve({
          code: Number(s),
          message: typeof raw === 'string' ? decodeURIComponent(raw) : '',
          errorCode: typeof ec === 'string' ? ec : undefined,
          messages,
        })
        // A client that has its answer stops sending (grpc-js clients do the same).
        if (!o.keepSending && !stream.closed) stream.close(constants.NGHTTP2_CANCEL)
        return true
      }
      stream.on('response', (h) => void settle(h))
      stream.on('trailers', (h) => void settle(h))
      stream.on('data', (d: Buffer) => {
        buf = Buffer.concat([buf, d])
        while (buf.length >= 5 && buf.length >= 5 + buf.readUInt32BE(1)) {
          const n = buf.readUInt32BE(1)
          messages.push(buf.subarray(5, 5 + n))
          buf = buf.subarray(5 + n)
        }
      })
      stream.on('close', () => {
        if (!settled) reject(new Error(`stream closed without a gRPC status (rst code ${stream.rstCode})`))
      })
    })
    this.status.catch(() => undefined)
  }

  /** Writes `data` and resolves once it has been handed to the socket (or the stream ended). */
  write(data: Uint8Array): Promise<void> {
    return new Promise((resolve) => {
      if (this.stream.closed || this.stream.destroyed) return resolve()
      this.stream.write(data, () => resolve())
    })
  }

  cancel(): void {
    if (!this.stream.closed) this.stream.close(constants.NGHTTP2_CANCEL)
  }
}
