/**
 * `npm run bench -- <name> [...]`: runs the named benchmarks (all when none is
 * named). Each benchmark lives in bench/<name>.ts and exports `run(args)`.
 */
import { readdirSync } from 'node:fs'
import { dirname, join } from 'node:path'
import { fileURLToPath, pathToFileURL } from 'node:url'

const here = dirname(fileURLToPath(import.meta.url))
const available = readdirSync(here)
  .filter((f) => f.endsWith('.ts') && !['run.ts', 'lib.ts'].includes(f) && !f.startsWith('_'))
  .map((f) => f.slice(0, -3))
  .sort()

const args = process.argv.slice(2)
const names = args.filter((a) => !a.startsWith('-'))
const selected = names.length > 0 ? names : available
for (const name of selected) {
  if (!available.includes(name)) {
    process.stderr.write(`unknown benchmark "${name}"; available: ${available.join(', ')}\n`)
    process.exit(2)
  }
}
for (const name of selected) {
  const mod = (await import(pathToFileURL(join(here, `${name}.ts`)).href)) as { run: (args: string[]) => Promise<void> }
  await mod.run(args)
}
process.exit(0)
