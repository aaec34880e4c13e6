/**
 * Built-in key_manager plugin definitions: memory, disk, pkcs11. Each
 * `parseConfig` validates the raw (snake_case, file) config block strictly and
 * reports every issue with its path; `create` resolves paths against the
 * plugin's dataDir and, for pkcs11, reads the PIN from `pin_file` or
 * `pin_env` (never inline, never logged).
 */
import { statSync, readFileSync } from 'node:fs'
import { isAbsolute, resolve } from 'node:path'
import { z } from 'zod'
import { configError, type ConfigIssue } from '../common/config/issues.js'
import { F } from '../common/log/logger.js'
import { IdentityError } from '../errors/index.js'
import type { PluginDefinition } from '../plugin/contracts.js'
import { DiskKeyManager } from './disk/index.js'
import type { KeyManager } from './key-manager.js'
import { MemoryKeyManager } from './memory/index.js'
import { Pkcs11KeyManager, DEFAULT_KEY_LABEL_PREFIX, DEFAULT_SESSION_POOL_SIZE } from './pkcs11/index.js'

export const MemoryConfigSchema = z.strictObject({})
export type MemoryFileConfig = z.infer<typeof MemoryConfigSchema>

export const DiskConfigSchema = z.strictObject({
  /** Key directory; relative paths are resolved against the plugin's dataDir. */
  keys_path: z.string().min(1, 'must not be empty'),
})
export type DiskFileConfig = z.infer<typeof DiskConfigSchema>

/** Strict parse reporting every issue; an unknown key is reported at its own path (`pin: unknown key`). */
function parseStrict<T>(schema: z.ZodType<T>, raw: unknown, name: string, crossChecks?: (raw: Record<string, unknown>) => ConfigIssue[]): T {
  const r = schema.safeParse(raw)
  // Cross-field rules run even when fields have errors, so one pass reports everything.
  const cross = crossChecks !== undefined && typeof raw === 'object' && raw !== null ? crossChecks(raw as Record<string, unknown>) : []
  if (r.success && cross.length === 0) return r.data
  const issues: ConfigIssue[] = []
  for (const i of r.success ? [] : r.error.issues) {
    const base = i.path.map(String)
    if (i.code === 'unrecognized_keys') {
      for (const k of i.keys) issues.push({ path: [...base, k].join('.'), message: 'unknown key' })
    } else {
      issues.push({ path: base.join('.') || '(root)', message: i.message })
    }
  }
  issues.push(...cross)
  throw configError(issues, `key_manager "${name}" configuration`)
}

const ENV_NAME = /^[A-Za-z_][A-Za-z0-9_]*$/

export const Pkcs11ConfigSchema = z.strictObject({
  module_path: z.string().min(1, 'must not be empty'),
  token_label: z.string().min(1, 'must not be empty').max(32, 'a PKCS#11 token label has at most 32 characters').optional(),
  slot: z.number().int('must be an integer').nonnegative('must not be negative').optional(),
  key_label_prefix: z.string().max(64, 'at most 64 characters').optional(),
  pin_file: z.string().min(1, 'must not be empty').optional(),
  pin_env: z.string().regex(ENV_NAME, 'must be an environment variable name').optional(),
  session_pool_size: z.number().int('must be an integer').min(1, 'must be at least 1').max(64, 'must be at most 64').optional(),
  /** auto (default) | sync | async: see Pkcs11Config.sign_mode. */
  sign_mode: z.enum(['auto', 'sync', 'async']).optional(),
})

/** Cross-field rules of the pkcs11 block (also enforced for the typed config by Pkcs11KeyManager.open). */
function pkcs11CrossChecks(c: Record<string, unknown>): ConfigIssue[] {
  const issues: ConfigIssue[] = []
  if ((c.token_label === undefined) === (c.slot === undefined)) {
    issues.push({ path: 'token_label', message: 'set exactly one of token_label and slot' })
  }
  if ((c.pin_file === undefined) === (c.pin_env === undefined)) {
    issues.push({ path: 'pin_file', message: 'set exactly one of pin_file and pin_env (the PIN is never written inline)' })
  }
  return issues
}

export type Pkcs11FileConfig = z.infer<typeof Pkcs11ConfigSchema>

export const memoryKeyManagerPlugin: PluginDefinition<MemoryFileConfig, KeyManager> = {
  type: 'key_manager',
  name: 'memory',
  volatile: true,
  parseConfig: (raw) => parseStrict(MemoryConfigSchema, raw ?? {}, 'memory'),
  create: async () => new MemoryKeyManager(),
}

export const diskKeyManagerPlugin: PluginDefinition<DiskFileConfig, KeyManager> = {
  type: 'key_manager',
  name: 'disk',
  dataDirRelativeKeys: ['keys_path'],
  parseConfig: (raw) => parseStrict(DiskConfigSchema, raw, 'disk'),
  create: async (config, deps) => new DiskKeyManager({ dir: resolve(deps.dataDir, config.keys_path) }),
}

export const pkcs11KeyManagerPlugin: PluginDefinition<Pkcs11FileConfig, KeyManager> = {
  type: 'key_manager',
  name: 'pkcs11',
  parseConfig: (raw) => parseStrict(Pkcs11ConfigSchema, raw, 'pkcs11', pkcs11CrossChecks),
  create: async (config, deps) => {
    const log = deps.log.child({ [F.PLUGIN_TYPE]: 'key_manager', [F.PLUGIN_NAME]: 'pkcs11' })
    const pin = resolvePin(config, deps.dataDir, (path) => log.warn({ [F.PATH]: path }, 'PIN file is readable or writable by group or others; chmod 600 it'))
    return Pkcs11KeyManager.open(
      {
        module_path: config.module_path,
        ...(config.token_label !== undefined ? { token_label: config.token_label } : {}),
        ...(config.slot !== undefined ? { slot: config.slot } : {}),
        key_label_prefix: config.key_label_prefix ?? DEFAULT_KEY_LABEL_PREFIX,
        session_pool_size: config.session_pool_size ?? DEFAULT_SESSION_POOL_SIZE,
        ...(config.sign_mode !== undefined ? { sign_mode: config.sign_mode } : {}),
        pin,
      },
      { log },
    )
  },
}

/**
 * Reads the PIN from `pin_file` (resolved against dataDir; must exist; a mode
 * looser than 0600 only warns) or from the `pin_env` variable. Trailing
 * newlines are dropped. Errors name the file or variable, never the PIN.
 */
export function resolvePin(config: Pick<Pkcs11FileConfig, 'pin_file' | 'pin_env'>, dataDir: string, warnMode: (path: string) => void): string {
  if (config.pin_file !== undefined) {
    const path = isAbsolute(config.pin_file) ? config.pin_file : resolve(dataDir, config.pin_file)
    let text: string
    try {
      const st = statSync(path)
      if (!st.isFile())
        throw new IdentityError('ERR_CONFIG_INVALID', `pin_file ${path} is not a file`, { details: { issues: [{ path: 'pin_file', message: 'not a file' }] } })
      if ((st.mode & 0o077) !== 0) warnMode(path)
      text = readFileSync(path, 'utf8')
    } catch (cause) {
      if (cause instanceof IdentityError) throw cause
      const code = (cause as NodeJS.ErrnoException).code
      const message = code === 'ENOENT' ? 'does not exist' : `cannot be read (${code ?? 'error'})`
      throw new IdentityError('ERR_CONFIG_INVALID', `pin_file ${path} ${message}`, { details: { issues: [{ path: 'pin_file', message }] } })
    }
    const pin = text.replace(/[\r\n]+$/, '')
    if (pin === '')
      throw new IdentityError('ERR_CONFIG_INVALID', `pin_file ${path} is empty`, { details: { issues: [{ path: 'pin_file', message: 'is empty' }] } })
    return pin
  }
  if (config.pin_env !== undefined) {
    const pin = process.env[config.pin_env]
    if (pin === undefined || pin === '') {
      throw new IdentityError('ERR_CONFIG_INVALID', `environment variable ${config.pin_env} (pin_env) is not set`, {
        details: { issues: [{ path: 'pin_env', message: 'variable is not set' }] },
      })
    }
    return pin
  }
  throw new TypeError('resolvePin: neither pin_file nor pin_env is set')
}

/** A key manager plugin definition with its config type erased (for lists and catalogs). */
// eslint-disable-next-line @typescript-eslint/no-explicit-any -- PluginDefinition is invariant in its config type
export type AnyKeyManagerPlugin = PluginDefinition<any, KeyManager>

/** Every built-in key manager plugin. */
export const keyManagerPlugins: readonly AnyKeyManagerPlugin[] = [memoryKeyManagerPlugin, diskKeyManagerPlugin, pkcs11KeyManagerPlugin]

export type { KeyManager, ManagedKey, KeyType, SealingKey, SealingKeyManager } from './key-manager.js'
export { KEY_TYPES, canSeal } from './key-manager.js'
export { MAX_SEALED_PLAINTEXT, SEALED_VERSION } from './sealed-envelope.js'
export { MemoryKeyManager } from './memory/index.js'
export { DiskKeyManager } from './disk/index.js'
export { Pkcs11KeyManager, type Pkcs11Config } from './pkcs11/index.js'
