import { execFileSync } from 'node:child_process'

/**
 * True when `cmd` is on PATH. For tests that need external tools (swtpm,
 * softhsm2-util, tpm2-tools, openssl): outside CI a missing tool may skip the
 * test; in CI (`CI=true`) it throws so the run fails instead of skipping.
 */
export function hasTool(cmd: string): boolean {
  try {
    execFileSync('sh', ['-c', `command -v ${cmd}`], { stdio: 'ignore' })
    return true
  } catch {
    if (process.env.CI === 'true') {
      throw new Error(`required tool "${cmd}" is not installed; CI must install it (scripts/install-system-deps.sh)`)
    }
    return false
  }
}

/** Use as `describe.runIf(requireTools('swtpm', 'tpm2_quote'))(...)`. */
export function requireTools(...cmds: string[]): boolean {
  return cmds.every((c) => hasTool(c))
}
