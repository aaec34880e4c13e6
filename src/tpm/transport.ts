import { open, type FileHandle } from 'node:fs/promises'
import { Socket } from 'node:net'
import { IdentityError } from '../errors/index.js'

/**
 * How TPM command bytes reach a TPM. Implementations send one command at a
 * time (commands queue) and return the whole response.
 */
export interface TpmTransport {
  send(cmd: Uint8Array, opts?: { signal?: AbortSignal }): Promise<Uint8Array>
  close(): Promise<void>
}

const DEFAULT_TIMEOUT_MS = 60_000
/** Largest response we accept (TPM responses are at most a few KiB). */
const MAX_RESPONSE = 64 * 1024

function transportError(message: string, cause?: unknown): IdentityError {
  return new IdentityError('ERR_TPM_TRANSPORT', message, cause === undefined ? undefined : { cause })
}

function checkCommand(cmd: Uint8Array): void {
  if (cmd.length < 10) throw new RangeError('TPM command shorter than its header')
  const size = new DataView(cmd.buffer, cmd.byteOffset, cmd.byteLength).getUint32(2)
  if (size !== cmd.length) throw new RangeError('TPM commandSize does not match the command length')
}

/** Serialises async operations. */
class Queue {
  #tail: Promise<unknown> = Promise.resolve()
  run<T>(fn: () => Promise<T>): Promise<T> {
    const next = this.#tail.then(fn, fn)
    this.#tail = next.catch(() => undefined)
    return next
  }
}

/**
 * A kernel TPM character device: `/dev/tpmrm0` (resource-managed; objects
 * and sessions are flushed when the fd closes) or `/dev/tpm0`. Each command
 * is written with one write() and the response read with one read().
 */
export class DeviceTransport implements TpmTransport {
  readonly path: string
  #fh: FileHandle | undefined
  #opening: Promise<FileHandle> | undefined
  readonly #queue = new Queue()
  #closed = false

  constructor(path = '/dev/tpmrm0') {
    this.path = path
  }

  async #handle(): Promise<FileHandle> {
    if (this.#fh !== undefined) return this.#fh
    this.#opening ??= open(this.path, 'r+').then(
      (fh) => {
        this.#fh = fh
        return fh
      },
      (err: unknown) => {
        this.#opening = undefined
        throw transportError(`cannot open TPM device ${this.path}`, err)
      },
    )
    return this.#opening
  }

  send(cmd: Uint8Array, opts?: { signal?: AbortSignal }): Promise<Uint8Array> {
    checkCommand(cmd)
    return this.#queue.run(async () => {
      if (this.#closed) throw transportError('TPM transport is closed')
      opts?.signal?.throwIfAborted()
      const fh = await this.#handle()
      try {
        const { bytesWritten } = await fh.write(cmd, 0, cmd.length)
        if (bytesWritten !== cmd.length) throw transportError('short write to TPM device')
        const buf = new Uint8Array(8192)
        const { bytesRead } = await fh.read(buf, 0, buf.length, null)
        if (bytesRead < 10) throw transportError('short response from TPM device')
        return buf.slice(0, bytesRead)
      } catch (err) {
        if (err instanceof IdentityError) throw err
        throw transportError(`TPM device I/O failed on ${this.path}`, err)
      }
    })
  }

  async close(): Promise<void> {
    this.#closed = true
    await this.#queue.run(async () => {
      const fh = this.#fh
      this.#fh = undefined
      await fh?.close()
    })
  }
}

export type SwtpmFraming = 'raw' | 'mssim'

export interface SwtpmTcpOptions {
  host?: string
  port: number
  /**
   * 'raw': the bare TPM command; 'mssim': `u32 TPM_SEND_COMMAND(8) | u8 locality | u32 len | cmd`
   * answered by `u32 len | resp | u32 0`.
   */
  framing?: SwtpmFraming
  locality?: number
  timeoutMs?: number
}

const TPM_SEND_COMMAND = 8

/**
 * The swtpm (or Microsoft simulator) TCP data port. swtpm serves one client
 * at a time; the connection is opened on first use and kept until `close()`.
 * Each framed command goes out in a single socket.write.
 */
export class SwtpmTcpTransport implements TpmTransport {
  readonly host: string
  readonly port: number
  readonly framing: SwtpmFraming
  readonly #locality: number
  readonly #timeoutMs: number
  readonly #queue = new Queue()
  #socket: Socket | undefined
  #buf: Buffer = Buffer.alloc(0)
  #waiter: { sock: Socket; onData: () => void; fail: (err: Error) => void } | undefined
  #closed = false

  constructor(opts: SwtpmTcpOptions) {
    this.host = opts.host ?? '127.0.0.1'
    this.port = opts.port
    this.framing = opts.framing ?? 'mssim'
    this.#locality = opts.locality ?? 0
    this.#timeoutMs = opts.timeoutMs ?? DEFAULT_TIMEOUT_MS
  }

  #connect(signal: AbortSignal | undefined): Promise<Socket> {
    if (this.#socket !== undefined && !this.#socket.destroyed) return Promise.resolve(this.#socket)
    return new Promise<Socket>((resolve, reject) => {
      const s = new Socket()
      s.setNoDelay(true)
      const onAbort = (): void => {
        s.destroy()
        reject(transportError('TPM connect aborted', signal?.reason))
      }
      const timer = setTimeout(() => {
        s.destroy()
        reject(transportError(`timed out connecting to TPM at ${this.host}:${this.port}`))
      }, this.#timeoutMs)
      signal?.addEventListener('abort', onAbort, { once: true })
      const cleanup = (): void => {
        clearTimeout(timer)
        signal?.removeEventListener('abort', onAbort)
      }
      s.once('error', (err) => {
        cleanup()
        reject(transportError(`cannot connect to TPM at ${this.host}:${this.port}`, err))
      })
      s.connect(this.port, this.host, () => {
        cleanup()
        s.removeAllListeners('error')
        // Events of a dropped socket must not touch the next command.
        const waiter = () => (this.#waiter?.sock === s ? this.#waiter : undefined)
        s.on('data', (chunk: Buffer) => {
          if (this.#socket !== s) return
          this.#buf = this.#buf.length === 0 ? chunk : Buffer.concat([this.#buf, chunk])
          waiter()?.onData()
        })
        s.on('error', (err) => waiter()?.fail(transportError('TPM connection error', err)))
        s.on('close', () => {
          if (this.#socket === s) this.#socket = undefined
          waiter()?.fail(transportError('TPM connection closed'))
        })
        this.#socket = s
        this.#buf = Buffer.alloc(0)
        resolve(s)
      })
    })
  }

  /** Bytes of a complete framed response at the head of the buffer, or undefined. */
  #complete(): { resp: Uint8Array; consumed: number } | undefined {
    const b = this.#buf
    if (this.framing === 'raw') {
      if (b.length < 6) return undefined
      const size = b.readUInt32BE(2)
      if (size < 10 || size > MAX_RESPONSE) throw transportError('invalid TPM response size')
      if (b.length < size) return undefined
      return { resp: new Uint8Array(b.subarray(0, size)), consumed: size }
    }
    if (b.length < 4) return undefined
    const size = b.readUInt32BE(0)
    if (size < 10 || size > MAX_RESPONSE) throw transportError('invalid TPM response size')
    if (b.length < 4 + size + 4) return undefined
    const ack = b.readUInt32BE(4 + size)
    if (ack !== 0) throw transportError(`TPM simulator returned error ${ack}`)
    return { resp: new Uint8Array(b.subarray(4, 4 + size)), consumed: 8 + size }
  }

  #frame(cmd: Uint8Array): Buffer {
    if (this.framing === 'raw') return Buffer.from(cmd)
    const out = Buffer.alloc(9 + cmd.length)
    out.writeUInt32BE(TPM_SEND_COMMAND, 0)
    out.writeUInt8(this.#locality, 4)
    out.writeUInt32BE(cmd.length, 5)
    out.set(cmd, 9)
    return out
  }

  send(cmd: Uint8Array, opts?: { signal?: AbortSignal }): Promise<Uint8Array> {
    checkCommand(cmd)
    const signal = opts?.signal
    return this.#queue.run(async () => {
      if (this.#closed) throw transportError('TPM transport is closed')
      signal?.throwIfAborted()
      const sock = await this.#connect(signal)
      this.#buf = Buffer.alloc(0)
      return new Promise<Uint8Array>((resolve, reject) => {
        let done = false
        const finish = (err: Error | undefined, resp?: Uint8Array): void => {
          if (done) return
          done = true
          clearTimeout(timer)
          signal?.removeEventListener('abort', onAbort)
          this.#waiter = undefined
          if (err !== undefined) {
            // The stream is out of step with the TPM: drop the connection.
            sock.destroy()
            if (this.#socket === sock) this.#socket = undefined
            reject(err)
          } else {
            resolve(resp!)
          }
        }
        const onAbort = (): void => finish(transportError('TPM command aborted', signal?.reason))
        const timer = setTimeout(() => finish(transportError(`TPM command timed out after ${this.#timeoutMs} ms`)), this.#timeoutMs)
        signal?.addEventListener('abort', onAbort, { once: true })
        this.#waiter = {
          sock,
          onData: () => {
            try {
              const c = this.#complete()
              if (c === undefined) return
              this.#buf = this.#buf.subarray(c.consumed)
              finish(undefined, c.resp)
            } catch (err) {
              finish(err as Error)
            }
          },
          fail: (err) => finish(err),
        }
        sock.write(this.#frame(cmd), (err) => {
          if (err) finish(transportError('TPM write failed', err))
        })
      })
    })
  }

  async close(): Promise<void> {
    this.#closed = true
    await this.#queue.run(async () => {
      const s = this.#socket
      this.#socket = undefined
      if (s === undefined || s.destroyed) return
      await new Promise<void>((resolve) => {
        s.once('close', () => resolve())
        s.end()
        setTimeout(() => s.destroy(), 1000).unref()
      })
    })
  }
}

/**
 * `device:/dev/tpmrm0`, `swtpm:host:port` (mssim framing),
 * `swtpm:host:port?framing=raw`, `mssim:host:port`.
 */
export function openTransport(uri: string, opts?: { timeoutMs?: number }): TpmTransport {
  const colon = uri.indexOf(':')
  const scheme = colon < 0 ? '' : uri.slice(0, colon)
  const rest = uri.slice(colon + 1)
  if (scheme === 'device') {
    if (!rest.startsWith('/')) throw new IdentityError('ERR_CONFIG_INVALID', 'TPM device path must be absolute')
    return new DeviceTransport(rest)
  }
  if (scheme === 'swtpm' || scheme === 'mssim') {
    const [addr = '', query = ''] = rest.split('?', 2)
    const portSep = addr.lastIndexOf(':')
    const host = addr.slice(0, portSep).replace(/^\[(.*)\]$/, '$1')
    const port = Number(addr.slice(portSep + 1))
    if (portSep <= 0 || host === '' || !Number.isInteger(port) || port <= 0 || port > 65535) {
      throw new IdentityError('ERR_CONFIG_INVALID', `invalid TPM address "${addr}" (want host:port)`)
    }
    const params = new URLSearchParams(query)
    const framing = params.get('framing') ?? 'mssim'
    if (framing !== 'raw' && framing !== 'mssim') throw new IdentityError('ERR_CONFIG_INVALID', `unknown TPM framing "${framing}"`)
    const o: SwtpmTcpOptions = { host, port, framing }
    if (opts?.timeoutMs !== undefined) o.timeoutMs = opts.timeoutMs
    return new SwtpmTcpTransport(o)
  }
  throw new IdentityError('ERR_CONFIG_INVALID', `unsupported TPM transport URI scheme "${scheme}" (want device: or swtpm:)`)
}
