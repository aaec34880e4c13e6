/** TPM_ALG_ID values of the hash algorithms the verifier supports, and their node:crypto names. */
export type TpmHashName = 'sha1' | 'sha256' | 'sha384' | 'sha512'

export const TPM_ALG_SHA1 = 0x0004
export const TPM_ALG_SHA256 = 0x000b
export const TPM_ALG_SHA384 = 0x000c
export const TPM_ALG_SHA512 = 0x000d

const BY_ID: ReadonlyMap<number, { name: TpmHashName; size: number }> = new Map([
  [TPM_ALG_SHA1, { name: 'sha1', size: 20 }],
  [TPM_ALG_SHA256, { name: 'sha256', size: 32 }],
  [TPM_ALG_SHA384, { name: 'sha384', size: 48 }],
  [TPM_ALG_SHA512, { name: 'sha512', size: 64 }],
])

const BY_NAME: ReadonlyMap<TpmHashName, number> = new Map([...BY_ID].map(([id, h]) => [h.name, id]))

/** The node:crypto name of a TPM hash algorithm ID, or undefined when it is not a supported hash. */
export function hashNameOf(alg: number): TpmHashName | undefined {
  return BY_ID.get(alg)?.name
}

/** Digest size in bytes of a supported TPM hash algorithm ID; RangeError otherwise. */
export function digestSizeOf(alg: number | TpmHashName): number {
  const id = typeof alg === 'number' ? alg : BY_NAME.get(alg)
  const h = id === undefined ? undefined : BY_ID.get(id)
  if (!h) throw new RangeError(`unsupported TPM hash algorithm ${String(alg)}`)
  return h.size
}

/** TPM_ALG_ID of a hash name. */
export function hashAlgId(name: TpmHashName): number {
  const id = BY_NAME.get(name)
  if (id === undefined) throw new RangeError(`unsupported hash ${String(name)}`)
  return id
}

/** Resolves a hash given as TPM_ALG_ID or name to its node:crypto name; RangeError when unsupported. */
export function toHashName(alg: number | TpmHashName): TpmHashName {
  if (typeof alg === 'number') {
    const n = hashNameOf(alg)
    if (!n) throw new RangeError(`unsupported TPM hash algorithm 0x${alg.toString(16)}`)
    return n
  }
  if (!BY_NAME.has(alg)) throw new RangeError(`unsupported hash ${String(alg)}`)
  return alg
}
