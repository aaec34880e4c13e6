/**
 * Locating warrant's own native addons (built from `native/*.c` by node-gyp
 * when `npm ci` runs, into `build/Release/<name>.node` at the package root).
 */
import { existsSync } from 'node:fs'
import { createRequire } from 'node:module'
import { dirname, join } from 'node:path'
import { fileURLToPath } from 'node:url'

/** The path of `build/Release/<name>.node`, found by walking up from this module; undefined when it was never built. */
export function findNativeAddon(name: string): string | undefined {
  const marker = join('build', 'Release', `${name}.node`)
  let dir = dirname(fileURLToPath(import.meta.url))
  for (;;) {
    const candidate = join(dir, marker)
    if (existsSync(candidate)) return candidate
    const parent = dirname(dir)
    if (parent === dir) return undefined
    dir = parent
  }
}

/** Loads a native addon by path (CommonJS `require`, as Node loads `.node` files). */
export function requireNativeAddon(path: string): unknown {
  return createRequire(import.meta.url)(path)
}
