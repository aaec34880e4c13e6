import { createHash } from 'node:crypto'
import { close, closeSync, fstatSync, openSync, read, readlinkSync, statSync, type BigIntStats } from 'node:fs'
import { IdentityError } from '../../../src/errors/identity-error.js'
import { F, type Logger } from '../../../src/common/log/logger.js'
import type { CallOpts, WorkloadAttestor, WorkloadCaller } from '../../../src/plugin/contracts.js'
import type { UnixAttestorConfig } from './config.js'
import { NAME_DB_RECHECK_MS, NameDb } from './name-db.js'

export interface UnixAttestorOptions extends UnixAttestorConfig {
  log: Logger
  /** For tests: where `/proc` (for `<pid>/exe`), `/etc/passwd` and `/etc/group` are. */
  procRoot?: string
  passwdPath?: string
  groupPath?: string
}

/** Distinct executables whose digests are kept. */
const DIGEST_CACHE_SIZE = 256

/**
 * Linux process attestor. Selector values (the catalog adds `unix:`):
 * `uid:<n>`, `user:<name>`, `gid:<n>`, `group:<name>`,
 * `supplementary_gid:<n>`, `supplementary_group:<name>`, and with
 * discover_workload_path `path:<exe>` and `sha256:<hex>`.
 *
 * The ids are those the kernel recorded when the caller connected (the
 * effective uid and gid from SO_PEERCRED, the supplementary groups from
 * SO_PEERGROUPS), never a later read of `/proc/<pid>/status`: a process can
 * change its ids after connecting (exec of a setuid binary) while another
 * process (a forked child) makes the calls. The agent refuses a call whose
 * connecting process changed ids or executable since connect, so the
 * executable read here through `/proc/<pid>/exe` is the one that connected.
 */
export class UnixWorkloadAttestor implements WorkloadAttestor {
  readonly #cfg: UnixAttestorConfig
  readonly #log: Logger
  readonly #procRoot: string
  readonly #users: NameDb
  readonly #groups: NameDb
  /** sha256 hex by `dev:ino:size:mtime:ctime` of the executable, least recently used first. */
  readonly #digests = new Map<string, string>()
  /**
   * Selectors come from the connection's kernel credentials (fixed), the
   * executable (the agent refuses a call once it differs from the one at
   * connect, and a running executable cannot be written: ETXTBSY) and the
   * account files, whose names are themselves re-read at most every
   * NAME_DB_RECHECK_MS. Reusing them that long adds no staleness beyond the
   * name lookups' own; a rename of the executable shows in `path:` after it.
   */
  readonly selectorsStableForMs = NAME_DB_RECHECK_MS
  readonly #hashing = new Map<string, Promise<string | undefined>>()

  constructor(opts: UnixAttestorOptions) {
    this.#cfg = { discoverWorkloadPath: opts.discoverWorkloadPath, workloadSizeLimit: opts.workloadSizeLimit }
    this.#log = opts.log
    this.#procRoot = opts.procRoot ?? '/proc'
    this.#users = new NameDb(opts.passwdPath ?? '/etc/passwd')
    this.#groups = new NameDb(opts.groupPath ?? '/etc/group')
  }

  /** Stops watching the account files. */
  async close(): Promise<void> {
    this.#users.close()
    this.#groups.close()
  }

  /**
   * The small reads (the `exe` link, fstat of the executable, passwd/group
   * when they changed) are synchronous on purpose: they are served from kernel
   * memory or the page cache in microseconds, while each asynchronous fs call
   * costs a libuv thread-pool round trip that dominated the first-message
   * latency of a Workload API stream. Only hashing an executable not seen
   * before reads asynchronously.
   */
  async attest(caller: WorkloadCaller, opts: CallOpts = {}): Promise<string[]> {
    const pid = caller.pid
    if (!Number.isInteger(pid) || pid <= 0) throw new RangeError(`invalid pid ${pid}`)
    if (!isId(caller.uid) || !isId(caller.gid) || !caller.groups.every(isId)) throw new RangeError('invalid caller ids')
    // opts.signal is read only where we wait (hashing a new executable): the
    // reads before it are synchronous, and a call context makes its signal lazily.
    const procDir = `${this.#procRoot}/${pid}`
    const ids = caller
    const users = this.#users.current()
    const groups = this.#groups.current()
    const out: string[] = []

    addUnique(out, `uid:${ids.uid}`)
    const user = users.get(ids.uid)
    if (user !== undefined) addUnique(out, `user:${user}`)
    addUnique(out, `gid:${ids.gid}`)
    const group = groups.get(ids.gid)
    if (group !== undefined) addUnique(out, `group:${group}`)
    for (const g of ids.groups) {
      addUnique(out, `supplementary_gid:${g}`)
      const name = groups.get(g)
      if (name !== undefined) addUnique(out, `supplementary_group:${name}`)
    }

    if (this.#cfg.discoverWorkloadPath) {
      const exeLink = `${procDir}/exe`
      let path: string
      try {
        path = readlinkSync(exeLink)
      } catch (cause) {
        throw new IdentityError('ERR_WORKLOAD_ATTESTATION_FAILED', `unix: cannot read executable path of process ${pid}`, {
          cause,
          details: { pid },
        })
      }
      addUnique(out, `path:${path}`)
      const digest = await this.#hash(exeLink, pid, opts)
      if (digest !== undefined) addUnique(out, `sha256:${digest}`)
    }
    return out
  }

  /**
   * SHA-256 of the running binary, read through `/proc/<pid>/exe` (the file
   * actually mapped, even if the path was replaced since). Undefined when
   * hashing is off (-1) or the binary exceeds the size limit.
   *
   * Digests are cached by the identity and version of the opened file: device,
   * inode, size, mtime and ctime (fstat of the descriptor we would hash). Any
   * write to the file, a utimes() to hide one, or a replacement changes at
   * least one of them, so a cached digest is always the digest of the
   * current content of that very file. Concurrent callers share one hashing pass.
   */
  #hash(exeLink: string, pid: number, opts: CallOpts): Promise<string | undefined> | undefined {
    const limit = this.#cfg.workloadSizeLimit
    if (limit < 0) return undefined
    // stat() follows the magic link to the very file the process runs; on a
    // cache hit that is all we need. A miss opens it and keys the digest by
    // the fstat of the descriptor actually hashed.
    let st
    try {
      st = statSync(exeLink, { bigint: true })
    } catch (cause) {
      throw new IdentityError('ERR_WORKLOAD_ATTESTATION_FAILED', `unix: cannot open executable of process ${pid}`, { cause, details: { pid } })
    }
    if (limit > 0 && Number(st.size) > limit) {
      this.#log.warn({ [F.PID]: pid, size: Number(st.size), limit }, 'Workload binary exceeds workload_size_limit; sha256 selector skipped')
      return undefined
    }
    const statKey = digestKey(st)
    const hit = this.#digests.get(statKey)
    if (hit !== undefined) {
      // Most recently used last.
      this.#digests.delete(statKey)
      this.#digests.set(statKey, hit)
      return Promise.resolve(hit)
    }
    let fd: number | undefined
    try {
      fd = openSync(exeLink, 'r')
    } catch (cause) {
      throw new IdentityError('ERR_WORKLOAD_ATTESTATION_FAILED', `unix: cannot open executable of process ${pid}`, { cause, details: { pid } })
    }
    try {
      st = fstatSync(fd, { bigint: true })
      const size = Number(st.size)
      if (limit > 0 && size > limit) {
        this.#log.warn({ [F.PID]: pid, size, limit }, 'Workload binary exceeds workload_size_limit; sha256 selector skipped')
        return undefined
      }
      const key = digestKey(st)
      const cached = this.#digests.get(key)
      if (cached !== undefined) {
        // Most recently used last.
        this.#digests.delete(key)
        this.#digests.set(key, cached)
        return Promise.resolve(cached)
      }
      let pending = this.#hashing.get(key)
      if (pending === undefined) {
        const owned = fd
        fd = undefined // the hashing pass owns and closes it
        pending = this.#hashFile(owned, pid, limit).then(
          (digest) => {
            this.#hashing.delete(key)
            if (digest !== undefined) {
              this.#digests.set(key, digest)
              if (this.#digests.size > DIGEST_CACHE_SIZE) this.#digests.delete(this.#digests.keys().next().value!)
            }
            return digest
          },
          (err: unknown) => {
            this.#hashing.delete(key)
            throw new IdentityError('ERR_WORKLOAD_ATTESTATION_FAILED', `unix: cannot read executable of process ${pid}`, {
              cause: err,
              details: { pid },
            })
          },
        )
        this.#hashing.set(key, pending)
      }
      return opts.signal ? raceAbort(pending, opts.signal) : pending
    } finally {
      if (fd !== undefined) closeSync(fd)
    }
  }

  /** Reads and hashes an open file, then closes it. */
  async #hashFile(fd: number, pid: number, limit: number): Promise<string | undefined> {
    try {
      const h = createHash('sha256')
      const buf = Buffer.allocUnsafe(1 << 20)
      let total = 0
      for (;;) {
        const bytesRead = await readAsync(fd, buf)
        if (bytesRead === 0) break
        total += bytesRead
        if (limit > 0 && total > limit) {
          this.#log.warn({ [F.PID]: pid, limit }, 'Workload binary grew past workload_size_limit; sha256 selector skipped')
          return undefined
        }
        h.update(buf.subarray(0, bytesRead))
      }
      return h.digest('hex')
    } finally {
      close(fd, () => {})
    }
  }
}

function isId(v: number): boolean {
  return Number.isInteger(v) && v >= 0 && v <= 0xffffffff
}

function addUnique(out: string[], v: string): void {
  if (!out.includes(v)) out.push(v)
}

function digestKey(st: BigIntStats): string {
  return `${st.dev}:${st.ino}:${st.size}:${st.mtimeNs}:${st.ctimeNs}`
}

function readAsync(fd: number, buf: Buffer): Promise<number> {
  return new Promise((resolve, reject) => read(fd, buf, 0, buf.length, null, (err, n) => (err ? reject(err) : resolve(n))))
}

/** Rejects with the signal's reason when it aborts first (the shared work goes on for other callers). */
function raceAbort<T>(p: Promise<T>, signal: AbortSignal): Promise<T> {
  if (signal.aborted) return Promise.reject(signal.reason as Error)
  return new Promise<T>((resolve, reject) => {
    const onAbort = () => reject(signal.reason as Error)
    signal.addEventListener('abort', onAbort, { once: true })
    p.then(
      (v) => {
        signal.removeEventListener('abort', onAbort)
        resolve(v)
      },
      (e: unknown) => {
        signal.removeEventListener('abort', onAbort)
        reject(e)
      },
    )
  })
}
