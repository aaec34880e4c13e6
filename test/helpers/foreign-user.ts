import { build } from 'esbuild'
import { chmodSync, cpSync, mkdtempSync, readdirSync, writeFileSync } from 'node:fs'
import { tmpdir } from 'node:os'
import { dirname, join, resolve } from 'node:path'
import { fileURLToPath } from 'node:url'

const REPO = resolve(dirname(fileURLToPath(import.meta.url)), '..', '..')

export interface ForeignUserKit {
  /** World-readable directory holding everything below. */
  dir: string
  /** `node <cli> api fetch x509 …`: the warrant CLI as one self-contained file. */
  cli: string
  /** `require(grpc)` → `{ grpc, protoLoader }` (@grpc/grpc-js and @grpc/proto-loader). */
  grpc: string
  /** A copy of proto/. */
  protoDir: string
  /** Environment for the CLI (points it at the proto copy). */
  env: NodeJS.ProcessEnv
}

let kit: Promise<ForeignUserKit> | undefined

/**
 * Tests run workloads as another user (uid 65534) while the repository may sit
 * under a directory only root can enter (CI clones into a 0700 temp dir). This
 * bundles what such a process needs into a world-readable temp directory, once
 * per test process.
 */
export function foreignUserKit(): Promise<ForeignUserKit> {
  kit ??= (async () => {
    const dir = mkdtempSync(join(tmpdir(), 'wfu-'))
    chmodSync(dir, 0o755)
    const protoDir = join(dir, 'proto')
    cpSync(join(REPO, 'proto'), protoDir, { recursive: true })
    const entry = join(dir, 'cli-entry.ts')
    writeFileSync(entry, `import { main } from ${JSON.stringify(join(REPO, 'src/cli/main.ts'))}\nprocess.exitCode = await main(process.argv.slice(2))\n`)
    const grpcEntry = join(dir, 'grpc-entry.cjs')
    writeFileSync(grpcEntry, "module.exports = { grpc: require('@grpc/grpc-js'), protoLoader: require('@grpc/proto-loader') }\n")
    const common = { bundle: true, platform: 'node' as const, target: 'node20', logLevel: 'error' as const, nodePaths: [join(REPO, 'node_modules')] }
    await build({
      ...common,
      entryPoints: { warrant: entry },
      outdir: join(dir, 'cli'),
      outExtension: { '.js': '.mjs' },
      // Each lazily loaded command group becomes its own chunk, so `warrant api` never loads the server's native modules.
      splitting: true,
      format: 'esm',
      // Native modules are only needed by the server and HSM paths, never by `warrant api`.
      external: ['better-sqlite3', 'pkcs11js', '*.node'],
      banner: { js: "import { createRequire as __cr } from 'node:module'; const require = __cr(import.meta.url);" },
    })
    await build({ ...common, entryPoints: [grpcEntry], outfile: join(dir, 'grpc.cjs'), format: 'cjs' })
    chmodSync(join(dir, 'grpc.cjs'), 0o644)
    chmodSync(join(dir, 'cli'), 0o755)
    for (const f of readdirSync(join(dir, 'cli'))) chmodSync(join(dir, 'cli', f), 0o644)
    return { dir, cli: join(dir, 'cli', 'warrant.mjs'), grpc: join(dir, 'grpc.cjs'), protoDir, env: { WARRANT_PROTO_DIR: protoDir } }
  })()
  return kit
}
