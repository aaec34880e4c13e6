import { readFileSync, statSync } from 'node:fs'

/**
 * Id → name lookups in a colon-separated account file (`/etc/passwd`,
 * `/etc/group`: `name:password:id:...`). The file is parsed once and parsed
 * again only when its mtime, size or inode changes. The first line for an id wins,
 * as with getpwuid(3). A missing or unreadable file yields no names.
 */
export class NameDb {
  readonly path: string
  #byId = new Map<number, string>()
  /** mtime, size and inode of the parsed file; mtimeMs is NaN when nothing was parsed. */
  #mtimeMs = Number.NaN
  #size = -1
  #ino = -1

  constructor(path: string) {
    this.path = path
  }

  async lookup(id: number): Promise<string | undefined> {
    return this.current().get(id)
  }

  /**
   * The current id → name map, re-parsed only when the file's stat changed.
   * Synchronous: a stat of a small local file is cheaper than a thread-pool
   * round trip. Treat the map as read-only.
   */
  current(): ReadonlyMap<number, string> {
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
