/**
 * Connection guard for the gRPC listeners whose connections we accept
 * ourselves and hand to grpc-js through `createConnectionInjector` (the
 * agent's Workload API socket, the server's agent API port).
 *
 * Why: Node's HTTP/2 layer (node:http2 over nghttp2, seen on Node 20.20 with
 * grpc-js 1.14.7, and on a bare `http2.createServer()` without grpc-js) leaks
 * a connection when nghttp2 ends the session itself on a protocol error
 * (a frame larger than SETTINGS_MAX_FRAME_SIZE, undecodable HPACK, ...).
 * nghttp2 queues GOAWAY with "terminate on send"; once it is sent, nghttp2
 * wants neither to read nor to write, Node stops reading the socket, and no
 * JavaScript event is ever emitted: no 'error', no 'close', not even when the
 * client closes its end (nobody reads the FIN). The socket (and anything held
 * with it) stays open for good. `session.ping()` on such a session returns
 * true and its callback never runs.
 *
 * What the guard does, per connection:
 * - admission: at most `maxPerPeer` concurrent connections per peer key
 *   (the caller's uid on a Unix socket, its source address on TCP); the
 *   connection over the limit is destroyed at once, counted and logged
 *   (once per key per {@link LIMIT_LOG_INTERVAL_MS});
 * - handshake: the TLS handshake (TCP listeners) and the HTTP/2 client
 *   preface (the client's first SETTINGS frame, Node's 'remoteSettings') must
 *   be done within `handshakeTimeoutMs`, whatever trickles in meanwhile;
 * - liveness: whenever the client has sent bytes since the last probe (the
 *   session socket's `bytesRead` moved), the guard sends an HTTP/2 PING; a
 *   session that does not answer it within `graceMs` (ten times that while it
 *   has open streams) is destroyed. This is what catches the silent GOAWAY
 *   above: a terminated session never answers. A connection whose client
 *   sends nothing costs nothing; a busy one costs one PING per
 *   `probeIntervalMs`;
 * - errors: a session that emitted 'error', 'frameError' or 'close', or that
 *   we asked to close gracefully, has its socket destroyed after `graceMs`;
 * - idle: a connection without any open stream for `idleTimeoutMs` (checked
 *   every `probeIntervalMs`, with no timer per call) is closed gracefully (GOAWAY NO_ERROR: the client reconnects when it needs to), and
 *   destroyed `graceMs` later if it is still there.
 *
 * The HTTP/2 sessions are found on the `http2.Http2Server` grpc-js creates
 * inside the injector, through grpc-js's private `http2Servers` map (stable
 * since 1.10). If that shape changes, {@link ConnectionGuard.createInjector}
 * throws at start-up rather than serving unguarded.
 */
import type net from 'node:net'
import type http2 from 'node:http2'
import type * as grpc from '@grpc/grpc-js'
import { Counter, Gauge, Registry } from 'prom-client'
import { F, type Logger } from '../log/logger.js'

/** A duplicate limit line for one key is logged at most this often. */
export const LIMIT_LOG_INTERVAL_MS = 10_000

export interface ConnectionGuardLimits {
  /** Concurrent connections per peer key (uid or source address). */
  maxPerPeer: number
  /** TLS handshake (TCP) plus HTTP/2 client preface, from accept. */
  handshakeTimeoutMs: number
  /** A connection without open streams for this long is closed gracefully. */
  idleTimeoutMs: number
  /** How long a probed, erroring or closing connection may linger before it is destroyed. */
  graceMs: number
}

export interface ConnectionGuardOptions extends ConnectionGuardLimits {
  /** The listener's name in logs and in the metrics' `listener` label (`workload_api`, `agent_api`). */
  listener: string
  /** What the peer key is called in logs: `uid` or `address`. */
  peerKind: 'uid' | 'address'
  log: Logger
  /** Registry for the guard's metrics; a private one is created when absent (see `registry`). */
  registry?: Registry
  /** How often the sweep runs (idle connections, read activity, pending probes). Default min(1000, graceMs / 2). */
  probeIntervalMs?: number
}

/** Defaults of the Workload API (per uid) and the server's agent API (per source address). */
export const DEFAULT_WORKLOAD_API_LIMITS: ConnectionGuardLimits = { maxPerPeer: 512, handshakeTimeoutMs: 5_000, idleTimeoutMs: 300_000, graceMs: 2_000 }
export const DEFAULT_AGENT_API_LIMITS: ConnectionGuardLimits = { maxPerPeer: 1024, handshakeTimeoutMs: 5_000, idleTimeoutMs: 300_000, graceMs: 2_000 }

export type ReapReason = 'handshake_timeout' | 'unresponsive' | 'session_error' | 'session_closed' | 'idle'

interface GuardMetrics {
  open: Gauge<'listener'>
  rejected: Counter<'listener' | 'reason'>
  reaped: Counter<'listener' | 'reason'>
}

const metricsByRegistry = new WeakMap<Registry, GuardMetrics>()

function guardMetrics(registry: Registry): GuardMetrics {
  let m = metricsByRegistry.get(registry)
  if (m === undefined) {
    const r = { registers: [registry] }
    m = {
      open: new Gauge({ name: 'warrant_connections_open', help: 'Open connections, by listener', labelNames: ['listener'] as const, ...r }),
      rejected: new Counter({
        name: 'warrant_connections_rejected_total',
        help: 'Connections refused at accept, by listener and reason (per_peer_limit)',
        labelNames: ['listener', 'reason'] as const,
        ...r,
      }),
      reaped: new Counter({
        name: 'warrant_connections_reaped_total',
        help: 'Connections destroyed by the connection guard, by listener and reason',
        labelNames: ['listener', 'reason'] as const,
        ...r,
      }),
    }
    metricsByRegistry.set(registry, m)
  }
  return m
}

const kEntry = Symbol('warrant.connectionGuard')

/** A probe on a connection with open streams may go unanswered this many times `graceMs`. */
export const STREAMS_GRACE_FACTOR = 10

/** An HTTP/2 PING frame: 9-byte header and 8-byte payload. */
const PING_ACK_BYTES = 17

/**
 * HTTP/2 bytes read from the client so far: the session's socket is the
 * accepted socket (plain) or the TLSSocket (its bytesRead counts decrypted
 * bytes). Undefined once the session has let go of its socket.
 */
function http2BytesRead(session: http2.ServerHttp2Session): number | undefined {
  try {
    const n = session.socket?.bytesRead
    return typeof n === 'number' ? n : undefined
  } catch {
    return undefined
  }
}

interface Entry {
  readonly socket: net.Socket
  readonly key: string
  session: http2.ServerHttp2Session | undefined
  prefaceDone: boolean
  streams: number
  /** HTTP/2 bytes read when the connection was last known to be quiet (-1: never probed). */
  lastBytesRead: number
  /** performance.now() when the outstanding probe was sent; undefined when none is. */
  probeSentAt: number | undefined
  handshakeTimer: NodeJS.Timeout | undefined
  /** performance.now() since when the connection has had no open stream; undefined while it has some. */
  idleSince: number | undefined
  graceTimer: NodeJS.Timeout | undefined
  reaped: boolean
}

type Injector = ReturnType<grpc.Server['createConnectionInjector']>

/**
 * Guards the connections of one listener. `admit` each accepted socket before
 * injecting it into the injector made by `createInjector`; `close` when the
 * listener stops.
 */
export class ConnectionGuard {
  readonly registry: Registry
  readonly limits: Readonly<ConnectionGuardLimits>
  readonly #listener: string
  readonly #peerKind: 'uid' | 'address'
  readonly #log: Logger
  readonly #metrics: GuardMetrics
  readonly #entries = new Set<Entry>()
  readonly #perKey = new Map<string, number>()
  readonly #limitLogged = new Map<string, { at: number; suppressed: number }>()
  readonly #probeIntervalMs: number
  #sweep: NodeJS.Timeout | undefined
  #closed = false

  constructor(opts: ConnectionGuardOptions) {
    for (const k of ['maxPerPeer', 'handshakeTimeoutMs', 'idleTimeoutMs', 'graceMs'] as const) {
      if (!Number.isInteger(opts[k]) || opts[k] <= 0) throw new RangeError(`${k} must be a positive integer, got ${opts[k]}`)
    }
    this.limits = { maxPerPeer: opts.maxPerPeer, handshakeTimeoutMs: opts.handshakeTimeoutMs, idleTimeoutMs: opts.idleTimeoutMs, graceMs: opts.graceMs }
    this.#listener = opts.listener
    this.#peerKind = opts.peerKind
    this.#log = opts.log
    this.registry = opts.registry ?? new Registry()
    this.#metrics = guardMetrics(this.registry)
    this.#probeIntervalMs = opts.probeIntervalMs ?? Math.max(50, Math.min(1000, Math.floor(opts.graceMs / 2)))
  }

  /** Connections currently admitted and not yet closed. */
  get size(): number {
    return this.#entries.size
  }

  /** Open connections of one peer key. */
  countFor(key: string): number {
    return this.#perKey.get(key) ?? 0
  }

  /**
   * Makes grpc-js's connection injector for `credentials` and watches the
   * HTTP/2 sessions of the connections injected into it.
   */
  createInjector(grpcServer: grpc.Server, credentials: grpc.ServerCredentials): Injector {
    const servers = (grpcServer as unknown as { http2Servers?: unknown }).http2Servers
    if (!(servers instanceof Map)) {
      throw new TypeError('@grpc/grpc-js internals changed (Server.http2Servers): the connection guard cannot observe HTTP/2 sessions')
    }
    const before = new Set<unknown>(servers.keys())
    const injector = grpcServer.createConnectionInjector(credentials)
    const added = [...servers.keys()].filter((k) => !before.has(k))
    const h2 = added[0] as Partial<http2.Http2Server> | undefined
    if (added.length !== 1 || h2 === undefined || typeof h2.on !== 'function') {
      injector.destroy()
      throw new TypeError('@grpc/grpc-js internals changed (createConnectionInjector): the connection guard cannot observe HTTP/2 sessions')
    }
    h2.on('session', (session: http2.ServerHttp2Session) => this.#onSession(session))
    this.#sweep ??= setInterval(() => this.#probe(), this.#probeIntervalMs).unref()
    return injector
  }

  /**
   * Admits an accepted socket under `key` (uid or source address), or
   * destroys it when that key is at its limit. Returns whether it was admitted;
   * an admitted socket is released when it closes.
   */
  admit(socket: net.Socket, key: string): boolean {
    if (this.#closed || socket.destroyed) {
      socket.destroy()
      return false
    }
    const n = this.#perKey.get(key) ?? 0
    if (n >= this.limits.maxPerPeer) {
      this.#metrics.rejected.inc({ listener: this.#listener, reason: 'per_peer_limit' })
      this.#logLimit(key)
      socket.destroy()
      return false
    }
    this.#perKey.set(key, n + 1)
    const entry: Entry = {
      socket,
      key,
      session: undefined,
      prefaceDone: false,
      streams: 0,
      lastBytesRead: -1,
      probeSentAt: undefined,
      handshakeTimer: undefined,
      idleSince: undefined,
      graceTimer: undefined,
      reaped: false,
    }
    ;(socket as unknown as Record<symbol, Entry>)[kEntry] = entry
    this.#entries.add(entry)
    this.#metrics.open.inc({ listener: this.#listener })
    entry.handshakeTimer = setTimeout(() => this.#reap(entry, 'handshake_timeout'), this.limits.handshakeTimeoutMs).unref()
    // A socket error is followed by 'close'; without a listener it would be thrown.
    socket.on('error', () => {})
    socket.once('close', () => this.#release(entry))
    return true
  }

  /** Stops the sweep and destroys every connection still open. */
  close(): void {
    this.#closed = true
    if (this.#sweep !== undefined) clearInterval(this.#sweep)
    this.#sweep = undefined
    for (const e of [...this.#entries]) {
      e.session?.destroy()
      e.socket.destroy()
      this.#release(e)
    }
  }

  #logLimit(key: string): void {
    const now = performance.now()
    const seen = this.#limitLogged.get(key)
    if (seen !== undefined && now - seen.at < LIMIT_LOG_INTERVAL_MS) {
      seen.suppressed++
      return
    }
    if (this.#limitLogged.size > 10_000) this.#limitLogged.clear()
    this.#limitLogged.set(key, { at: now, suppressed: 0 })
    this.#log.warn(
      {
        [this.#peerKind === 'uid' ? F.UID : F.ADDRESS]: this.#peerKind === 'uid' ? Number(key) : key,
        [F.SUBSYSTEM]: this.#listener,
        limit: this.limits.maxPerPeer,
        [F.COUNT]: (seen?.suppressed ?? 0) + 1,
      },
      'Connection limit per peer reached; refusing connections',
    )
  }

  #entryOf(session: http2.ServerHttp2Session): Entry | undefined {
    // session.socket is a proxy of the socket (plain) or the TLSSocket whose `_parent` is the accepted socket.
    const s = session.socket as unknown as (Record<symbol, Entry | undefined> & { _parent?: Record<symbol, Entry | undefined> }) | undefined
    if (s === undefined) return undefined
    return s[kEntry] ?? s._parent?.[kEntry]
  }

  #onSession(session: http2.ServerHttp2Session): void {
    const entry = this.#entryOf(session)
    if (entry === undefined) {
      // Not admitted by us (should not happen): nothing guards it, so refuse it.
      session.destroy()
      return
    }
    if (entry.reaped) {
      session.destroy()
      return
    }
    entry.session = session
    session.once('remoteSettings', () => {
      entry.prefaceDone = true
      if (entry.handshakeTimer !== undefined) clearTimeout(entry.handshakeTimer)
      entry.handshakeTimer = undefined
      if (entry.streams === 0) entry.idleSince = performance.now()
    })
    // No timer per call: the sweep (#probe) closes connections idle for idleTimeoutMs.
    session.on('stream', (stream: http2.ServerHttp2Stream) => {
      entry.streams++
      entry.idleSince = undefined
      stream.once('close', () => {
        if (--entry.streams === 0) entry.idleSince = performance.now()
      })
    })
    session.on('error', () => this.#condemn(entry, 'session_error'))
    session.on('frameError', () => this.#condemn(entry, 'session_error'))
    session.once('close', () => this.#condemn(entry, 'session_closed'))
  }

  /** Closes an idle connection gracefully (GOAWAY NO_ERROR); destroyed after the grace period if it lingers. */
  #closeIdle(entry: Entry): void {
    entry.idleSince = undefined
    const s = entry.session
    this.#log.debug({ [F.SUBSYSTEM]: this.#listener }, 'Closing idle connection')
    try {
      if (s !== undefined && !s.closed && !s.destroyed) s.close()
    } catch {
      // already closing
    }
    this.#condemn(entry, 'idle')
  }

  /** Destroys the connection after the grace period unless it closes by itself first. */
  #condemn(entry: Entry, reason: ReapReason): void {
    if (entry.reaped || entry.graceTimer !== undefined) return
    entry.graceTimer = setTimeout(() => this.#reap(entry, reason), this.limits.graceMs).unref()
  }

  /**
   * The sweep: closes connections idle for `idleTimeoutMs`, sends a PING on
   * each connection that has read bytes since its last probe, and reaps those
   * that left one unanswered.
   */
  #probe(): void {
    const now = performance.now()
    let overdue = false
    for (const e of this.#entries) {
      const s = e.session
      if (e.reaped || s === undefined || !e.prefaceDone) continue
      if (e.idleSince !== undefined && e.streams === 0 && now - e.idleSince >= this.limits.idleTimeoutMs) {
        this.#closeIdle(e)
        continue
      }
      if (e.probeSentAt !== undefined) {
        if (now - e.probeSentAt >= this.#answerWithinMs(e)) overdue = true
        continue
      }
      if (s.closed || s.destroyed) continue
      const read = http2BytesRead(s)
      if (read === undefined || read === e.lastBytesRead) continue
      const sentAt = now
      e.probeSentAt = sentAt
      try {
        s.ping((err) => {
          if (e.probeSentAt === sentAt) e.probeSentAt = undefined
          if (err) return this.#condemn(e, 'unresponsive')
          // Quiet again only if nothing but the PING ACK (17 bytes) came since the probe: a client may send a
          // bad frame right behind its answer, which the next probe (never answered) then catches.
          const after = http2BytesRead(s)
          e.lastBytesRead = after === read + PING_ACK_BYTES ? after : read
        })
      } catch {
        // Too many outstanding pings, or the session is going away.
        this.#condemn(e, 'unresponsive')
      }
    }
    // Judge overdue probes after this turn's I/O has been read (setImmediate runs after the poll phase),
    // so an event-loop stall does not count against a client whose answer is already waiting.
    if (overdue) {
      setImmediate(() => {
        const at = performance.now()
        for (const e of this.#entries) {
          if (e.probeSentAt !== undefined && at - e.probeSentAt >= this.#answerWithinMs(e)) this.#reap(e, 'unresponsive')
        }
      })
    }
  }

  /**
   * How long a probe may go unanswered. A connection with calls open gets
   * {@link STREAMS_GRACE_FACTOR} times longer: a client whose process stalls
   * for a moment should not lose its calls, and a silent one still cannot
   * keep anything for long (nor more than `maxPerPeer` of them).
   */
  #answerWithinMs(e: Entry): number {
    return e.streams > 0 ? this.limits.graceMs * STREAMS_GRACE_FACTOR : this.limits.graceMs
  }

  #reap(entry: Entry, reason: ReapReason): void {
    if (entry.reaped) return
    entry.reaped = true
    this.#metrics.reaped.inc({ listener: this.#listener, reason })
    if (reason !== 'session_closed' && reason !== 'idle') {
      this.#log.debug({ [F.SUBSYSTEM]: this.#listener, [F.REASON]: reason }, 'Connection guard destroyed a connection')
    }
    try {
      entry.session?.destroy()
    } finally {
      entry.socket.destroy()
    }
  }

  #release(entry: Entry): void {
    if (!this.#entries.delete(entry)) return
    entry.reaped = true
    for (const t of [entry.handshakeTimer, entry.graceTimer]) if (t !== undefined) clearTimeout(t)
    entry.handshakeTimer = entry.graceTimer = entry.idleSince = undefined
    entry.probeSentAt = undefined
    const n = (this.#perKey.get(entry.key) ?? 1) - 1
    if (n <= 0) this.#perKey.delete(entry.key)
    else this.#perKey.set(entry.key, n)
    this.#metrics.open.dec({ listener: this.#listener })
  }
}
