/**
 * A private key found again by label is used only if the token has always kept
 * it secret. Each weak key here is created with pkcs11js directly in a real
 * SoftHSM2 token, under the label warrant would look up, while no manager holds
 * it; warrant must refuse it with ERR_KEY_INVALID and never hand out a signer.
 */
import { generateKeyPairSync } from 'node:crypto'
import { afterAll, beforeAll, describe, expect, it } from 'vitest'
import pkcs11js from 'pkcs11js'
import { Pkcs11KeyManager, type Pkcs11Config } from '../../src/keymanager/pkcs11/index.js'
import { captureLogger } from '../helpers/capture-logger.js'
import { createSoftHsmToken, type SoftHsmToken } from '../helpers/softhsm.js'
import { tempDir } from '../helpers/temp.js'
import { requireTools } from '../helpers/tools.js'

type P11 = InstanceType<typeof pkcs11js.PKCS11>
const P256_OID = Buffer.from('06082a8648ce3d030107', 'hex')
const PREFIX = 'warrant-'

let token: SoftHsmToken
let tmp: { dir: string; cleanup: () => void }

function rawModule(): P11 {
  const p = new pkcs11js.PKCS11()
  p.load(token.modulePath)
  try {
    p.C_Initialize({ flags: pkcs11js.CKF_OS_LOCKING_OK })
  } catch (err) {
    if ((err as Error).message !== 'CKR_CRYPTOKI_ALREADY_INITIALIZED') throw err
  }
  return p
}

function tokenSlot(p: P11): Buffer {
  const slot = p.C_GetSlotList(true).find((s) => p.C_GetTokenInfo(s).label.trim() === token.tokenLabel)
  if (slot === undefined) throw new Error('token not found')
  return slot
}

/** Private key attributes of a weak key; `after` is set once it exists (the one-way changes PKCS#11 allows). */
interface WeakCase {
  title: string
  priv: { sensitive: boolean; extractable: boolean }
  after?: { sensitive?: boolean; extractable?: boolean }
  imported?: boolean
  problem: string
}

const CASES: WeakCase[] = [
  { title: 'CKA_SENSITIVE false', priv: { sensitive: false, extractable: false }, problem: 'CKA_SENSITIVE is false' },
  { title: 'CKA_EXTRACTABLE true', priv: { sensitive: true, extractable: true }, problem: 'CKA_EXTRACTABLE is true' },
  {
    title: 'made sensitive after creation',
    priv: { sensitive: false, extractable: false },
    after: { sensitive: true },
    problem: 'CKA_ALWAYS_SENSITIVE is false',
  },
  {
    title: 'made non-extractable after creation',
    priv: { sensitive: true, extractable: true },
    after: { extractable: false },
    problem: 'CKA_NEVER_EXTRACTABLE is false',
  },
  { title: 'imported from outside the token', priv: { sensitive: true, extractable: false }, imported: true, problem: 'CKA_ALWAYS_SENSITIVE is false' },
]

function plantWeakKey(p: P11, session: Buffer, label: string, c: WeakCase): Buffer {
  const common = [
    { type: pkcs11js.CKA_TOKEN, value: true },
    { type: pkcs11js.CKA_LABEL, value: label },
    { type: pkcs11js.CKA_ID, value: Buffer.from(label) },
  ]
  const privAttrs = [
    ...common,
    { type: pkcs11js.CKA_CLASS, value: pkcs11js.CKO_PRIVATE_KEY },
    { type: pkcs11js.CKA_KEY_TYPE, value: pkcs11js.CKK_EC },
    { type: pkcs11js.CKA_PRIVATE, value: true },
    { type: pkcs11js.CKA_SENSITIVE, value: c.priv.sensitive },
    { type: pkcs11js.CKA_EXTRACTABLE, value: c.priv.extractable },
    { type: pkcs11js.CKA_SIGN, value: true },
  ]
  const pubAttrs = [
    ...common,
    { type: pkcs11js.CKA_CLASS, value: pkcs11js.CKO_PUBLIC_KEY },
    { type: pkcs11js.CKA_KEY_TYPE, value: pkcs11js.CKK_EC },
    { type: pkcs11js.CKA_PRIVATE, value: false },
    { type: pkcs11js.CKA_VERIFY, value: true },
    { type: pkcs11js.CKA_EC_PARAMS, value: P256_OID },
  ]
  let priv: Buffer
  if (c.imported) {
    // A key pair made outside the token (its private value known to whoever made it), then imported.
    const { privateKey } = generateKeyPairSync('ec', { namedCurve: 'P-256' })
    const jwk = privateKey.export({ format: 'jwk' })
    const d = Buffer.from(jwk.d!, 'base64url')
    const point = Buffer.concat([Buffer.from([0x04]), Buffer.from(jwk.x!, 'base64url'), Buffer.from(jwk.y!, 'base64url')])
    priv = p.C_CreateObject(session, [...privAttrs, { type: pkcs11js.CKA_EC_PARAMS, value: P256_OID }, { type: pkcs11js.CKA_VALUE, value: d }])
    p.C_CreateObject(session, [...pubAttrs, { type: pkcs11js.CKA_EC_POINT, value: Buffer.concat([Buffer.from([0x04, point.length]), point]) }])
  } else {
    priv = p.C_GenerateKeyPair(session, { mechanism: pkcs11js.CKM_EC_KEY_PAIR_GEN }, pubAttrs, privAttrs).privateKey
  }
  const after: { type: number; value: boolean }[] = []
  if (c.after?.sensitive !== undefined) after.push({ type: pkcs11js.CKA_SENSITIVE, value: c.after.sensitive })
  if (c.after?.extractable !== undefined) after.push({ type: pkcs11js.CKA_EXTRACTABLE, value: c.after.extractable })
  if (after.length > 0) p.C_SetAttributeValue(session, priv, after)
  return priv
}

describe.runIf(requireTools('softhsm2-util'))('Pkcs11KeyManager refuses keys the token does not keep secret', () => {
  let km: Pkcs11KeyManager
  let p: P11
  let session: Buffer
  const log = captureLogger()

  beforeAll(async () => {
    tmp = tempDir('whsmw-')
    token = await createSoftHsmToken({ dir: tmp.dir, label: 'weak-token', pin: '11223344' })
    process.env.SOFTHSM2_CONF = token.confPath
    const cfg: Pkcs11Config = { module_path: token.modulePath, token_label: token.tokenLabel, pin: token.pin, session_pool_size: 2 }
    km = await Pkcs11KeyManager.open(cfg, { log })
    // The manager's login covers this application's sessions: the raw session can create private token objects.
    p = rawModule()
    session = p.C_OpenSession(tokenSlot(p), pkcs11js.CKF_SERIAL_SESSION | pkcs11js.CKF_RW_SESSION)
  })
  afterAll(async () => {
    if (session) p.C_CloseSession(session)
    await km?.close()
    tmp?.cleanup()
  })

  it.each(CASES)('$title → ERR_KEY_INVALID ($problem); not listed; no signer', async (c) => {
    const id = `jwt-${c.title.replace(/[^a-z]+/g, '-')}`
    const priv = plantWeakKey(p, session, PREFIX + id, c)
    // The planted key really is what the case says.
    const [always, never] = p.C_GetAttributeValue(session, priv, [{ type: pkcs11js.CKA_ALWAYS_SENSITIVE }, { type: pkcs11js.CKA_NEVER_EXTRACTABLE }])
    if (c.problem === 'CKA_ALWAYS_SENSITIVE is false') expect(always!.value[0]).toBe(0)
    if (c.problem === 'CKA_NEVER_EXTRACTABLE is false') expect(never!.value[0]).toBe(0)

    const err = await km.getKey(id).then(
      () => undefined,
      (e: unknown) => e,
    )
    expect(err).toMatchObject({ name: 'IdentityError', code: 'ERR_KEY_INVALID', details: { key_id: id, reason: 'key_not_protected' } })
    expect((err as { details: { problems: string[] } }).details.problems).toContain(c.problem)
    expect((await km.listKeys()).map((k) => k.id)).not.toContain(id)
    expect(log.lines.some((l) => l.level === 'error' && l.fields.key_id === id)).toBe(true)
  })

  it('a key warrant generated itself is used (control)', async () => {
    const key = await km.generateKey('jwt-good', 'ec-p256')
    const again = await km.getKey('jwt-good')
    expect(again.publicKey.export({ format: 'der', type: 'spki' })).toEqual(key.publicKey.export({ format: 'der', type: 'spki' }))
    expect((await again.sign(Buffer.from('x'), 'ES256')).length).toBe(64)
    expect((await km.listKeys()).map((k) => k.id)).toContain('jwt-good')
  })
})
