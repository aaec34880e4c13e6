import { renameSync, writeFileSync } from 'node:fs'

/** Writes `data` to a temporary file beside `path`, then renames it over `path`: readers see the old or the new content, never a part. */
export function writeFileAtomic(path: string, data: string, mode = 0o644): void {
  const tmp = `${path}.tmp-${process.pid}`
  writeFileSync(tmp, data, { mode })
  renameSync(tmp, path)
}
