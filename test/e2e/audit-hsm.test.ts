/**
 * The checkpoint key held in SoftHSM2 through the Pkcs11KeyManager: the
 * private key is sensitive and never extractable, the log signs its
 * checkpoints through it, and `warrant audit verify` (another process, with
 * only the verifier key) accepts them.
 */
import { copyFileSync } from 'node:fs'
import { join } from 'node:path'
import pkcs11js from 'pkcs11js'
import { afterAll, beforeAll, describe, expect, it } from 'vitest'
import { ecdsaNoteSigner, openCheckpoint, parseVerifierKey, verifierKey } from '../../src/audit/index.js'
import { AuditLog } from '../../src/audit/store/audit-log.js'
import { Pkcs11KeyManager } from '../../src/keymanager/pkcs11/index.js'
import { warrant } from '../helpers/e2e-cluster.js'
import { createSoftHsmToken, type SoftHsmToken } from '../helpers/softhsm.js'
import { tempDir } from '../helpers/temp.js'
import { requireTools } from '../helpers/tools.js'
import { ORIGIN, sampleEvent } from '../unit/audit/helpers.js'

const haveTools = requireTools('softhsm2-util')

describe.runIf(haveTools)('audit checkpoints signed by a key in SoftHSM2', () => {
  let tmp: { dir: string; cleanup: () => void }
  let token: SoftHsmToken
  let km: Pkcs11KeyManager

  beforeAll(async () => {
    tmp = tempDir('waudit-hsm-')
    token = await createSoftHsmToken({ dir: tmp.dir, label: 'audit-token', pin: '24681357' })
    process.env.SOFTHSM2_CONF = token.confPath
    km = await Pkcs11KeyManager.open({ module_path: token.modulePath, token_label: token.tokenLabel, pin: token.pin, key_label_prefix: 'audit-' })
  })
  afterAll(async () => {
    await km?.close()
    tmp?.cleanup()
  })

  it('the key is sensitive and non-extractable, and the checkpoints verify with the public key only', async () => {
    const key = await km.generateKey('checkpoint', 'ec-p256')
    expect(key.inProcessKey).toBeUndefined()

    // behind the manager's back: the private object's attributes, and its value refused
    const p = new pkcs11js.PKCS11()
    p.load(token.modulePath)
    try {
      p.C_Initialize({ flags: pkcs11js.CKF_OS_LOCKING_OK })
    } catch (err) {
      if ((err as Error).message !== 'CKR_CRYPTOKI_ALREADY_INITIALIZED') throw err
    }
    const slot = p.C_GetSlotList(true).find((s) => p.C_GetTokenInfo(s).label.trim() === token.tokenLabel)!
    const session = p.C_OpenSession(slot, pkcs11js.CKF_SERIAL_SESSION)
    try {
      p.C_FindObjectsInit(session, [
        { type: pkcs11js.CKA_CLASS, value: pkcs11js.CKO_PRIVATE_KEY },
        { type: pkcs11js.CKA_LABEL, value: 'audit-checkpoint' },
      ])
      const found = p.C_FindObjects(session, 10)
      p.C_FindObjectsFinal(session)
      expect(found).toHaveLength(1)
      const attrs = p.C_GetAttributeValue(session, found[0]!, [
        { type: pkcs11js.CKA_SENSITIVE },
        { type: pkcs11js.CKA_EXTRACTABLE },
        { type: pkcs11js.CKA_TOKEN },
      ])
      expect(attrs.map((a) => a.value[0])).toEqual([1, 0, 1])
      expect(() => p.C_GetAttributeValue(session, found[0]!, [{ type: pkcs11js.CKA_VALUE }])).toThrow('CKR_ATTRIBUTE_SENSITIVE')
    } finally {
      p.C_CloseSession(session)
    }

    const path = join(tmp.dir, 'audit.db')
    const log = AuditLog.open({ path, origin: ORIGIN, signer: ecdsaNoteSigner(ORIGIN, key) })
    await Promise.all(Array.from({ length: 25 }, (_, i) => log.append(sampleEvent(i))))
    const cp = await log.checkpoint()
    await log.append(sampleEvent(25))
    await log.checkpoint()
    await log.close()

    // the verifier key comes from the public half alone
    const vkey = verifierKey(ORIGIN, key.publicKey)
    expect(openCheckpoint(cp.note, parseVerifierKey(vkey)).size).toBe(25)
    const copy = join(tmp.dir, 'copy.db')
    copyFileSync(path, copy)
    const r = await warrant(['audit', 'verify', '--log', copy, '--key', vkey, '--output', 'json'], { env: { SOFTHSM2_CONF: '/nonexistent' } })
    expect(r.code, r.stderr).toBe(0)
    expect(JSON.parse(r.stdout)).toMatchObject({ ok: true, events: 26, checkpoints: 2, verified_size: 26 })
  })
})
