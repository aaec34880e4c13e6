import { readFileSync, statSync, watch, type FSWatcher } from 'node:fs'
import { basename, dirname } from 'node:path'

/** Without a change event, the file's stat is still checked at least this often. */
export const NAME_DB_RECHECK_MS = 1_000

export interface NameDbOptions {
  /**
   * Watch the file's directory (inotify) and check the file's stat only after
   * a change event there, or {@link NAME_DB_RECHECK_MS} after the last check.
   * Off: every lookup checks the stat. Default on.
   */
  watch?: boolean
  /** Milliseconds between stat checks when no event arrived (tests). */
  recheckMs?: number
  /** Clock (tests). */
  now?: () => number
}

/**
 * Id → name lookups in a colon-separated account file (`/etc/passwd`,
 * `/etc/group`: `name:password:id:...`). The file is parsed once and parsed
 * again only when its mtime, size or inode changes. The first line for an id
 * wins, as with getpwuid(3). A missing or unreadable file yields no names.
 *
 * Workload attestation looks names up on every call, so the stat is not
 * repeated per call: the directory is watched (account tools replace the
 * file by renaming a new one over it, which a watch on the file itself would
 * miss), any event there marks the file for a stat check, and a check is made
 * anyway once {@link NAME_DB_RECHECK_MS} has passed (a symlinked file, or an
 * event lost to a full inotify queue). Where the directory cannot be watched,
 * every lookup checks the stat. (nscd, for comparison, keeps passwd answers
 * for 600 s.)
 */
export class NameDb {
  readonly path: string
  #byId = new Map<number, string>()
  /** mtime, size and inode of the parsed file; mtimeMs is NaN when nothing was parsed. */
  #mtimeMs = Number.NaN
  #size = -1
  #ino = -1
  readonly #watch: boolean
  readonly #recheckMs: number
  readonly #now: () => number
  #watcher: FSWatcher | undefined
  /** True while the watch is established and no event arrived since the last stat check. */
  #clean = false
  #checkedAt = Number.NEGATIVE_INFINITY
  #noWatch = false

  constructor(path: string, opts: NameDbOptions = {}) {
    this.path = path
    this.#watch = opts.watch ?? true
    this.#recheckMs = opts.recheckMs ?? NAME_DB_RECHECK_MS
    this.#now = opts.now ?? (() => performance.now())
  }

  async lookup(id: number): Promise<string | undefined> {
    return this.current().get(id)
  }

  /**
   * The current id → name map. Synchronous: a stat of a small local file is
   * cheaper than a thread-pool round trip. Treat the map as read-only.
   */
  current(): ReadonlyMap<number, string> {
    const now = this.#now()
    if (this.#clean && now - this.#checkedAt < this.#recheckMs) return this.#byId
    if (this.#watch && this.#watcher === undefined && !this.#noWatch) this.#startWatch()
    // Cleared before the check: an event during it marks the file again.
    this.#clean = this.#watcher !== undefined
    this.#checkedAt = now
    return this.#check()
  }

  /** Stops watching (further lookups check the stat every time). */
  close(): void {
    this.#noWatch = true
    this.#clean = false
    this.#watcher?.close()
    this.#watcher = undefined
  }

  #startWatch(): void {
    const name = basename(this.path)
    let w: FSWatcher
    try {
      w = watch(dirname(this.path), { persistent: false }, (_event, file) => {
        if (file === null || file === name) this.#clean = false
      })
    } catch {
      this.#noWatch = true // no watch here (missing directory, inotify limit): check every time
      return
    }
    w.on('error', () => {
      w.close()
      if (this.#watcher === w) this.#watcher = undefined
      this.#clean = false
      this.#noWatch = true
    })
    this.#watcher = w
  }

  #check(): ReadonlyMap<number, string> {
    let st
    try {
      st = statSync(this.path, { throwIfNoEntry: false })
    } catch {
      st = undefined
    }
    if (st === undefined) {
      this.#byId = new Map()
      this.#mtimeMs = Number.NaN
      return this.#byId
    }
    if (st.mtimeMs === this.#mtimeMs && st.size === this.#size && st.ino === this.#ino) return this.#byId
    let text: string
    try {
      text = readFileSync(this.path, 'utf8')
    } catch {
      this.#clean = false
      return this.#byId
    }
    this.#byId = parseAccountFile(text)
    this.#mtimeMs = st.mtimeMs
    this.#size = st.size
    this.#ino = st.ino
    return this.#byId
  }
}

/** Parses `name:x:id:...` lines; skips comments, blank and malformed lines. */
export function parseAccountFile(text: string): Map<number, string> {
  const out = new Map<number, string>()
  for (const line of text.split('\n')) {
    if (line === '' || line.startsWith('#')) continue
    const parts = line.split(':')
    const name = parts[0]
    const idText = parts[2]
    if (!name || idText === undefined || !/^\d+$/.test(idText)) continue
    const id = Number(idText)
    if (!out.has(id)) out.set(id, name)
  }
  return out
}
