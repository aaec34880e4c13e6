import { readdirSync, readFileSync, statSync } from 'node:fs'
import { dirname, join, relative, resolve } from 'node:path'
import { fileURLToPath } from 'node:url'
import { describe, expect, it } from 'vitest'

/**
 * The layering rules of style.md §2, enforced by scanning import specifiers:
 * src/spiffe is pure, server/ and agent/ never import each other, attestors
 * depend only on the core and the plugin contracts, pino lives only in cli/.
 */
const root = resolve(dirname(fileURLToPath(import.meta.url)), '..', '..')

function files(dir: string): string[] {
  return readdirSync(dir).flatMap((f) => {
    const p = join(dir, f)
    if (statSync(p).isDirectory()) return files(p)
    return p.endsWith('.ts') ? [p] : []
  })
}

const IMPORT_RE = /(?:^|\n)\s*(?:import|export)\s[^'"]*?from\s+['"]([^'"]+)['"]|import\(\s*['"]([^'"]+)['"]\s*\)/g

function imports(file: string): { spec: string; target: string | undefined }[] {
  const text = readFileSync(file, 'utf8')
  const out: { spec: string; target: string | undefined }[] = []
  let m: RegExpExecArray | null
  while ((m = IMPORT_RE.exec(text)) !== null) {
    const spec = (m[1] ?? m[2])!
    out.push({ spec, target: spec.startsWith('.') ? relative(root, resolve(dirname(file), spec)) : undefined })
  }
  return out
}

const layer = (rel: string): string => {
  const parts = rel.split('/')
  if (parts[0] === 'attestors') return 'attestors'
  if (parts[0] === 'src') return parts[1] === undefined ? 'src' : parts[1]!.replace(/\.ts$/, '')
  return parts[0]!
}

/** For each layer, the internal layers it may import. */
const ALLOWED: Record<string, readonly string[]> = {
  errors: ['errors'],
  spiffe: ['spiffe', 'errors'],
  common: ['common', 'spiffe', 'errors'],
  plugin: ['plugin', 'common', 'spiffe', 'errors'],
  keymanager: ['keymanager', 'plugin', 'common', 'spiffe', 'errors'],
  tpm: ['tpm', 'common', 'spiffe', 'errors'],
  gen: ['gen'],
  server: ['server', 'gen', 'keymanager', 'plugin', 'common', 'spiffe', 'errors'],
  agent: ['agent', 'gen', 'keymanager', 'plugin', 'common', 'spiffe', 'errors'],
  attestors: ['attestors', 'plugin', 'common', 'spiffe', 'errors', 'tpm'],
  cli: ['cli', 'server', 'agent', 'gen', 'keymanager', 'plugin', 'common', 'spiffe', 'errors', 'attestors', 'tpm'],
}

/** Node built-ins that do I/O: not allowed in the pure SPIFFE core. */
const IO_MODULES = ['node:fs', 'fs', 'node:net', 'net', 'node:http', 'node:https', 'node:child_process', 'node:dgram', 'node:tls']

const all = [...files(join(root, 'src')), ...files(join(root, 'attestors'))].map((f) => ({ file: relative(root, f), imports: imports(f) }))

describe('architecture', () => {
  it('scans a real tree', () => {
    expect(all.length).toBeGreaterThan(50)
    expect(all.some((f) => f.file.startsWith('src/server/') && f.imports.length > 0)).toBe(true)
  })

  it('every internal import stays within the allowed layers', () => {
    const violations: string[] = []
    for (const f of all) {
      const from = layer(f.file)
      const allowed = ALLOWED[from]
      if (!allowed) continue
      for (const i of f.imports) {
        if (!i.target) continue
        const to = layer(i.target)
        if (!allowed.includes(to)) violations.push(`${f.file} (${from}) imports ${i.spec} (${to})`)
      }
    }
    expect(violations).toEqual([])
  })

  it('server/ and agent/ never import each other', () => {
    const bad = all.flatMap((f) =>
      f.imports
        .filter((i) => i.target && ((layer(f.file) === 'server' && layer(i.target) === 'agent') || (layer(f.file) === 'agent' && layer(i.target) === 'server')))
        .map((i) => `${f.file} → ${i.spec}`),
    )
    expect(bad).toEqual([])
  })

  it('src/spiffe does no I/O and loads no gRPC or logging library', () => {
    const bad = all
      .filter((f) => layer(f.file) === 'spiffe')
      .flatMap((f) => f.imports.filter((i) => IO_MODULES.includes(i.spec) || i.spec.startsWith('@grpc/') || i.spec === 'pino').map((i) => `${f.file} → ${i.spec}`))
    expect(bad).toEqual([])
  })

  it('pino is created only in cli/', () => {
    const bad = all.filter((f) => layer(f.file) !== 'cli').flatMap((f) => f.imports.filter((i) => i.spec === 'pino').map(() => f.file))
    expect(bad).toEqual([])
  })

  it('the rule catches a violation (self-check)', () => {
    const fake = { file: 'src/agent/x.ts', imports: [{ spec: '../server/y.js', target: 'src/server/y.js' }] }
    const allowed = ALLOWED[layer(fake.file)]!
    expect(allowed.includes(layer(fake.imports[0]!.target))).toBe(false)
  })
})
