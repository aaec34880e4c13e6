/**
 * The pkcs11 key_manager plugin end to end: a SoftHSM2 token provisioned the
 * way the quickstart does it (provisionSoftHsm), then created from a file-style
 * config block with pin_file / pin_env.
 */
import { chmodSync, readFileSync, statSync } from 'node:fs'
import { afterAll, beforeAll, describe, expect, it } from 'vitest'
import { pkcs11KeyManagerPlugin } from '../../src/keymanager/index.js'
import { listSoftHsmTokenLabels, provisionSoftHsm, type ProvisionedSoftHsm } from '../../src/dev/softhsm.js'
import { TrustDomain } from '../../src/spiffe/trust-domain.js'
import { captureLogger } from '../helpers/capture-logger.js'
import { FakeClock } from '../helpers/fake-clock.js'
import { tempDir } from '../helpers/temp.js'
import { requireTools } from '../helpers/tools.js'
import { verifySignature } from '../conformance/key-manager.js'

describe.runIf(requireTools('softhsm2-util'))('pkcs11 key_manager plugin with a provisioned SoftHSM2 token', () => {
  let tmp: { dir: string; cleanup: () => void }
  let hsm: ProvisionedSoftHsm

  beforeAll(async () => {
    tmp = tempDir('whp-')
    hsm = await provisionSoftHsm(tmp.dir)
    process.env.SOFTHSM2_CONF = hsm.confPath
  })
  afterAll(() => tmp?.cleanup())

  const deps = (log = captureLogger()) => ({ log, clock: new FakeClock(), trustDomain: TrustDomain.fromString('example.org'), dataDir: tmp.dir })

  it('provisions config, token and a 0600 PIN file under <dataDir>/hsm', async () => {
    expect(hsm.confPath).toBe(`${tmp.dir}/hsm/softhsm2.conf`)
    expect(hsm.pinFile).toBe(`${tmp.dir}/hsm/pin`)
    expect(hsm.tokenLabel).toBe('warrant')
    expect(statSync(hsm.pinFile).mode & 0o777).toBe(0o600)
    expect(readFileSync(hsm.pinFile, 'utf8').trim()).toMatch(/^[0-9a-f]{32}$/)
    expect(readFileSync(hsm.confPath, 'utf8')).toContain(`directories.tokendir = ${tmp.dir}/hsm/tokens`)
    expect(await listSoftHsmTokenLabels(hsm.confPath)).toEqual(['warrant'])
  })

  it('creates a working key manager from pin_file and finds its keys again after re-provisioning', async () => {
    const log = captureLogger()
    const config = pkcs11KeyManagerPlugin.parseConfig({ module_path: hsm.modulePath, token_label: hsm.tokenLabel, pin_file: 'hsm/pin' })
    const km = await pkcs11KeyManagerPlugin.create(config, deps(log))
    const key = await km.generateKey('x509-ca-a', 'ec-p256')
    await km.close?.()

    const pinBefore = readFileSync(hsm.pinFile, 'utf8')
    const again = await provisionSoftHsm(tmp.dir)
    expect(again).toEqual(hsm)
    expect(readFileSync(hsm.pinFile, 'utf8')).toBe(pinBefore)
    expect(await listSoftHsmTokenLabels(hsm.confPath)).toEqual(['warrant'])

    const km2 = await pkcs11KeyManagerPlugin.create(config, deps(log))
    try {
      const got = await km2.getKey('x509-ca-a')
      const sig = await got.sign(Buffer.from('hi'), 'ES256')
      expect(verifySignature(key.publicKey, 'ES256', Buffer.from('hi'), sig)).toBe(true)
    } finally {
      await km2.close?.()
    }
    expect(JSON.stringify(log.lines)).not.toContain(pinBefore.trim())
  })

  it('reads the PIN from pin_env and warns about a group-readable pin_file', async () => {
    const pin = readFileSync(hsm.pinFile, 'utf8').trim()
    process.env.WARRANT_E2E_HSM_PIN = pin
    const km = await pkcs11KeyManagerPlugin.create(
      pkcs11KeyManagerPlugin.parseConfig({ module_path: hsm.modulePath, token_label: hsm.tokenLabel, pin_env: 'WARRANT_E2E_HSM_PIN', session_pool_size: 2 }),
      deps(),
    )
    expect((await km.getKey('x509-ca-a')).type).toBe('ec-p256')
    await km.close?.()
    delete process.env.WARRANT_E2E_HSM_PIN

    chmodSync(hsm.pinFile, 0o640)
    const log = captureLogger()
    const km2 = await pkcs11KeyManagerPlugin.create(
      pkcs11KeyManagerPlugin.parseConfig({ module_path: hsm.modulePath, token_label: hsm.tokenLabel, pin_file: hsm.pinFile }),
      deps(log),
    )
    await km2.close?.()
    chmodSync(hsm.pinFile, 0o600)
    expect(log.lines.filter((l) => l.level === 'warn').map((l) => l.msg)).toContain('PIN file is readable or writable by group or others; chmod 600 it')
    expect(JSON.stringify(log.lines)).not.toContain(pin)
  })
})
