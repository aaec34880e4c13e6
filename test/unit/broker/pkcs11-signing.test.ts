import pkcs11js from 'pkcs11js'
import { createLocalJWKSet, decodeProtectedHeader, jwtVerify } from 'jose'
import { afterAll, beforeAll, describe, expect, it } from 'vitest'
import { Pkcs11KeyManager } from '../../../src/keymanager/pkcs11/index.js'
import { createSoftHsmToken, type SoftHsmToken } from '../../helpers/softhsm.js'
import { tempDir } from '../../helpers/temp.js'
import { requireTools } from '../../helpers/tools.js'
import { A, cc, client, dpop, fixture, ISSUER, type Fixture } from './fixture.js'

/**
 * The broker's signing key in SoftHSM2 (as in the quickstart): generated in
 * the token, sensitive and never extractable; tokens signed through PKCS#11
 * verify with jose against the broker's JWKS.
 */
describe.runIf(requireTools('softhsm2-util'))('broker signing key on SoftHSM2', () => {
  let tmp: { dir: string; cleanup: () => void }
  let token: SoftHsmToken
  let km: Pkcs11KeyManager
  let f: Fixture

  beforeAll(async () => {
    tmp = tempDir('wbh-')
    token = await createSoftHsmToken({ dir: tmp.dir, label: 'broker-test', pin: '24681357' })
    process.env.SOFTHSM2_CONF = token.confPath
    km = await Pkcs11KeyManager.open({ module_path: token.modulePath, token_label: token.tokenLabel, pin: token.pin, key_label_prefix: 'wb-' })
    f = await fixture({ km })
  }, 60_000)
  afterAll(async () => {
    await f?.cleanup()
    await km?.close()
    tmp?.cleanup()
  })

  it('signs tokens that verify with jose against the JWKS', async () => {
    const t = await f.task()
    const r = await f.svc.token(cc(t), client(A), dpop())
    const jwks = createLocalJWKSet(await f.svc.jwks())
    const { payload, protectedHeader } = await jwtVerify(r.access_token, jwks, {
      issuer: ISSUER,
      typ: 'at+jwt',
      algorithms: ['ES256'],
      currentDate: new Date(f.clock.now()),
    })
    expect(payload.sub).toBe(A)
    expect(protectedHeader.kid).toBe(f.svc.keys.active().kid)
    expect(decodeProtectedHeader(r.access_token).alg).toBe('ES256')
  })

  it('keeps the signing key in the token: sensitive, never extractable, CKA_VALUE refused', () => {
    const keyId = f.svc.keys.records().find((r) => r.state === 'current')!.keyId
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
        { type: pkcs11js.CKA_LABEL, value: `wb-${keyId}` },
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
  })
})
