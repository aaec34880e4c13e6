/**
 * A witness's record of the latest checkpoint it cosigned per log origin, in
 * one JSON file (mode 0600) replaced atomically: written to a temporary file,
 * fsynced, renamed over the old one, and the directory fsynced, before
 * `put` resolves, so a cosignature is never returned for a state a crash
 * could lose.
 */
import { closeSync, existsSync, fsyncSync, openSync, readFileSync, renameSync, writeSync } from 'node:fs'
import { dirname } from 'node:path'
import { IdentityError } from '../../errors/identity-error.js'
import type { WitnessRecord, WitnessState } from '../witness.js'

export class FileWitnessState implements WitnessState {
  readonly #path: string
  readonly #records: Map<string, WitnessRecord>

  constructor(path: string) {
    this.#path = path
    this.#records = new Map()
    if (existsSync(path)) {
      let raw: unknown
      try {
        raw = JSON.parse(readFileSync(path, 'utf8'))
      } catch (cause) {
        throw new IdentityError('ERR_CONFIG_INVALID', `witness state ${path} is not JSON`, { cause })
      }
      if (raw === null || typeof raw !== 'object' || Array.isArray(raw)) throw new IdentityError('ERR_CONFIG_INVALID', `witness state ${path} is not an object`)
      for (const [origin, r] of Object.entries(raw as Record<string, unknown>)) {
        const rec = r as { size?: unknown; root_hash?: unknown }
        if (!Number.isSafeInteger(rec?.size) || (rec.size as number) < 0 || typeof rec.root_hash !== 'string')
          throw new IdentityError('ERR_CONFIG_INVALID', `witness state ${path}: bad record for ${origin.slice(0, 100)}`)
        this.#records.set(origin, { size: rec.size as number, rootHash: rec.root_hash })
      }
    }
  }

  get(origin: string): WitnessRecord | undefined {
    return this.#records.get(origin)
  }

  put(origin: string, record: WitnessRecord): Promise<void> {
    const next = new Map(this.#records)
    next.set(origin, record)
    const json = `${JSON.stringify(Object.fromEntries([...next].map(([o, r]) => [o, { size: r.size, root_hash: r.rootHash }])), null, 2)}\n`
    const tmp = `${this.#path}.tmp`
    const fd = openSync(tmp, 'w', 0o600)
    try {
      writeSync(fd, json)
      fsyncSync(fd)
    } finally {
      closeSync(fd)
    }
    renameSync(tmp, this.#path)
    const dfd = openSync(dirname(this.#path), 'r')
    try {
      fsyncSync(dfd)
    } finally {
      closeSync(dfd)
    }
    this.#records.set(origin, record)
    return Promise.resolve()
  }
}
