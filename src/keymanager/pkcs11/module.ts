/**
 * Process-wide registry of loaded PKCS#11 modules. A module is loaded and
 * C_Initialize'd once per path and finalized when its last user releases it,
 * so several key managers (or a manager and a test's raw handle) can share it.
 */
import { existsSync } from 'node:fs'
import pkcs11js from 'pkcs11js'
import { IdentityError } from '../../errors/index.js'

export type Pkcs11 = InstanceType<typeof pkcs11js.PKCS11>
export type Handle = Buffer
export { pkcs11js }

interface Loaded {
  p: Pkcs11
  refs: number
  /** False when someone else (another PKCS11 instance in this process) initialized it: then we never finalize. */
  ownsInit: boolean
}

const loaded = new Map<string, { p: Pkcs11 }>()
const active = new Map<string, Loaded>()

/** The PKCS#11 error name (`CKR_PIN_INCORRECT`), or undefined when `err` is not a PKCS#11 error. */
export function ckrName(err: unknown): string | undefined {
  if (err instanceof Error && /^CKR_[A-Z0-9_]+$/.test(err.message)) return err.message
  return undefined
}

export function isCkr(err: unknown, ...names: string[]): boolean {
  const n = ckrName(err)
  return n !== undefined && names.includes(n)
}

/** Loads and initializes the module at `path` (or takes another reference to it). */
export function acquireModule(path: string): Pkcs11 {
  const a = active.get(path)
  if (a !== undefined) {
    a.refs += 1
    return a.p
  }
  if (!existsSync(path)) {
    throw new IdentityError('ERR_HSM_UNAVAILABLE', `cannot load PKCS#11 module ${path}: no such file`, { details: { path } })
  }
  let entry = loaded.get(path)
  if (entry === undefined) {
    const p = new pkcs11js.PKCS11()
    try {
      p.load(path)
    } catch (cause) {
      throw new IdentityError('ERR_HSM_UNAVAILABLE', `cannot load PKCS#11 module ${path}`, { cause, details: { path } })
    }
    // Kept loaded for the life of the process: unloading and reloading a module is not reliably supported.
    entry = { p }
    loaded.set(path, entry)
  }
  let ownsInit = true
  try {
    entry.p.C_Initialize({ flags: pkcs11js.CKF_OS_LOCKING_OK })
  } catch (cause) {
    if (isCkr(cause, 'CKR_CRYPTOKI_ALREADY_INITIALIZED')) ownsInit = false
    else {
      throw new IdentityError('ERR_HSM_UNAVAILABLE', `cannot initialize PKCS#11 module ${path}: ${ckrName(cause) ?? 'error'}`, {
        cause,
        details: { path },
      })
    }
  }
  active.set(path, { p: entry.p, refs: 1, ownsInit })
  return entry.p
}

/** True when no other user of the module remains after this one. */
export function isLastReference(path: string): boolean {
  return (active.get(path)?.refs ?? 0) <= 1
}

/** Drops a reference; the last one C_Finalize's the module. */
export function releaseModule(path: string): void {
  const a = active.get(path)
  if (a === undefined) return
  a.refs -= 1
  if (a.refs > 0) return
  active.delete(path)
  if (!a.ownsInit) return
  try {
    a.p.C_Finalize()
  } catch {
    // Already finalized: nothing left to release.
  }
}
