import type {
  ServerDuplexStream,
  ServerUnaryCall,
  ServerWritableStream,
  sendUnaryData,
  handleBidiStreamingCall,
  handleServerStreamingCall,
  handleUnaryCall,
} from '@grpc/grpc-js'
import { F, type Logger } from '../log/logger.js'
import { toGrpcError } from './errors.js'
import { MalformedRequest, malformedRequestError } from './request-decoding.js'

export interface CallContext<Req = unknown> {
  /**
   * Aborted when the client cancels or the deadline passes. In unary calls it
   * is made on first read (most answers never need one), so pass the context
   * itself where a `CallOpts` is wanted rather than reading it eagerly.
   */
  readonly signal: AbortSignal
  call: ServerUnaryCall<Req, unknown> | ServerWritableStream<Req, unknown> | ServerDuplexStream<Req, unknown>
  log: Logger
}

/**
 * The abort reason of every cancelled call. grpc-js reports 'cancelled' at the
 * end of most calls, so a reason made per call (a DOMException with its stack)
 * would be paid on nearly every RPC.
 */
export const CALL_CANCELLED = new DOMException('the call was cancelled', 'AbortError')

function callSignal(call: { on(ev: 'cancelled', f: () => void): unknown }): AbortController {
  const ac = new AbortController()
  call.on('cancelled', () => ac.abort(CALL_CANCELLED))
  return ac
}

/** The context of a unary call: its AbortSignal exists once something reads it. */
class UnaryContext<Req> implements CallContext<Req> {
  readonly call: ServerUnaryCall<Req, unknown>
  readonly log: Logger
  #ac: AbortController | undefined
  #cancelled = false

  constructor(call: ServerUnaryCall<Req, unknown>, log: Logger) {
    this.call = call
    this.log = log
  }

  get signal(): AbortSignal {
    if (this.#ac === undefined) {
      this.#ac = new AbortController()
      if (this.#cancelled) this.#ac.abort(CALL_CANCELLED)
    }
    return this.#ac.signal
  }

  cancel(): void {
    this.#cancelled = true
    this.#ac?.abort(CALL_CANCELLED)
  }
}

/** Adapts `async (req, ctx) => res` to a grpc-js unary handler; errors go through toGrpcError. */
export function unary<Req, Res>(
  log: Logger,
  method: string,
  fn: (req: Req, ctx: CallContext<Req>) => Promise<Res>,
  observe?: Observe,
): handleUnaryCall<Req, Res> {
  const mlog = log.child({ [F.METHOD]: method })
  return (call: ServerUnaryCall<Req, Res>, callback: sendUnaryData<Res>) => {
    const ctx = new UnaryContext(call, mlog)
    const onCancelled = () => ctx.cancel()
    call.on('cancelled', onCancelled)
    const req = call.request
    ;(req instanceof MalformedRequest ? Promise.reject(malformedRequestError('undecodable message', req.cause)) : fn(req, ctx)).then(
      (res) => {
        // The answer is ready: the 'cancelled' grpc-js reports as the stream closes has nothing left to stop.
        call.removeListener('cancelled', onCancelled)
        observe?.(method, 0)
        callback(null, res)
      },
      (err: unknown) => {
        call.removeListener('cancelled', onCancelled)
        const e = toGrpcError(err, mlog)
        observe?.(method, e.code)
        callback(e)
      },
    )
  }
}

/** Called once per finished RPC with its method and gRPC status code (for metrics). */
export type Observe = (method: string, code: number) => void

export interface StreamSink<Res> {
  send(msg: Res): void
  signal: AbortSignal
}

/**
 * Adapts `async (req, sink, ctx) => void` to a server-streaming handler. The
 * stream ends when `fn` resolves; errors become a status.
 */
export function serverStream<Req, Res>(
  log: Logger,
  method: string,
  fn: (req: Req, sink: StreamSink<Res>, ctx: CallContext<Req>) => Promise<void>,
  observe?: Observe,
): handleServerStreamingCall<Req, Res> {
  const mlog = log.child({ [F.METHOD]: method })
  return (call: ServerWritableStream<Req, Res>) => {
    const ac = callSignal(call)
    const sink: StreamSink<Res> = {
      send: (msg) => {
        if (!ac.signal.aborted && !call.writableEnded) call.write(msg)
      },
      signal: ac.signal,
    }
    const req = call.request
    ;(req instanceof MalformedRequest
      ? Promise.reject(malformedRequestError('undecodable message', req.cause))
      : fn(req, sink, { signal: ac.signal, call: call, log: mlog })
    ).then(
      () => {
        observe?.(method, 0)
        if (!call.writableEnded) call.end()
      },
      (err: unknown) => {
        if (ac.signal.aborted) {
          observe?.(method, 1)
          return
        }
        const e = toGrpcError(err, mlog)
        observe?.(method, e.code)
        call.emit('error', e)
      },
    )
  }
}

/** A pull-based reader over a bidi stream's incoming messages. */
export interface StreamSource<Req> {
  /** Next message; rejects when the stream ends or is cancelled. */
  next(): Promise<Req>
}

/**
 * Adapts `async (source, sink, ctx) => void` to a bidi-streaming handler. At
 * most `maxQueued` (default 16) received messages wait unread: a client that
 * sends more than the method expects is answered INVALID_ARGUMENT
 * ERR_REQUEST_MALFORMED at once (nothing more of it is kept).
 */
export function bidi<Req, Res>(
  log: Logger,
  method: string,
  fn: (source: StreamSource<Req>, sink: StreamSink<Res>, ctx: CallContext<Req>) => Promise<void>,
  observe?: Observe,
  opts: { maxQueued?: number } = {},
): handleBidiStreamingCall<Req, Res> {
  const mlog = log.child({ [F.METHOD]: method })
  const maxQueued = opts.maxQueued ?? 16
  return (call: ServerDuplexStream<Req, Res>) => {
    const ac = callSignal(call)
    let answered = false
    const queue: Req[] = []
    const waiters: { resolve: (r: Req) => void; reject: (e: Error) => void }[] = []
    let ended: Error | undefined
    const end = (e: Error) => {
      ended ??= e
      for (const w of waiters.splice(0)) w.reject(ended)
    }
    call.on('data', (m: Req) => {
      if (ended) return
      if (m instanceof MalformedRequest) return end(malformedRequestError('undecodable message', m.cause))
      const w = waiters.shift()
      if (w) w.resolve(m)
      else if (queue.length < maxQueued) queue.push(m)
      else {
        const err = malformedRequestError(`more than ${maxQueued} messages sent ahead of the server`)
        end(err)
        answered = true
        const e = toGrpcError(err, mlog)
        observe?.(method, e.code)
        call.emit('error', e)
        ac.abort(CALL_CANCELLED)
      }
    })
    // A client that half-closes while the handler still waits for a message (or inside one) sent an incomplete request.
    call.on('end', () => end(malformedRequestError('stream ended before the expected message')))
    call.on('error', () => end(new Error('stream error')))
    ac.signal.addEventListener('abort', () => end(new Error('cancelled')))
    const source: StreamSource<Req> = {
      next: () => {
        const m = queue.shift()
        if (m !== undefined) return Promise.resolve(m)
        if (ended) return Promise.reject(ended)
        return new Promise((resolve, reject) => waiters.push({ resolve, reject }))
      },
    }
    const sink: StreamSink<Res> = {
      send: (msg) => {
        if (!ac.signal.aborted && !call.writableEnded) call.write(msg)
      },
      signal: ac.signal,
    }
    fn(source, sink, { signal: ac.signal, call: call, log: mlog }).then(
      () => {
        if (answered) return
        observe?.(method, 0)
        if (!call.writableEnded) call.end()
      },
      (err: unknown) => {
        if (answered) return
        if (ac.signal.aborted) {
          observe?.(method, 1)
          return
        }
        const e = toGrpcError(err, mlog)
        observe?.(method, e.code)
        call.emit('error', e)
      },
    )
  }
}
