import { IdentityError } from '../errors/index.js'
import type { AttestResult, TpmClient, TpmObjectPublic } from './client.js'
import { TPM_RC, isTpmError } from './errors.js'
import { TPM_NV_INDEX, TPM_RH, TPMA_NV, type TpmtPublic, type TpmtTkCreation } from './structures.js'
import { akTemplate, ekTemplate, srkTemplateEcc } from './templates.js'

/**
 * Agent-side TPM steps for node attestation: read the EK certificate, create
 * the EK, create/load an AK under an SRK and certify its creation. Everything
 * transient they create is flushed unless its handle is returned.
 */

export type TpmKeyKind = 'rsa' | 'ecc'
type CallOpts = { signal?: AbortSignal }

/** NV indices tried for each EK certificate kind, in order. */
export const EK_CERT_NV_INDICES: Record<TpmKeyKind, number[]> = {
  rsa: [TPM_NV_INDEX.EK_CERT_RSA],
  ecc: [TPM_NV_INDEX.EK_CERT_ECC, TPM_NV_INDEX.EK_CERT_ECC_SWTPM],
}

function invalid(message: string): IdentityError {
  return new IdentityError('ERR_TPM_PAYLOAD_INVALID', message)
}

/**
 * The DER certificate inside an EK-certificate NV blob: strips the PC Client
 * prefix `10 01 00 <len16>` when present and any trailing padding after the
 * outer DER SEQUENCE.
 */
export function extractEkCertificateDer(raw: Uint8Array): Uint8Array {
  let body = raw
  if (raw.length >= 5 && raw[0] === 0x10 && raw[1] === 0x01 && raw[2] === 0x00) {
    const len = (raw[3]! << 8) | raw[4]!
    if (5 + len > raw.length) throw invalid('EK certificate NV prefix declares more bytes than stored')
    body = raw.subarray(5, 5 + len)
  }
  if (body.length < 2 || body[0] !== 0x30) throw invalid('EK certificate NV data is not a DER certificate')
  const first = body[1]!
  let header = 2
  let len: number
  if (first < 0x80) {
    len = first
  } else {
    const n = first & 0x7f
    if (n === 0 || n > 3 || body.length < 2 + n) throw invalid('EK certificate has an invalid DER length')
    len = 0
    for (let i = 0; i < n; i++) len = len * 256 + body[2 + i]!
    header += n
  }
  if (header + len > body.length) throw invalid('EK certificate is truncated')
  return body.slice(0, header + len)
}

/** Reads and unwraps one NV certificate; undefined when the index does not exist or was never written. */
export async function readNvCertificate(client: TpmClient, nvIndex: number, opts?: CallOpts): Promise<Uint8Array | undefined> {
  let size: number
  try {
    const { nvPublic } = await client.nvReadPublic(nvIndex, opts)
    if ((nvPublic.attributes & TPMA_NV.written) === 0) return undefined
    size = nvPublic.dataSize
  } catch (err) {
    if (isTpmError(err, TPM_RC.HANDLE)) return undefined
    throw err
  }
  const raw = await client.nvRead(nvIndex, { ...opts, size })
  return extractEkCertificateDer(raw)
}

/**
 * The DER EK certificate for `kind` from its TCG NV index (RSA 0x01c00002;
 * ECC 0x01c0000a, then 0x01c00016 where swtpm 0.7 stores its P-384 EK cert),
 * or undefined when none is provisioned. The certificate's key must still be
 * compared with the EK actually used.
 */
export async function readEkCertificate(client: TpmClient, kind: TpmKeyKind, opts?: CallOpts): Promise<Uint8Array | undefined> {
  for (const idx of EK_CERT_NV_INDICES[kind]) {
    const der = await readNvCertificate(client, idx, opts)
    if (der !== undefined) return der
  }
  return undefined
}

export interface EkHandle extends TpmObjectPublic {
  handle: number
  name: Uint8Array
}

/** CreatePrimary(ENDORSEMENT) with the TCG default template (RSA L-1 / ECC P-256 L-2). The caller flushes `handle`. */
export async function createEk(
  client: TpmClient,
  kind: TpmKeyKind,
  opts?: CallOpts & { template?: TpmtPublic; endorsementAuth?: Uint8Array },
): Promise<EkHandle> {
  const r = await client.createPrimary(TPM_RH.ENDORSEMENT, opts?.template ?? ekTemplate(kind), {
    ...(opts?.signal === undefined ? {} : { signal: opts.signal }),
    ...(opts?.endorsementAuth === undefined ? {} : { hierarchyAuth: opts.endorsementAuth }),
  })
  return { handle: r.handle, name: r.name, public: r.public, publicBytes: r.publicBytes }
}

/** Runs `fn` with a freshly created EK and flushes it afterwards. */
export async function withEk<R>(client: TpmClient, kind: TpmKeyKind, fn: (ek: EkHandle) => Promise<R>, opts?: CallOpts): Promise<R> {
  return client.withFlush(createEk(client, kind, opts), fn, opts)
}

export interface AkCreation extends TpmObjectPublic {
  /** Loaded AK; the caller flushes it (or uses `withAk`). */
  handle: number
  name: Uint8Array
  /** TPM2B_PRIVATE content, to reload the AK later with `loadAk`. */
  private: Uint8Array
  creationData: Uint8Array
  creationHash: Uint8Array
  ticket: TpmtTkCreation
  /** TPM2_CertifyCreation by the AK over its own creation. */
  certifyCreation: AttestResult
}

async function withSrk<R>(client: TpmClient, fn: (srk: number) => Promise<R>, opts?: CallOpts): Promise<R> {
  return client.withFlush(client.createPrimary(TPM_RH.OWNER, srkTemplateEcc(), opts ?? {}), (srk) => fn(srk.handle), opts)
}

/**
 * Creates a restricted signing AK (ECC P-256 ECDSA-SHA256 or RSA-2048
 * RSASSA-SHA256) under the ECC SRK, loads it, and has it certify its own
 * creation (with `qualifyingData`, e.g. a server nonce). The SRK is flushed;
 * the AK stays loaded and is returned.
 */
export async function createAk(
  client: TpmClient,
  kind: TpmKeyKind = 'ecc',
  opts?: CallOpts & { qualifyingData?: Uint8Array; template?: TpmtPublic },
): Promise<AkCreation> {
  const co = opts?.signal === undefined ? undefined : { signal: opts.signal }
  const { created, loaded } = await withSrk(
    client,
    async (srk) => {
      const created = await client.create(srk, opts?.template ?? akTemplate(kind), co)
      const loaded = await client.load(srk, created.private, created.publicBytes, co)
      return { created, loaded }
    },
    co,
  )
  try {
    const certifyCreation = await client.certifyCreation(
      loaded.handle,
      loaded.handle,
      opts?.qualifyingData ?? new Uint8Array(0),
      created.creationHash,
      created.ticket,
      co,
    )
    return {
      handle: loaded.handle,
      name: loaded.name,
      public: created.public,
      publicBytes: created.publicBytes,
      private: created.private,
      creationData: created.creationData,
      creationHash: created.creationHash,
      ticket: created.ticket,
      certifyCreation,
    }
  } catch (err) {
    await client.flushContext(loaded.handle, co).catch(() => undefined)
    throw err
  }
}

/** Reloads an AK from `createAk`'s private/public blobs under a re-created SRK (flushed). The caller flushes the AK. */
export async function loadAk(
  client: TpmClient,
  blobs: { private: Uint8Array; publicBytes: Uint8Array },
  opts?: CallOpts,
): Promise<{ handle: number; name: Uint8Array }> {
  return withSrk(client, (srk) => client.load(srk, blobs.private, blobs.publicBytes, opts ?? {}), opts)
}

/** Runs `fn` with a freshly created AK and flushes it afterwards. */
export async function withAk<R>(
  client: TpmClient,
  kind: TpmKeyKind,
  fn: (ak: AkCreation) => Promise<R>,
  opts?: CallOpts & { qualifyingData?: Uint8Array },
): Promise<R> {
  return client.withFlush(createAk(client, kind, opts), fn, opts)
}
