import { randomBytes } from 'node:crypto'
import { setTimeout as delay } from 'node:timers/promises'
import { IdentityError } from '../errors/index.js'
import { TpmError, TPM_RC, isTpmError } from './errors.js'
import { TpmReader, TpmWriter, bytesEqual } from './marshal.js'
import {
  TPM_ALG,
  TPM_CAP,
  TPM_HT,
  TPM_PT,
  TPM_RH,
  TPM_SE,
  TPM_ST,
  decodeTpm2bPublic,
  decodeTpmlDigest,
  decodeTpmlPcrSelection,
  decodeTpmsNvPublic,
  decodeTpmtTkCreation,
  encodeTpm2bPublic,
  encodeTpm2bSensitiveCreate,
  encodeTpmtPublic,
  hashDigestSize,
  parseTpmsAttest,
  parseTpmtSignature,
  pcrSelectIndices,
  pcrSelection,
  tpmtPublicName,
  writeScheme,
  writeTpmlPcrSelection,
  writeTpmtTkCreation,
  type PcrBankSelection,
  type TpmlPcrSelection,
  type TpmsAttest,
  type TpmsNvPublic,
  type TpmtPublic,
  type TpmtScheme,
  type TpmtSignature,
  type TpmtTkCreation,
} from './structures.js'
import type { TpmTransport } from './transport.js'

/** Command codes used by the client. */
export const TPM_CC = {
  EvictControl: 0x120,
  CertifyCreation: 0x14a,
  Create: 0x153,
  CreatePrimary: 0x131,
  PCR_Reset: 0x13d,
  Startup: 0x144,
  ActivateCredential: 0x147,
  NV_Read: 0x14e,
  PolicySecret: 0x151,
  Load: 0x157,
  Quote: 0x158,
  FlushContext: 0x165,
  NV_ReadPublic: 0x169,
  ReadPublic: 0x173,
  StartAuthSession: 0x176,
  GetCapability: 0x17a,
  PCR_Read: 0x17e,
  PCR_Extend: 0x182,
} as const

type CallOpts = { signal?: AbortSignal }

/** A command authorisation: a password (the TPM_RS_PW session) or a session handle. */
export type TpmAuth = { password: Uint8Array } | { session: number; continueSession?: boolean }
const EMPTY = new Uint8Array(0)
const PW: TpmAuth = { password: EMPTY }

export interface TpmClientOptions {
  /** Retries on TPM_RC_RETRY / YIELDED / TESTING (default 5). */
  retries?: number
  /** First back-off delay in ms, doubled per retry (default 20). */
  retryDelayMs?: number
  /** sizeofSelect for PCR selections built from `{hash, pcrs}` (default 3, 24 PCRs). */
  pcrSelectSize?: number
}

export interface PcrValue {
  hash: number
  pcr: number
  digest: Uint8Array
}

export interface TpmObjectPublic {
  /** The decoded TPMT_PUBLIC. */
  public: TpmtPublic
  /** TPMT_PUBLIC bytes (the content of TPM2B_PUBLIC); the Name hashes these. */
  publicBytes: Uint8Array
}

export interface CreatePrimaryResult extends TpmObjectPublic {
  handle: number
  name: Uint8Array
  /** TPMS_CREATION_DATA bytes (creationHash = H_nameAlg(creationData)). */
  creationData: Uint8Array
  creationHash: Uint8Array
  ticket: TpmtTkCreation
}

export interface CreateResult extends TpmObjectPublic {
  /** TPM2B_PRIVATE content. */
  private: Uint8Array
  creationData: Uint8Array
  creationHash: Uint8Array
  ticket: TpmtTkCreation
}

export interface AttestResult {
  /** TPMS_ATTEST bytes (the signed message). */
  attest: Uint8Array
  /** TPMT_SIGNATURE bytes. */
  signature: Uint8Array
  decodedAttest: TpmsAttest
  decodedSignature: TpmtSignature
}

export type TpmCapabilityData =
  | { capability: typeof TPM_CAP.TPM_PROPERTIES; properties: Array<{ property: number; value: number }> }
  | { capability: typeof TPM_CAP.HANDLES; handles: number[] }
  | { capability: typeof TPM_CAP.PCRS; pcrs: TpmlPcrSelection }
  | { capability: typeof TPM_CAP.ALGS; algs: Array<{ alg: number; attributes: number }> }

const RETRYABLE = new Set<number>([TPM_RC.RETRY, TPM_RC.YIELDED, TPM_RC.TESTING])
const MAX_CAP_COUNT = 256

function invalid(message: string): IdentityError {
  return new IdentityError('ERR_TPM_PAYLOAD_INVALID', message)
}

function toSelection(sel: TpmlPcrSelection | PcrBankSelection[], size: number): TpmlPcrSelection {
  if (sel.length === 0) return []
  return 'pcrs' in sel[0]! ? pcrSelection(sel as PcrBankSelection[], size) : (sel as TpmlPcrSelection)
}

/**
 * A typed TPM 2.0 client over a transport. Methods map 1:1 to TPM commands,
 * authorise with password sessions unless told otherwise, and decode
 * responses strictly. Without a resource manager (swtpm) only three transient
 * objects fit: flush what you create (`withFlush`).
 */
export class TpmClient {
  readonly transport: TpmTransport
  readonly #retries: number
  readonly #retryDelayMs: number
  readonly #pcrSelectSize: number
  #nvBufferMax: number | undefined

  constructor(transport: TpmTransport, opts: TpmClientOptions = {}) {
    this.transport = transport
    this.#retries = opts.retries ?? 5
    this.#retryDelayMs = opts.retryDelayMs ?? 20
    this.#pcrSelectSize = opts.pcrSelectSize ?? 3
  }

  async close(): Promise<void> {
    await this.transport.close()
  }

  // ------------------------------------------------------------ plumbing

  /**
   * Builds, sends and checks one command. Returns the response handles and a
   * reader over the parameter area (callers must consume it exactly).
   */
  async execute(
    command: keyof typeof TPM_CC,
    handles: number[],
    auths: TpmAuth[] | undefined,
    params: Uint8Array,
    responseHandles: number,
    opts?: CallOpts,
  ): Promise<{ handles: number[]; params: TpmReader }> {
    const cc = TPM_CC[command]
    const withSessions = auths !== undefined && auths.length > 0
    const w = new TpmWriter(64 + params.length)
    w.u16(withSessions ? TPM_ST.SESSIONS : TPM_ST.NO_SESSIONS)
      .u32(0)
      .u32(cc)
    for (const h of handles) w.u32(h >>> 0)
    if (withSessions) {
      const a = new TpmWriter(64)
      for (const auth of auths) {
        if ('password' in auth) a.u32(TPM_RH.PW).tpm2b(EMPTY).u8(1).tpm2b(auth.password)
        else
          a.u32(auth.session >>> 0)
            .tpm2b(EMPTY)
            .u8(auth.continueSession ? 1 : 0)
            .tpm2b(EMPTY)
      }
      const area = a.finish()
      w.u32(area.length).bytes(area)
    }
    w.bytes(params)
    w.patchU32(2, w.length)
    const cmd = w.finish()

    let resp: Uint8Array
    for (let attempt = 0; ; attempt++) {
      resp = await this.transport.send(cmd, opts?.signal === undefined ? undefined : { signal: opts.signal })
      const rc = resp.length >= 10 ? new DataView(resp.buffer, resp.byteOffset).getUint32(6) : 0
      if (RETRYABLE.has(rc) && attempt < this.#retries) {
        await delay(this.#retryDelayMs * 2 ** attempt, undefined, opts?.signal === undefined ? undefined : { signal: opts.signal })
        continue
      }
      break
    }
    const r = new TpmReader(resp)
    const tag = r.u16('response.tag')
    const size = r.u32('response.size')
    const rc = r.u32('response.rc')
    if (size !== resp.length) throw invalid(`TPM response size ${size} does not match ${resp.length} bytes received`)
    if (rc !== 0) throw new TpmError(rc, command)
    if (tag !== (withSessions ? TPM_ST.SESSIONS : TPM_ST.NO_SESSIONS)) throw invalid('unexpected TPM response tag')
    const outHandles: number[] = []
    for (let i = 0; i < responseHandles; i++) outHandles.push(r.u32('response.handle'))
    if (!withSessions) return { handles: outHandles, params: r.sub(r.remaining, 'response.parameters') }
    const paramSize = r.u32('response.parameterSize')
    const p = r.sub(paramSize, 'response.parameters')
    for (let i = 0; i < auths.length; i++) {
      r.tpm2b('response.nonce')
      r.u8('response.sessionAttributes')
      r.tpm2b('response.hmac')
    }
    r.expectEnd('TPM response')
    return { handles: outHandles, params: p }
  }

  // ------------------------------------------------------------ commands

  /** TPM2_Startup(CLEAR); TPM_RC_INITIALIZE (already started) counts as success. */
  async startup(opts?: CallOpts & { state?: boolean }): Promise<void> {
    try {
      const { params } = await this.execute('Startup', [], undefined, new TpmWriter(2).u16(opts?.state ? 1 : 0).finish(), 0, opts)
      params.expectEnd('Startup')
    } catch (err) {
      if (isTpmError(err, TPM_RC.INITIALIZE)) return
      throw err
    }
  }

  async getCapability(capability: number, property: number, count: number, opts?: CallOpts): Promise<{ moreData: boolean; data: TpmCapabilityData }> {
    const { params: r } = await this.execute(
      'GetCapability',
      [],
      undefined,
      new TpmWriter(12)
        .u32(capability)
        .u32(property >>> 0)
        .u32(count)
        .finish(),
      0,
      opts,
    )
    const moreData = r.u8('moreData') !== 0
    const cap = r.u32('capability')
    if (cap !== capability) throw invalid('GetCapability answered another capability')
    let data: TpmCapabilityData
    if (cap === TPM_CAP.TPM_PROPERTIES) {
      const n = r.u32('count')
      if (n > MAX_CAP_COUNT) throw invalid('too many properties')
      const properties: Array<{ property: number; value: number }> = []
      for (let i = 0; i < n; i++) properties.push({ property: r.u32('property'), value: r.u32('value') })
      data = { capability: cap, properties }
    } else if (cap === TPM_CAP.HANDLES) {
      const n = r.u32('count')
      if (n > MAX_CAP_COUNT) throw invalid('too many handles')
      const handles: number[] = []
      for (let i = 0; i < n; i++) handles.push(r.u32('handle'))
      data = { capability: cap, handles }
    } else if (cap === TPM_CAP.PCRS) {
      data = { capability: cap, pcrs: decodeTpmlPcrSelection(r) }
    } else if (cap === TPM_CAP.ALGS) {
      const n = r.u32('count')
      if (n > MAX_CAP_COUNT) throw invalid('too many algorithms')
      const algs: Array<{ alg: number; attributes: number }> = []
      for (let i = 0; i < n; i++) algs.push({ alg: r.u16('alg'), attributes: r.u32('attributes') })
      data = { capability: cap, algs }
    } else {
      throw new RangeError(`capability ${capability} is not decoded by this client`)
    }
    r.expectEnd('GetCapability')
    return { moreData, data }
  }

  /** One TPM_PT property value. */
  async getProperty(property: number, opts?: CallOpts): Promise<number> {
    const { data } = await this.getCapability(TPM_CAP.TPM_PROPERTIES, property, 1, opts)
    const p = data.capability === TPM_CAP.TPM_PROPERTIES ? data.properties.find((x) => x.property === property) : undefined
    if (p === undefined) throw invalid(`TPM does not report property 0x${property.toString(16)}`)
    return p.value
  }

  /** All handles of a type (e.g. 0x80000000 transient, 0x81000000 persistent, 0x01000000 NV). */
  async getHandles(first: number, opts?: CallOpts): Promise<number[]> {
    const out: number[] = []
    let next = first
    for (;;) {
      const { moreData, data } = await this.getCapability(TPM_CAP.HANDLES, next, 64, opts)
      if (data.capability !== TPM_CAP.HANDLES) break
      const hs = data.handles
      out.push(...hs)
      if (!moreData || hs.length === 0) break
      next = hs[hs.length - 1]! + 1
    }
    return out
  }

  /** Active PCR banks (TPM_CAP_PCRS). */
  async getPcrBanks(opts?: CallOpts): Promise<TpmlPcrSelection> {
    const { data } = await this.getCapability(TPM_CAP.PCRS, 0, 1, opts)
    return data.capability === TPM_CAP.PCRS ? data.pcrs : []
  }

  /**
   * TPM2_PCR_Read, looping until every selected PCR is read (a TPM returns at
   * most 8 digests per call). Values come in selection order: bank by bank,
   * ascending index, as a quote's pcrDigest hashes them.
   */
  async pcrRead(selection: TpmlPcrSelection | PcrBankSelection[], opts?: CallOpts): Promise<{ updateCounter: number; values: PcrValue[] }> {
    const want = toSelection(selection, this.#pcrSelectSize)
    for (let restart = 0; restart < 3; restart++) {
      const got = new Map<string, Uint8Array>()
      let remaining = want.map((s) => ({ hash: s.hash, pcrSelect: s.pcrSelect.slice() }))
      let counter: number | undefined
      let changed = false
      while (remaining.some((s) => s.pcrSelect.some((b) => b !== 0))) {
        const w = new TpmWriter(32)
        writeTpmlPcrSelection(w, remaining)
        const { params: r } = await this.execute('PCR_Read', [], undefined, w.finish(), 0, opts)
        const updateCounter = r.u32('pcrUpdateCounter')
        const outSel = decodeTpmlPcrSelection(r)
        const digests = decodeTpmlDigest(r)
        r.expectEnd('PCR_Read')
        if (counter !== undefined && counter !== updateCounter) {
          changed = true
          break
        }
        counter = updateCounter
        let k = 0
        let progress = false
        for (const s of outSel) {
          const bank = remaining.find((x) => x.hash === s.hash)
          for (const i of pcrSelectIndices(s.pcrSelect)) {
            const d = digests[k++]
            if (d === undefined) throw invalid('PCR_Read returned fewer digests than selected')
            if (d.length !== hashDigestSize(s.hash)) throw invalid('PCR digest has the wrong size')
            if (bank === undefined || !(bank.pcrSelect[i >> 3]! & (1 << (i & 7)))) throw invalid('PCR_Read returned an unrequested PCR')
            bank.pcrSelect[i >> 3]! &= ~(1 << (i & 7))
            got.set(`${s.hash}:${i}`, d)
            progress = true
          }
        }
        if (k !== digests.length) throw invalid('PCR_Read returned more digests than selected')
        if (!progress) {
          remaining = remaining.filter((s) => s.pcrSelect.some((b) => b !== 0))
          throw new IdentityError('ERR_TPM', 'TPM did not return some selected PCRs (bank not active?)', {
            details: { banks: remaining.map((s) => s.hash) },
          })
        }
      }
      if (changed) continue
      const values: PcrValue[] = []
      for (const s of want) {
        for (const pcr of pcrSelectIndices(s.pcrSelect)) {
          values.push({ hash: s.hash, pcr, digest: got.get(`${s.hash}:${pcr}`)! })
        }
      }
      return { updateCounter: counter ?? 0, values }
    }
    throw new IdentityError('ERR_TPM', 'PCRs kept changing while being read')
  }

  /** TPM2_PCR_Extend of one bank. */
  async pcrExtend(pcr: number, hashAlg: number, digest: Uint8Array, opts?: CallOpts): Promise<void> {
    if (digest.length !== hashDigestSize(hashAlg)) throw new RangeError('digest size does not match the hash algorithm')
    const w = new TpmWriter(8 + digest.length).u32(1).u16(hashAlg).bytes(digest)
    const { params } = await this.execute('PCR_Extend', [pcr], [PW], w.finish(), 0, opts)
    params.expectEnd('PCR_Extend')
  }

  /** TPM2_PCR_Reset (PCR 16 and 23 are resettable at locality 0). */
  async pcrReset(pcr: number, opts?: CallOpts): Promise<void> {
    const { params } = await this.execute('PCR_Reset', [pcr], [PW], EMPTY, 0, opts)
    params.expectEnd('PCR_Reset')
  }

  #readCreation(r: TpmReader): Omit<CreatePrimaryResult, 'handle' | 'name'> {
    const pub = decodeTpm2bPublic(r)
    const creationData = r.tpm2b('creationData', 1024)
    const creationHash = r.tpm2b('creationHash', 64)
    const ticket = decodeTpmtTkCreation(r)
    return { public: pub.public, publicBytes: pub.bytes, creationData, creationHash, ticket }
  }

  /** TPM2_CreatePrimary under OWNER / ENDORSEMENT / PLATFORM / NULL. */
  async createPrimary(
    hierarchy: number,
    template: TpmtPublic,
    opts?: CallOpts & { hierarchyAuth?: Uint8Array; userAuth?: Uint8Array; outsideInfo?: Uint8Array; creationPcrs?: TpmlPcrSelection },
  ): Promise<CreatePrimaryResult> {
    const w = new TpmWriter(512)
    w.bytes(encodeTpm2bSensitiveCreate(opts?.userAuth))
    w.bytes(encodeTpm2bPublic(encodeTpmtPublic(template)))
    w.tpm2b(opts?.outsideInfo ?? EMPTY)
    writeTpmlPcrSelection(w, opts?.creationPcrs ?? [])
    const { handles, params: r } = await this.execute('CreatePrimary', [hierarchy], [{ password: opts?.hierarchyAuth ?? EMPTY }], w.finish(), 1, opts)
    const handle = handles[0]!
    try {
      const c = this.#readCreation(r)
      const name = r.tpm2b('name', 66)
      r.expectEnd('CreatePrimary')
      if (!bytesEqual(name, tpmtPublicName(c.publicBytes))) throw invalid('CreatePrimary returned a name that does not match its public area')
      return { handle, name, ...c }
    } catch (err) {
      await this.flushContext(handle, opts).catch(() => undefined)
      throw err
    }
  }

  /** TPM2_Create: a child key under a loaded parent (not loaded; see `load`). */
  async create(
    parent: number,
    template: TpmtPublic,
    opts?: CallOpts & { parentAuth?: Uint8Array; userAuth?: Uint8Array; outsideInfo?: Uint8Array; creationPcrs?: TpmlPcrSelection },
  ): Promise<CreateResult> {
    const w = new TpmWriter(512)
    w.bytes(encodeTpm2bSensitiveCreate(opts?.userAuth))
    w.bytes(encodeTpm2bPublic(encodeTpmtPublic(template)))
    w.tpm2b(opts?.outsideInfo ?? EMPTY)
    writeTpmlPcrSelection(w, opts?.creationPcrs ?? [])
    const { params: r } = await this.execute('Create', [parent], [{ password: opts?.parentAuth ?? EMPTY }], w.finish(), 0, opts)
    const priv = r.tpm2b('private', 2048)
    const c = this.#readCreation(r)
    r.expectEnd('Create')
    return { private: priv, ...c }
  }

  /** TPM2_Load of a child created by `create`. `pub` is TPMT_PUBLIC bytes. */
  async load(parent: number, priv: Uint8Array, pub: Uint8Array, opts?: CallOpts & { parentAuth?: Uint8Array }): Promise<{ handle: number; name: Uint8Array }> {
    const w = new TpmWriter(priv.length + pub.length + 4).tpm2b(priv).tpm2b(pub)
    const { handles, params: r } = await this.execute('Load', [parent], [{ password: opts?.parentAuth ?? EMPTY }], w.finish(), 1, opts)
    const handle = handles[0]!
    try {
      const name = r.tpm2b('name', 66)
      r.expectEnd('Load')
      if (!bytesEqual(name, tpmtPublicName(pub))) throw invalid('Load returned a name that does not match the public area')
      return { handle, name }
    } catch (err) {
      await this.flushContext(handle, opts).catch(() => undefined)
      throw err
    }
  }

  async readPublic(handle: number, opts?: CallOpts): Promise<TpmObjectPublic & { name: Uint8Array; qualifiedName: Uint8Array }> {
    const { params: r } = await this.execute('ReadPublic', [handle], undefined, EMPTY, 0, opts)
    const pub = decodeTpm2bPublic(r)
    const name = r.tpm2b('name', 66)
    const qualifiedName = r.tpm2b('qualifiedName', 66)
    r.expectEnd('ReadPublic')
    if (!bytesEqual(name, tpmtPublicName(pub.bytes))) throw invalid('ReadPublic returned a name that does not match its public area')
    return { public: pub.public, publicBytes: pub.bytes, name, qualifiedName }
  }

  #readAttestResult(r: TpmReader, command: string): AttestResult {
    const attest = r.tpm2b('attest', 2048)
    const signature = r.bytes(r.remaining, 'signature')
    const decodedAttest = parseTpmsAttest(attest)
    const decodedSignature = parseTpmtSignature(signature)
    void command
    return { attest, signature, decodedAttest, decodedSignature }
  }

  /** TPM2_Quote with the key's own scheme. The nonce must be at most the largest digest size (use 32 bytes). */
  async quote(
    ak: number,
    nonce: Uint8Array,
    selection: TpmlPcrSelection | PcrBankSelection[],
    opts?: CallOpts & { akAuth?: Uint8Array; scheme?: TpmtScheme },
  ): Promise<AttestResult> {
    const w = new TpmWriter(64).tpm2b(nonce)
    writeScheme(w, opts?.scheme ?? { scheme: TPM_ALG.NULL })
    writeTpmlPcrSelection(w, toSelection(selection, this.#pcrSelectSize))
    const { params: r } = await this.execute('Quote', [ak], [{ password: opts?.akAuth ?? EMPTY }], w.finish(), 0, opts)
    return this.#readAttestResult(r, 'Quote')
  }

  /** TPM2_CertifyCreation: `signHandle` signs that `objectHandle` was created with `creationHash`/`ticket`. */
  async certifyCreation(
    signHandle: number,
    objectHandle: number,
    qualifyingData: Uint8Array,
    creationHash: Uint8Array,
    ticket: TpmtTkCreation,
    opts?: CallOpts & { signAuth?: Uint8Array; scheme?: TpmtScheme },
  ): Promise<AttestResult> {
    const w = new TpmWriter(160).tpm2b(qualifyingData).tpm2b(creationHash)
    writeScheme(w, opts?.scheme ?? { scheme: TPM_ALG.NULL })
    writeTpmtTkCreation(w, ticket)
    const { params: r } = await this.execute('CertifyCreation', [signHandle, objectHandle], [{ password: opts?.signAuth ?? EMPTY }], w.finish(), 0, opts)
    return this.#readAttestResult(r, 'CertifyCreation')
  }

  /** TPM2_StartAuthSession, unbound and unsalted (policy by default). */
  async startAuthSession(
    type: 'policy' | 'hmac' | 'trial' = 'policy',
    opts?: CallOpts & { authHash?: number },
  ): Promise<{ handle: number; nonceTpm: Uint8Array }> {
    const sessionType = type === 'policy' ? TPM_SE.POLICY : type === 'trial' ? TPM_SE.TRIAL : TPM_SE.HMAC
    const w = new TpmWriter(40)
      .tpm2b(new Uint8Array(randomBytes(16)))
      .tpm2b(EMPTY)
      .u8(sessionType)
      .u16(TPM_ALG.NULL)
      .u16(opts?.authHash ?? TPM_ALG.SHA256)
    const { handles, params: r } = await this.execute('StartAuthSession', [TPM_RH.NULL, TPM_RH.NULL], undefined, w.finish(), 1, opts)
    const handle = handles[0]!
    const nonceTpm = r.tpm2b('nonceTPM', 64)
    r.expectEnd('StartAuthSession')
    return { handle, nonceTpm }
  }

  /** TPM2_PolicySecret(authHandle) on a policy session, authorised by password. */
  async policySecret(authHandle: number, session: number, opts?: CallOpts & { auth?: Uint8Array }): Promise<void> {
    const w = new TpmWriter(16).tpm2b(EMPTY).tpm2b(EMPTY).tpm2b(EMPTY).i32(0)
    const { params: r } = await this.execute('PolicySecret', [authHandle, session], [{ password: opts?.auth ?? EMPTY }], w.finish(), 0, opts)
    r.tpm2b('timeout', 64)
    r.u16('ticket.tag')
    r.u32('ticket.hierarchy')
    r.tpm2b('ticket.digest', 64)
    r.expectEnd('PolicySecret')
  }

  /**
   * TPM2_ActivateCredential. The AK is authorised by password; the EK by a
   * fresh PolicySecret(ENDORSEMENT) session (default EK policy), consumed by
   * the command, or by password (`ekAuth: 'password'`, for userWithAuth EKs).
   * Returns the decrypted credential.
   */
  async activateCredential(
    akHandle: number,
    ekHandle: number,
    credentialBlob: Uint8Array,
    encryptedSecret: Uint8Array,
    opts?: CallOpts & { akAuth?: Uint8Array; endorsementAuth?: Uint8Array; ekAuth?: 'policy-secret' | 'password' },
  ): Promise<Uint8Array> {
    const w = new TpmWriter(credentialBlob.length + encryptedSecret.length + 4).tpm2b(credentialBlob).tpm2b(encryptedSecret)
    const params = w.finish()
    const akAuth: TpmAuth = { password: opts?.akAuth ?? EMPTY }
    if (opts?.ekAuth === 'password') {
      const { params: r } = await this.execute(
        'ActivateCredential',
        [akHandle, ekHandle],
        [akAuth, { password: opts.endorsementAuth ?? EMPTY }],
        params,
        0,
        opts,
      )
      const cert = r.tpm2b('certInfo', 64)
      r.expectEnd('ActivateCredential')
      return cert
    }
    const session = await this.startAuthSession('policy', opts)
    let consumed = false
    try {
      await this.policySecret(TPM_RH.ENDORSEMENT, session.handle, { ...opts, auth: opts?.endorsementAuth ?? EMPTY })
      const res = await this.execute('ActivateCredential', [akHandle, ekHandle], [akAuth, { session: session.handle }], params, 0, opts)
      consumed = true
      const cert = res.params.tpm2b('certInfo', 64)
      res.params.expectEnd('ActivateCredential')
      return cert
    } finally {
      if (!consumed) await this.flushContext(session.handle, opts).catch(() => undefined)
    }
  }

  /** TPM2_FlushContext of a transient object or session. */
  async flushContext(handle: number, opts?: CallOpts): Promise<void> {
    const { params } = await this.execute('FlushContext', [], undefined, new TpmWriter(4).u32(handle >>> 0).finish(), 0, opts)
    params.expectEnd('FlushContext')
  }

  async nvReadPublic(index: number, opts?: CallOpts): Promise<{ nvPublic: TpmsNvPublic; name: Uint8Array }> {
    const { params: r } = await this.execute('NV_ReadPublic', [index], undefined, EMPTY, 0, opts)
    const nvPublic = r.sized('TPM2B_NV_PUBLIC', decodeTpmsNvPublic, 256)
    const name = r.tpm2b('name', 66)
    r.expectEnd('NV_ReadPublic')
    if (nvPublic.nvIndex !== index) throw invalid('NV_ReadPublic answered another index')
    return { nvPublic, name }
  }

  /** TPM_PT_NV_BUFFER_MAX, cached. */
  async nvBufferMax(opts?: CallOpts): Promise<number> {
    this.#nvBufferMax ??= await this.getProperty(TPM_PT.NV_BUFFER_MAX, opts)
    return this.#nvBufferMax
  }

  /**
   * TPM2_NV_Read of a whole index (or `size` bytes from `offset`), in chunks
   * of at most TPM_PT_NV_BUFFER_MAX. Authorised by the index itself (password).
   */
  async nvRead(
    index: number,
    opts?: CallOpts & { chunk?: number; authHandle?: number; auth?: Uint8Array; size?: number; offset?: number },
  ): Promise<Uint8Array> {
    const chunk = opts?.chunk ?? (await this.nvBufferMax(opts))
    if (!Number.isInteger(chunk) || chunk <= 0) throw new RangeError('chunk must be a positive integer')
    const offset = opts?.offset ?? 0
    const size = opts?.size ?? (await this.nvReadPublic(index, opts)).nvPublic.dataSize - offset
    if (size < 0 || offset < 0 || offset + size > 0xffff) throw new RangeError('NV read range out of bounds')
    const out = new Uint8Array(size)
    let done = 0
    while (done < size) {
      const n = Math.min(chunk, size - done)
      const w = new TpmWriter(4).u16(n).u16(offset + done)
      const { params: r } = await this.execute('NV_Read', [opts?.authHandle ?? index, index], [{ password: opts?.auth ?? EMPTY }], w.finish(), 0, opts)
      const data = r.tpm2b('data', n)
      r.expectEnd('NV_Read')
      if (data.length !== n) throw invalid('NV_Read returned a short chunk')
      out.set(data, done)
      done += n
    }
    return out
  }

  /**
   * TPM2_EvictControl: persists `objectHandle` at `persistentHandle`, or (when
   * `objectHandle` is persistent) removes it.
   */
  async evictControl(auth: number, objectHandle: number, persistentHandle: number, opts?: CallOpts & { authValue?: Uint8Array }): Promise<void> {
    const { params } = await this.execute(
      'EvictControl',
      [auth, objectHandle],
      [{ password: opts?.authValue ?? EMPTY }],
      new TpmWriter(4).u32(persistentHandle >>> 0).finish(),
      0,
      opts,
    )
    params.expectEnd('EvictControl')
  }

  // ------------------------------------------------------------ helpers

  /**
   * Runs `fn` with a created or loaded object (or session) and always flushes
   * it afterwards. A flush error is reported only when `fn` succeeded.
   */
  async withFlush<T extends { handle: number }, R>(obj: T | Promise<T>, fn: (obj: T) => Promise<R> | R, opts?: CallOpts): Promise<R> {
    const o = await obj
    let result: R
    try {
      result = await fn(o)
    } catch (err) {
      await this.flushContext(o.handle, opts).catch(() => undefined)
      throw err
    }
    await this.flushContext(o.handle, opts)
    return result
  }

  /**
   * Flushes every loaded transient object and session. For a TPM without a
   * resource manager (swtpm) that this process owns; recovers slots that
   * another tool (e.g. tpm2_createek) left behind.
   */
  async flushAllTransient(opts?: CallOpts): Promise<number> {
    let n = 0
    // HT 0x02 lists every loaded session (HMAC and policy).
    for (const first of [TPM_HT.TRANSIENT * 2 ** 24, TPM_HT.HMAC_SESSION * 2 ** 24]) {
      for (const h of await this.getHandles(first, opts)) {
        await this.flushContext(h, opts)
        n++
      }
    }
    return n
  }
}
