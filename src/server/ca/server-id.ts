/**
 * A server's ID among the servers that share one datastore: `server_id` from
 * the config, else the one kept in `<data_dir>/server-id`, made on the first
 * start from the host name and random bytes. Kept in the data directory, it
 * stays the same across restarts and host renames, and two servers (two data
 * directories) never share one. It names the server's CA journal, its keys
 * and its published authorities (ca/manager.ts, ca/shared-bundle.ts).
 */
import { randomBytes } from 'node:crypto'
import { readFileSync } from 'node:fs'
import { hostname } from 'node:os'
import { join } from 'node:path'
import { writeFileAtomic } from '../../common/fs/write-atomic.js'
import { IdentityError } from '../../errors/identity-error.js'

export const SERVER_ID_RE = /^[a-z0-9][a-z0-9-]{0,31}$/
const FILE = 'server-id'

/** The host name's first label, lower-cased, as ID characters (at most 20), or `server`. */
function hostPart(): string {
  const h = (hostname().split('.')[0] ?? '')
    .toLowerCase()
    .replace(/[^a-z0-9-]/g, '-')
    .replace(/^-+|-+$/g, '')
    .slice(0, 20)
    .replace(/-+$/, '')
  return h === '' ? 'server' : h
}

/** Returns `configured` when given, else the data directory's ID (created on first use). */
export function serverIdFor(dataDir: string, configured?: string): string {
  if (configured !== undefined) return configured
  const path = join(dataDir, FILE)
  let stored: string | undefined
  try {
    stored = readFileSync(path, 'utf8').trim()
  } catch (err) {
    if ((err as NodeJS.ErrnoException).code !== 'ENOENT') throw err
  }
  if (stored !== undefined) {
    if (!SERVER_ID_RE.test(stored)) throw new IdentityError('ERR_CONFIG_INVALID', `${path}: not a server id (${SERVER_ID_RE.source})`)
    return stored
  }
  const id = `${hostPart()}-${randomBytes(5).toString('hex')}`
  writeFileAtomic(path, `${id}\n`, 0o600)
  return id
}
