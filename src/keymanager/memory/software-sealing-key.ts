/** A SealingKey over a 256-bit AES key held in this process (memory and disk key managers). */
import { createCipheriv, createDecipheriv, createSecretKey, randomBytes, type KeyObject } from 'node:crypto'
import type { SealingKey } from '../key-manager.js'
import { assertOpenArgs, assertSealArgs, buildEnvelope, parseEnvelope, sealedDataInvalid, SEALED_IV_BYTES, SEALED_TAG_BYTES } from '../sealed-envelope.js'

export const SEALING_KEY_BYTES = 32

export class SoftwareSealingKey implements SealingKey {
  readonly id: string
  readonly #key: KeyObject

  /** `raw` is 32 bytes; the KeyObject made of it is the only copy kept. */
  constructor(id: string, raw: Uint8Array) {
    if (raw.byteLength !== SEALING_KEY_BYTES) throw new RangeError(`a sealing key is ${SEALING_KEY_BYTES} bytes`)
    this.id = id
    this.#key = createSecretKey(raw)
  }

  async seal(plaintext: Uint8Array, aad: Uint8Array): Promise<Uint8Array> {
    assertSealArgs(plaintext, aad)
    const iv = randomBytes(SEALED_IV_BYTES)
    const cipher = createCipheriv('aes-256-gcm', this.#key, iv, { authTagLength: SEALED_TAG_BYTES })
    cipher.setAAD(aad)
    const ct = Buffer.concat([cipher.update(plaintext), cipher.final(), cipher.getAuthTag()])
    return buildEnvelope(iv, ct)
  }

  async open(sealed: Uint8Array, aad: Uint8Array): Promise<Uint8Array> {
    assertOpenArgs(sealed, aad)
    const { iv, ciphertext, tag } = parseEnvelope(this.id, sealed)
    const decipher = createDecipheriv('aes-256-gcm', this.#key, iv, { authTagLength: SEALED_TAG_BYTES })
    decipher.setAuthTag(tag)
    decipher.setAAD(aad)
    // update() hands out plaintext before the tag is checked: it is returned only once final() accepted the tag.
    const head = decipher.update(ciphertext)
    let tail: Buffer
    try {
      tail = decipher.final()
    } catch (cause) {
      head.fill(0)
      throw sealedDataInvalid(this.id, 'authentication_failed', cause)
    }
    const pt = tail.length === 0 ? head : Buffer.concat([head, tail])
    return new Uint8Array(pt.buffer, pt.byteOffset, pt.byteLength)
  }

  /** Never serialise the key through JSON or util.inspect. */
  toJSON(): { id: string } {
    return { id: this.id }
  }
}

/** A new random sealing key (its raw bytes, to be stored by a disk manager). */
export function newSealingKeyBytes(): Buffer {
  return randomBytes(SEALING_KEY_BYTES)
}
