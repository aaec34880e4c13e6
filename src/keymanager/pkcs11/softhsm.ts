/**
 * SoftHSM2 provisioning: a software PKCS#11 token for development, the
 * quickstart and tests. SoftHSM reads its configuration file from the
 * SOFTHSM2_CONF environment variable when the module is C_Initialize'd, so
 * set `process.env.SOFTHSM2_CONF = confPath` before opening a Pkcs11KeyManager.
 */
import { execFile } from 'node:child_process'
import { randomBytes } from 'node:crypto'
import { existsSync } from 'node:fs'
import { chmod, mkdir, readFile, writeFile } from 'node:fs/promises'
import { join, resolve } from 'node:path'
import { promisify } from 'node:util'
import { IdentityError } from '../../errors/index.js'

const execFileAsync = promisify(execFile)

/** Where Debian/Ubuntu (and a few others) install the SoftHSM2 PKCS#11 module. */
export const SOFTHSM_MODULE_PATHS: readonly string[] = [
  '/usr/lib/softhsm/libsofthsm2.so',
  '/usr/lib/x86_64-linux-gnu/softhsm/libsofthsm2.so',
  '/usr/lib/aarch64-linux-gnu/softhsm/libsofthsm2.so',
  '/usr/lib64/pkcs11/libsofthsm2.so',
  '/usr/lib/pkcs11/libsofthsm2.so',
  '/usr/local/lib/softhsm/libsofthsm2.so',
  '/opt/homebrew/lib/softhsm/libsofthsm2.so',
]

/** The SoftHSM2 module path, or undefined when SoftHSM2 is not installed. `SOFTHSM2_MODULE` overrides. */
export function findSoftHsmModule(): string | undefined {
  const override = process.env.SOFTHSM2_MODULE
  if (override !== undefined && override !== '' && existsSync(override)) return override
  return SOFTHSM_MODULE_PATHS.find((p) => existsSync(p))
}

/** Writes a softhsm2.conf whose token directory is `tokenDir` (created, mode 0700). */
export async function writeSoftHsmConf(confPath: string, tokenDir: string): Promise<void> {
  await mkdir(tokenDir, { recursive: true, mode: 0o700 })
  const conf = [
    '# written by warrant',
    `directories.tokendir = ${resolve(tokenDir)}`,
    'objectstore.backend = file',
    'log.level = ERROR',
    'slots.removable = false',
    '',
  ].join('\n')
  await writeFile(confPath, conf, { mode: 0o600 })
}

async function softhsmUtil(confPath: string, args: string[]): Promise<string> {
  try {
    const { stdout } = await execFileAsync('softhsm2-util', args, {
      env: { ...process.env, SOFTHSM2_CONF: confPath },
      encoding: 'utf8',
    })
    return stdout
  } catch (cause) {
    const e = cause as NodeJS.ErrnoException & { stderr?: string }
    if (e.code === 'ENOENT') throw new IdentityError('ERR_HSM_UNAVAILABLE', 'softhsm2-util is not installed', { cause })
    // Never echo the command line: it carries the PINs.
    const stderr = typeof e.stderr === 'string' ? e.stderr.trim().slice(0, 300) : ''
    throw new IdentityError('ERR_HSM_UNAVAILABLE', `softhsm2-util ${args[0] ?? ''} failed${stderr ? `: ${stderr}` : ''}`)
  }
}

/** Labels of the initialized tokens visible under `confPath`. */
export async function listSoftHsmTokenLabels(confPath: string): Promise<string[]> {
  const out = await softhsmUtil(confPath, ['--show-slots'])
  const labels: string[] = []
  for (const m of out.matchAll(/^\s*Label:\s*(.*?)\s*$/gm)) {
    if (m[1] !== undefined && m[1] !== '') labels.push(m[1])
  }
  return labels
}

/** Initializes a token with `label` in the first free slot. */
export async function initSoftHsmToken(confPath: string, opts: { label: string; pin: string; soPin: string }): Promise<void> {
  await softhsmUtil(confPath, ['--init-token', '--free', '--label', opts.label, '--pin', opts.pin, '--so-pin', opts.soPin])
}

export interface ProvisionedSoftHsm {
  modulePath: string
  confPath: string
  pinFile: string
  tokenLabel: string
}

/**
 * Sets up (or reuses) a SoftHSM2 token under `<dataDir>/hsm/`: `softhsm2.conf`,
 * `tokens/`, and a random user PIN in `pin` (mode 0600). Idempotent: an
 * existing token with the label and its PIN file are reused.
 */
export async function provisionSoftHsm(dataDir: string, opts: { tokenLabel?: string } = {}): Promise<ProvisionedSoftHsm> {
  const modulePath = findSoftHsmModule()
  if (modulePath === undefined) {
    throw new IdentityError('ERR_HSM_UNAVAILABLE', 'SoftHSM2 is not installed (no libsofthsm2.so found); install the softhsm2 package')
  }
  const tokenLabel = opts.tokenLabel ?? 'warrant'
  const hsmDir = resolve(dataDir, 'hsm')
  const confPath = join(hsmDir, 'softhsm2.conf')
  const tokenDir = join(hsmDir, 'tokens')
  const pinFile = join(hsmDir, 'pin')
  await mkdir(hsmDir, { recursive: true, mode: 0o700 })
  if (!existsSync(confPath)) await writeSoftHsmConf(confPath, tokenDir)
  else await mkdir(tokenDir, { recursive: true, mode: 0o700 })

  const haveToken = (await listSoftHsmTokenLabels(confPath)).includes(tokenLabel)
  if (haveToken) {
    if (!existsSync(pinFile)) {
      throw new IdentityError('ERR_HSM_UNAVAILABLE', `SoftHSM token "${tokenLabel}" exists but its PIN file ${pinFile} is missing`)
    }
    await chmod(pinFile, 0o600)
    const pin = (await readFile(pinFile, 'utf8')).trim()
    if (pin === '') throw new IdentityError('ERR_HSM_UNAVAILABLE', `PIN file ${pinFile} is empty`)
    return { modulePath, confPath, pinFile, tokenLabel }
  }
  const pin = randomBytes(16).toString('hex')
  const soPin = randomBytes(16).toString('hex')
  await writeFile(pinFile, `${pin}\n`, { mode: 0o600 })
  await chmod(pinFile, 0o600)
  await initSoftHsmToken(confPath, { label: tokenLabel, pin, soPin })
  return { modulePath, confPath, pinFile, tokenLabel }
}
