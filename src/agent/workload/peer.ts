/**
 * Caller identification on the Workload API Unix socket.
 *
 * grpc-js cannot see the credentials of a Unix-socket peer, so we accept the
 * connections ourselves on a plain `net.Server`, read the peer's pid/uid/gid
 * with SO_PEERCRED (native addon `build/Release/peercred.node`, source in
 * `native/peercred.c`) and the process start time from `/proc/<pid>/stat`, and
 * only then hand the socket to grpc-js through `createConnectionInjector`.
 *
 * How a handler finds its peer: grpc-js derives `call.getPeer()` from the
 * HTTP/2 session's socket `remoteAddress`/`remotePort` (server-interceptors.js
 * `getPeer()`), and the session keeps the socket we injected for its whole
 * life. For a Unix socket both are normally undefined ("unknown"), so we give
 * each accepted socket an own `remoteAddress` property holding a unique,
 * unguessable connection id and `remotePort` 0; `getPeer()` then returns that id,
 * which keys the credentials recorded at accept time. Clients cannot influence
 * the id: it is set on our side of the socket.
 *
 * PID reuse: after workload attestation (`assertPeerAlive`), a caller that
 * has exited, or whose pid now names another process, fails attestation.
 * Where the kernel has pidfds, each connection holds a pidfd of its caller:
 * from SO_PEERPIDFD (Linux 6.5+), which names the very process that
 * connected, or else from pidfd_open(2) at accept. The re-check is one
 * poll(2) of it: while the process has not exited, its pid cannot name any
 * other process, so everything read through `/proc/<pid>` before the check
 * was that process's. Without pidfds, the start time read at accept is
 * compared with the `/proc/<pid>/stat` file opened at accept and kept open
 * with the connection: procfs ties an open file to its process, so reads fail
 * (ESRCH) once that process is gone, whatever process the pid names by then.
 *
 * Stream resets: nghttp2 (since 1.57, the HTTP/2 "rapid reset" fix) lets a
 * client reset at most 1,000 streams in a burst, refilled at 33 per second,
 * and then kills the connection with GOAWAY INTERNAL_ERROR, which fails every
 * call on it ("Session closed with error code 2"). Node does not expose that
 * limit. A Workload API client legitimately opens and cancels streams (each
 * FetchX509SVID ends with a cancel), so we keep our own, smaller budget per
 * connection (`noteCancelled`) and, when it runs out, close the connection
 * gracefully first: GOAWAY NO_ERROR, calls in flight finish, the client opens
 * a new connection for new calls (and retries refused ones transparently).
 */
import { randomBytes } from 'node:crypto'
import { chmodSync, closeSync, lstatSync, mkdirSync, openSync, statSync, unlinkSync } from 'node:fs'
import { dirname } from 'node:path'
import net from 'node:net'
import * as grpc from '@grpc/grpc-js'
import { IdentityError } from '../../errors/index.js'
import { F, type Logger } from '../../common/log/logger.js'
import { findNativeAddon, requireNativeAddon } from '../../common/native/addon.js'
import { ProcFileReader } from '../../common/procfs.js'
import { ConnectionGuard, DEFAULT_WORKLOAD_API_LIMITS, type ConnectionGuardLimits } from '../../common/net/connection-guard.js'
import type { Registry } from 'prom-client'
import { parseProcCreds, sameProcCreds, type ProcCreds } from './proc-creds.js'
import { openKernelProcEvents, PeerChangeWatcher, type PeerWatch, type ProcEventSource } from './proc-events.js'

/** Kernel-reported credentials of the process that connected (at connect time). */
export interface PeerCred {
  pid: number
  /** Effective uid at connect(2). */
  uid: number
  /** Effective gid at connect(2). */
  gid: number
  /** Supplementary groups at connect(2) (SO_PEERGROUPS); absent where the kernel cannot tell. */
  groups?: readonly number[]
}

/** A connected caller: its credentials plus what we need to detect PID reuse. */
export interface PeerInfo extends PeerCred {
  /** Synthetic connection id, also what grpc-js reports as `call.getPeer()`. */
  readonly id: string
  /** `/proc/<pid>/stat` field 22 (starttime, clock ticks since boot) read at accept time. */
  readonly startTime: string
  /** Supplementary groups at connect (SO_PEERGROUPS, else `/proc` read at accept and held unchanged). */
  readonly groups: readonly number[]
}

/** Returns the start time of `pid` (`/proc/<pid>/stat` field 22), or undefined if there is no such process. */
export type StartTimeReader = (pid: number) => string | undefined

interface PeerCredAddon {
  getPeerCred(fd: number): PeerCred
  /** SO_PEERGROUPS (throws ENOPROTOOPT on kernels before 4.13). */
  getPeerGroups?(fd: number): number[]
  /** SO_PEERPIDFD: a pidfd of the process that connected (throws ENOPROTOOPT on kernels before 6.5). */
  getPeerPidfd?(fd: number): number
  /** pidfd_open(2) (throws ENOSYS on kernels before 5.3). */
  openPidfd?(pid: number): number
  /** Whether the process of a pidfd has exited. */
  pidfdExited?(pidfd: number): boolean
  /** The kernel's process events (see proc-events.ts). */
  procEventsOpen?(): number
  procEventsDrain?(fd: number): { tgids: number[]; overflow: boolean }
  procEventsClose?(fd: number): void
}

let addon: PeerCredAddon | undefined

/** Loads the SO_PEERCRED addon once; throws ERR_NOT_CONFIGURED with the fix if it was never built. */
export function loadPeerCredAddon(): PeerCredAddon {
  if (addon !== undefined) return addon
  if (process.platform !== 'linux') {
    throw new IdentityError('ERR_UNSUPPORTED', `peer credentials (SO_PEERCRED) are only supported on Linux, not ${process.platform}`)
  }
  const path = findNativeAddon('peercred')
  if (path === undefined) {
    throw new IdentityError(
      'ERR_NOT_CONFIGURED',
      'native addon build/Release/peercred.node is missing: run `npm ci` (or `npm rebuild`, or `npx node-gyp rebuild`) in the warrant directory',
    )
  }
  try {
    const mod = requireNativeAddon(path) as Partial<PeerCredAddon>
    if (typeof mod.getPeerCred !== 'function') throw new TypeError('getPeerCred export missing')
    addon = mod as PeerCredAddon
    return addon
  } catch (cause) {
    throw new IdentityError('ERR_NOT_CONFIGURED', `native addon ${path} failed to load: rebuild it with \`npm rebuild\` or \`npx node-gyp rebuild\``, { cause })
  }
}

/** The OS file descriptor behind a connected net.Socket (Unix socket accepted by a net.Server). */
function socketFd(socket: net.Socket): number {
  const handle = (socket as unknown as { _handle?: { fd?: unknown } })._handle
  const fd = handle?.fd
  if (typeof fd !== 'number' || fd < 0) {
    throw new IdentityError('ERR_WORKLOAD_ATTESTATION_FAILED', 'connection has no file descriptor')
  }
  return fd
}

/** SO_PEERCRED of a connected Unix socket. */
export function getSocketPeerCred(socket: net.Socket): PeerCred {
  const fd = socketFd(socket)
  try {
    const a = loadPeerCredAddon()
    const cred = a.getPeerCred(fd)
    if (a.getPeerGroups) {
      try {
        cred.groups = a.getPeerGroups(fd)
      } catch (err) {
        if ((err as NodeJS.ErrnoException).code !== 'ENOPROTOOPT') throw err
      }
    }
    return cred
  } catch (cause) {
    if (cause instanceof IdentityError) throw cause
    throw new IdentityError('ERR_WORKLOAD_ATTESTATION_FAILED', 'cannot read peer credentials', { cause })
  }
}

/**
 * Reads field 22 (starttime) of `/proc/<pid>/stat`. The second field (comm) may
 * contain spaces and parentheses, so fields are counted after the last ')'.
 */
export function readProcessStartTime(pid: number, procRoot = '/proc'): string | undefined {
  if (!Number.isInteger(pid) || pid <= 0) throw new RangeError(`invalid pid ${pid}`)
  let fd: number
  try {
    fd = openSync(`${procRoot}/${pid}/stat`, 'r')
  } catch {
    return undefined
  }
  try {
    return readStartTimeFd(fd)
  } catch {
    return undefined
  } finally {
    closeSync(fd)
  }
}

/** Shared by every start-time read (they are synchronous, so never concurrent). */
const statReader = new ProcFileReader(1024)

/**
 * Field 22 of the `/proc/<pid>/stat` open as `fd`, read from offset 0 (procfs
 * generates the text afresh on each such read). Undefined when the text has
 * no such field. Throws the read error; ESRCH means the process the file was
 * opened for is gone (a reused pid is another process: its file is another).
 */
function readStartTimeFd(fd: number): string | undefined {
  const n = statReader.read(fd)
  const statBuf = statReader.buffer
  if (n === 0) return undefined
  const close = statBuf.lastIndexOf(0x29 /* ')' */, n - 1)
  if (close < 0) return undefined
  // After ") " come fields 3.. ; starttime (22) is index 19 of that list.
  let at = close + 2
  for (let field = 0; field < 19; field++) {
    const sp = statBuf.indexOf(0x20, at)
    if (sp < 0 || sp >= n) return undefined
    at = sp + 1
  }
  let end = at
  while (end < n && statBuf[end]! >= 0x30 && statBuf[end]! <= 0x39) end++
  if (end === at || (end < n && statBuf[end] !== 0x20 && statBuf[end] !== 0x0a)) return undefined
  return statBuf.toString('latin1', at, end)
}

/** Opens `/proc/<pid>/stat` for reading; undefined if that fails (then the path is read each time). */
function openProcStat(pid: number): number | undefined {
  if (!Number.isInteger(pid) || pid <= 0) throw new RangeError(`invalid pid ${pid}`)
  try {
    return openSync(`/proc/${pid}/stat`, 'r')
  } catch {
    return undefined
  }
}

/** The start time from a held stat file; undefined when its process is gone (ESRCH). */
function readStartTimeOrGone(fd: number): string | undefined {
  try {
    return readStartTimeFd(fd)
  } catch (err) {
    if ((err as NodeJS.ErrnoException).code === 'ESRCH') return undefined
    throw err
  }
}

/**
 * A pidfd of the caller of a connection, or undefined where the kernel (or
 * the addon build) has none. `socket` is given when the connection's own
 * credentials are used (SO_PEERPIDFD names exactly the process that
 * connected); otherwise, or on kernels before 6.5, the process `pid` names
 * now is opened. Throws ESRCH when that process is gone.
 */
function openCallerPidfd(pid: number, socket: net.Socket | undefined): number | undefined {
  const a = loadPeerCredAddon()
  if (!a.pidfdExited) return undefined
  if (socket !== undefined && a.getPeerPidfd) {
    try {
      return a.getPeerPidfd(socketFd(socket))
    } catch (err) {
      const code = (err as NodeJS.ErrnoException).code
      if (code !== 'ENOPROTOOPT' && code !== 'EINVAL') throw err
    }
  }
  if (!a.openPidfd) return undefined
  try {
    return a.openPidfd(pid)
  } catch (err) {
    if ((err as NodeJS.ErrnoException).code === 'ENOSYS') return undefined
    throw err
  }
}

/** What a connection's caller was at accept: its status file (kept open), its ids and its executable. */
interface ProcState {
  readonly statusFd: number
  readonly creds: ProcCreds
  /** `dev:ino` of the file `/proc/<pid>/exe` names, or the error code its stat gave. */
  readonly exe: string
}

/** Shared by every status read (they are synchronous, so never concurrent). */
const statusReader = new ProcFileReader(2048)

/** The identity of the executable a process runs (`dev:ino` through its `exe` link), or the error code. */
function exeIdentity(pid: number): string {
  try {
    // Numbers, not bigints (a BigIntStats costs more per call): a dev or inode
    // past 2^53 would only make two files compare equal if both round alike.
    const st = statSync(`/proc/${pid}/exe`)
    return `${st.dev}:${st.ino}`
  } catch (err) {
    return (err as NodeJS.ErrnoException).code ?? 'ERROR'
  }
}

/** Plain-data view of ids for logs. */
function credsView(c: ProcCreds | undefined): Record<string, unknown> | undefined {
  return c && { uids: c.uids, gids: c.gids, groups: c.groups }
}

/**
 * Opens `/proc/<pid>/status` of a caller that just connected, reads its ids
 * and its executable. Refuses (ERR_WORKLOAD_CREDENTIALS_CHANGED) when the
 * effective ids there are no longer those the kernel recorded at connect:
 * the process changed them between connect and accept.
 */
function openProcState(cred: PeerCred): ProcState {
  const fd = openSync(`/proc/${cred.pid}/status`, 'r')
  try {
    const n = statusReader.read(fd)
    const creds = parseProcCreds(statusReader.buffer, n)
    if (creds === undefined) throw new IdentityError('ERR_WORKLOAD_ATTESTATION_FAILED', 'unreadable process status', { details: { pid: cred.pid } })
    if (creds.uids[1] !== cred.uid || creds.gids[1] !== cred.gid) {
      throw new IdentityError('ERR_WORKLOAD_CREDENTIALS_CHANGED', 'caller credentials changed between connect and accept', {
        details: { pid: cred.pid, at_connect: { uid: cred.uid, gid: cred.gid }, now: credsView(creds) },
      })
    }
    return { statusFd: fd, creds, exe: exeIdentity(cred.pid) }
  } catch (err) {
    closeSync(fd)
    throw err
  }
}

/** Client-cancelled calls a connection may have in a burst before we close it gracefully (nghttp2's own burst is 1,000). */
export const RESET_BURST = 500
/** Refill of that budget per second (nghttp2's rate). */
export const RESET_RATE_PER_S = 33

interface ResetBudget {
  tokens: number
  at: number
  closing: boolean
}

/** What we need of node:http2's ServerHttp2Stream and its session. */
interface ResettableStream {
  readonly rstCode?: number
  readonly session?: { close(): void; readonly closed: boolean; readonly destroyed: boolean } | undefined
  once(event: 'close', listener: () => void): unknown
}

/**
 * The HTTP/2 stream of a grpc-js server call. grpc-js does not expose it, so
 * this walks its internals (stable since 1.10): the surface call's `call`,
 * then `nextCall` through interceptors, to the base call's `stream`.
 * Undefined when that shape is not found.
 */
export function http2StreamOfCall(call: unknown): ResettableStream | undefined {
  let c = (call as { call?: unknown } | undefined)?.call
  for (let i = 0; i < 8 && c !== undefined && c !== null; i++) {
    const stream = (c as { stream?: Partial<ResettableStream> }).stream
    if (stream && typeof stream.once === 'function' && stream.session && typeof stream.session.close === 'function') {
      return stream as ResettableStream
    }
    c = (c as { nextCall?: unknown }).nextCall
  }
  return undefined
}

export interface PeerTrackingServerOptions {
  socketPath: string
  /** The grpc-js server whose services answer the calls; it need not be bound to any port. */
  grpcServer: grpc.Server
  log: Logger
  /** Injected for tests; defaults to `readProcessStartTime`. */
  readStartTime?: StartTimeReader
  /** Injected for tests; defaults to SO_PEERCRED through the native addon. */
  getPeerCred?: (socket: net.Socket) => PeerCred
  /** Injected for tests: monotonic milliseconds for the reset budget; defaults to `performance.now`. */
  now?: () => number
  /** For tests: false behaves as on a kernel without pidfds (the kept stat file answers the re-checks). Default true. */
  pidfds?: boolean
  /** Per-uid connection cap, handshake/idle timeouts and reaping grace (src/common/net/connection-guard.ts). */
  connectionLimits?: Partial<ConnectionGuardLimits>
  /** Registry for the connection guard's metrics. */
  registry?: Registry
  /**
   * Injected for tests: subscribes to the kernel's process events (default:
   * the proc connector through the native addon). When it throws, every call
   * re-reads the caller's `/proc` in full, as on a kernel without them.
   */
  openProcEvents?: () => ProcEventSource
}

/**
 * Listens on a Unix socket, records each caller's peer credentials at accept
 * time and injects the connection into grpc-js.
 */
export class PeerTrackingServer {
  readonly socketPath: string
  readonly #grpcServer: grpc.Server
  readonly #log: Logger
  readonly #readStartTime: StartTimeReader
  readonly #getPeerCred: (socket: net.Socket) => PeerCred
  readonly #peers = new Map<string, PeerInfo>()
  /**
   * `/proc/<pid>/stat` of each connection's caller, opened at accept and kept
   * open for the connection's life (default start-time reader only). Procfs
   * binds an open file to the process it was opened for: once that process is
   * gone, reads fail with ESRCH even if its pid now names another process, and
   * re-reading it skips the path lookup of every call.
   */
  readonly #statFds = new Map<PeerInfo, number>()
  /** A pidfd of each connection's caller, where the kernel has pidfds (then no stat file is held). */
  readonly #pidfds = new Map<PeerInfo, number>()
  /** The status file, ids and executable of each connection's caller at accept (real /proc only). */
  readonly #procs = new Map<PeerInfo, ProcState>()
  readonly #holdStatFiles: boolean
  readonly #usePidfds: boolean
  readonly #ownCreds: boolean
  readonly #openProcEvents: () => ProcEventSource
  /** Which callers changed since their last full re-check (undefined: re-read `/proc` on every call). */
  #watcher: PeerChangeWatcher | undefined
  readonly #watches = new Map<PeerInfo, PeerWatch>()
  #fullRechecks = 0
  readonly #resets = new Map<string, ResetBudget>()
  readonly #now: () => number
  readonly #sockets = new Set<net.Socket>()
  readonly #idPrefix = `warrant-peer-${randomBytes(8).toString('hex')}-`
  #nextId = 0
  #server: net.Server | undefined
  #injector: ReturnType<grpc.Server['createConnectionInjector']> | undefined
  readonly #guard: ConnectionGuard

  constructor(opts: PeerTrackingServerOptions) {
    this.#guard = new ConnectionGuard({
      ...DEFAULT_WORKLOAD_API_LIMITS,
      ...opts.connectionLimits,
      listener: 'workload_api',
      peerKind: 'uid',
      log: opts.log,
      ...(opts.registry ? { registry: opts.registry } : {}),
    })
    this.socketPath = opts.socketPath
    this.#grpcServer = opts.grpcServer
    this.#log = opts.log
    this.#readStartTime = opts.readStartTime ?? ((pid) => readProcessStartTime(pid))
    this.#holdStatFiles = opts.readStartTime === undefined
    this.#usePidfds = opts.pidfds !== false
    this.#getPeerCred = opts.getPeerCred ?? getSocketPeerCred
    this.#ownCreds = opts.getPeerCred === undefined
    this.#now = opts.now ?? (() => performance.now())
    this.#openProcEvents = opts.openProcEvents ?? (() => openKernelProcEvents(loadPeerCredAddon()))
  }

  /** Full re-reads of a caller's `/proc` status and executable so far (the others were a liveness check only). */
  get fullRechecks(): number {
    return this.#fullRechecks
  }

  /** Whether the kernel's process events tell which callers changed (else every call re-reads `/proc`). */
  get watchesProcEvents(): boolean {
    return this.#watcher !== undefined
  }

  /** Number of connections currently tracked. */
  get connectionCount(): number {
    return this.#peers.size
  }

  /**
   * Creates the socket directory (0755) if it does not exist, removes a stale socket file
   * (only if it is a socket), listens, and makes the socket world-connectable (0777).
   */
  async listen(): Promise<void> {
    if (this.#server !== undefined) throw new TypeError('PeerTrackingServer is already listening')
    if (this.#getPeerCred === getSocketPeerCred) loadPeerCredAddon() // fail fast when the addon is missing
    const dir = dirname(this.socketPath)
    // A directory we create gets 0755 regardless of umask; an existing one
    // (which may be shared, such as /tmp) is left as it is.
    if (mkdirSync(dir, { recursive: true, mode: 0o755 }) !== undefined) chmodSync(dir, 0o755)
    removeStaleSocket(this.socketPath)

    if (this.#holdStatFiles) this.#startWatcher()
    this.#injector = this.#guard.createInjector(this.#grpcServer, grpc.ServerCredentials.createInsecure())
    const server = net.createServer((socket) => this.#onConnection(socket))
    this.#server = server
    try {
      await new Promise<void>((resolve, reject) => {
        const onError = (err: Error) => reject(err)
        server.once('error', onError)
        server.listen(this.socketPath, () => {
          server.off('error', onError)
          resolve()
        })
      })
    } catch (err) {
      this.#watcher?.close()
      this.#watcher = undefined
      throw err
    }
    chmodSync(this.socketPath, 0o777)
    server.on('error', (err) => this.#log.error({ [F.ERR]: err, [F.PATH]: this.socketPath }, 'Workload socket error'))
  }

  /** Subscribes to the kernel's process events; without them, logs once and re-reads `/proc` on every call. */
  #startWatcher(): void {
    let source: ProcEventSource
    try {
      source = this.#openProcEvents()
    } catch (err) {
      this.#log.info(
        { [F.ERR]: err },
        "Kernel process events unavailable (proc connector); the Workload API re-reads each caller's /proc status and executable on every call",
      )
      return
    }
    this.#watcher = new PeerChangeWatcher(source, (err) =>
      this.#log.warn({ [F.ERR]: err }, "Kernel process events failed; the Workload API now re-reads each caller's /proc status and executable on every call"),
    )
  }

  #onConnection(socket: net.Socket): void {
    let cred: PeerCred
    let startTime: string | undefined
    let statFd: number | undefined
    let pidfd: number | undefined
    let proc: ProcState | undefined
    let watch: PeerWatch | undefined
    let gone = false
    const release = () => {
      if (statFd !== undefined) closeSync(statFd)
      if (pidfd !== undefined) closeSync(pidfd)
      if (proc !== undefined) closeSync(proc.statusFd)
      if (watch !== undefined) this.#watcher?.unregister(watch)
      statFd = pidfd = proc = watch = undefined
    }
    try {
      cred = this.#getPeerCred(socket)
      if (this.#holdStatFiles) {
        // Before the first read of its /proc: any exec or id change of the caller after that read is then reported against it.
        watch = this.#watcher?.register(cred.pid)
        try {
          pidfd = this.#usePidfds ? openCallerPidfd(cred.pid, this.#ownCreds ? socket : undefined) : undefined
        } catch (err) {
          if ((err as NodeJS.ErrnoException).code !== 'ESRCH') throw err
          gone = true // refused below
        }
        if (!gone) statFd = openProcStat(cred.pid)
        // Read before the liveness check below, so that they are known to be the caller's.
        if (!gone) proc = openProcState(cred)
      }
      if (gone) startTime = undefined
      else if (statFd === undefined) startTime = this.#readStartTime(cred.pid)
      else {
        try {
          startTime = readStartTimeFd(statFd)
        } catch {
          startTime = undefined
        }
      }
      if (pidfd !== undefined && statFd !== undefined) {
        // The stat file was opened by pid: it is the caller's if the caller was still running after it was read.
        if (loadPeerCredAddon().pidfdExited!(pidfd)) startTime = undefined
        closeSync(statFd) // the pidfd answers the re-checks
        statFd = undefined
      } else if (pidfd !== undefined) {
        closeSync(pidfd)
        pidfd = undefined
      }
    } catch (err) {
      release()
      this.#log.warn({ [F.ERR]: err }, 'Cannot identify workload connection; closing it')
      socket.destroy()
      return
    }
    if (startTime === undefined) {
      release()
      this.#log.warn({ [F.PID]: cred.pid }, 'Workload exited before its connection was accepted; closing it')
      socket.destroy()
      return
    }
    // Per-uid cap, handshake/idle timeouts, reaping of sessions nghttp2 gave up on (destroys the socket when refused).
    if (!this.#guard.admit(socket, String(cred.uid))) return release()
    const id = this.#idPrefix + String(this.#nextId++)
    const groups = cred.groups ?? proc?.creds.groups ?? []
    const peer: PeerInfo = { id, pid: cred.pid, uid: cred.uid, gid: cred.gid, startTime, groups }
    this.#peers.set(id, peer)
    if (proc !== undefined) this.#procs.set(peer, proc)
    if (watch !== undefined) this.#watches.set(peer, watch)
    if (statFd !== undefined) this.#statFds.set(peer, statFd)
    if (pidfd !== undefined) this.#pidfds.set(peer, pidfd)
    this.#sockets.add(socket)
    socket.once('close', () => {
      this.#peers.delete(id)
      const fd = this.#statFds.get(peer)
      if (fd !== undefined) {
        this.#statFds.delete(peer)
        closeSync(fd)
      }
      const pfd = this.#pidfds.get(peer)
      if (pfd !== undefined) {
        this.#pidfds.delete(peer)
        closeSync(pfd)
      }
      const ps = this.#procs.get(peer)
      if (ps !== undefined) {
        this.#procs.delete(peer)
        closeSync(ps.statusFd)
      }
      const w = this.#watches.get(peer)
      if (w !== undefined) {
        this.#watches.delete(peer)
        this.#watcher?.unregister(w)
      }
      this.#resets.delete(id)
      this.#sockets.delete(socket)
    })
    // grpc-js reports `${remoteAddress}` as call.getPeer() when remotePort is falsy.
    Object.defineProperty(socket, 'remoteAddress', { value: id, configurable: true, enumerable: true })
    Object.defineProperty(socket, 'remotePort', { value: 0, configurable: true, enumerable: true })
    this.#log.debug({ [F.PID]: peer.pid, [F.UID]: peer.uid, [F.PEER]: id }, 'Workload connected')
    this.#injector?.injectConnection(socket)
  }

  /** The credentials of the connection a call arrived on; ERR_WORKLOAD_ATTESTATION_FAILED if unknown. */
  peerOf(call: { getPeer(): string }): PeerInfo {
    const peer = this.#peers.get(call.getPeer())
    if (peer === undefined) {
      throw new IdentityError('ERR_WORKLOAD_ATTESTATION_FAILED', 'call did not arrive on a tracked connection')
    }
    return peer
  }

  /**
   * Watches a call for a reset by the client (its HTTP/2 stream closing with
   * an RST_STREAM code). When the connection's reset budget ({@link RESET_BURST},
   * refilled at {@link RESET_RATE_PER_S}) is spent, its HTTP/2 session is
   * closed gracefully, before nghttp2's own limit would kill it with an error.
   * Call it when a call starts (the stream leaves its session when it closes).
   */
  watchResets(call: { getPeer(): string }): void {
    const id = call.getPeer()
    if (!this.#peers.has(id)) return
    const stream = http2StreamOfCall(call)
    const session = stream?.session
    if (stream === undefined || session === undefined) return
    stream.once('close', () => {
      if (stream.rstCode !== undefined && stream.rstCode !== 0) this.#onReset(id, session)
    })
  }

  #onReset(id: string, session: NonNullable<ResettableStream['session']>): void {
    const now = this.#now()
    let b = this.#resets.get(id)
    if (b === undefined) {
      b = { tokens: RESET_BURST, at: now, closing: false }
      this.#resets.set(id, b)
    } else {
      b.tokens = Math.min(RESET_BURST, b.tokens + ((now - b.at) / 1000) * RESET_RATE_PER_S)
      b.at = now
    }
    b.tokens -= 1
    if (b.tokens >= 0 || b.closing || session.closed || session.destroyed) return
    b.closing = true
    this.#log.debug({ [F.PEER]: id }, 'Workload connection reset many streams; closing it gracefully')
    session.close() // GOAWAY NO_ERROR; calls in flight finish
  }

  /**
   * The re-check after workload attestation. Throws
   * ERR_WORKLOAD_CREDENTIALS_CHANGED (PermissionDenied) when the process that
   * connected no longer has the real, effective, saved or filesystem uid or
   * gid, or the supplementary groups, it had when it connected, or runs
   * another executable (an execve since connect); ERR_WORKLOAD_ATTESTATION_FAILED
   * when it has exited or its pid now belongs to another process. The ids are
   * read before the liveness check, so they were that process's.
   *
   * With the kernel's process events, `/proc` is read in full only when they
   * name the caller (an exec or an id change since the last full read),
   * after lost events, on a connection's first call and after every
   * attestation (which may have read `/proc` itself); otherwise nothing the
   * events announce has happened to the caller, and only its liveness is
   * checked. A `setgroups()` alone is seen at the next full read (see
   * proc-events.ts). Without the events, every call reads `/proc` in full.
   */
  assertPeerAlive(peer: PeerInfo): void {
    const proc = this.#procs.get(peer)
    if (proc !== undefined) {
      const watch = this.#watcher === undefined ? undefined : this.#watches.get(peer)
      if (watch === undefined) {
        this.#fullRechecks++
        this.#assertUnchanged(peer, proc)
      } else {
        // Drained before the reads: an event queued while reading waits for the next call.
        const { needed, mark } = this.#watcher!.needsRecheck(watch)
        if (needed) {
          this.#fullRechecks++
          this.#assertUnchanged(peer, proc) // throws: the connection stays dirty
          this.#watcher!.checked(watch, mark)
        }
      }
    }
    const pidfd = this.#pidfds.get(peer)
    if (pidfd !== undefined) {
      let exited: boolean
      try {
        exited = loadPeerCredAddon().pidfdExited!(pidfd)
      } catch (cause) {
        throw new IdentityError('ERR_WORKLOAD_ATTESTATION_FAILED', 'cannot re-check caller process', { cause, details: { pid: peer.pid } })
      }
      if (exited) throw new IdentityError('ERR_WORKLOAD_ATTESTATION_FAILED', 'caller process exited during attestation', { details: { pid: peer.pid } })
      return
    }
    let now: string | undefined
    try {
      const fd = this.#statFds.get(peer)
      now = fd === undefined ? this.#readStartTime(peer.pid) : readStartTimeOrGone(fd)
    } catch (cause) {
      throw new IdentityError('ERR_WORKLOAD_ATTESTATION_FAILED', 'cannot re-check caller process', { cause, details: { pid: peer.pid } })
    }
    if (now === undefined) {
      throw new IdentityError('ERR_WORKLOAD_ATTESTATION_FAILED', 'caller process exited during attestation', { details: { pid: peer.pid } })
    }
    if (now !== peer.startTime) {
      throw new IdentityError('ERR_WORKLOAD_ATTESTATION_FAILED', 'caller pid was reused by another process during attestation', {
        details: { pid: peer.pid },
      })
    }
  }

  #assertUnchanged(peer: PeerInfo, proc: ProcState): void {
    let n: number
    try {
      n = statusReader.read(proc.statusFd)
    } catch (cause) {
      if ((cause as NodeJS.ErrnoException).code === 'ESRCH') {
        throw new IdentityError('ERR_WORKLOAD_ATTESTATION_FAILED', 'caller process exited during attestation', { details: { pid: peer.pid } })
      }
      throw new IdentityError('ERR_WORKLOAD_ATTESTATION_FAILED', 'cannot re-check caller process', { cause, details: { pid: peer.pid } })
    }
    if (!sameProcCreds(proc.creds, statusReader.buffer, n)) {
      const now = parseProcCreds(statusReader.buffer, n)
      this.#log.warn(
        {
          [F.PID]: peer.pid,
          [F.UID]: peer.uid,
          [F.PEER]: peer.id,
          at_connect: { uid: peer.uid, gid: peer.gid, groups: peer.groups, ...credsView(proc.creds) },
          now: credsView(now) ?? 'unreadable',
        },
        'Workload credentials changed since it connected; refusing the call',
      )
      throw new IdentityError('ERR_WORKLOAD_CREDENTIALS_CHANGED', 'caller credentials changed since connect', { details: { pid: peer.pid } })
    }
    const exe = exeIdentity(peer.pid)
    if (exe !== proc.exe) {
      this.#log.warn(
        { [F.PID]: peer.pid, [F.UID]: peer.uid, [F.PEER]: peer.id, at_connect: { exe: proc.exe }, now: { exe } },
        'Workload executable changed since it connected; refusing the call',
      )
      throw new IdentityError('ERR_WORKLOAD_CREDENTIALS_CHANGED', 'caller executable changed since connect', { details: { pid: peer.pid } })
    }
  }

  /** Stops accepting, closes every connection and removes the socket file. */
  async close(): Promise<void> {
    const server = this.#server
    if (server === undefined) return
    this.#server = undefined
    const closed = new Promise<void>((resolve) => server.close(() => resolve()))
    this.#injector?.destroy()
    this.#guard.close()
    for (const s of this.#sockets) s.destroy()
    await closed
    for (const fd of this.#statFds.values()) closeSync(fd)
    this.#statFds.clear()
    for (const fd of this.#pidfds.values()) closeSync(fd)
    this.#pidfds.clear()
    for (const p of this.#procs.values()) closeSync(p.statusFd)
    this.#procs.clear()
    this.#watches.clear()
    this.#watcher?.close()
    this.#watcher = undefined
    this.#peers.clear()
    this.#sockets.clear()
    removeStaleSocket(this.socketPath)
  }
}

/** Removes `path` if it is a socket; refuses to remove anything else. */
function removeStaleSocket(path: string): void {
  let st
  try {
    st = lstatSync(path)
  } catch (err) {
    if ((err as NodeJS.ErrnoException).code === 'ENOENT') return
    throw err
  }
  if (!st.isSocket()) {
    throw new IdentityError('ERR_CONFIG_INVALID', `socket path ${path} exists and is not a socket; refusing to remove it`)
  }
  unlinkSync(path)
}
