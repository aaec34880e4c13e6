/**
 * Relative file paths in plugin blocks resolve against the directory of the
 * config file that holds them, not the process's working directory: before a
 * block reaches its plugin's `parseConfig`, every string (or list of strings)
 * under a key ending in `_path`, `_paths`, `_file`, `_files` or `_dir` that is
 * not absolute is made absolute against `baseDir`. Nested tables are walked.
 *
 * Two kinds of value are left alone, as documented in the README:
 * - state locations under `data_dir`, named by `dataDirRelative` (the disk key
 *   manager's `keys_path`): the plugin resolves them against its data dir;
 * - a `module_path` without a `/` (e.g. `libsofthsm2.so`): the dynamic
 *   loader looks it up in its search path, as dlopen(3) does.
 */
import { isAbsolute, resolve } from 'node:path'

const PATH_KEY = /(?:_path|_paths|_file|_files|_dir)$/

export function resolvePluginPaths(raw: unknown, baseDir: string, opts: { dataDirRelative?: readonly string[] } = {}): unknown {
  if (typeof raw !== 'object' || raw === null || Array.isArray(raw)) return raw
  const keep = new Set(opts.dataDirRelative ?? [])
  const abs = (v: unknown, key: string): unknown => {
    if (typeof v !== 'string' || v === '' || isAbsolute(v)) return v
    if (key === 'module_path' && !v.includes('/')) return v
    return resolve(baseDir, v)
  }
  const walk = (obj: Record<string, unknown>, top: boolean): Record<string, unknown> => {
    const out: Record<string, unknown> = {}
    for (const [k, v] of Object.entries(obj)) {
      if (top && keep.has(k)) out[k] = v
      else if (PATH_KEY.test(k)) out[k] = Array.isArray(v) ? v.map((x) => abs(x, k)) : abs(v, k)
      else if (typeof v === 'object' && v !== null && !Array.isArray(v)) out[k] = walk(v as Record<string, unknown>, false)
      else out[k] = v
    }
    return out
  }
  return walk(raw as Record<string, unknown>, true)
}

/** Keys of each plugin that stay relative to the data directory, by `<kind>.<name>`. */
export const DATA_DIR_RELATIVE: Readonly<Record<string, readonly string[]>> = {
  'key_manager.disk': ['keys_path'],
}

/** `resolvePluginPaths` for the block of plugin `name` of kind `kind`. */
export function resolvePluginBlockPaths(kind: string, name: string, raw: unknown, baseDir: string): unknown {
  const dataDirRelative = DATA_DIR_RELATIVE[`${kind}.${name}`]
  return resolvePluginPaths(raw, baseDir, dataDirRelative ? { dataDirRelative } : {})
}
