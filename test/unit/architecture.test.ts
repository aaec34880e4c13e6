import { existsSync, readdirSync, readFileSync, statSync } from 'node:fs'
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
  if (parts[0] === 'src') return parts[1] === undefined ? 'src' : parts[1].replace(/\.ts$/, '')
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
  /** Development helpers (swtpm, SoftHSM2 provisioning) for the quickstart, tests and benchmarks; no production room imports them. */
  dev: ['dev', 'errors'],
  gen: ['gen'],
  server: ['server', 'gen', 'keymanager', 'plugin', 'common', 'spiffe', 'errors'],
  agent: ['agent', 'gen', 'keymanager', 'plugin', 'common', 'spiffe', 'errors'],
  attestors: ['attestors', 'plugin', 'common', 'spiffe', 'errors', 'tpm'],
  /** The token-verification library: pure, like src/spiffe, so any resource server can use it. */
  tokens: ['tokens', 'spiffe', 'errors'],
  /** Shared Signals (SETs, response policies): pure like src/tokens, for the broker and any receiver. */
  signals: ['signals', 'tokens', 'common', 'spiffe', 'errors'],
  'workload-client': ['workload-client', 'gen', 'common', 'spiffe', 'errors'],
  'resource-server': ['resource-server', 'tokens', 'workload-client', 'common', 'spiffe', 'errors'],
  /** The agent-side broker client: speaks the broker's wire; never imports the broker itself. */
  'broker-client': ['broker-client', 'tokens', 'common', 'spiffe', 'errors'],
  broker: ['broker', 'signals', 'tokens', 'audit', 'workload-client', 'keymanager', 'plugin', 'common', 'spiffe', 'errors', 'gen'],
  /** The audit log: pure except its store (`src/audit/store/`); never imports the server, agent or broker it records. */
  audit: ['audit', 'keymanager', 'common', 'spiffe', 'errors'],
  /** The agentic gateway (registry, policy, proxy): a workload of its own; never the server, agent or broker it fronts. */
  gateway: ['gateway', 'tokens', 'spiffe', 'resource-server', 'audit', 'broker-client', 'workload-client', 'common', 'errors'],
  /** The operator console: its own HTTPS wire and pages; the broker only through its ports (ports.ts) and the intents' contract types. */
  console: ['console', 'broker', 'common', 'errors'],
  cli: [
    'cli',
    'console',
    'audit',
    'server',
    'agent',
    'broker',
    'gateway',
    'broker-client',
    'signals',
    'tokens',
    'resource-server',
    'workload-client',
    'gen',
    'keymanager',
    'plugin',
    'common',
    'spiffe',
    'errors',
    'attestors',
    'tpm',
    'dev',
  ],
}

/** Node built-ins that do I/O: not allowed in the pure SPIFFE core. */
const IO_MODULES = ['node:fs', 'fs', 'node:net', 'net', 'node:http', 'node:https', 'node:child_process', 'node:dgram', 'node:tls']

/** `x.js` → `x.ts`, a directory → its `index.ts`. */
function resolveTs(rel: string): string {
  const ts = rel.replace(/\.js$/, '.ts')
  if (ts.endsWith('.ts')) return ts
  return existsSync(join(root, `${ts}.ts`)) ? `${ts}.ts` : `${ts}/index.ts`
}

/** File → the files it imports (relative imports only). */
function graph(fs: readonly { file: string; imports: { target: string | undefined }[] }[]): Map<string, string[]> {
  return new Map(fs.map((f) => [f.file, f.imports.flatMap((i) => (i.target ? [resolveTs(i.target)] : []))]))
}

/** The strongly connected components of more than one file (Tarjan), each sorted. */
function importCycles(g: Map<string, string[]>): string[][] {
  let next = 0
  const index = new Map<string, number>()
  const low = new Map<string, number>()
  const stack: string[] = []
  const onStack = new Set<string>()
  const out: string[][] = []
  const visit = (v: string): void => {
    index.set(v, next)
    low.set(v, next++)
    stack.push(v)
    onStack.add(v)
    for (const w of g.get(v) ?? []) {
      if (!g.has(w)) continue
      if (!index.has(w)) {
        visit(w)
        low.set(v, Math.min(low.get(v)!, low.get(w)!))
      } else if (onStack.has(w)) low.set(v, Math.min(low.get(v)!, index.get(w)!))
    }
    if (low.get(v) === index.get(v)) {
      const scc: string[] = []
      let w: string
      do {
        w = stack.pop()!
        onStack.delete(w)
        scc.push(w)
      } while (w !== v)
      if (scc.length > 1) out.push(scc.sort())
    }
  }
  for (const v of g.keys()) if (!index.has(v)) visit(v)
  return out
}

/** Files reachable from `start` through imports, following only files for which `within` holds. */
function reachable(g: Map<string, string[]>, start: string, within: (f: string) => boolean): Set<string> {
  const seen = new Set<string>()
  const todo = [start]
  while (todo.length > 0) {
    for (const w of g.get(todo.pop()!) ?? []) {
      if (within(w) && !seen.has(w)) {
        seen.add(w)
        todo.push(w)
      }
    }
  }
  return seen
}

const all = [...files(join(root, 'src')), ...files(join(root, 'attestors'))].map((f) => ({ file: relative(root, f), imports: imports(f) }))

/** Each built-in plugin name and where it may appear as a string literal: its plugin's own modules. */
const PLUGIN_NAME_HOMES: Readonly<Record<string, readonly string[]>> = {
  join_token: ['attestors/node/join-token/'],
  tpm: ['attestors/node/tpm/'],
  x509pop: ['attestors/node/x509pop/'],
  unix: ['attestors/workload/unix/'],
  pkcs11: ['src/keymanager/'],
  disk: ['src/keymanager/'],
  memory: ['src/keymanager/', 'src/server/datastore/memory/'],
  sqlite: ['src/server/datastore/sqlite/'],
}
/** Besides them: the catalog registration, and the quickstart, which writes example config files. */
const PLUGIN_NAME_ANYWHERE = ['src/cli/plugins.ts', 'src/cli/quickstart.ts']
/** The rooms that host, load or configure plugins (elsewhere, e.g. a "unix" URI scheme is not a plugin name). */
const PLUGIN_NAME_SCANNED = ['src/server/', 'src/agent/', 'src/plugin/', 'src/common/', 'src/keymanager/', 'src/cli/', 'attestors/']

/** String literals (quotes or a plain template) equal to a plugin name, outside comments. */
function pluginNameLiterals(text: string): string[] {
  const code = text.replace(/\/\*[\s\S]*?\*\//g, '').replace(/(^|[^:'"`])\/\/.*$/gm, '$1')
  const names = Object.keys(PLUGIN_NAME_HOMES).join('|')
  return [...code.matchAll(new RegExp(`(['"\`])(${names})\\1`, 'g'))].map((m) => m[2]!)
}

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

  it('src/spiffe, src/tokens and src/signals do no I/O and load no gRPC, HTTP framework or logging library', () => {
    const bad = all
      .filter((f) => ['spiffe', 'tokens', 'signals'].includes(layer(f.file)))
      .flatMap((f) =>
        f.imports
          .filter((i) => IO_MODULES.includes(i.spec) || i.spec.startsWith('@grpc/') || i.spec === 'pino' || i.spec === 'fastify')
          .map((i) => `${f.file} → ${i.spec}`),
      )
    expect(bad).toEqual([])
  })

  it('src/audit does no I/O outside its store (src/audit/store/)', () => {
    const bad = all
      .filter((f) => layer(f.file) === 'audit' && !f.file.startsWith('src/audit/store/'))
      .flatMap((f) =>
        f.imports.filter((i) => IO_MODULES.includes(i.spec) || i.spec === 'better-sqlite3' || i.spec === 'pino').map((i) => `${f.file} → ${i.spec}`),
      )
    expect(bad).toEqual([])
    expect(all.some((f) => f.file.startsWith('src/audit/store/') && f.imports.some((i) => i.spec === 'better-sqlite3'))).toBe(true)
  })

  it('src/gateway never imports the server, agent or broker, and only cli/ imports it', () => {
    const bad = all.flatMap((f) =>
      f.imports
        .filter(
          (i) =>
            i.target !== undefined &&
            ((layer(f.file) === 'gateway' && ['server', 'agent', 'broker'].includes(layer(i.target))) ||
              (layer(i.target) === 'gateway' && !['gateway', 'cli'].includes(layer(f.file)))),
        )
        .map((i) => `${f.file} → ${i.spec}`),
    )
    expect(bad).toEqual([])
    expect(all.some((f) => layer(f.file) === 'gateway')).toBe(true)
  })

  it('pino is created only in cli/', () => {
    const bad = all.filter((f) => layer(f.file) !== 'cli').flatMap((f) => f.imports.filter((i) => i.spec === 'pino').map(() => f.file))
    expect(bad).toEqual([])
  })

  it('dev helpers (src/dev) are imported only by the quickstart, never by a production room', () => {
    const bad = all
      .filter((f) => layer(f.file) !== 'dev' && f.file !== 'src/cli/quickstart.ts')
      .flatMap((f) => f.imports.filter((i) => i.target !== undefined && layer(i.target) === 'dev').map((i) => `${f.file} → ${i.spec}`))
    expect(bad).toEqual([])
    expect(all.some((f) => f.file === 'src/cli/quickstart.ts' && f.imports.some((i) => i.target?.startsWith('src/dev/')))).toBe(true)
  })

  it('plugin names appear as string literals only in their plugin and the catalog registration (no name lists in core)', () => {
    const bad: string[] = []
    for (const f of all) {
      if (!PLUGIN_NAME_SCANNED.some((room) => f.file.startsWith(room)) || PLUGIN_NAME_ANYWHERE.includes(f.file)) continue
      for (const name of pluginNameLiterals(readFileSync(join(root, f.file), 'utf8'))) {
        if (!PLUGIN_NAME_HOMES[name]!.some((home) => f.file.startsWith(home))) bad.push(`${f.file}: '${name}'`)
      }
    }
    expect(bad).toEqual([])
    // the scan sees the names where they live
    expect(pluginNameLiterals(readFileSync(join(root, 'attestors/node/join-token/server.ts'), 'utf8'))).toContain('join_token')
  })

  it('the plugin-name rule finds a literal and ignores comments and longer strings (self-check)', () => {
    expect(pluginNameLiterals(`if (name !== 'join_token') x = "tpm"; y = \`memory\``)).toEqual(['join_token', 'tpm', 'memory'])
    expect(pluginNameLiterals(`// 'join_token'\n/* "tpm" */ const a = 'unix:uid:1'; const b = ':memory:'; const c = 'https://x'`)).toEqual([])
  })

  it('no import cycles between files (type-only imports count too)', () => {
    expect(importCycles(graph(all))).toEqual([])
  })

  it('the cycle check finds a cycle (self-check)', () => {
    const g = new Map([
      ['a.ts', ['b.ts']],
      ['b.ts', ['c.ts']],
      ['c.ts', ['a.ts']],
      ['d.ts', ['a.ts']],
    ])
    expect(importCycles(g)).toEqual([['a.ts', 'b.ts', 'c.ts']])
  })

  it("a node attestor's agent and server halves share only their payload module", () => {
    const g = graph(all)
    const bad: string[] = []
    const dirs = new Set(all.flatMap((f) => /^(attestors\/node\/[^/]+)\/(agent|server)\.ts$/.exec(f.file)?.[1] ?? []))
    expect(dirs.size).toBeGreaterThanOrEqual(2)
    for (const dir of dirs) {
      const within = (t: string) => t.startsWith(`${dir}/`)
      const halves = ['agent', 'server'].map((h) => `${dir}/${h}.ts`).filter((f) => g.has(f))
      if (halves.length < 2) continue
      const [agent, server] = halves.map((h) => new Set([h, ...reachable(g, h, within)]))
      for (const t of agent!) if (server!.has(t) && t !== `${dir}/payload.ts`) bad.push(`${dir}: both halves reach ${t}`)
    }
    expect(bad).toEqual([])
  })

  it('the rule catches a violation (self-check)', () => {
    const fake = { file: 'src/agent/x.ts', imports: [{ spec: '../server/y.js', target: 'src/server/y.js' }] }
    const allowed = ALLOWED[layer(fake.file)]!
    expect(allowed.includes(layer(fake.imports[0]!.target))).toBe(false)
  })
})
