/**
 * `warrant <group> <command> [flags]`. Each group lives in its own module under
 * commands/ and is loaded only when used, so `warrant api fetch` does not load
 * the server.
 */
import { reportError } from './report-error.js'

export { reportError }

export interface CommandModule {
  /** Runs `args` (after the group name); resolves with the exit code. */
  run(args: string[]): Promise<number>
  /** One line per command, for `warrant --help`. */
  usage: string
}

const GROUPS: Record<string, () => Promise<CommandModule>> = {
  server: () => import('./commands/server.js'),
  entry: () => import('./commands/entry.js'),
  token: () => import('./commands/token.js'),
  bundle: () => import('./commands/bundle.js'),
  agent: () => import('./commands/agent.js'),
  api: () => import('./commands/api.js'),
  federation: () => import('./commands/federation.js'),
  bounds: () => import('./commands/bounds.js'),
  instance: () => import('./commands/instance.js'),
  broker: () => import('./commands/broker.js'),
  gateway: () => import('./commands/gateway.js'),
  task: () => import('./commands/task.js'),
  revoke: () => import('./commands/revoke.js'),
  revocation: () => import('./commands/revocation.js'),
  signal: () => import('./commands/signal.js'),
  audit: () => import('./commands/audit.js'),
  witness: () => import('./commands/witness.js'),
  credential: () => import('./commands/credential.js'),
  approval: () => import('./commands/approval.js'),
}

export async function main(argv: string[]): Promise<number> {
  const [group, ...rest] = argv
  if (!group || group === '--help' || group === '-h' || group === 'help') {
    const lines = ['usage: warrant <command> [flags]', '']
    for (const g of Object.keys(GROUPS)) {
      try {
        lines.push((await GROUPS[g]!()).usage)
      } catch {
        // a group that failed to load is not listed
      }
    }
    process.stdout.write(`${lines.join('\n')}\n`)
    return group ? 0 : 2
  }
  const load = GROUPS[group]
  if (!load) {
    process.stderr.write(`warrant: unknown command "${group}" (see warrant --help)\n`)
    return 2
  }
  try {
    return await (await load()).run(rest)
  } catch (err) {
    return reportError(err)
  }
}
