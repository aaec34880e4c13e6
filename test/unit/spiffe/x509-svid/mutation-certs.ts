import { createPublicKey, generateKeyPairSync, sign, type KeyObject } from 'node:crypto'
import { expect } from 'vitest'
import { IdentityError } from '../../../../src/errors/identity-error.js'
import { bitString, DER_TRUE, octetString, oid, seq, set, smallInteger, stringValue, TAG, time, tlv } from '../../../../src/spiffe/x509-svid/der.js'

/**
 * Hand-built certificates for the mutation tests of x509-svid (see
 * test/mutation-survivors.md): every field and extension can be set, dropped
 * or malformed on purpose, and the result is signed with a real key so that
 * path validation can still succeed.
 */

export const NOW = new Date(Date.UTC(2026, 5, 1, 12, 0, 0))
export const HOUR = 3600_000

export interface Ext {
  oid: string
  critical?: boolean
  /** Encode `critical FALSE` explicitly (not DER). */
  explicitFalse?: boolean
  /** extnValue contents. */
  value: Uint8Array
}

export const OIDS = {
  SKI: '2.5.29.14',
  KU: '2.5.29.15',
  SAN: '2.5.29.17',
  BC: '2.5.29.19',
  AKI: '2.5.29.35',
  EKU: '2.5.29.37',
} as const

export const KU_BITS = {
  digitalSignature: 0x80,
  keyEncipherment: 0x20,
  keyAgreement: 0x08,
  keyCertSign: 0x04,
  cRLSign: 0x02,
} as const

export function ext(o: string, value: Uint8Array, critical = false): Ext {
  return { oid: o, value, critical }
}

/** SubjectAltName value: URIs ([6]) and DNS names ([2]) in that order, then any raw GeneralNames. */
export function sanValue(uris: string[], dns: string[] = [], raw: Uint8Array[] = []): Buffer {
  return seq(...uris.map((u) => tlv(0x86, Buffer.from(u, 'latin1'))), ...dns.map((d) => tlv(0x82, Buffer.from(d, 'latin1'))), ...raw)
}

export function bcValue(ca: boolean, pathLen?: number): Buffer {
  return seq(...(ca ? [DER_TRUE] : []), ...(pathLen === undefined ? [] : [smallInteger(pathLen)]))
}

/** KeyUsage BIT STRING from the first byte (and an optional second byte). */
export function kuValue(first: number, second?: number): Buffer {
  return tlv(TAG.BIT_STRING, Uint8Array.of(0, first, ...(second === undefined ? [] : [second])))
}

export function name(o: string): Buffer {
  return seq(set(seq(oid('2.5.4.10'), stringValue(TAG.UTF8_STRING, o))))
}
export const EMPTY_NAME = seq()

export interface CertOptions {
  /** The key certified. */
  publicKey: KeyObject
  /** The key that signs (the issuer's private key; self-signed when it is the subject's). */
  signingKey: KeyObject
  issuer: Uint8Array
  subject: Uint8Array
  notBefore?: Date
  notAfter?: Date
  extensions?: Ext[]
  /** Omit the version field (v1) when 1; default 3. */
  version?: number
  serial?: number
  /** The AlgorithmIdentifier written in both places (default: ECDSA or RSA with SHA-256 by the signing key). */
  algorithm?: Uint8Array
}

const DER_FALSE = Buffer.from([0x01, 0x01, 0x00])
const ECDSA_SHA256 = seq(oid('1.2.840.10045.4.3.2'))
const RSA_SHA256 = seq(oid('1.2.840.113549.1.1.11'), Buffer.from([0x05, 0x00]))

export function certificate(o: CertOptions): Uint8Array {
  const alg = o.algorithm ?? (o.signingKey.asymmetricKeyType === 'ec' ? ECDSA_SHA256 : RSA_SHA256)
  const version = o.version ?? 3
  const exts = o.extensions ?? []
  const tbs = seq(
    ...(version === 1 ? [] : [tlv(0xa0, smallInteger(version - 1))]),
    smallInteger(o.serial ?? 1 + Math.floor(Math.random() * 1e9)),
    alg,
    o.issuer,
    seq(time(o.notBefore ?? new Date(NOW.getTime() - HOUR)), time(o.notAfter ?? new Date(NOW.getTime() + HOUR))),
    o.subject,
    o.publicKey.export({ type: 'spki', format: 'der' }),
    ...(exts.length === 0
      ? []
      : [tlv(0xa3, seq(...exts.map((e) => seq(oid(e.oid), ...(e.critical ? [DER_TRUE] : e.explicitFalse ? [DER_FALSE] : []), octetString(e.value)))))]),
  )
  const sig = sign('sha256', tbs, o.signingKey)
  return new Uint8Array(seq(tbs, alg, bitString(sig)))
}

export interface Ca {
  der: Uint8Array
  name: Buffer
  privateKey: KeyObject
  publicKey: KeyObject
}

export function ecKey(curve = 'P-256'): { privateKey: KeyObject; publicKey: KeyObject } {
  const { privateKey } = generateKeyPairSync('ec', { namedCurve: curve })
  return { privateKey, publicKey: createPublicKey(privateKey) }
}

/** A CA certificate (basicConstraints cA, keyUsage keyCertSign|cRLSign unless `extensions` is given). */
export function ca(label: string, parent?: Ca, o: { extensions?: Ext[]; pathLen?: number; notAfter?: Date } = {}): Ca {
  const k = ecKey()
  const n = name(label)
  const der = certificate({
    publicKey: k.publicKey,
    signingKey: parent?.privateKey ?? k.privateKey,
    issuer: parent?.name ?? n,
    subject: n,
    notBefore: new Date(NOW.getTime() - 24 * HOUR),
    notAfter: o.notAfter ?? new Date(NOW.getTime() + 24 * HOUR),
    extensions: o.extensions ?? [ext(OIDS.BC, bcValue(true, o.pathLen), true), ext(OIDS.KU, kuValue(KU_BITS.keyCertSign | KU_BITS.cRLSign), true)],
  })
  return { der, name: n, ...k }
}

export const LEAF_KEY = ecKey()
export const ID = 'spiffe://example.org/ns/web'

/** The standard leaf extensions, each replaceable by oid; `null` drops one. */
export function leafExtensions(over: Partial<Record<'SAN' | 'BC' | 'KU', Ext | null>> = {}): Ext[] {
  const base: Record<'SAN' | 'BC' | 'KU', Ext | null> = {
    SAN: ext(OIDS.SAN, sanValue([ID]), false),
    BC: ext(OIDS.BC, bcValue(false), true),
    KU: ext(OIDS.KU, kuValue(KU_BITS.digitalSignature), true),
    ...over,
  }
  return [base.SAN, base.BC, base.KU].filter((e): e is Ext => e !== null)
}

export function leaf(
  issuer: Ca,
  o: { extensions?: Ext[]; subject?: Uint8Array; notBefore?: Date; notAfter?: Date; version?: number; publicKey?: KeyObject } = {},
): Uint8Array {
  return certificate({
    publicKey: o.publicKey ?? LEAF_KEY.publicKey,
    signingKey: issuer.privateKey,
    issuer: issuer.name,
    subject: o.subject ?? name('leaf'),
    ...(o.notBefore ? { notBefore: o.notBefore } : {}),
    ...(o.notAfter ? { notAfter: o.notAfter } : {}),
    ...(o.version ? { version: o.version } : {}),
    extensions: o.extensions ?? leafExtensions(),
  })
}

export interface Refusal {
  code: string
  message: string
  cause: unknown
  details: Readonly<Record<string, unknown>> | undefined
}

/** The IdentityError `fn` throws (fails the test if it returns or throws something else). */
export function refusal(fn: () => unknown): Refusal {
  let thrown: unknown
  try {
    fn()
  } catch (err) {
    thrown = err
  }
  return asRefusal(thrown)
}

export async function refusalOf(p: Promise<unknown>): Promise<Refusal> {
  let thrown: unknown
  try {
    await p
  } catch (err) {
    thrown = err
  }
  return asRefusal(thrown)
}

function asRefusal(thrown: unknown): Refusal {
  expect(thrown).toBeInstanceOf(IdentityError)
  const e = thrown as IdentityError
  return { code: e.code, message: e.message, cause: e.cause, details: e.details }
}
