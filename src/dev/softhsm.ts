/**
 * SoftHSM2 provisioning: a software PKCS#11 token for development, the
 * quickstart and tests. SoftHSM reads its configuration file from the
 * SOFTHSM2_CONF environment variable when the module is C_Initialize'd, so
 * set `process.env.SOFTHSM2_CONF = confPath` before opening a Pkcs11KeyManager.
 */
import { execFile, spawn } from 'node:child_process'
import { randomBytes } from 'node:crypto'
import { existsSync } from 'node:fs'
import { chmod, mkdir, readFile, writeFile } from 'node:fs/promises'
import { createRequire } from 'node:module'
import { join, resolve } from 'node:path'
import { promisify } from 'node:util'
import { IdentityError } from '../errors/index.js'

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

/** Runs softhsm2-util for commands that carry no secret (never a PIN: argv is visible to every local user). */
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
    const stderr = typeof e.stderr === 'string' ? e.stderr.trim().slice(0, 300) : ''
    throw new IdentityError('ERR_HSM_UNAVAILABLE', `softhsm2-util ${args[0] ?? ''} failed${stderr ? `: ${stderr}` : ''}`)
  }
}

/**
 * Initializes the first free SoftHSM slot through PKCS#11 (C_InitToken, then
 * C_Login as SO and C_InitPIN), in a child process: SoftHSM reads
 * SOFTHSM2_CONF at C_Initialize, and this process may already hold the module
 * initialized for another configuration. The PINs reach the child on its stdin,
 * never in its argv or environment. Its argv is the script below and nothing else.
 */
const INIT_TOKEN_SCRIPT = `
const input = JSON.parse(require('node:fs').readFileSync(0, 'utf8'))
const pkcs11js = require(input.pkcs11js)
const p = new pkcs11js.PKCS11()
const initialized = (s) => (p.C_GetTokenInfo(s).flags & pkcs11js.CKF_TOKEN_INITIALIZED) !== 0
try {
  p.load(input.module)
  p.C_Initialize()
  try {
    const free = p.C_GetSlotList(true).find((s) => !initialized(s))
    if (free === undefined) throw new Error('no free slot')
    p.C_InitToken(free, input.soPin, input.label.padEnd(32, ' '))
    const slot = p.C_GetSlotList(true).find((s) => initialized(s) && p.C_GetTokenInfo(s).label.replace(/[\\s\\0]+$/, '') === input.label)
    if (slot === undefined) throw new Error('initialized token not found')
    const session = p.C_OpenSession(slot, pkcs11js.CKF_SERIAL_SESSION | pkcs11js.CKF_RW_SESSION)
    p.C_Login(session, pkcs11js.CKU_SO, input.soPin)
    p.C_InitPIN(session, input.pin)
    p.C_Logout(session)
    p.C_CloseSession(session)
  } finally {
    p.C_Finalize()
  }
} catch (err) {
  // PKCS#11 errors are CKR_* names; nothing here carries a PIN.
  process.stderr.write(String(err && err.message).slice(0, 200))
  process.exitCode = 1
}
`

function runInitToken(confPath: string, input: Record<string, string>): Promise<void> {
  return new Promise((resolvePromise, reject) => {
    const child = spawn(process.execPath, ['-e', INIT_TOKEN_SCRIPT], {
      env: { ...process.env, SOFTHSM2_CONF: confPath },
      stdio: ['pipe', 'ignore', 'pipe'],
    })
    let stderr = ''
    child.stderr.setEncoding('utf8').on('data', (d: string) => {
      if (stderr.length < 300) stderr += d
    })
    child.on('error', (cause) => reject(new IdentityError('ERR_HSM_UNAVAILABLE', 'cannot start the SoftHSM token initialization', { cause })))
    child.on('close', (code) => {
      if (code === 0) resolvePromise()
      else reject(new IdentityError('ERR_HSM_UNAVAILABLE', `SoftHSM token initialization failed${stderr ? `: ${stderr.trim().slice(0, 200)}` : ''}`))
    })
    child.stdin.on('error', () => undefined) // a child that died early reports through 'close'
    child.stdin.end(JSON.stringify(input))
  })
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

/**
 * Initializes a token with `label` (printable ASCII, at most 32 characters) in
 * the first free slot, with the SO and user PINs set through PKCS#11: no PIN is
 * ever on a command line (softhsm2-util --pin would show it to every local user).
 */
export async function initSoftHsmToken(confPath: string, opts: { label: string; pin: string; soPin: string }): Promise<void> {
  if (!/^[\x20-\x7e]{1,32}$/.test(opts.label) || opts.label.trim() !== opts.label) {
    throw new IdentityError('ERR_INVALID_ARGUMENT', 'SoftHSM token label must be 1-32 printable ASCII characters without surrounding spaces')
  }
  if (opts.pin.length < 4 || opts.soPin.length < 4) throw new IdentityError('ERR_INVALID_ARGUMENT', 'SoftHSM PINs must have at least 4 characters')
  const modulePath = findSoftHsmModule()
  if (modulePath === undefined) {
    throw new IdentityError('ERR_HSM_UNAVAILABLE', 'SoftHSM2 is not installed (no libsofthsm2.so found); install the softhsm2 package')
  }
  const pkcs11js = createRequire(import.meta.url).resolve('pkcs11js')
  await runInitToken(confPath, { module: modulePath, pkcs11js, label: opts.label, pin: opts.pin, soPin: opts.soPin })
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
