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

  async lookup(id: number): Promise<string | undefined> {
    await this.#refresh()
    return this.#byId.get(id)
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
