import { IdentityError } from '../errors/index.js'

/**
 * TPM 2.0 response codes (TPM 2.0 Part 2, TPM_RC) and their readable form.
 * Format-0 codes (bit 8 set, bit 7 clear) are `RC_VER1 + n`, warnings are
 * `RC_WARN + n` (bit 11); format-1 codes (bit 7 set) carry the error in
 * bits 0–5 and the handle, session or parameter number in bits 8–11.
 */

export const TPM_RC = {
  SUCCESS: 0x000,
  // format 0 (RC_VER1 = 0x100)
  INITIALIZE: 0x100,
  FAILURE: 0x101,
  SEQUENCE: 0x103,
  PRIVATE: 0x10b,
  HMAC: 0x119,
  DISABLED: 0x120,
  EXCLUSIVE: 0x121,
  AUTH_TYPE: 0x124,
  AUTH_MISSING: 0x125,
  POLICY: 0x126,
  PCR: 0x127,
  PCR_CHANGED: 0x128,
  UPGRADE: 0x12d,
  TOO_MANY_CONTEXTS: 0x12e,
  AUTH_UNAVAILABLE: 0x12f,
  REBOOT: 0x130,
  UNBALANCED: 0x131,
  COMMAND_SIZE: 0x142,
  COMMAND_CODE: 0x143,
  AUTHSIZE: 0x144,
  AUTH_CONTEXT: 0x145,
  NV_RANGE: 0x146,
  NV_SIZE: 0x147,
  NV_LOCKED: 0x148,
  NV_AUTHORIZATION: 0x149,
  NV_UNINITIALIZED: 0x14a,
  NV_SPACE: 0x14b,
  NV_DEFINED: 0x14c,
  BAD_CONTEXT: 0x150,
  CPHASH: 0x151,
  PARENT: 0x152,
  NEEDS_TEST: 0x153,
  NO_RESULT: 0x154,
  SENSITIVE: 0x155,
  // format 1 (RC_FMT1 = 0x080), without position
  ASYMMETRIC: 0x081,
  ATTRIBUTES: 0x082,
  HASH: 0x083,
  VALUE: 0x084,
  HIERARCHY: 0x085,
  KEY_SIZE: 0x087,
  MGF: 0x088,
  MODE: 0x089,
  TYPE: 0x08a,
  HANDLE: 0x08b,
  KDF: 0x08c,
  RANGE: 0x08d,
  AUTH_FAIL: 0x08e,
  NONCE: 0x08f,
  PP: 0x090,
  SCHEME: 0x092,
  SIZE: 0x095,
  SYMMETRIC: 0x096,
  TAG: 0x097,
  SELECTOR: 0x098,
  INSUFFICIENT: 0x09a,
  SIGNATURE: 0x09b,
  KEY: 0x09c,
  POLICY_FAIL: 0x09d,
  INTEGRITY: 0x09f,
  TICKET: 0x0a0,
  RESERVED_BITS: 0x0a1,
  BAD_AUTH: 0x0a2,
  EXPIRED: 0x0a3,
  POLICY_CC: 0x0a4,
  BINDING: 0x0a5,
  CURVE: 0x0a6,
  ECC_POINT: 0x0a7,
  // warnings (RC_WARN = 0x900)
  CONTEXT_GAP: 0x901,
  OBJECT_MEMORY: 0x902,
  SESSION_MEMORY: 0x903,
  MEMORY: 0x904,
  SESSION_HANDLES: 0x905,
  OBJECT_HANDLES: 0x906,
  LOCALITY: 0x907,
  YIELDED: 0x908,
  CANCELED: 0x909,
  TESTING: 0x90a,
  REFERENCE_H0: 0x910,
  REFERENCE_H1: 0x911,
  REFERENCE_H2: 0x912,
  REFERENCE_H3: 0x913,
  REFERENCE_H4: 0x914,
  REFERENCE_H5: 0x915,
  REFERENCE_H6: 0x916,
  REFERENCE_S0: 0x918,
  REFERENCE_S1: 0x919,
  REFERENCE_S2: 0x91a,
  REFERENCE_S3: 0x91b,
  REFERENCE_S4: 0x91c,
  REFERENCE_S5: 0x91d,
  REFERENCE_S6: 0x91e,
  NV_RATE: 0x920,
  LOCKOUT: 0x921,
  RETRY: 0x922,
  NV_UNAVAILABLE: 0x923,
} as const

const NAMES = new Map<number, string>(Object.entries(TPM_RC).map(([k, v]) => [v, `TPM_RC_${k}`]))

export interface DecodedResponseCode {
  rc: number
  /** The code without handle/session/parameter position (equals a TPM_RC value when known). */
  base: number
  /** `TPM_RC_…` or `TPM_RC_UNKNOWN`. */
  name: string
  kind: 'success' | 'format0' | 'format1' | 'warning' | 'vendor' | 'tpm12' | 'tss'
  parameter?: number
  handle?: number
  session?: number
}

export function decodeResponseCode(rc: number): DecodedResponseCode {
  rc = rc >>> 0
  if (rc === 0) return { rc, base: 0, name: 'TPM_RC_SUCCESS', kind: 'success' }
  if (rc > 0xfff) return { rc, base: rc, name: 'TSS_RC_LAYER', kind: 'tss' }
  if (rc & 0x080) {
    const base = 0x080 | (rc & 0x03f)
    const n = (rc >> 8) & 0xf
    const out: DecodedResponseCode = { rc, base, name: NAMES.get(base) ?? 'TPM_RC_UNKNOWN', kind: 'format1' }
    if (rc & 0x040) out.parameter = n
    else if (n & 0x8) out.session = n & 0x7
    else if (n !== 0) out.handle = n
    return out
  }
  if (!(rc & 0x100)) return { rc, base: rc, name: 'TPM12_RC', kind: 'tpm12' }
  if (rc & 0x400) return { rc, base: rc, name: 'TPM_RC_VENDOR', kind: 'vendor' }
  const kind = rc & 0x800 ? 'warning' : 'format0'
  return { rc, base: rc, name: NAMES.get(rc) ?? 'TPM_RC_UNKNOWN', kind }
}

/** "TPM_RC_INTEGRITY (0x1df) on parameter 1" */
export function formatResponseCode(rc: number): string {
  const d = decodeResponseCode(rc)
  let s = `${d.name} (0x${d.rc.toString(16)})`
  if (d.parameter !== undefined) s += ` on parameter ${d.parameter}`
  if (d.handle !== undefined) s += ` on handle ${d.handle}`
  if (d.session !== undefined) s += ` on session ${d.session}`
  return s
}

/** A TPM command returned a non-success response code. */
export class TpmError extends IdentityError {
  readonly rc: number
  readonly command: string
  readonly decoded: DecodedResponseCode

  constructor(rc: number, command: string) {
    const decoded = decodeResponseCode(rc)
    super('ERR_TPM', `TPM2_${command} failed: ${formatResponseCode(rc)}`, {
      details: { rc: decoded.rc, command, name: decoded.name },
    })
    this.name = 'TpmError'
    this.rc = decoded.rc
    this.command = command
    this.decoded = decoded
  }

  /** The code without its position, comparable with `TPM_RC.*`. */
  get base(): number {
    return this.decoded.base
  }

  is(base: number): boolean {
    return this.decoded.base === base
  }
}

export function isTpmError(err: unknown, base?: number): err is TpmError {
  return err instanceof TpmError && (base === undefined || err.decoded.base === base)
}
