import { chmodSync, lstatSync, mkdirSync } from 'node:fs'
import { IdentityError } from '../../errors/identity-error.js'

/**
 * Creates a private directory (0700). An existing directory is left as it is
 * (it may be shared, e.g. /tmp: a socket in it is 0600 itself), but it must
 * be a real directory, not a symlink or a file.
 */
export function ensurePrivateDir(dir: string): void {
  let st
  try {
    st = lstatSync(dir)
  } catch {
    mkdirSync(dir, { recursive: true, mode: 0o700 })
    chmodSync(dir, 0o700)
    return
  }
  if (!st.isDirectory()) throw new IdentityError('ERR_CONFIG_INVALID', `${dir} is not a directory`)
}
