import { join } from 'node:path'
import { findSoftHsmModule, initSoftHsmToken, writeSoftHsmConf } from '../../src/dev/softhsm.js'

export interface SoftHsmToken {
  confPath: string
  modulePath: string
  pin: string
  soPin: string
  tokenLabel: string
  /** `{ SOFTHSM2_CONF }`: merge into process.env (before the module is initialized) or a child's env. */
  env: { SOFTHSM2_CONF: string }
}

/**
 * Initializes a fresh SoftHSM2 token in its own configuration under `dir`.
 * SoftHSM reads SOFTHSM2_CONF at C_Initialize: set `process.env.SOFTHSM2_CONF`
 * to `confPath` before opening a key manager in this process.
 */
export async function createSoftHsmToken(opts: { dir: string; label?: string; pin?: string; soPin?: string }): Promise<SoftHsmToken> {
  const modulePath = findSoftHsmModule()
  if (modulePath === undefined) throw new Error('SoftHSM2 module (libsofthsm2.so) not found; install softhsm2')
  const confPath = join(opts.dir, 'softhsm2.conf')
  await writeSoftHsmConf(confPath, join(opts.dir, 'tokens'))
  const tokenLabel = opts.label ?? 'warrant-test'
  const pin = opts.pin ?? '1234'
  const soPin = opts.soPin ?? '5678'
  await initSoftHsmToken(confPath, { label: tokenLabel, pin, soPin })
  return { confPath, modulePath, pin, soPin, tokenLabel, env: { SOFTHSM2_CONF: confPath } }
}
