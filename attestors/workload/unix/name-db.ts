import { readFile, stat } from 'node:fs/promises'

/**
 * Id → name lookups in a colon-separated account file (`/etc/passwd`,
 * `/etc/group`: `name:password:id:...`). The file is parsed once and parsed
 * again only when its mtime or size changes. The first line for an id wins,
 * as with getpwuid(3). A missing or unreadable file yields no names.
 */
export class NameDb {
  readonly path: string
  #byId = new Map<number, string>()
  #stamp: string | undefined

  constructor(path: string) {
    this.path = path
  }

  #refreshing: Promise<void> | undefined

  async lookup(id: number): Promise<string | undefined> {
    return (await this.snapshot()).get(id)
  }

  /**
   * The current id → name map (checked against the file's stat first).
   * Concurrent callers share one check. Treat the map as read-only.
   */
  async snapshot(): Promise<ReadonlyMap<number, string>> {
    this.#refreshing ??= this.#refresh().finally(() => {
      this.#refreshing = undefined
    })
    await this.#refreshing
    return this.#byId
  }

  async #refresh(): Promise<void> {
    let stamp: string
    try {
      const st = await stat(this.path)
      stamp = `${st.mtimeMs}:${st.size}:${st.ino}`
    } catch {
      this.#byId = new Map()
      this.#stamp = undefined
      return
    }
    if (stamp === this.#stamp) return
    let text: string
    try {
      text = await readFile(this.path, 'utf8')
    } catch {
      return
    }
    this.#byId = parseAccountFile(text)
    this.#stamp = stamp
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
