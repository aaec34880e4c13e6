/**
 * SoftHSM2 token provisioning (the quickstart's provisionSoftHsm and the tests'
 * createSoftHsmToken) never puts a PIN on a command line, where any local user
 * could read it from /proc/<pid>/cmdline. Two observers record every process
 * the provisioning starts: a wrapper for softhsm2-util first on PATH (it logs
 * its argv and runs the real tool), and wrappers around node:child_process's
 * exports (argv and environment of each spawn).
 */
import { chmodSync, mkdirSync, readFileSync, statSync, writeFileSync } from 'node:fs'
import { createRequire, syncBuiltinESMExports } from 'node:module'
import { join } from 'node:path'
import { afterAll, beforeAll, describe, expect, it } from 'vitest'
import { Pkcs11KeyManager } from '../../src/keymanager/pkcs11/index.js'
import { findSoftHsmModule, initSoftHsmToken, provisionSoftHsm, writeSoftHsmConf } from '../../src/dev/softhsm.js'
import { tempDir } from '../helpers/temp.js'
import { requireTools } from '../helpers/tools.js'

interface Spawned {
  via: string
  argv: string[]
  env: string[]
}

/** The builtin's CommonJS exports object (the ESM namespace is frozen); syncBuiltinESMExports() carries changes to ESM importers. */
const childProcess = createRequire(import.meta.url)('node:child_process') as typeof import('node:child_process')

const WRAPPED = ['spawn', 'spawnSync', 'execFile', 'execFileSync', 'exec', 'execSync', 'fork'] as const

describe.runIf(requireTools('softhsm2-util'))('SoftHSM2 provisioning keeps PINs off every command line', () => {
  const tmp = tempDir('whsmp-')
  const shimLog = join(tmp.dir, 'softhsm2-util.argv')
  const spawned: Spawned[] = []
  const originals = new Map<string, unknown>()
  const oldPath = process.env.PATH

  beforeAll(() => {
    const real = childProcess.execFileSync('sh', ['-c', 'command -v softhsm2-util'], { encoding: 'utf8' }).trim()
    const bin = join(tmp.dir, 'bin')
    mkdirSync(bin)
    // Each invocation: one line of NUL-separated arguments.
    writeFileSync(join(bin, 'softhsm2-util'), `#!/bin/sh\nprintf '%s\\0' "$@" >> '${shimLog}'\necho >> '${shimLog}'\nexec '${real}' "$@"\n`)
    chmodSync(join(bin, 'softhsm2-util'), 0o755)
    writeFileSync(shimLog, '')
    process.env.PATH = `${bin}:${oldPath ?? ''}`
    const cp = childProcess as unknown as Record<string, (...a: unknown[]) => unknown>
    for (const name of WRAPPED) {
      const orig = cp[name]!
      originals.set(name, orig)
      cp[name] = function (this: unknown, ...a: unknown[]) {
        const file = String(a[0])
        const args = Array.isArray(a[1]) ? (a[1] as unknown[]).map(String) : []
        const opts = (Array.isArray(a[1]) ? a[2] : a[1]) as { env?: Record<string, string | undefined> } | undefined
        spawned.push({ via: name, argv: [file, ...args], env: Object.entries(opts?.env ?? {}).map(([k, v]) => `${k}=${v ?? ''}`) })
        return orig.apply(this, a)
      }
    }
    syncBuiltinESMExports()
  })
  afterAll(() => {
    const cp = childProcess as unknown as Record<string, unknown>
    for (const [name, orig] of originals) cp[name] = orig
    syncBuiltinESMExports()
    process.env.PATH = oldPath
    tmp.cleanup()
  })

  const shimCalls = (): string[][] =>
    readFileSync(shimLog, 'utf8')
      .split('\n')
      .filter((l) => l !== '')
      .map((l) => l.split('\0').filter((x) => x !== ''))

  /** Every argument and environment entry of every process started so far. */
  const everything = (): string[] => [...spawned.flatMap((s) => [...s.argv, ...s.env]), ...shimCalls().flat()]

  it('initSoftHsmToken: neither PIN in any argv or environment; the token takes both PINs', async () => {
    const pin = 'user-pin-7d1f3a'
    const soPin = 'so-pin-a93c0e'
    const conf = join(tmp.dir, 'init', 'softhsm2.conf')
    mkdirSync(join(tmp.dir, 'init'))
    await writeSoftHsmConf(conf, join(tmp.dir, 'init', 'tokens'))
    const before = spawned.length
    await initSoftHsmToken(conf, { label: 'no-argv', pin, soPin })
    for (const arg of everything()) {
      expect(arg).not.toContain(pin)
      expect(arg).not.toContain(soPin)
      expect(arg).not.toMatch(/^--(so-)?pin$/)
    }
    expect(spawned.length).toBeGreaterThan(before) // the observer did see the provisioning child
    // The PINs are set: the SO PIN and the user PIN each log in (in a child, under this token's configuration).
    const check = `
      const p = new (require(${JSON.stringify(createRequire(import.meta.url).resolve('pkcs11js'))}).PKCS11)(); p.load(process.argv[1]); p.C_Initialize()
      const slot = p.C_GetSlotList(true).find((s) => p.C_GetTokenInfo(s).label.trim() === 'no-argv')
      const pins = JSON.parse(require('node:fs').readFileSync(0, 'utf8'))
      for (const [who, pin] of [[0, pins.so], [1, pins.user]]) { const s = p.C_OpenSession(slot, 6); p.C_Login(s, who, pin); p.C_Logout(s); p.C_CloseSession(s) }
      let wrong = ''; try { const s = p.C_OpenSession(slot, 6); p.C_Login(s, 1, 'wrong-pin') } catch (e) { wrong = e.message }
      p.C_Finalize(); process.stdout.write(wrong)`
    const out = (originals.get('execFileSync') as typeof childProcess.execFileSync)(process.execPath, ['-e', check, findSoftHsmModule()!], {
      env: { ...process.env, SOFTHSM2_CONF: conf },
      input: JSON.stringify({ so: soPin, user: pin }),
      encoding: 'utf8',
    })
    expect(out).toBe('CKR_PIN_INCORRECT')
  })

  it('provisionSoftHsm (the quickstart path): the random PIN is in the 0600 PIN file only; the key manager opens with it', async () => {
    const dataDir = join(tmp.dir, 'data')
    const hsm = await provisionSoftHsm(dataDir)
    const pin = readFileSync(hsm.pinFile, 'utf8').trim()
    expect(pin).toMatch(/^[0-9a-f]{32}$/)
    expect(statSync(hsm.pinFile).mode & 0o777).toBe(0o600)
    for (const arg of everything()) {
      expect(arg).not.toContain(pin)
      expect(arg).not.toMatch(/^--(so-)?pin$/)
    }
    expect(shimCalls().every((args) => !args.includes('--init-token'))).toBe(true)
    process.env.SOFTHSM2_CONF = hsm.confPath
    const km = await Pkcs11KeyManager.open({ module_path: hsm.modulePath, token_label: hsm.tokenLabel, pin, session_pool_size: 1 })
    try {
      const key = await km.generateKey('probe', 'ec-p256')
      expect((await key.sign(Buffer.from('x'), 'ES256')).length).toBe(64)
    } finally {
      await km.close()
    }
    // Idempotent: a second call reuses the token and its PIN file.
    expect((await provisionSoftHsm(dataDir)).pinFile).toBe(hsm.pinFile)
    expect(readFileSync(hsm.pinFile, 'utf8').trim()).toBe(pin)
  })
})
