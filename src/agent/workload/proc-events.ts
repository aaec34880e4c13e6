/**
 * When a Workload API caller may have changed: the kernel's process events
 * (the proc connector, `native/peercred.c`), so that the agent re-reads a
 * caller's `/proc/<pid>/status` and executable only when something happened
 * to that process instead of on every call.
 *
 * The kernel sends PROC_EVENT_EXEC from inside `execve` (after the new image
 * and credentials are in place, before the call returns) and PROC_EVENT_UID /
 * PROC_EVENT_GID from `commit_creds`, for every change of a real, effective,
 * saved or filesystem id (setuid-family calls, and the credentials of a
 * setuid or setgid exec). So once such a call has returned, its event is in
 * our socket's queue and the next drain sees it, or sees that events were
 * lost (ENOBUFS), and then every connection is treated as changed.
 *
 * What the events do not announce: `setgroups()` (see the README's security
 * notes for why that is safe), and a change whose system call has not
 * returned yet. The latter cannot help the changing process itself (it is
 * inside the call), and reads of `/proc` made by an attestor are re-checked
 * in full after every attestation (`proc-reads.ts`).
 */
import { IdentityError } from '../../errors/index.js'
import { procReadsMark } from './proc-reads.js'

/** What one drain of the kernel's process events found. */
export interface ProcEventsDrain {
  /** Thread group ids (pids) of processes that exec'd or changed a uid or gid, in order, maybe repeated. */
  readonly tgids: readonly number[]
  /** Events were lost (the queue overflowed): any process may have changed. */
  readonly overflow: boolean
}

/** A subscription to the kernel's process events. */
export interface ProcEventSource {
  /** Everything queued since the last drain; never blocks. */
  drain(): ProcEventsDrain
  close(): void
}

interface ProcEventsAddon {
  procEventsOpen?(): number
  procEventsDrain?(fd: number): ProcEventsDrain
  procEventsClose?(fd: number): void
}

/**
 * Subscribes to the kernel's exec, uid and gid events through `addon` (the
 * peercred addon). Throws when the kernel has no proc connector, refuses the
 * subscription (no CAP_NET_ADMIN on kernels before 6.6) or ignores it (an
 * agent outside the initial pid or user namespace: the kernel reports
 * events with respect to those only), or when the addon predates it.
 */
export function openKernelProcEvents(addon: ProcEventsAddon): ProcEventSource {
  const { procEventsOpen, procEventsDrain, procEventsClose } = addon
  if (!procEventsOpen || !procEventsDrain || !procEventsClose) {
    throw new IdentityError('ERR_NOT_CONFIGURED', 'the peercred addon has no process events: rebuild it (`npm rebuild`)')
  }
  const fd = procEventsOpen()
  let open = true
  return {
    drain: () => procEventsDrain(fd),
    close: () => {
      if (!open) return
      open = false
      procEventsClose(fd)
    },
  }
}

/** What the watcher keeps of one connection: its caller's pid and whether its next call must re-read `/proc`. */
export interface PeerWatch {
  readonly pid: number
  /** An event named this pid (or events were lost) since the last full re-check; set at registration. */
  dirty: boolean
  /** The attestation mark of the pid when the last full re-check read `/proc` (`proc-reads.ts`). */
  readsMark: number
}

/**
 * Connections by caller pid, marked dirty when the kernel reports an exec or
 * an id change of that pid (every connection after an overflow). One per
 * Workload API server.
 */
export class PeerChangeWatcher {
  readonly #source: ProcEventSource
  readonly #byPid = new Map<number, PeerWatch[]>()
  readonly #onBroken: (err: unknown) => void
  #broken = false

  /** `onBroken` is told once if a drain fails; from then on every connection counts as changed. */
  constructor(source: ProcEventSource, onBroken: (err: unknown) => void) {
    this.#source = source
    this.#onBroken = onBroken
  }

  /**
   * Starts watching a new connection's caller. Call it before the first read
   * of its `/proc`: an event queued after that read is then attributed to it.
   * The first call on the connection re-reads `/proc` in full (dirty).
   */
  register(pid: number): PeerWatch {
    const w: PeerWatch = { pid, dirty: true, readsMark: procReadsMark(pid) }
    const list = this.#byPid.get(pid)
    if (list === undefined) this.#byPid.set(pid, [w])
    else list.push(w)
    return w
  }

  unregister(w: PeerWatch): void {
    const list = this.#byPid.get(w.pid)
    if (list === undefined) return
    const i = list.indexOf(w)
    if (i >= 0) list.splice(i, 1)
    if (list.length === 0) this.#byPid.delete(w.pid)
  }

  /**
   * Drains the events and tells whether `w`'s caller must be re-read in full
   * now: an event named it, events were lost, the watcher broke, or an
   * attestation read its `/proc` since the last full re-check. After a full
   * re-check that passed, call {@link checked} with `mark`.
   */
  needsRecheck(w: PeerWatch): { needed: boolean; mark: number } {
    this.#drain()
    const mark = procReadsMark(w.pid)
    return { needed: this.#broken || w.dirty || w.readsMark !== mark, mark }
  }

  /** A full re-check of `w`'s caller passed; `mark` is the one {@link needsRecheck} returned before it. */
  checked(w: PeerWatch, mark: number): void {
    w.dirty = false
    w.readsMark = mark
  }

  #drain(): void {
    if (this.#broken) return
    let d: ProcEventsDrain
    try {
      d = this.#source.drain()
    } catch (err) {
      this.#broken = true
      this.#markAll()
      this.#onBroken(err)
      return
    }
    if (d.overflow) this.#markAll()
    for (const tgid of d.tgids) {
      const list = this.#byPid.get(tgid)
      if (list !== undefined) for (const w of list) w.dirty = true
    }
  }

  #markAll(): void {
    for (const list of this.#byPid.values()) for (const w of list) w.dirty = true
  }

  close(): void {
    this.#byPid.clear()
    this.#source.close()
  }
}
